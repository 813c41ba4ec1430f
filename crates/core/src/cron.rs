//! Cron schedules: a cron expression evaluated in an IANA time zone, answering one question — when is
//! the next tick after a given instant ([`CronSchedule::next_after`]).
//!
//! # Syntax
//!
//! - 5 fields `minute hour day-of-month month day-of-week`, or 6 with seconds first
//!   `second minute hour day-of-month month day-of-week`. With 5 fields the second is 0.
//! - Month and weekday names (`JAN`–`DEC`, `SUN`–`SAT`, any case); `0` and `7` are both Sunday.
//! - Lists, ranges and steps (`1,15`, `9-17`, `*/10`, `5-50/5`), and croner's extensions: `L` (last day
//!   of the month, or last given weekday: `5L`), `W` (nearest weekday: `15W`), `#` (nth weekday: `MON#2`)
//!   and `?` (same as `*` in the day fields).
//! - When both day-of-month and day-of-week are restricted, a day matches if **either** matches
//!   (Vixie cron): `0 0 13 * FRI` fires on every 13th and on every Friday.
//! - The aliases `@yearly` (= `@annually`, `0 0 1 1 *`), `@monthly` (`0 0 1 * *`), `@weekly`
//!   (`0 0 * * 0`), `@daily` (= `@midnight`, `0 0 * * *`) and `@hourly` (`0 * * * *`).
//!
//! An expression that can never fire (`0 0 30 2 *`, February 30th) is refused by
//! [`CronSchedule::parse`]: it checks every day of a whole 28-year calendar cycle, which holds every
//! combination of month length and weekday the Gregorian calendar has, so the check is exact and takes
//! well under a millisecond.
//!
//! # Time zones and daylight saving time
//!
//! The expression is matched against the wall clock of the zone; a schedule fires at real instants, and
//! each local wall-clock match fires at most once. Where the clock jumps:
//!
//! - **Spring forward** (a local time that does not exist, e.g. Europe/Berlin 2026-03-29 02:30, when
//!   clocks go from 02:00 CET straight to 03:00 CEST): a schedule with a *fixed hour* (`30 2 * * *`) fires
//!   once at the first instant after the gap (03:00 CEST = 01:00 UTC), so the tick is not lost. Several
//!   ticks inside one gap (`*/15 2 * * *`), or a gap tick and a tick at the end of the gap
//!   (`0 2,3 * * *`), fall on the same instant and fire once. A schedule whose hour field matches
//!   *every hour* (`0 * * * *`, `*/15 * * * *`) follows real time instead: the missing wall-clock times
//!   simply do not occur, and it fires at the next one that does (an hourly schedule fires at 01:00 CET,
//!   then 03:00 CEST — one real hour later).
//! - **Fall back** (a local time that occurs twice, e.g. Europe/Berlin 2026-10-25 02:30, first CEST, an
//!   hour later CET): a schedule with a fixed hour (`30 2 * * *`) fires once, at the first occurrence
//!   (02:30 CEST = 00:30 UTC); the second pass through the repeated hour is skipped. A schedule whose
//!   hour field matches every hour fires at both, so an hourly schedule fires every real hour: 02:00 CEST
//!   and 02:00 CET.
//!
//! "Matches every hour" means the hour field selects all 24 hours (`*`, `*/1`, `0-23`); any other hour
//! field (`2`, `1-5`, `*/2`) counts as fixed. This is the rule of Vixie cron, and what croner does for
//! single fixed times; croner's own DST handling is not used, because it loses the second pass of an
//! hourly schedule, gives up gap ticks of schedules such as `0,30 2 * * *`, and, asked from inside the
//! second pass, can answer an instant *before* the one it was given. Instead croner is asked only about
//! wall-clock times (in UTC, where no clock jumps), and this module maps them to instants itself.
//!
//! # Limits
//!
//! Ticks fall on whole seconds. Searches end at the year 5000 (croner's limit): after that
//! [`CronSchedule::next_after`] answers `None`. Zone rules come from chrono-tz's copy of the tz
//! database, whose transitions are tabulated up to 2099; later years keep the last offset in the table.

