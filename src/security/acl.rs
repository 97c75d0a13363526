//! Authorization: a Casbin enforcer built once from model and policy text (the original
//! Loghouse's `model.conf` / `policy.csv` keep working), then asked per request, synchronously.
//!
//! The enforcer is built from strings (`DefaultModel::from_str`, `StringAdapter`): nothing here
//! touches the file system, so the same code runs under the simulator. Casbin's constructors are
//! `async` but do no I/O with these adapters; a small `block_on` drives them.

use casbin::{CoreApi, DefaultModel, Enforcer, StringAdapter};

/// The object every request is about: the one log (the original Loghouse's `objectWildcard`).
pub const OBJECT_LOG: &str = "*";

/// What a request does. The names are the policy's action strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Produce, ProduceStream, ProduceBatch.
    Produce,
    /// Consume, ConsumeStream, ConsumeBatch, ConsumeBatchStream, OffsetForTime, GetLogInfo.
    Consume,
    /// Operator actions. Today it grants GetServers (`cluster status`), which any of
    /// produce/consume/admin grants too (a client needs it to find the leader).
    Admin,
    /// The members-only Raft RPCs (AppendEntries, Vote, InstallSnapshot): peers only.
    Raft,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Produce => "produce",
            Action::Consume => "consume",
            Action::Admin => "admin",
            Action::Raft => "raft",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The model or the policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("invalid ACL model: {0}")]
    Model(String),
    #[error("invalid ACL policy: {0}")]
    Policy(String),
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{subject} is not permitted to {action} on {object}")]
pub struct Denied {
    pub subject: String,
    pub object: String,
    pub action: Action,
}

/// Decides whether a subject may perform an action on an object.
pub struct Authorizer {
    enforcer: Enforcer,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").finish_non_exhaustive()
    }
}

impl Authorizer {
    /// Builds the enforcer from a Casbin model (`model.conf` text) and policy (`policy.csv`
    /// text). Must not be called from inside casbin's own executor; any thread will do.
    pub fn new(model: &str, policy: &str) -> Result<Authorizer, AclError> {
        let model = futures::executor::block_on(DefaultModel::from_str(model))
            .map_err(|e| AclError::Model(e.to_string()))?;
        check_policy_lines(policy)?;
        let adapter = StringAdapter::new(policy);
        let enforcer =
            futures::executor::block_on(Enforcer::new(model, adapter)).map_err(|e| match e {
                casbin::Error::ModelError(e) => AclError::Model(e.to_string()),
                e => AclError::Policy(e.to_string()),
            })?;
        let authorizer = Authorizer { enforcer };
        // A model whose matcher does not evaluate fails here, at start-up, not per request.
        authorizer
            .enforcer
            .enforce(("loghouse-probe", OBJECT_LOG, Action::Consume.as_str()))
            .map_err(|e| AclError::Model(format!("the matcher does not evaluate: {e}")))?;
        Ok(authorizer)
    }

    /// `Ok` if the policy allows `subject` to perform `action` on `object`. A matcher that fails
    /// to evaluate denies.
    pub fn check(&self, subject: &str, object: &str, action: Action) -> Result<(), Denied> {
        match self.enforcer.enforce((subject, object, action.as_str())) {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.denied(subject, object, action)),
            Err(error) => {
                tracing::warn!(%error, subject, object, %action, "ACL evaluation failed: denied");
                Err(self.denied(subject, object, action))
            }
        }
    }

    /// `Ok` if the policy allows any of `actions`; the error names the first.
    pub fn check_any(&self, subject: &str, object: &str, actions: &[Action]) -> Result<(), Denied> {
        let mut first = None;
        for action in actions {
            match self.check(subject, object, *action) {
                Ok(()) => return Ok(()),
                Err(denied) => {
                    first.get_or_insert(denied);
                }
            }
        }
        Err(first.unwrap_or_else(|| self.denied(subject, object, Action::Admin)))
    }

    fn denied(&self, subject: &str, object: &str, action: Action) -> Denied {
        Denied {
            subject: subject.to_owned(),
            object: object.to_owned(),
            action,
        }
    }
}

