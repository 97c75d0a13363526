//! The Raft store (src/raft/store.rs): openraft's storage test suite on real files and on the
//! simulated disk, crash-at-every-step runs against a model, the Raft-index <-> client-offset
//! translation, snapshots, purge, the startup clamps, and a single-node Raft over the store.

mod log_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use log_support::FaultDisk;
use loghouse::io::{Disk, ManualClock, SimDisk, SimDiskFaults, StdDisk};
use loghouse::log::LogConfig;
use loghouse::raft::log_store::LogStore;
use loghouse::raft::state_machine::StateMachine;
use loghouse::raft::store::{EntryMeta, SnapshotBody, Store, StoreConfig};
use loghouse::raft::types::{Entry, LogId, ProduceAck, ProduceBatch, StorageError, TypeConfig};
use loghouse::raft::ProducerSeq;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    BasicNode, CommittedLeaderId, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageHelper, StoredMembership, Vote,
};

// ---- helpers ----

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_000_000))
}

/// Tiny segments, so a handful of entries spans several segments of both logs.
fn config(dir: &Path) -> StoreConfig {
    let mut data = LogConfig::new("ignored");
    data.segment_bytes_max = 2048;
    data.index_bytes_max = 16 * 32;
    data.record_bytes_max = 512;
    let mut c = StoreConfig::new(dir, data);
    c.entries.segment_bytes_max = 1024;
    c.entries.index_bytes_max = 16 * 8;
    c.entries.record_bytes_max = 512;
    c
}

fn open(disk: Arc<dyn Disk>, dir: &Path) -> Store {
    Store::open(disk, clock(), config(dir)).expect("open store")
}

fn lid(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Blank,
    }
}

fn members(ids: &[u64]) -> Membership<u64, BasicNode> {
    let voters: BTreeSet<u64> = ids.iter().copied().collect();
    let nodes: BTreeMap<u64, BasicNode> = ids
        .iter()
        .map(|&id| (id, BasicNode::new(format!("10.0.0.{id}:7400"))))
        .collect();
    Membership::new(vec![voters], nodes)
}

fn membership(term: u64, index: u64, ids: &[u64]) -> Entry {
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Membership(members(ids)),
    }
}

/// A Normal entry of `count` records of distinct contents, `len` bytes each.
fn normal(term: u64, index: u64, count: usize, len: usize) -> Entry {
    let values = (0..count)
        .map(|i| {
            let tag = format!("t{term}i{index}r{i}:");
            let mut v = tag.into_bytes();
            v.resize(len.max(v.len()), b'a' + (i % 26) as u8);
            Bytes::from(v)
        })
        .collect();
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Normal(ProduceBatch {
            values,
            timestamp_ms: 1_000_000 + index as i64 * 10,
            producer: (index % 2 == 0).then_some(ProducerSeq { id: 7, seq: index }),
        }),
    }
}

fn count_of(entry: &Entry) -> u64 {
    match &entry.payload {
        EntryPayload::Normal(b) => b.values.len() as u64,
        _ => 0,
    }
}

async fn all_entries(ls: &mut LogStore) -> Vec<Entry> {
    ls.try_get_log_entries(0..).await.expect("read entries")
}

/// The two logs agree: entry records chain their client ranges densely and the data log ends
/// exactly where the last entry (or the entry base) says.
fn assert_reconciled(store: &Store) {
    let entries = store.entry_log();
    let (lo, next) = (entries.lowest_offset(), entries.next_offset());
    let mut prev_end: Option<u64> = None;
    for i in lo..next {
        let record = entries.read(i).expect("entry record");
        let meta: EntryMeta = postcard::from_bytes(&record.value).expect("entry meta");
        if let Some(prev) = prev_end {
            assert_eq!(
                meta.data_end - u64::from(meta.count),
                prev,
                "entry {i} does not start where {} ended",
                i - 1
            );
        }
        prev_end = Some(meta.data_end);
    }
    let boundary = prev_end.unwrap_or(store.hard_state().entry_base.data_end);
    assert_eq!(
        store.data_log().next_offset(),
        boundary,
        "data log and entry log disagree"
    );
}

// ---- openraft's suite ----

struct StdBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for StdBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(Arc::new(StdDisk), dir.path());
        Ok((dir, store.log_store(), store.state_machine()))
    }
}

struct SimBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, SimDisk> for SimBuilder {
    async fn build(&self) -> Result<(SimDisk, LogStore, StateMachine), StorageError> {
        let disk = SimDisk::new(7);
        let store = open(Arc::new(disk.clone()), Path::new("/node"));
        Ok((disk, store.log_store(), store.state_machine()))
    }
}

/// Every case of openraft's suite applies: it sometimes applies entries the log does not hold
/// (the store then follows the applied boundary), appends into an empty store at index > 0 and
/// purges past the log's end (both handled, see store.rs).
#[test]
fn openraft_suite_on_real_files() {
    Suite::<TypeConfig, LogStore, StateMachine, StdBuilder, tempfile::TempDir>::test_all(
        StdBuilder,
    )
    .expect("suite");
}

#[test]
fn openraft_suite_on_the_sim_disk() {
    Suite::<TypeConfig, LogStore, StateMachine, SimBuilder, SimDisk>::test_all(SimBuilder)
        .expect("suite");
}

// ---- translation ----

