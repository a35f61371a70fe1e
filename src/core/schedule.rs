//! Schedule values (contract §6.1, §6.2, §6.12, fix §12.24): one parser shared by the IPC command
//! validator and the scheduler, so a value the host accepted over IPC is always one the scheduler can run.
//!
//! - `cron`: 5 fields (or 6 with leading seconds), names, ranges, steps, lists and the macros the
//!   original's cron library knew; evaluated in the configured zone; the next fire is strictly after now.
//! - `interval`: positive milliseconds as plain decimal digits. The original took the leading integer of
//!   any string (`"300000abc"`); we reject anything that is not all digits and log the reason.
//! - `once`: RFC 3339 with an offset; ISO date-time without one (wall time in the configured zone); or a
//!   bare date (UTC midnight, as JavaScript read it). Everything else is rejected.

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
    /// the interval is not a positive decimal number of milliseconds in range
    #[error("invalid interval {0:?}: expected positive milliseconds as decimal digits")]
    BadInterval(String),
    /// the once value is not an accepted date-time
    #[error("invalid once value {0:?}: expected RFC 3339, ISO local date-time or YYYY-MM-DD")]
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
    // croner panics on nothing we feed it, but its search can be slow on absurd inputs; the length cap
    // above bounds that.
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

/// Parses an interval: decimal digits only, positive, at most [`MAX_INTERVAL_MS`].
pub fn parse_interval(value: &str) -> Result<i64, ScheduleError> {
    let bad = || ScheduleError::BadInterval(truncate(value));
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let ms = i64::from_str(value).map_err(|_| bad())?;
    if ms <= 0 || ms > MAX_INTERVAL_MS {
        return Err(bad());
    }
    Ok(ms)
}

