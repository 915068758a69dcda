//! The `guildhall` binary as an operator uses it: config file, admin commands, clear errors.

use std::process::Command;

fn guildhall(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_guildhall"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("guildhall runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn admin_commands_work_on_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let (ok, out, err) = guildhall(&[
        "--data-dir",
        data,
        "admin",
        "create-user",
        "ada",
        "--password",
        "long enough pw",
    ]);
    assert!(ok, "{err}");
    assert!(out.starts_with("created ada with user id "), "{out}");
    let (ok, _, err) = guildhall(&[
        "--data-dir",
        data,
        "admin",
        "create-user",
        "ada",
        "--password",
        "long enough pw",
    ]);
    assert!(!ok);
    assert!(err.contains("username_taken"), "{err}");
    let (ok, _, err) = guildhall(&[
        "--data-dir",
        data,
        "admin",
        "create-user",
        "bo",
        "--password",
        "short",
    ]);
    assert!(!ok);
    assert!(err.contains("invalid_password"), "{err}");
    let (ok, out, _) = guildhall(&["--data-dir", data, "admin", "list-guilds"]);
    assert!(ok);
    assert!(out.is_empty());
    let unknown_guild = "ab".repeat(32);
    let (ok, _, err) = guildhall(&[
        "--data-dir",
        data,
        "admin",
        "create-invite",
        &unknown_guild,
        "--as-user",
        "ada",
    ]);
    assert!(!ok);
    assert!(err.contains("unknown_guild"), "{err}");
}

#[test]
fn the_node_key_persists_and_the_deny_list_is_edited_offline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let (ok, first, err) = guildhall(&["--data-dir", data, "admin", "peer-id"]);
    assert!(ok, "{err}");
    let (_, second, _) = guildhall(&["--data-dir", data, "admin", "peer-id"]);
    assert_eq!(first, second, "the node key is created once and kept");
    let peer = first.trim();
    assert!(
        peer.starts_with("12D3Koo"),
        "an ed25519 libp2p peer id: {peer}"
    );

    let (ok, out, err) = guildhall(&["--data-dir", data, "admin", "deny-peer", peer]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("denied {peer}"));
    let denied = std::fs::read_to_string(dir.path().join("data/denied-peers")).unwrap();
    assert_eq!(denied.trim(), peer);
    let (ok, _, _) = guildhall(&["--data-dir", data, "admin", "allow-peer", peer]);
    assert!(ok);
    let denied = std::fs::read_to_string(dir.path().join("data/denied-peers")).unwrap();
    assert!(denied.trim().is_empty());

    let (ok, _, err) = guildhall(&["--data-dir", data, "admin", "deny-peer", "not-a-peer"]);
    assert!(!ok);
    assert!(err.contains("invalid value"), "{err}");
}

#[test]
fn a_bad_config_file_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("guildhall.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nheartbeat_secs = 3\n").unwrap();
    let (ok, _, err) = guildhall(&["--config", config.to_str().unwrap(), "admin", "list-guilds"]);
    assert!(!ok);
    assert!(err.contains("heartbeat_secs"), "{err}");
    let (ok, _, err) = guildhall(&["--config", "/nonexistent/guildhall.toml"]);
    assert!(!ok);
    assert!(err.contains("cannot read"), "{err}");
}
