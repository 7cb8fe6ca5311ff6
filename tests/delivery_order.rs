//! Property: any delivery order of a set of sealed changes, with duplicates and in
//! any framing, yields the same chat log. Runs the real core (redb store, sealing,
//! validation, pending queue) in-process, without the network.

use std::collections::BTreeSet;

use outpost_node::{
    control::History,
    core::{self, CoreHandle, Event, MessageView},
    identity::DeviceKeys,
    ids::SpaceId,
};
use proptest::prelude::*;

struct Peer {
    core: CoreHandle,
    _dir: tempfile::TempDir,
    _thread: std::thread::JoinHandle<()>,
}

fn peer(keys: &std::sync::Arc<DeviceKeys>) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let (core, thread) = core::spawn(dir.path().to_path_buf(), keys.clone()).unwrap();
    Peer {
        core,
        _dir: dir,
        _thread: thread,
    }
}

fn drain(rx: &mut tokio::sync::broadcast::Receiver<Event>, out: &mut Vec<Vec<u8>>) {
    while let Ok(ev) = rx.try_recv() {
        if let Event::Stored { envelopes, .. } = ev {
            out.extend(envelopes.iter().cloned());
        }
    }
}

/// Alice and Bob write concurrently; returns every envelope, the space, Carol's
/// keys and the log both writers agree on.
fn history(rt: &tokio::runtime::Runtime) -> (Vec<Vec<u8>>, SpaceId, std::sync::Arc<DeviceKeys>, Vec<MessageView>) {
    let alice_keys = std::sync::Arc::new(DeviceKeys::generate());
    let bob_keys = std::sync::Arc::new(DeviceKeys::generate());
    let carol_keys = std::sync::Arc::new(DeviceKeys::generate());
    let alice = peer(&alice_keys);
    let bob = peer(&bob_keys);
    rt.block_on(async {
        let mut a_rx = alice.core.subscribe();
        let mut b_rx = bob.core.subscribe();
        let space = alice
            .core
            .create_chat(
                "room".into(),
                History::Shared,
                vec![bob_keys.cert().to_card(), carol_keys.cert().to_card()],
                vec![],
            )
            .await
            .unwrap();
        let mut from_alice = Vec::new();
        let mut from_bob = Vec::new();
        for i in 0..6 {
            alice.core.send(space, format!("a{i}"), None).await.unwrap();
        }
        drain(&mut a_rx, &mut from_alice);
        bob.core
            .ingest(alice_keys.device_id(), from_alice.clone())
            .await
            .unwrap();
        // Concurrent writes: neither sees the other's next messages.
        for i in 6..10 {
            alice.core.send(space, format!("a{i}"), None).await.unwrap();
            bob.core.send(space, format!("b{i}"), None).await.unwrap();
        }
        let seen = from_alice.len();
        drain(&mut a_rx, &mut from_alice);
        drain(&mut b_rx, &mut from_bob);
        let bob_own: Vec<Vec<u8>> = from_bob
            .iter()
            .filter(|e| !from_alice[..seen].contains(e))
            .cloned()
            .collect();
        bob.core
            .ingest(alice_keys.device_id(), from_alice[seen..].to_vec())
            .await
            .unwrap();
        alice.core.ingest(bob_keys.device_id(), bob_own.clone()).await.unwrap();
        // Bob answers after seeing everything.
        bob.core.send(space, "b-last".into(), None).await.unwrap();
        drain(&mut b_rx, &mut from_bob);
        let mut all: Vec<Vec<u8>> = from_alice.clone();
        for e in from_bob {
            if !all.contains(&e) {
                all.push(e);
            }
        }
        let expected = bob.core.messages(space, 1000).await.unwrap();
        alice.core.ingest(bob_keys.device_id(), all.clone()).await.unwrap();
        assert_eq!(
            alice.core.messages(space, 1000).await.unwrap(),
            expected,
            "writers agree"
        );
        assert_eq!(expected.len(), 15);
        (all, space, carol_keys, expected)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn any_delivery_order_gives_the_same_log(seed in any::<u64>(), dup_mask in any::<u32>(), frames in 1usize..6) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (all, space, carol_keys, expected) = HISTORY.with(|h| h.get_or_init(|| history(&rt)).clone());
        // A seeded shuffle plus duplicates.
        let mut order: Vec<usize> = (0..all.len()).collect();
        let mut state = seed | 1;
        for i in (1..order.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            order.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut delivery: Vec<Vec<u8>> = order.iter().map(|&i| all[i].clone()).collect();
        for (i, &j) in order.iter().enumerate() {
            if dup_mask & (1 << (i % 32)) != 0 {
                delivery.push(all[j].clone());
            }
        }
        let carol = peer(&carol_keys);
        let log = rt.block_on(async {
            let chunk = delivery.len().div_ceil(frames);
            for frame in delivery.chunks(chunk) {
                carol.core.ingest(carol_keys.device_id(), frame.to_vec()).await.unwrap();
            }
            carol.core.messages(space, 1000).await.unwrap()
        });
        prop_assert_eq!(&log, &expected);
        let ids: BTreeSet<&str> = log.iter().map(|m| m.id.as_str()).collect();
        prop_assert_eq!(ids.len(), 15);
    }
}

type Recorded = (Vec<Vec<u8>>, SpaceId, std::sync::Arc<DeviceKeys>, Vec<MessageView>);

thread_local! {
    static HISTORY: std::cell::OnceCell<Recorded> = const { std::cell::OnceCell::new() };
}

/// Idempotency keys are bounded: a client cannot make the node store arbitrary
/// amounts of key text; a retried key returns the first send's id.
#[test]
fn client_ids_are_bounded_and_idempotent() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keys = std::sync::Arc::new(DeviceKeys::generate());
    let alice = peer(&keys);
    rt.block_on(async {
        let space = alice
            .core
            .create_chat("room".into(), History::Shared, vec![], vec![])
            .await
            .unwrap();
        let long = "k".repeat(core::MAX_CLIENT_ID_BYTES + 1);
        let err = alice.core.send(space, "x".into(), Some(long)).await.unwrap_err();
        assert!(matches!(err, core::Error::Invalid(_)), "{err}");
        let first = alice.core.send(space, "once".into(), Some("k1".into())).await.unwrap();
        let again = alice.core.send(space, "once".into(), Some("k1".into())).await.unwrap();
        assert_eq!(first.id, again.id);
        assert!(!first.duplicate && again.duplicate);
        assert_eq!(alice.core.messages(space, 10).await.unwrap().len(), 1);
    });
}
