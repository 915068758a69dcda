//! The attack scenario: a stranger's node floods a guild held by a victim node, whose member Bob
//! is on a second node. Per flood: how it ended (refused and the attacker blocked, or held
//! within a cap), the victim's memory before and after, and an honest message's delivery from
//! the victim to Bob's node afterwards.
//!
//! The victim runs in this process, or is a real `guildhall` binary (`--server`, `--node-pid`,
//! `--peer`; `examples/loadgen/attack.sh` starts one), so that its memory is its own and not
//! the attacker's queue of what it has yet to send.

use std::sync::Arc;
use std::time::{Duration, Instant};

use guildhall_client::{Client, Gateway};
use guildhall_gateway::Node;
use guildhall_net::stranger::Stranger;
use guildhall_net::{Multiaddr, NetConfig, NetHandle, NodeKey, PeerId};
use guildhall_proto::body::Body;
use guildhall_proto::id::{GuildId, Keypair, OpId, sha256};

use crate::federation::{FedNode, fed_node, fed_node_dialing, user};
use crate::{procfs, record};

/// Where the victim is: its REST base, libp2p address and process.
pub struct Victim {
    pub base: String,
    pub addr: Multiaddr,
    pub pid: u32,
}

pub async fn attack(victim: Option<Victim>, count: u64) {
    let local = match victim {
        Some(_) => None,
        None => Some(fed_node(&[]).await),
    };
    let victim = victim.unwrap_or_else(|| {
        let node = local.as_ref().expect("an in-process victim");
        Victim {
            base: node.base.clone(),
            addr: node.addr.clone(),
            pid: std::process::id(),
        }
    });
    let bob_node = fed_node_dialing(std::slice::from_ref(&victim.addr)).await;
    let alice = Client::register(&victim.base, "alice", "load generator")
        .await
        .expect("register on the victim")
        .0;
    let guild = alice.create_guild("under attack").await.expect("guild");
    let gid: GuildId = guild.id.parse().expect("guild id");
    let channel = guild.first_text_channel().expect("channel").id.clone();
    let invite = alice.create_invite(&guild.id, 0, 0).await.expect("invite");
    let bob = user(&bob_node, "bob").await;
    bob.accept_invite(&invite.code).await.expect("join");
    let honest = Honest {
        alice,
        bob,
        guild: guild.id.clone(),
        channel,
    };
    honest.check("before any flood").await;

    let strangers = flood(&victim, &bob_node, gid, count, |n, on_top| {
        let key = throwaway_key(n);
        let body = if n % 2 == 0 {
            Body::Leave
        } else {
            Body::Ban {
                member: key.user_id(),
                cutoff: 0,
                reason: String::new(),
            }
        };
        on_top(&key, body)
    })
    .await;
    strangers.print("leaves and bans signed by strangers");
    honest.check("after the strangers' ops").await;

    let content = "😀".repeat(guildhall_proto::limits::MAX_CONTENT_CHARS);
    let parked = flood(&victim, &bob_node, gid, count, |n, _| {
        parked_op(&bob_node.node, gid, n, &content)
    })
    .await;
    parked.print("16 KB messages citing a guild-state op nobody has");
    honest.check("after the parked ops").await;
}

/// Alice on the victim, Bob on the other node: does a message still get through?
struct Honest {
    alice: Client,
    bob: Client,
    guild: String,
    channel: String,
}

impl Honest {
    async fn check(&self, when: &str) {
        let mut listen = Gateway::connect(&self.bob).await.expect("Bob's gateway");
        let started = Instant::now();
        let sent = self
            .alice
            .send(&self.guild, &self.channel, when)
            .await
            .expect("Alice sends");
        let deadline = started + Duration::from_secs(30);
        let delivered = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match listen.wait_for("MESSAGE_CREATE", left).await {
                Ok(d) if d.data["id"] == sent.id => break true,
                Ok(_) => {}
                Err(_) => break false,
            }
        };
        if delivered {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            record(&format!("honest_delivery_ms {when}"), ms);
            println!("honest message from the victim to Bob's node {when}: {ms:.1} ms");
        } else {
            record(
                &format!("honest_delivery_ms {when}"),
                serde_json::Value::Null,
            );
            println!("honest message from the victim to Bob's node {when}: NOT delivered in 30 s");
        }
    }
}

