//! Shared documents: writing Markdown as minimal edits, and reading versions,
//! diffs and blame. A document space holds one text document, synced, sealed
//! and validated like any other (see `space`).

use outpost_crdt::{
    ChangeHash,
    text::{self, Block, TextDoc, markdown},
};

use super::*;

/// A write to a document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocEdit {
    /// The whole new text, as Markdown. `base` names the versions it was edited
    /// from (the `heads` of `doc show --json`): changes made since then merge
    /// with it. Empty: edited from the current text.
    Markdown {
        markdown: String,
        #[serde(default)]
        base: Vec<String>,
    },
    /// Make the text what it was at a version, as a new change.
    Restore { version: String },
    /// Edits as an editor reports them, applied in order to the current text
    /// as one change: at `pos` (Unicode code points, a block marker counting
    /// one), delete `delete` characters and insert `insert`.
    Splices { edits: Vec<Splice> },
}

/// One edit of [`DocEdit::Splices`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Splice {
    pub pos: usize,
    #[serde(default)]
    pub delete: usize,
    #[serde(default)]
    pub insert: String,
}

/// What a write produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Written {
    /// The new version, or none when the text was already so.
    pub version: Option<String>,
}

/// How to show a document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocFormat {
    #[default]
    Md,
    Html,
    Text,
    /// The standard Automerge binary (base64 in JSON).
    Automerge,
}

/// What to read of a document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocQuery {
    Show {
        /// A version id (or a unique prefix of one); none: the current text.
        at: Option<String>,
        format: DocFormat,
    },
    History,
    Diff {
        from: String,
        /// None: the current text.
        to: Option<String>,
    },
    Blame,
}

/// A document's text at a version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocView {
    pub space: SpaceId,
    pub name: Option<String>,
    /// The version shown, when one was asked for.
    pub at: Option<String>,
    /// The versions the text is at (pass them as `base` when writing an edit of it).
    pub heads: Vec<String>,
    pub format: DocFormat,
    pub content: String,
    /// When it was last written, as its writers claim (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_ms: Option<i64>,
}

/// One version of a document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionView {
    /// The version id: the hash of its change, the same on every node.
    pub id: String,
    pub author: DeviceId,
    /// Milliseconds since the Unix epoch, as claimed by the author.
    pub time_ms: i64,
    pub inserted: usize,
    pub deleted: usize,
    pub blocks: usize,
    pub excerpt: String,
}

/// A line of `doc blame`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlameView {
    pub line: String,
    pub author: Option<DeviceId>,
}

/// What changed between two versions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiffView {
    pub from: String,
    /// A version id, or `current`.
    pub to: String,
    /// A unified diff of the two versions' Markdown.
    pub diff: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocAnswer {
    Show(DocView),
    History(Vec<VersionView>),
    Diff(DiffView),
    Blame(Vec<BlameView>),
}

/// Largest Markdown text one write takes. One write is one change sealed in
/// one envelope (at most `MAX_ENVELOPE_BYTES`), and an Automerge change holds
/// what it inserts plus per-op columns.
pub const MAX_DOC_WRITE_BYTES: usize = 512 << 10;

/// Largest change one document write makes: what fits one envelope with its
/// header and the AEAD tag, with room to spare.
pub(super) const MAX_CHANGE_BYTES: usize = crate::envelope::MAX_ENVELOPE_BYTES - (64 << 10);

/// Most splices in one write.
pub const MAX_SPLICES_PER_WRITE: usize = 100_000;

/// Shortest accepted version prefix, in hex digits.
const MIN_VERSION_PREFIX: usize = 6;

impl Core {
    /// Applies an edit to a document space as one change. The outer error
    /// aborts the batch; the inner one is the caller's mistake.
    pub(super) fn write_doc(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        edit: DocEdit,
        effects: &mut Effects,
    ) -> store::Result<Result<Written>> {
        let target = match self.write_target(tx, space_id, SpaceKind::Doc, effects)? {
            Ok(target) => target,
            Err(e) => return Ok(Err(e)),
        };
        // The document exists from here on (at its genesis if nothing was written).
        let space = self.spaces.get_mut(&space_id).expect("write_target found it");
        let readable = space.readable.as_mut().expect("write_target checked the key");
        readable.shard_mut(target.doc, &target.epoch);
        if let DocEdit::Splices { edits } = edit {
            return self.write_splices(tx, space_id, target, &edits, effects);
        }
        match self.edit_blocks(space_id, &target, edit) {
            Ok((blocks, base)) => self.write_blocks(tx, space_id, target, &blocks, base, effects),
            Err(e) => Ok(Err(e)),
        }
    }

