//! Authorization in the simulation. madsim-tonic has no TLS, so every caller is "anonymous";
//! the nodes still run with an ACL (the original Loghouse model, granting "anonymous" what the
//! workload and the members do), so every RPC goes through `server::auth::Guard` as in
//! production. The check after a run: no request was refused (the workload and the members
//! are all authorized), and the guards allowed at least as many requests as producers got
//! acknowledgements (an acknowledged write that skipped the guard would break this).

use loghouse::security::AclText;

use crate::checker::Violation;

pub const AUTHZ_REFUSED: &str = "authorized-request-refused";
pub const AUTHZ_SKIPPED: &str = "acknowledged-without-authorization";

/// The ACL every simulated node runs with.
pub fn acl() -> AclText {
    AclText {
        model: include_str!("../examples/acl/model.conf").into(),
        policy: "p, anonymous, *, produce\np, anonymous, *, consume\n\
                 p, anonymous, *, admin\np, anonymous, *, raft\n"
            .into(),
    }
}

/// The guards' decisions against what the history saw acknowledged.
pub fn check(acked: usize) -> Vec<Violation> {
    let (allowed, refused) = loghouse::server::auth_decisions();
    let mut violations = Vec::new();
    if refused > 0 {
        violations.push(Violation {
            invariant: AUTHZ_REFUSED,
            detail: format!(
                "{refused} requests refused, though the ACL allows everything the simulation does"
            ),
        });
    }
    if allowed < acked as u64 {
        violations.push(Violation {
            invariant: AUTHZ_SKIPPED,
            detail: format!("{acked} produces acknowledged but only {allowed} requests authorized"),
        });
    }
    violations
}
