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
