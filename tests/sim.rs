//! `cargo test --features sim`: the deterministic simulation, many seeds.
//!
//! This driver (harness = false) builds the seed runner (`sim/main.rs`, test target `simulation`)
//! with `RUSTFLAGS="--cfg madsim"` in its own target directory (`<target>/sim`: sharing the outer
//! one would deadlock on cargo's lock), then runs seeds ONE PER PROCESS, a few processes at a time,
//! for each cluster size in the mix (default: a standalone node, a 3-node and a 5-node Raft
//! cluster):
//! - seeds LOGHOUSE_SIM_SEED_START.. of each size (LOGHOUSE_SIM_SEEDS of them unless the mix
//!   says how many), plus the regression seeds of that size;
//! - determinism: the first 3 seeds of each size run a second time and must give the same trace
//!   hash (so a 3- and a 5-node cluster's Raft elections and gossip replay from the seed too);
//! - the checker's teeth: one seed of each size with `--bug drop-ack` (an acknowledged record is
//!   cut off the disk: on the node, or on every replica of a cluster) must fail with
//!   acked-record-lost and print its replay command.
//!
//! It fails when any of that fails, printing every failing seed's replay command, and reports
//! seeds per minute and the simulated/real time ratio (per size too).
//!
//! Environment:
//! - LOGHOUSE_SIM_NODES: the mix, comma-separated `N` or `N:count` (default `1,3:200,5:50`:
//!   100 standalone seeds, 200 3-node seeds, 50 5-node seeds)
//! - LOGHOUSE_SIM_SEEDS (default 100): seeds of each size the mix gives no count;
//!   LOGHOUSE_SIM_SEED_START (default 1)
//! - LOGHOUSE_SIM_JOBS: seed processes at once (default 2)
//! - LOGHOUSE_SIM_SEED_TIMEOUT_S: real seconds before a seed process is killed (default 300)
//! - LOGHOUSE_SIM_TARGET_DIR: where the madsim build goes (default `<target>/sim`)
//! - LOGHOUSE_SIM_PROFILE: the cargo profile of that build (default `sim`, from
//!   .cargo/config.toml: optimized, with debug assertions and overflow checks)
//!
//! Soak: `LOGHOUSE_SIM_NODES=3 LOGHOUSE_SIM_SEEDS=1000 LOGHOUSE_SIM_SEED_START=$RANDOM cargo test
//! --features sim --test sim` runs 1000 3-node seeds and reports seeds/minute and the
//! time-compression ratio. One seed: `cargo sim-seed --seed 42 --nodes 3` (alias in
//! .cargo/config.toml; add `--trace` for every event). Each seed's output is kept in
//! `<target>/sim/seed-logs/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Seeds whose determinism is checked (the first ones of each size's range).
const DETERMINISM_SEEDS: u64 = 3;
const TEST_NAME: &str = "simulation_seeds";
const NODES_DEFAULT: &str = "1:300,3:500,5:200";

struct Settings {
    /// (cluster size, seeds of that size), in the order given.
    mix: Vec<(usize, u64)>,
    seed_start: u64,
    jobs: usize,
    seed_timeout: Duration,
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={text:?} is not a number: {e}")),
        Err(_) => default,
    }
}

/// Parses the mix: `N` or `N:count` entries, comma-separated.
fn parse_mix(text: &str, seeds: u64) -> Result<Vec<(usize, u64)>, String> {
    let mut mix: Vec<(usize, u64)> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (nodes, count) = match entry.split_once(':') {
            Some((nodes, count)) => (nodes, count.parse().map_err(|e| format!("{entry}: {e}"))?),
            None => (entry, seeds),
        };
        let nodes: usize = nodes.parse().map_err(|e| format!("{entry}: {e}"))?;
        if !(1..=7).contains(&nodes) || mix.iter().any(|(n, _)| *n == nodes) {
            return Err(format!("{entry}: sizes are 1..=7, each once"));
        }
        mix.push((nodes, count));
    }
    Ok(mix)
}

