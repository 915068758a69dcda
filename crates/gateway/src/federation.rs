//! The node as the federation swarm's host: answering peers' catch-up and join requests from
//! the replicas, joining guilds held by other nodes, and invite codes that say where to fetch
//! a guild.

use std::sync::Arc;

use guildhall_net::protocol::{MAX_BATCH_BYTES, MAX_BATCH_OPS};
use guildhall_net::{Applied, Batch, Host, Multiaddr, NetError, Refusal};
use guildhall_proto::body::Body;
use guildhall_proto::guild::{Guild, Inserted, LogPositions};
use guildhall_proto::hlc::Hlc;
use guildhall_proto::id::{GuildId, InviteId, OpId, UserId};
use guildhall_proto::op::VerifiedOp;
use guildhall_proto::signal::Signal;

use crate::error::ApiError;
use crate::node::{Node, now_ms};

impl Host for Node {
    fn log_positions(&self, guild: &GuildId) -> Option<LogPositions> {
        // With older history still to come (back-fill after a join, or loading after a
        // restart), a catch-up would pull it all in oldest first, as news: none until then.
        if self.backfilling(guild) || self.loading_history(guild) {
            return None;
        }
        let guild = self.guild(guild).ok()?;
        let g = guild.lock().expect("guild lock");
        Some(g.log_positions())
    }

    fn lacks_from(&self, guild: &GuildId, have: &LogPositions) -> bool {
        self.guild(guild)
            .is_ok_and(|g| g.lock().expect("guild lock").lacks_from(have))
    }

    fn missing_ops(
        &self,
        guild: &GuildId,
        have: &LogPositions,
        after: Option<(Hlc, OpId)>,
    ) -> Option<Batch> {
        let guild = self.guild(guild).ok()?;
        let g = guild.lock().expect("guild lock");
        Some(batch(&g, have, after))
    }

    fn join_ops(
        &self,
        guild: &GuildId,
        invite: &InviteId,
        secret: &[u8],
        after: Option<(Hlc, OpId)>,
        recent: Option<usize>,
    ) -> Result<Batch, Refusal> {
        let guild = self
            .guild(guild)
            .map_err(|_| Refusal::new("unknown_guild", "this node does not serve that guild"))?;
        let g = guild.lock().expect("guild lock");
        g.state()
            .check_invite(invite, secret, Hlc::from_parts(now_ms(), 0))
            .map_err(|e| Refusal::new(e.code(), e.to_string()))?;
        Ok(match recent {
            Some(recent) => encoded(g.ops_for_join(recent, after, MAX_BATCH_OPS, MAX_BATCH_BYTES)),
            None => batch(&g, &LogPositions::new(), after),
        })
    }

    fn backfill_ops(&self, guild: &GuildId, before: (Hlc, OpId)) -> Option<Batch> {
        let guild = self.guild(guild).ok()?;
        let g = guild.lock().expect("guild lock");
        Some(encoded(g.content_before(
            before,
            MAX_BATCH_OPS,
            MAX_BATCH_BYTES,
        )))
    }

    fn signal(&self, signal: Signal) -> Applied {
        self.apply_signal(signal)
    }

    async fn apply(&self, guild: GuildId, ops: Vec<VerifiedOp>) -> Vec<Applied> {
        self.apply_remote(guild, ops).await
    }

    fn dm_keys(&self, user: &UserId) -> Vec<Vec<u8>> {
        self.store.dm_keys(user).unwrap_or_default()
    }

    async fn take_dms(&self, envelopes: Vec<Vec<u8>>) -> Result<u32, Refusal> {
        Node::take_dms(self, envelopes).await
    }
}

/// The next batch for a peer at `have`, encoded.
fn batch(g: &Guild, have: &LogPositions, after: Option<(Hlc, OpId)>) -> Batch {
    encoded(g.ops_missing_from(have, after, MAX_BATCH_OPS, MAX_BATCH_BYTES))
}

fn encoded((ops, more): (Vec<&VerifiedOp>, bool)) -> Batch {
    Batch {
        ops: ops.into_iter().map(|op| op.encode()).collect(),
        more,
    }
}

