//! Masking: the protocol-neutral contract between the policy, which knows *what* is masked and
//! *how*, and the engines, which know *where* values sit in the wire format.
//!
//! Three layers meet here:
//! - **lineage**: the policy tells the engine, per statement, which result columns derive from
//!   masked columns ([`ResultPlan`]); the engine combines that with what the server says about
//!   each column's origin (for PostgreSQL, RowDescription's table OID and column number, matched
//!   against the [`MaskCatalog`] it resolved at session start);
//! - **values**: the [`Masker`] rewrites a masked value by its mask's strategy;
//! - **content**: the [`Masker`] also runs content detectors over text the server sends.

use std::sync::Arc;

/// Index of a mask in the session's list of masks (config order).
pub type MaskId = u16;

/// A masked column as config names it, for the engine to resolve in the target's catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedColumnSpec {
    /// The schema, when config names one (otherwise every schema).
    pub schema: Option<String>,
    /// The table (or view).
    pub table: String,
    /// The column; `*` masks every column of the table.
    pub column: String,
    /// The mask that covers it.
    pub mask: MaskId,
}

/// What kind of relation a catalog entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationKind {
    /// A table (or partition, or inheritance child) holding masked columns.
    Table,
    /// A view or materialized view whose definition reads a masked column: every column of
    /// it is treated as derived from masked data.
    View,
}

/// One column of a catalog relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogColumn {
    /// The column number (`attnum`).
    pub attnum: i16,
    /// The column name.
    pub name: String,
    /// How its values are masked.
    pub mask: ColumnMask,
}

/// A relation that holds (or derives from) masked columns, with all its columns in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogRelation {
    /// The relation's OID on the target.
    pub oid: u32,
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// Table or view.
    pub kind: RelationKind,
    /// Every live column, in column-number order (what `*` and `COPY t TO` produce).
    pub columns: Vec<CatalogColumn>,
}

/// The masked part of the target's catalog, resolved once per session before any statement
/// runs. Only relations that hold or derive from masked columns are listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskCatalog {
    /// The relations.
    pub relations: Vec<CatalogRelation>,
}

impl MaskCatalog {
    /// The mask of column `attnum` of relation `oid`, as the server reports a result column's
    /// origin; `Clean` for anything not listed.
    pub fn origin(&self, oid: u32, attnum: i16) -> ColumnMask {
        if oid == 0 {
            return ColumnMask::Clean;
        }
        self.relations
            .iter()
            .find(|r| r.oid == oid)
            .and_then(|r| r.columns.iter().find(|c| c.attnum == attnum))
            .map_or(ColumnMask::Clean, |c| c.mask)
    }

    /// Relations named `name` (in `schema`, when given): an unqualified name may be any of them.
    pub fn named<'a>(
        &'a self,
        schema: Option<&'a str>,
        name: &'a str,
    ) -> impl Iterator<Item = &'a CatalogRelation> + 'a {
        self.relations
            .iter()
            .filter(move |r| r.name == name && schema.is_none_or(|s| s == r.schema))
    }
}

/// How one result column is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColumnMask {
    /// Not derived from masked data.
    #[default]
    Clean,
    /// Exactly the value of a column covered by this mask: the mask's strategy applies.
    Direct(MaskId),
    /// Computed from masked data (an expression, an aggregate, a whole-row value, a union of
    /// branches, a view column): always fully redacted, whatever the strategy, because a
    /// partial or hashed form of an attacker-chosen expression can leak the value.
    Derived,
}

impl ColumnMask {
    /// Whether the column's values are rewritten.
    pub fn is_masked(self) -> bool {
        !matches!(self, ColumnMask::Clean)
    }

    /// The stronger of two lineages (for a value that may come from either).
    pub fn join(self, other: ColumnMask) -> ColumnMask {
        match (self, other) {
            (ColumnMask::Clean, x) | (x, ColumnMask::Clean) => x,
            (ColumnMask::Direct(a), ColumnMask::Direct(b)) if a == b => ColumnMask::Direct(a),
            _ => ColumnMask::Derived,
        }
    }
}

/// One entry of a statement's output list, before `*` is expanded by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputItem {
    /// One column.
    Column(ColumnMask),
    /// A `*` or `t.*` expansion: its columns when the statement or the catalog says how many
    /// there are, `None` for a relation outside the catalog (clean columns, width unknown).
    Star(Option<Vec<ColumnMask>>),
}

