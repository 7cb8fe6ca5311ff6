//! Offboarding inside spaces. A policy version that offboards a member names
//! its successor; in each space the member owned, any member holding the key
//! makes a `Succession` (the member's devices leave, the successor's become
//! owners, under a new epoch). Every node checks such an operation against its
//! own verified chain: one naming a version it does not hold yet waits.

use super::*;
use crate::{
    control::{Succession, SuccessionFact},
    core::space::Verdict,
};

impl Core {
    /// The org's verdict on an envelope it authorises: `None` for every other
    /// envelope, and for a succession the version states (the space's rules
    /// decide the rest).
    pub(in crate::core) fn org_verdict(&self, env: &Envelope) -> Option<Verdict> {
        if env.header().kind != Kind::Control {
            return None;
        }
        let Ok(ControlOp::Succession(s)) = env.control_op() else {
            return None;
        };
        let Some(org) = &self.org else {
            // This node may follow the org later: never reject what it cannot judge.
            return Some(Verdict::Wait);
        };
        let held = org.current.as_ref().map_or(0, |c| c.header.version);
        if s.policy > held {
            return Some(Verdict::Wait);
        }
        let stated = org
            .successions
            .get(&s.policy)
            .filter(|(hash, _)| *hash == s.policy_hash)
            .and_then(|(_, offboardings)| offboardings.iter().find(|o| o.member == s.member))
            .is_some_and(|o| states(o, &s));
        (!stated).then_some(Verdict::Reject(
            "control: a succession its policy version does not state",
        ))
    }

    /// In each of `spaces` where a member some version offboards still owns the
    /// space and this device is a member holding the current key: a
    /// `Succession` to the member's successor. Owners and admins who stay act;
    /// other members only when no such owner or admin is left (fewer
    /// concurrent successions, which would merge anyway).
    pub(in crate::core) fn enforce_successions(
        &mut self,
        tx: &mut Txn,
        spaces: &BTreeSet<SpaceId>,
        effects: &mut Effects,
    ) -> store::Result<()> {
        if self.org_degraded() {
            return Ok(());
        }
        let Some(org) = &self.org else {
            return Ok(());
        };
        let me = self.me;
        // Devices on their way out manage nothing: the revoked, and every
        // offboarded member's.
        let mut out = self.revoked_by_org();
        out.extend(
            org.successions
                .values()
                .flat_map(|(_, o)| o.iter().flat_map(|o| o.leaving.iter().copied())),
        );
        let mut work = Vec::new();
        for space in spaces.iter().filter_map(|id| self.spaces.get(id)) {
            let members = &space.state.members;
            let Some(mine) = members.get(&me) else {
                continue;
            };
            if !space.can_rotate() {
                continue;
            }
            let owns = |d: &DeviceId| members.get(d).is_some_and(|m| m.role == Role::Owner);
            for (version, (hash, offboardings)) in &org.successions {
                for o in offboardings.iter().filter(|o| !o.leaving.contains(&me)) {
                    let managers_stay = members
                        .values()
                        .any(|m| m.role >= Role::Admin && !out.contains(&m.cert.device));
                    if o.leaving.iter().any(owns) && (mine.role >= Role::Admin || !managers_stay) {
                        work.push((space.state.space, *version, *hash, o.clone()));
                    }
                }
            }
        }
        for (space_id, policy, policy_hash, o) in work {
            // An earlier succession in this batch may have settled the space.
            let space = &self.spaces[&space_id];
            let still_owner = o
                .leaving
                .iter()
                .any(|d| space.state.members.get(d).is_some_and(|m| m.role == Role::Owner));
            if !still_owner || !space.can_rotate() {
                continue;
            }
            let tips = space.keys.keys_held(&space.state.current().tips);
            let writer = self.control_writer(space_id);
            let space = &self.spaces[&space_id];
            let fact = SuccessionFact {
                policy,
                policy_hash,
                member: &o.member,
                leaving: &o.leaving,
                successors: &o.successors,
            };
            match control::succession(&self.keys, &space.state, writer, &fact, &tips) {
                Ok((env, key)) => {
                    self.store_control(tx, env, Some(key), effects)?;
                    info!(space = %space_id.fmt_short(), member = %o.member, successor = %o.successor, "handed an offboarded owner's place to the successor");
                }
                Err(e) => {
                    warn!(space = %space_id.fmt_short(), member = %o.member, error = %e, "could not hand an offboarded owner's place to the successor")
                }
            }
        }
        Ok(())
    }
}

/// Whether a succession is exactly what offboarding `o` states (devices are
/// unique on both sides: the policy's and the operation's checks).
fn states(o: &Offboarding, s: &Succession) -> bool {
    let leaving: BTreeSet<&DeviceId> = o.leaving.iter().collect();
    s.leaving.len() == o.leaving.len()
        && s.leaving.iter().collect::<BTreeSet<_>>() == leaving
        && s.successors.len() == o.successors.len()
        && o.successors.iter().all(|c| s.successors.iter().any(|m| m.cert == *c))
}
