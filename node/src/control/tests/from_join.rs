//! From-join spaces: a new user reads from its join on. The worked examples of
//! docs/protocol.md, "History from join".

use std::collections::{BTreeSet, HashSet};

use super::*;

/// The epochs started in the causal past of every `Add` that joined `who` (all
/// of them when it never joined): what it must never open.
pub(super) fn before_every_join(state: &SpaceState, who: &DeviceKeys) -> BTreeSet<EpochId> {
    let past = |id: &EnvelopeId| {
        let mut seen = HashSet::new();
        let mut stack = state.ops[id].parents.clone();
        while let Some(p) = stack.pop() {
            if seen.insert(p) {
                stack.extend(state.ops[&p].parents.iter().copied());
            }
        }
        seen
    };
    let joins: Vec<HashSet<EnvelopeId>> = state
        .ops
        .iter()
        .filter(|(_, a)| {
            matches!(&a.op, ControlOp::Add(add) if add.member.cert.device == who.device_id() && a.op.is_join())
        })
        .map(|(id, _)| past(id))
        .collect();
    state
        .ops
        .iter()
        .filter(|(id, _)| joins.iter().all(|past| past.contains(id)))
        .filter_map(|(_, a)| {
            a.op.rotation()
                .map(|(commit, _, _)| EpochKey::id_of(&state.space, commit))
        })
        .collect()
}

/// The epoch every key of `ring` belongs to.
fn epochs(ring: &Keyring) -> BTreeSet<EpochId> {
    ring.keys().map(|k| k.id).collect()
}

/// Erin joins: a new epoch for everyone, linked to nothing. She opens it and the
/// name sealed under it, never the genesis epoch; the members open both, and the
/// join leaves one tip, so no later rotation can link the older history.
#[test]
fn a_join_starts_an_epoch_that_opens_nothing_older() {
    let (mut r, [alice, _bob, _carol, dave, erin]) = team_with(History::FromJoin);
    let first = r.state.epoch;
    r.add(&alice, &erin, Role::Writer);
    let joined = r.state.epoch;
    assert_ne!(joined, first, "a join starts an epoch");
    assert!(r.state.current().is_clean());
    assert_eq!(r.state.current().tips, vec![joined]);
    assert_eq!(epochs(&r.ring(&erin)), BTreeSet::from([joined]));
    assert_eq!(r.state.name(&r.ring(&erin)).as_deref(), Some("team"));
    assert_eq!(epochs(&r.ring(&dave)), BTreeSet::from([first, joined]));
    // In a from-join space content goes into one document per epoch.
    assert_ne!(r.state.content_doc(&first), r.state.content_doc(&joined));
}

/// Later rotations link back to the join, not past it: Erin reads every epoch
/// from her join on; Frank, joining after, reads only from his.
#[test]
fn later_epochs_link_back_to_the_join_and_no_further() {
    let (mut r, [alice, bob, carol, dave, erin]) = team_with(History::FromJoin);
    let first = r.state.epoch;
    r.add(&alice, &erin, Role::Writer);
    let joined = r.state.epoch;
    r.remove(&alice, &[&carol]);
    let after_removal = r.state.epoch;
    assert_eq!(epochs(&r.ring(&erin)), BTreeSet::from([joined, after_removal]));
    let frank = DeviceKeys::generate();
    r.add(&bob, &frank, Role::Reader);
    assert_eq!(epochs(&r.ring(&frank)), BTreeSet::from([r.state.epoch]));
    assert!(epochs(&r.ring(&dave)).is_superset(&BTreeSet::from([first, joined, after_removal])));
}

/// Another device of a member's user is added with the current key and grants
/// of every earlier key its user's device holds: Erin's phone reads what her
/// laptop reads, and not the history from before her join.
#[test]
fn another_device_of_a_member_reads_what_its_user_reads() {
    let (mut r, [alice, _bob, carol, dave, _]) = team_with(History::FromJoin);
    let first = r.state.epoch;
    let erin = UserKeys::generate();
    let laptop = DeviceKeys::generate_for(&erin);
    let phone = DeviceKeys::generate_for(&erin);
    r.add(&alice, &laptop, Role::Writer);
    r.remove(&alice, &[&carol]);
    r.add(&laptop, &phone, Role::Writer);
    let phone_epochs = epochs(&r.ring(&phone));
    assert_eq!(phone_epochs, epochs(&r.ring(&laptop)));
    assert_eq!(phone_epochs.len(), 2);
    assert!(!phone_epochs.contains(&first));
    assert!(epochs(&r.ring(&dave)).contains(&first));
}

