//! Content detectors: hand-written byte scanners for personal data in the text a server sends
//! (rows, COPY data, errors, notices).
//!
//! They run over every byte the gateway relays, so each is built to reject ordinary text early:
//! e-mail addresses are only looked for around an `@` (or a URL-encoded `%40`), and the digit
//! detectors run only when the text holds as many digits as their shortest match needs. What
//! they match, and what they refuse to:
//!
//! - **email**: `local@domain.tld`, ASCII only. The local part takes the characters RFC 5322
//!   allows unquoted, but starts after the last `'`, `` ` ``, `=`, `/`, `?`, `&`, `{`, `}` or
//!   `|` before the `@`: those are legal there but far more often delimit an address (an SQL
//!   literal, `key=value`, a URL path or query), so `o'brien@x.org` is masked as `brien@x.org`.
//!   The domain needs two labels or more and an alphabetic top-level label of two letters or
//!   more. `alice%40example.com` (URL-encoded) is matched too.
//! - **credit_card**: 13–19 digits, bare or grouped by single spaces or dashes the way cards
//!   print (a first group of four, then groups of four to six), with an issuer's leading digits
//!   (3–6, or Mastercard's 2221–2720) and a valid Luhn check digit.
//! - **us_ssn**: `AAA-GG-SSSS` or `AAA GG SSSS` under the SSA's rules (area not 000, 666 or
//!   900–999; group not 00; serial not 0000). Nine bare digits are not matched: too many
//!   ordinary numbers look like that.
//! - **iban**: a country of the ISO 13616 registry, its IBAN length exactly, compact or in
//!   groups of four separated by single spaces, with the mod-97 check.
//! - **phone**: `+` and 8–15 digits (spaces, dashes, dots and one pair of parentheses between
//!   the groups), and the North American `(NNN) NNN-NNNN`, `NNN-NNN-NNNN`, `NNN.NNN.NNNN`
//!   with valid area and exchange codes (first digit 2–9).
//!
//! Every digit match must stand alone: a match glued to a word (`ORD-555-123-4567`, hex,
//! `\x…` bytea) or to more number (`1.5`, `10:00`, a longer run of digits) is not one. That,
//! and matching whole runs of digit groups rather than windows inside them, is what keeps dates,
//! times, IP addresses, versions, UUIDs, prices and plain integers out.

use crate::config::Detector;

/// One match: `text[start..end]` is what `detector` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Finding {
    /// First byte of the match.
    pub(crate) start: usize,
    /// One past its last byte.
    pub(crate) end: usize,
    /// The detector that matched.
    pub(crate) detector: Detector,
}

impl Finding {
    fn new(start: usize, end: usize, detector: Detector) -> Finding {
        Finding {
            start,
            end,
            detector,
        }
    }
}

/// The number of detectors, for tables indexed by [`index`].
pub(crate) const COUNT: usize = 5;

/// A detector's position in tables of [`COUNT`] entries.
pub(crate) fn index(detector: Detector) -> usize {
    match detector {
        Detector::Email => 0,
        Detector::CreditCard => 1,
        Detector::UsSsn => 2,
        Detector::Iban => 3,
        Detector::Phone => 4,
    }
}

/// A set of detectors: the ones a session's masks enable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Detectors(u8);

impl Detectors {
    /// Adds `detector`.
    pub(crate) fn insert(&mut self, detector: Detector) {
        self.0 |= 1 << index(detector);
    }

    /// Whether `detector` is in the set.
    pub(crate) fn contains(self, detector: Detector) -> bool {
        self.0 & (1 << index(detector)) != 0
    }

    /// Whether the set is empty.
    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The fewest digits a text must hold for a digit detector of the set to match in it.
    fn min_digits(self) -> Option<usize> {
        [
            (Detector::Iban, 2),
            (Detector::Phone, 8),
            (Detector::UsSsn, 9),
            (Detector::CreditCard, 13),
        ]
        .into_iter()
        .find(|&(d, _)| self.contains(d))
        .map(|(_, n)| n)
    }
}

