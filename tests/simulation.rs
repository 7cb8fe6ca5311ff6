//! Simulation with random seeds: three real cores (redb, sealing, validation,
//! snapshots) write in bursts, invite a member, restart and sync in random pairs
//! and directions, with no network, and every schedule ends the same way:
//! identical logs and memberships once everyone has talked to everyone.

mod inproc;

use inproc::{Node, deliver, served};
use outpost_node::{
    control::{History, Role},
    core::{Grant, MessageView},
    ids::SpaceId,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    /// Node `0` sends this many messages, one change each.
    Burst(usize, usize),
    /// Node `0` pulls from node `1`.
    Sync(usize, usize),
    /// The owner adds the third node.
    Invite,
    Restart(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..3, 1usize..90).prop_map(|(n, k)| Step::Burst(n, k)),
        (0usize..3, 0usize..3).prop_map(|(a, b)| Step::Sync(a, b)),
        Just(Step::Invite),
        (0usize..3).prop_map(Step::Restart),
    ]
}

async fn log(node: &Node, space: SpaceId) -> Option<Vec<MessageView>> {
    node.core.messages(space, 100_000).await.ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]

    #[test]
    fn every_schedule_converges(steps in proptest::collection::vec(step(), 1..14)) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut nodes = vec![Node::new(), Node::new(), Node::new()];
            let space = nodes[0]
                .core
                .create_chat("sim".into(), History::Shared, vec![nodes[1].cert().to_card()], vec![])
                .await
                .unwrap();
            let mut invited = false;
            let mut sent = 0usize;
            for step in steps {
                match step {
                    Step::Burst(n, k) => {
                        for i in 0..k {
                            if nodes[n].core.send(space, format!("{n}-{sent}-{i}"), None).await.is_ok() {
                                sent += 1;
                            }
                        }
                    }
                    Step::Sync(to, from) if to != from => {
                        let push = served(&nodes[from], &nodes[to], space).await;
                        let ack = deliver(&nodes[from], &nodes[to], push).await;
                        assert_eq!(ack.rejected, 0, "nothing honest is refused");
                    }
                    Step::Sync(..) => {}
                    Step::Invite if !invited => {
                        let card = nodes[2].cert().to_card();
                        nodes[0].core.invite(space, card, Grant::Member(Role::Writer)).await.unwrap();
                        invited = true;
                    }
                    Step::Invite => {}
                    Step::Restart(n) => {
                        let node = nodes.remove(n);
                        nodes.insert(n, node.restart());
                    }
                }
            }
            // Everyone talks to everyone until nothing moves.
            for _ in 0..3 {
                for to in 0..3 {
                    for from in 0..3 {
                        if to != from {
                            let push = served(&nodes[from], &nodes[to], space).await;
                            deliver(&nodes[from], &nodes[to], push).await;
                        }
                    }
                }
            }
            let reference = log(&nodes[0], space).await.unwrap();
            assert_eq!(reference.len(), sent, "every acknowledged send is in the log");
            assert_eq!(log(&nodes[1], space).await.unwrap(), reference);
            let third = log(&nodes[2], space).await;
            if invited {
                assert_eq!(third.unwrap(), reference);
            } else {
                assert!(third.is_none(), "a non-member holds nothing of the space");
            }
            let members = nodes[0].core.members(space).await.unwrap().members.len();
            for node in &nodes[1..] {
                if let Ok(m) = node.core.members(space).await {
                    assert_eq!(m.members.len(), members);
                }
            }
            for node in &nodes {
                if let Ok(status) = node.core.status().await {
                    for s in status {
                        assert_eq!((s.pending, s.rejected), (0, 0), "{s:?}");
                    }
                }
            }
        });
    }
}
