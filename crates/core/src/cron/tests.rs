//! The tests of `cron.rs`: parsing and its refusals, next ticks across year ends, leap days, DST changes
//! and zones, and bounds on the work of a parse or a search. Only tests: the code under test and the
//! rules they check are in (and documented on) the parent module.

use super::*;

// Instants below are in ms since the epoch, derived by hand from two anchors:
//   2026-01-01T00:00:00Z = 1_767_225_600 s (20_454 days × 86_400; the same as
//   `ManualClock::at_fixed_start`), and days per month 31 28 31 30 31 30 31 31 30 31 30 31.
// 2026-01-01 is a Thursday. DST in 2026:
//   Europe/Berlin   (CET +1 / CEST +2) — starts Sun 2026-03-29 01:00Z (day 87: 02:00 CET -> 03:00 CEST),
//                                        ends   Sun 2026-10-25 01:00Z (day 297: 03:00 CEST -> 02:00 CET).
//   America/New_York (EST -5 / EDT -4) — starts Sun 2026-03-08 07:00Z (day 66: 02:00 EST -> 03:00 EDT),
//                                        ends   Sun 2026-11-01 06:00Z (day 304: 02:00 EDT -> 01:00 EST).
// "day N" = days after 2026-01-01, so the instant is (1_767_225_600 + N × 86_400 + seconds of day) × 1000.
const JAN_1_2026: i64 = 1_767_225_600_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// 2026, `day` days after January 1st, at `h:m` UTC, in ms — the same arithmetic as the comment above.
fn t(day: i64, h: i64, m: i64) -> i64 {
    JAN_1_2026 + day * DAY + h * HOUR + m * 60_000
}

fn s(expr: &str, tz: &str) -> CronSchedule {
    CronSchedule::parse(expr, tz).unwrap()
}

/// The ticks after `after`, `n` of them.
fn ticks(sched: &CronSchedule, after: i64, n: usize) -> Vec<i64> {
    let mut out = Vec::new();
    let mut at = after;
    for _ in 0..n {
        at = sched.next_after(at).unwrap();
        out.push(at);
    }
    out
}

