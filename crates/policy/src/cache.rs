//! The analysis cache shared by every session.
//!
//! Parsing costs tens of microseconds; applications send the same statements over and over, so
//! analyses are kept in a bounded LRU. A statement whose analysis reads no literal value
//! ([`StatementAnalysis::literal_free`](crate::StatementAnalysis::literal_free), the common
//! `SELECT … WHERE id = 42`) is cached under its *shape*, the text with its literals taken out,
//! so clients that inline values instead of using parameters hit the cache too; any other
//! statement is cached under its exact text. The cache is split into shards, each behind its own
//! mutex held only for a hash lookup, so sessions on different threads rarely wait on each other
//! and a hit costs well under a microsecond. Parsing happens outside any lock.

use crate::analysis::{Analysis, Lexing, StatementAnalysis};
use crate::functions::FunctionCatalog;
use crate::shape::{Shape, shape_of};
use lru::LruCache;
use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Default number of cached statement texts.
pub const DEFAULT_CACHE_ENTRIES: usize = 10_000;

/// Texts longer than this are analysed every time instead of being cached, so that a few huge
/// statements (bulk `INSERT … VALUES`) cannot pin a lot of memory.
pub const MAX_CACHED_TEXT: usize = 64 * 1024;

const SHARDS: usize = 16;

/// One shard: analyses by exact text, and literal-free analyses by shape.
struct Maps {
    texts: LruCache<Box<str>, Arc<Analysis>>,
    shapes: LruCache<Box<str>, ShapeEntry>,
}

type Shard = Mutex<Maps>;

/// A literal-free analysis and where its one statement lies, measured from the two ends of the
/// text (the parts outside the literals, which every text of the shape shares).
#[derive(Clone)]
struct ShapeEntry {
    analysis: Arc<Analysis>,
    head: usize,
    tail: usize,
}

impl ShapeEntry {
    /// The entry for `analysis` of a text of `shape`, when it may be shared: one literal-free
    /// statement spanning every literal of the text.
    fn admit(analysis: &Arc<Analysis>, shape: &Shape, len: usize) -> Option<ShapeEntry> {
        let [statement] = analysis.statements.as_slice() else {
            return None;
        };
        let span = &statement.span;
        let spans_literals = span.start <= shape.first_literal && span.end >= shape.literals_end;
        (analysis.error.is_none() && statement.literal_free && spans_literals).then(|| ShapeEntry {
            analysis: Arc::clone(analysis),
            head: span.start,
            tail: len - span.end,
        })
    }

    /// The shared analysis, re-spanned for a text of `len` bytes of the same shape.
    fn for_text(&self, len: usize) -> Arc<Analysis> {
        let span: Range<usize> = self.head..len.saturating_sub(self.tail).max(self.head);
        let statement = &self.analysis.statements[0];
        if statement.span == span {
            return Arc::clone(&self.analysis);
        }
        Arc::new(Analysis {
            statements: vec![StatementAnalysis {
                span,
                ..statement.clone()
            }],
            error: None,
        })
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to parse.
    pub misses: u64,
    /// Texts and shapes currently cached (both lexing modes).
    pub entries: usize,
}

/// Analyses statement texts, remembering the results: one per gateway, shared by all sessions.
pub struct Analyzer {
    functions: FunctionCatalog,
    /// Compute each statement's lineage (only when masks are configured).
    lineage: bool,
    per_shard: NonZeroUsize,
    standard: Box<[Shard]>,
    /// Only sessions that changed `standard_conforming_strings` use this one.
    backslash: OnceLock<Box<[Shard]>>,
    hasher: std::collections::hash_map::RandomState,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for Analyzer {
    fn default() -> Self {
        Analyzer::new(DEFAULT_CACHE_ENTRIES, FunctionCatalog::default())
    }
}

fn shards(per_shard: NonZeroUsize) -> Box<[Shard]> {
    (0..SHARDS)
        .map(|_| {
            Mutex::new(Maps {
                texts: LruCache::new(per_shard),
                shapes: LruCache::new(per_shard),
            })
        })
        .collect()
}

impl Analyzer {
    /// A cache of about `capacity` texts (at least one per shard), analysing with `functions`.
    pub fn new(capacity: usize, functions: FunctionCatalog) -> Self {
        let per_shard =
            NonZeroUsize::new(capacity.div_ceil(SHARDS).max(1)).unwrap_or(NonZeroUsize::MIN);
        Analyzer {
            functions,
            lineage: false,
            per_shard,
            standard: shards(per_shard),
            backslash: OnceLock::new(),
            hasher: Default::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The same analyzer computing each statement's lineage too (needed by masking).
    pub fn with_lineage(mut self) -> Self {
        self.lineage = true;
        self
    }

    /// The declared functions analyses use.
    pub fn functions(&self) -> &FunctionCatalog {
        &self.functions
    }

    /// The analysis of `sql` under PostgreSQL's default lexing, from the cache when possible.
    pub fn analyze(&self, sql: &str) -> Arc<Analysis> {
        self.analyze_as(sql, Lexing::Standard)
    }

    /// The analysis of `sql` as the server reads it under `lexing`, from the cache when possible.
    /// Never fails: text that cannot be analysed yields an `unknown` statement.
    pub fn analyze_as(&self, sql: &str, lexing: Lexing) -> Arc<Analysis> {
        if sql.len() > MAX_CACHED_TEXT {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Arc::new(Analysis::of_with(
                sql,
                lexing,
                &self.functions,
                self.lineage,
            ));
        }
        let set = match lexing {
            Lexing::Standard => &self.standard,
            Lexing::BackslashEscapes => self.backslash.get_or_init(|| shards(self.per_shard)),
        };
        // Backslash-escaping sessions read plain strings differently from the shapes' lexer.
        let shape = (lexing == Lexing::Standard)
            .then(|| shape_of(sql))
            .flatten();
        if let Some(shape) = &shape
            && let Some(entry) = lock(self.shard(set, &shape.key))
                .shapes
                .get(shape.key.as_str())
                .cloned()
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return entry.for_text(sql.len());
        }
        if let Some(hit) = lock(self.shard(set, sql)).texts.get(sql) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Arc::clone(hit);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let analysis = Arc::new(Analysis::of_with(
            sql,
            lexing,
            &self.functions,
            self.lineage,
        ));
        match shape.and_then(|s| Some((ShapeEntry::admit(&analysis, &s, sql.len())?, s.key))) {
            Some((entry, key)) => {
                lock(self.shard(set, &key)).shapes.put(key.into(), entry);
            }
            None => {
                lock(self.shard(set, sql))
                    .texts
                    .put(sql.into(), Arc::clone(&analysis));
            }
        }
        analysis
    }

    fn shard<'s>(&self, set: &'s [Shard], key: &str) -> &'s Shard {
        &set[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Hit and miss counts and the number of cached texts.
    pub fn stats(&self) -> CacheStats {
        let count = |set: &[Shard]| {
            set.iter()
                .map(|s| {
                    let maps = lock(s);
                    maps.texts.len() + maps.shapes.len()
                })
                .sum::<usize>()
        };
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: count(&self.standard) + self.backslash.get().map_or(0, |s| count(s)),
        }
    }
}

/// A poisoned shard only means another thread panicked mid-update of an LRU list of immutable
/// values; the data is still sound, so keep using it rather than failing every session.
fn lock(shard: &Shard) -> std::sync::MutexGuard<'_, Maps> {
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_by_text_and_evicts_beyond_capacity() {
        let a = Analyzer::new(16, FunctionCatalog::default());
        let first = a.analyze("SELECT 1");
        let second = a.analyze("SELECT 1");
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(a.stats().hits, 1);
        for i in 0..1000 {
            a.analyze(&format!("SELECT {i}"));
        }
        assert!(a.stats().entries <= 16 + SHARDS, "{:?}", a.stats());
    }

