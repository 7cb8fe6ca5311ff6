//! Equivocation: a device that signs two different envelopes for one (writer, seq)
//! (a cloned or compromised device) has that writer frozen before the seq on every
//! node: both twins and everything built on them are removed, whether a node held
//! them as envelopes or inside a snapshot, and the freeze survives restarts. The
//! twins travel as evidence through ordinary sync. Real cores, in-process;
//! `tests/hostile_peer.rs` covers the same between daemon processes.

mod inproc;

use inproc::{Node, deliver, kinds, served, stored};
use outpost_node::{
    control::{Add, AddKey, ControlOp, History, Member, Role, SpaceState},
    core::Grant,
    envelope::{Envelope, Kind},
    ids::SpaceId,
};

async fn texts(node: &Node, space: SpaceId) -> Vec<String> {
    node.core
        .messages(space, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect()
}

#[test]
fn an_equivocating_writer_is_frozen_on_every_node_and_stays_frozen() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let alice = Node::new();
        let bob = Node::new();
        let carol = Node::new();
        let dave = Node::new();
        let mallory = Node::new();
        let members = [&bob, &carol, &dave, &mallory].map(|n| n.cert().to_card()).to_vec();
        let mut alice_rx = alice.core.subscribe();
        let space = alice
            .core
            .create_chat("room".into(), History::Shared, members, vec![])
            .await
            .unwrap();
        let genesis = Envelope::decode(stored(&mut alice_rx).remove(0)).unwrap();
        for i in 0..100 {
            alice.core.send(space, format!("alice {i}"), None).await.unwrap();
        }
        for node in [&bob, &mallory] {
            let push = served(&alice, node, space).await;
            deliver(&alice, node, push).await;
        }
        let honest = texts(&alice, space).await;

        // Mallory writes one message, then signs a second envelope for the same
        // (writer, seq): the same change sealed again (a clone replaying its state).
        let mut mallory_rx = mallory.core.subscribe();
        mallory.core.send(space, "from mallory".into(), None).await.unwrap();
        let first = Envelope::decode(stored(&mut mallory_rx).remove(0)).unwrap();
        let epoch = SpaceState::from_genesis(&genesis)
            .unwrap()
            .unwrap_key(&mallory.keys)
            .unwrap()
            .unwrap();
        let change = first.open_content(&epoch).unwrap();
        let twin = Envelope::seal_content(&mallory.keys, first.header().clone(), &epoch, &change);
        assert_ne!(twin.id(), first.id());

        // Bob takes the first and replies: his reply builds on it.
        deliver(&mallory, &bob, vec![first.as_bytes().to_vec()]).await;
        let mut bob_rx = bob.core.subscribe();
        bob.core.send(space, "reply to mallory".into(), None).await.unwrap();
        let reply = stored(&mut bob_rx);
        // Dave, fresh, gets Bob's snapshot, which holds both.
        let push = served(&bob, &dave, space).await;
        assert_eq!(kinds(&push).2, 1);
        deliver(&bob, &dave, push).await;
        assert_eq!(texts(&dave, space).await.len(), 102);

        // Alice gets both, then the twin: Mallory's writer is frozen before seq 1,
        // and Bob's reply, built on it, goes too.
        deliver(&mallory, &alice, vec![first.as_bytes().to_vec()]).await;
        deliver(&bob, &alice, reply.clone()).await;
        assert_eq!(texts(&alice, space).await.len(), 102);
        let ack = deliver(&mallory, &alice, vec![twin.as_bytes().to_vec()]).await;
        assert_eq!((ack.stored, ack.rejected), (0, 1));
        assert_eq!(texts(&alice, space).await, honest);
        let status = alice.status(space).await;
        assert_eq!(status.equivocating, vec![mallory.device()]);
        // Known twins are quiet duplicates; what builds on them is refused.
        let again = deliver(
            &mallory,
            &alice,
            vec![first.as_bytes().to_vec(), twin.as_bytes().to_vec()],
        )
        .await;
        assert_eq!((again.duplicate, again.rejected), (2, 0));
        assert_eq!(deliver(&bob, &alice, reply.clone()).await.rejected, 1);

        // The evidence reaches everyone through ordinary sync: Bob held both as
        // envelopes, Carol nothing, Dave both inside a snapshot only.
        for node in [&bob, &carol, &dave] {
            for _ in 0..3 {
                let push = served(&alice, node, space).await;
                deliver(&alice, node, push).await;
            }
            assert_eq!(texts(node, space).await, honest, "the log of {:?}", node.device());
            let status = node.status(space).await;
            assert_eq!(status.equivocating, vec![mallory.device()]);
            assert_eq!(status.pending, 0);
        }

        // The freeze survives a restart, and new writes land after the purged
        // positions of the log without overwriting anything.
        let alice = alice.restart();
        assert_eq!(texts(&alice, space).await, honest);
        alice.core.send(space, "after the restart".into(), None).await.unwrap();
        let alice = alice.restart();
        let log = texts(&alice, space).await;
        assert_eq!(log.len(), 101);
        assert_eq!(log.last().map(String::as_str), Some("after the restart"));
        assert_eq!(alice.status(space).await.equivocating, vec![mallory.device()]);
        assert_eq!(
            deliver(&mallory, &alice, vec![twin.as_bytes().to_vec()])
                .await
                .duplicate,
            1
        );
        let push = served(&alice, &bob, space).await;
        deliver(&alice, &bob, push).await;
        assert_eq!(texts(&bob, space).await, log);
    });
}