#[tokio::test]
async fn mixed_entries_map_to_dense_client_offsets_and_rebuild_identically() {
    let disk = SimDisk::new(1);
    let dir = Path::new("/n");
    let store = open(Arc::new(disk.clone()), dir);
    let mut ls = store.log_store();
    let entries = vec![
        blank(1, 0),
        membership(1, 1, &[1, 2, 3]),
        normal(1, 2, 3, 100),
        normal(1, 3, 0, 0),
        blank(2, 4),
        normal(2, 5, 7, 300),
        membership(2, 6, &[1, 2, 3, 4]),
        normal(2, 7, 1, 500),
        normal(2, 8, 12, 40),
    ];
    ls.blocking_append(entries[..3].to_vec()).await.unwrap();
    ls.blocking_append(entries[3..].to_vec()).await.unwrap();
    assert_reconciled(&store);

    // Client offsets are dense from 0: the data log holds exactly the Normal records in order.
    let data = store.data_log();
    let values: Vec<Bytes> = entries
        .iter()
        .flat_map(|e| match &e.payload {
            EntryPayload::Normal(b) => b.values.clone(),
            _ => vec![],
        })
        .collect();
    assert_eq!(
        (data.lowest_offset(), data.next_offset()),
        (0, values.len() as u64)
    );
    for (offset, value) in values.iter().enumerate() {
        let record = data.read(offset as u64).unwrap();
        assert_eq!(&record.value, value);
        assert_eq!(record.kind, 0);
    }
    // Terms ride along on the data records.
    assert_eq!(data.read(0).unwrap().term, 1);
    assert_eq!(data.read(values.len() as u64 - 1).unwrap().term, 2);

    // Rebuilt identically: from the tail cache, then from disk after a reopen.
    assert_eq!(all_entries(&mut ls).await, entries);
    assert_eq!(ls.try_get_log_entries(5..7).await.unwrap(), entries[5..7]);
    store.close().unwrap();
    let store = open(Arc::new(disk.clone()), dir);
    let mut ls = store.log_store();
    assert_eq!(all_entries(&mut ls).await, entries);
    assert_eq!(ls.try_get_log_entries(2..=2).await.unwrap(), entries[2..3]);
    let limited = ls.limited_get_log_entries(0, 9).await.unwrap();
    assert!(!limited.is_empty());
    assert_eq!(limited[..], entries[..limited.len()]);

    // Apply answers where each batch landed and moves the committed watch.
    let mut sm = store.state_machine();
    let mut committed = store.committed();
    let acks = sm.apply(entries.clone()).await.unwrap();
    let mut offset = 0;
    for (entry, ack) in entries.iter().zip(&acks) {
        let count = count_of(entry);
        assert_eq!(
            *ack,
            ProduceAck {
                first_offset: offset,
                count: count as u32,
                duplicate: false
            },
            "entry {}",
            entry.log_id
        );
        offset += count;
    }
    assert!(committed.has_changed().unwrap());
    assert_eq!(*committed.borrow_and_update(), values.len() as u64);
    assert_eq!(store.committed_offset(), values.len() as u64);
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(lid(2, 8)));
    assert_eq!(
        membership,
        StoredMembership::new(Some(lid(2, 6)), members(&[1, 2, 3, 4]))
    );
}

#[tokio::test]
async fn limited_reads_stop_at_the_byte_budget_but_return_at_least_one_entry() {
    let disk = SimDisk::new(2);
    let mut cfg = config(Path::new("/n"));
    cfg.read_bytes_max = 1000;
    cfg.tail_cache_bytes_max = 0; // from disk
    let store = Store::open(Arc::new(disk), clock(), cfg).unwrap();
    let mut ls = store.log_store();
    let entries: Vec<Entry> = (0..10).map(|i| normal(1, i, 3, 200)).collect();
    ls.blocking_append(entries.clone()).await.unwrap();
    let got = ls.limited_get_log_entries(0, 10).await.unwrap();
    assert!(!got.is_empty() && got.len() < 10, "got {}", got.len());
    assert_eq!(got[..], entries[..got.len()]);
    let one = ls.limited_get_log_entries(9, 10).await.unwrap();
    assert_eq!(one, entries[9..]);
    assert_eq!(all_entries(&mut ls).await, entries);
}

/// Replicated entries are bounded by the format's hard limit only: the configured
/// `record_bytes_max` bounds client produces on the node that accepts them. A follower
/// restarted with a lower limit still takes (and serves) what its leader accepted.
#[tokio::test]
async fn replicated_records_are_bounded_by_the_hard_limit_not_the_configured_one() {
    let disk = SimDisk::new(3);
    let dir = Path::new("/n");
    let store = open(Arc::new(disk.clone()), dir);
    let mut ls = store.log_store();
    ls.blocking_append([normal(1, 0, 1, 500)]).await.unwrap();
    drop((ls, store));
    disk.crash();

    // Restarted with a limit below what it already holds and what the leader sends.
    let mut lower = config(dir);
    lower.data.record_bytes_max = 100;
    let store = Store::open(Arc::new(disk.clone()), clock(), lower).unwrap();
    let mut ls = store.log_store();
    ls.blocking_append([normal(1, 1, 2, 600)]).await.unwrap();
    let got = all_entries(&mut ls).await;
    assert_eq!(got, vec![normal(1, 0, 1, 500), normal(1, 1, 2, 600)]);

    // Past the format's limit: refused, and the store still takes writes (not poisoned).
    let huge = Entry {
        log_id: lid(1, 2),
        payload: EntryPayload::Normal(ProduceBatch {
            values: vec![Bytes::from(vec![
                0u8;
                loghouse::log::RECORD_BYTES_LIMIT as usize
                    + 1
            ])],
            timestamp_ms: 1_000_000,
            producer: None,
        }),
    };
    let err = ls.blocking_append([huge]).await.unwrap_err();
    assert!(err.to_string().contains("format's limit"), "{err}");
    ls.blocking_append([normal(1, 2, 1, 100)]).await.unwrap();
    assert_eq!(all_entries(&mut ls).await.len(), 3);
    drop((ls, store));

    // And with a higher limit again, everything is still there.
    let mut higher = config(dir);
    higher.data.record_bytes_max = 1000;
    let store = Store::open(Arc::new(disk), clock(), higher).unwrap();
    assert_eq!(all_entries(&mut store.log_store()).await.len(), 3);
    assert_reconciled(&store);
}

// ---- truncate, purge ----

#[tokio::test]
async fn truncate_drops_entries_and_their_records_and_a_crash_never_resurrects_them() {
    let disk = SimDisk::new(4);
    let dir = Path::new("/n");
    let store = open(Arc::new(disk.clone()), dir);
    let mut ls = store.log_store();
    let old: Vec<Entry> = vec![
        normal(1, 0, 2, 100),
        blank(1, 1),
        normal(1, 2, 3, 300),
        blank(1, 3),
        normal(1, 4, 4, 300),
    ];
    ls.blocking_append(old.clone()).await.unwrap();
    ls.truncate(lid(1, 3)).await.unwrap();
    assert_eq!(all_entries(&mut ls).await, old[..3]);
    assert_eq!(store.data_log().next_offset(), 5);
    assert_reconciled(&store);
    // The truncation is durable before truncate returns.
    drop((ls, store));
    disk.crash();
    let store = open(Arc::new(disk.clone()), dir);
    let mut ls = store.log_store();
    assert_eq!(all_entries(&mut ls).await, old[..3]);
    assert_reconciled(&store);
    // Truncating everything (including a Blank whose data range is empty) leaves an empty log
    // that appends go on from.
    ls.truncate(lid(1, 0)).await.unwrap();
    assert!(all_entries(&mut ls).await.is_empty());
    assert_eq!(store.data_log().next_offset(), 0);
    drop((ls, store));
    disk.crash();
    let store = open(Arc::new(disk.clone()), dir);
    let mut ls = store.log_store();
    assert_eq!(ls.get_log_state().await.unwrap().last_log_id, None);
    let new = vec![blank(2, 0), normal(2, 1, 2, 50)];
    ls.blocking_append(new.clone()).await.unwrap();
    assert_eq!(all_entries(&mut ls).await, new);
    assert_reconciled(&store);
}

