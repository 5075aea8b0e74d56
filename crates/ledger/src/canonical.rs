//! The bytes the chain hashes: RFC 8785 (JSON Canonicalization Scheme) of the entry document
//! `{"event", "prev_hash", "recorded_at", "seq"}`. The specification is `schemas/chain.md`;
//! this module and `scripts/verify_export.py` are two implementations of it, and the pinned
//! vectors in `schemas/chain-vectors.json` hold both to it.

use funnel_core::event::Member;
use funnel_core::time::Micros;
use funnel_core::Event;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The chain format this crate writes and verifies.
pub const CHAIN_FORMAT: u32 = 2;

/// The canonical bytes of an event: JCS of its contract JSON.
pub fn canonical_bytes(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_event(&mut out, event);
    out
}

/// JCS of `event.to_json()`, written straight from [`Event::members`] (the hot path of every
/// append and verify) without building a `serde_json::Value`.
pub fn write_event(out: &mut Vec<u8>, event: &Event) {
    write_members(out, event.members());
}

fn write_members(out: &mut Vec<u8>, members: Vec<(&'static str, Member<'_>)>) {
    write_object(out, members, |out, member| match member {
        Member::Str(s) => write_string(out, s),
        Member::Int(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Member::Float(x) => write_f64(out, x),
        Member::Time(t) => write_time(out, t),
        Member::Object(inner) => write_members(out, inner),
    });
}

/// A JSON object with its members in JCS order (by the UTF-16 code units of their names).
fn write_object<N: AsRef<str>, V>(out: &mut Vec<u8>, mut members: Vec<(N, V)>, write: impl Fn(&mut Vec<u8>, V)) {
    members.sort_by(|a, b| a.0.as_ref().encode_utf16().cmp(b.0.as_ref().encode_utf16()));
    out.push(b'{');
    for (i, (name, value)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, name.as_ref());
        out.push(b':');
        write(out, value);
    }
    out.push(b'}');
}

/// The canonical entry document an entry's hash covers.
pub fn hashed_bytes(prev_hash: &[u8; 32], seq: u64, recorded_at: Micros, event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(384);
    out.extend_from_slice(b"{\"event\":");
    write_event(&mut out, event);
    out.extend_from_slice(b",\"prev_hash\":\"");
    push_hex(&mut out, prev_hash);
    out.extend_from_slice(b"\",\"recorded_at\":");
    write_time(&mut out, recorded_at);
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    out.push(b'}');
    out
}

/// The chain hash of an entry: SHA-256 of [`hashed_bytes`].
pub fn entry_hash(prev_hash: &[u8; 32], seq: u64, recorded_at: Micros, event: &Event) -> [u8; 32] {
    Sha256::digest(hashed_bytes(prev_hash, seq, recorded_at, event)).into()
}

/// The first `prev_hash` of a chain: zeros for a new ledger; for a ledger migrated from
/// format 1, SHA-256 of JCS(`{"migrated_from":{"format":1,"hash":…,"seq":…}}`), so the new
/// chain commits to the old head.
pub fn genesis(migrated_from: Option<&Value>) -> [u8; 32] {
    match migrated_from {
        None => [0; 32],
        Some(from) => {
            let mut doc = serde_json::Map::new();
            doc.insert("migrated_from".into(), from.clone());
            let mut out = Vec::new();
            write_value(&mut out, &Value::Object(doc));
            Sha256::digest(out).into()
        }
    }
}

/// Lower-case hex.
pub fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

/// Lower-case hex as a `String`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

/// RFC 8785 serialisation of a JSON value.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else {
                write_f64(out, n.as_f64().unwrap_or(0.0));
            }
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(out, map.iter().collect(), write_value),
    }
}

