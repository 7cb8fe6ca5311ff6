//! Validity and resolution of control operations: the worked examples of
//! docs/protocol.md and a convergence property.

use super::*;
use crate::identity::UserKeys;

mod from_join;

#[test]
fn genesis_round_trip_and_key_access() {
    let alice = DeviceKeys::generate();
    let bob = DeviceKeys::generate();
    let relay = DeviceKeys::generate();
    let (env, key) = create_space(
        &alice,
        1,
        "ops",
        SpaceKind::Chat,
        History::Shared,
        &[bob.cert()],
        &[relay.device_id()],
    )
    .unwrap();
    let env = Envelope::decode(env.into_bytes()).unwrap();
    let state = SpaceState::from_genesis(&env).unwrap();
    assert_eq!(state.epoch, key.id);
    assert!(state.may_write(&bob.device_id()));
    assert!(state.entitled(&relay.device_id()) && !state.may_write(&relay.device_id()));
    let bob_key = state.unwrap_key(&bob).unwrap().unwrap();
    assert_eq!(bob_key.id, key.id);
    let mut ring = Keyring::default();
    ring.unlock(&state, &bob);
    assert_eq!(state.name(&ring).as_deref(), Some("ops"));
    assert!(state.unwrap_key(&relay).is_none());
}

#[test]
fn a_device_is_member_or_replicator_not_both() {
    let alice = DeviceKeys::generate();
    let bob = DeviceKeys::generate();
    let err = create_space(
        &alice,
        1,
        "ops",
        SpaceKind::Chat,
        History::Shared,
        &[bob.cert()],
        &[bob.device_id()],
    )
    .unwrap_err();
    assert_eq!(err, InvalidOp::Duplicate);
}

fn writer(seq: u64) -> (u64, u64, Option<EnvelopeId>) {
    (7, seq, None)
}

#[test]
fn owners_and_admins_add_members_and_the_membership_follows_the_dag() {
    let alice = DeviceKeys::generate();
    let bob = DeviceKeys::generate();
    let carol = DeviceKeys::generate();
    let dave = DeviceKeys::generate();
    let (genesis, key) = create_space(&alice, 1, "ops", SpaceKind::Chat, History::Shared, &[bob.cert()], &[]).unwrap();
    let mut state = SpaceState::from_genesis(&genesis).unwrap();
    // Bob is a writer: he may not add anyone.
    let err = add_member(&bob, &state, &key, writer(1), &carol.cert(), Role::Reader).unwrap_err();
    assert_eq!(err, InvalidOp::NotAllowed);
    // Alice adds Carol as an admin; Carol's key comes from the operation.
    let add = add_member(&alice, &state, &key, writer(1), &carol.cert(), Role::Admin).unwrap();
    let before = state.heads();
    state.apply(&add);
    assert_eq!(state.heads(), vec![add.id()]);
    assert_eq!(state.members[&carol.device_id()].role, Role::Admin);
    assert_eq!(state.unwrap_key(&carol).unwrap().unwrap().id, key.id);
    assert_eq!(state.added_by(&carol.device_id()), Some(alice.device_id()));
    // At the causal point before the add, Carol was no member.
    assert!(!state.may_write_at(&before, &carol.device_id()));
    assert!(state.may_write_at(&state.heads(), &carol.device_id()));
    // Carol, an admin, may add Dave, but not as an owner, and not twice.
    let err = add_member(&carol, &state, &key, writer(1), &dave.cert(), Role::Owner).unwrap_err();
    assert_eq!(err, InvalidOp::NotAllowed);
    let err = add_member(&carol, &state, &key, writer(1), &bob.cert(), Role::Reader).unwrap_err();
    assert_eq!(err, InvalidOp::AlreadyMember);
    let add_dave = add_member(&carol, &state, &key, writer(1), &dave.cert(), Role::Writer).unwrap();
    assert_eq!(state.check(&add_dave), Ok(()));
    // The same operation checked against a state without Carol's add: unknown
    // causal point, so nodes wait for it instead of judging.
    let fresh = SpaceState::from_genesis(&genesis).unwrap();
    assert_eq!(fresh.check(&add_dave), Err(InvalidOp::UnknownParents));
}

