//! Every load scenario once at tiny size, so the benchmark cannot rot unnoticed.

use std::process::Command;

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_guildhall-loadgen"))
        .args(args)
        .output()
        .expect("loadgen runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    let summary: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("the last line is not the run's JSON ({e}): {last}"));
    assert_eq!(summary["scenario"], args[0], "{last}");
    assert!(
        summary["results"]
            .as_object()
            .is_some_and(|r| !r.is_empty()),
        "{last}"
    );
    stdout
}

#[test]
fn latency() {
    assert!(run(&["latency", "--count", "20"]).contains("delivered to 1 listener: n=20"));
}

#[test]
fn throughput() {
    assert!(
        run(&["throughput", "--clients", "4", "--count", "1"])
            .contains("acknowledged after commit")
    );
}

#[test]
fn fanout() {
    assert!(
        run(&["fanout", "--clients", "5", "--rate", "20", "--count", "1"])
            .contains("100 of 100 deliveries")
    );
}

#[test]
fn restart() {
    let out = run(&["restart", "--count", "200", "--clients", "4"]);
    assert!(out.contains("reopen with 200 stored messages"), "{out}");
    assert!(out.contains("history page of 50 before 200 ids"), "{out}");
}

#[test]
fn members() {
    let out = run(&["members", "--count", "50", "--clients", "30"]);
    assert!(out.contains("10 members: 50 sequential sends"), "{out}");
    assert!(out.contains("30 members: 50 sequential sends"), "{out}");
}

#[test]
fn idle() {
    assert!(
        run(&["idle", "--clients", "3", "--count", "0"]).contains("3 idle gateway sessions open")
    );
}

#[test]
fn remote() {
    assert!(
        run(&["remote", "--count", "20"])
            .contains("send on node A → delivered to a client on node B: n=20")
    );
}

#[test]
fn catchup() {
    let out = run(&["catchup", "--count", "200", "--clients", "4"]);
    assert!(
        out.contains("catch-up of 200 ops missed in a partition"),
        "{out}"
    );
    assert!(
        out.contains("join a guild with 200 messages of history"),
        "{out}"
    );
}

#[test]
fn voice() {
    let out = run(&["voice", "--clients", "4", "--count", "1"]);
    assert!(out.contains("voice: 4 participants in rooms of 4"), "{out}");
    assert!(out.contains("voice frame, peer → SFU → peer"), "{out}");
}

#[test]
fn attack() {
    let out = run(&["attack", "--count", "20"]);
    assert!(
        out.contains("flood of 20 leaves and bans signed by strangers: attacker blocked"),
        "{out}"
    );
    assert!(out.contains("after the parked ops"), "{out}");
}
