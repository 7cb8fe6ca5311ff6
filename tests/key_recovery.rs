//! Keys under concurrent membership changes, on real cores in-process:
//!
//! - a member that lacks the current epoch's key says so in `status`, with the
//!   reason, cannot send (a clear error, nothing lost), and recovers by itself
//!   once a peer holding the key syncs with it: a member rotates, and the new
//!   key's history links open everything it missed;
//! - forged membership operations (a writer removing someone, a removed admin
//!   acting after its removal, an add replaying an earlier epoch's key) are
//!   refused by every core, counted in `status`, and change nothing;
//! - content is judged at the causal point it names: a reader's message naming
//!   its demotion is refused everywhere, one written before it stays valid;
//! - a rotation whose key does not open (for one member, or for anyone) cannot
//!   stop a space;
//! - in a from-join space, content building on another document's content is
//!   refused in clear, by members and newcomers alike.

mod inproc;

use inproc::{Node, deliver, served, stored};
use outpost_crdt::chat::{ChatDoc, NewMessage};
use outpost_node::{
    control::{
        self, Add, AddKey, ControlOp, History, Keyring, Member, Remove, Role, SpaceState, WrapSet, control_header,
    },
    core::{self, Grant, MemberChange},
    envelope::{Envelope, Header, Kind},
    identity::DeviceKeys,
    ids::{EnvelopeId, SpaceId},
};

/// A message carrying a file (the blob need not exist: only the body's
/// reference is looked at).
fn with_file(text: &str, id: u8, name: &str) -> core::Outgoing {
    core::Outgoing {
        text: text.into(),
        file: Some(core::FileRef {
            id: outpost_node::blobs::BlobId([id; 32]),
            name: name.into(),
            size: 1000,
            key: outpost_node::blobs::FileKey([id; 32]),
        }),
        ..Default::default()
    }
}

/// Every control operation in `envelopes`, as a state (genesis first).
fn control_state(envelopes: &[Vec<u8>]) -> SpaceState {
    let ops: Vec<Envelope> = envelopes
        .iter()
        .map(|b| Envelope::decode(b.clone()).unwrap())
        .filter(|e| e.header().kind == Kind::Control)
        .collect();
    let mut state = SpaceState::from_genesis(&ops[0]).unwrap();
    let mut left: Vec<&Envelope> = ops[1..].iter().collect();
    while !left.is_empty() {
        let before = left.len();
        left.retain(|op| {
            let ready = state.knows(&op.header().parents);
            if ready {
                state.apply(op);
            }
            !ready
        });
        assert!(left.len() < before, "every parent is in the log");
    }
    state
}

/// Signs `op` by `keys` at the heads of `state`, as a fresh control writer.
fn forge(keys: &DeviceKeys, state: &SpaceState, op: ControlOp) -> Vec<u8> {
    let header = control_header(keys.device_id(), state, (rand::random(), 1, None));
    Envelope::sign_control(keys, header, &op).into_bytes()
}

async fn sync(from: &Node, to: &Node, space: SpaceId) {
    let push = served(from, to, space).await;
    let ack = deliver(from, to, push).await;
    assert_eq!(ack.rejected, 0);
}

/// Alice creates a space with Bob and Carol (writers), makes `admin` an admin,
/// and syncs it to Bob.
async fn team(alice: &Node, bob: &Node, carol: &Node, admin: &Node) -> SpaceId {
    let members = vec![bob.cert().to_card(), carol.cert().to_card()];
    let space = alice
        .core
        .create_chat("room".into(), History::Shared, members, vec![])
        .await
        .unwrap();
    let admin = admin.device().to_string();
    alice
        .core
        .change_members(space, MemberChange::SetRole(admin, Role::Admin))
        .await
        .unwrap();
    sync(alice, bob, space).await;
    space
}

