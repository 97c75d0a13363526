//! Which votes a replica that repaired damage may grant (see `store::repair`).
//!
//! The store's *vote floor* is the last log id the replica held when it found damage. Raft is
//! safe because a voter never votes for a candidate whose log is behind one it acknowledged; the
//! replica no longer has all of that log, so it refuses candidates behind the floor.
//!
//! The floor alone can block every election: when the replica held an uncommitted tail nobody
//! else has, no candidate reaches it, and if the others cannot elect a leader without this
//! replica's vote (a joint configuration, a voter down), nothing moves. So the guard also
//! learns the last log id every other voter reports when it asks for a vote. An entry that was
//! committed before the damage is on a majority, hence on some *other* voter (the others lose
//! no committed entry), and a voter that held it reports a last log id at least as high. Once
//! every other voter has reported, entries past the highest report cannot have been committed
//! before the damage, and the floor is lowered to that report. (Entries committed after the
//! damage are on a majority the replica either is in, holding them itself, so that Raft's own
//! check refuses a candidate without them, or is not in, so that the candidate cannot win.)
//!
//! A voter that does not campaign (a learner since, or one that already has the longer log) never
//! reports on its own, so the replica also *probes* them (`RaftNode`): a vote request for term
//! 0, which no Raft grants or acts on, answered here (never by Raft) with the answerer's last log
//! id, or its own floor if that is higher.
//!
//! The voters are those of the membership this replica knows now and those of the one it had
//! applied when it found the damage (the cut may take its membership back to none). Membership
//! changes go one at a time (the controller's rule), so a configuration it missed shares a
//! majority with one it knows.

use std::collections::{BTreeMap, BTreeSet};

use parking_lot::Mutex;
use tokio::sync::watch;

use super::store::VoteFloor;
use super::types::{LogId, NodeId};

/// Where this replica's log ends, read when answering a probe.
pub type LastLogId = Box<dyn Fn() -> Option<LogId> + Send + Sync>;

/// The term of a probe's vote (no candidate's term is 0).
pub const PROBE_TERM: u64 = 0;

/// Shared by every call of the Raft service and the prober.
pub struct VoteGuard {
    floor: watch::Receiver<Option<VoteFloor>>,
    last_log_id: LastLogId,
    /// The last log id each candidate reported (the newest request).
    reported: Mutex<BTreeMap<NodeId, Option<LogId>>>,
}

impl VoteGuard {
    /// `floor`: the store's (`Store::vote_floor`); `last_log_id`: the store's last log id.
    pub fn new(floor: watch::Receiver<Option<VoteFloor>>, last_log_id: LastLogId) -> VoteGuard {
        VoteGuard {
            floor,
            last_log_id,
            reported: Mutex::new(BTreeMap::new()),
        }
    }

    /// What this replica answers a probe: its last log id, or its floor if higher (a repaired
    /// replica must not report less than it once held).
    pub fn probe_answer(&self) -> Option<LogId> {
        let floor = self.floor.borrow().as_ref().map(|f| f.log_id);
        (self.last_log_id)().max(floor)
    }

    /// A probed voter's answer.
    pub fn report(&self, voter: NodeId, last_log_id: Option<LogId>) {
        self.reported.lock().insert(voter, last_log_id);
    }

    /// The voters (of `voters` and the floor's) that have not reported yet, while there is a
    /// floor.
    pub fn unreported(&self, me: NodeId, voters: impl IntoIterator<Item = NodeId>) -> Vec<NodeId> {
        let Some(floor) = self.floor.borrow().clone() else {
            return Vec::new();
        };
        let reported = self.reported.lock();
        let mut all: BTreeSet<NodeId> = voters.into_iter().collect();
        all.extend(floor.voters);
        all.into_iter()
            .filter(|id| *id != me && !reported.contains_key(id))
            .collect()
    }

    /// A vote request from `candidate` with `last_log_id`; `me` is this replica and `voters`
    /// those of its membership now: `Some(floor)` when it must be refused below `floor`.
    pub fn refuse(
        &self,
        candidate: NodeId,
        last_log_id: Option<LogId>,
        me: NodeId,
        voters: impl IntoIterator<Item = NodeId>,
    ) -> Option<LogId> {
        let floor = self.floor.borrow().clone()?;
        let mut others: BTreeSet<NodeId> = voters.into_iter().collect();
        others.extend(floor.voters.iter().copied());
        others.remove(&me);
        let mut reported = self.reported.lock();
        reported.insert(candidate, last_log_id);
        let floor = effective_floor(floor.log_id, &reported, &others)?;
        (last_log_id < Some(floor)).then_some(floor)
    }
}

