//! The policy language: `[[rules]]`, `[[masks]]` and `[functions]` in the gateway's TOML file.
//!
//! The types deserialize exactly what operators write (see `docs/policy.md`); unknown keys are
//! refused so that a typo (`statement = […]`) is an error at startup rather than a rule that
//! silently matches everything. [`PolicyConfig::validate`] then checks what serde cannot
//! (duplicate names, approvals without approvers, malformed column names).

use crate::class::StatementClass;
use crate::error::ConfigError;
use crate::functions::FunctionCatalog;
use postern_core::{Identity, IdentityKind, Target};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

/// How long an approval request waits for a decision when the rule gives no `timeout`.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The policy part of the gateway's config: the `rules`, `masks` and `functions` top-level
/// keys. Other keys of the file are ignored here (they belong to the rest of the config), so
/// the whole file can be deserialized into this type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyConfig {
    /// Guardrails, evaluated in order for every statement; the first match decides.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Masking rules; every matching mask applies (they accumulate).
    #[serde(default)]
    pub masks: Vec<MaskConfig>,
    /// Functions the operator vouches for, by class: `read = ["order_total"]`,
    /// `write = ["archive_order"]`. Functions that are neither built in nor listed here are
    /// `unknown`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub functions: BTreeMap<StatementClass, Vec<String>>,
}

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Refuse the statement with an error naming the rule.
    Block,
    /// Hold the statement until a member of `approvers` approves it.
    Approve,
    /// Let the statement through and stop evaluating rules for it.
    Allow,
}

impl Action {
    /// The name used in config.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Approve => "approve",
            Action::Allow => "allow",
        }
    }
}

/// One `[[rules]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique name, shown to the caller when the rule refuses a statement and recorded with
    /// every decision.
    pub name: String,
    /// Which statements of which sessions the rule applies to; empty matches everything.
    #[serde(default)]
    pub when: When,
    /// What to do with a matching statement.
    pub action: Action,
    /// For `approve`: the groups whose members may decide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// For `approve`: how long the statement waits (`"5m"`, `"90s"`, `"1h 30m"`);
    /// [`DEFAULT_APPROVAL_TIMEOUT`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

impl RuleConfig {
    /// The approval timeout, parsed (call after [`PolicyConfig::validate`]).
    pub fn timeout_duration(&self) -> Result<Duration, ConfigError> {
        match &self.timeout {
            None => Ok(DEFAULT_APPROVAL_TIMEOUT),
            Some(t) => humantime::parse_duration(t).map_err(|e| ConfigError::BadTimeout {
                rule: self.name.clone(),
                value: t.clone(),
                reason: e.to_string(),
            }),
        }
    }
}

/// The conditions of a rule or mask. Every non-empty condition must hold; inside a condition,
/// any listed value may match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// Identity kinds (`"agent"` or `["agent", "service"]`).
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub kind: Vec<IdentityKind>,
    /// Identity subjects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
    /// Groups; the identity must be in at least one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Target names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// Statement classes (rules only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statements: Vec<StatementClass>,
    /// Tables, as `table`, `schema.table` or `schema.*` (rules only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Columns, as `column`, `table.column`, `schema.table.column` or `table.*` (rules only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
}

impl When {
    /// Whether a session of `identity` on `target` is subject to this condition (statement
    /// conditions aside).
    pub fn admits(&self, identity: &Identity, target: &Target) -> bool {
        (self.kind.is_empty() || self.kind.contains(&identity.kind))
            && (self.subjects.is_empty() || self.subjects.contains(&identity.subject))
            && (self.groups.is_empty() || self.groups.iter().any(|g| identity.in_group(g)))
            && (self.targets.is_empty() || self.targets.contains(&target.name))
    }

    fn has_statement_conditions(&self) -> bool {
        !(self.statements.is_empty() && self.tables.is_empty() && self.columns.is_empty())
    }
}

