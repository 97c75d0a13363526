//! Authorization in the simulation. madsim-tonic has no TLS, so every caller is "anonymous";
//! the nodes still run with an ACL (the shipped Casbin model, granting "anonymous" what the
//! workload and the members do), so every RPC goes through `server::auth::Guard` as in
//! production. The check after a run, on the guards' decisions (process-wide counters; one
//! seed per process): no request was refused (the workload and the members are authorized),
//! and each path that did work went through the guard: acknowledged writes mean allowed
//! produce requests, and a cluster that elected a leader had allowed Raft requests.

use loghouse::security::AclText;

use crate::checker::Violation;

pub const AUTHZ_REFUSED: &str = "authorized-request-refused";
pub const AUTHZ_SKIPPED: &str = "work-without-authorization";

/// The ACL every simulated node runs with.
pub fn acl() -> AclText {
    AclText {
        model: include_str!("../examples/acl/model.conf").into(),
        policy: "p, anonymous, *, produce\np, anonymous, *, consume\n\
                 p, anonymous, *, admin\np, anonymous, *, raft\n"
            .into(),
    }
}

/// The guards' decisions against what the history saw: `acked` writes, and whether a leader
/// was elected (in a cluster).
pub fn check(acked: usize, led: bool) -> Vec<Violation> {
    let decisions = loghouse::server::auth_decisions();
    let mut violations = Vec::new();
    let mut violation = |invariant, detail: String| {
        violations.push(Violation {
            invariant,
            detail: format!("{detail} ({decisions:?})"),
        })
    };
    if decisions.refused > 0 {
        let detail = format!(
            "{} requests refused, though the ACL allows everything the simulation does",
            decisions.refused
        );
        violation(AUTHZ_REFUSED, detail);
    }
    if acked > 0 && decisions.produce == 0 {
        violation(
            AUTHZ_SKIPPED,
            format!("{acked} writes acknowledged, no produce authorized"),
        );
    }
    if led && decisions.raft == 0 {
        violation(
            AUTHZ_SKIPPED,
            "a leader was elected, no Raft request authorized".into(),
        );
    }
    violations
}
