//! The invariants, as pure functions over a `History`. Each returns the violations it found.
//!
//! - no acknowledged record is lost (records a bit flip damaged excepted: they may read as
//!   DATA_LOSS, never as another value);
//! - each offset maps to one value forever, and each value sits at one offset at most;
//! - offsets are dense: the final scan reads every offset below the log's end;
//! - consuming streams deliver consecutive offsets from where they started;
//! - nothing served fails its checksum or is a value nobody produced, and DATA_LOSS is only ever
//!   answered for records a bit flip damaged;
//! - record timestamps never decrease along the log (whatever the clock skew);
//! - the liveness phase met its bounds;
//! - a produce refused with INVALID_ARGUMENT stored nothing (standalone node);
//! - retention (config drift may turn it on) only ever drops a prefix: on a node that ran with
//!   it, offsets below the lowest one it reports are excused from the checks above, nothing else;
//!
//! and in a cluster:
//! - at most one leader per term (what each node's Raft reported);
//! - what any node served at an offset is what every other node served there (the checks above
//!   look at every node's reads, streams and replica scan);
//! - the replicas converge: after the liveness phase every node reports the same committed
//!   offset and holds the same records (value bytes, term, timestamp) below it, terms never
//!   decrease along a replica's log, and every acknowledged record is intact on a majority.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::history::{
    AdminOutcome, Decoded, History, Incarnation, ReadOutcome, Stored, TopicEvent,
    TopicProduceOutcome, TopicScan,
};
use crate::value::ValueId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

fn violation(invariant: &'static str, detail: String) -> Violation {
    Violation { invariant, detail }
}

pub const ACKED_LOST: &str = "acked-record-lost";
pub const OFFSET_REUSED: &str = "offset-maps-to-two-values";
pub const DUPLICATED: &str = "value-at-two-offsets";
pub const GAP: &str = "offsets-not-dense";
pub const STREAM_ORDER: &str = "stream-out-of-order";
pub const BAD_VALUE: &str = "corrupt-or-unknown-value-served";
pub const DATA_LOSS: &str = "data-loss-without-bit-flip";
pub const TIME_BACKWARDS: &str = "timestamps-decrease";
pub const LIVENESS: &str = "liveness";
pub const TWO_LEADERS: &str = "two-leaders-in-a-term";
pub const DIVERGED: &str = "replicas-diverge";
pub const TERMS_BACKWARDS: &str = "terms-decrease";
pub const ACKED_MINORITY: &str = "acked-record-not-on-a-majority";
pub const REFUSED_STORED: &str = "refused-record-stored";
pub const TOPIC_REAPPEARED: &str = "deleted-topic-reappeared";
pub const TOPIC_LOST: &str = "created-topic-lost";
pub const TOPIC_HALF: &str = "topic-half-exists";
pub const KEY_PARTITION: &str = "key-changed-partition";

/// Every invariant, in a fixed order.
pub fn check(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    out.extend(check_values_intact(history));
    out.extend(check_offsets_unique(history));
    out.extend(check_values_once(history));
    out.extend(check_data_loss_only_flipped(history));
    out.extend(check_acked_durable(history));
    out.extend(check_dense(history));
    out.extend(check_stream_order(history));
    out.extend(check_timestamps(history));
    out.extend(check_one_leader_per_term(history));
    out.extend(check_replicas_converge(history));
    out.extend(check_terms_monotonic(history));
    out.extend(check_acked_on_majority(history));
    out.extend(check_liveness(history));
    out.extend(check_refused_not_stored(history));
    out.extend(check_topic_lifecycle(history));
    out.extend(check_topic_keys(history));
    out.extend(check_topic_partitions(history));
    out
}

/// A value whose produce was refused (INVALID_ARGUMENT) is nowhere in the log, on a standalone
/// node (raw calls: one attempt each). In a cluster the client's retries make it a `Maybe`.
pub fn check_refused_not_stored(history: &History) -> Vec<Violation> {
    if history.at_least_once {
        return Vec::new();
    }
    let refused: BTreeSet<ValueId> = history.refused().collect();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (node, offset, decoded) in observed_values(history) {
        if let Ok(id) = decoded {
            if refused.contains(id) && seen.insert(*id) {
                out.push(violation(
                    REFUSED_STORED,
                    format!("{id} was refused (INVALID_ARGUMENT), yet node {node} served it at offset {offset}"),
                ));
            }
        }
    }
    out
}

