//! Resolves a session's masked columns in the target's catalog, once, before the relay starts.
//!
//! The policy names masked columns (`customers.email`); results name their columns by table OID
//! and column number (RowDescription), `*` and `COPY t TO STDOUT` expand to every column in
//! order, and data can also be read through partitions, inheritance children and views. One
//! catalog query on the gateway's own upstream connection answers all of that: the masked
//! tables with all their columns, their partitions and children, and every view or
//! materialized view whose definition reads a masked column (transitively). Its result never
//! reaches the client.

use crate::frame::{self, ErrorFields, FrameError};
use bytes::BytesMut;
use postern_core::mask::{
    CatalogColumn, CatalogRelation, ColumnMask, MaskCatalog, MaskedColumnSpec, RelationKind,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why the catalog could not be resolved (the session is then refused: fail closed).
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The server refused the catalog query.
    #[error("the catalog query failed: {0}")]
    Server(String),
    /// The connection failed or broke the protocol.
    #[error("the catalog query could not be completed: {0}")]
    Io(String),
    /// A masked column's name cannot be put in the query safely.
    #[error("the masked column name {0:?} contains a character the gateway does not accept")]
    BadName(String),
}

impl From<FrameError> for CatalogError {
    fn from(e: FrameError) -> Self {
        CatalogError::Io(e.to_string())
    }
}

/// A SQL string literal for an operator-given name (config, not caller input), refusing
/// anything that could change how the literal is read.
fn literal(s: &str) -> Result<String, CatalogError> {
    if s.contains(['\\', '\0']) {
        return Err(CatalogError::BadName(s.to_owned()));
    }
    Ok(format!("'{}'", s.replace('\'', "''")))
}

/// The catalog query for `specs`.
pub fn query(specs: &[MaskedColumnSpec]) -> Result<String, CatalogError> {
    let mut values = Vec::with_capacity(specs.len());
    for s in specs {
        let schema = match &s.schema {
            Some(schema) => literal(schema)?,
            None => "NULL".to_owned(),
        };
        values.push(format!(
            "({schema}::text, {}::text, {}::text, {}::int)",
            literal(&s.table)?,
            literal(&s.column)?,
            s.mask
        ));
    }
    Ok(format!(
        "WITH RECURSIVE spec(sch, tab, col, mask) AS (VALUES {values}),
tree(oid, sch, tab) AS (
  SELECT c.oid, s.sch, s.tab FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    JOIN (SELECT DISTINCT sch, tab, col FROM spec) s
      ON (s.tab = c.relname OR (s.tab = '*' AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
          WHERE a.attrelid = c.oid AND a.attname = s.col AND NOT a.attisdropped)))
     AND (s.sch IS NULL OR s.sch = n.nspname)
   WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm')
  UNION
  SELECT i.inhrelid, t.sch, t.tab FROM pg_catalog.pg_inherits i JOIN tree t ON i.inhparent = t.oid
),
masked(oid, attnum, mask) AS (
  SELECT t.oid, a.attnum, min(s.mask) FROM tree t
    JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN spec s ON s.tab = t.tab AND s.sch IS NOT DISTINCT FROM t.sch
     AND (s.col = a.attname OR s.col = '*')
   GROUP BY t.oid, a.attnum
),
views(oid) AS (
  SELECT r.ev_class FROM pg_catalog.pg_depend d
    JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
    JOIN masked m ON d.refobjid = m.oid AND (d.refobjsubid = m.attnum OR d.refobjsubid = 0)
   WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass
     AND d.refclassid = 'pg_catalog.pg_class'::regclass AND r.ev_class <> d.refobjid
  UNION
  SELECT r.ev_class FROM pg_catalog.pg_depend d
    JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
    JOIN views v ON d.refobjid = v.oid
   WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass
     AND d.refclassid = 'pg_catalog.pg_class'::regclass AND r.ev_class <> d.refobjid
),
rels(oid, kind) AS (
  SELECT oid, 't' FROM tree UNION SELECT oid, 'v' FROM views
)
SELECT c.oid::text, n.nspname, c.relname, max(k.kind), a.attnum::text, a.attname,
       coalesce(min(m.mask), -1)::text
  FROM rels k
  JOIN pg_catalog.pg_class c ON c.oid = k.oid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN masked m ON m.oid = c.oid AND m.attnum = a.attnum
 GROUP BY c.oid, n.nspname, c.relname, a.attnum, a.attname
 ORDER BY c.oid, a.attnum",
        values = values.join(", ")
    ))
}

