//! How results print for people and for machines.

use outpost_node::{
    api::StatusResponse,
    core::{MessageView, SyncState},
};

pub(crate) fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub(crate) fn json_line<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

pub(crate) fn message(m: &MessageView) {
    println!("{}  {}  {}", utc(m.sent_at_ms), m.author.fmt_short(), m.text);
}

pub(crate) fn status(s: &StatusResponse) {
    println!("device {}", s.device_id);
    for a in &s.listen {
        println!("  listening {a}");
    }
    println!("peers: {}", s.peers.len());
    for p in &s.peers {
        println!("  {}  {:<7} {}", p.device.fmt_short(), p.link, p.address);
    }
    println!("spaces: {}", s.spaces.len());
    for sp in &s.spaces {
        let name = sp.name.as_deref().unwrap_or("-");
        let sync = match sp.sync {
            SyncState::Synced => "synced",
            SyncState::Syncing => "syncing",
            SyncState::Stuck => "STUCK",
        };
        println!(
            "  {}  {}  {} {sync} ({} envelopes, {} waiting for parents, {} rejected)",
            sp.space, name, sp.role, sp.envelopes, sp.pending, sp.rejected
        );
        if let Some(problem) = &sp.key_problem {
            println!("    cannot read: {problem}");
        }
        for p in &sp.peers {
            let state = match (p.they_lack, p.we_lack) {
                (0, 0) => "synced".to_string(),
                (t, w) => format!("they lack {t}, we lack {w}"),
            };
            let when = p.last_sync_ms.map_or("never".to_string(), |ms| utc(ms as i64));
            println!("    {}  {state}  (last sync {when} UTC)", p.device.fmt_short());
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, from milliseconds since the Unix epoch.
fn utc(ms: i64) -> String {
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

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(1_795_269_845_000), "2026-11-21 14:04:05");
    }
}
