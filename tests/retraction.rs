//! Retraction as a consensus rule, on real cores: a tombstone deletes a body
//! only when its author may (the body's author's user, or an owner or admin at
//! the tombstone's control heads). Members and replicators decide alike,
//! whichever arrives first: a forged tombstone deletes nothing anywhere, and a
//! body whose valid tombstone came first is never stored.

mod inproc;

use inproc::{Node, control_state, deliver, served, stored};
use outpost_node::{
    control::History,
    core::{ChatOp, Grant},
    envelope::{Envelope, Header, Kind},
    ids::SpaceId,
};

fn of_kind(envelopes: &[Vec<u8>], kind: Kind) -> Vec<Vec<u8>> {
    envelopes
        .iter()
        .filter(|b| Envelope::decode((*b).clone()).unwrap().header().kind == kind)
        .cloned()
        .collect()
}

async fn text_of(node: &Node, space: SpaceId, id: &str) -> (String, bool) {
    let log = node.core.messages(space, 100).await.unwrap();
    let m = log.iter().find(|m| m.id == id).unwrap();
    (m.text.clone(), m.retracted.is_some())
}

/// The unread count `chat list` shows for a room.
async fn unread(node: &Node, space: SpaceId) -> u64 {
    let all = node.core.spaces().await.unwrap();
    all.into_iter().find(|s| s.space == space).unwrap().unread.unwrap()
}

#[test]
fn a_tombstone_deletes_only_what_its_author_may_on_every_node() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let [alice, bob, mallory, rex] = [(); 4].map(|_| Node::new());
        let mut alice_rx = alice.core.subscribe();
        let members = vec![bob.cert().to_card(), mallory.cert().to_card()];
        let space = alice
            .core
            .create_chat("room".into(), History::Shared, members, vec![rex.cert().to_card()])
            .await
            .unwrap();
        let sent = alice.core.send(space, "alice's words".into(), None).await.unwrap();
        let log = stored(&mut alice_rx);
        let body = Envelope::decode(of_kind(&log, Kind::Body).remove(0)).unwrap();
        for node in [&bob, &mallory, &rex] {
            let push = served(&alice, node, space).await;
            deliver(&alice, node, push).await;
        }
        assert_eq!(text_of(&bob, space, &sent.id).await.0, "alice's words");
        assert_eq!(rex.status(space).await.sides, 1);

        // Mallory, a writer, signs a well-formed tombstone for Alice's body.
        let state = control_state(&log, space);
        let header = Header {
            kind: Kind::Tombstone,
            space,
            doc: space.chat_shard(0),
            epoch: state.epoch,
            author: mallory.device(),
            incarnation: 7,
            seq: 1,
            parents: Vec::new(),
            control_heads: state.heads(),
        };
        let forged = Envelope::sign_tombstone(&mallory.keys, header, &[body.id()]);
        for node in [&bob, &rex] {
            let ack = deliver(&mallory, node, vec![forged.as_bytes().to_vec()]).await;
            assert_eq!(ack.rejected, 0, "well formed: stored, and without effect");
        }
        assert_eq!(text_of(&bob, space, &sent.id).await, ("alice's words".into(), false));
        assert_eq!(unread(&bob, space).await, 1, "a forged tombstone retracts nothing");
        assert_eq!(rex.status(space).await.sides, 2, "the body stays beside the tombstone");

        // A replicator that gets the forged tombstone before the body still
        // stores the body.
        let late = Node::new();
        alice
            .core
            .invite(space, late.cert().to_card(), Grant::Replicator)
            .await
            .unwrap();
        let control = of_kind(&served(&alice, &late, space).await, Kind::Control);
        deliver(&alice, &late, control).await;
        deliver(&mallory, &late, vec![forged.as_bytes().to_vec()]).await;
        let push = served(&alice, &late, space).await;
        deliver(&alice, &late, push).await;
        assert!(
            late.status(space).await.sides >= 2,
            "the body arrived after a forged tombstone and is kept"
        );

        // Alice retracts: every node deletes the body, the replicators too.
        let mut alice_rx = alice.core.subscribe();
        alice
            .core
            .chat_write(
                Some(space),
                ChatOp::Retract {
                    message: sent.id.clone(),
                },
            )
            .await
            .unwrap();
        let retraction = stored(&mut alice_rx);
        for node in [&bob, &rex, &late] {
            let push = served(&alice, node, space).await;
            deliver(&alice, node, push).await;
        }
        let (text, retracted) = text_of(&bob, space, &sent.id).await;
        assert_eq!((text.as_str(), retracted), ("", true));
        assert_eq!(unread(&bob, space).await, 0, "nothing is left to read");
        for node in [&rex, &late] {
            // Mallory's tombstone and Alice's stay; the body is gone.
            assert_eq!(node.status(space).await.sides, 2);
        }
        // A forged tombstone arriving after the real one undoes nothing, and
        // the body, offered again, is refused everywhere.
        for node in [&bob, &rex, &late] {
            deliver(&mallory, node, vec![forged.as_bytes().to_vec()]).await;
            let ack = deliver(&mallory, node, vec![body.as_bytes().to_vec()]).await;
            assert_eq!(ack.stored, 0, "a retracted body is not stored again");
        }
        assert_eq!(text_of(&bob, space, &sent.id).await, (String::new(), true));
        assert_eq!(rex.status(space).await.sides, 2);

        // A fresh replicator that gets the valid tombstone first never stores the body.
        let fresh = Node::new();
        alice
            .core
            .invite(space, fresh.cert().to_card(), Grant::Replicator)
            .await
            .unwrap();
        let control = of_kind(&served(&alice, &fresh, space).await, Kind::Control);
        deliver(&alice, &fresh, control).await;
        deliver(&alice, &fresh, of_kind(&retraction, Kind::Tombstone)).await;
        let ack = deliver(&alice, &fresh, vec![body.as_bytes().to_vec()]).await;
        assert_eq!((ack.stored, ack.rejected), (0, 0), "refused quietly: it was retracted");
        assert_eq!(fresh.status(space).await.sides, 1, "only the tombstone");
    });
}

