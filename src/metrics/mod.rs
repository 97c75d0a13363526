//! Metrics: counters and histograms built on relaxed atomics, and a writer of the Prometheus
//! text exposition format (0.0.4).
//!
//! Nothing here knows about HTTP, gRPC or the log: the storage engine updates a [`LogMetrics`]
//! it is handed, the server updates [`NodeMetrics`] per request, and `server::metrics` reads
//! them (plus gauges taken at scrape time from Raft, gossip and the log) into a [`TextEncoder`].
//! Updating a metric is one or two relaxed atomic adds: no lock, no allocation, no formatting.

mod text;

pub use text::TextEncoder;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

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
/// counted on its own (not cumulatively); rendering adds them up. The sum is kept in
/// nanoseconds. Readers may see an observation in the count before the sum (relaxed atomics);
/// a scrape is a snapshot, not a transaction.
#[derive(Debug)]
pub struct Histogram {
    /// `buckets[i]`: observations in `(bound[i-1], bound[i]]`; `buckets[BUCKETS]`: above the last.
    buckets: [AtomicU64; BUCKETS + 1],
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
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
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The observations' total, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(BUCKETS + 1);
        let mut running = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            running += bucket.load(Ordering::Relaxed);
            let bound = LATENCY_BUCKETS_SECONDS
                .get(i)
                .copied()
                .unwrap_or(f64::INFINITY);
            cumulative.push((bound, running));
        }
        HistogramSnapshot {
            cumulative,
            count: running,
            sum_seconds: self.sum_seconds(),
        }
    }
}

/// What the storage engine counts as it works. One instance may be shared by several logs (a
/// cluster member's data log and Raft entry log): the figures are then their total.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// A node's request counters. `Arc`-shared by the service and whoever exports them.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    /// Records (and their value bytes) acknowledged to producers.
    pub produce_records: Counter,
    pub produce_bytes: Counter,
    /// Records (and their value bytes) sent to consumers.
    pub consume_records: Counter,
    pub consume_bytes: Counter,
    /// Per RPC, indexed like `Rpc::ALL`. Unary calls observe the whole call; streams observe
    /// each batch (see `server::metrics`).
    rpc_seconds: [Histogram; Rpc::ALL.len()],
    rpc_errors: [Counter; Rpc::ALL.len()],
    /// What the storage engine counts (shared with the node's logs).
    pub log: std::sync::Arc<LogMetrics>,
}

impl NodeMetrics {
    pub fn rpc_seconds(&self, rpc: Rpc) -> &Histogram {
        &self.rpc_seconds[rpc as usize]
    }

    /// Calls (or, for streams, batches) that ended in an error status.
    pub fn rpc_errors(&self, rpc: Rpc) -> &Counter {
        &self.rpc_errors[rpc as usize]
    }

    pub fn produced(&self, records: u64, bytes: u64) {
        self.produce_records.add(records);
        self.produce_bytes.add(bytes);
    }

    pub fn consumed(&self, records: u64, bytes: u64) {
        self.consume_records.add(records);
        self.consume_bytes.add(bytes);
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