/// Runs the catalog query on the upstream connection (idle, after login) and reads the
/// answer up to ReadyForQuery. `buf` holds bytes already read from the server and keeps any
/// that follow.
pub async fn resolve<S>(
    stream: &mut S,
    buf: &mut BytesMut,
    specs: &[MaskedColumnSpec],
    max_frame: usize,
) -> Result<MaskCatalog, CatalogError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let sql = query(specs)?;
    let mut out = BytesMut::with_capacity(sql.len() + 8);
    let at = frame::begin(&mut out, b'Q');
    frame::put_cstr(&mut out, &sql);
    frame::finish(&mut out, at);
    let io = |e: std::io::Error| CatalogError::Io(e.to_string());
    stream.write_all(&out).await.map_err(io)?;
    stream.flush().await.map_err(io)?;

    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut failure = None;
    loop {
        let Some(frame) = frame::split_frame(buf, max_frame)? else {
            if stream.read_buf(buf).await.map_err(io)? == 0 {
                return Err(CatalogError::Io("the server closed the connection".into()));
            }
            continue;
        };
        match frame[0] {
            b'D' => rows.push(data_row(frame::body(&frame))?),
            b'E' => {
                let fields = ErrorFields::decode(frame::body(&frame))?;
                failure = Some(fields.message);
            }
            b'Z' => break,
            _ => {}
        }
    }
    if let Some(message) = failure {
        return Err(CatalogError::Server(message));
    }
    Ok(build(rows))
}

fn data_row(body: &[u8]) -> Result<Vec<String>, FrameError> {
    Ok(frame::data_row(body)?
        .into_iter()
        .map(|v| String::from_utf8_lossy(v.unwrap_or_default()).into_owned())
        .collect())
}

/// Groups the query's rows (oid, schema, name, kind, attnum, attname, mask) by relation.
fn build(rows: Vec<Vec<String>>) -> MaskCatalog {
    let mut catalog = MaskCatalog::default();
    for row in rows {
        let [oid, schema, name, kind, attnum, attname, mask] = match <[String; 7]>::try_from(row) {
            Ok(r) => r,
            Err(_) => continue,
        };
        let (Ok(oid), Ok(attnum), Ok(mask)) = (
            oid.parse::<u32>(),
            attnum.parse::<i16>(),
            mask.parse::<i32>(),
        ) else {
            continue;
        };
        let kind = if kind == "v" {
            RelationKind::View
        } else {
            RelationKind::Table
        };
        let mask = match (kind, u16::try_from(mask)) {
            (RelationKind::View, _) => ColumnMask::Derived,
            (_, Ok(id)) => ColumnMask::Direct(id),
            (_, Err(_)) => ColumnMask::Clean,
        };
        let column = CatalogColumn {
            attnum,
            name: attname,
            mask,
        };
        match catalog.relations.last_mut() {
            Some(r) if r.oid == oid => r.columns.push(column),
            _ => catalog.relations.push(CatalogRelation {
                oid,
                schema,
                name,
                kind,
                columns: vec![column],
            }),
        }
    }
    catalog
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_and_backslashes_refused() {
        let spec = |table: &str| MaskedColumnSpec {
            schema: None,
            table: table.into(),
            column: "email".into(),
            mask: 0,
        };
        assert!(query(&[spec("o'brien")]).unwrap().contains("'o''brien'"));
        assert!(matches!(
            query(&[spec("a\\b")]),
            Err(CatalogError::BadName(_))
        ));
    }

    #[test]
    fn rows_group_by_relation() {
        let row = |oid: &str, kind: &str, attnum: &str, name: &str, mask: &str| {
            vec![
                oid.into(),
                "public".into(),
                "customers".into(),
                kind.into(),
                attnum.into(),
                name.into(),
                mask.into(),
            ]
        };
        let catalog = build(vec![
            row("16384", "t", "1", "id", "-1"),
            row("16384", "t", "2", "email", "0"),
            row("16390", "v", "1", "id", "-1"),
        ]);
        assert_eq!(catalog.relations.len(), 2);
        assert_eq!(catalog.origin(16384, 2), ColumnMask::Direct(0));
        assert_eq!(catalog.origin(16384, 1), ColumnMask::Clean);
        assert_eq!(catalog.origin(16390, 1), ColumnMask::Derived);
    }
}
