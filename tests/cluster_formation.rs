//! Real processes (the built `loghouse` binary on 127.0.0.1): a cluster that is still forming
//! must not acknowledge a write it cannot keep (issue 15, item 1).
//!
//! Node 1 bootstraps; nodes 2 and 3 join through node 1's gossip address only; producers start
//! at once: a client generated from the original proto (plain unary calls, no retries) and the
//! Rust client. Node 1 is killed with SIGKILL as soon as the first write is acknowledged. Then
//! nothing acknowledged may be lost (read back from the survivors once they elect a leader),
//! writes must resume while a majority of the voters is up, and node 1, restarted with `--join`
//! naming a survivor, must rejoin and catch up (the same records on every member).
//!
//! Every wait is on an event with a generous deadline; nothing asserts on elapsed time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use loghouse::client::Client;
use process_support::{free_tcp_port, free_udp_port};

mod process_support;

/// A client generated from the original log.v1 proto alone (tests/original/log.proto).
mod original {
    #![allow(clippy::all, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/original/log.v1.rs"));
}

type PlainClient = original::log_client::LogClient<tonic::transport::Channel>;

/// A bound on every wait (an event that does not come by then is a failure, not a slow run).
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

/// One `loghouse serve` process.
struct Member {
    id: u64,
    rpc: String,
    gossip: String,
    dir: PathBuf,
    log: PathBuf,
    exe: PathBuf,
    /// Extra `serve` arguments.
    args: Vec<String>,
    child: Option<Child>,
}

impl Member {
    fn new(exe: &Path, root: &Path, id: u64) -> Member {
        Member {
            id,
            rpc: format!("127.0.0.1:{}", free_tcp_port()),
            gossip: format!("127.0.0.1:{}", free_udp_port()),
            dir: root.join(format!("node-{id}")),
            log: root.join(format!("node-{id}.log")),
            exe: exe.to_owned(),
            args: Vec::new(),
            child: None,
        }
    }