/// Every (node, offset, decoded value) that a read, a stream or the final scan returned.
fn observed_values(history: &History) -> Vec<(usize, u64, &Decoded)> {
    let mut out = Vec::new();
    for read in &history.reads {
        if let ReadOutcome::Value(decoded) = &read.outcome {
            out.push((read.node, read.offset, decoded));
        }
    }
    for session in &history.sessions {
        out.extend(session.delivered.iter().map(|(o, d)| (session.node, *o, d)));
    }
    if let Some(scan) = &history.final_scan {
        for (offset, outcome) in &scan.entries {
            if let ReadOutcome::Value(decoded) = outcome {
                out.push((scan.node, *offset, decoded));
            }
        }
    }
    for replica in &history.replicas {
        for (offset, stored) in &replica.entries {
            if let Stored::Record { id, .. } = stored {
                out.push((replica.node, *offset, id));
            }
        }
    }
    out
}

/// Nothing served fails its checksum, and every value served was produced by the workload.
pub fn check_values_intact(history: &History) -> Vec<Violation> {
    let produced: BTreeSet<ValueId> = history.produces.iter().map(|p| p.id).collect();
    let mut out = Vec::new();
    for (node, offset, decoded) in observed_values(history) {
        match decoded {
            Err(reason) => out.push(violation(
                BAD_VALUE,
                format!("node {node} served offset {offset} with a damaged value: {reason}"),
            )),
            Ok(id) if !produced.contains(id) => out.push(violation(
                BAD_VALUE,
                format!("node {node} served offset {offset} = {id}, which was never produced"),
            )),
            Ok(_) => {}
        }
    }
    out
}

/// Each offset maps to one value: acknowledgements and every read agree.
pub fn check_offsets_unique(history: &History) -> Vec<Violation> {
    let mut first: BTreeMap<u64, (ValueId, String)> = BTreeMap::new();
    let mut out = Vec::new();
    let mut see = |offset: u64, id: ValueId, source: String| match first.get(&offset) {
        None => {
            first.insert(offset, (id, source));
        }
        Some((seen, seen_source)) if *seen != id => out.push(violation(
            OFFSET_REUSED,
            format!("offset {offset} held {seen} ({seen_source}) and {id} ({source})"),
        )),
        Some(_) => {}
    };
    for (id, offset) in history.acked() {
        see(offset, id, "acknowledged".into());
    }
    for (node, offset, decoded) in observed_values(history) {
        if let Ok(id) = decoded {
            see(offset, *id, format!("read on node {node}"));
        }
    }
    out
}

/// Each value is at one offset at most (a produce that failed or timed out may have been appended,
/// but only once), and an acknowledged value is nowhere but where it was acknowledged.
///
/// With at-least-once produces (a cluster client retries a write whose outcome it does not know
/// on the next leader), an unacknowledged value may be stored several times, and an acknowledged
/// one may also sit *before* its acknowledged offset (an earlier attempt of the same call that
/// committed after all); never after it, since the acknowledged attempt was the last.
pub fn check_values_once(history: &History) -> Vec<Violation> {
    let acked: BTreeMap<ValueId, u64> = history.acked().collect();
    let mut offsets: BTreeMap<ValueId, BTreeSet<u64>> = BTreeMap::new();
    for (id, offset) in history.acked() {
        offsets.entry(id).or_default().insert(offset);
    }
    for (_, offset, decoded) in observed_values(history) {
        if let Ok(id) = decoded {
            offsets.entry(*id).or_default().insert(offset);
        }
    }
    offsets
        .into_iter()
        .filter(|(_, at)| at.len() > 1)
        .filter(|(id, at)| {
            if !history.at_least_once {
                return true;
            }
            match acked.get(id) {
                // Only the acknowledged offset and copies before it are allowed.
                Some(acked_at) => at.last() != Some(acked_at),
                None => false,
            }
        })
        .map(|(id, at)| {
            let detail = match acked.get(&id) {
                Some(acked_at) if history.at_least_once => format!(
                    "{id} is at offsets {at:?}, acknowledged at {acked_at}: a copy after it"
                ),
                _ => format!("{id} is at offsets {at:?}"),
            };
            violation(DUPLICATED, detail)
        })
        .collect()
}

