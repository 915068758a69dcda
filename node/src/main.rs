//! The `guildhall` node binary: runs a node (`guildhall`), or administers a stopped node's data
//! directory (`guildhall admin ...`).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use guildhall_gateway::{Node, NodeConfig, rest};
use guildhall_net::{Multiaddr, NetConfig, PeerId};
use guildhall_proto::id::GuildId;
use guildhall_voice::{Voice, VoiceConfig};
use serde::Deserialize;

#[derive(Parser)]
#[command(
    name = "guildhall",
    version,
    about = "A federated, peer-to-peer community chat node"
)]
struct Cli {
    /// Where the database and keys live (created if missing).
    #[arg(long, env = "GUILDHALL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address for the REST API and WebSocket gateway.
    #[arg(long, env = "GUILDHALL_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address for federation with other nodes (libp2p), as a multiaddr.
    #[arg(long, env = "GUILDHALL_P2P_LISTEN")]
    p2p_listen: Option<Multiaddr>,
    /// The federation address to put in invite codes, if peers cannot dial the listen address.
    #[arg(long, env = "GUILDHALL_P2P_ANNOUNCE")]
    p2p_announce: Option<Multiaddr>,
    /// A node to federate with, as `/ip4/../tcp/../p2p/<peer id>`; repeatable.
    #[arg(long = "peer")]
    peers: Vec<Multiaddr>,
    /// Run without federation: guilds live on this node only.
    #[arg(long, env = "GUILDHALL_NO_P2P")]
    no_p2p: bool,
    /// Find other nodes on the local network with mDNS and federate with them (multicasts on
    /// every non-loopback interface; off by default).
    #[arg(long, env = "GUILDHALL_MDNS")]
    mdns: bool,
    /// UDP address of the voice server (WebRTC media for voice channels).
    #[arg(long, env = "GUILDHALL_VOICE_LISTEN")]
    voice_listen: Option<SocketAddr>,
    /// The IP voice clients are told to send media to (a public IP behind NAT); by default
    /// the listen IP or, when that is 0.0.0.0, the IP of the default route.
    #[arg(long, env = "GUILDHALL_VOICE_ANNOUNCE")]
    voice_announce: Option<IpAddr>,
    /// Run without voice channels.
    #[arg(long, env = "GUILDHALL_NO_VOICE")]
    no_voice: bool,
    /// A TOML file with any of: data_dir, listen, p2p_listen, p2p_announce, peers, deny_peers,
    /// mdns, voice_listen, voice_announce, heartbeat_interval_ms, session_ttl_ms, user_rate, user_burst, auth_rate, auth_burst,
    /// ip_rate, ip_burst. Flags and environment override it.
    #[arg(long, env = "GUILDHALL_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Administer the data directory of a node that is not running.
    Admin {
        #[command(subcommand)]
        action: Admin,
    },
}

