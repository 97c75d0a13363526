//! The `loghouse` command: run a node, produce, consume, inspect, benchmark.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures::StreamExt;

use cli_format::Encoding;

use loghouse::client::{Client, ProduceTo, Start, TlsOptions, TopicPartition};
use loghouse::config::{NodeConfig, LISTEN_DEFAULT};
use loghouse::io::{StdDisk, SystemClock};
use loghouse::server::supervisor::{supervise, RestartPolicy, Stop};
use loghouse::server::{Node, ServerError};

mod cli_format;
mod cluster_cli;
mod topic_cli;

#[derive(Parser)]
#[command(name = "loghouse", version, about = "A distributed commit log")]
struct Cli {
    /// Log filter (e.g. `info`, `loghouse=debug,warn`). Wins over RUST_LOG, which wins over the
    /// config file's `log_level` [default: info]
    #[arg(long, visible_alias = "log", env = "LOGHOUSE_LOG_LEVEL", global = true)]
    log_level: Option<String>,
    /// `human` or `json` logs on stderr (flag, then the config file's `log_format`)
    /// [default: human]
    #[arg(long, env = "LOGHOUSE_LOG_FORMAT", global = true)]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Serve(Box<ServeArgs>),
    /// Append records: the VALUES given, or one record per line of standard input.
    Produce(ProduceArgs),
    /// Print records, one value per line.
    Consume(ConsumeArgs),
    /// Show the log's (or a topic partition's) offsets and size, and the node's counters.
    Info(InfoArgs),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(topic_cli::TopicCommand),
    /// Run or inspect a local cluster.
    #[command(subcommand)]
    Cluster(cluster_cli::ClusterCommand),
    /// Benchmarks (they print tables).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Make a CA, node and client certificates, a gossip key and an ACL for a local secure
    /// cluster (see README, Security).
    Certs(CertsArgs),
    /// Cut a corrupt tail off a stopped standalone node's log, saying what it drops.
    ///
    /// A standalone node whose log ends in corruption (a bad record followed by valid ones)
    /// refuses to start and names this command. It opens the log, cuts the last segment at the
    /// bad record, prints the segment, the position, the bytes and records dropped and the last
    /// offset kept (or that nothing needed cutting), and closes the log. Stop the node first.
    /// Cluster members are refused: they repair themselves from their peers when they start.
    /// See README, Crash recovery.
    Repair(RepairArgs),
}

#[derive(clap::Args)]
struct RepairArgs {
    /// The stopped node's data directory (as given to `serve`).
    #[arg(long, env = "LOGHOUSE_DATA_DIR")]
    data_dir: PathBuf,
    /// The topic whose partition to repair (default: the default topic).
    #[arg(long, requires = "partition")]
    topic: Option<String>,
    /// The partition to repair (with --topic; the default topic's 0 without).
    #[arg(long)]
    partition: Option<u32>,
}

