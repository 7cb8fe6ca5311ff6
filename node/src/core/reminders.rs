//! Reminders: each fires once per user, not once per device.
//!
//! Every device of a user computes the same due reminders from the calendars
//! (events the user organises or was invited to and did not decline, each
//! occurrence, each reminder offset; times in the event's zone, so across
//! daylight-saving changes a reminder keeps its distance to the local start).
//! A device fires a reminder only when no device of the user *claimed* it: it
//! records a claim (`reminders-1`) before announcing it, and sends the claim
//! to its sibling devices that are connected; siblings exchange their recent
//! claims whenever they connect. The user's devices wait their turn: the n-th
//! (by device id) fires `n × SIBLING_STEP_MS` after the due time, so with the
//! devices connected one fires and the others hear its claim first.
//!
//! Guarantees: never twice on one device (the claim is durable before the
//! announcement, so a restart does not fire again); once per user while the
//! user's devices are connected. Across a partition between the user's own
//! devices it is at most once per device (design E6: no asynchronous system
//! can do better). A device that was down catches up on what came due in the
//! last `CATCH_UP_MS`, delivered late and marked late, unless a sibling
//! claimed it meanwhile.

use chrono::{DateTime, Duration, Utc};

use super::{
    calendar::{calendar_of, takes_part},
    inbox::ReminderRow,
    *,
};
pub(super) use crate::sync::Claim;

/// How far back a device that was down catches up.
pub const CATCH_UP_MS: i64 = 7 * 24 * 3_600_000;
/// How long claims are kept: past the catch-up window, a claim stops nothing.
const KEEP_CLAIMS_MS: i64 = CATCH_UP_MS + 24 * 3_600_000;
/// A reminder delivered later than this after it was due is marked late.
pub const LATE_AFTER_MS: i64 = 60_000;
/// The wait between one sibling device's turn and the next.
pub const SIBLING_STEP_MS: i64 = 3_000;
/// Turns beyond this are not waited for (a user with many devices).
const MAX_TURN: i64 = 9;
/// After a start, late reminders wait this long: the siblings that fired
/// them meanwhile say so when they connect.
const STARTUP_GRACE_MS: i64 = 10_000;
/// How far back a scan looks after a peer's calendar change arrived: a
/// reminder that came due meanwhile (an invitation that arrived late) is
/// delivered late; older ones are not (a new device does not replay).
pub(super) const RESCAN_MS: i64 = 3_600_000;
/// Most reminders one event has (more are ignored).
pub const MAX_REMINDERS_PER_EVENT: usize = 16;
/// The scan mark in `reminders-1`.
const SCANNED: &str = "~scanned";
/// How stale the stored scan mark may get before a write refreshes it (a
/// crash then re-scans at most this much; claims keep that from firing twice).
const MARK_EVERY_MS: i64 = 60_000;

/// A claim as stored: who fired it, when, and whether late.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ClaimRow {
    device: DeviceId,
    fired_at_ms: i64,
    late: bool,
}

/// A reminder that came due.
struct Due {
    space: SpaceId,
    event: String,
    key: String,
    minutes: u32,
    due_ms: i64,
    starts_ms: i64,
}

impl Due {
    fn claim_key(&self) -> String {
        claim_key(&self.space, &self.event, &self.key, self.minutes)
    }
}

fn claim_key(space: &SpaceId, event: &str, key: &str, minutes: u32) -> String {
    format!("{space}/{event}/{key}/{minutes}")
}

impl Core {
    /// Whether the clock's tick has work that needs a write: a reminder due
    /// and not claimed, or a stale scan mark. Most ticks have none and cost
    /// no transaction.
    pub(super) fn remind_needed(&mut self, now_ms: i64) -> bool {
        let scanned = match self.reminder_mark {
            Some(mark) => mark,
            None => {
                let stored = self.store.claim(SCANNED).ok().flatten();
                let mark = stored.and_then(|b| b.try_into().ok()).map(i64::from_le_bytes);
                // A first run starts now: a new device does not replay the past.
                let mark = mark.unwrap_or(now_ms);
                self.reminder_mark = Some(mark);
                mark
            }
        };
        let since = self.scan_since(scanned, now_ms);
        now_ms - scanned > MARK_EVERY_MS + (MAX_TURN + 1) * SIBLING_STEP_MS
            || self
                .due_safely(since, now_ms)
                .iter()
                .any(|d| self.store.claim(&d.claim_key()).ok().flatten().is_none())
    }

