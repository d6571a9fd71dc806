//! Data lineage: where each value a statement returns (or stores) comes from.
//!
//! Masking must follow data, not names: `SELECT e FROM (SELECT email AS e FROM customers) s`,
//! `SELECT upper(email)`, `SELECT row_to_json(c) FROM customers c` and a `UNION` branch all
//! return masked data under another name. This module walks a statement's parse tree and
//! resolves every output column to the base-table columns it derives from, following aliases,
//! subqueries, CTEs, joins, set operations, sub-links and function arguments. The result is
//! symbolic (table and column *names*); a session resolves it against the target's catalog
//! ([`postern_core::MaskCatalog`]) to decide what to mask.
//!
//! Why JSON: the parse tree's ~270 node types derive `Serialize`; walking its JSON form lets
//! one generic rule ("any node not understood: everything inside it flows into the value")
//! cover every expression type, so a node this module does not know can only over-mask, never
//! leak. Name resolution is deliberately conservative: an unqualified column may come from
//! any relation in any enclosing scope, and a name that is also a relation's alias may be a
//! whole-row reference.

use postern_core::mask::CopyFormat;
use serde_json::Value;
use std::sync::Arc;

/// A relation as a statement names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelName {
    /// The schema, when written.
    pub schema: Option<String>,
    /// The relation's name.
    pub name: String,
}

/// Where a value can come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// A column of a relation read by the statement.
    Column {
        /// The relation.
        rel: RelName,
        /// The column.
        column: String,
    },
    /// Every column of a relation (a whole-row reference, `t.*` inside an expression, or a
    /// column reached through renamed columns).
    WholeRow(RelName),
    /// Something the analysis cannot follow (statistics views, a cursor it did not see): a
    /// masked session treats it as masked.
    Opaque,
}

/// How one value is computed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Derivation {
    /// Everything that flows into it.
    pub sources: Vec<Source>,
    /// The value *is* its single column source, unchanged (so a mask's strategy may apply);
    /// otherwise it is computed and, if tainted, fully redacted.
    pub direct: bool,
}

impl Derivation {
    fn absorb(&mut self, other: Derivation) {
        self.direct = false;
        for s in other.sources {
            if !self.sources.contains(&s) {
                self.sources.push(s);
            }
        }
    }

    fn computed(mut self) -> Derivation {
        self.direct = false;
        self
    }

    /// A name that may refer to any of `candidates`: the one candidate as it is (keeping its
    /// directness), or several merged into one computed value; `None` for no candidate.
    fn either(mut candidates: Vec<Derivation>) -> Option<Derivation> {
        match candidates.len() {
            0 => None,
            1 => candidates.pop(),
            _ => Some(candidates.into_iter().collect()),
        }
    }
}

/// Everything that flows into any of the values: the union of their sources, computed.
impl FromIterator<Derivation> for Derivation {
    fn from_iter<I: IntoIterator<Item = Derivation>>(items: I) -> Self {
        let mut d = Derivation::default();
        for item in items {
            d.absorb(item);
        }
        d
    }
}

/// One entry of an output list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// One column.
    Value(Derivation),
    /// `*` or `t.*` over a base relation: the server expands it to the relation's columns.
    StarOf(RelName),
    /// Columns of unknown number (`*` over a function, a set operation mixing stars): every
    /// one of them may derive from these sources.
    StarUnknown(Derivation),
}

/// The lineage of one statement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lineage {
    /// The columns of the rows it returns, `None` when it returns none this analysis tracks.
    pub outputs: Option<Vec<Item>>,
    /// Values it stores somewhere that outlives it (written rows, created tables and views,
    /// files, settings, notifications): masked data must not flow there.
    pub stored: Derivation,
    /// Every column it reads, anywhere (even in `WHERE`).
    pub reads: Derivation,
    /// `COPY … TO STDOUT`: the layout of its data.
    pub copy: Option<CopyFormat>,
    /// `DECLARE name CURSOR FOR …`: the cursor and the lineage of what `FETCH` returns.
    pub declares: Option<(String, Arc<Vec<Item>>)>,
    /// `FETCH`/`MOVE` from this cursor: its rows are the declared query's.
    pub fetches: Option<String>,
}

