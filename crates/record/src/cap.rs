//! The `record_results` cap: how much of each result a recording keeps.
//!
//! Results are recorded in full by default, because "what did the caller receive" is the
//! question an audit asks. A target can cap each result to its first N bytes, or drop result
//! data altogether; either way the recording says so with a `results_truncated` event, so a
//! reader never mistakes a capped result for a short one.
//!
//! The cap counts value bytes as the client received them (after masking), per result: the
//! data between one command, row description, completion or error and the next. It keeps a
//! prefix: once a row does not fit, it and every later row of that result are left out.

use std::fmt;
use std::str::FromStr;

use crate::event::{PackedRows, ResultsTruncated};

/// How much result data to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResultCap {
    /// Every row and every byte of COPY data (`full`, the default).
    #[default]
    Full,
    /// The first N bytes of each result (`first:10MB`).
    First(u64),
    /// No rows or COPY data; descriptions, tags, errors and notices are still recorded.
    None,
}

impl FromStr for ResultCap {
    type Err = String;

    /// Parse `full`, `none` or `first:<size>`, where size is a number with an optional unit
    /// `B`, `KB`, `MB`, `GB` (powers of 1024; `KiB`, `MiB`, `GiB` are accepted too).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("invalid record_results {s:?} (expected \"full\", \"first:10MB\" or \"none\")")
        };
        match s {
            "full" => return Ok(ResultCap::Full),
            "none" => return Ok(ResultCap::None),
            _ => {}
        }
        let size = s.strip_prefix("first:").ok_or_else(bad)?.trim();
        let split = size
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(size.len());
        let (digits, unit) = size.split_at(split);
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KIB" => 1 << 10,
            "M" | "MB" | "MIB" => 1 << 20,
            "G" | "GB" | "GIB" => 1 << 30,
            _ => return Err(bad()),
        };
        n.checked_mul(mult).map(ResultCap::First).ok_or_else(bad)
    }
}

impl fmt::Display for ResultCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResultCap::Full => f.write_str("full"),
            ResultCap::None => f.write_str("none"),
            ResultCap::First(n) => {
                for (unit, size) in [("GB", 1u64 << 30), ("MB", 1 << 20), ("KB", 1 << 10)] {
                    if *n >= size && n % size == 0 {
                        return write!(f, "first:{}{unit}", n / size);
                    }
                }
                write!(f, "first:{n}B")
            }
        }
    }
}

/// Per-result accounting of the cap.
#[derive(Debug, Clone, Default)]
pub(crate) struct CapState {
    recorded: u64,
    cutting: bool,
    omitted_rows: u64,
    omitted_bytes: u64,
    oversized: bool,
}

impl CapState {
    /// Keep the rows of `rows` that fit under `cap`; the rest are counted as omitted.
    pub fn admit_rows(&mut self, cap: ResultCap, rows: &mut PackedRows) {
        let limit = match cap {
            ResultCap::Full => return,
            ResultCap::None => 0,
            ResultCap::First(n) => n,
        };
        let mut keep = 0;
        if !self.cutting {
            for i in 0..rows.len() {
                let size = rows.value_bytes(i);
                if self.recorded + size > limit {
                    self.cutting = true;
                    break;
                }
                self.recorded += size;
                keep += 1;
            }
        }
        for i in keep..rows.len() {
            self.omitted_rows += 1;
            self.omitted_bytes += rows.value_bytes(i);
        }
        rows.truncate(keep);
    }