/// The form of an `Add` follows the space's history and the user, on every
/// node: a from-join newcomer must come with a new epoch linked to nothing,
/// another device of a member must not, and a shared space has no joins or grants.
#[test]
fn an_add_of_the_wrong_form_is_refused() {
    let (r, [alice, _bob, _carol, _dave, erin]) = team_with(History::FromJoin);
    let key = r.ring(&alice).key_for(&r.state.current().epoch).unwrap();
    assert_eq!(
        add_member(&alice, &r.state, &key, fresh(), &erin.cert(), Role::Writer).unwrap_err(),
        InvalidOp::JoinForm,
        "a newcomer without a new epoch would read the history"
    );
    // A join whose epoch links the history before it.
    let (env, new_key) = join(&alice, &r.state, fresh(), &erin.cert(), Role::Writer, "team").unwrap();
    let ControlOp::Add(mut add) = env.control_op().unwrap() else {
        unreachable!("join signs an Add");
    };
    let AddKey::Join { rotate, .. } = &mut add.key else {
        unreachable!("a join");
    };
    rotate.links = vec![new_key.link_to(&key)];
    let forged = Envelope::sign_control(&alice, header_at(&r.state, &alice), &ControlOp::Add(add));
    assert_eq!(r.state.check(&forged), Err(InvalidOp::Rotation));
    // A grant of a key the space never had.
    let mut r = r;
    let user = UserKeys::generate();
    let laptop = DeviceKeys::generate_for(&user);
    let phone = DeviceKeys::generate_for(&user);
    r.add(&alice, &laptop, Role::Writer);
    let key = r.ring(&laptop).key_for(&r.state.current().epoch).unwrap();
    let stranger = EpochKey::generate(r.state.space);
    assert_eq!(
        add_device(
            &laptop,
            &r.state,
            &key,
            &[stranger],
            fresh(),
            &phone.cert(),
            Role::Writer
        )
        .unwrap_err(),
        InvalidOp::Wrap
    );
    let (mut shared, [alice, ..]) = team_with(History::Shared);
    assert_eq!(
        join(&alice, &shared.state, fresh(), &erin.cert(), Role::Writer, "team").unwrap_err(),
        InvalidOp::JoinForm,
        "a shared space has no joins"
    );
    let old = shared.ring(&alice).key_for(&shared.state.current().epoch).unwrap();
    shared.rotate(&alice);
    let current = shared.ring(&alice).key_for(&shared.state.current().epoch).unwrap();
    assert_eq!(
        add_device(
            &alice,
            &shared.state,
            &current,
            &[old],
            fresh(),
            &erin.cert(),
            Role::Writer
        )
        .unwrap_err(),
        InvalidOp::JoinForm,
        "a shared space links its history; it grants none"
    );
}

/// A sibling joined with a new epoch is refused: Erin's laptop is in, so her
/// phone is another device of a member.
#[test]
fn a_join_of_a_members_other_device_is_refused() {
    let (mut r, [alice, ..]) = team_with(History::FromJoin);
    let erin = UserKeys::generate();
    let laptop = DeviceKeys::generate_for(&erin);
    let phone = DeviceKeys::generate_for(&erin);
    r.add(&alice, &laptop, Role::Writer);
    assert_eq!(
        join(&alice, &r.state, fresh(), &phone.cert(), Role::Writer, "team").unwrap_err(),
        InvalidOp::JoinForm
    );
}

/// Partition: Alice adds Erin while Bob removes Carol (his rotation links the
/// genesis epoch). After healing, Bob's epoch is no tip: its key opens history
/// from before Erin's join, so no rotation may link it, and Erin never reads
/// it. The members still read everything.
#[test]
fn a_rotation_concurrent_with_a_join_is_not_linked_when_it_opens_older_history() {
    let (mut a, [alice, bob, carol, dave, erin]) = team_with(History::FromJoin);
    let first = a.state.epoch;
    let mut b = a.clone();
    a.add(&alice, &erin, Role::Writer);
    let joined = a.state.epoch;
    b.remove(&bob, &[&carol]);
    let removal = b.state.epoch;
    heal(&mut a, &mut b);
    assert_eq!(a.state.current().tips, vec![joined]);
    assert!(!a.state.current().is_clean(), "Erin cannot derive the merged epoch");
    a.rotate(&dave);
    heal(&mut a, &mut b);
    assert!(a.state.current().is_clean());
    let erin_epochs = epochs(&a.ring(&erin));
    assert!(erin_epochs.contains(&joined) && erin_epochs.contains(&a.state.epoch));
    assert!(!erin_epochs.contains(&removal) && !erin_epochs.contains(&first));
    assert!(epochs(&a.ring(&dave)).is_superset(&BTreeSet::from([first, joined, removal])));
}

/// Two concurrent joins: each newcomer's epoch opens nothing from before either
/// join, so the next rotation links both and each newcomer reads the other's
/// (concurrent) epoch, and still nothing older.
#[test]
fn concurrent_joins_read_each_other_but_not_the_history() {
    let (mut a, [alice, bob, _carol, dave, erin]) = team_with(History::FromJoin);
    let first = a.state.epoch;
    let frank = DeviceKeys::generate();
    let mut b = a.clone();
    a.add(&alice, &erin, Role::Writer);
    b.add(&bob, &frank, Role::Writer);
    heal(&mut a, &mut b);
    assert_eq!(a.state.current().tips.len(), 2);
    a.rotate(&dave);
    for newcomer in [&erin, &frank] {
        let held = epochs(&a.ring(newcomer));
        assert_eq!(held.len(), 3, "its join, the other join, the rotation");
        assert!(!held.contains(&first));
    }
}
