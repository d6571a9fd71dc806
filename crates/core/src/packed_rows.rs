//! Result rows packed into one buffer: the form in which an engine hands rows to the recorder.
//!
//! A large result is millions of rows; turning each into a `Vec<Value>` with a `String` per
//! value costs more than relaying it. [`PackedRows`] keeps a batch as one byte buffer in a
//! compact, protocol-neutral layout and is recorded exactly like [`Rows`] (same event kind,
//! same JSON), so readers never see the difference.
//!
//! Layout of one row: `columns:i16be`, then per value `len:i32be` (−1 for NULL) and `len`
//! bytes. It happens to be PostgreSQL's `DataRow` body, so that engine packs a row with one
//! copy; other engines build it with [`PackedRows::push_values`].

use crate::event::{Rows, Value};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};

/// Why an encoded row was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed row: {0}")]
pub struct MalformedRow(&'static str);

/// A batch of result rows in one buffer (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedRows {
    data: Vec<u8>,
    /// Where each row starts in `data`.
    starts: Vec<usize>,
}

impl PackedRows {
    /// Appends a row already in the packed layout, checking every length against the bytes
    /// present. Bytes after the last value are not kept.
    pub fn push_encoded(&mut self, row: &[u8]) -> Result<(), MalformedRow> {
        let used = encoded_len(row)?;
        self.starts.push(self.data.len());
        self.data.extend_from_slice(&row[..used]);
        Ok(())
    }

    /// Appends a row of values (`None` is NULL). A row holds at most `i16::MAX` values (the
    /// layout's count; PostgreSQL's own limit is 1,664 columns): any beyond are not kept.
    pub fn push_values<'v>(&mut self, values: impl ExactSizeIterator<Item = Option<&'v [u8]>>) {
        self.starts.push(self.data.len());
        self.data
            .extend_from_slice(&(values.len().min(i16::MAX as usize) as i16).to_be_bytes());
        for value in values.take(i16::MAX as usize) {
            match value {
                Some(v) => {
                    self.data.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    self.data.extend_from_slice(v);
                }
                None => self.data.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
    }

    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// True when the batch holds no row.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The values of row `index` (`None` is NULL); `index` must be below [`PackedRows::len`].
    pub fn row(&self, index: usize) -> RowValues<'_> {
        let end = self
            .starts
            .get(index + 1)
            .copied()
            .unwrap_or(self.data.len());
        RowValues::new(&self.data[self.starts[index]..end])
    }

    /// Every row, in order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = RowValues<'_>> {
        (0..self.len()).map(|i| self.row(i))
    }

    /// The value bytes of row `index` as the client received them (NULLs count 0): the unit of
    /// a recording's result cap.
    pub fn value_bytes(&self, index: usize) -> u64 {
        self.row(index).flatten().map(|v| v.len() as u64).sum()
    }

    /// Keeps the first `rows` rows.
    pub fn truncate(&mut self, rows: usize) {
        if let Some(&end) = self.starts.get(rows) {
            self.data.truncate(end);
            self.starts.truncate(rows);
        }
    }

    /// The rows `from..to` as a batch of their own.
    pub fn slice(&self, from: usize, to: usize) -> PackedRows {
        let start = self.starts.get(from).copied().unwrap_or(self.data.len());
        let end = self.starts.get(to).copied().unwrap_or(self.data.len());
        PackedRows {
            data: self.data[start..end].to_vec(),
            starts: self.starts[from..to].iter().map(|s| s - start).collect(),
        }
    }

    /// The same rows as values (for readers and tests; the hot path never needs it).
    pub fn to_rows(&self) -> Rows {
        Rows {
            rows: self
                .rows()
                .map(|row| {
                    row.map(|v| v.map_or(Value::Null, Value::from_bytes))
                        .collect()
                })
                .collect(),
        }
    }
}

/// The same rows packed (what a writer does with rows handed over as values).
impl From<&Rows> for PackedRows {
    fn from(rows: &Rows) -> Self {
        let mut packed = PackedRows::default();
        for row in &rows.rows {
            packed.push_values(row.iter().map(Value::as_bytes));
        }
        packed
    }
}

