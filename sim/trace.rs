//! The trace: a hash over every event the harness saw, in order, with its simulated time. Two runs
//! of the same seed must give the same hash; `--trace` also prints the events.

use crate::value::fnv1a;

#[derive(Debug)]
pub struct Trace {
    hash: u64,
    events: u64,
    print: bool,
}

impl Trace {
    pub fn new(print: bool) -> Self {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
            events: 0,
            print,
        }
    }

    /// Folds one event (at `time_ns` of simulated time) into the hash.
    pub fn record(&mut self, time_ns: u128, event: &str) {
        self.events += 1;
        let mut bytes = Vec::with_capacity(24 + event.len());
        bytes.extend_from_slice(&self.hash.to_le_bytes());
        bytes.extend_from_slice(&time_ns.to_le_bytes());
        bytes.extend_from_slice(event.as_bytes());
        self.hash = fnv1a(&bytes);
        if self.print {
            println!(
                "trace {:>6}.{:06}ms {event}",
                time_ns / 1_000_000,
                time_ns % 1_000_000
            );
        }
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn events(&self) -> u64 {
        self.events
    }
}
