//! Statement analysis: what a piece of SQL does, by the PostgreSQL parser itself.
//!
//! [`analyze`] parses the text with `pg_query` (libpg_query, the server's own grammar), walks
//! every node of every statement (the `walk` module) and classifies each statement by everything
//! it does, most consequential effect first: a CTE that deletes is a write, `EXPLAIN ANALYZE` is
//! its inner statement, `PREPARE` is the statement it prepares, a `SELECT` calling `nextval()`
//! writes. Each class comes with a [`Finding`] saying in words what was seen, which becomes the
//! reason a caller reads when a rule blocks the statement.
//!
//! The result depends only on the text (and the declared functions), never on the session, so
//! it can be cached and shared; what does depend on the session (`EXECUTE` of a prepared name)
//! is left for the session to resolve ([`StatementAnalysis::executes`]).

use crate::class::{ClassSet, StatementClass};
use crate::functions::{FunctionCatalog, setting_effect};
use crate::lineage::Lineage;
use crate::verb::{object_name, verb};
use crate::walk::{Facts, RangeFact, RangeRole, walk};
use pg_query::NodeEnum;
use pg_query::protobuf::{self, ObjectType, VariableSetKind};
use std::fmt;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// Why a text could not be analysed. Policy treats such text as [`StatementClass::Unknown`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalysisError {
    /// The PostgreSQL grammar rejects the text (the server would reject it too).
    #[error("statement could not be parsed: {0}")]
    Parse(String),
    /// The parser or the analysis failed unexpectedly; the text is treated as unknown.
    #[error("statement analysis failed unexpectedly")]
    Internal,
}

/// How the server will split the text into tokens, which depends on session settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Lexing {
    /// PostgreSQL's default: `standard_conforming_strings = on`.
    #[default]
    Standard,
    /// `standard_conforming_strings = off`: backslashes escape in plain string literals.
    BackslashEscapes,
}

impl Lexing {
    fn options(self) -> pg_query::ParserOptions {
        match self {
            Lexing::Standard => pg_query::ParserOptions::DEFAULT,
            Lexing::BackslashEscapes => {
                pg_query::ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS
            }
        }
    }
}

/// A possibly schema-qualified name, as written in the statement (PostgreSQL folds unquoted
/// names to lowercase; the analysis does not know the search path).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QualifiedName {
    /// The schema, when the statement names one.
    pub schema: Option<String>,
    /// The object's name.
    pub name: String,
}

impl QualifiedName {
    fn new(schema: &str, name: &str) -> Self {
        QualifiedName {
            schema: (!schema.is_empty()).then(|| schema.to_owned()),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// How a statement uses a table or column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Access {
    /// Its data is read.
    Read,
    /// Its data is changed (or, for `SELECT INTO`/`CREATE TABLE AS`, created and filled).
    Write,
    /// Its definition is created, changed or dropped.
    Schema,
    /// Something else: locked, vacuumed, clustered, reindexed.
    Other,
}

/// A table (or view, sequence, …) the statement touches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableUse {
    /// The name as written.
    pub table: QualifiedName,
    /// How it is used.
    pub access: Access,
}

/// A column the statement references, resolved to its table where the statement says so.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnUse {
    /// The table, when the reference is qualified (aliases resolved) or the statement reads a
    /// single table; `None` when it cannot be told from the text alone.
    pub table: Option<QualifiedName>,
    /// The column, or `*` for `t.*`, `*` and whole-row references such as `row_to_json(t)`.
    pub column: String,
    /// Read or written.
    pub access: Access,
}

/// One thing the analysis saw, with the class it earns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The class.
    pub class: StatementClass,
    /// What was seen, in words (`DELETE without WHERE on public.orders`).
    pub detail: String,
}

