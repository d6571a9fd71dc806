//! [`RulePolicy`]: the configured rules as the gateway's decision point.
//!
//! One `RulePolicy` serves the whole gateway; each session gets a [`RuleSession`] that holds the
//! rules applying to its identity and target and the session state analysis needs: the
//! statements prepared under each name (so `EXECUTE name` is judged by what it runs) and
//! whether the session changed how the server reads string literals.

use crate::analysis::{Lexing, StatementAnalysis};
use crate::cache::{Analyzer, DEFAULT_CACHE_ENTRIES};
use crate::config::{Action, MaskConfig, PolicyConfig};
use crate::error::ConfigError;
use crate::rules::{ApprovalSpec, CompiledRule, View};
use postern_core::{Command, CommandSource, Decision, Identity, Policy, SessionPolicy, Target};
use std::collections::HashMap;
use std::sync::Arc;

/// How many prepared-statement names a session remembers. Past that, new names are not
/// remembered and `EXECUTE` of them is `unknown` (fail closed).
pub const MAX_PREPARED_PER_SESSION: usize = 10_000;

struct Shared {
    rules: Vec<CompiledRule>,
    config: PolicyConfig,
    analyzer: Arc<Analyzer>,
}

/// The rule-based [`Policy`]: built once from config, shared by every session.
#[derive(Clone)]
pub struct RulePolicy {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RulePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RulePolicy")
            .field("rules", &self.shared.rules.len())
            .field("masks", &self.shared.config.masks.len())
            .finish()
    }
}

impl RulePolicy {
    /// Validates `config` and builds the policy with a cache of
    /// [`DEFAULT_CACHE_ENTRIES`] statement texts.
    pub fn new(config: PolicyConfig) -> Result<Self, ConfigError> {
        Self::with_cache_capacity(config, DEFAULT_CACHE_ENTRIES)
    }

    /// Like [`RulePolicy::new`] with a cache of `capacity` statement texts.
    pub fn with_cache_capacity(config: PolicyConfig, capacity: usize) -> Result<Self, ConfigError> {
        config.validate()?;
        let rules = config
            .rules
            .iter()
            .map(CompiledRule::compile)
            .collect::<Result<_, _>>()?;
        let analyzer = Arc::new(Analyzer::new(capacity, config.function_catalog()));
        Ok(RulePolicy {
            shared: Arc::new(Shared {
                rules,
                config,
                analyzer,
            }),
        })
    }

    /// The shared analyzer: engines and recorders can ask it what a statement does (a cache hit
    /// right after [`SessionPolicy::decide`] saw the same text).
    pub fn analyzer(&self) -> &Arc<Analyzer> {
        &self.shared.analyzer
    }

    /// The config the policy was built from.
    pub fn config(&self) -> &PolicyConfig {
        &self.shared.config
    }

    /// Who may approve statements held by the `approve` rule named `rule`, and for how long
    /// they wait; `None` for unknown rules and rules that do not approve.
    pub fn approval(&self, rule: &str) -> Option<&ApprovalSpec> {
        self.shared
            .rules
            .iter()
            .find(|r| r.name == rule)
            .and_then(|r| r.approval.as_ref())
    }

    /// The masks that apply to a session of `identity` on `target`, in config order.
    pub fn masks_for(&self, identity: &Identity, target: &Target) -> Vec<&MaskConfig> {
        self.shared.config.masks_for(identity, target)
    }

    /// The session-level decision point, as a concrete type (tests and tools that want more
    /// than [`Policy::open_session`] gives).
    pub fn session(&self, identity: &Identity, target: &Target) -> RuleSession {
        let applicable = self
            .shared
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.when.admits(identity, target))
            .map(|(i, _)| i)
            .collect();
        let masked_tables = self
            .masks_for(identity, target)
            .into_iter()
            .flat_map(|mask| {
                mask.columns.iter().filter_map(|column| {
                    let mut parts = column.rsplit('.');
                    let column = parts.next()?;
                    let table = parts.next()?;
                    Some(MaskedColumn {
                        mask: mask.name.clone(),
                        table: table.to_owned(),
                        column: column.to_owned(),
                    })
                })
            })
            .collect();
        RuleSession {
            shared: Arc::clone(&self.shared),
            applicable,
            masked_tables,
            prepared: HashMap::new(),
            lexing_changed: false,
        }
    }
}

impl Policy for RulePolicy {
    fn open_session(&self, identity: &Identity, target: &Target) -> Box<dyn SessionPolicy> {
        Box::new(self.session(identity, target))
    }
}

/// One session's decisions under a [`RulePolicy`].
pub struct RuleSession {
    shared: Arc<Shared>,
    /// Indexes of the rules whose identity and target conditions this session meets.
    applicable: Vec<usize>,
    /// Every masked column that applies to this session. Until the masking engine lands,
    /// statements that reference one (by name, `*` or a whole-row reference) are refused
    /// rather than run unmasked (fail closed).
    masked_tables: Vec<MaskedColumn>,
    /// What each prepared-statement name may run (SQL `PREPARE` and protocol `Parse` share
    /// one namespace in PostgreSQL).
    prepared: HashMap<String, Arc<StatementAnalysis>>,
    /// The session touched `standard_conforming_strings`: from then on every text is analysed
    /// both ways and judged by the union.
    lexing_changed: bool,
}

impl std::fmt::Debug for RuleSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSession")
            .field("applicable", &self.applicable)
            .field("prepared", &self.prepared.len())
            .field("lexing_changed", &self.lexing_changed)
            .finish()
    }
}

/// The strongest outcome so far while walking a text's statements.
/// A column a mask covers, split from its `table.column` form.
#[derive(Debug, Clone)]
struct MaskedColumn {
    mask: String,
    table: String,
    column: String,
}

