//! Statement classes: the vocabulary rules use to say *what kind of effect* they target.
//!
//! A statement usually has several classes at once (an `INSERT … SELECT` reads and writes; an
//! `UPDATE` without `WHERE` is both `write` and `unbounded_write`), so analysis yields a
//! [`ClassSet`] and rules test it with cheap bit operations on the hot path.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One kind of effect a statement can have. The names are the ones written in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum StatementClass {
    /// Reads table data or computes a result (`SELECT`, `VALUES`, `TABLE`, `FETCH`,
    /// `COPY … TO STDOUT`, plain `EXPLAIN`).
    Read,
    /// Changes table data (`INSERT`, `UPDATE`, `DELETE`, `MERGE`, `COPY … FROM STDIN`,
    /// `SELECT INTO`, `nextval()`, large-object writes, …).
    Write,
    /// A write with no row restriction: `UPDATE`/`DELETE` without `WHERE` (or with a `WHERE` that
    /// references no column, such as `WHERE true`), `TRUNCATE`, `MERGE … ON true`.
    /// Always comes with [`StatementClass::Write`].
    UnboundedWrite,
    /// Changes the schema (`CREATE`, `ALTER`, `DROP`, `COMMENT`, …).
    Ddl,
    /// Changes who may do what or who the session acts as (`GRANT`, `REVOKE`, `SET ROLE`,
    /// `SET SESSION AUTHORIZATION`, `CREATE/ALTER/DROP ROLE`, row-level security policies).
    Privilege,
    /// Reaches beyond the database's tables: the server's files, programs, configuration,
    /// other backends or other servers (`ALTER SYSTEM`, `COPY … PROGRAM`, `COPY` to/from a
    /// server file, `pg_read_file()`, `lo_import()`, `pg_terminate_backend()`, `dblink`, `LOAD`,
    /// security-sensitive settings, extensions, databases, tablespaces, replication).
    Admin,
    /// The analysis cannot see what the statement does: `DO`, `CALL`, `EXECUTE` of a statement
    /// the session never prepared, dynamic SQL (`query_to_xml('…')`), functions that are not
    /// built in, and anything that does not parse.
    Unknown,
    /// Session and transaction control that changes no data: `BEGIN`, `COMMIT`, `ROLLBACK`,
    /// `SAVEPOINT`, `SET`/`RESET`/`SHOW` of ordinary settings, `DISCARD`, `DEALLOCATE`, `LISTEN`,
    /// `NOTIFY`, `CLOSE`.
    Session,
    /// Takes locks that can hold up other sessions: `SELECT … FOR UPDATE/SHARE`, `LOCK TABLE`,
    /// advisory locks.
    Lock,
    /// Table maintenance: `VACUUM`, `ANALYZE`, `CLUSTER`, `REINDEX`, `REFRESH MATERIALIZED VIEW`.
    Maintenance,
}

impl StatementClass {
    /// Every class, in the order of how consequential it is (most first), which is also the
    /// order used to pick a statement's primary class.
    pub const ALL: [StatementClass; 10] = [
        StatementClass::Admin,
        StatementClass::Privilege,
        StatementClass::Unknown,
        StatementClass::Ddl,
        StatementClass::UnboundedWrite,
        StatementClass::Write,
        StatementClass::Maintenance,
        StatementClass::Lock,
        StatementClass::Read,
        StatementClass::Session,
    ];

    /// The name used in config, recordings and block reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            StatementClass::Read => "read",
            StatementClass::Write => "write",
            StatementClass::UnboundedWrite => "unbounded_write",
            StatementClass::Ddl => "ddl",
            StatementClass::Privilege => "privilege",
            StatementClass::Admin => "admin",
            StatementClass::Unknown => "unknown",
            StatementClass::Session => "session",
            StatementClass::Lock => "lock",
            StatementClass::Maintenance => "maintenance",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for StatementClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StatementClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StatementClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = StatementClass::ALL.iter().map(|c| c.as_str()).collect();
                format!(
                    "unknown statement class {s:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

impl TryFrom<String> for StatementClass {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<StatementClass> for &'static str {
    fn from(c: StatementClass) -> Self {
        c.as_str()
    }
}

/// A set of [`StatementClass`]es, as a bit set so that rule matching costs a few instructions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ClassSet(u16);

impl ClassSet {
    /// The empty set.
    pub const EMPTY: ClassSet = ClassSet(0);

    /// The set holding only `class`.
    pub fn of(class: StatementClass) -> Self {
        ClassSet(class.bit())
    }

    /// Adds `class`.
    pub fn insert(&mut self, class: StatementClass) {
        self.0 |= class.bit();
    }

    /// Removes `class`.
    pub fn remove(&mut self, class: StatementClass) {
        self.0 &= !class.bit();
    }

    /// Whether `class` is in the set.
    pub fn contains(self, class: StatementClass) -> bool {
        self.0 & class.bit() != 0
    }

    /// Whether the two sets share a class.
    pub fn intersects(self, other: ClassSet) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether every class of `self` is in `other`.
    pub fn is_subset(self, other: ClassSet) -> bool {
        self.0 & !other.0 == 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The union of both sets.
    pub fn union(self, other: ClassSet) -> ClassSet {
        ClassSet(self.0 | other.0)
    }

    /// The classes in the set, most consequential first.
    pub fn iter(self) -> impl Iterator<Item = StatementClass> {
        StatementClass::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }

    /// The most consequential class in the set, if any.
    pub fn primary(self) -> Option<StatementClass> {
        self.iter().next()
    }
}

impl FromIterator<StatementClass> for ClassSet {
    fn from_iter<I: IntoIterator<Item = StatementClass>>(iter: I) -> Self {
        let mut set = ClassSet::EMPTY;
        for c in iter {
            set.insert(c);
        }
        set
    }
}

impl fmt::Display for ClassSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for c in self.iter() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            f.write_str(c.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_say_what_is_expected() {
        for c in StatementClass::ALL {
            assert_eq!(c.as_str().parse::<StatementClass>(), Ok(c));
        }
        let err = "dd1".parse::<StatementClass>().unwrap_err();
        assert!(
            err.contains("\"dd1\"") && err.contains("unbounded_write"),
            "{err}"
        );
    }

    #[test]
    fn set_operations() {
        let mut s = ClassSet::of(StatementClass::Write);
        s.insert(StatementClass::UnboundedWrite);
        assert_eq!(s.primary(), Some(StatementClass::UnboundedWrite));
        assert!(s.intersects(ClassSet::of(StatementClass::Write)));
        assert!(!s.is_subset(ClassSet::of(StatementClass::Write)));
        assert_eq!(s.to_string(), "unbounded_write,write");
    }
}