/// Accepts `kind = "agent"` as well as `kind = ["agent", "service"]`.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IdentityKind>, D::Error> {
    struct KindVisitor;
    impl<'de> Visitor<'de> for KindVisitor {
        type Value = Vec<IdentityKind>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an identity kind (human, agent, service) or a list of them")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.parse().map(|k| vec![k]).map_err(E::custom)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut kinds = Vec::new();
            while let Some(k) = seq.next_element::<String>()? {
                kinds.push(k.parse().map_err(de::Error::custom)?);
            }
            Ok(kinds)
        }
    }
    d.deserialize_any(KindVisitor)
}

/// A content detector of the masking engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// E-mail addresses.
    Email,
    /// Payment card numbers (Luhn-checked).
    CreditCard,
    /// US social security numbers.
    UsSsn,
    /// International bank account numbers (checksum-verified).
    Iban,
    /// Telephone numbers.
    Phone,
}

/// How masked values are rewritten.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskStrategy {
    /// Replace the whole value.
    #[default]
    Redact,
    /// Keep the last four characters, mask the rest.
    Partial,
    /// Replace with a keyed, stable hash (equal values stay equal, so joins and counts work).
    Hash,
}

/// One `[[masks]]` entry. Masks are only parsed and validated here; the masking engine applies
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskConfig {
    /// Unique name, recorded when the mask changes a value.
    pub name: String,
    /// Which sessions the mask applies to (`kind`, `subjects`, `groups`, `targets` only).
    #[serde(default)]
    pub when: When,
    /// Columns whose values, and anything derived from them, are masked: `table.column` or
    /// `schema.table.column`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// Content detectors run over everything the server sends back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detectors: Vec<Detector>,
    /// How values are masked.
    #[serde(default)]
    pub strategy: MaskStrategy,
}

impl MaskConfig {
    /// The masked columns, parsed.
    pub fn column_patterns(&self) -> Vec<ColumnPattern> {
        self.columns
            .iter()
            .filter_map(|c| ColumnPattern::parse(c))
            .collect()
    }
}

/// A table as named in config: `table`, `schema.table`, `schema.*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TablePattern {
    /// The schema, when given.
    pub schema: Option<String>,
    /// The table, or `*` for any.
    pub table: String,
}

impl TablePattern {
    /// Parses `table` or `schema.table`.
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        match parts.as_slice() {
            [t] if *t != "*" => Some(TablePattern {
                schema: None,
                table: (*t).to_owned(),
            }),
            [s, t] if *s != "*" => Some(TablePattern {
                schema: Some((*s).to_owned()),
                table: (*t).to_owned(),
            }),
            _ => None,
        }
    }

    /// Whether a table named `schema.name` in a statement may be this table. An unqualified
    /// name in the statement could be in any schema (the search path decides), so it matches a
    /// qualified pattern too: rules err on the side of matching.
    pub fn matches(&self, schema: Option<&str>, name: &str) -> bool {
        (self.table == "*" || self.table == name)
            && match (&self.schema, schema) {
                (Some(p), Some(s)) => p == s,
                _ => true,
            }
    }
}

/// A column as named in config: `column`, `table.column`, `schema.table.column`, `table.*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnPattern {
    /// The table, when given.
    pub table: Option<TablePattern>,
    /// The column, or `*` for any.
    pub column: String,
}

impl ColumnPattern {
    /// Parses `column`, `table.column` or `schema.table.column`.
    pub fn parse(s: &str) -> Option<Self> {
        let (table, column) = match s.rsplit_once('.') {
            Some((t, c)) => (Some(TablePattern::parse(t)?), c),
            None => (None, s),
        };
        if column.is_empty() || (column == "*" && table.is_none()) {
            return None;
        }
        Some(ColumnPattern {
            table,
            column: column.to_owned(),
        })
    }
}