#[test]
fn concurrent_adds_of_one_device_keep_the_lower_role() {
    let alice = DeviceKeys::generate();
    let bob = DeviceKeys::generate();
    let carol = DeviceKeys::generate();
    let (genesis, key) = create_space(&alice, 1, "ops", SpaceKind::Chat, History::Shared, &[], &[]).unwrap();
    let mut state = SpaceState::from_genesis(&genesis).unwrap();
    let as_admin = add_member(&alice, &state, &key, writer(1), &carol.cert(), Role::Admin).unwrap();
    let add_bob = add_member(&alice, &state, &key, (8, 1, None), &bob.cert(), Role::Owner).unwrap();
    state.apply(&add_bob);
    // Concurrently (same causal point as the first), Bob adds Carol as a reader.
    let mut header = as_admin.header().clone();
    header.author = bob.device_id();
    let as_reader = Envelope::sign_control(
        &bob,
        Header {
            parents: vec![add_bob.id()],
            ..header
        },
        &ControlOp::Add(Add {
            member: Member {
                cert: carol.cert(),
                role: Role::Reader,
            },
            key: AddKey::Current {
                epoch: key.id,
                wrap: key.wrap_for(&carol.cert()),
                grants: Vec::new(),
            },
        }),
    );
    assert_eq!(state.check(&as_admin), Ok(()));
    assert_eq!(state.check(&as_reader), Ok(()));
    let mut one = state.clone();
    one.apply(&as_admin);
    one.apply(&as_reader);
    let mut other = state.clone();
    other.apply(&as_reader);
    other.apply(&as_admin);
    assert_eq!(one.members[&carol.device_id()].role, Role::Reader);
    assert_eq!(one.members, other.members);
    assert_eq!(one.heads(), other.heads());
}

/// Delivers to `to` every operation of `from` it lacks, in an order its causal
/// points allow (as a node does), checking each as it would.
fn sync(from: &[Envelope], to: &mut SpaceState, to_ops: &mut Vec<Envelope>) {
    let mut missing: Vec<&Envelope> = from.iter().filter(|e| !to_ops.contains(e)).collect();
    while !missing.is_empty() {
        let before = missing.len();
        missing.retain(|env| {
            if !to.knows(&env.header().parents) {
                return true;
            }
            assert_eq!(
                to.check(env),
                Ok(()),
                "an operation valid where it was made is valid everywhere"
            );
            to.apply(env);
            to_ops.push((*env).clone());
            false
        });
        assert!(missing.len() < before, "causal delivery always makes progress");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, .. Default::default() })]

    /// Three partitioned replicas add members concurrently (whoever holds an
    /// owner or admin role there) and sync in random pairs; once everything is
    /// exchanged, all hold the same members, roles and heads.
    #[test]
    fn replicas_converge_on_the_same_membership(steps in proptest::collection::vec((0usize..3, 0usize..3, 0usize..6, 0usize..4, proptest::prelude::any::<bool>()), 1..40)) {
        let devices: Vec<DeviceKeys> = (0..7).map(|_| DeviceKeys::generate()).collect();
        let (genesis, key) = create_space(&devices[0], 1, "ops", SpaceKind::Chat, History::Shared, &[], &[]).unwrap();
        let base = SpaceState::from_genesis(&genesis).unwrap();
        let mut replicas: Vec<(SpaceState, Vec<Envelope>)> = (0..3).map(|_| (base.clone(), Vec::new())).collect();
        let roles = [Role::Reader, Role::Writer, Role::Admin, Role::Owner];
        let mut incarnation = 100;
        for (node, other, device, role, is_sync) in steps {
            if is_sync {
                if node != other {
                    let from = replicas[other].1.clone();
                    let (state, ops) = &mut replicas[node];
                    sync(&from, state, ops);
                }
                continue;
            }
            // Some member with authority on this replica adds a device.
            let (state, ops) = &mut replicas[node];
            let target = &devices[device + 1];
            let author = devices.iter().find(|d| {
                state.members.get(&d.device_id()).is_some_and(|m| m.role >= Role::Admin)
            });
            let Some(author) = author else { continue };
            incarnation += 1;
            match add_member(author, state, &key, (incarnation, 1, None), &target.cert(), roles[role]) {
                Ok(env) => {
                    state.apply(&env);
                    ops.push(env);
                }
                Err(e) => proptest::prop_assert!(
                    matches!(e, InvalidOp::AlreadyMember | InvalidOp::NotAllowed),
                    "{e:?}"
                ),
            }
        }
        for _ in 0..2 {
            for i in 0..3 {
                for j in 0..3 {
                    if i != j {
                        let from = replicas[j].1.clone();
                        let (state, ops) = &mut replicas[i];
                        sync(&from, state, ops);
                    }
                }
            }
        }
        for (state, _) in &replicas[1..] {
            proptest::prop_assert_eq!(&state.members, &replicas[0].0.members);
            proptest::prop_assert_eq!(&state.epoch, &replicas[0].0.epoch);
            proptest::prop_assert_eq!(state.heads(), replicas[0].0.heads());
        }
    }
}