/// What one statement does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementAnalysis {
    /// The statement's verb (`SELECT`, `DELETE`, `DROP TABLE`, `EXPLAIN ANALYZE UPDATE`, …).
    pub verb: String,
    /// Where the statement lies in the analysed text (byte offsets).
    pub span: Range<usize>,
    /// Every class the statement earns.
    pub classes: ClassSet,
    /// Why it earns them, in order of discovery.
    pub findings: Vec<Finding>,
    /// Tables it touches.
    pub tables: Vec<TableUse>,
    /// Columns it references.
    pub columns: Vec<ColumnUse>,
    /// Functions it calls, as written.
    pub functions: Vec<String>,
    /// Prepared statements it runs (`EXECUTE name`): their effects are the session's to add.
    pub executes: Vec<String>,
    /// The statement it prepares (`PREPARE name AS …`), for the session to remember.
    pub prepares: Option<(String, Arc<StatementAnalysis>)>,
    /// It changes how the server reads statement text (`SET standard_conforming_strings`).
    pub changes_lexing: bool,
    /// Where its results and stored values come from, when lineage was asked for (sessions
    /// with masks need it; others skip the cost).
    pub lineage: Option<Arc<Lineage>>,
    /// A plain `SELECT`/`INSERT`/`UPDATE`/`DELETE`/`MERGE` whose analysis reads no literal's
    /// value: every text differing from it only in literal values analyses the same, so the
    /// cache shares one analysis among them (see the `shape` module).
    pub literal_free: bool,
}

impl StatementAnalysis {
    fn new(span: Range<usize>) -> Self {
        StatementAnalysis {
            verb: String::new(),
            span,
            classes: ClassSet::EMPTY,
            findings: Vec::new(),
            tables: Vec::new(),
            columns: Vec::new(),
            functions: Vec::new(),
            executes: Vec::new(),
            prepares: None,
            changes_lexing: false,
            lineage: None,
            literal_free: false,
        }
    }

    /// A statement the parser rejected: unknown.
    fn unparseable(text: &str, error: &AnalysisError) -> Self {
        let mut s = StatementAnalysis::new(0..text.len());
        s.verb = leading_word(text);
        s.add(StatementClass::Unknown, error.to_string());
        s
    }

    fn add(&mut self, class: StatementClass, detail: impl Into<String>) {
        self.classes.insert(class);
        self.findings.push(Finding {
            class,
            detail: detail.into(),
        });
    }

    /// The first finding whose class is in `classes`, as `detail (class)`: the reason shown
    /// when a rule targeting `classes` refuses the statement.
    pub fn reason(&self, classes: ClassSet) -> Option<String> {
        self.findings
            .iter()
            .find(|f| classes.contains(f.class))
            .map(|f| format!("{} ({})", f.detail, f.class))
    }

    /// Adds everything `other` does to `self` (used for `EXPLAIN ANALYZE`, re-prepared names).
    pub(crate) fn absorb(&mut self, other: &StatementAnalysis) {
        self.classes = self.classes.union(other.classes);
        for f in &other.findings {
            if !self.findings.contains(f) {
                self.findings.push(f.clone());
            }
        }
        extend_unique(&mut self.tables, &other.tables);
        extend_unique(&mut self.columns, &other.columns);
        extend_unique(&mut self.functions, &other.functions);
        extend_unique(&mut self.executes, &other.executes);
        self.changes_lexing |= other.changes_lexing;
    }
}

fn extend_unique<T: Clone + PartialEq>(into: &mut Vec<T>, from: &[T]) {
    for item in from {
        if !into.contains(item) {
            into.push(item.clone());
        }
    }
}

/// What a whole text (one simple query, one `Parse`) does: one entry per statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// The statements, in order. Empty for an empty query.
    pub statements: Vec<StatementAnalysis>,
    /// Set when the text could not be analysed; `statements` then holds one unknown statement.
    pub error: Option<AnalysisError>,
}

impl Analysis {
    /// Analyses `sql`, turning a failure into a single [`StatementClass::Unknown`] statement
    /// so that policy can decide on it (it never panics).
    pub fn of(sql: &str, lexing: Lexing, functions: &FunctionCatalog) -> Analysis {
        Self::of_with(sql, lexing, functions, false)
    }

    /// Like [`Analysis::of`], with each statement's [`Lineage`] when `lineage` is set.
    pub fn of_with(
        sql: &str,
        lexing: Lexing,
        functions: &FunctionCatalog,
        lineage: bool,
    ) -> Analysis {
        analyze_full(sql, lexing, functions, lineage).unwrap_or_else(|e| Analysis {
            statements: vec![StatementAnalysis::unparseable(sql, &e)],
            error: Some(e),
        })
    }

    /// Every class of every statement.
    pub fn classes(&self) -> ClassSet {
        self.statements
            .iter()
            .fold(ClassSet::EMPTY, |acc, s| acc.union(s.classes))
    }
}

