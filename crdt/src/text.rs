//! Shared documents: rich text that merges character by character.
//!
//! A document is one Automerge text object, `ROOT.text`, created by the genesis.
//! It holds block markers and marked text (see [`block`]); people edit it as
//! Markdown ([`markdown`]). A save from an editor is applied as a minimal diff
//! of the text, the block markers and the marks (Automerge's `update_spans`),
//! never as a replacement, so two people who changed different words of one
//! paragraph offline both keep their words after they sync.
//!
//! Versions are the document's changes: each write is one change, and any
//! change can be shown, compared with another or restored (as a new change,
//! so history is kept and concurrent edits made elsewhere still merge).

use automerge::{
    ActorId, Automerge, Change, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, Span, Value,
    transaction::{CommitOptions, Transactable},
};

use crate::{DocId, Error, genesis};

pub mod block;
mod edit;
pub mod markdown;
mod rules;

pub use block::{Block, BlockKind, Container, ListItem, Marks, Run};

const TEXT: &str = "text";
/// Text validation rules implemented here; a space names the version it follows.
pub const RULES_VERSION: u16 = 1;
/// Longest mark name accepted in a change.
pub const MAX_MARK_NAME_BYTES: usize = 64;
/// Longest mentioned user id accepted in a change.
pub const MAX_MENTION_BYTES: usize = 128;

/// Why a change breaks the text rules (version [`RULES_VERSION`]).
///
/// The root is frozen after the genesis: every other object lives inside the
/// text (block markers and their fields), which writers edit freely. So the
/// rules are about the root and about bounds, checkable from the change alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("the change has no dependencies (every change descends from the genesis)")]
    NoDeps,
    #[error("the change touches the document root, which only the genesis writes")]
    Root,
    #[error("a mark name is longer than {MAX_MARK_NAME_BYTES} bytes")]
    MarkName,
    #[error("a mention names no user or one longer than {MAX_MENTION_BYTES} bytes")]
    Mention,
    #[error("the change touches an object the document does not hold (yet)")]
    UnknownObject,
    #[error("an op on the text that is not a character, block marker, deletion or mark")]
    TextOp,
    #[error("an op inside a block marker that is not a small scalar, map or list")]
    MarkerOp,
}

impl Violation {
    /// A fixed description, for logs and counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Violation::NoDeps => "text rules: a change without dependencies",
            Violation::Root => "text rules: touches the document root",
            Violation::MarkName => "text rules: mark name too long",
            Violation::Mention => "text rules: bad mention",
            Violation::UnknownObject => "text rules: an object the document does not hold",
            Violation::TextOp => "text rules: a bad op on the text",
            Violation::MarkerOp => "text rules: a bad op in a block marker",
        }
    }
}

/// An Automerge op id: (counter, actor). Identifies a character of the text
/// for as long as it exists, wherever edits move it.
pub type OpRef = (u64, ActorId);

/// A user mentioned by a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    /// The mentioned user's id, as written in the mark.
    pub user: String,
    /// The actor whose change made the mention, and the mark's op counter: with
    /// the actor, a unique id for the mention.
    pub actor: ActorId,
    pub counter: u64,
    /// The character the mark starts at (its op id: counter, actor), which
    /// stays put while the text around it is edited: see [`TextDoc::context_of`].
    pub anchor: Option<OpRef>,
}

/// A change that passed [`TextDoc::validate`], with the mentions it makes.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    change: Change,
    mentions: Vec<Mention>,
}

impl Checked {
    pub fn change(&self) -> &Change {
        &self.change
    }

    pub fn mentions(&self) -> &[Mention] {
        &self.mentions
    }

    pub(crate) fn into_parts(self) -> (Change, Vec<Mention>) {
        (self.change, self.mentions)
    }
}

