//! The node's metrics in the Prometheus text format (0.0.4), and the HTTP endpoint that serves
//! them.
//!
//! Counters and histograms are updated where the work happens (`NodeMetrics` and each
//! partition's `PartitionMetrics` by the service, `LogMetrics` by the logs) and live in
//! `NodeMetrics`'s registry; gauges that live elsewhere (the logs' segments and offsets,
//! openraft's metrics, the gossip view) are read here, at scrape time, into a registry of their
//! own, so the hot path never pays for them. Both registries are written by `prometheus_client`'s
//! encoder.
//!
//! `loghouse_rpc_duration_seconds{rpc}`: a unary RPC observes the whole call, from the request
//! reaching the service to its answer. A streaming RPC observes each batch it handles, not the
//! call (a following stream lasts for ever): ProduceStream one append, from the first of its
//! messages being read to its acknowledgement; ConsumeStream and ConsumeBatchStream one read of
//! the log, up to the messages being queued for the client (not the wait for the client).

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::metrics::{NodeMetrics, PartitionLabels, DEFAULT_TOPIC};

use super::node::{GossipCounts, Node, RaftStatus};

/// One partition's log figures, read at scrape time (plain data: the node supplies one per
/// partition it holds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionGauges {
    pub topic: String,
    pub partition: u32,
    /// The lowest offset still in the partition's log.
    pub lowest_offset: u64,
    /// One past the last record written to it (committed or not).
    pub next_offset: u64,
    /// One past the last committed record: consumers read below it.
    pub committed_offset: u64,
    /// Bytes in its store files.
    pub size_bytes: u64,
    /// Segments in its log.
    pub segment_count: u32,
}

/// Everything the node measures, in the Prometheus text exposition format 0.0.4.
pub fn render(node: &Node) -> String {
    render_scrape(
        node.metrics(),
        &partition_gauges(node),
        node.raft_status().as_ref(),
        node.gossip_counts(),
    )
}

/// The figures of every partition the node holds. Today: one log, the default topic's
/// partition 0.
fn partition_gauges(node: &Node) -> Vec<PartitionGauges> {
    let info = node.log().info();
    vec![PartitionGauges {
        topic: DEFAULT_TOPIC.to_owned(),
        partition: 0,
        lowest_offset: info.lowest_offset,
        next_offset: info.next_offset,
        committed_offset: node.committed_offset(),
        size_bytes: info.size_bytes,
        segment_count: info.segment_count,
    }]
}

/// `metrics`' counters and histograms, then the gauges read at scrape time: `partitions` (one
/// entry per partition), and a member's Raft and gossip figures.
pub fn render_scrape(
    metrics: &NodeMetrics,
    partitions: &[PartitionGauges],
    raft: Option<&RaftStatus>,
    gossip: Option<GossipCounts>,
) -> String {
    let mut out = String::new();
    metrics.encode(&mut out);
    prometheus_client::encoding::prometheus_text::encode(
        &mut out,
        &scrape_registry(partitions, raft, gossip),
    )
    .expect("writing to a String cannot fail");
    out
}

/// A gauge family whose samples are given: one per label set.
#[derive(Debug)]
struct Gauges<L>(Vec<(L, u64)>);

impl<L> TypedMetric for Gauges<L> {
    const TYPE: MetricType = MetricType::Gauge;
}

impl<L: EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static> EncodeMetric for Gauges<L> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, value) in &self.0 {
            encoder.encode_family(labels)?.encode_gauge(value)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }

    /// No samples, no family (a follower has no replication lag to report).
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A labelled gauge family, one sample per partition.
fn per_partition(
    partitions: &[PartitionGauges],
    value: impl Fn(&PartitionGauges) -> u64,
) -> Gauges<PartitionLabels> {
    Gauges(
        partitions
            .iter()
            .map(|p| {
                let labels = PartitionLabels {
                    topic: p.topic.clone(),
                    partition: p.partition,
                };
                (labels, value(p))
            })
            .collect(),
    )
}

