//! Authentication and authorization at the service boundary: who is calling (the client
//! certificate's CN, or "anonymous" without TLS) and whether the ACL lets them.
//!
//! Every RPC of `log.v1.Log` and `raft.v1.Raft` starts with one call to [`Guard::authorize`].
//! Answers: UNAUTHENTICATED when mutual TLS is on and the caller has no certificate (one from
//! another CA never gets here: it fails the TLS handshake), PERMISSION_DENIED when the policy
//! does not allow the action. Without an ACL everything is allowed (today's behaviour).
//!
//! Under madsim there is no TLS (madsim-tonic ignores it): every caller is "anonymous", and the
//! ACL, if any, still decides.

use std::sync::atomic::{AtomicU64, Ordering};

use tonic::{Request, Status};

use crate::config::NodeConfig;
use crate::security::acl::OBJECT_LOG;
use crate::security::{AclError, Action, Authorizer, ANONYMOUS};

/// The actions any of which lets a caller list the members (GetServers): every client needs it
/// to find the leader. (A refusal names the first, admin.)
pub const DESCRIBE: [Action; 3] = [Action::Admin, Action::Produce, Action::Consume];

/// Requests allowed (by the first action they were checked for) and refused, by every guard in
/// this process: the simulation checks them.
static ALLOWED: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// What every guard in this process has decided so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decisions {
    /// Requests allowed, by action (GetServers counts as admin).
    pub produce: u64,
    pub consume: u64,
    pub admin: u64,
    pub raft: u64,
    /// Requests refused (unauthenticated or denied).
    pub refused: u64,
}

pub fn decisions() -> Decisions {
    let allowed = |action: Action| ALLOWED[action_index(action)].load(Ordering::Relaxed);
    Decisions {
        produce: allowed(Action::Produce),
        consume: allowed(Action::Consume),
        admin: allowed(Action::Admin),
        raft: allowed(Action::Raft),
        refused: REFUSED.load(Ordering::Relaxed),
    }
}

fn action_index(action: Action) -> usize {
    match action {
        Action::Produce => 0,
        Action::Consume => 1,
        Action::Admin => 2,
        Action::Raft => 3,
    }
}

/// A node's authentication and authorization policy.
#[derive(Debug)]
pub struct Guard {
    acl: Option<Authorizer>,
    /// Mutual TLS: a caller without a client certificate is refused.
    cert_required: bool,
}

impl Guard {
    /// From the node's loaded secrets (validated at start-up).
    pub fn new(config: &NodeConfig) -> Result<Guard, AclError> {
        let acl = config
            .secrets
            .acl
            .as_ref()
            .map(|a| a.authorizer())
            .transpose()?;
        let cert_required = cfg!(not(madsim))
            && config
                .secrets
                .tls
                .as_ref()
                .is_some_and(|t| t.client_ca_pem.is_some());
        Ok(Guard { acl, cert_required })
    }

    /// A guard that allows everything (no TLS, no ACL).
    pub fn open() -> Guard {
        Guard {
            acl: None,
            cert_required: false,
        }
    }

    /// The caller's subject if it may perform `action` on the log.
    pub fn authorize<T>(&self, request: &Request<T>, action: Action) -> Result<String, Status> {
        self.authorize_any(request, &[action])
    }

    /// The caller's subject if it may perform any of `actions` on the log.
    pub fn authorize_any<T>(
        &self,
        request: &Request<T>,
        actions: &[Action],
    ) -> Result<String, Status> {
        self.authorize_on(request, OBJECT_LOG, actions)
    }

    /// The caller's subject if it may perform any of `actions` on the topic named `topic`
    /// (a policy line for the object `*` grants every topic).
    pub fn authorize_topic<T>(
        &self,
        request: &Request<T>,
        topic: &str,
        actions: &[Action],
    ) -> Result<String, Status> {
        self.authorize_on(request, topic, actions)
    }

    /// Whether `subject` (from an earlier `authorize_*`) may perform any of `actions` on
    /// `topic`: for a stream whose messages name topics, and for listing topics.
    pub fn check_topic(
        &self,
        subject: &str,
        topic: &str,
        actions: &[Action],
    ) -> Result<(), Status> {
        let decision = self.check(subject, topic, actions);
        count(&decision.as_ref().map(drop), actions);
        decision
    }

    /// The caller's subject, without an authorization check (UNAUTHENTICATED when mutual TLS
    /// is on and the caller has no certificate).
    pub fn authenticate<T>(&self, request: &Request<T>) -> Result<String, Status> {
        self.subject(request)
    }

    fn authorize_on<T>(
        &self,
        request: &Request<T>,
        object: &str,
        actions: &[Action],
    ) -> Result<String, Status> {
        let decision = self.decide(request, object, actions);
        count(&decision.as_ref().map(drop), actions);
        decision
    }

    fn decide<T>(
        &self,
        request: &Request<T>,
        object: &str,
        actions: &[Action],
    ) -> Result<String, Status> {
        let subject = self.subject(request)?;
        self.check(&subject, object, actions)?;
        Ok(subject)
    }

    /// The ACL's answer for `object`, a topic name or `*`: a topic is granted by a policy line
    /// naming it or naming `*`. A refusal names the topic, except the default topic's, which
    /// names `*` (what a policy written for the one-log API grants).
    fn check(&self, subject: &str, object: &str, actions: &[Action]) -> Result<(), Status> {
        let Some(acl) = &self.acl else {
            return Ok(());
        };
        let first = match acl.check_any(subject, object, actions) {
            Ok(()) => return Ok(()),
            Err(denied) => denied,
        };
        if object == OBJECT_LOG {
            return Err(denied_status(subject, first));
        }
        match acl.check_any(subject, OBJECT_LOG, actions) {
            Ok(()) => Ok(()),
            Err(wildcard) if object == crate::topic::DEFAULT_TOPIC => {
                Err(denied_status(subject, wildcard))
            }
            Err(_) => Err(denied_status(subject, first)),
        }
    }
}

fn denied_status(subject: &str, denied: crate::security::acl::Denied) -> Status {
    tracing::debug!(%subject, action = %denied.action, "request denied by the ACL");
    Status::permission_denied(denied.to_string())
}

fn count(decision: &Result<(), &Status>, actions: &[Action]) {
    let counter = match (decision, actions.first()) {
        (Ok(()), Some(action)) => &ALLOWED[action_index(*action)],
        _ => &REFUSED,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Guard {
    /// The caller's certificate CN; "anonymous" when it presented none and none is required.
    #[cfg(not(madsim))]
    fn subject<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let certs = request.peer_certs();
        let Some(leaf) = certs.as_ref().and_then(|c| c.first()) else {
            if self.cert_required {
                return Err(Status::unauthenticated(
                    "this node requires a client certificate signed by its CA (mutual TLS)",
                ));
            }
            return Ok(ANONYMOUS.to_owned());
        };
        crate::security::tls::common_name(leaf)
            .filter(|cn| !cn.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("the client certificate has no subject common name")
            })
    }

    #[cfg(madsim)]
    fn subject<T>(&self, _request: &Request<T>) -> Result<String, Status> {
        debug_assert!(!self.cert_required, "no TLS under madsim");
        Ok(ANONYMOUS.to_owned())
    }
}
