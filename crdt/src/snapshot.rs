//! Snapshots: a whole document (`Automerge::save`), which a peer far behind
//! loads instead of replaying every change one by one.
//!
//! A snapshot is trusted no further than the signed changes it ends in. The caller
//! (the node) passes each covered writer's *last* change as that writer signed it,
//! and [`open`] proves that every change inside the snapshot belongs to one of
//! those signed chains:
//!
//! - every change is the genesis or by a covered writer;
//! - each writer's seqs are exactly `1..=last` (no duplicate, no gap, nothing later);
//! - every change after a writer's first depends directly on that writer's previous
//!   change. Automerge always records that dependency, and the node requires it of
//!   every envelope, so a writer's signed last change commits, through the hash
//!   chain, to each of its earlier changes;
//! - the writer's change at `last` has exactly the signed change's hash.
//!
//! So a snapshot's maker cannot put words in another writer's mouth. And every
//! change passes the document type's rules, exactly as if it had arrived on its
//! own: a member cannot smuggle in, through a snapshot, a change every other node
//! refused.

use std::collections::{BTreeMap, HashMap};

use automerge::{ActorId, Automerge, Change, ChangeHash, ReadDoc};

use crate::{
    Author, DocId, Violation,
    doc::{Checked, Doc, Effect, Model},
    genesis,
};

/// Why a snapshot is refused. Every node refuses the same snapshot for the same
/// reason: each check is a pure function of the bytes and the signed last changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("the snapshot is not a loadable Automerge document")]
    Load,
    #[error("the snapshot's changes depend on changes it does not contain")]
    MissingDeps,
    #[error("the snapshot lacks the document's genesis or has a different one")]
    Genesis,
    #[error("the snapshot contains a change by a writer it does not declare")]
    UnknownWriter,
    #[error("the snapshot holds two changes for one writer and seq, or one past the declared last")]
    Seq,
    #[error("a writer's changes in the snapshot do not run from 1 to its declared last")]
    Gap,
    #[error("a change does not depend on its writer's previous change")]
    NotChained,
    #[error("a writer's last change differs from the one it signed")]
    LastChange,
    #[error("a change in the snapshot breaks the document's rules: {0}")]
    Rules(#[from] Violation),
}