#[derive(clap::Args)]
struct CertsArgs {
    /// Where to write them (created if missing; existing files are overwritten).
    #[arg(long, default_value = "loghouse-certs")]
    dir: PathBuf,
    /// Node certificates to make: node-1 .. node-N (CN = name; server and client use).
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Client certificates (CN = name), comma-separated. The first may produce, consume and
    /// administer in the generated ACL; the others get nothing.
    #[arg(long, value_delimiter = ',', default_value = "root,nobody")]
    clients: Vec<String>,
    /// Host names and IP addresses the node certificates are valid for, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    hosts: Vec<String>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A TOML file with any of the settings below (flags and LOGHOUSE_* variables win).
    #[arg(long, env = "LOGHOUSE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./loghouse-data]
    #[arg(long, env = "LOGHOUSE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:7400]
    #[arg(long, env = "LOGHOUSE_LISTEN")]
    listen: Option<SocketAddr>,
    #[arg(long, env = "LOGHOUSE_NODE_ID")]
    node_id: Option<String>,
    /// `always` (fsync before every acknowledgement; default), `interval:MS`, or `never`.
    #[arg(long, env = "LOGHOUSE_SYNC")]
    sync: Option<String>,
    #[arg(long, env = "LOGHOUSE_SEGMENT_BYTES_MAX")]
    segment_bytes_max: Option<u64>,
    #[arg(long, env = "LOGHOUSE_RECORD_BYTES_MAX")]
    record_bytes_max: Option<u32>,
    #[arg(long, env = "LOGHOUSE_RETENTION_BYTES_MAX")]
    retention_bytes_max: Option<u64>,
    #[arg(long, env = "LOGHOUSE_RETENTION_MS_MAX")]
    retention_ms_max: Option<u64>,
    /// Run as a cluster member: the UDP address gossip listens on. The node id must then be a
    /// nonzero integer.
    #[arg(long, env = "LOGHOUSE_GOSSIP_LISTEN")]
    gossip_listen: Option<SocketAddr>,
    /// Gossip addresses of members to join (and rejoin after a restart) through,
    /// comma-separated. Without any, the member bootstraps (see --bootstrap).
    #[arg(long, env = "LOGHOUSE_JOIN", value_delimiter = ',')]
    join: Vec<SocketAddr>,
    /// Start a new cluster if this node has no Raft state yet (implied when --join is empty).
    /// Bootstrap exactly one member.
    #[arg(long, env = "LOGHOUSE_BOOTSTRAP")]
    bootstrap: bool,
    /// The gRPC address other members and clients should use [default: the listen address]
    #[arg(long, env = "LOGHOUSE_ADVERTISE_RPC")]
    advertise_rpc: Option<String>,
    /// Voters the cluster aims for (further members are learners) [default: 3]
    #[arg(long, env = "LOGHOUSE_VOTERS_TARGET")]
    voters_target: Option<usize>,
    /// PEM certificate of this node: TLS on the gRPC port (with --tls-key).
    #[arg(long, env = "LOGHOUSE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "LOGHOUSE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// PEM CA: mutual TLS (clients and members must present a certificate it signed).
    #[arg(long, env = "LOGHOUSE_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Casbin model file (with --acl-policy): authorization on.
    #[arg(long, env = "LOGHOUSE_ACL_MODEL")]
    acl_model: Option<PathBuf>,
    /// Casbin policy file (`p, SUBJECT, *, produce|consume|admin|raft` lines).
    #[arg(long, env = "LOGHOUSE_ACL_POLICY")]
    acl_policy: Option<PathBuf>,
    /// A file with the shared gossip key in hex: gossip datagrams are authenticated.
    #[arg(long, env = "LOGHOUSE_GOSSIP_KEY_FILE")]
    gossip_key_file: Option<PathBuf>,
    /// Serve metrics (Prometheus text format, `GET /metrics`) over HTTP on this address
    /// [default: off]
    #[arg(long, env = "LOGHOUSE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

#[derive(clap::Args)]
struct AddrArgs {
    /// Server address.
    #[arg(long, env = "LOGHOUSE_ADDR", default_value = LISTEN_DEFAULT)]
    addr: String,
    #[command(flatten)]
    tls: TlsOptions,
}

impl AddrArgs {
    async fn connect(&self) -> anyhow::Result<Client> {
        let tls = self.tls.load()?;
        Ok(Client::connect_with(&self.addr, tls.as_ref()).await?)
    }
}

#[derive(clap::Args)]
struct InfoArgs {
    #[command(flatten)]
    addr: AddrArgs,
    /// Topic [default: the default topic]
    #[arg(long, short = 't', default_value = "")]
    topic: String,
    #[arg(long, short = 'p', default_value_t = 0)]
    partition: u32,
}

#[derive(clap::Args)]
struct ProduceArgs {
    #[command(flatten)]
    addr: AddrArgs,
    /// Topic to append to [default: the default topic]
    #[arg(long, short = 't', default_value = "")]
    topic: String,
    /// Partition to append to [default: by key, else round robin]
    #[arg(long, short = 'p')]
    partition: Option<u32>,
    /// Key of every record: records with the same key go to the same partition (Kafka's
    /// murmur2 partitioner). The key chooses the partition only; it is not stored. (Not
    /// `--key`: that is the TLS client key.)
    #[arg(long, short = 'k', conflicts_with = "parse_key", value_name = "KEY")]
    record_key: Option<String>,
    /// Each record is KEY<SEP>VALUE (split at the first --key-separator); records are batched
    /// per partition, in input order within each.
    #[arg(long)]
    parse_key: bool,
    /// The byte between key and value with --parse-key: a character, or \t, \0, \xHH, ...
    #[arg(long, default_value = "\\t", value_name = "BYTE")]
    key_separator: String,
    /// The byte that ends each record on standard input (a character, or \n, \0, \xHH, ...),
    /// or `none`: all of standard input is one record.
    #[arg(long, default_value = "\\n", value_name = "BYTE|none")]
    delimiter: String,
    /// How values (and keys, with --parse-key) are written, on standard input and in VALUES.
    #[arg(long, value_enum, default_value_t)]
    encoding: Encoding,
    /// Records per ProduceBatch request (a batch also ends at 4 MiB of values).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    values: Vec<String>,
}

#[derive(clap::Args)]
struct ConsumeArgs {
    #[command(flatten)]
    addr: AddrArgs,
    /// Topic to read [default: the default topic]. Without --partition, every partition of
    /// it is read, each line starting with the record's partition and a TAB.
    #[arg(long, short = 't')]
    topic: Option<String>,
    /// Read only this partition (lines then carry no partition).
    #[arg(long, short = 'p')]
    partition: Option<u32>,
    /// Read only the partition KEY goes to (murmur2(KEY) % the topic's partitions).
    #[arg(long, short = 'k', conflicts_with = "partition", value_name = "KEY")]
    record_key: Option<String>,
    /// First offset to print (in each partition read).
    #[arg(long, default_value_t = 0, conflicts_with = "from_time")]
    from: u64,
    /// Start at the first record appended at or after TIME: ms since the epoch, or `-30s`,
    /// `-5m`, `-2h`, `-1d` (that long ago).
    #[arg(long, allow_hyphen_values = true, value_name = "TIME")]
    from_time: Option<String>,
    /// Keep waiting for new records.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Stop after this many records.
    #[arg(long)]
    limit: Option<u64>,
    /// Print `offset<TAB>value` instead of the value alone.
    #[arg(long)]
    offsets: bool,
    /// How values are printed: as they are (text), or in hex or base64.
    #[arg(long, value_enum, default_value_t)]
    encoding: Encoding,
    /// The byte printed after each record (a character, or \n, \0, \xHH, ...), or `none`.
    #[arg(long, default_value = "\\n", value_name = "BYTE|none")]
    delimiter: String,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Produce and consume load over gRPC (an in-process node unless --addr).
    Grpc(loghouse::bench::grpc::GrpcBenchOptions),
    /// A local cluster of real processes: load against the leader, then leader kills
    /// (failover time, catch-up, every acknowledged record checked on every member).
    Cluster(loghouse::bench::cluster::ClusterBenchOptions),
    /// The storage engine alone: append, scan, random read, open after close and after a crash,
    /// beside the disk's own limit (dd conv=fdatasync) measured in the same run.
    Log(loghouse::bench::log::LogBenchOptions),
    /// An idle standalone node holding many partitions: open time, memory, open files and CPU
    /// at rest (measured in a child process of its own).
    Idle(loghouse::bench::idle::IdleBenchOptions),
}

/// Every error is one line on stderr (`Error: PERMISSION_DENIED: ...`, or an error and its
/// causes joined with ": "), exit status 1. Output to a closed pipe (`loghouse consume | head`)
/// ends the command quietly with status 0.
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) if cli_format::is_broken_pipe(&error) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "Error: {}", cli_format::one_line(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // `serve --config FILE` may set the log level and format too (flags win). A file that does
    // not parse is reported by `serve` itself, after logging starts.
    let from_file = match &cli.command {
        Command::Serve(args) => {
            (args.config.as_ref()).and_then(|p| NodeConfig::from_toml_file(p).ok())
        }
        _ => None,
    };
    let (file_level, file_format) = from_file
        .map(|c| (c.log_level, c.log_format))
        .unwrap_or_default();
    init_tracing(
        cli.log_level.as_deref(),
        file_level.as_deref(),
        cli.log_format.or(file_format).as_deref().unwrap_or("human"),
    )?;
    let command = match cli.command {
        // The storage benchmark builds its own runtimes (one per row).
        Command::Bench(BenchCommand::Log(options)) => return loghouse::bench::log::run(options),
        Command::Certs(args) => return certs(args),
        Command::Repair(args) => return repair(args),
        command => command,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            Command::Serve(args) => serve(*args).await,
            Command::Produce(args) => produce(args).await,
            Command::Consume(args) => consume(args).await,
            Command::Info(args) => info(args).await,
            Command::Topic(command) => topic_cli::run(command).await,
            Command::Cluster(command) => cluster_cli::run(command).await,
            Command::Bench(BenchCommand::Grpc(options)) => {
                loghouse::bench::grpc::run(options).await
            }
            Command::Bench(BenchCommand::Idle(options)) => {
                loghouse::bench::idle::run(options).await
            }
            Command::Bench(BenchCommand::Cluster(options)) => {
                loghouse::bench::cluster::run(options).await
            }
            Command::Bench(BenchCommand::Log(_)) | Command::Certs(_) | Command::Repair(_) => {
                unreachable!("matched above")
            }
        }
    })
}

