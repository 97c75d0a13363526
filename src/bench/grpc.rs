//! `loghouse bench grpc`: produce and consume load over gRPC, with throughput and latency
//! percentiles. It measures; it asserts nothing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use crate::client::Client;
use crate::proto;

#[derive(Debug, Clone, clap::Args)]
pub struct GrpcBenchOptions {
    /// Server address; without it the bench starts a node in-process on a temporary directory.
    #[arg(long)]
    pub addr: Option<String>,
    /// TLS to a secure `--addr` (`--ca-cert`, `--cert`, `--key`).
    #[command(flatten)]
    pub tls: crate::client::TlsOptions,
    /// PID of the server process, to report its peak RSS (VmHWM).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Sync policy of the in-process node.
    #[arg(long, default_value = "always")]
    pub sync: String,
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Concurrent producer streams (and consumer streams).
    #[arg(long, default_value_t = 4)]
    pub streams: usize,
    /// Records produced in total (split over the streams).
    #[arg(long, default_value_t = 200_000)]
    pub records: u64,
    /// Records per ProduceBatch request (`--mode batch`).
    #[arg(long, default_value_t = 100)]
    pub batch_records: usize,
    /// Requests in flight per stream [default: 1024 records with `--mode stream` (the server's
    /// default window, `limits.stream_appends_in_flight_max`; a durable produce waits on its
    /// fsync round trips, so a smaller window measures less: about 0.75x at 256, half that at 64),
    /// 16 batches with `batch`, 64 calls with `unary`].
    #[arg(long)]
    pub in_flight: Option<usize>,
    /// `stream` (ProduceStream, one record a message), `batch` (ProduceBatch), or `unary` (Produce).
    #[arg(long, default_value = "stream")]
    pub mode: String,
    /// Value bytes per consumed batch (ConsumeBatchStream `max_bytes`; 0: the server's limit).
    #[arg(long, default_value_t = crate::client::FOLLOW_BATCH_BYTES)]
    pub consume_batch_bytes: u64,
    /// The phases to run: `produce,consume` (consume reads what produce wrote), `produce`, or
    /// `consume` (reads the whole log as it is).
    #[arg(long, default_value = "produce,consume", value_delimiter = ',')]
    pub phases: Vec<String>,
    /// Give up after this many seconds per phase.
    #[arg(long, default_value_t = 60)]
    pub seconds_max: u64,
    /// Topics to spread the load over (`bench-0` ...; created, or reused when they exist with
    /// `--partitions`); 0: the default topic, one log.
    #[arg(long, default_value_t = 0)]
    pub topics: u32,
    /// Partitions per topic (with `--topics`). Stream `s` produces to and consumes from
    /// partition `s mod (topics x partitions)`; `--streams` is raised to that count if lower.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
}

/// One partition the load goes to.
#[derive(Debug, Clone)]
struct Target {
    topic: String,
    partition: u32,
}

impl GrpcBenchOptions {
    /// The partitions the load spreads over (the default topic's 0 without `--topics`).
    fn targets(&self) -> Vec<Target> {
        if self.topics == 0 {
            return vec![Target {
                topic: String::new(),
                partition: 0,
            }];
        }
        let mut targets = Vec::new();
        for partition in 0..self.partitions.max(1) {
            for t in 0..self.topics {
                targets.push(Target {
                    topic: format!("bench-{t}"),
                    partition,
                });
            }
        }
        targets
    }

    /// Streams: `--streams`, at least one per target.
    fn stream_count(&self) -> usize {
        self.streams.max(self.targets().len()).max(1)
    }
}

impl GrpcBenchOptions {
    /// `--in-flight`, or the default for the mode.
    fn in_flight(&self) -> usize {
        let default = match self.mode.as_str() {
            "stream" => 1024,
            "batch" => 16,
            _ => 64,
        };
        self.in_flight.unwrap_or(default).max(1)
    }
}

struct Phase {
    name: &'static str,
    records: u64,
    elapsed: Duration,
    latency_us: Option<Histogram<u64>>,
    cpu: PhaseCpu,
}

/// CPU seconds a phase used: the server's (with `--server-pid`) and this process's (the client,
/// or client and server together when the node is in-process).
#[derive(Default, Clone, Copy)]
struct PhaseCpu {
    server_s: Option<f64>,
    own_s: Option<f64>,
}

/// CPU counters at the start of a phase.
struct CpuMeter {
    server_pid: Option<u32>,
    start: PhaseCpu,
}

impl CpuMeter {
    fn start(server_pid: Option<u32>) -> Self {
        CpuMeter {
            server_pid,
            start: PhaseCpu {
                server_s: server_pid.and_then(|pid| super::cpu_seconds_of(Some(pid))),
                own_s: super::cpu_seconds_of(None),
            },
        }
    }