    /// Texts of the statements below with their literals changed (other values, other lengths).
    fn variant(sql: &str) -> String {
        let mut out = String::new();
        let mut in_string = false;
        for c in sql.chars() {
            match c {
                '\'' => {
                    in_string = !in_string;
                    out.push(c);
                    if in_string {
                        out.push_str("zz");
                    }
                }
                '0'..='9' if !in_string && !out.ends_with(|p: char| p.is_alphanumeric()) => {
                    out.push_str("77")
                }
                '0'..='9' if !in_string => out.push(c),
                _ if in_string => {}
                _ => out.push(c),
            }
        }
        out
    }

    #[test]
    fn texts_differing_in_literals_share_an_analysis_only_when_it_ignores_them() {
        let corpus = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
            "UPDATE pgbench_accounts SET abalance = abalance + -4711 WHERE aid = 9;",
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, 4, CURRENT_TIMESTAMP)",
            "DELETE FROM orders WHERE id = 5 RETURNING email",
            "SELECT email, substr(ssn, 1, 3) FROM customers WHERE name = 'Ann' LIMIT 10",
            "SELECT set_config('search_path', 'public', false)",
            "SELECT set_config('standard_conforming_strings', 'off', false)",
            "SELECT pg_read_file('/etc/passwd')",
            "SELECT nextval('orders_id_seq')",
            "SELECT 1; DROP TABLE t",
            "SET statement_timeout = 5000",
            "SET standard_conforming_strings = 'off'",
            "COPY (SELECT 1) TO '/tmp/x'",
            "EXPLAIN (ANALYZE 'off') DELETE FROM t",
            "DELETE FROM t WHERE 1 = 1",
            "SELECT 'it''s', 2.5e3 FROM \"t'1\"",
        ];
        for lineage in [false, true] {
            let functions = FunctionCatalog::default();
            let mut a = Analyzer::new(64, FunctionCatalog::default());
            if lineage {
                a = a.with_lineage();
            }
            for sql in corpus {
                let other = variant(sql);
                assert_ne!(other, sql);
                let _ = a.analyze(&other);
                let cached = a.analyze(sql);
                let fresh = Analysis::of_with(sql, Lexing::Standard, &functions, lineage);
                assert_eq!(*cached, fresh, "{sql} after {other}");
            }
        }
    }

    #[test]
    fn inlined_literals_hit_the_cache_and_spans_follow_each_text() {
        let a = Analyzer::new(64, FunctionCatalog::default());
        for aid in [1, 48213, 7, 100000, 48213] {
            let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};");
            let analysis = a.analyze(&sql);
            let span = analysis.statements[0].span.clone();
            assert_eq!(&sql[span], &sql[..sql.len() - 1]);
        }
        let stats = a.stats();
        assert_eq!((stats.misses, stats.hits, stats.entries), (1, 4, 1));
        // A literal a function reads is part of what the statement does: no sharing.
        let lexing = a.analyze("SELECT set_config('standard_conforming_strings', 'off', false)");
        let path = a.analyze("SELECT set_config('search_path', 'public', false)");
        assert!(lexing.statements[0].changes_lexing);
        assert!(!path.statements[0].changes_lexing);
    }

    #[test]
    fn lexing_modes_are_cached_apart() {
        let a = Analyzer::default();
        let sql = r"SELECT 'a\'; DROP TABLE t; --'";
        assert_eq!(a.analyze_as(sql, Lexing::Standard).statements.len(), 2);
        assert_eq!(
            a.analyze_as(sql, Lexing::BackslashEscapes).statements.len(),
            1
        );
    }
}
