//! Chat: message skeletons in the room's Automerge documents, their text in
//! sealed *body* envelopes beside them, so a retraction can delete it.
//!
//! A send seals each message's text as a [`Kind::Body`] envelope (under the
//! epoch key, signed, its header naming the change that carries the skeleton:
//! same document, actor and seq), then writes the skeletons (`body` = the body
//! envelope's id) in one change. Bodies ride beside that change's envelope to
//! every peer, replicators included, and are stored apart from the log
//! (`sides-1`). Edits are new entries with new bodies; reactions and room
//! settings are plain document writes.
//!
//! A retraction writes a marker into the current document and signs a
//! [`Kind::Tombstone`] naming every body of the message (its text and its
//! edits). Every node that receives the tombstone, replicators included,
//! deletes those bodies if the tombstone may: its author is the bodies'
//! author's user, or an owner or admin of the space at its control heads. A
//! body arriving after its tombstone is checked the same way and never stored.
//! So the text leaves the readable state of every node: it was never in the
//! document, the inbox keeps references only, and the body's ciphertext is
//! deleted. What a node already showed, or a malicious member copied, is out
//! of reach, as in every messenger.

mod copies;
mod sweep;

use outpost_crdt::chat::{self as model, ChatDoc, RoomWrite, Write, msg_ref, parse_ref};

use super::{
    docs::{member_users, mentioned},
    files::{FileRef, FileView, MAX_FILE_NAME_BYTES},
    inbox::InboxRow,
    space::actor_key,
    *,
};

/// A body's plaintext. postcard: append variants, never reorder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum BodyPlain {
    V1 {
        text: String,
    },
    /// A text with an attachment (its key included).
    V2 {
        text: String,
        file: Option<FileRef>,
    },
    /// A copy of another message, sealed again by an owner or admin for
    /// members who cannot read the original's epoch ([`copies`]): its text
    /// and file then, its author and time as the copy's writer states them.
    Copy {
        text: String,
        file: Option<FileRef>,
        author: DeviceId,
        sent_at_ms: i64,
    },
}

impl BodyPlain {
    fn new(text: &str, file: Option<FileRef>) -> Self {
        match file {
            None => BodyPlain::V1 { text: text.to_string() },
            file => BodyPlain::V2 {
                text: text.to_string(),
                file,
            },
        }
    }

    /// Decrypts a body envelope's plaintext with its epoch's key and parses it.
    fn open(env: &Envelope, key: &EpochKey) -> Option<Self> {
        postcard::from_bytes(&env.open_value(key).ok()?).ok()
    }

    /// The text and the file. A body comes from a peer: a file that fails
    /// [`FileRef::check`] is left out here, the one place every reader of
    /// a body's file goes through, and its message shows as text only.
    pub(super) fn into_parts(self) -> (String, Option<FileRef>) {
        let (text, file) = match self {
            BodyPlain::V1 { text } => (text, None),
            BodyPlain::V2 { text, file } | BodyPlain::Copy { text, file, .. } => (text, file),
        };
        let file = file.filter(|f| match f.check() {
            Ok(()) => true,
            Err(error) => {
                debug!(file = %f.id.fmt_short(), %error, "a message's file is refused; showing its text only");
                false
            }
        });
        (text, file)
    }
}

/// A chat body envelope's text and attachment, read with its epoch's key as a
/// member's node reads a body it stores or shows: decrypted, parsed, the file
/// checked. `None` when `env` is no [`Kind::Body`] (an Automerge change is a
/// [`Kind::Content`] envelope: [`Envelope::open_content`]), the key does not
/// open it, or its plaintext is no body.
pub fn read_body(env: &Envelope, key: &EpochKey) -> Option<(String, Option<FileRef>)> {
    if env.header().kind != Kind::Body {
        return None;
    }
    BodyPlain::open(env, key).map(BodyPlain::into_parts)
}

/// A message to send.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outgoing {
    pub text: String,
    /// The message this one answers (an id or a unique prefix).
    #[serde(default)]
    pub reply_to: Option<String>,
    /// A retried request with the same id is stored once.
    #[serde(default)]
    pub client_id: Option<String>,
    /// An attachment imported by this node (never from JSON: the local API
    /// imports the file's bytes and sets it).
    #[serde(skip)]
    pub file: Option<FileRef>,
}

pub(super) type PendingSend = (Outgoing, Reply<Sent>);

/// A change to a room other than a new message.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatOp {
    /// A new text for one of this user's messages (the old ones stay in its history).
    Edit { message: String, text: String },
    /// Removes a message's text from every node: its author, within the
    /// room's window, or an owner or admin at any time.
    Retract { message: String },
    /// This user's reaction (an emoji or a short word), added or taken back.
    React { message: String, emoji: String, on: bool },
    /// Owners and admins: the room's topic ("" clears it).
    Topic { text: String },
    /// Owners and admins: the message newcomers are shown ("" clears it).
    Welcome { text: String },
    /// Owners and admins: posts `text` and pins it as the room's announcement.
    Announce { text: String },
    /// Owners and admins: pins or unpins a message.
    Pin { message: String, on: bool },
    /// Owners and admins: how long authors may retract their messages (seconds).
    RetractWindow { seconds: i64 },
}

impl ChatOp {
    /// The message the op is about, if any.
    fn message(&self) -> Option<&str> {
        match self {
            ChatOp::Edit { message, .. }
            | ChatOp::Retract { message }
            | ChatOp::React { message, .. }
            | ChatOp::Pin { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// A direct-message room: found, or made now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectRoom {
    pub space: SpaceId,
    pub created: bool,
}

/// What a [`ChatOp`] did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatDone {
    /// The room it changed.
    pub space: SpaceId,
    /// The message it concerns (a new one for `Announce`).
    pub message: Option<String>,
    /// Bodies deleted here (a retraction).
    #[serde(default)]
    pub deleted: usize,
}

/// An earlier text of an edited message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditView {
    pub text: Option<String>,
    /// When it was written (claimed by its author).
    pub at_ms: i64,
}

/// The users who reacted with one emoji.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactionView {
    pub emoji: String,
    pub users: Vec<String>,
}

/// Who retracted a message, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetractedView {
    pub by: DeviceId,
    pub at_ms: i64,
}

/// A room's settings, as `chat info` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomView {
    pub topic: Option<String>,
    pub welcome: Option<String>,
    /// The pinned announcement.
    pub announcement: Option<MessageView>,
    pub pinned: Vec<MessageView>,
    pub retract_window_s: i64,
}

/// A message as the API shows it; only replicated fields, identical on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    pub id: String,
    pub author: DeviceId,
    /// The author's user, when this node knows the author's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserId>,
    /// The current text: the newest edit's, the original's, or empty when
    /// retracted or when its body has not arrived (`missing`).
    pub text: String,
    /// Author's claimed send time (ms since the Unix epoch); never used for order.
    pub sent_at_ms: i64,
    pub lamport: u64,
    /// The id of the message this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Users mentioned (user ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
    /// Mentions everyone (`@all`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    /// Earlier texts, oldest first (the original first); empty when never edited.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<EditView>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retracted: Option<RetractedView>,
    /// The users, other than its author, who have read it (on any of their
    /// devices), as far as their receipts reached this node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_by: Vec<UserId>,
    /// The body has not reached this node yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
    /// The attached file (`outpost file get ID` fetches it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileView>,
}

/// What a stored body gives.
enum BodyText {
    Text(String, Option<FileRef>),
    /// Not held (not arrived yet, or deleted).
    Missing,
}

/// A chat message skeleton found by a person's name for it.
struct Found {
    doc: DocId,
    message: model::Message,
}

/// Messages a room's shard holds before its writers open the next one
/// (design: 5–10k): a shard is what a node loads to show a room's latest
/// messages, and what it snapshots and could set aside whole.
pub const SHARD_MESSAGES: usize = 5_000;

impl Core {
    /// Where this device writes a room's new messages: the highest shard of
    /// the run it writes (the room's, or in a from-join room the current
    /// epoch's), or the next one once that holds [`Core::shard_messages`]
    /// messages. A room's settings stay in the run's first document (`target`
    /// as `write_target` made it); in a from-join room that document holds
    /// no messages (see `core::shards`), so they start at shard 1.
    fn message_target(&mut self, space_id: SpaceId, target: WriteTarget) -> WriteTarget {
        let space = &self.spaces[&space_id];
        let Some(readable) = space.readable.as_ref() else {
            return target;
        };
        let state = &space.state;
        let first = match state.history {
            History::Shared => 0,
            History::FromJoin => 1,
        };
        let last = readable
            .docs
            .iter()
            .filter_map(|(doc, shard)| Some((state.shard_place(doc, &shard.epoch.id)?, shard)))
            .filter(|((run, k), _)| *run == target.doc && *k >= first)
            .max_by_key(|((_, k), _)| *k);
        let k = match last {
            Some(((_, k), shard)) if shard.doc.chat().is_some_and(|c| c.len() >= self.shard_messages) => {
                k.saturating_add(1)
            }
            Some(((_, k), _)) => k,
            None => first,
        };
        let doc = state.shard(&target.epoch.id, k);
        self.writer_in(target, doc)
    }

    /// Where this device writes what points at a message of `doc` (an edit,
    /// a reaction, a retraction): that message's own shard, so that all that
    /// is said about a message is read from the one document holding it (a
    /// closed shard is loaded whole or not at all). In a from-join room, a
    /// message of an earlier epoch's run is sealed under a key nobody writes
    /// with any more: what points at it goes into the current epoch's first
    /// document (`settings`), which every reader keeps loaded.
    fn target_of_message(&mut self, space_id: SpaceId, settings: WriteTarget, doc: DocId) -> WriteTarget {
        let same_run = self.spaces[&space_id]
            .state
            .shard_place(&doc, &settings.epoch.id)
            .is_some_and(|(run, _)| run == settings.doc);
        if same_run {
            self.writer_in(settings, doc)
        } else {
            settings
        }
    }

