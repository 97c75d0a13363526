//! Security over real gRPC on 127.0.0.1: mutual TLS, the ACL, refused peers, and start-up
//! checks of the security settings. Certificates are made in-test (`security::certs`).
//!
//! What each kind of caller gets from a node with a client CA and an ACL:
//! - no client certificate: the handshake completes, every RPC answers UNAUTHENTICATED;
//! - a certificate from another CA: the server aborts the TLS handshake (alert "unknown CA").
//!   With TLS 1.3 the client has already finished its side, so connecting succeeds and the first
//!   RPC fails with UNKNOWN ("transport error"; UNAVAILABLE or CANCELLED, depending on when the
//!   client notices the closed connection);
//! - a client that does not trust the node's CA: connecting fails (`ClientError::Connect`,
//!   "invalid certificate: UnknownIssuer");
//! - a plaintext (non-TLS) client: transport error likewise;
//! - a CA-signed certificate whose CN the policy does not allow: PERMISSION_DENIED;
//! - an allowed CN: served.
#![cfg(not(madsim))]

mod member_support;
use member_support::{eventually, WAIT};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use loghouse::client::{Client, ClientError, ClientTls};
use loghouse::config::{ClusterConfig, NodeConfig};
use loghouse::io::{StdDisk, SystemClock};
use loghouse::proto::raft::{raft_client::RaftClient, RaftMessage};
use loghouse::security::certs::{Ca, Pem};
use loghouse::security::{AclText, GossipKey, Secrets, TlsMaterial};
use loghouse::server::{Node, ServerError};

const MODEL: &str = include_str!("../examples/acl/model.conf");
/// The original Loghouse's policy lines, plus the members' `raft` grants.
const POLICY: &str = "p, root, *, produce\np, root, *, consume\n\
                      p, node-1, *, raft\np, node-2, *, raft\np, node-3, *, raft\n";

fn hosts() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

/// A CA and certificates it issued, by CN.
struct Pki {
    ca: Ca,
}

impl Pki {
    fn new(name: &str) -> Pki {
        Pki {
            ca: Ca::new(name).unwrap(),
        }
    }

    fn cert(&self, cn: &str) -> Pem {
        self.ca.issue(cn, &hosts()).unwrap()
    }

    fn ca_pem(&self) -> Vec<u8> {
        self.ca.pem().cert.into_bytes()
    }

    /// A node's material: its certificate, and this CA for mutual TLS.
    fn node_tls(&self, cn: &str) -> TlsMaterial {
        let pem = self.cert(cn);
        TlsMaterial {
            cert_pem: pem.cert.into_bytes(),
            key_pem: pem.key.into_bytes(),
            client_ca_pem: Some(self.ca_pem()),
        }
    }

    /// A client that trusts this CA and presents `identity` (a cert from any CA), if any.
    fn client(&self, identity: Option<Pem>) -> ClientTls {
        ClientTls {
            ca_pem: self.ca_pem(),
            identity: identity.map(|p| (p.cert.into_bytes(), p.key.into_bytes())),
        }
    }
}

fn secrets(tls: Option<TlsMaterial>, policy: &str) -> Secrets {
    Secrets {
        tls,
        acl: Some(AclText {
            model: MODEL.into(),
            policy: policy.into(),
        }),
        gossip_key: None,
    }
}

struct Served {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Served {
    async fn stop(mut self) {
        drop(self.stop.take());
        self.task.await.unwrap().unwrap();
    }
}

async fn serve(node: Node, listener: tokio::net::TcpListener) -> Served {
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(loghouse::server::serve(node, listener, async {
        let _ = stopped.await;
    }));
    Served {
        addr,
        stop: Some(stop),
        task,
    }
}

/// A standalone node with `secrets`.
async fn standalone(dir: &Path, secrets: Secrets) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = NodeConfig {
        data_dir: dir.to_owned(),
        secrets,
        ..NodeConfig::default()
    };
    let node = Node::open(config, Arc::new(StdDisk), Arc::new(SystemClock), addr).unwrap();
    serve(node, listener).await
}