/// Logs on stderr. The filter: `--log-level` (or LOGHOUSE_LOG_LEVEL), else RUST_LOG, else the
/// config file's `log_level`, else `info`. `human` is one line per event with the span
/// context (`produce_batch{records=64 bytes=65536 first_offset=128}: ...`); `json` is one
/// object per line with the event's fields and its spans' fields (`span`, `spans`).
fn init_tracing(flag: Option<&str>, file: Option<&str>, format: &str) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match (flag, std::env::var(EnvFilter::DEFAULT_ENV)) {
        (Some(flag), _) => {
            EnvFilter::try_new(flag).with_context(|| format!("invalid --log-level {flag:?}"))?
        }
        (None, Ok(env)) => {
            EnvFilter::try_new(&env).with_context(|| format!("invalid RUST_LOG {env:?}"))?
        }
        (None, Err(_)) => {
            let level = file.unwrap_or("info");
            EnvFilter::try_new(level).with_context(|| format!("invalid log_level {level:?}"))?
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        "human" | "text" => builder.init(),
        "json" => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
        other => anyhow::bail!("invalid --log-format {other:?}: expected human or json"),
    }
    Ok(())
}

fn node_config(args: ServeArgs) -> anyhow::Result<NodeConfig> {
    let mut config = match &args.config {
        Some(path) => NodeConfig::from_toml_file(path)?,
        None => NodeConfig::default(),
    };
    merge_security(&mut config.security, &args);
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.node_id {
        config.node_id = v;
    }
    if let Some(v) = args.sync {
        config.sync = v;
    }
    if let Some(v) = args.segment_bytes_max {
        config.segment_bytes_max = v;
    }
    if let Some(v) = args.record_bytes_max {
        config.record_bytes_max = v;
    }
    config.retention_bytes_max = args.retention_bytes_max.or(config.retention_bytes_max);
    config.retention_ms_max = args.retention_ms_max.or(config.retention_ms_max);
    let clustered = args.gossip_listen.is_some() || !args.join.is_empty() || args.bootstrap;
    if clustered || config.cluster.is_some() {
        let cluster = config.cluster.get_or_insert_with(Default::default);
        if let Some(v) = args.gossip_listen {
            cluster.gossip_listen = v;
        }
        if !args.join.is_empty() {
            cluster.join = args.join;
        }
        cluster.bootstrap |= args.bootstrap;
        if let Some(v) = args.advertise_rpc {
            cluster.advertise_rpc = Some(v);
        }
        if let Some(v) = args.voters_target {
            cluster.voters_target = v;
        }
    }
    if let Some(v) = args.metrics_listen {
        config.metrics_listen = Some(v);
    }
    config.load_security()?;
    config.validate()?;
    Ok(config)
}