/// Functions whose arguments persist beyond the statement (or leave the database).
const STORING_FUNCTIONS: &[&str] = &[
    "set_config",
    "pg_notify",
    "lo_from_bytea",
    "lo_put",
    "lowrite",
    "lo_import",
    "lo_export",
    "dblink",
    "dblink_exec",
    "dblink_send_query",
    "pg_logical_emit_message",
    "pg_file_write",
    "pg_advisory_lock",
    "setval",
];

/// Catalog relations that expose samples of table data (most common values, histograms).
const STATISTICS_RELATIONS: &[&str] = &[
    "pg_stats",
    "pg_statistic",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_statistic_ext_data",
];

/// Computes the lineage of one statement (the JSON form of a statement `Node`).
pub fn of_statement(node: &Value) -> Lineage {
    let mut walker = Walker::default();
    let outputs = walker.statement(node).map(strip_names);
    Lineage {
        outputs,
        stored: walker.stored,
        reads: walker.reads,
        copy: walker.copy,
        declares: walker.declares,
        fetches: walker.fetches,
    }
}

/// An output item with the name it is known by (for a subquery's or CTE's columns).
#[derive(Debug, Clone)]
struct Named {
    /// `None` for star expansions, whose column names the statement does not say.
    name: Option<String>,
    item: Item,
}

fn strip_names(items: Vec<Named>) -> Vec<Item> {
    items.into_iter().map(|n| n.item).collect()
}

/// What a FROM entry provides.
#[derive(Debug, Clone)]
enum Provides {
    /// A base relation (table or view), columns unknown to the statement.
    Base(RelName),
    /// The columns of a subquery or CTE, in order.
    Columns(Vec<Named>),
    /// Any column derives from this (functions, table functions, statistics views, renamed
    /// relations).
    Opaque(Derivation),
    /// A join with an alias: its inner entries.
    Join(Vec<Entry>),
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    provides: Provides,
}

/// One query level's names: its FROM entries and the CTEs it can see.
#[derive(Debug, Default, Clone)]
struct Scope {
    entries: Vec<Entry>,
    ctes: Vec<(String, Vec<Named>)>,
}

#[derive(Default)]
struct Walker {
    /// Enclosing scopes, outermost first.
    scopes: Vec<Scope>,
    stored: Derivation,
    reads: Derivation,
    copy: Option<CopyFormat>,
    declares: Option<(String, Arc<Vec<Item>>)>,
    fetches: Option<String>,
}

/// `{"node": {"Kind": {...}}}` (or `{"Kind": {...}}`) → ("Kind", {...}).
fn unwrap_node(v: &Value) -> Option<(&str, &Value)> {
    let inner = v.get("node").unwrap_or(v);
    let obj = inner.as_object()?;
    let (k, v) = obj.iter().next()?;
    (obj.len() == 1).then_some((k.as_str(), v))
}

fn list<'v>(v: &'v Value, key: &str) -> impl Iterator<Item = &'v Value> + use<'v> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

