//! The one timestamp format the store and every cursor use (contract §2.7).
//!
//! All ordering in the database is lexicographic TEXT comparison, so every timestamp we write must be
//! byte-identical in shape to the original's: UTC, exactly three fractional digits, a literal `Z`.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// `''` sorts before every timestamp and means "before everything" for cursors (contract §2.7).
pub const BEFORE_EVERYTHING: &str = "";

/// Formats an instant as `YYYY-MM-DDTHH:MM:SS.mmmZ` (24 characters).
pub fn iso(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The current wall-clock time in the store format.
pub fn now_iso() -> String {
    iso(Utc::now())
}

/// Formats epoch milliseconds; `None` when the value is outside chrono's range.
pub fn iso_from_epoch_ms(ms: i64) -> Option<String> {
    Utc.timestamp_millis_opt(ms).single().map(iso)
}

/// Parses a stored timestamp (any RFC 3339 form) back into an instant.
pub fn parse_iso(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// True when `text` has exactly the store shape, so lexicographic order equals time order.
pub fn is_store_format(text: &str) -> bool {
    text.len() == 24 && text.ends_with('Z') && parse_iso(text).is_some_and(|t| iso(t) == text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis_and_z() {
        assert_eq!(
            iso_from_epoch_ms(1_770_714_010_000).as_deref(),
            Some("2026-02-10T09:00:10.000Z")
        );
        assert_eq!(
            iso_from_epoch_ms(5).as_deref(),
            Some("1970-01-01T00:00:00.005Z")
        );
    }

    #[test]
    fn store_format_is_exact() {
        assert!(is_store_format("2026-02-10T09:00:10.000Z"));
        assert!(!is_store_format("2026-02-10T09:00:10Z"));
        assert!(!is_store_format("2026-02-10T09:00:10.000+00:00"));
        assert!(!is_store_format(""));
    }
}