/// Analyses `sql` with PostgreSQL's default lexing and only the built-in function knowledge.
pub fn analyze(sql: &str) -> Result<Analysis, AnalysisError> {
    analyze_with(sql, Lexing::Standard, &FunctionCatalog::default())
}

/// Analyses `sql` as the server would read it under `lexing`, with `functions` declared.
pub fn analyze_with(
    sql: &str,
    lexing: Lexing,
    functions: &FunctionCatalog,
) -> Result<Analysis, AnalysisError> {
    analyze_full(sql, lexing, functions, false)
}

/// Like [`analyze_with`], computing each statement's [`Lineage`] when `lineage` is set.
pub fn analyze_full(
    sql: &str,
    lexing: Lexing,
    functions: &FunctionCatalog,
    lineage: bool,
) -> Result<Analysis, AnalysisError> {
    let parsed = catch_unwind(|| pg_query::parse(sql, lexing.options()))
        .map_err(|_| AnalysisError::Internal)?
        .map_err(|e| AnalysisError::Parse(parse_message(e)))?;
    catch_unwind(AssertUnwindSafe(|| {
        let statements = parsed
            .protobuf
            .stmts
            .iter()
            .filter_map(|raw| {
                let node = raw.stmt.as_ref()?.node.as_ref()?;
                Some(classify(node, span(sql, raw), functions, lineage))
            })
            .collect();
        Analysis {
            statements,
            error: None,
        }
    }))
    .map_err(|_| AnalysisError::Internal)
}

/// The parser's message, kept short: it ends up in the error the caller reads.
fn parse_message(e: pg_query::Error) -> String {
    let message = match e {
        pg_query::Error::Parse(m) => m,
        pg_query::Error::Decode(d) if d.to_string().contains("recursion limit") => {
            "the statement is nested too deeply for the gateway to analyse".to_owned()
        }
        pg_query::Error::Conversion(_) => "the statement contains a NUL byte".to_owned(),
        other => other.to_string(),
    };
    match message.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message,
    }
}

fn span(sql: &str, raw: &protobuf::RawStmt) -> Range<usize> {
    let start = usize::try_from(raw.stmt_location)
        .unwrap_or(0)
        .min(sql.len());
    let end = match usize::try_from(raw.stmt_len) {
        Ok(0) | Err(_) => sql.len(),
        Ok(len) => (start + len).min(sql.len()),
    };
    start..end
}

fn leading_word(text: &str) -> String {
    postern_core::Command {
        source: postern_core::CommandSource::Other,
        text,
        statement: None,
    }
    .leading_keyword()
}

