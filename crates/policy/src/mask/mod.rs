//! The value side of masking: [`ValueMasker`] rewrites masked column values by their mask's
//! strategy, and finds personal data in any text the server sends with content detectors.
//!
//! The engine decides *which* values are masked (by lineage, see [`postern_core::ResultPlan`])
//! and hands each to [`Masker::mask_value`]; everything else it may run through
//! [`Masker::scrub`]. Both are total: any bytes in, masked bytes out.

mod detect;
mod strategy;

use crate::config::{Detector, MaskConfig, MaskStrategy};
use detect::{Detectors, Finding};
use postern_core::{ColumnMask, Masker};
use strategy::{Keyed, REDACTED};

/// The session's masks, ready to rewrite values: each mask's strategy by
/// [`postern_core::mask::MaskId`] and, for each content detector, the strategy of the first mask
/// that enables it.
#[derive(Clone)]
pub struct ValueMasker {
    strategies: Vec<MaskStrategy>,
    detector_strategies: [Option<MaskStrategy>; detect::COUNT],
    detectors: Detectors,
    keyed: Keyed,
}

impl ValueMasker {
    /// The masker for `masks`, the masks that apply to a session in config order (a column's
    /// `MaskId` is its mask's index here). `hash_key` keys the `hash` strategy: the same key
    /// gives the same hashes, so values stay joinable across sessions that share it, and
    /// nobody without it can confirm a guess by hashing it.
    pub fn new(masks: &[&MaskConfig], hash_key: [u8; 32]) -> ValueMasker {
        let mut detector_strategies = [None; detect::COUNT];
        let mut detectors = Detectors::default();
        for mask in masks {
            for &detector in &mask.detectors {
                detectors.insert(detector);
                detector_strategies[detect::index(detector)].get_or_insert(mask.strategy);
            }
        }
        ValueMasker {
            strategies: masks.iter().map(|m| m.strategy).collect(),
            detector_strategies,
            detectors,
            keyed: Keyed::new(hash_key),
        }
    }

    /// Appends the masked form of one finding.
    fn replace(&self, text: &[u8], finding: Finding, out: &mut Vec<u8>) {
        let index = detect::index(finding.detector);
        let strategy = self.detector_strategies[index].unwrap_or_default();
        let value = &text[finding.start..finding.end];
        strategy::apply(strategy, value, label(finding.detector), &self.keyed, out);
    }
}

/// What a redacted finding becomes: the kind of data, so the text still reads.
fn label(detector: Detector) -> &'static [u8] {
    match detector {
        Detector::Email => b"[email]",
        Detector::CreditCard => b"[credit_card]",
        Detector::UsSsn => b"[us_ssn]",
        Detector::Iban => b"[iban]",
        Detector::Phone => b"[phone]",
    }
}

impl Masker for ValueMasker {
    fn mask_value(&self, mask: ColumnMask, value: &[u8], out: &mut Vec<u8>) {
        match mask {
            ColumnMask::Clean => out.extend_from_slice(value),
            ColumnMask::Direct(id) => {
                let strategy = self.strategies.get(usize::from(id)).copied();
                let strategy = strategy.unwrap_or(MaskStrategy::Redact);
                strategy::apply(strategy, value, REDACTED, &self.keyed, out);
            }
            ColumnMask::Derived => out.extend_from_slice(REDACTED),
        }
    }

    fn has_detectors(&self) -> bool {
        !self.detectors.is_empty()
    }

    fn scrub(&self, text: &[u8]) -> Option<Vec<u8>> {
        let mut findings = Vec::new();
        detect::find(text, self.detectors, &mut findings);
        if findings.is_empty() {
            return None;
        }
        // Earliest first and, of two starting together, the longer; a finding that overlaps one
        // already replaced is inside it and goes with it.
        findings.sort_unstable_by_key(|f| (f.start, std::cmp::Reverse(f.end)));
        let mut out = Vec::with_capacity(text.len() + 16 * findings.len());
        let mut copied = 0;
        for finding in findings {
            if finding.start < copied {
                continue;
            }
            out.extend_from_slice(&text[copied..finding.start]);
            self.replace(text, finding, &mut out);
            copied = finding.end;
        }
        out.extend_from_slice(&text[copied..]);
        Some(out)
    }
}

