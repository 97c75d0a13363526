//! Arguments, the madsim runtime for one seed, and what is printed.

use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::scenario::{self, Bug, Kind, Options};

/// A run that has not finished after this much simulated time is stuck: the runtime panics.
const SIM_TIME_LIMIT: Duration = Duration::from_secs(600);
/// Most violations printed per run (the count is always printed).
const VIOLATIONS_PRINTED_MAX: usize = 20;

struct Args {
    seed: u64,
    options: Options,
}

const USAGE: &str = "usage: simulation --seed S [--nodes N] [--scenario standard|formation|drift] \
     [--bug drop-ack|no-min-replicas|open-with-configured-limit|unsynced-topic-delete] [--no-bit-flips] [--no-drift-cluster-record-limit] [--no-topics] [--trace]";

fn parse_args() -> Result<Args, String> {
    let mut seed = None;
    let mut options = Options {
        nodes: 1,
        bug: None,
        scenario: None,
        drift_cluster_record_limit: true,
        print_trace: false,
        cluster_bit_flips: true,
        topics: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--seed" => {
                seed = Some(
                    value("--seed")?
                        .parse()
                        .map_err(|e| format!("--seed: {e}"))?,
                )
            }
            "--nodes" => {
                options.nodes = value("--nodes")?
                    .parse()
                    .map_err(|e| format!("--nodes: {e}"))?;
                if !(1..=7).contains(&options.nodes) {
                    return Err("--nodes: 1 (a standalone node) to 7 (a Raft cluster)".into());
                }
            }
            "--bug" => {
                let name = value("--bug")?;
                let bug = Bug::ALL.into_iter().find(|b| b.name() == name);
                let known: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
                options.bug = Some(bug.ok_or_else(|| {
                    format!("--bug: unknown bug {name:?} (known: {})", known.join(", "))
                })?);
            }
            "--scenario" => {
                let name = value("--scenario")?;
                let kind = Kind::ALL.into_iter().find(|k| k.name() == name);
                let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                options.scenario = Some(kind.ok_or_else(|| {
                    format!(
                        "--scenario: unknown scenario {name:?} (known: {})",
                        known.join(", ")
                    )
                })?);
            }
            "--trace" => options.print_trace = true,
            // On by default; `--drift-cluster-record-limit` stays for old replay lines.
            "--drift-cluster-record-limit" => options.drift_cluster_record_limit = true,
            "--no-drift-cluster-record-limit" => options.drift_cluster_record_limit = false,
            // Bit flips in a cluster are on by default; `--bit-flips` stays for old replay lines.
            "--bit-flips" => options.cluster_bit_flips = true,
            "--no-bit-flips" => options.cluster_bit_flips = false,
            "--no-topics" => options.topics = false,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let seed = seed.ok_or("--seed is required")?;
    Ok(Args { seed, options })
}

fn replay_command(seed: u64, options: &Options) -> String {
    let scenario = (options.scenario)
        .map(|k| format!(" --scenario {}", k.name()))
        .unwrap_or_default();
    let bug = (options.bug)
        .map(|b| format!(" --bug {}", b.name()))
        .unwrap_or_default();
    let flips = if options.cluster_bit_flips {
        ""
    } else {
        " --no-bit-flips"
    };
    let record = match options.drift_cluster_record_limit {
        true => "",
        false => " --no-drift-cluster-record-limit",
    };
    let topics = match options.topics {
        true => "",
        false => " --no-topics",
    };
    format!(
        "cargo sim-seed --seed {seed} --nodes {}{scenario}{bug}{flips}{record}{topics}",
        options.nodes
    )
}

pub fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("simulation: {error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (seed, options) = (args.seed, args.options);
    // `LOGHOUSE_SIM_LOG=openraft=debug,loghouse=info` prints the nodes' own logs (stderr), in
    // simulated-time order, for replaying a failure. Off by default (and not in the trace hash).
    if let Ok(filter) = std::env::var("LOGHOUSE_SIM_LOG") {
        let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
            eprintln!("simulation: LOGHOUSE_SIM_LOG: {e}");
            std::process::exit(2)
        });
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .without_time()
            .with_writer(std::io::stderr)
            .init();
    }
    let bug = options.bug.map_or("none", Bug::name);
    println!("seed={seed} nodes={} bug={bug}", options.nodes);
    let replay = replay_command(seed, &options);
    let real_started = Instant::now();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut runtime =
            madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        runtime.set_time_limit(SIM_TIME_LIMIT);
        runtime.block_on(scenario::run(options.clone()))
    }));
    let real_elapsed = real_started.elapsed();
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            println!(
                "seed={seed} result=PANIC real_ms={}: {message}",
                real_elapsed.as_millis()
            );
            println!("replay: {replay}");
            return ExitCode::from(101);
        }
    };
    for violation in outcome.violations.iter().take(VIOLATIONS_PRINTED_MAX) {
        println!("VIOLATION {violation}");
    }
    let result = if outcome.violations.is_empty() {
        "ok"
    } else {
        "FAIL"
    };
    let ratio = outcome.sim_elapsed.as_secs_f64() / real_elapsed.as_secs_f64().max(1e-9);
    println!("{}", outcome.summary);
    println!(
        "seed={seed} result={result} violations={} sim_ms={} real_ms={} ratio={ratio:.1} events={} trace_hash={:016x}",
        outcome.violations.len(),
        outcome.sim_elapsed.as_millis(),
        real_elapsed.as_millis(),
        outcome.trace_events,
        outcome.trace_hash,
    );
    if outcome.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("replay: {replay}");
        ExitCode::from(1)
    }
}
