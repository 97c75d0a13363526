//! Real processes (the built `loghouse` binary): restarting a standalone node with a lower or a
//! higher `--record-bytes-max` loses nothing, after kill -9 and after a clean stop (SIGTERM)
//! (issue 15, item 2). The reproduction: five records of 5,000 bytes under the
//! defaults, kill -9, restart with `--record-bytes-max 1000`: all five are still there, a new
//! 5,000-byte produce is refused with INVALID_ARGUMENT and a 500-byte one lands at offset 5.

mod process_support;

use bytes::Bytes;
use loghouse::client::{Client, ClientError};
use process_support::Standalone;

#[derive(Debug, Clone, Copy)]
enum Stop {
    Kill9,
    Sigterm,
}

async fn stop(node: &mut Standalone, how: Stop) {
    match how {
        Stop::Kill9 => node.kill9(),
        Stop::Sigterm => assert!(node.terminate().await.success(), "{}", node.log_text()),
    }
}

fn value(n: u64, len: usize) -> Bytes {
    let mut v = format!("record {n}:").into_bytes();
    v.resize(len, b'a' + (n % 26) as u8);
    Bytes::from(v)
}

async fn consume_all(client: &Client, count: u64) -> Vec<Bytes> {
    let mut out = Vec::new();
    for offset in 0..count {
        out.push(client.consume(offset).await.expect("consume").value);
    }
    out
}

fn invalid_argument(result: Result<u64, ClientError>) -> String {
    match result {
        Err(ClientError::Status(status)) if status.code() == tonic::Code::InvalidArgument => {
            status.message().to_owned()
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

/// Writes five `len`-byte records under `first` (serve arguments), stops the node `how`,
/// restarts it under `second` and checks all five; returns the running node and its client.
async fn restart_with(
    root: &std::path::Path,
    len: usize,
    first: &[&str],
    how: Stop,
    second: &[&str],
) -> (Standalone, Client, Vec<Bytes>) {
    let mut node = Standalone::new(root);
    node.start(first);
    let client = node.client().await;
    let written: Vec<Bytes> = (0..5).map(|n| value(n, len)).collect();
    for (n, v) in written.iter().enumerate() {
        assert_eq!(client.produce(v.clone()).await.unwrap(), n as u64);
    }
    drop(client);
    stop(&mut node, how).await;

    node.start(second);
    let client = node.client().await;
    assert_eq!(
        consume_all(&client, 5).await,
        written,
        "{how:?}: every record is still there"
    );
    assert!(client.consume(5).await.is_err(), "{how:?}: nothing more");
    (node, client, written)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_record_limit_after_a_restart_keeps_every_record_and_bounds_new_produces() {
    for how in [Stop::Kill9, Stop::Sigterm] {
        let root = tempfile::tempdir().unwrap();
        let (mut node, client, written) = restart_with(
            root.path(),
            5_000,
            &[],
            how,
            &["--record-bytes-max", "1000"],
        )
        .await;
        let message = invalid_argument(client.produce(value(5, 5_000)).await);
        assert!(message.contains("1000"), "{how:?}: {message}");
        assert_eq!(client.produce(value(5, 500)).await.unwrap(), 5, "{how:?}");
        assert_eq!(client.consume(5).await.unwrap().value, value(5, 500));
        drop(client);

        // Once more, stopped the same way: the records written under both limits survive.
        stop(&mut node, how).await;
        node.start(&["--record-bytes-max", "1000"]);
        let client = node.client().await;
        let mut expected = written;
        expected.push(value(5, 500));
        assert_eq!(consume_all(&client, 6).await, expected, "{how:?}");
        drop(client);
        assert!(node.terminate().await.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_record_limit_after_a_restart_keeps_every_record_and_takes_larger_ones() {
    for how in [Stop::Kill9, Stop::Sigterm] {
        let root = tempfile::tempdir().unwrap();
        let first = ["--record-bytes-max", "1000"];
        let (mut node, client, _) = restart_with(
            root.path(),
            1_000,
            &first,
            how,
            &["--record-bytes-max", "8000"],
        )
        .await;
        assert_eq!(client.produce(value(5, 8_000)).await.unwrap(), 5, "{how:?}");
        let message = invalid_argument(client.produce(value(6, 8_001)).await);
        assert!(message.contains("8000"), "{how:?}: {message}");
        assert_eq!(client.consume(5).await.unwrap().value, value(5, 8_000));
        drop(client);
        assert!(node.terminate().await.success());
    }
}

/// Every size and batching limit of a standalone node's config file, lowered after records were
/// written under the defaults (and raised again): each record is still served whole by Consume,
/// ConsumeBatch and ConsumeStream, after kill -9 and after SIGTERM, and the new limits bound
/// only new produces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowering_and_raising_every_size_and_batching_limit_loses_nothing() {
    use futures::StreamExt;
    use loghouse::client::Start;

    const LOW: &str = "record_bytes_max = 1000\n\
        segment_bytes_max = 8192\n\
        index_bytes_max = 48\n\
        [limits]\n\
        message_bytes_max = 2048\n\
        batch_records_max = 2\n\
        consume_records_max = 2\n\
        consume_bytes_max = 2048\n\
        stream_appends_in_flight_max = 2\n\
        stream_appends_in_flight_bytes_max = 2048\n\
        stream_buffer_messages_max = 2\n\
        stream_buffer_bytes_max = 2048\n";
    for how in [Stop::Kill9, Stop::Sigterm] {
        let root = tempfile::tempdir().unwrap();
        let low = root.path().join("low.toml");
        std::fs::write(&low, LOW).unwrap();
        let low_args = ["--config", low.to_str().unwrap()];
        let (mut node, client, mut written) =
            restart_with(root.path(), 5_000, &[], how, &low_args).await;
        // Whole records, larger than every limit now: one per batch, one per stream message.
        let batch = client.consume_batch(0, 0).await.unwrap();
        assert_eq!(batch.records.len(), 1, "{how:?}");
        assert_eq!(batch.records[0].value, written[0]);
        let mut stream = client.follow(Start::Offset(0)).await.unwrap();
        let mut streamed = Vec::new();
        while streamed.len() < 5 {
            let records = stream.next().await.expect("the stream goes on").unwrap();
            streamed.extend(records.into_iter().map(|r| r.value));
        }
        drop(stream);
        assert_eq!(streamed, written, "{how:?}");
        // New produces meet the new limits.
        invalid_argument(client.produce(value(5, 1_001)).await);
        let refused = client
            .produce_batch(vec![value(5, 10), value(6, 10), value(7, 10)])
            .await;
        assert!(refused.is_err(), "{how:?}: batch_records_max = 2");
        assert_eq!(client.produce(value(5, 1_000)).await.unwrap(), 5);
        written.push(value(5, 1_000));
        drop(client);

        // Raised back to the defaults, stopped the same way: everything is there.
        stop(&mut node, how).await;
        node.start(&[]);
        let client = node.client().await;
        assert_eq!(consume_all(&client, 6).await, written, "{how:?}");
        assert_eq!(client.produce(value(6, 5_000)).await.unwrap(), 6);
        drop(client);
        assert!(node.terminate().await.success());
    }
}
