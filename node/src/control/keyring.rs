//! The epoch keys one device holds for one space, unlocked from the control log:
//! wraps (and grants) addressed to the device, then history links from the keys it holds to
//! older ones, then merged keys derived from their parts.

use std::collections::BTreeMap;

use super::{Epoch, SpaceState};
use crate::{
    crypto::{EpochKey, Error},
    identity::DeviceKeys,
    ids::EpochId,
};

#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: BTreeMap<EpochId, EpochKey>,
}

impl Keyring {
    /// Unlocks every key the log gives `keys` that this ring lacks. Returns the
    /// wraps or links that failed to open, by epoch (a malformed wrap, or a key
    /// that does not match its commitment).
    pub fn unlock(&mut self, state: &SpaceState, keys: &DeviceKeys) -> Vec<(EpochId, Error)> {
        let me = keys.device_id();
        let mut failed = BTreeMap::new();
        for applied in state.ops.values() {
            for (epoch, wrap) in applied.op.key_wraps(&state.space) {
                if wrap.recipient != me || self.keys.contains_key(&epoch) {
                    continue;
                }
                let Some(commit) = state.commits.get(&epoch) else {
                    continue;
                };
                match EpochKey::unwrap(state.space, commit, wrap, keys) {
                    Ok(key) => {
                        failed.remove(&epoch);
                        self.keys.insert(epoch, key);
                    }
                    Err(e) => {
                        failed.entry(epoch).or_insert(e);
                    }
                }
            }
        }
        // Follow history links from held keys until nothing new opens.
        loop {
            let mut opened = Vec::new();
            for applied in state.ops.values() {
                let Some((commit, _, links)) = applied.op.rotation() else {
                    continue;
                };
                let Some(newer) = self.keys.get(&EpochKey::id_of(&state.space, commit)) else {
                    continue;
                };
                for link in links {
                    if self.keys.contains_key(&link.parent) || opened.iter().any(|k: &EpochKey| k.id == link.parent) {
                        continue;
                    }
                    let Some(parent_commit) = state.commits.get(&link.parent) else {
                        continue;
                    };
                    match newer.follow(link, parent_commit) {
                        Ok(key) => opened.push(key),
                        Err(e) => {
                            failed.entry(link.parent).or_insert(e);
                        }
                    }
                }
            }
            if opened.is_empty() {
                break;
            }
            for key in opened {
                failed.remove(&key.id);
                self.keys.insert(key.id, key);
            }
        }
        failed.retain(|epoch, _| !self.keys.contains_key(epoch));
        failed.into_iter().collect()
    }

    /// The key of one epoch (not merged), if held.
    pub fn get(&self, epoch: &EpochId) -> Option<&EpochKey> {
        self.keys.get(epoch)
    }

    /// The key of `epoch`: held, or derived from every part of a merged epoch.
    pub fn key_for(&self, epoch: &Epoch) -> Option<EpochKey> {
        match epoch.parts.as_slice() {
            [one] => self.keys.get(one).cloned(),
            parts => {
                let parts: Option<Vec<&EpochKey>> = parts.iter().map(|p| self.keys.get(p)).collect();
                Some(EpochKey::merge(parts.as_ref()?[0].space, epoch.id, &parts?))
            }
        }
    }

    /// The keys of `epochs` (e.g. the tips a rotation links), if all are held.
    pub fn keys_of(&self, epochs: &[EpochId]) -> Option<Vec<EpochKey>> {
        epochs.iter().map(|p| self.keys.get(p).cloned()).collect()
    }

    /// The keys of those of `epochs` held (a rotation links what its author holds).
    pub fn keys_held(&self, epochs: &[EpochId]) -> Vec<EpochKey> {
        epochs.iter().filter_map(|p| self.keys.get(p).cloned()).collect()
    }

    /// Every epoch key held (single epochs; merged keys derive from these).
    pub fn keys(&self) -> impl Iterator<Item = &EpochKey> {
        self.keys.values()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Inserts a key this device made (a rotation it signed).
    pub fn insert(&mut self, key: EpochKey) {
        self.keys.insert(key.id, key);
    }
}
