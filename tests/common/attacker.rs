//! A hostile peer built from the project's own crates: a libp2p node that joins a guild's topic
//! and sends whatever a test crafts, and the ops it crafts.

use guildhall_net::{Batch, Host, NetConfig, Refusal};
use guildhall_proto::body::Body;
use guildhall_proto::guild::LogPositions;
use guildhall_proto::hlc::Hlc;
use guildhall_proto::id::{GuildId, InviteId, Keypair, OpId};

use super::{TestNode, eventually};

/// The `Host` methods of a test peer that takes nothing in: signals, ops and DMs pushed to it
/// are ignored, and it holds no DM keys.
macro_rules! ignores_signals_ops_and_dms {
    () => {
        fn signal(&self, _: guildhall_proto::signal::Signal) -> guildhall_net::Applied {
            guildhall_net::Applied::Duplicate
        }
        async fn apply(
            &self,
            _: guildhall_proto::id::GuildId,
            ops: Vec<guildhall_proto::op::VerifiedOp>,
        ) -> Vec<guildhall_net::Applied> {
            vec![guildhall_net::Applied::Duplicate; ops.len()]
        }
        fn dm_keys(&self, _: &guildhall_proto::id::UserId) -> Vec<Vec<u8>> {
            Vec::new()
        }
        async fn take_dms(&self, _: Vec<Vec<u8>>) -> Result<u32, guildhall_net::Refusal> {
            Err(guildhall_net::Refusal::new("no", "no"))
        }
    };
}
// Not every test binary that includes the kit implements a Host (`common` allows dead code
// for the same reason).
#[allow(unused_imports)]
pub(crate) use ignores_signals_ops_and_dms;

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
    ignores_signals_ops_and_dms!();
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
