//! Metrics: counters and histograms built on relaxed atomics, registered in a
//! [`prometheus_client`] [`Registry`] and written in the Prometheus text exposition format
//! (0.0.4) by that crate's encoder.
//!
//! Nothing here knows about HTTP, gRPC or the log: the storage engine updates a [`LogMetrics`]
//! it is handed, the server updates [`NodeMetrics`] (and each partition's [`PartitionMetrics`])
//! per request, and `server::metrics` encodes [`NodeMetrics::registry`] plus a per-scrape
//! registry of gauges taken at scrape time from Raft, gossip and the logs.
//!
//! Updating a metric is one or two relaxed atomic adds: no lock, no allocation, no formatting.
//! `prometheus_client`'s `Counter` is an `Arc<AtomicU64>`; its `Histogram` takes a lock per
//! observation, so the latency histograms are our own [`Histogram`] (atomics), which encodes
//! itself through the crate's `EncodeMetric`. The per-RPC children are fixed (an array indexed
//! by [`Rpc`]); the per-partition ones are looked up in their `Family` once (that takes the
//! family's lock and allocates) and the child handles kept ([`PartitionMetrics`]).
//!
//! Label cardinality: the `rpc` families have one series per `log.v1` method (`Rpc::ALL`);
//! the per-partition families (`topic`, `partition`) one per partition the node holds, so at
//! most the node's partition limit (`limits.partitions_max`) each: a partition's series are
//! created when the node opens it ([`NodeMetrics::partition`]) and removed when it is deleted
//! ([`NodeMetrics::forget_partition`]), never by a request naming an unknown topic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeMetric, LabelSetEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// A monotonically increasing count: `prometheus_client`'s, a shared `AtomicU64` (clones count
/// into the same value). `inc`, `inc_by(n)` and `get` are relaxed atomics.
pub type Counter = prometheus_client::metrics::counter::Counter;

/// The `Content-Type` of what [`NodeMetrics::encode`] writes (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The default topic's name (what a request naming no topic, `""`, means).
pub const DEFAULT_TOPIC: &str = "default";

/// Upper bounds (inclusive, in seconds) of the latency histograms' buckets: 50 us to 10 s, about
/// 2-2.5x apart. Anything slower lands in the implicit `+Inf` bucket.
pub const LATENCY_BUCKETS_SECONDS: [f64; 18] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The same bounds in nanoseconds (what `observe` compares against).
const LATENCY_BUCKETS_NANOS: [u64; 18] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    7_500_000_000,
    10_000_000_000,
];

const BUCKETS: usize = LATENCY_BUCKETS_NANOS.len();

/// A latency histogram with the fixed buckets of [`LATENCY_BUCKETS_SECONDS`]. Each bucket is
/// counted on its own (not cumulatively); encoding adds them up. The sum is kept in
/// nanoseconds. Readers may see an observation in the count before the sum (relaxed atomics);
/// a scrape is a snapshot, not a transaction. Clones share the same counts (so the registry
/// holds one and the code that observes another).
#[derive(Debug, Clone, Default)]
pub struct Histogram(Arc<HistogramCounts>);

#[derive(Debug)]
struct HistogramCounts {
    /// `buckets[i]`: observations in `(bound[i-1], bound[i]]`; `buckets[BUCKETS]`: above the last.
    buckets: [AtomicU64; BUCKETS + 1],
    sum_nanos: AtomicU64,
}

