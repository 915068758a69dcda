//! The node as the federation swarm's host: answering peers' catch-up and join requests from
//! the replicas, joining guilds held by other nodes, and invite codes that say where to fetch
//! a guild.

use std::collections::BTreeMap;

use guildhall_net::protocol::{MAX_BATCH_BYTES, MAX_BATCH_OPS};
use guildhall_net::{Applied, Batch, Host, Multiaddr, NetError, Refusal};
use guildhall_proto::body::Body;
use guildhall_proto::guild::{Guild, Inserted};
use guildhall_proto::hlc::Hlc;
use guildhall_proto::id::{GuildId, InviteId, OpId, UserId};
use guildhall_proto::op::VerifiedOp;
use guildhall_proto::signal::Signal;

use crate::error::ApiError;
use crate::node::{Node, now_ms};

impl Host for Node {
    fn version_vector(&self, guild: &GuildId) -> Option<BTreeMap<UserId, u64>> {
        let guild = self.guild(guild).ok()?;
        let g = guild.lock().expect("guild lock");
        Some(g.version_vector())
    }

    fn missing_ops(&self, guild: &GuildId, have: &BTreeMap<UserId, u64>) -> Option<Batch> {
        let guild = self.guild(guild).ok()?;
        let g = guild.lock().expect("guild lock");
        Some(missing_ops(&g, have))
    }

    fn join_ops(
        &self,
        guild: &GuildId,
        invite: &InviteId,
        secret: &[u8],
        have: &BTreeMap<UserId, u64>,
    ) -> Result<Batch, Refusal> {
        let guild = self
            .guild(guild)
            .map_err(|_| Refusal::new("unknown_guild", "this node does not serve that guild"))?;
        let g = guild.lock().expect("guild lock");
        g.state()
            .check_invite(invite, secret, Hlc::from_parts(now_ms(), 0))
            .map_err(|e| Refusal::new(e.code(), e.to_string()))?;
        Ok(missing_ops(&g, have))
    }

    fn signal(&self, signal: Signal) -> Applied {
        self.apply_signal(signal)
    }

    async fn apply(&self, guild: GuildId, ops: Vec<VerifiedOp>) -> Vec<Applied> {
        self.apply_remote(guild, ops).await
    }
}

/// The ops a replica holds beyond `have`, in (hlc, id) order, which puts every op after its
/// predecessors (they are timestamped strictly before it); cut at the batch limits.
fn missing_ops(g: &Guild, have: &BTreeMap<UserId, u64>) -> Batch {
    let mut ops: Vec<&VerifiedOp> = g
        .version_vector()
        .into_iter()
        .filter(|(author, seq)| have.get(author).is_none_or(|h| h < seq))
        .flat_map(|(author, seq)| {
            let from = have.get(&author).map_or(1, |h| h + 1);
            g.ops_by_author(&author, from, seq)
        })
        .collect();
    let order = |op: &&VerifiedOp| (op.envelope().hlc, op.id());
    // Only the first batch's worth needs sorting: a long catch-up asks many times.
    if ops.len() > MAX_BATCH_OPS {
        ops.select_nth_unstable_by_key(MAX_BATCH_OPS, order);
        ops.truncate(MAX_BATCH_OPS + 1);
    }
    ops.sort_by_key(order);
    let mut batch = Batch::default();
    let mut bytes = 0;
    for op in ops {
        let encoded = op.encode();
        if batch.ops.len() == MAX_BATCH_OPS || bytes + encoded.len() > MAX_BATCH_BYTES {
            batch.more = true;
            break;
        }
        bytes += encoded.len();
        batch.ops.push(encoded);
    }
    batch
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
    /// fetches every op (in batches), verifies each, and adopts the replica. The user's join
    /// op is then made like any local op.
    pub async fn fetch_guild(&self, code: &InviteCode, addr: Multiaddr) -> Result<(), ApiError> {
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
        loop {
            let have = replica
                .as_ref()
                .map(|g| g.version_vector())
                .unwrap_or_default();
            let batch = net
                .join(
                    addr.clone(),
                    code.guild,
                    code.invite,
                    code.secret.clone(),
                    &have,
                )
                .await
                .map_err(join_error)?;
            let (fetched, more) = (batch.ops.len(), batch.more);
            let verified = guildhall_net::verify_ops(code.guild, batch.ops).await;
            for op in verified {
                let op = op.map_err(|e| bad_peer(format!("an op that does not verify ({e})")))?;
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
        self.adopt(guild, &order).await?;
        Ok(())
    }
}
