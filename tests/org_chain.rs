//! The org policy chain on real cores (redb store, the core's verification),
//! fed frames by hand as a hostile or stale peer would send them: a rollback, a
//! fork, K − 1 signatures and a removed admin's signature are refused by every
//! node alike, a fork is reported, drafts nobody in the admin set signed are
//! not kept, and the highest version survives a restart.

mod inproc;

use inproc::Node;
use outpost_node::{
    control::History,
    core::OrgCommand,
    org::{AdminKeys, Header, OrgId, Policy, PolicyFrame, Signed, Verified},
};

const DAY: u64 = 86_400_000;

fn body(name: &str) -> Vec<u8> {
    Policy {
        name: name.into(),
        ..Policy::default()
    }
    .encode()
}

fn signed(header: &Header, body: Vec<u8>, by: &[&AdminKeys]) -> Signed {
    let mut s = Signed::new(header, body);
    for k in by {
        s.sign(k);
    }
    s
}

/// The version after `prev` named `name`, with `admins`' keys and `threshold`.
fn next(prev: &Verified, name: &str, admins: &[&AdminKeys], threshold: u16, by: &[&AdminKeys]) -> Signed {
    let b = body(name);
    let keys = admins.iter().map(|k| k.public()).collect();
    let h = &prev.header;
    let header = Header::next(prev, keys, threshold, h.issued_at_ms + 1, h.expires_at_ms + 1, &b);
    signed(&header, b, by)
}

/// A core that follows `org` and holds its version 1.
async fn following(org: OrgId, v1: &Verified) -> Node {
    let node = Node::new();
    node.core.org(OrgCommand::Follow { org }).await.unwrap();
    feed(&node, frame(org, vec![v1.signed.clone()])).await;
    node
}

/// Hands `node` a frame as if a peer had sent it.
async fn feed(node: &Node, frame: PolicyFrame) {
    node.core.take_policy(node.device(), frame).await.unwrap();
}

fn frame(org: OrgId, versions: Vec<Signed>) -> PolicyFrame {
    PolicyFrame {
        org,
        have: 0,
        versions,
        drafts: Vec::new(),
    }
}

#[test]
fn every_node_refuses_rollback_fork_and_under_signed_versions() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let [a0, a1, a2] = [(); 3].map(|_| AdminKeys::generate());
        let now = outpost_node::clock::now_ms();
        let b1 = body("acme");
        let h1 = Header::first(vec![a0.public(), a1.public(), a2.public()], 2, now, now + 90 * DAY, &b1);
        let org = h1.org;
        let v1 = signed(&h1, b1, &[&a0, &a1]).verify_first(&org).unwrap();
        let v2 = next(&v1, "two", &[&a0, &a1, &a2], 2, &[&a1, &a2])
            .verify_next(&v1)
            .unwrap();
        // Version 3 removes admin 2 (2 of the old set and 2 of the new one sign).
        let v3 = next(&v2, "three", &[&a0, &a1], 2, &[&a0, &a1])
            .verify_next(&v2)
            .unwrap();

        let mut nodes = [Node::new(), Node::new()];
        for node in &nodes {
            node.core.org(OrgCommand::Follow { org }).await.unwrap();
            let versions = vec![v1.signed.clone(), v2.signed.clone(), v3.signed.clone()];
            feed(node, frame(org, versions)).await;
            assert_eq!(node.core.org_show().await.unwrap().version, 3);
        }
        let rollback = v2.signed.clone();
        let fork = next(&v2, "another three", &[&a0, &a1, &a2], 2, &[&a1, &a2]);
        let k_minus_one = next(&v3, "four", &[&a0, &a1], 2, &[&a0]);
        let removed_admin = next(&v3, "four", &[&a0, &a1], 2, &[&a0, &a2]);
        let other_org = {
            let b = body("evil");
            let h = Header::first(vec![a2.public()], 1, now, now + DAY, &b);
            signed(&h, b, &[&a2])
        };
        for node in &nodes {
            for bad in [&rollback, &k_minus_one, &removed_admin, &fork, &other_org] {
                feed(node, frame(org, vec![bad.clone()])).await;
                let shown = node.core.org_show().await.unwrap();
                assert_eq!(shown.version, 3, "refused");
                assert_eq!(shown.name.as_deref(), Some("three"));
            }
            let shown = node.core.org_show().await.unwrap();
            let fork = shown.fork.expect("a fork is reported");
            assert!(fork.contains("compromised"), "{fork}");
            // A frame for another org changes nothing either.
            let answer = node
                .core
                .take_policy(node.device(), frame(OrgId([9; 16]), vec![other_org.clone()]))
                .await
                .unwrap();
            assert!(answer.is_none());
        }
        // Drafts a stranger signed (or nobody did) are not kept; an admin's is.
        let stranger = AdminKeys::generate();
        let junk = [
            next(&v3, "junk", &[&a0, &a1], 2, &[]),
            next(&v3, "junk", &[&a0, &a1], 2, &[&stranger]),
        ];
        let real = next(&v3, "four", &[&a0, &a1], 2, &[&a1]);
        for node in &nodes {
            let drafts: Vec<Signed> = junk.iter().cloned().chain([real.clone()]).collect();
            feed(
                node,
                PolicyFrame {
                    drafts,
                    ..frame(org, Vec::new())
                },
            )
            .await;
            let held = node.core.org_show().await.unwrap().drafts;
            assert_eq!(held.len(), 1);
            assert_eq!(held[0].signatures, 1);
        }
        // The answer to a peer that holds version 1 carries versions 2 and 3.
        let answer = nodes[0]
            .core
            .take_policy(
                nodes[1].device(),
                PolicyFrame {
                    have: 1,
                    ..frame(org, Vec::new())
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer.have, 3);
        assert_eq!(answer.versions, vec![v2.signed.clone(), v3.signed.clone()]);
        // A restart keeps version 3: a rollback stays impossible.
        let [first, second] = nodes;
        nodes = [first.restart(), second];
        assert_eq!(nodes[0].core.org_show().await.unwrap().version, 3);
        feed(&nodes[0], frame(org, vec![rollback.clone()])).await;
        assert_eq!(nodes[0].core.org_show().await.unwrap().version, 3);
    });
}

