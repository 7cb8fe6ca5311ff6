//! `Succession` operations on real cores, judged against each node's own
//! verified policy chain: one naming a version a node does not hold waits and
//! is taken once the version arrives; one its version does not state (a forged
//! org's) is refused; a node that follows no org keeps it waiting.

mod inproc;

use inproc::{Node, deliver, served, stored};
use outpost_node::{
    control::{History, Role},
    core::{MemberChange, OrgCommand},
    identity::DeviceCert,
    ids::{DeviceId, SpaceId},
    org::{
        AdminKeys, Header, OrgId, Policy, PolicyFrame, Signed, Verified,
        body::{Department, MemberStatus, Offboarding, OrgMember, OrgRole},
    },
};

const DAY: u64 = 86_400_000;

fn member(id: &str, device: DeviceId) -> OrgMember {
    OrgMember {
        id: id.into(),
        name: id.into(),
        department: 0,
        title: String::new(),
        email: String::new(),
        phone: String::new(),
        head: false,
        role: OrgRole::Member,
        devices: vec![device],
        status: MemberStatus::Active,
    }
}

/// An org of one admin key: version 1 lists `members`; version 2 offboards the
/// first (and the members at `also`) with the second as successor (whose
/// certificate is `heir`).
fn org_offboarding(members: Vec<OrgMember>, heir: DeviceCert, also: &[usize]) -> (OrgId, Vec<Signed>) {
    let admin = AdminKeys::generate();
    let now = outpost_node::clock::now_ms();
    let v1 = Policy {
        name: "acme".into(),
        departments: vec![Department {
            name: "总部".into(),
            parent: None,
            hidden: false,
        }],
        members,
        ..Policy::default()
    };
    let mut v2 = v1.clone();
    for &i in std::iter::once(&0).chain(also) {
        v2.members[i].status = MemberStatus::Offboarded;
        v2.revoked.extend(v2.members[i].devices.clone());
        v2.offboardings.push(Offboarding {
            member: v2.members[i].id.clone(),
            successor: v2.members[1].id.clone(),
            leaving: v2.members[i].devices.clone(),
            successors: vec![heir],
        });
    }
    v2.check().unwrap();
    let (b1, b2) = (v1.encode(), v2.encode());
    let h1 = Header::first(vec![admin.public()], 1, now, now + 90 * DAY, &b1);
    let org = h1.org;
    let mut s1 = Signed::new(&h1, b1);
    s1.sign(&admin);
    let first: Verified = s1.clone().verify_first(&org).unwrap();
    let h2 = Header::next(&first, vec![admin.public()], 1, now + 1, now + 90 * DAY, &b2);
    let mut s2 = Signed::new(&h2, b2);
    s2.sign(&admin);
    (org, vec![s1, s2])
}

async fn follow(node: &Node, org: OrgId, versions: &[Signed]) {
    node.core.org(OrgCommand::Follow { org }).await.unwrap();
    let frame = PolicyFrame {
        org,
        have: 0,
        versions: versions.to_vec(),
        drafts: Vec::new(),
    };
    node.core.take_policy(node.device(), frame).await.unwrap();
}

async fn roles(node: &Node, space: SpaceId) -> Vec<(DeviceId, Role)> {
    let m = node.core.members(space).await.unwrap();
    m.members.iter().map(|m| (m.device, m.role)).collect()
}

#[test]
fn a_succession_waits_for_its_version_and_a_forged_one_is_refused() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let [bob, carol, erin, mallory, dave, nobody] = [(); 6].map(|_| Node::new());
        let (org, versions) = org_offboarding(
            vec![
                member("1001", bob.device()),
                member("1003", dave.device()),
                member("1002", carol.device()),
            ],
            dave.cert(),
            &[],
        );
        // Mallory's own org says Bob left with Mallory as successor.
        let (fake, fake_versions) = org_offboarding(
            vec![member("1001", bob.device()), member("1005", mallory.device())],
            mallory.cert(),
            &[],
        );

        let cards = [&carol, &erin, &mallory, &nobody].map(|n| n.cert().to_card()).to_vec();
        let space = bob
            .core
            .create_chat("room".into(), History::Shared, cards, vec![])
            .await
            .unwrap();
        for n in [&carol, &erin, &mallory, &nobody] {
            let ack = deliver(&bob, n, served(&bob, n, space).await).await;
            assert_eq!(ack.rejected, 0);
        }
        follow(&erin, org, &versions[..1]).await;
        follow(&mallory, fake, &fake_versions).await;

        // Carol holds version 2: her core hands Bob's place to Dave at once.
        let mut carol_events = carol.core.subscribe();
        follow(&carol, org, &versions).await;
        let succession = stored(&mut carol_events);
        assert_eq!(succession.len(), 1, "one succession operation");
        let after = roles(&carol, space).await;
        assert!(after.contains(&(dave.device(), Role::Owner)));
        assert!(!after.iter().any(|(d, _)| *d == bob.device()));

        // Erin holds version 1 only: the operation waits, then is taken.
        let before = roles(&erin, space).await;
        let ack = deliver(&carol, &erin, succession.clone()).await;
        assert_eq!((ack.stored, ack.pending, ack.rejected), (0, 1, 0));
        assert_eq!(roles(&erin, space).await, before);
        follow(&erin, org, &versions).await;
        assert_eq!(roles(&erin, space).await, after, "taken once version 2 arrived");

        // A node that follows no org cannot judge it: it waits, never refused.
        let ack = deliver(&carol, &nobody, succession).await;
        assert_eq!((ack.stored, ack.rejected), (0, 0));

        // Mallory's node made a succession naming her own org's version 2 as
        // soon as it held it: Erin, holding the real version 2, refuses it.
        let forged = served(&mallory, &erin, space).await;
        assert_eq!(forged.len(), 1, "mallory's succession");
        let ack = deliver(&mallory, &erin, forged).await;
        assert_eq!((ack.stored, ack.rejected), (0, 1), "{ack:?}");
        assert_eq!(
            roles(&erin, space).await,
            after,
            "the forged succession changed nothing"
        );
    });
}

/// The owner and the only admin leave in one version: the writer who stays
/// hands the room to the successor (a leaving admin manages nothing).
#[test]
fn a_writer_hands_over_when_every_manager_leaves() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let [bob, carol, erin, dave] = [(); 4].map(|_| Node::new());
        let (org, versions) = org_offboarding(
            vec![
                member("1001", bob.device()),
                member("1003", dave.device()),
                member("1002", carol.device()),
                member("1004", erin.device()),
            ],
            dave.cert(),
            &[3],
        );
        let cards = [&carol, &erin].map(|n| n.cert().to_card()).to_vec();
        let space = bob
            .core
            .create_chat("room".into(), History::Shared, cards, vec![])
            .await
            .unwrap();
        bob.core
            .change_members(space, MemberChange::SetRole(erin.device().to_string(), Role::Admin))
            .await
            .unwrap();
        deliver(&bob, &carol, served(&bob, &carol, space).await).await;
        assert!(roles(&carol, space).await.contains(&(erin.device(), Role::Admin)));

        follow(&carol, org, &versions).await;
        let after = roles(&carol, space).await;
        assert!(after.contains(&(dave.device(), Role::Owner)), "{after:?}");
        assert!(!after.iter().any(|(d, _)| *d == bob.device()));
    });
}
