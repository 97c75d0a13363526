//! Real processes: a 3-member cluster of `loghouse serve` on 127.0.0.1 under produce load; the
//! leader is killed with SIGKILL twice; no acknowledged record may be lost, a new leader must
//! serve, and the killed member must rejoin and catch up (`bench cluster` checks all three and
//! fails otherwise).

use clap::Parser;

use loghouse::bench::cluster::{run, ClusterBenchOptions};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    options: ClusterBenchOptions,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_no_acknowledged_record_and_the_member_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = Args::parse_from([
        "test",
        "--kills",
        "2",
        "--no-load",
        "--base-port",
        "27400",
        "--gossip-base-port",
        "27500",
    ])
    .options;
    options.dir = Some(dir.path().to_owned());
    options.exe = Some(env!("CARGO_BIN_EXE_loghouse").into());
    run(options)
        .await
        .expect("failover keeps every acknowledged record");
}