    /// `target` moved to document `doc` of its space: this run's writer there.
    fn writer_in(&mut self, target: WriteTarget, doc: DocId) -> WriteTarget {
        if doc == target.doc {
            return target;
        }
        let incarnation = *self.incarnations.entry(doc).or_insert_with(rand::random);
        WriteTarget {
            actor: outpost_crdt::writer::actor_id(&self.me.0, &doc, incarnation),
            doc,
            incarnation,
            ..target
        }
    }

    /// Posts every waiting send of one space as one Automerge change, each
    /// message's text in its own body envelope.
    pub(super) fn send_group(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        group: Vec<PendingSend>,
        effects: &mut Effects,
    ) -> store::Result<()> {
        let target = match self.write_target(tx, space_id, SpaceKind::Chat, effects)? {
            Ok(target) => self.message_target(space_id, target),
            Err(e) => {
                for (_, reply) in group {
                    let _ = reply.send(Err(e.clone()));
                }
                return Ok(());
            }
        };
        let mut posts = Vec::new();
        let mut waiting: Vec<(String, Option<String>, Reply<Sent>)> = Vec::new();
        let mut files: Vec<Option<FileRef>> = Vec::new();
        let mut batch_ids: HashMap<String, String> = HashMap::new();
        for (out, reply) in group {
            if let Some(name) = &out.reply_to {
                self.bring_message(space_id, name)?;
            }
            let prepared = self.prepare_post(space_id, &out);
            let (text, reply_to) = match prepared {
                Ok(p) => p,
                Err(e) => {
                    let _ = reply.send(Err(e));
                    continue;
                }
            };
            if let Some(cid) = &out.client_id
                && let Some(id) = self
                    .store
                    .client_id(&space_id, cid)?
                    .or_else(|| batch_ids.get(cid).cloned())
            {
                // A retry: its file was imported again, under a new key, so
                // nothing names it unless the original did; an orphan goes.
                if let Some(file) = &out.file
                    && !files.iter().flatten().any(|f| f.id == file.id)
                    && tx.files_of(&file.id)?.is_empty()
                {
                    self.dropped_files.insert(file.id);
                }
                effects.reply(reply, Sent { id, duplicate: true });
                continue;
            }
            let id = new_message_id();
            if let Some(cid) = &out.client_id {
                batch_ids.insert(cid.clone(), id.clone());
            }
            posts.push((id.clone(), text, reply_to));
            files.push(out.file);
            waiting.push((id, out.client_id, reply));
        }
        if posts.is_empty() {
            return Ok(());
        }
        let space = &self.spaces[&space_id];
        let (members, aliases) = (member_users(space), self.mention_aliases());
        let bodies = self.seal_bodies(
            space_id,
            &target,
            posts
                .iter()
                .zip(&files)
                .map(|((_, text, _), file)| BodyPlain::new(text, file.clone())),
        );
        let writes: Vec<Write> = posts
            .iter()
            .zip(&bodies)
            .map(|((id, text, reply_to), body)| {
                let (mentions, all) = mentions_in(text, &members, &aliases);
                Write::Post(model::NewMessage {
                    id: id.clone(),
                    body: body.id().to_string(),
                    reply_to: reply_to.clone(),
                    mentions,
                    all,
                })
            })
            .collect();
        let files: Vec<(crate::blobs::BlobId, EnvelopeId)> = files
            .iter()
            .zip(&bodies)
            .filter_map(|(file, body)| file.as_ref().map(|f| (f.id, body.id())))
            .collect();
        let result = self.write_chat(tx, space_id, &target, &writes, bodies, effects)?;
        if result.is_ok() {
            for (file, body) in files {
                tx.put_file(&file, &space_id, &body)?;
            }
        }
        for (id, client_id, reply) in waiting {
            match &result {
                Ok(()) => {
                    if let Some(cid) = client_id {
                        tx.put_client_id(&space_id, &cid, &id)?;
                    }
                    effects.reply(reply, Sent { id, duplicate: false });
                }
                Err(e) => {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
        Ok(())
    }

    /// The direct-message room of this user and the user `who` names (a
    /// card, a device id, or a user id this node has met): the one that
    /// exists, or a new one. Both users are owners; it is an ordinary room
    /// whose sealed name marks it (`dm:USER:USER`, the ids sorted), so only
    /// its members know it is a DM.
    pub(super) fn direct_room(
        &mut self,
        tx: &mut Txn,
        who: &str,
        effects: &mut Effects,
    ) -> store::Result<Result<DirectRoom>> {
        let cert = match self.resolve_cert(who) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let me = self.keys.user_id();
        if cert.user == me {
            return Ok(Err(Error::Invalid(
                "a direct message goes to someone else: name another user".into(),
            )));
        }
        let name = dm_name(me, cert.user);
        let existing = self.spaces.values().find(|s| {
            s.state.kind == SpaceKind::Chat
                && s.name.as_deref() == Some(name.as_str())
                && s.state.members.contains_key(&self.me)
        });
        if let Some(space) = existing {
            return Ok(Ok(DirectRoom {
                space: space.state.space,
                created: false,
            }));
        }
        let room = NewSpace {
            name,
            kind: SpaceKind::Chat,
            history: History::Shared,
            posting: Posting::Writers,
            department: None,
            members: vec![cert.to_card()],
            replicators: Vec::new(),
        };
        let space = match self.create_chat(tx, &room, effects)? {
            Ok(space) => space,
            Err(e) => return Ok(Err(e)),
        };
        // Both run the room alike: the other user is an owner too.
        let change = MemberChange::SetRole(cert.device.to_string(), Role::Owner);
        if let Err(e) = self.change_members(tx, space, change, effects)? {
            return Ok(Err(e));
        }
        Ok(Ok(DirectRoom { space, created: true }))
    }

    /// Checks one send: its size, and the message it answers.
    fn prepare_post(&self, space_id: SpaceId, out: &Outgoing) -> Result<(String, Option<String>)> {
        if out.client_id.as_ref().is_some_and(|c| c.len() > MAX_CLIENT_ID_BYTES) {
            return Err(Error::Invalid(format!(
                "a client id is at most {MAX_CLIENT_ID_BYTES} bytes"
            )));
        }
        check_text(&out.text)?;
        if let Some(file) = &out.file {
            file.check().map_err(|e| Error::Invalid(e.to_string()))?;
        }
        let reply_to = match &out.reply_to {
            None => None,
            Some(name) => {
                let found = self.find_message(space_id, name)?;
                Some(msg_ref(&found.doc, &found.message.id))
            }
        };
        Ok((out.text.clone(), reply_to))
    }

    /// The seq of the change `target`'s writer makes next (its writer is this
    /// run's own: nothing else can take it).
    fn next_seq(&self, space_id: SpaceId, target: &WriteTarget) -> u64 {
        let space = &self.spaces[&space_id];
        space
            .last_env
            .get(&actor_key(&target.actor))
            .map_or(1, |(seq, _)| seq + 1)
    }

    /// The header of a side envelope of `kind` riding with the change
    /// `target`'s writer makes next.
    fn side_header(&self, space_id: SpaceId, target: &WriteTarget, kind: Kind) -> Header {
        Header {
            kind,
            space: space_id,
            doc: target.doc,
            epoch: target.epoch.id,
            author: self.me,
            incarnation: target.incarnation,
            seq: self.next_seq(space_id, target),
            parents: Vec::new(),
            control_heads: self.spaces[&space_id].state.heads(),
        }
    }

    /// Seals each body as an envelope of the change `target`'s writer makes next.
    fn seal_bodies(
        &self,
        space_id: SpaceId,
        target: &WriteTarget,
        bodies: impl IntoIterator<Item = BodyPlain>,
    ) -> Vec<Envelope> {
        bodies
            .into_iter()
            .map(|body| {
                let header = self.side_header(space_id, target, Kind::Body);
                let plain = postcard::to_stdvec(&body).expect("bodies serialize");
                Envelope::seal_value(&self.keys, header, &target.key, &plain)
            })
            .collect()
    }

    /// Writes `writes` into `target`'s document as one change, sealed with its
    /// side envelopes (bodies, a tombstone), which are stored and pushed after it.
    fn write_chat(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        target: &WriteTarget,
        writes: &[Write],
        sides: Vec<Envelope>,
        effects: &mut Effects,
    ) -> store::Result<Result<()>> {
        let expected_seq = self.next_seq(space_id, target);
        let space = self.spaces.get_mut(&space_id).expect("write_target found it");
        let readable = space.readable.as_mut().expect("write_target checked the key");
        if readable.recent.contains(&target.doc) {
            readable.dirty.insert(target.doc);
        }
        let shard = readable.shard_mut(target.doc, &target.epoch);
        let chat = shard.doc.chat_mut().expect("write_target checked the space is a chat");
        let change = match chat.write(
            target.actor.clone(),
            &target.author,
            writes,
            crate::clock::now_ms() as i64,
        ) {
            Ok(c) => c,
            Err(e) => return Ok(Err(Error::Invalid(format!("the room refused the write: {e}")))),
        };
        // The sides name this seq; the writer is this run's own, so nothing else
        // can have taken it.
        if change.seq() != expected_seq {
            warn!(space = %space_id.fmt_short(), "a chat change got an unexpected seq; the write is refused and the document reloads");
            return Err(store::Error::Unavailable);
        }
        let created: Vec<model::Message> = writes
            .iter()
            .filter_map(|w| match w {
                Write::Post(m) => chat.message(&m.id),
                _ => None,
            })
            .collect();
        let updates = writes.iter().any(|w| !matches!(w, Write::Post(_)));
        if let Err(e) = self.seal_local(tx, space_id, target, &change, effects)? {
            return Ok(Err(e));
        }
        let space = self.spaces.get_mut(&space_id).expect("found above");
        let actor = actor_key(&target.actor);
        let mut pushed = Vec::new();
        for side in sides {
            tx.put_side(&space_id, &actor, change.seq(), &side.id(), side.as_bytes())?;
            space.sides_held += 1;
            pushed.push(side.into_bytes());
        }
        // The sides go out in the same push as their change (`seal_local`
        // announced it last), so a peer gets them together.
        match effects.events.last_mut() {
            Some(Event::Stored {
                space: s, envelopes, ..
            }) if *s == space_id => Arc::make_mut(envelopes).append(&mut pushed),
            _ if !pushed.is_empty() => effects.events.push(stored_event(space, pushed, None)),
            _ => {}
        }
        effects.chat.extend(created.into_iter().map(|m| (space_id, m)));
        if updates {
            effects.chat_updated.entry(space_id).or_default().insert(target.doc);
        }
        Ok(Ok(()))
    }

    /// Edits, retracts, reacts or changes the room's settings. Without a
    /// room, the op's message is looked for in every room this device reads.
    pub(super) fn chat_write(
        &mut self,
        tx: &mut Txn,
        space: Option<SpaceId>,
        op: ChatOp,
        effects: &mut Effects,
    ) -> store::Result<Result<ChatDone>> {
        // A message in a closed shard set aside is found once that is loaded.
        if let Some(name) = op.message() {
            let rooms: Vec<SpaceId> = match space {
                Some(space) => vec![space],
                None => self.spaces.keys().copied().collect(),
            };
            for room in rooms {
                self.bring_message(room, name)?;
            }
        }
        let space_id = match (space, op.message()) {
            (Some(space), _) => space,
            (None, Some(name)) => match self.room_with_message(name) {
                Ok(space) => space,
                Err(e) => return Ok(Err(e)),
            },
            (None, None) => return Ok(Err(Error::Invalid("name the room this setting is for".into()))),
        };
        // Settings go into the room's first document, new messages into its
        // current shard, and edits, reactions and retractions into the shard
        // of the message they point at.
        let settings = match self.write_target(tx, space_id, SpaceKind::Chat, effects)? {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let pointed = match (&op, op.message()) {
            (ChatOp::Edit { .. } | ChatOp::Retract { .. } | ChatOp::React { .. }, Some(name)) => {
                match self.find_message(space_id, name) {
                    Ok(found) => Some(found.doc),
                    Err(e) => return Ok(Err(e)),
                }
            }
            _ => None,
        };
        let target = match pointed {
            Some(doc) => self.target_of_message(space_id, settings.clone(), doc),
            None => self.message_target(space_id, settings.clone()),
        };
        let admin = target.author.admin;
        let mut room_writes = Vec::new();
        let found = |name: &str| self.find_message(space_id, name);
        let not_admin = || Error::NotAllowed("only the room's owners and admins change its settings".into());
        let mut sides = Vec::new();
        let mut done = ChatDone {
            space: space_id,
            message: None,
            deleted: 0,
        };
        let writes = match op {
            ChatOp::Edit { message, text } => {
                if let Err(e) = check_text(&text) {
                    return Ok(Err(e));
                }
                let found = match found(&message) {
                    Ok(f) => f,
                    Err(e) => return Ok(Err(e)),
                };
                if !self.is_mine(space_id, &found.message) {
                    return Ok(Err(Error::NotAllowed("only a message's author edits it".into())));
                }
                if self.retraction_of(space_id, &found).is_some() {
                    return Ok(Err(Error::Invalid("this message was retracted".into())));
                }
                sides = self.seal_bodies(space_id, &target, [BodyPlain::new(&text, None)]);
                done.message = Some(found.message.id.clone());
                vec![Write::Edit {
                    id: new_message_id(),
                    target: msg_ref(&found.doc, &found.message.id),
                    body: sides[0].id().to_string(),
                }]
            }
            ChatOp::Retract { message } => {
                let found = match found(&message) {
                    Ok(f) => f,
                    Err(e) => return Ok(Err(e)),
                };
                if let Err(e) = self.may_retract(space_id, &found, admin) {
                    return Ok(Err(e));
                }
                let bodies = self.bodies_of(space_id, &found);
                let (marker, tombstone) = self.sign_retraction(space_id, &target, &found, &bodies);
                sides.push(tombstone);
                done.message = Some(found.message.id.clone());
                vec![marker]
            }
            ChatOp::React { message, emoji, on } => {
                let found = match found(&message) {
                    Ok(f) => f,
                    Err(e) => return Ok(Err(e)),
                };
                let emoji = emoji.trim().to_string();
                if !model::is_reaction(&emoji) {
                    return Ok(Err(Error::Invalid(format!(
                        "a reaction is one emoji or word of at most {} bytes, without spaces",
                        model::MAX_REACTION_BYTES
                    ))));
                }
                done.message = Some(found.message.id.clone());
                vec![Write::React {
                    target: msg_ref(&found.doc, &found.message.id),
                    emoji,
                    on,
                }]
            }
            ChatOp::Topic { .. }
            | ChatOp::Welcome { .. }
            | ChatOp::Announce { .. }
            | ChatOp::Pin { .. }
            | ChatOp::RetractWindow { .. }
                if !admin =>
            {
                return Ok(Err(not_admin()));
            }
            ChatOp::Topic { text } => {
                if text.len() > model::MAX_TOPIC_BYTES {
                    return Ok(Err(Error::Invalid(format!(
                        "a topic is at most {} bytes",
                        model::MAX_TOPIC_BYTES
                    ))));
                }
                vec![Write::Room(RoomWrite::Topic(text))]
            }
            ChatOp::Welcome { text } => {
                if text.len() > model::MAX_WELCOME_BYTES {
                    return Ok(Err(Error::Invalid(format!(
                        "a welcome message is at most {} bytes",
                        model::MAX_WELCOME_BYTES
                    ))));
                }
                vec![Write::Room(RoomWrite::Welcome(text))]
            }
            ChatOp::Announce { text } => {
                if let Err(e) = check_text(&text) {
                    return Ok(Err(e));
                }
                let space = &self.spaces[&space_id];
                let (mentions, all) = mentions_in(&text, &member_users(space), &self.mention_aliases());
                sides = self.seal_bodies(space_id, &target, [BodyPlain::new(&text, None)]);
                let id = new_message_id();
                done.message = Some(id.clone());
                let target_ref = msg_ref(&target.doc, &id);
                let writes = vec![Write::Post(model::NewMessage {
                    id,
                    body: sides[0].id().to_string(),
                    reply_to: None,
                    mentions,
                    all,
                })];
                room_writes = vec![
                    Write::Room(RoomWrite::Announcement(Some(target_ref.clone()))),
                    Write::Room(RoomWrite::Pin(target_ref, true)),
                ];
                writes
            }
            ChatOp::Pin { message, on } => {
                let target = match found(&message) {
                    Ok(f) => msg_ref(&f.doc, &f.message.id),
                    // A message from before this device joined a from-join
                    // room shows by its copy: unpinned by its pin.
                    Err(Error::NotFound(e)) => match pinned_named(&Self::room_of(&self.spaces[&space_id]), &message) {
                        Some(pinned) if !on => pinned,
                        _ => return Ok(Err(Error::NotFound(e))),
                    },
                    Err(e) => return Ok(Err(e)),
                };
                done.message = parse_ref(&target).map(|(_, id)| id.to_string());
                vec![Write::Room(RoomWrite::Pin(target, on))]
            }
            ChatOp::RetractWindow { seconds } => {
                if !(0..=model::MAX_RETRACT_WINDOW_S).contains(&seconds) {
                    return Ok(Err(Error::Invalid(format!(
                        "the retraction window is 0 to {} seconds",
                        model::MAX_RETRACT_WINDOW_S
                    ))));
                }
                vec![Write::Room(RoomWrite::RetractWindow(seconds))]
            }
        };
        let (writes, room_writes) = if writes.iter().all(|w| matches!(w, Write::Room(_))) {
            (Vec::new(), writes)
        } else {
            (writes, room_writes)
        };
        let (room_writes, copies) = if room_writes.is_empty() {
            (room_writes, Vec::new())
        } else {
            let room_writes = [self.carried_settings(space_id, &settings), room_writes].concat();
            let shown = copies::shown_after(&Self::room_of(&self.spaces[&space_id]), &room_writes);
            let (copy_writes, copies) = self.copies_for(tx, space_id, &settings, &shown)?;
            ([room_writes, copy_writes].concat(), copies)
        };
        let tombstone = sides.iter().find(|s| s.header().kind == Kind::Tombstone).cloned();
        let (writes, room_writes, sides, copies) = if target.doc == settings.doc {
            (
                [writes, room_writes].concat(),
                Vec::new(),
                [sides, copies].concat(),
                Vec::new(),
            )
        } else {
            (writes, room_writes, sides, copies)
        };
        if !writes.is_empty()
            && let Err(e) = self.write_chat(tx, space_id, &target, &writes, sides, effects)?
        {
            return Ok(Err(e));
        }
        if !room_writes.is_empty()
            && let Err(e) = self.write_chat(tx, space_id, &settings, &room_writes, copies, effects)?
        {
            return Ok(Err(e));
        }
        // Deleted here only once the retraction is sealed and stored.
        if let Some(tombstone) = tombstone {
            done.deleted = self.apply_tombstone(tx, space_id, &tombstone)?;
        }
        Ok(Ok(done))
    }

    /// The one room holding a message named `name` (an id or a unique prefix).
    fn room_with_message(&self, name: &str) -> Result<SpaceId> {
        let rooms: Vec<SpaceId> = self
            .spaces
            .values()
            .filter(|s| {
                s.readable
                    .as_ref()
                    .is_some_and(|r| r.model == outpost_crdt::doc::Model::Chat)
            })
            .filter(|s| {
                !matches!(self.find_message(s.state.space, name), Err(Error::NotFound(_)))
                    || pinned_named(&Self::room_of(s), name).is_some()
            })
            .map(|s| s.state.space)
            .collect();
        match rooms.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::NotFound(format!(
                "no message `{}` in any room here (`chat log ROOM` shows message ids)",
                name.trim()
            ))),
            _ => Err(Error::Invalid(format!(
                "`{}` names messages in several rooms: give more of the id, or the room",
                name.trim()
            ))),
        }
    }

    /// A message of `space_id` by its id or a unique prefix of it.
    fn find_message(&self, space_id: SpaceId, name: &str) -> Result<Found> {
        let space = self.spaces.get(&space_id).ok_or(Error::UnknownSpace(space_id))?;
        let readable = readable_of(space)?;
        let name = name.trim().to_lowercase();
        if name.is_empty() {
            return Err(Error::Invalid(
                "name a message by its id (`chat log` shows them)".into(),
            ));
        }
        let mut found: Vec<Found> = Vec::new();
        for (doc, shard) in &readable.docs {
            let Some(chat) = shard.doc.chat() else { continue };
            if chat.message(&name).is_some() {
                let same: Vec<model::Message> = chat.messages().into_iter().filter(|m| m.id == name).collect();
                if let [message] = same.as_slice() {
                    return Ok(Found {
                        doc: *doc,
                        message: message.clone(),
                    });
                }
                return Err(Error::Invalid(format!(
                    "`{name}` names {} messages written concurrently under one id; this one cannot be named",
                    same.len()
                )));
            }
            if found.len() < 2 {
                found.extend(
                    chat.messages()
                        .into_iter()
                        .filter(|m| m.id.starts_with(&name))
                        .take(2)
                        .map(|message| Found { doc: *doc, message }),
                );
            }
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(Error::NotFound(format!(
                "no message `{name}` in this room (`chat log` shows message ids)"
            ))),
            _ => Err(Error::Invalid(format!(
                "`{name}` names several messages: give more of the id"
            ))),
        }
    }

    /// Whether `message` was written by this device's user.
    fn is_mine(&self, space_id: SpaceId, message: &model::Message) -> bool {
        let space = &self.spaces[&space_id];
        let author = space.readable.as_ref().map(|r| r.author_of(&message.actor));
        author.is_some_and(|d| self.user_of(space, &d) == Some(self.keys.user_id()))
    }

    /// The user a device of `space` belongs to, as far as this node knows.
    pub(super) fn user_of(&self, space: &Space, device: &DeviceId) -> Option<UserId> {
        if *device == self.me {
            return Some(self.keys.user_id());
        }
        space
            .state
            .members
            .get(device)
            .map(|m| m.cert.user)
            .or_else(|| self.certs.get(device).map(|c| c.user))
    }

    /// Refuses a retraction this device may not make: not its user's message
    /// and not an admin, or past the room's window.
    fn may_retract(&self, space_id: SpaceId, found: &Found, admin: bool) -> Result<()> {
        if self.retraction_of(space_id, found).is_some() {
            return Err(Error::Invalid("this message is already retracted".into()));
        }
        if admin {
            return Ok(());
        }
        if !self.is_mine(space_id, &found.message) {
            return Err(Error::NotAllowed(
                "only a message's author, or an owner or admin of the room, retracts it".into(),
            ));
        }
        let window = self
            .spaces
            .get(&space_id)
            .map_or(0, |s| Self::room_of(s).retract_window_s);
        let age_ms = crate::clock::now_ms() as i64 - found.message.sent_at_ms;
        if age_ms > window.saturating_mul(1000) {
            return Err(Error::NotAllowed(format!(
                "this room lets authors retract their messages for {} after sending; ask an owner or admin",
                human_duration(window)
            )));
        }
        Ok(())
    }

    /// The room's settings: those of its first document, or in a from-join
    /// room those of the newest epoch whose first document has any (a new
    /// epoch starts with none; the first settings written into it carry the
    /// earlier ones over, see [`Core::carried_settings`]).
    fn room_of(space: &Space) -> model::Room {
        let newest = space.readable.as_ref().and_then(|r| {
            r.ordered(&space.state)
                .into_iter()
                .rev()
                .filter(|(doc, shard)| **doc == space.state.content_doc(&shard.epoch.id))
                .filter_map(|(_, shard)| Some(shard.doc.chat()?.room()))
                .find(|room| !room.is_unset())
        });
        newest.unwrap_or_else(|| ChatDoc::new(space.main_doc()).room())
    }

    /// After this device started a from-join room's new epoch for a
    /// newcomer: the room's settings are written into the epoch's first
    /// document, so the newcomer sees the topic and the welcome message, with
    /// copies of the announced and pinned messages it cannot read
    /// ([`copies`]). Only owners and admins write settings (and only they
    /// add another user).
    pub(super) fn carry_settings_to_newcomers(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        effects: &mut Effects,
    ) -> store::Result<()> {
        let space = &self.spaces[&space_id];
        let admin = space.state.members.get(&self.me).is_some_and(|m| m.role >= Role::Admin);
        if space.state.history != History::FromJoin || space.state.kind != SpaceKind::Chat || !admin {
            return Ok(());
        }
        let target = match self.write_target(tx, space_id, SpaceKind::Chat, effects)? {
            Ok(target) => target,
            Err(e) => {
                warn!(space = %space_id.fmt_short(), error = %e, "the room's settings were not carried into the new epoch");
                return Ok(());
            }
        };
        let mut writes = self.carried_settings(space_id, &target);
        let shown = copies::shown_after(&Self::room_of(&self.spaces[&space_id]), &[]);
        let (copy_writes, copies) = self.copies_for(tx, space_id, &target, &shown)?;
        writes.extend(copy_writes);
        if writes.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.write_chat(tx, space_id, &target, &writes, copies, effects)? {
            warn!(space = %space_id.fmt_short(), error = %e, "the room's settings were not carried into the new epoch");
        }
        Ok(())
    }

    /// In a from-join room, settings written into an epoch's first document
    /// that holds none yet start with the room's settings until then (read
    /// from earlier epochs), so changing one setting keeps the others.
    fn carried_settings(&self, space_id: SpaceId, settings: &WriteTarget) -> Vec<Write> {
        let space = &self.spaces[&space_id];
        let fresh = space
            .readable
            .as_ref()
            .and_then(|r| r.docs.get(&settings.doc))
            .and_then(|s| s.doc.chat())
            .is_none_or(|chat| chat.room().is_unset());
        if space.state.history != History::FromJoin || !fresh {
            return Vec::new();
        }
        Self::room_of(space).writes().into_iter().map(Write::Room).collect()
    }

    /// A retraction of `found`, written into `target`: its marker, and the
    /// tombstone naming `bodies` that rides beside it.
    fn sign_retraction(
        &self,
        space_id: SpaceId,
        target: &WriteTarget,
        found: &Found,
        bodies: &[EnvelopeId],
    ) -> (Write, Envelope) {
        let header = self.side_header(space_id, target, Kind::Tombstone);
        let bodies = &bodies[..bodies.len().min(crate::envelope::MAX_TOMBSTONE_TARGETS)];
        let marker = Write::Retract {
            target: msg_ref(&found.doc, &found.message.id),
        };
        (marker, Envelope::sign_tombstone(&self.keys, header, bodies))
    }

    /// Every body of a message: its text, then its author's edits, then its
    /// copies.
    fn bodies_of(&self, space_id: SpaceId, found: &Found) -> Vec<EnvelopeId> {
        let target = msg_ref(&found.doc, &found.message.id);
        let mut out: Vec<EnvelopeId> = found.message.body.parse().into_iter().collect();
        let space = &self.spaces[&space_id];
        let Some(readable) = &space.readable else { return out };
        let author = self.user_of(space, &readable.author_of(&found.message.actor));
        for speaker in Speaker::all(space, readable, Some(&[found.doc])) {
            for edit in speaker.chat.edits() {
                if edit.target == target
                    && author.is_some()
                    && self.user_of(space, &readable.author_of(&edit.actor)) == author
                    && let Ok(id) = edit.body.parse()
                {
                    out.push(id);
                }
            }
        }
        out.extend(self.copy_bodies(space, &target));
        out.truncate(crate::envelope::MAX_TOMBSTONE_TARGETS);
        out
    }

    /// The tombstone in effect on a message's body, with its author.
    fn retraction_of(&self, space_id: SpaceId, found: &Found) -> Option<(Envelope, DeviceId)> {
        let body: EnvelopeId = found.message.body.parse().ok()?;
        let space = &self.spaces[&space_id];
        let author = space.readable.as_ref()?.author_of(&found.message.actor);
        let tomb = self.deleting(space, self.store.tombstones(&space_id, &body).ok()?, &author)?;
        let by = tomb.header().author;
        Some((tomb, by))
    }

    /// The first of `tombstones` (their bytes) that may delete a body written
    /// by device `author`.
    fn deleting(&self, space: &Space, tombstones: Vec<Vec<u8>>, author: &DeviceId) -> Option<Envelope> {
        tombstones
            .into_iter()
            .filter_map(|b| Envelope::decode_stored(b).ok())
            .find(|t| self.tombstone_may_delete(space, t, author))
    }

    /// Whether `tombstone` may delete a body written by device `body_author`:
    /// its author is the same user, or an owner or admin at its control heads.
    pub(super) fn tombstone_may_delete(&self, space: &Space, tombstone: &Envelope, body_author: &DeviceId) -> bool {
        let h = tombstone.header();
        let Some(resolved) = space.state.resolved(&h.control_heads) else {
            return false;
        };
        let Some(member) = resolved.members.get(&h.author) else {
            return false;
        };
        member.role >= Role::Admin
            || h.author == *body_author
            || self.user_of(space, body_author).is_some_and(|u| u == member.cert.user)
    }

    /// Deletes the bodies `tombstone` names that it may delete, and records it
    /// for those not held yet; returns how many were deleted here.
    pub(super) fn apply_tombstone(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        tombstone: &Envelope,
    ) -> store::Result<usize> {
        let mut deleted = BTreeSet::new();
        for body_id in tombstone.tombstone_targets() {
            // Recorded whatever it may do: a body arriving later is checked
            // against every tombstone naming it.
            tx.put_tombstoned(&space_id, &body_id, &tombstone.id())?;
            let Some(bytes) = tx.side(&space_id, &body_id)? else {
                continue;
            };
            let Ok(body) = Envelope::decode_stored(bytes) else {
                continue;
            };
            let space = &self.spaces[&space_id];
            let h = body.header();
            if h.kind != Kind::Body || !self.tombstone_may_delete(space, tombstone, &h.author) {
                continue;
            }
            self.forget_file(tx, space_id, &body)?;
            if tx.delete_side(&space_id, &h.actor(), h.seq, &body_id)? {
                deleted.insert(body_id);
                if let Some(space) = self.spaces.get_mut(&space_id) {
                    space.sides_held = space.sides_held.saturating_sub(1);
                }
            }
        }
        self.purge_notifications(tx, space_id, tombstone, &deleted)?;
        Ok(deleted.len())
    }

    /// A retracted message notifies nobody any more: the inbox rows of the
    /// messages whose body `tombstone` may delete go (checked against each
    /// message's author, so a forged tombstone purges nothing), and those
    /// bodies are no longer asked for.
    fn purge_notifications(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        tombstone: &Envelope,
        deleted: &BTreeSet<EnvelopeId>,
    ) -> store::Result<()> {
        // A retraction is written into its message's shard, the tombstone's
        // document: set aside, it is loaded to find the messages.
        self.bring_docs(space_id, &[tombstone.header().doc])?;
        let targets: BTreeSet<String> = tombstone.tombstone_targets().iter().map(ToString::to_string).collect();
        let mut purged = Vec::new();
        let Some(readable) = self.spaces.get(&space_id).and_then(|s| s.readable.as_ref()) else {
            return Ok(());
        };
        let space = &self.spaces[&space_id];
        for shard in readable.docs.values() {
            let Some(chat) = shard.doc.chat() else { continue };
            for m in chat.messages().into_iter().filter(|m| targets.contains(&m.body)) {
                let Ok(body) = m.body.parse::<EnvelopeId>() else {
                    continue;
                };
                if deleted.contains(&body) || self.tombstone_may_delete(space, tombstone, &readable.author_of(&m.actor))
                {
                    tx.remove_inbox(&space_id, &actor_key(&m.actor), m.lamport)?;
                    purged.push(body);
                }
            }
        }
        if let Some(space) = self.spaces.get_mut(&space_id) {
            for body in purged.iter().chain(deleted) {
                space.wanted_bodies.remove(body);
            }
            // A closed shard's stored row counts its messages for unread
            // counts: rewritten at the end of the batch without these.
            let doc = tombstone.header().doc;
            if let Some(r) = space.readable.as_mut()
                && r.recent.contains(&doc)
            {
                r.dirty.insert(doc);
            }
        }
        self.unwant_retracted(space_id, tombstone);
        Ok(())
    }

    /// A side envelope from a peer: stored (a body), or applied and stored (a
    /// tombstone), once the control heads it names are known.
    pub(super) fn ingest_side(&mut self, tx: &mut Txn, env: &Envelope) -> store::Result<SideOutcome> {
        if env.header().kind == Kind::State {
            return self.ingest_state(tx, env);
        }
        let h = env.header();
        let space_id = h.space;
        let Some(space) = self.spaces.get(&space_id) else {
            return Ok(SideOutcome::Wait);
        };
        if !space.state.knows(&h.control_heads) {
            return Ok(SideOutcome::Wait);
        }
        if space.state.kind != SpaceKind::Chat {
            return Ok(SideOutcome::Rejected("chat bodies and tombstones belong to chat rooms"));
        }
        if h.control_heads.is_empty()
            || !space
                .state
                .author_at(&h.control_heads, &h.author)
                .is_some_and(|a| a.may_edit())
        {
            return Ok(SideOutcome::Rejected("author may not write in this space"));
        }
        if h.kind == Kind::Body && env.body().len() > MAX_BODY_CIPHERTEXT {
            return Ok(SideOutcome::Rejected("a body larger than a message's text"));
        }
        if space.state.epoch_at(&h.control_heads).is_none_or(|e| e.id != h.epoch) {
            return Ok(SideOutcome::Rejected(
                "sealed under an epoch that is not the space's epoch at its control heads",
            ));
        }
        if space.frozen.get(&h.actor()).is_some_and(|(seq, _)| h.seq >= *seq) {
            return Ok(SideOutcome::Rejected("written by a frozen writer"));
        }
        if tx.side(&space_id, &env.id())?.is_some() {
            // A tombstone held already may answer a body asked for.
            if h.kind == Kind::Tombstone {
                self.unwant_retracted(space_id, env);
            }
            return Ok(SideOutcome::Duplicate);
        }
        let space = &self.spaces[&space_id];
        if h.kind == Kind::Body {
            // Retracted before it arrived: never stored, if a tombstone may.
            let tombstones = tx.tombstones(&space_id, &env.id())?;
            if self.deleting(space, tombstones, &h.author).is_some() {
                return Ok(SideOutcome::Duplicate);
            }
        }
        if tx.sides_of_count(&space_id, &h.actor(), h.seq)? >= MAX_SIDES_PER_CHANGE {
            return Ok(SideOutcome::Rejected("more side envelopes than one change carries"));
        }
        tx.put_side(&space_id, &h.actor(), h.seq, &env.id(), env.as_bytes())?;
        if h.kind == Kind::Body {
            self.record_file(tx, space_id, env)?;
        }
        let mut late = false;
        if let Some(space) = self.spaces.get_mut(&space_id) {
            space.sides_held += 1;
            late = space.wanted_bodies.remove(&env.id()).is_some();
        }
        if h.kind == Kind::Tombstone {
            self.apply_tombstone(tx, space_id, env)?;
            return Ok(SideOutcome::Changed);
        }
        Ok(if late {
            SideOutcome::Changed
        } else {
            SideOutcome::Stored
        })
    }

    /// The text of body `id` written as `actor` (a body of another writer
    /// reads as missing: nobody shows someone else's words as theirs), read
    /// through `get` (the store, or the batch's transaction).
    fn body_text(
        &self,
        space: &Space,
        id: &str,
        actor: &outpost_crdt::ActorId,
        get: &mut dyn FnMut(&EnvelopeId) -> Option<Vec<u8>>,
    ) -> BodyText {
        let Ok(id) = id.parse::<EnvelopeId>() else {
            return BodyText::Missing;
        };
        let Some(env) = get(&id).and_then(|b| Envelope::decode_stored(b).ok()) else {
            return BodyText::Missing;
        };
        if env.header().kind != Kind::Body || env.header().actor() != actor_key(actor) {
            return BodyText::Missing;
        }
        match self.open_body(space, &env) {
            Some(plain) => {
                let (text, file) = plain.into_parts();
                BodyText::Text(text, file)
            }
            None => BodyText::Missing,
        }
    }

    /// A body's plaintext, for a member holding its epoch's key.
    pub(super) fn open_body(&self, space: &Space, env: &Envelope) -> Option<BodyPlain> {
        space.key_of(env).and_then(|k| BodyPlain::open(env, &k))
    }

    /// Stops asking for the bodies `tombstone` may delete (judged against the
    /// author of the message that named each).
    fn unwant_retracted(&mut self, space_id: SpaceId, tombstone: &Envelope) {
        let Some(space) = self.spaces.get(&space_id) else {
            return;
        };
        let done: Vec<EnvelopeId> = tombstone
            .tombstone_targets()
            .into_iter()
            .filter(|id| {
                space
                    .wanted_bodies
                    .get(id)
                    .is_some_and(|w| self.tombstone_may_delete(space, tombstone, &w.author))
            })
            .collect();
        let space = self.spaces.get_mut(&space_id).expect("found above");
        for id in done {
            space.wanted_bodies.remove(&id);
        }
    }

    /// The latest `limit` messages of a room, with their edits, reactions and
    /// retraction.
    /// Bodies it finds missing are asked of peers at the next sync.
    pub(super) fn chat_log(&mut self, space_id: SpaceId, limit: usize) -> Result<Vec<MessageView>> {
        let limit = limit.min(MAX_LOG_LIMIT);
        let views = self.chat_log_loading(space_id, limit);
        self.release_shards(space_id);
        views
    }

    fn chat_log_loading(&mut self, space_id: SpaceId, limit: usize) -> Result<Vec<MessageView>> {
        let space::Latest {
            messages: latest, docs, ..
        } = loop {
            let space = self.spaces.get(&space_id).ok_or(Error::UnknownSpace(space_id))?;
            let found = readable_of(space)?.latest(&space.state, limit);
            match found.set_aside {
                Some(doc) => self.load_shard(space_id, doc).map_err(|e| Error::Store(Arc::new(e)))?,
                None => break found,
            }
        };
        let space = &self.spaces[&space_id];
        let readable = readable_of(space)?;
        let overlay = Overlay::of(self, space, readable, &docs);
        let store = &self.store;
        let mut get = |id: &EnvelopeId| store.side(&space_id, id).ok().flatten();
        let views: Vec<MessageView> = latest
            .iter()
            .map(|m| self.view_of(space, readable, &overlay, m, &mut get))
            .collect();
        let missing: Vec<(EnvelopeId, DeviceId)> = latest
            .iter()
            .zip(&views)
            .filter(|(_, v)| v.missing)
            .filter_map(|(m, v)| Some((m.body.parse().ok()?, v.author)))
            // Held but not this writer's: nothing to fetch.
            .filter(|(id, _)| store.side(&space_id, id).ok().flatten().is_none())
            .collect();
        let space = self.spaces.get_mut(&space_id).expect("found above");
        for (id, author) in missing {
            space.want_body(id, author);
        }
        Ok(views)
    }

    /// Every message of the shards `docs` of a room (those set aside loaded
    /// for it), as the log shows them; see `CoreHandle::shard_messages`.
    pub(super) fn shard_log(&mut self, space_id: SpaceId, docs: &[DocId]) -> Result<Vec<MessageView>> {
        self.bring_docs(space_id, docs).map_err(|e| Error::Store(Arc::new(e)))?;
        let views = self.shard_views(space_id, docs);
        self.release_shards(space_id);
        views
    }

    fn shard_views(&self, space_id: SpaceId, docs: &[DocId]) -> Result<Vec<MessageView>> {
        let space = self.spaces.get(&space_id).ok_or(Error::UnknownSpace(space_id))?;
        let readable = readable_of(space)?;
        let overlay = Overlay::of(self, space, readable, docs);
        let mut get = |id: &EnvelopeId| self.store.side(&space_id, id).ok().flatten();
        let mut views = Vec::new();
        for (_, shard) in readable
            .ordered(&space.state)
            .into_iter()
            .filter(|(d, _)| docs.contains(d))
        {
            let Some(chat) = shard.doc.chat() else { continue };
            for m in chat.messages() {
                views.push(self.view_of(space, readable, &overlay, &m, &mut get));
            }
        }
        Ok(views)
    }

    /// The bodies this device lacks, per space `peer` may serve, at most a
    /// request's worth each; those asked of this peer in the last
    /// [`ASK_AGAIN_MS`] are left out, so a body it lacks is not asked for
    /// with every frame that arrives.
    pub(super) fn wanted_for(&mut self, peer: DeviceId) -> Vec<(SpaceId, Vec<EnvelopeId>)> {
        let now = crate::clock::now_ms();
        let mut out = Vec::new();
        for space in self.spaces.values_mut() {
            if space.wanted_bodies.is_empty() || !space.state.entitled(&peer) {
                continue;
            }
            let ids: Vec<EnvelopeId> = space
                .wanted_bodies
                .iter_mut()
                .filter(|(_, want)| {
                    want.asked
                        .is_none_or(|(who, at)| who != peer || at + ASK_AGAIN_MS <= now)
                })
                .take(crate::sync::MAX_BODIES_PER_REQUEST)
                .map(|(id, want)| {
                    want.asked = Some((peer, now));
                    *id
                })
                .collect();
            if !ids.is_empty() {
                out.push((space.state.space, ids));
            }
        }
        out
    }

    /// Remembers the bodies the messages and edits of a loaded (or rebuilt)
    /// room name that this node holds neither as a body nor as retracted.
    pub(super) fn find_missing_bodies(&mut self, space_id: SpaceId) -> store::Result<()> {
        let Some(readable) = self.spaces.get(&space_id).and_then(|s| s.readable.as_ref()) else {
            return Ok(());
        };
        let mut named: HashMap<EnvelopeId, DeviceId> = HashMap::new();
        for shard in readable.docs.values() {
            let Some(chat) = shard.doc.chat() else { continue };
            let bodies = chat.messages().into_iter().map(|m| (m.body, m.actor));
            for (body, actor) in bodies.chain(chat.edits().into_iter().map(|e| (e.body, e.actor))) {
                if let Ok(id) = body.parse() {
                    named.insert(id, readable.author_of(&actor));
                }
            }
        }
        let ids: Vec<EnvelopeId> = named.keys().copied().collect();
        let space = &self.spaces[&space_id];
        let mut wanted = Vec::new();
        for id in self.store.missing_sides(&space_id, &ids)? {
            let author = named[&id];
            // Retracted here: nothing to ask for.
            if self
                .deleting(space, self.store.tombstones(&space_id, &id)?, &author)
                .is_none()
            {
                wanted.push((id, author));
            }
        }
        let space = self.spaces.get_mut(&space_id).expect("found above");
        for (id, author) in wanted {
            space.want_body(id, author);
        }
        Ok(())
    }

    /// A peer had more of the bodies asked for than one answer holds: ask
    /// for them again at once.
    pub(super) fn ask_again(&mut self, space_id: SpaceId) {
        if let Some(space) = self.spaces.get_mut(&space_id) {
            space.wanted_bodies.values_mut().for_each(|want| want.asked = None);
        }
    }

    /// What this node holds of the bodies `peer` asks for: each body, or the
    /// tombstone that deleted it; within one frame, and whether more did not fit.
    pub(super) fn sides_for(&self, peer: DeviceId, space_id: SpaceId, ids: &[EnvelopeId]) -> (Vec<Vec<u8>>, bool) {
        if !self.spaces.get(&space_id).is_some_and(|s| s.state.entitled(&peer)) {
            return (Vec::new(), false);
        }
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut size = 0;
        let mut tombstones = BTreeSet::new();
        for id in ids.iter().take(crate::sync::MAX_BODIES_PER_REQUEST) {
            let found = match self.store.side(&space_id, id) {
                Ok(Some(bytes)) => vec![bytes],
                _ => self
                    .store
                    .tombstones(&space_id, id)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|b| tombstones.insert(EnvelopeId::of(b)))
                    .collect(),
            };
            for bytes in found {
                size += bytes.len();
                if size > crate::sync::TARGET_FRAME_BYTES && !out.is_empty() {
                    return (out, true);
                }
                out.push(bytes);
            }
        }
        (out, false)
    }

    /// The documents holding a room's announcement and pinned messages
    /// (none for a space this device does not hold).
    pub(super) fn shown_docs(&self, space_id: SpaceId) -> Vec<DocId> {
        self.spaces
            .get(&space_id)
            .map_or_else(Vec::new, |s| shown_docs_of(&Self::room_of(s)))
    }

    /// A room's settings with its announcement and pinned messages.
    pub(super) fn room_view(&self, space_id: SpaceId) -> Result<RoomView> {
        let space = self.spaces.get(&space_id).ok_or(Error::UnknownSpace(space_id))?;
        let readable = readable_of(space)?;
        if readable.model != outpost_crdt::doc::Model::Chat {
            return Err(Error::Invalid("this space is not a chat room".into()));
        }
        let room = Self::room_of(space);
        let overlay = Overlay::of(self, space, readable, &shown_docs_of(&room));
        let store = &self.store;
        let mut get = |id: &EnvelopeId| store.side(&space_id, id).ok().flatten();
        let mut view = |target: &str| Some(self.shown(space, readable, &overlay, target, &mut get)?.0);
        Ok(RoomView {
            topic: room.topic.clone(),
            welcome: room.welcome.clone(),
            announcement: room.announcement.as_deref().and_then(&mut view),
            pinned: room.pins.iter().filter_map(|p| view(p)).collect(),
            retract_window_s: room.retract_window_s,
        })
    }

    fn view_of(
        &self,
        space: &Space,
        readable: &space::Readable,
        overlay: &Overlay,
        m: &model::Message,
        get: &mut dyn FnMut(&EnvelopeId) -> Option<Vec<u8>>,
    ) -> MessageView {
        self.view_with_file(space, readable, overlay, m, get).0
    }

    /// A message's view, with its file's key (which the view leaves out).
    fn view_with_file(
        &self,
        space: &Space,
        readable: &space::Readable,
        overlay: &Overlay,
        m: &model::Message,
        get: &mut dyn FnMut(&EnvelopeId) -> Option<Vec<u8>>,
    ) -> (MessageView, Option<FileRef>) {
        let author = readable.author_of(&m.actor);
        // Its ref: a writer writes one document.
        let target = readable
            .doc_of_actor
            .get(&actor_key(&m.actor))
            .map(|doc| msg_ref(doc, &m.id))
            .unwrap_or_default();
        let retracted = overlay.retracted.get(&(m.body.clone(), author)).cloned();
        // A retracted message's bodies are not read (nor asked for).
        let (original, file) = match retracted {
            Some(_) => (None, None),
            None => match self.body_text(space, &m.body, &m.actor, get) {
                BodyText::Text(t, file) => (Some(t), file),
                BodyText::Missing => (None, None),
            },
        };
        let (current, history) = match retracted {
            Some(_) => (None, Vec::new()),
            None => self.edited(space, readable, overlay, &target, &author, original, m.sent_at_ms, get),
        };
        let missing = retracted.is_none() && current.is_none();
        let author_user = self.user_of(space, &author);
        let actor = actor_key(&m.actor);
        let read_by = overlay
            .seen
            .iter()
            .filter(|(user, seen)| Some(**user) != author_user && seen.get(&actor).is_some_and(|c| *c >= m.lamport))
            .map(|(user, _)| *user)
            .collect();
        let view = MessageView {
            read_by,
            id: m.id.clone(),
            author,
            user: author_user,
            text: current.unwrap_or_default(),
            sent_at_ms: m.sent_at_ms,
            lamport: m.lamport,
            reply_to: m.reply_to.as_deref().and_then(parse_ref).map(|(_, id)| id.to_string()),
            mentions: m.mentions.clone(),
            all: m.all,
            history,
            reactions: overlay.reactions.get(&target).cloned().unwrap_or_default(),
            retracted,
            missing,
            file: file.as_ref().map(FileRef::view),
        };
        (view, file)
    }

    /// A message's current text and its earlier ones: the newest of the
    /// edits of `target` by `author`'s user over its `original` text.
    /// Another entry under the same id (a reused id) has its own edits.
    #[allow(clippy::too_many_arguments)]
    fn edited(
        &self,
        space: &Space,
        readable: &space::Readable,
        overlay: &Overlay,
        target: &str,
        author: &DeviceId,
        original: Option<String>,
        sent_at_ms: i64,
        get: &mut dyn FnMut(&EnvelopeId) -> Option<Vec<u8>>,
    ) -> (Option<String>, Vec<EditView>) {
        let author_user = self.user_of(space, author);
        let edits: Vec<&(String, i64, outpost_crdt::ActorId)> = overlay
            .edits
            .get(target)
            .into_iter()
            .flatten()
            .filter(|(_, _, actor)| {
                let by = readable.author_of(actor);
                by == *author || (author_user.is_some() && self.user_of(space, &by) == author_user)
            })
            .collect();
        let Some((last, earlier)) = edits.split_last() else {
            return (original, Vec::new());
        };
        let mut text = |body: &str, actor: &outpost_crdt::ActorId| match self.body_text(space, body, actor, get) {
            BodyText::Text(t, _) => Some(t),
            BodyText::Missing => None,
        };
        let mut history = vec![EditView {
            text: original,
            at_ms: sent_at_ms,
        }];
        for (body, at_ms, actor) in earlier {
            history.push(EditView {
                text: text(body, actor),
                at_ms: *at_ms,
            });
        }
        (text(&last.0, &last.2), history)
    }

    /// Announces the messages this batch made visible (with their text, read
    /// through the batch's transaction) and records the mentions of this
    /// device's user in its inbox.
    pub(super) fn announce_chat(&mut self, tx: &mut Txn, effects: &mut Effects) -> store::Result<()> {
        let my_user = self.keys.user_id();
        let me = my_user.to_string();
        let now = crate::clock::now_ms() as i64;
        for (space_id, refs) in std::mem::take(&mut effects.rebodied) {
            self.sweep_retracted(tx, space_id, &refs, effects)?;
        }
        for (space_id, mut docs) in std::mem::take(&mut effects.chat_updated) {
            self.follow_retractions(tx, space_id, &mut docs)?;
            let docs = docs.into_iter().collect();
            effects.events.push(Event::ChatUpdated { space: space_id, docs });
        }
        for (space_id, m) in std::mem::take(&mut effects.chat) {
            let Some(space) = self.spaces.get(&space_id) else {
                continue;
            };
            let Some(readable) = space.readable.as_ref() else {
                continue;
            };
            let by = readable.author_of(&m.actor);
            let tombstones = match m.body.parse::<EnvelopeId>() {
                Ok(b) => tx.tombstones(&space_id, &b)?,
                Err(_) => Vec::new(),
            };
            if self.deleting(space, tombstones, &by).is_some() {
                continue;
            }
            let mut get = |id: &EnvelopeId| tx.side(&space_id, id).ok().flatten();
            let (text, file, missing) = match self.body_text(space, &m.body, &m.actor, &mut get) {
                BodyText::Text(t, file) => (t, file.map(|f| f.view()), false),
                BodyText::Missing => {
                    if let (Some(space), Ok(id)) = (self.spaces.get_mut(&space_id), m.body.parse()) {
                        space.want_body(id, by);
                    }
                    (String::new(), None, true)
                }
            };
            let Some(space) = self.spaces.get(&space_id) else {
                continue;
            };
            let Some(readable) = space.readable.as_ref() else {
                continue;
            };
            let user = self.user_of(space, &by);
            let by_my_user = user == Some(my_user);
            let view = MessageView {
                id: m.id.clone(),
                author: by,
                user,
                missing,
                file,
                text,
                sent_at_ms: m.sent_at_ms,
                lamport: m.lamport,
                reply_to: m.reply_to.as_deref().and_then(parse_ref).map(|(_, id)| id.to_string()),
                mentions: m.mentions.clone(),
                all: m.all,
                history: Vec::new(),
                reactions: Vec::new(),
                retracted: None,
                read_by: Vec::new(),
            };
            effects.events.push(Event::Message {
                space: space_id,
                message: view,
            });
            if !by_my_user && (m.all || m.mentions.contains(&me)) {
                let row = InboxRow::Chat(inbox::ChatMentionRow {
                    space: space_id,
                    by,
                    doc: readable
                        .docs
                        .iter()
                        .find(|(_, s)| s.doc.chat().is_some_and(|c| c.message(&m.id).is_some()))
                        .map(|(d, _)| *d)
                        .unwrap_or_else(|| space.main_doc()),
                    id: m.id.clone(),
                    all: m.all && !m.mentions.contains(&me),
                    held: self.dnd.holds(&space_id, now),
                    at_ms: now,
                });
                let bytes = postcard::to_stdvec(&row).expect("inbox rows serialize");
                if let Some(seq) = tx.put_inbox(&space_id, &actor_key(&m.actor), m.lamport, &bytes)? {
                    if self.dnd.holds(&space_id, now) {
                        // Kept, not announced: do not disturb (see `quiet`).
                        self.dnd.held.insert(seq, space_id);
                    } else {
                        let entry = self.entry(seq, row);
                        effects.events.push(Event::Inbox { entry });
                    }
                }
            }
        }
        Ok(())
    }

    /// A from-join room's first documents hold retractions of messages of
    /// earlier epochs (see [`Speaker`]), whose shards may be set aside. When
    /// such a document changed in this batch (`docs`: the documents whose
    /// messages changed), or a tombstone landed in it, the shards its
    /// retractions name are loaded, their messages retracted leave the inbox,
    /// and their rows are rewritten at the end of the batch (unread counts
    /// leave them out). A tombstone beside its retraction is applied before
    /// the change carrying the marker is, so the shards are found from here.
    fn follow_retractions(&mut self, tx: &mut Txn, space_id: SpaceId, docs: &mut BTreeSet<DocId>) -> store::Result<()> {
        let Some(space) = self.spaces.get(&space_id) else {
            return Ok(());
        };
        let Some(readable) = space.readable.as_ref() else {
            return Ok(());
        };
        let named: BTreeSet<DocId> = docs
            .iter()
            .filter_map(|doc| Some((doc, readable.docs.get(doc)?)))
            .filter(|(doc, shard)| speaks_for_others(&space.state, doc, &shard.epoch))
            .filter_map(|(_, shard)| shard.doc.chat())
            .flat_map(|chat| chat.retractions())
            .filter_map(|r| Some(parse_ref(&r.target)?.0))
            .collect();
        if named.is_empty() {
            return Ok(());
        }
        let named: Vec<DocId> = named.into_iter().collect();
        self.bring_docs(space_id, &named)?;
        let space = &self.spaces[&space_id];
        let Some(readable) = space.readable.as_ref() else {
            return Ok(());
        };
        let tombstones = |body: &EnvelopeId| tx.tombstones(&space_id, body).unwrap_or_default();
        let retracted = self.retractions_in(space, readable, Some(&named), tombstones);
        for r in &retracted {
            tx.remove_inbox(&space_id, &actor_key(&r.entry.actor), r.entry.lamport)?;
        }
        if let Some(r) = self.spaces.get_mut(&space_id).and_then(|s| s.readable.as_mut()) {
            let loaded: Vec<DocId> = named.iter().filter(|d| r.recent.contains(d)).copied().collect();
            r.dirty.extend(loaded);
        }
        docs.extend(named);
        Ok(())
    }

    /// The current text of message `id` in `doc` of a space, for the inbox.
    pub(super) fn message_text(&self, space_id: SpaceId, doc: DocId, id: &str) -> Option<String> {
        let space = self.spaces.get(&space_id)?;
        let readable = space.readable.as_ref()?;
        let m = readable.docs.get(&doc)?.doc.chat()?.message(id)?;
        let overlay = Overlay::of(self, space, readable, &[doc]);
        let store = &self.store;
        let mut get = |id: &EnvelopeId| store.side(&space_id, id).ok().flatten();
        let view = self.view_of(space, readable, &overlay, &m, &mut get);
        (view.retracted.is_none() && !view.missing).then_some(view.text)
    }
}

/// Largest body envelope body: a text of [`MAX_TEXT_BYTES`] and a file reference, their postcard
/// framing, the nonce and the tag (checked in clear, replicators too).
const MAX_BODY_CIPHERTEXT: usize = MAX_TEXT_BYTES + MAX_FILE_NAME_BYTES + 256;
/// Most side envelopes one change carries: a body per message of a group
/// commit, and a tombstone.
const MAX_SIDES_PER_CHANGE: u64 = BATCH_CAP as u64 + 1;

/// How long a body asked of a peer is not asked of it again.
const ASK_AGAIN_MS: u64 = 5_000;

/// What happened to a side envelope from a peer.
pub(super) enum SideOutcome {
    Stored,
    /// Stored, and what the room shows changed: a body that was missing
    /// arrived, or a tombstone.
    Changed,
    Duplicate,
    /// Its control heads are not known yet.
    Wait,
    Rejected(&'static str),
}

/// A retraction in effect: a marker in the room names the entry, and a
/// tombstone this node holds may delete the entry's body.
pub(super) struct Retracted {
    pub(super) entry: model::Message,
    /// The entry's author.
    pub(super) author: DeviceId,
    /// The tombstone's author.
    pub(super) by: DeviceId,
    /// When the marker claims it was written.
    pub(super) at_ms: i64,
}

impl Core {
    /// The retractions in effect on the messages of the loaded shards `docs`
    /// of a room (every loaded shard when `None`), as the markers that count
    /// say ([`Speaker`]). `tombstones` reads the tombstones naming a body
    /// (the store, or a batch's transaction).
    pub(super) fn retractions_in(
        &self,
        space: &Space,
        readable: &space::Readable,
        docs: Option<&[DocId]>,
        mut tombstones: impl FnMut(&EnvelopeId) -> Vec<Vec<u8>>,
    ) -> Vec<Retracted> {
        let mut out = Vec::new();
        for speaker in Speaker::all(space, readable, docs) {
            for r in speaker
                .chat
                .retractions()
                .into_iter()
                .filter(|r| speaker.counts(&r.target))
            {
                // The entries it names (read only for retractions: formatting a
                // ref for every message of a shard would cost more than the read).
                let named = parse_ref(&r.target)
                    .and_then(|(doc, id)| Some(readable.docs.get(&doc)?.doc.chat()?.entries_named(id)))
                    .unwrap_or_default();
                for entry in named {
                    let author = readable.author_of(&entry.actor);
                    let Ok(body) = entry.body.parse::<EnvelopeId>() else {
                        continue;
                    };
                    if let Some(tomb) = self.deleting(space, tombstones(&body), &author) {
                        let by = tomb.header().author;
                        out.push(Retracted {
                            entry,
                            author,
                            by,
                            at_ms: r.at_ms,
                        });
                    }
                }
            }
        }
        out
    }
}

/// A loaded document of a room whose markers (edits, reactions, retractions)
/// count for the messages read. What points at a message is written in its
/// own shard, so only a shard's own markers count for its messages, alike on
/// every node whichever shards it has loaded. A from-join room writes what
/// points at a message of an earlier epoch into the current epoch's first
/// document instead (see `Core::target_of_message`); every epoch's first
/// document stays loaded, so the markers there count for any message.
struct Speaker<'a> {
    chat: &'a ChatDoc,
    /// The ref prefix its markers must name to count; None: any.
    own: Option<String>,
}

impl<'a> Speaker<'a> {
    /// The documents whose markers count for the messages of the loaded
    /// documents `docs` (every loaded one when `None`), in display order.
    fn all(space: &Space, readable: &'a space::Readable, docs: Option<&[DocId]>) -> Vec<Self> {
        readable
            .ordered(&space.state)
            .into_iter()
            .filter_map(|(doc, shard)| {
                let chat = shard.doc.chat()?;
                if speaks_for_others(&space.state, doc, &shard.epoch) {
                    return Some(Speaker { chat, own: None });
                }
                docs.is_none_or(|docs| docs.contains(doc)).then(|| Speaker {
                    chat,
                    own: Some(msg_ref(doc, "")),
                })
            })
            .collect()
    }

