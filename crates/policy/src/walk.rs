//! A complete walk of a `pg_query` parse tree that collects the facts classification needs.
//!
//! Why serde: the parse tree has ~270 node types and a hand-written visitor that forgets one is a
//! bypass (a `pg_read_file()` hidden in a `LATERAL`, a JSON_TABLE or a window frame would go
//! unseen). The tree's types derive `serde::Serialize`, which by construction visits *every*
//! field of every node; this module is a [`Serializer`] that writes nothing and instead watches
//! the stream of struct names, field names and values, like a SAX parser. It only reacts to the
//! handful of node types that matter (function calls, relations, column references,
//! data-modifying statements, CTEs, `INTO`, locking clauses) and ignores the rest.
//!
//! Nesting is bounded by prost's decode recursion limit, so the walk cannot overflow the stack.

use serde::ser::{self, Impossible, Serialize, Serializer};
use std::fmt;

/// How a relation (a `RangeVar`) is used where it appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeRole {
    /// Read (FROM, JOIN, subqueries, …).
    Read,
    /// The target of a data-modifying statement (`INSERT INTO x`, `UPDATE x`, …).
    Modified,
    /// The table created by `SELECT INTO` / `CREATE TABLE AS`.
    Into,
    /// The relation of a `COPY` (read or written depending on the direction).
    Copy,
    /// The object of another utility statement (`ALTER TABLE x`, `TRUNCATE x`, `LOCK x`, …).
    Utility(&'static str),
}

/// A function call found anywhere in the tree.
#[derive(Debug, Clone, Default)]
pub(crate) struct FuncFact {
    /// The dotted name as written (`pg_catalog`, `pg_read_file`).
    pub parts: Vec<String>,
    /// For each argument, its value when it is a plain string literal.
    pub args: Vec<Option<String>>,
}

/// A relation reference.
#[derive(Debug, Clone)]
pub(crate) struct RangeFact {
    pub schema: String,
    pub name: String,
    pub alias: Option<String>,
    pub role: RangeRole,
    /// The enclosing query frames, innermost first: (frame id, index of the CTE of that frame
    /// the reference sits in, if any). Used to tell a CTE reference from a table.
    pub scope: Vec<(u32, Option<u32>)>,
}

/// A column reference (`a`, `t.a`, `s.t.a`, `t.*`, `*`), or a column assigned by a write.
#[derive(Debug, Clone, Default)]
pub(crate) struct ColumnFact {
    pub parts: Vec<String>,
    pub star: bool,
    /// Set for `UPDATE … SET col` / `INSERT INTO t (col)`: the index of the writing statement
    /// in [`Facts::dml`].
    pub written_by: Option<usize>,
}

/// A data-modifying statement found anywhere in the tree (top level or in a `WITH`).
#[derive(Debug, Clone)]
pub(crate) struct DmlFact {
    /// `INSERT`, `UPDATE`, `DELETE` or `MERGE`.
    pub kind: &'static str,
    /// Index in [`Facts::ranges`] of the modified relation.
    pub target: Option<usize>,
    /// Whether a `WHERE` (or `MERGE … ON`) clause is present.
    pub has_where: bool,
    /// Whether that clause references a column (or `CURRENT OF`).
    pub where_refs: bool,
    /// Whether the statement is the root of the walk.
    pub root: bool,
    /// Whether the statement sits in a common table expression (`WITH d AS (DELETE …)`).
    pub in_cte: bool,
}

/// A common table expression, by the frame that owns its `WITH`.
#[derive(Debug, Clone)]
pub(crate) struct CteFact {
    pub owner: u32,
    pub index: u32,
    pub name: String,
}