/// An equivocating control writer: its operations go, so the member it added is no
/// member, and the content written under that operation goes with it.
#[test]
fn an_equivocating_admin_loses_its_additions_and_what_was_written_under_them() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let alice = Node::new();
        let bob = Node::new();
        let carol = Node::new();
        let dave = Node::new();
        let members = vec![bob.cert().to_card()];
        let mut alice_rx = alice.core.subscribe();
        let space = alice
            .core
            .create_chat("room".into(), History::Shared, members, vec![])
            .await
            .unwrap();
        alice.core.send(space, "hello".into(), None).await.unwrap();
        alice
            .core
            .invite(space, carol.cert().to_card(), Grant::Member(Role::Writer))
            .await
            .unwrap();
        let sent = stored(&mut alice_rx);
        let add = sent
            .iter()
            .map(|b| Envelope::decode(b.clone()).unwrap())
            .find(|e| e.header().kind == Kind::Control && !e.header().parents.is_empty())
            .unwrap();
        // The same control writer and seq, adding someone else: a twin.
        let genesis = Envelope::decode(sent[0].clone()).unwrap();
        let epoch = SpaceState::from_genesis(&genesis)
            .unwrap()
            .unwrap_key(&alice.keys)
            .unwrap()
            .unwrap();
        let twin = Envelope::sign_control(
            &alice.keys,
            add.header().clone(),
            &ControlOp::Add(Add {
                member: Member {
                    cert: dave.cert(),
                    role: Role::Writer,
                },
                key: AddKey::Current {
                    epoch: epoch.id,
                    wrap: epoch.wrap_for(&dave.cert()),
                    grants: Vec::new(),
                },
            }),
        );
        assert_ne!(twin.id(), add.id());

        // Bob has the add and Carol's message written under it.
        deliver(&alice, &bob, sent.clone()).await;
        let push = served(&bob, &carol, space).await;
        deliver(&bob, &carol, push).await;
        let mut carol_rx = carol.core.subscribe();
        carol.core.send(space, "carol here".into(), None).await.unwrap();
        // The message's change and its body.
        assert_eq!(deliver(&carol, &bob, stored(&mut carol_rx)).await.stored, 2);
        assert_eq!(bob.core.members(space).await.unwrap().members.len(), 3);
        assert_eq!(texts(&bob, space).await, ["hello", "carol here"]);

        let ack = deliver(&alice, &bob, vec![twin.as_bytes().to_vec()]).await;
        assert_eq!(ack.rejected, 1);
        let members = bob.core.members(space).await.unwrap();
        let devices: Vec<_> = members.members.iter().map(|m| m.device).collect();
        assert_eq!(devices.len(), 2, "carol's add is gone: {devices:?}");
        assert!(!devices.contains(&carol.device()));
        assert_eq!(texts(&bob, space).await, ["hello"]);
        assert_eq!(bob.status(space).await.equivocating, vec![alice.device()]);
    });
}