fn field_of(err: Error) -> String {
    match err {
        Error::Invalid { field, .. } => field,
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
}

#[test]
fn hand_computed_anchors_agree_with_the_calendar() {
    // Checks the arithmetic the DST tests rely on against chrono's calendar.
    let cal = |y, mo, d, h, mi| {
        NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis()
    };
    assert_eq!(JAN_1_2026, cal(2026, 1, 1, 0, 0));
    assert_eq!(t(87, 1, 0), cal(2026, 3, 29, 1, 0));
    assert_eq!(t(297, 1, 0), cal(2026, 10, 25, 1, 0));
    assert_eq!(t(66, 7, 0), cal(2026, 3, 8, 7, 0));
    assert_eq!(t(304, 6, 0), cal(2026, 11, 1, 6, 0));
    assert_eq!(t(365, 0, 0), cal(2027, 1, 1, 0, 0));
}

#[test]
fn five_field_expression() {
    let c = s("30 9 * * *", "UTC");
    assert_eq!(c.expr(), "30 9 * * *");
    assert_eq!(c.timezone(), "UTC");
    assert_eq!(ticks(&c, JAN_1_2026, 2), vec![t(0, 9, 30), t(1, 9, 30)]);
    // Every 15 minutes, and ranges with lists.
    let c = s("*/15 9-10 * * *", "UTC");
    assert_eq!(
        ticks(&c, JAN_1_2026, 9),
        vec![
            t(0, 9, 0),
            t(0, 9, 15),
            t(0, 9, 30),
            t(0, 9, 45),
            t(0, 10, 0),
            t(0, 10, 15),
            t(0, 10, 30),
            t(0, 10, 45),
            t(1, 9, 0)
        ]
    );
}

#[test]
fn six_field_expression_has_seconds_first() {
    let c = s("*/20 * * * * *", "UTC");
    assert_eq!(
        ticks(&c, JAN_1_2026, 3),
        vec![
            JAN_1_2026 + 20_000,
            JAN_1_2026 + 40_000,
            JAN_1_2026 + 60_000
        ]
    );
    let c = s("30 0 12 * * *", "UTC");
    assert_eq!(c.next_after(JAN_1_2026), Some(t(0, 12, 0) + 30_000));
}

#[test]
fn each_alias() {
    // From Thursday 2026-01-01T00:00:00Z, itself a tick of all of them (so it is excluded).
    let cases = [
        ("@yearly", t(365, 0, 0)),
        ("@annually", t(365, 0, 0)),
        ("@monthly", t(31, 0, 0)),
        ("@weekly", t(3, 0, 0)), // Sunday 2026-01-04
        ("@daily", t(1, 0, 0)),
        ("@midnight", t(1, 0, 0)),
        ("@hourly", t(0, 1, 0)),
        ("@DAILY", t(1, 0, 0)),
    ];
    for (alias, want) in cases {
        assert_eq!(
            s(alias, "UTC").next_after(JAN_1_2026),
            Some(want),
            "{alias}"
        );
    }
    // In a zone, midnight is local: Berlin's new year is 23:00 UTC the day before.
    assert_eq!(
        s("@yearly", "Europe/Berlin").next_after(JAN_1_2026),
        Some(t(364, 23, 0))
    );
    assert_eq!(
        field_of(CronSchedule::parse("@reboot", "UTC").unwrap_err()),
        "cron"
    );
    assert_eq!(
        field_of(CronSchedule::parse("@every", "UTC").unwrap_err()),
        "cron"
    );
}

#[test]
fn month_and_weekday_names() {
    // Mondays in January at 09:00: 2026-01-05, then 2026-01-12.
    let c = s("0 9 * JAN MON", "UTC");
    assert_eq!(ticks(&c, JAN_1_2026, 2), vec![t(4, 9, 0), t(11, 9, 0)]);
    // Lower case and ranges of names: weekdays in March, from Thursday 2026-01-01.
    let c = s("0 0 9 * mar mon-fri", "UTC");
    // 2026-03-02 is a Monday (day 60).
    assert_eq!(c.next_after(JAN_1_2026), Some(t(60, 9, 0)));
    // Sunday as 0 and 7.
    assert_eq!(
        s("0 0 * * 7", "UTC").next_after(JAN_1_2026),
        s("0 0 * * SUN", "UTC").next_after(JAN_1_2026)
    );
}

#[test]
fn invalid_expressions_name_the_cron_field() {
    for bad in [
        "",
        "   ",
        "* * * *",
        "* * * * * * *",
        "0 0 1 1 * 2027",
        "61 * * * *",
        "* 24 * * *",
        "0 0 32 * *",
        "0 0 0 * *",
        "0 0 * 13 *",
        "0 0 * * 8",
        "60 * * * * *",
        "garbage",
        "a b c d e",
        "0 0 * FOO *",
        "*/0 * * * *",
        "5-1 * * * *",
        "0 , * * *",
        "@",
    ] {
        let err = CronSchedule::parse(bad, "UTC").unwrap_err();
        let msg = err.to_string();
        assert_eq!(field_of(err), "cron", "{bad:?}: {msg}");
    }
    // Messages say what is wrong.
    let msg = CronSchedule::parse("* * * *", "UTC")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("4 fields") && msg.contains("expected 5"),
        "{msg}"
    );
    let msg = CronSchedule::parse("0 61 * * *", "UTC")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("hour field \"61\""), "{msg}");
    let msg = CronSchedule::parse("0 0 * FOO *", "UTC")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("month field \"FOO\": illegal character 'F'"),
        "{msg}"
    );
    let msg = CronSchedule::parse("61 * * * *", "UTC")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("minute field \"61\""), "{msg}");
    // Too long, even if otherwise fine.
    let long = format!("0 0 * * {}", "1,".repeat(130) + "1");
    assert!(long.len() > MAX_CRON_LEN);
    let err = CronSchedule::parse(&long, "UTC").unwrap_err();
    assert!(err.to_string().contains("256"), "{err}");
    assert_eq!(field_of(err), "cron");
    // At the limit is fine.
    let at_limit = format!("0 0 * * 1{}", " ".repeat(MAX_CRON_LEN - 9));
    assert_eq!(at_limit.len(), MAX_CRON_LEN);
    assert!(CronSchedule::parse(&at_limit, "UTC").is_ok());
}