#[tokio::test]
async fn purge_hides_entries_deletes_whole_segments_and_survives_a_crash() {
    let disk = SimDisk::new(5);
    let dir = Path::new("/n");
    let store = open(Arc::new(disk.clone()), dir);
    let mut ls = store.log_store();
    let entries: Vec<Entry> = (0..20).map(|i| normal(1, i, 2, 400)).collect();
    ls.blocking_append(entries.clone()).await.unwrap();
    let segments_before = store.data_log().info().segment_count;
    ls.purge(lid(1, 9)).await.unwrap();
    assert_eq!(all_entries(&mut ls).await, entries[10..]);
    assert!(store.data_log().info().segment_count < segments_before);
    assert!(store.data_log().lowest_offset() > 0);
    assert!(store.data_log().lowest_offset() <= 20); // entry 10's records are kept
    let state = ls.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(lid(1, 9)));
    assert_eq!(state.last_log_id, Some(lid(1, 19)));
    drop((ls, store));
    disk.crash();
    let store = open(Arc::new(disk.clone()), dir);
    let mut ls = store.log_store();
    assert_eq!(ls.get_log_state().await.unwrap(), state);
    assert_eq!(all_entries(&mut ls).await, entries[10..]);
    assert_reconciled(&store);
    // Purging everything present keeps the last entry's position for the next append.
    ls.purge(lid(1, 19)).await.unwrap();
    assert!(all_entries(&mut ls).await.is_empty());
    ls.blocking_append([blank(2, 20)]).await.unwrap();
    assert_eq!(all_entries(&mut ls).await, vec![blank(2, 20)]);
    assert_reconciled(&store);
}

#[tokio::test]
async fn a_purge_past_the_log_is_not_persisted_until_the_next_append() {
    let disk = SimDisk::new(6);
    let dir = Path::new("/n");
    let store = open(Arc::new(disk.clone()), dir);
    let mut ls = store.log_store();
    let entries: Vec<Entry> = (0..5).map(|i| normal(1, i, 1, 100)).collect();
    ls.blocking_append(entries.clone()).await.unwrap();
    ls.purge(lid(3, 50)).await.unwrap();
    let state = ls.get_log_state().await.unwrap();
    assert_eq!(
        (state.last_purged_log_id, state.last_log_id),
        (Some(lid(3, 50)), Some(lid(3, 50)))
    );
    assert!(all_entries(&mut ls).await.is_empty());
    // A crash before the snapshot arrives keeps the whole log: it is what re-apply needs.
    drop((ls, store));
    disk.crash();
    let store = open(Arc::new(disk.clone()), dir);
    let mut ls = store.log_store();
    assert_eq!(all_entries(&mut ls).await, entries);
    // Without a crash, the next append (at purge + 1) restarts the entry log there.
    ls.purge(lid(3, 50)).await.unwrap();
    ls.blocking_append([normal(3, 51, 2, 10)]).await.unwrap();
    assert_eq!(all_entries(&mut ls).await, vec![normal(3, 51, 2, 10)]);
    assert_eq!(store.data_log().next_offset(), 7);
    drop((ls, store));
    disk.crash();
    let store = open(Arc::new(disk.clone()), dir);
    let mut ls = store.log_store();
    assert_eq!(all_entries(&mut ls).await, vec![normal(3, 51, 2, 10)]);
    assert_eq!(
        ls.get_log_state().await.unwrap().last_purged_log_id,
        Some(lid(3, 50))
    );
    assert_reconciled(&store);
}

// ---- vote, clamps ----

#[tokio::test]
async fn save_vote_survives_a_crash() {
    let disk = SimDisk::new(8);
    let dir = Path::new("/n");
    let store = open(Arc::new(disk.clone()), dir);
    let mut ls = store.log_store();
    assert_eq!(ls.read_vote().await.unwrap(), None);
    ls.save_vote(&Vote::new(3, 2)).await.unwrap();
    ls.save_vote(&Vote::new_committed(4, 1)).await.unwrap();
    drop((ls, store));
    disk.crash();
    let store = open(Arc::new(disk.clone()), dir);
    let mut ls = store.log_store();
    assert_eq!(
        ls.read_vote().await.unwrap(),
        Some(Vote::new_committed(4, 1))
    );
}

#[tokio::test]
async fn persisted_committed_and_applied_past_the_log_are_clamped_at_open() {
    let disk = SimDisk::new(9);
    let dir = Path::new("/n");
    let store = open(Arc::new(disk.clone()), dir);
    let mut ls = store.log_store();
    let mut sm = store.state_machine();
    let entries: Vec<Entry> = (0..5).map(|i| normal(1, i, 2, 10)).collect();
    ls.blocking_append(entries.clone()).await.unwrap();
    ls.save_vote(&Vote::new_committed(1, 0)).await.unwrap();
    // As if the log's tail had been lost while the write-behind ids survived.
    sm.apply([normal(1, 7, 2, 10)]).await.unwrap();
    ls.save_committed(Some(lid(1, 9))).await.unwrap();
    store.close().unwrap();
    drop((ls, sm, store));
    disk.crash();
    let store = open(Arc::new(disk.clone()), dir);
    let mut ls = store.log_store();
    let mut sm = store.state_machine();
    assert_eq!(ls.read_committed().await.unwrap(), Some(lid(1, 4)));
    assert_eq!(sm.applied_state().await.unwrap().0, Some(lid(1, 4)));
    assert_eq!(store.committed_offset(), 10);
    // What Raft::new runs first: it fails if committed points past the log.
    let state = StorageHelper::new(&mut ls, &mut sm)
        .get_initial_state()
        .await
        .expect("initial state");
    assert_eq!(state.committed, Some(lid(1, 4)));
}

#[tokio::test]
async fn startup_reapplies_committed_entries_from_the_applied_point() {
    let disk = SimDisk::new(10);
    let dir = Path::new("/n");
    let store = open(Arc::new(disk.clone()), dir);
    let mut ls = store.log_store();
    let mut sm = store.state_machine();
    let entries: Vec<Entry> = vec![
        membership(1, 0, &[1]),
        blank(1, 1),
        normal(1, 2, 3, 10),
        normal(1, 3, 2, 10),
    ];
    ls.blocking_append(entries.clone()).await.unwrap();
    sm.apply(entries[..2].to_vec()).await.unwrap();
    ls.save_committed(Some(lid(1, 3))).await.unwrap();
    store.close().unwrap();
    drop((ls, sm, store));
    let store = open(Arc::new(disk.clone()), dir);
    assert_eq!(store.committed_offset(), 0);
    let mut ls = store.log_store();
    let mut sm = store.state_machine();
    let state = StorageHelper::new(&mut ls, &mut sm)
        .get_initial_state()
        .await
        .unwrap();
    assert_eq!(state.committed, Some(lid(1, 3)));
    assert_eq!(store.committed_offset(), 5);
    assert_eq!(
        state.membership_state.effective().membership(),
        &members(&[1])
    );
}

// ---- snapshots ----