/// Whether `node` still holds body `id` (it answers a request for it with
/// the body itself, not the tombstone that deleted it).
async fn holds_body(node: &Node, asker: &Node, space: SpaceId, id: outpost_node::ids::EnvelopeId) -> bool {
    let (sides, _) = node.core.sides_for(asker.device(), space, vec![id]).await.unwrap();
    sides
        .iter()
        .any(|b| Envelope::decode(b.clone()).is_ok_and(|e| e.header().kind == Kind::Body && e.id() == id))
}

/// An edit its author makes while the owner's retraction is on its way is
/// named by no tombstone; once the two meet, the nodes that may delete it
/// retract it again, so its text leaves every node, the replicator too.
#[test]
fn an_edit_made_while_a_retraction_was_on_its_way_is_retracted_too() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let [alice, bob, rex] = [(); 3].map(|_| Node::new());
        let space = alice
            .core
            .create_chat(
                "room".into(),
                History::Shared,
                vec![bob.cert().to_card()],
                vec![rex.cert().to_card()],
            )
            .await
            .unwrap();
        for node in [&bob, &rex] {
            let push = served(&alice, node, space).await;
            deliver(&alice, node, push).await;
        }
        let sent = bob.core.send(space, "first thoughts".into(), None).await.unwrap();
        for node in [&alice, &rex] {
            let push = served(&bob, node, space).await;
            deliver(&bob, node, push).await;
        }

        // Apart: Bob edits his message while Alice, the owner, retracts it.
        let mut bob_rx = bob.core.subscribe();
        bob.core
            .chat_write(
                Some(space),
                ChatOp::Edit {
                    message: sent.id.clone(),
                    text: "second thoughts".into(),
                },
            )
            .await
            .unwrap();
        let edit_body = Envelope::decode(of_kind(&stored(&mut bob_rx), Kind::Body).remove(0))
            .unwrap()
            .id();
        alice
            .core
            .chat_write(
                Some(space),
                ChatOp::Retract {
                    message: sent.id.clone(),
                },
            )
            .await
            .unwrap();
        let push = served(&bob, &rex, space).await;
        deliver(&bob, &rex, push).await;
        assert!(
            holds_body(&rex, &alice, space, edit_body).await,
            "the edit reached the replicator"
        );

        // They meet: each side finds the edit's body retracted by nobody.
        for _ in 0..2 {
            for (from, to) in [(&alice, &bob), (&bob, &alice), (&alice, &rex), (&bob, &rex)] {
                let push = served(from, to, space).await;
                deliver(from, to, push).await;
            }
        }
        for node in [&alice, &bob, &rex] {
            assert!(
                !holds_body(node, &alice, space, edit_body).await,
                "the edit's text is deleted on every node"
            );
        }
        let (text, retracted) = text_of(&alice, space, &sent.id).await;
        assert_eq!((text.as_str(), retracted), ("", true));
        assert_eq!(text_of(&bob, space, &sent.id).await, (String::new(), true));
    });
}
