//! Schedule values (contract §6.1, §6.2, §6.12, fix §12.24): the one parser shared by the IPC command
//! validator and the scheduler, so a value the host accepted over IPC is always one the scheduler can run,
//! with the same next run.
//!
//! - `cron`: 5 fields (or 6 with leading seconds), names, ranges, steps, lists and the macros the
//!   original's cron library knew; day-of-month and day-of-week combine with OR when both are restricted,
//!   Sunday is 0 or 7. Evaluated by `croner` in the configured zone; the next fire is strictly after now. A
//!   fixed-time job whose wall time falls into a spring-forward gap runs at the first instant after the
//!   gap, and one in a fall-back overlap runs once.
//! - `interval`: milliseconds with JavaScript `parseInt` semantics, as the original (`"300000abc"` →
//!   300000, `"3.5"` → 3); the result must be positive and at most [`MAX_INTERVAL_MS`].
//! - `once`: RFC 3339 with `Z` or an offset (seconds optional); ISO date-time without one (wall time in
//!   the configured zone, `T` or space separated); or a bare date (UTC midnight, as JavaScript read it).
//!   Everything else is rejected rather than guessed at.

use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Longest schedule value we look at; real values are a few dozen bytes.
pub const MAX_SCHEDULE_VALUE_BYTES: usize = 256;

/// Largest accepted interval: 100 years. Keeps `now + interval` inside chrono's range.
pub const MAX_INTERVAL_MS: i64 = 100 * 366 * 24 * 3600 * 1000;

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// schedule_type is not cron, interval or once (contract §12.24: rejected, not stored as a dead task)
    #[error("unknown schedule_type {0:?}")]
    UnknownType(String),
    /// the value is empty
    #[error("schedule_value is empty")]
    Empty,
    /// the value is longer than [`MAX_SCHEDULE_VALUE_BYTES`]
    #[error("schedule_value is longer than {MAX_SCHEDULE_VALUE_BYTES} bytes")]
    TooLong,
    /// the cron expression does not parse
    #[error("invalid cron expression {value:?}: {reason}")]
    BadCron { value: String, reason: String },
    /// the cron expression never fires after the given time
    #[error("cron expression {0:?} has no future occurrence")]
    CronNeverFires(String),
    /// the interval does not start with a positive number of milliseconds in range
    #[error("invalid interval {0:?}: expected a positive number of milliseconds")]
    BadInterval(String),
    /// the once value is not an accepted date-time
    #[error(
        "invalid once value {0:?}: expected an ISO date-time with or without offset (e.g. 2026-02-01T15:30:00), or YYYY-MM-DD"
    )]
    BadOnce(String),
}

/// When a `once` task fires, before the zone is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnceAt {
    /// Had an offset (or was a bare date, which means UTC midnight).
    Instant(DateTime<Utc>),
    /// Wall-clock time in the configured zone.
    Local(NaiveDateTime),
}

/// A parsed, valid schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    Cron(Box<Cron>),
    Interval { ms: i64 },
    Once(OnceAt),
}

/// The cron macros of the original's library that our cron crate does not know itself.
const EXTRA_MACROS: &[(&str, &str)] = &[
    ("@weekdays", "0 0 * * 1-5"),
    ("@weekends", "0 0 * * 0,6"),
    ("@minutely", "* * * * *"),
    ("@secondly", "* * * * * *"),
];

/// Parses and validates a `(schedule_type, schedule_value)` pair.
pub fn parse_schedule(schedule_type: &str, value: &str) -> Result<Schedule, ScheduleError> {
    if !matches!(schedule_type, "cron" | "interval" | "once") {
        return Err(ScheduleError::UnknownType(truncate(schedule_type)));
    }
    if value.len() > MAX_SCHEDULE_VALUE_BYTES {
        return Err(ScheduleError::TooLong);
    }
    if value.trim().is_empty() {
        return Err(ScheduleError::Empty);
    }
    match schedule_type {
        "cron" => parse_cron(value).map(|c| Schedule::Cron(Box::new(c))),
        "interval" => parse_interval(value).map(|ms| Schedule::Interval { ms }),
        _ => parse_once(value).map(Schedule::Once),
    }
}