fn string(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn present<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn sval(node: &Value) -> Option<String> {
    match unwrap_node(node)? {
        ("String", s) => s.get("sval").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn range_name(rv: &Value) -> RelName {
    let schema = string(rv, "schemaname");
    RelName {
        schema: (!schema.is_empty()).then_some(schema),
        name: string(rv, "relname"),
    }
}

/// An `AS name (col, …)` clause.
fn alias(v: &Value) -> Option<(String, Vec<String>)> {
    let a = present(v, "alias")?;
    let names = list(a, "colnames").filter_map(sval).collect();
    Some((string(a, "aliasname"), names))
}

fn is_star(v: &Value) -> bool {
    matches!(unwrap_node(v), Some(("AStar", _)))
}

fn opaque() -> Derivation {
    Derivation {
        sources: vec![Source::Opaque],
        direct: false,
    }
}

fn column_of(rel: &RelName, column: &str) -> Derivation {
    Derivation {
        sources: vec![Source::Column {
            rel: rel.clone(),
            column: column.to_owned(),
        }],
        direct: true,
    }
}

fn whole_row(rel: &RelName) -> Derivation {
    Derivation {
        sources: vec![Source::WholeRow(rel.clone())],
        direct: false,
    }
}

impl Walker {
    /// The rows a top-level statement returns, recording stores and reads on the way.
    fn statement(&mut self, node: &Value) -> Option<Vec<Named>> {
        let (kind, body) = unwrap_node(node)?;
        match kind {
            "SelectStmt" => {
                let items = self.select(body);
                if present(body, "into_clause").is_some() {
                    self.store(&items);
                    return None;
                }
                Some(items)
            }
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => self.dml(kind, body),
            "CreateTableAsStmt" | "ViewStmt" => {
                if let Some(q) = present(body, "query") {
                    let items = self.query(q);
                    self.store(&items);
                }
                None
            }
            "ExplainStmt" => {
                // The plan is text about the statement; an ANALYZEd statement runs, so what
                // it stores still counts.
                if let Some(q) = present(body, "query") {
                    self.statement(q);
                }
                None
            }
            "CopyStmt" => self.copy_stmt(body),
            "DeclareCursorStmt" => {
                let items = present(body, "query")
                    .map(|q| self.query(q))
                    .unwrap_or_default();
                self.declares = Some((string(body, "portalname"), Arc::new(strip_names(items))));
                None
            }
            "FetchStmt" => {
                self.fetches = Some(string(body, "portalname"));
                None
            }
            "PrepareStmt" | "ExecuteStmt" => None,
            _ => {
                // Utility statements return no rows tracked here but may hold expressions
                // (`NOTIFY`, `SET x = …`, `CREATE FUNCTION … AS …`): what they reference
                // is stored.
                let d = self.expr(body);
                self.stored.absorb(d);
                None
            }
        }
    }

    fn store(&mut self, items: &[Named]) {
        for n in items {
            let d = item_derivation(&n.item);
            self.stored.absorb(d);
        }
    }

    fn top(&mut self) -> &mut Scope {
        if self.scopes.is_empty() {
            self.scopes.push(Scope::default());
        }
        let last = self.scopes.len() - 1;
        &mut self.scopes[last]
    }

    fn add_from<'v>(&mut self, items: impl Iterator<Item = &'v Value>) {
        for f in items {
            let entries = self.range_item(f);
            self.top().entries.extend(entries);
        }
    }

    fn read(&mut self, v: Option<&Value>) {
        if let Some(v) = v {
            let d = self.expr(v);
            self.reads.absorb(d);
        }
    }

    /// INSERT/UPDATE/DELETE/MERGE: stored values, and RETURNING as output.
    fn dml(&mut self, kind: &str, body: &Value) -> Option<Vec<Named>> {
        self.scopes.push(Scope::default());
        self.with_clause(present(body, "with_clause"));
        self.add_from(list(body, "from_clause"));
        self.add_from(list(body, "using_clause"));
        if kind == "MergeStmt"
            && let Some(src) = present(body, "source_relation")
        {
            self.add_from(std::iter::once(src));
        }
        if let Some(rv) = present(body, "relation") {
            let rel = range_name(rv);
            let name = alias(rv)
                .map(|(n, _)| n)
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| rel.name.clone());
            self.top().entries.push(Entry {
                name,
                provides: Provides::Base(rel),
            });
        }
        if let Some(select) = present(body, "select_stmt") {
            let items = self.query(select);
            self.store(&items);
        }
        for key in ["target_list", "on_conflict_clause", "merge_when_clauses"] {
            if let Some(v) = present(body, key) {
                let d = self.expr(v);
                self.stored.absorb(d);
            }
        }
        self.read(present(body, "where_clause"));
        self.read(present(body, "join_condition"));
        let returning =
            present(body, "returning_clause").map(|r| self.target_list(list(r, "exprs")));
        self.scopes.pop();
        returning.filter(|r| !r.is_empty())
    }

    fn copy_stmt(&mut self, body: &Value) -> Option<Vec<Named>> {
        if body
            .get("is_from")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            return None;
        }
        let items = if let Some(q) = present(body, "query") {
            self.query(q)
        } else {
            let rel = range_name(present(body, "relation")?);
            let columns: Vec<String> = list(body, "attlist").filter_map(sval).collect();
            if columns.is_empty() {
                self.reads.absorb(whole_row(&rel));
                vec![Named {
                    name: None,
                    item: Item::StarOf(rel),
                }]
            } else {
                columns
                    .into_iter()
                    .map(|column| {
                        let d = column_of(&rel, &column);
                        self.reads.absorb(d.clone());
                        Named {
                            name: Some(column),
                            item: Item::Value(d),
                        }
                    })
                    .collect()
            }
        };
        let program = body
            .get("is_program")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if program || !string(body, "filename").is_empty() {
            self.store(&items);
            return None;
        }
        self.copy = Some(copy_format(body));
        Some(items)
    }

    /// Any query node (`SelectStmt`, or a data-modifying statement in a CTE).
    fn query(&mut self, node: &Value) -> Vec<Named> {
        match unwrap_node(node) {
            Some(("SelectStmt", body)) => self.select(body),
            Some((kind @ ("InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt"), body)) => {
                self.dml(kind, body).unwrap_or_default()
            }
            _ => {
                let d = self.expr(node);
                vec![Named {
                    name: None,
                    item: Item::StarUnknown(d.computed()),
                }]
            }
        }
    }

    fn with_clause(&mut self, with: Option<&Value>) {
        let Some(with) = with else { return };
        let recursive = with
            .get("recursive")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        for cte in list(with, "ctes") {
            let Some(("CommonTableExpr", cte)) = unwrap_node(cte) else {
                continue;
            };
            let name = string(cte, "ctename");
            let renames: Vec<String> = list(cte, "aliascolnames").filter_map(sval).collect();
            let Some(q) = present(cte, "ctequery") else {
                continue;
            };
            let columns = if recursive {
                // First with the CTE's own name standing for nothing, then with the first
                // result: what the recursion feeds back is covered.
                self.top().ctes.push((name.clone(), Vec::new()));
                let first = rename(self.query(q), &renames);
                self.top().ctes.pop();
                self.top().ctes.push((name.clone(), first.clone()));
                let second = rename(self.query(q), &renames);
                self.top().ctes.pop();
                join_named(first, second)
            } else {
                rename(self.query(q), &renames)
            };
            self.top().ctes.push((name, columns));
        }
    }

    /// A `SelectStmt` body.
    fn select(&mut self, body: &Value) -> Vec<Named> {
        self.scopes.push(Scope::default());
        self.with_clause(present(body, "with_clause"));
        let op = body.get("op").and_then(Value::as_i64).unwrap_or(1);
        let items = if op > 1 {
            let left = present(body, "larg")
                .map(|l| self.select(l))
                .unwrap_or_default();
            let right = present(body, "rarg")
                .map(|r| self.select(r))
                .unwrap_or_default();
            join_set_operation(left, right)
        } else if let Some(rows) = body.get("values_lists").and_then(Value::as_array)
            && !rows.is_empty()
        {
            self.values(rows)
        } else {
            self.add_from(list(body, "from_clause"));
            for key in [
                "where_clause",
                "group_clause",
                "having_clause",
                "sort_clause",
                "window_clause",
                "distinct_clause",
                "limit_offset",
                "limit_count",
            ] {
                self.read(present(body, key));
            }
            self.target_list(list(body, "target_list"))
        };
        self.scopes.pop();
        items
    }

    fn values(&mut self, rows: &[Value]) -> Vec<Named> {
        let mut columns: Vec<Derivation> = Vec::new();
        for row in rows {
            let values: Vec<&Value> = match unwrap_node(row) {
                Some(("List", l)) => list(l, "items").collect(),
                _ => vec![row],
            };
            for (i, v) in values.into_iter().enumerate() {
                let d = self.expr(v).computed();
                match columns.get_mut(i) {
                    Some(c) => c.absorb(d),
                    None => columns.push(d),
                }
            }
        }
        columns
            .into_iter()
            .enumerate()
            .map(|(i, d)| Named {
                name: Some(format!("column{}", i + 1)),
                item: Item::Value(d),
            })
            .collect()
    }

    fn target_list<'v>(&mut self, targets: impl Iterator<Item = &'v Value>) -> Vec<Named> {
        let mut items = Vec::new();
        for t in targets {
            let Some(("ResTarget", rt)) = unwrap_node(t) else {
                continue;
            };
            let Some(val) = present(rt, "val") else {
                continue;
            };
            let column_ref = match unwrap_node(val) {
                Some(("ColumnRef", cr)) => Some(list(cr, "fields").collect::<Vec<_>>()),
                _ => None,
            };
            if let Some(fields) = &column_ref
                && fields.last().is_some_and(|f| is_star(f))
            {
                let names: Vec<String> = fields.iter().filter_map(|f| sval(f)).collect();
                items.extend(self.star(&names));
                continue;
            }
            let d = self.expr(val);
            self.reads.absorb(d.clone());
            let alias = string(rt, "name");
            let name = if !alias.is_empty() {
                alias
            } else if let Some(fields) = &column_ref {
                fields.last().and_then(|f| sval(f)).unwrap_or_default()
            } else {
                output_name(val)
            };
            items.push(Named {
                name: Some(name),
                item: Item::Value(d),
            });
        }
        items
    }

    /// The columns `*` (no qualifier) or `t.*` expands to.
    fn star(&mut self, qualifier: &[String]) -> Vec<Named> {
        let entries: Vec<Entry> = match qualifier.last() {
            None => self.top().entries.clone(),
            Some(name) => self.find_entry(name).into_iter().collect(),
        };
        if entries.is_empty() {
            return vec![Named {
                name: None,
                item: Item::StarUnknown(opaque()),
            }];
        }
        let mut items = Vec::new();
        for e in entries {
            self.reads.absorb(entry_derivation(&e));
            star_entry(&e, &mut items);
        }
        items
    }

    /// The innermost entry visible under `name`.
    fn find_entry(&self, name: &str) -> Option<Entry> {
        self.scopes.iter().rev().find_map(|s| {
            s.entries.iter().rev().find_map(|e| match &e.provides {
                _ if e.name == name => Some(e.clone()),
                Provides::Join(inner) => inner.iter().find(|i| i.name == name).cloned(),
                _ => None,
            })
        })
    }

    fn find_cte(&self, name: &str) -> Option<Vec<Named>> {
        self.scopes
            .iter()
            .rev()
            .find_map(|s| s.ctes.iter().rev().find(|(n, _)| n == name))
            .map(|(_, c)| c.clone())
    }

    /// The entries one FROM item contributes.
    fn range_item(&mut self, node: &Value) -> Vec<Entry> {
        let Some((kind, body)) = unwrap_node(node) else {
            return Vec::new();
        };
        match kind {
            "RangeVar" => {
                let rel = range_name(body);
                let (name, renames) = alias(body).unwrap_or_else(|| (rel.name.clone(), Vec::new()));
                let provides = if rel.schema.is_none()
                    && let Some(columns) = self.find_cte(&rel.name)
                {
                    columns_renamed(columns, &renames)
                } else if STATISTICS_RELATIONS.contains(&rel.name.as_str()) {
                    Provides::Opaque(opaque())
                } else if renames.is_empty() {
                    Provides::Base(rel)
                } else {
                    Provides::Opaque(whole_row(&rel))
                };
                vec![Entry { name, provides }]
            }
            "RangeSubselect" => {
                let items = present(body, "subquery")
                    .map(|q| self.query(q))
                    .unwrap_or_default();
                let (name, renames) = alias(body).unwrap_or_default();
                vec![Entry {
                    name,
                    provides: columns_renamed(items, &renames),
                }]
            }
            "JoinExpr" => {
                let mut entries = Vec::new();
                for side in ["larg", "rarg"] {
                    if let Some(s) = present(body, side) {
                        entries.extend(self.range_item(s));
                    }
                }
                // The join condition sees both sides.
                let before = self.top().entries.len();
                self.top().entries.extend(entries.iter().cloned());
                self.read(present(body, "quals"));
                self.top().entries.truncate(before);
                match alias(body) {
                    Some((name, _)) if !name.is_empty() => vec![Entry {
                        name,
                        provides: Provides::Join(entries),
                    }],
                    _ => entries,
                }
            }
            _ => {
                // Functions, table functions, JSON_TABLE, …: every column derives from
                // everything inside.
                let d = self.expr(body).computed();
                self.reads.absorb(d.clone());
                let name = alias(body).map(|(n, _)| n).unwrap_or_default();
                vec![Entry {
                    name,
                    provides: Provides::Opaque(d),
                }]
            }
        }
    }

    /// Everything that flows into the value of an expression (any node or list of nodes).
    fn expr(&mut self, node: &Value) -> Derivation {
        match node {
            Value::Array(items) => items.iter().map(|i| self.expr(i)).collect(),
            Value::Object(obj) => {
                if let Some((kind, body)) = unwrap_node(node)
                    && kind.starts_with(|c: char| c.is_ascii_uppercase())
                {
                    return self.expr_node(kind, body);
                }
                obj.values().map(|v| self.expr(v)).collect()
            }
            _ => Derivation::default(),
        }
    }

    fn expr_node(&mut self, kind: &str, body: &Value) -> Derivation {
        match kind {
            "ColumnRef" => {
                let fields: Vec<&Value> = list(body, "fields").collect();
                self.column_ref(&fields)
            }
            "SubLink" => {
                let mut d = present(body, "subselect")
                    .map(|q| all_of(&self.query(q)))
                    .unwrap_or_default();
                if let Some(t) = present(body, "testexpr") {
                    d.absorb(self.expr(t));
                }
                d.computed()
            }
            "SelectStmt" => all_of(&self.select(body)).computed(),
            "FuncCall" => {
                let name = list(body, "funcname")
                    .filter_map(sval)
                    .last()
                    .unwrap_or_default();
                let mut d = Derivation::default();
                for key in ["args", "agg_filter", "agg_order"] {
                    if let Some(v) = present(body, key) {
                        d.absorb(self.expr(v));
                    }
                }
                if STORING_FUNCTIONS.contains(&name.as_str()) {
                    self.stored.absorb(d.clone());
                }
                self.read(present(body, "over"));
                d.computed()
            }
            _ => body
                .as_object()
                .into_iter()
                .flat_map(|o| o.values())
                .map(|v| self.expr(v))
                .collect(),
        }
    }

    /// Resolves `a`, `t.a`, `s.t.a`, `t.*` and whole-row `t`.
    fn column_ref(&mut self, fields: &[&Value]) -> Derivation {
        let names: Vec<String> = fields.iter().filter_map(|f| sval(f)).collect();
        let star = fields.last().is_some_and(|f| is_star(f));
        let d = match (names.as_slice(), star) {
            ([], true) => {
                let entries = self.top().entries.clone();
                entries.iter().map(entry_derivation).collect()
            }
            ([.., t], true) => match self.find_entry(t) {
                Some(e) => entry_derivation(&e).computed(),
                None => opaque(),
            },
            ([column], false) => self.unqualified(column),
            ([.., t, column], false) => match self.find_entry(t) {
                Some(e) => entry_column(&e, column),
                None => self.unqualified(column),
            },
            _ => opaque(),
        };
        self.reads.absorb(d.clone());
        d
    }

    /// An unqualified name: a column of any visible entry at any level (a correlated
    /// reference can reach an outer query), or a whole-row reference to an entry so named.
    /// Only a name with exactly one possible origin keeps that origin's directness.
    fn unqualified(&self, column: &str) -> Derivation {
        let mut found: Vec<Derivation> = self
            .scopes
            .iter()
            .flat_map(|s| s.entries.iter())
            .filter_map(|e| entry_column_if_present(e, column))
            .collect();
        if let Some(e) = self.find_entry(column) {
            found.push(entry_derivation(&e).computed());
        }
        Derivation::either(found).unwrap_or_default()
    }
}