    /// Whether its marker naming `target` (a ref) counts.
    fn counts(&self, target: &str) -> bool {
        self.own.as_ref().is_none_or(|own| target.starts_with(own))
    }
}

/// Whether the markers in `doc` (sealed under `epoch`) count for messages of
/// other documents: in a from-join room, every epoch's first document.
pub(super) fn speaks_for_others(state: &control::SpaceState, doc: &DocId, epoch: &control::Epoch) -> bool {
    state.history == History::FromJoin
        && state
            .shard_place(doc, &epoch.id)
            .is_some_and(|(first, _)| first == *doc)
}

/// What the documents of a room say about its messages beyond the skeletons:
/// each message's ref, its author's edits, reactions and retraction.
struct Overlay {
    /// ref → (body, claimed time, actor) of each edit, oldest first (the
    /// view keeps those by the message's author).
    edits: HashMap<String, Vec<(String, i64, outpost_crdt::ActorId)>>,
    reactions: HashMap<String, Vec<ReactionView>>,
    /// (body id, message author) → who retracted it (a tombstone that may), when.
    retracted: HashMap<(String, DeviceId), RetractedView>,
    /// Per user, per writer, the highest message counter the user has read.
    seen: BTreeMap<UserId, BTreeMap<ActorKey, u64>>,
}

impl Overlay {
    /// What the room says about the messages of `docs`: what the markers
    /// that count for them say ([`Speaker`]).
    fn of(core: &Core, space: &Space, readable: &space::Readable, docs: &[DocId]) -> Self {
        let space_id = space.state.space;
        let mut edits: HashMap<String, Vec<(String, i64, outpost_crdt::ActorId)>> = HashMap::new();
        let mut reactions: HashMap<String, BTreeMap<String, Vec<String>>> = HashMap::new();
        let mut retracted = HashMap::new();
        for speaker in Speaker::all(space, readable, Some(docs)) {
            let chat = speaker.chat;
            for e in chat.edits().into_iter().filter(|e| speaker.counts(&e.target)) {
                edits.entry(e.target).or_default().push((e.body, e.sent_at_ms, e.actor));
            }
            for r in chat.reactions().into_iter().filter(|r| speaker.counts(&r.target)) {
                reactions
                    .entry(r.target)
                    .or_default()
                    .entry(r.emoji)
                    .or_default()
                    .push(r.user);
            }
        }
        let tombstones = |body: &EnvelopeId| core.store.tombstones(&space_id, body).unwrap_or_default();
        for r in core.retractions_in(space, readable, Some(docs), tombstones) {
            let view = RetractedView {
                by: r.by,
                at_ms: r.at_ms,
            };
            retracted.insert((r.entry.body, r.author), view);
        }
        Self {
            seen: core.seen_by_user(space),
            edits,
            reactions: reactions
                .into_iter()
                .map(|(target, by_emoji)| {
                    let views = by_emoji
                        .into_iter()
                        .map(|(emoji, users)| ReactionView { emoji, users })
                        .collect();
                    (target, views)
                })
                .collect(),
            retracted,
        }
    }
}

pub(super) fn readable_of(space: &Space) -> Result<&space::Readable> {
    space.readable.as_ref().ok_or_else(|| Error::KeyMissing {
        space: space.state.space,
        why: space
            .key_problem
            .clone()
            .unwrap_or_else(|| "this device is a replicator: it stores the space but holds no key".into()),
    })
}

/// The sealed name of the direct-message room of two users.
fn dm_name(a: UserId, b: UserId) -> String {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    format!("dm:{first}:{second}")
}

/// The other user of a direct-message room named by [`dm_name`], for `me`.
pub(super) fn dm_peer(name: &str, me: UserId) -> Option<UserId> {
    let (a, b) = name.strip_prefix("dm:")?.split_once(':')?;
    let (a, b): (UserId, UserId) = (a.parse().ok()?, b.parse().ok()?);
    match (a == me, b == me) {
        (true, false) => Some(b),
        (false, true) => Some(a),
        _ => None,
    }
}

fn check_text(text: &str) -> Result<()> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(Error::Invalid(format!(
            "message of {} bytes exceeds {MAX_TEXT_BYTES}",
            text.len()
        )));
    }
    Ok(())
}