/// The lineage of the rows one statement returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Outputs {
    /// The statement returns no rows derived from anything masked (every column is clean).
    #[default]
    Clean,
    /// The output list, in order.
    Known(Vec<OutputItem>),
    /// The lineage is unknown (e.g. `FETCH` from a cursor the gateway did not see declared):
    /// every column without a catalog origin is treated as derived.
    Opaque,
}

/// The layout of `COPY … TO STDOUT` data, which carries no column descriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// Tab-separated (or `delimiter`) text with backslash escapes.
    Text {
        /// The field delimiter.
        delimiter: u8,
    },
    /// CSV.
    Csv {
        /// The field delimiter.
        delimiter: u8,
        /// The quote character.
        quote: u8,
        /// The escape character.
        escape: u8,
    },
    /// PostgreSQL's binary COPY format.
    Binary,
}

/// How to mask what one statement returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatementPlan {
    /// The lineage of its rows.
    pub outputs: Outputs,
    /// The statement reads a masked column anywhere (even in `WHERE`): errors and notices it
    /// causes may quote masked values, so their quoted values are redacted.
    pub touches_masked: bool,
    /// For `COPY … TO STDOUT`: the data's layout.
    pub copy: Option<CopyFormat>,
}

impl StatementPlan {
    /// The plan of a statement whose results cannot be traced (an unknown cursor or prepared
    /// statement, a text the server may read differently): every column is masked.
    pub fn opaque() -> StatementPlan {
        StatementPlan {
            outputs: Outputs::Opaque,
            touches_masked: true,
            copy: None,
        }
    }
}

/// How to mask the results of one command: one plan per statement in its text, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResultPlan {
    /// The statements' plans.
    pub statements: Vec<StatementPlan>,
}

impl ResultPlan {
    /// Whether nothing in the results needs lineage masking.
    pub fn is_clean(&self) -> bool {
        self.statements
            .iter()
            .all(|s| s.outputs == Outputs::Clean && !s.touches_masked)
    }
}

/// Rewrites values: by a mask's strategy, and by content detectors.
pub trait Masker: Send + Sync {
    /// Appends to `out` the masked form of `value`, a value of a column masked as `mask`
    /// (`Direct` applies that mask's strategy, `Derived` always redacts).
    fn mask_value(&self, mask: ColumnMask, value: &[u8], out: &mut Vec<u8>);

    /// Whether any content detector is configured (if not, [`Masker::scrub`] is never needed).
    fn has_detectors(&self) -> bool;

    /// Runs the content detectors over `text` and returns it with every finding masked, or
    /// `None` when nothing was found (the common case allocates nothing).
    fn scrub(&self, text: &[u8]) -> Option<Vec<u8>>;
}

/// A session's masking: what to resolve, and the value masker. Handed to the engine by
/// [`crate::SessionPolicy::masking`].
#[derive(Clone)]
pub struct SessionMasking {
    /// The masked columns to resolve in the target's catalog.
    pub columns: Vec<MaskedColumnSpec>,
    /// The value masker.
    pub masker: Arc<dyn Masker>,
}

impl std::fmt::Debug for SessionMasking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionMasking")
            .field("columns", &self.columns)
            .field("detectors", &self.masker.has_detectors())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_prefers_the_stronger_lineage() {
        use ColumnMask::*;
        assert_eq!(Clean.join(Direct(1)), Direct(1));
        assert_eq!(Direct(1).join(Direct(1)), Direct(1));
        assert_eq!(Direct(1).join(Direct(2)), Derived);
        assert_eq!(Derived.join(Clean), Derived);
    }

    #[test]
    fn origin_finds_listed_columns_only() {
        let catalog = MaskCatalog {
            relations: vec![CatalogRelation {
                oid: 42,
                schema: "public".into(),
                name: "customers".into(),
                kind: RelationKind::Table,
                columns: vec![
                    CatalogColumn {
                        attnum: 1,
                        name: "id".into(),
                        mask: ColumnMask::Clean,
                    },
                    CatalogColumn {
                        attnum: 3,
                        name: "email".into(),
                        mask: ColumnMask::Direct(0),
                    },
                ],
            }],
        };
        assert_eq!(catalog.origin(42, 3), ColumnMask::Direct(0));
        assert_eq!(catalog.origin(42, 1), ColumnMask::Clean);
        assert_eq!(catalog.origin(7, 3), ColumnMask::Clean);
        assert_eq!(catalog.named(None, "customers").count(), 1);
        assert_eq!(catalog.named(Some("other"), "customers").count(), 0);
    }
}
