//! How results print for people and for machines.

use outpost_node::{
    api::StatusResponse,
    clock::utc,
    control::{History, Posting, Role},
    core::{DeviceView, FileStatus, InboxEntry, Members, MessageView, OrgView, RoomView, SpaceSummary, SyncState},
};

pub(crate) fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Percent-encodes a query value (UTF-8 bytes; unreserved characters stay).
pub(crate) fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) fn json_line<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

pub(crate) fn inbox_entry(e: &InboxEntry) {
    if let Some(r) = &e.reminder {
        let title = e.context.as_deref().unwrap_or("(an event no longer there)");
        let place = e.space_name.as_deref().unwrap_or("a calendar");
        let late = if r.late { "  (late: this device was off)" } else { "" };
        println!(
            "{}  reminder: {title} starts {} ({} min notice, {place}){late}\n    {}",
            utc(e.at_ms),
            r.starts,
            r.minutes,
            r.occurrence
        );
        return;
    }
    if let Some(id) = &e.message {
        let place = e.space_name.as_deref().unwrap_or("a room");
        let place = if e.held {
            format!("{place}, held back")
        } else {
            place.to_string()
        };
        let context = e.context.as_deref().unwrap_or("(retracted or not here yet)");
        let how = if e.kind == "all" {
            "mentioned everyone"
        } else {
            "mentioned you"
        };
        println!(
            "{}  {} {how} in {place} ({}) [{id}]\n    {context}",
            utc(e.at_ms),
            e.by.fmt_short(),
            e.space.fmt_short()
        );
        return;
    }
    let place = e.space_name.as_deref().unwrap_or("(a document)");
    let context = e.context.as_deref().unwrap_or("(the mention has been edited away)");
    println!(
        "{}  {} mentioned you in {place} ({})\n    {context}",
        utc(e.at_ms),
        e.by.fmt_short(),
        e.space.fmt_short()
    );
}

/// One message: `TIME  AUTHOR  TEXT  [ID]`, then its reply target, earlier
/// texts and reactions, indented.
pub(crate) fn message(m: &MessageView) {
    let text = if let Some(r) = &m.retracted {
        format!("(retracted by {} at {})", r.by.fmt_short(), utc(r.at_ms))
    } else if m.missing {
        "(its text has not reached this device yet)".into()
    } else if m.history.is_empty() {
        m.text.clone()
    } else {
        format!("{}  (edited)", m.text)
    };
    println!("{}  {}  {text}  [{}]", utc(m.sent_at_ms), m.author.fmt_short(), m.id);
    if let Some(target) = &m.reply_to {
        println!("    ↳ in reply to [{target}]");
    }
    if m.retracted.is_none() {
        for earlier in &m.history {
            let was = earlier.text.as_deref().unwrap_or("(not here)");
            println!("    was ({}): {was}", utc(earlier.at_ms));
        }
    }
    if let Some(f) = &m.file {
        println!("    file: {} ({}) [{}]", f.name, size(f.size), f.id);
    }
    if !m.read_by.is_empty() {
        let users: Vec<String> = m.read_by.iter().map(|u| u.fmt_short().to_string()).collect();
        println!("    read by {}", users.join(", "));
    }
    if !m.reactions.is_empty() {
        let line: Vec<String> = m
            .reactions
            .iter()
            .map(|r| format!("{} {}", r.emoji, r.users.len()))
            .collect();
        println!("    {}", line.join("  "));
    }
}

/// A byte count for people: 1.5 MiB.
pub(crate) fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} bytes"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// Where a file stands (`file show`).
pub(crate) fn file(f: &FileStatus) {
    let state = match (f.complete, f.progress) {
        (true, _) => "here".to_string(),
        (false, Some(p)) if p.total > 0 => format!("downloading, {}%", p.have * 100 / p.total),
        (false, _) => "not here (`outpost file get` fetches it)".to_string(),
    };
    println!("{}  {}  {}  room {}", f.id, f.name, size(f.size), f.space.fmt_short());
    println!("    {state}");
}

/// A room's settings, announcement and pinned messages.
pub(crate) fn room(r: &RoomView) {
    println!("topic: {}", r.topic.as_deref().unwrap_or("(none)"));
    if let Some(w) = &r.welcome {
        println!("welcome: {w}");
    }
    match &r.announcement {
        Some(a) => {
            println!("announcement:");
            message(a);
        }
        None => println!("announcement: (none)"),
    }
    if !r.pinned.is_empty() {
        println!("pinned:");
        r.pinned.iter().for_each(message);
    }
    println!("authors may retract for {} s", r.retract_window_s);
}

