//! The node as the federation swarm's host: answering peers' catch-up and join requests from
//! the replicas, joining guilds held by other nodes (bounded in ops, bytes and time, and
//! checked batch by batch, so a lying holder can neither stall nor fill us), and invite codes
//! that say where to fetch a guild.

use std::sync::Arc;

use guildhall_net::protocol::{MAX_BATCH_BYTES, MAX_BATCH_OPS};
use guildhall_net::{Applied, Batch, Host, Multiaddr, NetError, Refusal};
use guildhall_proto::body::Body;
use guildhall_proto::guild::{Guild, Inserted, LogPositions};
use guildhall_proto::hlc::Hlc;
use guildhall_proto::id::{GuildId, InviteId, NodeId, OpId, UserId};
use guildhall_proto::op::VerifiedOp;
use guildhall_proto::sealed::{ChannelKey, KeyId};
use guildhall_proto::signal::Signal;

use crate::error::ApiError;
use crate::node::{Node, NodeConfig, now_ms};

impl Host for Node {
    fn log_positions(&self, guild: &GuildId) -> Option<LogPositions> {
        // With stored history still loading after a restart, a catch-up would pull it all in
        // again oldest first, as news: none until then. A back-fill's catch-ups are safe: they
        // start after the newest op held (`catchup_start`).
        if self.loading_history(guild) {
            return None;
        }
        let guild = self.guild(guild).ok()?;
        let g = guild.lock().expect("guild lock");
        Some(g.log_positions())
    }

    fn entitled(&self, guild: &GuildId, node: &NodeId) -> bool {
        self.guild(guild)
            .is_ok_and(|g| g.lock().expect("guild lock").entitled(node))
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
        requester: &NodeId,
        proof: &[u8; 64],
        after: Option<(Hlc, OpId)>,
        recent: Option<usize>,
    ) -> Result<Batch, Refusal> {
        let guild = self
            .guild(guild)
            .map_err(|_| Refusal::new("unknown_guild", "this node does not serve that guild"))?;
        let g = guild.lock().expect("guild lock");
        g.state()
            .check_fetch_proof(invite, requester, proof, Hlc::from_parts(now_ms(), 0))
            .map_err(|e| Refusal::new(e.code(), e.to_string()))?;
        Ok(match recent {
            Some(recent) => encoded(g.ops_for_join(recent, after, MAX_BATCH_OPS, MAX_BATCH_BYTES)),
            None => batch(&g, &LogPositions::new(), after),
        })
    }

    fn catchup_start(&self, guild: &GuildId) -> Option<(Hlc, OpId)> {
        self.backfill_news_after(guild)
    }