/// DATA_LOSS is answered only for offsets a bit flip may have damaged.
pub fn check_data_loss_only_flipped(history: &History) -> Vec<Violation> {
    let mut losses: Vec<(usize, u64, &str)> = history
        .reads
        .iter()
        .filter(|r| r.outcome == ReadOutcome::DataLoss)
        .map(|r| (r.node, r.offset, "a read"))
        .collect();
    if let Some(scan) = &history.final_scan {
        losses.extend(
            (scan.entries.iter())
                .filter(|(_, outcome)| **outcome == ReadOutcome::DataLoss)
                .map(|(offset, _)| (scan.node, *offset, "the final scan")),
        );
    }
    for replica in &history.replicas {
        losses.extend(
            (replica.entries.iter())
                .filter(|(_, stored)| **stored == Stored::DataLoss)
                .map(|(offset, _)| (replica.node, *offset, "its replica scan")),
        );
    }
    losses
        .into_iter()
        .filter(|(node, offset, _)| !history.flipped(*node, *offset))
        .map(|(node, offset, source)| {
            violation(
                DATA_LOSS,
                format!("node {node} answered DATA_LOSS for offset {offset} to {source}, and no bit flip touched it"),
            )
        })
        .collect()
}

/// Every acknowledged value is in the final scan at its offset (DATA_LOSS accepted where a bit
/// flip may have damaged it; another value there is `check_offsets_unique`'s to report).
pub fn check_acked_durable(history: &History) -> Vec<Violation> {
    let Some(scan) = &history.final_scan else {
        let acked = history.acked().count();
        return vec![violation(
            ACKED_LOST,
            format!("no final scan: {acked} acknowledged records unchecked"),
        )];
    };
    let mut out = Vec::new();
    for (id, offset) in history.acked() {
        if history.retained_away(scan.node, scan.lowest_offset, offset) {
            continue;
        }
        let fine = match scan.entries.get(&offset) {
            Some(ReadOutcome::Value(_)) => true,
            Some(ReadOutcome::DataLoss) => history.flipped(scan.node, offset),
            Some(ReadOutcome::Error(_)) | None => false,
        };
        if !fine {
            let found = match scan.entries.get(&offset) {
                Some(outcome) => format!("{outcome:?}"),
                None if offset >= scan.next_offset => {
                    format!("nothing: the log ends at {}", scan.next_offset)
                }
                None => "nothing".into(),
            };
            out.push(violation(
                ACKED_LOST,
                format!("{id} acknowledged at offset {offset}; the final scan found {found}"),
            ));
        }
    }
    out
}

/// The final scan read every offset in [lowest, next): a value, or DATA_LOSS where a flip was.
pub fn check_dense(history: &History) -> Vec<Violation> {
    let Some(scan) = &history.final_scan else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut missing: Vec<u64> = Vec::new();
    for offset in scan.lowest_offset..scan.next_offset {
        match scan.entries.get(&offset) {
            Some(ReadOutcome::Value(_)) | Some(ReadOutcome::DataLoss) => {}
            Some(ReadOutcome::Error(_)) | None => missing.push(offset),
        }
    }
    if let Some(first) = missing.first() {
        out.push(violation(
            GAP,
            format!(
                "{} offsets in [{}, {}) did not read back (first: {first}: {:?})",
                missing.len(),
                scan.lowest_offset,
                scan.next_offset,
                scan.entries.get(first)
            ),
        ));
    }
    if let Some(beyond) = scan.entries.keys().find(|o| **o >= scan.next_offset) {
        out.push(violation(
            GAP,
            format!(
                "the final scan read offset {beyond}, at or past the log's end {}",
                scan.next_offset
            ),
        ));
    }
    out
}

/// A consuming stream delivers start, start+1, ... with no gap, repeat or reordering.
pub fn check_stream_order(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    for session in &history.sessions {
        let expected_offsets = session.start..;
        let first_wrong = (expected_offsets.zip(&session.delivered))
            .find(|(expected, (offset, _))| offset != expected);
        if let Some((expected, (offset, _))) = first_wrong {
            out.push(violation(
                STREAM_ORDER,
                format!(
                    "consumer {} stream from {} on node {}: expected offset {expected}, got {offset}",
                    session.consumer, session.start, session.node
                ),
            ));
        }
    }
    out
}