/// casbin skips lines it does not understand; refuse them instead, naming the line, so a typo
/// in the policy is a start-up error and not a silently missing permission.
fn check_policy_lines(policy: &str) -> Result<(), AclError> {
    for (number, line) in policy.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let known_kind = fields[0].starts_with('p') || fields[0].starts_with('g');
        if !known_kind || fields.len() < 2 || fields.iter().any(|f| f.is_empty()) {
            return Err(AclError::Policy(format!(
                "line {}: {line:?} is not a policy line (`p, SUBJECT, OBJECT, ACTION`)",
                number + 1
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The original Loghouse's model and policy, verbatim in substance.
    const ORIGINAL_MODEL: &str = "[request_definition]\nr = sub, obj, act\n\n\
        [policy_definition]\np = sub, obj, act\n\n[policy_effect]\ne = some(where (p.eft == allow))\n\n\
        [matchers]\nm = r.sub == p.sub && r.obj == p.obj && r.act == p.act\n";
    const ORIGINAL_POLICY: &str = "p, root, *, produce\np, root, *, consume\n";

    fn shipped() -> Authorizer {
        Authorizer::new(
            include_str!("../../examples/acl/model.conf"),
            include_str!("../../examples/acl/policy.csv"),
        )
        .unwrap()
    }

    #[test]
    fn the_original_model_and_policy_still_work() {
        let acl = Authorizer::new(ORIGINAL_MODEL, ORIGINAL_POLICY).unwrap();
        acl.check("root", OBJECT_LOG, Action::Produce).unwrap();
        acl.check("root", OBJECT_LOG, Action::Consume).unwrap();
        let denied = acl
            .check("nobody", OBJECT_LOG, Action::Produce)
            .unwrap_err();
        assert_eq!(denied.subject, "nobody");
        assert_eq!(denied.action, Action::Produce);
        assert!(acl.check("root", OBJECT_LOG, Action::Raft).is_err());
        assert!(acl.check("anonymous", OBJECT_LOG, Action::Consume).is_err());
    }

    #[test]
    fn the_shipped_example_separates_clients_from_peers() {
        let acl = shipped();
        acl.check("root", OBJECT_LOG, Action::Admin).unwrap();
        acl.check("node-2", OBJECT_LOG, Action::Raft).unwrap();
        assert!(acl.check("root", OBJECT_LOG, Action::Raft).is_err());
        assert!(acl.check("node-2", OBJECT_LOG, Action::Produce).is_err());
        assert!(acl.check("nobody", OBJECT_LOG, Action::Consume).is_err());
    }

    #[test]
    fn check_any_allows_if_one_action_is_allowed() {
        let acl = Authorizer::new(ORIGINAL_MODEL, "p, writer, *, produce\n").unwrap();
        let describe = [Action::Produce, Action::Consume, Action::Admin];
        acl.check_any("writer", OBJECT_LOG, &describe).unwrap();
        let denied = acl.check_any("nobody", OBJECT_LOG, &describe).unwrap_err();
        assert_eq!(denied.action, Action::Produce);
    }

    #[test]
    fn a_subject_that_looks_like_code_is_just_a_name() {
        let acl = Authorizer::new(ORIGINAL_MODEL, ORIGINAL_POLICY).unwrap();
        for subject in ["root\" || true || \"", "root' ", "", "*"] {
            assert!(
                acl.check(subject, OBJECT_LOG, Action::Produce).is_err(),
                "{subject:?}"
            );
        }
    }

    #[test]
    fn bad_models_and_policies_are_refused_at_load() {
        let err = Authorizer::new("[matchers]\nm = r.sub ==", ORIGINAL_POLICY).unwrap_err();
        assert!(matches!(err, AclError::Model(_)), "{err}");
        let err =
            Authorizer::new(ORIGINAL_MODEL, "p, root, *, produce\nroot consume\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = Authorizer::new(ORIGINAL_MODEL, "p, root, , produce\n").unwrap_err();
        assert!(matches!(err, AclError::Policy(_)), "{err}");
    }

    #[test]
    fn comments_and_blank_lines_are_fine() {
        let acl =
            Authorizer::new(ORIGINAL_MODEL, "# who may write\n\np, root, *, produce\n").unwrap();
        acl.check("root", OBJECT_LOG, Action::Produce).unwrap();
    }
}