/// One version of a document: a change, summarised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub hash: ChangeHash,
    pub actor: ActorId,
    pub seq: u64,
    /// Milliseconds since the Unix epoch, as claimed by the author.
    pub time_ms: i64,
    /// Characters inserted and elements (characters or blocks) deleted.
    pub inserted: usize,
    pub deleted: usize,
    /// Blocks (paragraphs, headings, items) inserted.
    pub blocks: usize,
    /// The start of the inserted text.
    pub excerpt: String,
}

/// Who wrote a line of the rendered document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlameLine {
    pub line: String,
    /// The actor who wrote most of the line's characters (the block's marker
    /// for an empty line).
    pub actor: Option<ActorId>,
}

/// One shared document.
#[derive(Debug)]
pub struct TextDoc {
    doc: Automerge,
    text: ObjId,
    genesis: ChangeHash,
}

impl TextDoc {
    /// A document at genesis.
    pub fn new(doc_id: DocId) -> Self {
        let (doc, genesis) = Self::genesis(&doc_id);
        let text = text_object(&doc);
        Self { doc, text, genesis }
    }

    /// The genesis document and the hash of its only change.
    pub fn genesis(doc_id: &DocId) -> (Automerge, ChangeHash) {
        genesis::build(doc_id, |tx| {
            tx.put_object(ROOT, TEXT, ObjType::Text)?;
            Ok(())
        })
    }

    pub fn genesis_hash(&self) -> ChangeHash {
        self.genesis
    }

    /// Makes the document equal to `blocks` as `actor`, with the smallest edit
    /// Automerge finds. `None` when nothing changes.
    pub fn write(&mut self, actor: ActorId, blocks: &[Block], now_ms: i64) -> Result<Option<Change>, Error> {
        self.doc.set_actor(actor);
        let mut tx = self.doc.transaction();
        edit::update(&mut tx, &self.text, blocks)?;
        let (hash, _) = tx.commit_with(CommitOptions::default().with_time(now_ms));
        match hash {
            Some(hash) => Ok(Some(self.doc.get_change_by_hash(&hash).ok_or(Error::EmptyChange)?)),
            None => Ok(None),
        }
    }

    /// Like [`TextDoc::write`], but edits the document as it was at `base` (the
    /// version an editor opened), so that changes made since, here or by
    /// others, merge with this one instead of being undone by it.
    ///
    /// Fails with [`Error::StaleWriter`] when `actor` wrote after `base`: its
    /// next change would reuse a seq. The caller then writes as a new actor.
    pub fn write_from(
        &mut self,
        actor: ActorId,
        base: &[ChangeHash],
        blocks: &[Block],
        now_ms: i64,
    ) -> Result<Option<Change>, Error> {
        let Some(change) = self.prepare(actor, base, blocks, now_ms)? else {
            return Ok(None);
        };
        self.apply_own(change.clone())?;
        Ok(Some(change))
    }

    /// The change [`TextDoc::write_from`] would make, made on a copy: the
    /// document is unchanged until [`TextDoc::apply_own`], so a caller can
    /// refuse a change (too big to send, say) without it ever being here.
    pub fn prepare(
        &self,
        actor: ActorId,
        base: &[ChangeHash],
        blocks: &[Block],
        now_ms: i64,
    ) -> Result<Option<Change>, Error> {
        let mut heads = self.doc.get_heads();
        let mut base = base.to_vec();
        heads.sort();
        base.sort();
        let fork = if heads == base {
            self.doc.fork()
        } else {
            self.doc.fork_at(&base)?
        };
        let mut fork = fork.with_actor(actor);
        let text = text_object(&fork);
        let mut tx = fork.transaction();
        edit::update(&mut tx, &text, blocks)?;
        let (hash, _) = tx.commit_with(CommitOptions::default().with_time(now_ms));
        match hash {
            Some(hash) => Ok(Some(fork.get_change_by_hash(&hash).ok_or(Error::EmptyChange)?)),
            None => Ok(None),
        }
    }