    /// Starts the member, joining through `join`; it bootstraps when `bootstrap` is set.
    fn start(&mut self, join: &[&str], bootstrap: bool) {
        assert!(self.child.is_none(), "node {} is running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(&self.exe);
        command
            .arg("serve")
            .args(["--node-id", &self.id.to_string()])
            .args(["--listen", &self.rpc])
            .args(["--gossip-listen", &self.gossip])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(&self.args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log);
        if bootstrap {
            command.arg("--bootstrap");
        }
        if !join.is_empty() {
            command.args(["--join", &join.join(",")]);
        }
        self.child = Some(command.spawn().expect("the loghouse binary starts"));
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `attempt` until it returns `Some`; panics naming `what` (and showing the members'
/// logs) once `DEADLINE` passes.
async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    members: &[&Member],
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(done) = attempt().await {
            return done;
        }
        if Instant::now() >= deadline {
            let logs: Vec<String> = (members.iter())
                .map(|m| format!("--- node {} ---\n{}", m.id, m.log_tail()))
                .collect();
            panic!("timed out waiting for {what}\n{}", logs.join("\n"));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn plain_client(addr: &str) -> Option<PlainClient> {
    PlainClient::connect(format!("http://{addr}")).await.ok()
}

/// What the member at `addr` reports: (leader's address, voters, alive voters, its committed
/// offset).
#[derive(Debug, Clone)]
struct View {
    leader: Option<String>,
    voters: usize,
    alive_voters: usize,
    committed: u64,
}

async fn view(addr: &str) -> Option<View> {
    let client = Client::connect(addr).await.ok()?;
    let servers = tokio::time::timeout(Duration::from_secs(2), client.servers())
        .await
        .ok()?
        .ok()?;
    let me = servers.iter().find(|s| s.rpc_addr == addr)?;
    Some(View {
        leader: (servers.iter().find(|s| s.is_leader)).map(|s| s.rpc_addr.clone()),
        voters: servers.iter().filter(|s| s.is_voter).count(),
        alive_voters: servers.iter().filter(|s| s.is_voter && s.alive).count(),
        committed: me.committed_offset,
    })
}

/// Every record below `end` from the member at `addr`.
async fn read_all(addr: &str, end: u64) -> Option<Vec<Bytes>> {
    let client = Client::connect(addr).await.ok()?;
    let mut out = Vec::new();
    while (out.len() as u64) < end {
        let batch = client.consume_batch(out.len() as u64, 0).await.ok()?;
        if batch.records.is_empty() {
            return None;
        }
        out.extend(batch.records.into_iter().map(|r| r.value));
    }
    out.truncate(end as usize);
    Some(out)
}

/// Acknowledged writes: offset -> value.
type Acked = Arc<Mutex<BTreeMap<u64, Bytes>>>;

/// The original-proto client: waits until node 1 names itself the leader (discovery through
/// GetServers, as such a client does), then produces one record per unary call, never retrying
/// one, until the first error. The first call's result goes to `first`.
async fn plain_producer(
    addr: String,
    acked: Acked,
    first: tokio::sync::oneshot::Sender<(Result<u64, tonic::Status>, usize)>,
) {
    let mut client = loop {
        if let Some(mut client) = plain_client(&addr).await {
            let servers = client.get_servers(original::GetServersRequest {}).await;
            let leads = servers.is_ok_and(|s| {
                let servers = s.into_inner().servers;
                servers.iter().any(|s| s.is_leader && s.rpc_addr == addr)
            });
            if leads {
                break client;
            }
        }
        tokio::time::sleep(POLL).await;
    };
    // For the report only: how many voters there were when the first write went out.
    let voters = view(&addr).await.map_or(0, |v| v.voters);
    let mut first = Some(first);
    for i in 0.. {
        let value = Bytes::from(format!("plain-{i}"));
        let request = original::ProduceRequest {
            record: Some(original::Record {
                value: value.to_vec(),
                ..Default::default()
            }),
        };
        let result = client.produce(request).await.map(|r| r.into_inner().offset);
        if let Ok(offset) = &result {
            acked.lock().insert(*offset, value);
        }
        let failed = result.is_err();
        if let Some(first) = first.take() {
            let _ = first.send((result, voters));
        }
        if failed {
            return;
        }
    }
}

/// The Rust client: batches of 8 records until `stop`, through whichever member answers
/// (`addrs`); errors are not acknowledgements and are passed over.
async fn rust_producer(addrs: Vec<String>, acked: Acked, stop: Arc<AtomicBool>) -> u64 {
    let mut errors = 0;
    let mut client: Option<Client> = None;
    let mut batch = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = &client else {
            for addr in &addrs {
                if let Ok(c) = Client::connect_cluster(addr).await {
                    client = Some(c);
                    break;
                }
            }
            tokio::time::sleep(POLL).await;
            continue;
        };
        let values: Vec<Bytes> = (0..8)
            .map(|i| Bytes::from(format!("rust-{batch}-{i}")))
            .collect();
        batch += 1;
        match c.produce_batch(values.clone()).await {
            Ok(first) => {
                let mut acked = acked.lock();
                for (i, value) in values.into_iter().enumerate() {
                    acked.insert(first + i as u64, value);
                }
            }
            Err(_) => {
                errors += 1;
                client = None; // find the cluster again through any member
            }
        }
    }
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forming_cluster_loses_no_acknowledged_write_when_its_first_node_dies() {
    let root = tempfile::tempdir().unwrap();
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_loghouse"));
    let mut m1 = Member::new(&exe, root.path(), 1);
    let mut m2 = Member::new(&exe, root.path(), 2);
    let mut m3 = Member::new(&exe, root.path(), 3);
    m1.start(&[], true);
    m2.start(&[&m1.gossip], false);
    m3.start(&[&m1.gossip], false);

    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (first, first_plain) = tokio::sync::oneshot::channel();
    let plain = tokio::spawn(plain_producer(m1.rpc.clone(), acked.clone(), first));
    let rust = tokio::spawn(rust_producer(
        vec![m1.rpc.clone(), m2.rpc.clone(), m3.rpc.clone()],
        acked.clone(),
        stop.clone(),
    ));

    // The original-proto client's first write succeeds (it waits for the cluster to form):
    // kill node 1 as soon as it is acknowledged.
    let (first_plain, voters_then) = match tokio::time::timeout(DEADLINE, first_plain).await {
        Ok(first) => first.expect("the plain producer reports its first write"),
        Err(_) => panic!("no answer to the first write\n{}", m1.log_tail()),
    };
    m1.kill();
    let acked_before_kill = acked.lock().clone();
    let first_offset = first_plain
        .expect("an original-proto client's first write succeeds once the cluster has formed");
    assert!(acked_before_kill.contains_key(&first_offset));
    plain.await.unwrap();

    // The survivors elect a leader without node 1 (a majority of the voters is up).
    let members = [&m1, &m2, &m3];
    let survivors = [m2.rpc.clone(), m3.rpc.clone()];
    let (leader, _) = wait_for("a leader among the survivors", &members, || {
        let survivors = survivors.clone();
        async move {
            for addr in &survivors {
                let view = view(addr).await?;
                if view.leader.as_deref() == Some(addr) {
                    return Some((addr.clone(), view));
                }
            }
            None
        }
    })
    .await;

    // Nothing acknowledged before the kill is lost.
    let end = acked_before_kill.keys().next_back().unwrap() + 1;
    let records = wait_for("the survivors' records", &members, || {
        let leader = leader.clone();
        async move {
            let view = view(&leader).await?;
            if view.committed < end {
                return None;
            }
            read_all(&leader, end).await
        }
    })
    .await;
    for (offset, value) in &acked_before_kill {
        assert_eq!(
            &records[*offset as usize], value,
            "acknowledged offset {offset} is on the survivors"
        );
    }

    // Writes resume: an original-proto client's single call to the new leader succeeds, and the
    // Rust client gets acknowledgements again.
    let mut client = plain_client(&leader).await.expect("the leader answers");
    let request = original::ProduceRequest {
        record: Some(original::Record {
            value: b"after-the-kill".to_vec(),
            ..Default::default()
        }),
    };
    let offset = (client.produce(request).await)
        .expect("a write to the new leader succeeds with two of three voters up")
        .into_inner()
        .offset;
    acked
        .lock()
        .insert(offset, Bytes::from_static(b"after-the-kill"));
    let resumed_past = offset;
    wait_for("the Rust client to write again", &members, || {
        std::future::ready((acked.lock().keys().next_back() > Some(&resumed_past)).then_some(()))
    })
    .await;

    // Node 1 comes back through a survivor and catches up; every member then holds the same
    // records, every acknowledged one among them.
    m1.start(&[&m2.gossip], false);
    let members = [&m1, &m2, &m3];
    wait_for("three alive voters", &members, || {
        let leader = leader.clone();
        async move {
            let view = view(&leader).await?;
            (view.voters == 3 && view.alive_voters == 3).then_some(())
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let errors = rust.await.unwrap();
    let acked = acked.lock().clone();
    let end = wait_for("the leader's final committed offset", &members, || {
        let leader = leader.clone();
        async move { Some(view(&leader).await?.committed) }
    })
    .await;
    assert!(end > *acked.keys().next_back().unwrap());
    let mut copies = Vec::new();
    for member in [&m1, &m2, &m3] {
        let copy = wait_for(&format!("node {} to catch up", member.id), &members, || {
            let addr = member.rpc.clone();
            async move {
                let view = view(&addr).await?;
                if view.committed < end {
                    return None;
                }
                read_all(&addr, end).await
            }
        })
        .await;
        copies.push(copy);
    }
    for (offset, value) in &acked {
        assert_eq!(
            &copies[0][*offset as usize], value,
            "acknowledged offset {offset} survives"
        );
    }
    assert_eq!(
        copies[1], copies[0],
        "node 2 holds the same records as node 1"
    );
    assert_eq!(
        copies[2], copies[0],
        "node 3 holds the same records as node 1"
    );
    println!(
        "first write sent with {voters_then} voter(s); acknowledged {} records ({} before the \
         kill), {errors} failed Rust-client writes, {end} records on every member",
        acked.len(),
        acked_before_kill.len()
    );
}

/// A write to a cluster with fewer voters than `min_replicas` waits for them, then fails with
/// UNAVAILABLE saying why; once the cluster has formed, the same plain call succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_cluster_cannot_place_on_enough_voters_is_refused_saying_why() {
    let root = tempfile::tempdir().unwrap();
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_loghouse"));
    let config = root.path().join("loghouse.toml");
    std::fs::write(&config, "[cluster]\nmin_replicas_wait_ms = 300\n").unwrap();
    let mut m1 = Member::new(&exe, root.path(), 1);
    m1.args = vec!["--config".into(), config.display().to_string()];
    m1.start(&[], true);
    let members = [&m1];
    wait_for("node 1 to lead", &members, || async {
        let view = view(&m1.rpc).await?;
        (view.leader.as_deref() == Some(m1.rpc.as_str())).then_some(())
    })
    .await;
    let mut client = plain_client(&m1.rpc).await.unwrap();
    let produce = |value: &'static [u8]| original::ProduceRequest {
        record: Some(original::Record {
            value: value.to_vec(),
            ..Default::default()
        }),
    };
    let status = client.produce(produce(b"alone")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains("1 of 3 voters; need 2 to acknowledge"),
        "{status:?}"
    );
    // Nothing was written.
    assert_eq!(view(&m1.rpc).await.unwrap().committed, 0);

    let mut m2 = Member::new(&exe, root.path(), 2);
    let mut m3 = Member::new(&exe, root.path(), 3);
    m2.start(&[&m1.gossip], false);
    m3.start(&[&m1.gossip], false);
    let members = [&m1, &m2, &m3];
    wait_for("3 voters", &members, || async {
        (view(&m1.rpc).await?.voters == 3).then_some(())
    })
    .await;
    let offset = client
        .produce(produce(b"formed"))
        .await
        .unwrap()
        .into_inner()
        .offset;
    assert_eq!(offset, 0);
}

/// Not a test: measures how long a 3-member `cluster up`-style start (all members at once, each
/// joining through the others; node 1 bootstraps) takes to have 3 voters, 5 times, and prints
/// each time and the median. `LOGHOUSE_EXE` picks another binary (to compare builds).
/// `cargo test --test cluster_formation -- --ignored --nocapture formation_time`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn formation_time() {
    let exe = std::env::var_os("LOGHOUSE_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_loghouse")));
    let runs: usize = std::env::var("FORMATION_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut times = Vec::new();
    for _ in 0..runs {
        let root = tempfile::tempdir().unwrap();
        let mut members: Vec<Member> = (1..=3)
            .map(|id| Member::new(&exe, root.path(), id))
            .collect();
        let gossip: Vec<String> = members.iter().map(|m| m.gossip.clone()).collect();
        let started = Instant::now();
        for (i, member) in members.iter_mut().enumerate() {
            let others: Vec<&str> = (gossip.iter().enumerate())
                .filter(|(j, _)| *j != i)
                .map(|(_, g)| g.as_str())
                .collect();
            // Node 1 bootstraps; every member joins through the others (as `cluster up`).
            member.start(&others, i == 0);
        }
        let addrs: Vec<String> = members.iter().map(|m| m.rpc.clone()).collect();
        let refs: Vec<&Member> = members.iter().collect();
        wait_for("3 voters", &refs, || {
            let addrs = addrs.clone();
            async move {
                for addr in &addrs {
                    if let Some(v) = view(addr).await {
                        if v.voters == 3 && v.leader.is_some() {
                            return Some(());
                        }
                    }
                }
                None
            }
        })
        .await;
        let elapsed = started.elapsed();
        println!("formed in {} ms", elapsed.as_millis());
        times.push(elapsed);
    }
    times.sort();
    println!("median {} ms", times[times.len() / 2].as_millis());
}
