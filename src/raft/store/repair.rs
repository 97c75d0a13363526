//! Repairing a replica whose log a read found damaged (a flipped bit in a sealed segment, a bad
//! index entry): the other replicas hold every committed entry, so the damaged one drops its log
//! from the damage on and lets the leader send it again.
//!
//! 1. A read that meets damage at entry `d` persists `raft/repair` (`damaged_from = d`, and the
//!    *vote floor*: the last log id this replica held) before it fails. The failure stops Raft;
//!    the member restarts it (`server::serve` returns, its caller starts the member again).
//! 2. At open, the store cuts both logs at `d` and checks the new tails (a damaged index entry at
//!    the cut would otherwise leave garbage or a hole). If that is not possible (the damage is
//!    at the log's start, or the cut does not check out), both logs restart empty at the purge
//!    point instead, the way a snapshot install resets them.
//! 3. Until its log is back at the vote floor, the replica grants no vote to a candidate whose
//!    log is behind the floor and stands for no election (`RaftNode` turns elections off, the
//!    Raft service refuses such votes). Raft's safety rests on a voter never voting for a log
//!    behind one it acknowledged; the floor keeps that promise for entries it no longer has.
//!    Commit counting needs nothing: what it acknowledges from now on is on its disk.
//!
//! A log that cuts its tail at open (`Log::open_before_cut`) loses entries the same way, and is
//! repaired the same way ([`TailLoss`]): before the cut is made, `raft/repair` records
//! `damaged_from` (so that open finishes the repair below, a crash in between included) and,
//! when the cut may drop entries this replica acknowledged, the vote floor. That is a
//! `Corrupt` cut (valid frames after the damage, which may have been fsync'd): of the entry
//! log, the last entry found after the damage; of the data log, the last entry of the entry
//! log, whose records reconcile then drops. A `Torn` or `Unwritten` cut drops only frames never
//! fsync'd, hence never acknowledged (the flush callback fires after both fsyncs), so it sets
//! no floor: one after every torn write would keep a lone voter, or a whole cluster after a
//! power loss, from ever electing a leader. Any cut also takes back a committed vote (below):
//! a leader must not reuse the log ids of entries it lost, which followers may hold.

use serde::{Deserialize, Serialize};

use super::{
    entry_log_err, log_id, EntryBase, Inner, PendingReset, SlotFile, StoreError, APPLIED_SLOT_BYTES,
};
use openraft::StoredMembership;

use crate::log::{Log, LogError, TailCut};
use std::collections::BTreeSet;

use super::HardState;
use crate::raft::types::{LogId, NodeId};

/// `raft/repair`: every write is fsync'd.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairState {
    /// The first entry a read found damaged: open drops the log from there.
    pub damaged_from: Option<u64>,
    /// The log this replica held when it found damage, and the voters it knew then.
    pub vote_floor: Option<VoteFloor>,
    /// Cutting at `damaged_from` failed: restart both logs empty instead.
    pub restart_empty: bool,
}

/// See the module docs and `raft::vote_guard`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteFloor {
    /// The last log id this replica held when it found damage.
    pub log_id: LogId,
    /// The voters of the membership it had applied then: the cut may take its membership back
    /// to none, and the floor is lowered only on reports from every one of them.
    pub voters: BTreeSet<NodeId>,
}

pub(super) struct RepairFile {
    file: SlotFile<RepairState>,
    pub(super) state: RepairState,
}

impl RepairFile {
    pub(super) fn open(
        disk: &std::sync::Arc<dyn crate::io::Disk>,
        path: &std::path::Path,
    ) -> Result<RepairFile, StoreError> {
        let (file, state, _) =
            SlotFile::<RepairState>::open(disk.clone(), path, APPLIED_SLOT_BYTES)
                .map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
        Ok(RepairFile { file, state })
    }