async fn install(sm: &mut StateMachine, meta: &SnapshotMeta<u64, BasicNode>, data_end: u64) {
    let mut data = sm.begin_receiving_snapshot().await.unwrap();
    *data = Cursor::new(postcard::to_allocvec(&SnapshotBody { data_end }).unwrap());
    sm.install_snapshot(meta, data).await.unwrap();
}

#[tokio::test]
async fn a_snapshot_past_the_local_log_resets_both_logs_durably() {
    // The leader: 30 entries, applied, snapshot.
    let disk = SimDisk::new(11);
    let leader = open(Arc::new(disk.clone()), Path::new("/leader"));
    let mut ls = leader.log_store();
    let mut sm = leader.state_machine();
    let mut entries = vec![membership(1, 0, &[1, 2])];
    entries.extend((1..30).map(|i| normal(1, i, 2, 100)));
    ls.blocking_append(entries.clone()).await.unwrap();
    sm.apply(entries.clone()).await.unwrap();
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snap.meta.last_log_id, Some(lid(1, 29)));
    assert_eq!(
        sm.get_current_snapshot().await.unwrap().unwrap().meta,
        snap.meta
    );
    let body: SnapshotBody = postcard::from_bytes(snap.snapshot.get_ref()).unwrap();
    assert_eq!(body.data_end, 58);

    // A follower holding a stale, diverging prefix.
    let dir = Path::new("/follower");
    let follower = open(Arc::new(disk.clone()), dir);
    let mut fls = follower.log_store();
    let mut fsm = follower.state_machine();
    fls.blocking_append([
        membership(1, 0, &[1, 2]),
        normal(1, 1, 2, 100),
        normal(1, 2, 9, 50),
    ])
    .await
    .unwrap();
    fsm.apply([membership(1, 0, &[1, 2]), normal(1, 1, 2, 100)])
        .await
        .unwrap();
    install(&mut fsm, &snap.meta, body.data_end).await;
    assert_eq!(follower.committed_offset(), 58);
    assert_eq!(fsm.applied_state().await.unwrap().0, Some(lid(1, 29)));
    let data = follower.data_log();
    assert_eq!((data.lowest_offset(), data.next_offset()), (58, 58));
    assert!(all_entries(&mut fls).await.is_empty());
    let state = fls.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(lid(1, 29)));
    assert_eq!(state.last_purged_log_id, Some(lid(1, 29)));
    // The engine's purge that follows is a no-op; replication goes on at 30.
    fls.purge(lid(1, 29)).await.unwrap();
    fls.blocking_append([normal(2, 30, 3, 10)]).await.unwrap();
    assert_eq!(follower.data_log().next_offset(), 61);
    drop((fls, fsm, follower));
    disk.crash();
    let follower = open(Arc::new(disk.clone()), dir);
    let mut fls = follower.log_store();
    let mut fsm = follower.state_machine();
    assert_eq!(all_entries(&mut fls).await, vec![normal(2, 30, 3, 10)]);
    assert_eq!(
        fsm.get_current_snapshot().await.unwrap().unwrap().meta,
        snap.meta
    );
    assert_eq!(fsm.applied_state().await.unwrap().0, Some(lid(1, 29)));
    assert_eq!(follower.committed_offset(), 58);
    assert_reconciled(&follower);
}

#[tokio::test]
async fn a_snapshot_the_log_already_holds_only_moves_the_applied_point() {
    let disk = SimDisk::new(12);
    let store = open(Arc::new(disk.clone()), Path::new("/n"));
    let mut ls = store.log_store();
    let mut sm = store.state_machine();
    let entries: Vec<Entry> = (0..10).map(|i| normal(1, i, 1, 10)).collect();
    ls.blocking_append(entries.clone()).await.unwrap();
    let meta = SnapshotMeta {
        last_log_id: Some(lid(1, 6)),
        last_membership: StoredMembership::default(),
        snapshot_id: "1-6".into(),
    };
    install(&mut sm, &meta, 7).await;
    assert_eq!(all_entries(&mut ls).await, entries);
    assert_eq!(store.committed_offset(), 7);
    assert_eq!(sm.applied_state().await.unwrap().0, Some(lid(1, 6)));
    assert_eq!(store.data_log().lowest_offset(), 0);
}

// ---- retention, failures ----

#[tokio::test]
async fn retention_point_is_the_last_applied_entry_wholly_below_the_cut() {
    let disk = SimDisk::new(13);
    let mut cfg = config(Path::new("/n"));
    cfg.retention_bytes_max = Some(4096);
    let store = Store::open(Arc::new(disk), clock(), cfg).unwrap();
    let mut ls = store.log_store();
    let mut sm = store.state_machine();
    let entries: Vec<Entry> = (0..20).map(|i| normal(1, i, 2, 300)).collect();
    ls.blocking_append(entries.clone()).await.unwrap();
    assert_eq!(
        store.retention_point().unwrap(),
        None,
        "nothing applied yet"
    );
    sm.apply(entries[..15].to_vec()).await.unwrap();
    let point = store.retention_point().unwrap().expect("a retention point");
    let cut = store.data_log().retention_cut(Some(4096), None);
    assert!(cut > 0);
    // Entry i holds client offsets [2i, 2i + 2): the last one wholly below the cut.
    assert_eq!(point, lid(1, cut / 2 - 1));
    // Purging there (what the caller does after a snapshot) drops those segments.
    ls.purge(point).await.unwrap();
    assert_eq!(store.data_log().lowest_offset(), cut);
    assert_eq!(store.retention_point().unwrap(), None);
}

#[tokio::test]
async fn a_failed_fsync_poisons_the_store_until_it_is_reopened() {
    let sim = SimDisk::new(14);
    let dir = Path::new("/n");
    let faulty = FaultDisk::new(Arc::new(sim.clone()));
    let store = open(Arc::new(faulty.clone()), dir);
    let mut ls = store.log_store();
    ls.blocking_append([normal(1, 0, 2, 10)]).await.unwrap();
    faulty.faults.fail_nth_sync(1);
    assert!(ls.blocking_append([normal(1, 1, 2, 10)]).await.is_err());
    let err = ls.blocking_append([normal(1, 1, 2, 10)]).await.unwrap_err();
    assert!(err.to_string().contains("refuses writes"), "{err}");
    assert!(ls.save_vote(&Vote::new(1, 1)).await.is_err());
    drop((ls, store));
    let store = open(Arc::new(sim), dir);
    let mut ls = store.log_store();
    // Without a crash the unflushed entry is still in the files: it may come back.
    let got = all_entries(&mut ls).await;
    assert!(got == [normal(1, 0, 2, 10)] || got == [normal(1, 0, 2, 10), normal(1, 1, 2, 10)]);
    ls.blocking_append([blank(2, 7)]).await.unwrap_err(); // not contiguous: refused, no poison
    let next = ls.get_log_state().await.unwrap().last_log_id.unwrap().index + 1;
    ls.blocking_append([blank(2, next)]).await.unwrap();
    assert_reconciled(&store);
}