/// Classifies one statement node.
fn classify(
    node: &NodeEnum,
    span: Range<usize>,
    functions: &FunctionCatalog,
    lineage: bool,
) -> StatementAnalysis {
    let facts = walk(node);
    let mut s = StatementAnalysis::new(span.clone());
    collect_names(&mut s, &facts);
    s.verb = verb(node, &facts);
    let mut effects = true;
    use StatementClass::*;
    match node {
        NodeEnum::SelectStmt(_) => s.add(Read, with_tables("SELECT", &s, Access::Read, "on")),
        NodeEnum::InsertStmt(_)
        | NodeEnum::UpdateStmt(_)
        | NodeEnum::DeleteStmt(_)
        | NodeEnum::MergeStmt(_) => {}
        NodeEnum::ExplainStmt(e) => {
            effects = false;
            match e.query.as_ref().and_then(|q| q.node.as_ref()) {
                Some(inner) if explain_analyzes(e) => {
                    let inner = classify(inner, span.clone(), functions, lineage);
                    s.verb = format!("EXPLAIN ANALYZE {}", inner.verb);
                    s.absorb(&inner);
                }
                _ => s.add(Read, "EXPLAIN without ANALYZE (the statement is not run)"),
            }
        }
        NodeEnum::PrepareStmt(p) => {
            effects = false;
            match p.query.as_ref().and_then(|q| q.node.as_ref()) {
                Some(inner) => {
                    let inner = classify(inner, span.clone(), functions, lineage);
                    s.verb = format!("PREPARE {}", inner.verb);
                    s.absorb(&inner);
                    s.prepares = Some((p.name.clone(), Arc::new(inner)));
                }
                None => s.add(Unknown, "PREPARE without a statement"),
            }
        }
        NodeEnum::ExecuteStmt(_) | NodeEnum::CreateTableAsStmt(_) => {}
        NodeEnum::DeclareCursorStmt(_) => {
            s.add(Read, with_tables("DECLARE CURSOR", &s, Access::Read, "on"))
        }
        NodeEnum::CopyStmt(c) => copy(&mut s, c, &facts),
        NodeEnum::TruncateStmt(_) => {
            let detail = with_tables("TRUNCATE", &s, Access::Write, "of");
            s.add(Write, detail.clone());
            s.add(UnboundedWrite, detail);
        }
        NodeEnum::VariableSetStmt(v) => set_statement(&mut s, v),
        NodeEnum::VariableShowStmt(v) => s.add(Session, format!("SHOW {}", v.name)),
        NodeEnum::TransactionStmt(_)
        | NodeEnum::DiscardStmt(_)
        | NodeEnum::DeallocateStmt(_)
        | NodeEnum::ListenStmt(_)
        | NodeEnum::UnlistenStmt(_)
        | NodeEnum::NotifyStmt(_)
        | NodeEnum::ConstraintsSetStmt(_)
        | NodeEnum::ClosePortalStmt(_) => s.add(Session, s.verb.clone()),
        NodeEnum::FetchStmt(_) => s.add(Read, s.verb.clone()),
        NodeEnum::LockStmt(_) => s.add(Lock, with_tables("LOCK TABLE", &s, Access::Other, "on")),
        NodeEnum::DoStmt(_) => s.add(
            Unknown,
            "DO block (procedural code the gateway cannot analyse)",
        ),
        NodeEnum::CallStmt(_) => {
            let name = facts
                .functions
                .first()
                .map(|f| f.parts.join("."))
                .unwrap_or_default();
            s.add(
                Unknown,
                format!("CALL {name}() (a procedure may do anything)"),
            );
        }
        NodeEnum::VacuumStmt(v) => {
            let detail = with_tables(&s.verb, &s, Access::Other, "of");
            if vacuum_full(v) {
                s.add(Ddl, format!("{detail} (rewrites the table)"));
            }
            s.add(Maintenance, detail);
        }
        NodeEnum::ClusterStmt(_) => {
            let detail = with_tables("CLUSTER", &s, Access::Other, "of");
            s.add(Ddl, format!("{detail} (rewrites the table)"));
            s.add(Maintenance, detail);
        }
        NodeEnum::ReindexStmt(_) => {
            s.add(Maintenance, with_tables("REINDEX", &s, Access::Other, "of"))
        }
        NodeEnum::RefreshMatViewStmt(_) => {
            let detail = with_tables("REFRESH MATERIALIZED VIEW", &s, Access::Write, "of");
            s.add(Write, detail.clone());
            s.add(Maintenance, detail);
        }
        NodeEnum::CheckPointStmt(_) | NodeEnum::LoadStmt(_) | NodeEnum::AlterSystemStmt(_) => {
            s.add(Admin, s.verb.clone())
        }
        _ => utility(&mut s, node, &facts),
    }
    if effects {
        add_effects(&mut s, &facts, functions);
    }
    if lineage {
        let tree = serde_json::to_value(node).unwrap_or_default();
        s.lineage = Some(Arc::new(crate::lineage::of_statement(&tree)));
    }
    s.literal_free = !facts.literal_args
        && matches!(
            node,
            NodeEnum::SelectStmt(_)
                | NodeEnum::InsertStmt(_)
                | NodeEnum::UpdateStmt(_)
                | NodeEnum::DeleteStmt(_)
                | NodeEnum::MergeStmt(_)
        );
    s
}

