//! The simulation seed runner (`[[test]] name = "simulation"`, harness = false).
//!
//! Under `--cfg madsim`: `simulation --seed S [--nodes N] [--bug drop-ack] [--trace]` runs ONE
//! seed (one seed per process: tokio's internal RNG makes only the first seed in a process
//! reproducible) in a madsim runtime built from that seed, prints `seed=S ...` first and
//! `seed=S result=... trace_hash=H` last, and exits non-zero with the replay command when a
//! checker fails. Without `--cfg madsim` it prints one line and exits 0, so plain `cargo test`
//! stays fast. `cargo test --features sim` (tests/sim.rs) runs many seeds; `cargo sim-seed --seed S`
//! (.cargo/config.toml) replays one.

#[cfg(madsim)]
mod checker;
#[cfg(madsim)]
mod cluster;
#[cfg(madsim)]
mod faults;
#[cfg(madsim)]
mod history;
#[cfg(madsim)]
mod rng;
#[cfg(madsim)]
mod runner;
#[cfg(madsim)]
mod scenario;
#[cfg(madsim)]
mod security;
#[cfg(madsim)]
mod topics;
#[cfg(madsim)]
mod trace;
#[cfg(madsim)]
mod value;
#[cfg(madsim)]
mod workload;

#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    runner::main()
}

#[cfg(not(madsim))]
fn main() {
    println!(
        "simulation: skipped (needs --cfg madsim: run `cargo test --features sim`, or `cargo sim-seed --seed N` for one seed)"
    );
}