#[test]
fn a_document_space_shares_its_history() {
    let alice = DeviceKeys::generate();
    let (env, _) = create_space(&alice, 1, "doc", SpaceKind::Doc, History::Shared, &[], &[]).unwrap();
    assert_eq!(SpaceState::from_genesis(&env).unwrap().kind, SpaceKind::Doc);
    // A peer's genesis of a from-join document is refused like any bad genesis.
    let (chat, _) = create_space(&alice, 1, "doc", SpaceKind::Chat, History::FromJoin, &[], &[]).unwrap();
    let ControlOp::Genesis(mut g) = chat.control_op().unwrap() else {
        panic!("a genesis")
    };
    g.kind = SpaceKind::Doc;
    let forged = Envelope::sign_control(&alice, chat.header().clone(), &ControlOp::Genesis(g));
    assert_eq!(SpaceState::from_genesis(&forged).unwrap_err(), InvalidOp::DocHistory);
}

#[test]
fn forged_genesis_is_rejected() {
    let alice = DeviceKeys::generate();
    let mallory = DeviceKeys::generate();
    let (env, _) = create_space(&alice, 1, "ops", SpaceKind::Chat, History::Shared, &[], &[]).unwrap();
    // Mallory re-signs Alice's genesis for the same space id: the id is bound to
    // the creator's key, so it no longer derives.
    let mut header = env.header().clone();
    header.author = mallory.device_id();
    let forged = Envelope::sign_control(&mallory, header, &env.control_op().unwrap());
    assert_eq!(SpaceState::from_genesis(&forged).unwrap_err(), InvalidOp::SpaceId);
}

/// One node's copy of a control log, for the worked examples.
#[derive(Clone)]
struct Replica {
    state: SpaceState,
    log: Vec<Envelope>,
}

impl Replica {
    fn new(genesis: &Envelope) -> Self {
        Self {
            state: SpaceState::from_genesis(genesis).unwrap(),
            log: Vec::new(),
        }
    }

    fn take(&mut self, env: Envelope) -> Envelope {
        assert_eq!(self.state.check(&env), Ok(()));
        self.state.apply(&env);
        self.log.push(env.clone());
        env
    }

    /// Receives every operation `other` holds (a partition heals one way).
    fn pull(&mut self, other: &Replica) {
        sync(&other.log, &mut self.state, &mut self.log);
    }

    fn ring(&self, who: &DeviceKeys) -> Keyring {
        let mut ring = Keyring::default();
        assert!(ring.unlock(&self.state, who).is_empty());
        ring
    }

    /// The keys of the tips a rotation by `who` links (see `Resolved::tips`).
    fn tips(&self, who: &DeviceKeys) -> Option<Vec<EpochKey>> {
        self.ring(who).keys_of(&self.state.current().tips)
    }

    fn parts(&self, who: &DeviceKeys) -> Vec<EpochKey> {
        self.tips(who).expect("the author holds every tip")
    }

    fn add(&mut self, by: &DeviceKeys, who: &DeviceKeys, role: Role) -> Envelope {
        let env = make_add(by, &self.state, &self.ring(by), who, role).unwrap();
        self.take(env)
    }

    fn remove(&mut self, by: &DeviceKeys, who: &[&DeviceKeys]) -> Envelope {
        let devices: Vec<DeviceId> = who.iter().map(|k| k.device_id()).collect();
        let (env, _) = remove(by, &self.state, fresh(), &devices, &self.parts(by)).unwrap();
        self.take(env)
    }

    fn set_role(&mut self, by: &DeviceKeys, who: &DeviceKeys, role: Role) -> Envelope {
        let env = set_role(by, &self.state, fresh(), who.device_id(), role).unwrap();
        self.take(env)
    }

    fn rotate(&mut self, by: &DeviceKeys) -> Envelope {
        let (env, _) = rotate(by, &self.state, fresh(), &self.parts(by)).unwrap();
        self.take(env)
    }

