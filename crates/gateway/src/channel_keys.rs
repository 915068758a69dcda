//! Channel keys on this node (`spec/auth.md` §9, `spec/federation.md`): fetching the keys of
//! sealed text this node holds but cannot open from the other viewer nodes, and giving its keys
//! to the nodes entitled to them. Sealing a local user's text is `Node::submit_with`'s.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guildhall_net::protocol::MAX_CHANNEL_KEYS;
use guildhall_proto::guild::Guild;
use guildhall_proto::id::{GuildId, NodeId, OpId};
use guildhall_proto::sealed::{ChannelKey, KeyId, Text};
use guildhall_store::Write;

use crate::node::{Node, now_ms};
use crate::views;

/// How often every guild is looked at for keys to fetch, besides when sealed text or a change of
/// its state arrives: a viewer node that was refused because its peer had not seen its new
/// role yet asks again.
const KEY_FETCH_INTERVAL: Duration = Duration::from_secs(5);
/// Requests (of `MAX_CHANNEL_KEYS` each) one guild gets per look, so no guild holds up others.
const MAX_KEY_ROUNDS: usize = 16;

/// The guilds that may hold sealed text this node could open with keys it lacks.
#[derive(Default)]
pub(crate) struct KeyFetch {
    wanted: Mutex<HashSet<GuildId>>,
    wake: tokio::sync::Notify,
}

/// Whether ops that just entered `guild` may make it want keys: sealed text under a key not held,
/// or a guild-state op (which may make this node a viewer of a channel).
pub(crate) fn may_want_keys(guild: &Guild, ops: &[OpId]) -> bool {
    ops.iter().filter_map(|id| guild.op(id)).any(|op| {
        let body = &op.envelope().body;
        body.is_control()
            || body
                .text()
                .and_then(Text::sealed)
                .is_some_and(|sealed| guild.keyring().get(&sealed.key).is_none())
    })
}

impl Node {
    /// Looks for keys `guild` lacks soon.
    pub(crate) fn want_keys(&self, guild: GuildId) {
        self.key_fetch
            .wanted
            .lock()
            .expect("key fetch lock")
            .insert(guild);
        self.key_fetch.wake.notify_one();
    }

    /// Fetches wanted keys whenever told to, and every guild's every `KEY_FETCH_INTERVAL`, for
    /// as long as the node lives.
    pub(crate) fn spawn_key_fetch(self: &Arc<Self>) {
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(KEY_FETCH_INTERVAL);
            loop {
                let Some(strong) = node.upgrade() else { return };
                let guilds: Vec<GuildId> =
                    std::mem::take(&mut *strong.key_fetch.wanted.lock().expect("key fetch lock"))
                        .into_iter()
                        .collect();
                for guild in guilds {
                    strong.fetch_keys(guild).await;
                }
                let woken = async { strong.key_fetch.wake.notified().await };
                tokio::select! {
                    () = woken => {}
                    _ = tick.tick() => {
                        let all: Vec<GuildId> = strong.guild_ids();
                        strong.key_fetch.wanted.lock().expect("key fetch lock").extend(all);
                    }
                }
            }
        });
    }

    async fn fetch_keys(&self, guild: GuildId) {
        let Some(net) = self.net() else { return };
        let me = net.node_id();
        for _ in 0..MAX_KEY_ROUNDS {
            let Ok(replica) = self.guild(&guild) else {
                return;
            };
            let wanted =
                replica
                    .lock()
                    .expect("guild lock")
                    .wanted_keys(&me, MAX_CHANNEL_KEYS, now_ms());
            if wanted.is_empty() {
                return;
            }
            let given = net.channel_keys(guild, &wanted).await;
            let complete = given.len() == wanted.len();
            if !complete {
                let given: HashSet<KeyId> = given.iter().map(ChannelKey::id).collect();
                let refused: Vec<KeyId> = wanted
                    .iter()
                    .filter(|id| !given.contains(id))
                    .copied()
                    .collect();
                replica
                    .lock()
                    .expect("guild lock")
                    .keys_not_given(&refused, now_ms());
            }
            if given.is_empty() {
                return;
            }
            if let Err(e) = self.take_channel_keys(guild, given).await {
                tracing::warn!(%guild, error = %e.message, "cannot store channel keys");
                return;
            }
            if !complete || wanted.len() < MAX_CHANNEL_KEYS {
                return;
            }
        }
    }

    /// Stores keys given by viewer nodes (each checked against the id asked for), then shows
    /// clients the text they open.
    async fn take_channel_keys(
        &self,
        guild: GuildId,
        keys: Vec<ChannelKey>,
    ) -> Result<(), crate::ApiError> {
        self.store
            .write(keys.iter().cloned().map(Write::ChannelKey).collect())
            .await?;
        let events = {
            let g = self.guild(&guild)?;
            let mut g = g.lock().expect("guild lock");
            let opened: Vec<OpId> = keys
                .into_iter()
                .flat_map(|key| g.add_channel_key(key))
                .collect();
            views::events_opened(&g, &opened)
        };
        for event in events {
            self.publish(event);
        }
        Ok(())
    }

    /// The keys among `ids` a peer at `requester` is given: those of channels it is a viewer
    /// node of now.
    pub(crate) fn give_channel_keys(
        &self,
        guild: &GuildId,
        requester: &NodeId,
        ids: &[KeyId],
    ) -> Vec<ChannelKey> {
        match self.guild(guild) {
            Ok(g) => g.lock().expect("guild lock").keys_for(requester, ids),
            Err(_) => Vec::new(),
        }
    }
}
