//! Loading stored history on start: every guild-state op, the end of every author's log and
//! the newest ops first, so the node serves at once; the rest newest first in the background,
//! with history pages that reach it waiting for it.

use std::collections::BTreeSet;
use std::sync::Arc;

use guildhall_proto::guild::Guild;
use guildhall_proto::id::GuildId;
use guildhall_proto::op::{Op, VerifiedOp};
use guildhall_store::Store;

use crate::node::Node;

/// Stored ops inserted per hold of a guild's lock while loading in the background.
const LOAD_BATCH: u64 = 1_024;
/// The pause between two such holds, in which requests waiting for the lock take it.
const LOCK_BREATHER: std::time::Duration = std::time::Duration::from_micros(200);

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// What a restart has still to load of a guild: arrival numbers below `below`, except the
/// anchors (loaded already).
#[derive(Debug, Clone)]
pub(crate) struct Older {
    below: u64,
    anchors: Arc<BTreeSet<u64>>,
}

/// Inserts a stored op on load. One this build refuses to hold (kept by an older build that
/// held what it could not judge, such as a stranger's op) is left out rather than failing the
/// load: it was never valid, so nothing shown depended on it.
fn insert_stored(guild: &mut Guild, op: VerifiedOp) {
    let id = op.id();
    if let Err(e) = guild.insert(op) {
        tracing::warn!(guild = %guild.id(), op = %id, code = e.code(), "stored op left out");
    }
}

/// A guild's replica from its guild-state ops, the end of every author's log and its newest
/// `recent` ops, with what remains to load (`None` when nothing does).
pub(crate) fn load_recent(
    store: &Store,
    id: &GuildId,
    recent: u64,
) -> Result<(Guild, Option<Older>), String> {
    let fail = |e: Failure| format!("guild {id}: {e}");
    let len = store.guild_log_len(id).map_err(|e| fail(e.into()))?;
    let below = len.saturating_sub(recent);
    let anchors = store.guild_log_anchors(id).map_err(|e| fail(e.into()))?;
    let positions = anchors.range(..below).copied().chain(below..len);
    let mut guild: Option<Guild> = None;
    store
        .visit_guild_positions(id, positions, |_, op_id, bytes| {
            let op = Op::decode_stored(bytes, &op_id)?;
            match &mut guild {
                None => guild = Some(Guild::new(op)?),
                Some(g) => insert_stored(g, op),
            }
            Ok::<(), Failure>(())
        })
        .map_err(fail)?;
    let mut guild = guild.ok_or_else(|| format!("guild {id} has no ops"))?;
    guild.reserve(len.saturating_sub(guild.len() as u64) as usize);
    let older = (anchors.range(..below).count() as u64) < below;
    tracing::info!(guild = %id, ops = guild.len(), stored = len, "guild loaded, newest first");
    let older = older.then(|| Older {
        below,
        anchors: Arc::new(anchors),
    });
    Ok((guild, older))
}

impl Node {
    /// Whether some of the guild's stored history is not loaded yet.
    pub fn loading_history(&self, guild: &GuildId) -> bool {
        self.loading
            .lock()
            .expect("loading lock")
            .contains_key(guild)
    }

    /// Waits until more of the guild's stored history is loaded (or all of it is), or until
    /// `deadline`; false if the deadline came first.
    pub(crate) async fn loaded_more(
        &self,
        guild: &GuildId,
        deadline: tokio::time::Instant,
    ) -> bool {
        let loaded = self.loaded.notified();
        tokio::pin!(loaded);
        // Registered before the check, so a batch loaded in between still wakes us.
        loaded.as_mut().enable();
        !self.loading_history(guild) || tokio::time::timeout_at(deadline, loaded).await.is_ok()
    }

    /// Waits until all of the guild's stored history is loaded, or `within` passes; says
    /// whether it is.
    pub async fn history_loaded(&self, guild: &GuildId, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.loading_history(guild) {
            if !self.loaded_more(guild, deadline).await {
                return false;
            }
        }
        true
    }

