//! Chat rooms: messages as entries of one map keyed by message id.
//!
//! A map is cheaper than a list (no O(n) `length()` on append) and the key of an
//! entry never moves. Display order is (Lamport counter of the creating op, actor),
//! which respects causality and is identical on every node.
//!
//! Schema (created by genesis): `ROOT.messages: Map<msg id, Map{ text: Str, sent_at:
//! Timestamp }>`. The author is not a field: it is the actor that created the entry,
//! which the node maps to a device through the signed envelope that carried it.

use automerge::{
    ActorId, Automerge, Change, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value,
    transaction::{CommitOptions, Transactable},
};

use crate::{DocId, Error, genesis};

const MESSAGES: &str = "messages";
/// Chat validation rules implemented here; a space names the version it follows.
pub const RULES_VERSION: u16 = 1;
/// Longest message id accepted in a change (node ids are 16 characters).
pub const MAX_ID_BYTES: usize = 64;
/// Longest message text accepted in a change, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 << 10;

/// Why a change breaks the chat rules (version [`RULES_VERSION`]).
///
/// The rules are a pure function of the change and the document's fixed schema,
/// so every node decides identically. In v1 a writer may only create new
/// message entries; it may never touch the schema or another writer's entries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("the change has no dependencies (every change descends from the genesis)")]
    NoDeps,
    #[error("the change touches an object it may not (the schema or another entry)")]
    ForeignObject,
    #[error("only new message entries may be created in the message map")]
    MessageMapOp,
    #[error("message id is empty or longer than {MAX_ID_BYTES} bytes")]
    MessageId,
    #[error("a message entry may only set `text` (string) and `sent_at` (timestamp), once")]
    EntryField,
    #[error("message text exceeds {MAX_TEXT_BYTES} bytes")]
    TextTooLong,
}

impl Violation {
    /// A fixed description, for logs and counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Violation::NoDeps => "chat rules: a change without dependencies",
            Violation::ForeignObject => "chat rules: touches the schema or another entry",
            Violation::MessageMapOp => "chat rules: not a new message entry",
            Violation::MessageId => "chat rules: bad message id",
            Violation::EntryField => "chat rules: bad message field",
            Violation::TextTooLong => "chat rules: message text too long",
        }
    }
}

/// A message to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Unique message id (chosen by the node; never reused).
    pub id: String,
    pub text: String,
}

/// A message as every node shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub text: String,
    /// Milliseconds since the Unix epoch, as claimed by the author.
    pub sent_at_ms: i64,
    /// The actor that created the entry.
    pub actor: ActorId,
    /// Lamport counter of the creating op: the primary display order key.
    pub lamport: u64,
}

/// A change that passed [`ChatDoc::validate`], with the messages it creates.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    change: Change,
    created: Vec<Message>,
}

impl Checked {
    pub fn change(&self) -> &Change {
        &self.change
    }

    /// The messages the change creates, in op order.
    pub fn created(&self) -> &[Message] {
        &self.created
    }
}

/// One chat shard document.
#[derive(Debug)]
pub struct ChatDoc {
    pub(crate) doc: Automerge,
    pub(crate) messages: ObjId,
    genesis: ChangeHash,
}

impl ChatDoc {
    /// A shard at genesis.
    pub fn new(doc_id: DocId) -> Self {
        let (doc, genesis) = Self::genesis(&doc_id);
        let messages = match doc.get(ROOT, MESSAGES) {
            Ok(Some((Value::Object(ObjType::Map), id))) => id,
            _ => unreachable!("genesis creates the messages map"),
        };
        Self { doc, messages, genesis }
    }

    /// The hash of this document's genesis change: the one dependency of a
    /// writer's first change when nothing else is there.
    pub fn genesis_hash(&self) -> ChangeHash {
        self.genesis
    }

    /// The genesis document and the hash of its only change.
    pub fn genesis(doc_id: &DocId) -> (Automerge, ChangeHash) {
        genesis::build(doc_id, |tx| {
            tx.put_object(ROOT, MESSAGES, ObjType::Map)?;
            Ok(())
        })
    }

    /// Posts messages as `actor` in one transaction, producing one change.
    ///
    /// `now_ms` is the author's wall clock, recorded as a claim, never used to order.
    pub fn post(&mut self, actor: ActorId, msgs: &[NewMessage], now_ms: i64) -> Result<Change, Error> {
        self.doc.set_actor(actor);
        let mut tx = self.doc.transaction();
        for msg in msgs {
            let entry = tx.put_object(&self.messages, msg.id.as_str(), ObjType::Map)?;
            tx.put(&entry, "text", msg.text.as_str())?;
            tx.put(&entry, "sent_at", ScalarValue::Timestamp(now_ms))?;
        }
        let (hash, _) = tx.commit_with(CommitOptions::default().with_time(now_ms));
        let hash = hash.ok_or(Error::EmptyChange)?;
        self.doc.get_change_by_hash(&hash).ok_or(Error::EmptyChange)
    }

