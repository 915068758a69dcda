//! Federation scenarios: in-process nodes federating over real libp2p on loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use guildhall_client::{Client, Gateway};
use guildhall_gateway::Node;
use guildhall_net::{Multiaddr, NetConfig};
use guildhall_proto::id::GuildId;

use crate::{open_node, record, report, serve, write_messages};

pub struct FedNode {
    pub node: Arc<Node>,
    pub base: String,
    pub addr: Multiaddr,
    _dir: tempfile::TempDir,
}

pub async fn fed_node(peers: &[&FedNode]) -> FedNode {
    let addrs: Vec<Multiaddr> = peers.iter().map(|p| p.addr.clone()).collect();
    fed_node_dialing(&addrs).await
}

/// An in-process node with a temp data dir, federating with the nodes at `peers`.
pub async fn fed_node_dialing(peers: &[Multiaddr]) -> FedNode {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = open_node(&dir);
    let mut config = NetConfig::new("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"));
    config.bootstrap = peers.to_vec();
    // The scenarios push far more than a chat's worth of gossip through one peer.
    config.peer_rate = 1e9;
    config.peer_burst = 1e9;
    let net = guildhall_net::start(
        config,
        guildhall_net::NodeKey::generate_ed25519(),
        node.clone(),
    )
    .await
    .expect("federation starts");
    let addr = net.listen_addrs()[0].clone();
    node.attach_net(net);
    let base = serve(node.clone()).await;
    FedNode {
        node,
        base,
        addr,
        _dir: dir,
    }
}

pub async fn user(node: &FedNode, name: &str) -> Client {
    Client::register(&node.base, name, "load generator")
        .await
        .expect("register")
        .0
}

pub async fn remote(count: u64) {
    let a = fed_node(&[]).await;
    let b = fed_node(&[&a]).await;
    let owner = user(&a, "owner").await;
    let guild = owner.create_guild("remote").await.expect("guild");
    let channel = guild.first_text_channel().expect("channel").id.clone();
    let invite = owner.create_invite(&guild.id, 0, 0).await.expect("invite");
    let listener = user(&b, "listener").await;
    let started = Instant::now();
    listener.accept_invite(&invite.code).await.expect("join");
    record("join_ms", started.elapsed().as_secs_f64() * 1000.0);
    println!(
        "join a new guild on another node: {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let mut listen = Gateway::connect(&listener).await.expect("listener");
    let mut send = Gateway::connect(&owner).await.expect("sender");
    let mut delivered = Vec::new();
    for i in 0..count {
        let started = Instant::now();
        send.send_message(&guild.id, &channel, "ping", &format!("n{i}"))
            .await
            .expect("send");
        listen
            .wait_for("MESSAGE_CREATE", Duration::from_secs(10))
            .await
            .expect("delivery");
        delivered.push(started.elapsed().as_micros() as u64);
    }
    report(
        "send on node A → delivered to a client on node B",
        delivered,
    );
}

/// Bytes received on the loopback interface so far (Linux), for transfer sizes.
fn loopback_bytes() -> Option<u64> {
    let dev = std::fs::read_to_string("/proc/net/dev").ok()?;
    let line = dev.lines().find(|l| l.trim_start().starts_with("lo:"))?;
    line.split(':')
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

async fn wait_converged(a: &Node, b: &Node, guild: &GuildId) {
    let vv = |n: &Node| {
        n.guild(guild)
            .ok()
            .map(|g| g.lock().expect("guild lock").version_vector())
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while vv(a) != vv(b) {
        assert!(Instant::now() < deadline, "the nodes did not converge");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub async fn catchup(count: u64, writers: usize) {
    let a = fed_node(&[]).await;
    let b = fed_node(&[&a]).await;
    let owner = user(&a, "owner").await;
    let owner_id = owner.me().await.expect("me").id.parse().expect("user id");
    let guild = owner.create_guild("catch-up").await.expect("guild");
    let gid: GuildId = guild.id.parse().expect("guild id");
    let invite = owner.create_invite(&guild.id, 0, 0).await.expect("invite");
    user(&b, "member")
        .await
        .accept_invite(&invite.code)
        .await
        .expect("join");
    wait_converged(&a.node, &b.node, &gid).await;

    let (a_net, b_net) = (a.node.net().expect("net"), b.node.net().expect("net"));
    a_net.block(b_net.peer_id());
    b_net.block(a_net.peer_id());
    let written = write_messages(&a.node, owner_id, gid, count, writers).await;
    println!(
        "node A took {} messages while apart from B ({:.1} s)",
        written.count, written.secs
    );
    let written = written.count;
    let op_bytes: usize = {
        let on_a = a.node.guild(&gid).expect("guild");
        let on_b = b.node.guild(&gid).expect("guild");
        let (on_a, on_b) = (on_a.lock().expect("lock"), on_b.lock().expect("lock"));
        on_a.ops()
            .filter(|op| on_b.op(&op.id()).is_none())
            .map(|op| op.encode().len())
            .sum()
    };
    let lo_before = loopback_bytes();
    let started = Instant::now();
    a_net.unblock(b_net.peer_id());
    b_net.unblock(a_net.peer_id());
    wait_converged(&a.node, &b.node, &gid).await;
    let secs = started.elapsed().as_secs_f64();
    let transfer = match (lo_before, loopback_bytes()) {
        (Some(before), Some(after)) => format!(
            ", {:.1} MB on loopback (TCP/IP headers and both directions included) = {:.2}× the ops' bytes",
            (after - before) as f64 / 1e6,
            (after - before) as f64 / op_bytes as f64
        ),
        _ => String::new(),
    };
    record("catchup_s", secs);
    record("catchup_op_bytes", op_bytes);
    println!(
        "catch-up of {written} ops missed in a partition: {secs:.2} s ({:.0} ops/s), ops' bytes {:.1} MB{transfer}",
        written as f64 / secs,
        op_bytes as f64 / 1e6
    );

    let c = fed_node(&[]).await;
    let newcomer = user(&c, "newcomer").await;
    let started = Instant::now();
    newcomer.accept_invite(&invite.code).await.expect("join");
    record("join_with_history_s", started.elapsed().as_secs_f64());
    println!(
        "join a guild with {written} messages of history from another node: {:.2} s",
        started.elapsed().as_secs_f64()
    );
}
