//! Snapshots: a peer far behind gets one sealed document instead of every envelope,
//! the envelopes written after it follow, and nobody can slip forged or rule-breaking
//! changes in through one. Runs the real core (redb, sealing, validation) in-process;
//! `tests/three_daemons.rs` covers the same path between daemon processes.

mod inproc;

use inproc::{Node, deliver, kinds, served, stored};
use outpost_crdt::{
    Author,
    chat::{ChatDoc, NewMessage},
    writer,
};
use outpost_node::{
    control::{History, SpaceState},
    envelope::{Envelope, Kind},
    snapshot::Snapshot,
};

#[test]
fn a_fresh_member_catches_up_from_a_snapshot_then_follows_envelope_by_envelope() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let alice = Node::new();
        let bob = Node::new();
        let carol = Node::new();
        let dave = Node::new();
        let rex = Node::new();
        let members = vec![bob.cert().to_card(), carol.cert().to_card(), dave.cert().to_card()];
        let replicators = vec![rex.cert().to_card()];
        let space = alice
            .core
            .create_chat("room".into(), History::Shared, members, replicators)
            .await
            .unwrap();
        // 300 sends, one change each: a long history.
        for i in 0..300 {
            alice.core.send(space, format!("message {i}"), None).await.unwrap();
        }
        let expected = alice.core.messages(space, 1000).await.unwrap();

        // Bob holds nothing: he gets the genesis and one snapshot, no envelope.
        let push = served(&alice, &bob, space).await;
        assert_eq!(kinds(&push), (1, 0, 1), "genesis + snapshot");
        let ack = deliver(&alice, &bob, push).await;
        assert_eq!((ack.stored, ack.rejected), (2, 0));
        assert_eq!(bob.core.messages(space, 1000).await.unwrap(), expected);
        let status = bob.status(space).await;
        assert_eq!(status.snapshots, 1);
        assert_eq!(status.envelopes, 1, "only the genesis is stored as an envelope");
        assert_eq!(status.pending, 0);

        // Later messages follow as envelopes; their parents are inside the snapshot.
        for i in 0..5 {
            alice.core.send(space, format!("later {i}"), None).await.unwrap();
        }
        let push = served(&alice, &bob, space).await;
        assert_eq!(kinds(&push), (0, 5, 0));
        // Each change with its message's body.
        assert_eq!(deliver(&alice, &bob, push).await.stored, 10);
        let expected = alice.core.messages(space, 1000).await.unwrap();
        assert_eq!(bob.core.messages(space, 1000).await.unwrap(), expected);

        // Bob writes on top of the snapshot; Alice accepts it.
        let mut bob_rx = bob.core.subscribe();
        bob.core.send(space, "bob was here".into(), None).await.unwrap();
        let ack = deliver(&bob, &alice, stored(&mut bob_rx)).await;
        assert_eq!((ack.stored, ack.rejected), (2, 0), "the change and its body");
        let expected = alice.core.messages(space, 1000).await.unwrap();
        assert_eq!(expected.len(), 306);
        assert_eq!(bob.core.messages(space, 1000).await.unwrap(), expected);

        // A restart rebuilds Bob's document from the snapshot plus his envelopes.
        let bob = bob.restart();
        assert_eq!(bob.core.messages(space, 1000).await.unwrap(), expected);
        assert_eq!(bob.status(space).await.snapshots, 1);

        // The replicator cannot read a snapshot's messages to fetch their
        // bodies: it gets the envelopes with the bodies beside them, and
        // serves a member from those.
        let push = served(&alice, &rex, space).await;
        assert_eq!(kinds(&push).2, 0);
        assert_eq!(deliver(&alice, &rex, push).await.rejected, 0);
        assert_eq!(rex.status(space).await.sides, 306);
        let push = served(&rex, &carol, space).await;
        assert_eq!(deliver(&rex, &carol, push).await.rejected, 0);
        assert_eq!(carol.core.messages(space, 1000).await.unwrap(), expected);
        let status = carol.status(space).await;
        assert_eq!((status.pending, status.rejected), (0, 0));
        assert!(served(&bob, &carol, space).await.is_empty(), "nothing left to send");

        // Bob holds most of the history only inside the snapshot: a fresh peer
        // must get it from him that way, then the envelopes after it.
        let push = served(&bob, &dave, space).await;
        assert_eq!(kinds(&push), (1, 6, 1));
        assert_eq!(deliver(&bob, &dave, push).await.rejected, 0);
        assert_eq!(dave.core.messages(space, 1000).await.unwrap(), expected);
        assert_eq!(dave.status(space).await.pending, 0);
    });
}