impl Default for HistogramCounts {
    fn default() -> Self {
        HistogramCounts {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

/// A histogram's state at one moment: cumulative bucket counts, total count and sum.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations at or below it)`, ending with `+Inf` (= count).
    pub cumulative: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKETS_NANOS.partition_point(|&bound| bound < nanos);
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }

    /// The observations' total, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// `(upper bound in seconds, observations in that bucket alone)`, ending with `+Inf`: each
    /// bucket read once, so their total is a consistent count.
    fn buckets(&self) -> [(f64, u64); BUCKETS + 1] {
        std::array::from_fn(|i| {
            let bound = LATENCY_BUCKETS_SECONDS
                .get(i)
                .copied()
                .unwrap_or(f64::INFINITY);
            (bound, self.0.buckets[i].load(Ordering::Relaxed))
        })
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let cumulative = self
            .buckets()
            .iter()
            .map(|&(bound, n)| {
                running += n;
                (bound, running)
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            count: running,
            sum_seconds: self.sum_seconds(),
        }
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

/// `_bucket{le}` (cumulative, by the encoder), `_sum` (seconds) and `_count`. Allocates nothing.
impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets = self.buckets();
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(
            self.sum_seconds(),
            count,
            &buckets,
            None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// What the storage engine counts as it works. One instance may be shared by several logs (a
/// cluster member's data log and Raft entry log; on a node with topics, every partition's log):
/// the figures are then their total.
#[derive(Debug, Default)]
pub struct LogMetrics {
    /// Successful fsyncs of a store file.
    pub fsyncs: Counter,
    /// How long each successful fsync took.
    pub fsync_seconds: Histogram,
}

/// Two handles are equal when they are the same sink (so configs holding one compare sanely).
impl PartialEq for LogMetrics {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}
impl Eq for LogMetrics {}

/// The gRPC methods of `log.v1.Log`, for per-RPC metrics without a string per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rpc {
    Produce,
    Consume,
    ConsumeStream,
    ProduceStream,
    GetServers,
    ProduceBatch,
    ConsumeBatch,
    ConsumeBatchStream,
    OffsetForTime,
    GetLogInfo,
    CreateTopic,
    DeleteTopic,
    ListTopics,
    DescribeTopic,
    AlterTopic,
}

impl Rpc {
    pub const ALL: [Rpc; 15] = [
        Rpc::Produce,
        Rpc::Consume,
        Rpc::ConsumeStream,
        Rpc::ProduceStream,
        Rpc::GetServers,
        Rpc::ProduceBatch,
        Rpc::ConsumeBatch,
        Rpc::ConsumeBatchStream,
        Rpc::OffsetForTime,
        Rpc::GetLogInfo,
        Rpc::CreateTopic,
        Rpc::DeleteTopic,
        Rpc::ListTopics,
        Rpc::DescribeTopic,
        Rpc::AlterTopic,
    ];

    /// The method name, as in the proto (the `rpc` label's value).
    pub const fn name(self) -> &'static str {
        match self {
            Rpc::Produce => "Produce",
            Rpc::Consume => "Consume",
            Rpc::ConsumeStream => "ConsumeStream",
            Rpc::ProduceStream => "ProduceStream",
            Rpc::GetServers => "GetServers",
            Rpc::ProduceBatch => "ProduceBatch",
            Rpc::ConsumeBatch => "ConsumeBatch",
            Rpc::ConsumeBatchStream => "ConsumeBatchStream",
            Rpc::OffsetForTime => "OffsetForTime",
            Rpc::GetLogInfo => "GetLogInfo",
            Rpc::CreateTopic => "CreateTopic",
            Rpc::DeleteTopic => "DeleteTopic",
            Rpc::ListTopics => "ListTopics",
            Rpc::DescribeTopic => "DescribeTopic",
            Rpc::AlterTopic => "AlterTopic",
        }
    }
}

/// The `rpc="Produce"` label.
impl EncodeLabelSet for Rpc {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        [("rpc", self.name())].encode(encoder)
    }
}

/// A family with one child per RPC, labelled `rpc`, written in `Rpc::ALL`'s order. Its
/// children are fixed, so it needs no map and no lock (a `Family` has both).
#[derive(Debug)]
struct PerRpc<M>([M; Rpc::ALL.len()]);

impl<M: TypedMetric> TypedMetric for PerRpc<M> {
    const TYPE: MetricType = M::TYPE;
}

impl<M: EncodeMetric + TypedMetric> EncodeMetric for PerRpc<M> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (rpc, metric) in Rpc::ALL.iter().zip(&self.0) {
            metric.encode(encoder.encode_family(rpc)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }
}

/// The labels of a partition's series: `topic="orders",partition="3"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: u32,
}

/// One partition's produce and consume counters (its labelled children, looked up once), plus
/// the node-wide totals they add to. Cheap to clone; `Send + Sync`. Updating is four relaxed
/// atomic adds: no lock, no allocation.
#[derive(Debug, Clone)]
pub struct PartitionMetrics {
    produce_records: Counter,
    produce_bytes: Counter,
    consume_records: Counter,
    consume_bytes: Counter,
    /// The node's `produce_records`, `produce_bytes`, `consume_records`, `consume_bytes`.
    node: [Counter; 4],
}

impl PartitionMetrics {
    /// `records` records of `bytes` value bytes acknowledged to producers: counts them for this
    /// partition and in the node's totals (so do not also count them elsewhere).
    pub fn produced(&self, records: u64, bytes: u64) {
        self.produce_records.inc_by(records);
        self.produce_bytes.inc_by(bytes);
        self.node[0].inc_by(records);
        self.node[1].inc_by(bytes);
    }

