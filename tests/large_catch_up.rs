//! A peer lacking more than one push's budget ([`core::CATCH_UP_BYTES`]) gets the
//! history in bounded parts: memory stays bounded on the serving side, and the
//! catch-up does not wait for periodic resync. Between daemons the next part is
//! asked for when the previous one is acknowledged (net's outbox), or sooner when
//! frames processed out of order leave envelopes waiting (the receiver re-offers).

mod common;
mod inproc;

use std::time::Duration;

use common::wait_until;
use outpost_node::{control::History, core, sync};

/// `n` bytes of text that no compressor shrinks (a snapshot of it stays large).
fn noise(seed: u64, n: usize) -> String {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect()
}

#[test]
fn the_core_serves_a_large_deficit_in_bounded_parts() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let alice = inproc::Node::new();
        let bob = inproc::Node::new();
        let space = alice
            .core
            .create_chat("archive".into(), History::Shared, vec![bob.cert().to_card()], vec![])
            .await
            .unwrap();
        for i in 0..150 {
            alice.core.send(space, noise(i, 60_000), None).await.unwrap();
        }
        let push = inproc::served(&alice, &bob, space).await;
        inproc::deliver(&alice, &bob, push).await;
        // Bob now lacks 145 of 296 changes (under half: envelopes, not a
        // snapshot), about 8.7 MB: more than one push may carry.
        for i in 150..295 {
            alice.core.send(space, noise(i, 60_000), None).await.unwrap();
        }
        let offer = bob.core.make_offer(alice.device()).await.unwrap();
        let first = alice.core.take_offer(bob.device(), offer).await.unwrap();
        assert!(first.more, "the first part stops at the budget");
        let bytes: usize = first.push.iter().map(Vec::len).sum();
        assert!(bytes <= core::CATCH_UP_BYTES, "{bytes} bytes in one part");
        let mut push = first.push;
        let mut parts = 1;
        loop {
            for frame in sync::into_frames(push) {
                let ack = bob.core.ingest(alice.device(), frame).await.unwrap();
                assert_eq!((ack.rejected, ack.pending), (0, 0));
                alice.core.note_peer_holds(bob.device(), ack.vv).await;
            }
            let next = alice.core.catch_up(bob.device()).await.unwrap();
            if next.push.is_empty() {
                assert!(!next.more);
                break;
            }
            parts += 1;
            push = next.push;
        }
        assert_eq!(parts, 2);
        let expected = alice.core.messages(space, 1000).await.unwrap();
        assert_eq!(expected.len(), 295);
        assert_eq!(bob.core.messages(space, 1000).await.unwrap(), expected);
    });
}

#[test]
fn daemons_continue_a_large_catch_up_without_waiting_for_resync() {
    let root = tempfile::tempdir().unwrap();
    let mut a = common::Node::init(root.path(), "a");
    let mut b = common::Node::init(root.path(), "b");
    // Periodic resync far beyond the test's deadline: only continuation can finish.
    a.resync_secs = 3600;
    b.resync_secs = 3600;
    a.start(&[]);
    let space = a.create_chat("archive", &[&b], &[]);
    // 20 MB of incompressible text, in the messages' bodies: the skeletons come
    // in a snapshot, the bodies in answers of at most a frame each.
    for i in 0..340 {
        a.send(&space, &noise(i, 60_000));
    }
    let expected = a.log_texts(&space);
    b.start(&[a.addr()]);
    let log = wait_until(Duration::from_secs(60), "b to catch up on 340 large messages", || {
        let texts = b.log_texts(&space);
        (texts == expected).then_some(texts)
    });
    assert_eq!(log.len(), 340);
    let status = b.space_status(&space).unwrap();
    assert_eq!(
        (status["pending"].as_u64(), status["sides"].as_u64()),
        (Some(0), Some(340))
    );
}

/// A user invited while away, to a room whose history is larger than one
/// push: the operation adding them comes last in the room's log, and their
/// node keeps the room's genesis only with it. The control operations go
/// first, so the first part admits them and the rest follows.
#[test]
fn a_user_invited_while_away_joins_a_history_larger_than_one_push() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let alice = inproc::Node::new();
        let erin = inproc::Node::new();
        let space = alice
            .core
            .create_chat("archive".into(), History::FromJoin, vec![], vec![])
            .await
            .unwrap();
        for i in 0..160 {
            alice.core.send(space, noise(i, 60_000), None).await.unwrap();
        }
        alice
            .core
            .invite(
                space,
                erin.cert().to_card(),
                core::Grant::Member(outpost_node::control::Role::Writer),
            )
            .await
            .unwrap();
        alice.core.send(space, "welcome, Erin".into(), None).await.unwrap();

        // Erin was away: nothing was pushed to her; her node starts from nothing.
        let mut offer = erin.core.make_offer(alice.device()).await.unwrap();
        offer.push(sync::SpaceVv {
            space,
            vv: Default::default(),
        });
        let first = alice.core.take_offer(erin.device(), offer).await.unwrap();
        assert!(first.more, "the history is larger than one push");
        let mut push = first.push;
        let mut parts = 1;
        loop {
            for frame in sync::into_frames(push) {
                let ack = erin.core.ingest(alice.device(), frame).await.unwrap();
                assert_eq!(ack.rejected, 0);
                alice.core.note_peer_holds(erin.device(), ack.vv).await;
            }
            let next = alice.core.catch_up(erin.device()).await.unwrap();
            if next.push.is_empty() {
                break;
            }
            parts += 1;
            assert!(parts < 10, "the catch-up ends");
            push = next.push;
        }
        assert!(parts >= 2);
        let texts: Vec<String> = erin
            .core
            .messages(space, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(
            texts,
            ["welcome, Erin"],
            "Erin holds the room and reads from her join on"
        );
        assert!(erin.status(space).await.before_join >= 160);
    });
}