/// A JSON string as JCS writes it: only `"`, `\` and control characters are escaped.
fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let mut rest = s.as_bytes();
    // Multi-byte UTF-8 never contains bytes below 0x80, so escaping bytewise is escaping by char.
    while let Some(at) = rest.iter().position(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        out.extend_from_slice(&rest[..at]);
        match rest[at] {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
        }
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// A timestamp as a JSON string: RFC 3339 needs no escaping.
fn write_time(out: &mut Vec<u8>, micros: Micros) {
    out.push(b'"');
    funnel_core::time::write_rfc3339(out, micros);
    out.push(b'"');
}

/// A finite double as ECMAScript's `Number.prototype.toString` writes it (RFC 8785 §3.2.2.3):
/// the shortest digits that round-trip, plain notation for exponents in [-7, 21).
fn write_f64(out: &mut Vec<u8>, x: f64) {
    if x == 0.0 || !x.is_finite() {
        out.push(b'0');
        return;
    }
    if x < 0.0 {
        out.push(b'-');
    }
    // Rust's `{:e}` gives the shortest round-trip digits: `d[.ddd]e<exp>`.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i32;
    // value = 0.d1d2…dk × 10^n
    let n = exp.parse::<i32>().unwrap_or(0) + 1;
    if k <= n && n <= 21 {
        out.extend_from_slice(digits.as_bytes());
        out.extend(std::iter::repeat_n(b'0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.extend_from_slice(&digits.as_bytes()[..n as usize]);
        out.push(b'.');
        out.extend_from_slice(&digits.as_bytes()[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-n) as usize));
        out.extend_from_slice(digits.as_bytes());
    } else {
        out.push(digits.as_bytes()[0]);
        if k > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits.as_bytes()[1..]);
        }
        out.push(b'e');
        out.push(if n > 0 { b'+' } else { b'-' });
        out.extend_from_slice((n - 1).abs().to_string().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(x: f64) -> String {
        let mut out = Vec::new();
        write_f64(&mut out, x);
        String::from_utf8(out).unwrap_or_default()
    }

    /// RFC 8785 appendix B / ECMAScript examples, worked by hand.
    #[test]
    fn numbers_are_written_as_ecmascript_does() {
        assert_eq!(f(0.0), "0");
        assert_eq!(f(-0.0), "0");
        assert_eq!(f(50.0), "50");
        assert_eq!(f(12.5), "12.5");
        assert_eq!(f(-1.5), "-1.5");
        assert_eq!(f(1e21), "1e+21");
        assert_eq!(f(1e20), "100000000000000000000");
        assert_eq!(f(123456789012345680000.0), "123456789012345680000");
        assert_eq!(f(1e-7), "1e-7");
        assert_eq!(f(0.000001), "0.000001");
        assert_eq!(f(1.234e-6), "0.000001234");
        assert_eq!(f(4.5e-7), "4.5e-7");
        assert_eq!(f(5e-324), "5e-324");
        assert_eq!(f(1.7976931348623157e308), "1.7976931348623157e+308");
        assert_eq!(f(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(f(333333333.3333333), "333333333.3333333");
    }

    #[test]
    fn strings_escape_only_what_jcs_escapes() {
        let mut out = Vec::new();
        write_string(&mut out, "a\"b\\c\u{1}\u{7f}é€😀\n</");
        assert_eq!(
            String::from_utf8(out).unwrap_or_default(),
            "\"a\\\"b\\\\c\\u0001\u{7f}é€😀\\n</\""
        );
    }

    #[test]
    fn members_are_sorted_by_utf16_code_units() {
        // U+FB33 sorts after U+1F600 by code point, before it by UTF-16 (0xD83D < 0xFB33).
        let value: Value = serde_json::json!({"b": 1, "a": [true, null], "\u{fb33}": 2, "\u{1f600}": 3});
        let mut out = Vec::new();
        write_value(&mut out, &value);
        assert_eq!(
            String::from_utf8(out).unwrap_or_default(),
            "{\"a\":[true,null],\"b\":1,\"\u{1f600}\":3,\"\u{fb33}\":2}"
        );
    }
}
