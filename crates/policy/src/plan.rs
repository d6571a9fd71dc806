//! Result plans: a statement's [`Lineage`] resolved against the target's catalog, telling the
//! engine which result columns to mask, and which statements cannot be masked safely.

use crate::lineage::{Derivation, Item, Lineage, Source};
use postern_core::mask::{
    ColumnMask, CopyFormat, MaskCatalog, OutputItem, Outputs, RelationKind, StatementPlan,
};
use std::sync::Arc;

/// A session's masked catalog, and the questions asked of it.
#[derive(Debug, Clone)]
pub(crate) struct Resolver {
    catalog: Arc<MaskCatalog>,
    /// Whether the catalog came from the target (so relations list *all* their columns and
    /// `*` widths are known) rather than from config names alone.
    complete: bool,
}

impl Resolver {
    /// A resolver over the catalog the engine resolved on the target.
    pub fn new(catalog: Arc<MaskCatalog>) -> Self {
        Resolver {
            catalog,
            complete: true,
        }
    }

    /// A resolver knowing masked columns by name only (before, or without, the target's
    /// catalog): `*` over a masked table is then of unknown width.
    pub fn by_name(catalog: MaskCatalog) -> Self {
        Resolver {
            catalog: Arc::new(catalog),
            complete: false,
        }
    }

    fn source(&self, source: &Source) -> ColumnMask {
        match source {
            Source::Column { rel, column } => self
                .catalog
                .named(rel.schema.as_deref(), &rel.name)
                .map(|r| match r.kind {
                    RelationKind::View => ColumnMask::Derived,
                    RelationKind::Table => r
                        .columns
                        .iter()
                        .find(|c| c.name == *column)
                        .map_or(ColumnMask::Clean, |c| c.mask),
                })
                .fold(ColumnMask::Clean, ColumnMask::join),
            Source::WholeRow(rel) => {
                let tainted = self
                    .catalog
                    .named(rel.schema.as_deref(), &rel.name)
                    .any(|r| r.columns.iter().any(|c| c.mask.is_masked()));
                if tainted {
                    ColumnMask::Derived
                } else {
                    ColumnMask::Clean
                }
            }
            Source::Opaque => ColumnMask::Derived,
        }
    }

    /// How a value computed as `d` is masked.
    pub fn derivation(&self, d: &Derivation) -> ColumnMask {
        let mask = d
            .sources
            .iter()
            .map(|s| self.source(s))
            .fold(ColumnMask::Clean, ColumnMask::join);
        match mask {
            ColumnMask::Direct(_) if !d.direct => ColumnMask::Derived,
            other => other,
        }
    }

    /// The first masked source of `d`, named for an error message.
    pub fn masked_source(&self, d: &Derivation) -> Option<String> {
        d.sources
            .iter()
            .find(|s| self.source(s).is_masked())
            .map(|s| match s {
                Source::Column { rel, column } => format!("{}.{column}", rel.name),
                Source::WholeRow(rel) => format!("{} (a whole row)", rel.name),
                Source::Opaque => "data the gateway cannot trace".to_owned(),
            })
    }

    /// The lineage of an output list.
    pub fn outputs(&self, items: &[Item]) -> Outputs {
        let mut out = Vec::with_capacity(items.len());
        let mut tainted = false;
        for item in items {
            let resolved = match item {
                Item::Value(d) => OutputItem::Column(self.derivation(d)),
                Item::StarOf(rel) => {
                    let masks = self.star_width(rel.schema.as_deref(), &rel.name);
                    if masks.is_none()
                        && self
                            .catalog
                            .named(rel.schema.as_deref(), &rel.name)
                            .next()
                            .is_some()
                    {
                        return Outputs::Opaque;
                    }
                    OutputItem::Star(masks)
                }
                Item::StarUnknown(d) => {
                    if self.derivation(d).is_masked() {
                        return Outputs::Opaque;
                    }
                    OutputItem::Star(None)
                }
            };
            tainted |= match &resolved {
                OutputItem::Column(m) => m.is_masked(),
                OutputItem::Star(Some(ms)) => ms.iter().any(|m| m.is_masked()),
                OutputItem::Star(None) => false,
            };
            out.push(resolved);
        }
        if tainted {
            Outputs::Known(out)
        } else {
            Outputs::Clean
        }
    }

    /// The masks of the columns `*` over `schema.name` expands to, position by position;
    /// `None` when no catalog relation has that name or the width is not known.
    fn star_width(&self, schema: Option<&str>, name: &str) -> Option<Vec<ColumnMask>> {
        if !self.complete {
            return None;
        }
        let mut width: Option<Vec<ColumnMask>> = None;
        for r in self.catalog.named(schema, name) {
            let masks = r.columns.iter().map(|c| match r.kind {
                RelationKind::View => ColumnMask::Derived,
                RelationKind::Table => c.mask,
            });
            width = Some(match width {
                None => masks.collect(),
                Some(w) => {
                    // Same name in several schemas: the search path picks one; mask as if
                    // it could be any.
                    let masks: Vec<ColumnMask> = masks.collect();
                    let len = w.len().max(masks.len());
                    (0..len)
                        .map(|i| {
                            let a = w.get(i).copied().unwrap_or(ColumnMask::Derived);
                            let b = masks.get(i).copied().unwrap_or(ColumnMask::Derived);
                            a.join(b)
                        })
                        .collect()
                }
            });
        }
        width
    }

