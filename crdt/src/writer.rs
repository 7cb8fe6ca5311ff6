//! Writers: who authors Automerge changes.
//!
//! A writer is (device, document, incarnation). The incarnation is a random 64-bit
//! value a daemon run picks the first time it writes to a document, so a restored
//! backup, a lost store or a copied home can never reuse an (actor, seq): Automerge
//! rejects a reused seq with `DuplicateSeqNumber` and would wedge every peer.

use automerge::ActorId;

use crate::DocId;

/// Domain separator for actor derivation; changing it changes every actor id.
const ACTOR_CONTEXT: &str = "outpost/actor/v1";

/// The Automerge actor of writer (device, doc, incarnation): the first 16 bytes of
/// BLAKE3("outpost/actor/v1" ‖ device key ‖ doc id ‖ incarnation).
///
/// Receivers recompute it from the signed envelope header and compare it with the
/// actor inside the decrypted change: this binds every change to its device key.
pub fn actor_id(device_key: &[u8; 32], doc: &DocId, incarnation: u64) -> ActorId {
    ActorId::from(actor_bytes(device_key, doc, incarnation))
}

/// The raw 16 bytes of [`actor_id`].
pub fn actor_bytes(device_key: &[u8; 32], doc: &DocId, incarnation: u64) -> [u8; 16] {
    let mut hasher = blake3::Hasher::new_derive_key(ACTOR_CONTEXT);
    hasher.update(device_key);
    hasher.update(&doc.0);
    hasher.update(&incarnation.to_le_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnation_changes_actor() {
        let doc = DocId([3; 16]);
        assert_ne!(actor_id(&[1; 32], &doc, 1), actor_id(&[1; 32], &doc, 2));
        assert_ne!(actor_id(&[1; 32], &doc, 1), actor_id(&[2; 32], &doc, 1));
        assert_ne!(actor_id(&[1; 32], &doc, 1), actor_id(&[1; 32], &DocId([4; 16]), 1));
        assert_eq!(actor_id(&[1; 32], &doc, 1), actor_id(&[1; 32], &doc, 1));
    }
}