/// Append times never decrease along the log (the engine clamps a clock that went backwards).
pub fn check_timestamps(history: &History) -> Vec<Violation> {
    let Some(scan) = &history.final_scan else {
        return Vec::new();
    };
    let times: Vec<(&u64, &i64)> = scan.timestamps_ms.iter().collect();
    (times.windows(2))
        .find(|pair| pair[1].1 < pair[0].1)
        .map(|pair| {
            violation(
                TIME_BACKWARDS,
                format!(
                    "offset {} has timestamp {} ms, before offset {}'s {} ms",
                    pair[1].0, pair[1].1, pair[0].0, pair[0].1
                ),
            )
        })
        .into_iter()
        .collect()
}

/// No two nodes were leader of the same term: neither two nodes in state Leader with the same
/// term, nor a node naming another leader for a term than the one that led it.
pub fn check_one_leader_per_term(history: &History) -> Vec<Violation> {
    // term -> leader id -> who said so (first sample)
    let mut claims: BTreeMap<u64, BTreeMap<u64, String>> = BTreeMap::new();
    for sample in &history.raft_samples {
        let mut claim = |leader: u64, how: String| {
            (claims.entry(sample.term).or_default())
                .entry(leader)
                .or_insert(how);
        };
        if sample.leader {
            claim(
                sample.id,
                format!("node {} (id {}) was leader", sample.node, sample.id),
            );
        }
        if let Some(leader) = sample.current_leader {
            claim(
                leader,
                format!(
                    "node {} (id {}) named id {leader} its leader",
                    sample.node, sample.id
                ),
            );
        }
    }
    claims
        .into_iter()
        .filter(|(_, leaders)| leaders.len() > 1)
        .map(|(term, leaders)| {
            let said: Vec<&str> = leaders.values().map(String::as_str).collect();
            violation(
                TWO_LEADERS,
                format!(
                    "term {term} had leaders {:?}: {}",
                    leaders.keys().collect::<Vec<_>>(),
                    said.join("; ")
                ),
            )
        })
        .collect()
}

/// In a cluster: every node reported the same committed offset after the liveness phase, read
/// back every offset below it, and holds the same record (value bytes, term, timestamp) at each
/// offset as every other node (DATA_LOSS is `check_data_loss_only_flipped`'s to judge).
pub fn check_replicas_converge(history: &History) -> Vec<Violation> {
    if history.nodes <= 1 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let scanned: BTreeSet<usize> = history.replicas.iter().map(|r| r.node).collect();
    let missing: Vec<usize> = (0..history.nodes)
        .filter(|n| !scanned.contains(n))
        .collect();
    if !missing.is_empty() {
        out.push(violation(
            DIVERGED,
            format!("no replica scan of nodes {missing:?}"),
        ));
    }
    let committed: BTreeSet<u64> = history.replicas.iter().map(|r| r.committed).collect();
    if committed.len() > 1 {
        let each: Vec<String> = (history.replicas.iter())
            .map(|r| format!("node {}: {}", r.node, r.committed))
            .collect();
        out.push(violation(
            DIVERGED,
            format!(
                "the replicas committed different offsets: {}",
                each.join(", ")
            ),
        ));
    }
    for replica in &history.replicas {
        let unread: Vec<u64> = (replica.lowest_offset..replica.committed)
            .filter(|o| !replica.entries.contains_key(o))
            .collect();
        if let Some(first) = unread.first() {
            out.push(violation(
                DIVERGED,
                format!(
                    "node {} did not read back {} of its offsets in [{}, {}) (first: {first})",
                    replica.node,
                    unread.len(),
                    replica.lowest_offset,
                    replica.committed
                ),
            ));
        }
    }
    // offset -> (stored record, first node holding it)
    let mut first: BTreeMap<u64, (&Stored, usize)> = BTreeMap::new();
    let mut differing: BTreeMap<(usize, usize), Vec<u64>> = BTreeMap::new();
    for replica in &history.replicas {
        for (offset, stored) in &replica.entries {
            if *stored == Stored::DataLoss {
                continue;
            }
            match first.get(offset) {
                None => {
                    first.insert(*offset, (stored, replica.node));
                }
                Some((seen, node)) if *seen != stored => differing
                    .entry((*node, replica.node))
                    .or_default()
                    .push(*offset),
                Some(_) => {}
            }
        }
    }
    for ((a, b), offsets) in differing {
        let o = offsets[0];
        let at = |node: usize| {
            (history.replicas.iter())
                .find(|r| r.node == node)
                .and_then(|r| r.entries.get(&o))
                .map(|s| format!("{s:?}"))
                .unwrap_or_default()
        };
        out.push(violation(
            DIVERGED,
            format!(
                "nodes {a} and {b} hold different records at {} offsets (first: {o}: {} vs {})",
                offsets.len(),
                at(a),
                at(b)
            ),
        ));
    }
    out
}

