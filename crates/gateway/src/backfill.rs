//! Back-fill: the older history of a guild joined with its recent ops only, fetched newest
//! first from the node it was joined from or any other peer serving the guild, in the
//! background or as clients page back into it. Every batch is checked before it is applied: a
//! source that sends anything but content ops, newest first, strictly before the cursor is
//! lying, and is struck and not asked again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use guildhall_net::{Applied, Multiaddr, NetHandle, PeerId};
use guildhall_proto::hlc::Hlc;
use guildhall_proto::id::{GuildId, OpId};
use guildhall_proto::op::VerifiedOp;
use guildhall_store::{BackfillProgress, Write};

use crate::error::ApiError;
use crate::node::Node;

/// The pause before asking again when no source could answer.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Batches in a row from one source that bring nothing new before it is asked no more. Each
/// batch must move the cursor back over distinct ops, so this only cuts short a source walking
/// us through what we hold already; an honest one does so for a batch or two at most (the
/// authors' latest ops, which came with the join).
const MAX_ROUNDS_WITHOUT_PROGRESS: u32 = 8;

/// What a back-fill keeps in memory while it runs, besides its stored progress.
#[derive(Debug, Default)]
pub(crate) struct BackfillRun {
    /// The newest op held when this process started the back-fill: catch-ups meanwhile ask
    /// only for ops after it (`Host::catchup_start`).
    news_after: Option<(Hlc, OpId)>,
    /// Sources that lied about this guild's history, or made no progress: not asked again.
    distrusted: HashSet<PeerId>,
    /// Batches in a row each source sent that brought nothing new.
    idle_rounds: HashMap<PeerId, u32>,
}

/// Why a back-fill batch shows its source lying, if it does: it must hold content ops only,
/// newest first, each strictly before the cursor, and at least one if it says there is more.
pub(crate) fn check_batch(
    before: (Hlc, OpId),
    ops: &[VerifiedOp],
    more: bool,
) -> Result<(), &'static str> {
    if more && ops.is_empty() {
        return Err("backfill_stalled");
    }
    let mut bound = before;
    for op in ops {
        if op.envelope().body.is_control() {
            return Err("backfill_not_content");
        }
        let key = (op.envelope().hlc, op.id());
        if key >= bound {
            return Err("backfill_out_of_order");
        }
        bound = key;
    }
    Ok(())
}

/// How one source answered one back-fill request.
enum Answer {
    /// A valid batch, applied and stored: where the next starts (`None`: history is whole).
    Fetched(Option<BackfillProgress>),
    /// Nothing usable: unreachable, refused, or lying (then distrusted); try another.
    Unusable(String),
}

impl Node {
    /// Whether some of the guild's history is still to be fetched.
    pub fn backfilling(&self, guild: &GuildId) -> bool {
        self.backfills
            .lock()
            .expect("backfill lock")
            .contains_key(guild)
    }

    /// Where catch-ups of a guild start while it back-fills (`Host::catchup_start`): after the
    /// newest op held when the back-fill started here, fixed at the first catch-up (at a join
    /// that is the join's last op, as the guild is served only once adopted).
    pub(crate) fn backfill_news_after(&self, guild: &GuildId) -> Option<(Hlc, OpId)> {
        if !self.backfilling(guild) {
            return None;
        }
        let mut runs = self.backfill_runs.lock().expect("backfill runs lock");
        let run = runs.entry(*guild).or_default();
        if run.news_after.is_none() {
            let g = self.guild(guild).ok()?;
            let g = g.lock().expect("guild lock");
            run.news_after = g.ops().map(|op| (op.envelope().hlc, op.id())).max();
        }
        run.news_after
    }

    /// Fetches, verifies, applies and stores one batch of the guild's older history (no
    /// MESSAGE_CREATE for it: it is not news), then records how far it got. Asks the node the
    /// guild was joined from, then every other peer serving it, until one answers with a valid
    /// batch. Returns whether more remains.
    pub async fn backfill_once(&self, guild: &GuildId) -> Result<bool, ApiError> {
        let _one_at_a_time = self.backfilling.lock().await;
        let progress = self
            .backfills
            .lock()
            .expect("backfill lock")
            .get(guild)
            .cloned();
        let Some(progress) = progress else {
            return Ok(false);
        };
        let net = self
            .net()
            .ok_or_else(|| peer_error("federation is off".into()))?;
        let joined_from = Multiaddr::try_from(progress.source.clone())
            .map_err(|e| ApiError::internal(format!("stored back-fill source: {e}")))?;
        let mut unusable = Vec::new();
        for (peer, addr) in self.backfill_sources(net, guild, joined_from).await {
            match self
                .backfill_from(net, guild, &progress, peer, addr)
                .await?
            {
                Answer::Fetched(next) => {
                    self.record_backfill(guild, next.clone()).await?;
                    return Ok(next.is_some());
                }
                Answer::Unusable(why) => unusable.push(format!("{peer}: {why}")),
            }
        }
        if unusable.is_empty() {
            unusable.push("no peer serves the guild".into());
        }
        Err(peer_error(unusable.join("; ")))
    }