use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};

use crate::clock::Timestamp;
use crate::error::{Error, Result};

/// The longest expression [`CronSchedule::parse`] accepts, in bytes.
pub const MAX_CRON_LEN: usize = 256;

/// 0001-01-01T00:00:00Z in seconds: instants before it are searched from it.
const FIRST_SECOND: i64 = -62_135_596_800;
/// 5000-12-31T23:59:59Z in seconds: croner searches no further.
const LAST_SECOND: i64 = 95_649_119_999;
/// Zone offsets are probed this far apart when looking for a DST transition, so that no two transitions
/// fall between probes: in chrono-tz 0.10's tables the closest two are almost 7 days apart.
const PROBE_SECONDS: i64 = 86_400;
thread_local! {
    /// The steps of work done on this thread: zone lookups and croner searches ([`work_steps`]).
    static WORK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many zone lookups and croner searches this thread has made so far. The tests bound the work of
/// a parse or a search by these steps, which no load on the machine changes, rather than by time.
#[doc(hidden)]
pub fn work_steps() -> u64 {
    WORK.with(|w| w.get())
}

fn step() {
    WORK.with(|w| w.set(w.get() + 1));
}

/// More transitions than any search can cross (one per ~half year, over croner's longest gap between
/// ticks of a valid expression, a few decades); a guard, never reached.
const MAX_TRANSITIONS: usize = 1_000;

const FIELDS_5: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
const FIELDS_6: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
];

/// A parsed cron expression in an IANA time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expr: String,
    timezone: String,
    tz: Tz,
    cron: Cron,
    /// The hour field selects all 24 hours: the schedule follows real time across DST changes (see the
    /// module documentation).
    every_hour: bool,
}

impl CronSchedule {
    /// Parses `expr` in time zone `tz`.
    /// - `expr`: 5 fields `min hour day-of-month month day-of-week`, or 6 fields with seconds first
    ///   `sec min hour dom month dow`; names (JAN, MON) allowed; or one of the aliases
    ///   @yearly @annually @monthly @weekly @daily @midnight @hourly.
    /// - `tz`: an IANA zone name such as "Europe/Berlin", or "UTC".
    ///
    /// Errors: [`Error::Invalid`] for field `cron` for a bad, too long (over [`MAX_CRON_LEN`] bytes) or
    /// never-firing expression (e.g. `0 0 30 2 *`), for field `timezone` for an unknown zone.
    pub fn parse(expr: &str, tz: &str) -> Result<CronSchedule> {
        let cron = parse_cron(expr)?;
        let zone = Tz::from_str(tz).map_err(|_| {
            Error::invalid(
                "timezone",
                format!(
                    "unknown time zone {tz:?}: expected an IANA zone name such as \"Europe/Berlin\" \
                     or \"UTC\" (names are case-sensitive)"
                ),
            )
        })?;
        let every_hour = (0..24).all(|h| cron.pattern.hour_match(h).unwrap_or(false));
        Ok(CronSchedule {
            expr: expr.to_owned(),
            timezone: tz.to_owned(),
            tz: zone,
            cron,
            every_hour,
        })
    }

