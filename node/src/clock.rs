//! Wall-clock time, read in one place. Times are claims and display aids here:
//! nothing is ordered by them.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, from milliseconds since the Unix epoch.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// This machine's time zone: `$TZ`, `/etc/timezone`, or where `/etc/localtime`
/// points; UTC when none names an IANA zone. Floating and all-day events are
/// read in it (an all-day reminder fires the day before, here).
pub fn local_zone() -> chrono_tz::Tz {
    let parse = |name: &str| name.trim().trim_start_matches(':').parse::<chrono_tz::Tz>().ok();
    let from_env = || std::env::var("TZ").ok().and_then(|t| parse(&t));
    let from_file = || std::fs::read_to_string("/etc/timezone").ok().and_then(|t| parse(&t));
    let from_link = || {
        let target = std::fs::read_link("/etc/localtime").ok()?;
        let target = target.to_string_lossy();
        parse(target.split_once("zoneinfo/")?.1)
    };
    from_env()
        .or_else(from_file)
        .or_else(from_link)
        .unwrap_or(chrono_tz::UTC)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(1_795_269_845_000), "2026-11-21 14:04:05");
        assert_eq!(super::utc(-1), "1969-12-31 23:59:59");
    }
}