#[test]
fn unknown_zone_names_the_timezone_field() {
    for bad in ["Mars/Olympus_Mons", "", "europe/berlin", "CEST", "+02:00"] {
        let err = CronSchedule::parse("0 0 * * *", bad).unwrap_err();
        assert_eq!(field_of(err), "timezone", "{bad:?}");
    }
    for good in ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"] {
        assert!(CronSchedule::parse("0 0 * * *", good).is_ok(), "{good}");
    }
}

#[test]
fn never_firing_expressions_are_refused_fast() {
    for never in [
        "0 0 30 2 *",
        "0 0 31 4 *",
        "0 0 31 2,4,6,9,11 *",
        "0 0 0 30 2 *",
    ] {
        let before = work_steps();
        let err = CronSchedule::parse(never, "Europe/Berlin").unwrap_err();
        assert_eq!(
            work_steps() - before,
            0,
            "{never}: refused by looking at its fields, without a search"
        );
        let msg = err.to_string();
        assert!(msg.contains("never fires"), "{msg}");
        assert_eq!(field_of(err), "cron", "{never}");
    }
    // With a weekday as well, the day matches if either matches (Vixie cron): Mondays in February.
    let c = s("0 0 30 2 MON", "UTC");
    // 2026-02-02 is the first Monday of February (day 32).
    assert_eq!(c.next_after(JAN_1_2026), Some(t(32, 0, 0)));
}

