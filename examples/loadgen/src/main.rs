//! Load generator: measures a node's send → delivered latency, durable write throughput and
//! fan-out to many attached clients, against a node it starts in-process (temp data dir) or
//! one already running (`--server`, whose rate limits must allow the load).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use guildhall_client::{Client, Gateway};
use guildhall_gateway::{Node, NodeConfig};
use guildhall_proto::id::{GuildId, UserId};
use tokio::sync::mpsc;

mod attack;
mod federation;
mod procfs;
mod voice;

#[derive(Clone, Copy, ValueEnum)]
enum Scenario {
    /// One sender, one listener, sequential sends: latency from send to delivery.
    Latency,
    /// Many concurrent senders: acknowledged (durable) messages per second.
    Throughput,
    /// One sender at a fixed rate, many listeners: delivery latency under fan-out.
    Fanout,
    /// Writes `count` messages through the node's write path (no HTTP), closes the node and
    /// times opening it again.
    Restart,
    /// Holds `clients` idle gateway sessions for `count` seconds (measure the node's memory).
    Idle,
    /// Send cost against member count: `count` sequential messages through `Node::submit` in
    /// a guild of 10 members, then in one of `clients` members (no sockets).
    Members,
    /// The voice SFU: `clients` str0m peers in rooms of four, all talking, for `count`
    /// seconds: forwarded packets per second, SFU CPU, frame latency.
    Voice,
    /// Two federated nodes: latency from a send on node A to delivery on node B.
    Remote,
    /// Two federated nodes apart while A takes `count` messages; time and bytes for B to catch
    /// up once they reconnect, then the time for a third node to join the guild.
    Catchup,
    /// A stranger's node floods a guild on the node (in-process, or `--server` with
    /// `--node-pid` and `--peer`) with `count` ops per attack: what it refused or held, its
    /// memory before and after, and an honest message across nodes after each.
    Attack,
}

#[derive(Parser)]
#[command(name = "loadgen")]
struct Args {
    #[arg(value_enum)]
    scenario: Scenario,
    /// A running node; without it one is started in-process with a temp data dir.
    #[arg(long)]
    server: Option<String>,
    /// Messages (latency), seconds (throughput, fanout).
    #[arg(long, default_value_t = 2000)]
    count: u64,
    /// Concurrent senders (throughput) or listeners (fanout).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Messages per second (fanout).
    #[arg(long, default_value_t = 50)]
    rate: u64,
    /// With `--server`: the node's process id, to report its CPU time and memory over the run
    /// (and memory per client held, for fanout and idle).
    #[arg(long, requires = "server")]
    node_pid: Option<u32>,
    /// Restart: write the node's data dir here (a new directory) and keep it, so the same
    /// history can be reopened again, e.g. by `guildhall --data-dir`.
    #[arg(long)]
    keep_data: Option<PathBuf>,
    /// Attack with `--server`: the node's libp2p address (`/ip4/…/tcp/…/p2p/…`).
    #[arg(long, requires_all = ["server", "node_pid"])]
    peer: Option<guildhall_net::Multiaddr>,
}

struct Setup {
    base: String,
    owner: Client,
    guild: String,
    channel: String,
    invite: String,
    _dir: Option<tempfile::TempDir>,
}

/// A node in a temp dir with rate limits out of the way.
fn open_node(dir: &tempfile::TempDir) -> Arc<Node> {
    Node::open(unlimited_config(dir.path().join("data"))).expect("node opens")
}

fn unlimited_config(data_dir: PathBuf) -> NodeConfig {
    let mut config = NodeConfig::new(data_dir);
    config.user_rate = 1e9;
    config.user_burst = 1e9;
    config.auth_rate = 1e9;
    config.auth_burst = 1e9;
    config.ip_rate = 1e9;
    config.ip_burst = 1e9;
    config
}

/// Serves the node's API on an ephemeral loopback port; returns its base URL.
async fn serve(node: Arc<Node>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(guildhall_gateway::serve(node, listener));
    base
}

async fn setup(server: Option<String>) -> Setup {
    let (base, dir) = match server {
        Some(base) => (base, None),
        None => {
            let dir = tempfile::tempdir().expect("temp dir");
            let base = serve(open_node(&dir)).await;
            (base, Some(dir))
        }
    };
    let run = std::process::id();
    let (owner, _) = Client::register(&base, &format!("owner{run}"), "load generator")
        .await
        .expect("register");
    let guild = owner.create_guild("load").await.expect("guild");
    let channel = guild.first_text_channel().expect("channel").id.clone();
    let invite = owner
        .create_invite(&guild.id, 0, 0)
        .await
        .expect("invite")
        .code;
    Setup {
        base,
        owner,
        guild: guild.id,
        channel,
        invite,
        _dir: dir,
    }
}

