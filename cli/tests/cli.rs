//! The `outpost` binary without a daemon: usage, identity files, clear errors.

use std::{os::unix::fs::PermissionsExt, process::Command};

fn outpost(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_outpost"))
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .expect("run outpost")
}

#[test]
fn init_creates_private_identity_once() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("node");
    let out = outpost(&home, &["init", "--name", "laptop"]);
    assert!(out.status.success());
    let device = String::from_utf8(out.stdout).unwrap();
    assert_eq!(device.trim().len(), 64);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&home), 0o700);
    assert_eq!(mode(&home.join("device.key")), 0o600);

    let again = outpost(&home, &["init"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let id: serde_json::Value = serde_json::from_slice(&outpost(&home, &["id", "--json"]).stdout).unwrap();
    assert_eq!(id["device_id"].as_str().unwrap(), device.trim());
    assert_eq!(id["daemon_running"], false);
    assert!(id["card"].as_str().unwrap().starts_with("opd1"));
    assert!(id["peer_id"].as_str().unwrap().starts_with("12D3KooW"));
}

#[test]
fn commands_without_daemon_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = outpost(dir.path(), &["status"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("daemon not running") && err.contains("outpost daemon"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
}

#[test]
fn missing_identity_and_bad_addresses_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = outpost(dir.path(), &["id"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("outpost init"));

    assert!(outpost(dir.path(), &["init"]).status.success());
    let out = outpost(dir.path(), &["daemon", "--peer", "not-an-address"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a multiaddr"));
}

#[test]
fn help_teaches() {
    let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["chat", "create", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--member") && help.contains("--replicator"), "{help}");
}
