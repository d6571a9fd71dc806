//! Statement shapes: a text with its literal values taken out.
//!
//! Clients that inline literals (`pgbench -M simple`, ORMs that do not use parameters, people
//! typing in psql) send a new text for every value, so an analysis cache keyed by text alone
//! never hits and every statement is parsed. Two texts that differ only in the values of their
//! constants have the same parse tree up to those values; when the analysis of such a statement
//! does not look at them (see [`StatementAnalysis::literal_free`]), it can be shared by every
//! text of the same shape.
//!
//! Sharing is only sound if this module splits text into tokens exactly as PostgreSQL's lexer
//! does. It therefore recognises only the plainest forms — `'…'` strings (with `''`), decimal
//! integers of up to nine digits, decimals with a point and an exponent, `"…"` identifiers,
//! `$n` parameters — and gives up (no shape, the text is cached by itself) on anything else:
//! comments, backslashes, dollar quoting, prefixed strings (`E'…'`, `B'…'`, `U&'…'`, …),
//! numbers glued to other characters, and control characters. A text without a shape is never
//! wrong, only slower.
//!
//! [`StatementAnalysis::literal_free`]: crate::StatementAnalysis::literal_free

/// A text's shape: the cache key and where its literals lie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shape {
    /// The text with every literal replaced by a one-byte marker of its lexical kind.
    pub key: String,
    /// Where the first literal starts (the text's length when there is none).
    pub first_literal: usize,
    /// Where the last literal ends (0 when there is none).
    pub literals_end: usize,
}

/// Replaces a string literal (`'…'`).
const STRING: char = '\u{1}';
/// Replaces an integer the lexer reads as an `int4` constant.
const INTEGER: char = '\u{2}';
/// Replaces a decimal with a point or an exponent (a numeric constant).
const DECIMAL: char = '\u{3}';

/// The shape of `sql`, or `None` when it holds anything this module does not lex with
/// certainty.
pub(crate) fn shape_of(sql: &str) -> Option<Shape> {
    let bytes = sql.as_bytes();
    let mut key = String::with_capacity(sql.len());
    let mut first_literal = sql.len();
    let mut literals_end = 0;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (end, marker) = match b {
            b'\'' => {
                if i > 0 && (is_ident(bytes[i - 1]) || bytes[i - 1] == b'&') {
                    return None; // E'…', B'…', X'…', N'…', U&'…'
                }
                (quoted_end(bytes, i, b'\'')?, STRING)
            }
            b'"' => {
                i = quoted_end(bytes, i, b'"')?;
                continue;
            }
            b'0'..=b'9' if i == 0 || !is_ident(bytes[i - 1]) => {
                if i > 0 && bytes[i - 1] == b'.' {
                    return None; // `.5`, or a digit after a qualified name's dot
                }
                number(bytes, i)?
            }
            b'$' => {
                if i > 0 && is_ident(bytes[i - 1]) {
                    return None; // `$` inside an identifier
                }
                let digits = bytes[i + 1..].iter().take_while(|c| c.is_ascii_digit());
                let end = i + 1 + digits.count();
                if end == i + 1 || bytes.get(end).is_some_and(|&c| is_ident(c)) {
                    return None; // dollar quoting, or a parameter glued to a name
                }
                i = end;
                continue;
            }
            b'\\' | 0..=0x08 | 0x0e..=0x1f | 0x7f => return None,
            b'-' if bytes.get(i + 1) == Some(&b'-') => return None,
            b'/' if bytes.get(i + 1) == Some(&b'*') => return None,
            _ => {
                i += 1;
                continue;
            }
        };
        key.push_str(&sql[copied..i]);
        key.push(marker);
        first_literal = first_literal.min(i);
        literals_end = end;
        copied = end;
        i = end;
    }
    key.push_str(&sql[copied..]);
    Some(Shape {
        key,
        first_literal,
        literals_end,
    })
}