/// The name PostgreSQL gives an unnamed output column (only used to look columns up).
fn output_name(val: &Value) -> String {
    match unwrap_node(val) {
        Some(("FuncCall", f)) => list(f, "funcname")
            .filter_map(sval)
            .last()
            .unwrap_or_default(),
        Some(("TypeCast", c)) => present(c, "arg").map(output_name).unwrap_or_default(),
        _ => "?column?".to_owned(),
    }
}

fn all_of(items: &[Named]) -> Derivation {
    items.iter().map(|n| item_derivation(&n.item)).collect()
}

/// Column `column` of entry `e`, or `None` when the entry is known not to have it.
fn entry_column_if_present(e: &Entry, column: &str) -> Option<Derivation> {
    let mut found: Vec<Derivation> = Vec::new();
    match &e.provides {
        Provides::Base(rel) => return Some(column_of(rel, column)),
        Provides::Opaque(d) => return Some(d.clone().computed()),
        Provides::Columns(columns) => {
            for n in columns {
                match (&n.name, &n.item) {
                    (Some(name), Item::Value(d)) if name == column => found.push(d.clone()),
                    (_, Item::StarOf(rel)) => found.push(column_of(rel, column)),
                    (_, Item::StarUnknown(d)) => found.push(d.clone()),
                    _ => {}
                }
            }
        }
        Provides::Join(inner) => {
            found.extend(
                inner
                    .iter()
                    .filter_map(|i| entry_column_if_present(i, column)),
            );
        }
    }
    Derivation::either(found)
}

