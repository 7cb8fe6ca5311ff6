//! Org helpers shared by the daemon tests.

use serde_json::Value;

use super::Node;

pub fn org(node: &Node) -> Option<Value> {
    node.try_json(&["org", "show", "--json"]).ok()
}

pub fn version(node: &Node) -> u64 {
    org(node).and_then(|o| o["version"].as_u64()).unwrap_or(0)
}

/// Makes `admin` the one admin of a new org (a threshold of 1: version 1 is
/// published at once); returns the org id.
pub fn org_of_one(admin: &Node) -> String {
    let created = admin.json(&["org", "init", "--name", "acme", "--threshold", "1", "--json"]);
    assert_eq!(created["version"], 1, "a threshold of 1 publishes at once");
    created["org"].as_str().unwrap().to_string()
}

/// `org propose ARGS` on `admin`, then publishes that draft; returns the version.
pub fn publish(admin: &Node, args: &[&str]) -> u64 {
    let mut all = vec!["org", "propose"];
    all.extend_from_slice(args);
    all.push("--json");
    let draft = admin.json(&all)["drafts"][0]["id"].as_str().unwrap().to_string();
    admin.json(&["org", "publish", &draft, "--json"])["version"]
        .as_u64()
        .unwrap()
}

/// One member of a test org: its member id, its node (whose device the
/// policy lists under it) and its department path.
pub struct Member<'a> {
    pub id: &'a str,
    pub node: &'a Node,
    pub department: &'a str,
}

/// An org of one admin (`admin`) whose chart lists `members` with their
/// devices (versions 1 to 3); every member's node follows it. Returns the org
/// id.
pub fn org_with_members(admin: &Node, chart: &std::path::Path, members: &[Member<'_>]) -> String {
    let org = org_of_one(admin);
    for m in members {
        let out = m.node.cli(&["org", "follow", &org]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    write_chart(chart, members);
    let imported = admin.json(&["org", "import", chart.to_str().unwrap(), "--json"]);
    assert_eq!(imported["version"], 2);
    let listed: Vec<String> = members
        .iter()
        .map(|m| format!("{}={}", m.id, m.node.device_id()))
        .collect();
    let args: Vec<&str> = listed.iter().flat_map(|l| ["--device", l.as_str()]).collect();
    assert_eq!(publish(admin, &args), 3);
    org
}

/// Writes a chart CSV of `members` (id, name = node name, department).
pub fn write_chart(chart: &std::path::Path, members: &[Member<'_>]) {
    let mut csv = String::from("工号,姓名,部门\n");
    for m in members {
        csv.push_str(&format!("{},{},{}\n", m.id, m.node.name, m.department));
    }
    std::fs::write(chart, csv).unwrap();
}