/// Bytes that continue an identifier for PostgreSQL: letters, digits, `_`, `$` and every
/// non-ASCII byte.
fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// The end of the text quoted by `quote` (`'` for a string, `"` for an identifier) that starts
/// at `start`; a doubled quote stands for one. Strings holding a backslash have no shape (its
/// meaning depends on session settings and prefixes).
fn quoted_end(bytes: &[u8], start: usize, quote: u8) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match *bytes.get(i)? {
            b if b == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
            b if b == quote => return Some(i + 1),
            b'\\' if quote == b'\'' => return None,
            _ => i += 1,
        }
    }
}

/// The number starting at `start` and its marker: `123` (up to nine digits, always an `int4`),
/// `1.5`, `1.`, `1e5`, `1.5E-3`. Anything else PostgreSQL might read differently — hexadecimal,
/// underscores, ten or more digits (int4 or numeric by value), a number glued to a name — has
/// no shape.
fn number(bytes: &[u8], start: usize) -> Option<(usize, char)> {
    let digits = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let mut end = start + digits(start);
    let mut marker = INTEGER;
    if end - start > 9 {
        return None;
    }
    if bytes.get(end) == Some(&b'.') {
        if bytes.get(end + 1) == Some(&b'.') {
            return None;
        }
        end += 1;
        end += digits(end);
        marker = DECIMAL;
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let mut exp = end + 1;
        if matches!(bytes.get(exp), Some(b'+' | b'-')) {
            exp += 1;
        }
        let n = digits(exp);
        if n == 0 {
            return None;
        }
        end = exp + n;
        marker = DECIMAL;
    }
    match bytes.get(end) {
        Some(&b) if is_ident(b) || b == b'.' || b == b'\'' || b == b'"' => None,
        _ => Some((end, marker)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sql: &str) -> Option<String> {
        shape_of(sql).map(|s| s.key)
    }

    #[test]
    fn literals_of_the_same_kind_share_a_shape() {
        let a = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";
        let b = "SELECT abalance FROM pgbench_accounts WHERE aid = 7;";
        assert_eq!(key(a), key(b));
        assert_eq!(
            key("UPDATE t SET name = 'it''s' WHERE id = 1.5e3"),
            key("UPDATE t SET name = '' WHERE id = 2.")
        );
        let s = shape_of(a).unwrap();
        assert_eq!(s.first_literal, a.find("48213").unwrap());
        assert_eq!(s.literals_end, a.len() - 1);
    }

    #[test]
    fn kinds_identifiers_and_parameters_stay_apart() {
        assert_ne!(key("SELECT 1"), key("SELECT '1'"));
        assert_ne!(key("SELECT 1"), key("SELECT 1.0"));
        assert_ne!(key("SELECT * FROM t1"), key("SELECT * FROM t2"));
        assert_ne!(key(r#"SELECT "a'1" FROM t"#), key(r#"SELECT "a'2" FROM t"#));
        assert_ne!(key("SELECT $1"), key("SELECT $2"));
        assert_ne!(key("SELECT 'a' FROM t"), key("SELECT 'a' FROM u"));
        let none = shape_of("SELECT a FROM t").unwrap();
        assert_eq!(none.key, "SELECT a FROM t");
        assert_eq!((none.first_literal, none.literals_end), (15, 0));
    }

    #[test]
    fn anything_not_lexed_with_certainty_has_no_shape() {
        for sql in [
            r"SELECT 'a\'; DROP TABLE t; --'",
            "SELECT E'a'",
            "SELECT B'101'",
            "SELECT U&'d\\0061t'",
            "SELECT $$x$$",
            "SELECT $a$x$a$",
            "SELECT 1 -- '",
            "SELECT /* ' */ 1",
            "SELECT 0x1F",
            "SELECT 1_000",
            "SELECT 1234567890",
            "SELECT .5",
            "SELECT 1abc",
            "SELECT 1..2",
            "SELECT 'unterminated",
            "SELECT \"unterminated",
            "SELECT a$1",
            "SELECT $1a",
            "SELECT 1e",
            "SELECT '\u{1}'\u{1}",
        ] {
            assert_eq!(shape_of(sql), None, "{sql}");
        }
    }

    #[test]
    fn digits_inside_names_are_not_literals() {
        assert_eq!(
            key("SELECT c1 FROM t2").as_deref(),
            Some("SELECT c1 FROM t2")
        );
        assert_eq!(key("SELECT é1").as_deref(), Some("SELECT é1"));
    }
}