    fn finish(&self) -> PhaseCpu {
        let since = |start: Option<f64>, now: Option<f64>| Some(now? - start?);
        PhaseCpu {
            server_s: since(
                self.start.server_s,
                self.server_pid
                    .and_then(|pid| super::cpu_seconds_of(Some(pid))),
            ),
            own_s: since(self.start.own_s, super::cpu_seconds_of(None)),
        }
    }
}

pub async fn run(options: GrpcBenchOptions) -> anyhow::Result<()> {
    let (addr, _embedded) = match &options.addr {
        Some(addr) => (addr.clone(), None),
        None => {
            let embedded = super::embedded::EmbeddedNode::start(&options.sync).await?;
            (embedded.addr.clone(), Some(embedded))
        }
    };
    let tls = options.tls.load()?;
    let client = Client::connect_with(&addr, tls.as_ref()).await?;
    let (produce, consume) = phases(&options.phases)?;
    for t in 0..options.topics {
        let settings = crate::client::TopicSettings::default();
        let name = format!("bench-{t}");
        (client
            .create_topic(&name, options.partitions.max(1), settings)
            .await)
            .with_context(|| format!("creating topic {name}"))?;
    }
    let before = ranges(&client, &options).await?;
    let mut done = Vec::new();
    if produce {
        let cpu = CpuMeter::start(options.server_pid);
        let mut phase = produce_phase(&client, &options).await?;
        phase.cpu = cpu.finish();
        done.push(phase);
    }
    if consume {
        // What produce wrote, or (consume alone) every partition as it is.
        let after = ranges(&client, &options).await?;
        let read: Vec<(u64, u64)> = (before.iter().zip(&after))
            .map(|(b, a)| match produce {
                true => (b.1, a.1 - b.1),
                false => (a.0, a.1 - a.0),
            })
            .collect();
        let cpu = CpuMeter::start(options.server_pid);
        let mut phase = consume_phase(&client, &options, &read).await?;
        phase.cpu = cpu.finish();
        done.push(phase);
    }
    print_table(&options, &done);
    if let Some(pid) = options.server_pid {
        println!(
            "server peak RSS (VmHWM of pid {pid}): {}",
            super::peak_rss_of(pid).unwrap_or_else(|| "n/a".into())
        );
    } else if options.addr.is_none() {
        println!(
            "process peak RSS (server and client together): {}",
            super::peak_rss_of_self().unwrap_or_else(|| "n/a".into())
        );
    }
    Ok(())
}

/// Each target's (lowest offset, next offset), in `targets()` order.
async fn ranges(client: &Client, options: &GrpcBenchOptions) -> anyhow::Result<Vec<(u64, u64)>> {
    let mut described = std::collections::HashMap::new();
    let mut out = Vec::new();
    for target in options.targets() {
        if !described.contains_key(&target.topic) {
            let topic = client.describe_topic(&target.topic).await?;
            described.insert(target.topic.clone(), topic.partitions);
        }
        let partition = (described[&target.topic].iter())
            .find(|p| p.partition == target.partition)
            .context("a bench partition is missing")?;
        out.push((partition.lowest_offset, partition.next_offset));
    }
    Ok(out)
}

/// Which of (produce, consume) `--phases` names.
fn phases(names: &[String]) -> anyhow::Result<(bool, bool)> {
    let mut chosen = (false, false);
    for name in names {
        match name.as_str() {
            "produce" => chosen.0 = true,
            "consume" => chosen.1 = true,
            other => anyhow::bail!("unknown phase {other:?}: expected produce or consume"),
        }
    }
    Ok(chosen)
}