    fn is_member(&self, who: &DeviceKeys) -> bool {
        self.state.members.contains_key(&who.device_id())
    }

    fn role(&self, who: &DeviceKeys) -> Option<Role> {
        self.state.members.get(&who.device_id()).map(|m| m.role)
    }

    /// Whether `who` can derive the current epoch's key from the log.
    fn can_read_now(&self, who: &DeviceKeys) -> bool {
        let mut ring = Keyring::default();
        ring.unlock(&self.state, who);
        ring.key_for(&self.state.current().epoch).is_some()
    }
}

/// The `Add` of `who` by `by` as the core makes it: a new user of a from-join
/// space joins with a new epoch; another device of a member's user gets the
/// current key, and in a from-join space every key `by` holds when `by` is of
/// the same user.
fn make_add(
    by: &DeviceKeys,
    state: &SpaceState,
    ring: &Keyring,
    who: &DeviceKeys,
    role: Role,
) -> Result<Envelope, InvalidOp> {
    if state.is_join(&who.cert().user) {
        return join(by, state, fresh(), &who.cert(), role, "team").map(|(env, _)| env);
    }
    let key = ring.key_for(&state.current().epoch).ok_or(InvalidOp::Wrap)?;
    let grants: Vec<EpochKey> = if state.history == History::FromJoin && by.cert().user == who.cert().user {
        ring.keys().cloned().collect()
    } else {
        Vec::new()
    };
    add_device(by, state, &key, &grants, fresh(), &who.cert(), role)
}

/// A writer position that never repeats (the chain rule is the core's).
fn fresh() -> WriterPos {
    (rand::random(), 1, None)
}

/// Both replicas exchange everything and must then agree on everything.
fn heal(a: &mut Replica, b: &mut Replica) {
    a.pull(b);
    b.pull(a);
    assert_eq!(a.state.heads(), b.state.heads());
    assert_eq!(a.state.members, b.state.members);
    assert_eq!(a.state.replicators, b.state.replicators);
    assert_eq!(a.state.current().epoch, b.state.current().epoch);
    assert_eq!(a.state.current().void, b.state.current().void);
    assert_eq!(a.state.current().holders, b.state.current().holders);
}

/// Owner Alice and admin Bob; Carol and Dave are writers.
fn team() -> (Replica, [DeviceKeys; 5]) {
    team_with(History::Shared)
}

fn team_with(history: History) -> (Replica, [DeviceKeys; 5]) {
    let people = [(); 5].map(|_| DeviceKeys::generate());
    let [alice, bob, carol, dave, _] = &people;
    let (genesis, _) = create_space(
        alice,
        1,
        "team",
        SpaceKind::Chat,
        history,
        &[bob.cert(), carol.cert(), dave.cert()],
        &[],
    )
    .unwrap();
    let mut r = Replica::new(&genesis);
    r.set_role(alice, bob, Role::Admin);
    (r, people)
}

#[test]
fn a_removal_rotates_and_the_removed_device_cannot_derive_the_new_key() {
    let (mut r, [alice, _bob, carol, dave, _]) = team();
    let before = r.state.epoch;
    assert!(r.can_read_now(&carol));
    r.remove(&alice, &[&carol]);
    assert!(!r.is_member(&carol));
    assert_ne!(r.state.epoch, before);
    assert!(r.state.current().is_clean());
    assert!(!r.can_read_now(&carol), "the new epoch is wrapped only for the others");
    assert!(r.can_read_now(&dave));
    // Dave's newest key opens the old epoch too (history link).
    assert!(r.ring(&dave).get(&before).is_some());
    // Carol keeps the old key: what was written before is hers to read.
    assert!(r.ring(&carol).get(&before).is_some());
}

/// Worked example 1: two admins, partitioned: Alice removes Carol while Bob adds
/// Erin and raises Carol to admin. Removal wins over the concurrent role change;
/// Erin stays; she lacks Alice's new epoch until a member rotates.
#[test]
fn concurrent_add_remove_and_role_change() {
    let (mut a, [alice, bob, carol, _dave, erin]) = team();
    let mut b = a.clone();
    a.remove(&alice, &[&carol]);
    b.add(&bob, &erin, Role::Writer);
    b.set_role(&bob, &carol, Role::Admin);
    heal(&mut a, &mut b);
    assert!(!a.is_member(&carol), "a removal beats a concurrent role change");
    assert!(a.is_member(&erin));
    assert!(!a.state.current().is_clean(), "Erin cannot derive Alice's new epoch");
    assert!(!a.can_read_now(&erin));
    a.rotate(&alice);
    heal(&mut a, &mut b);
    assert!(a.state.current().is_clean());
    assert!(a.can_read_now(&erin) && !a.can_read_now(&carol));
}