/// Bytes a well-formed row at the start of `row` occupies.
fn encoded_len(row: &[u8]) -> Result<usize, MalformedRow> {
    let Some(count) = row.get(..2) else {
        return Err(MalformedRow("no column count"));
    };
    let count = i16::from_be_bytes([count[0], count[1]]).max(0);
    let mut at = 2;
    for _ in 0..count {
        let Some(len) = row.get(at..at + 4) else {
            return Err(MalformedRow("a value length runs past the end"));
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        at += 4;
        if len > 0 {
            at = at
                .checked_add(len as usize)
                .filter(|&end| end <= row.len())
                .ok_or(MalformedRow("a value runs past the end"))?;
        }
    }
    Ok(at)
}

/// The values of one packed row, in order (`None` is NULL).
#[derive(Debug, Clone)]
pub struct RowValues<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> RowValues<'a> {
    /// `row` was checked by [`encoded_len`] when it was pushed.
    fn new(row: &'a [u8]) -> Self {
        let count = i16::from_be_bytes([row[0], row[1]]).max(0) as usize;
        RowValues {
            rest: &row[2..],
            left: count,
        }
    }
}

impl<'a> Iterator for RowValues<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let (len, rest) = self.rest.split_at(4);
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        if len < 0 {
            self.rest = rest;
            return Some(None);
        }
        let (value, rest) = rest.split_at(len as usize);
        self.rest = rest;
        Some(Some(value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for RowValues<'_> {}

/// Serialized exactly like [`Rows`]: `{"rows": [[value, ...], ...]}`, each value as
/// [`Value`] writes it.
impl Serialize for PackedRows {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Row<'a>(RowValues<'a>);
        impl Serialize for Row<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for value in self.0.clone() {
                    seq.serialize_element(&Raw(value))?;
                }
                seq.end()
            }
        }
        struct All<'a>(&'a PackedRows);
        impl Serialize for All<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for row in self.0.rows() {
                    seq.serialize_element(&Row(row))?;
                }
                seq.end()
            }
        }
        let mut st = s.serialize_struct("Rows", 1)?;
        st.serialize_field("rows", &All(self))?;
        st.end()
    }
}

/// A borrowed value, serialized as [`Value`] serializes its owned form.
struct Raw<'a>(Option<&'a [u8]>);

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => s.serialize_none(),
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => s.serialize_str(text),
                Err(_) => {
                    let mut map = s.serialize_map(Some(1))?;
                    map.serialize_entry("b64", &B64.encode(bytes))?;
                    map.end()
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PackedRows {
        let mut rows = PackedRows::default();
        rows.push_values([None, Some("héllo".as_bytes()), Some(&[0xff, 0x00][..])].into_iter());
        rows.push_values([Some(&b""[..])].into_iter());
        rows
    }

    #[test]
    fn records_exactly_like_rows() {
        let packed = sample();
        assert_eq!(
            serde_json::to_string(&packed).unwrap(),
            serde_json::to_string(&packed.to_rows()).unwrap()
        );
        assert_eq!(PackedRows::from(&packed.to_rows()), packed);
        assert_eq!(
            serde_json::to_string(&packed).unwrap(),
            r#"{"rows":[[null,"héllo",{"b64":"/wA="}],[""]]}"#
        );
        assert_eq!(packed.value_bytes(0), 8);
        assert_eq!(packed.value_bytes(1), 0);
    }

    #[test]
    fn slices_and_truncates_by_row() {
        let packed = sample();
        let tail = packed.slice(1, 2);
        assert_eq!(tail.to_rows().rows, vec![vec![Value::from("")]]);
        let mut head = packed.clone();
        head.truncate(1);
        assert_eq!(head, packed.slice(0, 1));
        assert_eq!(head.len(), 1);
    }

    #[test]
    fn malformed_rows_are_refused_not_read() {
        let mut rows = PackedRows::default();
        for bad in [&[][..], &[0], &[0, 1, 0, 0], &[0, 1, 0, 0, 0, 5, b'a']] {
            assert!(rows.push_encoded(bad).is_err(), "{bad:?}");
        }
        assert!(rows.is_empty());
        rows.push_encoded(&[0, 2, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, b'x', 9])
            .unwrap();
        assert_eq!(rows.row(0).collect::<Vec<_>>(), vec![None, Some(&b"x"[..])]);
    }
}