    /// Checks `change` against the chat rules before it may be applied, and reads
    /// the messages it creates from its ops (so applying needs no document reads).
    pub fn validate(&self, change: Change) -> Result<Checked, Violation> {
        use automerge::{
            ObjType as T,
            legacy::{Key, ObjectId, OpId, OpType},
        };
        if change.deps().is_empty() {
            return Err(Violation::NoDeps);
        }
        let messages = self.messages_legacy_id();
        let start = change.start_op().get();
        let actor = change.actor_id().clone();
        // Entries created by this change, in op order, with the fields each has set.
        let mut entries: Vec<(OpId, Message, Vec<String>)> = Vec::new();
        for (i, op) in change.decode().operations.into_iter().enumerate() {
            let Key::Map(key) = &op.key else {
                return Err(Violation::ForeignObject);
            };
            if op.obj == messages {
                if op.insert || !op.pred.is_empty() || !matches!(op.action, OpType::Make(T::Map)) {
                    return Err(Violation::MessageMapOp);
                }
                if key.is_empty() || key.len() > MAX_ID_BYTES {
                    return Err(Violation::MessageId);
                }
                let counter = start + i as u64;
                let message = Message {
                    id: key.to_string(),
                    text: String::new(),
                    sent_at_ms: 0,
                    actor: actor.clone(),
                    lamport: counter,
                };
                entries.push((OpId(counter, actor.clone()), message, Vec::new()));
                continue;
            }
            let ObjectId::Id(obj) = &op.obj else {
                return Err(Violation::ForeignObject);
            };
            let (_, message, fields) = entries
                .iter_mut()
                .find(|(id, ..)| id == obj)
                .ok_or(Violation::ForeignObject)?;
            if op.insert || !op.pred.is_empty() || fields.iter().any(|f| f == key.as_str()) {
                return Err(Violation::EntryField);
            }
            match (key.as_str(), op.action) {
                ("text", OpType::Put(ScalarValue::Str(text))) => {
                    if text.len() > MAX_TEXT_BYTES {
                        return Err(Violation::TextTooLong);
                    }
                    message.text = text.to_string();
                }
                ("sent_at", OpType::Put(ScalarValue::Timestamp(t))) => message.sent_at_ms = t,
                _ => return Err(Violation::EntryField),
            }
            fields.push(key.to_string());
        }
        // An entry without text shows nowhere (as in `messages`).
        let created = entries
            .into_iter()
            .filter(|(_, _, fields)| fields.iter().any(|f| f == "text"))
            .map(|(_, m, _)| m)
            .collect();
        Ok(Checked { change, created })
    }