    /// Applies a change this node made with [`TextDoc::prepare`]. Fails with
    /// [`Error::StaleWriter`] (the document unchanged) when its writer already
    /// has a change at its seq.
    pub fn apply_own(&mut self, change: Change) -> Result<(), Error> {
        match self.doc.apply_changes([change]) {
            Ok(()) => Ok(()),
            Err(automerge::AutomergeError::DuplicateSeqNumber(..)) => Err(Error::StaleWriter),
            Err(e) => Err(e.into()),
        }
    }

    /// Inserts and deletes plain text at a character position, as `actor`, in
    /// one change: for replaying keystrokes (benchmarks, editors that report
    /// splices). Positions count Unicode code points of the text, block
    /// markers counting one each.
    pub fn splice(&mut self, actor: ActorId, edits: &[(usize, usize, &str)], now_ms: i64) -> Result<Change, Error> {
        self.doc.set_actor(actor);
        let mut tx = self.doc.transaction();
        for (pos, del, ins) in edits {
            tx.splice_text(&self.text, *pos, *del as isize, ins)?;
        }
        let (hash, _) = tx.commit_with(CommitOptions::default().with_time(now_ms));
        let hash = hash.ok_or(Error::EmptyChange)?;
        self.doc.get_change_by_hash(&hash).ok_or(Error::EmptyChange)
    }

    /// The document as blocks.
    pub fn blocks(&self) -> Vec<Block> {
        match self.doc.spans(&self.text) {
            Ok(spans) => from_spans(spans),
            Err(_) => Vec::new(),
        }
    }

    /// The document as it was at `heads` (changes it holds).
    pub fn blocks_at(&self, heads: &[ChangeHash]) -> Result<Vec<Block>, Error> {
        Ok(from_spans(self.doc.spans_at(&self.text, heads)?))
    }

    /// The document as Markdown.
    pub fn markdown(&self) -> String {
        markdown::render(&self.blocks())
    }

    /// The plain text of the text object (block markers as U+FFFC).
    pub fn raw_text(&self) -> String {
        self.doc.text(&self.text).unwrap_or_default()
    }

    /// Checks `change` against the text rules (see [`rules`]) before it may be
    /// applied, and reads the mentions it makes. An op on an object this
    /// document does not hold yet is `UnknownObject`: it may be created by a
    /// change still to come (the node lets such a change wait).
    pub fn validate(&self, change: Change) -> Result<Checked, Violation> {
        self.validate_with(change, &|_| None)
    }

    /// [`TextDoc::validate`], with `pending` giving the type of objects created
    /// by changes that will be applied before this one but are not yet (stored
    /// changes replayed at start-up, a snapshot's changes).
    pub fn validate_with(
        &self,
        change: Change,
        pending: &dyn Fn(&OpRef) -> Option<ObjType>,
    ) -> Result<Checked, Violation> {
        let text = match &self.text {
            ObjId::Id(counter, actor, _) => (*counter, actor.clone()),
            ObjId::Root => unreachable!("the text object is created by the genesis"),
        };
        let held = |obj: &OpRef| object_type(&self.doc, obj).or_else(|| pending(obj));
        let mentions = rules::check(&change, &text, &held)?;
        Ok(Checked { change, mentions })
    }

