//! Wall-clock timestamps as both daemons record them.

/// The current time, RFC 3339 in UTC (e.g. `2026-12-02T06:30:00.123456789Z`).
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
