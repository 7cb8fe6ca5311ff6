//! The inbox: notifications for this device's user, such as a mention in a
//! shared document. Recorded once per mention on first local apply (however
//! late the change arrives, and however often), announced on the event stream,
//! and kept as references only: the text around a mention is read from the
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

/// An inbox row as stored (`inbox-1`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct InboxRow {
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

/// A notification, as `outpost inbox` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxEntry {
    pub seq: u64,
    /// What happened: `mention` (in a document).
    pub kind: String,
    pub space: SpaceId,
    pub space_name: Option<String>,
    /// The device that wrote it.
    pub by: DeviceId,
    /// When this device learnt of it (local time, not replicated).
    pub at_ms: i64,
    /// The text of the block holding the mention, when it is still there.
    pub context: Option<String>,
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
            let row = InboxRow {
                space,
                by,
                actor: actor_key(&mention.actor),
                counter: mention.counter,
                anchor: mention.anchor.as_ref().map(|(c, a)| (*c, actor_key(a))),
                at_ms: crate::clock::now_ms() as i64,
            };
            let bytes = postcard::to_stdvec(&row).expect("inbox rows serialize");
            if let Some(seq) = tx.put_inbox(&space, &row.actor, row.counter, &bytes)? {
                let entry = self.entry(seq, row);
                effects.events.push(Event::Inbox { entry });
            }
        }
        Ok(())
    }

    /// The newest `limit` notifications, oldest first.
    pub(super) fn inbox(&self, limit: usize) -> Result<Vec<InboxEntry>> {
        let rows = self
            .store
            .inbox(limit.min(MAX_INBOX_LIMIT))
            .map_err(|e| Error::Store(Arc::new(e)))?;
        Ok(rows
            .into_iter()
            .filter_map(|(seq, bytes)| Some(self.entry(seq, postcard::from_bytes(&bytes).ok()?)))
            .collect())
    }

    fn entry(&self, seq: u64, row: InboxRow) -> InboxEntry {
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
        }
    }
}
