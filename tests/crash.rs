//! Crash safety: a real node process under concurrent writers is killed with SIGKILL again and
//! again; after every restart each acknowledged message is there and the store opens cleanly.
//! A killed federated node catches up with what its peer took meanwhile.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::PASSWORD;
use guildhall_client::Client;

const KILLS: usize = 5;
const WRITERS: usize = 4;

struct NodeProcess {
    child: Child,
    base: String,
    /// Where other nodes reach it (`/ip4/…/p2p/…`).
    p2p: String,
}

fn start(data_dir: &std::path::Path) -> NodeProcess {
    start_with(data_dir, &[])
}

fn start_with(data_dir: &std::path::Path, args: &[&str]) -> NodeProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_guildhall"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(["--p2p-listen", "/ip4/127.0.0.1/tcp/0"])
        .args(["--voice-listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the guildhall binary starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut next_line = |prefix: &str| {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        line.trim()
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
            .to_owned()
    };
    let base = next_line("guildhall listening on ");
    let p2p = next_line("guildhall federating on ");
    NodeProcess { child, base, p2p }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_never_loses_an_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut node = start(&data);
    let (owner, _) = Client::register(&node.base, "owner", PASSWORD)
        .await
        .unwrap();
    let guild = owner.create_guild("Crash Test").await.unwrap();
    let channel = guild.first_text_channel().unwrap().id.clone();
    let token = owner.token().unwrap().to_owned();
    let mut acked: Vec<String> = Vec::new();

    for round in 0..KILLS {
        let client = Client::new(&node.base).with_token(&token);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let (client, guild, channel, tx) = (
                client.clone(),
                guild.id.clone(),
                channel.clone(),
                tx.clone(),
            );
            writers.push(tokio::spawn(async move {
                for i in 0.. {
                    let text = format!("round {round} writer {w} message {i}");
                    match client.send(&guild, &channel, &text).await {
                        Ok(m) => {
                            if tx.send(m.id).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        drop(tx);
        // Kill once the writers are well under way.
        let mut this_round = 0;
        while this_round < 40 + 10 * round {
            acked.push(rx.recv().await.expect("writers are running"));
            this_round += 1;
        }
        node.child.kill().unwrap();
        node.child.wait().unwrap();
        for w in writers {
            let _ = w.await;
        }
        while let Ok(id) = rx.try_recv() {
            acked.push(id);
        }

        node = start(&data);
        let client = Client::new(&node.base).with_token(&token);
        let mut stored = std::collections::HashSet::new();
        let mut page = guildhall_client::Page {
            limit: Some(100),
            ..Default::default()
        };
        loop {
            let batch = client.messages(&guild.id, &channel, &page).await.unwrap();
            let Some(oldest) = batch.first() else { break };
            page.before = Some(oldest.id.clone());
            stored.extend(batch.into_iter().map(|m| m.id));
        }
        let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} acknowledged messages lost",
            lost.len()
        );
    }
    assert!(acked.len() >= KILLS * 40);
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_federated_node_catches_up_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = start(&dir.path().join("a"));
    let b_data = dir.path().join("b");
    let mut b = start_with(&b_data, &["--peer", &a.p2p]);
    let (alice, _) = Client::register(&a.base, "alice", PASSWORD).await.unwrap();
    let (bob, _) = Client::register(&b.base, "bob", PASSWORD).await.unwrap();
    let guild = alice.create_guild("Survivors").await.unwrap();
    let channel = guild.first_text_channel().unwrap().id.clone();
    let invite = alice.create_invite(&guild.id, 0, 0).await.unwrap();
    bob.accept_invite(&invite.code).await.unwrap();
    let before = bob
        .send(&guild.id, &channel, "before the crash")
        .await
        .unwrap();

    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let mut sent = vec![before.id];
    for i in 0..20 {
        sent.push(
            alice
                .send(&guild.id, &channel, &format!("while B is down {i}"))
                .await
                .unwrap()
                .id,
        );
    }

    b = start_with(&b_data, &["--peer", &a.p2p]);
    let bob = Client::new(&b.base).with_token(bob.token().unwrap());
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let page = guildhall_client::Page {
            limit: Some(100),
            ..Default::default()
        };
        let held: Vec<String> = bob
            .messages(&guild.id, &channel, &page)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        if sent.iter().all(|id| held.contains(id)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B holds {} of {} messages after restarting",
            sent.iter().filter(|id| held.contains(id)).count(),
            sent.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for node in [&mut a, &mut b] {
        node.child.kill().unwrap();
        node.child.wait().unwrap();
    }
}
