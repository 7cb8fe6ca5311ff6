//! Adding members: an owner or admin signs an `Add`; the new device gets the key
//! and the whole history from any member; a writer cannot add anyone, and a forged
//! `Add` is refused by every node. Real cores, in-process; `tests/invite.rs` runs the
//! same through the CLI between daemon processes.

mod inproc;

use inproc::{Node, deliver, served, stored};
use outpost_node::{
    control::{Add, AddKey, ControlOp, History, Member, Role, SpaceState, control_header},
    core::{self, Grant},
    envelope::{Envelope, Kind},
};

#[test]
fn an_added_device_reads_the_history_and_writes_and_a_forged_add_is_refused() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let alice = Node::new();
        let bob = Node::new();
        let carol = Node::new();
        let dave = Node::new();
        let mut alice_rx = alice.core.subscribe();
        let space = alice
            .core
            .create_chat("room".into(), History::Shared, vec![bob.cert().to_card()], vec![])
            .await
            .unwrap();
        let genesis = Envelope::decode(stored(&mut alice_rx).remove(0)).unwrap();
        // Enough history that Carol will catch up through a snapshot.
        for i in 0..100 {
            alice.core.send(space, format!("before carol {i}"), None).await.unwrap();
        }
        let push = served(&alice, &bob, space).await;
        deliver(&alice, &bob, push).await;

        // Bob is a writer: he may not add anyone.
        let err = bob
            .core
            .invite(space, carol.cert().to_card(), Grant::Member(Role::Reader))
            .await
            .unwrap_err();
        assert!(matches!(err, core::Error::NotAllowed(_)), "{err}");

        let invited = alice
            .core
            .invite(space, carol.cert().to_card(), Grant::Member(Role::Writer))
            .await
            .unwrap();
        assert_eq!(
            (invited.device, invited.grant),
            (carol.device(), Grant::Member(Role::Writer))
        );
        let adds: Vec<Envelope> = stored(&mut alice_rx)
            .into_iter()
            .map(|b| Envelope::decode(b).unwrap())
            .filter(|e| e.header().kind == Kind::Control)
            .collect();
        assert_eq!(adds.len(), 1);
        assert_eq!(adds[0].id(), invited.op);
        let members = alice.core.members(space).await.unwrap();
        let carol_view = members.members.iter().find(|m| m.device == carol.device()).unwrap();
        assert_eq!(carol_view.added_by, Some(alice.device()));

        // Carol never saw the space: she gets it all from Alice and can read it.
        let push = served(&alice, &carol, space).await;
        let ack = deliver(&alice, &carol, push).await;
        assert_eq!(ack.rejected, 0);
        let expected = alice.core.messages(space, 1000).await.unwrap();
        assert_eq!(carol.core.messages(space, 1000).await.unwrap(), expected);
        assert_eq!(carol.status(space).await.snapshots, 1);

        // Carol writes; Alice takes it. Bob learns the add and then takes it too.
        let mut carol_rx = carol.core.subscribe();
        carol.core.send(space, "hello from carol".into(), None).await.unwrap();
        let from_carol = stored(&mut carol_rx);
        // The message's change and its body.
        assert_eq!(deliver(&carol, &alice, from_carol.clone()).await.stored, 2);
        let ack = deliver(&carol, &bob, from_carol.clone()).await;
        assert_eq!((ack.stored, ack.pending), (0, 2), "Bob waits for the add they name");
        let push = served(&alice, &bob, space).await;
        deliver(&alice, &bob, push).await;
        let expected = alice.core.messages(space, 1000).await.unwrap();
        assert_eq!(expected.len(), 101);
        assert_eq!(bob.core.messages(space, 1000).await.unwrap(), expected);
        assert_eq!(bob.core.members(space).await.unwrap().members.len(), 3);

        // Bob forges an Add of Dave, signed by himself at the current heads:
        // every node refuses it, and Dave gets nothing of the space.
        let mut state = SpaceState::from_genesis(&genesis).unwrap();
        state.apply(&adds[0]);
        let key = state.unwrap_key(&bob.keys).unwrap().unwrap();
        let forged = Envelope::sign_control(
            &bob.keys,
            control_header(bob.device(), &state, (99, 1, None)),
            &ControlOp::Add(Add {
                member: Member {
                    cert: dave.cert(),
                    role: Role::Writer,
                },
                key: AddKey::Current {
                    epoch: key.id,
                    wrap: key.wrap_for(&dave.cert()),
                    grants: Vec::new(),
                },
            }),
        );
        for node in [&alice, &carol] {
            let ack = deliver(&bob, node, vec![forged.as_bytes().to_vec()]).await;
            assert_eq!((ack.stored, ack.rejected), (0, 1));
            assert_eq!(node.core.members(space).await.unwrap().members.len(), 3);
        }
        assert!(
            served(&alice, &dave, space).await.is_empty(),
            "a non-member gets zero bytes"
        );

        // A restart keeps the membership and Carol's key.
        let carol = carol.restart();
        assert_eq!(carol.core.messages(space, 1000).await.unwrap(), expected);
        assert_eq!(carol.core.members(space).await.unwrap().members.len(), 3);
    });
}

#[test]
fn a_replicator_named_later_holds_and_serves_the_space_without_the_key() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let alice = Node::new();
        let bob = Node::new();
        let carol = Node::new();
        let rex = Node::new();
        let space = alice
            .core
            .create_chat("room".into(), History::Shared, vec![bob.cert().to_card()], vec![])
            .await
            .unwrap();
        for i in 0..100 {
            alice.core.send(space, format!("message {i}"), None).await.unwrap();
        }
        let push = served(&alice, &bob, space).await;
        deliver(&alice, &bob, push).await;
        let err = bob
            .core
            .invite(space, rex.cert().to_card(), Grant::Replicator)
            .await
            .unwrap_err();
        assert!(matches!(err, core::Error::NotAllowed(_)), "{err}");
        let invited = alice
            .core
            .invite(space, rex.device().to_string(), Grant::Replicator)
            .await
            .unwrap();
        assert_eq!(invited.grant, Grant::Replicator);
        let members = alice.core.members(space).await.unwrap();
        assert_eq!(members.replicators, vec![rex.device()]);

        // Rex takes everything but can read nothing.
        let push = served(&alice, &rex, space).await;
        assert_eq!(deliver(&alice, &rex, push).await.rejected, 0);
        let err = rex.core.messages(space, 10).await.unwrap_err();
        assert!(matches!(err, core::Error::KeyMissing { .. }), "{err}");
        let status = rex.status(space).await;
        assert_eq!((status.role.as_str(), status.readable), ("replicator", false));

        // Carol, added afterwards, gets the whole space from Rex alone.
        alice
            .core
            .invite(space, carol.cert().to_card(), Grant::Member(Role::Reader))
            .await
            .unwrap();
        let push = served(&alice, &rex, space).await;
        deliver(&alice, &rex, push).await;
        let push = served(&rex, &carol, space).await;
        assert_eq!(deliver(&rex, &carol, push).await.rejected, 0);
        assert_eq!(
            carol.core.messages(space, 1000).await.unwrap(),
            alice.core.messages(space, 1000).await.unwrap()
        );
        // A reader may not write.
        let err = carol.core.send(space, "hi".into(), None).await.unwrap_err();
        assert!(matches!(err, core::Error::NotWritable(_)), "{err}");
    });
}