/// Column `column` of entry `e`, qualified by the entry's name.
fn entry_column(e: &Entry, column: &str) -> Derivation {
    entry_column_if_present(e, column).unwrap_or_else(|| match &e.provides {
        // A subquery without such a column: the server refuses the statement.
        Provides::Columns(_) => Derivation::default(),
        _ => opaque(),
    })
}

/// Everything entry `e` can produce (a whole-row reference to it).
fn entry_derivation(e: &Entry) -> Derivation {
    match &e.provides {
        Provides::Base(rel) => whole_row(rel),
        Provides::Columns(columns) => all_of(columns).computed(),
        Provides::Opaque(d) => d.clone().computed(),
        Provides::Join(inner) => inner.iter().map(entry_derivation).collect(),
    }
}

/// The output items `*` over entry `e` produces.
fn star_entry(e: &Entry, items: &mut Vec<Named>) {
    match &e.provides {
        Provides::Base(rel) => items.push(Named {
            name: None,
            item: Item::StarOf(rel.clone()),
        }),
        Provides::Columns(columns) => items.extend(columns.iter().cloned()),
        Provides::Opaque(d) => items.push(Named {
            name: None,
            item: Item::StarUnknown(d.clone().computed()),
        }),
        Provides::Join(inner) => {
            for i in inner {
                star_entry(i, items);
            }
        }
    }
}

