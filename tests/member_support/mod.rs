//! Starting an in-process cluster member on 127.0.0.1 (real gRPC listener, real UDP gossip) for
//! the integration tests; each test file serves it its own way.

#![allow(dead_code)] // each test file uses a part of it

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use loghouse::client::Client;
use loghouse::config::{ClusterConfig, NodeConfig};
use loghouse::io::{StdDisk, SystemClock};
use loghouse::server::{start_member, Member, Node, ServerError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for the cluster to get somewhere.
pub const WAIT: Duration = Duration::from_secs(20);

/// Polls `check` until it holds or `WAIT` passes.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    poll_until(what, || std::future::ready(check().then_some(()).ok_or(()))).await
}

/// Runs `attempt` every 50 ms until it returns `Ok`; panics with its last `Err` once `WAIT`
/// passes. (A bound on a wait, not a measure of speed: `WAIT` is generous.)
pub async fn poll_until<T, E: Debug, F: Future<Output = Result<T, E>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let last = match attempt().await {
            Ok(done) => return done,
            Err(last) => last,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last: {last:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many voters the member serving gRPC at `addr` lists.
pub async fn voters(addr: &str) -> usize {
    let client = Client::connect(addr).await.unwrap();
    let servers = client.servers().await.unwrap();
    servers.iter().filter(|s| s.is_voter).count()
}

/// Waits until the member at `addr` lists `count` voters.
pub async fn wait_for_voters(addr: &str, count: usize) {
    poll_until(&format!("{count} voters"), || async {
        let now = voters(addr).await;
        (now == count).then_some(()).ok_or(now)
    })
    .await
}

/// A member that is started but not yet served.
pub struct Started {
    pub listener: tokio::net::TcpListener,
    pub addr: String,
    pub gossip: SocketAddr,
    pub member: Member,
}

/// Starts member `id` with its data under `dir/node-<id>`, joining through `join`, with fast
/// Raft timings (heartbeat 50 ms, elections 300-600 ms) and a 5 s down grace; `tweak` adjusts
/// the configuration before the start.
pub async fn start(
    dir: &Path,
    id: u64,
    join: Vec<SocketAddr>,
    tweak: impl FnOnce(&mut NodeConfig),
) -> Started {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let gossip = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = NodeConfig {
        node_id: id.to_string(),
        data_dir: dir.join(format!("node-{id}")),
        cluster: Some(ClusterConfig {
            gossip_listen: gossip,
            join,
            heartbeat_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            down_grace_ms: 5_000,
            remove_after_ms: 60_000,
            ..ClusterConfig::default()
        }),
        ..NodeConfig::default()
    };
    tweak(&mut config);
    let member = start_member(
        config,
        Arc::new(StdDisk),
        Arc::new(SystemClock),
        addr.clone(),
    )
    .await
    .unwrap();
    Started {
        listener,
        addr,
        gossip,
        member,
    }
}

/// Serves `node` on `listener` until the returned sender fires or is dropped.
pub fn serve(
    node: Node,
    listener: tokio::net::TcpListener,
) -> (oneshot::Sender<()>, JoinHandle<Result<(), ServerError>>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(loghouse::server::serve(node, listener, async {
        let _ = stopped.await;
    }));
    (stop, task)
}