/// Tables, columns and functions named anywhere in the statement.
fn collect_names(s: &mut StatementAnalysis, facts: &Facts) {
    let tables: Vec<(&RangeFact, QualifiedName)> = facts
        .ranges
        .iter()
        .filter(|r| !r.name.is_empty() && !facts.is_cte_reference(r))
        .map(|r| (r, QualifiedName::new(&r.schema, &r.name)))
        .collect();
    for (r, name) in &tables {
        let access = match r.role {
            RangeRole::Read | RangeRole::Copy => Access::Read,
            RangeRole::Modified | RangeRole::Into => Access::Write,
            RangeRole::Utility("TruncateStmt" | "RefreshMatViewStmt") => Access::Write,
            RangeRole::Utility("LockStmt" | "VacuumStmt" | "ClusterStmt" | "ReindexStmt") => {
                Access::Other
            }
            RangeRole::Utility(_) => Access::Schema,
        };
        push_unique(
            &mut s.tables,
            TableUse {
                table: name.clone(),
                access,
            },
        );
    }
    let resolve = |qualifier: &str| -> QualifiedName {
        tables
            .iter()
            .find(|(r, _)| r.alias.as_deref() == Some(qualifier))
            .or_else(|| {
                tables
                    .iter()
                    .find(|(r, _)| r.alias.is_none() && r.name == qualifier)
            })
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| QualifiedName::new("", qualifier))
    };
    let read_tables: Vec<&QualifiedName> = tables
        .iter()
        .filter(|(r, _)| r.role == RangeRole::Read)
        .map(|(_, n)| n)
        .collect();
    for c in &facts.columns {
        if let Some(dml) = c.written_by {
            let table = facts.dml[dml]
                .target
                .map(|t| QualifiedName::new(&facts.ranges[t].schema, &facts.ranges[t].name));
            let column = c.parts.last().cloned().unwrap_or_default();
            push_unique(
                &mut s.columns,
                ColumnUse {
                    table,
                    column,
                    access: Access::Write,
                },
            );
            continue;
        }
        let uses: Vec<(Option<QualifiedName>, String)> = match (c.parts.as_slice(), c.star) {
            ([], _) => vec![(single(&read_tables), "*".into())],
            ([t], true) => vec![(Some(resolve(t)), "*".into())],
            ([s, t], true) | ([_, s, t], true) => {
                vec![(Some(QualifiedName::new(s, t)), "*".into())]
            }
            ([col], false) => {
                let mut uses = vec![(single(&read_tables), col.clone())];
                // A bare name that is a table or alias is a whole-row reference (`row_to_json(t)`).
                if tables
                    .iter()
                    .any(|(r, _)| r.alias.as_deref() == Some(col) || r.name == *col)
                {
                    uses.push((Some(resolve(col)), "*".into()));
                }
                uses
            }
            ([t, col], false) => vec![(Some(resolve(t)), col.clone())],
            ([.., s, t, col], false) => vec![(Some(QualifiedName::new(s, t)), col.clone())],
            _ => vec![],
        };
        for (table, column) in uses {
            push_unique(
                &mut s.columns,
                ColumnUse {
                    table,
                    column,
                    access: Access::Read,
                },
            );
        }
    }
    for f in &facts.functions {
        push_unique(&mut s.functions, f.parts.join("."));
    }
}

fn single(tables: &[&QualifiedName]) -> Option<QualifiedName> {
    match tables {
        [only] => Some((*only).clone()),
        _ => None,
    }
}

fn push_unique<T: PartialEq>(into: &mut Vec<T>, item: T) {
    if !into.contains(&item) {
        into.push(item);
    }
}

/// `verb prep t1, t2` for the statement's tables with `access`, or just `verb`.
fn with_tables(verb: &str, s: &StatementAnalysis, access: Access, prep: &str) -> String {
    let names: Vec<String> = s
        .tables
        .iter()
        .filter(|t| t.access == access)
        .map(|t| t.table.to_string())
        .collect();
    match (names.is_empty(), prep.is_empty()) {
        (true, _) => verb.to_owned(),
        (false, true) => format!("{verb} {}", names.join(", ")),
        (false, false) => format!("{verb} {prep} {}", names.join(", ")),
    }
}

