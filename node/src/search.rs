//! Full-text search over what this device can read: chat messages and
//! shared documents, Chinese included. The index is local and derived from
//! the store, never synced: [`indexer`] keeps it current from the core's
//! events, rebuilds it when it is missing or from an older build, and brings
//! back up to date what changed while the daemon was down.
//!
//! Text is split into words ([`words`]: Chinese and Japanese by jieba in
//! search mode, other scripts at separators), lower-cased, and every query word also matches as a prefix, so
//! `deploy` finds "deployment" and `报` finds "报告". A retracted message is
//! deleted from the index and the segments holding it are merged away at
//! once, so its words do not linger in the index files.

pub mod indexer;
pub mod sealed;
mod words;

use std::{collections::HashSet, ops::Bound, path::Path};

use serde::{Deserialize, Serialize};
use tantivy::{
    Index, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, TantivyDocument, Term,
    collector::TopDocs,
    directory::MmapDirectory,
    query::{BooleanQuery, BoostQuery, Occur, Query, RangeQuery, RegexQuery, TermQuery, TermSetQuery},
    schema::{FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value},
    tokenizer::{LowerCaser, RemoveLongFilter, TextAnalyzer},
};

use self::sealed::{IndexKey, SealedDirectory};
use crate::ids::{DeviceId, SpaceId, UserId};

/// Bumped when the schema or the analysis changes: an index of another
/// version is rebuilt.
pub const INDEX_VERSION: u32 = 3;
/// Most hits one query returns.
pub const MAX_HITS: usize = 500;
/// Longest query (bytes) and most words in it.
pub const MAX_QUERY_BYTES: usize = 512;
const MAX_QUERY_WORDS: usize = 32;
const TOKENIZER: &str = "outpost_jieba";
/// Characters of context a snippet shows around the first match.
const SNIPPET_CHARS: usize = 80;

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("search index files: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Query(String),
}

/// What is indexed: one chat message or one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HitKind {
    Message,
    Document,
}

impl HitKind {
    fn as_str(self) -> &'static str {
        match self {
            HitKind::Message => "message",
            HitKind::Document => "document",
        }
    }
}

/// One entry to index.
#[derive(Debug, Clone)]
pub struct Entry {
    pub space: SpaceId,
    pub kind: HitKind,
    /// The message id; none for a document (one entry per document).
    pub id: Option<String>,
    pub author: Option<DeviceId>,
    pub user: Option<UserId>,
    pub at_ms: i64,
    pub text: String,
}

impl Entry {
    /// Unique per entry: replacing an entry deletes this key first.
    fn key(&self) -> String {
        entry_key(self.space, self.id.as_deref())
    }
}

fn entry_key(space: SpaceId, id: Option<&str>) -> String {
    match id {
        Some(id) => format!("{space}/{id}"),
        None => space.to_string(),
    }
}

/// A search as `outpost search` asks it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SearchQuery {
    pub text: String,
    #[serde(default)]
    pub space: Option<SpaceId>,
    /// Messages by this user or device: its id or a prefix of at least 8 hex characters.
    #[serde(default)]
    pub from: Option<String>,
    /// Written at or after (ms since the Unix epoch).
    #[serde(default)]
    pub after_ms: Option<i64>,
    /// Written before (ms since the Unix epoch).
    #[serde(default)]
    pub before_ms: Option<i64>,
    #[serde(default)]
    pub limit: Option<usize>,
}

/// One result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub space: SpaceId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space_name: Option<String>,
    pub kind: HitKind,
    /// The message id (none for a document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<DeviceId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserId>,
    pub at_ms: i64,
    /// The text around the first match.
    pub snippet: String,
    pub score: f32,
}

#[derive(Clone, Copy)]
struct Fields {
    key: Field,
    space: Field,
    kind: Field,
    id: Field,
    author: Field,
    user: Field,
    at: Field,
    text: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text_options = TextOptions::default().set_stored().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        key: b.add_text_field("key", STRING | STORED),
        space: b.add_text_field("space", STRING | STORED),
        kind: b.add_text_field("kind", STRING | STORED),
        id: b.add_text_field("id", STRING | STORED),
        author: b.add_text_field("author", STRING | STORED),
        user: b.add_text_field("user", STRING | STORED),
        at: b.add_i64_field("at", INDEXED | STORED | FAST),
        text: b.add_text_field("text", text_options),
    };
    (b.build(), fields)
}

fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(words::Words::default())
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .build()
}

/// The words of `text` as the index holds them (no spaces or punctuation).
fn words(text: &str) -> Vec<String> {
    let mut analyzer = analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut out: Vec<String> = Vec::new();
    while let Some(token) = stream.next() {
        let word = token.text.trim();
        if word.chars().any(char::is_alphanumeric) && !out.iter().any(|w| w == word) {
            out.push(word.to_string());
        }
    }
    out
}

