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
        let cert = match grant {
            Grant::Member(_) => match self.resolve_cert(member) {
                Ok(cert) => Target::Member(cert),
                Err(e) => return Ok(Err(e)),
            },
            Grant::Replicator => match self.resolve_device(member) {
                Ok(device) => Target::Replicator(device),
                Err(e) => return Ok(Err(e)),
            },
        };
        let outcome = match cert {
            Target::Member(cert) => self.invite_cert(tx, space_id, cert, grant, effects)?,
            Target::Replicator(device) => self.invite_replicator(tx, space_id, device, effects)?,
        };
        Ok(outcome)
    }

    /// Adds the member device `cert` with `grant`'s role. Its user's other devices
    /// follow when it connects (it adds them itself, see `devices`).
    pub(super) fn invite_cert(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        cert: DeviceCert,
        grant: Grant,
        effects: &mut Effects,
    ) -> store::Result<Result<Invited>> {
        let Grant::Member(role) = grant else {
            return self.invite_replicator(tx, space_id, cert.device, effects);
        };
        if let Err(e) = self.may_invite(space_id, &cert, role) {
            return Ok(Err(e));
        }
        // An add wraps the current epoch's key, which must be one clean epoch.
        if let Err(e) = self.make_epoch_clean(tx, space_id, true, effects)? {
            return Ok(Err(e));
        }
        let writer = self.control_writer(space_id);
        let space = &self.spaces[&space_id];
        let state = &space.state;
        let added = if state.is_join(&cert.user) {
            // A new user of a from-join space: a new epoch, linked to nothing,
            // with the name sealed again (which this device must be able to read).
            let Some(name) = space.name.as_deref() else {
                return Ok(Err(key_missing(space)));
            };
            control::join(&self.keys, state, writer, &cert, role, name).map(|(env, key)| (env, Some(key)))
        } else {
            let Some(key) = space.keys.key_for(&state.current().epoch) else {
                return Ok(Err(key_missing(space)));
            };
            // Another device of this device's own user reads what this one reads.
            let grants: Vec<EpochKey> = if state.history == History::FromJoin && cert.user == self.keys.cert().user {
                space.keys.keys().cloned().collect()
            } else {
                Vec::new()
            };
            control::add_device(&self.keys, state, &key, &grants, writer, &cert, role).map(|env| (env, None))
        };
        let (env, new_key) = match added {
            Ok(added) => added,
            Err(e) => return Ok(Err(Error::Invalid(e.to_string()))),
        };
        let invited = Invited {
            device: cert.device,
            grant,
            op: env.id(),
        };
        let joined = new_key.is_some();
        self.store_control(tx, env, new_key, effects)?;
        if joined {
            self.carry_settings_to_newcomers(tx, space_id, effects)?;
        }
        info!(space = %space_id.fmt_short(), device = %cert.device.fmt_short(), ?role, "added to a space");
        if self.certs.get(&cert.device) != Some(&cert) {
            tx.put_cert(&cert.device, &postcard::to_stdvec(&cert).expect("certs serialize"))?;
            self.certs.insert(cert.device, cert);
        }
        Ok(Ok(invited))
    }

    pub(in crate::core) fn invite_replicator(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        device: DeviceId,
        effects: &mut Effects,
    ) -> store::Result<Result<Invited>> {
        let Some(space) = self.spaces.get(&space_id) else {
            return Ok(Err(Error::UnknownSpace(space_id)));
        };
        if !matches!(
            space.state.members.get(&self.me).map(|m| m.role),
            Some(Role::Owner | Role::Admin)
        ) {
            return Ok(Err(Error::NotAllowed(
                "only owners and admins of a space may name replicators".into(),
            )));
        }
        if space.state.entitled(&device) {
            return Ok(Err(already_in(&device)));
        }
        let writer = self.control_writer(space_id);
        let space = &self.spaces[&space_id];
        let env = match control::add_replicator(&self.keys, &space.state, writer, device) {
            Ok(env) => env,
            Err(e) => return Ok(Err(Error::Invalid(e.to_string()))),
        };
        let invited = Invited {
            device,
            grant: Grant::Replicator,
            op: env.id(),
        };
        self.store_control(tx, env, None, effects)?;
        info!(space = %space_id.fmt_short(), device = %device.fmt_short(), "named a replicator");
        Ok(Ok(invited))
    }

    /// Sets who may post in a space (an owner or admin).
    pub(super) fn set_posting(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        posting: control::Posting,
        effects: &mut Effects,
    ) -> store::Result<Result<Changed>> {
        let Some(space) = self.spaces.get(&space_id) else {
            return Ok(Err(Error::UnknownSpace(space_id)));
        };
        if space.state.members.get(&self.me).is_none_or(|m| m.role < Role::Admin) {
            return Ok(Err(Error::NotAllowed(
                "only owners and admins of a space set who may post".into(),
            )));
        }
        if space.state.current().posting == posting {
            return Ok(Err(Error::Invalid(format!(
                "the space already has posting {posting:?}"
            ))));
        }
        let writer = self.control_writer(space_id);
        let space = &self.spaces[&space_id];
        let env = match control::set_posting(&self.keys, &space.state, writer, posting) {
            Ok(env) => env,
            Err(e) => return Ok(Err(Error::Invalid(e.to_string()))),
        };
        let op = env.id();
        self.store_control(tx, env, None, effects)?;
        info!(space = %space_id.fmt_short(), ?posting, "set who may post");
        Ok(Ok(Changed {
            op,
            epoch: self.spaces[&space_id].state.epoch,
        }))
    }

    /// Refuses an add this device may not make, with a reason a person can act
    /// on (`control` checks again).
    fn may_invite(&self, space_id: SpaceId, cert: &DeviceCert, role: Role) -> Result<()> {
        let space = self.spaces.get(&space_id).ok_or(Error::UnknownSpace(space_id))?;
        let mine = space.state.members.get(&self.me);
        let sibling = mine.is_some_and(|m| m.cert.user == cert.user);
        match mine.map(|m| m.role) {
            None => return Err(Error::NotAllowed("this device is not a member of the space".into())),
            Some(Role::Owner) => {}
            Some(Role::Admin) if role <= Role::Admin => {}
            Some(Role::Admin) => return Err(Error::NotAllowed("only an owner may add an owner".into())),
            Some(own) if sibling && role <= own => {}
            Some(_) => {
                return Err(Error::NotAllowed(
                    "only owners and admins of a space may add members (anyone may add their own devices, up to their own role)".into(),
                ));
            }
        }
        if space.state.entitled(&cert.device) {
            return Err(already_in(&cert.device));
        }
        self.org_may_add(cert)
    }

    /// Removes a member user (all its devices) or one device, changes a user's
    /// role, leaves, or rotates (see [`MemberChange`]). The outer error aborts the
    /// batch; the inner one is the caller's mistake.
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
        let mine = space.state.members.get(&me).cloned();
        let targets = match &change {
            MemberChange::Remove(who) | MemberChange::SetRole(who, _) => self.user_in(space, who),
            MemberChange::RemoveDevice(who) => self.resolve_device(who).and_then(|d| {
                if space.state.entitled(&d) {
                    Ok(vec![d])
                } else {
                    Err(not_in(&d))
                }
            }),
            MemberChange::Leave => Ok(mine
                .as_ref()
                .map(|m| user_devices(space, &m.cert.user))
                .unwrap_or_default()),
            MemberChange::Rotate => Ok(vec![me]),
        };
        let targets = match targets {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(refusal) = refusal(space, mine.as_ref(), &change, &targets) {
            return Ok(Err(refusal));
        }
        let tips = space.keys.keys_held(&space.state.current().tips);
        let mut last = None;
        let roles: Vec<(DeviceId, Role)> = match &change {
            MemberChange::SetRole(_, role) => targets
                .iter()
                .filter(|d| space.state.members.get(d).is_some_and(|m| m.role != *role))
                .map(|d| (*d, *role))
                .collect(),
            _ => Vec::new(),
        };
        match change {
            MemberChange::Remove(_) | MemberChange::RemoveDevice(_) | MemberChange::Leave | MemberChange::Rotate => {
                if !space.can_rotate() {
                    return Ok(Err(key_missing(space)));
                }
                let writer = self.control_writer(space_id);
                let space = &self.spaces[&space_id];
                let made = if matches!(change, MemberChange::Rotate) {
                    control::rotate(&self.keys, &space.state, writer, &tips).map(|(e, k)| (e, Some(k)))
                } else {
                    control::remove(&self.keys, &space.state, writer, &targets, &tips)
                };
                let (env, key) = match made {
                    Ok(made) => made,
                    Err(e) => return Ok(Err(Error::Invalid(e.to_string()))),
                };
                last = Some(env.id());
                self.store_control(tx, env, key, effects)?;
            }
            MemberChange::SetRole(..) => {
                for (device, role) in roles {
                    let writer = self.control_writer(space_id);
                    let space = &self.spaces[&space_id];
                    let env = match control::set_role(&self.keys, &space.state, writer, device, role) {
                        Ok(env) => env,
                        Err(e) => return Ok(Err(Error::Invalid(e.to_string()))),
                    };
                    last = Some(env.id());
                    self.store_control(tx, env, None, effects)?;
                }
            }
        }
        let space = &self.spaces[&space_id];
        let Some(op) = last else {
            return Ok(Err(Error::Invalid(
                "nothing to change: the member already has that role".into(),
            )));
        };
        info!(space = %space_id.fmt_short(), devices = targets.len(), epoch = %space.state.epoch.fmt_short(), "membership changed");
        Ok(Ok(Changed {
            op,
            epoch: space.state.epoch,
        }))
    }

    /// The devices in `space` of the user `who` names: a device card or id (its
    /// user), or a user id. A replicator stands alone.
    fn user_in(&self, space: &Space, who: &str) -> Result<Vec<DeviceId>> {
        // Device and user ids look alike (64 hex characters): a device of the
        // space first, else a user with devices in it.
        let user = match self.resolve_device(who) {
            Ok(device) if space.state.replicators.contains(&device) => return Ok(vec![device]),
            Ok(device) => match space.state.members.get(&device) {
                Some(m) => m.cert.user,
                None => match who.trim().parse::<UserId>() {
                    Ok(user) if !user_devices(space, &user).is_empty() => user,
                    _ => return Err(not_in(&device)),
                },
            },
            Err(e) => match who.trim().parse::<UserId>() {
                Ok(user) => user,
                Err(_) => return Err(e),
            },
        };
        let devices = user_devices(space, &user);
        if devices.is_empty() {
            return Err(Error::Invalid(format!(
                "user {} has no device in the space",
                user.fmt_short()
            )));
        }
        Ok(devices)
    }

    /// The clean-epoch rule: when devices other than exactly the members can
    /// derive the current epoch's key (a concurrent add missed a rotation, a
    /// removal came without one), a rotation has not yet followed some epoch
    /// (an open tip), the current key was sent to this device but does not open,
    /// or it is a merged epoch and `single` is asked for: a member that can
    /// ([`Space::can_rotate`]) rotates before anyone seals or wraps under it,
    /// linking every earlier epoch it holds. Concurrent rotations merge.
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
        let unreadable = current.epoch.parts.iter().any(|p| space.failed_keys.contains(p));
        if current.is_clean() && !unreadable && !(single && current.epoch.is_merged()) {
            return Ok(Ok(()));
        }
        if !space.state.members.contains_key(&self.me) {
            return Ok(Ok(()));
        }
        if !space.can_rotate() {
            return Ok(Err(key_missing(space)));
        }
        let tips = space.keys.keys_held(&current.tips);
        let writer = self.control_writer(space_id);
        let space = &self.spaces[&space_id];
        match control::rotate(&self.keys, &space.state, writer, &tips) {
            Ok((env, key)) => {
                info!(space = %space_id.fmt_short(), epoch = %key.id.fmt_short(), "rotated the epoch key to match the members");
                self.store_control(tx, env, Some(key), effects)?;
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(Error::Invalid(format!("could not rotate the epoch key: {e}")))),
        }
    }

    /// This device's position for its next control operation in a space.
    pub(in crate::core) fn control_writer(&mut self, space_id: SpaceId) -> control::WriterPos {
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
    pub(in crate::core) fn store_control(
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
                    user: m.cert.user,
                    role: m.role,
                    added_by: state.added_by(&m.cert.device),
                    me: m.cert.device == self.me,
                })
                .collect(),
            replicators: state.replicators.iter().copied().collect(),
        })
    }
}