/// Why a verified snapshot cannot merge into a document.
#[derive(Debug, thiserror::Error)]
pub enum AbsorbError {
    /// The snapshot and the document hold different changes for one (writer, seq):
    /// that writer signed both, i.e. equivocated.
    #[error("writer {actor} has a different change at seq {seq} in the snapshot")]
    Equivocation { actor: ActorId, seq: u64 },
    #[error("automerge refused the merge")]
    Automerge(#[from] automerge::AutomergeError),
}

/// A snapshot whose every change has been checked (see the module docs).
pub struct Opened {
    doc: Automerge,
    /// Every change but the genesis, checked against the document's rules.
    changes: Vec<Checked>,
}

impl Opened {
    /// How many changes (besides the genesis) the snapshot holds.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Loads `bytes` as a document of `model` and checks it against `last`: for
/// each writer the snapshot covers, the seq and hash of its last change, taken
/// from that writer's own signature, and the author the rules judge its
/// changes as (from that signed change's causal point).
pub fn open(
    model: Model,
    doc_id: &DocId,
    bytes: &[u8],
    last: &BTreeMap<ActorId, (u64, ChangeHash, Author)>,
) -> Result<Opened, SnapshotError> {
    let doc = Automerge::load(bytes).map_err(|_| SnapshotError::Load)?;
    if !doc.get_missing_deps(&[]).is_empty() {
        return Err(SnapshotError::MissingDeps);
    }
    let changes = doc.get_changes(&[]);
    let genesis_actor = genesis::genesis_actor(doc_id);
    let rules = Doc::new(model, *doc_id);
    let genesis_hash = rules.genesis_hash();
    let mut has_genesis = false;
    let mut hash_at: HashMap<(&ActorId, u64), ChangeHash> = HashMap::with_capacity(changes.len());
    let mut count: HashMap<&ActorId, u64> = HashMap::with_capacity(last.len());
    for change in &changes {
        let actor = change.actor_id();
        if *actor == genesis_actor {
            if change.hash() != genesis_hash || has_genesis {
                return Err(SnapshotError::Genesis);
            }
            has_genesis = true;
            continue;
        }
        let (last_seq, ..) = last.get(actor).ok_or(SnapshotError::UnknownWriter)?;
        if change.seq() > *last_seq || hash_at.insert((actor, change.seq()), change.hash()).is_some() {
            return Err(SnapshotError::Seq);
        }
        *count.entry(actor).or_default() += 1;
    }
    if !has_genesis {
        return Err(SnapshotError::Genesis);
    }
    for (actor, (seq, hash, _)) in last {
        // Distinct seqs, none past `seq`, and `seq` of them: exactly 1..=seq.
        if count.get(actor).copied().unwrap_or(0) != *seq {
            return Err(SnapshotError::Gap);
        }
        if hash_at.get(&(actor, *seq)) != Some(hash) {
            return Err(SnapshotError::LastChange);
        }
    }
    for change in &changes {
        if change.seq() > 1 && *change.actor_id() != genesis_actor {
            let previous = hash_at.get(&(change.actor_id(), change.seq() - 1));
            if !previous.is_some_and(|p| change.deps().contains(p)) {
                return Err(SnapshotError::NotChained);
            }
        }
    }
    drop(hash_at);
    drop(count);
    // The snapshot's document holds every object its changes touch.
    let held = |obj: &crate::text::OpRef| crate::text::object_type(&doc, obj);
    let checked = changes
        .into_iter()
        .filter(|c| *c.actor_id() != genesis_actor)
        .map(|c| {
            // Declared writers only (checked above); each judged as its last
            // signed change's author.
            let author = &last.get(c.actor_id()).ok_or(SnapshotError::UnknownWriter)?.2;
            Ok::<_, SnapshotError>(rules.validate_with(c, author, &held)?)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Opened { doc, changes: checked })
}

impl Doc {
    /// Merges a verified snapshot. Returns what became visible (messages, in
    /// display order; mentions). On error the document is unchanged.
    pub fn absorb(&mut self, snapshot: Opened) -> Result<Vec<Effect>, AbsorbError> {
        let ours: HashMap<(ActorId, u64), ChangeHash> = self
            .automerge()
            .get_changes_meta(&[])
            .into_iter()
            .map(|m| ((m.actor.into_owned(), m.seq), m.hash))
            .collect();
        let mut fresh = Vec::new();
        for checked in &snapshot.changes {
            let change: &Change = checked.change();
            match ours.get(&(change.actor_id().clone(), change.seq())) {
                Some(hash) if *hash == change.hash() => {}
                Some(_) => {
                    return Err(AbsorbError::Equivocation {
                        actor: change.actor_id().clone(),
                        seq: change.seq(),
                    });
                }
                None => fresh.push(checked),
            }
        }
        let effects = Checked::effects_of(fresh);
        // Merge the smaller history into the larger: applying changes costs time
        // per change, loading was already paid.
        let mut theirs = snapshot.doc;
        if snapshot.changes.len() + 1 > ours.len() {
            theirs.merge(self.automerge_mut())?;
            self.replace(theirs);
        } else {
            self.automerge_mut().merge(&mut theirs)?;
        }
        Ok(effects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        chat::{ChatDoc, NewMessage},
        writer::actor_id,
    };

    fn post(room: &mut ChatDoc, actor: &ActorId, id: &str) -> Change {
        let msg = NewMessage {
            id: id.into(),
            body: "0f".repeat(32),
            reply_to: None,
            mentions: Vec::new(),
            all: false,
        };
        room.post(actor.clone(), &writer(), &[msg], 1).unwrap()
    }

    fn last_of(changes: &[Change]) -> BTreeMap<ActorId, (u64, ChangeHash, Author)> {
        let mut last = BTreeMap::new();
        for c in changes {
            let entry = last.entry(c.actor_id().clone()).or_insert((0, c.hash(), writer()));
            if c.seq() >= entry.0 {
                *entry = (c.seq(), c.hash(), writer());
            }
        }
        last
    }

    fn writer() -> Author {
        Author {
            user: "aa".repeat(32),
            editor: true,
            admin: false,
        }
    }

    /// Two writers, five changes each, interleaved.
    fn room(doc: DocId) -> (ChatDoc, Vec<Change>, ActorId, ActorId) {
        let a = actor_id(&[1; 32], &doc, 1);
        let b = actor_id(&[2; 32], &doc, 1);
        let mut room = ChatDoc::new(doc);
        let mut changes = Vec::new();
        for i in 0..5 {
            changes.push(post(&mut room, &a, &format!("a{i}")));
            changes.push(post(&mut room, &b, &format!("b{i}")));
        }
        (room, changes, a, b)
    }

    #[test]
    fn a_fresh_replica_loads_a_snapshot_and_shows_the_same_log() {
        let doc = DocId([3; 16]);
        let (room, changes, ..) = room(doc);
        let opened = open(Model::Chat, &doc, &room.save(), &last_of(&changes)).unwrap();
        assert_eq!(opened.len(), 10);
        let mut fresh = Doc::Chat(ChatDoc::new(doc));
        let created = fresh.absorb(opened).unwrap();
        let messages: Vec<Effect> = room.messages().into_iter().map(Effect::Message).collect();
        assert_eq!(created, messages);
        assert_eq!(fresh.chat().unwrap().messages(), room.messages());
    }

    #[test]
    fn a_replica_with_its_own_changes_keeps_them() {
        let doc = DocId([3; 16]);
        let (room, changes, ..) = room(doc);
        let mut mine = ChatDoc::new(doc);
        mine.apply(changes[..4].to_vec(), &writer()).unwrap();
        let c = actor_id(&[3; 32], &doc, 1);
        post(&mut mine, &c, "c0");
        let mut mine = Doc::Chat(mine);
        let created = mine
            .absorb(open(Model::Chat, &doc, &room.save(), &last_of(&changes)).unwrap())
            .unwrap();
        assert_eq!(created.len(), 6, "only the messages it lacked are new");
        assert_eq!(mine.chat().unwrap().messages().len(), 11);
        assert!(mine.chat().unwrap().message("c0").is_some());
    }

    #[test]
    fn a_snapshot_must_end_in_the_signed_last_changes() {
        let doc = DocId([3; 16]);
        let (room, changes, a, b) = room(doc);
        let saved = room.save();
        let good = last_of(&changes);

        let mut wrong_hash = good.clone();
        wrong_hash.get_mut(&a).unwrap().1 = changes[0].hash();
        assert_eq!(
            open(Model::Chat, &doc, &saved, &wrong_hash).err(),
            Some(SnapshotError::LastChange)
        );

        let mut undeclared = good.clone();
        undeclared.remove(&b);
        assert_eq!(
            open(Model::Chat, &doc, &saved, &undeclared).err(),
            Some(SnapshotError::UnknownWriter)
        );

        let mut short = good.clone();
        short.insert(a.clone(), (4, changes[6].hash(), writer()));
        assert_eq!(open(Model::Chat, &doc, &saved, &short).err(), Some(SnapshotError::Seq));

        let mut long = good;
        long.insert(a, (6, changes[8].hash(), writer()));
        assert_eq!(open(Model::Chat, &doc, &saved, &long).err(), Some(SnapshotError::Gap));

        assert_eq!(
            open(Model::Chat, &doc, b"not automerge", &last_of(&changes)).err(),
            Some(SnapshotError::Load)
        );
        // Another document's snapshot, with its writers declared: its genesis is foreign.
        let (other_room, other_changes, ..) = self::room(DocId([4; 16]));
        let mut declared = last_of(&other_changes);
        let foreign_genesis = genesis::genesis_actor(&DocId([4; 16]));
        declared.insert(foreign_genesis, (1, ChatDoc::genesis(&DocId([4; 16])).1, writer()));
        assert!(open(Model::Chat, &doc, &other_room.save(), &declared).is_err());
    }

    #[test]
    fn a_snapshot_cannot_carry_a_change_the_rules_refuse() {
        let doc = DocId([3; 16]);
        let (mut room, mut changes, a, _) = room(doc);
        // Writer a rewrites one of b's messages, which the rules forbid.
        let (_, entry) = room.doc.get(&room.schema.messages, "b0").unwrap().unwrap();
        room.doc.set_actor(a);
        let mut tx = room.doc.transaction();
        automerge::transaction::Transactable::put(&mut tx, &entry, "body", "0e".repeat(32)).unwrap();
        let (hash, _) = tx.commit();
        changes.push(room.doc.get_change_by_hash(&hash.unwrap()).unwrap());
        assert_eq!(
            open(Model::Chat, &doc, &room.save(), &last_of(&changes)).err(),
            Some(SnapshotError::Rules(Violation::Chat(
                crate::chat::Violation::ForeignObject
            )))
        );
    }

    #[test]
    fn an_equivocating_writer_is_caught_on_merge() {
        let doc = DocId([3; 16]);
        let (room, changes, a, _) = room(doc);
        let mut mine = ChatDoc::new(doc);
        mine.apply(changes[..2].to_vec(), &writer()).unwrap();
        // Same writer, same seq 2, different change (a cloned device).
        let mut clone = ChatDoc::new(doc);
        clone.apply(changes[..1].to_vec(), &writer()).unwrap();
        let forked = post(&mut clone, &a, "forked");
        assert_eq!(forked.seq(), 2);
        mine.apply(vec![forked], &writer()).unwrap();
        let mut mine = Doc::Chat(mine);
        let err = mine
            .absorb(open(Model::Chat, &doc, &room.save(), &last_of(&changes)).unwrap())
            .unwrap_err();
        assert!(matches!(err, AbsorbError::Equivocation { seq: 2, .. }), "{err}");
        assert_eq!(mine.chat().unwrap().messages().len(), 3, "unchanged on error");
    }
}