fn merge_security(security: &mut loghouse::config::SecurityConfig, args: &ServeArgs) {
    let set = |field: &mut Option<PathBuf>, flag: &Option<PathBuf>| {
        if flag.is_some() {
            field.clone_from(flag);
        }
    };
    set(&mut security.tls_cert, &args.tls_cert);
    set(&mut security.tls_key, &args.tls_key);
    set(&mut security.tls_client_ca, &args.tls_client_ca);
    set(&mut security.acl_model, &args.acl_model);
    set(&mut security.acl_policy, &args.acl_policy);
    if args.gossip_key_file.is_some() {
        security.gossip_key = None;
        set(&mut security.gossip_key_file, &args.gossip_key_file);
    }
}

/// (The binary is compiled under madsim too, never run there: no certificate generation.)
#[cfg(madsim)]
fn certs(_args: CertsArgs) -> anyhow::Result<()> {
    anyhow::bail!("`loghouse certs` is not part of the simulation build")
}

#[cfg(not(madsim))]
fn certs(args: CertsArgs) -> anyhow::Result<()> {
    let spec = loghouse::security::certs::CertsSpec {
        dir: args.dir,
        nodes: args.nodes,
        clients: args.clients,
        hosts: args.hosts,
    };
    let mut out = std::io::stdout().lock();
    for path in loghouse::security::certs::write_cluster_certs(&spec)? {
        writeln!(out, "{}", path.display())?;
    }
    Ok(())
}
/// `loghouse repair`: prints what was cut (or that nothing needed cutting) on stdout.
fn repair(args: RepairArgs) -> anyhow::Result<()> {
    use loghouse::log::TailKind;
    let repaired = loghouse::server::repair::repair_standalone(
        Arc::new(StdDisk),
        Arc::new(SystemClock),
        &args.data_dir,
        args.partition.map(|p| {
            (
                args.topic
                    .as_deref()
                    .unwrap_or(loghouse::topic::DEFAULT_TOPIC),
                p,
            )
        }),
    )?;
    let log_dir = repaired.log_dir.display();
    let mut out = std::io::stdout().lock();
    let Some((segment, cut)) = repaired.cut else {
        writeln!(
            out,
            "nothing to cut: the log in {log_dir} ends with a whole, valid record"
        )?;
        return write_kept(&mut out, repaired.lowest_offset, repaired.next_offset);
    };
    let what = match cut.kind {
        TailKind::Corrupt => "corruption: a bad record followed by valid ones",
        TailKind::Torn => "a torn write: an incomplete or bad last record",
        TailKind::Unwritten => "unwritten space (zeros) and the unsynced records after it",
    };
    writeln!(out, "cut the tail of the log in {log_dir} ({what})")?;
    writeln!(out, "segment         {}", segment.display())?;
    writeln!(out, "position        {}", cut.position)?;
    writeln!(out, "bytes dropped   {}", cut.bytes_dropped)?;
    match cut.records_dropped {
        0 => writeln!(out, "records dropped 0 whole records")?,
        n => writeln!(
            out,
            "records dropped {n} (offsets {} to {})",
            cut.first_dropped,
            cut.first_dropped + n - 1
        )?,
    }
    write_kept(&mut out, repaired.lowest_offset, repaired.next_offset)
}

