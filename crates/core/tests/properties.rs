//! Property tests of what hostile input reaches first: cron expressions, names, ids and error
//! messages. Whatever the input, parsing answers (with bounded work: counted in steps, not timed) and
//! never panics; what it accepts obeys its rules.

#![allow(clippy::unwrap_used)]

use errand_core::cron::work_steps;
use errand_core::{CronSchedule, JobId, Limits, fingerprint, validate};
use proptest::prelude::*;

/// A cron field: numbers, ranges, steps, lists, names and stray characters.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        (0u32..70).prop_map(|n| n.to_string()),
        (0u32..70, 0u32..70).prop_map(|(a, b)| format!("{a}-{b}")),
        (0u32..70, 0u32..70).prop_map(|(a, s)| format!("{a}/{s}")),
        (0u32..40, 0u32..40, 0u32..40).prop_map(|(a, b, c)| format!("{a},{b},{c}")),
        prop::sample::select(vec![
            "JAN", "feb", "MON", "sun", "L", "W", "#", "?", "", ",", "-", "*/0"
        ])
        .prop_map(str::to_string),
        "[ -~]{0,6}",
    ]
}

fn expression() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(field(), 5..=7).prop_map(|f| f.join(" ")),
        "[ -~]{0,40}",
        "\\PC{0,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn cron_parsing_answers_quickly_and_accepted_expressions_tick_forward(
        expr in expression(),
        tz in prop::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Nowhere/City"]),
        from in 0i64..4_102_444_800_000,
    ) {
        let before = work_steps();
        let parsed = CronSchedule::parse(&expr, tz);
        prop_assert_eq!(work_steps() - before, 0, "{:?}: parsing searches nothing", expr);
        if let Ok(s) = parsed {
            let before = work_steps();
            if let Some(next) = s.next_after(from) {
                prop_assert!(next > from, "{expr} {tz}: {next} after {from}");
                // `next_after` probes the zone once a day between `from` and the answer, bisects each
                // DST transition on the way (at most two a year, 17 probes each) and makes a few
                // croner searches: more steps than that is work the search should not do.
                let days = ((next - from) / 86_400_000) as u64 + 2;
                let transitions = 2 * (days / 365 + 2);
                let spent = work_steps() - before;
                prop_assert!(
                    spent <= days + transitions * 24 + 64,
                    "{:?} {}: {} steps for {} days", expr, tz, spent, days
                );
                prop_assert_eq!(s.next_after(next - 1), Some(next));
            }
        }
    }

    #[test]
    fn names_are_accepted_only_within_their_rules(s in "\\PC{0,300}") {
        let limits = Limits::default();
        if validate::queue_name("queue", &s, &limits).is_ok() {
            prop_assert!(!s.is_empty() && s.len() <= limits.max_queue_name);
            prop_assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c)));
        }
        if validate::kind("kind", &s, &limits).is_ok() {
            prop_assert!(!s.is_empty() && s.len() <= limits.max_kind);
        }
        let _ = validate::key("unique_key", &s, limits.max_key);
    }

    #[test]
    fn ids_parse_or_refuse_and_round_trip(s in "[0-9A-Za-z]{0,30}|\\PC{0,30}") {
        if let Ok(id) = s.parse::<JobId>() {
            prop_assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
        }
    }

    #[test]
    fn fingerprints_take_any_text(kind in "[a-z]{1,8}", msg in "\\PC{0,2000}") {
        let n = fingerprint::normalize(&msg);
        prop_assert!(n.len() <= 500);
        prop_assert_eq!(fingerprint::of(&kind, &msg).len(), 16);
        prop_assert_eq!(fingerprint::of(&kind, &msg), fingerprint::of(&kind, &msg));
    }
}

/// February has no 30th or 31st; April, June, September and November no 31st: such expressions never
/// fire and are refused at once, alone or in lists of such months.
#[test]
fn days_no_month_has_are_refused_quickly() {
    for expr in [
        "0 0 30 2 *",
        "0 0 31 2 *",
        "0 0 31 4 *",
        "0 0 31 6 *",
        "0 0 31 9 *",
        "0 0 31 11 *",
        "0 0 31 2,4,6 *",
        "0 0 30,31 2 *",
        "* * 31 4-4 *",
        "0 0 31 FEB *",
    ] {
        let before = work_steps();
        assert!(CronSchedule::parse(expr, "UTC").is_err(), "{expr}");
        assert_eq!(
            work_steps() - before,
            0,
            "{expr}: refused from its fields, without searching"
        );
    }
    assert!(
        CronSchedule::parse("0 0 31 1,2 *", "UTC").is_ok(),
        "January has a 31st"
    );
}