    fn text_mut(&mut self, space_id: SpaceId, doc: DocId) -> &mut TextDoc {
        let readable = self.spaces.get_mut(&space_id).and_then(|s| s.readable.as_mut());
        readable
            .and_then(|r| r.docs.get_mut(&doc))
            .and_then(|s| s.doc.text_mut())
            .expect("write_doc made the text document")
    }

    /// Splices, applied in place in one transaction: their size is bounded on
    /// input, and one that does not fit the text rolls them all back.
    fn write_splices(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        target: WriteTarget,
        edits: &[Splice],
        effects: &mut Effects,
    ) -> store::Result<Result<Written>> {
        let inserted: usize = edits.iter().map(|e| e.insert.len()).sum();
        if edits.len() > MAX_SPLICES_PER_WRITE || inserted > MAX_DOC_WRITE_BYTES {
            return Ok(Err(Error::Invalid(format!(
                "one write holds at most {MAX_SPLICES_PER_WRITE} splices and {} KiB of inserted text",
                MAX_DOC_WRITE_BYTES >> 10
            ))));
        }
        let edits: Vec<(usize, usize, &str)> = edits.iter().map(|e| (e.pos, e.delete, e.insert.as_str())).collect();
        let now = crate::clock::now_ms() as i64;
        match self
            .text_mut(space_id, target.doc)
            .splice(target.actor.clone(), &edits, now)
        {
            Ok(change) => self.seal_doc_change(tx, space_id, &target, change, effects),
            Err(outpost_crdt::Error::EmptyChange) => Ok(Ok(Written { version: None })),
            Err(e) => Ok(Err(Error::Invalid(format!("the splices do not fit the text: {e}")))),
        }
    }

    /// The blocks an edit asks for, and the versions it was made from (empty:
    /// the current text).
    fn edit_blocks(
        &self,
        space_id: SpaceId,
        target: &WriteTarget,
        edit: DocEdit,
    ) -> Result<(Vec<Block>, Vec<ChangeHash>)> {
        let space = &self.spaces[&space_id];
        let doc = space
            .readable
            .as_ref()
            .and_then(|r| r.docs.get(&target.doc))
            .and_then(|s| s.doc.text())
            .expect("write_doc made the text document");
        match edit {
            DocEdit::Markdown { markdown: md, .. } if md.len() > MAX_DOC_WRITE_BYTES => Err(Error::Invalid(format!(
                "a document write is at most {} KiB of Markdown (this one is {} KiB); split it into several writes",
                MAX_DOC_WRITE_BYTES >> 10,
                md.len() >> 10
            ))),
            DocEdit::Markdown { markdown: md, base } => {
                let base = base.iter().map(|v| parse_version(doc, v)).collect::<Result<Vec<_>>>()?;
                let members = member_users(space);
                let aliases = self.mention_aliases();
                Ok((markdown::parse(&md, &|name| mentioned(&members, &aliases, name)), base))
            }
            DocEdit::Restore { version } => {
                let hash = find_version(doc, &version)?;
                let blocks = doc
                    .blocks_at(&[hash])
                    .map_err(|e| Error::Invalid(format!("version {version}: {e}")))?;
                Ok((blocks, Vec::new()))
            }
            DocEdit::Splices { .. } => unreachable!("write_doc applies splices itself"),
        }
    }

    /// Makes the text `blocks`, edited from `base`, as one change: made on a
    /// copy and checked before the document takes it, so a change that cannot
    /// be sealed never enters the document.
    fn write_blocks(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        mut target: WriteTarget,
        blocks: &[Block],
        base: Vec<ChangeHash>,
        effects: &mut Effects,
    ) -> store::Result<Result<Written>> {
        let now = crate::clock::now_ms() as i64;
        for attempt in 0..2 {
            let readable = self.spaces.get_mut(&space_id).and_then(|s| s.readable.as_mut());
            let space::Readable {
                docs, env_of_change, ..
            } = readable.expect("write_doc checked the key");
            let doc = docs
                .get_mut(&target.doc)
                .and_then(|s| s.doc.text_mut())
                .expect("write_doc made the text document");
            let base = if base.is_empty() {
                doc.automerge().get_heads()
            } else {
                base.clone()
            };
            let change = match doc.prepare(target.actor.clone(), &base, blocks, now) {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(Ok(Written { version: None })),
                Err(e) => return Ok(Err(Error::Invalid(format!("the document refused the edit: {e}")))),
            };
            if let Err(e) = sealable(&change, doc.genesis_hash(), env_of_change) {
                return Ok(Err(e));
            }
            match doc.apply_own(change.clone()) {
                Ok(()) => return self.seal_doc_change(tx, space_id, &target, change, effects),
                Err(outpost_crdt::Error::StaleWriter) if attempt == 0 => {
                    // This run wrote after the version edited: a fresh writer edits it.
                    target.incarnation = rand::random();
                    target.actor = outpost_crdt::writer::actor_id(&self.me.0, &target.doc, target.incarnation);
                    self.incarnations.insert(target.doc, target.incarnation);
                }
                Err(e) => return Ok(Err(Error::Invalid(format!("the document refused the edit: {e}")))),
            }
        }
        unreachable!("the second attempt writes as a fresh writer, whose seq is free")
    }