/// Terms never decrease along a replica's log (a Raft log is ordered by term).
pub fn check_terms_monotonic(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    for replica in &history.replicas {
        let terms: Vec<(u64, u64)> = (replica.entries.iter())
            .filter_map(|(offset, stored)| match stored {
                Stored::Record { term, .. } => Some((*offset, *term)),
                Stored::DataLoss => None,
            })
            .collect();
        if let Some(pair) = terms.windows(2).find(|pair| pair[1].1 < pair[0].1) {
            out.push(violation(
                TERMS_BACKWARDS,
                format!(
                    "node {}: offset {} has term {}, after offset {} with term {}",
                    replica.node, pair[1].0, pair[1].1, pair[0].0, pair[0].1
                ),
            ));
        }
    }
    out
}

/// In a cluster: every acknowledged value is intact, at its offset, on a majority of the nodes
/// (the others may have lost it to a bit flip, and say DATA_LOSS).
pub fn check_acked_on_majority(history: &History) -> Vec<Violation> {
    if history.nodes <= 1 || history.replicas.is_empty() {
        return Vec::new();
    }
    let majority = history.nodes / 2 + 1;
    let mut short: Vec<(ValueId, u64, usize)> = Vec::new();
    for (id, offset) in history.acked() {
        let holding = (history.replicas.iter())
            .filter(|r| {
                history.retained_away(r.node, r.lowest_offset, offset)
                    || matches!(r.entries.get(&offset), Some(Stored::Record { id: Ok(at), .. }) if *at == id)
            })
            .count();
        if holding < majority {
            short.push((id, offset, holding));
        }
    }
    short
        .first()
        .map(|(id, offset, holding)| {
            violation(
                ACKED_MINORITY,
                format!(
                    "{} acknowledged records are intact on fewer than {majority} of {} nodes (first: {id} at offset {offset}, on {holding})",
                    short.len(),
                    history.nodes
                ),
            )
        })
        .into_iter()
        .collect()
}

pub fn check_liveness(history: &History) -> Vec<Violation> {
    (history.liveness_failures.iter())
        .map(|failure| violation(LIVENESS, failure.clone()))
        .collect()
}

// --- named topics (standalone): the history's `topics` events ---

/// What the acknowledged admin calls say about one topic name, at some point of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NameState {
    /// Never created, or its deletion was acknowledged: it must not exist.
    Absent,
    /// Its creation (incarnation) was acknowledged and no delete was tried since: it exists,
    /// with one of `counts` partitions (more than one while an alter's outcome is unknown).
    Present {
        incarnation: Incarnation,
        counts: BTreeSet<u32>,
    },
    /// A create whose outcome is unknown: it exists with `partitions` partitions, or not at all.
    Creating {
        incarnation: Incarnation,
        partitions: u32,
    },
    /// A delete whose outcome is unknown.
    Unknown,
}

fn counts_text(counts: &BTreeSet<u32>) -> String {
    let each: Vec<String> = counts.iter().map(u32::to_string).collect();
    each.join(" or ")
}

/// Replays the topic events, calling `each` with the state of the event's name before it.
fn replay_topics(
    history: &History,
    mut each: impl FnMut(&BTreeMap<String, NameState>, usize, &TopicEvent),
) -> BTreeMap<String, NameState> {
    let mut states: BTreeMap<String, NameState> = BTreeMap::new();
    for (index, event) in history.topics.iter().enumerate() {
        each(&states, index, event);
        match event {
            TopicEvent::Create {
                name,
                incarnation,
                partitions,
                outcome,
            } => match outcome {
                AdminOutcome::Acked => {
                    let counts = BTreeSet::from([*partitions]);
                    let incarnation = *incarnation;
                    states.insert(
                        name.clone(),
                        NameState::Present {
                            incarnation,
                            counts,
                        },
                    );
                }
                AdminOutcome::Maybe(_) => {
                    let (incarnation, partitions) = (*incarnation, *partitions);
                    let state = NameState::Creating {
                        incarnation,
                        partitions,
                    };
                    states.insert(name.clone(), state);
                }
                AdminOutcome::Refused(_) => {}
            },
            TopicEvent::Delete { name, outcome } => match outcome {
                AdminOutcome::Acked => {
                    states.insert(name.clone(), NameState::Absent);
                }
                AdminOutcome::Maybe(_) => {
                    states.insert(name.clone(), NameState::Unknown);
                }
                AdminOutcome::Refused(_) => {}
            },
            TopicEvent::Alter {
                name,
                partitions,
                outcome,
            } => {
                if let Some(NameState::Present { counts, .. }) = states.get_mut(name) {
                    match outcome {
                        AdminOutcome::Acked => *counts = BTreeSet::from([*partitions]),
                        AdminOutcome::Maybe(_) => {
                            counts.insert(*partitions);
                        }
                        AdminOutcome::Refused(_) => {}
                    }
                }
            }
            _ => {}
        }
    }
    states
}