    fn update(&mut self, change: impl FnOnce(&mut RepairState)) -> Result<(), StoreError> {
        let mut next = self.state.clone();
        change(&mut next);
        if next == self.state {
            return Ok(());
        }
        self.file
            .write(&next, true)
            .map_err(|e| StoreError::io(format!("write {}", self.file.path().display()), e))?;
        self.state = next;
        Ok(())
    }
}

/// What a tail cut at open costs the store, recorded by `Store::open` before the cut is made.
pub(super) struct TailLoss<'a> {
    /// The entry log, when the cut is the data log's (`None`: the cut is the entry log's).
    entries: Option<&'a Log>,
    /// The term of the vote: no entry of this replica has a higher one.
    vote_term: u64,
    voters: BTreeSet<NodeId>,
}

impl<'a> TailLoss<'a> {
    pub(super) fn new(hard: &HardState, entries: Option<&'a Log>) -> TailLoss<'a> {
        TailLoss {
            entries,
            vote_term: hard.vote.map_or(0, |v| v.leader_id().term),
            voters: hard.membership.membership().voter_ids().collect(),
        }
    }

    /// Persists the repair `cut` calls for (see the module docs) before the log makes it.
    pub(super) fn record(&self, repair: &mut RepairFile, cut: &TailCut) -> std::io::Result<()> {
        let (log, damaged_from, lost) = match self.entries {
            None => (
                "entry",
                cut.first_dropped,
                cut.last_valid_after.map(|f| log_id(f.term, f.offset)),
            ),
            Some(entries) => ("data", entries.next_offset(), self.last_entry(entries)),
        };
        let floor = lost.filter(|_| cut.is_corruption());
        tracing::warn!(
            log, kind = ?cut.kind, position = cut.position, bytes_dropped = cut.bytes_dropped,
            records_dropped = cut.records_dropped, ?floor,
            "a tail is cut off the {log} log at open: the replica drops the entries it held there \
             and catches up from the leader"
        );
        repair
            .update(|r| {
                r.damaged_from = Some(r.damaged_from.map_or(damaged_from, |d| d.min(damaged_from)));
                if floor.is_some() {
                    r.vote_floor = merge_floor(r.vote_floor.take(), floor, self.voters.clone());
                }
            })
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// The entry log's last log id, or a bound at least as high when its record cannot be read.
    fn last_entry(&self, entries: &Log) -> Option<LogId> {
        let last = entries.next_offset().checked_sub(1)?;
        if last < entries.lowest_offset() {
            return None;
        }
        let id = match entries.read(last) {
            Ok(record) => log_id(record.term, record.offset),
            Err(_) => log_id(self.vote_term, last),
        };
        Some(id)
    }
}

/// Whether `error` says stored bytes are damaged (as opposed to an I/O failure or a bad request).
pub(super) fn is_damage(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Data(LogError::Corrupt { .. })
            | StoreError::Entries(LogError::Corrupt { .. })
            | StoreError::Corrupt(_)
    )
}

impl Inner {
    /// `error` met while reading entry `index`: when it is damage, persists the repair to do at
    /// the next open and the vote floor, and says so in the error.
    pub(super) fn damaged(&self, index: u64, error: StoreError) -> StoreError {
        if !is_damage(&error) {
            return error;
        }
        let floor = self.floor_now();
        let voters: BTreeSet<NodeId> = {
            let meta = self.meta.lock();
            meta.state.membership.membership().voter_ids().collect()
        };
        tracing::error!(index, ?floor, %error, "damaged entry: this replica drops its log from it and catches up from the leader");
        let persisted = self.repair.lock().update(|r| {
            r.damaged_from = Some(r.damaged_from.map_or(index, |d| d.min(index)));
            r.vote_floor = merge_floor(r.vote_floor.take(), floor, voters);
        });
        if let Err(e) = persisted {
            tracing::error!(error = %e, "cannot record the damage");
            return error;
        }
        self.floor
            .send_replace(self.repair.lock().state.vote_floor.clone());
        StoreError::Damaged {
            index,
            source: Box::new(error),
        }
    }

