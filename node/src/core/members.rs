//! Membership and key changes made here (`space invite|remove|role|leave`, and
//! the rotation any member makes when the epoch is not clean), the view of a
//! space's members, and the admission check for a genesis that arrives with an
//! `Add`.

use super::*;

impl Core {
    /// Adds a member device (a signed `Add`) or a replicator (`AddReplicator`) to a
    /// space (see `control`). The outer error aborts the batch; the inner one is the
    /// caller's mistake.
    pub(super) fn invite(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        member: &str,
        grant: Grant,
        effects: &mut Effects,
    ) -> store::Result<Result<Invited>> {
        let (cert, device) = match grant {
            Grant::Member(_) => match self.resolve_cert(member) {
                Ok(cert) => (Some(cert), cert.device),
                Err(e) => return Ok(Err(e)),
            },
            Grant::Replicator => match self.resolve_device(member) {
                Ok(device) => (None, device),
                Err(e) => return Ok(Err(e)),
            },
        };
        let me = self.me;
        let Some(space) = self.spaces.get_mut(&space_id) else {
            return Ok(Err(Error::UnknownSpace(space_id)));
        };
        let mine = space.state.members.get(&me).map(|m| m.role);
        if !matches!(mine, Some(Role::Owner | Role::Admin)) {
            return Ok(Err(Error::NotAllowed(
                "only owners and admins of a space may add members".into(),
            )));
        }
        if grant == Grant::Member(Role::Owner) && mine != Some(Role::Owner) {
            return Ok(Err(Error::NotAllowed("only an owner may add an owner".into())));
        }
        if space.state.entitled(&device) {
            return Ok(Err(Error::Invalid(format!(
                "device {} is already in the space",
                device.fmt_short()
            ))));
        }
        if let Grant::Member(_) = grant {
            // An add wraps the current epoch's key, which must be one epoch.
            if let Err(e) = self.make_epoch_clean(tx, space_id, true, effects)? {
                return Ok(Err(e));
            }
        }
        let writer = self.control_writer(space_id);
        let space = self.spaces.get(&space_id).expect("checked above");
        let made = match (grant, &cert) {
            (Grant::Member(role), Some(cert)) => match space.keys.key_for(&space.state.current().epoch) {
                Some(key) => control::add_member(&self.keys, &space.state, &key, writer, cert, role),
                None => return Ok(Err(key_missing(space))),
            },
            _ => control::add_replicator(&self.keys, &space.state, writer, device),
        };
        let env = match made {
            Ok(env) => env,
            Err(e) => return Ok(Err(Error::Invalid(e.to_string()))),
        };
        let invited = Invited {
            device,
            grant,
            op: env.id(),
        };
        self.store_control(tx, env, None, effects)?;
        info!(space = %space_id.fmt_short(), device = %device.fmt_short(), ?grant, "added to a space");
        if let Some(cert) = cert
            && self.certs.get(&cert.device) != Some(&cert)
        {
            tx.put_cert(&cert.device, &postcard::to_stdvec(&cert).expect("certs serialize"))?;
            self.certs.insert(cert.device, cert);
        }
        Ok(Ok(invited))
    }

    /// Removes a member, changes a role, leaves, or rotates (see [`MemberChange`]).
    /// The outer error aborts the batch; the inner one is the caller's mistake.
    pub(super) fn change_members(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        change: MemberChange,
        effects: &mut Effects,
    ) -> store::Result<Result<Changed>> {
        let me = self.me;
        let Some(space) = self.spaces.get(&space_id) else {
            return Ok(Err(Error::UnknownSpace(space_id)));
        };
        let mine = space.state.members.get(&me).map(|m| m.role);
        let target = match &change {
            MemberChange::Remove(who) | MemberChange::SetRole(who, _) => match self.resolve_device(who) {
                Ok(device) => device,
                Err(e) => return Ok(Err(e)),
            },
            MemberChange::Leave | MemberChange::Rotate => me,
        };
        let theirs = space.state.members.get(&target).map(|m| m.role);
        // Refuse early, with a reason a person can act on; `control` checks again.
        let refusal = match &change {
            MemberChange::Remove(_) if !space.state.entitled(&target) => Some(Error::Invalid(format!(
                "device {} is not in the space",
                target.fmt_short()
            ))),
            MemberChange::Remove(_) | MemberChange::SetRole(..) if !matches!(mine, Some(Role::Owner | Role::Admin)) => {
                Some(Error::NotAllowed(
                    "only owners and admins of a space may remove members or change roles".into(),
                ))
            }
            MemberChange::Remove(_) | MemberChange::SetRole(..)
                if mine == Some(Role::Admin) && theirs == Some(Role::Owner) =>
            {
                Some(Error::NotAllowed("only an owner may remove or demote an owner".into()))
            }
            MemberChange::SetRole(_, Role::Owner) if mine != Some(Role::Owner) => {
                Some(Error::NotAllowed("only an owner may make an owner".into()))
            }
            MemberChange::SetRole(..) if theirs.is_none() => Some(Error::Invalid(format!(
                "device {} is not a member of the space",
                target.fmt_short()
            ))),
            MemberChange::Leave | MemberChange::Rotate if mine.is_none() => {
                Some(Error::Invalid("this device is not a member of the space".into()))
            }
            _ => None,
        };
        if let Some(refusal) = refusal {
            return Ok(Err(refusal));
        }
        let writer = self.control_writer(space_id);
        let space = self.spaces.get(&space_id).expect("checked above");
        let current = space.keys.keys_of(&space.state.current().tips);
        let made = match change {
            MemberChange::Remove(_) | MemberChange::Leave => {
                let Some(current) = current else {
                    return Ok(Err(key_missing(space)));
                };
                control::remove(&self.keys, &space.state, writer, &[target], &current)
            }
            MemberChange::SetRole(_, role) => {
                control::set_role(&self.keys, &space.state, writer, target, role).map(|e| (e, None))
            }
            MemberChange::Rotate => {
                let Some(current) = current else {
                    return Ok(Err(key_missing(space)));
                };
                control::rotate(&self.keys, &space.state, writer, &current).map(|(e, k)| (e, Some(k)))
            }
        };
        let (env, key) = match made {
            Ok(made) => made,
            Err(e) => return Ok(Err(Error::Invalid(e.to_string()))),
        };
        let op = env.id();
        self.store_control(tx, env, key, effects)?;
        let space = &self.spaces[&space_id];
        info!(space = %space_id.fmt_short(), device = %target.fmt_short(), epoch = %space.state.epoch.fmt_short(), "membership changed");
        Ok(Ok(Changed {
            op,
            epoch: space.state.epoch,
        }))
    }

