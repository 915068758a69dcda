//! Back-fill: the older history of a guild joined with its recent ops only, fetched newest
//! first from the node it was joined from, in the background or as clients page back into it.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use guildhall_net::{Applied, Multiaddr};
use guildhall_proto::hlc::Hlc;
use guildhall_proto::id::GuildId;
use guildhall_store::{BackfillProgress, Write};

use crate::error::ApiError;
use crate::node::Node;

/// The pause before asking again when the source could not answer.
const RETRY_AFTER: Duration = Duration::from_secs(5);

impl Node {
    /// Whether some of the guild's history is still to be fetched.
    pub fn backfilling(&self, guild: &GuildId) -> bool {
        self.backfills
            .lock()
            .expect("backfill lock")
            .contains_key(guild)
    }

    /// Fetches, verifies, applies and stores one batch of the guild's older history (no
    /// MESSAGE_CREATE for it: it is not news), then records how far it got. Returns whether
    /// more remains.
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
        let peer_error = |why: String| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "peer_unreachable",
                format!("cannot fetch older history: {why}"),
            )
        };
        let net = self
            .net()
            .ok_or_else(|| peer_error("federation is off".into()))?;
        let source = Multiaddr::try_from(progress.source.clone())
            .map_err(|e| ApiError::internal(format!("stored back-fill source: {e}")))?;
        let before = (Hlc(progress.before.0), progress.before.1);
        let batch = net
            .backfill(source, *guild, before)
            .await
            .map_err(|e| peer_error(e.to_string()))?;
        let mut ops = Vec::with_capacity(batch.ops.len());
        for op in guildhall_net::verify_ops(*guild, batch.ops).await {
            match op {
                Ok(op) => ops.push(op),
                Err(code) => tracing::warn!(%guild, code, "a back-filled op does not verify"),
            }
        }
        if ops.is_empty() && batch.more {
            return Err(peer_error("a batch with no op that verifies".into()));
        }
        let next = ops
            .last()
            .filter(|_| batch.more)
            .map(|op| BackfillProgress {
                before: (op.envelope().hlc.0, op.id()),
                source: progress.source.clone(),
            });
        let applied = self.apply_from_peer(*guild, ops, true).await;
        if applied.contains(&Applied::Ignored("storage_failed")) {
            return Err(ApiError::internal("storing back-filled history failed"));
        }
        self.store
            .write(vec![Write::Backfill {
                guild: *guild,
                progress: next.clone(),
            }])
            .await?;
        let mut backfills = self.backfills.lock().expect("backfill lock");
        match &next {
            Some(progress) => backfills.insert(*guild, progress.clone()),
            None => backfills.remove(guild),
        };
        Ok(next.is_some())
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
