//! The inbox: notifications for this device's user: a mention in a shared
//! document (recorded once per mention on first local apply, however late the
//! change arrives, and however often) or a calendar reminder (see
//! `reminders`). Each is announced on the event stream and kept as references
//! only: the text around a mention, an event's title, are read from the
//! document when the inbox is shown, so the store holds no plaintext.

use outpost_crdt::text::Mention;

use super::{space::actor_key, *};

/// How much of the mentioning block an inbox entry shows.
const CONTEXT_CHARS: usize = 160;
/// Most entries one inbox request returns.
pub const MAX_INBOX_LIMIT: usize = 1_000;

/// A mention waiting to be recorded at the end of the batch.
pub(super) struct NewMention {
    pub(super) space: SpaceId,
    pub(super) by: DeviceId,
    pub(super) mention: Mention,
}

/// An inbox row as stored (`inbox-2`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum InboxRow {
    Mention(MentionRow),
    Reminder(ReminderRow),
    Chat(ChatMentionRow),
}

/// A chat message that mentions this device's user (by name or `@all`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ChatMentionRow {
    pub(super) space: SpaceId,
    pub(super) by: DeviceId,
    /// The document and id of the message.
    pub(super) doc: DocId,
    pub(super) id: String,
    /// Mentioned through `@all` only.
    pub(super) all: bool,
    /// Held back (a muted room, quiet hours): not announced yet.
    pub(super) held: bool,
    /// When this device learnt of it (local time).
    pub(super) at_ms: i64,
}

/// A mention of this device's user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct MentionRow {
    space: SpaceId,
    by: DeviceId,
    /// The mention's op id (the writer's actor and the mark's counter).
    actor: ActorKey,
    counter: u64,
    /// The character the mention starts at.
    anchor: Option<(u64, ActorKey)>,
    /// When this device learnt of it (local time).
    at_ms: i64,
}

/// A reminder this device fired.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ReminderRow {
    pub(super) space: SpaceId,
    pub(super) event: String,
    /// The occurrence key.
    pub(super) key: String,
    pub(super) minutes: u32,
    /// When the occurrence starts (ms since the epoch, as computed then).
    pub(super) starts_ms: i64,
    /// When the reminder was due, and when it fired (local clock).
    pub(super) due_ms: i64,
    pub(super) at_ms: i64,
    /// Fired well after it was due (this device was down or asleep).
    pub(super) late: bool,
}

/// A notification, as `outpost inbox` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxEntry {
    pub seq: u64,
    /// What happened: `mention` (in a document or a chat message), `all` (a
    /// chat message to everyone) or `reminder` (of an event).
    pub kind: String,
    pub space: SpaceId,
    pub space_name: Option<String>,
    /// The device that wrote it.
    pub by: DeviceId,
    /// When this device learnt of it (local time, not replicated).
    pub at_ms: i64,
    /// The text of the block or message holding the mention, when it is still
    /// there; for a reminder, the event's title.
    pub context: Option<String>,
    /// The chat message (its id) that mentions the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Held back by do-not-disturb (a muted room, quiet hours): not announced
    /// on the event stream yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminder: Option<ReminderView>,
}

/// What a reminder is about.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReminderView {
    /// `EVENT@KEY`, as the agenda names it.
    pub occurrence: String,
    /// When the occurrence starts (RFC 3339, UTC).
    pub starts: String,
    pub minutes: u32,
    /// When the reminder was due (ms since the epoch).
    pub due_ms: i64,
    /// Delivered well after it was due (the device was down).
    pub late: bool,
}

impl Core {
    /// Records the batch's mentions of this device's user (made by someone
    /// else) in the inbox, once each, and announces them.
    pub(super) fn record_mentions(&mut self, tx: &mut Txn, effects: &mut Effects) -> store::Result<()> {
        let me = self.keys.user_id().to_string();
        let my_user = self.keys.user_id();
        for NewMention { space, by, mention } in std::mem::take(&mut effects.mentions) {
            let by_me = by == self.me || self.certs.get(&by).is_some_and(|c| c.user == my_user);
            if mention.user != me || by_me {
                continue;
            }
            let row = MentionRow {
                space,
                by,
                actor: actor_key(&mention.actor),
                counter: mention.counter,
                anchor: mention.anchor.as_ref().map(|(c, a)| (*c, actor_key(a))),
                at_ms: crate::clock::now_ms() as i64,
            };
            let (actor, counter) = (row.actor, row.counter);
            let row = InboxRow::Mention(row);
            let bytes = postcard::to_stdvec(&row).expect("inbox rows serialize");
            if let Some(seq) = tx.put_inbox(&space, &actor, counter, &bytes)? {
                let entry = self.entry(seq, row);
                effects.events.push(Event::Inbox { entry });
            }
        }
        Ok(())
    }