struct Flood {
    sent: u64,
    blocked_after: Option<Duration>,
    rss_before: f64,
    rss_after: f64,
}

impl Flood {
    fn print(&self, what: &str) {
        let outcome = match self.blocked_after {
            Some(t) => format!("attacker blocked after {:.2} s", t.as_secs_f64()),
            None => "attacker still connected".into(),
        };
        record(&format!("rss_mib_before {what}"), self.rss_before);
        record(&format!("rss_mib_after {what}"), self.rss_after);
        println!(
            "flood of {} {what}: {outcome}; victim RSS {:.1} → {:.1} MiB",
            self.sent, self.rss_before, self.rss_after
        );
    }
}

type OnTop<'a> = &'a dyn Fn(&Keypair, Body) -> Vec<u8>;

/// A new attacker node dials the victim and publishes `count` ops made by `craft` (given a way
/// to sign a body on top of the guild's heads), then strangers' ops until the victim blocks it:
/// pushes from one peer are judged in order, so by then the victim has judged the whole flood.
async fn flood(
    victim: &Victim,
    honest_peer: &FedNode,
    gid: GuildId,
    count: u64,
    craft: impl Fn(u64, OnTop<'_>) -> Vec<u8>,
) -> Flood {
    let mut config = NetConfig::new("/ip4/127.0.0.1/tcp/0".parse().expect("an address"));
    config.bootstrap = vec![victim.addr.clone()];
    let stranger = Arc::new(Stranger::new(gid));
    let net = guildhall_net::start(config, NodeKey::generate_ed25519(), stranger)
        .await
        .expect("the attacker's swarm");
    net.serve(gid);
    let victim_id =
        guildhall_net::peer_of(&victim.addr).expect("the victim's address ends in /p2p/<id>");
    wait_until("the attacker is connected to the victim", async || {
        net.peers_entitled(gid).await.contains(&victim_id)
    })
    .await;
    let rss_before = procfs::rss_mib(&victim.pid.to_string());
    let on_top = |key: &Keypair, body: Body| stranger_op(&honest_peer.node, gid, key, body);
    let started = Instant::now();
    for n in 0..count {
        net.publish(gid, craft(n, &on_top));
    }
    let mut n = count;
    let blocked = wait_blocked(&net, victim_id, || {
        n += 1;
        net.publish(gid, on_top(&throwaway_key(n), Body::Leave));
    })
    .await;
    Flood {
        sent: count,
        blocked_after: blocked.then(|| started.elapsed()),
        rss_before,
        rss_after: procfs::rss_mib(&victim.pid.to_string()),
    }
}

/// Calls `nudge` every 100 ms until the victim is no longer connected (true), or 120 s pass.
async fn wait_blocked(net: &NetHandle, victim: PeerId, mut nudge: impl FnMut()) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if !net.peers().await.contains(&victim) {
            return true;
        }
        nudge();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn throwaway_key(n: u64) -> Keypair {
    let mut secret = [0x5a; 32];
    secret[..8].copy_from_slice(&n.to_le_bytes());
    Keypair::from_secret(secret)
}

/// An op by `key` on top of the guild as `node` holds it.
fn stranger_op(node: &Arc<Node>, gid: GuildId, key: &Keypair, body: Body) -> Vec<u8> {
    let g = node.guild(&gid).expect("the honest peer holds the guild");
    let g = g.lock().expect("guild lock");
    let env = g.next_envelope(key.user_id(), guildhall_gateway::node::now_ms(), body);
    env.sign(key).expect("signs").encode()
}

/// A message citing a guild-state op nobody has: it can only wait for it.
fn parked_op(node: &Arc<Node>, gid: GuildId, n: u64, content: &str) -> Vec<u8> {
    let key = throwaway_key(n);
    let g = node.guild(&gid).expect("the honest peer holds the guild");
    let channel = g
        .lock()
        .expect("guild lock")
        .state()
        .channels
        .keys()
        .next()
        .copied()
        .expect("a channel");
    let mut env = g.lock().expect("guild lock").next_envelope(
        key.user_id(),
        guildhall_gateway::node::now_ms(),
        Body::MessageCreate {
            channel,
            content: content.into(),
            reply_to: None,
        },
    );
    env.deps = vec![OpId(sha256(&[&n.to_le_bytes()]))];
    env.sign(&key).expect("signs").encode()
}
