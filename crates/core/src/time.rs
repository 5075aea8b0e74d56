//! Business and recording time: microseconds since the Unix epoch, UTC.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// A point in time, microseconds since 1970-01-01T00:00:00Z.
pub type Micros = i64;

/// Earliest accepted timestamp: 1970-01-01T00:00:00Z.
pub const TIME_MIN: Micros = 0;
/// Latest accepted timestamp: 9999-12-31T23:59:59.999999Z.
pub const TIME_MAX: Micros = 253_402_300_799_999_999;

pub const MICROS_PER_SECOND: i64 = 1_000_000;
pub const MICROS_PER_HOUR: i64 = 3_600 * MICROS_PER_SECOND;
pub const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// Parses an RFC 3339 timestamp with an explicit offset (`Z` or `±hh:mm`).
/// Sub-microsecond digits are truncated.
pub fn parse_rfc3339(text: &str) -> Result<Micros, String> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| format!("`{text}` is not an RFC 3339 timestamp with offset ({e})"))?;
    let micros = parsed.unix_timestamp_nanos().div_euclid(1_000);
    let micros = i64::try_from(micros).map_err(|_| format!("`{text}` is out of range"))?;
    if !(TIME_MIN..=TIME_MAX).contains(&micros) {
        return Err(format!("`{text}` is outside 1970-01-01..9999-12-31"));
    }
    Ok(micros)
}

/// Parses a query bound: an RFC 3339 timestamp or a plain `YYYY-MM-DD` (midnight UTC).
pub fn parse_bound(text: &str) -> Result<Micros, String> {
    if text.len() == 10 && text.as_bytes().get(4) == Some(&b'-') {
        return parse_rfc3339(&format!("{text}T00:00:00Z"))
            .map_err(|_| format!("`{text}` is not a date (YYYY-MM-DD) or RFC 3339 timestamp"));
    }
    parse_rfc3339(text)
}

/// Formats as RFC 3339 in UTC: `2026-03-01T09:30:00Z`, with fractional seconds only when present.
pub fn format_rfc3339(micros: Micros) -> String {
    let mut out = Vec::with_capacity(27);
    write_rfc3339(&mut out, micros);
    String::from_utf8(out).unwrap_or_default()
}

/// [`format_rfc3339`] appended to a byte buffer (ASCII), without allocating.
pub fn write_rfc3339(buf: &mut Vec<u8>, micros: Micros) {
    if !(TIME_MIN..=TIME_MAX).contains(&micros) {
        buf.extend_from_slice(format_rfc3339_slow(micros).as_bytes());
        return;
    }
    // Hinnant's civil-from-days, digits written by hand: this runs twice per hashed entry.
    let (year, month, day) = civil(micros.div_euclid(MICROS_PER_DAY));
    let secs = micros.rem_euclid(MICROS_PER_DAY) / MICROS_PER_SECOND;
    let frac = micros.rem_euclid(MICROS_PER_SECOND);
    let mut out = [0u8; 27];
    let two = |out: &mut [u8], at: usize, v: i64| {
        out[at] = b'0' + (v / 10) as u8;
        out[at + 1] = b'0' + (v % 10) as u8;
    };
    two(&mut out, 0, year / 100);
    two(&mut out, 2, year % 100);
    out[4] = b'-';
    two(&mut out, 5, month);
    out[7] = b'-';
    two(&mut out, 8, day);
    out[10] = b'T';
    two(&mut out, 11, secs / 3_600);
    out[13] = b':';
    two(&mut out, 14, secs / 60 % 60);
    out[16] = b':';
    two(&mut out, 17, secs % 60);
    let mut len = 19;
    if frac != 0 {
        out[19] = b'.';
        let mut f = frac;
        for i in (20..26).rev() {
            out[i] = b'0' + (f % 10) as u8;
            f /= 10;
        }
        len = 26;
        while out[len - 1] == b'0' {
            len -= 1;
        }
    }
    out[len] = b'Z';
    buf.extend_from_slice(&out[..=len]);
}

/// (year, month, day) of a day number since 1970-01-01 (Hinnant's civil-from-days).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// The `time` crate's formatting, for values outside the accepted range (and the tests).
fn format_rfc3339_slow(micros: Micros) -> String {
    let nanos = i128::from(micros) * 1_000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let t = t.to_offset(UtcOffset::UTC);
            let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
            let (h, mi, s) = (t.hour(), t.minute(), t.second());
            let frac = micros.rem_euclid(MICROS_PER_SECOND);
            if frac == 0 {
                format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
            } else {
                let digits = format!("{frac:06}");
                let digits = digits.trim_end_matches('0');
                format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{digits}Z")
            }
        }
        Err(_) => format!("@{micros}us"),
    }
}

/// The UTC calendar year and month (1–12) of `t` (Howard Hinnant's civil-from-days).
pub fn year_month(t: Micros) -> (i64, u32) {
    let z = t.div_euclid(MICROS_PER_DAY) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32)
}

/// Midnight UTC on the first day of `month` (1–12) of `year` (days-from-civil).
pub fn month_start(year: i64, month: u32) -> Micros {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) * MICROS_PER_DAY
}

#[cfg(test)]
mod fast_format_tests {
    use super::*;

    #[test]
    fn fast_formatting_equals_the_time_crate() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut samples = vec![
            TIME_MIN,
            TIME_MAX,
            951_782_400_000_000,
            1_709_164_800_000_001,
            1_000_000,
        ];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            samples.push((x % (TIME_MAX as u64 + 1)) as i64);
            samples.push(((x % 400_000) as i64) * MICROS_PER_DAY + (x % 7) as i64 * 100_000);
        }
        for t in samples {
            assert_eq!(format_rfc3339(t), format_rfc3339_slow(t), "{t}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_to_the_same_instant() {
        let z = parse_rfc3339("2026-03-01T09:30:00Z").unwrap();
        let plus = parse_rfc3339("2026-03-01T10:30:00+01:00").unwrap();
        assert_eq!(z, plus);
        // 2026-03-01 is day 20513 after the epoch: 20513*86400 + 9.5h.
        assert_eq!(z, (20_513 * 86_400 + 34_200) * MICROS_PER_SECOND);
    }

    #[test]
    fn rejects_missing_offset_and_nonsense() {
        assert!(parse_rfc3339("2026-03-01T09:30:00").is_err());
        assert!(parse_rfc3339("2026-02-30T09:30:00Z").is_err());
        assert!(parse_rfc3339("yesterday").is_err());
        assert!(parse_rfc3339("1969-12-31T23:59:59Z").is_err());
    }

    #[test]
    fn months_start_on_their_first_day() {
        for (text, y, m) in [
            ("1970-01-01T00:00:00Z", 1970, 1),
            ("2024-02-29T23:59:59Z", 2024, 2),
            ("2026-12-31T12:00:00Z", 2026, 12),
            ("2000-03-01T00:00:00Z", 2000, 3),
        ] {
            let t = parse_rfc3339(text).unwrap();
            assert_eq!(year_month(t), (y, m), "{text}");
            let first = format!("{y:04}-{m:02}-01T00:00:00Z");
            assert_eq!(month_start(y, m), parse_rfc3339(&first).unwrap(), "{first}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for text in [
            "2026-03-01T09:30:00Z",
            "2026-03-01T09:30:00.25Z",
            "1970-01-01T00:00:00.000001Z",
        ] {
            assert_eq!(format_rfc3339(parse_rfc3339(text).unwrap()), text);
        }
        assert_eq!(
            parse_bound("2026-03-01").unwrap(),
            parse_rfc3339("2026-03-01T00:00:00Z").unwrap()
        );
    }
}