/// The floor lowered to the highest log another voter reported, once all of them have.
fn effective_floor(
    floor: LogId,
    reported: &BTreeMap<NodeId, Option<LogId>>,
    others: &BTreeSet<NodeId>,
) -> Option<LogId> {
    if others.is_empty() {
        return Some(floor);
    }
    let mut highest: Option<LogId> = None;
    for voter in others {
        match reported.get(voter) {
            Some(last) => highest = highest.max(*last),
            None => return Some(floor),
        }
    }
    highest.min(Some(floor))
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn lid(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 0), index)
    }

    /// A guard on node 9 whose floor (if any) knew no voters.
    fn guard(floor: Option<LogId>) -> (watch::Sender<Option<VoteFloor>>, VoteGuard) {
        guard_knowing(floor, &[])
    }

    fn guard_knowing(
        floor: Option<LogId>,
        voters: &[NodeId],
    ) -> (watch::Sender<Option<VoteFloor>>, VoteGuard) {
        let floor = floor.map(|log_id| VoteFloor {
            log_id,
            voters: voters.iter().copied().collect(),
        });
        let (sender, receiver) = watch::channel(floor);
        (
            sender,
            VoteGuard::new(receiver, Box::new(|| Some(lid(2, 20)))),
        )
    }

    fn others(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    const ME: NodeId = 9;

    #[test]
    fn without_a_floor_nothing_is_refused() {
        let (_f, g) = guard(None);
        assert_eq!(g.refuse(2, None, ME, others(&[2, 3])), None);
    }

    #[test]
    fn a_candidate_behind_the_floor_is_refused_until_every_other_voter_has_reported() {
        let (_f, g) = guard(Some(lid(22, 22)));
        let voters = others(&[1, 2]);
        // id 2 alone reported: id 1 might hold an entry past it.
        assert_eq!(
            g.refuse(2, Some(lid(13, 27)), ME, voters.clone()),
            Some(lid(22, 22))
        );
        // id 1 reports a shorter log: nobody else holds anything past (13, 27).
        assert_eq!(
            g.refuse(1, Some(lid(1, 25)), ME, voters.clone()),
            Some(lid(13, 27))
        );
        assert_eq!(g.refuse(2, Some(lid(13, 27)), ME, voters.clone()), None);
    }

    #[test]
    fn reports_only_ever_lower_the_floor() {
        let (_f, g) = guard(Some(lid(5, 10)));
        let voters = others(&[2]);
        assert_eq!(g.refuse(2, Some(lid(9, 90)), ME, voters.clone()), None);
        // The only other voter now reports (5, 9): the floor drops to it, not below.
        assert_eq!(g.refuse(2, Some(lid(5, 9)), ME, voters.clone()), None);
        assert_eq!(
            effective_floor(lid(5, 10), &g.reported.lock(), &voters),
            Some(lid(5, 9))
        );
    }

    #[test]
    fn a_lone_voter_keeps_its_floor() {
        let (_f, g) = guard(Some(lid(3, 3)));
        assert_eq!(
            g.refuse(2, Some(lid(1, 1)), ME, others(&[])),
            Some(lid(3, 3))
        );
    }

    #[test]
    fn the_voters_known_at_the_damage_must_report_too() {
        // The cut took the membership back to none: the floor's own voters still count.
        let (_f, g) = guard_knowing(Some(lid(7, 70)), &[ME, 2, 3]);
        assert_eq!(g.refuse(2, Some(lid(6, 60)), ME, []), Some(lid(7, 70)));
        assert_eq!(g.refuse(3, Some(lid(6, 50)), ME, []), Some(lid(6, 60)));
        assert_eq!(g.refuse(2, Some(lid(6, 60)), ME, []), None);
    }

    #[test]
    fn probes_fill_in_the_voters_that_never_campaign() {
        let (_f, g) = guard_knowing(Some(lid(7, 70)), &[ME, 1, 2, 3]);
        assert_eq!(g.unreported(ME, [ME, 2, 3]), vec![1, 2, 3]);
        assert_eq!(
            g.refuse(2, Some(lid(6, 60)), ME, [ME, 2, 3]),
            Some(lid(7, 70))
        );
        g.report(1, Some(lid(5, 50)));
        g.report(3, None);
        assert!(g.unreported(ME, [ME, 2, 3]).is_empty());
        assert_eq!(g.refuse(2, Some(lid(6, 60)), ME, [ME, 2, 3]), None);
        // A probe is answered with the floor while it is above the log.
        assert_eq!(g.probe_answer(), Some(lid(7, 70)));
    }

    #[test]
    fn a_cleared_floor_stops_refusing() {
        let (floor, g) = guard(Some(lid(3, 3)));
        let voters = others(&[2, 3]);
        assert_eq!(
            g.refuse(2, Some(lid(1, 1)), ME, voters.clone()),
            Some(lid(3, 3))
        );
        floor.send_replace(None);
        assert_eq!(g.refuse(2, Some(lid(1, 1)), ME, voters.clone()), None);
    }
}