/// All that flows into an output item.
pub(crate) fn item_derivation(item: &Item) -> Derivation {
    match item {
        Item::Value(d) | Item::StarUnknown(d) => d.clone(),
        Item::StarOf(rel) => whole_row(rel),
    }
}

/// Applies an alias column list by position.
fn rename(mut items: Vec<Named>, renames: &[String]) -> Vec<Named> {
    for (n, r) in items.iter_mut().zip(renames) {
        n.name = Some(r.clone());
    }
    items
}

/// A subquery's or CTE's columns under an alias column list. Renaming past a star (whose
/// width is unknown here) cannot be followed: every column then derives from everything.
fn columns_renamed(items: Vec<Named>, renames: &[String]) -> Provides {
    let stars_before = items
        .iter()
        .take(renames.len())
        .any(|n| !matches!(n.item, Item::Value(_)));
    if stars_before {
        Provides::Opaque(all_of(&items).computed())
    } else {
        Provides::Columns(rename(items, renames))
    }
}

/// Positional union of a recursive CTE's two passes.
fn join_named(first: Vec<Named>, second: Vec<Named>) -> Vec<Named> {
    if first.len() != second.len() {
        let mut d = all_of(&first);
        d.absorb(all_of(&second));
        return vec![Named {
            name: None,
            item: Item::StarUnknown(d.computed()),
        }];
    }
    first
        .into_iter()
        .zip(second)
        .map(|(a, b)| {
            let item = match (a.item, b.item) {
                (Item::Value(x), Item::Value(y)) if x == y => Item::Value(x),
                (x, y) => {
                    let mut d = item_derivation(&x);
                    d.absorb(item_derivation(&y));
                    match x {
                        Item::Value(_) => Item::Value(d.computed()),
                        _ => Item::StarUnknown(d.computed()),
                    }
                }
            };
            Named { name: a.name, item }
        })
        .collect()
}