/// The users `text` mentions (`@name`, see [`mentioned`]) and whether it
/// mentions everyone (`@all`).
fn mentions_in(
    text: &str,
    members: &[(DeviceId, UserId)],
    aliases: &[(Vec<String>, Vec<DeviceId>)],
) -> (Vec<String>, bool) {
    let mut users = Vec::new();
    let mut all = false;
    for (i, _) in text.match_indices('@') {
        // A mention starts a word: not inside an e-mail address.
        if text[..i].chars().next_back().is_some_and(|c| c.is_alphanumeric()) {
            continue;
        }
        let name: String = text[i + 1..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .collect();
        let name = name.trim_end_matches('.');
        if name.eq_ignore_ascii_case("all") {
            all = true;
        } else if let Some(user) = mentioned(members, aliases, name)
            && !users.contains(&user)
            && users.len() < model::MAX_MENTIONS
        {
            users.push(user);
        }
    }
    (users, all)
}

fn human_duration(secs: i64) -> String {
    match secs {
        0 => "no time at all".into(),
        s if s % 86_400 == 0 => format!("{} day(s)", s / 86_400),
        s if s % 3600 == 0 => format!("{} hour(s)", s / 3600),
        s if s % 60 == 0 => format!("{} minute(s)", s / 60),
        s => format!("{s} second(s)"),
    }
}

/// A new message id: 80 random bits, base32 (16 characters).
pub(super) fn new_message_id() -> String {
    data_encoding::BASE32_NOPAD
        .encode(&rand::random::<[u8; 10]>())
        .to_lowercase()
}

/// The one pin of `room` whose message id starts with `name`.
fn pinned_named(room: &model::Room, name: &str) -> Option<String> {
    let name = name.trim().to_lowercase();
    let mut named = room
        .pins
        .iter()
        .filter(|r| !name.is_empty() && parse_ref(r).is_some_and(|(_, id)| id.starts_with(&name)));
    let one = named.next()?;
    named.next().is_none().then(|| one.clone())
}

/// The documents a room's announcement and pinned messages point into.
fn shown_docs_of(room: &model::Room) -> Vec<DocId> {
    room.announcement
        .iter()
        .chain(&room.pins)
        .filter_map(|r| Some(parse_ref(r)?.0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_start_words_and_all_is_everyone() {
        let alice = UserId([0xaa; 32]);
        let members = vec![(DeviceId([1; 32]), alice)];
        let (users, all) = mentions_in("hi @aaaaaaaa, mail me at x@aaaaaaaa and @all", &members, &[]);
        assert_eq!(users, vec![alice.to_string()]);
        assert!(all);
        let (users, all) = mentions_in("nobody@aaaaaaaa here", &members, &[]);
        assert!(users.is_empty() && !all);
    }

    #[test]
    fn a_body_with_an_invalid_file_reads_as_its_text_only() {
        let file = |name: &str| FileRef {
            id: crate::blobs::BlobId([3; 32]),
            name: name.to_string(),
            size: 5,
            key: crate::blobs::FileKey([2; 32]),
        };
        let body = |name: &str| BodyPlain::V2 {
            text: "see attached".into(),
            file: Some(file(name)),
        };
        let (text, got) = body("../../.bashrc").into_parts();
        assert_eq!((text.as_str(), got), ("see attached", None));
        assert_eq!(body("notes.txt").into_parts().1, Some(file("notes.txt")));
    }

    #[test]
    fn read_body_opens_bodies_only() {
        let keys = DeviceKeys::generate();
        let space = SpaceId([7; 16]);
        let key = EpochKey::generate(space);
        let header = |kind| Header {
            kind,
            space,
            doc: space.chat_shard(0),
            epoch: key.id,
            author: keys.device_id(),
            incarnation: 1,
            seq: 1,
            parents: Vec::new(),
            control_heads: Vec::new(),
        };
        let plain = postcard::to_stdvec(&BodyPlain::new("hello", None)).expect("bodies serialize");
        let body = Envelope::seal_value(&keys, header(Kind::Body), &key, &plain);
        assert_eq!(read_body(&body, &key), Some(("hello".to_string(), None)));
        assert_eq!(read_body(&body, &EpochKey::generate(space)), None, "another key");
        // The same plaintext in a change or a state envelope is no body.
        let content = Envelope::seal_content(&keys, header(Kind::Content), &key, &plain);
        assert_eq!(read_body(&content, &key), None);
        let state = Envelope::seal_value(&keys, header(Kind::State), &key, &plain);
        assert_eq!(read_body(&state, &key), None);
        // A body whose plaintext is not a BodyPlain.
        let garbage = Envelope::seal_value(&keys, header(Kind::Body), &key, &[0xff; 3]);
        assert_eq!(read_body(&garbage, &key), None);
    }

    #[test]
    fn windows_read_naturally() {
        assert_eq!(human_duration(86_400), "1 day(s)");
        assert_eq!(human_duration(120), "2 minute(s)");
        assert_eq!(human_duration(0), "no time at all");
    }
}
