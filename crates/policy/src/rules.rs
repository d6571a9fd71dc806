//! Compiled rules: config turned into what the hot path can test quickly.
//!
//! Identity and target conditions are fixed for a session, so they are tested once when the
//! session opens; per statement only the class bit set, tables and columns are tested.
//!
//! Matching semantics. For `block` and `approve`, a statement matches when it has *any* listed
//! class, touches *any* listed table and references *any* listed column. For `allow`, it must
//! be covered entirely: *every* class listed, *every* table it touches listed, *every* column
//! listed — otherwise `allow` rules would be a bypass (an "allow reads" rule must not let an
//! `INSERT … SELECT` skip the approval that follows it, nor a read of one allowed table carry
//! along a read of another).

use crate::analysis::{ColumnUse, StatementAnalysis, TableUse};
use crate::class::{ClassSet, StatementClass};
use crate::config::{Action, ColumnPattern, RuleConfig, TablePattern, When};
use crate::error::ConfigError;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What an `approve` rule asks of the approval flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalSpec {
    /// Groups whose members may approve or deny (never the requester).
    pub approvers: Vec<String>,
    /// How long the statement is held before it fails.
    pub timeout: Duration,
}

/// A rule ready for the hot path.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    pub name: String,
    pub action: Action,
    pub when: When,
    pub classes: ClassSet,
    pub tables: Vec<TablePattern>,
    pub columns: Vec<ColumnPattern>,
    pub approval: Option<ApprovalSpec>,
}

impl CompiledRule {
    pub fn compile(rule: &RuleConfig) -> Result<Self, ConfigError> {
        let approval = match rule.action {
            Action::Approve => Some(ApprovalSpec {
                approvers: rule.approvers.clone(),
                timeout: rule.timeout_duration()?,
            }),
            _ => None,
        };
        Ok(CompiledRule {
            name: rule.name.clone(),
            action: rule.action,
            when: rule.when.clone(),
            classes: rule.when.statements.iter().copied().collect(),
            tables: rule
                .when
                .tables
                .iter()
                .filter_map(|t| TablePattern::parse(t))
                .collect(),
            columns: rule
                .when
                .columns
                .iter()
                .filter_map(|c| ColumnPattern::parse(c))
                .collect(),
            approval,
        })
    }

    /// Whether the statement seen through `view` matches; if so, the reason to report.
    pub fn matches(&self, view: &View<'_>) -> bool {
        let all = self.action == Action::Allow;
        let classes = view.classes();
        let classes_ok = self.classes.is_empty()
            || if all {
                classes.is_subset(self.classes)
            } else {
                classes.intersects(self.classes)
            };
        classes_ok && self.tables_ok(view, all) && self.columns_ok(view, all)
    }

    fn table_matches(&self, t: &TableUse) -> bool {
        self.tables
            .iter()
            .any(|p| p.matches(t.table.schema.as_deref(), &t.table.name))
    }

    fn tables_ok(&self, view: &View<'_>, all: bool) -> bool {
        if self.tables.is_empty() {
            return true;
        }
        let mut tables = view.tables().peekable();
        if all {
            tables.peek().is_some() && tables.all(|t| self.table_matches(t))
        } else {
            tables.any(|t| self.table_matches(t))
        }
    }

    fn column_matches(&self, view: &View<'_>, c: &ColumnUse) -> bool {
        self.columns.iter().any(|p| {
            (p.column == "*" || c.column == "*" || p.column == c.column)
                && match (&p.table, &c.table) {
                    (None, _) => true,
                    (Some(pt), Some(t)) => pt.matches(t.schema.as_deref(), &t.name),
                    // An unqualified column may belong to any table the statement touches.
                    (Some(pt), None) => view
                        .tables()
                        .any(|t| pt.matches(t.table.schema.as_deref(), &t.table.name)),
                }
        })
    }

    fn columns_ok(&self, view: &View<'_>, all: bool) -> bool {
        if self.columns.is_empty() {
            return true;
        }
        let mut columns = view.columns().peekable();
        if all {
            columns.peek().is_some() && columns.all(|c| self.column_matches(view, c))
        } else {
            columns.any(|c| self.column_matches(view, c))
        }
    }

    /// Why the rule matched, in words the caller can act on.
    pub fn reason(&self, view: &View<'_>) -> String {
        let classes = view.classes();
        if !self.classes.is_empty()
            && let Some(r) = view.reason(ClassSet::from_iter(
                self.classes.iter().filter(|c| classes.contains(*c)),
            ))
        {
            return r;
        }
        if let Some(t) = view.tables().find(|t| self.table_matches(t)) {
            return format!("{} touches {}", view.stmt.verb, t.table);
        }
        if let Some(c) = view.columns().find(|c| self.column_matches(view, c)) {
            let column = match &c.table {
                Some(t) => format!("{t}.{}", c.column),
                None => c.column.clone(),
            };
            return format!("{} references {column}", view.stmt.verb);
        }
        view.reason(classes)
            .unwrap_or_else(|| view.stmt.verb.clone())
    }
}

/// One statement as the session sees it: its own analysis plus those of the prepared
/// statements it `EXECUTE`s.
pub(crate) struct View<'a> {
    pub stmt: &'a StatementAnalysis,
    pub prepared: &'a HashMap<String, Arc<StatementAnalysis>>,
}

impl<'a> View<'a> {
    fn executed(&self) -> impl Iterator<Item = (&'a str, Option<&'a StatementAnalysis>)> + 'a {
        let prepared = self.prepared;
        self.stmt
            .executes
            .iter()
            .map(move |n| (n.as_str(), prepared.get(n).map(|a| &**a)))
    }

    fn parts(&self) -> impl Iterator<Item = &'a StatementAnalysis> + 'a {
        std::iter::once(self.stmt).chain(self.executed().filter_map(|(_, a)| a))
    }

    pub fn classes(&self) -> ClassSet {
        let mut classes = self.stmt.classes;
        for (_, analysis) in self.executed() {
            match analysis {
                Some(a) => classes = classes.union(a.classes),
                None => classes.insert(StatementClass::Unknown),
            }
        }
        classes
    }

    pub fn tables(&self) -> impl Iterator<Item = &'a TableUse> + 'a {
        self.parts().flat_map(|p| p.tables.iter())
    }

    pub fn columns(&self) -> impl Iterator<Item = &'a ColumnUse> + 'a {
        self.parts().flat_map(|p| p.columns.iter())
    }

    pub fn reason(&self, classes: ClassSet) -> Option<String> {
        if let Some(r) = self.stmt.reason(classes) {
            return Some(r);
        }
        for (name, analysis) in self.executed() {
            match analysis {
                Some(a) => {
                    if let Some(r) = a.reason(classes) {
                        return Some(format!("EXECUTE {name}: {r}"));
                    }
                }
                None if classes.contains(StatementClass::Unknown) => {
                    return Some(format!(
                        "EXECUTE {name}, a statement this session never prepared (unknown)"
                    ));
                }
                None => {}
            }
        }
        None
    }

    /// The statement with its `EXECUTE`s resolved, as an owned analysis (to remember under a
    /// prepared-statement name).
    pub fn resolved(&self) -> StatementAnalysis {
        let mut owned = self.stmt.clone();
        for (name, analysis) in self.executed() {
            match analysis {
                Some(a) => owned.absorb(a),
                None => owned.findings.push(crate::analysis::Finding {
                    class: StatementClass::Unknown,
                    detail: format!("EXECUTE {name}, a statement this session never prepared"),
                }),
            }
        }
        owned.classes = self.classes();
        owned.executes.clear();
        owned
    }
}