// ---- crash at every step, against a model ----

#[derive(Clone, Debug)]
enum Op {
    Vote(Vote<u64>),
    Append(Vec<Entry>),
    Truncate(u64),
    Purge(LogId),
    /// A snapshot at this log id whose client offsets end at `data_end`.
    Install(LogId, u64),
}

fn scenario() -> Vec<Op> {
    vec![
        Op::Vote(Vote::new(1, 1)),
        Op::Append(vec![blank(1, 0)]),
        Op::Append(vec![membership(1, 1, &[1, 2, 3])]),
        Op::Append(vec![normal(1, 2, 3, 200)]),
        Op::Append(vec![normal(1, 3, 0, 0), normal(1, 4, 4, 300), blank(1, 5)]),
        // A Blank at the truncation point: its (empty) data range survives any data cut, so
        // only cutting the entry log first keeps it from coming back after a crash.
        Op::Append(vec![blank(1, 6), normal(1, 7, 5, 100)]),
        Op::Truncate(6),
        Op::Vote(Vote::new_committed(2, 2)),
        Op::Append(vec![blank(2, 6), normal(2, 7, 3, 250)]),
        Op::Purge(lid(1, 4)),
        Op::Append(vec![normal(2, 8, 6, 300), normal(2, 9, 1, 450)]),
        Op::Truncate(8),
        Op::Install(lid(3, 20), 100),
        Op::Append(vec![blank(3, 21), normal(3, 22, 2, 60)]),
    ]
}

#[derive(Clone, Debug, Default)]
struct Model {
    log: BTreeMap<u64, Entry>,
    purged: Option<LogId>,
    vote: Option<Vote<u64>>,
    /// Set by an install: the data log restarts here.
    data_base: Option<u64>,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Vote(v) => self.vote = Some(*v),
            Op::Append(entries) => {
                for e in entries {
                    self.log.insert(e.log_id.index, e.clone());
                }
            }
            Op::Truncate(i) => {
                self.log.split_off(i);
            }
            Op::Purge(id) => {
                self.purged = Some(*id);
                self.log = self.log.split_off(&(id.index + 1));
            }
            Op::Install(id, data_end) => {
                self.purged = Some(*id);
                self.log.clear();
                self.data_base = Some(*data_end);
            }
        }
    }
}

async fn run_op(store: &Store, op: &Op) -> Result<(), StorageError> {
    let mut ls = store.log_store();
    match op {
        Op::Vote(v) => ls.save_vote(v).await,
        Op::Append(entries) => ls.blocking_append(entries.clone()).await,
        Op::Truncate(i) => ls.truncate(lid(0, *i)).await,
        Op::Purge(id) => ls.purge(*id).await,
        Op::Install(id, data_end) => {
            let meta = SnapshotMeta {
                last_log_id: Some(*id),
                last_membership: StoredMembership::new(Some(lid(1, 1)), members(&[1, 2, 3])),
                snapshot_id: format!("{}-{}", id.leader_id.term, id.index),
            };
            let mut sm = store.state_machine();
            let mut data = sm.begin_receiving_snapshot().await?;
            *data = Cursor::new(
                postcard::to_allocvec(&SnapshotBody {
                    data_end: *data_end,
                })
                .unwrap(),
            );
            sm.install_snapshot(&meta, data).await
        }
    }
}

/// Runs the scenario on `disk` until the first failure; returns the model of what was
/// acknowledged and the op that was in flight.
async fn run_until_failure(disk: Arc<dyn Disk>, dir: &Path) -> (Model, Option<Op>) {
    let mut model = Model::default();
    let Ok(store) = Store::open(disk, clock(), config(dir)) else {
        return (model, None);
    };
    for op in scenario() {
        if run_op(&store, &op).await.is_err() {
            return (model, Some(op));
        }
        model.apply(&op);
    }
    (model, None)
}

/// After a crash: the store opens reconciled, every acknowledged entry is there unchanged
/// (unless the in-flight op was allowed to remove it), and nothing else appears but entries of
/// the in-flight append.
async fn check_after_crash(store: &Store, model: &Model, in_flight: Option<&Op>, n: u64) {
    assert_reconciled(store);
    let mut ls = store.log_store();
    let got = all_entries(&mut ls).await;
    let state = ls.get_log_state().await.unwrap();
    let mut after = model.clone();
    if let Some(op) = in_flight {
        after.apply(op);
    }
    for e in &got {
        let i = e.log_id.index;
        let ok = model.log.get(&i) == Some(e) || after.log.get(&i) == Some(e);
        assert!(
            ok,
            "crash at op {n}: unexpected entry {e:?} (in flight: {in_flight:?})"
        );
    }
    let present: BTreeSet<u64> = got.iter().map(|e| e.log_id.index).collect();
    let purged = state.last_purged_log_id.map(|p| p.index);
    for &i in model.log.keys() {
        if present.contains(&i) || purged.is_some_and(|p| i <= p) {
            continue;
        }
        let may_drop = match in_flight {
            Some(Op::Truncate(t)) => i >= *t,
            Some(Op::Install(..)) => true,
            _ => false,
        };
        assert!(
            may_drop,
            "crash at op {n}: acknowledged entry {i} lost (in flight: {in_flight:?})"
        );
    }
    assert!(
        state.last_purged_log_id == model.purged || state.last_purged_log_id == after.purged,
        "crash at op {n}: purged {:?}, model {:?} / {:?}",
        state.last_purged_log_id,
        model.purged,
        after.purged
    );
    let vote = ls.read_vote().await.unwrap();
    // A tail cut at open takes a committed vote back (a leader must not reuse the log ids it
    // lost): the same vote, uncommitted.
    let cut = store.data_log().open_report().tail_cut.is_some()
        || store.entry_log().open_report().tail_cut.is_some();
    let stepped_down = |v: Option<Vote<u64>>| {
        v.map(|mut v| {
            v.committed = false;
            v
        })
    };
    assert!(
        vote == model.vote
            || vote == after.vote
            || (cut && (vote == stepped_down(model.vote) || vote == stepped_down(after.vote))),
        "crash at op {n}: vote {vote:?} (tail cut at open: {cut})"
    );
    // An install either happened whole or not at all.
    if state.last_purged_log_id == Some(lid(3, 20)) {
        let data = store.data_log();
        assert_eq!(data.lowest_offset(), 100, "crash at op {n}");
        assert_eq!(store.committed_offset(), 100, "crash at op {n}");
    }
}

