//! Unit tests of the simulation's pure parts (checker, values, fault planner) on hand-made
//! histories: they run in plain `cargo test`, without the simulator.

// The modules are shared with the seed runner, which uses parts these tests do not.
#![allow(dead_code)]

#[path = "checker.rs"]
mod checker;
#[path = "faults.rs"]
mod faults;
#[path = "history.rs"]
mod history;
#[path = "rng.rs"]
mod rng;
#[path = "value.rs"]
mod value;

use std::collections::BTreeMap;

use checker::*;
use history::*;
use value::ValueId;

fn id(producer: u32, seq: u64) -> ValueId {
    ValueId { producer, seq }
}

fn acked(id: ValueId, offset: u64) -> Produce {
    Produce {
        id,
        phase: Phase::Safety,
        outcome: ProduceOutcome::Acked { offset },
    }
}

fn maybe(id: ValueId) -> Produce {
    Produce {
        id,
        phase: Phase::Safety,
        outcome: ProduceOutcome::Maybe {
            reason: "timeout".into(),
        },
    }
}

fn scan(next_offset: u64, entries: &[(u64, ReadOutcome)]) -> FinalScan {
    let timestamps_ms = (0..next_offset)
        .map(|o| (o, 1_000 + o as i64 / 2))
        .collect();
    FinalScan {
        node: 0,
        lowest_offset: 0,
        next_offset,
        entries: entries.iter().cloned().collect::<BTreeMap<_, _>>(),
        timestamps_ms,
    }
}

fn value_at(id: ValueId) -> ReadOutcome {
    ReadOutcome::Value(Ok(id))
}

/// Three acknowledged values at 0..3, one maybe-appended value at 3, all read back.
fn good_history() -> History {
    History {
        produces: vec![
            acked(id(0, 0), 0),
            acked(id(0, 1), 1),
            acked(id(1, 0), 2),
            maybe(id(1, 1)),
            maybe(id(1, 2)),
        ],
        reads: vec![Read {
            node: 0,
            offset: 1,
            outcome: value_at(id(0, 1)),
        }],
        sessions: vec![StreamSession {
            consumer: 0,
            node: 0,
            start: 1,
            delivered: vec![(1, Ok(id(0, 1))), (2, Ok(id(1, 0)))],
            end: "idle".into(),
        }],
        final_scan: Some(scan(
            4,
            &[
                (0, value_at(id(0, 0))),
                (1, value_at(id(0, 1))),
                (2, value_at(id(1, 0))),
                (3, value_at(id(1, 1))),
            ],
        )),
        ..History::default()
    }
}

fn invariants(violations: &[Violation]) -> Vec<&'static str> {
    violations.iter().map(|v| v.invariant).collect()
}

#[test]
fn a_consistent_history_passes() {
    assert_eq!(check(&good_history()), vec![]);
}

#[test]
fn an_acknowledged_record_missing_from_the_end_of_the_log_is_lost() {
    let mut h = good_history();
    h.final_scan = Some(scan(2, &[(0, value_at(id(0, 0))), (1, value_at(id(0, 1)))]));
    assert_eq!(invariants(&check(&h)), vec![ACKED_LOST]);
}

#[test]
fn no_final_scan_means_nothing_acknowledged_was_shown_durable() {
    let mut h = good_history();
    h.final_scan = None;
    assert_eq!(invariants(&check(&h)), vec![ACKED_LOST]);
}

#[test]
fn an_offset_holding_two_values_is_caught_from_reads_and_acks() {
    let mut h = good_history();
    h.reads.push(Read {
        node: 0,
        offset: 0,
        outcome: value_at(id(1, 2)),
    });
    let found = invariants(&check(&h));
    assert!(found.contains(&OFFSET_REUSED), "{found:?}");
}

