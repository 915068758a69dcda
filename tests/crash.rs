//! Crash safety: a real node process under concurrent writers is killed with SIGKILL again and
//! again; after every restart each acknowledged message is there and the store opens cleanly.

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
}

fn start(data_dir: &std::path::Path) -> NodeProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_guildhall"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(["--p2p-listen", "/ip4/127.0.0.1/tcp/0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the guildhall binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("guildhall listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    NodeProcess { child, base }
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
