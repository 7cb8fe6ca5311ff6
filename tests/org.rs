//! The org policy between daemon processes.
//!
//! Alice and Bob are the admins of an org (2 of 2 sign). Carol's node follows
//! the org and is connected to Bob only: every version reaches her through an
//! ordinary peer, with no anchor. Version 1 is drafted by Alice, signed by Bob
//! on his device and published; version 2 renames the org and revokes a
//! device. An under-signed draft does not publish, an admin does not sign two
//! drafts of one version, and a restart keeps the highest version.

mod common;

use std::time::Duration;

use common::{
    Node,
    org::{org, org_of_one, publish, version},
    wait_until,
};

const CONVERGE: Duration = Duration::from_secs(60);

/// The id of the one draft of `version` that `node` holds, once it has
/// `signatures` of them.
fn draft(node: &Node, version: u64, signatures: u64) -> String {
    wait_until(
        CONVERGE,
        &format!("a draft of version {version} with {signatures} signatures"),
        || {
            let o = org(node)?;
            o["drafts"].as_array()?.iter().find_map(|d| {
                (d["version"] == version && d["signatures"].as_u64()? >= signatures)
                    .then(|| d["id"].as_str().unwrap().to_string())
            })
        },
    )
}

#[test]
fn admins_sign_versions_that_reach_every_node_through_peers() {
    let root = tempfile::tempdir().unwrap();
    let mut alice = Node::init(root.path(), "alice");
    let mut bob = Node::init(root.path(), "bob");
    let mut carol = Node::init(root.path(), "carol");
    alice.start(&[]);
    bob.start(&[alice.addr()]);
    carol.start(&[bob.addr()]);

    let bob_key = bob.json(&["org", "keygen", "--json"])["admin_key"]
        .as_str()
        .unwrap()
        .to_string();
    // A wrong count of admins is caught before anything is made.
    let wrong = alice.cli(&[
        "org",
        "init",
        "--name",
        "acme",
        "--admins",
        "3",
        "--admin",
        &bob_key,
        "--threshold",
        "2",
    ]);
    assert_eq!(
        wrong.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("outpost org keygen"));

    let created = alice.json(&[
        "org",
        "init",
        "--name",
        "acme",
        "--admins",
        "2",
        "--admin",
        &bob_key,
        "--threshold",
        "2",
        "--json",
    ]);
    let org_id = created["org"].as_str().unwrap().to_string();
    assert_eq!(created["version"], 0, "2 of 2 must sign version 1 first");
    for node in [&bob, &carol] {
        node.json(&["org", "follow", &org_id, "--json"]);
    }
    let v1 = draft(&bob, 1, 1);
    // Alice alone cannot publish version 1.
    let early = alice.cli(&["org", "publish", &v1]);
    assert_eq!(early.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&early.stderr).contains("1 valid signatures of the admins, 2 needed"));
    bob.json(&["org", "sign", &v1, "--json"]);
    let v1_signed = draft(&alice, 1, 2);
    assert_eq!(v1_signed, v1);
    let published = alice.json(&["org", "publish", &v1, "--json"]);
    assert_eq!(published["version"], 1);
    assert_eq!(published["name"], "acme");
    for node in [&bob, &carol] {
        wait_until(CONVERGE, "version 1 to reach every node", || {
            (version(node) == 1).then_some(())
        });
    }

    // Version 2: Bob proposes on his device, Alice signs, Bob publishes; Carol,
    // who only talks to Bob, gets it from him.
    let lost = "ab".repeat(32);
    let proposed = bob.json(&["org", "propose", "--name", "acme corp", "--revoke", &lost, "--json"]);
    let d2 = proposed["drafts"][0]["id"].as_str().unwrap().to_string();
    let diff: Vec<String> = proposed["drafts"][0]["diff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    assert!(diff.iter().any(|l| l.contains("acme corp")), "{diff:?}");
    assert!(
        diff.iter().any(|l| l.contains(&format!("revoke device {lost}"))),
        "{diff:?}"
    );
    draft(&alice, 2, 1);
    alice.json(&["org", "sign", &d2, "--json"]);
    draft(&bob, 2, 2);
    bob.json(&["org", "publish", &d2, "--json"]);
    for node in [&alice, &carol] {
        wait_until(CONVERGE, "version 2 to reach every node", || {
            (version(node) == 2).then_some(())
        });
    }
    let shown = org(&carol).unwrap();
    assert_eq!(shown["name"], "acme corp");
    assert_eq!(shown["revoked"][0], lost.as_str());
    assert_eq!(shown["degraded"], false);

    // An admin signs one draft per version: Alice proposes version 3, then
    // cannot propose (sign) a different one.
    alice.json(&["org", "propose", "--name", "three", "--json"]);
    let second = alice.cli(&["org", "propose", "--name", "other three"]);
    assert_eq!(
        second.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(String::from_utf8_lossy(&second.stderr).contains("already signed another draft"));

    // Not an admin: Carol cannot propose.
    let stranger = carol.cli(&["org", "propose", "--name", "mine"]);
    assert_eq!(stranger.status.code(), Some(4));

    // A restart keeps the highest verified version.
    carol.stop();
    carol.restart();
    assert_eq!(version(&carol), 2);
}

/// `org revoke` with a threshold of 1: once a node holds the version, it opens
/// no session with the revoked device, and the owner removes it from the room
/// (a new key epoch without it). It reads nothing written afterwards.
#[test]
fn a_revoked_device_gets_no_session_and_leaves_every_space() {
    let root = tempfile::tempdir().unwrap();
    let mut alice = Node::init(root.path(), "alice");
    let mut bob = Node::init(root.path(), "bob");
    let mut carol = Node::init(root.path(), "carol");
    alice.start(&[]);
    bob.start(&[alice.addr()]);
    carol.start(&[alice.addr(), bob.addr()]);
    let org_id = org_of_one(&alice);
    for node in [&bob, &carol] {
        node.json(&["org", "follow", &org_id, "--json"]);
        wait_until(CONVERGE, "version 1 everywhere", || (version(node) == 1).then_some(()));
    }
    let space = alice.create_chat("ops", &[&bob, &carol], &[]);
    alice.send(&space, "before");
    for node in [&bob, &carol] {
        wait_until(CONVERGE, "the room everywhere", || {
            (node.log_texts(&space) == ["before"]).then_some(())
        });
    }
    let epoch = alice.space_status(&space).unwrap()["epoch"].clone();

    let lost = carol.device_id();
    let revoked = alice.json(&["org", "revoke", &lost, "--json"]);
    assert_eq!(revoked["version"], 2);
    assert_eq!(revoked["revoked"][0], lost.as_str());
    // Bob learns the version from Alice; both drop Carol and refuse her redials.
    wait_until(CONVERGE, "Bob to hold version 2", || (version(&bob) == 2).then_some(()));
    let peers_of = |node: &Node| -> Vec<String> {
        node.json(&["status", "--json"])["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["device"].as_str().unwrap().to_string())
            .collect()
    };
    for node in [&alice, &bob] {
        wait_until(CONVERGE, "no session with the revoked device", || {
            (!peers_of(node).contains(&lost)).then_some(())
        });
    }
    // The owner removed Carol: a new epoch, and Bob writes under it.
    let status = wait_until(CONVERGE, "the room to move to a new epoch", || {
        let s = alice.space_status(&space)?;
        (s["epoch"] != epoch).then_some(s)
    });
    assert_eq!(status["role"], "member");
    let members = alice.json(&["space", "members", &space, "--json"]);
    assert!(!members.to_string().contains(&lost), "{members}");
    bob.send(&space, "after");
    wait_until(CONVERGE, "Alice to read Bob", || {
        (alice.log_texts(&space).len() == 2).then_some(())
    });
    // Carol keeps dialling (her static peers): the sessions are refused, so the
    // new message never reaches her.
    wait_until(CONVERGE, "a redial by Carol to be refused", || {
        alice
            .logs()
            .contains("refused a session with a device the org revoked")
            .then_some(())
    });
    assert_eq!(carol.log_texts(&space), ["before"]);
    for node in [&mut alice, &mut bob, &mut carol] {
        node.stop();
    }
    let (_, after) = common::plaintext_reachable(&alice.home, &carol.home, &space);
    assert_eq!(
        after, 0,
        "nothing written after the removal opens for the revoked device"
    );
}

/// `org import` and the directory: a chart read from a CSV (a dry run first,
/// a bad file refused with its rows), a hidden department, and `dir search` /
/// `dir dept` answering each asking user with what it may see.
#[test]
fn an_imported_chart_answers_the_directory_within_visibility() {
    let root = tempfile::tempdir().unwrap();
    let mut alice = Node::init(root.path(), "alice");
    let mut bob = Node::init(root.path(), "bob");
    let mut carol = Node::init(root.path(), "carol");
    alice.start(&[]);
    bob.start(&[alice.addr()]);
    carol.start(&[alice.addr()]);
    let org_id = org_of_one(&alice);

    let chart = root.path().join("chart.csv");
    std::fs::write(
        &chart,
        "工号,姓名,部门,职位,邮箱,手机,负责人
1001,张伟,总部/技术部/前端组,前端工程师,zhang@example.cn,13800138000,否
1002,李娜,总部/法务部,法务经理,li@example.cn,13800138001,是
1003,Wang Fang,总部/市场部,Marketing lead,,,
1004,赵敏,总部/法务部/合同组,律师,,,
",
    )
    .unwrap();
    let dry = alice.json(&["org", "import", chart.to_str().unwrap(), "--dry-run", "--json"]);
    assert_eq!(dry["version"], 1, "a dry run changes nothing");
    let diff = dry["dry_run"].as_array().unwrap();
    assert_eq!(
        diff.iter()
            .filter(|l| l.as_str().unwrap().starts_with("+ member"))
            .count(),
        4
    );

    let bad = root.path().join("bad.csv");
    std::fs::write(&bad, "工号,姓名,部门,手机\n1,A,总部,12ab\n1,B,总部,\n").unwrap();
    let refused = alice.cli(&["org", "import", bad.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("row 2, column D (phone)"), "{stderr}");
    assert!(
        stderr.contains("row 3, column A (member id): member id \"1\" is already used on row 2"),
        "{stderr}"
    );
    assert_eq!(version(&alice), 1);

    let imported = alice.json(&["org", "import", chart.to_str().unwrap(), "--json"]);
    assert_eq!(imported["version"], 2);
    assert_eq!(imported["members"], 4);
    // 法务部 is hidden; Bob's device is 李娜's, Carol's is Wang Fang's.
    let (bob_device, carol_device) = (bob.device_id(), carol.device_id());
    publish(
        &alice,
        &[
            "--hide",
            "总部/法务部",
            "--device",
            &format!("1002={bob_device}"),
            "--device",
            &format!("1003={carol_device}"),
        ],
    );
    for node in [&bob, &carol] {
        node.json(&["org", "follow", &org_id, "--json"]);
        wait_until(CONVERGE, "version 3 everywhere", || (version(node) == 3).then_some(()));
    }
    let names = |node: &Node, args: &[&str]| -> Vec<String> {
        let mut all = vec!["dir"];
        all.extend_from_slice(args);
        all.push("--json");
        let mut names: Vec<String> = node
            .json(&all)
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    // Carol, outside 法务部, does not see it at all.
    assert!(names(&carol, &["search", "法务"]).is_empty());
    assert!(names(&carol, &["search", "李"]).is_empty());
    assert_eq!(
        names(&carol, &["search", "前端"]),
        ["张伟"],
        "part of a department name"
    );
    assert_eq!(
        names(&carol, &["search", "fang"]),
        ["Wang Fang"],
        "part of a name, any case"
    );
    let hidden = carol.cli(&["dir", "dept", "总部/法务部"]);
    assert_eq!(
        hidden.status.code(),
        Some(5),
        "a hidden department is not found from outside"
    );
    // Bob, inside it, sees it and its sub-department; the admin sees everything.
    assert_eq!(names(&bob, &["search", "法务"]), ["李娜", "赵敏"]);
    assert_eq!(names(&bob, &["dept", "总部/法务部"]), ["李娜", "赵敏"]);
    assert_eq!(names(&alice, &["dept", "总部"]).len(), 4);
    assert_eq!(names(&alice, &["search", "律师"]), ["赵敏"], "by title");
}

/// `org invite` / `org enroll`: a fresh device enrolls with a ticket (which also
/// tells it the org to trust), is listed under its member in the next version
/// and sees what that member sees; the ticket is good once.
#[test]
fn a_device_enrolls_with_an_invite_ticket_once() {
    let root = tempfile::tempdir().unwrap();
    let mut alice = Node::init(root.path(), "alice");
    let mut bob = Node::init(root.path(), "bob");
    let mut mallory = Node::init(root.path(), "mallory");
    alice.start(&[]);
    // Bob and Mallory know no peer: the ticket says where the admin is.
    bob.start(&[]);
    mallory.start(&[]);
    org_of_one(&alice);
    let chart = root.path().join("chart.csv");
    std::fs::write(&chart, "工号,姓名,部门\n1001,张伟,总部/技术部\n1002,李娜,总部/法务部\n").unwrap();
    alice.json(&["org", "import", chart.to_str().unwrap(), "--json"]);
    assert_eq!(publish(&alice, &["--hide", "总部/法务部"]), 3);

    let unknown = alice.cli(&["org", "invite", "9999"]);
    assert_eq!(unknown.status.code(), Some(5), "no such member");
    let ticket = alice.json(&["org", "invite", "1002", "--json"])["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ticket.starts_with("opo1"));
    let enrolled = bob.json(&["org", "enroll", &ticket, "--json"]);
    assert_eq!(enrolled["accepted"]["version"], 4);
    assert_eq!(enrolled["accepted"]["published"], true);
    // Bob follows the ticket's org, gets version 4 from Alice, and as 李娜 sees
    // the hidden department.
    wait_until(CONVERGE, "Bob to hold version 4", || (version(&bob) == 4).then_some(()));
    let seen = bob.json(&["dir", "search", "法务", "--json"]);
    assert_eq!(seen[0]["name"], "李娜");
    // Asking again from the same device (a lost answer) proposes nothing new.
    let again = bob.json(&["org", "enroll", &ticket, "--json"]);
    assert_eq!(again["accepted"]["version"], 4);
    assert_eq!(version(&alice), 4);
    // Used once: Mallory, with the same ticket, is refused; a damaged ticket is bad input.
    let again = mallory.cli(&["org", "enroll", &ticket]);
    assert_eq!(again.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&again.stderr).contains("used already"));
    let damaged = mallory.cli(&["org", "enroll", "opo1zzzz"]);
    assert_eq!(damaged.status.code(), Some(2));
    assert_eq!(version(&alice), 4, "the refused enrollment changed nothing");
}

/// The org's space rules, applied by each node to its own actions: with
/// `--members-create-spaces false` a member's node creates no space, and a
/// space admin who is no org admin adds no device outside the org until the
/// policy allows it.
#[test]
fn the_space_rules_bind_members_who_are_not_org_admins() {
    let root = tempfile::tempdir().unwrap();
    let mut alice = Node::init(root.path(), "alice");
    let mut bob = Node::init(root.path(), "bob");
    let mut carol = Node::init(root.path(), "carol");
    alice.start(&[]);
    bob.start(&[alice.addr()]);
    carol.start(&[alice.addr()]);
    let org_id = org_of_one(&alice);
    let chart = root.path().join("chart.csv");
    std::fs::write(&chart, "id,name,department\n1001,Bob,HQ\n").unwrap();
    alice.json(&["org", "import", chart.to_str().unwrap(), "--json"]);
    let bob_device = bob.device_id();
    let v = publish(
        &alice,
        &[
            "--device",
            &format!("1001={bob_device}"),
            "--members-create-spaces",
            "false",
        ],
    );
    bob.json(&["org", "follow", &org_id, "--json"]);
    wait_until(CONVERGE, "Bob to hold the rules", || (version(&bob) == v).then_some(()));

    let refused = bob.cli(&["chat", "create", "mine"]);
    assert_eq!(refused.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("only admins create spaces"));
    // Alice (an org admin) creates one and makes Bob its admin.
    let space = alice.create_chat("ops", &[&bob], &[]);
    alice.json(&["space", "role", &space, &bob_device, "admin", "--json"]);
    wait_until(CONVERGE, "Bob to be the room's admin", || {
        let m = bob.try_json(&["space", "members", &space, "--json"]).ok()?;
        m["members"]
            .as_array()?
            .iter()
            .any(|x| x["device"] == bob_device.as_str() && x["role"] == "admin")
            .then_some(())
    });
    let carol_card = carol.card();
    let outsider = bob.cli(&["space", "invite", &space, &carol_card]);
    assert_eq!(outsider.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&outsider.stderr).contains("not in the org"));
    let v = publish(&alice, &["--invite-outsiders", "true"]);
    wait_until(CONVERGE, "Bob to hold the new rules", || {
        (version(&bob) == v).then_some(())
    });
    bob.json(&["space", "invite", &space, &carol_card, "--json"]);
}