/// The local search index.
pub struct SearchIndex {
    writer: std::sync::Mutex<IndexWriter>,
    reader: IndexReader,
    fields: Fields,
}

impl SearchIndex {
    /// Opens the index in `dir`, or makes a new one there when it is missing,
    /// damaged or of another version; `true` when it was made new (everything
    /// must be indexed).
    pub fn open(dir: &Path, key: IndexKey) -> Result<(Self, bool), Error> {
        let version_file = dir.join("VERSION");
        let current = std::fs::read_to_string(&version_file)
            .ok()
            .is_some_and(|v| v.trim() == INDEX_VERSION.to_string());
        let sealed = |dir: &Path| -> Result<SealedDirectory, Error> {
            let files = MmapDirectory::open(dir).map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
            Ok(SealedDirectory::new(Box::new(files), key.clone()))
        };
        // An index that does not open, or whose segments do not, is made anew.
        if current && let Ok(this) = Index::open(sealed(dir)?).map_err(Error::from).and_then(Self::with) {
            return Ok((this, false));
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        crate::identity::ensure_private_dir(dir).map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        let index = Index::create(sealed(dir)?, schema().0, IndexSettings::default())?;
        let this = Self::with(index)?;
        std::fs::write(&version_file, INDEX_VERSION.to_string())?;
        Ok((this, true))
    }

    /// An index in memory (benchmarks, tests).
    pub fn in_memory() -> Result<Self, Error> {
        Self::with(Index::create_in_ram(schema().0))
    }

    fn with(index: Index) -> Result<Self, Error> {
        index.tokenizers().register(TOKENIZER, analyzer());
        let (_, fields) = schema();
        let writer = index.writer_with_num_threads(1, 32 << 20)?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(Self {
            writer: std::sync::Mutex::new(writer),
            reader,
            fields,
        })
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, IndexWriter> {
        self.writer.lock().expect("index writer lock")
    }

    /// Adds `entry`, replacing the one with its key. Seen by searches after
    /// the next [`SearchIndex::commit`].
    pub fn put(&self, entry: &Entry) -> Result<(), Error> {
        let f = self.fields;
        let key = entry.key();
        let writer = self.writer();
        writer.delete_term(Term::from_field_text(f.key, &key));
        let mut doc = TantivyDocument::default();
        doc.add_text(f.key, &key);
        doc.add_text(f.space, entry.space.to_string());
        doc.add_text(f.kind, entry.kind.as_str());
        if let Some(id) = &entry.id {
            doc.add_text(f.id, id);
        }
        if let Some(author) = entry.author {
            doc.add_text(f.author, author.to_string());
        }
        if let Some(user) = entry.user {
            doc.add_text(f.user, user.to_string());
        }
        doc.add_i64(f.at, entry.at_ms);
        doc.add_text(f.text, &entry.text);
        writer.add_document(doc)?;
        Ok(())
    }

    /// Removes one entry (a retracted message).
    pub fn remove(&self, space: SpaceId, id: Option<&str>) {
        self.writer()
            .delete_term(Term::from_field_text(self.fields.key, &entry_key(space, id)));
    }

    /// Removes every entry of a space.
    pub fn remove_space(&self, space: SpaceId) {
        self.writer()
            .delete_term(Term::from_field_text(self.fields.space, &space.to_string()));
    }

    /// Makes what was put and removed visible to searches, durably. With
    /// `purge`, segments holding deleted entries are merged away, so removed
    /// text leaves the index files.
    pub fn commit(&self, purge: bool) -> Result<(), Error> {
        let mut writer = self.writer();
        writer.commit()?;
        if purge {
            let searcher = {
                self.reader.reload()?;
                self.reader.searcher()
            };
            let with_deletes: Vec<_> = searcher
                .segment_readers()
                .iter()
                .filter(|s| s.num_deleted_docs() > 0)
                .map(|s| s.segment_id())
                .collect();
            if !with_deletes.is_empty() {
                let _ = writer.merge(&with_deletes).wait()?;
                let _ = writer.garbage_collect_files().wait();
            }
        }
        drop(writer);
        self.reader.reload()?;
        Ok(())
    }

    /// Entries in the index (for status and tests).
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `q` over the entries of `readable` spaces only, best first.
    pub fn search(&self, q: &SearchQuery, readable: &HashSet<SpaceId>) -> Result<Vec<Hit>, Error> {
        let f = self.fields;
        if q.text.len() > MAX_QUERY_BYTES {
            return Err(Error::Query(format!("a query is at most {MAX_QUERY_BYTES} bytes")));
        }
        let words = words(&q.text);
        if words.is_empty() {
            return Err(Error::Query("the query has no words to search for".into()));
        }
        if words.len() > MAX_QUERY_WORDS {
            return Err(Error::Query(format!("a query has at most {MAX_QUERY_WORDS} words")));
        }
        let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for word in &words {
            // A Chinese word's characters are words of the query too (and
            // must match); the word itself only ranks.
            let occur = if words::spelled_out(word) {
                Occur::Should
            } else {
                Occur::Must
            };
            // The word itself (scored higher) or any word it begins.
            let exact: Box<dyn Query> = Box::new(TermQuery::new(
                Term::from_field_text(f.text, word),
                IndexRecordOption::WithFreqs,
            ));
            let prefix: Box<dyn Query> =
                Box::new(RegexQuery::from_pattern(&format!("{}.*", regex_escape(word)), f.text)?);
            must.push((
                occur,
                Box::new(BooleanQuery::new(vec![
                    (Occur::Should, Box::new(BoostQuery::new(exact, 2.0))),
                    (Occur::Should, prefix),
                ])),
            ));
        }
        if let Some(space) = q.space {
            must.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(f.space, &space.to_string()),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        if let Some(from) = &q.from {
            let from = from.trim().to_ascii_lowercase();
            if !(8..=64).contains(&from.len()) || !from.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::Query(format!(
                    "--from takes a user or device id, or at least 8 hex characters of one: got {from:?}"
                )));
            }
            let pattern = format!("{from}.*");
            must.push((
                Occur::Must,
                Box::new(BooleanQuery::new(vec![
                    (
                        Occur::Should,
                        Box::new(RegexQuery::from_pattern(&pattern, f.author)?) as Box<dyn Query>,
                    ),
                    (Occur::Should, Box::new(RegexQuery::from_pattern(&pattern, f.user)?)),
                ])),
            ));
        }
        if q.after_ms.is_some() || q.before_ms.is_some() {
            let lower = q
                .after_ms
                .map_or(Bound::Unbounded, |t| Bound::Included(Term::from_field_i64(f.at, t)));
            let upper = q
                .before_ms
                .map_or(Bound::Unbounded, |t| Bound::Excluded(Term::from_field_i64(f.at, t)));
            must.push((Occur::Must, Box::new(RangeQuery::new(lower, upper))));
        }
        // Only spaces this device can read now: one it left is never searched,
        // even before its entries are dropped from the index.
        match q.space {
            // One space asked for: its term above is the whole filter.
            Some(space) if readable.contains(&space) => {}
            Some(_) => return Ok(Vec::new()),
            None if readable.is_empty() => return Ok(Vec::new()),
            None => {
                let readable_terms = readable.iter().map(|s| Term::from_field_text(f.space, &s.to_string()));
                must.push((Occur::Must, Box::new(TermSetQuery::new(readable_terms))));
            }
        }
        let query = BooleanQuery::new(must);
        let limit = q.limit.unwrap_or(50).clamp(1, MAX_HITS);
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(limit).order_by_score())?;
        let mut hits = Vec::new();
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            let text_of = |field: Field| doc.get_first(field).and_then(|v| v.as_str()).map(str::to_string);
            let Some(space) = text_of(f.space).and_then(|s| s.parse::<SpaceId>().ok()) else {
                continue;
            };
            let kind = match text_of(f.kind).as_deref() {
                Some("document") => HitKind::Document,
                _ => HitKind::Message,
            };
            let text = text_of(f.text).unwrap_or_default();
            hits.push(Hit {
                space,
                space_name: None,
                kind,
                id: text_of(f.id),
                author: text_of(f.author).and_then(|a| a.parse().ok()),
                user: text_of(f.user).and_then(|u| u.parse().ok()),
                at_ms: doc.get_first(f.at).and_then(|v| v.as_i64()).unwrap_or(0),
                snippet: snippet(&text, &words),
                score,
            });
        }
        Ok(hits)
    }
}

/// Escapes regex syntax in a word (tantivy's regexes match whole terms).
fn regex_escape(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    for c in word.chars() {
        if "\\.+*?()|[]{}^$#&-~\"@".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Up to [`SNIPPET_CHARS`] characters of `text` around the first of `words`.
fn snippet(text: &str, words: &[String]) -> String {
    let lower = text.to_lowercase();
    let chars: Vec<char> = text.chars().collect();
    // Positions are found in the lower-cased text; fall back to the start when
    // lower-casing changed the length.
    let at = (lower.chars().count() == chars.len())
        .then(|| {
            words
                .iter()
                .filter_map(|w| lower.find(w.as_str()))
                .min()
                .map(|byte| lower[..byte].chars().count())
        })
        .flatten()
        .unwrap_or(0);
    let start = at.saturating_sub(SNIPPET_CHARS / 3);
    let end = (start + SNIPPET_CHARS).min(chars.len());
    let mut out: String = chars[start..end].iter().collect::<String>().replace('\n', " ");
    if start > 0 {
        out.insert(0, '…');
    }
    if end < chars.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests;