struct Outcome {
    rule: usize,
    action: Action,
    reason: String,
}

impl RuleSession {
    /// Whether any rule applies to this session at all (if not, everything is allowed and
    /// nothing needs analysing).
    pub fn has_rules(&self) -> bool {
        !self.applicable.is_empty()
    }

    /// The first applicable rule matching `view`: first match wins, `allow` included.
    fn first_match(&self, view: &View<'_>) -> Option<usize> {
        self.applicable
            .iter()
            .copied()
            .find(|&i| self.shared.rules[i].matches(view))
    }

    /// Remembers what `name` may run. A name that is prepared again keeps everything it may
    /// have meant (the server may have refused the new `PREPARE`, and the gateway cannot see
    /// that), and `DEALLOCATE` forgets nothing for the same reason: `EXECUTE` is judged by
    /// every statement ever prepared under the name, which can only err towards caution.
    fn remember(&mut self, name: &str, statement: StatementAnalysis) {
        if let Some(old) = self.prepared.get_mut(name) {
            if **old != statement {
                let mut merged = (**old).clone();
                merged.absorb(&statement);
                *old = Arc::new(merged);
            }
        } else if self.prepared.len() < MAX_PREPARED_PER_SESSION {
            self.prepared.insert(name.to_owned(), Arc::new(statement));
        }
    }
}

impl RuleSession {
    /// The first masked column one of `statements` (or what they execute) references.
    fn masked_table_in(&self, statements: &[StatementAnalysis]) -> Option<(String, String)> {
        let uses = |stmt: &StatementAnalysis| -> Option<(String, String)> {
            let reads_table = |table: &str| {
                stmt.tables
                    .iter()
                    .any(|t| t.table.name.eq_ignore_ascii_case(table))
            };
            stmt.columns.iter().find_map(|used| {
                self.masked_tables.iter().find_map(|m| {
                    let same_table = match &used.table {
                        Some(t) => t.name.eq_ignore_ascii_case(&m.table),
                        None => reads_table(&m.table),
                    };
                    let same_column =
                        used.column == "*" || used.column.eq_ignore_ascii_case(&m.column);
                    (same_table && same_column)
                        .then(|| (m.mask.clone(), format!("{}.{}", m.table, m.column)))
                })
            })
        };
        statements.iter().find_map(|stmt| {
            uses(stmt).or_else(|| {
                stmt.executes
                    .iter()
                    .filter_map(|name| self.prepared.get(name))
                    .find_map(|p| uses(p))
            })
        })
    }
}

impl SessionPolicy for RuleSession {
    fn decide(&mut self, command: &Command<'_>) -> Decision {
        if (self.applicable.is_empty() && self.masked_tables.is_empty())
            || command.source == CommandSource::Other
        {
            return Decision::Allow;
        }
        let analyzer = Arc::clone(&self.shared.analyzer);
        let standard = analyzer.analyze_as(command.text, Lexing::Standard);
        let legacy = self
            .lexing_changed
            .then(|| analyzer.analyze_as(command.text, Lexing::BackslashEscapes));
        let total = standard.statements.len();
        let statements = standard
            .statements
            .iter()
            .enumerate()
            .chain(legacy.iter().flat_map(|a| a.statements.iter().enumerate()));

        let mut outcome: Option<Outcome> = None;
        let mut protocol_statement: Option<StatementAnalysis> = None;
        let mut lexing_changed = false;
        for (index, stmt) in statements {
            let view = View {
                stmt,
                prepared: &self.prepared,
            };
            if let Some(rule) = self.first_match(&view) {
                let action = self.shared.rules[rule].action;
                let stronger = match (&outcome, action) {
                    (_, Action::Allow) => false,
                    (None, _) => true,
                    (Some(o), Action::Block) => o.action != Action::Block,
                    (Some(_), _) => false,
                };
                if stronger {
                    // Only a block shows a reason; approvals carry the rule alone.
                    let reason = if action == Action::Block {
                        let mut reason = self.shared.rules[rule].reason(&view);
                        if total > 1 {
                            reason.push_str(&format!(" in statement {} of {total}", index + 1));
                        }
                        reason
                    } else {
                        String::new()
                    };
                    outcome = Some(Outcome {
                        rule,
                        action,
                        reason,
                    });
                }
            }
            let resolved = (command.source == CommandSource::Prepare).then(|| view.resolved());
            lexing_changed |= stmt.changes_lexing;
            if let Some((name, inner)) = &stmt.prepares {
                self.remember(name, StatementAnalysis::clone(inner));
            }
            if let (CommandSource::Prepare, Some(resolved)) = (command.source, resolved) {
                match &mut protocol_statement {
                    Some(p) => p.absorb(&resolved),
                    None => protocol_statement = Some(resolved),
                }
            }
        }
        self.lexing_changed |= lexing_changed;
        if let (Some(name), Some(statement)) = (command.statement, protocol_statement)
            && !name.is_empty()
        {
            self.remember(name, statement);
        }
        if !matches!(&outcome, Some(o) if o.action == Action::Block)
            && let Some((mask, table)) = self.masked_table_in(&standard.statements)
        {
            return Decision::Block {
                rule: mask,
                reason: format!(
                    "the statement reads the masked column {table}, and masking is not available \
                     in this build; it was refused rather than run unmasked"
                ),
            };
        }
        match outcome {
            None => Decision::Allow,
            Some(o) => {
                let rule = self.shared.rules[o.rule].name.clone();
                match o.action {
                    Action::Block => Decision::Block {
                        rule,
                        reason: o.reason,
                    },
                    Action::Approve => Decision::Approve { rule },
                    Action::Allow => Decision::Allow,
                }
            }
        }
    }
}