impl Settings {
    fn from_env() -> Settings {
        let seeds = env_number("LOGHOUSE_SIM_SEEDS", 100);
        let mix_text =
            std::env::var("LOGHOUSE_SIM_NODES").unwrap_or_else(|_| NODES_DEFAULT.to_owned());
        let mix = parse_mix(&mix_text, seeds)
            .unwrap_or_else(|e| panic!("LOGHOUSE_SIM_NODES={mix_text:?}: {e}"));
        Settings {
            mix,
            seed_start: env_number("LOGHOUSE_SIM_SEED_START", 1),
            jobs: env_number("LOGHOUSE_SIM_JOBS", 2).max(1) as usize,
            seed_timeout: Duration::from_secs(env_number("LOGHOUSE_SIM_SEED_TIMEOUT_S", 300)),
        }
    }
}

/// What to run in one process.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Job {
    seed: u64,
    nodes: usize,
    /// A planted bug (`--bug NAME`): the run must fail, printing this violation.
    bug: Option<(&'static str, &'static str)>,
    /// Further runner arguments (a regression seed's own).
    extra: &'static [&'static str],
    /// A second run of the seed, for the determinism check.
    repeat: bool,
}

impl Job {
    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--seed".to_owned(),
            self.seed.to_string(),
            "--nodes".to_owned(),
            self.nodes.to_string(),
        ];
        if let Some((bug, _)) = self.bug {
            args.extend(["--bug".to_owned(), bug.to_owned()]);
        }
        args.extend(self.extra.iter().map(|a| a.to_string()));
        args
    }

    fn label(&self) -> String {
        let base = format!("n{}-seed-{}", self.nodes, self.seed);
        match (self.bug, self.repeat) {
            (Some((bug, _)), _) => format!("{base}-{bug}"),
            (None, true) => format!("{base}-repeat"),
            (None, false) => base,
        }
    }
}

/// What one seed process printed, parsed.
#[derive(Debug, Clone)]
struct Run {
    job: Job,
    /// The exit code (None: killed, by the timeout or a signal).
    code: Option<i32>,
    output: String,
    trace_hash: Option<String>,
    sim_ms: u64,
    real_ms: u64,
    log: PathBuf,
}

impl Run {
    fn passed(&self) -> bool {
        self.code == Some(0) && self.output.contains(" result=ok ")
    }

    fn replay(&self) -> String {
        (self.output.lines())
            .find_map(|l| l.strip_prefix("replay: "))
            .map(str::to_owned)
            .unwrap_or_else(|| format!("cargo sim-seed {}", self.job.args().join(" ")))
    }

    fn field(output: &str, key: &str) -> Option<String> {
        let result_line = output.lines().rev().find(|l| l.contains(" result="))?;
        (result_line.split_whitespace())
            .find_map(|word| word.strip_prefix(key))
            .map(|v| v.trim_end_matches(':').to_owned())
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        // libtest's listing, for nextest and `cargo test -- --list`.
        if !args.iter().any(|a| a == "--ignored") {
            println!("{TEST_NAME}: test");
        }
        return ExitCode::SUCCESS;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if args.iter().any(|a| a == "--ignored")
        || filters.iter().any(|f| !TEST_NAME.contains(f.as_str()))
    {
        println!("simulation: 0 passed, 0 failed (filtered out)");
        return ExitCode::SUCCESS;
    }
    let settings = Settings::from_env();
    let target_dir = sim_target_dir();
    let runner = match build_runner(&target_dir) {
        Ok(runner) => runner,
        Err(error) => {
            eprintln!("simulation: building the seed runner with --cfg madsim failed: {error}");
            return ExitCode::FAILURE;
        }
    };
    let logs = target_dir.join("seed-logs");
    std::fs::create_dir_all(&logs).expect("creating the seed log directory");
    run_all(&settings, &runner, &logs)
}

/// `<target>/sim`, where `<target>` is the directory this test binary was built in.
fn sim_target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LOGHOUSE_SIM_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/<profile>/deps/sim-<hash>
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test binary lives in <target>/<profile>/deps");
    target.join("sim")
}

