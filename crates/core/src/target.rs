//! Targets: the named resources a caller can reach through the gateway.

use crate::identity::{Identity, IdentityKind};
use serde::{Deserialize, Serialize};

/// The protocol a target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A PostgreSQL server.
    Postgres,
}

impl TargetKind {
    /// The lowercase name used in config.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Postgres => "postgres",
        }
    }
}

/// Who may open a session to a target. An empty list places no restriction of its kind;
/// a non-empty list must be satisfied. All non-empty lists must hold at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetAccess {
    /// Subjects allowed in.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// The caller must be in at least one of these groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The caller's kind must be one of these.
    #[serde(default)]
    pub kinds: Vec<IdentityKind>,
}

impl TargetAccess {
    /// Whether `identity` may open a session under these rules.
    pub fn admits(&self, identity: &Identity) -> bool {
        (self.subjects.is_empty() || self.subjects.contains(&identity.subject))
            && (self.groups.is_empty() || self.groups.iter().any(|g| identity.in_group(g)))
            && (self.kinds.is_empty() || self.kinds.contains(&identity.kind))
    }
}

/// The protocol-neutral view of a target that the core and policy need.
/// Connection details (addresses, credentials, TLS) belong to the protocol engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The name callers use (the PostgreSQL `dbname`).
    pub name: String,
    /// The protocol it speaks.
    pub kind: TargetKind,
    /// Who may open it.
    pub access: TargetAccess,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(subject: &str, groups: &[&str], kind: IdentityKind) -> Identity {
        Identity {
            subject: subject.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            kind,
            issuer: "postern".into(),
            expires_at: 0,
        }
    }

    #[test]
    fn empty_access_admits_everyone() {
        assert!(TargetAccess::default().admits(&who("a", &[], IdentityKind::Agent)));
    }

    #[test]
    fn every_non_empty_list_must_hold() {
        let access = TargetAccess {
            subjects: vec![],
            groups: vec!["dba".into(), "ops".into()],
            kinds: vec![IdentityKind::Human],
        };
        assert!(access.admits(&who("a", &["ops"], IdentityKind::Human)));
        assert!(!access.admits(&who("a", &["ops"], IdentityKind::Agent)));
        assert!(!access.admits(&who("a", &["dev"], IdentityKind::Human)));
    }
}
