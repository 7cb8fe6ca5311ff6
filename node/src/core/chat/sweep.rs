//! Bodies a retraction missed.
//!
//! A retraction's tombstone names the bodies of its message that its node
//! holds. An edit its author made while the retraction was on its way (a
//! partition), or a copy of the message ([`super::copies`]) written where the
//! retraction had not arrived, is named by no tombstone, so its text would
//! stay readable. When a peer's change edits, copies or retracts a message
//! that is retracted here, every node that may delete the bodies still held
//! (an owner or admin, or a device of their author's user) retracts it
//! again: one more tombstone naming them, carried by the message's marker
//! written again. Every node then deletes them as for any retraction. Several
//! nodes may do so at once; the extra tombstones are harmless.

use super::*;

impl Core {
    /// Retracts again the bodies a retraction missed, of the messages `refs`
    /// names (those a peer's change of this batch edited, copied or retracted).
    pub(in crate::core) fn sweep_retracted(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        refs: &BTreeSet<String>,
        effects: &mut Effects,
    ) -> store::Result<()> {
        if self.spaces.get(&space_id).is_none_or(|s| s.readable.is_none()) {
            return Ok(());
        }
        let docs: BTreeSet<DocId> = refs.iter().filter_map(|r| Some(parse_ref(r)?.0)).collect();
        self.bring_docs(space_id, &docs.into_iter().collect::<Vec<_>>())?;
        for target in refs {
            let Some(found) = self.found_by_ref(space_id, target) else {
                continue;
            };
            let missed = self.missed_bodies(tx, space_id, &found)?;
            if missed.is_empty() {
                continue;
            }
            let settings = match self.write_target(tx, space_id, SpaceKind::Chat, effects)? {
                Ok(t) => t,
                Err(e) => {
                    warn!(space = %space_id.fmt_short(), error = %e, "a retraction's missed bodies were not retracted");
                    return Ok(());
                }
            };
            let target = self.target_of_message(space_id, settings, found.doc);
            let (marker, tombstone) = self.sign_retraction(space_id, &target, &found, &missed);
            if let Err(e) = self.write_chat(tx, space_id, &target, &[marker], vec![tombstone.clone()], effects)? {
                warn!(space = %space_id.fmt_short(), error = %e, "a retraction's missed bodies were not retracted");
                continue;
            }
            let deleted = self.apply_tombstone(tx, space_id, &tombstone)?;
            info!(space = %space_id.fmt_short(), deleted, "retracted bodies a retraction had missed");
        }
        Ok(())
    }

    /// The one message entry `target` names, in a loaded document.
    fn found_by_ref(&self, space_id: SpaceId, target: &str) -> Option<Found> {
        let (doc, id) = parse_ref(target)?;
        let readable = self.spaces.get(&space_id)?.readable.as_ref()?;
        let entries = readable.docs.get(&doc)?.doc.chat()?.entries_named(id);
        let [message] = <[model::Message; 1]>::try_from(entries).ok()?;
        Some(Found { doc, message })
    }

    /// The bodies of `found`, if it is retracted here, that this node still
    /// holds and that a tombstone of this device may delete.
    fn missed_bodies(&self, tx: &mut Txn, space_id: SpaceId, found: &Found) -> store::Result<Vec<EnvelopeId>> {
        let space = &self.spaces[&space_id];
        let Some(readable) = space.readable.as_ref() else {
            return Ok(Vec::new());
        };
        let Ok(body) = found.message.body.parse::<EnvelopeId>() else {
            return Ok(Vec::new());
        };
        // Read through the batch: its own tombstones count.
        let author = readable.author_of(&found.message.actor);
        if self
            .deleting(space, tx.tombstones(&space_id, &body)?, &author)
            .is_none()
        {
            return Ok(Vec::new());
        }
        let admin = space.state.members.get(&self.me).is_some_and(|m| m.role >= Role::Admin);
        let me = self.keys.user_id();
        let mut missed = Vec::new();
        for id in self.bodies_of(space_id, found) {
            let Some(held) = tx.side(&space_id, &id)?.and_then(|b| Envelope::decode_stored(b).ok()) else {
                continue;
            };
            let h = held.header();
            if h.kind == Kind::Body && (admin || self.user_of(space, &h.author) == Some(me)) {
                missed.push(id);
            }
        }
        Ok(missed)
    }
}