/// Effects found anywhere in the tree: function calls, data-modifying statements (top level or
/// in CTEs), `INTO` targets, row locks, `EXECUTE`s.
fn add_effects(s: &mut StatementAnalysis, facts: &Facts, functions: &FunctionCatalog) {
    use StatementClass::*;
    for d in &facts.dml {
        let table = d
            .target
            .map(|t| QualifiedName::new(&facts.ranges[t].schema, &facts.ranges[t].name))
            .map(|t| t.to_string())
            .unwrap_or_else(|| "?".into());
        let prep = match d.kind {
            "INSERT" | "MERGE" => "into",
            "DELETE" => "from",
            _ => "of",
        };
        let place = if d.in_cte { " in a WITH clause" } else { "" };
        s.add(Write, format!("{} {prep} {table}{place}", d.kind));
        let unbounded = match d.kind {
            "UPDATE" | "DELETE" if !d.has_where => Some("without WHERE"),
            "UPDATE" | "DELETE" if !d.where_refs => Some("with a WHERE that references no column"),
            "MERGE" if !d.where_refs => Some("with an ON condition that references no column"),
            _ => None,
        };
        if let Some(how) = unbounded {
            s.add(
                UnboundedWrite,
                format!("{} {how} on {table}{place}", d.kind),
            );
        }
    }
    if facts.dml.iter().any(|d| d.root) && s.tables.iter().any(|t| t.access == Access::Read) {
        s.add(Read, with_tables("reads", s, Access::Read, "from"));
    }
    for r in facts.ranges.iter().filter(|r| r.role == RangeRole::Into) {
        let t = QualifiedName::new(&r.schema, &r.name);
        s.add(Ddl, format!("creates table {t} from a query"));
        s.add(Write, format!("fills table {t}"));
    }
    if facts.locking {
        s.add(Lock, "SELECT … FOR UPDATE/SHARE (row locks)");
    }
    for f in &facts.functions {
        if let Some(effect) = functions.classify(&f.parts, &f.args) {
            s.changes_lexing |= effect.lexing;
            s.add(effect.class, effect.detail);
        }
    }
    for name in &facts.executes {
        push_unique(&mut s.executes, name.clone());
    }
}

fn explain_analyzes(e: &protobuf::ExplainStmt) -> bool {
    e.options.iter().any(|o| match o.node.as_ref() {
        Some(NodeEnum::DefElem(d)) if d.defname == "analyze" => {
            match d.arg.as_ref().and_then(|a| a.node.as_ref()) {
                None => true,
                Some(NodeEnum::String(v)) => !matches!(
                    v.sval.to_ascii_lowercase().as_str(),
                    "false" | "off" | "0" | "no"
                ),
                Some(NodeEnum::Boolean(b)) => b.boolval,
                Some(NodeEnum::Integer(i)) => i.ival != 0,
                Some(_) => true,
            }
        }
        _ => false,
    })
}

fn vacuum_full(v: &protobuf::VacuumStmt) -> bool {
    v.options.iter().any(|o| {
        matches!(o.node.as_ref(), Some(NodeEnum::DefElem(d)) if d.defname == "full"
            && !matches!(d.arg.as_ref().and_then(|a| a.node.as_ref()),
                Some(NodeEnum::Boolean(b)) if !b.boolval))
    })
}

fn copy(s: &mut StatementAnalysis, c: &protobuf::CopyStmt, facts: &Facts) {
    use StatementClass::*;
    let direction = if c.is_from { "FROM" } else { "TO" };
    if c.is_program {
        s.add(
            Admin,
            format!("COPY … {direction} PROGRAM '{}'", c.filename),
        );
    } else if !c.filename.is_empty() {
        s.add(
            Admin,
            format!("COPY … {direction} server file '{}'", c.filename),
        );
    }
    let relation = facts
        .ranges
        .iter()
        .find(|r| r.role == RangeRole::Copy)
        .map(|r| QualifiedName::new(&r.schema, &r.name));
    if c.is_from {
        if let Some(t) = &relation {
            for u in s.tables.iter_mut().filter(|u| &u.table == t) {
                u.access = Access::Write;
            }
        }
        let t = relation
            .map(|t| t.to_string())
            .unwrap_or_else(|| "?".into());
        s.add(Write, format!("COPY into {t}"));
    } else {
        match relation {
            Some(t) => s.add(Read, format!("COPY from {t}")),
            None => s.add(Read, "COPY (query)"),
        }
    }
}

fn set_statement(s: &mut StatementAnalysis, v: &protobuf::VariableSetStmt) {
    let kind = VariableSetKind::try_from(v.kind).unwrap_or(VariableSetKind::Undefined);
    match kind {
        VariableSetKind::VarResetAll => s.add(StatementClass::Session, "RESET ALL"),
        VariableSetKind::VarSetMulti => s.add(StatementClass::Session, format!("SET {}", v.name)),
        _ => {
            let value = match kind {
                VariableSetKind::VarSetValue => v.args.first().and_then(const_string),
                _ => None,
            };
            let effect = setting_effect(&v.name, value.as_deref());
            s.changes_lexing |= effect.lexing;
            let detail = match (kind, v.name.as_str()) {
                (VariableSetKind::VarReset, _) => format!("RESET {}", v.name),
                (_, "role") => format!("SET ROLE {}", value.as_deref().unwrap_or("")),
                (_, "session_authorization") => "SET SESSION AUTHORIZATION".to_owned(),
                _ => effect.detail,
            };
            s.add(effect.class, detail.trim_end().to_owned());
        }
    }
}

