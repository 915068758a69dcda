//! A hostile peer built from the project's own crates: a libp2p node that claims a guild and
//! pushes whatever a test crafts, and the ops it crafts.

use guildhall_net::NetConfig;
use guildhall_net::stranger::Stranger;
use guildhall_proto::body::Body;
use guildhall_proto::id::{GuildId, Keypair};

use super::{TestNode, eventually};

/// A stranger's node connected to `target`, serving `guild`: whatever it publishes is pushed
/// to `target`; `Stranger::received` counts what it is sent.
pub async fn stranger_peer(
    target: &TestNode,
    guild: GuildId,
) -> (guildhall_net::NetHandle, std::sync::Arc<Stranger>) {
    let mut config = NetConfig::new("/ip4/127.0.0.1/tcp/0".parse().unwrap());
    config.bootstrap = vec![target.p2p_addr()];
    let stranger = std::sync::Arc::new(Stranger::new(guild));
    let net = guildhall_net::start(
        config,
        guildhall_net::NodeKey::generate_ed25519(),
        stranger.clone(),
    )
    .await
    .unwrap();
    net.serve(guild);
    let target_id = target.net().peer_id();
    eventually("the stranger is connected to the target", async || {
        net.peers_entitled(guild).await.contains(&target_id)
    })
    .await;
    (net, stranger)
}

/// A rogue peer connected to `target`, pushing `guild`'s ops to it.
pub async fn rogue_peer(target: &TestNode, guild: GuildId) -> guildhall_net::NetHandle {
    stranger_peer(target, guild).await.0
}

/// A key no node has seen, the `n`th of a run.
pub fn throwaway_key(n: u64) -> Keypair {
    let mut secret = [0x5a; 32];
    secret[..8].copy_from_slice(&n.to_le_bytes());
    Keypair::from_secret(secret)
}

/// An op by `key` on top of what `target` holds of `guild` (its heads, a timestamp after
/// them): the best a stranger who reads the guild's gossip can make.
pub fn op_on_top(target: &TestNode, guild: GuildId, key: &Keypair, body: Body) -> Vec<u8> {
    let g = target.node.guild(&guild).unwrap();
    let g = g.lock().unwrap();
    let env = g.next_envelope(key.user_id(), guildhall_gateway::node::now_ms(), body);
    env.sign(key).unwrap().encode()
}