    /// `records` records of `bytes` value bytes sent to consumers: counts them for this
    /// partition and in the node's totals.
    pub fn consumed(&self, records: u64, bytes: u64) {
        self.consume_records.inc_by(records);
        self.consume_bytes.inc_by(bytes);
        self.node[2].inc_by(records);
        self.node[3].inc_by(bytes);
    }

    /// This partition's counts so far: (produced records, produced bytes, consumed records,
    /// consumed bytes).
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        (
            self.produce_records.get(),
            self.produce_bytes.get(),
            self.consume_records.get(),
            self.consume_bytes.get(),
        )
    }
}

/// A node's request counters and the registry that exports them. `Arc`-shared by the service
/// and whoever exports them.
#[derive(Debug)]
pub struct NodeMetrics {
    /// Records (and their value bytes) acknowledged to producers: the node's totals over every
    /// partition (counted through [`PartitionMetrics::produced`]).
    pub produce_records: Counter,
    pub produce_bytes: Counter,
    /// Records (and their value bytes) sent to consumers: the node's totals.
    pub consume_records: Counter,
    pub consume_bytes: Counter,
    /// Per RPC, indexed like `Rpc::ALL` (shared with the registry's `rpc` families). Unary calls
    /// observe the whole call; streams observe each batch (see `server::metrics`).
    rpc_seconds: [Histogram; Rpc::ALL.len()],
    rpc_errors: [Counter; Rpc::ALL.len()],
    /// Per partition (`topic`, `partition`).
    partition_produce_records: Family<PartitionLabels, Counter>,
    partition_produce_bytes: Family<PartitionLabels, Counter>,
    partition_consume_records: Family<PartitionLabels, Counter>,
    partition_consume_bytes: Family<PartitionLabels, Counter>,
    /// What the storage engine counts (shared with the node's logs).
    pub log: Arc<LogMetrics>,
    /// Every metric above, by name, in the order they are written.
    registry: Registry,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        // `prometheus_client` adds `_total` to counters' names, and a full stop to help texts.
        let produce_records = Counter::default();
        registry.register(
            "loghouse_produce_records",
            "Records acknowledged to producers by this node",
            produce_records.clone(),
        );
        let produce_bytes = Counter::default();
        registry.register(
            "loghouse_produce_bytes",
            "Value bytes of the records acknowledged to producers by this node",
            produce_bytes.clone(),
        );
        let consume_records = Counter::default();
        registry.register(
            "loghouse_consume_records",
            "Records sent to consumers by this node",
            consume_records.clone(),
        );
        let consume_bytes = Counter::default();
        registry.register(
            "loghouse_consume_bytes",
            "Value bytes of the records sent to consumers by this node",
            consume_bytes.clone(),
        );

        let rpc_seconds: [Histogram; Rpc::ALL.len()] = Default::default();
        registry.register(
            "loghouse_rpc_duration_seconds",
            "log.v1 RPC latency: per call for unary RPCs, per batch for streaming RPCs",
            PerRpc(rpc_seconds.clone()),
        );
        let rpc_errors: [Counter; Rpc::ALL.len()] = Default::default();
        registry.register(
            "loghouse_rpc_errors",
            "log.v1 calls (streams: batches) answered with an error status",
            PerRpc(rpc_errors.clone()),
        );

        let log = Arc::new(LogMetrics::default());
        registry.register(
            "loghouse_fsync",
            "Successful fsyncs of the log's store files (on a member: data and Raft entry logs)",
            log.fsyncs.clone(),
        );
        registry.register(
            "loghouse_fsync_duration_seconds",
            "How long each log fsync took",
            log.fsync_seconds.clone(),
        );

        let partition_family = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<PartitionLabels, Counter>::default();
            registry.register(name, help, family.clone());
            family
        };
        let partition_produce_records = partition_family(
            &mut registry,
            "loghouse_partition_produce_records",
            "Records acknowledged to producers by this node, per topic partition",
        );
        let partition_produce_bytes = partition_family(
            &mut registry,
            "loghouse_partition_produce_bytes",
            "Value bytes of the records acknowledged to producers by this node, per topic partition",
        );
        let partition_consume_records = partition_family(
            &mut registry,
            "loghouse_partition_consume_records",
            "Records sent to consumers by this node, per topic partition",
        );
        let partition_consume_bytes = partition_family(
            &mut registry,
            "loghouse_partition_consume_bytes",
            "Value bytes of the records sent to consumers by this node, per topic partition",
        );

        NodeMetrics {
            produce_records,
            produce_bytes,
            consume_records,
            consume_bytes,
            rpc_seconds,
            rpc_errors,
            partition_produce_records,
            partition_produce_bytes,
            partition_consume_records,
            partition_consume_bytes,
            log,
            registry,
        }
    }
}

