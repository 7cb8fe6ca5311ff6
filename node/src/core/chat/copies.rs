//! Copies of announced and pinned messages for the later members of a room
//! whose history starts at each join.
//!
//! Such a member cannot read what was written before it joined, so an
//! announcement or a pin naming an earlier message would show it nothing.
//! Whenever an owner or admin writes settings into an epoch's first document
//! (at a join, when the first setting of an epoch carries the others over, or
//! when it pins an earlier message), it seals each announced or pinned message
//! of another epoch again, under this epoch, as a *copy*: a body holding the
//! message's current text and file, its author and time, named in the room
//! map by `copy/REF`. A reader shows the original when it can read it, else
//! the newest copy it can open; the original's later edits by its author's
//! user apply to a copy too (they are written into the current epoch's first
//! document, which every member of that epoch reads).
//!
//! Only messages of owners and admins are copied. A copy is its writer's body,
//! which a tombstone of the same user or of an admin deletes, so a copy of a
//! writer's message could outlive that writer's retraction of it. A
//! retraction names every copy its node holds, so one tombstone deletes the
//! original and its copies everywhere.

use super::*;

/// Most copies one change writes (each is a body beside it): the
/// announcement first, then pins in ref order.
const MAX_COPIES_PER_CHANGE: usize = 64;

impl Core {
    /// The copies to write beside settings written into `settings`' document
    /// (the first of an epoch's run), for the messages `shown` names (the
    /// announcement, then the pins) that lie in another epoch, are by an
    /// owner or admin, and have no copy there yet; with their bodies.
    pub(in crate::core) fn copies_for(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        settings: &WriteTarget,
        shown: &[String],
    ) -> store::Result<(Vec<Write>, Vec<Envelope>)> {
        let space = &self.spaces[&space_id];
        let Some(readable) = space.readable.as_ref() else {
            return Ok((Vec::new(), Vec::new()));
        };
        if space.state.history != History::FromJoin {
            return Ok((Vec::new(), Vec::new()));
        }
        let held: BTreeSet<String> = readable
            .docs
            .get(&settings.doc)
            .and_then(|s| s.doc.chat())
            .map(|chat| chat.copies().into_iter().map(|c| c.target).collect())
            .unwrap_or_default();
        let mut wanted: Vec<(DocId, &String)> = Vec::new();
        for target in shown {
            let Some((doc, _)) = parse_ref(target) else { continue };
            let elsewhere = space.state.shard_place(&doc, &settings.epoch.id).is_none();
            if elsewhere && !held.contains(target) && !wanted.iter().any(|(_, t)| *t == target) {
                wanted.push((doc, target));
            }
        }
        wanted.truncate(MAX_COPIES_PER_CHANGE);
        if wanted.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        // An original in a closed shard is loaded to be read.
        let docs: Vec<DocId> = wanted.iter().map(|(doc, _)| *doc).collect();
        self.bring_docs(space_id, &docs)?;
        let space = &self.spaces[&space_id];
        let readable = space.readable.as_ref().expect("checked above");
        let overlay = Overlay::of(self, space, readable, &docs);
        let mut get = |id: &EnvelopeId| tx.side(&space_id, id).ok().flatten();
        let mut targets = Vec::new();
        let mut plains = Vec::new();
        for (_, target) in wanted {
            let Some((view, file)) = self.shown(space, readable, &overlay, target, &mut get) else {
                continue;
            };
            let by_admin = space
                .state
                .members
                .get(&view.author)
                .is_some_and(|m| m.role >= Role::Admin);
            if view.retracted.is_some() || view.missing || !by_admin {
                continue;
            }
            targets.push(target.clone());
            plains.push(BodyPlain::Copy {
                text: view.text,
                file,
                author: view.author,
                sent_at_ms: view.sent_at_ms,
            });
        }
        let bodies = self.seal_bodies(space_id, settings, plains);
        let writes = targets
            .into_iter()
            .zip(&bodies)
            .map(|(target, body)| {
                Write::Room(RoomWrite::Copy {
                    target,
                    body: body.id().to_string(),
                })
            })
            .collect();
        Ok((writes, bodies))
    }