    /// The newest `limit` notifications, oldest first.
    pub(super) fn inbox(&mut self, limit: usize) -> Result<Vec<InboxEntry>> {
        let rows = self
            .store
            .inbox(limit.min(MAX_INBOX_LIMIT))
            .map_err(|e| Error::Store(Arc::new(e)))?;
        let rows: Vec<(u64, InboxRow)> = rows
            .into_iter()
            .filter_map(|(seq, bytes)| Some((seq, postcard::from_bytes(&bytes).ok()?)))
            .collect();
        // Mentions in closed shards set aside are loaded for their text: rows
        // are read shard by shard, so each is loaded once and set aside again.
        let shard_of = |row: &InboxRow| match row {
            InboxRow::Chat(r) => Some((r.space, r.doc)),
            _ => None,
        };
        let mut by_shard: Vec<usize> = (0..rows.len()).collect();
        by_shard.sort_by_key(|&i| shard_of(&rows[i].1));
        let mut entries: Vec<Option<InboxEntry>> = rows.iter().map(|_| None).collect();
        for i in by_shard {
            let (seq, row) = &rows[i];
            let shard = shard_of(row);
            if let Some((space, doc)) = shard {
                self.bring_docs(space, &[doc]).map_err(|e| Error::Store(Arc::new(e)))?;
            }
            entries[i] = Some(self.entry(*seq, row.clone()));
            if let Some((space, _)) = shard {
                self.release_shards(space);
            }
        }
        Ok(entries.into_iter().flatten().collect())
    }

    /// Records a reminder this device fired, and announces it.
    pub(super) fn record_reminder(
        &mut self,
        tx: &mut Txn,
        row: ReminderRow,
        effects: &mut Effects,
    ) -> store::Result<()> {
        let row = InboxRow::Reminder(row);
        let seq = tx.push_inbox(&postcard::to_stdvec(&row).expect("inbox rows serialize"))?;
        let entry = self.entry(seq, row);
        effects.events.push(Event::Inbox { entry });
        Ok(())
    }

    pub(super) fn entry(&self, seq: u64, row: InboxRow) -> InboxEntry {
        match row {
            InboxRow::Mention(row) => self.mention_entry(seq, row),
            InboxRow::Reminder(row) => self.reminder_entry(seq, row),
            InboxRow::Chat(row) => InboxEntry {
                seq,
                kind: if row.all { "all" } else { "mention" }.into(),
                space: row.space,
                space_name: self.spaces.get(&row.space).and_then(|s| s.name.clone()),
                by: row.by,
                at_ms: row.at_ms,
                context: self.message_text(row.space, row.doc, &row.id),
                message: Some(row.id),
                held: row.held,
                reminder: None,
            },
        }
    }

    fn reminder_entry(&self, seq: u64, row: ReminderRow) -> InboxEntry {
        let space = self.spaces.get(&row.space);
        let event = space
            .and_then(|s| self.event_of(s, &row.event).ok())
            .map(|(event, _)| event);
        InboxEntry {
            seq,
            kind: "reminder".into(),
            space: row.space,
            space_name: space.and_then(|s| s.name.clone()),
            by: self.me,
            at_ms: row.at_ms,
            message: None,
            held: false,
            context: event.map(|e| {
                e.overrides
                    .get(&row.key)
                    .and_then(|o| o.title.clone())
                    .unwrap_or(e.title)
            }),
            reminder: Some(ReminderView {
                occurrence: format!("{}@{}", row.event, row.key),
                starts: chrono::DateTime::from_timestamp_millis(row.starts_ms)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
                minutes: row.minutes,
                due_ms: row.due_ms,
                late: row.late,
            }),
        }
    }

    fn mention_entry(&self, seq: u64, row: MentionRow) -> InboxEntry {
        let space = self.spaces.get(&row.space);
        let context = space
            .and_then(|s| Some((s, s.readable.as_ref()?)))
            .and_then(|(s, r)| r.docs.get(&s.main_doc())?.doc.text())
            .zip(row.anchor)
            .and_then(|(doc, (counter, actor))| {
                doc.context_of(&(counter, outpost_crdt::ActorId::from(actor.0)), CONTEXT_CHARS)
            });
        InboxEntry {
            seq,
            kind: "mention".into(),
            space: row.space,
            space_name: space.and_then(|s| s.name.clone()),
            by: row.by,
            at_ms: row.at_ms,
            context,
            message: None,
            held: false,
            reminder: None,
        }
    }
}