/// Appends to `out` what the `enabled` detectors find in `text`, in no particular order;
/// findings of different detectors may overlap.
pub(crate) fn find(text: &[u8], enabled: Detectors, out: &mut Vec<Finding>) {
    if enabled.contains(Detector::Email) {
        emails(text, out);
    }
    if let Some(min) = enabled.min_digits()
        && digit_count(text) >= min
    {
        numbers(text, enabled, out);
    }
}

/// Counts in chunks small enough for a byte counter, which the compiler vectorizes.
fn digit_count(text: &[u8]) -> usize {
    text.chunks(255)
        .map(|chunk| {
            let n = chunk
                .iter()
                .fold(0u8, |n, &b| n + u8::from(b.is_ascii_digit()));
            usize::from(n)
        })
        .sum()
}

/// The byte at `i`, or 0 past the end (0 is neither a digit, a letter nor a separator).
fn at(text: &[u8], i: usize) -> u8 {
    text.get(i).copied().unwrap_or(0)
}

/// The byte `n` places before `i`, or 0 before the start.
fn before(text: &[u8], i: usize, n: usize) -> u8 {
    i.checked_sub(n).map_or(0, |j| at(text, j))
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Punctuation that joins a number to what is next to it (`1.5`, `10:00`, `11/27`, `a-1`).
fn is_joiner(b: u8) -> bool {
    matches!(b, b'.' | b':' | b'/' | b'-' | b'+')
}

/// Whether a digit match at `text[start..end]` stands alone: not glued to a word (`ORD-…`,
/// `…abc`) nor part of a larger number (`1.…`, `…:00`, `…-2`).
fn stands_alone(text: &[u8], start: usize, end: usize) -> bool {
    let (p, pp) = (before(text, start, 1), before(text, start, 2));
    let (n, nn) = (at(text, end), at(text, end + 1));
    let glued_left = is_word(p)
        || (is_joiner(p) && pp.is_ascii_digit())
        || (matches!(p, b'-' | b'.' | b'/') && is_word(pp));
    let glued_right = is_word(n) || (is_joiner(n) && nn.is_ascii_digit());
    !glued_left && !glued_right
}

/// How many digits start at `i`.
fn digits_at(text: &[u8], i: usize) -> usize {
    text.get(i..).map_or(0, |rest| {
        rest.iter().take_while(|b| b.is_ascii_digit()).count()
    })
}

// ---------------------------------------------------------------------------------------------
// E-mail

/// Longest local part looked at: RFC 5321's limit.
const MAX_LOCAL: usize = 64;
/// Longest domain looked at: RFC 1035's limit.
const MAX_DOMAIN: usize = 253;
/// Longest domain label.
const MAX_LABEL: usize = 63;

fn emails(text: &[u8], out: &mut Vec<Finding>) {
    let mut floor = 0;
    let mut i = 0;
    while let Some(k) = memchr::memchr2(b'@', b'%', &text[i..]) {
        let sign = i + k;
        i = sign + 1;
        let sign_len = match text[sign] {
            b'@' => 1,
            _ if text[sign + 1..].starts_with(b"40") => 3,
            _ => continue,
        };
        let Some(start) = local_start(text, floor, sign) else {
            continue;
        };
        let Some(end) = domain_end(text, sign + sign_len) else {
            continue;
        };
        out.push(Finding::new(start, end, Detector::Email));
        floor = end;
        i = end;
    }
}

/// Characters RFC 5322 allows in an unquoted local part.
fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'.' | b'!'
                | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'/'
                | b'='
                | b'?'
                | b'^'
                | b'_'
                | b'`'
                | b'{'
                | b'|'
                | b'}'
                | b'~'
                | b'-'
        )
}

/// Local-part characters that in practice delimit an address rather than belong to it.
fn is_delimiter(b: u8) -> bool {
    matches!(
        b,
        b'\'' | b'`' | b'=' | b'/' | b'?' | b'&' | b'{' | b'}' | b'|'
    )
}