    /// Seals a change the document made here; the new version.
    fn seal_doc_change(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        target: &WriteTarget,
        change: outpost_crdt::Change,
        effects: &mut Effects,
    ) -> store::Result<Result<Written>> {
        if change.raw_bytes().len() > MAX_CHANGE_BYTES {
            // Splices are applied in place (their size is bounded on input):
            // should one still not fit, the document reloads from the store,
            // without it.
            warn!(space = %space_id.fmt_short(), bytes = change.raw_bytes().len(), "a document change is too big for one envelope; refused");
            return Err(store::Error::Unavailable);
        }
        if let Err(e) = self.seal_local(tx, space_id, target, &change, effects)? {
            return Ok(Err(e));
        }
        effects.events.push(Event::Document { space: space_id });
        Ok(Ok(Written {
            version: Some(change.hash().to_string()),
        }))
    }

    pub(super) fn read_doc(&self, space_id: SpaceId, query: DocQuery) -> Result<DocAnswer> {
        let space = self.spaces.get(&space_id).ok_or(Error::UnknownSpace(space_id))?;
        expect_kind(space, SpaceKind::Doc)?;
        let readable = space.readable.as_ref().ok_or_else(|| Error::KeyMissing {
            space: space_id,
            why: space
                .key_problem
                .clone()
                .unwrap_or_else(|| "this device is a replicator: it stores the document but holds no key".into()),
        })?;
        let fresh;
        let doc = match readable.docs.get(&space.main_doc()).and_then(|s| s.doc.text()) {
            Some(doc) => doc,
            None => {
                fresh = TextDoc::new(space.main_doc());
                &fresh
            }
        };
        let author = |actor: &outpost_crdt::ActorId| readable.author_of(actor);
        Ok(match query {
            DocQuery::Show { at, format } => {
                let (blocks, at) = match at {
                    Some(v) => {
                        let hash = find_version(doc, &v)?;
                        let blocks = doc.blocks_at(&[hash]).map_err(|e| Error::Invalid(e.to_string()))?;
                        (blocks, Some(hash.to_string()))
                    }
                    None => (doc.blocks(), None),
                };
                let content = match format {
                    DocFormat::Md => markdown::render(&blocks),
                    DocFormat::Html => markdown::to_html(&markdown::render(&blocks)),
                    DocFormat::Text => markdown::to_plain(&blocks),
                    DocFormat::Automerge if at.is_some() => {
                        return Err(Error::Invalid(
                            "an automerge export holds the whole history; leave out --at".into(),
                        ));
                    }
                    DocFormat::Automerge => data_encoding::BASE64.encode(&doc.save()),
                };
                DocAnswer::Show(DocView {
                    space: space_id,
                    name: space.name.clone(),
                    at,
                    heads: doc.automerge().get_heads().iter().map(|h| h.to_string()).collect(),
                    format,
                    content,
                    edited_ms: doc.edited_ms(),
                })
            }
            DocQuery::History => DocAnswer::History(
                doc.versions()
                    .into_iter()
                    .map(|v| VersionView {
                        id: v.hash.to_string(),
                        author: author(&v.actor),
                        time_ms: v.time_ms,
                        inserted: v.inserted,
                        deleted: v.deleted,
                        blocks: v.blocks,
                        excerpt: v.excerpt,
                    })
                    .collect(),
            ),
            DocQuery::Diff { from, to } => {
                let from_hash = find_version(doc, &from)?;
                let old = markdown::render(&doc.blocks_at(&[from_hash]).map_err(|e| Error::Invalid(e.to_string()))?);
                let (new, to_label) = match to {
                    Some(to) => {
                        let hash = find_version(doc, &to)?;
                        let blocks = doc.blocks_at(&[hash]).map_err(|e| Error::Invalid(e.to_string()))?;
                        (markdown::render(&blocks), hash.to_string())
                    }
                    None => (doc.markdown(), "current".to_string()),
                };
                let from_label = from_hash.to_string();
                DocAnswer::Diff(DiffView {
                    diff: text::diff(&old, &new, &from_label, &to_label),
                    from: from_label,
                    to: to_label,
                })
            }
            DocQuery::Blame => DocAnswer::Blame(
                doc.blame()
                    .into_iter()
                    .map(|l| BlameView {
                        line: l.line,
                        author: l.actor.as_ref().map(author),
                    })
                    .collect(),
            ),
        })
    }
}