fn write_kept(out: &mut impl Write, lowest: u64, next: u64) -> anyhow::Result<()> {
    match next.checked_sub(1).filter(|last| *last >= lowest) {
        Some(last) => writeln!(
            out,
            "last offset kept {last} (the log holds offsets {lowest} to {last})"
        )?,
        None => writeln!(
            out,
            "last offset kept none (the log is empty; the next offset is {next})"
        )?,
    }
    Ok(())
}

/// A member whose Raft stops on its own (damage found in its log, a storage failure) is started
/// again by the supervisor (its store repairs damage and re-syncs what it keeps when it reopens),
/// within a restart budget that a healthy period resets (`server::supervisor`).
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = node_config(args)?;
    // Every partition holds a few files open: take all the open files the system allows.
    match loghouse::log::raise_open_file_limit() {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
    }
    let policy = RestartPolicy::default();
    match supervise(policy, || serve_once(config.clone())).await {
        Ok(()) => Ok(()),
        Err(Stop::RaftStopped(reason)) => anyhow::bail!("{reason}"),
        Err(Stop::Failed(error)) => Err(error),
    }
}

/// One life of the node, as the supervisor sees it.
async fn serve_once(config: NodeConfig) -> Result<(), Stop<anyhow::Error>> {
    match serve_life(config).await {
        Ok(None) => Ok(()),
        Ok(Some(raft_stopped)) => Err(Stop::RaftStopped(raft_stopped)),
        Err(error) => Err(Stop::Failed(error)),
    }
}

/// Serves until a clean shutdown (`None`) or until Raft stops on its own (`Some(reason)`).
async fn serve_life(config: NodeConfig) -> anyhow::Result<Option<String>> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?.to_string();
    let metrics_listener = match config.metrics_listen {
        Some(metrics_addr) => Some(
            tokio::net::TcpListener::bind(metrics_addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {metrics_addr}"))?,
        ),
        None => None,
    };
    let data_dir = config.data_dir.clone();
    let (disk, clock) = (Arc::new(StdDisk), Arc::new(SystemClock));
    let (node, membership) = if config.cluster.is_some() {
        let member = loghouse::server::start_member(config, disk, clock, addr.clone()).await?;
        (member.node, Some(member.membership))
    } else {
        (Node::open(config, disk, clock, addr.clone())?, None)
    };
    let info = node.log().info();
    tracing::info!(
        %addr,
        data_dir = %data_dir.display(),
        lowest_offset = info.lowest_offset,
        next_offset = info.next_offset,
        sync = %node.log().config().sync,
        "loghouse node ready"
    );
    // The endpoint stops when the node begins to shut down.
    #[cfg(not(madsim))]
    if let Some(metrics_listener) = metrics_listener {
        tokio::spawn(loghouse::server::serve_metrics(
            node.clone(),
            metrics_listener,
        ));
    }
    #[cfg(madsim)]
    drop(metrics_listener);
    // madsim-tonic serves on an address, not a listener (the binary is only compiled there).
    #[cfg(madsim)]
    let listener = listener.local_addr()?;
    match loghouse::server::serve(node, listener, shutdown_signal()).await {
        Err(ServerError::RaftStopped(reason)) => {
            if let Some(membership) = membership {
                membership.shutdown().await;
            }
            return Ok(Some(reason));
        }
        result => result?,
    }
    if let Some(membership) = membership {
        membership.leave().await;
    }
    tracing::info!("loghouse node stopped cleanly");
    Ok(None)
}