impl NodeMetrics {
    pub fn rpc_seconds(&self, rpc: Rpc) -> &Histogram {
        &self.rpc_seconds[rpc as usize]
    }

    /// Calls (or, for streams, batches) that ended in an error status.
    pub fn rpc_errors(&self, rpc: Rpc) -> &Counter {
        &self.rpc_errors[rpc as usize]
    }

    /// The counters of `topic`'s partition `partition`: creates its labelled series (at zero)
    /// or, if they exist, returns handles to them. Takes the families' locks and allocates:
    /// call it when the node opens or creates the partition, and keep the handle.
    pub fn partition(&self, topic: &str, partition: u32) -> PartitionMetrics {
        let labels = PartitionLabels {
            topic: topic.to_owned(),
            partition,
        };
        PartitionMetrics {
            produce_records: self.partition_produce_records.get_or_create_owned(&labels),
            produce_bytes: self.partition_produce_bytes.get_or_create_owned(&labels),
            consume_records: self.partition_consume_records.get_or_create_owned(&labels),
            consume_bytes: self.partition_consume_bytes.get_or_create_owned(&labels),
            node: [
                self.produce_records.clone(),
                self.produce_bytes.clone(),
                self.consume_records.clone(),
                self.consume_bytes.clone(),
            ],
        }
    }

    /// Removes the labelled series of `topic`'s partition `partition` (the topic was deleted):
    /// they are no longer exported. Handles still held keep counting, unexported (and into the
    /// node's totals); a later [`NodeMetrics::partition`] starts new series at zero.
    pub fn forget_partition(&self, topic: &str, partition: u32) {
        let labels = PartitionLabels {
            topic: topic.to_owned(),
            partition,
        };
        self.partition_produce_records.remove(&labels);
        self.partition_produce_bytes.remove(&labels);
        self.partition_consume_records.remove(&labels);
        self.partition_consume_bytes.remove(&labels);
    }

