//! Membership changes made here (`space invite`) and the view of a space's
//! members, plus the admission check for a genesis that arrives with an `Add`.

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
        let Some(readable) = space.readable.as_ref() else {
            return Ok(Err(Error::KeyMissing {
                space: space_id,
                why: space
                    .key_problem
                    .clone()
                    .unwrap_or_else(|| "no key for the current epoch".into()),
            }));
        };
        let doc = space_id.control_doc();
        let incarnation = *self.incarnations.entry(doc).or_insert_with(rand::random);
        let actor = ActorKey(outpost_crdt::writer::actor_bytes(&me.0, &doc, incarnation));
        let seq = space.vv.get(&actor) + 1;
        let previous = space.last_env.get(&actor).map(|(_, id)| *id);
        let writer = (incarnation, seq, previous);
        let made = match (grant, &cert) {
            (Grant::Member(role), Some(cert)) => {
                control::add_member(&self.keys, &space.state, &readable.key, writer, cert, role)
            }
            _ => control::add_replicator(&self.keys, &space.state, writer, device),
        };
        let env = match made {
            Ok(env) => env,
            Err(e) => return Ok(Err(Error::Invalid(e.to_string()))),
        };
        let order = space.record(&env, None);
        space.state.apply(&env);
        tx.put_envelope(&new_envelope(&env), order)?;
        let invited = Invited {
            device,
            grant,
            op: env.id(),
        };
        effects.events.push(stored_event(space, vec![env.into_bytes()], None));
        info!(space = %space_id.fmt_short(), device = %device.fmt_short(), ?grant, "added to a space");
        if let Some(cert) = cert
            && self.certs.get(&cert.device) != Some(&cert)
        {
            tx.put_cert(&cert.device, &postcard::to_stdvec(&cert).expect("certs serialize"))?;
            self.certs.insert(cert.device, cert);
        }
        Ok(Ok(invited))
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
