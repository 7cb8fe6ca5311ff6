//! The policy chain's rules, each refused case a test (docs/protocol.md,
//! "Organisation policy").

use super::*;

const DAY: u64 = 86_400_000;

fn admins(n: usize) -> Vec<AdminKeys> {
    (0..n).map(|_| AdminKeys::generate()).collect()
}

fn publics(keys: &[AdminKeys]) -> Vec<AdminKey> {
    keys.iter().map(AdminKeys::public).collect()
}

fn body(name: &str) -> Vec<u8> {
    Policy {
        name: name.into(),
        ..Policy::default()
    }
    .encode()
}

/// Version 1 of an org with `keys` and `threshold`, signed by the first `signers`.
fn first(keys: &[AdminKeys], threshold: u16, signers: usize) -> (OrgId, Signed) {
    let b = body("acme");
    let header = Header::first(publics(keys), threshold, 1_000, 1_000 + 180 * DAY, &b);
    let mut signed = Signed::new(&header, b);
    for k in &keys[..signers] {
        signed.sign(k);
    }
    (header.org, signed)
}

/// The version after `prev` with `name`, the same admins, signed by `signers`.
fn next(prev: &Verified, name: &str, signers: &[&AdminKeys]) -> Signed {
    let b = body(name);
    let h = &prev.header;
    let header = Header::next(
        prev,
        h.admins.clone(),
        h.threshold,
        h.issued_at_ms + 1,
        h.expires_at_ms + 1,
        &b,
    );
    let mut signed = Signed::new(&header, b);
    for k in signers {
        signed.sign(k);
    }
    signed
}

#[test]
fn a_chain_of_versions_verifies_and_its_org_id_commits_to_the_first_admins() {
    let keys = admins(3);
    let (org, v1) = first(&keys, 2, 2);
    let v1 = v1.verify_first(&org).unwrap();
    assert_eq!(v1.policy().name, "acme");
    let v2 = next(&v1, "acme corp", &[&keys[1], &keys[2]]).verify_next(&v1).unwrap();
    assert_eq!(v2.header.version, 2);
    // Another org's id, or a version 1 whose admins were swapped, is refused.
    let (other, _) = first(&admins(3), 2, 0);
    assert_eq!(v1.signed.clone().verify_first(&other), Err(PolicyError::WrongOrg));
    let mallory = admins(2);
    let mut theirs = publics(&mallory);
    theirs.sort();
    let forged = Header {
        admins: theirs,
        ..v1.header.clone()
    };
    let mut forged = Signed::new(&forged, v1.signed.body.clone());
    forged.sign(&mallory[0]);
    forged.sign(&mallory[1]);
    assert_eq!(forged.verify_first(&org), Err(PolicyError::OrgId));
}

#[test]
fn too_few_signatures_or_a_stranger_s_are_refused() {
    let keys = admins(3);
    let (org, v1) = first(&keys, 2, 1);
    assert_eq!(
        v1.verify_first(&org),
        Err(PolicyError::UnderSigned { have: 1, need: 2 })
    );
    let (org, v1) = first(&keys, 2, 2);
    let v1 = v1.verify_first(&org).unwrap();
    // K − 1 admins and a stranger: still K − 1 valid admin signatures.
    let stranger = AdminKeys::generate();
    let v2 = next(&v1, "x", &[&keys[0], &stranger]);
    assert_eq!(v2.verify_next(&v1), Err(PolicyError::UnderSigned { have: 1, need: 2 }));
    // One admin's signature twice counts once; a signature over other bytes counts not.
    let mut v2 = next(&v1, "x", &[&keys[0]]);
    let again = v2.signatures[0].clone();
    v2.signatures.push(again);
    assert_eq!(
        v2.clone().verify_next(&v1),
        Err(PolicyError::UnderSigned { have: 1, need: 2 })
    );
    let other = next(&v1, "y", &[&keys[1]]);
    v2.signatures.push(other.signatures[0].clone());
    assert_eq!(v2.verify_next(&v1), Err(PolicyError::UnderSigned { have: 1, need: 2 }));
}

#[test]
fn rollback_fork_gap_and_a_wrong_previous_hash_are_refused() {
    let keys = admins(3);
    let (org, v1) = first(&keys, 2, 2);
    let v1 = v1.verify_first(&org).unwrap();
    let v2 = next(&v1, "two", &[&keys[0], &keys[1]]).verify_next(&v1).unwrap();
    // Rollback: version 1 again after version 2.
    assert_eq!(
        v1.signed.clone().verify_next(&v2),
        Err(PolicyError::Rollback { have: 2, got: 1 })
    );
    // Fork: another version 2, properly signed.
    let twin = next(&v1, "twin", &[&keys[1], &keys[2]]);
    assert_eq!(twin.verify_next(&v2), Err(PolicyError::Fork { version: 2 }));
    // The same version 2 again is no fork (a duplicate), reported as not newer.
    assert_eq!(
        v2.signed.clone().verify_next(&v2),
        Err(PolicyError::Rollback { have: 2, got: 2 })
    );
    // Gap: version 3 straight after version 1.
    let v3 = next(&v2, "three", &[&keys[0], &keys[1]]);
    assert_eq!(v3.clone().verify_next(&v1), Err(PolicyError::Gap { have: 1, got: 3 }));
    // A version 2 naming another previous version.
    let mut header = Header::next(&v1, v1.header.admins.clone(), 2, 5, 6, &body("z"));
    header.prev = [7; 32];
    let mut wrong = Signed::new(&header, body("z"));
    wrong.sign(&keys[0]);
    wrong.sign(&keys[1]);
    assert_eq!(wrong.verify_next(&v1), Err(PolicyError::Prev));
}

