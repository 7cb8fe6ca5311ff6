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