fn state_of<'a>(states: &'a BTreeMap<String, NameState>, name: &str) -> &'a NameState {
    states.get(name).unwrap_or(&NameState::Absent)
}

/// A deleted topic never reappears (DescribeTopic, ListTopics and produce never find it once
/// its deletion was acknowledged, until it is created again); an acknowledged one never
/// disappears unless deleted; and neither ever half exists: DescribeTopic and ListTopics show
/// the partition count the acknowledged calls set (one of them while an alter's outcome is
/// unknown), with every partition, and a create whose outcome is unknown shows all its
/// partitions or NOT_FOUND.
pub fn check_topic_lifecycle(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    let used: BTreeSet<&str> = (history.topics.iter())
        .filter_map(|e| match e {
            TopicEvent::Create { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    replay_topics(history, |states, index, event| {
        match event {
        TopicEvent::Describe { name, found } => {
            let state = state_of(states, name);
            match (found, state) {
                (None, NameState::Present { incarnation, .. }) => out.push(violation(
                    TOPIC_LOST,
                    format!("topic {name} (incarnation {incarnation}) was created and not deleted, yet DescribeTopic (event {index}) said NOT_FOUND"),
                )),
                (Some(_), NameState::Absent) => out.push(violation(
                    TOPIC_REAPPEARED,
                    format!("topic {name} was deleted (or never created), yet DescribeTopic (event {index}) found it"),
                )),
                (Some((count, described)), _) if count != described => out.push(violation(
                    TOPIC_HALF,
                    format!("DescribeTopic (event {index}) says topic {name} has {count} partitions but described {described}"),
                )),
                (Some((count, _)), NameState::Present { counts, .. }) if !counts.contains(count) => out.push(violation(
                    TOPIC_HALF,
                    format!("DescribeTopic (event {index}) says topic {name} has {count} partitions, not {}", counts_text(counts)),
                )),
                (Some((count, _)), NameState::Creating { partitions, .. }) if count != partitions => out.push(violation(
                    TOPIC_HALF,
                    format!("topic {name}'s create (of {partitions} partitions) has an unknown outcome, and DescribeTopic (event {index}) shows {count}"),
                )),
                _ => {}
            }
        }
        TopicEvent::List { topics } => {
            for name in &used {
                let listed = topics.get(*name);
                match (listed, state_of(states, name)) {
                    (None, NameState::Present { incarnation, .. }) => out.push(violation(
                        TOPIC_LOST,
                        format!("topic {name} (incarnation {incarnation}) was created and not deleted, yet ListTopics (event {index}) does not list it"),
                    )),
                    (Some(_), NameState::Absent) => out.push(violation(
                        TOPIC_REAPPEARED,
                        format!("topic {name} was deleted, yet ListTopics (event {index}) lists it"),
                    )),
                    (Some(count), NameState::Present { counts, .. }) if !counts.contains(count) => out.push(violation(
                        TOPIC_HALF,
                        format!("ListTopics (event {index}) says topic {name} has {count} partitions, not {}", counts_text(counts)),
                    )),
                    (Some(count), NameState::Creating { partitions, .. }) if count != partitions => out.push(violation(
                        TOPIC_HALF,
                        format!("topic {name}'s create (of {partitions} partitions) has an unknown outcome, and ListTopics (event {index}) shows {count}"),
                    )),
                    _ => {}
                }
            }
        }
        TopicEvent::Produce {
            name,
            outcome: TopicProduceOutcome::Acked { partition, .. },
            ..
        } if *state_of(states, name) == NameState::Absent => out.push(violation(
            TOPIC_REAPPEARED,
            format!("topic {name} was deleted, yet a produce to it was acknowledged (partition {partition}, event {index})"),
        )),
        _ => {}
    }
    });
    out
}

/// A keyed produce (no partition named) goes to `partition_for_key(key, count)` for the
/// partition count in force (either count while an alter's outcome is unknown); a produce that
/// names a partition goes there.
pub fn check_topic_keys(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    replay_topics(history, |states, index, event| {
        let TopicEvent::Produce {
            name,
            key,
            partition: asked,
            outcome: TopicProduceOutcome::Acked { partition, .. },
            ..
        } = event
        else {
            return;
        };
        if let Some(asked) = asked {
            if asked != partition {
                out.push(violation(
                    KEY_PARTITION,
                    format!("a produce to topic {name} partition {asked} was acknowledged in partition {partition} (event {index})"),
                ));
            }
            return;
        }
        if key.is_empty() {
            return;
        }
        if let NameState::Present { counts, .. } = state_of(states, name) {
            let fits: BTreeSet<u32> = (counts.iter())
                .map(|count| loghouse::topic::partition_for_key(key, *count))
                .collect();
            if !fits.contains(partition) {
                out.push(violation(
                    KEY_PARTITION,
                    format!(
                        "key {:?} of topic {name} ({} partitions) belongs in partition {fits:?}, yet a produce went to {partition} (event {index})",
                        String::from_utf8_lossy(key),
                        counts_text(counts)
                    ),
                ));
            }
        }
    });
    out
}

/// One partition of one incarnation of a topic.
type PartitionKey = (Incarnation, u32);

fn where_text(name: &str, (incarnation, partition): PartitionKey, offset: u64) -> String {
    format!("topic {name} (incarnation {incarnation}) partition {partition} offset {offset}")
}

/// Per partition of every topic incarnation, what the default topic's checks hold for its log:
/// no acknowledged record lost (the partitions of a topic that still exists at the end are read
/// whole; a deleted incarnation's records are legitimately gone), an offset's value never
/// changes, offsets dense from 0 (the workload's topics have no retention), a value at one
/// offset at most and only in the incarnation it was produced to, nothing damaged, unknown or
/// refused served, and no DATA_LOSS (no bit is flipped in a named topic's files).
pub fn check_topic_partitions(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    // value -> (name, incarnation) it was produced to
    let mut produced: BTreeMap<ValueId, (&str, Incarnation)> = BTreeMap::new();
    let mut refused: BTreeSet<ValueId> = BTreeSet::new();
    let mut acked: Vec<(ValueId, &str, PartitionKey, u64)> = Vec::new();
    // (name, partition key, offset, outcome, source)
    let mut observed: Vec<(&str, PartitionKey, u64, &ReadOutcome, &'static str)> = Vec::new();
    let mut scans: BTreeMap<PartitionKey, &TopicScan> = BTreeMap::new();
    for event in &history.topics {
        match event {
            TopicEvent::Produce {
                name,
                incarnation,
                values,
                outcome,
                ..
            } => {
                for (i, id) in values.iter().enumerate() {
                    produced.insert(*id, (name.as_str(), *incarnation));
                    match outcome {
                        TopicProduceOutcome::Acked { partition, first } => acked.push((
                            *id,
                            name.as_str(),
                            (*incarnation, *partition),
                            first + i as u64,
                        )),
                        TopicProduceOutcome::Refused(_) => {
                            refused.insert(*id);
                        }
                        TopicProduceOutcome::Maybe(_) => {}
                    }
                }
            }
            TopicEvent::Read(read) => observed.push((
                read.name.as_str(),
                (read.incarnation, read.partition),
                read.offset,
                &read.outcome,
                "a read",
            )),
            TopicEvent::Scan(scan) => {
                let key = (scan.incarnation, scan.partition);
                scans.insert(key, scan);
                for (offset, outcome) in &scan.entries {
                    observed.push((scan.name.as_str(), key, *offset, outcome, "the final scan"));
                }
            }
            _ => {}
        }
    }
    let mut at: BTreeMap<(PartitionKey, u64), (ValueId, String)> = BTreeMap::new();
    let mut offsets_of: BTreeMap<ValueId, BTreeSet<(PartitionKey, u64)>> = BTreeMap::new();
    for (id, name, key, offset) in &acked {
        at.insert((*key, *offset), (*id, "acknowledged".into()));
        offsets_of.entry(*id).or_default().insert((*key, *offset));
        let _ = name;
    }
    let mut bad_reported = BTreeSet::new();
    for (name, key, offset, outcome, source) in &observed {
        let place = where_text(name, *key, *offset);
        let id = match outcome {
            ReadOutcome::Value(Ok(id)) => *id,
            ReadOutcome::Value(Err(reason)) => {
                out.push(violation(
                    BAD_VALUE,
                    format!("{source} of {place} got a damaged value: {reason}"),
                ));
                continue;
            }
            ReadOutcome::DataLoss => {
                out.push(violation(
                    DATA_LOSS,
                    format!("{source} of {place} got DATA_LOSS, and no bit is flipped in a topic's files"),
                ));
                continue;
            }
            ReadOutcome::Error(_) => continue,
        };
        match produced.get(&id) {
            None => out.push(violation(
                BAD_VALUE,
                format!("{source} of {place} got {id}, which was never produced"),
            )),
            Some((to_name, to_incarnation))
                if (*to_name, *to_incarnation) != (*name, key.0) && bad_reported.insert(id) =>
            {
                out.push(violation(
                    BAD_VALUE,
                    format!("{source} of {place} got {id}, which was produced to topic {to_name} (incarnation {to_incarnation})"),
                ))
            }
            _ => {}
        }
        if refused.contains(&id) && bad_reported.insert(id) {
            out.push(violation(
                REFUSED_STORED,
                format!("{id} was refused (INVALID_ARGUMENT), yet {source} of {place} got it"),
            ));
        }
        offsets_of.entry(id).or_default().insert((*key, *offset));
        match at.get(&(*key, *offset)) {
            None => {
                at.insert((*key, *offset), (id, source.to_string()));
            }
            Some((seen, seen_source)) if *seen != id => out.push(violation(
                OFFSET_REUSED,
                format!("{place} held {seen} ({seen_source}) and {id} ({source})"),
            )),
            Some(_) => {}
        }
    }
    for (id, places) in &offsets_of {
        if places.len() > 1 {
            out.push(violation(
                DUPLICATED,
                format!("{id} (a named topic's value) is at (incarnation, partition), offset {places:?}"),
            ));
        }
    }
    let end = replay_topics(history, |_, _, _| {});
    for (id, name, key, offset) in &acked {
        let place = where_text(name, *key, *offset);
        match scans.get(key) {
            Some(scan) => {
                if !matches!(scan.entries.get(offset), Some(ReadOutcome::Value(_))) {
                    let found = match scan.entries.get(offset) {
                        Some(outcome) => format!("{outcome:?}"),
                        None => format!("nothing: the partition ends at {}", scan.next_offset),
                    };
                    out.push(violation(
                        ACKED_LOST,
                        format!("{id} acknowledged at {place}; the final scan found {found}"),
                    ));
                }
            }
            None => {
                let alive = matches!(end.get(*name), Some(NameState::Present { incarnation, .. }) if *incarnation == key.0);
                if alive {
                    out.push(violation(
                        ACKED_LOST,
                        format!("{id} acknowledged at {place}; the topic still exists but that partition was not read at the end"),
                    ));
                }
            }
        }
    }
    for ((incarnation, partition), scan) in &scans {
        let name = &scan.name;
        let missing: Vec<u64> = (0..scan.next_offset)
            .filter(|o| {
                !matches!(
                    scan.entries.get(o),
                    Some(ReadOutcome::Value(_)) | Some(ReadOutcome::DataLoss)
                )
            })
            .collect();
        if scan.lowest_offset != 0 || !missing.is_empty() {
            out.push(violation(
                GAP,
                format!(
                    "topic {name} (incarnation {incarnation}) partition {partition}: lowest offset {}, {} offsets in [0, {}) did not read back (first: {:?})",
                    scan.lowest_offset,
                    missing.len(),
                    scan.next_offset,
                    missing.first()
                ),
            ));
        }
        if let Some(beyond) = scan.entries.keys().find(|o| **o >= scan.next_offset) {
            out.push(violation(
                GAP,
                format!(
                    "topic {name} (incarnation {incarnation}) partition {partition}: the final scan read offset {beyond}, past its end {}",
                    scan.next_offset
                ),
            ));
        }
    }
    out
}