impl PolicyConfig {
    /// Parses the policy keys of a TOML config file and validates them.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: PolicyConfig =
            toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what deserialization cannot: unique non-empty names, approvers and a valid
    /// timeout on every `approve` rule (and only there), well-formed table and column names,
    /// masks that mask something and only select sessions.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            check_name(&mut names, &rule.name, "rule", i)?;
            match rule.action {
                Action::Approve => {
                    if rule.approvers.iter().all(|a| a.trim().is_empty()) {
                        return Err(ConfigError::MissingApprovers(rule.name.clone()));
                    }
                    let timeout = rule.timeout_duration()?;
                    if timeout.is_zero() {
                        return Err(ConfigError::BadTimeout {
                            rule: rule.name.clone(),
                            value: rule.timeout.clone().unwrap_or_default(),
                            reason: "must be longer than zero".into(),
                        });
                    }
                }
                _ if !rule.approvers.is_empty() || rule.timeout.is_some() => {
                    return Err(ConfigError::ApprovalFieldsWithoutApprove(rule.name.clone()));
                }
                _ => {}
            }
            for t in &rule.when.tables {
                if TablePattern::parse(t).is_none() {
                    return Err(ConfigError::BadTable {
                        owner: rule.name.clone(),
                        value: t.clone(),
                    });
                }
            }
            for c in &rule.when.columns {
                if ColumnPattern::parse(c).is_none() {
                    return Err(ConfigError::BadColumn {
                        owner: rule.name.clone(),
                        value: c.clone(),
                    });
                }
            }
        }
        for (i, mask) in self.masks.iter().enumerate() {
            check_name(&mut names, &mask.name, "mask", i)?;
            if mask.when.has_statement_conditions() {
                return Err(ConfigError::MaskStatementConditions(mask.name.clone()));
            }
            if mask.columns.is_empty() && mask.detectors.is_empty() {
                return Err(ConfigError::EmptyMask(mask.name.clone()));
            }
            for c in &mask.columns {
                let ok =
                    ColumnPattern::parse(c).is_some_and(|p| p.table.is_some() && p.column != "*");
                if !ok {
                    return Err(ConfigError::BadMaskColumn {
                        mask: mask.name.clone(),
                        value: c.clone(),
                    });
                }
            }
        }
        for (class, names) in &self.functions {
            if let Some(bad) = names
                .iter()
                .find(|n| n.is_empty() || n.split('.').count() > 2)
            {
                return Err(ConfigError::BadFunction {
                    class: *class,
                    value: bad.clone(),
                });
            }
        }
        Ok(())
    }

    /// The masks that apply to a session of `identity` on `target`, in config order.
    pub fn masks_for(&self, identity: &Identity, target: &Target) -> Vec<&MaskConfig> {
        self.masks
            .iter()
            .filter(|m| m.when.admits(identity, target))
            .collect()
    }

    /// The `[functions]` declarations as a catalog for the analyzer.
    pub fn function_catalog(&self) -> FunctionCatalog {
        let mut catalog = FunctionCatalog::new();
        for (class, names) in &self.functions {
            for name in names {
                catalog.declare(name, *class);
            }
        }
        catalog
    }
}

