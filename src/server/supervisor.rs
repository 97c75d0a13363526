//! The one loop that starts a cluster member again when its Raft stops on its own (damage found
//! in its log, a failed write or fsync): `loghouse serve` and the simulation both run it, so the
//! simulation exercises the restart policy production has.
//!
//! A restart reopens the store from disk, which repairs damage and trusts only what was synced.
//! The budget counts restarts *in a row*: a life that stayed up for `healthy_after` resets it,
//! so a long-lived member that stops once a week never runs out, while one that stops at once
//! every time gives up after `restarts_max` tries and reports why.
//!
//! The decision (`RestartBudget::after_stop`) is a pure function of how long the life lasted;
//! `supervise` only measures time (tokio's clock, simulated under madsim) and sleeps.

use std::future::Future;
use std::time::Duration;

/// When to start a member again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts in a row (each after a life shorter than `healthy_after`) before giving up.
    pub restarts_max: u32,
    /// A life at least this long resets the count.
    pub healthy_after: Duration,
    /// Wait before each restart.
    pub restart_delay: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            restarts_max: 10,
            healthy_after: Duration::from_secs(60),
            restart_delay: Duration::from_secs(1),
        }
    }
}

/// How one life of a member ended, when it did not end cleanly.
#[derive(Debug)]
pub enum Stop<E> {
    /// Raft stopped on its own: the member may be started again.
    RaftStopped(String),
    /// Anything else (a bad setting, a port in use): not retried.
    Failed(E),
}

/// What to do after Raft stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start again; this is restart number `n` in a row (1-based).
    Restart(u32),
    /// `restarts_max` restarts in a row did not help.
    GiveUp(u32),
}

/// The count of restarts in a row, and the rule that resets it.
#[derive(Debug, Clone)]
pub struct RestartBudget {
    policy: RestartPolicy,
    restarts_in_a_row: u32,
}

impl RestartBudget {
    pub fn new(policy: RestartPolicy) -> Self {
        RestartBudget {
            policy,
            restarts_in_a_row: 0,
        }
    }

    /// Decides after a life of `lived` ended with Raft stopped.
    pub fn after_stop(&mut self, lived: Duration) -> Decision {
        if lived >= self.policy.healthy_after {
            self.restarts_in_a_row = 0;
        }
        if self.restarts_in_a_row >= self.policy.restarts_max {
            return Decision::GiveUp(self.restarts_in_a_row);
        }
        self.restarts_in_a_row += 1;
        Decision::Restart(self.restarts_in_a_row)
    }
}

/// Runs `life` until it ends cleanly or fails, starting it again (after `restart_delay`) each
/// time Raft stops, within the budget. Giving up returns the last `Stop::RaftStopped`, with the
/// count of restarts tried in its message.
pub async fn supervise<E, F, Fut>(policy: RestartPolicy, mut life: F) -> Result<(), Stop<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), Stop<E>>>,
{
    let mut budget = RestartBudget::new(policy);
    loop {
        let started = tokio::time::Instant::now();
        let reason = match life().await {
            Err(Stop::RaftStopped(reason)) => reason,
            other => return other,
        };
        match budget.after_stop(started.elapsed()) {
            Decision::Restart(restarts) => {
                tracing::warn!(%reason, restarts, "raft stopped; starting the member again");
                tokio::time::sleep(policy.restart_delay).await;
            }
            Decision::GiveUp(restarts) => {
                return Err(Stop::RaftStopped(format!(
                    "raft stopped {} times in a row (each within {:?} of starting); giving \
                     up: {reason}",
                    restarts + 1,
                    policy.healthy_after
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            restarts_max: 3,
            healthy_after: Duration::from_secs(60),
            restart_delay: Duration::ZERO,
        }
    }

    #[test]
    fn quick_stops_exhaust_the_budget() {
        let mut budget = RestartBudget::new(policy());
        let quick = Duration::from_secs(1);
        let decisions: Vec<_> = (0..5).map(|_| budget.after_stop(quick)).collect();
        use Decision::*;
        assert_eq!(
            decisions,
            [Restart(1), Restart(2), Restart(3), GiveUp(3), GiveUp(3)]
        );
    }

    #[test]
    fn a_healthy_life_resets_the_count() {
        let mut budget = RestartBudget::new(policy());
        let quick = Duration::from_secs(1);
        for _ in 0..3 {
            budget.after_stop(quick);
        }
        // A long-lived member that stops now and then never runs out of restarts.
        for _ in 0..100 {
            assert_eq!(
                budget.after_stop(Duration::from_secs(60)),
                Decision::Restart(1)
            );
        }
        assert_eq!(budget.after_stop(quick), Decision::Restart(2));
    }

    #[tokio::test]
    async fn supervise_restarts_raft_stops_and_returns_other_ends() {
        let mut lives = 0;
        let result: Result<(), Stop<&str>> = supervise(policy(), || {
            lives += 1;
            let life = lives;
            async move {
                match life {
                    1 | 2 => Err(Stop::RaftStopped(format!("stop {life}"))),
                    _ => Err(Stop::Failed("bad setting")),
                }
            }
        })
        .await;
        assert!(matches!(result, Err(Stop::Failed("bad setting"))));
        assert_eq!(lives, 3);
    }

    #[tokio::test]
    async fn supervise_gives_up_after_the_budget_naming_the_reason() {
        let mut lives = 0;
        let result: Result<(), Stop<()>> = supervise(policy(), || {
            lives += 1;
            async { Err(Stop::RaftStopped("disk gone".into())) }
        })
        .await;
        match result {
            Err(Stop::RaftStopped(message)) => {
                assert!(message.contains("4 times in a row"), "{message}");
                assert!(message.ends_with("disk gone"), "{message}");
            }
            other => panic!("expected giving up, got {other:?}"),
        }
        assert_eq!(lives, 4);
    }
}