/// A version past its expiry puts the node in degraded mode (shown, never
/// silent): it grants nothing from the policy (the org's anchor is not named
/// a replicator of a new space); a fresh version takes it out, and the grant
/// follows.
#[test]
fn expiry_degrades_the_node_until_a_fresh_version_arrives() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = AdminKeys::generate();
        let now = outpost_node::clock::now_ms();
        let anchor = outpost_node::identity::DeviceKeys::generate().device_id();
        let body = |name: &str| {
            Policy {
                name: name.into(),
                anchors: vec![anchor],
                ..Policy::default()
            }
            .encode()
        };
        let b1 = body("acme");
        // Issued two days ago, expired yesterday.
        let h1 = Header::first(vec![admin.public()], 1, now - 2 * DAY, now - DAY, &b1);
        let org = h1.org;
        let v1 = signed(&h1, b1, &[&admin]).verify_first(&org).unwrap();
        let node = following(org, &v1).await;
        let shown = node.core.org_show().await.unwrap();
        assert_eq!(shown.version, 1);
        assert!(shown.degraded, "an expired policy is declared");
        let space = node
            .core
            .create_chat("room".into(), History::Shared, vec![], vec![])
            .await
            .unwrap();
        let replicators = || async { node.core.members(space).await.unwrap().replicators };
        assert!(replicators().await.is_empty(), "no grant while degraded");
        let b2 = body("acme");
        let h2 = Header::next(&v1, vec![admin.public()], 1, now, now + 90 * DAY, &b2);
        feed(&node, frame(org, vec![signed(&h2, b2, &[&admin])])).await;
        let shown = node.core.org_show().await.unwrap();
        assert_eq!(shown.version, 2);
        assert!(!shown.degraded, "a fresh version ends degraded mode");
        assert_eq!(replicators().await, vec![anchor], "the anchor replicates the space now");
    });
}

/// What anyone can send without admin keys changes nothing: a bad signature
/// planted under an admin's key does not block that admin's real one, and an
/// unsigned header with a used version number is no fork.
#[test]
fn planted_signatures_and_unsigned_forks_change_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let [a0, a1] = [(); 2].map(|_| AdminKeys::generate());
        let now = outpost_node::clock::now_ms();
        let b1 = body("acme");
        let h1 = Header::first(vec![a0.public(), a1.public()], 2, now, now + 90 * DAY, &b1);
        let org = h1.org;
        let v1 = signed(&h1, b1, &[&a0, &a1]).verify_first(&org).unwrap();
        let node = following(org, &v1).await;
        // An unsigned version 1 with another body: refused, and no fork reported.
        let fake = signed(
            &Header {
                body: *blake3::hash(&body("evil")).as_bytes(),
                ..h1.clone()
            },
            body("evil"),
            &[],
        );
        feed(&node, frame(org, vec![fake])).await;
        let shown = node.core.org_show().await.unwrap();
        assert_eq!((shown.version, shown.fork), (1, None));
        // A draft signed by a1, with garbage planted under a0's key.
        let draft = next(&v1, "two", &[&a0, &a1], 2, &[&a1]);
        let mut planted = draft.clone();
        let mut garbage = planted.signatures[0].clone();
        garbage.key = a0.public();
        planted.signatures.push(garbage);
        let send_draft = |d: Signed| PolicyFrame {
            drafts: vec![d],
            ..frame(org, Vec::new())
        };
        feed(&node, send_draft(planted)).await;
        let held = node.core.org_show().await.unwrap().drafts;
        assert_eq!((held.len(), held[0].signatures), (1, 1));
        // a0's real signature still counts: the draft is ready.
        let real = next(&v1, "two", &[&a0, &a1], 2, &[&a0]);
        assert_eq!(real.header, draft.header, "the same draft");
        feed(&node, send_draft(real)).await;
        let held = node.core.org_show().await.unwrap().drafts;
        assert_eq!(held[0].signatures, 2);
        assert!(held[0].ready);
    });
}