    /// Keep the prefix of `data` that fits under `cap`.
    pub fn admit_bytes<'a>(&mut self, cap: ResultCap, data: &'a [u8]) -> &'a [u8] {
        let limit = match cap {
            ResultCap::Full => return data,
            ResultCap::None => 0,
            ResultCap::First(n) => n,
        };
        let room = if self.cutting {
            0
        } else {
            limit.saturating_sub(self.recorded).min(data.len() as u64) as usize
        };
        self.recorded += room as u64;
        if room < data.len() {
            self.cutting = true;
            self.omitted_bytes += (data.len() - room) as u64;
        }
        &data[..room]
    }

    /// Count a single row too large to frame, whatever the cap.
    pub fn omit_oversized(&mut self, value_bytes: u64) {
        self.oversized = true;
        self.omitted_rows += 1;
        self.omitted_bytes += value_bytes;
    }

    /// A result ended: the marker to record if anything was left out, and a fresh count.
    pub fn boundary(&mut self, cap: ResultCap) -> Option<ResultsTruncated> {
        let marker = (self.omitted_rows > 0 || self.omitted_bytes > 0).then(|| ResultsTruncated {
            omitted_rows: self.omitted_rows,
            omitted_bytes: self.omitted_bytes,
            reason: if self.oversized {
                "oversized".to_owned()
            } else {
                cap.to_string()
            },
        });
        *self = CapState::default();
        marker
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!("full".parse::<ResultCap>().unwrap(), ResultCap::Full);
        assert_eq!("none".parse::<ResultCap>().unwrap(), ResultCap::None);
        assert_eq!(
            "first:10MB".parse::<ResultCap>().unwrap(),
            ResultCap::First(10 << 20)
        );
        assert_eq!(
            "first:512kib".parse::<ResultCap>().unwrap(),
            ResultCap::First(512 << 10)
        );
        assert_eq!(
            "first:100".parse::<ResultCap>().unwrap(),
            ResultCap::First(100)
        );
        for bad in ["", "first:", "first:10XB", "some", "first:-1"] {
            assert!(bad.parse::<ResultCap>().is_err(), "{bad}");
        }
        assert_eq!(ResultCap::First(10 << 20).to_string(), "first:10MB");
        assert_eq!(ResultCap::First(1000).to_string(), "first:1000B");
    }

    fn rows(n: usize, width: usize) -> PackedRows {
        let value = "x".repeat(width);
        let mut rows = PackedRows::default();
        for _ in 0..n {
            rows.push_values([Some(value.as_bytes())].into_iter());
        }
        rows
    }

    fn admitted(st: &mut CapState, cap: ResultCap, mut rows: PackedRows) -> usize {
        st.admit_rows(cap, &mut rows);
        rows.len()
    }

    #[test]
    fn keeps_a_prefix_per_result() {
        let cap = ResultCap::First(25);
        let mut st = CapState::default();
        assert_eq!(admitted(&mut st, cap, rows(2, 10)), 2);
        // 20 recorded; the next 10-byte row does not fit, nor does anything after it.
        assert_eq!(admitted(&mut st, cap, rows(3, 10)), 0);
        assert_eq!(admitted(&mut st, cap, rows(1, 1)), 0);
        let marker = st.boundary(cap).unwrap();
        assert_eq!((marker.omitted_rows, marker.omitted_bytes), (4, 31));
        assert_eq!(marker.reason, "first:25B");
        // A new result starts from zero.
        assert_eq!(admitted(&mut st, cap, rows(2, 10)), 2);
        assert!(st.boundary(cap).is_none());
    }

    #[test]
    fn bytes_are_cut_exactly() {
        let cap = ResultCap::First(5);
        let mut st = CapState::default();
        assert_eq!(st.admit_bytes(cap, b"abc"), b"abc");
        assert_eq!(st.admit_bytes(cap, b"defg"), b"de");
        assert_eq!(st.admit_bytes(cap, b"h"), b"");
        assert_eq!(st.boundary(cap).unwrap().omitted_bytes, 3);
        let mut st = CapState::default();
        assert_eq!(st.admit_bytes(ResultCap::None, b"abc"), b"");
        assert_eq!(st.boundary(ResultCap::None).unwrap().reason, "none");
        assert_eq!(st.admit_bytes(ResultCap::Full, b"abc"), b"abc");
    }
}