#[test]
fn a_member_missing_the_current_key_says_why_and_recovers_when_a_holder_syncs() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let [alice, bob, carol, dave] = [(); 4].map(|_| Node::new());
        let mut alice_rx = alice.core.subscribe();
        let space = team(&alice, &bob, &carol, &bob).await;
        alice.core.send(space, "before".into(), None).await.unwrap();

        // Partition: Alice removes Carol and writes under the new epoch; Bob adds
        // Dave, who joins under the old one.
        let mut log = stored(&mut alice_rx);
        alice
            .core
            .change_members(space, MemberChange::Remove(carol.device().to_string()))
            .await
            .unwrap();
        alice.core.send(space, "after carol left".into(), None).await.unwrap();
        (alice.core)
            .send_message(space, with_file("the minutes", 9, "minutes.txt"))
            .await
            .unwrap();
        let file = outpost_node::blobs::BlobId([9; 32]).to_string();
        let alice_side = stored(&mut alice_rx);
        log.extend(alice_side.clone());
        bob.core
            .invite(space, dave.cert().to_card(), Grant::Member(Role::Writer))
            .await
            .unwrap();
        sync(&bob, &dave, space).await;
        assert_eq!(dave.status(space).await.key_problem, None);

        // Alice's side reaches Dave first (relayed as-is): the epoch is now one
        // he was never given.
        let ack = deliver(&alice, &dave, alice_side).await;
        assert_eq!(ack.rejected, 0, "nothing is refused for lack of a key");
        let status = dave.status(space).await;
        let problem = status.key_problem.expect("dave says what is missing");
        assert!(problem.contains("no key yet for the current epoch"), "{problem}");
        let err = dave.core.send(space, "hello?".into(), None).await.unwrap_err();
        assert!(matches!(err, core::Error::KeyMissing { .. }), "{err}");
        let unread = dave.core.file_status(file.clone()).await;
        assert!(unread.is_err(), "its body is not readable yet");

        // Bob and Alice sync (both ways): whoever holds the key rotates for
        // Dave, and Dave, syncing with Alice, gets it and reads everything.
        sync(&bob, &alice, space).await;
        sync(&alice, &bob, space).await;
        sync(&alice, &dave, space).await;
        sync(&bob, &dave, space).await;
        let status = dave.status(space).await;
        assert_eq!(status.key_problem, None, "{status:?}");
        let texts: Vec<String> = dave
            .core
            .messages(space, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(texts, ["before", "after carol left", "the minutes"]);
        // The file its body names, readable only now, is known (fetchable, servable).
        let status = dave.core.file_status(file).await.unwrap();
        assert_eq!(status.name, "minutes.txt");
        dave.core.send(space, "hello from dave".into(), None).await.unwrap();
        sync(&dave, &alice, space).await;
        let last = alice.core.messages(space, 1).await.unwrap();
        assert_eq!(last[0].text, "hello from dave");
        // Carol, removed, was never given an epoch after her removal.
        log.extend(stored(&mut alice_rx));
        let mut carol_ring = Keyring::default();
        carol_ring.unlock(&control_state(&log), &carol.keys);
        assert_eq!(carol_ring.len(), 1, "only the epoch she was removed from");
    });
}

#[test]
fn forged_membership_operations_are_refused_by_every_core() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let [alice, bob, carol, erin] = [(); 4].map(|_| Node::new());
        let mut alice_rx = alice.core.subscribe();
        let space = team(&alice, &bob, &carol, &carol).await;
        sync(&alice, &carol, space).await;
        let mut log = stored(&mut alice_rx);
        let state = control_state(&log);
        let mut old = Keyring::default();
        old.unlock(&state, &carol.keys);
        let old_key = old.key_for(&state.current().epoch).unwrap();

        // Bob, a writer, removes Carol.
        let by_writer = forge(
            &bob.keys,
            &state,
            ControlOp::Remove(Remove {
                devices: vec![carol.device()],
                rotate: None,
            }),
        );
        // Alice removes Carol; Carol, knowing it, adds Erin anyway.
        alice
            .core
            .change_members(space, MemberChange::Remove(carol.device().to_string()))
            .await
            .unwrap();
        log.extend(stored(&mut alice_rx));
        let after = control_state(&log);
        let by_removed = forge(
            &carol.keys,
            &after,
            ControlOp::Add(Add {
                member: Member {
                    cert: erin.cert(),
                    role: Role::Writer,
                },
                key: AddKey::Current {
                    epoch: after.epoch,
                    wrap: old_key.wrap_for(&erin.cert()),
                    grants: Vec::new(),
                },
            }),
        );
        // Alice's own add, replaying the epoch before Carol's removal.
        let replayed = forge(
            &alice.keys,
            &after,
            ControlOp::Add(Add {
                member: Member {
                    cert: erin.cert(),
                    role: Role::Writer,
                },
                key: AddKey::Current {
                    epoch: old_key.id,
                    wrap: old_key.wrap_for(&erin.cert()),
                    grants: Vec::new(),
                },
            }),
        );
        sync(&alice, &bob, space).await;
        for (i, forged) in [by_writer, by_removed, replayed].into_iter().enumerate() {
            for node in [&alice, &bob] {
                let ack = deliver(&carol, node, vec![forged.clone()]).await;
                assert_eq!((ack.stored, ack.rejected), (0, 1), "forgery {i}");
                let status = node.status(space).await;
                assert_eq!(status.invalid_ops, i as u64 + 1);
                let members = node.core.members(space).await.unwrap().members;
                assert_eq!(members.len(), 2, "alice and bob only");
            }
        }
        assert!(served(&alice, &erin, space).await.is_empty(), "erin gets nothing");
    });
}