/// Parses a cron expression the way the scheduler evaluates it.
pub fn parse_cron(value: &str) -> Result<Cron, ScheduleError> {
    let trimmed = value.trim();
    let expanded = EXTRA_MACROS
        .iter()
        .find(|(name, _)| trimmed.eq_ignore_ascii_case(name))
        .map_or(trimmed, |(_, pattern)| pattern);
    let bad = |reason: String| ScheduleError::BadCron {
        value: truncate(value),
        reason,
    };
    // An empty list item (`,`, `1,,2`) makes croner drop it silently; a field made only of such items
    // matches nothing, and the never-firing search below then walks minute by minute to year 5000
    // (found by fuzzing: ~1 s of CPU per command). Refuse them outright.
    if expanded
        .split_whitespace()
        .any(|field| field.split(',').any(str::is_empty))
    {
        return Err(bad("empty item in a list".into()));
    }
    let cron = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expanded)
        .map_err(|e| bad(e.to_string()))?;
    // A pattern such as `0 0 30 2 *` parses but never fires; refuse it now rather than store a dead task.
    let probe = Utc
        .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .ok_or_else(|| bad("internal clock error".into()))?;
    cron.find_next_occurrence(&probe, false)
        .map_err(|_| ScheduleError::CronNeverFires(truncate(value)))?;
    Ok(cron)
}

/// Parses an interval like JavaScript `parseInt(value, 10)`: optional leading whitespace and sign, then
/// the digits up to the first non-digit. The result must be positive and at most [`MAX_INTERVAL_MS`].
pub fn parse_interval(value: &str) -> Result<i64, ScheduleError> {
    let bad = || ScheduleError::BadInterval(truncate(value));
    let s = value.trim_start();
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let end = digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 || negative {
        return Err(bad());
    }
    let ms = i64::from_str(&digits[..end]).map_err(|_| bad())?;
    if ms <= 0 || ms > MAX_INTERVAL_MS {
        return Err(bad());
    }
    Ok(ms)
}

/// Parses a `once` value (see the module docs for the accepted forms).
pub fn parse_once(value: &str) -> Result<OnceAt, ScheduleError> {
    let bad = || ScheduleError::BadOnce(truncate(value));
    let s = value.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(OnceAt::Instant(t.with_timezone(&Utc)));
    }
    // RFC 3339 wants seconds; JavaScript does not.
    for format in ["%Y-%m-%dT%H:%M%:z", "%Y-%m-%dT%H:%M%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, format) {
            return Ok(OnceAt::Instant(t.with_timezone(&Utc)));
        }
    }
    if let Some(rest) = s.strip_suffix(['Z', 'z'])
        && let Ok(naive) = NaiveDateTime::parse_from_str(rest, "%Y-%m-%dT%H:%M")
    {
        return Ok(OnceAt::Instant(Utc.from_utc_datetime(&naive)));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, format) {
            return Ok(OnceAt::Local(naive));
        }
    }
    if s.len() == 10
        && let Ok(date) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
    {
        let midnight = date.and_hms_opt(0, 0, 0).ok_or_else(bad)?;
        return Ok(OnceAt::Instant(Utc.from_utc_datetime(&midnight)));
    }
    Err(bad())
}

impl OnceAt {
    /// The instant, with wall-clock values read in `tz`. An ambiguous wall time (DST fold) takes the
    /// earlier instant; a skipped one (DST gap) moves forward by the gap, as JavaScript's Date does.
    pub fn resolve(self, tz: Tz) -> Option<DateTime<Utc>> {
        match self {
            Self::Instant(t) => Some(t),
            Self::Local(naive) => match tz.from_local_datetime(&naive).earliest() {
                Some(t) => Some(t.with_timezone(&Utc)),
                // In a gap: read the wall time with the offset in force just before it, which moves the
                // instant forward by the gap's length (JavaScript's behaviour).
                None => {
                    let before = naive.checked_sub_signed(Duration::hours(6))?;
                    let offset = tz.from_local_datetime(&before).earliest()?.offset().fix();
                    naive
                        .checked_sub_signed(Duration::seconds(i64::from(offset.local_minus_utc())))
                        .map(|utc| Utc.from_utc_datetime(&utc))
                }
            },
        }
    }
}

impl Schedule {
    /// next_run when a task is created (contract §6.2): next cron occurrence after now, now + interval,
    /// or the once instant (which may be in the past; it then fires at once).
    pub fn first_run(&self, now: DateTime<Utc>, tz: Tz) -> Result<DateTime<Utc>, ScheduleError> {
        match self {
            Self::Cron(cron) => next_cron(cron, now, tz),
            Self::Interval { ms } => now
                .checked_add_signed(Duration::milliseconds(*ms))
                .ok_or_else(|| ScheduleError::BadInterval(ms.to_string())),
            Self::Once(at) => at
                .resolve(tz)
                .ok_or_else(|| ScheduleError::BadOnce(format!("{at:?}"))),
        }
    }