    /// Everything registered here, to encode (with the scrape-time gauges: `server::metrics`).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Writes every counter and histogram in the Prometheus text format 0.0.4 ([`CONTENT_TYPE`]).
    pub fn encode(&self, out: &mut String) {
        prometheus_client::encoding::prometheus_text::encode(out, &self.registry)
            .expect("writing to a String cannot fail");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_indexes_follow_all() {
        for (i, rpc) in Rpc::ALL.iter().enumerate() {
            assert_eq!(*rpc as usize, i);
        }
    }

    #[test]
    fn bucket_bounds_agree() {
        for (s, n) in LATENCY_BUCKETS_SECONDS.iter().zip(LATENCY_BUCKETS_NANOS) {
            assert_eq!((s * 1e9).round() as u64, n);
        }
        assert!(LATENCY_BUCKETS_NANOS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        let h = Histogram::default();
        h.observe(Duration::ZERO); // first bucket
        h.observe(Duration::from_micros(50)); // exactly on the first bound: first bucket
        h.observe(Duration::from_nanos(50_001)); // just above: second bucket
        h.observe(Duration::from_millis(3)); // (2.5 ms, 5 ms]
        h.observe(Duration::from_secs(10)); // the last finite bucket
        h.observe(Duration::from_secs(11)); // +Inf only
        let s = h.snapshot();
        assert_eq!(s.count, 6);
        assert_eq!(h.count(), 6);
        let at = |bound: f64| s.cumulative.iter().find(|(b, _)| *b == bound).unwrap().1;
        assert_eq!(at(0.000_05), 2);
        assert_eq!(at(0.000_1), 3);
        assert_eq!(at(0.002_5), 3);
        assert_eq!(at(0.005), 4);
        assert_eq!(at(7.5), 4);
        assert_eq!(at(10.0), 5);
        assert_eq!(s.cumulative.last(), Some(&(f64::INFINITY, 6)));
        assert_eq!(s.cumulative.len(), LATENCY_BUCKETS_SECONDS.len() + 1);
        let expected_sum = 50e-6 + 50_001e-9 + 0.003 + 10.0 + 11.0;
        assert!((s.sum_seconds - expected_sum).abs() < 1e-9);
        // Cumulative counts never decrease.
        assert!(s.cumulative.windows(2).all(|w| w[0].1 <= w[1].1));
    }

    #[test]
    fn log_metrics_compare_by_identity() {
        let a = std::sync::Arc::new(LogMetrics::default());
        let b = std::sync::Arc::new(LogMetrics::default());
        assert_eq!(a, a.clone());
        assert_ne!(a, b);
    }
}

#[cfg(test)]
mod encoding_tests {
    use super::*;

    fn encoded(metrics: &NodeMetrics) -> String {
        let mut out = String::new();
        metrics.encode(&mut out);
        out
    }

    /// The sample lines of `text`, `series value`.
    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn histogram_encodes_cumulative_buckets_sum_and_count() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(30));
        h.observe(Duration::from_millis(2));
        h.observe(Duration::from_secs(20));
        let mut registry = Registry::default();
        registry.register("loghouse_test_seconds", "Latency \\ \"x\"\nline", h.clone());
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        let expected = r#"# HELP loghouse_test_seconds Latency \\ "x"\nline.
# TYPE loghouse_test_seconds histogram
loghouse_test_seconds_bucket{le="5e-05"} 1
loghouse_test_seconds_bucket{le="0.0001"} 1
loghouse_test_seconds_bucket{le="0.00025"} 1
loghouse_test_seconds_bucket{le="0.0005"} 1
loghouse_test_seconds_bucket{le="0.001"} 1
loghouse_test_seconds_bucket{le="0.0025"} 2
loghouse_test_seconds_bucket{le="0.005"} 2
loghouse_test_seconds_bucket{le="0.01"} 2
loghouse_test_seconds_bucket{le="0.025"} 2
loghouse_test_seconds_bucket{le="0.05"} 2
loghouse_test_seconds_bucket{le="0.1"} 2
loghouse_test_seconds_bucket{le="0.25"} 2
loghouse_test_seconds_bucket{le="0.5"} 2
loghouse_test_seconds_bucket{le="1"} 2
loghouse_test_seconds_bucket{le="2.5"} 2
loghouse_test_seconds_bucket{le="5"} 2
loghouse_test_seconds_bucket{le="7.5"} 2
loghouse_test_seconds_bucket{le="10"} 2
loghouse_test_seconds_bucket{le="+Inf"} 3
loghouse_test_seconds_sum 20.00203
loghouse_test_seconds_count 3
"#;
        assert_eq!(out, expected);
    }

    #[test]
    fn node_metrics_keep_their_names() {
        let m = NodeMetrics::default();
        m.rpc_seconds(Rpc::Produce)
            .observe(Duration::from_millis(1));
        m.rpc_errors(Rpc::Consume).inc();
        m.log.fsyncs.inc();
        m.log.fsync_seconds.observe(Duration::from_millis(3));
        let text = encoded(&m);
        let lines = samples(&text);
        for line in [
            "loghouse_produce_records_total 0",
            "loghouse_produce_bytes_total 0",
            "loghouse_consume_records_total 0",
            "loghouse_consume_bytes_total 0",
            "loghouse_rpc_duration_seconds_count{rpc=\"Produce\"} 1",
            "loghouse_rpc_duration_seconds_bucket{rpc=\"Produce\",le=\"0.001\"} 1",
            "loghouse_rpc_duration_seconds_count{rpc=\"GetLogInfo\"} 0",
            "loghouse_rpc_errors_total{rpc=\"Consume\"} 1",
            "loghouse_rpc_errors_total{rpc=\"Produce\"} 0",
            "loghouse_fsync_total 1",
            "loghouse_fsync_duration_seconds_count 1",
            "loghouse_fsync_duration_seconds_sum 0.003",
        ] {
            assert!(lines.contains(&line), "no {line} in\n{text}");
        }
        // One series per RPC, in `Rpc::ALL`'s order.
        let errors: Vec<_> = lines
            .iter()
            .filter(|l| l.starts_with("loghouse_rpc_errors_total"))
            .copied()
            .collect();
        let expected: Vec<_> = Rpc::ALL
            .iter()
            .map(|rpc| {
                let n = u64::from(*rpc == Rpc::Consume);
                format!("loghouse_rpc_errors_total{{rpc=\"{}\"}} {n}", rpc.name())
            })
            .collect();
        assert_eq!(errors, expected);
        for kind in ["counter", "histogram"] {
            assert!(text.contains(&format!(
                "# TYPE loghouse_rpc_{} {kind}\n",
                if kind == "counter" {
                    "errors_total"
                } else {
                    "duration_seconds"
                }
            )));
        }
        // No partition yet: no per-partition family.
        assert!(!text.contains("loghouse_partition_"), "{text}");
    }