    /// Whom to ask: the node the guild was joined from (dialed at its address), then the
    /// other peers serving the guild, leaving out those distrusted.
    async fn backfill_sources(
        &self,
        net: &NetHandle,
        guild: &GuildId,
        joined_from: Multiaddr,
    ) -> Vec<(PeerId, Option<Multiaddr>)> {
        let distrusted = self
            .backfill_runs
            .lock()
            .expect("backfill runs lock")
            .get(guild)
            .map(|run| run.distrusted.clone())
            .unwrap_or_default();
        let first = guildhall_net::peer_of(&joined_from).map(|peer| (peer, Some(joined_from)));
        let others = net
            .peers_entitled(*guild)
            .await
            .into_iter()
            .map(|peer| (peer, None));
        let mut seen = HashSet::new();
        first
            .into_iter()
            .chain(others)
            .filter(|(peer, _)| !distrusted.contains(peer) && seen.insert(*peer))
            .collect()
    }

    /// One back-fill request to one source, its batch checked, applied and stored.
    async fn backfill_from(
        &self,
        net: &NetHandle,
        guild: &GuildId,
        progress: &BackfillProgress,
        peer: PeerId,
        addr: Option<Multiaddr>,
    ) -> Result<Answer, ApiError> {
        let before = (Hlc(progress.before.0), progress.before.1);
        let batch = match net.backfill(peer, addr, *guild, before).await {
            Ok(batch) => batch,
            Err(e) => return Ok(Answer::Unusable(e.to_string())),
        };
        let verified: Result<Vec<VerifiedOp>, &'static str> =
            guildhall_net::verify_ops(*guild, batch.ops)
                .await
                .into_iter()
                .collect();
        let checked = verified.and_then(|ops| check_batch(before, &ops, batch.more).map(|()| ops));
        let ops = match checked {
            Ok(ops) => ops,
            Err(code) => return Ok(self.distrust(net, guild, peer, code, true)),
        };
        let next = ops
            .last()
            .filter(|_| batch.more)
            .map(|op| BackfillProgress {
                before: (op.envelope().hlc.0, op.id()),
                source: progress.source.clone(),
            });
        let applied = self
            .apply_from_peer(*guild, guildhall_net::node_of(&peer), ops, true)
            .await;
        if applied.contains(&Applied::Ignored("storage_failed")) {
            return Err(ApiError::internal("storing back-filled history failed"));
        }
        // Stored whatever it was judged: the batch stands, but a source serving ops the core
        // refuses (which no honest node stores) is asked no more.
        if let Some(code) = applied.iter().find_map(|a| match a {
            Applied::Refused(code) => Some(*code),
            _ => None,
        }) {
            self.distrust(net, guild, peer, code, true);
        } else if self.rounds_without_progress(guild, peer, &applied) > MAX_ROUNDS_WITHOUT_PROGRESS
        {
            self.distrust(net, guild, peer, "backfill_no_progress", false);
        }
        Ok(Answer::Fetched(next))
    }

    /// Counts a batch from `peer` that brought nothing new into the replica, or resets the
    /// count when it did; returns how many in a row brought nothing.
    fn rounds_without_progress(&self, guild: &GuildId, peer: PeerId, applied: &[Applied]) -> u32 {
        let progressed = applied
            .iter()
            .any(|a| matches!(a, Applied::Accepted | Applied::AcceptedWithGap));
        let mut runs = self.backfill_runs.lock().expect("backfill runs lock");
        let rounds = runs
            .entry(*guild)
            .or_default()
            .idle_rounds
            .entry(peer)
            .or_default();
        *rounds = if progressed { 0 } else { *rounds + 1 };
        *rounds
    }

    /// Asks `peer` no more for this guild's history; a lie (not mere slowness) strikes it.
    fn distrust(
        &self,
        net: &NetHandle,
        guild: &GuildId,
        peer: PeerId,
        code: &'static str,
        lied: bool,
    ) -> Answer {
        tracing::warn!(%guild, %peer, code, "back-fill source distrusted");
        self.backfill_runs
            .lock()
            .expect("backfill runs lock")
            .entry(*guild)
            .or_default()
            .distrusted
            .insert(peer);
        if lied {
            net.strike(peer, code);
        }
        Answer::Unusable(code.into())
    }

    /// Stores how far the back-fill got (`None`: done) and keeps it in memory.
    async fn record_backfill(
        &self,
        guild: &GuildId,
        next: Option<BackfillProgress>,
    ) -> Result<(), ApiError> {
        self.store
            .write(vec![Write::Backfill {
                guild: *guild,
                progress: next.clone(),
            }])
            .await?;
        let mut backfills = self.backfills.lock().expect("backfill lock");
        match next {
            Some(progress) => {
                backfills.insert(*guild, progress);
            }
            None => {
                backfills.remove(guild);
                self.backfill_runs
                    .lock()
                    .expect("backfill runs lock")
                    .remove(guild);
            }
        }
        Ok(())
    }

    /// Back-fills the guild down to the start of its history in the background, unless the
    /// node back-fills only on demand.
    pub(crate) fn spawn_backfill(self: &Arc<Self>, guild: GuildId) {
        if !self.config.backfill_in_background {
            return;
        }
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(node) = node.upgrade() else { return };
                match node.backfill_once(&guild).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!(%guild, error = %e.body(), "back-fill paused");
                        drop(node);
                        tokio::time::sleep(RETRY_AFTER).await;
                    }
                }
            }
        });
    }

    /// Resumes the back-fills a restart interrupted.
    pub(crate) fn resume_backfills(self: &Arc<Self>) {
        let guilds: Vec<GuildId> = self
            .backfills
            .lock()
            .expect("backfill lock")
            .keys()
            .copied()
            .collect();
        for guild in guilds {
            self.spawn_backfill(guild);
        }
    }
}

fn peer_error(why: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "peer_unreachable",
        format!("cannot fetch older history: {why}"),
    )
}