/// Worked example 2: mutual removal: two owners remove each other while
/// partitioned. Both removals take effect; the epoch is the merge of both
/// rotations, which neither removed owner can derive.
#[test]
fn mutual_removal_removes_both() {
    let (mut a, [alice, bob, carol, dave, _]) = team();
    a.set_role(&alice, &bob, Role::Owner);
    a.set_role(&alice, &carol, Role::Owner);
    let mut b = a.clone();
    a.remove(&alice, &[&bob]);
    b.remove(&bob, &[&alice]);
    heal(&mut a, &mut b);
    assert!(!a.is_member(&alice) && !a.is_member(&bob));
    assert!(a.state.current().epoch.is_merged());
    assert!(a.state.current().is_clean());
    assert!(!a.can_read_now(&alice) && !a.can_read_now(&bob));
    assert!(a.can_read_now(&carol) && a.can_read_now(&dave));
    assert_eq!(a.state.current().void.len(), 0);
}

/// Worked example 3: a removal racing the removed admin's own changes: Alice
/// removes Bob while Bob adds Erin (as admin) who adds Carol's replacement and
/// removes Dave. Every one of those is void: Bob's add, and by cascade Erin's.
#[test]
fn removal_voids_the_removed_admins_concurrent_changes_and_what_built_on_them() {
    let (mut a, [alice, bob, _carol, dave, erin]) = team();
    let mut b = a.clone();
    a.remove(&alice, &[&bob]);
    b.add(&bob, &erin, Role::Admin);
    b.remove(&erin, &[&dave]);
    let erins = b.state.epoch;
    heal(&mut a, &mut b);
    assert!(!a.is_member(&bob));
    assert!(!a.is_member(&erin), "added by a concurrently removed admin");
    assert!(a.is_member(&dave), "removed by a member whose add is void");
    assert_eq!(a.state.current().void.len(), 2);
    // Erin got the old key through the void add, which Alice's epoch replaced.
    // Erin's removal of Dave rotated too: void, so Alice's epoch stands, but its
    // epoch is a tip (whatever was sealed under it must stay readable), so a
    // member rotates to link it.
    assert!(!a.can_read_now(&erin) && !a.can_read_now(&bob));
    assert!(!a.state.current().is_clean());
    a.rotate(&alice);
    heal(&mut a, &mut b);
    assert!(a.state.current().is_clean());
    assert!(!a.can_read_now(&erin) && !a.can_read_now(&bob) && a.can_read_now(&dave));
    assert!(
        a.ring(&dave).get(&erins).is_some(),
        "the void epoch's content stays readable"
    );
}

/// Worked example 4: a demotion racing the demoted admin's rotation and add:
/// both are void. Erin still got the old epoch's key through the void add, so
/// the epoch is not clean until a member rotates.
#[test]
fn demotion_voids_the_demoted_admins_concurrent_rotation_and_add() {
    let (mut a, [alice, bob, _carol, dave, erin]) = team();
    let mut b = a.clone();
    let before = a.state.epoch;
    a.set_role(&alice, &bob, Role::Writer);
    b.rotate(&bob);
    b.add(&bob, &erin, Role::Writer);
    heal(&mut a, &mut b);
    assert_eq!(a.role(&bob), Some(Role::Writer));
    assert!(!a.is_member(&erin));
    assert_eq!(a.state.epoch, before, "the void rotation does not count");
    assert!(!a.state.current().is_clean(), "Erin can derive the current epoch");
    a.rotate(&dave);
    heal(&mut a, &mut b);
    assert!(a.state.current().is_clean() && !a.can_read_now(&erin));
}

/// Concurrent role changes keep the lower role; a later change wins outright.
#[test]
fn concurrent_role_changes_keep_the_lower_role() {
    let (mut a, [alice, bob, carol, _, _]) = team();
    let mut b = a.clone();
    a.set_role(&alice, &carol, Role::Admin);
    b.set_role(&bob, &carol, Role::Reader);
    heal(&mut a, &mut b);
    assert_eq!(a.role(&carol), Some(Role::Reader));
    a.set_role(&alice, &carol, Role::Admin);
    assert_eq!(a.role(&carol), Some(Role::Admin));
}