    /// Fires the reminders that came due since the last look and no device of
    /// this user claimed. Runs when [`Core::remind_needed`] says so.
    pub(super) fn remind(&mut self, tx: &mut Txn, now_ms: i64, effects: &mut Effects) -> store::Result<()> {
        let scanned = tx
            .claim(SCANNED)?
            .and_then(|b| b.try_into().ok())
            .map(i64::from_le_bytes);
        let since = self.scan_since(scanned.unwrap_or(now_ms), now_ms);
        self.reminder_rescan = false;
        let turn = self.turn();
        let starting = now_ms - self.started_ms < STARTUP_GRACE_MS;
        let mut fired = Vec::new();
        // The earliest due time left for a later tick: the mark stays before it.
        let mut deferred: Option<i64> = None;
        for due in self.due_safely(since, now_ms) {
            let key = due.claim_key();
            if tx.claim(&key)?.is_some() {
                continue;
            }
            // Not this device's turn yet (a sibling may fire it first), or
            // just started (a sibling may have fired it while this was down).
            let late = now_ms - due.due_ms > LATE_AFTER_MS;
            if (late && starting) || (!late && now_ms < due.due_ms + turn * SIBLING_STEP_MS) {
                deferred = Some(deferred.map_or(due.due_ms, |d| d.min(due.due_ms)));
                continue;
            }
            let row = ClaimRow {
                device: self.me,
                fired_at_ms: now_ms,
                late,
            };
            tx.put_claim(&key, &postcard::to_stdvec(&row).expect("claims serialize"))?;
            fired.push(Claim {
                space: due.space,
                event: due.event.clone(),
                key: due.key.clone(),
                minutes: due.minutes,
                fired_at_ms: now_ms,
            });
            let row = ReminderRow {
                space: due.space,
                event: due.event,
                key: due.key,
                minutes: due.minutes,
                starts_ms: due.starts_ms,
                due_ms: due.due_ms,
                at_ms: now_ms,
                late,
            };
            self.record_reminder(tx, row, effects)?;
        }
        // Look again at what is still within the turns, or deferred.
        let mark = (now_ms - (MAX_TURN + 1) * SIBLING_STEP_MS).min(deferred.map_or(i64::MAX, |d| d - 1));
        if scanned.is_none_or(|s| s < mark) {
            tx.put_claim(SCANNED, &mark.to_le_bytes())?;
            self.reminder_mark = Some(mark);
        }
        for claims in fired.chunks(crate::sync::MAX_CLAIMS) {
            effects.events.push(Event::Claims {
                to: self.siblings(),
                claims: claims.to_vec(),
            });
        }
        Ok(())
    }

    /// Where a scan starts: the mark, at most the catch-up window back, and
    /// an hour back after a peer's calendar change arrived.
    fn scan_since(&self, mark: i64, now_ms: i64) -> i64 {
        let since = mark.max(now_ms - CATCH_UP_MS);
        if self.reminder_rescan {
            since.min(now_ms - RESCAN_MS)
        } else {
            since
        }
    }