/// madsim-tokio has only Ctrl-C (the binary is only compiled there, never run).
#[cfg(madsim)]
async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(not(madsim))]
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the node");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        biased;
        _ = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}

/// A batch ends at this many value bytes too, well under the server's message limit.
const PRODUCE_BATCH_BYTES: usize = 4 << 20;

async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let delimiter = cli_format::parse_delimiter(&args.delimiter).context("--delimiter")?;
    let separator = cli_format::parse_byte(&args.key_separator).context("--key-separator")?;
    let client = args.addr.connect().await?;
    let target = ProduceTo {
        topic: args.topic.clone(),
        partition: args.partition,
        key: args.record_key.clone().map(Bytes::from).unwrap_or_default(),
    };
    // With --parse-key the records are partitioned here, as Kafka's producer does (the same
    // murmur2 as the node's), so that each partition gets whole batches in input order.
    let partitions = match (args.parse_key, args.partition) {
        (true, None) if !args.topic.is_empty() => {
            let described = client.describe_topic(&args.topic).await?;
            described.topic.map_or(1, |t| t.partitions.max(1))
        }
        _ => 1,
    };
    let mut producer = Producer {
        client,
        target,
        batch_max: args.batch.max(1),
        pending: std::collections::BTreeMap::new(),
        progress: Progress::new(),
    };
    let records: Box<dyn Iterator<Item = std::io::Result<Vec<u8>>>> = if args.values.is_empty() {
        Box::new(cli_format::Records::new(std::io::stdin().lock(), delimiter))
    } else {
        Box::new(args.values.into_iter().map(|v| Ok(v.into_bytes())))
    };
    for (number, record) in (1..).zip(records) {
        let record = record.context("reading standard input")?;
        let (partition, value) = if args.parse_key {
            let (key, value) = cli_format::split_key(&record, separator, number)?;
            let key = args.encoding.decode(key)?;
            let partition = match args.partition {
                Some(p) => Some(p),
                None if key.is_empty() => None,
                None => Some(loghouse::client::partition_for_key(&key, partitions)),
            };
            (partition, args.encoding.decode(value)?)
        } else {
            (args.partition, args.encoding.decode(&record)?)
        };
        producer.push(partition, Bytes::from(value)).await?;
    }
    producer.flush_all().await?;
    producer.progress.finish(&args.topic);
    Ok(())
}

/// Batches records per partition (`None`: the node chooses, by the key or round robin).
struct Producer {
    client: Client,
    target: ProduceTo,
    batch_max: usize,
    /// Partition -> (values, their bytes).
    pending: std::collections::BTreeMap<Option<u32>, (Vec<Bytes>, usize)>,
    progress: Progress,
}

impl Producer {
    async fn push(&mut self, partition: Option<u32>, value: Bytes) -> anyhow::Result<()> {
        let (values, bytes) = self.pending.entry(partition).or_default();
        *bytes += value.len();
        values.push(value);
        if values.len() >= self.batch_max || *bytes >= PRODUCE_BATCH_BYTES {
            self.flush(partition).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, partition: Option<u32>) -> anyhow::Result<()> {
        let Some((values, _)) = self.pending.remove(&partition) else {
            return Ok(());
        };
        if values.is_empty() {
            return Ok(());
        }
        let count = values.len() as u64;
        let to = ProduceTo {
            partition: partition.or(self.target.partition),
            ..self.target.clone()
        };
        let produced = self.client.produce_batch_to(&to, values).await?;
        self.progress
            .add(produced.partition, count, produced.first_offset);
        Ok(())
    }

    async fn flush_all(&mut self) -> anyhow::Result<()> {
        let partitions: Vec<Option<u32>> = self.pending.keys().copied().collect();
        for partition in partitions {
            self.flush(partition).await?;
        }
        Ok(())
    }
}

/// Counts produced records; shows a live line on a terminal for large inputs.
struct Progress {
    records: u64,
    /// Partition -> first and last offset written.
    offsets: std::collections::BTreeMap<u32, (u64, u64)>,
    started: Instant,
    shown: Instant,
    live: bool,
}

impl Progress {
    fn new() -> Self {
        let now = Instant::now();
        Progress {
            records: 0,
            offsets: std::collections::BTreeMap::new(),
            started: now,
            shown: now,
            live: std::io::stderr().is_terminal(),
        }
    }