    /// The first instant strictly after `after` at which the schedule fires, in ms since the epoch,
    /// or None if it never fires again (that is, not before the year 5001).
    ///
    /// The work is bounded: a few croner searches and, between `after` and the answer, one zone lookup
    /// per day and per DST transition.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        // Ticks fall on whole seconds, so the first candidate is the whole second after `s`.
        let s = after.div_euclid(1000).max(FIRST_SECOND);
        if s >= LAST_SECOND {
            return None;
        }
        let o = self.offset_at(s);
        // The search runs over wall-clock times ("walls": local date-time as seconds since the epoch, as
        // if it were UTC), starting just after the wall time of `s`.
        let mut floor = s + o + 1;
        if !self.every_hour
            && let Some(end) = self.second_pass_end(s)
        {
            // `s` is in the second pass through a repeated hour: a fixed-hour schedule does not fire
            // there again.
            floor = floor.max(end);
        }
        let mut wall = self.next_wall(floor)?;
        let mut from = s;
        for _ in 0..MAX_TRANSITIONS {
            // Invariant: `from` has offset `o`; no tick lies in (s, from]; `wall` is the first wall time
            // that can still fire, and it is at least the wall time of `from`.
            let o = self.offset_at(from);
            let at = wall - o;
            let Some(t) = self.first_transition(from, at, o) else {
                // No clock change between `from` and `at`: `wall` happens at `at`.
                return at.checked_mul(1000);
            };
            // The clock changes at `t` (<= `at`, so `wall >= t + o`) from offset `o` to `o2`.
            let o2 = self.offset_at(t);
            if o2 > o {
                // Spring forward: wall times [t+o, t+o2) never happen.
                if wall < t + o2 {
                    if !self.every_hour {
                        return t.checked_mul(1000);
                    }
                    wall = self.next_wall(t + o2)?;
                }
            } else if self.every_hour {
                // Fall back: wall times [t+o2, t+o) happen a second time, and tick again.
                wall = self.next_wall(t + o2)?;
            }
            // Otherwise (fall back, fixed hour) the second pass is skipped: the first wall time >= t+o,
            // which is `wall`, is the next to fire.
            from = t;
        }
        None
    }

    /// The expression as given.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The zone name as given.
    pub fn timezone(&self) -> &str {
        &self.timezone
    }

    /// The zone's offset from UTC at instant `secs`, in seconds.
    fn offset_at(&self, secs: i64) -> i64 {
        step();
        DateTime::from_timestamp(secs.clamp(FIRST_SECOND, LAST_SECOND), 0).map_or(0, |dt| {
            i64::from(
                self.tz
                    .offset_from_utc_datetime(&dt.naive_utc())
                    .fix()
                    .local_minus_utc(),
            )
        })
    }

    /// The first wall time at or after `wall` that the expression matches.
    fn next_wall(&self, wall: i64) -> Option<i64> {
        step();
        let start = DateTime::<Utc>::from_timestamp(wall.clamp(FIRST_SECOND, LAST_SECOND), 0)?;
        // In UTC no clock jumps, so croner's DST handling stays out of the way.
        let found = self.cron.find_next_occurrence(&start, true).ok()?;
        Some(found.timestamp())
    }

    /// The first instant in `(from, to]` whose offset is not `o` (the offset at `from`), if any.
    fn first_transition(&self, from: i64, to: i64, o: i64) -> Option<i64> {
        let mut lo = from;
        while lo < to {
            let hi = lo.saturating_add(PROBE_SECONDS).min(to);
            if self.offset_at(hi) != o {
                // Exactly one transition in (lo, hi]: bisect to the second.
                let (mut a, mut b) = (lo, hi);
                while b - a > 1 {
                    let m = a + (b - a) / 2;
                    if self.offset_at(m) == o {
                        a = m;
                    } else {
                        b = m;
                    }
                }
                return Some(b);
            }
            lo = hi;
        }
        None
    }

    /// If instant `s` is in the second pass through a repeated (fall-back) stretch of wall time, the
    /// wall time at which that stretch ends.
    fn second_pass_end(&self, s: i64) -> Option<i64> {
        let wall = s + self.offset_at(s);
        let local = DateTime::from_timestamp(wall, 0)?.naive_utc();
        let first = self.tz.from_local_datetime(&local).earliest()?.timestamp();
        if first >= s {
            return None;
        }
        let o1 = self.offset_at(first);
        let t = self.first_transition(first, s, o1)?;
        Some(t + o1)
    }
}