/// Re-signs `env` (a rotation by `keys`) with the wraps for `victims` replaced by
/// bytes that open for nobody: a valid operation carrying a broken key.
fn break_wraps(keys: &DeviceKeys, env: &Envelope, victims: &[&Node]) -> Vec<u8> {
    let ControlOp::Rotate(mut rotate) = env.control_op().unwrap() else {
        panic!("a rotation");
    };
    let WrapSet::Direct(wraps) = &mut rotate.wraps;
    for wrap in wraps.iter_mut() {
        if victims.iter().any(|v| v.device() == wrap.recipient) {
            wrap.ciphertext = vec![0x5a; wrap.ciphertext.len()];
        }
    }
    Envelope::sign_control(keys, env.header().clone(), &ControlOp::Rotate(rotate)).into_bytes()
}

/// Signs a rotation by `keys` at the heads of `state`, as a fresh writer.
fn rotation(keys: &DeviceKeys, state: &SpaceState) -> Envelope {
    let mut ring = Keyring::default();
    ring.unlock(state, keys);
    let tips = ring.keys_held(&state.current().tips);
    control::rotate(keys, state, (rand::random(), 1, None), &tips)
        .unwrap()
        .0
}

/// A rotation whose key does not open for some members (a member's, sent to Bob
/// broken) or for anyone (a removed member's, backdated before its removal):
/// each is a valid operation, and neither stops the space. Whoever was sent a
/// key that does not open rotates again, linking what it holds.
#[test]
fn an_undecryptable_rotation_cannot_stop_the_space() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let [alice, bob, carol, _] = [(); 4].map(|_| Node::new());
        let mut alice_rx = alice.core.subscribe();
        let space = team(&alice, &bob, &carol, &bob).await;
        sync(&alice, &carol, space).await;
        let mut log = stored(&mut alice_rx);
        let before_removal = control_state(&log);

        // Carol, a writer, rotates with Bob's wrap broken.
        let broken = break_wraps(&carol.keys, &rotation(&carol.keys, &before_removal), &[&bob]);
        for node in [&alice, &bob] {
            assert_eq!(deliver(&carol, node, vec![broken.clone()]).await.stored, 1);
        }
        // Bob rotated on receipt; he and Alice converge on his epoch and talk.
        sync(&bob, &alice, space).await;
        for node in [&alice, &bob] {
            let status = node.status(space).await;
            assert_eq!(status.key_problem, None, "{status:?}");
        }
        assert_eq!(alice.status(space).await.epoch, bob.status(space).await.epoch);
        bob.core
            .send(space, "bob after the broken key".into(), None)
            .await
            .unwrap();
        sync(&bob, &alice, space).await;
        assert_eq!(
            alice.core.messages(space, 1).await.unwrap()[0].text,
            "bob after the broken key"
        );

        // Alice removes Carol; Carol answers with a rotation backdated before her
        // removal, wrapped so that nobody can open it.
        alice
            .core
            .change_members(space, MemberChange::Remove(carol.device().to_string()))
            .await
            .unwrap();
        sync(&alice, &bob, space).await;
        log.extend(stored(&mut alice_rx));
        let backdated = break_wraps(&carol.keys, &rotation(&carol.keys, &before_removal), &[&alice, &bob]);
        for node in [&alice, &bob] {
            let ack = deliver(&carol, node, vec![backdated.clone()]).await;
            assert_eq!((ack.stored, ack.rejected), (1, 0), "valid where it was made, and void");
        }
        sync(&alice, &bob, space).await;
        sync(&bob, &alice, space).await;
        for node in [&alice, &bob] {
            let status = node.status(space).await;
            assert_eq!(status.key_problem, None, "{status:?}");
            node.core.send(space, "still talking".into(), None).await.unwrap();
        }
        sync(&alice, &bob, space).await;
        sync(&bob, &alice, space).await;
        let (a, b) = (
            alice.core.messages(space, 100).await.unwrap(),
            bob.core.messages(space, 100).await.unwrap(),
        );
        assert_eq!(a, b);
        assert_eq!(a.iter().filter(|m| m.text == "still talking").count(), 2);
    });
}