    /// The last log id this replica holds. While the positions are not loaded (at open), a
    /// bound at least as high: the log's last index at the highest term it has voted in.
    fn floor_now(&self) -> Option<LogId> {
        let next = self.entries.next_offset();
        let pos = *self.pos.lock();
        if pos.last.is_some_and(|(last, _)| last.index + 1 == next) {
            return pos.last_log_id();
        }
        let term = self
            .meta
            .lock()
            .state
            .vote
            .map_or(0, |v| v.leader_id().term);
        let bound = (next > 0).then(|| log_id(term, next - 1));
        bound.max(pos.last_log_id())
    }

    /// The vote floor, if any.
    pub(super) fn vote_floor(&self) -> Option<VoteFloor> {
        self.repair.lock().state.vote_floor.clone()
    }

    /// Clears the vote floor once the log has reached it.
    pub(super) fn clear_floor_if_reached(&self) -> Result<(), StoreError> {
        let Some(floor) = self.vote_floor() else {
            return Ok(());
        };
        let last = self.pos.lock().last_log_id();
        if last < Some(floor.log_id) {
            return Ok(());
        }
        tracing::info!(floor = %floor.log_id, "the log is back at its vote floor: voting again");
        self.repair.lock().update(|r| r.vote_floor = None)?;
        self.floor.send_replace(None);
        Ok(())
    }

    /// At open, before the logs are reconciled: cuts the logs where a read (or a tail cut)
    /// asked for. Returns whether a repair is under way (`finish_repair` then runs once the
    /// logs are reconciled).
    pub(super) fn repair_at_open(&self) -> Result<bool, StoreError> {
        let RepairState {
            damaged_from: Some(index),
            restart_empty,
            ..
        } = self.repair.lock().state.clone()
        else {
            return Ok(false);
        };
        let past_the_log = index >= self.entries.next_offset();
        if restart_empty {
            tracing::warn!(index, "repair: restarting the log empty at the purge point");
            self.restart_empty()?;
        } else if let Err(error) = self.cut_at_damage(index) {
            // The logs may refuse writes now (a failed cut poisons them): open them again.
            tracing::warn!(index, %error, "repair: cannot cut the log at the damage");
            self.repair.lock().update(|r| r.restart_empty = true)?;
            return Err(StoreError::Reopen(error.to_string()));
        } else if past_the_log {
            tracing::warn!(
                index,
                "repair: the log was cut at open; finishing the repair"
            );
        } else {
            tracing::warn!(index, "repair: dropped the log from the damaged entry");
        }
        Ok(true)
    }

    /// After the logs are reconciled: what no longer matches the (shorter) log goes, and a
    /// committed vote is taken back; then the repair is done.
    pub(super) fn finish_repair(&self) -> Result<(), StoreError> {
        self.forget_snapshot_past_log()?;
        self.forget_membership_past_log()?;
        self.step_down()?;
        self.repair.lock().update(|r| {
            r.damaged_from = None;
            r.restart_empty = false;
        })
    }

    /// Cuts both logs right before entry `index` and checks both new tails. Nothing to cut when
    /// the log already ends before `index` (a tail cut at open).
    fn cut_at_damage(&self, index: u64) -> Result<(), StoreError> {
        let (lowest, next) = (self.entries.lowest_offset(), self.entries.next_offset());
        if index <= lowest && index < next {
            return Err(StoreError::Invalid(format!(
                "the damage at {index} is at the log's start ({lowest})"
            )));
        }
        if index < next {
            let (_, kept) = self.entry_meta(index - 1)?;
            self.entries.truncate_from(index).map_err(entry_log_err)?;
            let data = &self.data;
            if kept.data_end < data.lowest_offset() || kept.data_end > data.next_offset() {
                return Err(StoreError::Corrupt(format!(
                    "entry {} ends client offsets at {}, outside the data log [{}, {})",
                    index - 1,
                    kept.data_end,
                    data.lowest_offset(),
                    data.next_offset()
                )));
            }
            data.truncate_from(kept.data_end)
                .map_err(StoreError::Data)?;
        }
        self.entries.check_tail().map_err(entry_log_err)?;
        self.data.check_tail().map_err(StoreError::Data)
    }