    /// [`Core::due`], where a panic in the expansion (a bug reached by a
    /// peer's value) costs this tick's reminders, never the node.
    fn due_safely(&self, since: i64, now: i64) -> Vec<Due> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.due(since, now))).unwrap_or_else(|_| {
            warn!("expanding the calendars for reminders panicked; skipped");
            Vec::new()
        })
    }

    /// Reminders of this user due in `(since, now]`.
    fn due(&self, since: i64, now: i64) -> Vec<Due> {
        let me = self.keys.user_id().to_string();
        let (Some(from), Some(to)) = (
            DateTime::<Utc>::from_timestamp_millis(since),
            DateTime::<Utc>::from_timestamp_millis(now),
        ) else {
            return Vec::new();
        };
        // Floating and all-day times are this machine's local times.
        let local = crate::clock::local_zone();
        let mut out = Vec::new();
        for (space_id, s) in self.spaces.iter().filter(|(_, s)| s.state.kind == SpaceKind::Calendar) {
            let Some(cal) = calendar_of(s) else {
                continue;
            };
            for event in cal.events() {
                let reminders: Vec<u32> = event.reminders.iter().copied().take(MAX_REMINDERS_PER_EVENT).collect();
                let Some(&longest) = reminders.last() else {
                    continue;
                };
                let Some(when) = event.when.filter(|_| takes_part(&event, &me)) else {
                    continue;
                };
                // Occurrences starting within the reach of the longest reminder.
                let zone = when.zone().unwrap_or(local);
                let (occurrences, _) = event.occurrences(
                    from,
                    to + Duration::minutes(longest.into()) + Duration::seconds(1),
                    zone,
                );
                for o in occurrences {
                    for &minutes in &reminders {
                        let due_ms = (o.start - Duration::minutes(minutes.into())).timestamp_millis();
                        if due_ms > since && due_ms <= now {
                            out.push(Due {
                                space: *space_id,
                                event: event.id.clone(),
                                key: o.key.clone(),
                                minutes,
                                due_ms,
                                starts_ms: o.start.timestamp_millis(),
                            });
                        }
                    }
                }
            }
        }
        out
    }

    /// This device's turn among its user's devices (by device id).
    fn turn(&self) -> i64 {
        let mut devices: Vec<DeviceId> = self.siblings();
        devices.push(self.me);
        devices.sort();
        let turn = devices.iter().position(|d| *d == self.me).unwrap_or(0);
        (turn as i64).min(MAX_TURN)
    }

    /// The other devices of this device's user, as far as this device knows.
    pub(super) fn siblings(&self) -> Vec<DeviceId> {
        let user = self.keys.user_id();
        let revoked = |d: &DeviceId| self.devices.get(d).is_some_and(|r| r.revoked);
        let mut out: Vec<DeviceId> = self
            .devices
            .values()
            .filter(|r| r.cert.user == user)
            .map(|r| r.cert.device)
            .chain(self.certs.values().filter(|c| c.user == user).map(|c| c.device))
            .filter(|d| *d != self.me && !revoked(d))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Claims a sibling device sent: recorded, so this device does not fire
    /// them too. Claims from anyone else are ignored.
    pub(super) fn take_claims(&mut self, tx: &mut Txn, from: DeviceId, claims: Vec<Claim>) -> store::Result<()> {
        if !self.siblings().contains(&from) {
            return Ok(());
        }
        let now_ms = crate::clock::now_ms() as i64;
        for c in claims {
            let sane = c.event.len() <= outpost_crdt::calendar::rules::MAX_ID_BYTES
                && c.key.len() <= 32
                && (now_ms - KEEP_CLAIMS_MS..=now_ms + KEEP_CLAIMS_MS).contains(&c.fired_at_ms);
            if !sane {
                continue;
            }
            let key = claim_key(&c.space, &c.event, &c.key, c.minutes);
            if tx.claim(&key)?.is_none() {
                let row = ClaimRow {
                    device: from,
                    fired_at_ms: c.fired_at_ms,
                    late: false,
                };
                tx.put_claim(&key, &postcard::to_stdvec(&row).expect("claims serialize"))?;
            }
        }
        Ok(())
    }

    /// Claims fired in the catch-up window, for a sibling that connects; old
    /// ones are dropped from the store on the way.
    pub(super) fn recent_claims(&self, tx: &mut Txn, peer: DeviceId, now_ms: i64) -> store::Result<Vec<Claim>> {
        let mut out = Vec::new();
        let siblings = self.siblings().contains(&peer);
        for (key, bytes) in self.store.claims()? {
            let Ok(row) = postcard::from_bytes::<ClaimRow>(&bytes) else {
                continue;
            };
            if now_ms.saturating_sub(row.fired_at_ms) > KEEP_CLAIMS_MS {
                tx.remove_claim(&key)?;
                continue;
            }
            let mut parts = key.splitn(4, '/');
            let (Some(space), Some(event), Some(occurrence), Some(minutes)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if let (true, Ok(space), Ok(minutes)) = (siblings, space.parse(), minutes.parse()) {
                out.push(Claim {
                    space,
                    event: event.to_string(),
                    key: occurrence.to_string(),
                    minutes,
                    fired_at_ms: row.fired_at_ms,
                });
            }
        }
        out.truncate(crate::sync::MAX_CLAIMS);
        Ok(out)
    }
}
