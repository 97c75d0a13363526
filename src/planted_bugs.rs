//! Planted bugs, for the simulation only (compiled only under `--cfg madsim`): each switch brings
//! back one old behaviour that a simulation scenario must catch (`--bug NAME` in sim/). Off unless
//! the seed runner turns one on; every switch is checked at exactly one place in the library.

use std::sync::atomic::{AtomicBool, Ordering};

static NO_MIN_REPLICAS: AtomicBool = AtomicBool::new(false);
static OPEN_WITH_CONFIGURED_LIMIT: AtomicBool = AtomicBool::new(false);
static UNSYNCED_TOPIC_DELETE: AtomicBool = AtomicBool::new(false);

/// `--bug no-min-replicas`: the leader acknowledges a write as soon as Raft commits it on a
/// majority of the voter set in force (`cluster.min_replicas` ignored: the proposer runs with 1).
pub fn set_no_min_replicas(on: bool) {
    NO_MIN_REPLICAS.store(on, Ordering::Relaxed);
}

pub fn no_min_replicas() -> bool {
    NO_MIN_REPLICAS.load(Ordering::Relaxed)
}

/// `--bug open-with-configured-limit`: the log's open judges the frames it scans against the
/// configured `record_bytes_max` instead of the format's hard limit.
pub fn set_open_with_configured_limit(on: bool) {
    OPEN_WITH_CONFIGURED_LIMIT.store(on, Ordering::Relaxed);
}

pub fn open_with_configured_limit() -> bool {
    OPEN_WITH_CONFIGURED_LIMIT.load(Ordering::Relaxed)
}

/// `--bug unsynced-topic-delete`: DeleteTopic writes the catalog without the topic but does not
/// fsync it (a power loss before the next catalog write brings the topic back).
pub fn set_unsynced_topic_delete(on: bool) {
    UNSYNCED_TOPIC_DELETE.store(on, Ordering::Relaxed);
}

pub fn unsynced_topic_delete() -> bool {
    UNSYNCED_TOPIC_DELETE.load(Ordering::Relaxed)
}