/// An invite code: `<guild>.<invite>.<secret>`, then `.<address>` (the hex of a libp2p
/// multiaddr ending in `/p2p/<peer id>`) when the guild can be fetched from a node.
pub struct InviteCode {
    pub guild: GuildId,
    pub invite: InviteId,
    pub secret: Vec<u8>,
    pub addr: Option<Multiaddr>,
}

impl InviteCode {
    pub fn encode(&self) -> String {
        let mut code = format!(
            "{}.{}.{}",
            self.guild,
            self.invite,
            hex::encode(&self.secret)
        );
        if let Some(addr) = &self.addr {
            code.push('.');
            code.push_str(&hex::encode(addr.to_vec()));
        }
        code
    }

    pub fn parse(code: &str) -> Result<InviteCode, ApiError> {
        let bad = || {
            ApiError::bad_request(
                "invalid_invite_code",
                "invite codes look like <guild>.<invite>.<secret>[.<node address>]",
            )
        };
        let mut parts = code.split('.');
        let (Some(g), Some(i), Some(s), addr, None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        let addr = match addr {
            Some(a) => Some(
                hex::decode(a)
                    .ok()
                    .and_then(|b| Multiaddr::try_from(b).ok())
                    .ok_or_else(bad)?,
            ),
            None => None,
        };
        Ok(InviteCode {
            guild: g.parse().map_err(|_| bad())?,
            invite: i.parse().map_err(|_| bad())?,
            secret: hex::decode(s).map_err(|_| bad())?,
            addr,
        })
    }
}

fn join_error(e: NetError) -> ApiError {
    match e {
        NetError::Refused(r) => ApiError::bad_request(
            "invite_refused",
            format!("the guild's node refused the invite: {}", r.message),
        ),
        other => ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "peer_unreachable",
            format!("cannot fetch the guild from its node: {other}"),
        ),
    }
}

impl Node {
    /// Replicates a guild held by the node at `addr`, for a user of ours holding an invite:
    /// fetches its guild-state ops and recent history (in batches), verifies each, and adopts
    /// the replica; older history follows by back-fill. The user's join op is then made like
    /// any local op.
    pub async fn fetch_guild(
        self: &Arc<Self>,
        code: &InviteCode,
        addr: Multiaddr,
    ) -> Result<(), ApiError> {
        let net = self.net().ok_or_else(|| {
            ApiError::bad_request(
                "federation_disabled",
                "this node does not federate, so it cannot join a guild held elsewhere",
            )
        })?;
        let bad_peer = |why: String| {
            ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                "bad_peer_response",
                format!("the guild's node sent {why}"),
            )
        };
        let mut replica: Option<Guild> = None;
        let mut order: Vec<OpId> = Vec::new();
        let mut after = None;
        loop {
            let batch = net
                .join(
                    addr.clone(),
                    code.guild,
                    code.invite,
                    code.secret.clone(),
                    after,
                    Some(self.config.join_recent),
                )
                .await
                .map_err(join_error)?;
            let (fetched, more) = (batch.ops.len(), batch.more);
            let verified = guildhall_net::verify_ops(code.guild, batch.ops).await;
            for op in verified {
                let op = op.map_err(|e| bad_peer(format!("an op that does not verify ({e})")))?;
                after = Some((op.envelope().hlc, op.id()));
                match &mut replica {
                    None if op.id() == code.guild
                        && matches!(op.envelope().body, Body::Genesis { .. }) =>
                    {
                        order.push(op.id());
                        replica = Some(Guild::new(op)?);
                    }
                    None => return Err(bad_peer("ops before the guild's genesis".into())),
                    Some(g) => match g.insert(op)? {
                        Inserted::Applied { accepted, .. } => order.extend(accepted),
                        Inserted::Duplicate | Inserted::Pending { .. } => {}
                    },
                }
            }
            if !more || fetched == 0 {
                break;
            }
        }
        let guild = replica.ok_or_else(|| bad_peer("no ops".into()))?;
        tracing::info!(guild = %code.guild, ops = order.len(), %addr, "fetched a guild from a peer");
        if self.adopt(guild, &order, Some(addr)).await? {
            self.spawn_backfill(code.guild);
        }
        Ok(())
    }
}