/// Where the local part ending before the `@` at `sign` starts (no earlier than `floor`).
fn local_start(text: &[u8], floor: usize, sign: usize) -> Option<usize> {
    let mut start = sign;
    while start > floor && sign - start < MAX_LOCAL && is_local(text[start - 1]) {
        start -= 1;
    }
    let local = &text[start..sign];
    if let Some(d) = local.iter().rposition(|&b| is_delimiter(b)) {
        start += d + 1;
    }
    if let Some(d) = text[start..sign].windows(2).rposition(|w| w == b"..") {
        start += d + 2;
    }
    while start < sign && text[start] == b'.' {
        start += 1;
    }
    (start < sign && text[sign - 1] != b'.').then_some(start)
}

/// Where the domain starting at `from` ends: after its last label that can be a top-level one.
fn domain_end(text: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    let mut labels = 0;
    let mut end = None;
    loop {
        let label_start = i;
        while i - from < MAX_DOMAIN && (at(text, i).is_ascii_alphanumeric() || at(text, i) == b'-')
        {
            i += 1;
        }
        let label = &text[label_start..i];
        let bad = label.is_empty()
            || label.len() > MAX_LABEL
            || label.first() == Some(&b'-')
            || label.last() == Some(&b'-');
        if bad {
            return end;
        }
        labels += 1;
        if labels >= 2 && label.len() >= 2 && label.iter().all(u8::is_ascii_alphabetic) {
            end = Some(i);
        }
        if at(text, i) != b'.' || !at(text, i + 1).is_ascii_alphanumeric() {
            return end;
        }
        i += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// Digit detectors: cards, SSNs, IBANs, phones

/// Walks the text from number to number, handing each to the detectors that can match it.
fn numbers(text: &[u8], enabled: Detectors, out: &mut Vec<Finding>) {
    let phone = enabled.contains(Detector::Phone);
    let mut i = 0;
    while let Some(k) = text[i..]
        .iter()
        .position(|&b| b.is_ascii_digit() || (phone && (b == b'+' || b == b'(')))
    {
        let start = i + k;
        let (found, next) = match text[start] {
            b'+' => (international_phone(text, start), start + 1),
            b'(' => (parenthesized_phone(text, start), start + 1),
            _ if is_word(before(text, start, 1)) => in_word(text, start, enabled),
            _ => {
                let run = run_at(text, start);
                (run.classify(text, enabled), run.end)
            }
        };
        i = match found {
            Some(finding) => {
                out.push(finding);
                finding.end
            }
            None => next,
        };
    }
}

/// The end of the word `i` is in: digits inside a word are not looked at one by one.
fn word_end(text: &[u8], i: usize) -> usize {
    i + text[i..].iter().take_while(|&&b| is_word(b)).count()
}

/// Digits inside a word can only be an IBAN's check digits, right after its country code.
/// Whether it passes the check or not, nothing inside an IBAN-shaped text is looked at again: a
/// bank account that fails its check is no card number or phone either.
fn in_word(text: &[u8], digit: usize, enabled: Detectors) -> (Option<Finding>, usize) {
    let Some((start, end, valid)) = iban_head(text, digit).and_then(|s| iban_at(text, s)) else {
        return (None, word_end(text, digit));
    };
    let found = valid && enabled.contains(Detector::Iban);
    (
        found.then_some(Finding::new(start, end, Detector::Iban)),
        end,
    )
}

/// Most digit groups a run keeps track of; longer runs match no detector.
const MAX_GROUPS: usize = 8;

/// A run of digit groups joined by one kind of single separator (space, dash or dot):
/// `4111 1111 1111 1111`, `078-05-1120`, `192.168.1.20`.
struct Run {
    start: usize,
    end: usize,
    /// The separator, 0 for a bare run of digits.
    separator: u8,
    /// The groups' lengths, a byte each (255 for longer ones), the first in the lowest byte;
    /// packed in a word because the run is built byte by byte and then read whole.
    groups: u64,
    count: usize,
}

fn run_at(text: &[u8], start: usize) -> Run {
    let mut run = Run {
        start,
        end: start,
        separator: 0,
        groups: 0,
        count: 0,
    };
    loop {
        let n = digits_at(text, run.end);
        if run.count < MAX_GROUPS {
            run.groups |= u64::from(u8::try_from(n).unwrap_or(u8::MAX)) << (8 * run.count);
        }
        run.count += 1;
        run.end += n;
        let s = at(text, run.end);
        let joins = matches!(s, b' ' | b'-' | b'.')
            && (run.separator == 0 || run.separator == s)
            && at(text, run.end + 1).is_ascii_digit();
        if !joins {
            return run;
        }
        run.separator = s;
        run.end += 1;
    }
}

impl Run {
    /// The detector whose shape and checks this run passes, if any.
    fn classify(&self, text: &[u8], enabled: Detectors) -> Option<Finding> {
        if !stands_alone(text, self.start, self.end) {
            return None;
        }
        let span = &text[self.start..self.end];
        let lengths = self.groups.to_le_bytes();
        let groups = lengths.get(..self.count).unwrap_or(&[]);
        let detector = match (groups, self.separator) {
            ([3, 2, 4], b'-' | b' ') if valid_ssn(span) => Detector::UsSsn,
            ([3, 3, 4], b'-' | b'.') if valid_nanp(span[0], span[4]) => Detector::Phone,
            (groups, b' ' | b'-' | 0)
                if span.len() >= 13 && card_shape(groups) && valid_card(span) =>
            {
                Detector::CreditCard
            }
            _ => return None,
        };
        enabled
            .contains(detector)
            .then_some(Finding::new(self.start, self.end, detector))
    }
}

// Cards

/// Digit groups as cards print them: all together, or a first group of four, then groups of
/// four to six, the last of any length up to six.
fn card_shape(groups: &[u8]) -> bool {
    match groups {
        [_] => true,
        [4, middle @ .., last] => {
            !middle.is_empty()
                && middle.iter().all(|g| (4..=6).contains(g))
                && (1..=6).contains(last)
        }
        _ => false,
    }
}

/// Length, issuer prefix and Luhn check of a card number (separators skipped).
fn valid_card(span: &[u8]) -> bool {
    let mut digits = [0u8; 19];
    let mut n = 0;
    for &b in span.iter().filter(|b| b.is_ascii_digit()) {
        let Some(slot) = digits.get_mut(n) else {
            return false;
        };
        *slot = b - b'0';
        n += 1;
    }
    let digits = &digits[..n];
    n >= 13 && issuer(digits) && luhn(digits)
}

/// Leading digits of the card networks: American Express, Diners, JCB (3), Visa (4),
/// Mastercard (51–55, 2221–2720), Discover, Maestro, UnionPay (5, 6).
fn issuer(digits: &[u8]) -> bool {
    match digits {
        [3..=6, ..] => true,
        [2, a, b, c, ..] => (2221..=2720)
            .contains(&(2000 + u16::from(*a) * 100 + u16::from(*b) * 10 + u16::from(*c))),
        _ => false,
    }
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            match i % 2 {
                0 => d,
                _ if d > 4 => d * 2 - 9,
                _ => d * 2,
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

// US SSNs

/// The SSA's rules for `AAA-GG-SSSS` (the span has a separator at 3 and 6).
fn valid_ssn(span: &[u8]) -> bool {
    let number = |r: std::ops::Range<usize>| {
        span.get(r).map_or(0, |ds| {
            ds.iter()
                .fold(0u32, |n, d| n * 10 + u32::from(d.wrapping_sub(b'0')))
        })
    };
    let (area, group, serial) = (number(0..3), number(4..6), number(7..11));
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

// Phones

/// North American area and exchange codes start with 2–9.
fn valid_nanp(area: u8, exchange: u8) -> bool {
    (b'2'..=b'9').contains(&area) && (b'2'..=b'9').contains(&exchange)
}

/// Fewest and most digits of an international number after its `+`.
const E164_DIGITS: std::ops::RangeInclusive<usize> = 8..=15;

/// `+` and 8–15 digits in groups (`+1 (415) 555-2671`, `+44 (0)20 7946 0958`).
fn international_phone(text: &[u8], plus: usize) -> Option<Finding> {
    if !(b'1'..=b'9').contains(&at(text, plus + 1)) {
        return None;
    }
    let mut i = plus + 1;
    let mut digits = 0;
    let mut open = false;
    loop {
        let n = digits_at(text, i);
        digits += n;
        i += n;
        if digits > *E164_DIGITS.end() {
            return None;
        }
        match phone_gap(text, i, &mut open) {
            Some(len) => i += len,
            None => break,
        }
    }
    let ok = !open && E164_DIGITS.contains(&digits) && stands_alone(text, plus, i);
    ok.then_some(Finding::new(plus, i, Detector::Phone))
}

/// The separator between two digit groups of a phone number at `i`, if a group follows: a
/// space, dash or dot, or a parenthesis with or without one (`(`, ` (`, `)`, `) `).
fn phone_gap(text: &[u8], i: usize, open: &mut bool) -> Option<usize> {
    let plain = |b: u8| matches!(b, b' ' | b'-' | b'.');
    let (a, b) = (at(text, i), at(text, i + 1));
    let (len, opens, closes) = match (a, b) {
        (_, b'(') if plain(a) => (2, true, false),
        (b'(', _) => (1, true, false),
        (b')', _) if plain(b) => (2, false, true),
        (b')', _) => (1, false, true),
        _ if plain(a) => (1, false, false),
        _ => return None,
    };
    let balanced = if *open { !opens } else { !closes };
    let fits = at(text, i + len).is_ascii_digit() && balanced;
    if !fits {
        return None;
    }
    *open = (*open || opens) && !closes;
    Some(len)
}

/// `(NNN) NNN-NNNN` (or with a dot, or without the space).
fn parenthesized_phone(text: &[u8], open: usize) -> Option<Finding> {
    let area = open + 1;
    if digits_at(text, area) != 3 || at(text, area + 3) != b')' {
        return None;
    }
    let exchange = area + 4 + usize::from(at(text, area + 4) == b' ');
    let line = exchange + 4;
    let ok = digits_at(text, exchange) == 3
        && matches!(at(text, exchange + 3), b'-' | b'.')
        && digits_at(text, line) == 4
        && valid_nanp(text[area], text[exchange])
        && stands_alone(text, open, line + 4);
    ok.then_some(Finding::new(open, line + 4, Detector::Phone))
}

// IBANs

/// IBAN lengths by country, from the ISO 13616 registry (sorted for binary search).
const IBAN_LENGTHS: [([u8; 2], u8); 89] = [
    (*b"AD", 24),
    (*b"AE", 23),
    (*b"AL", 28),
    (*b"AT", 20),
    (*b"AZ", 28),
    (*b"BA", 20),
    (*b"BE", 16),
    (*b"BG", 22),
    (*b"BH", 22),
    (*b"BI", 27),
    (*b"BR", 29),
    (*b"BY", 28),
    (*b"CH", 21),
    (*b"CR", 22),
    (*b"CY", 28),
    (*b"CZ", 24),
    (*b"DE", 22),
    (*b"DJ", 27),
    (*b"DK", 18),
    (*b"DO", 28),
    (*b"EE", 20),
    (*b"EG", 29),
    (*b"ES", 24),
    (*b"FI", 18),
    (*b"FK", 18),
    (*b"FO", 18),
    (*b"FR", 27),
    (*b"GB", 22),
    (*b"GE", 22),
    (*b"GI", 23),
    (*b"GL", 18),
    (*b"GR", 27),
    (*b"GT", 28),
    (*b"HN", 28),
    (*b"HR", 21),
    (*b"HU", 28),
    (*b"IE", 22),
    (*b"IL", 23),
    (*b"IQ", 23),
    (*b"IS", 26),
    (*b"IT", 27),
    (*b"JO", 30),
    (*b"KW", 30),
    (*b"KZ", 20),
    (*b"LB", 28),
    (*b"LC", 32),
    (*b"LI", 21),
    (*b"LT", 20),
    (*b"LU", 20),
    (*b"LV", 21),
    (*b"LY", 25),
    (*b"MC", 27),
    (*b"MD", 24),
    (*b"ME", 22),
    (*b"MK", 19),
    (*b"MN", 20),
    (*b"MR", 27),
    (*b"MT", 31),
    (*b"MU", 30),
    (*b"NI", 28),
    (*b"NL", 18),
    (*b"NO", 15),
    (*b"OM", 23),
    (*b"PK", 24),
    (*b"PL", 28),
    (*b"PS", 29),
    (*b"PT", 25),
    (*b"QA", 29),
    (*b"RO", 24),
    (*b"RS", 22),
    (*b"RU", 33),
    (*b"SA", 24),
    (*b"SC", 31),
    (*b"SD", 18),
    (*b"SE", 24),
    (*b"SI", 19),
    (*b"SK", 24),
    (*b"SM", 27),
    (*b"SO", 23),
    (*b"ST", 25),
    (*b"SV", 28),
    (*b"TL", 23),
    (*b"TN", 24),
    (*b"TR", 26),
    (*b"UA", 29),
    (*b"VA", 22),
    (*b"VG", 24),
    (*b"XK", 20),
    (*b"YE", 30),
];

/// Longest IBAN of the registry.
const MAX_IBAN: usize = 34;

/// Where an IBAN whose check digits start at `digit` starts: after two capital letters that
/// begin a word, with a second digit following.
fn iban_head(text: &[u8], digit: usize) -> Option<usize> {
    let start = digit.checked_sub(2)?;
    let head = text[start].is_ascii_uppercase()
        && text[start + 1].is_ascii_uppercase()
        && !is_word(before(text, start, 1))
        && at(text, digit + 1).is_ascii_digit();
    head.then_some(start)
}

/// The IBAN shape at `start`: its country's length, compact or grouped by four, standing
/// alone. Gives the start, the end, and whether it passes the mod-97 check.
fn iban_at(text: &[u8], start: usize) -> Option<(usize, usize, bool)> {
    let country = [text[start], text[start + 1]];
    let at_len = IBAN_LENGTHS
        .binary_search_by_key(&country, |&(c, _)| c)
        .ok()?;
    let len = usize::from(IBAN_LENGTHS[at_len].1);
    let grouped = at(text, start + 4) == b' ';
    let mut chars = [0u8; MAX_IBAN];
    let mut i = start;
    for n in 0..len {
        if grouped && n > 0 && n.is_multiple_of(4) {
            if at(text, i) != b' ' {
                return None;
            }
            i += 1;
        }
        let c = at(text, i);
        if !(c.is_ascii_digit() || c.is_ascii_uppercase()) {
            return None;
        }
        *chars.get_mut(n)? = c;
        i += 1;
    }
    if is_word(at(text, i)) {
        return None;
    }
    Some((start, i, mod97(chars.get(..len)?) == 1))
}

/// ISO 13616's check: the IBAN with its first four characters moved to the end, letters as
/// 10–35, read as one number, modulo 97.
fn mod97(iban: &[u8]) -> u32 {
    let (head, rest) = iban.split_at(4.min(iban.len()));
    rest.iter().chain(head).fold(0, |r, &c| match c {
        b'0'..=b'9' => (r * 10 + u32::from(c - b'0')) % 97,
        _ => (r * 100 + u32::from(c.wrapping_sub(b'A')) + 10) % 97,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Detectors {
        let mut set = Detectors::default();
        for d in [
            Detector::Email,
            Detector::CreditCard,
            Detector::UsSsn,
            Detector::Iban,
            Detector::Phone,
        ] {
            set.insert(d);
        }
        set
    }

    /// What every detector finds in `text`, as (detector, matched text), in text order.
    fn found(text: &str) -> Vec<(Detector, &str)> {
        let mut out = Vec::new();
        find(text.as_bytes(), all(), &mut out);
        out.sort_by_key(|f| f.start);
        out.iter()
            .map(|f| (f.detector, &text[f.start..f.end]))
            .collect()
    }

    fn assert_finds(detector: Detector, text: &str, expected: &str) {
        assert_eq!(found(text), [(detector, expected)], "in {text:?}");
    }

    fn assert_nothing(text: &str) {
        assert_eq!(found(text), [], "in {text:?}");
    }

    #[test]
    fn emails_in_context() {
        let cases = [
            ("alice@example.com", "alice@example.com"),
            (
                "Contact: bob.smith+tag@mail.example.co.uk.",
                "bob.smith+tag@mail.example.co.uk",
            ),
            (
                r#"{"id":7,"email":"carol_o@example.org"}"#,
                "carol_o@example.org",
            ),
            ("7,dave@example.net,Dave", "dave@example.net"),
            (
                r#"ERROR: duplicate key: Key (email)=(erin@example.com) already exists."#,
                "erin@example.com",
            ),
            (r#"invalid input: "frank@example.com""#, "frank@example.com"),
            ("WHERE email='grace@example.com'", "grace@example.com"),
            ("mailto:heidi@EXAMPLE.COM", "heidi@EXAMPLE.COM"),
            ("?to=ivan%40example.com&x=1", "ivan%40example.com"),
            (
                "x <judy#1!@sub-domain.example.io>",
                "judy#1!@sub-domain.example.io",
            ),
            ("o'brien@example.ie", "brien@example.ie"),
            ("a@b.cd", "a@b.cd"),
            ("user@host.example.com.123", "user@host.example.com"),
        ];
        for (text, expected) in cases {
            assert_finds(Detector::Email, text, expected);
        }
        assert_eq!(
            found("alice@example.com;bob@example.com").len(),
            2,
            "two addresses side by side"
        );
    }

    #[test]
    fn not_emails() {
        for text in [
            "@",
            "a@",
            "@example.com",
            "alice@localhost",
            "alice@example",
            "alice@example.c",
            "alice@.com",
            "alice.@example.com",
            "alice@-example.com",
            "50% off",
            "100%40",
            "user@192.168.1.20",
            "x @ y.com",
            "@@@@",
            "alice@example.123",
        ] {
            assert_nothing(text);
        }
    }

    #[test]
    fn credit_cards_in_context() {
        let cases = [
            ("4111111111111111", "4111111111111111"),
            ("card 4111 1111 1111 1111 exp 12/27", "4111 1111 1111 1111"),
            ("5555-5555-5555-4444", "5555-5555-5555-4444"),
            ("amex 3782 822463 10005.", "3782 822463 10005"),
            ("6011111111111117", "6011111111111117"),
            ("2223003122003222", "2223003122003222"),
            ("4222222222222", "4222222222222"),
            (
                r#"invalid input syntax for type integer: "4111 1111 1111 1111""#,
                "4111 1111 1111 1111",
            ),
            (
                r#"{"card":"4012888888881881","cvv":"123"}"#,
                "4012888888881881",
            ),
            ("alice,4111111111111111,12/27", "4111111111111111"),
        ];
        for (text, expected) in cases {
            assert_finds(Detector::CreditCard, text, expected);
        }
    }

    #[test]
    fn not_credit_cards() {
        for text in [
            "4111111111111112",           // Luhn fails
            "41111111111111111",          // a longer run
            "0.4111111111111111",         // a fraction
            "4111111111111111.5",         // a decimal
            "x4111111111111111",          // glued to a word
            "ORD-4111111111111111",       // an order number
            "4111 1111 1111 1111 1111 1", // 21 digits
            "1 2 3 4 5 6 7 8 9 1 2 3 0",  // not grouped like a card
            "1234567890123452",           // no issuer starts with 1
            "9007199254740993",           // a big integer
            "411111111111",               // too short
            "4111-1111 1111-1111",        // mixed separators
            "\\x4111111111111111",        // bytea
        ] {
            assert_nothing(text);
        }
    }

    #[test]
    fn ssns() {
        for (text, expected) in [
            ("078-05-1120", "078-05-1120"),
            ("SSN: 219 09 9999.", "219 09 9999"),
            (r#"{"ssn":"536-22-1234"}"#, "536-22-1234"),
        ] {
            assert_finds(Detector::UsSsn, text, expected);
        }
        for text in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "999-12-3456",
            "123-00-4567",
            "123-45-0000",
            "123456789",
            "1123-45-6789",
            "123-45-67890",
            "123-45-6789-1",
            "123.45.6789",
            "A123-45-6789",
        ] {
            assert_nothing(text);
        }
    }

    #[test]
    fn ibans() {
        for iban in [
            "DE89 3704 0044 0532 0130 00",
            "DE89370400440532013000",
            "GB82 WEST 1234 5698 7654 32",
            "FR14 2004 1010 0505 0001 3M02 606",
            "NL91 ABNA 0417 1643 00",
            "BE68 5390 0754 7034",
            "NO93 8601 1117 947",
            "CH93 0076 2011 6238 5295 7",
            "ES91 2100 0418 4502 0005 1332",
            "IT60 X054 2811 1010 0000 0123 456",
        ] {
            assert_finds(Detector::Iban, iban, iban);
            let sentence = format!("Pay to IBAN {iban}, thanks");
            assert_finds(Detector::Iban, &sentence, iban);
        }
        for text in [
            "DE89 3704 0044 0532 0130 01", // checksum fails
            "DE89370400440532013000X",     // longer
            "XDE89370400440532013000",     // glued
            "ZZ89370400440532013000",      // no such country
            "DE89 3704 0044 0532 0130",    // too short
            "de89370400440532013000",      // lowercase
            "DE8937040044 0532013000",     // irregular groups
        ] {
            assert_nothing(text);
        }
    }

    #[test]
    fn phones() {
        for (text, expected) in [
            ("+14155552671", "+14155552671"),
            ("call +1 (415) 555-2671 now", "+1 (415) 555-2671"),
            ("+44 (0)20 7946 0958", "+44 (0)20 7946 0958"),
            ("+49 30 1234567.", "+49 30 1234567"),
            ("+33.1.23.45.67.89", "+33.1.23.45.67.89"),
            ("(415) 555-2671", "(415) 555-2671"),
            ("(415)555-2671", "(415)555-2671"),
            ("tel: 415-555-2671", "415-555-2671"),
            ("415.555.2671", "415.555.2671"),
            (r#"{"phone":"+1-415-555-2671"}"#, "+1-415-555-2671"),
            ("ann,415-555-2671,NY", "415-555-2671"),
        ] {
            assert_finds(Detector::Phone, text, expected);
        }
    }

    #[test]
    fn not_phones() {
        for text in [
            "2026-11-27",
            "2026-11-27 10:00:00+00",
            "2026-11-27T10:00:00.123456+05:30",
            "10:00:00",
            "192.168.1.20",
            "10.0.0.1:5432",
            "1.2.3",
            "v12.4.1",
            "550e8400-e29b-41d4-a716-446655440000",
            "12345678-1234-5678-1234-567812345678",
            "12345678",
            "199.99",
            "4155552671",
            "ORD-415-555-2671",
            "(123) 456-7890",
            "123-456-7890",
            "415-155-2671",
            "+0123456789",
            "+1234567",
            "+1234567890123456",
            "1+23456789",
            "1e+10",
            "+1 (415 555-2671",
            "+1 415) 555-2671",
            "+1 415--555-2671",
            "f(415) 555-2671",
            "pg_catalog.int4",
        ] {
            assert_nothing(text);
        }
    }

    #[test]
    fn luhn_and_mod97() {
        let digits = |s: &str| s.bytes().map(|b| b - b'0').collect::<Vec<_>>();
        assert!(luhn(&digits("79927398713")));
        assert!(!luhn(&digits("79927398710")));
        assert_eq!(mod97(b"GB82WEST12345698765432"), 1);
        assert_eq!(mod97(b""), 0);
    }

    #[test]
    fn the_country_table_is_sorted() {
        assert!(IBAN_LENGTHS.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(
            IBAN_LENGTHS
                .iter()
                .all(|&(_, n)| (15..=MAX_IBAN as u8).contains(&n))
        );
    }
}