/// Everything the walk collected from one tree.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    pub functions: Vec<FuncFact>,
    pub ranges: Vec<RangeFact>,
    pub columns: Vec<ColumnFact>,
    pub dml: Vec<DmlFact>,
    pub ctes: Vec<CteFact>,
    /// Frames whose `WITH` is `RECURSIVE`.
    pub recursive: Vec<u32>,
    /// `SELECT … FOR UPDATE/SHARE` anywhere.
    pub locking: bool,
    /// Names of prepared statements run by an `EXECUTE` anywhere.
    pub executes: Vec<String>,
    /// A string literal's value was kept as a function argument (classification may depend
    /// on it: `set_config('role', …)`, `pg_read_file('/etc/passwd')`).
    pub literal_args: bool,
    /// The type name of the walked statement (`SelectStmt`, `DropStmt`, …).
    pub root: &'static str,
}

impl Facts {
    /// Whether `range` names a CTE visible where it appears rather than a table.
    pub fn is_cte_reference(&self, range: &RangeFact) -> bool {
        if !range.schema.is_empty() {
            return false;
        }
        for &(frame, in_cte) in &range.scope {
            let defined = self
                .ctes
                .iter()
                .filter(|c| c.owner == frame && c.name == range.name)
                .map(|c| c.index)
                .min();
            if let Some(defined) = defined {
                let recursive = self.recursive.contains(&frame);
                // PostgreSQL: a CTE is visible in the main query, in later CTEs of the same
                // WITH, and (only with RECURSIVE) in itself and earlier ones.
                let visible = match in_cte {
                    None => true,
                    Some(i) => recursive || i > defined,
                };
                if visible {
                    return true;
                }
            }
        }
        false
    }
}

/// Walks `value` (a parse tree node) and returns the facts.
pub(crate) fn walk<T: Serialize + ?Sized>(value: &T) -> Facts {
    let mut walker = Walker::default();
    // The walker never fails; an error would only cut the walk short, and the caller treats a
    // short walk like any other (it still classifies what it saw), so it is ignored.
    let _ = value.serialize(&mut walker);
    walker.facts
}

/// One struct being serialized: its type name, the field being written, and which fact (if
/// any) it feeds.
#[derive(Debug, Clone, Copy)]
struct Frame {
    name: &'static str,
    field: &'static str,
    id: u32,
    slot: usize,
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    next_id: u32,
    facts: Facts,
}

const QUERY_FRAMES: [&str; 5] = [
    "SelectStmt",
    "InsertStmt",
    "UpdateStmt",
    "DeleteStmt",
    "MergeStmt",
];

fn dml_kind(name: &str) -> Option<&'static str> {
    Some(match name {
        "InsertStmt" => "INSERT",
        "UpdateStmt" => "UPDATE",
        "DeleteStmt" => "DELETE",
        "MergeStmt" => "MERGE",
        _ => return None,
    })
}

impl Walker {
    /// The frame `back` levels below the top (0 = top).
    fn frame(&self, back: usize) -> Option<&Frame> {
        self.stack
            .len()
            .checked_sub(back + 1)
            .map(|i| &self.stack[i])
    }

    /// The nearest enclosing frame that is not a generic `Node` wrapper.
    fn container(&self) -> Option<&Frame> {
        self.stack.iter().rev().find(|f| f.name != "Node")
    }

