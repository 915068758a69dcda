//! Test kit: real nodes on loopback with ephemeral ports and temp data dirs.

#![allow(dead_code)]

pub mod attacker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use guildhall_client::{Client, Dispatch, Gateway, Guild, User};
use guildhall_gateway::{Node, NodeConfig};
use guildhall_net::{Multiaddr, NetConfig, NetHandle};

pub const PASSWORD: &str = "correct horse battery";
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestNode {
    pub base: String,
    pub node: Arc<Node>,
    _dir: tempfile::TempDir,
}

impl TestNode {
    pub async fn start() -> TestNode {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut NodeConfig)) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let mut config = NodeConfig::new(dir.path().join("data"));
        config.auth_burst = 1_000.0;
        configure(&mut config);
        let node = Node::open(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(guildhall_gateway::serve(node.clone(), listener));
        TestNode {
            base,
            node,
            _dir: dir,
        }
    }

    /// A node that federates over libp2p on an ephemeral loopback port, dialing `peers`.
    pub async fn federated(peers: &[&TestNode]) -> TestNode {
        Self::federated_with(peers, |_| {}).await
    }

    pub async fn federated_with(
        peers: &[&TestNode],
        configure: impl FnOnce(&mut NetConfig),
    ) -> TestNode {
        Self::start().await.federate(peers, configure).await
    }

    /// A federated node with its own node settings.
    pub async fn federated_node(
        peers: &[&TestNode],
        configure: impl FnOnce(&mut NodeConfig),
    ) -> TestNode {
        Self::start_with(configure)
            .await
            .federate(peers, |_| {})
            .await
    }

    async fn federate(
        self,
        peers: &[&TestNode],
        configure: impl FnOnce(&mut NetConfig),
    ) -> TestNode {
        let node = self;
        let mut config = NetConfig::new("/ip4/127.0.0.1/tcp/0".parse().unwrap());
        config.bootstrap = peers.iter().map(|p| p.p2p_addr()).collect();
        configure(&mut config);
        let key = guildhall_net::NodeKey::generate_ed25519();
        let net = guildhall_net::start(config, key, node.node.clone())
            .await
            .unwrap();
        node.node.attach_net(net);
        node
    }

    /// Serves voice channels from an SFU on an ephemeral loopback UDP port.
    pub fn with_voice(self) -> TestNode {
        let (sfu, events) = guildhall_voice::Voice::start(guildhall_voice::VoiceConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            announce: None,
        })
        .unwrap();
        self.node.attach_voice(sfu, events);
        self
    }

    pub fn net(&self) -> &NetHandle {
        self.node.net().expect("a federated node")
    }

    pub fn p2p_addr(&self) -> Multiaddr {
        self.net().listen_addrs()[0].clone()
    }

    pub async fn user(&self, name: &str) -> (Client, User) {
        Client::register(&self.base, name, PASSWORD).await.unwrap()
    }
}

/// An owner with a guild, and `others` members who joined by invite.
pub async fn guild_with(node: &TestNode, others: &[&str]) -> (Guild, String, Vec<(Client, User)>) {
    let owner = node.user("owner").await;
    let guild = owner.0.create_guild("Test Guild").await.unwrap();
    let channel = guild.first_text_channel().unwrap().id.clone();
    let invite = owner.0.create_invite(&guild.id, 0, 0).await.unwrap();
    let mut people = vec![owner];
    for name in others {
        let (client, user) = node.user(name).await;
        client.accept_invite(&invite.code).await.unwrap();
        people.push((client, user));
    }
    (guild, channel, people)
}

/// The next dispatch named `name` whose payload has `field == value`.
pub async fn dispatch_where(gw: &mut Gateway, name: &str, field: &str, value: &str) -> Dispatch {
    loop {
        let d = gw.wait_for(name, WAIT).await.unwrap();
        if d.data[field] == value {
            return d;
        }
    }
}

/// Polls `check` until it holds or the wait runs out.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