/// Whether this node can seal `change`: it fits an envelope, and each of its
/// dependencies is the genesis or a change whose envelope is known.
fn sealable(
    change: &outpost_crdt::Change,
    genesis: ChangeHash,
    env_of_change: &std::collections::HashMap<ChangeHash, EnvelopeId>,
) -> Result<()> {
    if change.raw_bytes().len() > MAX_CHANGE_BYTES {
        return Err(Error::Invalid(format!(
            "this edit makes a change of {} KiB, more than one envelope carries ({} KiB): split it into several writes",
            change.raw_bytes().len() >> 10,
            MAX_CHANGE_BYTES >> 10
        )));
    }
    if change
        .deps()
        .iter()
        .any(|d| *d != genesis && !env_of_change.contains_key(d))
    {
        return Err(Error::Invalid(
            "the version edited is known here only inside a snapshot: edit the current text (leave out the base)"
                .into(),
        ));
    }
    Ok(())
}

/// A version named in full (a head passed back by a client).
fn parse_version(doc: &TextDoc, text: &str) -> Result<ChangeHash> {
    let hash: ChangeHash = text
        .parse()
        .map_err(|_| Error::Invalid(format!("{text:?} is not a version id (64 hex digits)")))?;
    if !doc.has_change(&hash) {
        return Err(Error::NotFound(format!("version {text} of this document")));
    }
    Ok(hash)
}

/// The version whose id starts with `prefix`.
fn find_version(doc: &TextDoc, prefix: &str) -> Result<ChangeHash> {
    let prefix = prefix.trim().to_ascii_lowercase();
    if prefix.len() < MIN_VERSION_PREFIX || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Invalid(format!(
            "{prefix:?} is not a version id: give at least {MIN_VERSION_PREFIX} hex digits of one (`outpost doc history` lists them)"
        )));
    }
    let mut found = doc
        .versions()
        .into_iter()
        .map(|v| v.hash)
        .filter(|h| h.to_string().starts_with(&prefix));
    match (found.next(), found.next()) {
        (Some(hash), None) => Ok(hash),
        (None, _) => Err(Error::NotFound(format!(
            "no version {prefix} in this document (`outpost doc history` lists them)"
        ))),
        (Some(_), Some(_)) => Err(Error::Invalid(format!(
            "version prefix {prefix} is ambiguous: give more digits"
        ))),
    }
}

/// A space's member devices with their users (whom `mentioned` picks from).
pub(super) fn member_users(space: &Space) -> Vec<(DeviceId, UserId)> {
    space
        .state
        .members
        .values()
        .map(|m| (m.cert.device, m.cert.user))
        .collect()
}

/// The member user a bare `@name` names: an org member's id, name or e-mail
/// local part (see `mention_aliases`) whose device is in the space, or a
/// unique prefix of a member's user id (at least 8 hex digits). Ambiguous
/// names mention nobody.
pub(super) fn mentioned(
    members: &[(DeviceId, UserId)],
    aliases: &[(Vec<String>, Vec<DeviceId>)],
    name: &str,
) -> Option<String> {
    const MIN_USER_PREFIX: usize = 8;
    let name = name.to_lowercase();
    let mut users: Vec<UserId> = aliases
        .iter()
        .filter(|(names, _)| names.contains(&name))
        .flat_map(|(_, devices)| members.iter().filter(|(d, _)| devices.contains(d)).map(|(_, u)| *u))
        .collect();
    if users.is_empty() && name.len() >= MIN_USER_PREFIX {
        users = members
            .iter()
            .map(|(_, u)| *u)
            .filter(|u| u.to_string().starts_with(&name))
            .collect();
    }
    users.sort();
    users.dedup();
    match users.as_slice() {
        [one] => Some(one.to_string()),
        _ => None,
    }
}