    /// Validates and applies remote changes in one call.
    pub fn apply(&mut self, changes: Vec<Change>) -> Result<Vec<Mention>, Error> {
        let checked = changes
            .into_iter()
            .map(|c| self.validate(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(crate::Violation::Text)?;
        self.apply_checked(checked)
    }

    /// Applies changes that passed [`TextDoc::validate`], in one call. Returns
    /// the mentions they make.
    pub fn apply_checked(&mut self, checked: Vec<Checked>) -> Result<Vec<Mention>, Error> {
        let mut mentions = Vec::new();
        let changes: Vec<Change> = checked
            .into_iter()
            .map(|c| {
                let (change, m) = c.into_parts();
                mentions.extend(m);
                change
            })
            .collect();
        self.doc.apply_changes(changes)?;
        Ok(mentions)
    }

    /// When the text was last written: the latest time its current versions
    /// claim (ms since the Unix epoch, the writers' clocks); None for a new
    /// document.
    pub fn edited_ms(&self) -> Option<i64> {
        self.doc
            .get_heads()
            .iter()
            .filter(|h| **h != self.genesis)
            .filter_map(|h| self.doc.get_change_by_hash(h))
            .map(|c| c.timestamp())
            .max()
    }

    /// Every version after the genesis, oldest first (a causal order).
    pub fn versions(&self) -> Vec<Version> {
        self.doc
            .get_changes(&[])
            .into_iter()
            .filter(|c| c.hash() != self.genesis)
            .map(|c| summarise(&c))
            .collect()
    }

    /// The elements of the text in order: a block marker (`None`) or a
    /// character, each with the op id that inserted it.
    ///
    /// Automerge 0.12's `list_range` over a text also yields the mark
    /// operations (as scalars: the mark's value, or null at its end); they are
    /// told apart by their op ids, read from the changes.
    fn elements(&self) -> Vec<(Option<String>, Option<OpRef>)> {
        use automerge::legacy::OpType;
        let mut marks: std::collections::HashSet<OpRef> = std::collections::HashSet::new();
        for change in self.doc.get_changes(&[]) {
            let start = change.start_op().get();
            for (i, op) in change.decode().operations.iter().enumerate() {
                if matches!(op.action, OpType::MarkBegin(_) | OpType::MarkEnd(_)) {
                    marks.insert((start + i as u64, change.actor_id().clone()));
                }
            }
        }
        let mut out = Vec::new();
        for item in self.doc.list_range(&self.text, ..) {
            let id = match item.id() {
                ObjId::Id(counter, actor, _) => Some((counter, actor)),
                ObjId::Root => None,
            };
            if id.as_ref().is_some_and(|id| marks.contains(id)) {
                continue;
            }
            let text = match item.value {
                automerge::ValueRef::Object(_) => None,
                automerge::ValueRef::Scalar(automerge::ScalarValueRef::Str(c)) => Some(c.to_string()),
                automerge::ValueRef::Scalar(_) => Some(String::new()),
            };
            out.push((text, id));
        }
        out
    }

    /// Who wrote each line of the Markdown: the writer of most of its characters.
    pub fn blame(&self) -> Vec<BlameLine> {
        // Each block's characters' writers, split into the block's text lines.
        let mut per_block: Vec<(Option<ActorId>, Vec<Vec<ActorId>>)> = Vec::new();
        for (text, id) in self.elements() {
            let actor = id.map(|(_, actor)| actor);
            match text {
                None => per_block.push((actor, vec![Vec::new()])),
                Some(c) => {
                    if per_block.is_empty() {
                        per_block.push((None, vec![Vec::new()]));
                    }
                    let lines = &mut per_block.last_mut().expect("pushed above").1;
                    if c == "\n" {
                        lines.push(Vec::new());
                    } else if let Some(actor) = actor {
                        lines.last_mut().expect("never empty").push(actor);
                    }
                }
            }
        }
        let blocks = self.blocks();
        let mut out = Vec::new();
        for (block, (marker, lines)) in blocks.iter().zip(per_block) {
            let rendered = markdown::render(std::slice::from_ref(block));
            let rendered: Vec<&str> = rendered.trim_end_matches('\n').split('\n').collect();
            let block_writer = majority(lines.iter().flatten()).or(marker);
            let offset = usize::from(matches!(block.kind, BlockKind::Code { .. }));
            for (i, line) in rendered.iter().enumerate() {
                let actor = match i.checked_sub(offset).and_then(|i| lines.get(i)) {
                    Some(chars) if rendered.len() == lines.len() + 2 * offset => {
                        majority(chars.iter()).or(block_writer.clone())
                    }
                    _ => block_writer.clone(),
                };
                out.push(BlameLine {
                    line: line.to_string(),
                    actor,
                });
            }
        }
        out
    }

    /// Whether the change with this hash is part of the document.
    pub fn has_change(&self, hash: &ChangeHash) -> bool {
        self.doc.get_missing_deps(&[*hash]).is_empty()
    }

    /// The text of the block holding the character `anchor` (an op id of the
    /// text), blanks collapsed, at most `max` characters: what a mention is
    /// about. `None` when the character is gone.
    pub fn context_of(&self, anchor: &OpRef, max: usize) -> Option<String> {
        let mut block = String::new();
        let mut found = false;
        for (text, id) in self.elements() {
            match text {
                None if found => break,
                None => block.clear(),
                Some(c) => {
                    block.push_str(&c);
                    found |= id.is_some_and(|(counter, actor)| counter == anchor.0 && actor == anchor.1);
                }
            }
        }
        found.then(|| {
            block
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(max)
                .collect()
        })
    }

    /// The underlying document, for saving and export.
    pub fn automerge(&self) -> &Automerge {
        &self.doc
    }

    /// The whole document, compressed: what a snapshot seals and what an
    /// `automerge` export writes.
    pub fn save(&self) -> Vec<u8> {
        self.doc.save()
    }

    /// Replaces the document with a merged one (after a snapshot absorb).
    pub(crate) fn replace(&mut self, doc: Automerge) {
        self.text = text_object(&doc);
        self.doc = doc;
    }

    pub(crate) fn automerge_mut(&mut self) -> &mut Automerge {
        &mut self.doc
    }
}

/// A readable line diff of two versions' Markdown (unified format).
pub fn diff(old: &str, new: &str, old_label: &str, new_label: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_label, new_label)
        .to_string()
}

/// The blocks of a document saved by any Automerge application that keeps its
/// text in `ROOT.text` (an `automerge` export of Outpost's, for one).
pub fn blocks_of_saved(bytes: &[u8]) -> Result<Vec<Block>, Error> {
    let doc = Automerge::load(bytes)?;
    match doc.get(ROOT, TEXT)? {
        Some((Value::Object(ObjType::Text), text)) => Ok(from_spans(doc.spans(&text)?)),
        _ => Err(Error::NoText),
    }
}

/// The type of the object `obj` in `doc`, if `doc` holds it.
pub(crate) fn object_type(doc: &Automerge, obj: &OpRef) -> Option<ObjType> {
    let (_, kind) = doc.import(&format!("{}@{}", obj.0, obj.1.to_hex_string())).ok()?;
    Some(kind)
}

/// The text object of a document whose genesis created it.
fn text_object(doc: &Automerge) -> ObjId {
    match doc.get(ROOT, TEXT) {
        Ok(Some((Value::Object(ObjType::Text), id))) => id,
        _ => unreachable!("the genesis creates the text object"),
    }
}

/// The actor appearing most often (the first among equals).
fn majority<'a>(actors: impl Iterator<Item = &'a ActorId>) -> Option<ActorId> {
    let mut counts: Vec<(&ActorId, usize)> = Vec::new();
    for a in actors {
        match counts.iter_mut().find(|(b, _)| *b == a) {
            Some((_, n)) => *n += 1,
            None => counts.push((a, 1)),
        }
    }
    let best = counts.iter().map(|(_, n)| *n).max()?;
    counts.into_iter().find(|(_, n)| *n == best).map(|(a, _)| a.clone())
}