/// A message from `author` (a fresh writer, seq 1, concurrent with everything)
/// claiming the causal point `heads`, sealed under the epoch there.
fn message_at(author: &DeviceKeys, state: &SpaceState, heads: Vec<EnvelopeId>, text: &str) -> Vec<u8> {
    let doc = state.space.chat_shard(0);
    let incarnation = rand::random();
    let actor = outpost_crdt::writer::actor_id(&author.device_id().0, &doc, incarnation);
    // Only the skeleton matters to the verdict; it names a body by its id.
    let message = NewMessage {
        id: format!("m{incarnation}"),
        body: EnvelopeId::of(text.as_bytes()).to_string(),
        reply_to: None,
        mentions: Vec::new(),
        all: false,
    };
    let by = outpost_crdt::Author {
        user: author.user_id().to_string(),
        editor: true,
        admin: false,
    };
    let change = ChatDoc::new(doc).post(actor, &by, &[message], 1).unwrap();
    let epoch = state.epoch_at(&heads).unwrap();
    let mut ring = Keyring::default();
    ring.unlock(state, author);
    let header = Header {
        kind: Kind::Content,
        space: state.space,
        doc,
        epoch: epoch.id,
        author: author.device_id(),
        incarnation,
        seq: 1,
        parents: Vec::new(),
        control_heads: heads,
    };
    Envelope::seal_content(author, header, &ring.key_for(&epoch).unwrap(), change.raw_bytes()).into_bytes()
}

/// Content is judged at the causal point it names: Bob, demoted to reader, is
/// refused by every core for a message naming the demotion, while his message
/// written before he knew of it (naming the earlier heads) stays valid
/// everywhere. His own core refuses to send once it knows.
#[test]
fn a_readers_content_is_refused_by_every_core() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let [alice, bob, carol, _] = [(); 4].map(|_| Node::new());
        let mut alice_rx = alice.core.subscribe();
        let space = team(&alice, &bob, &carol, &carol).await;
        sync(&alice, &carol, space).await;
        let mut log = stored(&mut alice_rx);
        let before = control_state(&log).heads();
        alice
            .core
            .change_members(space, MemberChange::SetRole(bob.device().to_string(), Role::Reader))
            .await
            .unwrap();
        sync(&alice, &carol, space).await;
        sync(&alice, &bob, space).await;
        log.extend(stored(&mut alice_rx));
        let state = control_state(&log);
        let after = state.heads();
        assert_ne!(after, before);
        let refused = message_at(&bob.keys, &state, after, "as a reader");
        let earlier = message_at(&bob.keys, &state, before, "written before he knew");
        for node in [&alice, &carol] {
            let ack = deliver(&bob, node, vec![refused.clone()]).await;
            assert_eq!((ack.stored, ack.rejected), (0, 1));
            let ack = deliver(&bob, node, vec![earlier.clone()]).await;
            assert_eq!((ack.stored, ack.rejected), (1, 0));
        }
        let err = bob.core.send(space, "hello".into(), None).await.unwrap_err();
        assert!(matches!(err, core::Error::NotWritable(_)), "{err}");
    });
}

/// In a from-join space, content must build on content of its own document (its
/// epoch's), and every core decides that in clear: a message in the newest
/// epoch's document naming a message from before Erin's join as its parent is
/// refused by Bob (who can read that parent) and by Erin (who cannot) alike.
#[test]
fn a_parent_in_another_document_is_refused_by_every_core() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let [alice, bob, erin] = [(); 3].map(|_| Node::new());
        let mut alice_rx = alice.core.subscribe();
        let space = alice
            .core
            .create_chat("room".into(), History::FromJoin, vec![bob.cert().to_card()], vec![])
            .await
            .unwrap();
        alice.core.send(space, "before Erin".into(), None).await.unwrap();
        alice
            .core
            .invite(space, erin.cert().to_card(), Grant::Member(Role::Writer))
            .await
            .unwrap();
        sync(&alice, &bob, space).await;
        sync(&alice, &erin, space).await;
        let log = stored(&mut alice_rx);
        let state = control_state(&log);
        let old = log
            .iter()
            .map(|b| Envelope::decode(b.clone()).unwrap())
            .find(|e| e.header().kind == Kind::Content)
            .expect("Alice's message");
        let epoch = state.current().epoch.clone();
        let doc = state.content_doc(&epoch.id);
        assert_ne!(old.header().doc, doc, "the join started another document");
        let key = state.unwrap_key(&alice.keys).unwrap().unwrap();
        let header = Header {
            kind: Kind::Content,
            space,
            doc,
            epoch: epoch.id,
            author: alice.device(),
            incarnation: rand::random(),
            seq: 1,
            parents: vec![old.id()],
            control_heads: state.heads(),
        };
        let forged = Envelope::seal_content(&alice.keys, header, &key, b"builds across documents").into_bytes();
        for node in [&bob, &erin] {
            let ack = deliver(&alice, node, vec![forged.clone()]).await;
            assert_eq!(ack.rejected, 1, "refused alike, whatever keys the node holds");
            assert_eq!(node.status(space).await.rejected, 1);
        }
        assert_eq!(erin.core.messages(space, 10).await.unwrap().len(), 0);
    });
}