fn code(result: Result<impl std::fmt::Debug, ClientError>) -> tonic::Code {
    match result {
        Err(ClientError::Status(status)) => status.code(),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

fn value(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

#[tokio::test]
async fn mutual_tls_and_the_acl_refuse_and_allow_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("cluster-ca");
    let node = standalone(dir.path(), secrets(Some(pki.node_tls("node-1")), POLICY)).await;
    let addr = format!("localhost:{}", node.addr.rsplit(':').next().unwrap());

    // An allowed CN produces and consumes, over the IP address and over the host name.
    let root = pki.client(Some(pki.cert("root")));
    for addr in [&node.addr, &addr] {
        let client = Client::connect_with(addr, Some(&root)).await.unwrap();
        let offset = client.produce(value("hello")).await.unwrap();
        assert_eq!(client.consume(offset).await.unwrap().value, value("hello"));
        assert_eq!(client.servers().await.unwrap().len(), 1, "GetServers");
    }

    // No client certificate: the handshake completes, the service says UNAUTHENTICATED.
    let anonymous = Client::connect_with(&node.addr, Some(&pki.client(None)))
        .await
        .unwrap();
    assert_eq!(
        code(anonymous.produce(value("x")).await),
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        code(anonymous.consume(0).await),
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        code(anonymous.servers().await),
        tonic::Code::Unauthenticated
    );

    // A CA-signed certificate whose CN the policy does not name: PERMISSION_DENIED, for every
    // kind of call.
    let nobody = Client::connect_with(&node.addr, Some(&pki.client(Some(pki.cert("nobody")))))
        .await
        .unwrap();
    assert_eq!(
        code(nobody.produce(value("x")).await),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        code(nobody.produce_batch(vec![value("x")]).await),
        tonic::Code::PermissionDenied
    );
    assert_eq!(code(nobody.consume(0).await), tonic::Code::PermissionDenied);
    assert_eq!(
        code(nobody.consume_batch(0, 0).await),
        tonic::Code::PermissionDenied
    );
    assert_eq!(code(nobody.info().await), tonic::Code::PermissionDenied);
    assert_eq!(code(nobody.servers().await), tonic::Code::PermissionDenied);
    assert!(matches!(
        nobody.follow(loghouse::client::Start::Offset(0)).await,
        Err(ClientError::Status(s)) if s.code() == tonic::Code::PermissionDenied
    ));

    // A member's certificate is for Raft, not for the log.
    let member = Client::connect_with(&node.addr, Some(&pki.client(Some(pki.cert("node-2")))))
        .await
        .unwrap();
    assert_eq!(
        code(member.produce(value("x")).await),
        tonic::Code::PermissionDenied
    );

    // A certificate named "root" but from another CA: the TLS handshake fails.
    let stranger = Pki::new("other-ca");
    let forged = pki.client(Some(stranger.cert("root")));
    assert_transport_refused(&node.addr, &forged).await;

    // A client that does not trust the node's CA refuses the node.
    let wrong_trust = stranger.client(Some(stranger.cert("root")));
    assert_transport_refused(&node.addr, &wrong_trust).await;

    // A plaintext client gets nowhere either.
    match Client::connect(&node.addr).await {
        Err(_) => {}
        Ok(plain) => assert!(plain.produce(value("x")).await.is_err()),
    }

    // Nothing refused was written.
    let client = Client::connect_with(&node.addr, Some(&root)).await.unwrap();
    assert_eq!(client.info().await.unwrap().next_offset, 2);
    node.stop().await;
}

/// Connecting fails, or the first RPC fails without reaching the service.
async fn assert_transport_refused(addr: &str, tls: &ClientTls) {
    let client = match Client::connect_with(addr, Some(tls)).await {
        Err(ClientError::Connect { .. }) => return,
        Err(other) => panic!("expected a transport error, got {other}"),
        Ok(client) => client,
    };
    let code = code(client.consume_batch(0, 0).await);
    assert!(
        is_transport_refusal(code),
        "a refused handshake, not an answer from the service: {code:?}"
    );
}

/// The codes tonic gives a call whose connection the server closed during the TLS handshake
/// (which one depends on when the client notices).
fn is_transport_refusal(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

#[tokio::test]
async fn without_tls_the_subject_is_anonymous() {
    let dir = tempfile::tempdir().unwrap();
    let node = standalone(dir.path(), secrets(None, "p, anonymous, *, consume\n")).await;
    let client = Client::connect(&node.addr).await.unwrap();
    assert_eq!(
        code(client.produce(value("x")).await),
        tonic::Code::PermissionDenied
    );
    assert!(client.consume_batch(0, 0).await.unwrap().records.is_empty());
    assert_eq!(client.servers().await.unwrap().len(), 1);
    node.stop().await;
}

#[tokio::test]
async fn without_an_acl_everything_is_allowed_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let node = standalone(dir.path(), Secrets::default()).await;
    let client = Client::connect(&node.addr).await.unwrap();
    assert_eq!(client.produce(value("x")).await.unwrap(), 0);
    node.stop().await;
}

struct TestMember {
    addr: String,
    gossip: std::net::SocketAddr,
    node: Node,
    _membership: loghouse::membership::Membership,
    _served: Served,
}

impl TestMember {
    async fn start(dir: &Path, id: u64, join: Vec<std::net::SocketAddr>, secrets: Secrets) -> Self {
        let member_support::Started {
            listener,
            gossip,
            member,
            ..
        } = member_support::start(dir, id, join, |config| config.secrets = secrets).await;
        let served = serve(member.node.clone(), listener).await;
        TestMember {
            addr: served.addr.clone(),
            gossip,
            node: member.node,
            _membership: member.membership,
            _served: served,
        }
    }

    fn is_leader(&self) -> bool {
        self.node.raft().unwrap().is_leader()
    }
}

fn member_secrets(tls: TlsMaterial, key: &GossipKey) -> Secrets {
    Secrets {
        gossip_key: Some(key.clone()),
        ..secrets(Some(tls), POLICY)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_with_a_certificate_from_another_ca_cannot_replicate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("cluster-ca");
    let key = GossipKey::new(vec![7; 32]).unwrap();
    let first = TestMember::start(
        dir.path(),
        1,
        vec![],
        member_secrets(pki.node_tls("node-1"), &key),
    )
    .await;
    eventually("node 1 to lead", || first.is_leader()).await;
    let seed = vec![first.gossip];
    let second = TestMember::start(
        dir.path(),
        2,
        seed.clone(),
        member_secrets(pki.node_tls("node-2"), &key),
    )
    .await;
    // Node 3 knows the gossip key (so it is seen and added as a learner) but its certificate,
    // named like a member's, is signed by another CA: TLS refuses it both ways.
    let rogue_pki = Pki::new("rogue-ca");
    let rogue = TestMember::start(
        dir.path(),
        3,
        seed,
        member_secrets(rogue_pki.node_tls("node-3"), &key),
    )
    .await;

    let root = pki.client(Some(pki.cert("root")));
    let client = Client::connect_cluster_with(&first.addr, Some(&root))
        .await
        .unwrap();
    let values: Vec<Bytes> = (0..50).map(|i| Bytes::from(format!("v{i}"))).collect();
    client.produce_batch(values).await.unwrap();
    let node2 = second.node.clone();
    eventually("node 2 to replicate", || node2.committed_offset() == 50).await;
    // The rogue is in gossip's view, so the leader tried to replicate to it all along.
    let servers = client.servers().await.unwrap();
    assert!(
        servers.iter().any(|s| s.id == "3"),
        "node 3 was seen: {servers:?}"
    );
    assert!(
        servers.iter().all(|s| s.id != "3" || !s.is_voter),
        "never a voter: {servers:?}"
    );
    assert_eq!(
        rogue.node.committed_offset(),
        0,
        "nothing reached the rogue"
    );

    // Raft RPCs straight at the leader: the rogue certificate fails the handshake, a client
    // certificate without the raft grant is denied, a member's certificate gets through.
    let raft_call = |tls: ClientTls| {
        let addr = first.addr.clone();
        async move {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(tls.client_config())
                .unwrap();
            let channel = endpoint.connect().await?;
            let message = RaftMessage {
                payload: Bytes::from_static(b"garbage"),
                target_id: 1,
            };
            Ok::<_, Box<dyn std::error::Error>>(RaftClient::new(channel).vote(message).await)
        }
    };
    let rogue_identity = pki.client(Some(rogue_pki.cert("node-3")));
    match raft_call(rogue_identity).await {
        Err(_) => {}
        Ok(answer) => {
            let status = answer.unwrap_err();
            assert!(is_transport_refusal(status.code()), "{status:?}");
        }
    }
    let status = raft_call(root.clone()).await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let status = raft_call(pki.client(Some(pki.cert("node-2"))))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "past the guard: {status:?}"
    );
}

/// Writes `files` into `dir` and returns a config whose `[security]` names them.
fn config_with_files(dir: &Path, files: &[(&str, &[u8])], toml: &str) -> NodeConfig {
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let toml = toml.replace("DIR", &dir.display().to_string());
    toml::from_str(&toml).unwrap()
}

#[test]
fn bad_security_settings_stop_the_node_at_start_up_with_the_setting_named() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("ca");
    let a = pki.cert("node-1");
    let b = pki.cert("node-2");
    let files: [(&str, &[u8]); 6] = [
        ("a.pem", a.cert.as_bytes()),
        ("a-key.pem", a.key.as_bytes()),
        ("b-key.pem", b.key.as_bytes()),
        ("junk.pem", b"not a certificate"),
        ("model.conf", MODEL.as_bytes()),
        ("policy.csv", b"p, root, *, produce\nroot consume\n"),
    ];
    let error = |toml: &str| {
        let mut config = config_with_files(dir.path(), &files, toml);
        config.load_security().unwrap_err().to_string()
    };
    let tls = |cert: &str, key: &str| {
        format!("[security]\ntls_cert = \"DIR/{cert}\"\ntls_key = \"DIR/{key}\"\n")
    };
    let e = error(&tls("missing.pem", "a-key.pem"));
    assert!(
        e.contains("security.tls_cert") && e.contains("missing.pem"),
        "{e}"
    );
    let e = error(&tls("junk.pem", "a-key.pem"));
    assert!(e.contains("no PEM certificate"), "{e}");
    let e = error(&tls("a.pem", "junk.pem"));
    assert!(e.contains("private key"), "{e}");
    let e = error(&tls("a.pem", "b-key.pem"));
    assert!(e.contains("does not match"), "{e}");
    let e = error("[security]\ntls_cert = \"DIR/a.pem\"\n");
    assert!(e.contains("go together"), "{e}");
    let e = error("[security]\nacl_model = \"DIR/model.conf\"\nacl_policy = \"DIR/policy.csv\"\n");
    assert!(e.contains("acl") && e.contains("line 2"), "{e}");
    let e = error("[security]\ngossip_key = \"abcd\"\n");
    assert!(e.contains("gossip_key") && e.contains("at least 16"), "{e}");

    // Loaded and valid.
    let mut config = config_with_files(dir.path(), &files, &tls("a.pem", "a-key.pem"));
    config.load_security().unwrap();
    config.validate().unwrap();
    // Named but never loaded: refused, never silently plaintext.
    let config = config_with_files(dir.path(), &files, &tls("a.pem", "a-key.pem"));
    assert!(config
        .validate()
        .unwrap_err()
        .to_string()
        .contains("not loaded"));
}

#[test]
fn a_member_whose_acl_would_refuse_its_own_raft_calls_does_not_start() {
    let pki = Pki::new("ca");
    let mut config = NodeConfig {
        node_id: "1".into(),
        cluster: Some(ClusterConfig::default()),
        secrets: secrets(Some(pki.node_tls("node-1")), "p, root, *, produce\n"),
        ..NodeConfig::default()
    };
    let e = config.validate().unwrap_err().to_string();
    assert!(e.contains("p, node-1, *, raft"), "{e}");
    config.secrets.acl = Some(AclText {
        model: MODEL.into(),
        policy: POLICY.into(),
    });
    config.validate().unwrap();
    // Members verify each other with the client CA: TLS without it is refused on a member.
    config.secrets.tls.as_mut().unwrap().client_ca_pem = None;
    let e = config.validate().unwrap_err().to_string();
    assert!(e.contains("tls_client_ca"), "{e}");
}

fn gossip_config(
    node_id: u64,
    join: Vec<std::net::SocketAddr>,
    key: Option<&GossipKey>,
) -> loghouse::membership::MembershipConfig {
    loghouse::membership::MembershipConfig {
        node_id,
        gossip_listen: "127.0.0.1:0".parse().unwrap(),
        rpc_addr: format!("127.0.0.1:{}", 50_000 + node_id),
        join,
        cluster_size_hint: 3,
        suspect_to_down_after_ms: Some(60_000),
        rng_seed: Some(node_id),
        cluster_key: key.cloned(),
    }
}

fn member_ids(m: &loghouse::membership::Membership) -> Vec<u64> {
    m.view().borrow().members.keys().copied().collect()
}

#[tokio::test]
async fn gossip_without_the_cluster_key_cannot_join() {
    use loghouse::membership::{Membership, JOIN_RETRY_INTERVAL_MS};
    let key = GossipKey::new(vec![1; 32]).unwrap();
    let wrong = GossipKey::new(vec![2; 32]).unwrap();
    let first = Membership::start(gossip_config(1, vec![], Some(&key)))
        .await
        .unwrap();
    let seed = vec![first.local_gossip_addr()];
    // A node with another key and one with none try to join first, and keep retrying.
    let wrong_key = Membership::start(gossip_config(3, seed.clone(), Some(&wrong)))
        .await
        .unwrap();
    let no_key = Membership::start(gossip_config(4, seed.clone(), None))
        .await
        .unwrap();
    let second = Membership::start(gossip_config(2, seed, Some(&key)))
        .await
        .unwrap();
    let mut view = first.view();
    let joined = view.wait_for(|v| v.members.contains_key(&2));
    tokio::time::timeout(WAIT, joined).await.unwrap().unwrap();
    // Let the strangers retry their announces a few times.
    tokio::time::sleep(Duration::from_millis(3 * JOIN_RETRY_INTERVAL_MS)).await;
    assert_eq!(member_ids(&first), vec![1, 2]);
    assert_eq!(member_ids(&second), vec![1, 2]);
    assert_eq!(member_ids(&wrong_key), vec![3], "it heard nobody either");
    assert_eq!(member_ids(&no_key), vec![4]);
}