    fn begin_struct(&mut self, name: &'static str) {
        let id = self.next_id;
        self.next_id += 1;
        if self.facts.root.is_empty() && name != "Node" {
            self.facts.root = name;
        }
        let mut slot = usize::MAX;
        match name {
            "FuncCall" => {
                slot = self.facts.functions.len();
                self.facts.functions.push(FuncFact::default());
            }
            "RangeVar" => {
                slot = self.facts.ranges.len();
                let role = self.range_role();
                let scope = self.scope();
                self.facts.ranges.push(RangeFact {
                    schema: String::new(),
                    name: String::new(),
                    alias: None,
                    role,
                    scope,
                });
            }
            "ColumnRef" => {
                slot = self.facts.columns.len();
                self.facts.columns.push(ColumnFact::default());
                self.mark_where_reference();
            }
            "CurrentOfExpr" => self.mark_where_reference(),
            "AStar" => {
                if let (Some(node), Some(col)) = (self.frame(0), self.frame(1))
                    && node.name == "Node"
                    && col.name == "ColumnRef"
                {
                    let slot = col.slot;
                    self.facts.columns[slot].star = true;
                }
            }
            "CommonTableExpr" => {
                if let Some(owner) = self
                    .stack
                    .iter()
                    .rev()
                    .find(|f| QUERY_FRAMES.contains(&f.name) && f.field == "with_clause")
                {
                    let owner = owner.id;
                    let index = self.facts.ctes.iter().filter(|c| c.owner == owner).count() as u32;
                    slot = self.facts.ctes.len();
                    self.facts.ctes.push(CteFact {
                        owner,
                        index,
                        name: String::new(),
                    });
                }
            }
            "LockingClause" => self.facts.locking = true,
            "ExecuteStmt" => {
                slot = self.facts.executes.len();
                self.facts.executes.push(String::new());
            }
            _ => {
                if let Some(kind) = dml_kind(name) {
                    slot = self.facts.dml.len();
                    self.facts.dml.push(DmlFact {
                        kind,
                        target: None,
                        has_where: false,
                        where_refs: false,
                        root: self.stack.iter().all(|f| f.name == "Node"),
                        in_cte: self.stack.iter().any(|f| f.name == "CommonTableExpr"),
                    });
                }
            }
        }
        self.stack.push(Frame {
            name,
            field: "",
            id,
            slot,
        });
    }

    fn range_role(&self) -> RangeRole {
        let Some(parent) = self.container() else {
            return RangeRole::Read;
        };
        match (parent.name, parent.field) {
            ("InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt", "relation") => {
                RangeRole::Modified
            }
            ("IntoClause", _) => RangeRole::Into,
            ("CopyStmt", "relation") => RangeRole::Copy,
            ("SelectStmt" | "ExplainStmt" | "PrepareStmt" | "DeclareCursorStmt", _) => {
                RangeRole::Read
            }
            (name, _) if name.ends_with("Stmt") && !QUERY_FRAMES.contains(&name) => {
                RangeRole::Utility(name)
            }
            ("VacuumRelation", _) => RangeRole::Utility("VacuumStmt"),
            _ => RangeRole::Read,
        }
    }

    fn scope(&self) -> Vec<(u32, Option<u32>)> {
        let mut scope = Vec::new();
        for (i, f) in self.stack.iter().enumerate().rev() {
            if !QUERY_FRAMES.contains(&f.name) {
                continue;
            }
            let in_cte = if f.field == "with_clause" {
                self.stack[i + 1..]
                    .iter()
                    .find(|c| c.name == "CommonTableExpr")
                    .and_then(|c| self.facts.ctes.get(c.slot))
                    .map(|c| c.index)
            } else {
                None
            };
            scope.push((f.id, in_cte));
        }
        scope
    }

    /// A column (or `CURRENT OF`) inside the `WHERE` of the nearest data-modifying statement
    /// bounds that statement.
    fn mark_where_reference(&mut self) {
        if let Some(f) = self.stack.iter().rev().find(|f| dml_kind(f.name).is_some())
            && (f.field == "where_clause" || f.field == "join_condition")
        {
            let slot = f.slot;
            self.facts.dml[slot].where_refs = true;
        }
    }

    fn end_struct(&mut self) {
        if let Some(frame) = self.stack.pop()
            && frame.name == "RangeVar"
            && let Some(parent) = self.container()
            && dml_kind(parent.name).is_some()
            && parent.field == "relation"
        {
            let slot = parent.slot;
            self.facts.dml[slot].target = Some(frame.slot);
        }
    }

    fn on_some(&mut self) {
        if let Some(f) = self.frame(0)
            && dml_kind(f.name).is_some()
            && (f.field == "where_clause" || f.field == "join_condition")
        {
            let slot = f.slot;
            self.facts.dml[slot].has_where = true;
        }
    }