/// One line of `chat list`.
pub(crate) fn space_line(s: &SpaceSummary) {
    let direct = s.direct.map(|u| format!("direct: {}", u.fmt_short()));
    let name = direct.as_deref().or(s.name.as_deref()).unwrap_or("(not readable here)");
    let history = match s.history {
        History::Shared => "",
        History::FromJoin => "  (history from join)",
    };
    let posting = match s.posting {
        Posting::Writers => "",
        Posting::Admins => "  (announcement room)",
    };
    let department = s
        .department
        .as_deref()
        .map(|d| format!("  (department room: {d})"))
        .unwrap_or_default();
    let mut unread = match s.unread {
        Some(n) if n > 0 => format!("  ({n} unread)"),
        _ => String::new(),
    };
    if s.muted {
        unread.push_str("  (muted)");
    }
    println!(
        "{}  {}  {} members{history}{posting}{department}{unread}",
        s.space,
        name,
        s.members.len()
    );
}

pub(crate) fn status(s: &StatusResponse) {
    println!("device {}", s.device_id);
    if s.anchor {
        println!("  serving as an anchor (relay and rendezvous)");
    }
    for a in &s.listen {
        println!("  listening {a}");
    }
    for a in &s.anchors {
        println!("  using anchor {}", a.fmt_short());
    }
    println!("peers: {}", s.peers.len());
    for p in &s.peers {
        println!("  {}  {:<7} {}", p.device.fmt_short(), p.link, p.address);
    }
    if let Some(org) = &s.org {
        let name = org.name.as_deref().unwrap_or("(no version yet)");
        println!("org: {} {name:?}, policy version {}", org.org, org.version);
        org_warnings(org);
    }
    println!("spaces: {}", s.spaces.len());
    for sp in &s.spaces {
        let name = sp.name.as_deref().unwrap_or("-");
        let sync = match sp.sync {
            SyncState::Synced => "synced",
            SyncState::Syncing => "syncing",
            SyncState::Stuck => "STUCK",
        };
        let snapshots = match sp.snapshots {
            0 => String::new(),
            1 => ", 1 snapshot".to_string(),
            n => format!(", {n} snapshots"),
        };
        println!(
            "  {}  {}  {} {sync} ({} envelopes{snapshots}, {} waiting for parents, {} rejected)",
            sp.space, name, sp.role, sp.envelopes, sp.pending, sp.rejected
        );
        println!("    key epoch {}", sp.epoch.fmt_short());
        if sp.posting == Posting::Admins {
            println!("    announcement room: only owners and admins post");
        }
        if sp.history == History::FromJoin {
            println!(
                "    history: from-join ({} envelopes written before this device joined: stored and forwarded, not readable here)",
                sp.before_join
            );
        }
        if sp.ignored_ops > 0 || sp.invalid_ops > 0 {
            println!(
                "    membership: {} operations without effect (made concurrently with their author's removal or demotion), {} refused as invalid",
                sp.ignored_ops, sp.invalid_ops
            );
        }
        for device in &sp.equivocating {
            println!(
                "    WARNING: device {device} signed two different envelopes for one position (cloned or compromised?); its messages from there on are removed everywhere"
            );
        }
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

/// What is wrong with the org's policy here, if anything.
pub(crate) fn org_warnings(org: &OrgView) {
    if org.degraded {
        println!(
            "  DEGRADED: the policy expired; revocations still apply, nothing new is granted until a fresh version arrives"
        );
    }
    if let Some(fork) = &org.fork {
        println!("  WARNING: {fork}");
    }
}

/// A role as people read it.
pub(crate) fn role(role: Role) -> &'static str {
    match role {
        Role::Reader => "reader",
        Role::Writer => "writer",
        Role::Admin => "admin",
        Role::Owner => "owner",
    }
}

pub(crate) fn members(m: &Members) {
    let mut users: Vec<_> = m.members.iter().map(|x| x.user).collect();
    users.dedup();
    users.sort();
    users.dedup();
    for user in users {
        println!("user {user}");
        for member in m.members.iter().filter(|x| x.user == user) {
            let added = member.added_by.map_or("named at creation".to_string(), |by| {
                format!("added by {}", by.fmt_short())
            });
            let me = if member.me { "  (this device)" } else { "" };
            println!("  device {}  {:<6}  {added}{me}", member.device, role(member.role));
        }
    }
    for r in &m.replicators {
        println!("{r}  replicator (stores ciphertext, never reads)");
    }
}

pub(crate) fn devices(devices: &[DeviceView]) {
    for d in devices {
        println!("{}  {:<11}  since {} UTC", d.device, d.status, utc(d.since_ms as i64));
    }
}
