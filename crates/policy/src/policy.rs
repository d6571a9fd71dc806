//! [`RulePolicy`]: the configured rules as the gateway's decision point.
//!
//! One `RulePolicy` serves the whole gateway; each session gets a [`RuleSession`] that holds the
//! rules applying to its identity and target and the session state analysis needs: the
//! statements prepared under each name (so `EXECUTE name` is judged by what it runs) and
//! whether the session changed how the server reads string literals.

use crate::analysis::{Analysis, Lexing, StatementAnalysis};
use crate::cache::{Analyzer, DEFAULT_CACHE_ENTRIES};
use crate::class::StatementClass;
use crate::config::{Action, MaskConfig, PolicyConfig};
use crate::error::ConfigError;
use crate::lineage::Item;
use crate::mask::ValueMasker;
use crate::plan::Resolver;
use crate::rules::{ApprovalSpec, CompiledRule, View};
use postern_core::mask::{
    CatalogColumn, CatalogRelation, ColumnMask, MaskId, MaskedColumnSpec, Masker, RelationKind,
    ResultPlan, SessionMasking, StatementPlan,
};
use postern_core::{
    Command, CommandSource, Decision, Identity, MaskCatalog, Policy, SessionPolicy, Target,
};
use std::collections::HashMap;
use std::sync::Arc;

/// How many prepared-statement names a session remembers. Past that, new names are not
/// remembered and `EXECUTE` of them is `unknown` (fail closed).
pub const MAX_PREPARED_PER_SESSION: usize = 10_000;

struct Shared {
    rules: Vec<CompiledRule>,
    config: PolicyConfig,
    analyzer: Arc<Analyzer>,
    /// The key of the `hash` mask strategy.
    mask_key: [u8; 32],
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
        let mut analyzer = Analyzer::new(capacity, config.function_catalog());
        if !config.masks.is_empty() {
            analyzer = analyzer.with_lineage();
        }
        Ok(RulePolicy {
            shared: Arc::new(Shared {
                rules,
                config,
                analyzer: Arc::new(analyzer),
                mask_key: [0; 32],
            }),
        })
    }

    /// Sets the secret key of the `hash` mask strategy (derive it from a gateway secret so
    /// hashes are stable across restarts and nodes, and cannot be recomputed by callers).
    pub fn with_mask_key(mut self, key: [u8; 32]) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.mask_key = key;
        }
        self
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
        let masks = self.masks_for(identity, target);
        let masking = (!masks.is_empty()).then(|| SessionMask::new(&masks, self.shared.mask_key));
        RuleSession {
            shared: Arc::clone(&self.shared),
            applicable,
            masking,
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
    /// The masks that apply to this session, if any.
    masking: Option<SessionMask>,
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

/// A session's masking state.
struct SessionMask {
    /// The rule a masking refusal names: the first mask applying to the session.
    rule: String,
    /// The masked columns, for the engine to resolve.
    specs: Vec<MaskedColumnSpec>,
    masker: Arc<dyn Masker>,
    resolver: Resolver,
    /// What each cursor declared in the session returns, for `FETCH`.
    cursors: HashMap<String, Arc<Vec<Item>>>,
}

impl SessionMask {
    fn new(masks: &[&MaskConfig], key: [u8; 32]) -> Self {
        let specs: Vec<MaskedColumnSpec> = masks
            .iter()
            .enumerate()
            .flat_map(|(i, mask)| {
                mask.column_patterns().into_iter().map(move |p| {
                    let (schema, table) = match p.table {
                        Some(t) => (t.schema, t.table),
                        None => (None, "*".to_owned()),
                    };
                    MaskedColumnSpec {
                        schema,
                        table,
                        column: p.column,
                        mask: i as MaskId,
                    }
                })
            })
            .collect();
        let resolver = Resolver::by_name(catalog_by_name(&specs));
        SessionMask {
            rule: masks.first().map_or_else(String::new, |m| m.name.clone()),
            specs,
            masker: Arc::new(ValueMasker::new(masks, key)),
            resolver,
            cursors: HashMap::new(),
        }
    }
}

/// What config alone says about masked columns (no OIDs, no other columns).
fn catalog_by_name(specs: &[MaskedColumnSpec]) -> MaskCatalog {
    let mut catalog = MaskCatalog::default();
    for spec in specs.iter().filter(|s| s.table != "*" && s.column != "*") {
        let column = CatalogColumn {
            attnum: 0,
            name: spec.column.clone(),
            mask: ColumnMask::Direct(spec.mask),
        };
        match catalog
            .relations
            .iter_mut()
            .find(|r| r.name == spec.table && Some(&r.schema) == spec.schema.as_ref())
        {
            Some(r) => r.columns.push(column),
            None => catalog.relations.push(CatalogRelation {
                oid: 0,
                schema: spec.schema.clone().unwrap_or_default(),
                name: spec.table.clone(),
                kind: RelationKind::Table,
                columns: vec![column],
            }),
        }
    }
    catalog
}

/// The strongest outcome so far while walking a text's statements.
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
                if merged.lineage != statement.lineage {
                    // Which of the two runs is unknown: its results are masked as opaque.
                    merged.lineage = None;
                }
                *old = Arc::new(merged);
            }
        } else if self.prepared.len() < MAX_PREPARED_PER_SESSION {
            self.prepared.insert(name.to_owned(), Arc::new(statement));
        }
    }
}