    /// Restarts both logs empty right after the purge point (or where the entry log started).
    fn restart_empty(&self) -> Result<(), StoreError> {
        let hard = self.meta.lock().state.clone();
        let base = match hard.purged {
            Some(p) => EntryBase {
                index: p.log_id.index + 1,
                data_end: p.data_end,
            },
            None => hard.entry_base,
        };
        let reset = PendingReset {
            base,
            keep_data_below: 0,
        };
        self.reset_logs(reset, |_| {})
    }

    /// The applied membership must not be ahead of the (cut) log: openraft refuses to apply the
    /// same membership entry again when the leader sends it back. Falls back to the newest
    /// membership entry left in the log, else the snapshot's, else none (the leader sends them).
    fn forget_membership_past_log(&self) -> Result<(), StoreError> {
        let (lowest, next) = (self.entries.lowest_offset(), self.entries.next_offset());
        let current = self.meta.lock().state.membership.clone();
        if current.log_id().is_none_or(|id| id.index < next) {
            return Ok(());
        }
        let from_log = (lowest..next).rev().find_map(|index| {
            let (id, meta) = self.entry_meta(index).ok()?;
            Some(StoredMembership::new(Some(id), meta.membership?))
        });
        let from_snapshot = || {
            let snapshot = self.meta.lock().state.snapshot.clone()?;
            let membership = snapshot.meta.last_membership;
            membership
                .log_id()
                .is_some_and(|id| id.index < next)
                .then_some(membership)
        };
        let membership = from_log.or_else(from_snapshot).unwrap_or_default();
        tracing::warn!(from = ?current.log_id(), to = ?membership.log_id(), "repair: the applied membership goes back with the log");
        self.meta.lock().update(|h| h.membership = membership)
    }

    /// openraft restarts a node whose vote is committed for itself as the leader of that term,
    /// without an election. A leader that lost entries of its own term would then hand out
    /// their log ids again, for other records. An uncommitted vote keeps the promise not to
    /// vote for another in that term, and makes this node a follower.
    fn step_down(&self) -> Result<(), StoreError> {
        let mut meta = self.meta.lock();
        if meta.state.vote.is_some_and(|v| v.committed) {
            meta.update(|h| {
                if let Some(vote) = h.vote.as_mut() {
                    vote.committed = false;
                }
            })?;
        }
        Ok(())
    }

    /// A snapshot past the (cut) log no longer describes this replica: drop it (openraft builds
    /// a new one when it needs one).
    fn forget_snapshot_past_log(&self) -> Result<(), StoreError> {
        let next = self.entries.next_offset();
        let mut meta = self.meta.lock();
        let past = meta
            .state
            .snapshot
            .as_ref()
            .and_then(|s| s.meta.last_log_id)
            .is_some_and(|l| l.index >= next);
        if past {
            meta.update(|h| h.snapshot = None)?;
        }
        Ok(())
    }
}

/// The higher of two floors, with the voters of both.
fn merge_floor(
    old: Option<VoteFloor>,
    log_id: Option<LogId>,
    voters: BTreeSet<NodeId>,
) -> Option<VoteFloor> {
    let Some(log_id) = log_id.max(old.as_ref().map(|f| f.log_id)) else {
        return old;
    };
    let mut all = old.map(|f| f.voters).unwrap_or_default();
    all.extend(voters);
    Some(VoteFloor {
        log_id,
        voters: all,
    })
}

impl StoreError {
    /// Whether this error came from damaged stored bytes.
    pub fn is_damage(&self) -> bool {
        matches!(self, StoreError::Damaged { .. }) || is_damage(self)
    }
}