    fn on_bool(&mut self, v: bool) {
        if v && let (Some(with), Some(owner)) = (self.frame(0), self.frame(1))
            && with.name == "WithClause"
            && with.field == "recursive"
        {
            let id = owner.id;
            self.facts.recursive.push(id);
        }
    }

    fn on_str(&mut self, v: &str) {
        let Some(top) = self.frame(0).copied() else {
            return;
        };
        match (top.name, top.field) {
            ("String", "sval") => self.on_string_node(v),
            ("RangeVar", "schemaname") => self.facts.ranges[top.slot].schema = v.to_owned(),
            ("RangeVar", "relname") => self.facts.ranges[top.slot].name = v.to_owned(),
            ("Alias", "aliasname") => {
                if let Some(rv) = self.frame(1)
                    && rv.name == "RangeVar"
                {
                    let slot = rv.slot;
                    self.facts.ranges[slot].alias = Some(v.to_owned());
                }
            }
            ("CommonTableExpr", "ctename") if top.slot != usize::MAX => {
                self.facts.ctes[top.slot].name = v.to_owned();
            }
            ("ExecuteStmt", "name") => self.facts.executes[top.slot] = v.to_owned(),
            ("ResTarget", "name") => self.on_assigned_column(v),
            _ => {}
        }
    }

    /// A `String` node: part of a function name, of a column reference, or a literal argument.
    fn on_string_node(&mut self, v: &str) {
        let (Some(p1), Some(p2)) = (self.frame(1).copied(), self.frame(2).copied()) else {
            return;
        };
        match (p1.name, p2.name, p2.field) {
            ("Node", "FuncCall", "funcname") => self.facts.functions[p2.slot].parts.push(v.into()),
            ("Node", "ColumnRef", "fields") => self.facts.columns[p2.slot].parts.push(v.into()),
            ("AConst", "Node", _) => {
                if let Some(p3) = self.frame(3).copied()
                    && p3.name == "FuncCall"
                    && p3.field == "args"
                    && let Some(last) = self.facts.functions[p3.slot].args.last_mut()
                {
                    *last = Some(v.to_owned());
                    self.facts.literal_args = true;
                }
            }
            _ => {}
        }
    }

    /// `UPDATE t SET col = …`, `INSERT INTO t (col)`, `MERGE … UPDATE SET col = …`.
    fn on_assigned_column(&mut self, v: &str) {
        let (Some(p1), Some(p2)) = (self.frame(1), self.frame(2)) else {
            return;
        };
        let assigns = p1.name == "Node"
            && matches!(
                (p2.name, p2.field),
                ("UpdateStmt", "target_list")
                    | ("InsertStmt", "cols")
                    | ("MergeWhenClause", "target_list")
            );
        if !assigns {
            return;
        }
        let writer = self
            .stack
            .iter()
            .rev()
            .find(|f| dml_kind(f.name).is_some())
            .map(|f| f.slot);
        self.facts.columns.push(ColumnFact {
            parts: vec![v.to_owned()],
            star: false,
            written_by: writer,
        });
    }

    fn on_element_start(&mut self) {
        // A new argument of a function call starts (the element is a `Node`).
        if let Some(f) = self.frame(0)
            && f.name == "FuncCall"
            && f.field == "args"
        {
            let slot = f.slot;
            self.facts.functions[slot].args.push(None);
        }
    }
}

/// The walker never fails; serde still needs an error type.
#[derive(Debug)]
pub(crate) struct Never;

impl fmt::Display for Never {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("walk error")
    }
}

impl std::error::Error for Never {}

impl ser::Error for Never {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Never
    }
}

type R = Result<(), Never>;

