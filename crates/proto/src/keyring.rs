//! The channel keys a node holds for one guild (`spec/auth.md` §9): those it made to seal its
//! users' text and those fetched from other viewer nodes, the key it seals each channel's new
//! text with, and the keys of sealed text it holds but cannot open yet. Pure state: fresh keys
//! are passed in.

use std::collections::{BTreeMap, HashMap};

use crate::id::{ChannelId, GuildId, OpId, UserId};
use crate::sealed::{ChannelKey, KeyId, Sealed};

/// How long a key that no peer gave is left alone before it is asked for again: doubling from
/// the first to the last, so that keys nobody holds (a member may seal under any key id) cost a
/// few requests and never crowd out keys that can be had.
pub const FIRST_RETRY_MS: u64 = 5_000;
pub const LAST_RETRY_MS: u64 = 600_000;

/// Held ops sealed under a key not held here, and how asking for it has gone.
#[derive(Debug, Clone, Default)]
struct Missing {
    ops: Vec<OpId>,
    /// Times no peer gave it since the state last changed, and when to ask again.
    refusals: u32,
    retry_at_ms: u64,
    /// The state version of the last refusal: a change of the state (a grant of the channel,
    /// say) makes the key worth asking for at once.
    refused_at_version: u64,
}

#[derive(Debug, Clone)]
pub struct Keyring {
    guild: GuildId,
    keys: HashMap<KeyId, ChannelKey>,
    /// Per channel, the key new text is sealed with and the guild-state version it was made at:
    /// a key outlives no change of the state, so a node that stops being a viewer cannot open
    /// text sealed after that change is seen.
    sending: HashMap<ChannelId, (KeyId, u64)>,
    missing: BTreeMap<KeyId, Missing>,
}

impl Keyring {
    pub fn new(guild: GuildId) -> Keyring {
        Keyring {
            guild,
            keys: HashMap::new(),
            sending: HashMap::new(),
            missing: BTreeMap::new(),
        }
    }

    pub fn get(&self, id: &KeyId) -> Option<&ChannelKey> {
        self.keys.get(id)
    }

    /// Takes a key of this guild; returns the held ops whose sealed text it opens (none if it
    /// was held already or belongs to another guild).
    pub fn insert(&mut self, key: ChannelKey) -> Vec<OpId> {
        if key.guild != self.guild {
            return Vec::new();
        }
        let id = key.id();
        if self.keys.insert(id, key).is_some() {
            return Vec::new();
        }
        self.missing.remove(&id).map(|m| m.ops).unwrap_or_default()
    }

    /// Notes a held op whose text is sealed under `key`.
    pub(crate) fn note_sealed(&mut self, op: OpId, key: KeyId) {
        if !self.keys.contains_key(&key) {
            self.missing.entry(key).or_default().ops.push(op);
        }
    }

    /// The key to seal new text of `channel` with at guild-state `version`: the one made for
    /// it at that version, else a new one from `fresh` (returned as made, to be stored before
    /// anything sealed with it is).
    pub fn sending_key(
        &mut self,
        channel: ChannelId,
        version: u64,
        fresh: [u8; 32],
    ) -> (ChannelKey, bool) {
        if let Some((id, made_at)) = self.sending.get(&channel)
            && *made_at == version
            && let Some(key) = self.keys.get(id)
        {
            return (key.clone(), false);
        }
        let key = ChannelKey {
            guild: self.guild,
            channel,
            key: fresh,
        };
        let id = key.id();
        self.keys.insert(id, key.clone());
        self.sending.insert(channel, (id, version));
        (key, true)
    }

    /// Keys of held sealed text not held here, each with the first op sealed under it, less
    /// those no peer gave at guild-state `version` whose retry is not due at `now_ms`.
    pub fn due(&self, now_ms: u64, version: u64) -> impl Iterator<Item = (&KeyId, &OpId)> {
        self.missing
            .iter()
            .filter(move |(_, m)| {
                m.refusals == 0 || m.refused_at_version != version || now_ms >= m.retry_at_ms
            })
            .filter_map(|(id, m)| Some((id, m.ops.first()?)))
    }

    /// Notes that no peer gave the keys `ids` (those still missing) at `now_ms`.
    pub fn not_given(&mut self, ids: &[KeyId], now_ms: u64, version: u64) {
        for id in ids {
            let Some(missing) = self.missing.get_mut(id) else {
                continue;
            };
            if missing.refused_at_version != version {
                missing.refusals = 0;
            }
            let wait = FIRST_RETRY_MS
                .saturating_mul(1 << missing.refusals.min(16))
                .min(LAST_RETRY_MS);
            missing.refusals += 1;
            missing.retry_at_ms = now_ms.saturating_add(wait);
            missing.refused_at_version = version;
        }
    }

    /// Opens `sealed` by `author`, if its key is held and belongs to `channel`.
    pub fn open(&self, author: &UserId, sealed: &Sealed, channel: &ChannelId) -> Option<String> {
        let key = self.keys.get(&sealed.key)?;
        if key.channel != *channel {
            return None;
        }
        key.open(author, sealed)
    }
}