fn scrape_registry(
    partitions: &[PartitionGauges],
    raft: Option<&RaftStatus>,
    gossip: Option<GossipCounts>,
) -> Registry {
    let mut r = Registry::default();
    let gauge = |v: u64| ConstGauge::new(v);

    // The node's logs, unlabelled as before topics: segments and bytes are totals over every
    // partition; the offsets are the default topic's partition 0 (what a request naming no
    // topic reads), absent if the node has no such partition.
    r.register(
        "loghouse_log_segments",
        "Segments in the node's logs (every partition)",
        gauge(partitions.iter().map(|p| u64::from(p.segment_count)).sum()),
    );
    r.register(
        "loghouse_log_bytes",
        "Bytes in the node's log store files (every partition)",
        gauge(partitions.iter().map(|p| p.size_bytes).sum()),
    );
    if let Some(p) = partitions
        .iter()
        .find(|p| p.topic == DEFAULT_TOPIC && p.partition == 0)
    {
        r.register(
            "loghouse_log_lowest_offset",
            "The lowest offset still in the log (the default topic's partition 0)",
            gauge(p.lowest_offset),
        );
        r.register(
            "loghouse_log_next_offset",
            "One past the last record written to the log (committed or not; the default topic's partition 0)",
            gauge(p.next_offset),
        );
        r.register(
            "loghouse_log_committed_offset",
            "One past the last committed record: consumers read below it (the default topic's partition 0)",
            gauge(p.committed_offset),
        );
    }

    // Per partition.
    r.register(
        "loghouse_partition_segments",
        "Segments in the partition's log",
        per_partition(partitions, |p| u64::from(p.segment_count)),
    );
    r.register(
        "loghouse_partition_size_bytes",
        "Bytes in the partition's store files",
        per_partition(partitions, |p| p.size_bytes),
    );
    r.register(
        "loghouse_partition_lowest_offset",
        "The lowest offset still in the partition",
        per_partition(partitions, |p| p.lowest_offset),
    );
    r.register(
        "loghouse_partition_next_offset",
        "One past the last record written to the partition (committed or not)",
        per_partition(partitions, |p| p.next_offset),
    );
    r.register(
        "loghouse_partition_committed_offset",
        "One past the partition's last committed record: consumers read below it",
        per_partition(partitions, |p| p.committed_offset),
    );

    if let Some(raft) = raft {
        r.register(
            "loghouse_raft_term",
            "The Raft term this member is in",
            gauge(raft.term),
        );
        r.register(
            "loghouse_raft_leader_id",
            "The leader this member knows of (0: none)",
            gauge(raft.leader.unwrap_or(0)),
        );
        r.register(
            "loghouse_raft_is_leader",
            "1 on the leader, 0 elsewhere",
            gauge(u64::from(raft.is_leader)),
        );
        r.register(
            "loghouse_raft_last_log_index",
            "The last Raft index in this member's log",
            gauge(raft.last_log_index),
        );
        r.register(
            "loghouse_raft_commit_index",
            "The last Raft index this member knows to be committed",
            gauge(raft.commit_index),
        );
        r.register(
            "loghouse_raft_applied_index",
            "The last Raft index this member has applied",
            gauge(raft.applied_index),
        );
        let lag = raft
            .replication_lag
            .iter()
            .map(|(follower, lag)| ([("follower", follower.to_string())], *lag))
            .collect();
        r.register(
            "loghouse_raft_replication_lag_entries",
            "On the leader: Raft entries each follower is behind the leader's last entry",
            Gauges(lag),
        );
    }
    if let Some(gossip) = gossip {
        r.register(
            "loghouse_gossip_members",
            "Members (this one included) by gossip's opinion of them",
            Gauges(vec![
                ([("state", "up")], gossip.up),
                ([("state", "suspect")], gossip.suspect),
                ([("state", "down")], gossip.down),
            ]),
        );
    }
    r
}

/// Serves `GET /metrics` (and `GET /healthz`) over HTTP/1.1 on `listener` until the node begins
/// to shut down. Bounded: one request per connection, at most `CONNECTIONS_MAX` connections at a
/// time (further ones wait in the accept queue), each closed after `CONNECTION_TIMEOUT`.
#[cfg(not(madsim))]
pub async fn serve_metrics(node: Node, listener: tokio::net::TcpListener) {
    use std::sync::Arc;
    use std::time::Duration;

    const CONNECTIONS_MAX: usize = 16;
    const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    let stopping = node.stopping();
    tokio::pin!(stopping);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving metrics on http://{addr}/metrics");
    }
    loop {
        let slot = tokio::select! {
            biased;
            _ = &mut stopping => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            biased;
            _ = &mut stopping => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let node = node.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |request| {
                let response = endpoint::respond(&node, &request);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "metrics endpoint: connection failed"),
                Err(_) => tracing::debug!("metrics endpoint: connection timed out"),
            }
        });
    }
}

#[cfg(not(madsim))]
mod endpoint {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::{header, Method, Request, Response, StatusCode};

    use super::{render, Node};
    use crate::metrics::CONTENT_TYPE;