impl RuleSession {
    /// Why masking cannot cover `statements`, if it cannot: the statement is then refused
    /// rather than run unmasked (fail closed).
    fn masking_refusal(&self, statements: &[StatementAnalysis]) -> Option<(String, String)> {
        let masking = self.masking.as_ref()?;
        statements.iter().find_map(|stmt| {
            let reason = if let Some(f) = stmt
                .findings
                .iter()
                .find(|f| f.class == StatementClass::Unknown)
            {
                Some(format!(
                    "masks apply to this session and the gateway cannot follow where this \
                     statement's data goes ({}), so it cannot mask its results",
                    f.detail
                ))
            } else {
                match &stmt.lineage {
                    Some(lineage) => masking.resolver.refusal(lineage),
                    None => Some("the statement could not be analysed for masking".to_owned()),
                }
            };
            reason.map(|r| (masking.rule.clone(), r))
        })
    }

    /// The plan for one statement of an allowed command.
    fn statement_plan(
        masking: &mut SessionMask,
        prepared: &HashMap<String, Arc<StatementAnalysis>>,
        stmt: &StatementAnalysis,
    ) -> StatementPlan {
        let Some(lineage) = &stmt.lineage else {
            return StatementPlan::opaque();
        };
        if let Some((name, items)) = &lineage.declares {
            masking.cursors.insert(name.clone(), Arc::clone(items));
        }
        if let Some(name) = &lineage.fetches {
            return match masking.cursors.get(name) {
                Some(items) => masking.resolver.plan(lineage, Some(items)),
                None => StatementPlan::opaque(),
            };
        }
        if let Some(name) = stmt.executes.first() {
            return match prepared.get(name).and_then(|p| p.lineage.clone()) {
                Some(inner) => masking.resolver.plan(&inner, inner.outputs.as_deref()),
                None => StatementPlan::opaque(),
            };
        }
        masking.resolver.plan(lineage, lineage.outputs.as_deref())
    }
}

impl RuleSession {
    /// True when nothing about this command needs reading: no rule or mask applies, or it is
    /// not a statement.
    fn passes_unread(&self, command: &Command<'_>) -> bool {
        (self.applicable.is_empty() && self.masking.is_none())
            || command.source == CommandSource::Other
    }