    /// The clean-epoch rule: when devices other than exactly the members can
    /// derive the current epoch's key (a concurrent add missed a rotation, a
    /// removal came without one) or it is a merged epoch and `single` is asked
    /// for, a member holding the key rotates before anyone seals or wraps under it.
    /// Concurrent rotations by several members merge harmlessly.
    pub(super) fn make_epoch_clean(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        single: bool,
        effects: &mut Effects,
    ) -> store::Result<Result<()>> {
        let Some(space) = self.spaces.get(&space_id) else {
            return Ok(Ok(()));
        };
        let current = space.state.current();
        if current.is_clean() && !(single && current.epoch.is_merged()) {
            return Ok(Ok(()));
        }
        if !space.state.members.contains_key(&self.me) {
            return Ok(Ok(()));
        }
        let Some(parts) = space.keys.keys_of(&current.tips) else {
            return Ok(Err(key_missing(space)));
        };
        let writer = self.control_writer(space_id);
        let space = &self.spaces[&space_id];
        match control::rotate(&self.keys, &space.state, writer, &parts) {
            Ok((env, key)) => {
                info!(space = %space_id.fmt_short(), epoch = %key.id.fmt_short(), "rotated the epoch key to match the members");
                self.store_control(tx, env, Some(key), effects)?;
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(Error::Invalid(format!("could not rotate the epoch key: {e}")))),
        }
    }

    /// This device's position for its next control operation in a space.
    fn control_writer(&mut self, space_id: SpaceId) -> control::WriterPos {
        let doc = space_id.control_doc();
        let incarnation = *self.incarnations.entry(doc).or_insert_with(rand::random);
        let actor = ActorKey(outpost_crdt::writer::actor_bytes(&self.me.0, &doc, incarnation));
        let space = &self.spaces[&space_id];
        let seq = space.vv.get(&actor) + 1;
        let previous = space.last_env.get(&actor).map(|(_, id)| *id);
        (incarnation, seq, previous)
    }

    /// Records, applies and stores a control operation made here; `key` is the
    /// epoch key it started, if any.
    fn store_control(
        &mut self,
        tx: &mut Txn,
        env: Envelope,
        key: Option<EpochKey>,
        effects: &mut Effects,
    ) -> store::Result<()> {
        let space = self
            .spaces
            .get_mut(&env.header().space)
            .expect("the caller found the space");
        let order = space.record(&env, None);
        space.state.apply(&env);
        if let Some(key) = key {
            space.keys.insert(key);
        }
        space.unlock(&self.keys);
        tx.put_envelope(&new_envelope(&env), order)?;
        let removed = match env.control_op() {
            Ok(ControlOp::Remove(remove)) => remove.devices,
            _ => Vec::new(),
        };
        let mut event = stored_event(space, vec![env.into_bytes()], None);
        // A removed device is told (the operation carries no key for it), so its
        // status says it was removed instead of waiting for messages forever.
        if let Event::Stored { entitled, .. } = &mut event {
            Arc::make_mut(entitled).extend(removed);
        }
        effects.events.push(event);
        Ok(())
    }

    pub(super) fn members(&self, space_id: SpaceId) -> Result<Members> {
        let space = self.spaces.get(&space_id).ok_or(Error::UnknownSpace(space_id))?;
        let state = &space.state;
        Ok(Members {
            space: space_id,
            members: state
                .members
                .values()
                .map(|m| MemberView {
                    device: m.cert.device,
                    role: m.role,
                    added_by: state.added_by(&m.cert.device),
                    me: m.cert.device == self.me,
                })
                .collect(),
            replicators: state.replicators.iter().copied().collect(),
        })
    }
}

fn key_missing(space: &Space) -> Error {
    Error::KeyMissing {
        space: space.state.space,
        why: space
            .key_problem
            .clone()
            .unwrap_or_else(|| "this device holds no key for the current epoch".into()),
    }
}

/// Whether the control operations `ops` (of any space, in any order) make `me` a
/// member or replicator of the space `genesis` creates: they are checked and
/// applied as their causal order allows, exactly as ingest would.
pub(super) fn admits(genesis: &Envelope, ops: &[&Envelope], me: &DeviceId) -> bool {
    let Ok(mut state) = SpaceState::from_genesis(genesis) else {
        return false;
    };
    let mut left: Vec<&Envelope> = ops
        .iter()
        .copied()
        .filter(|e| e.header().space == state.space && e.header().kind == Kind::Control)
        .collect();
    loop {
        let before = left.len();
        left.retain(|env| {
            if !state.knows(&env.header().parents) {
                return true;
            }
            if state.check(env).is_ok() {
                state.apply(env);
            }
            false
        });
        if state.entitled(me) {
            return true;
        }
        if left.len() == before {
            return false;
        }
    }
}