fn summarise(change: &Change) -> Version {
    use automerge::legacy::OpType;
    const EXCERPT_CHARS: usize = 60;
    let (mut inserted, mut deleted, mut blocks) = (0, 0, 0);
    let mut excerpt = String::new();
    for op in change.decode().operations {
        match (&op.action, op.insert) {
            (OpType::Put(automerge::ScalarValue::Str(s)), true) => {
                inserted += s.chars().count();
                if excerpt.chars().count() < EXCERPT_CHARS {
                    excerpt.push_str(s);
                }
            }
            (OpType::Make(ObjType::Map), true) => blocks += 1,
            (OpType::Delete, _) => deleted += 1,
            _ => {}
        }
    }
    let excerpt: String = excerpt
        .chars()
        .map(|c| {
            if c.is_control() || c == block::HARD_BREAK {
                ' '
            } else {
                c
            }
        })
        .take(EXCERPT_CHARS)
        .collect();
    Version {
        hash: change.hash(),
        actor: change.actor_id().clone(),
        seq: change.seq(),
        time_ms: change.timestamp(),
        inserted,
        deleted,
        blocks,
        excerpt: excerpt.trim().to_string(),
    }
}

fn from_spans<'a>(spans: impl Iterator<Item = Span> + 'a) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    for span in spans {
        match span {
            Span::Block(map) => blocks.push(Block::from_marker(&map)),
            Span::Text { text, marks } => {
                if blocks.is_empty() {
                    // Text before any marker (written by another application).
                    blocks.push(Block::new(BlockKind::Paragraph, Vec::new()));
                }
                let marks = Marks::from_mark_set(marks.as_deref());
                blocks.last_mut().expect("pushed above").push(&text, &marks);
            }
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::actor_id;

    const DOC: DocId = DocId([7; 16]);

    fn md(text: &str) -> Vec<Block> {
        markdown::parse(text, &|name| (name == "alice").then(|| "a11ce".to_string()))
    }

    fn writer(n: u8) -> ActorId {
        actor_id(&[n; 32], &DOC, 1)
    }

    #[test]
    fn edited_is_the_latest_time_of_the_current_versions() {
        let mut a = TextDoc::new(DOC);
        assert_eq!(a.edited_ms(), None);
        let first = a.write(writer(1), &md("one"), 1_000).unwrap().unwrap();
        assert_eq!(a.edited_ms(), Some(1_000));
        let mut b = TextDoc::new(DOC);
        b.apply(vec![first]).unwrap();
        let later = b.write(writer(2), &md("one, two"), 5_000).unwrap().unwrap();
        a.write(writer(1), &md("one\n\nthree"), 3_000).unwrap();
        a.apply(vec![later]).unwrap();
        // Two concurrent versions: the later claim counts.
        assert_eq!(a.edited_ms(), Some(5_000));
    }

    /// A document both writers start from, and each writer's copy of it.
    fn shared(start: &str) -> (TextDoc, TextDoc) {
        let mut a = TextDoc::new(DOC);
        let first = a.write(writer(1), &md(start), 1).unwrap().unwrap();
        let mut b = TextDoc::new(DOC);
        b.apply(vec![first]).unwrap();
        (a, b)
    }

    #[test]
    fn offline_edits_of_one_paragraph_both_survive() {
        let (mut a, mut b) = shared("# Plan\n\nWe meet on Monday in the small room.\n");
        let ca = a
            .write(writer(1), &md("# Plan\n\nWe meet on Tuesday in the small room.\n"), 2)
            .unwrap()
            .unwrap();
        let cb = b
            .write(
                writer(2),
                &md("# Plan\n\nWe meet on Monday in the big room.\n\nBring notes.\n"),
                2,
            )
            .unwrap()
            .unwrap();
        a.apply(vec![cb]).unwrap();
        b.apply(vec![ca]).unwrap();
        assert_eq!(a.markdown(), b.markdown());
        assert_eq!(
            a.markdown(),
            "# Plan\n\nWe meet on Tuesday in the big room.\n\nBring notes.\n"
        );
    }

    #[test]
    fn saving_unchanged_text_writes_nothing() {
        let (mut a, _) = shared("**bold `code` bold** and [a *link*](https://x.example)\n");
        assert!(a.write(writer(1), &a.blocks(), 3).unwrap().is_none());
    }

    #[test]
    fn marks_change_without_retyping_text() {
        let (mut a, mut b) = shared("plain words here\n");
        let bold = a.write(writer(1), &md("plain **words** here\n"), 2).unwrap().unwrap();
        // Meanwhile b edits another word: both edits merge.
        let typed = b.write(writer(2), &md("plain words there\n"), 2).unwrap().unwrap();
        assert!(
            bold.decode()
                .operations
                .iter()
                .all(|op| !matches!(op.action, automerge::legacy::OpType::Put(_)))
        );
        a.apply(vec![typed]).unwrap();
        b.apply(vec![bold]).unwrap();
        assert_eq!(a.markdown(), "plain **words** there\n");
        assert_eq!(b.markdown(), a.markdown());
    }

    #[test]
    fn versions_show_and_restore() {
        let (mut a, mut b) = shared("one\n");
        a.write(writer(1), &md("one two\n"), 2).unwrap().unwrap();
        let versions = a.versions();
        assert_eq!(versions.len(), 2);
        assert_eq!(versions[1].inserted, 4);
        assert_eq!(versions[1].excerpt, "two");
        assert_eq!(versions[0].blocks, 1);
        let first = versions[0].hash;
        assert_eq!(markdown::render(&a.blocks_at(&[first]).unwrap()), "one\n");

        // b adds a line concurrently; a restores the first version.
        let added = b.write(writer(2), &md("one\n\nthree\n"), 3).unwrap().unwrap();
        let old = a.blocks_at(&[first]).unwrap();
        let restore = a.write(writer(1), &old, 4).unwrap().unwrap();
        assert_eq!(a.markdown(), "one\n");
        a.apply(vec![added]).unwrap();
        b.apply(vec![restore]).unwrap();
        assert_eq!(
            a.markdown(),
            "one\n\nthree\n",
            "the concurrent edit survives the restore"
        );
        assert_eq!(b.markdown(), a.markdown());
        assert_eq!(a.versions().len(), 4, "history is kept");
    }

    #[test]
    fn mentions_are_written_and_read_from_changes() {
        let (mut a, mut b) = shared("hello\n");
        let change = a
            .write(writer(1), &md("hello @alice and @bob, mail x@alice\n"), 2)
            .unwrap()
            .unwrap();
        assert_eq!(
            a.markdown(),
            "hello [@alice](outpost:user/a11ce) and @bob, mail x@alice\n"
        );
        let mentions = b.apply(vec![change]).unwrap();
        assert_eq!(mentions.len(), 1);
        assert_eq!(mentions[0].user, "a11ce");
        assert_eq!(mentions[0].actor, writer(1));
        // Rewriting the same text mentions nobody again.
        assert!(a.write(writer(1), &a.blocks(), 3).unwrap().is_none());
    }

    #[test]
    fn the_root_is_off_limits() {
        let (a, _) = shared("x\n");
        let mut raw = a.automerge().fork().with_actor(writer(3));
        let mut tx = raw.transaction();
        tx.put(ROOT, "text", "gone").unwrap();
        let (hash, _) = tx.commit();
        let change = raw.get_change_by_hash(&hash.unwrap()).unwrap();
        assert_eq!(a.validate(change).map(drop), Err(Violation::Root));
    }

    /// A change made directly on a copy of `doc`, bypassing the model.
    fn raw_change(
        doc: &TextDoc,
        actor: ActorId,
        edit: impl FnOnce(&mut automerge::transaction::Transaction<'_>, &ObjId),
    ) -> Change {
        let mut raw = doc.automerge().fork().with_actor(actor);
        let mut tx = raw.transaction();
        edit(&mut tx, &doc.text);
        let (hash, _) = tx.commit();
        raw.get_change_by_hash(&hash.unwrap()).unwrap()
    }

    #[test]
    fn text_elements_are_characters_markers_and_marks() {
        let (a, _) = shared("x\n");
        let long = raw_change(&a, writer(3), |tx, text| {
            tx.insert(text, 1, "abc").unwrap();
        });
        assert_eq!(a.validate(long).map(drop), Err(Violation::TextOp));
        let nested = raw_change(&a, writer(3), |tx, text| {
            let marker = tx.split_block(text, 0).unwrap();
            tx.put_object(&marker, "x", ObjType::Text).unwrap();
        });
        assert_eq!(a.validate(nested).map(drop), Err(Violation::MarkerOp));
        let counter = raw_change(&a, writer(3), |tx, text| {
            let marker = tx.split_block(text, 0).unwrap();
            tx.put(&marker, "n", automerge::ScalarValue::counter(1)).unwrap();
        });
        assert_eq!(a.validate(counter).map(drop), Err(Violation::MarkerOp));
    }

    #[test]
    fn an_object_not_held_yet_is_premature_not_invalid() {
        let (mut a, mut b) = shared("# Title\n");
        // a makes a heading a paragraph: the second change edits the marker the
        // first one created.
        let first = a.write(writer(1), &md("# Title\n\nbody\n"), 2).unwrap().unwrap();
        let second = a.write(writer(1), &md("# Title\n\n## body\n"), 3).unwrap().unwrap();
        assert_eq!(b.validate(second.clone()).map(drop), Err(Violation::UnknownObject));
        let created = crate::doc::created_objects([&first]);
        assert!(b.validate_with(second.clone(), &|o| created.get(o).copied()).is_ok());
        b.apply(vec![first]).unwrap();
        b.apply(vec![second]).unwrap();
        assert_eq!(b.markdown(), a.markdown());
    }

    #[test]
    fn changing_a_block_keeps_its_marker() {
        let (mut a, mut b) = shared("- [ ] buy milk\n");
        let tick = a.write(writer(1), &md("- [x] buy milk\n"), 2).unwrap().unwrap();
        let typed = b.write(writer(2), &md("- [ ] buy oat milk\n"), 2).unwrap().unwrap();
        let both_tick = b.write(writer(2), &md("- [x] buy oat milk\n"), 3).unwrap().unwrap();
        a.apply(vec![typed, both_tick]).unwrap();
        b.apply(vec![tick]).unwrap();
        assert_eq!(a.markdown(), "- [x] buy oat milk\n");
        assert_eq!(b.markdown(), a.markdown());
    }

    #[test]
    fn typing_after_bold_leaves_the_rest_of_the_mark_alone() {
        let (mut a, mut b) = shared("**bold words**\n");
        // a types after the bold text (Automerge extends the mark to it, the
        // Markdown says not); b un-bolds the first word meanwhile.
        let typed = a.write(writer(1), &md("**bold words** plain\n"), 2).unwrap().unwrap();
        let unbold = b.write(writer(2), &md("bold **words**\n"), 2).unwrap().unwrap();
        a.apply(vec![unbold]).unwrap();
        b.apply(vec![typed]).unwrap();
        assert_eq!(a.markdown(), "bold **words** plain\n");
        assert_eq!(b.markdown(), a.markdown());
    }

    #[test]
    fn blame_names_the_writer_of_each_line() {
        let (mut a, mut b) = shared("first line\n\n```\nlet x = 1;\n```\n");
        let c = b
            .write(writer(2), &md("first line\n\n```\nlet x = 1;\nlet y = 2;\n```\n"), 2)
            .unwrap()
            .unwrap();
        a.apply(vec![c]).unwrap();
        let blame: Vec<(String, Option<ActorId>)> = a.blame().into_iter().map(|l| (l.line, l.actor)).collect();
        assert_eq!(
            blame,
            [
                ("first line".to_string(), Some(writer(1))),
                ("```".to_string(), Some(writer(1))),
                ("let x = 1;".to_string(), Some(writer(1))),
                ("let y = 2;".to_string(), Some(writer(2))),
                ("```".to_string(), Some(writer(1))),
            ]
        );
    }
}
