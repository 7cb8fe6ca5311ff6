//! Simulation with random seeds of membership under partitions: four real cores
//! (redb, sealing, validation, the clean-epoch rule) write, remove and re-add
//! members, demote the admin, rotate, restart and sync in random pairs and
//! directions, with no network. Every schedule ends the same way once everyone
//! has talked to everyone: the current members agree on members, roles, epoch
//! and log, each holds the current key, and no honest envelope was refused. In
//! a from-join space a re-added member (a join) reads its first membership and
//! everything from its re-add on: its log is the owner's with the messages of
//! the epochs in between left out, in the same order.

mod inproc;

use std::collections::BTreeMap;

use inproc::{Node, deliver, served};
use outpost_node::{
    control::{History, Role},
    core::{Grant, MemberChange},
    ids::{DeviceId, SpaceId},
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    /// Node `0` sends this many messages.
    Burst(usize, usize),
    /// Node `0` pulls from node `1`.
    Sync(usize, usize),
    /// Node `0` (the owner or the admin) removes node `1` (a writer).
    Remove(usize, usize),
    /// Node `0` adds node `1` back.
    Readd(usize, usize),
    /// The owner demotes the admin to writer.
    Demote,
    /// Node `0` rotates the key.
    Rotate(usize),
    Restart(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..4, 1usize..20).prop_map(|(n, k)| Step::Burst(n, k)),
        (0usize..4, 0usize..4).prop_map(|(a, b)| Step::Sync(a, b)),
        (0usize..2, 2usize..4).prop_map(|(a, b)| Step::Remove(a, b)),
        (0usize..2, 2usize..4).prop_map(|(a, b)| Step::Readd(a, b)),
        Just(Step::Demote),
        (0usize..4).prop_map(Step::Rotate),
        (0usize..4).prop_map(Step::Restart),
    ]
}

/// Members and roles, epoch, and the log, as one node sees the space.
type View = (BTreeMap<DeviceId, Role>, String, Vec<String>);

async fn view(node: &Node, space: SpaceId) -> Option<View> {
    let members = node.core.members(space).await.ok()?;
    let roles = members.members.iter().map(|m| (m.device, m.role)).collect();
    let epoch = node.status(space).await.epoch.to_string();
    let log = node.core.messages(space, 100_000).await.ok()?;
    Some((roles, epoch, log.into_iter().map(|m| m.id).collect()))
}

async fn sync(nodes: &[Node], to: usize, from: usize, space: SpaceId) {
    let push = served(&nodes[from], &nodes[to], space).await;
    let ack = deliver(&nodes[from], &nodes[to], push).await;
    assert_eq!(ack.rejected, 0, "nothing honest is refused");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn membership_changes_converge(steps in proptest::collection::vec(step(), 1..16), from_join in any::<bool>()) {
        let history = if from_join { History::FromJoin } else { History::Shared };
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut nodes: Vec<Node> = (0..4).map(|_| Node::new()).collect();
            let cards: Vec<String> = nodes.iter().map(|n| n.cert().to_card()).collect();
            let space = nodes[0].core.create_chat("sim".into(), history, cards[1..].to_vec(), vec![]).await.unwrap();
            nodes[0]
                .core
                .change_members(space, MemberChange::SetRole(nodes[1].device().to_string(), Role::Admin))
                .await
                .unwrap();
            sync(&nodes, 1, 0, space).await;
            for step in steps {
                match step {
                    Step::Burst(n, k) => {
                        for i in 0..k {
                            // Refused when this node is not (or no longer) a writer, or
                            // lacks the current key: never lost silently.
                            let _ = nodes[n].core.send(space, format!("{n}-{i}"), None).await;
                        }
                    }
                    Step::Sync(to, from) if to != from => sync(&nodes, to, from, space).await,
                    Step::Sync(..) => {}
                    Step::Remove(by, who) => {
                        let who = nodes[who].device().to_string();
                        let _ = nodes[by].core.change_members(space, MemberChange::Remove(who)).await;
                    }
                    Step::Readd(by, who) => {
                        let card = cards[who].clone();
                        let _ = nodes[by].core.invite(space, card, Grant::Member(Role::Writer)).await;
                    }
                    Step::Demote => {
                        let admin = nodes[1].device().to_string();
                        let _ = nodes[0].core.change_members(space, MemberChange::SetRole(admin, Role::Writer)).await;
                    }
                    Step::Rotate(n) => {
                        let _ = nodes[n].core.change_members(space, MemberChange::Rotate).await;
                    }
                    Step::Restart(n) => {
                        let node = nodes.remove(n);
                        nodes.insert(n, node.restart());
                    }
                }
            }
            // Everyone talks to everyone until nothing moves (rotations made while
            // healing need a round or two more to spread).
            let mut last = Vec::new();
            for _ in 0..8 {
                for to in 0..4 {
                    for from in 0..4 {
                        if to != from {
                            sync(&nodes, to, from, space).await;
                        }
                    }
                }
                let mut views = Vec::new();
                for n in &nodes {
                    views.push(view(n, space).await);
                }
                if views == last {
                    break;
                }
                last = views;
            }
            // The owner is never removed, so it is a member: its view is the reference.
            let (members, epoch, log) = view(&nodes[0], space).await.unwrap();
            for node in &nodes {
                if !members.contains_key(&node.device()) {
                    continue;
                }
                let (m, e, l) = view(node, space).await.expect("a member reads the space");
                assert_eq!(m, members);
                assert_eq!(e, epoch);
                // Nodes 0 and 1 are never removed: they read everything.
                if history == History::Shared || node.device() == nodes[1].device() {
                    assert_eq!(l, log);
                } else {
                    let mut rest = log.iter();
                    assert!(l.iter().all(|id| rest.any(|o| o == id)), "a subsequence of the owner's log");
                }
                let status = node.status(space).await;
                assert_eq!(status.key_problem, None, "{status:?}");
                assert_eq!(status.pending, 0);
            }
        });
    }
}