    pub(super) fn respond<B>(node: &Node, request: &Request<B>) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match (request.method(), request.uri().path()) {
            (&Method::GET, "/metrics") => (StatusCode::OK, CONTENT_TYPE, Bytes::from(render(node))),
            (&Method::GET, "/healthz") if node.is_stopping() => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                Bytes::from_static(b"stopping\n"),
            ),
            (&Method::GET, "/healthz") => {
                (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n"))
            }
            (_, "/metrics" | "/healthz") => (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                Bytes::from_static(b"only GET\n"),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                Bytes::from_static(b"not found: try /metrics\n"),
            ),
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(topic: &str, partition: u32, base: u64) -> PartitionGauges {
        PartitionGauges {
            topic: topic.to_owned(),
            partition,
            lowest_offset: base,
            next_offset: base + 10,
            committed_offset: base + 8,
            size_bytes: base * 100,
            segment_count: partition + 1,
        }
    }

    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn partition_gauges_are_labelled_and_the_unlabelled_log_gauges_kept() {
        let metrics = NodeMetrics::default();
        let partitions = [partition(DEFAULT_TOPIC, 0, 5), partition("orders", 2, 40)];
        let text = render_scrape(&metrics, &partitions, None, None);
        let lines = samples(&text);
        for line in [
            "loghouse_partition_lowest_offset{topic=\"default\",partition=\"0\"} 5",
            "loghouse_partition_next_offset{topic=\"default\",partition=\"0\"} 15",
            "loghouse_partition_committed_offset{topic=\"default\",partition=\"0\"} 13",
            "loghouse_partition_size_bytes{topic=\"default\",partition=\"0\"} 500",
            "loghouse_partition_segments{topic=\"default\",partition=\"0\"} 1",
            "loghouse_partition_lowest_offset{topic=\"orders\",partition=\"2\"} 40",
            "loghouse_partition_size_bytes{topic=\"orders\",partition=\"2\"} 4000",
            "loghouse_partition_segments{topic=\"orders\",partition=\"2\"} 3",
            // Totals over the partitions.
            "loghouse_log_segments 4",
            "loghouse_log_bytes 4500",
            // The default topic's partition 0.
            "loghouse_log_lowest_offset 5",
            "loghouse_log_next_offset 15",
            "loghouse_log_committed_offset 13",
            // The registry's counters come first, in the same text.
            "loghouse_produce_records_total 0",
        ] {
            assert!(lines.contains(&line), "no {line} in\n{text}");
        }
        assert!(text.contains("# TYPE loghouse_partition_size_bytes gauge\n"));
        assert!(!text.contains("loghouse_raft_") && !text.contains("loghouse_gossip_"));
        // Every family's HELP and TYPE once.
        let types: Vec<_> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let mut unique = types.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(types.len(), unique.len(), "{text}");
    }

    #[test]
    fn without_the_default_partition_its_offsets_are_absent() {
        let metrics = NodeMetrics::default();
        let text = render_scrape(&metrics, &[partition("orders", 0, 1)], None, None);
        assert!(!text.contains("loghouse_log_lowest_offset"), "{text}");
        assert!(!text.contains("loghouse_log_committed_offset"), "{text}");
        assert!(samples(&text).contains(&"loghouse_log_bytes 100"));
        // No partitions at all: totals of zero, no per-partition families.
        let text = render_scrape(&metrics, &[], None, None);
        assert!(samples(&text).contains(&"loghouse_log_segments 0"));
        assert!(!text.contains("loghouse_partition_"), "{text}");
    }

    #[test]
    fn raft_and_gossip_gauges() {
        let metrics = NodeMetrics::default();
        let raft = RaftStatus {
            node_id: 1,
            term: 3,
            leader: Some(1),
            is_leader: true,
            last_log_index: 9,
            commit_index: 8,
            applied_index: 7,
            replication_lag: vec![(2, 0), (3, 4)],
        };
        let gossip = GossipCounts {
            up: 2,
            suspect: 1,
            down: 0,
        };
        let text = render_scrape(&metrics, &[], Some(&raft), Some(gossip));
        let lines = samples(&text);
        for line in [
            "loghouse_raft_term 3",
            "loghouse_raft_leader_id 1",
            "loghouse_raft_is_leader 1",
            "loghouse_raft_last_log_index 9",
            "loghouse_raft_commit_index 8",
            "loghouse_raft_applied_index 7",
            "loghouse_raft_replication_lag_entries{follower=\"2\"} 0",
            "loghouse_raft_replication_lag_entries{follower=\"3\"} 4",
            "loghouse_gossip_members{state=\"up\"} 2",
            "loghouse_gossip_members{state=\"suspect\"} 1",
            "loghouse_gossip_members{state=\"down\"} 0",
        ] {
            assert!(lines.contains(&line), "no {line} in\n{text}");
        }
        // A follower (no lag to report), no leader known.
        let follower = RaftStatus {
            leader: None,
            is_leader: false,
            replication_lag: vec![],
            ..raft
        };
        let text = render_scrape(&metrics, &[], Some(&follower), None);
        assert!(samples(&text).contains(&"loghouse_raft_leader_id 0"));
        assert!(samples(&text).contains(&"loghouse_raft_is_leader 0"));
        assert!(!text.contains("loghouse_raft_replication_lag_entries"));
    }
}
