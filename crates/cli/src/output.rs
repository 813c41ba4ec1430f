//! Printing: aligned tables for people, JSON for scripts, and errors with their exit code.

use std::process::ExitCode;

/// `println!` that ignores a closed stdout (`errand queue ls | head`) instead of panicking.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}
pub(crate) use say;

use serde::Serialize;

/// Prints rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        say!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Prints `value` as JSON.
pub fn json(value: &impl Serialize) -> ExitCode {
    match serde_json::to_string_pretty(value) {
        Ok(s) => {
            say!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &format!("cannot print JSON: {e}")),
    }
}

/// Prints `message` to stderr and returns `code`.
pub fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("errand: {message}");
    ExitCode::from(code)
}

/// The exit code for an error answer of status `status`.
pub fn exit_code(status: u16) -> u8 {
    match status {
        400 | 413 | 415 => 2,
        404 => 3,
        409 => 4,
        401 | 403 => 5,
        _ => 1,
    }
}

/// An instant (ms since the epoch) as UTC `YYYY-MM-DD HH:MM:SS`.
pub fn instant(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An instant as UTC, saying so: `2026-12-07 02:00:00 UTC`. Every time the CLI prints carries its zone,
/// so that nobody reads a UTC time as local.
pub fn utc(ms: i64) -> String {
    format!("{} UTC", instant(ms))
}

/// An instant on the wall clock of the IANA zone `tz`, with the zone's abbreviation and offset that
/// day: `2026-12-07 03:00:00 CET (+01:00)` (a zone whose abbreviation is only a number prints just the
/// offset). A schedule's ticks are printed so, in its own zone; a name that is not a zone (the server
/// refuses those, so only an old or foreign server could send one) falls back to UTC.
pub fn in_zone(ms: i64, tz: &str) -> String {
    use chrono::{Offset, TimeZone};
    use chrono_tz::OffsetName;
    let Ok(zone) = tz.parse::<chrono_tz::Tz>() else {
        return utc(ms);
    };
    let Some(at) = zone.timestamp_millis_opt(ms).single() else {
        return utc(ms);
    };
    let offset_s = at.offset().fix().local_minus_utc();
    let sign = if offset_s < 0 { '-' } else { '+' };
    let (h, m) = (offset_s.abs() / 3600, offset_s.abs() % 3600 / 60);
    let wall = instant(ms + i64::from(offset_s) * 1000);
    match at.offset().abbreviation() {
        Some(abbr) if !abbr.starts_with(['+', '-']) => {
            format!("{wall} {abbr} ({sign}{h:02}:{m:02})")
        }
        _ => format!("{wall} ({sign}{h:02}:{m:02})"),
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
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

/// A duration in ms, briefly (`850ms`, `12.3s`, `4m`, `2h`).
pub fn duration(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m", ms / 60_000),
        _ => format!("{}h", ms / 3_600_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_print_as_utc() {
        assert_eq!(instant(0), "1970-01-01 00:00:00");
        assert_eq!(instant(1_763_900_000_000), "2025-11-23 12:13:20");
        assert_eq!(instant(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn times_say_their_zone() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        // 02:00 UTC is 03:00 in Berlin in winter, 04:00 in summer.
        let winter = 1_796_608_800_000; // 2026-12-07 02:00:00 UTC
        assert_eq!(
            in_zone(winter, "Europe/Berlin"),
            "2026-12-07 03:00:00 CET (+01:00)"
        );
        let summer = 1_783_389_600_000; // 2026-07-07 02:00:00 UTC
        assert_eq!(
            in_zone(summer, "Europe/Berlin"),
            "2026-07-07 04:00:00 CEST (+02:00)"
        );
        assert_eq!(
            in_zone(winter, "America/St_Johns"),
            "2026-12-06 22:30:00 NST (-03:30)"
        );
        assert_eq!(in_zone(winter, "UTC"), "2026-12-07 02:00:00 UTC (+00:00)");
        assert_eq!(
            in_zone(winter, "Asia/Dubai"),
            "2026-12-07 06:00:00 (+04:00)"
        );
        assert_eq!(in_zone(winter, "Not/AZone"), "2026-12-07 02:00:00 UTC");
    }

    #[test]
    fn durations_are_brief() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(12_345), "12.3s");
        assert_eq!(duration(7_200_000), "2h");
    }
}