    /// The message `target` names as this node shows it: the original when
    /// it reads its document, else the newest copy it can open.
    pub(super) fn shown(
        &self,
        space: &Space,
        readable: &space::Readable,
        overlay: &Overlay,
        target: &str,
        get: &mut dyn FnMut(&EnvelopeId) -> Option<Vec<u8>>,
    ) -> Option<(MessageView, Option<FileRef>)> {
        let (doc, id) = parse_ref(target)?;
        if let Some(m) = readable.docs.get(&doc).and_then(|s| s.doc.chat()?.message(id)) {
            return Some(self.view_with_file(space, readable, overlay, &m, get));
        }
        self.copy_view(space, readable, overlay, target, get)
    }

    /// The newest copy of `target` this node can open (a deleted one, its
    /// original retracted, is not held any more).
    fn copy_view(
        &self,
        space: &Space,
        readable: &space::Readable,
        overlay: &Overlay,
        target: &str,
        get: &mut dyn FnMut(&EnvelopeId) -> Option<Vec<u8>>,
    ) -> Option<(MessageView, Option<FileRef>)> {
        let (_, id) = parse_ref(target)?;
        for copy in copies_of(space, readable, target) {
            let Some(env) = copy
                .body
                .parse::<EnvelopeId>()
                .ok()
                .and_then(|id| get(&id))
                .and_then(|b| Envelope::decode_stored(b).ok())
            else {
                continue;
            };
            // Only the body its writer sealed with the copy.
            if env.header().kind != Kind::Body || env.header().actor() != actor_key(&copy.actor) {
                continue;
            }
            let Some(plain @ BodyPlain::Copy { author, sent_at_ms, .. }) = self.open_body(space, &env) else {
                continue;
            };
            let (text, file) = plain.into_parts();
            let (current, history) =
                self.edited(space, readable, overlay, target, &author, Some(text), sent_at_ms, get);
            let view = MessageView {
                id: id.to_string(),
                author,
                user: self.user_of(space, &author),
                missing: current.is_none(),
                text: current.unwrap_or_default(),
                sent_at_ms,
                // Its place in the room's order is in a history this member
                // does not read.
                lamport: 0,
                reply_to: None,
                mentions: Vec::new(),
                all: false,
                history,
                reactions: overlay.reactions.get(target).cloned().unwrap_or_default(),
                retracted: None,
                file: file.as_ref().map(FileRef::view),
                read_by: Vec::new(),
            };
            return Some((view, file));
        }
        None
    }

    /// The bodies of the copies of `target` this node holds (its retraction
    /// deletes them with the original).
    pub(super) fn copy_bodies(&self, space: &Space, target: &str) -> Vec<EnvelopeId> {
        let Some(readable) = space.readable.as_ref() else {
            return Vec::new();
        };
        copies_of(space, readable, target)
            .into_iter()
            .filter_map(|c| c.body.parse().ok())
            .collect()
    }
}

/// The copies of `target` in the room's epochs' first documents, newest first.
fn copies_of(space: &Space, readable: &space::Readable, target: &str) -> Vec<model::Copy> {
    readable
        .ordered(&space.state)
        .into_iter()
        .rev()
        .filter(|(doc, shard)| speaks_for_others(&space.state, doc, &shard.epoch))
        .filter_map(|(_, shard)| shard.doc.chat())
        .flat_map(|chat| chat.copies().into_iter().rev())
        .filter(|c| c.target == target)
        .collect()
}

/// The messages a room shows beside its settings once `writes` are made:
/// its announcement, then its pins.
pub(super) fn shown_after(room: &model::Room, writes: &[Write]) -> Vec<String> {
    let mut announcement = room.announcement.clone();
    let mut pins: BTreeSet<String> = room.pins.iter().cloned().collect();
    for w in writes {
        match w {
            Write::Room(RoomWrite::Announcement(a)) => announcement = a.clone(),
            Write::Room(RoomWrite::Pin(target, true)) => {
                pins.insert(target.clone());
            }
            Write::Room(RoomWrite::Pin(target, false)) => {
                pins.remove(target);
            }
            _ => {}
        }
    }
    announcement.into_iter().chain(pins).collect()
}