fn check_name(
    seen: &mut HashSet<String>,
    name: &str,
    kind: &'static str,
    index: usize,
) -> Result<(), ConfigError> {
    if name.trim().is_empty() {
        return Err(ConfigError::EmptyName {
            kind,
            index: index + 1,
        });
    }
    if !seen.insert(name.to_owned()) {
        return Err(ConfigError::DuplicateName(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = r#"
[[rules]]
name = "agents-no-ddl"
when = { kind = "agent", targets = ["shop"], statements = ["ddl", "privilege", "admin", "unknown"] }
action = "block"

[[rules]]
name = "no-unbounded-writes"
when = { kind = "agent", statements = ["unbounded_write"] }
action = "block"

[[rules]]
name = "agent-writes-need-approval"
when = { kind = "agent", statements = ["write"] }
action = "approve"
approvers = ["dba"]            # groups allowed to decide
timeout = "5m"

[[masks]]
name = "customer-pii"
when = { kind = "agent", targets = ["shop"] }
columns = ["customers.ssn", "customers.email", "customers.card"]
detectors = ["email", "credit_card", "us_ssn", "iban", "phone"]
strategy = "redact"            # also "partial" (keep last 4) and "hash" (keyed, stable)
"#;

    #[test]
    fn the_example_parses_as_written() {
        let c = PolicyConfig::from_toml(EXAMPLE).unwrap();
        assert_eq!(c.rules.len(), 3);
        assert_eq!(c.rules[0].when.kind, [IdentityKind::Agent]);
        assert_eq!(
            c.rules[0].when.statements,
            [
                StatementClass::Ddl,
                StatementClass::Privilege,
                StatementClass::Admin,
                StatementClass::Unknown
            ]
        );
        assert_eq!(c.rules[2].action, Action::Approve);
        assert_eq!(
            c.rules[2].timeout_duration().unwrap(),
            Duration::from_secs(300)
        );
        assert_eq!(c.masks[0].detectors.len(), 5);
        assert_eq!(c.masks[0].strategy, MaskStrategy::Redact);
        assert_eq!(
            c.masks[0].column_patterns()[0],
            ColumnPattern {
                table: Some(TablePattern {
                    schema: None,
                    table: "customers".into()
                }),
                column: "ssn".into()
            }
        );
    }

    #[test]
    fn other_top_level_keys_are_ignored_and_kind_may_be_a_list() {
        let c = PolicyConfig::from_toml(
            r#"
            [listeners]
            postgres = "127.0.0.1:6432"
            [[rules]]
            name = "r"
            when = { kind = ["agent", "service"], subjects = ["bot"], groups = ["g"], tables = ["public.orders", "payroll"], columns = ["customers.ssn"] }
            action = "allow"
            [functions]
            read = ["order_total", "shop.price"]
            "#,
        )
        .unwrap();
        assert_eq!(
            c.rules[0].when.kind,
            [IdentityKind::Agent, IdentityKind::Service]
        );
        assert_eq!(c.functions[&StatementClass::Read].len(), 2);
    }

    fn err(text: &str) -> String {
        PolicyConfig::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn invalid_configs_say_what_is_wrong() {
        let e = err(r#"[[rules]]
            name = "x"
            when = { statements = ["dd1"] }
            action = "block""#);
        assert!(e.contains("unknown statement class \"dd1\""), "{e}");
        let e = err(r#"[[rules]]
            name = "x"
            action = "approve""#);
        assert!(e.contains("approvers"), "{e}");
        let e = err(r#"[[rules]]
            name = "x"
            action = "block"
            [[rules]]
            name = "x"
            action = "allow""#);
        assert!(e.contains("\"x\"") && e.contains("unique"), "{e}");
        let e = err(r#"[[rules]]
            name = "x"
            when = { statement = ["ddl"] }
            action = "block""#);
        assert!(e.contains("unknown field `statement`"), "{e}");
        let e = err(r#"[[rules]]
            name = "x"
            when = { kind = "robot" }
            action = "block""#);
        assert!(e.contains("robot"), "{e}");
        let e = err(r#"[[rules]]
            name = "x"
            action = "approve"
            approvers = ["dba"]
            timeout = "soon""#);
        assert!(e.contains("timeout") && e.contains("soon"), "{e}");
        let e = err(r#"[[rules]]
            name = "x"
            action = "block"
            approvers = ["dba"]"#);
        assert!(e.contains("approve"), "{e}");
        let e = err(r#"[[masks]]
            name = "m"
            columns = ["ssn"]"#);
        assert!(e.contains("table.column"), "{e}");
        let e = err(r#"[[masks]]
            name = "m"
            when = { statements = ["read"] }
            columns = ["t.ssn"]"#);
        assert!(e.contains("sessions"), "{e}");
        let e = err(r#"[[masks]]
            name = "m"
            detectors = ["email"]
            strategy = "scramble""#);
        assert!(e.contains("scramble"), "{e}");
    }

    #[test]
    fn patterns() {
        let t = TablePattern::parse("public.orders").unwrap();
        assert!(t.matches(Some("public"), "orders"));
        assert!(t.matches(None, "orders"));
        assert!(!t.matches(Some("shop"), "orders"));
        assert!(
            TablePattern::parse("public.*")
                .unwrap()
                .matches(Some("public"), "x")
        );
        assert!(TablePattern::parse("a.b.c").is_none());
        assert!(ColumnPattern::parse("*").is_none());
        assert!(ColumnPattern::parse("customers.*").is_some());
    }
}