#[tokio::test]
async fn a_crash_at_every_step_leaves_a_reconciled_store_with_every_acknowledged_entry() {
    let dir = Path::new("/n");
    // Count the mutating disk operations of a clean run.
    let counting = FaultDisk::new(Arc::new(SimDisk::new(0)));
    let (model, failed) = run_until_failure(Arc::new(counting.clone()), dir).await;
    assert!(failed.is_none());
    let total = counting
        .faults
        .ops
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(total > 50, "only {total} ops");
    eprintln!("crash points: {total}");
    // The clean run ends as the model says.
    let clean = SimDisk::new(0);
    run_until_failure(Arc::new(clean.clone()), dir).await;
    let store = open(Arc::new(clean), dir);
    check_after_crash(&store, &model, None, u64::MAX).await;
    assert_eq!(
        all_entries(&mut store.log_store()).await,
        model.log.values().cloned().collect::<Vec<_>>()
    );

    for n in 0..=total {
        let sim = SimDisk::new(n);
        sim.set_faults(SimDiskFaults {
            io_error_per_million: 0,
            torn_write_on_crash: n % 2 == 1,
        });
        let faulty = FaultDisk::new(Arc::new(sim.clone()));
        faulty.faults.fail_ops_from(n);
        let (model, in_flight) = run_until_failure(Arc::new(faulty), dir).await;
        sim.crash();
        let store = Store::open(Arc::new(sim.clone()), clock(), config(dir))
            .unwrap_or_else(|e| panic!("crash at op {n}: reopen failed: {e}"));
        check_after_crash(&store, &model, in_flight.as_ref(), n).await;
        // The store takes writes again, right after what survived.
        let next = store
            .log_store()
            .get_log_state()
            .await
            .unwrap()
            .last_log_id
            .map_or(0, |l| l.index + 1);
        store
            .log_store()
            .blocking_append([normal(9, next, 2, 20)])
            .await
            .unwrap_or_else(|e| panic!("crash at op {n}: append after reopen: {e}"));
        assert_reconciled(&store);
    }
}

// ---- a single-node Raft over the store ----

mod no_network {
    use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
    use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
    use openraft::raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    };
    use openraft::BasicNode;

    use loghouse::raft::TypeConfig;

    /// A one-node cluster never sends an RPC.
    pub struct NoNetwork;
    pub struct NoConnection;

    fn unreachable() -> Unreachable {
        Unreachable::new(&std::io::Error::other("no network in this test"))
    }

    impl RaftNetworkFactory<TypeConfig> for NoNetwork {
        type Network = NoConnection;
        async fn new_client(&mut self, _target: u64, _node: &BasicNode) -> NoConnection {
            NoConnection
        }
    }

    impl RaftNetwork<TypeConfig> for NoConnection {
        async fn append_entries(
            &mut self,
            _rpc: AppendEntriesRequest<TypeConfig>,
            _option: RPCOption,
        ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
            Err(RPCError::Unreachable(unreachable()))
        }

        async fn install_snapshot(
            &mut self,
            _rpc: InstallSnapshotRequest<TypeConfig>,
            _option: RPCOption,
        ) -> Result<
            InstallSnapshotResponse<u64>,
            RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
        > {
            Err(RPCError::Unreachable(unreachable()))
        }

        async fn vote(
            &mut self,
            _rpc: VoteRequest<u64>,
            _option: RPCOption,
        ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
            Err(RPCError::Unreachable(unreachable()))
        }
    }
}

async fn start_raft(store: &Store) -> loghouse::raft::types::Raft {
    let config = openraft::Config {
        cluster_name: "store-test".into(),
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: u64::MAX,
        ..Default::default()
    }
    .validate()
    .unwrap();
    openraft::Raft::new(
        1,
        Arc::new(config),
        no_network::NoNetwork,
        store.log_store(),
        store.state_machine(),
    )
    .await
    .expect("Raft::new")
}

fn batch(values: &[&str]) -> ProduceBatch {
    ProduceBatch {
        values: values.iter().map(|v| Bytes::from(v.to_string())).collect(),
        timestamp_ms: 1_000_000,
        producer: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_raft_commits_applies_and_restarts_over_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(Arc::new(StdDisk), dir.path());
    let raft = start_raft(&store).await;
    raft.initialize(BTreeMap::from([(1, BasicNode::new("127.0.0.1:1"))]))
        .await
        .unwrap();
    raft.wait(Some(Duration::from_secs(10)))
        .state(openraft::ServerState::Leader, "leader")
        .await
        .unwrap();
    let a = raft.client_write(batch(&["a", "b", "c"])).await.unwrap();
    assert_eq!(
        a.data,
        ProduceAck {
            first_offset: 0,
            count: 3,
            duplicate: false
        }
    );
    let b = raft.client_write(batch(&["d"])).await.unwrap();
    assert_eq!(b.data.first_offset, 3);
    assert_eq!(store.committed_offset(), 4);
    let last = b.log_id;
    raft.shutdown().await.unwrap();
    drop(raft);
    store.close().unwrap();
    drop(store);

    let store = open(Arc::new(StdDisk), dir.path());
    assert_eq!(store.committed_offset(), 4);
    let raft = start_raft(&store).await;
    raft.wait(Some(Duration::from_secs(10)))
        .state(openraft::ServerState::Leader, "leader again")
        .await
        .unwrap();
    let c = raft.client_write(batch(&["e", "f"])).await.unwrap();
    assert_eq!(c.data.first_offset, 4);
    assert!(c.log_id > last);
    assert_eq!(store.committed_offset(), 6);
    let data = store.data_log();
    let values: Vec<Bytes> = data
        .read_batch(0, 10, 1 << 20)
        .unwrap()
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(
        values,
        ["a", "b", "c", "d", "e", "f"]
            .map(|v| Bytes::from_static(v.as_bytes()))
            .to_vec()
    );
    raft.shutdown().await.unwrap();
}

// ---- repair after damage (src/raft/store/repair.rs) ----

/// The first client offset the data log cannot read back.
fn first_unreadable(store: &Store) -> Option<u64> {
    let data = store.data_log();
    (data.lowest_offset()..data.next_offset()).find(|&o| data.read(o).is_err())
}

#[tokio::test]
async fn a_damaged_entry_is_dropped_with_its_successors_and_the_vote_floor_holds_until_caught_up() {
    let disk = SimDisk::new(11);
    let dir = Path::new("/n");
    let store = open(Arc::new(disk.clone()), dir);
    let mut ls = store.log_store();
    let entries: Vec<Entry> = (0..8).map(|i| normal(2, i, 3, 200)).collect();
    ls.blocking_append(entries.clone()).await.unwrap();
    ls.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
    drop((ls, store));
    // A flipped bit in the last record of the first (sealed) data segment.
    let segment = dir.join("data").join("00000000000000000000.store");
    let len = disk.file_len_durable(&segment).expect("first data segment");
    disk.flip_bit(&segment, len - 1, 3).unwrap();

    let store = open(Arc::new(disk.clone()), dir);
    let damaged_offset = first_unreadable(&store).expect("the flip is detected");
    let damaged = damaged_offset / 3;
    assert!(damaged < 7, "the flip hit entry {damaged}");
    let mut ls = store.log_store();
    let error = ls.try_get_log_entries(0..).await.unwrap_err();
    assert!(error.to_string().contains("damaged"), "{error}");
    assert_eq!(
        store.vote_floor().borrow().as_ref().map(|f| f.log_id),
        Some(lid(2, 7))
    );
    drop((ls, store));

    // Reopened: the log ends before the damaged entry, the floor stays, the vote is no longer
    // committed (openraft would otherwise restart this node as the term's leader).
    let store = open(Arc::new(disk.clone()), dir);
    let mut ls = store.log_store();
    assert_eq!(all_entries(&mut ls).await, entries[..damaged as usize]);
    assert_eq!(store.data_log().next_offset(), damaged * 3);
    assert_reconciled(&store);
    assert_eq!(
        store.vote_floor().borrow().as_ref().map(|f| f.log_id),
        Some(lid(2, 7))
    );
    assert_eq!(ls.read_vote().await.unwrap(), Some(Vote::new(2, 1)));

    // Catching up below the floor keeps it; reaching it clears it, durably.
    ls.blocking_append(entries[damaged as usize..7].to_vec())
        .await
        .unwrap();
    assert_eq!(
        store.vote_floor().borrow().as_ref().map(|f| f.log_id),
        Some(lid(2, 7))
    );
    ls.blocking_append(entries[7..].to_vec()).await.unwrap();
    assert_eq!(store.vote_floor().borrow().as_ref().map(|f| f.log_id), None);
    assert_eq!(all_entries(&mut ls).await, entries);
    drop((ls, store));
    let store = open(Arc::new(disk.clone()), dir);
    assert_eq!(store.vote_floor().borrow().as_ref().map(|f| f.log_id), None);
    assert_reconciled(&store);
}

// ---- tail cut at open (issue 15): repaired like damage found by a read ----

/// The last store file of the log in `dir`, and where each of its frames starts.
fn last_store_frames(dir: &Path) -> (std::path::PathBuf, Vec<u64>) {
    let mut stores: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "store"))
        .collect();
    stores.sort();
    let store = stores.pop().expect("a store file");
    let bytes = std::fs::read(&store).unwrap();
    let mut positions = Vec::new();
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        positions.push(at as u64);
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 8 + len;
    }
    (store, positions)
}

