//! A hostile peer built from the project's own crates: a libp2p node that joins a guild's topic
//! and sends whatever a test crafts, and the ops it crafts.

use guildhall_net::{Applied, Batch, Host, NetConfig, Refusal};
use guildhall_proto::body::Body;
use guildhall_proto::guild::LogPositions;
use guildhall_proto::hlc::Hlc;
use guildhall_proto::id::{GuildId, InviteId, Keypair, OpId};
use guildhall_proto::op::VerifiedOp;
use guildhall_proto::signal::Signal;

use super::{TestNode, eventually};

/// A peer that serves one guild and relays whatever the test gives it.
pub struct Rogue {
    guild: GuildId,
}

impl Host for Rogue {
    fn log_positions(&self, guild: &GuildId) -> Option<LogPositions> {
        (*guild == self.guild).then(LogPositions::new)
    }
    fn lacks_from(&self, _: &GuildId, _: &LogPositions) -> bool {
        false
    }
    fn missing_ops(&self, _: &GuildId, _: &LogPositions, _: Option<(Hlc, OpId)>) -> Option<Batch> {
        None
    }
    fn join_ops(
        &self,
        _: &GuildId,
        _: &InviteId,
        _: &[u8],
        _: Option<(Hlc, OpId)>,
        _: Option<usize>,
    ) -> Result<Batch, Refusal> {
        Err(Refusal::new("no", "no"))
    }
    fn backfill_ops(&self, _: &GuildId, _: (Hlc, OpId)) -> Option<Batch> {
        None
    }
    fn signal(&self, _: Signal) -> Applied {
        Applied::Duplicate
    }
    async fn apply(&self, _: GuildId, ops: Vec<VerifiedOp>) -> Vec<Applied> {
        vec![Applied::Duplicate; ops.len()]
    }
    fn dm_keys(&self, _: &guildhall_proto::id::UserId) -> Vec<Vec<u8>> {
        Vec::new()
    }
    async fn take_dms(&self, _: Vec<Vec<u8>>) -> Result<u32, Refusal> {
        Err(Refusal::new("no", "no"))
    }
}

/// A rogue peer connected to `target`, in `guild`'s topic.
pub async fn rogue_peer(target: &TestNode, guild: GuildId) -> guildhall_net::NetHandle {
    let mut config = NetConfig::new("/ip4/127.0.0.1/tcp/0".parse().unwrap());
    config.bootstrap = vec![target.p2p_addr()];
    let rogue = guildhall_net::start(
        config,
        guildhall_net::NodeKey::generate_ed25519(),
        std::sync::Arc::new(Rogue { guild }),
    )
    .await
    .unwrap();
    rogue.serve(guild);
    // Until the rogue has seen the target's subscription, what it publishes goes nowhere.
    let target_id = target.net().peer_id();
    eventually("the rogue sees the target serving the guild", async || {
        rogue.peers_serving(guild).await.contains(&target_id)
    })
    .await;
    rogue
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