#[test]
fn a_snapshot_cannot_put_words_in_another_writers_mouth() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let alice = Node::new();
        let mallory = Node::new();
        let carol = Node::new();
        let members = vec![mallory.cert().to_card(), carol.cert().to_card()];
        let mut alice_rx = alice.core.subscribe();
        let space = alice
            .core
            .create_chat("room".into(), History::Shared, members, vec![])
            .await
            .unwrap();
        for i in 0..3 {
            alice.core.send(space, format!("real {i}"), None).await.unwrap();
        }
        let envelopes: Vec<Envelope> = stored(&mut alice_rx)
            .into_iter()
            .map(|b| Envelope::decode(b).unwrap())
            .collect();
        let genesis = envelopes[0].clone();
        // The messages' texts ride beside their changes, in body envelopes.
        let (bodies, envelopes): (Vec<Envelope>, Vec<Envelope>) =
            envelopes.into_iter().partition(|e| e.header().kind == Kind::Body);
        let alice_last = envelopes.last().unwrap().clone();
        let state = SpaceState::from_genesis(&genesis).unwrap();
        let epoch = state.unwrap_key(&mallory.keys).unwrap().unwrap();
        let doc_id = space.chat_shard(0);

        // Mallory, a member, rebuilds Alice's history and adds a message as Alice.
        let mut forged = ChatDoc::new(doc_id);
        let changes = envelopes[1..]
            .iter()
            .map(|e| outpost_crdt::Change::from_bytes(e.open_content(&epoch).unwrap()).unwrap())
            .collect();
        let as_alice = Author {
            user: alice.keys.user_id().to_string(),
            editor: true,
            admin: true,
        };
        forged.apply(changes, &as_alice).unwrap();
        let honest = forged.save();
        let alice_actor = writer::actor_id(&alice.device().0, &doc_id, alice_last.header().incarnation);
        let fake = NewMessage {
            id: "forged".into(),
            body: bodies[0].id().to_string(),
            reply_to: None,
            mentions: Vec::new(),
            all: false,
        };
        forged.post(alice_actor, &as_alice, &[fake], 1).unwrap();
        let snap = Snapshot::make(
            &mallory.keys,
            &epoch,
            doc_id,
            state.heads(),
            vec![alice_last.clone()],
            &forged.save(),
        )
        .unwrap();

        deliver(&alice, &carol, vec![genesis.as_bytes().to_vec()]).await;
        let ack = deliver(&mallory, &carol, vec![snap.envelope().as_bytes().to_vec()]).await;
        assert_eq!((ack.stored, ack.rejected), (0, 1));
        let status = carol.status(space).await;
        assert_eq!((status.snapshots, status.rejected), (0, 1));
        assert!(carol.core.messages(space, 100).await.unwrap().is_empty());

        // The same snapshot without the forged message is accepted: the refusal
        // above was for the forgery alone.
        let snap = Snapshot::make(&mallory.keys, &epoch, doc_id, state.heads(), vec![alice_last], &honest).unwrap();
        let ack = deliver(&mallory, &carol, vec![snap.envelope().as_bytes().to_vec()]).await;
        assert_eq!((ack.stored, ack.rejected), (1, 0));
        let bodies = bodies.iter().map(|b| b.as_bytes().to_vec()).collect();
        let ack = deliver(&alice, &carol, bodies).await;
        assert_eq!((ack.stored, ack.rejected), (3, 0));
        let log = carol.core.messages(space, 100).await.unwrap();
        assert_eq!(
            log.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
            ["real 0", "real 1", "real 2"]
        );
    });
}
