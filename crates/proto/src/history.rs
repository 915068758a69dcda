//! Channel history: valid messages per channel (or thread) in (hlc, op id) order.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::hlc::Hlc;
use crate::id::{ChannelId, MessageId, OpId, UserId};
use crate::sealed::Text;

/// A message as every replica shows it: the latest edit by its author, add-wins reactions per
/// user, the latest pin or unpin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageView {
    pub id: MessageId,
    pub channel: ChannelId,
    pub author: UserId,
    pub hlc: Hlc,
    pub content: Text,
    pub edited_at: Option<Hlc>,
    pub reply_to: Option<MessageId>,
    pub reactions: BTreeMap<String, BTreeSet<UserId>>,
    pub pinned: bool,
    /// The thread started from this message, if any.
    pub thread: Option<OpId>,
}

#[derive(Debug, Clone, Default)]
pub struct History {
    channels: BTreeMap<ChannelId, BTreeSet<(Hlc, MessageId)>>,
    threads: BTreeMap<ChannelId, BTreeSet<OpId>>,
}

impl History {
    pub fn insert_message(&mut self, channel: ChannelId, hlc: Hlc, id: MessageId) {
        self.channels.entry(channel).or_default().insert((hlc, id));
    }

    /// Takes a message out; a channel left with none goes, as if it never had any (what a
    /// history rebuilt from scratch holds, and so what `Guild::state_hash` lists).
    pub fn remove_message(&mut self, channel: ChannelId, hlc: Hlc, id: MessageId) {
        if let Some(set) = self.channels.get_mut(&channel) {
            set.remove(&(hlc, id));
            if set.is_empty() {
                self.channels.remove(&channel);
            }
        }
    }

    pub fn set_thread(&mut self, channel: ChannelId, thread: OpId, valid: bool) {
        if valid {
            self.threads.entry(channel).or_default().insert(thread);
        } else if let Some(set) = self.threads.get_mut(&channel) {
            set.remove(&thread);
            if set.is_empty() {
                self.threads.remove(&channel);
            }
        }
    }

    pub fn threads(&self, channel: &ChannelId) -> Vec<OpId> {
        self.threads
            .get(channel)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn channels(&self) -> impl Iterator<Item = ChannelId> + '_ {
        self.channels.keys().copied()
    }

    /// Up to `limit` messages strictly between the cursors, oldest first. With `after` only,
    /// the oldest ones after it; otherwise the newest ones before `before` (or the end).
    pub fn page(
        &self,
        channel: &ChannelId,
        before: Option<(Hlc, MessageId)>,
        after: Option<(Hlc, MessageId)>,
        limit: usize,
        view: impl Fn(&MessageId) -> Option<MessageView>,
    ) -> Vec<MessageView> {
        use std::ops::Bound::{Excluded, Unbounded};
        let Some(set) = self.channels.get(channel) else {
            return Vec::new();
        };
        let lower = after.map_or(Unbounded, Excluded);
        let upper = before.map_or(Unbounded, Excluded);
        if let (Some(a), Some(b)) = (after, before)
            && a >= b
        {
            return Vec::new();
        }
        let range = set.range((lower, upper));
        let views = |it: &mut dyn Iterator<Item = &(Hlc, MessageId)>| {
            it.filter_map(|(_, id)| view(id))
                .take(limit)
                .collect::<Vec<_>>()
        };
        if after.is_some() && before.is_none() {
            views(&mut range.into_iter())
        } else {
            let mut page = views(&mut range.rev());
            page.reverse();
            page
        }
    }
}