    fn add(&mut self, partition: u32, records: u64, first_offset: u64) {
        self.records += records;
        let last = first_offset + records - 1;
        let range = self
            .offsets
            .entry(partition)
            .or_insert((first_offset, last));
        range.1 = last;
        if self.live && self.shown.elapsed() > Duration::from_millis(250) {
            self.shown = Instant::now();
            let rate = self.records as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            eprint!("\rproduced {} records ({rate:.0}/s)", self.records);
        }
    }

    /// `produced 2 records at offsets 0..=1` (the default topic), `produced 3 records to
    /// orders: partition 0 at offsets 0..=1, partition 2 at offsets 4..=4` (a topic).
    fn finish(&self, topic: &str) {
        if self.live && self.started.elapsed() > Duration::from_millis(250) {
            eprintln!();
        }
        let ranges = |with_partition: bool| {
            let ranges =
                self.offsets
                    .iter()
                    .map(|(partition, (first, last))| match with_partition {
                        true => format!("partition {partition} at offsets {first}..={last}"),
                        false => format!("at offsets {first}..={last}"),
                    });
            ranges.collect::<Vec<_>>().join(", ")
        };
        let line = if self.offsets.is_empty() {
            "nothing to produce".to_string()
        } else if topic.is_empty() && self.offsets.keys().eq([&0]) {
            format!("produced {} records {}", self.records, ranges(false))
        } else {
            let topic = if topic.is_empty() { "default" } else { topic };
            format!(
                "produced {} records to {topic}: {}",
                self.records,
                ranges(true)
            )
        };
        let _ = writeln!(std::io::stderr(), "{line}");
    }
}

/// How `consume` prints a record: `[partition<TAB>][offset<TAB>]value<delimiter>`.
struct RecordFormat {
    partition: bool,
    offsets: bool,
    encoding: Encoding,
    delimiter: Option<u8>,
}

impl RecordFormat {
    fn write(
        &self,
        out: &mut impl Write,
        partition: u32,
        record: &loghouse::client::Record,
    ) -> std::io::Result<()> {
        if self.partition {
            write!(out, "{partition}\t")?;
        }
        if self.offsets {
            write!(out, "{}\t", record.offset)?;
        }
        self.encoding.write(out, &record.value)?;
        if let Some(delimiter) = self.delimiter {
            out.write_all(&[delimiter])?;
        }
        Ok(())
    }
}

async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let delimiter = cli_format::parse_delimiter(&args.delimiter).context("--delimiter")?;
    let client = args.addr.connect().await?;
    let start = match &args.from_time {
        Some(text) => Start::TimestampMs(parse_time_ms(text, now_ms())?),
        None => Start::Offset(args.from),
    };
    // A topic without --partition or --record-key: all of its partitions (the count from
    // DescribeTopic).
    let topic = args.topic.clone().unwrap_or_default();
    let all_partitions =
        args.topic.is_some() && args.partition.is_none() && args.record_key.is_none();
    let count = match all_partitions || args.record_key.is_some() {
        true if !topic.is_empty() => {
            let described = client.describe_topic(&topic).await?;
            described.topic.map_or(1, |t| t.partitions.max(1))
        }
        _ => 1,
    };
    let partitions: Vec<TopicPartition> = if all_partitions {
        (0..count)
            .map(|p| TopicPartition::new(topic.clone(), p))
            .collect()
    } else {
        let partition = match &args.record_key {
            Some(key) => loghouse::client::partition_for_key(key.as_bytes(), count),
            None => args.partition.unwrap_or(0),
        };
        vec![TopicPartition::new(topic, partition)]
    };
    let format = RecordFormat {
        partition: all_partitions,
        offsets: args.offsets,
        encoding: args.encoding,
        delimiter,
    };
    let limit = args.limit.unwrap_or(u64::MAX);
    let mut printed = 0;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.follow {
        let mut streams = Vec::new();
        for at in &partitions {
            let partition = at.partition;
            let stream = client
                .follow_at(at, start, loghouse::client::FOLLOW_BATCH_BYTES)
                .await?;
            streams.push(stream.map(move |batch| (partition, batch)).boxed());
        }
        let mut merged = futures::stream::select_all(streams);
        while let Some((partition, batch)) = merged.next().await {
            for record in batch? {
                format.write(&mut out, partition, &record)?;
                printed += 1;
                if printed >= limit {
                    return Ok(out.flush()?);
                }
            }
            out.flush()?;
        }
        return Ok(out.flush()?);
    }
    for at in &partitions {
        let mut offset = match start {
            Start::Offset(offset) => offset,
            Start::TimestampMs(t) => client.offset_for_time_at(at, t).await?,
        };
        while printed < limit {
            let response = client.consume_batch_at(at, offset, 0).await?;
            if response.records.is_empty() {
                break;
            }
            for record in &response.records {
                format.write(&mut out, at.partition, record)?;
                printed += 1;
                if printed >= limit {
                    break;
                }
            }
            offset = response.next_offset;
        }
    }
    Ok(out.flush()?)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `1700000000000` (ms since the epoch) or `-90s`, `-5m`, `-2h`, `-1d` (before `now_ms`).
fn parse_time_ms(text: &str, now_ms: i64) -> anyhow::Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        if ms >= 0 {
            return Ok(ms);
        }
    }
    let bad = || {
        anyhow::anyhow!("invalid time {text:?}: expected ms since the epoch or -Ns, -Nm, -Nh, -Nd")
    };
    let ago = text.strip_prefix('-').ok_or_else(bad)?;
    let (number, unit_ms) = match ago.char_indices().last().ok_or_else(bad)? {
        (i, 's') => (&ago[..i], 1_000),
        (i, 'm') => (&ago[..i], 60_000),
        (i, 'h') => (&ago[..i], 3_600_000),
        (i, 'd') => (&ago[..i], 86_400_000),
        _ => return Err(bad()),
    };
    let number: i64 = number.parse().map_err(|_| bad())?;
    Ok(now_ms.saturating_sub(number.saturating_mul(unit_ms)))
}

