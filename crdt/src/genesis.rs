//! Deterministic genesis: every node computes the same first change of a document.
//!
//! Typed models never create containers lazily: two devices doing that offline would
//! create two objects under one key and one side's data would vanish. Instead the
//! full schema is created by a genesis change with a fixed actor (derived from the doc
//! id), time 0 and fixed operations, so its hash is identical everywhere. It is never
//! sent over the wire; each node synthesises it.

use automerge::{ActorId, Automerge, ChangeHash, transaction::CommitOptions};

use crate::DocId;

const GENESIS_CONTEXT: &str = "outpost/genesis-actor/v1";

/// The actor that authors a document's genesis change and nothing else.
pub fn genesis_actor(doc: &DocId) -> ActorId {
    let hash = blake3::derive_key(GENESIS_CONTEXT, &doc.0);
    ActorId::from(&hash[..16])
}

/// Builds a document whose only change is the genesis produced by `schema`.
///
/// `schema` must be a pure function of its arguments: it runs on every node.
pub(crate) fn build<F>(doc: &DocId, schema: F) -> (Automerge, ChangeHash)
where
    F: FnOnce(&mut automerge::transaction::Transaction<'_>) -> Result<(), automerge::AutomergeError>,
{
    let mut am = Automerge::new().with_actor(genesis_actor(doc));
    let mut tx = am.transaction();
    // The schema ops are fixed literals; failure would be a bug in this crate.
    schema(&mut tx).expect("genesis schema operations are valid on an empty document");
    let (hash, _) = tx.commit_with(CommitOptions::default().with_time(0));
    let hash = hash.expect("a genesis schema creates at least one object");
    (am, hash)
}