    /// next_run after a run finished at `now` (contract §6.12): `None` for once tasks.
    pub fn after_run(&self, now: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        match self {
            Self::Once(_) => None,
            other => other.first_run(now, tz).ok(),
        }
    }
}

fn next_cron(cron: &Cron, now: DateTime<Utc>, tz: Tz) -> Result<DateTime<Utc>, ScheduleError> {
    cron.find_next_occurrence(&now.with_timezone(&tz), false)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ScheduleError::CronNeverFires(cron.pattern.to_string()))
}

/// Error messages quote the offending value; keep them short.
fn truncate(value: &str) -> String {
    let mut end = value.len().min(64);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::time::iso;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn first(kind: &str, value: &str, now: &str, tz: Tz) -> String {
        iso(parse_schedule(kind, value)
            .unwrap()
            .first_run(utc(now), tz)
            .unwrap())
    }

    /// `(expression, now, zone, expected next fire)`, each checked by [`first`].
    fn check_cron(cases: &[(&str, &str, Tz, &str)]) {
        for &(expr, now, tz, want) in cases {
            assert_eq!(
                first("cron", expr, now, tz),
                want,
                "{expr:?} after {now} in {tz}"
            );
        }
    }

    #[test]
    fn contract_6_1_cron_known_next_fire_times() {
        let (utc_tz, ny) = (Tz::UTC, chrono_tz::America::New_York);
        check_cron(&[
            // 09:00 New York = 14:00 UTC in winter.
            (
                "0 9 * * *",
                "2026-02-10T15:00:00Z",
                ny,
                "2026-02-11T14:00:00.000Z",
            ),
            // Strictly after now: exactly at a fire time gives the next one.
            (
                "0 9 * * *",
                "2026-02-11T14:00:00Z",
                ny,
                "2026-02-12T14:00:00.000Z",
            ),
            (
                "0 12 * * *",
                "2026-01-03T12:00:00Z",
                utc_tz,
                "2026-01-04T12:00:00.000Z",
            ),
            // Saturday 2026-01-03 → weekdays at 09:00 → Monday 2026-01-05.
            (
                "0 9 * * 1-5",
                "2026-01-03T12:00:00Z",
                utc_tz,
                "2026-01-05T09:00:00.000Z",
            ),
            (
                "*/15 * * * *",
                "2026-01-03T12:07:00Z",
                utc_tz,
                "2026-01-03T12:15:00.000Z",
            ),
            // Sunday as 7, as 0 and as a name; month names (2026-01-04 and 2026-02-15 are Sundays).
            (
                "0 12 * * 7",
                "2026-02-10T00:00:00Z",
                utc_tz,
                "2026-02-15T12:00:00.000Z",
            ),
            (
                "0 12 * * 0",
                "2026-02-10T00:00:00Z",
                utc_tz,
                "2026-02-15T12:00:00.000Z",
            ),
            (
                "0 12 * * sun",
                "2026-02-10T00:00:00Z",
                utc_tz,
                "2026-02-15T12:00:00.000Z",
            ),
            (
                "0 8 * * 7",
                "2026-01-03T00:00:00Z",
                utc_tz,
                "2026-01-04T08:00:00.000Z",
            ),
            (
                "0 8 * jan sun",
                "2026-01-03T00:00:00Z",
                utc_tz,
                "2026-01-04T08:00:00.000Z",
            ),
            // Day-of-month OR day-of-week (vixie semantics): the 13th or any Friday.
            (
                "0 0 13 * 5",
                "2026-02-01T00:00:00Z",
                utc_tz,
                "2026-02-06T00:00:00.000Z",
            ),
            (
                "0 0 13 * 5",
                "2026-01-03T00:00:00Z",
                utc_tz,
                "2026-01-09T00:00:00.000Z",
            ),
            // Optional leading seconds field.
            (
                "30 0 9 * * *",
                "2026-02-10T00:00:00Z",
                utc_tz,
                "2026-02-10T09:00:30.000Z",
            ),
            (
                "30 0 9 * * *",
                "2026-01-03T12:00:00Z",
                utc_tz,
                "2026-01-04T09:00:30.000Z",
            ),
            // Macros, including cron-parser's own (2026-02-14 is a Saturday).
            (
                "@daily",
                "2026-02-10T05:00:00Z",
                utc_tz,
                "2026-02-11T00:00:00.000Z",
            ),
            (
                "@daily",
                "2026-01-03T12:00:00Z",
                utc_tz,
                "2026-01-04T00:00:00.000Z",
            ),
            (
                "@hourly",
                "2026-01-03T12:00:00Z",
                utc_tz,
                "2026-01-03T13:00:00.000Z",
            ),
            (
                "@weekly",
                "2026-01-03T12:00:00Z",
                utc_tz,
                "2026-01-04T00:00:00.000Z",
            ),
            (
                "@weekdays",
                "2026-02-14T05:00:00Z",
                utc_tz,
                "2026-02-16T00:00:00.000Z",
            ),
            (
                "@weekdays",
                "2026-01-03T12:00:00Z",
                utc_tz,
                "2026-01-05T00:00:00.000Z",
            ),
            (
                "@weekends",
                "2026-02-10T05:00:00Z",
                utc_tz,
                "2026-02-14T00:00:00.000Z",
            ),
        ]);
    }

    #[test]
    fn contract_6_1_cron_is_evaluated_in_the_configured_zone_across_dst() {
        let (ny, berlin) = (chrono_tz::America::New_York, chrono_tz::Europe::Berlin);
        check_cron(&[
            // 09:00 local is 14:00Z in winter (EST), 13:00Z after the 2026-03-08 spring-forward (EDT).
            (
                "0 9 * * *",
                "2026-03-06T15:00:00Z",
                ny,
                "2026-03-07T14:00:00.000Z",
            ),
            (
                "0 9 * * *",
                "2026-03-07T15:00:00Z",
                ny,
                "2026-03-08T13:00:00.000Z",
            ),
            // 02:30 does not exist on 2026-03-08: the job runs at the first instant after the gap.
            (
                "30 2 * * *",
                "2026-03-08T05:00:00Z",
                ny,
                "2026-03-08T07:00:00.000Z",
            ),
            // 01:30 happens twice on 2026-11-01: the job runs once (the first, EDT), next day at EST.
            (
                "30 1 * * *",
                "2026-11-01T04:00:00Z",
                ny,
                "2026-11-01T05:30:00.000Z",
            ),
            (
                "30 1 * * *",
                "2026-11-01T05:30:00Z",
                ny,
                "2026-11-02T06:30:00.000Z",
            ),
            // Hourly jobs keep firing every real hour through the fall-back.
            (
                "0 * * * *",
                "2026-10-25T00:30:00Z",
                berlin,
                "2026-10-25T01:00:00.000Z",
            ),
        ]);
        let s = parse_schedule("cron", "0 9 * * *").unwrap();
        assert_eq!(
            iso(s.after_run(utc("2026-03-08T13:00:00Z"), ny).unwrap()),
            "2026-03-09T13:00:00.000Z"
        );
    }

    #[test]
    fn contract_6_1_cron_rejects_invalid_expressions() {
        for bad in [
            "",
            "not a cron",
            "not cron",
            "* * *",
            "* * * *",
            "61 * * * *",
            "0 25 * * *",
            "* * * * * * *",
            "0 0 1 1 * 2026",
            "@fortnightly",
        ] {
            assert!(
                matches!(parse_cron(bad), Err(ScheduleError::BadCron { .. })),
                "{bad:?} should be rejected as unparsable"
            );
        }
        // Parses, but February has no 30th.
        assert_eq!(
            parse_schedule("cron", "0 0 30 2 *").unwrap_err(),
            ScheduleError::CronNeverFires("0 0 30 2 *".into())
        );
        assert_eq!(
            parse_schedule("cron", "  ").unwrap_err(),
            ScheduleError::Empty
        );
        // Empty list items are refused before croner sees them (they drop silently there, and a field of
        // nothing but them never fires).
        for bad in [
            "0 , 4 * * 1-5",
            "* , * * *",
            "0 1,,2 * * *",
            ", * * * * *",
            "0 0 * * 1,",
        ] {
            assert!(
                matches!(parse_schedule("cron", bad), Err(ScheduleError::BadCron { ref reason, .. }) if reason == "empty item in a list"),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_schedule("cron", &"1".repeat(300)).unwrap_err(),
            ScheduleError::TooLong
        );
    }

    /// Fuzzing found a cron value whose never-firing search took ~1 s of CPU (13 s instrumented); every
    /// value must now be decided fast, including day-level patterns that never fire.
    #[test]
    fn never_firing_patterns_are_decided_fast() {
        for value in [
            "0            ,                     4 * * 1-5",
            "0 0 30 2 *",
            "0 0 31 4,6,9,11 *",
            "0 0 30W 2 *",
        ] {
            let start = std::time::Instant::now();
            assert!(parse_schedule("cron", value).is_err(), "{value:?}");
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "{value:?} took {:?}",
                start.elapsed()
            );
        }
    }

    #[test]
    fn contract_6_1_interval_uses_leading_integer_semantics() {
        for (value, ms) in [
            ("3600000", 3_600_000),
            ("300000", 300_000),
            ("300000abc", 300_000),
            ("3.5", 3),
            (" 5", 5),
            ("  42", 42),
            ("+7", 7),
        ] {
            assert_eq!(parse_interval(value), Ok(ms), "{value:?}");
        }
        for bad in [
            "0",
            "-5",
            "abc",
            "",
            " ",
            "99999999999999999999",
            "99999999999999999999999",
        ] {
            assert!(parse_interval(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            first("interval", "60000", "2026-02-10T00:00:00Z", Tz::UTC),
            "2026-02-10T00:01:00.000Z"
        );
    }

    #[test]
    fn contract_6_1_once_value_formats_and_zones() {
        let berlin = chrono_tz::Europe::Berlin;
        let now = "2026-01-01T00:00:00Z";
        for (value, want) in [
            ("2026-02-01T15:30:00Z", "2026-02-01T15:30:00.000Z"),
            ("2026-02-01T15:30:00+02:00", "2026-02-01T13:30:00.000Z"),
            ("2026-02-01T15:30:00.250+02:00", "2026-02-01T13:30:00.250Z"),
            ("2026-02-01T15:30Z", "2026-02-01T15:30:00.000Z"),
            // No offset: wall time in the zone (CET = UTC+1 in February, CEST = UTC+2 in July).
            ("2026-02-01T15:30:00", "2026-02-01T14:30:00.000Z"),
            ("2026-02-01T15:30", "2026-02-01T14:30:00.000Z"),
            ("2026-07-01T15:30", "2026-07-01T13:30:00.000Z"),
            ("2026-07-01 15:30:00", "2026-07-01T13:30:00.000Z"),
            // Bare date: UTC midnight, as JavaScript's Date read it.
            ("2026-02-01", "2026-02-01T00:00:00.000Z"),
            // DST gap (02:30 does not exist on 2026-03-29 in Berlin): moved forward by the gap.
            ("2026-03-29T02:30:00", "2026-03-29T01:30:00.000Z"),
            // DST overlap (02:30 happens twice on 2026-10-25): the earlier instant.
            ("2026-10-25T02:30:00", "2026-10-25T00:30:00.000Z"),
            // Past values are kept: the task fires at once.
            ("2020-01-01T00:00:00Z", "2020-01-01T00:00:00.000Z"),
        ] {
            assert_eq!(first("once", value, now, berlin), want, "{value:?}");
        }
        for bad in [
            "not-a-date",
            "tomorrow",
            "",
            "Feb 1, 2026 3:30 PM",
            "2026-13-01",
            "2026-02-01T25:00:00",
            "1700000000000",
            "1738423800000",
        ] {
            assert!(
                matches!(parse_once(bad), Err(ScheduleError::BadOnce(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn contract_6_12_next_run_after_a_run() {
        let tz = Tz::UTC;
        let done = utc("2026-01-03T12:07:30.000Z");
        let cron = parse_schedule("cron", "0 * * * *").unwrap();
        assert_eq!(
            iso(cron.after_run(done, tz).unwrap()),
            "2026-01-03T13:00:00.000Z"
        );
        let interval = parse_schedule("interval", "60000").unwrap();
        assert_eq!(
            iso(interval.after_run(done, tz).unwrap()),
            "2026-01-03T12:08:30.000Z"
        );
        let once = parse_schedule("once", "2026-01-03T12:00:00Z").unwrap();
        assert_eq!(once.after_run(done, tz), None);
        assert_eq!(
            iso(once.first_run(done, tz).unwrap()),
            "2026-01-03T12:00:00.000Z"
        );
    }

    #[test]
    fn contract_12_24_unknown_schedule_type_is_rejected() {
        assert_eq!(
            parse_schedule("weekly", "x").unwrap_err(),
            ScheduleError::UnknownType("weekly".into())
        );
    }
}