fn const_string(n: &pg_query::protobuf::Node) -> Option<String> {
    match n.node.as_ref()? {
        NodeEnum::AConst(c) => match c.val.as_ref()? {
            protobuf::a_const::Val::Sval(s) => Some(s.sval.clone()),
            protobuf::a_const::Val::Boolval(b) => Some(b.boolval.to_string()),
            protobuf::a_const::Val::Ival(i) => Some(i.ival.to_string()),
            protobuf::a_const::Val::Fval(f) => Some(f.fval.clone()),
            protobuf::a_const::Val::Bsval(b) => Some(b.bsval.clone()),
        },
        _ => None,
    }
}

/// Statements that change privileges or who the session is.
const PRIVILEGE: &[&str] = &[
    "GrantStmt",
    "GrantRoleStmt",
    "CreateRoleStmt",
    "AlterRoleStmt",
    "AlterRoleSetStmt",
    "DropRoleStmt",
    "AlterDefaultPrivilegesStmt",
    "ReassignOwnedStmt",
    "DropOwnedStmt",
    "AlterOwnerStmt",
    "CreatePolicyStmt",
    "AlterPolicyStmt",
    "SecLabelStmt",
    "CreateUserMappingStmt",
    "AlterUserMappingStmt",
    "DropUserMappingStmt",
];

/// Schema statements that reach beyond the database's tables (other databases, the file
/// system, code loaded into the server, replication).
const ADMIN_DDL: &[&str] = &[
    "CreatedbStmt",
    "DropdbStmt",
    "AlterDatabaseStmt",
    "AlterDatabaseSetStmt",
    "AlterDatabaseRefreshCollStmt",
    "CreateTableSpaceStmt",
    "DropTableSpaceStmt",
    "AlterTableSpaceOptionsStmt",
    "AlterTableMoveAllStmt",
    "CreateExtensionStmt",
    "AlterExtensionStmt",
    "AlterExtensionContentsStmt",
    "CreatePlangStmt",
    "CreateEventTrigStmt",
    "AlterEventTrigStmt",
    "CreateFdwStmt",
    "AlterFdwStmt",
    "CreateForeignServerStmt",
    "AlterForeignServerStmt",
    "ImportForeignSchemaStmt",
    "CreateSubscriptionStmt",
    "AlterSubscriptionStmt",
    "DropSubscriptionStmt",
    "CreatePublicationStmt",
    "AlterPublicationStmt",
    "CreateAmStmt",
];

/// Every other utility statement: privilege, admin or plain schema change.
fn utility(s: &mut StatementAnalysis, node: &NodeEnum, facts: &Facts) {
    let detail = match node {
        NodeEnum::DropStmt(d) => {
            let names: Vec<String> = d.objects.iter().filter_map(object_name).collect();
            if matches!(
                ObjectType::try_from(d.remove_type),
                Ok(ObjectType::ObjectTable
                    | ObjectType::ObjectView
                    | ObjectType::ObjectMatview
                    | ObjectType::ObjectIndex
                    | ObjectType::ObjectSequence
                    | ObjectType::ObjectForeignTable)
            ) {
                for n in &names {
                    let (schema, name) = n.rsplit_once('.').unwrap_or(("", n));
                    push_unique(
                        &mut s.tables,
                        TableUse {
                            table: QualifiedName::new(schema, name),
                            access: Access::Schema,
                        },
                    );
                }
            }
            format!("{} {}", s.verb, names.join(", "))
                .trim_end()
                .to_owned()
        }
        _ => with_tables(&s.verb, s, Access::Schema, ""),
    };
    if PRIVILEGE.contains(&facts.root) || changes_table_privileges(node) {
        s.add(StatementClass::Privilege, detail.clone());
        if !matches!(
            facts.root,
            "GrantStmt" | "GrantRoleStmt" | "AlterRoleSetStmt"
        ) {
            s.add(StatementClass::Ddl, detail);
        }
    } else if ADMIN_DDL.contains(&facts.root) {
        s.add(StatementClass::Admin, detail.clone());
        s.add(StatementClass::Ddl, detail);
    } else {
        s.add(StatementClass::Ddl, detail);
    }
}

