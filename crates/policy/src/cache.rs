//! The analysis cache shared by every session.
//!
//! Parsing costs tens of microseconds; applications send the same statement texts over and
//! over, so analyses are kept in a bounded LRU keyed by the exact text. The cache is split into
//! shards, each behind its own mutex held only for a hash lookup, so sessions on different
//! threads rarely wait on each other and a hit costs well under a microsecond. Parsing happens
//! outside any lock.

use crate::analysis::{Analysis, Lexing};
use crate::functions::FunctionCatalog;
use lru::LruCache;
use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Default number of cached statement texts.
pub const DEFAULT_CACHE_ENTRIES: usize = 10_000;

/// Texts longer than this are analysed every time instead of being cached, so that a few huge
/// statements (bulk `INSERT … VALUES`) cannot pin a lot of memory.
pub const MAX_CACHED_TEXT: usize = 64 * 1024;

const SHARDS: usize = 16;

type Shard = Mutex<LruCache<Box<str>, Arc<Analysis>>>;

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to parse.
    pub misses: u64,
    /// Texts currently cached (both lexing modes).
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
        .map(|_| Mutex::new(LruCache::new(per_shard)))
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
        let shard = &set[(self.hasher.hash_one(sql) as usize) % SHARDS];
        if let Some(hit) = lock(shard).get(sql) {
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
        lock(shard).put(sql.into(), Arc::clone(&analysis));
        analysis
    }

    /// Hit and miss counts and the number of cached texts.
    pub fn stats(&self) -> CacheStats {
        let count = |set: &[Shard]| set.iter().map(|s| lock(s).len()).sum::<usize>();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: count(&self.standard) + self.backslash.get().map_or(0, |s| count(s)),
        }
    }
}

/// A poisoned shard only means another thread panicked mid-update of an LRU list of immutable
/// values; the data is still sound, so keep using it rather than failing every session.
fn lock(shard: &Shard) -> std::sync::MutexGuard<'_, LruCache<Box<str>, Arc<Analysis>>> {
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
