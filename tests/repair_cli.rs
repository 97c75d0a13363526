//! `loghouse repair` on the built binary (issue 15): a standalone node whose log ends in
//! corruption refuses to start and names the command and what it drops; the command cuts it and
//! says what went; the node then starts with the records before the damage; a cluster member's
//! data directory is refused (members repair themselves from their peers).

mod process_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use loghouse::io::{ManualClock, StdDisk};
use loghouse::log::{Log, LogConfig, NewRecord};
use process_support::{run, Standalone};

/// 13 records of 20.. bytes in small segments under `data_dir/log`, the process "killed" (the
/// log dropped without a close), then a bit flipped in the second record of the last segment:
/// valid records follow it. Returns the last store, the bad record's position and offset.
fn corrupt_standalone_log(data_dir: &Path) -> (PathBuf, u64, u64) {
    corrupt_log(&data_dir.join("log"))
}

/// `corrupt_standalone_log` for the log in `log_dir`.
fn corrupt_log(log_dir: &Path) -> (PathBuf, u64, u64) {
    let mut config = LogConfig::new(log_dir);
    config.segment_bytes_max = 600;
    config.record_bytes_max = 100;
    let log = Log::open(Arc::new(StdDisk), Arc::new(ManualClock::new(5_000)), config).unwrap();
    for n in 0..13u64 {
        let value = format!("record-{n}-").repeat(3);
        log.append(&[NewRecord::data(value.into_bytes())]).unwrap();
    }
    log.sync().unwrap();
    drop(log);
    let mut stores: Vec<PathBuf> = std::fs::read_dir(log_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "store"))
        .collect();
    stores.sort();
    let store = stores.pop().unwrap();
    let base: u64 = store.file_name().unwrap().to_str().unwrap()[..20]
        .parse()
        .unwrap();
    let mut bytes = std::fs::read(&store).unwrap();
    let first_len = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as u64;
    let bad = 8 + first_len; // the second frame
    assert!(
        bad + 60 < bytes.len() as u64,
        "valid records follow the bad one"
    );
    bytes[bad as usize + 45] ^= 0x08;
    std::fs::write(&store, bytes).unwrap();
    (store, bad, base + 1)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn a_corrupt_tail_stops_the_node_and_repair_cuts_it_saying_what_it_drops() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Standalone::new(root.path());
    let (store, bad, first_dropped) = corrupt_standalone_log(&node.dir);
    let store_len = std::fs::metadata(&store).unwrap().len();
    let dropped = store_len - bad;
    let before = std::fs::read(&store).unwrap();

    // The node refuses to start, names the segment, the position and the command, and the
    // store is left as it is.
    node.start(&[]);
    let status = node.wait_exit().await;
    assert!(!status.success());
    let log = node.log_text();
    let dir = node.dir.display().to_string();
    for needle in [
        format!("loghouse repair --data-dir {dir}"),
        format!("dropping {dropped} bytes"),
        format!("{} at position {bad}", store.display()),
        format!("offsets {first_dropped} to 12"),
    ] {
        assert!(log.contains(&needle), "{needle:?} not in:\n{log}");
    }
    assert_eq!(std::fs::read(&store).unwrap(), before);

    // The explicit cut says what it drops.
    let out = run(&["repair", "--data-dir", &dir]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for needle in [
        "corruption".to_owned(),
        format!("segment         {}", store.display()),
        format!("position        {bad}"),
        format!("bytes dropped   {dropped}"),
        format!(
            "records dropped {} (offsets {first_dropped} to 12)",
            13 - first_dropped
        ),
        format!("last offset kept {}", first_dropped - 1),
    ] {
        assert!(stdout.contains(&needle), "{needle:?} not in:\n{stdout}");
    }
    assert_eq!(std::fs::metadata(&store).unwrap().len(), bad);

    // A second run finds nothing to cut.
    let out = run(&["repair", "--data-dir", &dir]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("nothing to cut"), "{stdout}");
    assert!(
        stdout.contains(&format!("last offset kept {}", first_dropped - 1)),
        "{stdout}"
    );

    // The node starts with every record before the damage; the next one takes the first
    // dropped offset.
    node.start(&[]);
    let client = node.client().await;
    for offset in 0..first_dropped {
        let record = client.consume(offset).await.unwrap();
        assert_eq!(
            record.value,
            format!("record-{offset}-").repeat(3).as_bytes()
        );
    }
    assert!(client.consume(first_dropped).await.is_err());
    assert_eq!(client.produce("after").await.unwrap(), first_dropped);
    assert!(node.terminate().await.success());
}

#[tokio::test]
async fn a_corrupt_tail_in_a_topics_partition_names_it_and_repair_takes_the_partition() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Standalone::new(root.path());
    node.start(&[]);
    let client = node.client().await;
    client
        .create_topic("orders", 2, Default::default())
        .await
        .unwrap();
    assert!(node.terminate().await.success());
    let partition_dir = node.dir.join("topics/orders/1/1");
    assert!(partition_dir.is_dir(), "the layout README documents");
    let (store, bad, first_dropped) = corrupt_log(&partition_dir);

    node.start(&[]);
    assert!(!node.wait_exit().await.success());
    let log = node.log_text();
    let dir = node.dir.display().to_string();
    let command = format!("loghouse repair --data-dir {dir} --topic orders --partition 1");
    assert!(log.contains(&command), "{command:?} not in:\n{log}");
    assert!(log.contains("of topic \"orders\" partition 1"), "{log}");

    let out = run(&[
        "repair",
        "--data-dir",
        &dir,
        "--topic",
        "orders",
        "--partition",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::metadata(&store).unwrap().len(), bad);
    let out = run(&[
        "repair",
        "--data-dir",
        &dir,
        "--topic",
        "orders",
        "--partition",
        "2",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no partition 2"),
        "{}",
        text(&out.stderr)
    );

    node.start(&[]);
    let client = node.client().await;
    let at = loghouse::client::TopicPartition::new("orders", 1);
    let info = client.describe_topic("orders").await.unwrap();
    assert_eq!(info.partitions[1].next_offset, first_dropped);
    for offset in 0..first_dropped {
        client.consume_at(&at, offset).await.unwrap();
    }
    assert!(node.terminate().await.success());
}

#[test]
fn repair_refuses_a_cluster_members_data_directory_and_a_directory_without_a_log() {
    let root = tempfile::tempdir().unwrap();
    let member = root.path().join("member");
    std::fs::create_dir_all(member.join("raft").join("log")).unwrap();
    std::fs::create_dir_all(member.join("data")).unwrap();
    let out = run(&["repair", "--data-dir", member.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cluster member"), "{stderr}");
    assert!(stderr.contains("from its peers"), "{stderr}");
    assert!(stderr.contains("loghouse serve"), "{stderr}");
    assert!(
        !member.join("log").exists(),
        "nothing was created in the member's directory"
    );

    let empty = root.path().join("empty");
    let out = run(&["repair", "--data-dir", empty.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no log in"), "{stderr}");
    assert!(!empty.exists(), "repair creates no directory");
}