    /// The plan for a statement with `lineage`, whose rows are `rows` (the statement's own
    /// output, or a cursor's or prepared statement's).
    pub fn plan(&self, lineage: &Lineage, rows: Option<&[Item]>) -> StatementPlan {
        let outputs = rows.map_or(Outputs::Clean, |items| self.outputs(items));
        let touches_masked = self.derivation(&lineage.reads).is_masked()
            || self.derivation(&lineage.stored).is_masked()
            || outputs != Outputs::Clean;
        StatementPlan {
            outputs,
            touches_masked,
            copy: lineage.copy,
        }
    }

    /// Why a statement with `lineage` cannot run in a masked session, if it cannot: it
    /// would store masked data somewhere unmasked, or send it as binary COPY data.
    pub fn refusal(&self, lineage: &Lineage) -> Option<String> {
        if let Some(source) = self.masked_source(&lineage.stored) {
            return Some(format!(
                "the statement would store or send on data derived from the masked column \
                 {source} (into a table, view, file, setting or notification), where the \
                 gateway could no longer mask it"
            ));
        }
        if lineage.copy == Some(CopyFormat::Binary)
            && let Some(items) = &lineage.outputs
            && self.outputs(items) != Outputs::Clean
        {
            return Some(
                "binary COPY of masked columns cannot be masked; use COPY in text or CSV format"
                    .to_owned(),
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Analysis;
    use crate::analysis::Lexing;
    use crate::functions::FunctionCatalog;
    use postern_core::mask::{CatalogColumn, CatalogRelation};

    fn catalog() -> Resolver {
        let table = |oid, name: &str, cols: &[(&str, ColumnMask)]| CatalogRelation {
            oid,
            schema: "public".into(),
            name: name.into(),
            kind: RelationKind::Table,
            columns: cols
                .iter()
                .enumerate()
                .map(|(i, (n, m))| CatalogColumn {
                    attnum: i as i16 + 1,
                    name: (*n).into(),
                    mask: *m,
                })
                .collect(),
        };
        use ColumnMask::*;
        let mut view = table(
            30,
            "customer_contacts",
            &[("id", Clean), ("contact", Clean)],
        );
        view.kind = RelationKind::View;
        Resolver::new(Arc::new(MaskCatalog {
            relations: vec![
                table(
                    10,
                    "customers",
                    &[
                        ("id", Clean),
                        ("name", Clean),
                        ("email", Direct(0)),
                        ("ssn", Direct(1)),
                    ],
                ),
                view,
            ],
        }))
    }

    fn plan(sql: &str) -> Vec<StatementPlan> {
        let analysis = Analysis::of_with(sql, Lexing::Standard, &FunctionCatalog::default(), true);
        let r = catalog();
        analysis
            .statements
            .iter()
            .map(|s| {
                let l = s.lineage.as_ref().expect("lineage");
                r.plan(l, l.outputs.as_deref())
            })
            .collect()
    }

    fn columns(sql: &str) -> Vec<ColumnMask> {
        match plan(sql).remove(0).outputs {
            Outputs::Clean => vec![],
            Outputs::Known(items) => items
                .into_iter()
                .flat_map(|i| match i {
                    OutputItem::Column(m) => vec![m],
                    OutputItem::Star(Some(ms)) => ms,
                    OutputItem::Star(None) => vec![ColumnMask::Clean; 99],
                })
                .collect(),
            Outputs::Opaque => vec![ColumnMask::Derived; 100],
        }
    }

    fn refusal(sql: &str) -> Option<String> {
        let analysis = Analysis::of_with(sql, Lexing::Standard, &FunctionCatalog::default(), true);
        let r = catalog();
        analysis
            .statements
            .iter()
            .find_map(|s| r.refusal(s.lineage.as_ref().expect("lineage")))
    }

    use ColumnMask::*;

    #[test]
    fn direct_references_keep_their_mask() {
        assert_eq!(
            columns("SELECT id, email FROM customers"),
            [Clean, Direct(0)]
        );
        assert_eq!(columns("SELECT c.email AS e FROM customers c"), [Direct(0)]);
        assert_eq!(
            columns("SELECT \"email\" FROM public.customers"),
            [Direct(0)]
        );
        assert_eq!(
            columns("SELECT e FROM (SELECT email AS e FROM customers) s"),
            [Direct(0)]
        );
        assert_eq!(
            columns("WITH w AS (SELECT ssn FROM customers) SELECT ssn FROM w"),
            [Direct(1)]
        );
    }

    #[test]
    fn computed_values_are_derived() {
        for sql in [
            "SELECT upper(email) FROM customers",
            "SELECT email || '' FROM customers",
            "SELECT email::varchar(5) FROM customers",
            "SELECT string_agg(email, ',') FROM customers",
            "SELECT row_to_json(c) FROM customers c",
            "SELECT c FROM customers c",
            "SELECT (c).email FROM customers c",
            "SELECT to_jsonb(c.*) FROM customers c",
            "SELECT (SELECT email FROM customers LIMIT 1)",
            "SELECT CASE WHEN ssn LIKE '1%' THEN 'a' ELSE 'b' END FROM customers",
            "SELECT x FROM (SELECT reverse(email) FROM customers) AS s(x)",
            "SELECT email FROM customers UNION SELECT 'x'",
            "SELECT 'x' UNION ALL SELECT ssn FROM customers",
            "SELECT contact FROM customer_contacts",
            "SELECT * FROM pg_stats",
            "SELECT array_agg(e) FROM (SELECT email FROM customers) t(e)",
            "SELECT json_agg(x) FROM (SELECT * FROM customers) x",
        ] {
            let cols = columns(sql);
            assert!(cols.contains(&Derived), "{sql}: {cols:?}");
        }
    }

    #[test]
    fn stars_expand_to_the_catalog_columns() {
        assert_eq!(
            columns("SELECT * FROM customers"),
            [Clean, Clean, Direct(0), Direct(1)]
        );
        assert_eq!(
            columns("SELECT * FROM (SELECT * FROM customers) s"),
            [Clean, Clean, Direct(0), Direct(1)]
        );
        assert_eq!(
            columns("SELECT s.* FROM (SELECT name, email FROM customers) s"),
            [Clean, Direct(0)]
        );
    }

    #[test]
    fn clean_queries_need_no_masking() {
        for sql in [
            "SELECT 1",
            "SELECT id, name FROM customers",
            "SELECT count(*) FROM customers",
            "SELECT count(email) > 0 FROM orders",
            "SELECT * FROM orders",
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace",
            "SELECT name FROM customers WHERE email LIKE '%@example.com'",
        ] {
            let p = plan(sql).remove(0);
            assert_eq!(p.outputs, Outputs::Clean, "{sql}");
        }
        // It reads a masked column in WHERE: errors are scrubbed.
        assert!(plan("SELECT name FROM customers WHERE email = 'x'")[0].touches_masked);
        assert!(!plan("SELECT name FROM customers")[0].touches_masked);
    }

    #[test]
    fn correlated_names_reach_outer_masked_columns() {
        let cols = columns("SELECT (SELECT email FROM orders LIMIT 1) FROM customers");
        assert_eq!(cols, [Derived]);
    }

    #[test]
    fn stores_of_masked_data_are_refused() {
        for sql in [
            "INSERT INTO notes (body) SELECT email FROM customers",
            "UPDATE orders SET note = (SELECT ssn FROM customers LIMIT 1)",
            "CREATE TABLE leak AS SELECT * FROM customers",
            "SELECT email INTO leak FROM customers",
            "CREATE VIEW v AS SELECT email FROM customers",
            "SELECT set_config('x.y', email, false) FROM customers",
            "SELECT pg_notify('c', email) FROM customers",
            "COPY (SELECT email FROM customers) TO '/tmp/x'",
            "COPY customers TO STDOUT (FORMAT binary)",
            "WITH d AS (INSERT INTO notes SELECT ssn FROM customers RETURNING 1) SELECT 1",
        ] {
            assert!(refusal(sql).is_some(), "{sql}");
        }
        for sql in [
            "INSERT INTO orders (id) VALUES (1)",
            "UPDATE customers SET name = 'x' WHERE id = 1",
            "COPY customers TO STDOUT",
            "COPY (SELECT id FROM customers) TO STDOUT (FORMAT binary)",
        ] {
            assert_eq!(refusal(sql), None, "{sql}");
        }
    }

    #[test]
    fn copy_to_stdout_follows_columns() {
        let p = plan("COPY customers (id, email) TO STDOUT WITH (FORMAT csv)").remove(0);
        assert_eq!(
            p.outputs,
            Outputs::Known(vec![
                OutputItem::Column(Clean),
                OutputItem::Column(Direct(0))
            ])
        );
        assert!(matches!(
            p.copy,
            Some(CopyFormat::Csv {
                delimiter: b',',
                ..
            })
        ));
        assert_eq!(
            columns("COPY customers TO STDOUT"),
            [Clean, Clean, Direct(0), Direct(1)]
        );
    }

    #[test]
    fn returning_is_output() {
        assert_eq!(
            columns("UPDATE customers SET name = 'x' WHERE id = 1 RETURNING email"),
            [Direct(0)]
        );
    }
}