#[derive(Subcommand)]
enum Admin {
    /// Create an account.
    CreateUser {
        username: String,
        #[arg(long, env = "GUILDHALL_PASSWORD")]
        password: String,
    },
    /// Create an invite to a guild, as a member of it with this node's account.
    CreateInvite {
        guild: GuildId,
        /// The account creating the invite (needs CREATE_INSTANT_INVITE).
        #[arg(long)]
        as_user: String,
        #[arg(long, default_value_t = 0)]
        max_uses: u32,
        /// Seconds until it expires; 0 for never.
        #[arg(long, default_value_t = 0)]
        max_age_secs: u64,
    },
    /// List the guilds this node holds.
    ListGuilds,
    /// Print this node's federation peer id.
    PeerId,
    /// Refuse all traffic with a node (by peer id), from the next start on.
    DenyPeer { peer: PeerId },
    /// Take a node off the deny-list.
    AllowPeer { peer: PeerId },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    p2p_listen: Option<Multiaddr>,
    p2p_announce: Option<Multiaddr>,
    #[serde(default)]
    peers: Vec<Multiaddr>,
    #[serde(default)]
    deny_peers: Vec<String>,
    #[serde(default)]
    mdns: bool,
    voice_listen: Option<SocketAddr>,
    voice_announce: Option<IpAddr>,
    heartbeat_interval_ms: Option<u64>,
    session_ttl_ms: Option<u64>,
    user_rate: Option<f64>,
    user_burst: Option<f64>,
    auth_rate: Option<f64>,
    auth_burst: Option<f64>,
    ip_rate: Option<f64>,
    ip_burst: Option<f64>,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_P2P_LISTEN: &str = "/ip4/0.0.0.0/tcp/7701";
const DEFAULT_VOICE_LISTEN: &str = "0.0.0.0:7702";
/// Peer ids denied by `guildhall admin deny-peer`, one per line, in the data dir.
const DENY_FILE: &str = "denied-peers";

fn load_file_config(path: Option<&Path>) -> Result<FileConfig, String> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("guildhall: {e}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let file = load_file_config(cli.config.as_deref())?;
    let data_dir = cli
        .data_dir
        .or(file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("guildhall-data"));
    let mut config = NodeConfig::new(data_dir);
    if let Some(ms) = file.heartbeat_interval_ms {
        config.heartbeat_interval = Duration::from_millis(ms);
    }
    if let Some(ms) = file.session_ttl_ms {
        config.session_ttl = Duration::from_millis(ms);
    }
    config.user_rate = file.user_rate.unwrap_or(config.user_rate);
    config.user_burst = file.user_burst.unwrap_or(config.user_burst);
    config.auth_rate = file.auth_rate.unwrap_or(config.auth_rate);
    config.auth_burst = file.auth_burst.unwrap_or(config.auth_burst);
    config.ip_rate = file.ip_rate.unwrap_or(config.ip_rate);
    config.ip_burst = file.ip_burst.unwrap_or(config.ip_burst);
    let listen = cli
        .listen
        .or(file.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("default address"));
    let federation = (!cli.no_p2p).then(|| {
        let listen = cli
            .p2p_listen
            .or(file.p2p_listen.clone())
            .unwrap_or_else(|| DEFAULT_P2P_LISTEN.parse().expect("default multiaddr"));
        let mut net = NetConfig::new(listen);
        net.announce = cli.p2p_announce.or(file.p2p_announce.clone());
        net.bootstrap = cli.peers.into_iter().chain(file.peers.clone()).collect();
        net.peers_file = Some(config.data_dir.join("peers"));
        net.mdns = cli.mdns || file.mdns;
        net.deny = read_deny_file(&config.data_dir);
        for peer in &file.deny_peers {
            net.deny.push(
                peer.parse()
                    .map_err(|e| format!("deny_peers: {peer}: {e}"))?,
            );
        }
        Ok::<_, String>(net)
    });
    let federation = federation.transpose()?;
    let voice = (!cli.no_voice).then(|| VoiceConfig {
        listen: cli
            .voice_listen
            .or(file.voice_listen)
            .unwrap_or_else(|| DEFAULT_VOICE_LISTEN.parse().expect("default address")),
        announce: cli.voice_announce.or(file.voice_announce),
    });
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        match cli.command {
            None => serve(config, listen, federation, voice).await,
            Some(Command::Admin { action }) => admin(config, action).await,
        }
    })
}

fn open(config: NodeConfig) -> Result<Arc<Node>, String> {
    let dir = config.data_dir.clone();
    Node::open(config).map_err(|e| {
        if e.contains("already open") || e.contains("lock") {
            format!(
                "{}: the database is in use (is a node running on it?)",
                dir.display()
            )
        } else {
            e
        }
    })
}

