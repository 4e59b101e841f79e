//! The calendar date in Europe/Helsinki, for Smartum's same-day refund window.
//!
//! Finland follows the EU rule: UTC+2, and UTC+3 from 01:00 UTC on the last Sunday of
//! March to 01:00 UTC on the last Sunday of October.

pub use posbridge_plugin_api::time::Date;
use posbridge_plugin_api::time::{civil_from_days, days_from_civil};

const MS_PER_DAY: i64 = 86_400_000;
const MS_PER_HOUR: i64 = 3_600_000;

/// The Helsinki calendar date at `unix_ms`.
pub fn date_at(unix_ms: i64) -> Date {
    let utc_date = civil_from_days(unix_ms.div_euclid(MS_PER_DAY));
    let offset_hours = if in_summer_time(unix_ms, utc_date.year) { 3 } else { 2 };
    civil_from_days((unix_ms + offset_hours * MS_PER_HOUR).div_euclid(MS_PER_DAY))
}

/// `true` when both instants fall on the same Helsinki calendar day.
pub fn same_day(a_unix_ms: i64, b_unix_ms: i64) -> bool {
    date_at(a_unix_ms) == date_at(b_unix_ms)
}

fn in_summer_time(unix_ms: i64, year: i64) -> bool {
    let starts = last_sunday_ms(year, 3) + MS_PER_HOUR;
    let ends = last_sunday_ms(year, 10) + MS_PER_HOUR;
    (starts..ends).contains(&unix_ms)
}

/// Midnight UTC of the last Sunday of `month` (which has 31 days: March, October).
fn last_sunday_ms(year: i64, month: u32) -> i64 {
    let last_day = days_from_civil(year, month, 31);
    // 1970-01-01 was a Thursday (weekday 4, with Sunday = 0).
    let weekday = (last_day + 4).rem_euclid(7);
    (last_day - weekday) * MS_PER_DAY
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc_ms(year: i64, month: u32, day: u32, hour: i64, minute: i64) -> i64 {
        days_from_civil(year, month, day) * MS_PER_DAY + hour * MS_PER_HOUR + minute * 60_000
    }

    #[test]
    fn winter_offset_is_two_hours() {
        // 2026-01-15 21:59 UTC is 23:59 in Helsinki; 22:00 UTC is the next day.
        assert_eq!(date_at(utc_ms(2026, 1, 15, 21, 59)), Date { year: 2026, month: 1, day: 15 });
        assert_eq!(date_at(utc_ms(2026, 1, 15, 22, 0)), Date { year: 2026, month: 1, day: 16 });
    }

    #[test]
    fn summer_offset_is_three_hours() {
        assert_eq!(date_at(utc_ms(2026, 7, 1, 20, 59)), Date { year: 2026, month: 7, day: 1 });
        assert_eq!(date_at(utc_ms(2026, 7, 1, 21, 0)), Date { year: 2026, month: 7, day: 2 });
    }

    #[test]
    fn transitions_follow_the_eu_rule() {
        // 2026: summer time from Sunday 29 March 01:00 UTC to Sunday 25 October 01:00 UTC.
        assert!(!in_summer_time(utc_ms(2026, 3, 29, 0, 59), 2026));
        assert!(in_summer_time(utc_ms(2026, 3, 29, 1, 0), 2026));
        assert!(in_summer_time(utc_ms(2026, 10, 25, 0, 59), 2026));
        assert!(!in_summer_time(utc_ms(2026, 10, 25, 1, 0), 2026));
    }

    #[test]
    fn same_day_follows_helsinki_midnight() {
        assert!(same_day(utc_ms(2026, 11, 22, 0, 0), utc_ms(2026, 11, 22, 21, 59)));
        assert!(!same_day(utc_ms(2026, 11, 22, 21, 59), utc_ms(2026, 11, 22, 22, 0)));
    }
}