async fn produce_phase(client: &Client, options: &GrpcBenchOptions) -> anyhow::Result<Phase> {
    let streams = options.stream_count();
    let per_stream = options.records / streams as u64;
    let deadline = Instant::now() + Duration::from_secs(options.seconds_max);
    let value = Bytes::from(vec![b'x'; options.record_bytes]);
    let targets = options.targets();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..streams {
        let (client, value, options) = (client.clone(), value.clone(), options.clone());
        let target = targets[s % targets.len()].clone();
        let to = crate::client::ProduceTo {
            topic: target.topic,
            partition: Some(target.partition),
            key: Bytes::new(),
        };
        tasks.push(tokio::spawn(async move {
            let in_flight = options.in_flight();
            match options.mode.as_str() {
                "stream" => {
                    produce_stream(&client, &to, value, per_stream, in_flight, deadline).await
                }
                "batch" => {
                    produce_batches(&client, &to, value, per_stream, &options, deadline).await
                }
                "unary" => {
                    produce_unary(&client, &to, value, per_stream, in_flight, deadline).await
                }
                other => anyhow::bail!("unknown --mode {other:?}: expected stream, batch or unary"),
            }
        }));
    }
    let mut latency = new_histogram();
    let mut records = 0;
    for task in tasks {
        let (n, histogram) = task.await??;
        records += n;
        latency.add(histogram).context("merging histograms")?;
    }
    Ok(Phase {
        name: "produce",
        records,
        elapsed: started.elapsed(),
        latency_us: Some(latency),
        cpu: PhaseCpu::default(),
    })
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// One ProduceStream; `in_flight` records outstanding; latency is send-to-ack per record.
/// The request stream is polled by the transport itself (no task or channel between), so the
/// client spends its CPU on the records, not on handing them around.
async fn produce_stream(
    client: &Client,
    to: &crate::client::ProduceTo,
    value: Bytes,
    count: u64,
    in_flight: usize,
    deadline: Instant,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    let window = Arc::new(Semaphore::new(in_flight.max(1)));
    // Send times of the records not yet acknowledged, oldest first (acks come in order).
    let sent = Arc::new(Mutex::new(VecDeque::with_capacity(in_flight.max(1))));
    let requests = {
        let (window, sent, to) = (window.clone(), sent.clone(), to.clone());
        futures::stream::unfold(0u64, move |n| {
            let (window, sent, value) = (window.clone(), sent.clone(), value.clone());
            let (topic, partition) = (to.topic.clone(), to.partition);
            async move {
                if n == count || Instant::now() > deadline {
                    return None;
                }
                window.acquire().await.ok()?.forget();
                sent.lock().expect("not poisoned").push_back(Instant::now());
                let record = Some(proto::Record {
                    value,
                    ..Default::default()
                });
                Some((
                    proto::ProduceRequest {
                        record,
                        topic,
                        partition,
                        ..Default::default()
                    },
                    n + 1,
                ))
            }
        })
    };
    let mut responses = client.raw().produce_stream(requests).await?.into_inner();
    let mut histogram = new_histogram();
    let mut acked = 0;
    while let Some(response) = responses.next().await {
        response?;
        let sent_at = sent.lock().expect("not poisoned").pop_front();
        let sent_at = sent_at.context("the server acknowledged a record never sent")?;
        record_latency(&mut histogram, sent_at.elapsed());
        window.add_permits(1);
        acked += 1;
    }
    Ok((acked, histogram))
}

async fn produce_batches(
    client: &Client,
    to: &crate::client::ProduceTo,
    value: Bytes,
    count: u64,
    options: &GrpcBenchOptions,
    deadline: Instant,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    let batch = options.batch_records.max(1);
    let requests = count.div_ceil(batch as u64);
    let histogram = timed_calls(requests, options.in_flight(), deadline, || {
        client.produce_batch_to(to, vec![value.clone(); batch])
    })
    .await?;
    Ok((histogram.len() * batch as u64, histogram))
}

async fn produce_unary(
    client: &Client,
    to: &crate::client::ProduceTo,
    value: Bytes,
    count: u64,
    in_flight: usize,
    deadline: Instant,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    let histogram = timed_calls(count, in_flight, deadline, || {
        client.produce_to(to, value.clone())
    })
    .await?;
    Ok((histogram.len(), histogram))
}

/// Makes `calls` calls, `in_flight` at a time, until `deadline`; returns their latencies.
async fn timed_calls<F, Fut, T>(
    calls: u64,
    in_flight: usize,
    deadline: Instant,
    call: F,
) -> anyhow::Result<Histogram<u64>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::client::ClientError>>,
{
    let results = futures::stream::iter(0..calls)
        .take_while(|_| futures::future::ready(Instant::now() < deadline))
        .map(|_| {
            let response = call();
            async move {
                let sent_at = Instant::now();
                response.await.map(|_| sent_at.elapsed())
            }
        })
        .buffer_unordered(in_flight.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut histogram = new_histogram();
    for latency in results {
        record_latency(&mut histogram, latency?);
    }
    Ok(histogram)
}

fn record_latency(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = latency.as_micros().clamp(1, 60_000_000) as u64;
    histogram.saturating_record(micros);
}

/// Each consumer stream reads its share of its partition's range (`read`: (start, records) per
/// target) with ConsumeBatchStream: the streams of one partition split its range evenly, so the
/// phase reads each record once whatever the spread.
async fn consume_phase(
    client: &Client,
    options: &GrpcBenchOptions,
    read: &[(u64, u64)],
) -> anyhow::Result<Phase> {
    let deadline = Duration::from_secs(options.seconds_max);
    let targets = options.targets();
    let started = Instant::now();
    let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    let streams = options.stream_count();
    for s in 0..streams {
        let (client, total) = (client.clone(), total.clone());
        let batch_bytes = options.consume_batch_bytes;
        let at = crate::client::TopicPartition::new(
            targets[s % targets.len()].topic.clone(),
            targets[s % targets.len()].partition,
        );
        let (start, records) = share(read[s % targets.len()], s, streams, targets.len());
        tasks.push(tokio::spawn(async move {
            let read = consume_range(&client, &at, start, records, batch_bytes);
            let read = tokio::time::timeout(deadline, read).await;
            let read = read.unwrap_or(Ok(0))?;
            total.fetch_add(read, std::sync::atomic::Ordering::Relaxed);
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let records = total.load(std::sync::atomic::Ordering::Relaxed);
    Ok(Phase {
        name: "consume",
        records,
        elapsed: started.elapsed(),
        latency_us: None,
        cpu: PhaseCpu::default(),
    })
}

/// Stream `s`'s part of `(start, records)`, a range that the streams `s mod targets` share.
fn share((start, records): (u64, u64), s: usize, streams: usize, targets: usize) -> (u64, u64) {
    let sharing = (streams / targets + usize::from(s % targets < streams % targets)) as u64;
    let index = (s / targets) as u64;
    let each = records.div_ceil(sharing.max(1));
    let from = (index * each).min(records);
    (start + from, each.min(records - from))
}

async fn consume_range(
    client: &Client,
    at: &crate::client::TopicPartition,
    start: u64,
    count: u64,
    batch_bytes: u64,
) -> anyhow::Result<u64> {
    let start = crate::client::Start::Offset(start);
    let mut stream = client.follow_at(at, start, batch_bytes).await?;
    let mut read = 0;
    while read < count {
        match stream.next().await {
            // A batch may run past this stream's share: only the share counts.
            Some(batch) => read += (batch?.len() as u64).min(count - read),
            None => break,
        }
    }
    Ok(read)
}

fn print_table(options: &GrpcBenchOptions, phases: &[Phase]) {
    let spread = match options.topics {
        0 => "the default topic".to_owned(),
        t => format!("{t} topics x {} partitions", options.partitions.max(1)),
    };
    println!(
        "loghouse bench grpc: {} B records, {spread}, {} streams, mode {}, sync {}{}",
        options.record_bytes,
        options.stream_count(),
        options.mode,
        options.sync,
        if options.addr.is_some() {
            " (remote server: its own sync policy applies)"
        } else {
            ""
        }
    );
    println!(
        "{:<8} {:>10} {:>10} {:>12} {:>10} {:>9} {:>9} {:>9}",
        "phase", "records", "seconds", "records/s", "MB/s", "p50 us", "p99 us", "p999 us"
    );
    for phase in phases {
        let seconds = phase.elapsed.as_secs_f64().max(1e-9);
        let rate = phase.records as f64 / seconds;
        let mbps = rate * options.record_bytes as f64 / 1e6;
        let (p50, p99, p999) = match &phase.latency_us {
            Some(h) if !h.is_empty() => (
                h.value_at_quantile(0.5).to_string(),
                h.value_at_quantile(0.99).to_string(),
                h.value_at_quantile(0.999).to_string(),
            ),
            _ => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<8} {:>10} {:>10.2} {:>12.0} {:>10.1} {:>9} {:>9} {:>9}",
            phase.name, phase.records, seconds, rate, mbps, p50, p99, p999
        );
    }
    print_cpu(options, phases);
}

/// CPU microseconds per record of each phase, server and client: which side a change made
/// cheaper, and whether a phase was short of CPU or waiting (on fsyncs, on the window).
fn print_cpu(options: &GrpcBenchOptions, phases: &[Phase]) {
    let own = match options.addr {
        Some(_) => "client",
        None => "server+client",
    };
    println!(
        "{:<8} {:>16} {:>16}   (CPU us per record; /proc ticks of 10 ms)",
        "phase", "server", own
    );
    for phase in phases {
        let per_record = |seconds: Option<f64>| match seconds {
            Some(s) if phase.records > 0 => format!("{:.2}", s * 1e6 / phase.records as f64),
            _ => "-".into(),
        };
        println!(
            "{:<8} {:>16} {:>16}",
            phase.name,
            per_record(phase.cpu.server_s),
            per_record(phase.cpu.own_s)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn streams_of_one_partition_split_its_range_once() {
        // 5 streams over 2 targets: streams 0, 2, 4 share target 0; 1, 3 share target 1.
        let parts: Vec<(u64, u64)> = [0, 2, 4]
            .iter()
            .map(|&s| share((10, 100), s, 5, 2))
            .collect();
        assert_eq!(parts, [(10, 34), (44, 34), (78, 32)]);
        let parts: Vec<(u64, u64)> = [1, 3].iter().map(|&s| share((0, 7), s, 5, 2)).collect();
        assert_eq!(parts, [(0, 4), (4, 3)]);
        assert_eq!(share((0, 2), 3, 4, 1), (2, 0));
    }
}