/// Parses a `once` value (see the module docs for the accepted forms).
pub fn parse_once(value: &str) -> Result<OnceAt, ScheduleError> {
    let bad = || ScheduleError::BadOnce(truncate(value));
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(OnceAt::Instant(t.with_timezone(&Utc)));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(value, format) {
            return Ok(OnceAt::Local(naive));
        }
    }
    if value.len() == 10
        && let Ok(date) = NaiveDate::parse_from_str(value, "%Y-%m-%d")
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

    #[test]
    fn cron_next_fire_times() {
        let ny = chrono_tz::America::New_York;
        // 09:00 New York = 14:00 UTC in winter.
        assert_eq!(
            first("cron", "0 9 * * *", "2026-02-10T15:00:00Z", ny),
            "2026-02-11T14:00:00.000Z"
        );
        // Strictly after now: exactly at a fire time gives the next one.
        assert_eq!(
            first("cron", "0 9 * * *", "2026-02-11T14:00:00Z", ny),
            "2026-02-12T14:00:00.000Z"
        );
        // Sunday as 7 and as 0 and as a name.
        for dow in ["7", "0", "sun"] {
            assert_eq!(
                first(
                    "cron",
                    &format!("0 12 * * {dow}"),
                    "2026-02-10T00:00:00Z",
                    chrono_tz::UTC
                ),
                "2026-02-15T12:00:00.000Z",
                "dow {dow}"
            );
        }
        // Day-of-month OR day-of-week (vixie semantics): the 13th or any Friday.
        assert_eq!(
            first("cron", "0 0 13 * 5", "2026-02-01T00:00:00Z", chrono_tz::UTC),
            "2026-02-06T00:00:00.000Z"
        );
        // Optional seconds field and macros.
        assert_eq!(
            first(
                "cron",
                "30 0 9 * * *",
                "2026-02-10T00:00:00Z",
                chrono_tz::UTC
            ),
            "2026-02-10T09:00:30.000Z"
        );
        assert_eq!(
            first("cron", "@daily", "2026-02-10T05:00:00Z", chrono_tz::UTC),
            "2026-02-11T00:00:00.000Z"
        );
        // 2026-02-14 is a Saturday.
        assert_eq!(
            first("cron", "@weekdays", "2026-02-14T05:00:00Z", chrono_tz::UTC),
            "2026-02-16T00:00:00.000Z"
        );
        assert_eq!(
            first("cron", "@weekends", "2026-02-10T05:00:00Z", chrono_tz::UTC),
            "2026-02-14T00:00:00.000Z"
        );
    }

    #[test]
    fn cron_across_dst_spring_forward() {
        let ny = chrono_tz::America::New_York;
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT. 09:00 local is 14:00 UTC before, 13:00 UTC after.
        assert_eq!(
            first("cron", "0 9 * * *", "2026-03-07T15:00:00Z", ny),
            "2026-03-08T13:00:00.000Z"
        );
        let s = parse_schedule("cron", "0 9 * * *").unwrap();
        assert_eq!(
            iso(s.after_run(utc("2026-03-08T13:00:00Z"), ny).unwrap()),
            "2026-03-09T13:00:00.000Z"
        );
    }

    #[test]
    fn cron_rejections() {
        for bad in [
            "not a cron",
            "* * *",
            "61 * * * *",
            "* * * * * * *",
            "0 0 30 2 *",
            "@fortnightly",
        ] {
            assert!(
                matches!(
                    parse_schedule("cron", bad),
                    Err(ScheduleError::BadCron { .. } | ScheduleError::CronNeverFires(_))
                ),
                "{bad:?} should be rejected"
            );
        }
        assert_eq!(
            parse_schedule("cron", "  ").unwrap_err(),
            ScheduleError::Empty
        );
        assert_eq!(
            parse_schedule("cron", &"1".repeat(300)).unwrap_err(),
            ScheduleError::TooLong
        );
    }

    #[test]
    fn interval_values() {
        assert_eq!(parse_interval("3600000"), Ok(3_600_000));
        for bad in [
            "0",
            "-5",
            "abc",
            "300000abc",
            "3.5",
            " 5",
            "",
            "99999999999999999999",
        ] {
            assert!(parse_interval(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            first("interval", "60000", "2026-02-10T00:00:00Z", chrono_tz::UTC),
            "2026-02-10T00:01:00.000Z"
        );
    }

    #[test]
    fn once_values() {
        let berlin = chrono_tz::Europe::Berlin;
        let now = "2026-01-01T00:00:00Z";
        assert_eq!(
            first("once", "2026-02-01T15:30:00Z", now, berlin),
            "2026-02-01T15:30:00.000Z"
        );
        assert_eq!(
            first("once", "2026-02-01T15:30:00+02:00", now, berlin),
            "2026-02-01T13:30:00.000Z"
        );
        // No offset: wall time in the zone (Berlin is UTC+1 in February).
        assert_eq!(
            first("once", "2026-02-01T15:30:00", now, berlin),
            "2026-02-01T14:30:00.000Z"
        );
        assert_eq!(
            first("once", "2026-02-01T15:30", now, berlin),
            "2026-02-01T14:30:00.000Z"
        );
        // Bare date: UTC midnight, as the original.
        assert_eq!(
            first("once", "2026-02-01", now, berlin),
            "2026-02-01T00:00:00.000Z"
        );
        // In the DST gap (02:30 does not exist on 2026-03-29 in Berlin): moved forward.
        assert_eq!(
            first("once", "2026-03-29T02:30:00", now, berlin),
            "2026-03-29T01:30:00.000Z"
        );
        // Past values are kept: the task fires at once.
        assert_eq!(
            first("once", "2020-01-01T00:00:00Z", now, berlin),
            "2020-01-01T00:00:00.000Z"
        );
        for bad in [
            "not-a-date",
            "Feb 1, 2026 3:30 PM",
            "2026-13-01",
            "2026-02-01T25:00:00",
            "1700000000000",
        ] {
            assert!(
                matches!(parse_once(bad), Err(ScheduleError::BadOnce(_))),
                "{bad:?}"
            );
        }
        let once = parse_schedule("once", "2026-02-01T00:00:00Z").unwrap();
        assert_eq!(once.after_run(utc(now), berlin), None);
    }

    #[test]
    fn unknown_type_is_rejected() {
        assert_eq!(
            parse_schedule("weekly", "x").unwrap_err(),
            ScheduleError::UnknownType("weekly".into())
        );
    }
}