async fn member(s: &Setup, n: usize) -> Client {
    let name = format!("u{}x{n}", std::process::id());
    let (client, _) = Client::register(&s.base, &name, "load generator")
        .await
        .expect("register");
    client.accept_invite(&s.invite).await.expect("join");
    client
}

/// Figures of this run, printed as one JSON line at its end.
static RESULTS: std::sync::Mutex<Vec<(String, serde_json::Value)>> =
    std::sync::Mutex::new(Vec::new());

/// Records a figure for the run's JSON line.
fn record(key: &str, value: impl Into<serde_json::Value>) {
    RESULTS
        .lock()
        .expect("results lock")
        .push((key.to_owned(), value.into()));
}

fn report(name: &str, mut micros: Vec<u64>) {
    micros.sort_unstable();
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    record(
        name,
        serde_json::json!({
            "n": micros.len(),
            "p50_ms": at(0.5),
            "p90_ms": at(0.9),
            "p99_ms": at(0.99),
            "max_ms": at(1.0),
        }),
    );
    println!(
        "{name}: n={} p50={:.3} ms p90={:.3} ms p99={:.3} ms max={:.3} ms",
        micros.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match guildhall_gateway::raise_fd_limit() {
        Ok(limit) if (limit as usize) < args.clients + 100 => eprintln!(
            "warning: {limit} open files at most (the hard limit): fewer than the clients asked for"
        ),
        Ok(_) => {}
        Err(e) => eprintln!("warning: cannot raise the open-file limit: {e}"),
    }
    let watched = args.node_pid.map(procfs::Watched::start);
    run(&args, watched.as_ref()).await;
    if let Some(watched) = watched {
        watched.finish();
    }
    let scenario = args
        .scenario
        .to_possible_value()
        .expect("every scenario has a name");
    let results: serde_json::Map<String, serde_json::Value> =
        std::mem::take(&mut *RESULTS.lock().expect("results lock"))
            .into_iter()
            .collect();
    println!(
        "{}",
        serde_json::json!({
            "scenario": scenario.get_name(),
            "count": args.count,
            "clients": args.clients,
            "rate": args.rate,
            "server": args.server,
            "results": results,
        })
    );
}

async fn run(args: &Args, watched: Option<&procfs::Watched>) {
    match args.scenario {
        Scenario::Restart => restart(args.count, args.clients, args.keep_data.clone()).await,
        Scenario::Members => members(args.count, args.clients).await,
        Scenario::Remote => federation::remote(args.count).await,
        Scenario::Catchup => federation::catchup(args.count, args.clients).await,
        Scenario::Attack => {
            let victim = args.peer.clone().map(|addr| attack::Victim {
                base: args.server.clone().expect("--peer requires --server"),
                addr,
                pid: args.node_pid.expect("--peer requires --node-pid"),
            });
            attack::attack(victim, args.count).await
        }
        Scenario::Voice => voice::voice(args.clients, args.count).await,
        Scenario::Latency | Scenario::Throughput | Scenario::Fanout | Scenario::Idle => {
            let s = setup(args.server.clone()).await;
            match args.scenario {
                Scenario::Latency => latency(&s, args.count).await,
                Scenario::Throughput => throughput(&s, args.clients, args.count).await,
                Scenario::Fanout => fanout(&s, args.clients, args.rate, args.count).await,
                _ => idle(&s, args.clients, args.count, watched).await,
            }
        }
    }
}

async fn latency(s: &Setup, count: u64) {
    let listener = member(s, 0).await;
    let mut listen = Gateway::connect(&listener).await.expect("listener");
    let mut send = Gateway::connect(&s.owner).await.expect("sender");
    let mut delivered = Vec::new();
    let mut acked = Vec::new();
    for i in 0..count {
        let started = Instant::now();
        send.send_message(&s.guild, &s.channel, "ping", &format!("n{i}"))
            .await
            .expect("send");
        acked.push(started.elapsed().as_micros() as u64);
        listen
            .wait_for("MESSAGE_CREATE", Duration::from_secs(10))
            .await
            .expect("delivery");
        delivered.push(started.elapsed().as_micros() as u64);
    }
    report("send → ack (durable)", acked);
    report("send → delivered to 1 listener", delivered);
}

async fn throughput(s: &Setup, senders: usize, seconds: u64) {
    let mut clients = Vec::new();
    for n in 0..senders {
        clients.push(member(s, n).await);
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in clients {
        let (guild, channel) = (s.guild.clone(), s.channel.clone());
        tasks.push(tokio::spawn(async move {
            let mut gw = Gateway::connect(&client).await.expect("gateway");
            // Writes only: no fan-out of everyone's messages back to every sender.
            gw.subscribe(&guild, Some(vec![])).await.expect("subscribe");
            let mut sent = 0u64;
            while Instant::now() < deadline {
                gw.send_message(&guild, &channel, "load", &format!("t{sent}"))
                    .await
                    .expect("send");
                sent += 1;
            }
            sent
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("sender");
    }
    let secs = started.elapsed().as_secs_f64();
    record("acknowledged_per_s", total as f64 / secs);
    println!(
        "{senders} concurrent senders over the gateway (subscribed to nothing): {total} messages acknowledged after commit in {secs:.1} s = {:.0} msg/s",
        total as f64 / secs
    );
}

async fn fanout(s: &Setup, listeners: usize, rate: u64, seconds: u64) {
    let epoch = Arc::new(Instant::now());
    let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
    let expected = rate * seconds;
    let mut ready = Vec::new();
    for n in 0..listeners {
        let client = member(s, n).await;
        let (tx, epoch) = (tx.clone(), epoch.clone());
        let (connected, wait) = tokio::sync::oneshot::channel();
        ready.push(wait);
        tokio::spawn(async move {
            let mut gw = Gateway::connect(&client).await.expect("listener");
            let _ = connected.send(());
            let mut got = 0;
            while got < expected {
                let Ok(d) = gw.wait_for("MESSAGE_CREATE", Duration::from_secs(30)).await else {
                    return;
                };
                got += 1;
                if let Some(sent) = d.data["content"]
                    .as_str()
                    .and_then(|c| c.parse::<u64>().ok())
                {
                    let _ = tx.send(epoch.elapsed().as_micros() as u64 - sent);
                }
            }
        });
    }
    drop(tx);
    for r in ready {
        let _ = r.await;
    }
    let mut send = Gateway::connect(&s.owner).await.expect("sender");
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    for i in 0..expected {
        tick.tick().await;
        let stamp = epoch.elapsed().as_micros() as u64;
        send.send_message(&s.guild, &s.channel, &stamp.to_string(), &format!("f{i}"))
            .await
            .expect("send");
    }
    let mut latencies = Vec::new();
    while let Some(l) = rx.recv().await {
        latencies.push(l);
    }
    record("delivered", latencies.len());
    record("expected", expected * listeners as u64);
    println!(
        "{listeners} listeners, {rate} msg/s for {seconds} s: {} of {} deliveries",
        latencies.len(),
        expected * listeners as u64
    );
    report("send → delivered (fan-out)", latencies);
}

async fn restart(count: u64, writers: usize, keep_data: Option<PathBuf>) {
    use guildhall_gateway::rest;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = unlimited_config(keep_data.unwrap_or_else(|| dir.path().join("data")));
    let node = Node::open(config.clone()).expect("node opens");
    let owner = rest::create_account(&node, "owner", "load generator", None)
        .await
        .expect("account")
        .user_id;
    let guild = node.create_guild(&owner, "restart").await.expect("guild");
    let written = write_messages(&node, owner, guild, count, writers).await;
    record("submit_ops_per_s", written.count as f64 / written.secs);
    println!(
        "{writers} writers through Node::submit (sign, authorize, apply, group commit): {} ops in {:.1} s = {:.0} ops/s",
        written.count,
        written.secs,
        written.count as f64 / written.secs
    );
    drop(node);
    let started = Instant::now();
    let node = Node::open(config).expect("node reopens");
    record("reopen_ms", started.elapsed().as_secs_f64() * 1000.0);
    record("rss_mib_after_reopen", procfs::rss_mib("self"));
    println!(
        "reopen with {} stored messages: {:.0} ms to serving ({} guild), process RSS {:.0} MiB",
        written.count,
        started.elapsed().as_secs_f64() * 1000.0,
        node.guild_count(),
        procfs::rss_mib("self")
    );
    history_pages(node, &guild.to_string(), &written).await;
}

/// Times pages of 50 over HTTP: the newest, and one before each sampled id (all depths).
async fn history_pages(node: Arc<Node>, guild: &str, written: &Written) {
    let base = serve(node).await;
    let (client, _) = Client::login(&base, "owner", "load generator")
        .await
        .expect("login");
    let channel = written.channel.to_string();
    let timed = |page: guildhall_client::Page| {
        let client = client.clone();
        let channel = channel.clone();
        async move {
            let started = Instant::now();
            let messages = client.messages(guild, &channel, &page).await.expect("page");
            assert!(!messages.is_empty() || page.before.is_some());
            started.elapsed().as_micros() as u64
        }
    };
    let mut newest = Vec::new();
    for _ in 0..written.sample.len().max(100) {
        let page = guildhall_client::Page {
            limit: Some(50),
            ..Default::default()
        };
        newest.push(timed(page).await);
    }
    report("history page of 50, newest (HTTP round trip)", newest);
    let mut deep = Vec::new();
    for id in &written.sample {
        let page = guildhall_client::Page {
            before: Some(id.to_string()),
            limit: Some(50),
            ..Default::default()
        };
        deep.push(timed(page).await);
    }
    report(
        &format!(
            "history page of 50 before {} ids spread over {} messages",
            written.sample.len(),
            written.count
        ),
        deep,
    );
}

/// Send cost with 10 members and with `large` members: the same sequential writes, timed per
/// op. Members join with keys the node holds in memory (no accounts, so no password hashing).
async fn members(count: u64, large: usize) {
    for size in [10, large] {
        let dir = tempfile::tempdir().expect("temp dir");
        let node = Node::open(NodeConfig::new(dir.path().join("data"))).expect("node opens");
        let owner = guildhall_gateway::rest::create_account(&node, "owner", "load generator", None)
            .await
            .expect("account")
            .user_id;
        let guild = node.create_guild(&owner, "members").await.expect("guild");
        let secret = b"load generator invite".to_vec();
        let invite = node
            .submit(
                &owner,
                &guild,
                guildhall_proto::body::Body::invite_create(&secret, 0, 0),
            )
            .await
            .expect("invite");
        for n in 1..size {
            let key = guildhall_proto::id::Keypair::from_secret(guildhall_proto::id::sha256(&[
                b"member",
                &n.to_le_bytes(),
            ]));
            let user = key.user_id();
            node.remember_key(user, key);
            let join = guildhall_proto::body::Body::join(&guild, invite, &user, &secret);
            node.submit(&user, &guild, join).await.expect("join");
        }
        let started = Instant::now();
        let written = write_messages(&node, owner, guild, count, 1).await.count;
        let per_op = started.elapsed().as_secs_f64() * 1e6 / written as f64;
        record(&format!("us_per_send_{size}_members"), per_op);
        println!(
            "{size} members: {written} sequential sends through Node::submit, {per_op:.0} µs per send"
        );
    }
}

/// Writes `count` messages into the guild's first text channel through `Node::submit` from
/// `writers` concurrent tasks; returns how many were written and the seconds it took.
async fn write_messages(
    node: &Arc<Node>,
    author: UserId,
    guild: GuildId,
    count: u64,
    writers: usize,
) -> Written {
    let channel = node
        .with_member_guild(&author, &guild, |g| {
            let text = g
                .state()
                .channels
                .iter()
                .find(|(_, c)| c.kind == guildhall_proto::body::ChannelKind::Text);
            Ok(*text.expect("a text channel").0)
        })
        .expect("channel");
    let started = Instant::now();
    let per_writer = count / writers as u64;
    // About SAMPLED_IDS ids in all, spread evenly over the history, for cursors into it.
    let sample_every = (count / SAMPLED_IDS).max(1);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let mut sample = Vec::new();
            for i in 0..per_writer {
                let body = guildhall_proto::body::Body::MessageCreate {
                    channel,
                    content: format!("writer {w} message {i}: some ordinary chat text").into(),
                    reply_to: None,
                };
                let id = node.submit(&author, &guild, body).await.expect("submit");
                if (i * writers as u64 + w as u64).is_multiple_of(sample_every) {
                    sample.push(id);
                }
            }
            sample
        }));
    }
    let mut sample = Vec::new();
    for t in tasks {
        sample.extend(t.await.expect("writer"));
    }
    Written {
        count: per_writer * writers as u64,
        secs: started.elapsed().as_secs_f64(),
        channel,
        sample,
    }
}

/// What `write_messages` wrote.
struct Written {
    count: u64,
    secs: f64,
    channel: guildhall_proto::id::ChannelId,
    /// Ids of messages spread over the history.
    sample: Vec<guildhall_proto::id::OpId>,
}

const SAMPLED_IDS: u64 = 1_000;

async fn idle(s: &Setup, clients: usize, seconds: u64, watched: Option<&procfs::Watched>) {
    let mut held = Vec::with_capacity(clients);
    for _ in 0..clients {
        held.push(Gateway::connect(&s.owner).await.expect("gateway"));
    }
    record("idle_sessions", held.len());
    if let Some(watched) = watched {
        watched.holding(held.len());
    }
    println!("{clients} idle gateway sessions open; holding them {seconds} s");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    println!("released {} sessions", held.len());
}