#[test]
fn a_removed_admin_signs_for_nothing_and_a_new_admin_set_must_consent() {
    let keys = admins(3);
    let (org, v1) = first(&keys, 2, 2);
    let v1 = v1.verify_first(&org).unwrap();
    // Version 2 replaces admin 2 by a newcomer, with K of the old and K of the new set.
    let newcomer = AdminKeys::generate();
    let new_set = vec![keys[0].public(), keys[1].public(), newcomer.public()];
    let b = body("rekeyed");
    let header = Header::next(&v1, new_set, 2, 10, 10 + DAY, &b);
    let mut v2 = Signed::new(&header, b.clone());
    v2.sign(&keys[2]);
    v2.sign(&keys[0]);
    // The old set signed (admins 0 and 2), the new one only once (admin 0).
    assert_eq!(
        v2.clone().verify_next(&v1),
        Err(PolicyError::UnderSigned { have: 1, need: 2 })
    );
    v2.sign(&newcomer);
    let v2 = v2.verify_next(&v1).unwrap();
    // Admin 2, removed, and one remaining admin cannot sign version 3.
    let v3 = next(&v2, "three", &[&keys[2], &keys[1]]);
    assert_eq!(v3.verify_next(&v2), Err(PolicyError::UnderSigned { have: 1, need: 2 }));
}

#[test]
fn a_tampered_body_or_header_is_refused() {
    let keys = admins(1);
    let (org, mut v1) = first(&keys, 1, 1);
    v1.body = body("evil");
    assert_eq!(v1.verify_first(&org), Err(PolicyError::Body));
    let (org, mut v1) = first(&keys, 1, 1);
    let mut header: Header = postcard::from_bytes(&v1.header).unwrap();
    header.expires_at_ms += DAY;
    v1.header = header.encode();
    assert_eq!(
        v1.verify_first(&org),
        Err(PolicyError::UnderSigned { have: 0, need: 1 })
    );
    // Trailing bytes after a header make it non-canonical.
    let (org, mut v1) = first(&keys, 1, 1);
    v1.header.push(0);
    assert_eq!(v1.verify_first(&org), Err(PolicyError::Decode));
}

#[test]
fn a_body_is_a_tree_with_unique_members() {
    use body::{Department, MemberStatus, OrgMember, OrgRole};
    let dept = |name: &str, parent| Department {
        name: name.into(),
        parent,
        hidden: false,
    };
    let member = |id: &str, department| OrgMember {
        id: id.into(),
        name: format!("name {id}"),
        department,
        title: String::new(),
        email: String::new(),
        phone: String::new(),
        head: false,
        role: OrgRole::Member,
        devices: Vec::new(),
        status: MemberStatus::Active,
    };
    let mut p = Policy {
        name: "acme".into(),
        departments: vec![dept("总部", None), dept("技术部", Some(0)), dept("前端组", Some(1))],
        members: vec![member("1", 2), member("2", 0)],
        ..Policy::default()
    };
    assert_eq!(Policy::decode(&p.encode()).unwrap(), p);
    assert_eq!(p.path(2), "总部/技术部/前端组");
    let before = p.clone();
    p.members.push(member("3", 1));
    p.members[0].department = 1;
    let diff = before.diff(&p);
    assert!(
        diff.contains(&"+ member 3 name 3 (总部/技术部)".to_string()),
        "{diff:?}"
    );
    assert!(diff.iter().any(|l| l.starts_with("~ member 1")), "{diff:?}");
    // A parent after its child (a cycle cannot be written), a duplicate id.
    let mut cyclic = before.clone();
    cyclic.departments[0].parent = Some(2);
    assert_eq!(Policy::decode(&cyclic.encode()), Err(PolicyError::Decode));
    let mut twice = before.clone();
    twice.members.push(member("1", 0));
    assert!(twice.check().unwrap_err().contains("listed twice"));
}

#[test]
fn a_subtree_is_its_root_and_what_is_below_it() {
    use super::body::within;
    assert!(within("总部/技术部", "总部/技术部"));
    assert!(within("总部/技术部/前端组", "总部/技术部"));
    assert!(
        !within("总部/技术部门", "总部/技术部"),
        "a longer name is another department"
    );
    assert!(!within("总部", "总部/技术部"));
}