impl Serializer for &mut Walker {
    type Ok = ();
    type Error = Never;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Impossible<(), Never>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, v: bool) -> R {
        self.on_bool(v);
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> R {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> R {
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> R {
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> R {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> R {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> R {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> R {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> R {
        Ok(())
    }
    fn serialize_f32(self, _: f32) -> R {
        Ok(())
    }
    fn serialize_f64(self, _: f64) -> R {
        Ok(())
    }
    fn serialize_char(self, _: char) -> R {
        Ok(())
    }
    fn serialize_str(self, v: &str) -> R {
        self.on_str(v);
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> R {
        Ok(())
    }
    fn serialize_none(self) -> R {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> R {
        self.on_some();
        value.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> R {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Never> {
        Err(Never)
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Self, Never> {
        self.begin_struct(name);
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self, Never> {
        self.begin_struct(variant);
        Ok(self)
    }
}

impl ser::SerializeSeq for &mut Walker {
    type Ok = ();
    type Error = Never;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> R {
        self.on_element_start();
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTuple for &mut Walker {
    type Ok = ();
    type Error = Never;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for &mut Walker {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTupleVariant for &mut Walker {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Walker {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> R {
        if let Some(top) = self.stack.last_mut() {
            top.field = key;
        }
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        self.end_struct();
        Ok(())
    }
}

impl ser::SerializeStructVariant for &mut Walker {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> R {
        if let Some(top) = self.stack.last_mut() {
            top.field = key;
        }
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        self.end_struct();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(sql: &str) -> Facts {
        let parsed = pg_query::parse(sql, 0).unwrap();
        walk(parsed.protobuf.stmts[0].stmt.as_deref().unwrap())
    }

    fn names(f: &Facts) -> Vec<String> {
        f.functions.iter().map(|f| f.parts.join(".")).collect()
    }

    #[test]
    fn finds_functions_anywhere_with_literal_arguments() {
        let f = facts(
            "SELECT x FROM t, LATERAL (SELECT pg_catalog.pg_read_file('/etc/passwd')) s \
             WHERE y = ANY(ARRAY(SELECT set_config('role', 'postgres', false)))",
        );
        assert_eq!(names(&f), ["pg_catalog.pg_read_file", "set_config"]);
        assert_eq!(f.functions[0].args, [Some("/etc/passwd".to_string())]);
        assert_eq!(
            f.functions[1].args,
            [Some("role".to_string()), Some("postgres".to_string()), None]
        );
    }

    #[test]
    fn dml_targets_and_where() {
        let f = facts("WITH d AS (DELETE FROM orders RETURNING *) UPDATE t SET a = 1 WHERE id = 2");
        assert_eq!(f.dml.len(), 2);
        let update = f.dml.iter().find(|d| d.kind == "UPDATE").unwrap();
        assert!(update.root && update.has_where && update.where_refs);
        let delete = f.dml.iter().find(|d| d.kind == "DELETE").unwrap();
        assert!(!delete.root && !delete.has_where);
        assert_eq!(f.ranges[delete.target.unwrap()].name, "orders");
        let f = facts("DELETE FROM t WHERE 1 = 1");
        assert!(f.dml[0].has_where && !f.dml[0].where_refs);
    }

    #[test]
    fn cte_scoping() {
        let f = facts("WITH orders AS (SELECT * FROM orders) SELECT * FROM orders");
        let tables: Vec<bool> = f.ranges.iter().map(|r| f.is_cte_reference(r)).collect();
        // SelectStmt serializes FROM before WITH: the main query's `orders` (first) is the CTE,
        // the CTE body's `orders` is the real table (the WITH is not recursive).
        assert_eq!(tables, [true, false]);
        let f = facts("WITH RECURSIVE r AS (SELECT 1 UNION ALL SELECT * FROM r) SELECT * FROM r");
        assert!(f.ranges.iter().all(|r| f.is_cte_reference(r)));
        let f = facts("SELECT * FROM x, (WITH x AS (SELECT 1) SELECT * FROM x) s");
        let refs: Vec<bool> = f.ranges.iter().map(|r| f.is_cte_reference(r)).collect();
        assert_eq!(refs, [false, true]);
    }
}