#[test]
fn a_maybe_value_appended_twice_is_caught() {
    let mut h = good_history();
    h.final_scan = Some(scan(
        5,
        &[
            (0, value_at(id(0, 0))),
            (1, value_at(id(0, 1))),
            (2, value_at(id(1, 0))),
            (3, value_at(id(1, 1))),
            (4, value_at(id(1, 1))),
        ],
    ));
    assert_eq!(invariants(&check(&h)), vec![DUPLICATED]);
}

#[test]
fn a_hole_in_the_final_scan_is_a_gap() {
    let mut h = good_history();
    let mut entries = h.final_scan.clone().unwrap().entries;
    entries.insert(3, ReadOutcome::Error("OutOfRange".into()));
    h.final_scan = Some(FinalScan {
        entries,
        ..h.final_scan.clone().unwrap()
    });
    assert_eq!(invariants(&check(&h)), vec![GAP]);
}

#[test]
fn a_stream_that_skips_or_repeats_an_offset_is_out_of_order() {
    for delivered in [
        vec![(1, Ok(id(0, 1))), (3, Ok(id(1, 1)))],
        vec![(1, Ok(id(0, 1))), (1, Ok(id(0, 1)))],
    ] {
        let mut h = good_history();
        h.sessions[0].delivered = delivered;
        assert_eq!(invariants(&check(&h)), vec![STREAM_ORDER]);
    }
}

#[test]
fn a_stream_that_starts_elsewhere_than_asked_is_out_of_order() {
    let mut h = good_history();
    h.sessions[0].start = 0;
    assert_eq!(invariants(&check(&h)), vec![STREAM_ORDER]);
}

#[test]
fn a_damaged_or_unknown_value_served_is_caught() {
    let mut h = good_history();
    h.reads.push(Read {
        node: 0,
        offset: 2,
        outcome: ReadOutcome::Value(Err("checksum mismatch".into())),
    });
    assert_eq!(invariants(&check(&h)), vec![BAD_VALUE]);
    let mut h = good_history();
    h.sessions[0].delivered.push((3, Ok(id(7, 7))));
    let found = invariants(&check(&h));
    assert!(found.contains(&BAD_VALUE), "{found:?}");
}

#[test]
fn data_loss_is_accepted_only_where_a_bit_was_flipped() {
    let mut h = good_history();
    let mut entries = h.final_scan.clone().unwrap().entries;
    entries.insert(1, ReadOutcome::DataLoss);
    h.final_scan = Some(FinalScan {
        entries,
        ..h.final_scan.clone().unwrap()
    });
    h.reads.push(Read {
        node: 0,
        offset: 1,
        outcome: ReadOutcome::DataLoss,
    });
    let found = invariants(&check(&h));
    assert_eq!(found, vec![DATA_LOSS, DATA_LOSS, ACKED_LOST], "{found:?}");

    h.flips.push(Flip {
        node: 0,
        offsets: Some(1..2),
    });
    assert_eq!(check(&h), vec![]);

    // A flip elsewhere, or on another node, does not excuse it.
    h.flips = vec![
        Flip {
            node: 0,
            offsets: Some(2..4),
        },
        Flip {
            node: 1,
            offsets: None,
        },
    ];
    assert!(!check(&h).is_empty());
}

#[test]
fn a_flip_never_excuses_a_wrong_value() {
    let mut h = good_history();
    h.flips.push(Flip {
        node: 0,
        offsets: None,
    });
    h.reads.push(Read {
        node: 0,
        offset: 2,
        outcome: value_at(id(0, 0)),
    });
    let found = invariants(&check(&h));
    assert!(
        found.contains(&OFFSET_REUSED) && found.contains(&DUPLICATED),
        "{found:?}"
    );
}

#[test]
fn a_timestamp_going_backwards_along_the_log_is_caught() {
    let mut h = good_history();
    let mut final_scan = h.final_scan.clone().unwrap();
    final_scan.timestamps_ms.insert(2, 999);
    h.final_scan = Some(final_scan);
    assert_eq!(invariants(&check(&h)), vec![TIME_BACKWARDS]);
}

