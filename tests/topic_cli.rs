//! Topics from the client's and the CLI's side, over real gRPC against a `loghouse serve`
//! process: the admin RPCs, a key's partition (the client's and the node's agree), per-partition
//! reads and follows, and the CLI's one-line errors and closed-pipe ending.

mod process_support;

use bytes::Bytes;
use futures::StreamExt;

use loghouse::client::{partition_for_key, ProduceTo, Start, TopicPartition, TopicSettings};
use process_support::{exe, Standalone};

fn loghouse(addr: &str, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(exe())
        .args(args)
        .env("LOGHOUSE_ADDR", addr)
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn topics_over_grpc_from_the_client() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Standalone::new(root.path());
    node.start(&[]);
    let client = node.client().await;

    let settings = TopicSettings {
        retention_bytes_max: Some(1 << 20),
        ..Default::default()
    };
    let created = client.create_topic("events", 4, settings).await.unwrap();
    assert!(created.created);
    assert_eq!(created.topic.unwrap().partitions, 4);
    // Idempotent with the same settings; a different topic of the same name is refused.
    assert!(
        !client
            .create_topic("events", 4, settings)
            .await
            .unwrap()
            .created
    );
    let other = client
        .create_topic("events", 2, settings)
        .await
        .unwrap_err();
    assert_eq!(other.code(), Some(tonic::Code::AlreadyExists));

    let names: Vec<String> = (client.list_topics().await.unwrap().into_iter())
        .map(|t| t.name)
        .collect();
    assert!(names.contains(&"events".to_string()) && names.contains(&"default".to_string()));

    // A key goes where the client's partition_for_key says (the node's own function).
    for key in ["alice", "bob", "carol", "dave", "eve"] {
        let to = ProduceTo::topic("events").key(key);
        let produced = client.produce_to(&to, Bytes::from(key)).await.unwrap();
        assert_eq!(produced.partition, partition_for_key(key.as_bytes(), 4));
    }
    let to = ProduceTo::topic("events").partition(3);
    let batch = client
        .produce_batch_to(&to, vec![Bytes::from("x"), Bytes::from("y")])
        .await
        .unwrap();
    assert_eq!((batch.partition, batch.count), (3, 2));

    // Reads of one partition see only its records.
    let p3 = TopicPartition::new("events", 3);
    let read = client.consume_batch_at(&p3, 0, 0).await.unwrap();
    let values: Vec<&[u8]> = read.records.iter().map(|r| &r.value[..]).collect();
    assert!(values.ends_with(&[b"x", b"y"]), "{values:?}");
    let described = client.describe_topic("events").await.unwrap();
    assert_eq!(described.partitions.len(), 4);
    let info = client.info_at(&p3).await.unwrap();
    assert_eq!(info.next_offset, described.partitions[3].next_offset);

    // A follow of one partition gets what is produced there later.
    let mut follow = client
        .follow_at(&TopicPartition::new("events", 1), Start::Offset(0), 0)
        .await
        .unwrap();
    client
        .produce_to(&ProduceTo::topic("events").partition(1), "later")
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !seen.iter().any(|v: &Bytes| v == "later") {
        let batch = tokio::time::timeout(std::time::Duration::from_secs(10), follow.next())
            .await
            .expect("the follow delivers")
            .unwrap()
            .unwrap();
        seen.extend(batch.into_iter().map(|r| r.value));
    }

    let altered = client
        .alter_topic("events", Some(6), TopicSettings::default())
        .await
        .unwrap();
    assert_eq!(altered.unwrap().partitions, 6);
    client.delete_topic("events").await.unwrap();
    let gone = client.describe_topic("events").await.unwrap_err();
    assert_eq!(gone.code(), Some(tonic::Code::NotFound));
}

#[tokio::test]
async fn the_cli_reports_errors_in_one_line_and_ends_quietly_on_a_closed_pipe() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Standalone::new(root.path());
    node.start(&[]);
    node.client().await;
    let addr = node.addr.clone();

    let out = loghouse(&addr, &["topic", "describe", "nope"], b"");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("Error: NOT_FOUND: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let out = loghouse("127.0.0.1:1", &["info"], b"");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("Error: cannot connect to 127.0.0.1:1: "),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // Keys from stdin: every record lands in its key's partition.
    let out = loghouse(&addr, &["topic", "create", "t", "--partitions", "3"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let input = b"k1\tv1\nk2\tv2\nk3\tv3\nk1\tv4\n";
    let out = loghouse(&addr, &["produce", "-t", "t", "--parse-key"], input);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = loghouse(&addr, &["consume", "-t", "t"], b"");
    let mut lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    lines.sort();
    let mut expected: Vec<String> = [("k1", "v1"), ("k2", "v2"), ("k3", "v3"), ("k1", "v4")]
        .iter()
        .map(|(k, v)| format!("{}\t{v}", partition_for_key(k.as_bytes(), 3)))
        .collect();
    expected.sort();
    assert_eq!(lines, expected);

    // A reader that closes its end early: the command stops with status 0 and says nothing.
    let values: Vec<String> = (0..20_000).map(|n| n.to_string()).collect();
    let out = loghouse(&addr, &["produce"], values.join("\n").as_bytes());
    assert!(out.status.success());
    let shell = format!(
        "{} consume --addr {addr} | head -2; echo \"status ${{PIPESTATUS[0]}}\"",
        exe().display()
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &shell])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "0\n1\nstatus 0\n");
    assert_eq!(text(&out.stderr), "");
}