#[test]
fn leap_day_fires_on_the_next_february_29th() {
    let c = s("0 0 29 2 *", "UTC");
    // 2028-02-29T00:00Z: 2026 and 2027 have 365 days, then 31 + 28 days into 2028.
    let feb_29_2028 = t(365 + 365 + 31 + 28, 0, 0);
    assert_eq!(feb_29_2028, 1_835_395_200_000);
    assert_eq!(c.next_after(JAN_1_2026), Some(feb_29_2028));
    // Then 2032 (4 years, one of them 2028 itself with 366 days: 1461 days).
    assert_eq!(c.next_after(feb_29_2028), Some(feb_29_2028 + 1461 * DAY));
    // 2100 is not a leap year: from 2097 the next is 2104-02-29T00:00:00Z = 4_233_686_400 s.
    let mar_2097 = NaiveDate::from_ymd_opt(2097, 3, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis();
    let before = work_steps();
    assert_eq!(c.next_after(mar_2097), Some(4_233_686_400_000));
    // One zone probe per day between the two (about 2,556 days: no DST in UTC), and a few searches.
    let days = (4_233_686_400_000 - mar_2097) / DAY;
    let spent = work_steps() - before;
    assert!(spent <= days as u64 + 8, "{spent} steps for {days} days");
}

#[test]
fn next_after_crosses_a_year_boundary() {
    let c = s("0 0 1 1 *", "UTC");
    // From mid-2026 to 2027-01-01T00:00Z (day 365).
    assert_eq!(c.next_after(t(180, 12, 0)), Some(t(365, 0, 0)));
    let c = s("59 23 31 12 *", "America/New_York");
    // From 2026-01-01T00:00Z, which is still 2025-12-31 19:00 EST: 2025-12-31 23:59 EST =
    // 2026-01-01 04:59Z, then 2026-12-31 23:59 EST = 2027-01-01 04:59Z (365 days later).
    assert_eq!(ticks(&c, JAN_1_2026, 2), vec![t(0, 4, 59), t(365, 4, 59)]);
}

#[test]
fn next_after_is_strictly_after() {
    let c = s("0 * * * *", "UTC");
    let tick = t(0, 1, 0);
    assert_eq!(c.next_after(tick - 1), Some(tick));
    assert_eq!(c.next_after(tick), Some(tick + HOUR));
    assert_eq!(c.next_after(tick + 1), Some(tick + HOUR));
    // Negative timestamps (before 1970) work too: 1969-12-31T23:00Z, then the epoch.
    assert_eq!(c.next_after(-HOUR - 1), Some(-HOUR));
    assert_eq!(c.next_after(-1), Some(0));
    // Every second: the next whole second.
    let c = s("* * * * * *", "Europe/Berlin");
    assert_eq!(c.next_after(JAN_1_2026), Some(JAN_1_2026 + 1000));
    assert_eq!(c.next_after(JAN_1_2026 + 1), Some(JAN_1_2026 + 1000));
    assert_eq!(c.next_after(JAN_1_2026 - 1), Some(JAN_1_2026));
}

#[test]
fn next_after_is_bounded_at_the_extremes() {
    let c = s("0 0 29 2 *", "Europe/Berlin");
    assert_eq!(c.next_after(i64::MAX), None);
    // Croner searches up to the year 5000: the last leap day it finds is 4996-02-29.
    let in_4997 = (LAST_SECOND - 4 * 365 * 86_400) * 1000;
    assert_eq!(c.next_after(in_4997), None);
    // Before the year 1, the search starts there.
    let first = s("0 0 1 1 *", "UTC").next_after(i64::MIN).unwrap();
    assert!(first > FIRST_SECOND * 1000, "{first}");
}

// --- Daylight saving time, Europe/Berlin ---

#[test]
fn berlin_spring_forward_fixed_time_fires_at_the_end_of_the_gap() {
    let c = s("30 2 * * *", "Europe/Berlin");
    // 2026-03-28 02:30 CET = 01:30Z; 2026-03-29 02:30 does not exist: fires at 03:00 CEST = 01:00Z
    // (the end of the gap); 2026-03-30 02:30 CEST = 00:30Z.
    assert_eq!(
        ticks(&c, t(86, 0, 0), 3),
        vec![t(86, 1, 30), t(87, 1, 0), t(88, 0, 30)]
    );
    // A tick in the gap and one at its end are the same instant: fired once.
    let c = s("0 2,3 * * *", "Europe/Berlin");
    assert_eq!(
        ticks(&c, t(86, 12, 0), 3),
        vec![t(87, 1, 0), t(88, 0, 0), t(88, 1, 0)]
    );
    // Several ticks inside the gap: one, at its end.
    let c = s("*/20 2 * * *", "Europe/Berlin");
    assert_eq!(ticks(&c, t(86, 12, 0), 2), vec![t(87, 1, 0), t(88, 0, 0)]);
    // Asked from just before the end of the gap (01:00Z - 1 ms), the gap tick is still ahead.
    assert_eq!(
        s("30 2 * * *", "Europe/Berlin").next_after(t(87, 1, 0) - 1),
        Some(t(87, 1, 0))
    );
}

#[test]
fn berlin_spring_forward_hourly_follows_real_time() {
    let c = s("0 * * * *", "Europe/Berlin");
    // From 2026-03-28 23:30Z (00:30 CET): 01:00 CET = 00:00Z, then 03:00 CEST = 01:00Z (02:00 local
    // does not exist), 04:00 CEST = 02:00Z: one tick per real hour.
    assert_eq!(
        ticks(&c, t(86, 23, 30), 3),
        vec![t(87, 0, 0), t(87, 1, 0), t(87, 2, 0)]
    );
    let c = s("30 * * * *", "Europe/Berlin");
    // 01:30 CET = 00:30Z, then 03:30 CEST = 01:30Z: 02:30 does not happen.
    assert_eq!(ticks(&c, t(87, 0, 0), 2), vec![t(87, 0, 30), t(87, 1, 30)]);
}

#[test]
fn berlin_fall_back_fixed_time_fires_once() {
    let c = s("30 2 * * *", "Europe/Berlin");
    // 2026-10-25 02:30 happens at 00:30Z (CEST) and again at 01:30Z (CET): fires at 00:30Z only,
    // then 2026-10-26 02:30 CET = 01:30Z.
    assert_eq!(
        ticks(&c, t(296, 12, 0), 2),
        vec![t(297, 0, 30), t(298, 1, 30)]
    );
    // Asked from inside the second pass (02:10 CET = 01:10Z), the repeated 02:30 does not fire.
    assert_eq!(c.next_after(t(297, 1, 10)), Some(t(298, 1, 30)));
    // Nor from the first tick itself, nor from the last second of the first pass.
    assert_eq!(c.next_after(t(297, 0, 30)), Some(t(298, 1, 30)));
    assert_eq!(c.next_after(t(297, 1, 0) - 1), Some(t(298, 1, 30)));
    // A fixed hour with several minutes: the first pass only, then 03:00 CET = 02:00Z.
    let c = s("*/30 2,3 * * *", "Europe/Berlin");
    assert_eq!(
        ticks(&c, t(296, 12, 0), 4),
        vec![t(297, 0, 0), t(297, 0, 30), t(297, 2, 0), t(297, 2, 30)]
    );
}

#[test]
fn berlin_fall_back_hourly_fires_every_real_hour() {
    let c = s("0 * * * *", "Europe/Berlin");
    // From 2026-10-24 22:30Z (00:30 CEST): 01:00 CEST = 23:00Z, 02:00 CEST = 00:00Z,
    // 02:00 CET = 01:00Z, 03:00 CET = 02:00Z.
    assert_eq!(
        ticks(&c, t(296, 22, 30), 4),
        vec![t(296, 23, 0), t(297, 0, 0), t(297, 1, 0), t(297, 2, 0)]
    );
    // From inside the second pass (02:10 CET = 01:10Z), a half-hourly schedule fires at the repeated
    // 02:30 CET = 01:30Z, never at an instant before the one asked about.
    let c = s("30 * * * *", "Europe/Berlin");
    assert_eq!(c.next_after(t(297, 1, 10)), Some(t(297, 1, 30)));
    assert_eq!(
        ticks(&c, t(296, 23, 0), 4),
        vec![t(296, 23, 30), t(297, 0, 30), t(297, 1, 30), t(297, 2, 30)]
    );
}

// --- Daylight saving time, America/New_York ---

#[test]
fn new_york_spring_forward() {
    let c = s("30 2 * * *", "America/New_York");
    // 2026-03-07 02:30 EST = 07:30Z; 2026-03-08 02:30 does not exist: 03:00 EDT = 07:00Z;
    // 2026-03-09 02:30 EDT = 06:30Z.
    assert_eq!(
        ticks(&c, t(65, 0, 0), 3),
        vec![t(65, 7, 30), t(66, 7, 0), t(67, 6, 30)]
    );
    let c = s("0 * * * *", "America/New_York");
    // 01:00 EST = 06:00Z, then 03:00 EDT = 07:00Z.
    assert_eq!(
        ticks(&c, t(66, 5, 30), 3),
        vec![t(66, 6, 0), t(66, 7, 0), t(66, 8, 0)]
    );
}

#[test]
fn new_york_fall_back() {
    let c = s("30 1 * * *", "America/New_York");
    // 2026-11-01 01:30 happens at 05:30Z (EDT) and 06:30Z (EST): fires at 05:30Z only;
    // 2026-11-02 01:30 EST = 06:30Z.
    assert_eq!(
        ticks(&c, t(303, 12, 0), 2),
        vec![t(304, 5, 30), t(305, 6, 30)]
    );
    let c = s("0 * * * *", "America/New_York");
    // 00:00 EDT = 04:00Z, 01:00 EDT = 05:00Z, 01:00 EST = 06:00Z, 02:00 EST = 07:00Z.
    assert_eq!(
        ticks(&c, t(304, 3, 30), 4),
        vec![t(304, 4, 0), t(304, 5, 0), t(304, 6, 0), t(304, 7, 0)]
    );
}

#[test]
fn zones_without_dst_and_with_odd_offsets() {
    // Asia/Kolkata is +05:30 all year: 09:00 IST = 03:30Z.
    let c = s("0 9 * * *", "Asia/Kolkata");
    assert_eq!(c.next_after(JAN_1_2026), Some(t(0, 3, 30)));
}
