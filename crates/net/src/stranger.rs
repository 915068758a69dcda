//! A stranger's node, for attacking this one in tests and load runs: it serves one guild,
//! holds none of it, treats every peer as entitled (so whatever it publishes is pushed to every
//! connected node) and takes in nothing, only counting what it is sent.

use std::sync::atomic::{AtomicUsize, Ordering};

use guildhall_proto::guild::LogPositions;
use guildhall_proto::hlc::Hlc;
use guildhall_proto::id::{GuildId, InviteId, NodeId, OpId, UserId};
use guildhall_proto::op::VerifiedOp;
use guildhall_proto::signal::Signal;

use crate::{Applied, Batch, Host, Refusal};

pub struct Stranger {
    guild: GuildId,
    received: AtomicUsize,
}

impl Stranger {
    pub fn new(guild: GuildId) -> Stranger {
        Stranger {
            guild,
            received: AtomicUsize::new(0),
        }
    }

    /// Ops and signals of any guild pushed to it, or sent in answer to its requests, so far.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::Relaxed)
    }
}

impl Host for Stranger {
    fn entitled(&self, guild: &GuildId, _: &NodeId) -> bool {
        *guild == self.guild
    }
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
        _: &NodeId,
        _: &[u8; 64],
        _: Option<(Hlc, OpId)>,
        _: Option<usize>,
    ) -> Result<Batch, Refusal> {
        Err(Refusal::new("unknown_guild", "a stranger holds nothing"))
    }
    fn backfill_ops(&self, _: &GuildId, _: (Hlc, OpId)) -> Option<Batch> {
        None
    }
    fn signal(&self, _: Signal) -> Applied {
        self.received.fetch_add(1, Ordering::Relaxed);
        Applied::Ignored("a stranger shows nothing")
    }
    async fn apply(&self, _: GuildId, _: NodeId, ops: Vec<VerifiedOp>) -> Vec<Applied> {
        self.received.fetch_add(ops.len(), Ordering::Relaxed);
        vec![Applied::Ignored("a stranger keeps nothing"); ops.len()]
    }
    fn dm_keys(&self, _: &UserId) -> Vec<Vec<u8>> {
        Vec::new()
    }
    async fn take_dms(&self, _: Vec<Vec<u8>>) -> Result<u32, Refusal> {
        Err(Refusal::new("unknown_user", "a stranger is home to nobody"))
    }
}