impl std::fmt::Debug for ValueMasker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueMasker")
            .field("strategies", &self.strategies)
            .field("detectors", &self.detector_strategies)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::When;

    fn mask(strategy: MaskStrategy, columns: &[&str], detectors: &[Detector]) -> MaskConfig {
        MaskConfig {
            name: format!("{strategy:?}"),
            when: When::default(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            detectors: detectors.to_vec(),
            strategy,
        }
    }

    fn masker(masks: &[MaskConfig]) -> ValueMasker {
        ValueMasker::new(&masks.iter().collect::<Vec<_>>(), [42; 32])
    }

    fn masked(m: &ValueMasker, column: ColumnMask, value: &str) -> String {
        let mut out = Vec::new();
        m.mask_value(column, value.as_bytes(), &mut out);
        String::from_utf8(out).expect("masked values are UTF-8 here")
    }

    fn scrubbed(m: &ValueMasker, text: &str) -> Option<String> {
        m.scrub(text.as_bytes())
            .map(|out| String::from_utf8(out).expect("scrubbed text is UTF-8 here"))
    }

    const ALL: [Detector; 5] = [
        Detector::Email,
        Detector::CreditCard,
        Detector::UsSsn,
        Detector::Iban,
        Detector::Phone,
    ];

    #[test]
    fn direct_columns_follow_their_mask() {
        let m = masker(&[
            mask(MaskStrategy::Redact, &["t.a"], &[]),
            mask(MaskStrategy::Partial, &["t.b"], &[]),
            mask(MaskStrategy::Hash, &["t.c"], &[]),
        ]);
        let value = "4111111111111111";
        assert_eq!(masked(&m, ColumnMask::Direct(0), value), "[masked]");
        assert_eq!(masked(&m, ColumnMask::Direct(1), value), "************1111");
        let hashed = masked(&m, ColumnMask::Direct(2), value);
        assert!(
            hashed.starts_with("hash:") && hashed.len() == 21,
            "{hashed}"
        );
        assert_eq!(hashed, masked(&m, ColumnMask::Direct(2), value));
        assert_eq!(masked(&m, ColumnMask::Clean, value), value);
    }

    #[test]
    fn derived_and_unknown_masks_redact() {
        let m = masker(&[mask(MaskStrategy::Partial, &["t.a"], &[])]);
        assert_eq!(
            masked(&m, ColumnMask::Derived, "4111111111111111"),
            "[masked]"
        );
        assert_eq!(
            masked(&m, ColumnMask::Direct(1), "4111111111111111"),
            "[masked]"
        );
        assert_eq!(masked(&m, ColumnMask::Direct(u16::MAX), "x"), "[masked]");
    }

    #[test]
    fn the_hash_is_keyed() {
        let masks = [mask(MaskStrategy::Hash, &["t.a"], &[])];
        let refs: Vec<_> = masks.iter().collect();
        let a = masked(
            &ValueMasker::new(&refs, [1; 32]),
            ColumnMask::Direct(0),
            "alice",
        );
        let b = masked(
            &ValueMasker::new(&refs, [2; 32]),
            ColumnMask::Direct(0),
            "alice",
        );
        assert_ne!(a, b);
    }

    #[test]
    fn mask_value_appends() {
        let m = masker(&[mask(MaskStrategy::Redact, &["t.a"], &[])]);
        let mut out = b"x,".to_vec();
        m.mask_value(ColumnMask::Direct(0), b"secret", &mut out);
        m.mask_value(ColumnMask::Clean, b",y", &mut out);
        assert_eq!(out, b"x,[masked],y");
    }

    #[test]
    fn detectors_are_only_on_when_configured() {
        assert!(!masker(&[mask(MaskStrategy::Redact, &["t.a"], &[])]).has_detectors());
        let m = masker(&[mask(MaskStrategy::Redact, &[], &[Detector::Phone])]);
        assert!(m.has_detectors());
        assert_eq!(scrubbed(&m, "mail alice@example.com"), None);
        assert_eq!(
            scrubbed(&m, "call 415-555-2671"),
            Some("call [phone]".to_string())
        );
    }

    #[test]
    fn scrub_redacts_with_labels() {
        let m = masker(&[mask(MaskStrategy::Redact, &[], &ALL)]);
        let text = "alice@example.com paid with 4111 1111 1111 1111 (SSN 078-05-1120, \
                    IBAN DE89 3704 0044 0532 0130 00, phone +1 415 555 2671) on 2026-11-27";
        assert_eq!(
            scrubbed(&m, text).as_deref(),
            Some(
                "[email] paid with [credit_card] (SSN [us_ssn], IBAN [iban], phone [phone]) \
                 on 2026-11-27"
            )
        );
    }

    #[test]
    fn scrub_uses_the_first_mask_listing_the_detector() {
        let m = masker(&[
            mask(MaskStrategy::Partial, &[], &[Detector::CreditCard]),
            mask(
                MaskStrategy::Redact,
                &[],
                &[Detector::CreditCard, Detector::Email],
            ),
            mask(MaskStrategy::Hash, &[], &[Detector::Email, Detector::Phone]),
        ]);
        let out =
            scrubbed(&m, "4111-1111-1111-1111 a@example.com +14155552671").expect("three findings");
        let (card, rest) = out.split_once(' ').expect("kept the spaces");
        let (email, phone) = rest.split_once(' ').expect("kept the spaces");
        assert_eq!(card, "***************1111");
        assert_eq!(email, "[email]");
        assert!(phone.starts_with("hash:") && phone.len() == 21, "{phone}");
        assert_eq!(
            scrubbed(&m, "+14155552671").as_deref(),
            Some(phone),
            "hashes are stable"
        );
    }

    #[test]
    fn scrub_masks_the_longest_of_overlapping_findings() {
        let m = masker(&[mask(MaskStrategy::Redact, &[], &ALL)]);
        assert_eq!(
            scrubbed(&m, "to 4155552671@sms.example.com").as_deref(),
            Some("to [email]")
        );
        assert_eq!(
            scrubbed(&m, "+14155552671@sms.example.com").as_deref(),
            Some("[email]"),
            "the phone number is the address's local part"
        );
    }

    /// Ordinary values of every kind a row, a catalog query or an error carries.
    const CLEAN: &[&str] = &[
        "2026-11-27",
        "2026-11-27 10:00:00+00",
        "2026-11-27 10:00:00.123456+05:30",
        "2026-11-27T10:00:00Z",
        "27/11/2026",
        "11/27/26",
        "10:00",
        "23:59:59.999",
        "1 day 02:03:04",
        "192.168.1.20",
        "10.0.0.1:5432",
        "2001:db8::ff00:42:8329",
        "fe80::1%eth0",
        "1.2.3",
        "v18.1.0",
        "PostgreSQL 18.1 (Debian 18.1-1.pgdg120+1) on x86_64-pc-linux-gnu",
        "550e8400-e29b-41d4-a716-446655440000",
        "018f3a5c-7d2e-7b1a-9c3d-4e5f60718293",
        "12345678",
        "1234567890123456789",
        "-42",
        "3.14159265358979",
        "1.7976931348623157e+308",
        "199.99",
        "$1,234.56",
        "€ 1.234,56",
        "USD 12345678.90",
        "100%",
        "0.5%",
        "ORD-2026-000123",
        "#100234",
        "PO 4500012345",
        "INV/2026/11/0042",
        "SKU-AB12-3456",
        "port 5432",
        "localhost:5432",
        "pg_catalog.int4",
        "pg_toast_16384",
        "16384 | customers | 2200 | r",
        " oid  | typname | typlen\n------+---------+--------\n   23 | int4    |      4",
        "{\"id\": 12345, \"total\": 199.99, \"qty\": 3, \"ratio\": 0.25}",
        "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]",
        "{1,2,3,4,5,6,7,8,9,10,11,12,13}",
        "deadbeefcafebabe0123456789abcdef",
        "\\x4111111111111111deadbeef",
        "\\x0123456789",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        "SELECT id, name, email FROM customers WHERE id = 42 AND created_at > now() - '7 days'",
        "INSERT INTO orders (id, total) VALUES (1001, 25.50), (1002, 99.00)",
        "ERROR:  relation \"customer\" does not exist at character 15",
        "ERROR:  invalid input syntax for type integer: \"abc\"",
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.",
        "Acme Widget 3000 (blue), 2-pack",
        "iPhone 15 Pro Max 256GB",
        "Size 10.5 - 12 pcs - 3 x 4 x 5 cm",
        "Room 101, Floor 3",
        "Chapter 1.2.3.4",
        "(1, 2)",
        "(12) 34",
        "+1",
        "+00:00",
        "1e+10",
        "x+12345678",
        "a@b",
        "user@localhost",
        "@everyone",
        "50% @ 3 for $10",
        "",
    ];

    #[test]
    fn ordinary_values_are_left_alone() {
        let m = masker(&[mask(MaskStrategy::Redact, &[], &ALL)]);
        for value in CLEAN {
            assert_eq!(scrubbed(&m, value), None, "in {value:?}");
        }
        let row = CLEAN.join("\t");
        assert_eq!(scrubbed(&m, &row), None);
    }

    #[test]
    fn findings_in_wire_formats() {
        let m = masker(&[mask(MaskStrategy::Redact, &[], &ALL)]);
        let cases = [
            (
                "1\tAlice\talice@example.com\t415-555-2671\n",
                "1\tAlice\t[email]\t[phone]\n",
            ),
            (
                "2,\"Bob, Jr.\",bob@example.com,4111111111111111\n",
                "2,\"Bob, Jr.\",[email],[credit_card]\n",
            ),
            (
                r#"{"id":3,"ssn":"078-05-1120","iban":"GB82WEST12345698765432"}"#,
                r#"{"id":3,"ssn":"[us_ssn]","iban":"[iban]"}"#,
            ),
            (
                "ERROR:  invalid input syntax for type integer: \"4111 1111 1111 1111\"",
                "ERROR:  invalid input syntax for type integer: \"[credit_card]\"",
            ),
            (
                "DETAIL:  Key (email)=(carol@example.org) already exists.",
                "DETAIL:  Key (email)=([email]) already exists.",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(scrubbed(&m, text).as_deref(), Some(expected), "in {text:?}");
        }
    }

    #[test]
    fn scrubbing_twice_finds_nothing_more() {
        for strategy in [MaskStrategy::Redact, MaskStrategy::Partial] {
            let m = masker(&[mask(strategy, &[], &ALL)]);
            let text = "a@example.com 4111111111111111 078-05-1120 \
                        DE89370400440532013000 +14155552671";
            let once = scrubbed(&m, text).expect("findings");
            assert_eq!(scrubbed(&m, &once), None, "{once}");
        }
    }

    /// A small deterministic generator, so the test needs no dependency and replays exactly.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn long_repetitive_text_is_scanned_in_linear_time() {
        let m = masker(&[mask(MaskStrategy::Redact, &[], &ALL)]);
        for unit in [
            "@", "a@", "%40", "x.", "1 ", "1-", "+1 ", "(", "DE89 ", "4", "a@b.",
        ] {
            let text = unit.repeat(200_000 / unit.len());
            let _ = m.scrub(text.as_bytes());
        }
    }

    #[test]
    fn any_bytes_are_safe() {
        let m = masker(&[mask(MaskStrategy::Partial, &["t.a"], &ALL)]);
        let alphabet = b"0123456789 -.+()@%4AZDEGBx_:/\"',\t\n\xff\xc3\xa9";
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let len = (xorshift(&mut state) % 48) as usize;
            let text: Vec<u8> = (0..len)
                .map(|_| alphabet[(xorshift(&mut state) % alphabet.len() as u64) as usize])
                .collect();
            if let Some(out) = m.scrub(&text) {
                assert_ne!(out, text);
            }
            let mut out = Vec::new();
            for column in [
                ColumnMask::Direct(0),
                ColumnMask::Derived,
                ColumnMask::Clean,
            ] {
                m.mask_value(column, &text, &mut out);
            }
        }
    }
}
