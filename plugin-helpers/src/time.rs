//! Calendar arithmetic and RFC 3339 timestamps, shared by the host and plugins so both
//! read and write times the same way (no date crate needed on either side), and the
//! Europe/Helsinki calendar day (Finland follows the EU rule: UTC+2, and UTC+3 from
//! 01:00 UTC on the last Sunday of March to 01:00 UTC on the last Sunday of October),
//! for same-day refund windows.

const MS_PER_DAY: i64 = 86_400_000;

/// A calendar date (proleptic Gregorian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: i64,
    pub month: u32,
    pub day: u32,
}

/// Days since 1970-01-01 of a date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (i64::from(month) + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + i64::from(day) - 1;
    era * 146_097 + year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year - 719_468
}

/// The date `days` after 1970-01-01.
pub fn civil_from_days(days: i64) -> Date {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    Date { year: year_of_era + era * 400 + i64::from(month <= 2), month, day }
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds (`2026-11-22T10:15:00.250Z`).
pub fn format_rfc3339_ms(unix_ms: i64) -> String {
    let date = civil_from_days(unix_ms.div_euclid(MS_PER_DAY));
    let in_day = unix_ms.rem_euclid(MS_PER_DAY);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        date.year,
        date.month,
        date.day,
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// Parses RFC 3339 (`2026-11-22T10:15:00Z`, `…+02:00`, fractions allowed) into Unix
/// milliseconds.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.chars().take_while(char::is_ascii_digit).count();
        let padded: String = fraction[..digits].chars().chain(std::iter::repeat('0')).take(3).collect();
        millis = padded.parse::<i64>().ok()?;
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            sign * (rest.get(1..3)?.parse::<i64>().ok()? * 60 + rest.get(4..6)?.parse::<i64>().ok()?)
        }
    };
    let days = days_from_civil(year, month as u32, day as u32);
    Some(days * MS_PER_DAY + hour * 3_600_000 + minute * 60_000 + second * 1000 + millis - offset_minutes * 60_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_zones_and_fractions() {
        let base = parse_rfc3339_ms("2026-11-22T10:15:00Z").unwrap();
        assert_eq!(base, 1_795_342_500_000);
        assert_eq!(parse_rfc3339_ms("2026-11-22T12:15:00+02:00"), Some(base));
        assert_eq!(parse_rfc3339_ms("2026-11-22T10:15:00.250Z"), Some(base + 250));
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
        assert_eq!(parse_rfc3339_ms("2026-13-22T10:15:00Z"), None);
    }

    #[test]
    fn formats_and_round_trips() {
        let at = 1_795_342_500_250;
        assert_eq!(format_rfc3339_ms(at), "2026-11-22T10:15:00.250Z");
        assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(at)), Some(at));
        for days in [-1000, 0, 20_000, 20_779] {
            let date = civil_from_days(days);
            assert_eq!(days_from_civil(date.year, date.month, date.day), days);
        }
    }
}

const MS_PER_HOUR: i64 = 3_600_000;

/// The calendar date in Europe/Helsinki at `unix_ms`.
pub fn helsinki_date(unix_ms: i64) -> Date {
    let utc_date = civil_from_days(unix_ms.div_euclid(MS_PER_DAY));
    let offset_hours = if in_summer_time(unix_ms, utc_date.year) { 3 } else { 2 };
    civil_from_days((unix_ms + offset_hours * MS_PER_HOUR).div_euclid(MS_PER_DAY))
}

/// `true` when both instants fall on the same Helsinki calendar day.
pub fn same_helsinki_day(a_unix_ms: i64, b_unix_ms: i64) -> bool {
    helsinki_date(a_unix_ms) == helsinki_date(b_unix_ms)
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
mod helsinki_tests {
    use super::*;

    fn utc_ms(year: i64, month: u32, day: u32, hour: i64, minute: i64) -> i64 {
        days_from_civil(year, month, day) * MS_PER_DAY + hour * MS_PER_HOUR + minute * 60_000
    }

    #[test]
    fn winter_offset_is_two_hours() {
        // 2026-01-15 21:59 UTC is 23:59 in Helsinki; 22:00 UTC is the next day.
        assert_eq!(helsinki_date(utc_ms(2026, 1, 15, 21, 59)), Date { year: 2026, month: 1, day: 15 });
        assert_eq!(helsinki_date(utc_ms(2026, 1, 15, 22, 0)), Date { year: 2026, month: 1, day: 16 });
    }

    #[test]
    fn summer_offset_is_three_hours() {
        assert_eq!(helsinki_date(utc_ms(2026, 7, 1, 20, 59)), Date { year: 2026, month: 7, day: 1 });
        assert_eq!(helsinki_date(utc_ms(2026, 7, 1, 21, 0)), Date { year: 2026, month: 7, day: 2 });
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
        assert!(same_helsinki_day(utc_ms(2026, 11, 22, 0, 0), utc_ms(2026, 11, 22, 21, 59)));
        assert!(!same_helsinki_day(utc_ms(2026, 11, 22, 21, 59), utc_ms(2026, 11, 22, 22, 0)));
    }
}