/// `ALTER TABLE … OWNER TO` and row-level security switches change who may see what.
fn changes_table_privileges(node: &NodeEnum) -> bool {
    use protobuf::AlterTableType::*;
    let NodeEnum::AlterTableStmt(a) = node else {
        return false;
    };
    a.cmds.iter().any(|c| {
        matches!(c.node.as_ref(), Some(NodeEnum::AlterTableCmd(cmd))
            if matches!(protobuf::AlterTableType::try_from(cmd.subtype),
                Ok(AtChangeOwner | AtEnableRowSecurity | AtDisableRowSecurity
                    | AtForceRowSecurity | AtNoForceRowSecurity)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use StatementClass::*;

    fn one(sql: &str) -> StatementAnalysis {
        let mut a = analyze(sql).unwrap();
        assert_eq!(a.statements.len(), 1, "{sql}");
        a.statements.remove(0)
    }

    #[test]
    fn delete_without_where_names_the_table() {
        let s = one("DELETE FROM public.orders");
        assert!(s.classes.contains(UnboundedWrite) && s.classes.contains(Write));
        assert_eq!(
            s.reason(ClassSet::of(UnboundedWrite)).unwrap(),
            "DELETE without WHERE on public.orders (unbounded_write)"
        );
        assert_eq!(
            s.tables,
            [TableUse {
                table: QualifiedName::new("public", "orders"),
                access: Access::Write
            }]
        );
    }

    #[test]
    fn columns_resolve_through_aliases() {
        let s = one("SELECT c.ssn, email FROM shop.customers c WHERE c.id = 1");
        assert!(s.columns.contains(&ColumnUse {
            table: Some(QualifiedName::new("shop", "customers")),
            column: "ssn".into(),
            access: Access::Read
        }));
        assert!(s.columns.contains(&ColumnUse {
            table: Some(QualifiedName::new("shop", "customers")),
            column: "email".into(),
            access: Access::Read
        }));
        let s = one("SELECT row_to_json(c) FROM customers c");
        assert!(s.columns.iter().any(|c| c.column == "*"));
        let s = one("UPDATE t SET a = 1 WHERE id = 2");
        assert!(s.columns.contains(&ColumnUse {
            table: Some(QualifiedName::new("", "t")),
            column: "a".into(),
            access: Access::Write
        }));
    }

    #[test]
    fn spans_and_verbs() {
        let sql = "select 1; drop table x";
        let a = analyze(sql).unwrap();
        let verbs: Vec<&str> = a.statements.iter().map(|s| s.verb.as_str()).collect();
        assert_eq!(verbs, ["SELECT", "DROP TABLE"]);
        assert_eq!(&sql[a.statements[1].span.clone()], "drop table x");
        assert_eq!(
            a.statements[1].reason(ClassSet::of(Ddl)).unwrap(),
            "DROP TABLE x (ddl)"
        );
    }

    #[test]
    fn parse_errors_are_errors_and_of_makes_them_unknown() {
        assert!(matches!(analyze("SELEC 1"), Err(AnalysisError::Parse(_))));
        let a = Analysis::of("SELEC 1", Lexing::Standard, &FunctionCatalog::default());
        assert_eq!(a.classes(), ClassSet::of(Unknown));
        assert!(a.error.is_some());
        let a = Analysis::of("sel\0ect", Lexing::Standard, &FunctionCatalog::default());
        assert_eq!(a.classes(), ClassSet::of(Unknown));
    }

    #[test]
    fn lexing_modes_differ_on_backslashes() {
        // Under standard_conforming_strings = off, \' escapes the quote, so the DROP is code.
        let sql = r"SELECT 'a\'; DROP TABLE t; --'";
        let standard = Analysis::of(sql, Lexing::Standard, &FunctionCatalog::default());
        let legacy = Analysis::of(sql, Lexing::BackslashEscapes, &FunctionCatalog::default());
        assert_eq!(standard.statements.len(), 2);
        assert!(standard.classes().contains(Ddl));
        assert_eq!(legacy.statements.len(), 1);
        assert_eq!(legacy.classes(), ClassSet::of(Read));
    }
}