/// Parses and checks an expression (without its zone).
fn parse_cron(expr: &str) -> Result<Cron> {
    if expr.len() > MAX_CRON_LEN {
        return Err(Error::invalid(
            "cron",
            format!(
                "expression is {} bytes long; at most {MAX_CRON_LEN} are allowed",
                expr.len()
            ),
        ));
    }
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err(Error::invalid("cron", "expression is empty"));
    }
    let body = if trimmed.starts_with('@') {
        alias(trimmed)?
    } else {
        trimmed
    };
    let fields: Vec<&str> = body.split_whitespace().collect();
    let names: &[&str] = match fields.len() {
        5 => &FIELDS_5,
        6 => &FIELDS_6,
        n => {
            return Err(Error::invalid(
                "cron",
                format!(
                    "{expr:?} has {n} field{}: expected 5 (minute hour day-of-month month \
                     day-of-week) or 6 (second minute hour day-of-month month day-of-week)",
                    if n == 1 { "" } else { "s" }
                ),
            ));
        }
    };
    let cron = parser().parse(&fields.join(" ")).map_err(|e| {
        Error::invalid("cron", format!("{expr:?}: {}", explain(&fields, names, &e)))
    })?;
    // A field such as "," parses to no value at all; such an expression never fires.
    let p = &cron.pattern;
    let empty = if !(0..60).any(|v| p.second_match(v).unwrap_or(false)) {
        Some("second")
    } else if !(0..60).any(|v| p.minute_match(v).unwrap_or(false)) {
        Some("minute")
    } else if !(0..24).any(|v| p.hour_match(v).unwrap_or(false)) {
        Some("hour")
    } else {
        None
    };
    if let Some(name) = empty {
        return Err(Error::invalid(
            "cron",
            format!("{expr:?}: the {name} field selects no value, so it never fires"),
        ));
    }
    if !fires_on_some_day(&cron) {
        return Err(Error::invalid(
            "cron",
            format!(
                "{expr:?} never fires: no calendar date matches its day-of-month, month and \
                 day-of-week fields (like February 30th)"
            ),
        ));
    }
    Ok(cron)
}

/// The 5-field expression an `@` alias stands for.
fn alias(s: &str) -> Result<&'static str> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => {
            return Err(Error::invalid(
                "cron",
                format!(
                    "unknown alias {s:?}: expected one of @yearly, @annually, @monthly, @weekly, \
                     @daily, @midnight, @hourly"
                ),
            ));
        }
    })
}

/// Optional seconds (5 or 6 fields), no year field.
fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// Names the field croner refuses: each field is tried alone, the others `*`.
fn explain(fields: &[&str], names: &[&str], whole: &CronError) -> String {
    for (i, (field, name)) in fields.iter().zip(names).enumerate() {
        let mut probe = vec!["*"; fields.len()];
        probe[i] = field;
        if let Err(e) = parser().parse(&probe.join(" ")) {
            return format!("{name} field {field:?}: {}", detail(&e));
        }
    }
    detail(whole)
}

/// Croner's message without its prefixes.
fn detail(e: &CronError) -> String {
    let msg = match e {
        CronError::ComponentError(m) | CronError::InvalidPattern(m) => m.clone(),
        // "CronPattern contains illegal character 'F' in part 'FOO'" (croner upper-cases the input).
        CronError::IllegalCharacters(m) => m.trim_start_matches("CronPattern contains ").to_owned(),
        other => other.to_string(),
    };
    let msg = msg.trim_end_matches('.');
    // "Number out of bounds" reads better mid-sentence as "number out of bounds".
    let mut chars = msg.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if first.is_uppercase() && second.is_lowercase() => {
            first.to_lowercase().chain(msg.chars().skip(1)).collect()
        }
        _ => msg.to_owned(),
    }
}

/// Whether some calendar date matches the day-of-month, month and day-of-week fields. 2001–2028 is a
/// whole 28-year cycle without a skipped leap year: every month starts on every weekday in it, in both
/// lengths for February, so a day rule that ever matches (`L`, `W` and `#` included) matches there.
fn fires_on_some_day(cron: &Cron) -> bool {
    let p = &cron.pattern;
    for year in 2001..=2028 {
        for month in 1..=12 {
            if !p.month_match(month).unwrap_or(false) {
                continue;
            }
            let Some(first) = NaiveDate::from_ymd_opt(year, month, 1) else {
                continue;
            };
            let mut day = first;
            while day.month() == month {
                if p.day_match(year, month, day.day()).unwrap_or(false) {
                    return true;
                }
                let Some(next) = day.succ_opt() else { break };
                day = next;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests;