#[test]
fn a_missed_liveness_bound_is_reported() {
    let mut h = good_history();
    h.liveness_failures
        .push("stream reached only 2 of 4".into());
    assert_eq!(invariants(&check(&h)), vec![LIVENESS]);
}

#[test]
fn values_round_trip_and_any_damage_is_detected() {
    for (i, pad) in [0u16, 1, 7, 500, 1002].into_iter().enumerate() {
        let v = id(i as u32, 1_000 + i as u64);
        let bytes = value::encode(v, pad);
        assert_eq!(bytes.len(), value::encoded_len(pad));
        assert_eq!(value::decode(&bytes), Ok(v));
        for position in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[position] ^= 1 << (position % 8);
            assert!(
                value::decode(&damaged).is_err(),
                "flip at {position} of {} undetected",
                bytes.len()
            );
        }
        assert!(value::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}

#[test]
fn the_fault_plan_is_a_function_of_the_seed_and_stays_in_bounds() {
    let intensity = faults::Intensity {
        mean_gap_ms: 300,
        bit_flips: true,
        disk_nodes: vec![0],
    };
    let a = faults::plan(&mut rng::Rng::new(7), 10_000, 1, &intensity);
    let b = faults::plan(&mut rng::Rng::new(7), 10_000, 1, &intensity);
    let c = faults::plan(&mut rng::Rng::new(8), 10_000, 1, &intensity);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.len() > 10, "{} faults", a.len());
    assert!(a.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    let kinds: std::collections::BTreeSet<&str> = (0..20)
        .flat_map(|seed| faults::plan(&mut rng::Rng::new(seed), 10_000, 1, &intensity))
        .map(|p| p.fault.kind())
        .collect();
    assert_eq!(kinds.len(), 9, "{kinds:?}");
    let without = faults::Intensity {
        bit_flips: false,
        ..intensity
    };
    assert!((0..20)
        .flat_map(|seed| faults::plan(&mut rng::Rng::new(seed), 10_000, 1, &without))
        .all(|p| p.fault.kind() != "bit-flip"));
}

#[test]
fn a_cluster_plan_has_the_cluster_faults_and_keeps_disk_faults_on_a_minority() {
    use faults::Fault;
    let intensity = faults::Intensity {
        mean_gap_ms: 300,
        bit_flips: true,
        disk_nodes: vec![1, 3],
    };
    let plans: Vec<faults::Planned> = (0..40)
        .flat_map(|seed| faults::plan(&mut rng::Rng::new(seed), 10_000, 5, &intensity))
        .collect();
    let kinds: std::collections::BTreeSet<&str> = plans.iter().map(|p| p.fault.kind()).collect();
    assert_eq!(kinds.len(), 14, "{kinds:?}");
    for planned in &plans {
        match &planned.fault {
            Fault::IoErrors { node, .. } | Fault::BitFlip { node, .. } => {
                assert!([1, 3].contains(node), "{planned:?}")
            }
            Fault::Partition { side, .. } => {
                assert!((1..=2).contains(&side.len()), "a minority: {planned:?}");
                assert!(side.windows(2).all(|w| w[0] < w[1] && w[1] < 5));
            }
            Fault::OneWay { from, to, .. } => assert!(from != to && *to < 5, "{planned:?}"),
            Fault::Crash { node, .. } | Fault::Pause { node, .. } => assert!(*node < 5),
            _ => {}
        }
    }
    // No disk node: no disk fault at all; no flips unless asked for.
    let none = faults::Intensity {
        disk_nodes: vec![],
        ..intensity.clone()
    };
    assert!((0..20)
        .flat_map(|seed| faults::plan(&mut rng::Rng::new(seed), 10_000, 3, &none))
        .all(|p| !matches!(p.fault, Fault::IoErrors { .. } | Fault::BitFlip { .. })));
    let without = faults::Intensity {
        bit_flips: false,
        ..intensity
    };
    assert!((0..20)
        .flat_map(|seed| faults::plan(&mut rng::Rng::new(seed), 10_000, 5, &without))
        .all(|p| p.fault.kind() != "bit-flip"));
}

// ---- cluster invariants ----

fn stored(id: ValueId, term: u64, timestamp_ms: i64) -> Stored {
    Stored::Record {
        id: Ok(id),
        digest: id.seq ^ (u64::from(id.producer) << 32),
        term,
        timestamp_ms,
    }
}

/// `good_history` on a 3-node cluster: every replica holds the same 4 records (terms 1, 1, 2, 2),
/// node 0 (Raft id 1) led term 1 and node 1 (id 2) term 2.
fn good_cluster_history() -> History {
    let mut h = good_history();
    h.nodes = 3;
    h.at_least_once = true;
    let log: BTreeMap<u64, Stored> = [
        (0, stored(id(0, 0), 1, 1_000)),
        (1, stored(id(0, 1), 1, 1_000)),
        (2, stored(id(1, 0), 2, 1_001)),
        (3, stored(id(1, 1), 2, 1_001)),
    ]
    .into_iter()
    .collect();
    h.replicas = (0..3)
        .map(|node| ReplicaScan {
            node,
            lowest_offset: 0,
            committed: 4,
            entries: log.clone(),
        })
        .collect();
    let sample = |node: usize, term: u64, leader: bool, current_leader: Option<u64>| RaftSample {
        node,
        id: node as u64 + 1,
        term,
        leader,
        current_leader,
    };
    h.raft_samples = vec![
        sample(0, 1, true, Some(1)),
        sample(1, 1, false, Some(1)),
        sample(2, 1, false, None),
        sample(1, 2, false, None),
        sample(1, 2, true, Some(2)),
        sample(0, 2, false, Some(2)),
    ];
    h
}

#[test]
fn a_consistent_cluster_history_passes() {
    assert_eq!(check(&good_cluster_history()), vec![]);
}

#[test]
fn two_leaders_in_one_term_are_caught_whoever_reports_them() {
    let mut h = good_cluster_history();
    h.raft_samples.push(RaftSample {
        node: 2,
        id: 3,
        term: 2,
        leader: true,
        current_leader: Some(3),
    });
    assert_eq!(invariants(&check(&h)), vec![TWO_LEADERS]);
    // A follower naming another leader for a term than the one that led it.
    let mut h = good_cluster_history();
    h.raft_samples.push(RaftSample {
        node: 2,
        id: 3,
        term: 1,
        leader: false,
        current_leader: Some(2),
    });
    assert_eq!(invariants(&check(&h)), vec![TWO_LEADERS]);
    // The same node leading again in a later term is fine.
    let mut h = good_cluster_history();
    h.raft_samples.push(RaftSample {
        node: 0,
        id: 1,
        term: 3,
        leader: true,
        current_leader: Some(1),
    });
    assert_eq!(check(&h), vec![]);
}

#[test]
fn an_offset_read_differently_on_two_nodes_is_caught() {
    let mut h = good_cluster_history();
    h.reads.push(Read {
        node: 2,
        offset: 1,
        outcome: value_at(id(1, 1)),
    });
    let found = invariants(&check(&h));
    assert!(found.contains(&OFFSET_REUSED), "{found:?}");
    // A replica holding another value at an offset: the replicas diverge, and the offset maps
    // to two values.
    let mut h = good_cluster_history();
    h.replicas[2].entries.insert(0, stored(id(1, 1), 1, 1_000));
    let found = invariants(&check(&h));
    assert!(
        found.contains(&OFFSET_REUSED) && found.contains(&DIVERGED),
        "{found:?}"
    );
}

#[test]
fn replicas_that_differ_in_term_timestamp_or_length_diverge() {
    let mut h = good_cluster_history();
    h.replicas[1].entries.insert(2, stored(id(1, 0), 1, 1_001));
    assert_eq!(invariants(&check(&h)), vec![DIVERGED]);
    let mut h = good_cluster_history();
    h.replicas[1].entries.insert(3, stored(id(1, 1), 2, 1_002));
    assert_eq!(invariants(&check(&h)), vec![DIVERGED]);
    // Shorter: a different committed offset.
    let mut h = good_cluster_history();
    h.replicas[2].committed = 3;
    h.replicas[2].entries.remove(&3);
    assert_eq!(invariants(&check(&h)), vec![DIVERGED]);
    // An offset below the committed one that did not read back.
    let mut h = good_cluster_history();
    h.replicas[2].entries.remove(&1);
    assert_eq!(invariants(&check(&h)), vec![DIVERGED]);
    // A node not scanned at all.
    let mut h = good_cluster_history();
    h.replicas.pop();
    assert_eq!(invariants(&check(&h)), vec![DIVERGED]);
}

#[test]
fn terms_going_backwards_along_a_replica_are_caught() {
    let mut h = good_cluster_history();
    for replica in &mut h.replicas {
        replica.entries.insert(3, stored(id(1, 1), 1, 1_001));
    }
    assert_eq!(invariants(&check(&h)), vec![TERMS_BACKWARDS; 3]);
}

#[test]
fn data_loss_on_a_replica_is_excused_only_by_a_flip_there_and_only_on_a_minority() {
    let mut h = good_cluster_history();
    h.replicas[2].entries.insert(1, Stored::DataLoss);
    assert_eq!(invariants(&check(&h)), vec![DATA_LOSS]);
    h.flips.push(Flip {
        node: 2,
        offsets: Some(0..2),
    });
    assert_eq!(check(&h), vec![]);
    // Two of three replicas lost an acknowledged record (even to flips): not on a majority.
    h.replicas[1].entries.insert(1, Stored::DataLoss);
    h.flips.push(Flip {
        node: 1,
        offsets: None,
    });
    assert_eq!(invariants(&check(&h)), vec![ACKED_MINORITY]);
}

#[test]
fn at_least_once_allows_copies_of_unacknowledged_values_and_earlier_copies_of_acknowledged_ones() {
    // p1#1 (maybe) stored twice, and p1#0 (acknowledged at 2) also at 1 from an earlier attempt.
    let mut h = good_cluster_history();
    h.produces = vec![
        acked(id(0, 0), 0),
        acked(id(1, 0), 2),
        maybe(id(1, 1)),
        maybe(id(0, 1)),
    ];
    let log: BTreeMap<u64, Stored> = [
        (0, stored(id(0, 0), 1, 1_000)),
        (1, stored(id(1, 0), 1, 1_000)),
        (2, stored(id(1, 0), 2, 1_001)),
        (3, stored(id(1, 1), 2, 1_001)),
        (4, stored(id(1, 1), 2, 1_001)),
    ]
    .into_iter()
    .collect();
    for replica in &mut h.replicas {
        replica.entries = log.clone();
        replica.committed = 5;
    }
    h.reads.clear();
    h.sessions.clear();
    h.final_scan = Some(scan(
        5,
        &[
            (0, value_at(id(0, 0))),
            (1, value_at(id(1, 0))),
            (2, value_at(id(1, 0))),
            (3, value_at(id(1, 1))),
            (4, value_at(id(1, 1))),
        ],
    ));
    assert_eq!(check(&h), vec![]);
    // Without at-least-once (a standalone node), both are duplicates.
    h.at_least_once = false;
    assert_eq!(invariants(&check(&h)), vec![DUPLICATED, DUPLICATED]);
    // A copy of an acknowledged value AFTER its acknowledged offset is never fine.
    h.at_least_once = true;
    for replica in &mut h.replicas {
        replica.entries.insert(4, stored(id(0, 0), 2, 1_001));
    }
    let found = invariants(&check(&h));
    assert!(found.contains(&DUPLICATED), "{found:?}");
}

fn refused(id: ValueId) -> Produce {
    Produce {
        id,
        phase: Phase::Safety,
        outcome: ProduceOutcome::Refused {
            reason: "InvalidArgument".into(),
        },
    }
}

#[test]
fn a_refused_value_is_not_acknowledged_and_must_not_be_stored_on_a_standalone_node() {
    let mut h = good_history();
    h.produces.push(refused(id(2, 0)));
    assert_eq!(check(&h), vec![], "a clean refusal is no loss");
    // The log stored it anyway (at the end): refused-record-stored.
    let mut entries: Vec<(u64, ReadOutcome)> = h
        .final_scan
        .as_ref()
        .unwrap()
        .entries
        .clone()
        .into_iter()
        .collect();
    entries.push((4, value_at(id(2, 0))));
    h.final_scan = Some(scan(5, &entries));
    assert_eq!(invariants(&check(&h)), vec![REFUSED_STORED]);
    // In a cluster an earlier attempt of the call may have been stored: a maybe.
    h.at_least_once = true;
    assert_eq!(check_refused_not_stored(&h), vec![]);
}

#[test]
fn retention_excuses_only_offsets_below_the_lowest_on_a_node_that_ran_with_it() {
    let mut h = good_history();
    // Retention dropped offset 0: the scan starts at 1.
    let mut dropped = scan(
        4,
        &[
            (1, value_at(id(0, 1))),
            (2, value_at(id(1, 0))),
            (3, value_at(id(1, 1))),
        ],
    );
    dropped.lowest_offset = 1;
    h.final_scan = Some(dropped.clone());
    assert_eq!(
        invariants(&check(&h)),
        vec![ACKED_LOST],
        "no retention: a loss"
    );
    h.retention_nodes.insert(0);
    assert_eq!(check(&h), vec![]);
    // Retention never excuses a hole above the lowest offset.
    dropped.entries.remove(&2);
    h.final_scan = Some(dropped);
    let found = invariants(&check(&h));
    assert!(
        found.contains(&ACKED_LOST) && found.contains(&GAP),
        "{found:?}"
    );
}

// --- named topics ---

fn tid(seq: u64) -> ValueId {
    id(3000, seq)
}

fn create(name: &str, incarnation: u64, partitions: u32, outcome: AdminOutcome) -> TopicEvent {
    TopicEvent::Create {
        name: name.into(),
        incarnation,
        partitions,
        outcome,
    }
}

fn delete(name: &str, outcome: AdminOutcome) -> TopicEvent {
    TopicEvent::Delete {
        name: name.into(),
        outcome,
    }
}

fn describe(name: &str, found: Option<(u32, u32)>) -> TopicEvent {
    TopicEvent::Describe {
        name: name.into(),
        found,
    }
}

fn tproduce(
    name: &str,
    incarnation: u64,
    key: &str,
    values: &[ValueId],
    outcome: TopicProduceOutcome,
) -> TopicEvent {
    TopicEvent::Produce {
        name: name.into(),
        incarnation,
        key: key.as_bytes().to_vec(),
        partition: None,
        values: values.to_vec(),
        outcome,
    }
}

fn tacked(partition: u32, first: u64) -> TopicProduceOutcome {
    TopicProduceOutcome::Acked { partition, first }
}

fn tscan(name: &str, incarnation: u64, partition: u32, values: &[ValueId]) -> TopicEvent {
    TopicEvent::Scan(TopicScan {
        name: name.into(),
        incarnation,
        partition,
        lowest_offset: 0,
        next_offset: values.len() as u64,
        entries: (values.iter().enumerate())
            .map(|(o, v)| (o as u64, value_at(*v)))
            .collect(),
    })
}

fn key_partition(key: &str, count: u32) -> u32 {
    loghouse::topic::partition_for_key(key.as_bytes(), count)
}

/// Topic "t" created with 3 partitions (first attempt timed out, the retry answered), a keyed
/// batch and an unkeyed value, then deleted and re-created (incarnation 2, 1 partition), one
/// value at offset 0 again; "u" created, deleted; the end: "t" read whole.
fn good_topics() -> History {
    let k = key_partition("user-1", 3);
    let other = (k + 1) % 3;
    let mut h = good_history();
    h.topics = vec![
        create("t", 1, 3, AdminOutcome::Maybe("timeout".into())),
        describe("t", Some((3, 3))),
        create("t", 1, 3, AdminOutcome::Acked),
        tproduce("t", 1, "user-1", &[tid(0), tid(1)], tacked(k, 0)),
        tproduce("t", 1, "", &[tid(2)], tacked(other, 0)),
        tproduce(
            "t",
            1,
            "",
            &[tid(3)],
            TopicProduceOutcome::Maybe("timeout".into()),
        ),
        TopicEvent::Read(TopicRead {
            name: "t".into(),
            incarnation: 1,
            partition: k,
            offset: 1,
            outcome: value_at(tid(1)),
        }),
        create("u", 2, 1, AdminOutcome::Acked),
        TopicEvent::List {
            topics: BTreeMap::from([("t".into(), 3), ("u".into(), 1)]),
        },
        delete("u", AdminOutcome::Acked),
        delete("t", AdminOutcome::Maybe("Unavailable".into())),
        delete("t", AdminOutcome::Acked),
        describe("t", None),
        create("t", 3, 1, AdminOutcome::Acked),
        tproduce("t", 3, "user-1", &[tid(4)], tacked(0, 0)),
        TopicEvent::List {
            topics: BTreeMap::from([("t".into(), 1)]),
        },
        describe("u", None),
        describe("t", Some((1, 1))),
        tscan("t", 3, 0, &[tid(4)]),
    ];
    h
}

#[test]
fn a_consistent_topic_history_passes() {
    assert_eq!(check(&good_topics()), vec![]);
}

#[test]
fn a_re_created_topic_starts_at_offset_0_and_its_old_records_are_gone() {
    // Incarnation 1's records were never scanned (deleted): not lost; offset 0 of partition 0
    // holds different values in the two incarnations: not a reuse.
    let mut h = good_topics();
    h.topics
        .insert(3, tproduce("t", 1, "", &[tid(9)], tacked(0, 0)));
    assert_eq!(check(&h), vec![]);
}

#[test]
fn an_acknowledged_topic_record_missing_from_its_partition_is_lost() {
    let mut h = good_topics();
    let last = h.topics.len() - 1;
    h.topics[last] = tscan("t", 3, 0, &[]);
    assert_eq!(invariants(&check_topic_partitions(&h)), vec![ACKED_LOST]);
}

#[test]
fn a_partition_not_read_at_the_end_of_a_live_topic_loses_its_records() {
    let mut h = good_topics();
    h.topics.pop();
    assert_eq!(invariants(&check_topic_partitions(&h)), vec![ACKED_LOST]);
}

#[test]
fn a_topic_offset_whose_value_changed_is_caught() {
    let mut h = good_topics();
    let last = h.topics.len() - 1;
    h.topics[last] = tscan("t", 3, 0, &[id(0, 0)]);
    let found = invariants(&check_topic_partitions(&h));
    assert!(found.contains(&OFFSET_REUSED), "{found:?}");
}

#[test]
fn a_gap_in_a_partition_is_caught() {
    let mut h = good_topics();
    let last = h.topics.len() - 1;
    if let TopicEvent::Scan(scan) = &mut h.topics[last] {
        scan.next_offset = 2;
    }
    assert_eq!(invariants(&check_topic_partitions(&h)), vec![GAP]);
}

#[test]
fn a_deleted_incarnations_record_in_the_re_created_topic_is_caught() {
    let mut h = good_topics();
    let last = h.topics.len() - 1;
    h.topics[last] = tscan("t", 3, 0, &[tid(4), tid(2)]);
    let found = invariants(&check_topic_partitions(&h));
    assert!(found.contains(&BAD_VALUE), "{found:?}");
}

#[test]
fn a_topic_value_in_two_partitions_is_caught() {
    let mut h = good_topics();
    h.topics.push(tscan("t", 3, 1, &[tid(4)]));
    let found = invariants(&check_topic_partitions(&h));
    assert!(found.contains(&DUPLICATED), "{found:?}");
}

#[test]
fn data_loss_in_a_topic_is_caught() {
    let mut h = good_topics();
    if let TopicEvent::Read(read) = &mut h.topics[6] {
        read.outcome = ReadOutcome::DataLoss;
    }
    assert_eq!(invariants(&check_topic_partitions(&h)), vec![DATA_LOSS]);
}

#[test]
fn a_key_in_the_wrong_partition_is_caught() {
    let mut h = good_topics();
    let k = key_partition("user-1", 3);
    h.topics[3] = tproduce("t", 1, "user-1", &[tid(0), tid(1)], tacked((k + 1) % 3, 0));
    assert_eq!(invariants(&check_topic_keys(&h)), vec![KEY_PARTITION]);
}

#[test]
fn a_key_may_follow_either_count_while_an_alter_is_unknown() {
    // Find a key that moves when 3 partitions become 5.
    let key = (0..100)
        .map(|i| format!("user-{i}"))
        .find(|k| key_partition(k, 3) != key_partition(k, 5))
        .expect("some key moves");
    let alter = |outcome| TopicEvent::Alter {
        name: "t".into(),
        partitions: 5,
        outcome,
    };
    let produce = |p| tproduce("t", 1, &key, &[tid(50)], tacked(p, 0));
    let mut h = History {
        topics: vec![
            create("t", 1, 3, AdminOutcome::Acked),
            alter(AdminOutcome::Maybe("timeout".into())),
            produce(key_partition(&key, 3)),
            produce(key_partition(&key, 5)),
            alter(AdminOutcome::Acked),
            produce(key_partition(&key, 5)),
        ],
        ..History::default()
    };
    assert_eq!(check_topic_keys(&h), vec![]);
    // Once the alter was acknowledged, the old count's partition is wrong.
    h.topics.push(produce(key_partition(&key, 3)));
    assert_eq!(invariants(&check_topic_keys(&h)), vec![KEY_PARTITION]);
}

#[test]
fn a_deleted_topic_that_reappears_is_caught() {
    for reappears in [
        describe("u", Some((1, 1))),
        TopicEvent::List {
            topics: BTreeMap::from([("t".into(), 1), ("u".into(), 1)]),
        },
        tproduce("u", 2, "", &[tid(60)], tacked(0, 0)),
    ] {
        let mut h = good_topics();
        h.topics.push(reappears);
        assert_eq!(
            invariants(&check_topic_lifecycle(&h)),
            vec![TOPIC_REAPPEARED]
        );
    }
}

#[test]
fn a_created_topic_that_disappears_is_caught() {
    for lost in [
        describe("t", None),
        TopicEvent::List {
            topics: BTreeMap::new(),
        },
    ] {
        let mut h = good_topics();
        h.topics.push(lost);
        assert_eq!(invariants(&check_topic_lifecycle(&h)), vec![TOPIC_LOST]);
    }
}

#[test]
fn a_half_created_topic_is_caught() {
    // An acknowledged topic missing a partition.
    let mut h = good_topics();
    h.topics.push(describe("t", Some((1, 0))));
    assert_eq!(invariants(&check_topic_lifecycle(&h)), vec![TOPIC_HALF]);
    // A create with an unknown outcome shows fewer partitions than it asked for.
    let mut h = History {
        topics: vec![
            create("v", 1, 4, AdminOutcome::Maybe("timeout".into())),
            describe("v", Some((2, 2))),
        ],
        ..History::default()
    };
    assert_eq!(invariants(&check_topic_lifecycle(&h)), vec![TOPIC_HALF]);
    // ... or not at all, or all of them: fine.
    h.topics[1] = describe("v", None);
    h.topics.push(describe("v", Some((4, 4))));
    assert_eq!(check_topic_lifecycle(&h), vec![]);
}