/// A removed member re-added later is a member again; a re-add concurrent with
/// a second removal loses.
#[test]
fn removal_beats_a_concurrent_re_add_but_not_a_later_one() {
    let (mut a, [alice, bob, carol, _, _]) = team();
    a.remove(&alice, &[&carol]);
    let mut b = a.clone();
    b.add(&bob, &carol, Role::Writer);
    assert!(b.is_member(&carol));
    a.pull(&b);
    assert!(a.is_member(&carol) && a.can_read_now(&carol));
    let mut c = a.clone();
    a.remove(&alice, &[&carol]);
    c.set_role(&bob, &carol, Role::Reader);
    heal(&mut a, &mut c);
    assert!(!a.is_member(&carol));
}

/// Two members rotating concurrently give a merged epoch that both derive; a new
/// member cannot be added under a merged epoch (the adder rotates first).
#[test]
fn concurrent_rotations_merge() {
    let (mut a, [alice, bob, carol, _, erin]) = team();
    let mut b = a.clone();
    a.rotate(&alice);
    b.rotate(&carol);
    heal(&mut a, &mut b);
    let epoch = a.state.current().epoch.clone();
    assert!(epoch.is_merged());
    let k1 = a.ring(&alice).key_for(&epoch).unwrap();
    let k2 = a.ring(&bob).key_for(&epoch).unwrap();
    let (nonce, ct) = k1.seal(b"ad", b"merged");
    assert_eq!(k2.open(&nonce, b"ad", &ct).unwrap(), b"merged");
    let err = add_member(&alice, &a.state, &k1, fresh(), &erin.cert(), Role::Writer).unwrap_err();
    assert_eq!(err, InvalidOp::Wrap);
    a.rotate(&alice);
    a.add(&alice, &erin, Role::Writer);
    // Erin reads the whole history through the links: the merge's parts and the genesis.
    let ring = a.ring(&erin);
    assert!(epoch.parts.iter().all(|p| ring.get(p).is_some()));
    assert_eq!(ring.len(), 4);
}

/// A member offline while the key changed twice reads every epoch it was a
/// member of once it has the control log.
#[test]
fn a_member_offline_during_two_rotations_recovers_every_key() {
    let (mut a, [alice, _bob, carol, dave, erin]) = team();
    let offline = a.clone();
    let first = a.state.epoch;
    a.remove(&alice, &[&carol]);
    let second = a.state.epoch;
    a.add(&alice, &erin, Role::Writer);
    a.remove(&alice, &[&erin]);
    let mut back = offline;
    back.pull(&a);
    let ring = back.ring(&dave);
    assert!([first, second, back.state.epoch].iter().all(|e| ring.get(e).is_some()));
    let erin_ring = back.ring(&erin);
    assert!(
        erin_ring.get(&back.state.epoch).is_none(),
        "removed before the third epoch"
    );
}