async fn info(args: InfoArgs) -> anyhow::Result<()> {
    let at = TopicPartition::new(args.topic, args.partition);
    let info = args.addr.connect().await?.info_at(&at).await?;
    let mut out = std::io::stdout().lock();
    // First, so nobody misses it: a node whose writes stopped needs a restart.
    match info.writes_stopped.as_str() {
        "" => writeln!(out, "writes          accepted")?,
        cause => writeln!(
            out,
            "writes          STOPPED after a failed write or fsync: {cause}; restart the node"
        )?,
    }
    writeln!(out, "lowest offset   {}", info.lowest_offset)?;
    writeln!(out, "next offset     {}", info.next_offset)?;
    writeln!(
        out,
        "records         {}",
        info.next_offset.saturating_sub(info.lowest_offset)
    )?;
    writeln!(out, "size            {} bytes", info.size_bytes)?;
    writeln!(out, "segments        {}", info.segment_count)?;
    writeln!(out, "sync policy     {}", info.sync_policy)?;
    // Counters since the answering node started (as on its metrics endpoint).
    writeln!(
        out,
        "produced        {} records, {} bytes",
        info.produce_records, info.produce_bytes
    )?;
    writeln!(
        out,
        "consumed        {} records, {} bytes",
        info.consume_records, info.consume_bytes
    )?;
    let mean_ms = match info.fsync_count {
        0 => 0.0,
        n => info.fsync_seconds_total * 1e3 / n as f64,
    };
    writeln!(
        out,
        "fsyncs          {} (mean {mean_ms:.3} ms)",
        info.fsync_count
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_time_ms;
    use clap::{CommandFactory, Parser};

    /// clap's own checks of every subcommand (unique names, valid defaults, ...).
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn a_relative_time_with_a_leading_hyphen_parses_as_a_value() {
        let cli =
            super::Cli::try_parse_from(["loghouse", "consume", "--from-time", "-5m", "--follow"])
                .unwrap();
        let super::Command::Consume(args) = cli.command else {
            panic!("not consume")
        };
        assert_eq!(args.from_time.as_deref(), Some("-5m"));
        assert!(args.follow);
    }

    #[test]
    fn times_parse_as_epoch_ms_or_relative() {
        assert_eq!(
            parse_time_ms("1700000000000", 0).unwrap(),
            1_700_000_000_000
        );
        assert_eq!(parse_time_ms("-90s", 100_000).unwrap(), 10_000);
        assert_eq!(parse_time_ms("-2m", 200_000).unwrap(), 80_000);
        assert_eq!(parse_time_ms("-1h", 3_600_000).unwrap(), 0);
        assert!(parse_time_ms("yesterday", 0).is_err());
        assert!(parse_time_ms("-5x", 0).is_err());
        assert!(parse_time_ms("-", 0).is_err());
    }
}