    /// Validates and applies remote changes in one call (Automerge's apply costs
    /// time proportional to the document on every call, so callers batch).
    ///
    /// Callers hand over only changes whose dependencies are already applied.
    /// Returns the messages the changes created, in display order.
    pub fn apply(&mut self, changes: Vec<Change>) -> Result<Vec<Message>, Error> {
        let checked = changes
            .into_iter()
            .map(|c| self.validate(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(crate::Violation::Chat)?;
        self.apply_checked(checked)
    }

    /// Applies changes that passed [`ChatDoc::validate`], in one call.
    pub fn apply_checked(&mut self, checked: Vec<Checked>) -> Result<Vec<Message>, Error> {
        let mut created = Vec::new();
        let changes: Vec<Change> = checked
            .into_iter()
            .map(|c| {
                created.extend(c.created);
                c.change
            })
            .collect();
        self.doc.apply_changes(changes)?;
        sort_for_display(&mut created);
        Ok(created)
    }

    /// The messages map's id in Automerge's expanded change format.
    fn messages_legacy_id(&self) -> automerge::legacy::ObjectId {
        use automerge::legacy::{ObjectId, OpId};
        match &self.messages {
            ObjId::Id(counter, actor, _) => ObjectId::Id(OpId(*counter, actor.clone())),
            ObjId::Root => unreachable!("the messages map is created by genesis, never the root"),
        }
    }

    /// One message by id.
    pub fn message(&self, id: &str) -> Option<Message> {
        let (value, entry) = self.doc.get(&self.messages, id).ok()??;
        if !matches!(value, Value::Object(ObjType::Map)) {
            return None;
        }
        read_message(&self.doc, id, entry)
    }

    /// Every message, in display order.
    ///
    /// When writers created the same id concurrently, every entry shows: a writer
    /// cannot hide another's message by reusing its id.
    pub fn messages(&self) -> Vec<Message> {
        let mut out = Vec::new();
        for item in self.doc.map_range(&self.messages, ..) {
            let key = item.key.to_string();
            if item.conflict {
                let all = self.doc.get_all(&self.messages, key.as_str()).unwrap_or_default();
                out.extend(all.into_iter().filter_map(|(_, id)| read_message(&self.doc, &key, id)));
            } else {
                out.extend(read_message(&self.doc, &key, item.id()));
            }
        }
        sort_for_display(&mut out);
        out
    }

    /// The underlying document, for saving and inspection.
    pub fn automerge(&self) -> &Automerge {
        &self.doc
    }

    /// The whole document, compressed: what a snapshot seals.
    pub fn save(&self) -> Vec<u8> {
        self.doc.save()
    }

    /// Whether the change with this hash is part of the document.
    pub fn has_change(&self, hash: &ChangeHash) -> bool {
        self.doc.get_missing_deps(&[*hash]).is_empty()
    }

    /// Replaces the document with a merged one (after a snapshot absorb).
    pub(crate) fn replace(&mut self, doc: Automerge) {
        self.messages = match doc.get(ROOT, MESSAGES) {
            Ok(Some((Value::Object(ObjType::Map), id))) => id,
            _ => unreachable!("a checked snapshot has the genesis, which creates the messages map"),
        };
        self.doc = doc;
    }
}

/// Display order: (Lamport counter of the creating op, actor). Identical everywhere.
pub(crate) fn sort_for_display(msgs: &mut [Message]) {
    msgs.sort_by(|a, b| (a.lamport, a.actor.to_bytes()).cmp(&(b.lamport, b.actor.to_bytes())));
}

fn read_message(doc: &Automerge, id: &str, entry: ObjId) -> Option<Message> {
    let ObjId::Id(lamport, actor, _) = entry.clone() else {
        return None;
    };
    let scalar = |field: &str| match doc.get(&entry, field) {
        Ok(Some((Value::Scalar(s), _))) => Some(s.into_owned()),
        _ => None,
    };
    let ScalarValue::Str(text) = scalar("text")? else {
        return None;
    };
    let sent_at_ms = match scalar("sent_at") {
        Some(ScalarValue::Timestamp(t)) => t,
        _ => 0,
    };
    Some(Message {
        id: id.to_string(),
        text: text.to_string(),
        sent_at_ms,
        actor,
        lamport,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::actor_id;
    use proptest::prelude::*;

    fn msg(id: &str, text: &str) -> NewMessage {
        NewMessage {
            id: id.into(),
            text: text.into(),
        }
    }

    #[test]
    fn genesis_is_identical_everywhere() {
        let doc = DocId([9; 16]);
        let (a, ha) = ChatDoc::genesis(&doc);
        let (b, hb) = ChatDoc::genesis(&doc);
        assert_eq!(ha, hb);
        assert_eq!(a.save(), b.save());
        assert_ne!(ChatDoc::genesis(&DocId([8; 16])).1, ha);
    }

    #[test]
    fn changes_depend_on_genesis_and_apply_elsewhere() {
        let doc = DocId([1; 16]);
        let mut a = ChatDoc::new(doc);
        let c = a.post(actor_id(&[1; 32], &doc, 1), &[msg("x", "hi")], 5).unwrap();
        assert_eq!(c.deps(), &[ChatDoc::genesis(&doc).1]);
        let mut b = ChatDoc::new(doc);
        let created = b.apply(vec![c]).unwrap();
        assert_eq!(created, a.messages());
        assert_eq!(b.messages(), a.messages());
        assert_eq!(b.message("x").unwrap().text, "hi");
        assert_eq!(b.messages()[0].sent_at_ms, 5);
    }

    /// A change made directly on a copy of `room`'s document, bypassing the model.
    fn raw_change(
        room: &ChatDoc,
        actor: ActorId,
        edit: impl FnOnce(&mut automerge::transaction::Transaction<'_>, &ObjId),
    ) -> Change {
        let mut doc = room.automerge().fork().with_actor(actor);
        let mut tx = doc.transaction();
        edit(&mut tx, &room.messages);
        let (hash, _) = tx.commit_with(CommitOptions::default().with_time(1));
        doc.get_change_by_hash(&hash.unwrap()).unwrap()
    }

    #[test]
    fn honest_posts_pass_validation() {
        let doc = DocId([4; 16]);
        let mut a = ChatDoc::new(doc);
        let c = a
            .post(actor_id(&[1; 32], &doc, 1), &[msg("x", "hi"), msg("y", "yo")], 5)
            .unwrap();
        let checked = ChatDoc::new(doc).validate(c).unwrap();
        let texts: Vec<&str> = checked.created().iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["hi", "yo"]);
        assert_eq!(checked.created()[0].sent_at_ms, 5);
    }

    #[test]
    fn schema_and_foreign_entries_are_off_limits() {
        let doc = DocId([4; 16]);
        let mut room = ChatDoc::new(doc);
        let alice = actor_id(&[1; 32], &doc, 1);
        let mallory = actor_id(&[2; 32], &doc, 1);
        room.post(alice, &[msg("x", "hi")], 5).unwrap();
        let (_, entry) = room.doc.get(&room.messages, "x").unwrap().unwrap();

        let wipe = raw_change(&room, mallory.clone(), |tx, _| {
            tx.put_object(ROOT, MESSAGES, ObjType::Map).unwrap();
        });
        assert_eq!(room.validate(wipe).map(drop), Err(Violation::ForeignObject));
        let edit = raw_change(&room, mallory.clone(), |tx, _| {
            tx.put(&entry, "text", "rewritten").unwrap();
        });
        assert_eq!(room.validate(edit).map(drop), Err(Violation::ForeignObject));
        let delete = raw_change(&room, mallory.clone(), |tx, m| tx.delete(m, "x").unwrap());
        assert_eq!(room.validate(delete).map(drop), Err(Violation::MessageMapOp));
        let overwrite = raw_change(&room, mallory.clone(), |tx, m| {
            tx.put_object(m, "x", ObjType::Map).unwrap();
        });
        assert_eq!(room.validate(overwrite).map(drop), Err(Violation::MessageMapOp));
        let scalar = raw_change(&room, mallory.clone(), |tx, m| tx.put(m, "z", 1).unwrap());
        assert_eq!(room.validate(scalar).map(drop), Err(Violation::MessageMapOp));
        let extra = raw_change(&room, mallory.clone(), |tx, m| {
            let e = tx.put_object(m, "z", ObjType::Map).unwrap();
            tx.put(&e, "text", "t").unwrap();
            tx.put(&e, "admin", true).unwrap();
        });
        assert_eq!(room.validate(extra).map(drop), Err(Violation::EntryField));
        let long = raw_change(&room, mallory, |tx, m| {
            let e = tx.put_object(m, "z", ObjType::Map).unwrap();
            tx.put(&e, "text", "x".repeat(MAX_TEXT_BYTES + 1)).unwrap();
        });
        assert_eq!(room.validate(long).map(drop), Err(Violation::TextTooLong));
    }

    #[test]
    fn a_reused_id_hides_no_message() {
        let doc = DocId([5; 16]);
        let mut a = ChatDoc::new(doc);
        let mut b = ChatDoc::new(doc);
        let ca = a
            .post(actor_id(&[1; 32], &doc, 1), &[msg("same", "from a")], 1)
            .unwrap();
        let cb = b
            .post(actor_id(&[2; 32], &doc, 1), &[msg("same", "from b")], 1)
            .unwrap();
        // Each side learns exactly the other's entry, though both use one id.
        let created = a.apply(vec![cb]).unwrap();
        assert_eq!(created.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["from b"]);
        assert_eq!(b.apply(vec![ca]).unwrap()[0].text, "from a");
        let texts: Vec<String> = a.messages().into_iter().map(|m| m.text).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert_eq!(a.messages(), b.messages());
    }

    proptest! {
        /// Any delivery order of the same changes gives the same log.
        #[test]
        fn order_of_delivery_does_not_matter(seed in any::<u64>(), n in 1usize..12) {
            let doc = DocId([2; 16]);
            let mut writers = [ChatDoc::new(doc), ChatDoc::new(doc)];
            let mut changes = Vec::new();
            for i in 0..n {
                let w = (seed >> i) as usize & 1;
                let actor = actor_id(&[w as u8; 32], &doc, 7);
                let c = writers[w].post(actor, &[msg(&format!("m{i}"), &format!("t{i}"))], i as i64).unwrap();
                changes.push(c);
            }
            let mut forward = ChatDoc::new(doc);
            for c in &changes { forward.apply(vec![c.clone()]).unwrap(); }
            let mut reversed = ChatDoc::new(doc);
            // Automerge queues a change until its deps arrive; here every dep is
            // applied before its dependant because each writer's changes stay in order.
            let (a, b): (Vec<_>, Vec<_>) = changes.iter().cloned().partition(|c| c.actor_id() == &actor_id(&[0; 32], &doc, 7));
            reversed.apply(b).unwrap();
            reversed.apply(a).unwrap();
            prop_assert_eq!(forward.messages(), reversed.messages());
        }
    }
}