/// Forged operations are refused at their causal point, on every node alike.
#[test]
fn forged_membership_operations_are_refused() {
    let (mut a, [alice, bob, carol, dave, erin]) = team();
    // A writer may not remove or promote anyone.
    let parts = a.parts(&carol);
    assert_eq!(
        remove(&carol, &a.state, fresh(), &[dave.device_id()], &parts).unwrap_err(),
        InvalidOp::NotAllowed
    );
    assert_eq!(
        set_role(&carol, &a.state, fresh(), carol.device_id(), Role::Owner).unwrap_err(),
        InvalidOp::NotAllowed
    );
    // An admin may not remove or demote an owner.
    assert_eq!(
        set_role(&bob, &a.state, fresh(), alice.device_id(), Role::Reader).unwrap_err(),
        InvalidOp::NotAllowed
    );
    // A removed admin, once the removal is in its causal past, may do nothing.
    let old_key = a.ring(&bob).key_for(&a.state.current().epoch).unwrap();
    let old_parts = a.parts(&bob);
    a.remove(&alice, &[&bob]);
    assert_eq!(
        add_member(&bob, &a.state, &old_key, fresh(), &erin.cert(), Role::Writer).unwrap_err(),
        InvalidOp::NotAllowed
    );
    // Replays from an earlier epoch: an add wrapping the old key, a rotation
    // reusing an old epoch's commitment, links to the wrong parents.
    assert_eq!(
        add_member(&alice, &a.state, &old_key, fresh(), &erin.cert(), Role::Writer).unwrap_err(),
        InvalidOp::Wrap
    );
    let parts = a.parts(&alice);
    let (mut replay, _) = new_rotation(a.state.space, a.state.members.values(), &parts);
    replay.commit = old_key.commitment();
    let forged = Envelope::sign_control(&alice, header_at(&a.state, &alice), &ControlOp::Rotate(replay));
    assert_eq!(a.state.check(&forged), Err(InvalidOp::Rotation));
    let (stale, _) = new_rotation(a.state.space, a.state.members.values(), &old_parts);
    let forged = Envelope::sign_control(&alice, header_at(&a.state, &alice), &ControlOp::Rotate(stale));
    assert_eq!(a.state.check(&forged), Err(InvalidOp::Rotation));
    // A rotation that wraps for a removed device, or leaves out a member.
    let bob_member = Member {
        cert: bob.cert(),
        role: Role::Writer,
    };
    let with_bob = a.state.members.values().chain(std::iter::once(&bob_member));
    let (leaky, _) = new_rotation(a.state.space, with_bob, &parts);
    let forged = Envelope::sign_control(&alice, header_at(&a.state, &alice), &ControlOp::Rotate(leaky));
    assert_eq!(a.state.check(&forged), Err(InvalidOp::Wraps));
    // A remove that keeps the old epoch (no rotation) is refused.
    let keep = ControlOp::Remove(Remove {
        devices: vec![dave.device_id()],
        rotate: None,
    });
    let forged = Envelope::sign_control(&alice, header_at(&a.state, &alice), &keep);
    assert_eq!(a.state.check(&forged), Err(InvalidOp::Wraps));
    // Nobody removes the last owner.
    assert_eq!(
        remove(&alice, &a.state, fresh(), &[alice.device_id()], &parts).unwrap_err(),
        InvalidOp::LastOwner
    );
}

fn header_at(state: &SpaceState, author: &DeviceKeys) -> Header {
    control_header(author.device_id(), state, fresh())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, .. Default::default() })]

    /// Three partitioned replicas add, remove, change roles and rotate (whoever
    /// may, there) and sync in random pairs; once everything is exchanged, all
    /// agree on members, roles, epoch, void operations and key holders, and after
    /// one rotation by a member the epoch reaches exactly the members.
    #[test]
    fn replicas_converge_under_removals_and_rotations(
        steps in proptest::collection::vec((0usize..3, 0usize..3, 0usize..6, 0usize..5, 0usize..4), 1..32),
        from_join in proptest::bool::ANY,
    ) {
        let history = if from_join { History::FromJoin } else { History::Shared };
        let devices: Vec<DeviceKeys> = (0..6).map(|_| DeviceKeys::generate()).collect();
        let (genesis, _) = create_space(&devices[0], 1, "ops", SpaceKind::Chat, history, &[devices[1].cert()], &[]).unwrap();
        let mut replicas: Vec<Replica> = (0..3).map(|_| Replica::new(&genesis)).collect();
        let roles = [Role::Reader, Role::Writer, Role::Admin, Role::Owner];
        for (node, other, target, action, role) in steps {
            if action == 4 {
                if node != other {
                    let from = replicas[other].clone();
                    replicas[node].pull(&from);
                }
                continue;
            }
            let r = &mut replicas[node];
            let target = &devices[target];
            // The most senior member here holding every tip's key acts.
            let Some((author, parts)) = devices
                .iter()
                .filter(|d| r.is_member(d) && r.can_read_now(d))
                .filter_map(|d| Some((d, r.tips(d)?)))
                .max_by_key(|(d, _)| r.role(d))
            else {
                continue;
            };
            let made = match action {
                0 if !r.state.entitled(&target.device_id()) => {
                    // An add wraps the current key, which must not be merged
                    // (a from-join newcomer gets a new epoch instead).
                    if r.state.current().epoch.is_merged() && history == History::Shared {
                        rotate(author, &r.state, fresh(), &parts).map(|(e, _)| e)
                    } else {
                        make_add(author, &r.state, &r.ring(author), target, roles[role])
                    }
                }
                1 => remove(author, &r.state, fresh(), &[target.device_id()], &parts).map(|(e, _)| e),
                2 => set_role(author, &r.state, fresh(), target.device_id(), roles[role]),
                _ => rotate(author, &r.state, fresh(), &parts).map(|(e, _)| e),
            };
            match made {
                Ok(env) => {
                    r.take(env);
                }
                Err(e) => proptest::prop_assert!(
                    matches!(e, InvalidOp::NotAllowed | InvalidOp::NotMember | InvalidOp::LastOwner | InvalidOp::SameRole | InvalidOp::AlreadyMember),
                    "{e:?}"
                ),
            }
        }
        for _ in 0..2 {
            for i in 0..3 {
                for j in 0..3 {
                    if i != j {
                        let from = replicas[j].clone();
                        replicas[i].pull(&from);
                    }
                }
            }
        }
        let first = &replicas[0];
        for r in &replicas[1..] {
            proptest::prop_assert_eq!(&r.state.members, &first.state.members);
            proptest::prop_assert_eq!(&r.state.replicators, &first.state.replicators);
            proptest::prop_assert_eq!(&r.state.current().epoch, &first.state.current().epoch);
            proptest::prop_assert_eq!(&r.state.current().void, &first.state.current().void);
            proptest::prop_assert_eq!(&r.state.current().holders, &first.state.current().holders);
        }
        // The clean-epoch rule: one rotation by a member holding the key makes the
        // epoch reach exactly the members (if no member holds it, none can write).
        let mut last = replicas[0].clone();
        if let Some(rotator) = devices.iter().find(|d| last.is_member(d) && last.tips(d).is_some()) {
            last.rotate(rotator);
            proptest::prop_assert!(last.state.current().is_clean());
            for d in &devices {
                proptest::prop_assert_eq!(last.can_read_now(d), last.is_member(d));
            }
        }
        // From-join: no device can open an epoch started before every join of it.
        if history == History::FromJoin {
            for d in &devices[2..] {
                let before = from_join::before_every_join(&last.state, d);
                let ring = last.ring(d);
                proptest::prop_assert!(before.iter().all(|e| ring.get(e).is_none()));
            }
        }
    }
}

