//! Do not disturb: rooms this device's user muted, and a daily quiet-hours
//! window (in this machine's zone). They hold back notifications, never
//! messages: a mention in a muted room, or during quiet hours, is recorded in
//! the inbox as *held* and not announced on the event stream; it is announced
//! (and no longer held) when the room is unmuted or the quiet hours end.
//! Settings are this device's (`chat-settings-1`).

use chrono::Timelike;

use super::{inbox::InboxRow, *};

const MUTE_PREFIX: &str = "mute/";
const QUIET: &str = "quiet";

/// A daily window, minutes after local midnight; `end` before `start` wraps
/// past midnight (22:00–07:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietHours {
    pub start_min: u16,
    pub end_min: u16,
}

impl QuietHours {
    /// `HH:MM-HH:MM`.
    pub fn parse(text: &str) -> Option<Self> {
        let minutes = |t: &str| {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (start, end) = text.split_once('-')?;
        let (start_min, end_min) = (minutes(start)?, minutes(end)?);
        (start_min != end_min).then_some(Self { start_min, end_min })
    }

    fn contains(&self, minute: u16) -> bool {
        if self.start_min < self.end_min {
            (self.start_min..self.end_min).contains(&minute)
        } else {
            minute >= self.start_min || minute < self.end_min
        }
    }
}

impl std::fmt::Display for QuietHours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{}", hm(self.start_min), hm(self.end_min))
    }
}

/// A do-not-disturb change.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quiet {
    Mute { space: SpaceId, on: bool },
    Hours(Option<QuietHours>),
}

/// This device's do-not-disturb settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QuietView {
    pub muted: Vec<SpaceId>,
    pub quiet_hours: Option<String>,
    /// Whether notifications are held back right now (quiet hours).
    pub quiet_now: bool,
    /// Notifications held back, waiting.
    pub held: usize,
}

/// The do-not-disturb state the core keeps in memory.
#[derive(Debug, Default)]
pub(crate) struct Dnd {
    pub(crate) muted: BTreeSet<SpaceId>,
    pub(crate) hours: Option<QuietHours>,
    /// Held inbox rows: seq → the room.
    pub(crate) held: BTreeMap<u64, SpaceId>,
}

impl Dnd {
    /// Whether a notification from `space` is held back at `now_ms`.
    pub(crate) fn holds(&self, space: &SpaceId, now_ms: i64) -> bool {
        self.muted.contains(space) || self.quiet_at(now_ms)
    }

    fn quiet_at(&self, now_ms: i64) -> bool {
        let Some(hours) = self.hours else { return false };
        let Some(utc) = chrono::DateTime::from_timestamp_millis(now_ms) else {
            return false;
        };
        let local = utc.with_timezone(&crate::clock::local_zone());
        hours.contains((local.hour() * 60 + local.minute()) as u16)
    }

    /// Whether some held notification may be announced now.
    pub(crate) fn release_due(&self, now_ms: i64) -> bool {
        !self.held.is_empty() && !self.quiet_at(now_ms) && self.held.values().any(|s| !self.muted.contains(s))
    }
}

impl Core {
    /// Reads the settings and the held notifications at start-up.
    pub(super) fn load_dnd(&mut self) -> store::Result<()> {
        let mut dnd = Dnd::default();
        for (key, value) in self.store.chat_settings()? {
            if let Some(space) = key.strip_prefix(MUTE_PREFIX).and_then(|s| s.parse().ok()) {
                dnd.muted.insert(space);
            } else if key == QUIET {
                dnd.hours = postcard::from_bytes(&value).ok();
            }
        }
        for (seq, bytes) in self.store.inbox(MAX_INBOX_LIMIT)? {
            if let Ok(InboxRow::Chat(row)) = postcard::from_bytes::<InboxRow>(&bytes)
                && row.held
            {
                dnd.held.insert(seq, row.space);
            }
        }
        self.dnd = dnd;
        Ok(())
    }

    /// Mutes or unmutes a room, or sets the quiet hours.
    pub(super) fn set_quiet(&mut self, tx: &mut Txn, change: Quiet) -> store::Result<Result<QuietView>> {
        match change {
            Quiet::Mute { space, on } => {
                if !self.spaces.contains_key(&space) {
                    return Ok(Err(Error::UnknownSpace(space)));
                }
                let key = format!("{MUTE_PREFIX}{space}");
                if on {
                    tx.put_chat_setting(&key, &[1])?;
                    self.dnd.muted.insert(space);
                } else {
                    tx.remove_chat_setting(&key)?;
                    self.dnd.muted.remove(&space);
                }
            }
            Quiet::Hours(hours) => {
                match hours {
                    Some(h) => tx.put_chat_setting(QUIET, &postcard::to_stdvec(&h).expect("hours serialize"))?,
                    None => tx.remove_chat_setting(QUIET)?,
                }
                self.dnd.hours = hours;
            }
        }
        Ok(Ok(self.quiet_view()))
    }

    pub(super) fn quiet_view(&self) -> QuietView {
        QuietView {
            muted: self.dnd.muted.iter().copied().collect(),
            quiet_hours: self.dnd.hours.map(|h| h.to_string()),
            quiet_now: self.dnd.quiet_at(crate::clock::now_ms() as i64),
            held: self.dnd.held.len(),
        }
    }

    /// Announces the held notifications that may be now (their room is not
    /// muted, the quiet hours are over), no longer held.
    pub(super) fn release_notifications(
        &mut self,
        tx: &mut Txn,
        now_ms: i64,
        effects: &mut Effects,
    ) -> store::Result<()> {
        if !self.dnd.release_due(now_ms) {
            return Ok(());
        }
        let due: Vec<u64> = self
            .dnd
            .held
            .iter()
            .filter(|(_, space)| !self.dnd.muted.contains(space))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in due {
            self.dnd.held.remove(&seq);
            let Some(bytes) = tx.inbox_row(seq)? else { continue };
            let Ok(InboxRow::Chat(mut row)) = postcard::from_bytes::<InboxRow>(&bytes) else {
                continue;
            };
            row.held = false;
            let row = InboxRow::Chat(row);
            tx.put_inbox_row(seq, &postcard::to_stdvec(&row).expect("inbox rows serialize"))?;
            let entry = self.entry(seq, row);
            effects.events.push(Event::Inbox { entry });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_and_wrap_past_midnight() {
        let night = QuietHours::parse("22:00-07:00").unwrap();
        assert!(night.contains(23 * 60) && night.contains(60) && !night.contains(12 * 60));
        let lunch = QuietHours::parse("12:00-13:30").unwrap();
        assert!(lunch.contains(12 * 60 + 59) && !lunch.contains(13 * 60 + 30));
        assert_eq!(night.to_string(), "22:00-07:00");
        for bad in ["22:00", "25:00-07:00", "07:00-07:00", "ab-cd"] {
            assert_eq!(QuietHours::parse(bad), None, "{bad}");
        }
    }
}