    /// How the server reads `text` now and, once the session has changed how string literals
    /// are read, the other way too.
    fn readings(&self, text: &str) -> (Arc<Analysis>, Option<Arc<Analysis>>) {
        let analyzer = &self.shared.analyzer;
        let standard = analyzer.analyze_as(text, Lexing::Standard);
        let legacy = self
            .lexing_changed
            .then(|| analyzer.analyze_as(text, Lexing::BackslashEscapes));
        (standard, legacy)
    }

    /// The decision on `command`, read as `standard` (and `legacy`).
    fn decide_on(
        &mut self,
        command: &Command<'_>,
        standard: &Analysis,
        legacy: Option<&Analysis>,
    ) -> Decision {
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
            // What a named prepared statement will run is kept for its EXECUTEs; the unnamed
            // one is replaced by the next Parse, so it is not copied.
            let resolved = (command.source == CommandSource::Prepare
                && command.statement.is_some_and(|name| !name.is_empty()))
            .then(|| view.resolved());
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
            && let Some((rule, reason)) = self
                .masking_refusal(&standard.statements)
                .or_else(|| legacy.and_then(|l| self.masking_refusal(&l.statements)))
        {
            return Decision::Block { rule, reason };
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

impl SessionPolicy for RuleSession {
    fn decide(&mut self, command: &Command<'_>) -> Decision {
        if self.passes_unread(command) {
            return Decision::Allow;
        }
        let (standard, legacy) = self.readings(command.text);
        self.decide_on(command, &standard, legacy.as_deref())
    }

    fn masking(&self) -> Option<SessionMasking> {
        self.masking.as_ref().map(|m| SessionMasking {
            columns: m.specs.clone(),
            masker: Arc::clone(&m.masker),
        })
    }

    fn set_mask_catalog(&mut self, catalog: Arc<MaskCatalog>) {
        if let Some(m) = &mut self.masking {
            m.resolver = Resolver::new(catalog);
        }
    }

    fn result_plan(&mut self, command: &Command<'_>) -> Option<Arc<ResultPlan>> {
        if self.masking.is_none() || command.source == CommandSource::Other {
            return None;
        }
        let analysis = self.shared.analyzer.analyze(command.text);
        self.plan_on(command.text, &analysis, None)
    }

    fn decide_and_plan(
        &mut self,
        command: &Command<'_>,
        plan: bool,
    ) -> (Decision, Option<Arc<ResultPlan>>) {
        if self.passes_unread(command) {
            return (Decision::Allow, None);
        }
        let (standard, legacy) = self.readings(command.text);
        let decision = self.decide_on(command, &standard, legacy.as_deref());
        let plan = match decision {
            Decision::Block { .. } => None,
            _ if plan => self.plan_on(command.text, &standard, legacy.as_deref()),
            _ => None,
        };
        (decision, plan)
    }
}

impl RuleSession {
    /// How to mask the results of `text`, read as `standard` (and `legacy`, when the session
    /// had already changed how literals are read before this command).
    fn plan_on(
        &mut self,
        text: &str,
        standard: &Analysis,
        legacy: Option<&Analysis>,
    ) -> Option<Arc<ResultPlan>> {
        let masking = self.masking.as_mut()?;
        if self.lexing_changed {
            let differs = match legacy {
                Some(legacy) => *standard != *legacy,
                None => {
                    *standard
                        != *self
                            .shared
                            .analyzer
                            .analyze_as(text, Lexing::BackslashEscapes)
                }
            };
            if differs {
                // The session changed how the server reads string literals and the two
                // readings differ: which columns come back cannot be told, so none is trusted.
                return Some(Arc::new(ResultPlan {
                    statements: vec![StatementPlan::opaque()],
                }));
            }
        }
        let statements = standard
            .statements
            .iter()
            .map(|stmt| Self::statement_plan(masking, &self.prepared, stmt))
            .collect();
        let plan = ResultPlan { statements };
        (!plan.is_clean()).then(|| Arc::new(plan))
    }
}