    /// Loads the older history of every guild a restart left partly loaded, newest first, in
    /// batches, on a thread of its own; history pages waiting for it are told after each.
    pub(crate) fn spawn_history_loader(self: &Arc<Self>) {
        if self.loading.lock().expect("loading lock").is_empty() {
            return;
        }
        let node = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("history-loader".into())
            .spawn(move || {
                loop {
                    let Some(node) = node.upgrade() else { return };
                    let next = node
                        .loading
                        .lock()
                        .expect("loading lock")
                        .iter()
                        .next()
                        .map(|(id, older)| (*id, older.clone()));
                    let Some((guild, older)) = next else { return };
                    if let Err(e) = node.load_older(&guild, &older) {
                        // The replica would judge new ops against part of its history.
                        tracing::error!(%guild, error = %e, "cannot load stored history; refusing writes");
                        node.refuse_writes();
                        node.loading.lock().expect("loading lock").remove(&guild);
                        node.loaded.notify_waiters();
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the history loader; refusing writes");
            self.refuse_writes();
        }
    }

    /// Loads a guild's older stored history, newest first, in batches (no events: it is
    /// neither new nor changed, only loaded): one thread reads and decodes while this one
    /// inserts, recording after each batch how far loading got.
    fn load_older(&self, guild: &GuildId, older: &Older) -> Result<(), Failure> {
        type Loaded = Result<(u64, Vec<VerifiedOp>), Failure>;
        std::thread::scope(|scope| {
            // Inside the scope, so an early return drops the receiver and stops the reader.
            let (batches, received) = std::sync::mpsc::sync_channel::<Loaded>(4);
            scope.spawn(move || {
                let mut below = older.below;
                while below > 0 {
                    let from = below.saturating_sub(LOAD_BATCH);
                    let mut ops = Vec::new();
                    let read = self.store.visit_guild_log(
                        guild,
                        from..below,
                        true,
                        |position, id, bytes| {
                            if !older.anchors.contains(&position) {
                                ops.push(Op::decode_stored(bytes, &id)?);
                            }
                            Ok::<(), Failure>(())
                        },
                    );
                    let failed = read.is_err();
                    if batches.send(read.map(|()| (from, ops))).is_err() || failed {
                        return;
                    }
                    below = from;
                }
            });
            for batch in received {
                let (from, ops) = batch?;
                {
                    let replica = self.guild(guild).map_err(|e| e.body().to_string())?;
                    let mut replica = replica.lock().expect("guild lock");
                    for op in ops {
                        insert_stored(&mut replica, op);
                    }
                }
                let mut loading = self.loading.lock().expect("loading lock");
                if from == 0 {
                    loading.remove(guild);
                    tracing::info!(%guild, "stored history loaded");
                } else {
                    let rest = Older {
                        below: from,
                        anchors: older.anchors.clone(),
                    };
                    loading.insert(*guild, rest);
                }
                drop(loading);
                self.loaded.notify_waiters();
                // The guild's lock is not fair: re-taken at once, it would starve every
                // request waiting for it until the whole history is loaded.
                std::thread::sleep(LOCK_BREATHER);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use guildhall_proto::body::{Body, ChannelKind};
    use guildhall_proto::guild::Verdict;

    use super::*;
    use crate::NodeConfig;
    use crate::rest::create_account;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_loads_every_log_end_and_recent_ops_first_then_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = NodeConfig::new(dir.path().join("data"));
        config.restart_recent = 5;
        let node = Node::open(config.clone()).unwrap();
        let account = |name| create_account(&node, name, "correct horse battery", None);
        let ada = account("ada").await.unwrap().user_id;
        let bea = account("bea").await.unwrap().user_id;
        let guild = node.create_guild(&ada, "restarted").await.unwrap();
        let general = {
            let g = node.guild(&guild).unwrap();
            let g = g.lock().unwrap();
            let state = g.state();
            *state
                .channels
                .iter()
                .find(|(_, c)| c.kind == ChannelKind::Text)
                .unwrap()
                .0
        };
        let secret = b"invite secret";
        let invite = Body::invite_create(secret, 0, 0);
        let invite = node.submit(&ada, &guild, invite).await.unwrap();
        let join = Body::join(&guild, invite, &bea, secret);
        node.submit(&bea, &guild, join).await.unwrap();
        let say = |node: &Arc<Node>, who: &guildhall_proto::id::UserId, text: &str| {
            let body = Body::MessageCreate {
                channel: general,
                content: text.into(),
                reply_to: None,
            };
            let (node, who) = (node.clone(), *who);
            async move { node.submit(&who, &guild, body).await.unwrap() }
        };
        say(&node, &bea, "long ago").await;
        for i in 0..40 {
            say(&node, &ada, &format!("ada {i}")).await;
        }
        let full = node.guild(&guild).unwrap().lock().unwrap().clone();

        // What a restart serves from: guild state, where every log ends, the newest ops.
        let (partial, older) = load_recent(&node.store, &guild, 5).unwrap();
        assert!(older.is_some());
        assert!(
            partial.len() < full.len() / 2,
            "{} of {}",
            partial.len(),
            full.len()
        );
        assert_eq!(partial.state(), full.state());
        assert_eq!(partial.chain_head(&bea), full.chain_head(&bea));
        assert_eq!(partial.version_vector(), full.version_vector());

        // After a real restart bea writes at once, and once everything is loaded her ops and
        // the whole history are as before, with no fork.
        drop(node);
        let node = Node::open(config).unwrap();
        let again = say(&node, &bea, "after the restart").await;
        let within = std::time::Duration::from_secs(10);
        assert!(node.history_loaded(&guild, within).await);
        assert!(!node.loading_history(&guild));
        let g = node.guild(&guild).unwrap();
        let g = g.lock().unwrap();
        assert!(g.equivocations().is_empty());
        assert_eq!(g.verdict(&again), Some(&Verdict::Valid));
        assert_eq!(g.messages(&general, None, None, 100).len(), 42);
    }
}