fn read_deny_file(data_dir: &Path) -> Vec<PeerId> {
    std::fs::read_to_string(data_dir.join(DENY_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn write_deny_file(data_dir: &Path, peers: &[PeerId]) -> Result<(), String> {
    let text: String = peers.iter().map(|p| format!("{p}\n")).collect();
    std::fs::write(data_dir.join(DENY_FILE), text).map_err(|e| e.to_string())
}

fn node_key(data_dir: &Path) -> Result<guildhall_net::NodeKey, String> {
    guildhall_net::load_or_create_key(&data_dir.join("node.key"))
        .map_err(|e| format!("node key: {e}"))
}

async fn serve(
    config: NodeConfig,
    listen: SocketAddr,
    federation: Option<NetConfig>,
    voice: Option<VoiceConfig>,
) -> Result<(), String> {
    let data_dir = config.data_dir.clone();
    match guildhall_gateway::raise_fd_limit() {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let node = open(config)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let net = match federation {
        Some(net_config) => Some(
            guildhall_net::start(net_config, node_key(&data_dir)?, node.clone())
                .await
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    tracing::info!(
        data_dir = %data_dir.display(),
        guilds = node.guild_count(),
        "guildhall {} listening on http://{local} (API under /api/v1, gateway at ws://{local}/api/v1/gateway)",
        env!("CARGO_PKG_VERSION"),
    );
    // A node whose stdout was closed (a supervisor that read the first line) keeps running.
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "guildhall listening on http://{local}");
    if let Some(net) = net {
        for addr in net.listen_addrs() {
            let _ = writeln!(stdout, "guildhall federating on {addr}");
        }
        node.attach_net(net);
    }
    if let Some(voice) = voice {
        let (sfu, events) = Voice::start(voice)
            .map_err(|e| format!("cannot listen for voice on UDP {}: {e}", voice.listen))?;
        let _ = writeln!(stdout, "guildhall voice on udp://{}", sfu.address());
        node.attach_voice(sfu, events);
    }
    tokio::select! {
        served = guildhall_gateway::serve(node, listener) => served.map_err(|e| e.to_string()),
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("shutting down");
            Ok(())
        }
    }
}

async fn admin(config: NodeConfig, action: Admin) -> Result<(), String> {
    let node = open(config)?;
    match action {
        Admin::CreateUser { username, password } => {
            let account = rest::create_account(&node, &username, &password, None)
                .await
                .map_err(|e| format!("{} ({})", e.message, e.code))?;
            println!(
                "created {} with user id {}",
                account.username, account.user_id
            );
        }
        Admin::CreateInvite {
            guild,
            as_user,
            max_uses,
            max_age_secs,
        } => {
            let account = node
                .store
                .account(&as_user)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no account named {as_user}"))?;
            let invite = rest::invite(&node, &account.user_id, &guild, max_uses, max_age_secs)
                .await
                .map_err(|e| format!("{} ({})", e.message, e.code))?;
            println!("{}", invite["code"].as_str().unwrap_or_default());
        }
        Admin::PeerId => println!("{}", node_key(&node.config.data_dir)?.public().to_peer_id()),
        Admin::DenyPeer { peer } => {
            let mut denied = read_deny_file(&node.config.data_dir);
            if !denied.contains(&peer) {
                denied.push(peer);
            }
            write_deny_file(&node.config.data_dir, &denied)?;
            println!("denied {peer}");
        }
        Admin::AllowPeer { peer } => {
            let mut denied = read_deny_file(&node.config.data_dir);
            denied.retain(|p| *p != peer);
            write_deny_file(&node.config.data_dir, &denied)?;
            println!("allowed {peer}");
        }
        Admin::ListGuilds => {
            for id in node.store.guilds().map_err(|e| e.to_string())? {
                let view = node.guild(&id).map_err(|e| e.message)?;
                let guild = view.lock().expect("guild lock");
                let state = guild.state();
                println!(
                    "{id}  {:<32} {} members, {} channels",
                    guild
                        .meta()
                        .get_str(guildhall_proto::meta::MetaKey::GuildName)
                        .unwrap_or_else(|| state.name.clone()),
                    state.members.len(),
                    state.channels.len()
                );
            }
        }
    }
    Ok(())
}
