//! Schedule values and next-run computation (contract §6.1, §6.2, §6.12, §6.15), pure.
//!
//! Cron expressions are parsed and evaluated by `croner` in the configured zone (`chrono-tz`), so daylight
//! saving transitions follow croner's rules: a fixed-time job whose wall time falls into a spring-forward
//! gap runs at the first instant after the gap, and one in a fall-back overlap runs once.

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Why a schedule was refused. The task is not created (contract §6.2, §12.24).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// `schedule_type` is not `cron`, `interval` or `once`; the original created a task that never ran.
    #[error("unknown schedule type {0:?}: expected cron, interval or once")]
    UnknownType(String),
    /// The cron expression does not parse.
    #[error("invalid cron expression {value:?}: {reason}")]
    Cron { value: String, reason: String },
    /// The interval is not a positive number of milliseconds.
    #[error("invalid interval {0:?}: expected a positive number of milliseconds")]
    Interval(String),
    /// The once value is not a date-time we accept.
    #[error(
        "invalid once value {0:?}: expected an ISO date-time with or without offset (e.g. 2026-02-01T15:30:00), or a date"
    )]
    Once(String),
    /// The computed time is outside the representable range.
    #[error("schedule {0:?} yields a time out of range")]
    OutOfRange(String),
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    Cron(Box<Cron>),
    /// Milliseconds, positive.
    Interval(i64),
    /// The one instant it fires.
    Once(DateTime<Utc>),
}

/// Macros that cron-parser accepts and croner does not.
fn expand_macro(value: &str) -> &str {
    match value.trim().to_ascii_lowercase().as_str() {
        "@weekdays" => "0 0 * * 1-5",
        "@weekends" => "0 0 * * 0,6",
        "@minutely" => "* * * * *",
        "@secondly" => "* * * * * *",
        _ => value,
    }
}

/// Parses a cron expression as the original accepted it: 5 fields, or 6 with leading seconds; names,
/// ranges, steps, lists; `@daily`-style macros. Day-of-month and day-of-week combine with OR when both are
/// restricted, and Sunday is 0 or 7.
pub fn parse_cron(value: &str) -> Result<Cron, ScheduleError> {
    let expr = expand_macro(value);
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| ScheduleError::Cron {
            value: value.to_string(),
            reason: e.to_string(),
        })
}

/// JavaScript `parseInt(value, 10)`: optional leading whitespace and sign, then digits up to the first
/// non-digit (`"300000abc"` → 300000, `"3.5"` → 3). The result must be positive (contract §6.1).
pub fn parse_interval_ms(value: &str) -> Result<i64, ScheduleError> {
    let err = || ScheduleError::Interval(value.to_string());
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
        return Err(err());
    }
    let ms: i64 = digits[..end].parse().map_err(|_| err())?;
    if ms <= 0 { Err(err()) } else { Ok(ms) }
}

/// Resolves a wall-clock time in `tz` the way JavaScript's `Date` does: in a fall-back overlap the earlier
/// instant; in a spring-forward gap the offset from before the transition (so 02:30 becomes 03:30).
pub fn resolve_local(naive: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(earlier, _) => Some(earlier.with_timezone(&Utc)),
        LocalResult::None => {
            let before = naive.checked_sub_signed(TimeDelta::days(1))?;
            let offset = tz.offset_from_utc_datetime(&before).fix();
            let utc = naive
                .checked_sub_signed(TimeDelta::seconds(i64::from(offset.local_minus_utc())))?;
            Some(Utc.from_utc_datetime(&utc))
        }
    }
}

/// Parses a `once` value (contract §6.1): RFC 3339 with `Z` or an offset is that instant; an ISO date-time
/// without offset is wall time in `tz` (the host's zone); a date alone is UTC midnight. Anything else is
/// refused rather than guessed at.
pub fn parse_once(value: &str, tz: Tz) -> Result<DateTime<Utc>, ScheduleError> {
    let err = || ScheduleError::Once(value.to_string());
    let s = value.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M%:z", "%Y-%m-%dT%H:%M%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    if let Some(rest) = s.strip_suffix('Z').or_else(|| s.strip_suffix('z'))
        && let Ok(naive) = NaiveDateTime::parse_from_str(rest, "%Y-%m-%dT%H:%M")
    {
        return Ok(Utc.from_utc_datetime(&naive));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return resolve_local(naive, tz).ok_or_else(err);
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let midnight = date.and_hms_opt(0, 0, 0).ok_or_else(err)?;
        return Ok(Utc.from_utc_datetime(&midnight));
    }
    Err(err())
}

impl Schedule {
    /// Parses `schedule_type` + `schedule_value`. Unknown types are refused (contract §12.24).
    pub fn parse(schedule_type: &str, value: &str, tz: Tz) -> Result<Self, ScheduleError> {
        match schedule_type {
            "cron" => Ok(Self::Cron(Box::new(parse_cron(value)?))),
            "interval" => Ok(Self::Interval(parse_interval_ms(value)?)),
            "once" => Ok(Self::Once(parse_once(value, tz)?)),
            other => Err(ScheduleError::UnknownType(other.to_string())),
        }
    }

    /// The next cron occurrence strictly after `now`, evaluated in `tz`.
    fn next_cron(cron: &Cron, now: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        cron.find_next_occurrence(&now.with_timezone(&tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    fn after_interval(ms: i64, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        now.checked_add_signed(TimeDelta::try_milliseconds(ms)?)
    }

    /// `next_run` for a new task (contract §6.2): the next cron occurrence after now, now + interval, or the
    /// once instant (which may be in the past: then it fires at once).
    pub fn first_run(&self, now: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        match self {
            Self::Cron(cron) => Self::next_cron(cron, now, tz),
            Self::Interval(ms) => Self::after_interval(*ms, now),
            Self::Once(at) => Some(*at),
        }
    }

    /// `next_run` after a run completed at `now` (contract §6.12): cron from now (missed occurrences are
    /// skipped), interval from now (no catch-up), once never again.
    pub fn after_run(&self, now: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        match self {
            Self::Cron(cron) => Self::next_cron(cron, now, tz),
            Self::Interval(ms) => Self::after_interval(*ms, now),
            Self::Once(_) => None,
        }
    }
}