    fn backfill_ops(&self, guild: &GuildId, before: (Hlc, OpId)) -> Option<Batch> {
        // A node still fetching or loading its own older history would answer short, with no
        // `more`, and end the asker's back-fill with history missing.
        if self.backfilling(guild) || self.loading_history(guild) {
            return None;
        }
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

    async fn apply(&self, guild: GuildId, from: NodeId, ops: Vec<VerifiedOp>) -> Vec<Applied> {
        self.apply_remote(guild, from, ops).await
    }

    fn channel_keys(&self, guild: &GuildId, requester: &NodeId, ids: &[KeyId]) -> Vec<ChannelKey> {
        self.give_channel_keys(guild, requester, ids)
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

/// A join's fetch so far: the replica built from the holder's batches, checked against the
/// join's bounds. Sans-IO: the caller asks the holder and keeps the time.
struct JoinFetch {
    guild: GuildId,
    max_ops: usize,
    max_bytes: usize,
    max_skew_ms: u64,
    replica: Option<Guild>,
    /// The replica's ops in the order they entered it.
    order: Vec<OpId>,
    /// The last op taken: the next batch starts after it, and so must every op in it.
    after: Option<(Hlc, OpId)>,
    /// Ops and bytes received so far.
    ops: usize,
    bytes: usize,
}

impl JoinFetch {
    fn new(guild: GuildId, config: &NodeConfig) -> JoinFetch {
        JoinFetch {
            guild,
            max_ops: config.join_max_ops,
            max_bytes: config.join_max_bytes,
            max_skew_ms: config.max_clock_skew.as_millis() as u64,
            replica: None,
            order: Vec::new(),
            after: None,
            ops: 0,
            bytes: 0,
        }
    }

    /// Counts a batch against the join's bounds, before any of it is decoded.
    fn admit(&mut self, batch: &Batch) -> Result<(), ApiError> {
        self.ops += batch.ops.len();
        self.bytes += batch.ops.iter().map(Vec::len).sum::<usize>();
        if self.ops > self.max_ops || self.bytes > self.max_bytes {
            return Err(bad_holder(
                "join_too_large",
                format!(
                    "the guild's node sent more than this node takes in one join ({} ops, {} bytes)",
                    self.max_ops, self.max_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Takes in a batch's ops, verified, in the order received. Returns whether to ask for
    /// more.
    fn take(
        &mut self,
        ops: Vec<Result<VerifiedOp, &'static str>>,
        more: bool,
        now_ms: u64,
    ) -> Result<bool, ApiError> {
        if more && ops.is_empty() {
            return Err(bad_holder(
                "join_stalled",
                "the guild's node sent an empty batch with more to come",
            ));
        }
        for op in ops {
            let op = op.map_err(|e| {
                bad_holder(
                    "bad_peer_response",
                    format!("the guild's node sent an op that does not verify ({e})"),
                )
            })?;
            let key = (op.envelope().hlc, op.id());
            if self.after.is_some_and(|after| key <= after) {
                return Err(bad_holder(
                    "join_out_of_order",
                    "the guild's node repeated ops or went back in (hlc, op id) order",
                ));
            }
            // Every op after this one in (hlc, op id) order is ahead of our clock too: held
            // back like pushed ops (§2.2), they come by catch-up once it is not.
            if op.envelope().hlc.is_too_far_ahead(now_ms, self.max_skew_ms) {
                return Ok(false);
            }
            self.after = Some(key);
            match &mut self.replica {
                None if op.id() == self.guild
                    && matches!(op.envelope().body, Body::Genesis { .. }) =>
                {
                    self.order.push(op.id());
                    self.replica = Some(Guild::new(op)?);
                }
                None => {
                    return Err(bad_holder(
                        "bad_peer_response",
                        "the guild's node sent ops before the guild's genesis",
                    ));
                }
                Some(g) => match g.insert(op)? {
                    Inserted::Applied { accepted, .. } => self.order.extend(accepted),
                    Inserted::Duplicate | Inserted::Pending { .. } => {}
                },
            }
        }
        Ok(more)
    }

    /// The replica, with its ops in the order they entered it.
    fn finish(self) -> Result<(Guild, Vec<OpId>), ApiError> {
        let replica = self.replica.ok_or_else(|| {
            bad_holder(
                "bad_peer_response",
                "the guild's node sent no op this node takes (none, or a genesis ahead of its clock)",
            )
        })?;
        Ok((replica, self.order))
    }
}

/// The guild's node broke the join protocol or its bounds.
fn bad_holder(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(axum::http::StatusCode::BAD_GATEWAY, code, message)
}

impl Node {
    /// Replicates a guild held by the node at `addr`, for a user of ours holding an invite:
    /// fetches its guild-state ops and recent history (in batches, within
    /// `NodeConfig::join_max_ops`, `join_max_bytes` and `join_timeout`), verifies each, and
    /// adopts the replica; older history follows by back-fill. The user's join op is then made
    /// like any local op.
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
        let mut fetch = JoinFetch::new(code.guild, &self.config);
        let fetching = async {
            loop {
                let batch = net
                    .join(
                        addr.clone(),
                        code.guild,
                        code.invite,
                        &code.secret,
                        fetch.after,
                        Some(self.config.join_recent),
                    )
                    .await
                    .map_err(join_error)?;
                fetch.admit(&batch)?;
                let more = batch.more;
                let verified = guildhall_net::verify_ops(code.guild, batch.ops).await;
                if !fetch.take(verified, more, now_ms())? {
                    return Ok::<(), ApiError>(());
                }
            }
        };
        tokio::time::timeout(self.config.join_timeout, fetching)
            .await
            .map_err(|_| {
                ApiError::new(
                    axum::http::StatusCode::GATEWAY_TIMEOUT,
                    "join_timeout",
                    format!(
                        "the guild's node did not send the guild within {:?}",
                        self.config.join_timeout
                    ),
                )
            })??;
        let (guild, order) = fetch.finish()?;
        tracing::info!(guild = %code.guild, ops = order.len(), %addr, "fetched a guild from a peer");
        if self.adopt(guild, &order, Some(addr)).await? {
            self.spawn_backfill(code.guild);
        }
        Ok(())
    }
}