/// A device acts for its user: Carol's laptop (a writer) adds her phone with
/// at most her own role, and any of her devices revokes another; nobody else's.
#[test]
fn a_device_adds_and_revokes_its_users_devices() {
    let (mut r, [alice, _bob, carol, dave, _]) = team();
    let carol_user = UserKeys::generate();
    // Carol's devices belong to one user (the team helper gave each its own).
    let laptop = DeviceKeys::generate_for(&carol_user);
    let phone = DeviceKeys::generate_for(&carol_user);
    r.add(&alice, &laptop, Role::Writer);
    let key = r.ring(&laptop).key_for(&r.state.current().epoch).unwrap();
    assert_eq!(
        add_member(&laptop, &r.state, &key, fresh(), &phone.cert(), Role::Admin).unwrap_err(),
        InvalidOp::NotAllowed,
        "not above her own role"
    );
    let stranger = DeviceKeys::generate();
    assert_eq!(
        add_member(&laptop, &r.state, &key, fresh(), &stranger.cert(), Role::Reader).unwrap_err(),
        InvalidOp::NotAllowed,
        "a writer adds only her own devices"
    );
    r.add(&laptop, &phone, Role::Writer);
    assert!(r.can_read_now(&phone));
    // The phone revokes the laptop (lost): a removal with a new epoch.
    r.remove(&phone, &[&laptop]);
    assert!(!r.is_member(&laptop) && !r.can_read_now(&laptop));
    // But not Dave, nor the unrelated `carol` device of the team.
    let parts = r.parts(&phone);
    for other in [&dave, &carol] {
        assert_eq!(
            remove(&phone, &r.state, fresh(), &[other.device_id()], &parts).unwrap_err(),
            InvalidOp::NotAllowed
        );
    }
}

/// A member below admin may make only so many operations (counted in the causal
/// past); an owner can still remove it.
#[test]
fn a_member_cannot_fill_the_log() {
    let (mut r, [alice, _bob, carol, _, _]) = team();
    for _ in 0..MAX_OPS_PER_MEMBER {
        r.rotate(&carol);
    }
    let tips = r.parts(&carol);
    assert_eq!(
        rotate(&carol, &r.state, fresh(), &tips).unwrap_err(),
        InvalidOp::TooManyOps
    );
    r.remove(&alice, &[&carol]);
    assert!(!r.is_member(&carol));
}
