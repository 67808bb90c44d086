//! How `bftd` and `bftctl` write log lines: `env_logger` with `RUST_LOG` as always, each line
//! stamped with UTC time to the millisecond; `BFTD_LOG_FORMAT=json` makes each line one JSON
//! object (`ts`, `level`, `target`, `msg`) for log shippers.
//!
//! Invariant: a line is one line: a message's newlines are escaped in JSON and replaced by
//! spaces in text, so a log reader never mistakes a continuation for a new record.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// The environment variable that selects the format: `json`, or `text` (the default).
pub const FORMAT_ENV: &str = "BFTD_LOG_FORMAT";

/// Installs the logger: `RUST_LOG` filters (else `default_level`), `BFTD_LOG_FORMAT` formats.
/// An unknown format falls back to text and says so once, on the first line.
pub fn init(default_level: &str) {
    let format = std::env::var(FORMAT_ENV).unwrap_or_default();
    let json = format.eq_ignore_ascii_case("json");
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level));
    builder.format(move |buf, record| {
        let ts = rfc3339_utc(SystemTime::now());
        let msg = record.args().to_string();
        if json {
            writeln!(
                buf,
                "{{\"ts\":\"{ts}\",\"level\":\"{}\",\"target\":\"{}\",\"msg\":\"{}\"}}",
                record.level(),
                json_escape(record.target()),
                json_escape(&msg)
            )
        } else {
            writeln!(
                buf,
                "{ts} {:<5} {}: {}",
                record.level(),
                record.target(),
                msg.replace('\n', " ")
            )
        }
    });
    // A second init (a test calling main twice) keeps the first logger.
    if builder.try_init().is_ok() && !format.is_empty() && !json && format != "text" {
        log::warn!("{FORMAT_ENV}={format:?} is not 'json' or 'text'; logging text");
    }
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// `2026-11-29T17:30:04.123Z`.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = |s: u64, ms: u64| UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms);
        assert_eq!(rfc3339_utc(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(at(951_782_400, 5)), "2000-02-29T00:00:00.005Z");
        assert_eq!(
            rfc3339_utc(at(1_795_973_404, 123)),
            "2026-11-29T17:30:04.123Z"
        );
    }

    #[test]
    fn json_lines_stay_one_line() {
        assert_eq!(json_escape("a \"b\"\nc\\"), "a \\\"b\\\"\\nc\\\\");
        assert_eq!(json_escape("\u{1}"), "\\u0001");
    }
}