    #[test]
    fn partition_counters_are_labelled_and_add_to_the_node_totals() {
        let m = NodeMetrics::default();
        let orders = m.partition("orders", 3);
        let default = m.partition(DEFAULT_TOPIC, 0);
        orders.produced(2, 10);
        orders.produced(3, 5);
        orders.consumed(1, 4);
        default.produced(7, 70);
        // The same partition again: the same series.
        m.partition("orders", 3).produced(1, 1);
        assert_eq!(orders.totals(), (6, 16, 1, 4));
        assert_eq!(default.totals(), (7, 70, 0, 0));
        assert_eq!(m.produce_records.get(), 13);
        assert_eq!(m.produce_bytes.get(), 86);
        assert_eq!(m.consume_records.get(), 1);
        assert_eq!(m.consume_bytes.get(), 4);

        let text = encoded(&m);
        let lines = samples(&text);
        for line in [
            "loghouse_partition_produce_records_total{topic=\"orders\",partition=\"3\"} 6",
            "loghouse_partition_produce_bytes_total{topic=\"orders\",partition=\"3\"} 16",
            "loghouse_partition_consume_records_total{topic=\"orders\",partition=\"3\"} 1",
            "loghouse_partition_consume_bytes_total{topic=\"orders\",partition=\"3\"} 4",
            "loghouse_partition_produce_records_total{topic=\"default\",partition=\"0\"} 7",
            "loghouse_partition_consume_records_total{topic=\"default\",partition=\"0\"} 0",
            "loghouse_produce_records_total 13",
            "loghouse_produce_bytes_total 86",
        ] {
            assert!(lines.contains(&line), "no {line} in\n{text}");
        }
        assert!(text.contains("# TYPE loghouse_partition_produce_records_total counter\n"));
        // One family each: HELP and TYPE once.
        assert_eq!(
            text.matches("# TYPE loghouse_partition_produce_records_total")
                .count(),
            1
        );
    }

    #[test]
    fn forget_partition_removes_its_series() {
        let m = NodeMetrics::default();
        let gone = m.partition("gone", 1);
        let kept = m.partition("kept", 0);
        gone.produced(5, 50);
        kept.produced(1, 10);
        m.forget_partition("gone", 1);
        m.forget_partition("never-there", 9); // nothing to remove: no effect
        let text = encoded(&m);
        assert!(!text.contains("topic=\"gone\""), "{text}");
        assert!(samples(&text).contains(
            &"loghouse_partition_produce_records_total{topic=\"kept\",partition=\"0\"} 1"
        ));
        // The node's totals keep what the partition counted.
        assert_eq!(m.produce_records.get(), 6);
        // A handle still held counts, unexported; re-creating starts at zero.
        gone.produced(1, 1);
        assert!(!encoded(&m).contains("topic=\"gone\""));
        let again = m.partition("gone", 1);
        assert_eq!(again.totals(), (0, 0, 0, 0));
        assert!(samples(&encoded(&m)).contains(
            &"loghouse_partition_produce_records_total{topic=\"gone\",partition=\"1\"} 0"
        ));
        // Forgetting every partition removes the families.
        m.forget_partition("gone", 1);
        m.forget_partition("kept", 0);
        assert!(!encoded(&m).contains("loghouse_partition_"));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = NodeMetrics::default();
        m.partition("a\"b\\c\nd", 0).consumed(1, 1);
        assert!(encoded(&m).contains(
            "loghouse_partition_consume_records_total{topic=\"a\\\"b\\\\c\\nd\",partition=\"0\"} 1"
        ));
    }

    #[test]
    fn partition_metrics_are_shareable() {
        fn send_sync_clone<T: Send + Sync + Clone + 'static>() {}
        send_sync_clone::<PartitionMetrics>();
        let m = Arc::new(NodeMetrics::default());
        let p = m.partition("t", 0);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        p.produced(1, 3);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(p.totals(), (4000, 12000, 0, 0));
        assert_eq!(m.produce_records.get(), 4000);
    }
}