/// Builds the `simulation` test target with `--cfg madsim`; returns the executable.
fn build_runner(target_dir: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let profile = std::env::var("LOGHOUSE_SIM_PROFILE").unwrap_or_else(|_| "sim".into());
    let started = Instant::now();
    println!(
        "simulation: building the seed runner with --cfg madsim (profile {profile}) in {}",
        target_dir.display()
    );
    let mut command = Command::new(cargo);
    command
        .args(["test", "--locked", "--test", "simulation", "--no-run"])
        .args([
            "--profile",
            &profile,
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        // Cargo reads .cargo/config.toml (the `sim` profile) from the working directory.
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUSTFLAGS", "--cfg madsim")
        .env("CARGO_TARGET_DIR", target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_MAKEFLAGS")
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let output = command
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo exited with {}", output.status));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let executable = stdout
        .lines()
        .filter(|l| {
            l.contains(r#""reason":"compiler-artifact""#) && l.contains(r#""name":"simulation""#)
        })
        .find_map(|l| json_string_field(l, "executable"))
        .ok_or("cargo's output names no `simulation` executable")?;
    println!(
        "simulation: seed runner ready in {:.1} s: {executable}",
        started.elapsed().as_secs_f64()
    );
    Ok(PathBuf::from(executable))
}

/// The string value of `"key":"..."` in one line of cargo's JSON (paths have no escapes here).
fn json_string_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!(r#""{key}":""#))? + key.len() + 4;
    let end = start + line[start..].find('"')?;
    Some(line[start..end].replace(r"\\", r"\"))
}

/// Regression seeds replay the scenario they were found in (scenarios came later).
const STANDARD: &[&str] = &["--scenario", "standard"];

/// Seeds that once failed, run on every pass besides the range: (seed, cluster size, runner
/// arguments), each one's fix named.
const REGRESSION_SEEDS: &[(u64, usize, &[&str])] = &[
    // read_batch stopped at every segment boundary: the final scan missed its bound
    (5006, 1, STANDARD),
    // two voters restarted together split every vote (election timeouts drawn once); recorded
    // before cluster bit flips were on
    (10109, 3, &["--scenario", "standard", "--no-bit-flips"]),
    // a repaired leader came back leader of its term and reused the log ids it had lost
    (112, 3, STANDARD),
    // a repaired replica's vote floor blocked every election (floor now lowered on reports)
    (266, 3, STANDARD),
    (320, 3, STANDARD),
    // a replica restarted empty forgot its voters and refused every vote (the floor keeps them)
    (50524, 3, STANDARD),
    // openraft panicked on a follower's log going back (loosen-follower-log-revert)
    (401, 3, STANDARD),
    // a repaired replica kept a membership past its log and panicked on its return
    (435, 3, STANDARD),
    (86, 5, STANDARD),
    // a repaired replica waited for the report of a voter since demoted, which never campaigns
    // (the replica now probes it)
    (62306, 3, STANDARD),
    // 3 voters demoted to 2 with no learner to replace the down one; a damaged disk then left
    // entries only on the learner and stalled them for good (no such demotion now)
    (60504, 3, STANDARD),
    // a flipped bit in an index entry's timestamp became a repaired replica's timestamp floor
    // after its cut: every record it got back was stamped 2^21 ms late (replicas-diverge)
    (70904, 3, STANDARD),
    // a vote write whose fsync failed was read back from the page cache by the in-process
    // restart and used; a later power loss took it back below the member's own log (openraft
    // panicked: vote must GE last_leader_log_id). SlotFile now re-persists what it loads.
    (733477, 3, STANDARD),
    // a member whose last segment held a flipped record followed by valid ones refused to
    // open (corruption, not a torn write) and never came back; members now cut it and repair
    // it from their peers with their vote floor raised (48, 77, 106, 178 failed alike)
    (20127, 3, STANDARD),
    (20562, 3, STANDARD),
];

/// The planted bugs' teeth: (bug, cluster size, seed, runner arguments, the violation it must
/// print) runs that must fail. Each bug re-introduces an old behaviour of the library
/// (`loghouse::planted_bugs`) that one scenario exists to catch; the seeds were found by running
/// the scenario over a range with and without the bug (sim/README.md lists which failed), and
/// pass without it.
const BUG_SEEDS: &[(&str, usize, u64, &[&str], &str)] = &[
    // Acknowledged while node 0 was the only voter; its disk damaged them while it was down.
    (
        "no-min-replicas",
        3,
        4,
        FORMATION,
        "VIOLATION acked-record-lost",
    ),
    (
        "no-min-replicas",
        3,
        6,
        FORMATION,
        "VIOLATION acked-record-lost",
    ),
    (
        "no-min-replicas",
        5,
        22,
        FORMATION,
        "VIOLATION acked-record-lost",
    ),
    (
        "no-min-replicas",
        5,
        24,
        FORMATION,
        "VIOLATION acked-record-lost",
    ),
    // record_bytes_max lowered across a restart: open cut acknowledged records off the tail
    // (new records then took their offsets), or refused to open. (Found again after the
    // standalone run got its named-topic workload, which moved every N=1 timeline.)
    (
        "open-with-configured-limit",
        1,
        16,
        DRIFT,
        "VIOLATION offset-maps-to-two-values | VIOLATION acked-record-lost",
    ),
    (
        "open-with-configured-limit",
        1,
        26,
        DRIFT,
        "VIOLATION offset-maps-to-two-values | VIOLATION acked-record-lost",
    ),
    (
        "open-with-configured-limit",
        1,
        1,
        DRIFT,
        "VIOLATION offset-maps-to-two-values | VIOLATION acked-record-lost",
    ),
    // DeleteTopic's catalog write not fsync'd: a power loss brought a deleted topic back.
    (
        "unsynced-topic-delete",
        1,
        4,
        &[],
        "VIOLATION deleted-topic-reappeared | VIOLATION topic-half-exists",
    ),
    (
        "unsynced-topic-delete",
        1,
        6,
        &[],
        "VIOLATION deleted-topic-reappeared | VIOLATION topic-half-exists",
    ),
];
const FORMATION: &[&str] = &["--scenario", "formation"];
const DRIFT: &[&str] = &["--scenario", "drift"];

fn run_all(settings: &Settings, runner: &Path, logs: &Path) -> ExitCode {
    let mut jobs: Vec<Job> = Vec::new();
    let mut checks: Vec<Job> = Vec::new();
    for &(nodes, count) in &settings.mix {
        let range = settings.seed_start..settings.seed_start + count;
        let regressions = (REGRESSION_SEEDS.iter())
            .filter(|(seed, n, _)| *n == nodes && !range.contains(seed))
            .map(|(seed, _, extra)| Job {
                seed: *seed,
                nodes,
                bug: None,
                extra,
                repeat: false,
            });
        let job = |seed, bug, repeat| Job {
            seed,
            nodes,
            bug,
            extra: &[],
            repeat,
        };
        jobs.extend(range.clone().map(|s| job(s, None, false)));
        jobs.extend(regressions);
        let checked = range.start..(range.start + DETERMINISM_SEEDS).min(range.end);
        checks.extend(checked.map(|s| job(s, None, true)));
        let drop_ack = Some(("drop-ack", "VIOLATION acked-record-lost"));
        checks.push(job(settings.seed_start, drop_ack, false));
        let bugs = (BUG_SEEDS.iter()).filter(|(_, n, _, _, _)| *n == nodes);
        checks.extend(bugs.map(|(bug, _, seed, extra, expected)| Job {
            seed: *seed,
            nodes,
            bug: Some((bug, expected)),
            extra,
            repeat: false,
        }));
        println!(
            "simulation: {nodes} node(s): seeds {range:?} and regression seeds {:?}; determinism on the first {}; drop-ack on seed {}; planted bugs on seeds {:?}",
            (REGRESSION_SEEDS.iter()).filter(|(_, n, _)| *n == nodes).map(|(s, _, _)| s).collect::<Vec<_>>(),
            DETERMINISM_SEEDS.min(count),
            settings.seed_start,
            (BUG_SEEDS.iter()).filter(|(_, n, _, _, _)| *n == nodes).map(|(b, _, s, _, _)| format!("{s} ({b})")).collect::<Vec<_>>(),
        );
    }
    // The checks first: a determinism or planted-bug failure shows at once.
    checks.extend(jobs);
    let jobs = checks;
    println!(
        "simulation: {} seed processes, {} at a time",
        jobs.len(),
        settings.jobs
    );
    let started = Instant::now();
    let runs = run_pool(&jobs, settings, runner, logs);
    let wall = started.elapsed();
    report(settings, &runs, wall)
}

/// Runs the jobs, `settings.jobs` processes at a time; results in job order.
fn run_pool(jobs: &[Job], settings: &Settings, runner: &Path, logs: &Path) -> Vec<Run> {
    let next = AtomicUsize::new(0);
    let results: Mutex<BTreeMap<usize, Run>> = Mutex::new(BTreeMap::new());
    std::thread::scope(|scope| {
        for _ in 0..settings.jobs {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { return };
                let run = run_one(job, runner, logs, settings.seed_timeout);
                if !run.passed() && job.bug.is_none() {
                    println!("simulation: {} FAILED: {}", job.label(), run.replay());
                }
                results.lock().unwrap().insert(i, run);
            });
        }
    });
    results.into_inner().unwrap().into_values().collect()
}

fn run_one(job: &Job, runner: &Path, logs: &Path, seed_timeout: Duration) -> Run {
    let log = logs.join(format!("{}.log", job.label()));
    let file = std::fs::File::create(&log).expect("creating a seed log");
    let mut child = Command::new(runner)
        .args(job.args())
        .stdout(file.try_clone().expect("cloning a file handle"))
        .stderr(file)
        .spawn()
        .expect("starting the seed runner");
    let started = Instant::now();
    let code = loop {
        match child.try_wait().expect("waiting for a seed process") {
            Some(status) => break status.code(),
            None if started.elapsed() > seed_timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut output = std::fs::read_to_string(&log).unwrap_or_default();
    if code.is_none() {
        output.push_str(&format!(
            "\n(killed: no exit within {seed_timeout:?} of real time)\n"
        ));
    }
    Run {
        job: job.clone(),
        code,
        trace_hash: Run::field(&output, "trace_hash="),
        sim_ms: Run::field(&output, "sim_ms=")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        real_ms: Run::field(&output, "real_ms=")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        output,
        log,
    }
}

fn report(settings: &Settings, runs: &[Run], wall: Duration) -> ExitCode {
    let seeds: Vec<&Run> = runs
        .iter()
        .filter(|r| r.job.bug.is_none() && !r.job.repeat)
        .collect();
    let mut failures: Vec<String> = seeds
        .iter()
        .filter(|r| !r.passed())
        .map(|r| seed_failure(r))
        .collect();
    let mut checks_passed = 0;
    for repeat in runs.iter().filter(|r| r.job.repeat) {
        match determinism_failure(&seeds, repeat) {
            Some(failure) => failures.push(failure),
            None => checks_passed += 1,
        }
    }
    for bug in runs.iter().filter(|r| r.job.bug.is_some()) {
        match bug_failure(bug) {
            Some(failure) => failures.push(failure),
            None => checks_passed += 1,
        }
    }
    let seeds_passed = seeds.iter().filter(|r| r.passed()).count();
    print_speed(settings, runs, wall);
    for failure in &failures {
        println!("simulation: FAILURE: {failure}");
    }
    println!(
        "simulation: {} seeds passed, {} failed; {checks_passed} determinism/planted-bug checks passed",
        seeds_passed,
        seeds.len() - seeds_passed
    );
    println!(
        "simulation: {} passed, {} failed",
        seeds_passed + checks_passed,
        failures.len()
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn seed_failure(run: &Run) -> String {
    let violations: Vec<&str> = (run.output.lines())
        .filter(|l| {
            l.starts_with("VIOLATION") || l.contains("result=PANIC") || l.starts_with("(killed")
        })
        .take(5)
        .collect();
    format!(
        "{} node(s) seed {} failed (log: {}):\n    {}\n  replay: {}",
        run.job.nodes,
        run.job.seed,
        run.log.display(),
        violations.join("\n    "),
        run.replay()
    )
}

/// None when the repeat gave the same trace hash as the first run of its seed.
fn determinism_failure(seeds: &[&Run], repeat: &Run) -> Option<String> {
    let first =
        (seeds.iter()).find(|r| r.job.seed == repeat.job.seed && r.job.nodes == repeat.job.nodes);
    let (a, b) = (
        first.and_then(|r| r.trace_hash.clone()),
        repeat.trace_hash.clone(),
    );
    if a.is_some() && a == b {
        println!(
            "simulation: determinism: {} node(s) seed {} gave trace_hash {} twice",
            repeat.job.nodes,
            repeat.job.seed,
            b.unwrap_or_default()
        );
        return None;
    }
    Some(format!(
        "{} node(s) seed {} is not deterministic: trace_hash {a:?} then {b:?} (log: {})\n  replay: {}",
        repeat.job.nodes,
        repeat.job.seed,
        repeat.log.display(),
        repeat.replay()
    ))
}

/// None when a `--bug` run failed the way it must (with its expected violation), printing its
/// replay command.
fn bug_failure(run: &Run) -> Option<String> {
    let (bug, expected) = run.job.bug.unwrap_or_default();
    let replay = format!("replay: cargo sim-seed {}", run.job.args().join(" "));
    // `expected` lists the violations any of which shows the bug, separated by " | " (a bug's
    // damage can surface in more than one way, and which one moves with the timeline).
    let expected: Vec<&str> = expected.split(" | ").collect();
    let caught = run.code == Some(1) && expected.iter().any(|e| run.output.contains(e)) && {
        // The runner prints the scenario before the bug in its replay line.
        let printed = run.output.lines().find_map(|l| l.strip_prefix("replay: "));
        printed.is_some_and(|p| p.contains(&format!("--bug {bug}")))
    };
    if caught {
        let first = (run.output.lines())
            .find(|l| expected.iter().any(|e| l.starts_with(e)))
            .unwrap_or_default();
        println!(
            "simulation: --bug {bug} on {} node(s), seed {}, was caught ({first}); {replay}",
            run.job.nodes, run.job.seed
        );
        return None;
    }
    Some(format!(
        "--bug {bug} on {} node(s), seed {}, was NOT caught (exit {:?}; log: {})",
        run.job.nodes,
        run.job.seed,
        run.code,
        run.log.display()
    ))
}

fn print_speed(settings: &Settings, runs: &[Run], wall: Duration) {
    let sim_s = runs.iter().map(|r| r.sim_ms).sum::<u64>() as f64 / 1000.0;
    let real_s = runs.iter().map(|r| r.real_ms).sum::<u64>() as f64 / 1000.0;
    let wall_s = wall.as_secs_f64().max(1e-3);
    println!(
        "simulation: {} seed processes in {wall_s:.1} s with {} jobs: {:.0} seeds/minute; {sim_s:.0} s simulated in {real_s:.1} s of seed run time: {:.0}x real time per process, {:.0}x overall",
        runs.len(),
        settings.jobs,
        runs.len() as f64 * 60.0 / wall_s,
        sim_s / real_s.max(1e-3),
        sim_s / wall_s,
    );
    for (nodes, _) in &settings.mix {
        let of_size: Vec<&Run> = runs.iter().filter(|r| r.job.nodes == *nodes).collect();
        let sim_s = of_size.iter().map(|r| r.sim_ms).sum::<u64>() as f64 / 1000.0;
        let real_s = of_size.iter().map(|r| r.real_ms).sum::<u64>() as f64 / 1000.0;
        println!(
            "simulation: {nodes} node(s): {} seed processes, {real_s:.1} s of seed run time ({:.2} s per seed), {sim_s:.0} s simulated: {:.0}x real time",
            of_size.len(),
            real_s / (of_size.len().max(1) as f64),
            sim_s / real_s.max(1e-3),
        );
    }
}
