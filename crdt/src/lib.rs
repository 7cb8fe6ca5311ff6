//! Typed Outpost document models on Automerge.
//!
//! This crate is pure: no I/O, no clock, no randomness of its own. Time and actor ids
//! are passed in, so every function is deterministic and identical on every node.
//!
//! ```
//! use outpost_crdt::{chat::{ChatDoc, NewMessage}, writer, Author, DocId};
//!
//! let doc_id = DocId([7; 16]);
//! let actor = writer::actor_id(&[1; 32], &doc_id, 42);
//! let author = Author { user: "ab".repeat(32), editor: true, admin: false };
//! // The text lives in a body the node seals and stores; the document names it.
//! let body = "0f".repeat(32);
//! let mut room = ChatDoc::new(doc_id);
//! let post = NewMessage { id: "m1".into(), body: body.clone(), reply_to: None, mentions: vec![], all: false };
//! let change = room.post(actor, &author, &[post], 1_700_000_000_000).expect("a fresh room accepts a post");
//!
//! let mut peer = ChatDoc::new(doc_id);
//! peer.apply(vec![change], &author).expect("the peer applies the change");
//! assert_eq!(peer.messages()[0].body, body);
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod calendar;
pub mod chat;
pub mod doc;
pub mod genesis;
pub mod snapshot;
pub mod text;
pub mod writer;

pub use automerge::{ActorId, Change, ChangeHash};

/// Identifies one Automerge document of a space (a chat shard, a text, a calendar).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct DocId(pub [u8; 16]);

impl std::fmt::Debug for DocId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DocId(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// Who wrote a change, as a document's rules see it. The node reads it from
/// the signed envelope and the space's control log at the change's causal
/// point, so every node judges a change by the same author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    /// The author's user id (hex), as documents name users.
    pub user: String,
    /// Whether its role lets it write content (writer or above); readers reach
    /// the rules only in spaces where they may answer (calendars).
    pub editor: bool,
    /// Whether it is an owner or admin of the space (room settings).
    pub admin: bool,
}

impl Author {
    pub fn may_edit(&self) -> bool {
        self.editor
    }
}

/// Why a document operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("automerge rejected the operation")]
    Automerge(#[from] automerge::AutomergeError),
    #[error("the transaction produced no change")]
    EmptyChange,
    #[error("a change checked against another document model")]
    WrongModel,
    #[error("this writer wrote after the version edited: write as a new writer")]
    StaleWriter,
    #[error("the document has no text at `text`")]
    NoText,
    #[error("the change would be {0} bytes, more than one envelope takes")]
    TooLarge(usize),
    #[error(transparent)]
    Calendar(#[from] calendar::WriteError),
    #[error("the change breaks the document's rules: {0}")]
    Rules(#[from] Violation),
}

/// Why a change breaks its document type's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error(transparent)]
    Chat(#[from] chat::Violation),
    #[error(transparent)]
    Text(#[from] text::Violation),
    #[error(transparent)]
    Calendar(#[from] calendar::Violation),
}

impl Violation {
    /// A fixed description, for logs and counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Violation::Chat(v) => v.reason(),
            Violation::Text(v) => v.reason(),
            Violation::Calendar(v) => v.reason(),
        }
    }
}