/// A set operation's output: column by column when both sides are plain lists of equal
/// length (named by the left side, as PostgreSQL does), otherwise columns of unknown number
/// that derive from everything.
fn join_set_operation(left: Vec<Named>, right: Vec<Named>) -> Vec<Named> {
    let plain = |items: &[Named]| items.iter().all(|n| matches!(n.item, Item::Value(_)));
    if plain(&left) && plain(&right) && left.len() == right.len() {
        return left
            .into_iter()
            .zip(right)
            .map(|(l, r)| {
                let mut d = item_derivation(&l.item);
                d.absorb(item_derivation(&r.item));
                Named {
                    name: l.name,
                    item: Item::Value(d.computed()),
                }
            })
            .collect();
    }
    let mut d = all_of(&left);
    d.absorb(all_of(&right));
    vec![Named {
        name: None,
        item: Item::StarUnknown(d.computed()),
    }]
}

/// The data layout of `COPY … TO STDOUT`, from its options.
fn copy_format(body: &Value) -> CopyFormat {
    let mut format = "text".to_owned();
    let mut delimiter = None;
    let mut quote = b'"';
    let mut escape = None;
    for opt in list(body, "options") {
        let Some(("DefElem", d)) = unwrap_node(opt) else {
            continue;
        };
        let arg = present(d, "arg").and_then(sval).unwrap_or_default();
        match string(d, "defname").as_str() {
            "format" => format = arg.to_ascii_lowercase(),
            "binary" => format = "binary".into(),
            "csv" => format = "csv".into(),
            "delimiter" => delimiter = arg.bytes().next(),
            "quote" => quote = arg.bytes().next().unwrap_or(b'"'),
            "escape" => escape = arg.bytes().next(),
            _ => {}
        }
    }
    match format.as_str() {
        "binary" => CopyFormat::Binary,
        "csv" => CopyFormat::Csv {
            delimiter: delimiter.unwrap_or(b','),
            quote,
            escape: escape.unwrap_or(quote),
        },
        _ => CopyFormat::Text {
            delimiter: delimiter.unwrap_or(b'\t'),
        },
    }
}