fn flip_byte(path: &Path, position: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[position as usize] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

/// 8 entries of 3 records each, appended in term 2 by the leader node 1 (its vote committed),
/// on real files, then dropped without a close (a kill): the next open scans the last segments.
async fn killed_member(dir: &Path) -> Vec<Entry> {
    let store = open(Arc::new(StdDisk), dir);
    let mut ls = store.log_store();
    ls.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
    let entries: Vec<Entry> = (0..8).map(|i| normal(2, i, 3, 200)).collect();
    ls.blocking_append(entries.clone()).await.unwrap();
    drop((ls, store));
    entries
}

fn floor_of(store: &Store) -> Option<LogId> {
    store.vote_floor().borrow().as_ref().map(|f| f.log_id)
}

/// This replica (node 1, voters 1, 2, 3) asked for a vote by node 2 with `last`: the floor it
/// refuses below, if any (node 3 has not reported).
fn refuses(store: &Store, last: LogId) -> Option<LogId> {
    let guard = loghouse::raft::vote_guard::VoteGuard::new(store.vote_floor(), Box::new(|| None));
    guard.refuse(2, Some(last), 1, [1, 2, 3])
}

#[tokio::test]
async fn a_corrupt_data_log_tail_is_cut_at_open_and_the_vote_floor_covers_the_lost_entries() {
    let dir = tempfile::tempdir().unwrap();
    let entries = killed_member(dir.path()).await;
    let (store_file, at) = last_store_frames(&dir.path().join("data"));
    assert!(
        at.len() >= 3,
        "the last data segment holds {} frames",
        at.len()
    );
    flip_byte(&store_file, at[1] + 45); // a record's value; valid frames follow it
    let base: u64 = store_file.file_name().unwrap().to_str().unwrap()[..20]
        .parse()
        .unwrap();

    // A member opens (a standalone log would refuse) and says what it cut.
    let store = open(Arc::new(StdDisk), dir.path());
    let cut = store
        .data_log()
        .open_report()
        .tail_cut
        .expect("the data log's tail was cut");
    assert!(cut.is_corruption(), "{cut:?}");
    assert_eq!((cut.position, cut.first_dropped), (at[1], base + 1));
    // Entries whose records went are dropped too (and the records of a partly cut entry):
    // what stays is a whole prefix.
    let mut ls = store.log_store();
    let kept = (base + 1) / 3;
    assert_eq!(store.data_log().next_offset(), kept * 3);
    assert_eq!(all_entries(&mut ls).await, entries[..kept as usize]);
    assert_reconciled(&store);
    // The floor is the last entry the replica held: it stands for no election and refuses a
    // candidate behind it; its committed vote (leader of term 2) is taken back.
    assert_eq!(floor_of(&store), Some(lid(2, 7)));
    assert_eq!(refuses(&store, lid(2, kept)), Some(lid(2, 7)));
    assert_eq!(refuses(&store, lid(2, 7)), None);
    assert_eq!(ls.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
    drop((ls, store));

    // Durable: reopened, nothing more is cut and the floor holds until the log is back.
    let store = open(Arc::new(StdDisk), dir.path());
    assert_eq!(store.data_log().open_report().tail_cut, None);
    assert_eq!(floor_of(&store), Some(lid(2, 7)));
    let mut ls = store.log_store();
    ls.blocking_append(entries[kept as usize..].to_vec())
        .await
        .unwrap();
    assert_eq!(floor_of(&store), None);
    assert_eq!(all_entries(&mut ls).await, entries);
    assert_reconciled(&store);
}

#[tokio::test]
async fn a_corrupt_entry_log_tail_is_cut_at_open_and_the_floor_is_the_last_entry_found_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let entries = killed_member(dir.path()).await;
    let (store_file, at) = last_store_frames(&dir.path().join("raft").join("log"));
    assert!(
        at.len() >= 3,
        "the last entry segment holds {} frames",
        at.len()
    );
    flip_byte(&store_file, at[1] + 41);
    let base: u64 = store_file.file_name().unwrap().to_str().unwrap()[..20]
        .parse()
        .unwrap();

    let store = open(Arc::new(StdDisk), dir.path());
    let cut = store
        .entry_log()
        .open_report()
        .tail_cut
        .expect("the entry log's tail was cut");
    assert!(cut.is_corruption(), "{cut:?}");
    assert_eq!(cut.first_dropped, base + 1);
    assert_eq!(
        cut.last_valid_after.map(|f| (f.term, f.offset)),
        Some((2, 7))
    );
    let mut ls = store.log_store();
    assert_eq!(all_entries(&mut ls).await, entries[..=base as usize]);
    assert_eq!(store.data_log().next_offset(), (base + 1) * 3);
    assert_reconciled(&store);
    assert_eq!(floor_of(&store), Some(lid(2, 7)));
    assert_eq!(refuses(&store, lid(2, base)), Some(lid(2, 7)));
    assert_eq!(ls.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
}

/// A torn tail holds a write that never completed, so never an entry this replica acknowledged
/// (the flush callback fires after both fsyncs): no floor, which after every torn write would
/// keep a lone voter from ever electing itself. It still steps down: a leader that lost an
/// entry of its own term must not hand its log id out again (a follower may hold it).
#[tokio::test]
async fn a_torn_tail_is_cut_at_open_and_the_member_steps_down_without_a_floor() {
    let dir = tempfile::tempdir().unwrap();
    let entries = killed_member(dir.path()).await;
    let (store_file, _) = last_store_frames(&dir.path().join("raft").join("log"));
    let len = std::fs::metadata(&store_file).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&store_file)
        .unwrap();
    file.set_len(len - 3).unwrap();
    drop(file);

    let store = open(Arc::new(StdDisk), dir.path());
    let cut = store.entry_log().open_report().tail_cut.expect("a cut");
    assert_eq!(cut.kind, loghouse::log::TailKind::Torn);
    assert_eq!(cut.first_dropped, 7);
    let mut ls = store.log_store();
    assert_eq!(all_entries(&mut ls).await, entries[..7]);
    assert_eq!(store.data_log().next_offset(), 21);
    assert_reconciled(&store);
    assert_eq!(floor_of(&store), None);
    assert_eq!(refuses(&store, lid(2, 3)), None);
    assert_eq!(ls.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
    assert!(store.hard_state().vote.is_some_and(|v| !v.committed));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The process dies at every step of an open that cuts a corrupt tail (every mutating call from
/// the nth on fails): whichever step it reached, the next open ends with the floor raised, the
/// vote stepped down and the logs reconciled. The repair is recorded before the cut, so a
/// death right after the cut does not forget what the log lost.
#[tokio::test]
async fn a_death_at_any_step_of_an_open_that_cuts_still_ends_repaired() {
    let damaged = tempfile::tempdir().unwrap();
    let entries = killed_member(damaged.path()).await;
    let (store_file, at) = last_store_frames(&damaged.path().join("raft").join("log"));
    flip_byte(&store_file, at[1] + 41);
    let base: u64 = store_file.file_name().unwrap().to_str().unwrap()[..20]
        .parse()
        .unwrap();

    let mut n = 0;
    loop {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(damaged.path(), dir.path());
        let disk = FaultDisk::new(Arc::new(StdDisk));
        disk.faults.fail_ops_from(n);
        let completed = Store::open(Arc::new(disk), clock(), config(dir.path())).is_ok();

        let store = open(Arc::new(StdDisk), dir.path());
        let mut ls = store.log_store();
        assert_eq!(
            all_entries(&mut ls).await,
            entries[..=base as usize],
            "death at op {n}"
        );
        assert_reconciled(&store);
        assert_eq!(floor_of(&store), Some(lid(2, 7)), "death at op {n}");
        assert_eq!(
            ls.read_vote().await.unwrap(),
            Some(Vote::new(2, 1)),
            "death at op {n}"
        );
        if completed {
            break;
        }
        n += 1;
    }
    assert!(n > 3, "the open took {n} mutating calls");
}

// ---- limits across restarts (issue 15) ----

/// A store restarted with each size limit of its data and entry logs lowered or raised, after a
/// close, a kill (dropped) and a power loss (the sim disk crashes): every entry and record is
/// kept, nothing is cut, no floor is raised, the vote stays as it was, and appends go on.
#[tokio::test]
async fn restarting_with_lower_or_higher_log_limits_loses_no_entry() {
    type Tweak = fn(&mut StoreConfig);
    let cases: [(&str, Tweak); 10] = [
        ("data record lower", |c| c.data.record_bytes_max = 100),
        ("data record higher", |c| c.data.record_bytes_max = 1_000),
        ("data segment lower", |c| c.data.segment_bytes_max = 600),
        ("data segment higher", |c| c.data.segment_bytes_max = 20_000),
        ("data index lower", |c| c.data.index_bytes_max = 24),
        ("data index higher", |c| c.data.index_bytes_max = 4_096),
        ("entry segment lower", |c| c.entries.segment_bytes_max = 600),
        ("entry segment higher", |c| {
            c.entries.segment_bytes_max = 20_000
        }),
        ("entry index lower", |c| c.entries.index_bytes_max = 24),
        ("entry index higher", |c| c.entries.index_bytes_max = 4_096),
    ];
    #[derive(Debug, Clone, Copy)]
    enum Stop {
        Close,
        Kill,
        PowerLoss,
    }
    for (name, tweak) in cases {
        for stop in [Stop::Close, Stop::Kill, Stop::PowerLoss] {
            let context = format!("{name} after {stop:?}");
            let disk = SimDisk::new(21);
            let dir = Path::new("/n");
            let stop_store = |store: Store| match stop {
                Stop::Close => store.close().unwrap(),
                Stop::Kill => drop(store),
                Stop::PowerLoss => {
                    drop(store);
                    disk.crash();
                }
            };
            let store = open(Arc::new(disk.clone()), dir);
            let mut ls = store.log_store();
            let vote = Vote::new_committed(2, 1);
            ls.save_vote(&vote).await.unwrap();
            let mut entries = vec![blank(1, 0), membership(1, 1, &[1, 2, 3])];
            entries.extend((2..12).map(|i| normal(2, i, 3, 50 * (i as usize % 9) + 40)));
            ls.blocking_append(entries.clone()).await.unwrap();
            drop(ls);
            stop_store(store);

            let mut changed = config(dir);
            tweak(&mut changed);
            let reopen = || Store::open(Arc::new(disk.clone()), clock(), changed.clone());
            let store = reopen().unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_eq!(store.data_log().open_report().tail_cut, None, "{context}");
            assert_eq!(store.entry_log().open_report().tail_cut, None, "{context}");
            let mut ls = store.log_store();
            assert_eq!(all_entries(&mut ls).await, entries, "{context}");
            assert_reconciled(&store);
            assert_eq!(floor_of(&store), None, "{context}");
            assert_eq!(ls.read_vote().await.unwrap(), Some(vote), "{context}");
            // Appends go on under the new limits (records up to the old limit: replicated
            // appends are bounded by the format's limit only).
            let more: Vec<Entry> = (12..20).map(|i| normal(2, i, 2, 500)).collect();
            ls.blocking_append(more.clone()).await.unwrap();
            entries.extend(more);
            drop(ls);
            stop_store(store);

            let store = reopen().unwrap();
            let mut ls = store.log_store();
            assert_eq!(all_entries(&mut ls).await, entries, "{context}, again");
            assert_reconciled(&store);
        }
    }
}
