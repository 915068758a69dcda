//! Private channels on a replica (`spec/auth.md` §9): which channel's key seals an op's text,
//! sealing a new op's text when its channel is not open to all, opening sealed text with the
//! keys held, and which keys to fetch from, or give to, other nodes.

use std::borrow::Cow;
use std::collections::HashMap;

use super::Guild;
use crate::access;
use crate::body::Body;
use crate::id::{ChannelId, NodeId, OpId, UserId};
use crate::keyring::Keyring;
use crate::sealed::{ChannelKey, KeyId, Text};

impl Guild {
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The channel whose key seals `body`'s text: the channel it names, a thread's parent, or
    /// the channel of the message an edit targets. `None` for a body without text, or an edit
    /// of a message not held.
    fn sealing_channel(&self, body: &Body) -> Option<ChannelId> {
        let named = match body {
            Body::MessageCreate { channel, .. } | Body::ThreadCreate { channel, .. } => *channel,
            Body::MessageEdit { message, .. } => match &self.ops.get(message)?.envelope().body {
                Body::MessageCreate { channel, .. } => *channel,
                _ => return None,
            },
            _ => return None,
        };
        Some(access::gate_channel(self, &named))
    }

    /// Seals the plain text of a new op by `author` if its channel is not open to all in the
    /// current state, under the channel's key made since the state last changed (from
    /// `fresh_key` if there is none). Returns that key when it is new: it must be stored before
    /// the op is.
    pub fn seal_new_text(
        &mut self,
        author: &UserId,
        body: &mut Body,
        fresh_key: [u8; 32],
        nonce: [u8; 24],
    ) -> Option<ChannelKey> {
        let channel = self.sealing_channel(body)?;
        if self.current.open_to_all(&channel) {
            return None;
        }
        let text = body.text_mut()?;
        let Text::Plain(plain) = text else {
            return None;
        };
        let (key, made) = self
            .keyring
            .sending_key(channel, self.state_version, fresh_key);
        *text = Text::Sealed(key.seal(author, plain, nonce));
        made.then_some(key)
    }

    /// Notes that the peers asked at `now_ms` gave none of `ids` (`wanted_keys` leaves each
    /// alone for a while, longer each time, until the state changes).
    pub fn keys_not_given(&mut self, ids: &[KeyId], now_ms: u64) {
        self.keyring.not_given(ids, now_ms, self.state_version);
    }

    /// Takes a channel key; returns the held ops whose sealed text it opens.
    pub fn add_channel_key(&mut self, key: ChannelKey) -> Vec<OpId> {
        self.keyring.insert(key)
    }

    /// What a reader sees of `text` written by `author` in `channel` (a channel or thread):
    /// plain text as it is, sealed text opened, or `None` when this node cannot open it.
    pub fn open_text<'a>(
        &self,
        author: &UserId,
        text: &'a Text,
        channel: &ChannelId,
    ) -> Option<Cow<'a, str>> {
        match text {
            Text::Plain(plain) => Some(Cow::Borrowed(plain)),
            Text::Sealed(sealed) => {
                let channel = access::gate_channel(self, channel);
                self.keyring.open(author, sealed, &channel).map(Cow::Owned)
            }
        }
    }

    /// Up to `limit` keys of sealed text held here but not openable, in channels `node` may
    /// view now, and not asked for in vain too recently at `now_ms`: the ones worth asking
    /// other viewer nodes for.
    pub fn wanted_keys(&self, node: &NodeId, limit: usize, now_ms: u64) -> Vec<KeyId> {
        let mut views = self.viewer_node_of(node);
        self.keyring
            .due(now_ms, self.state_version)
            .filter(|(_, op)| {
                self.ops
                    .get(*op)
                    .and_then(|op| self.sealing_channel(&op.envelope().body))
                    .is_none_or(|channel| views(&channel))
            })
            .map(|(id, _)| *id)
            .take(limit)
            .collect()
    }

    /// The keys among `ids` held here whose channel `node` may view now: what a node asking
    /// for them is given.
    pub fn keys_for(&self, node: &NodeId, ids: &[KeyId]) -> Vec<ChannelKey> {
        let mut views = self.viewer_node_of(node);
        ids.iter()
            .filter_map(|id| self.keyring.get(id))
            .filter(|key| views(&key.channel))
            .cloned()
            .collect()
    }

    /// Whether `node` is a viewer node of a channel in the current state, each channel found
    /// once however many keys ask about it.
    fn viewer_node_of<'a>(&'a self, node: &'a NodeId) -> impl FnMut(&ChannelId) -> bool + 'a {
        let mut seen = HashMap::new();
        move |channel| {
            *seen
                .entry(*channel)
                .or_insert_with(|| self.current.is_viewer_node(channel, node))
        }
    }
}