/// What `invite` was given: a member's certificate, or a replicator's device.
enum Target {
    Member(DeviceCert),
    Replicator(DeviceId),
}

/// The member devices of `user` in `space`.
fn user_devices(space: &Space, user: &UserId) -> Vec<DeviceId> {
    space
        .state
        .members
        .values()
        .filter(|m| m.cert.user == *user)
        .map(|m| m.cert.device)
        .collect()
}

/// Refuses a change this device may not make, with a reason a person can act on
/// (`control` checks again).
fn refusal(
    space: &Space,
    mine: Option<&control::Member>,
    change: &MemberChange,
    targets: &[DeviceId],
) -> Option<Error> {
    let Some(mine) = mine else {
        return Some(Error::Invalid("this device is not a member of the space".into()));
    };
    let role_of = |d: &DeviceId| space.state.members.get(d).map(|m| m.role);
    let own = |d: &DeviceId| {
        space
            .state
            .members
            .get(d)
            .is_some_and(|m| m.cert.user == mine.cert.user)
    };
    let manager = matches!(mine.role, Role::Owner | Role::Admin);
    match change {
        MemberChange::Leave | MemberChange::Rotate => None,
        MemberChange::Remove(_) | MemberChange::RemoveDevice(_) if targets.iter().all(own) => None,
        MemberChange::Remove(_) | MemberChange::RemoveDevice(_) | MemberChange::SetRole(..) if !manager => {
            Some(Error::NotAllowed(
                "only owners and admins of a space may remove members or change roles (anyone may remove their own devices)".into(),
            ))
        }
        _ if mine.role == Role::Admin && targets.iter().any(|d| role_of(d) == Some(Role::Owner)) => {
            Some(Error::NotAllowed("only an owner may remove or demote an owner".into()))
        }
        MemberChange::SetRole(_, Role::Owner) if mine.role != Role::Owner => {
            Some(Error::NotAllowed("only an owner may make an owner".into()))
        }
        MemberChange::SetRole(..) if targets.iter().any(|d| role_of(d).is_none()) => {
            Some(Error::Invalid("a replicator has no role; invite it as a member instead".into()))
        }
        _ => None,
    }
}

fn not_in(device: &DeviceId) -> Error {
    Error::Invalid(format!("device {} is not in the space", device.fmt_short()))
}

fn already_in(device: &DeviceId) -> Error {
    Error::Invalid(format!("device {} is already in the space", device.fmt_short()))
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
