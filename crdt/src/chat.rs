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

/// One chat shard document.
#[derive(Debug)]
pub struct ChatDoc {
    doc: Automerge,
    messages: ObjId,
}

impl ChatDoc {
    /// A shard at genesis.
    pub fn new(doc_id: DocId) -> Self {
        let (doc, _) = Self::genesis(&doc_id);
        let messages = match doc.get(ROOT, MESSAGES) {
            Ok(Some((Value::Object(ObjType::Map), id))) => id,
            _ => unreachable!("genesis creates the messages map"),
        };
        Self { doc, messages }
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

    /// Applies remote changes in one call (Automerge's apply costs time proportional
    /// to the document on every call, so callers batch).
    ///
    /// Callers hand over only changes whose dependencies are already applied.
    ///
    /// Returns the messages the changes created, in display order.
    pub fn apply(&mut self, changes: Vec<Change>) -> Result<Vec<Message>, Error> {
        let before = self.doc.get_heads();
        self.doc.apply_changes(changes)?;
        let after = self.doc.get_heads();
        let mut created: Vec<Message> = self
            .doc
            .diff(&before, &after)
            .into_iter()
            .filter(|patch| patch.obj == self.messages)
            .filter_map(|patch| match patch.action {
                automerge::PatchAction::PutMap { key, .. } => self.message(&key),
                _ => None,
            })
            .collect();
        sort_for_display(&mut created);
        created.dedup_by(|a, b| a.id == b.id);
        Ok(created)
    }

    /// One message by id.
    pub fn message(&self, id: &str) -> Option<Message> {
        let (value, entry) = self.doc.get(&self.messages, id).ok()??;
        if !matches!(value, Value::Object(ObjType::Map)) {
            return None;
        }
        read_message(&self.doc, id, entry)
    }

    /// Whether the change with this hash is part of the document.
    pub fn has_change(&self, hash: &ChangeHash) -> bool {
        self.doc.get_change_by_hash(hash).is_some()
    }

    /// Every message, in display order.
    pub fn messages(&self) -> Vec<Message> {
        let mut out: Vec<Message> = self
            .doc
            .map_range(&self.messages, ..)
            .filter_map(|item| {
                let ObjId::Id(lamport, actor, _) = item.id() else {
                    return None;
                };
                let entry = item.id();
                let text = match self.doc.get(&entry, "text") {
                    Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
                        ScalarValue::Str(s) => s.to_string(),
                        _ => return None,
                    },
                    _ => return None,
                };
                let sent_at_ms = match self.doc.get(&entry, "sent_at") {
                    Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
                        ScalarValue::Timestamp(t) => *t,
                        _ => 0,
                    },
                    _ => 0,
                };
                Some(Message {
                    id: item.key.to_string(),
                    text,
                    sent_at_ms,
                    actor,
                    lamport,
                })
            })
            .collect();
        out.sort_by(|a, b| (a.lamport, a.actor.to_bytes()).cmp(&(b.lamport, b.actor.to_bytes())));
        out
    }

    /// The underlying document, for saving and inspection.
    pub fn automerge(&self) -> &Automerge {
        &self.doc
    }
}

/// Display order: (Lamport counter of the creating op, actor). Identical everywhere.
fn sort_for_display(msgs: &mut [Message]) {
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
