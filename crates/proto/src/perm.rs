//! Permissions: a u64 bitfield with Discord's bit meanings and resolution order.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::body::OverwriteTarget;
use crate::id::UserId;
use crate::state::{Channel, GuildState};

bitflags::bitflags! {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
    pub struct Permissions: u64 {
        const CREATE_INSTANT_INVITE = 1 << 0;
        const KICK_MEMBERS = 1 << 1;
        const BAN_MEMBERS = 1 << 2;
        const ADMINISTRATOR = 1 << 3;
        const MANAGE_CHANNELS = 1 << 4;
        const MANAGE_GUILD = 1 << 5;
        const ADD_REACTIONS = 1 << 6;
        const VIEW_AUDIT_LOG = 1 << 7;
        const PRIORITY_SPEAKER = 1 << 8;
        const STREAM = 1 << 9;
        const VIEW_CHANNEL = 1 << 10;
        const SEND_MESSAGES = 1 << 11;
        const SEND_TTS_MESSAGES = 1 << 12;
        const MANAGE_MESSAGES = 1 << 13;
        const EMBED_LINKS = 1 << 14;
        const ATTACH_FILES = 1 << 15;
        const READ_MESSAGE_HISTORY = 1 << 16;
        const MENTION_EVERYONE = 1 << 17;
        const USE_EXTERNAL_EMOJIS = 1 << 18;
        const VIEW_GUILD_INSIGHTS = 1 << 19;
        const CONNECT = 1 << 20;
        const SPEAK = 1 << 21;
        const MUTE_MEMBERS = 1 << 22;
        const DEAFEN_MEMBERS = 1 << 23;
        const MOVE_MEMBERS = 1 << 24;
        const USE_VAD = 1 << 25;
        const CHANGE_NICKNAME = 1 << 26;
        const MANAGE_NICKNAMES = 1 << 27;
        const MANAGE_ROLES = 1 << 28;
        const MANAGE_WEBHOOKS = 1 << 29;
        const MANAGE_GUILD_EXPRESSIONS = 1 << 30;
        const USE_APPLICATION_COMMANDS = 1 << 31;
        const REQUEST_TO_SPEAK = 1 << 32;
        const MANAGE_EVENTS = 1 << 33;
        const MANAGE_THREADS = 1 << 34;
        const CREATE_PUBLIC_THREADS = 1 << 35;
        const CREATE_PRIVATE_THREADS = 1 << 36;
        const USE_EXTERNAL_STICKERS = 1 << 37;
        const SEND_MESSAGES_IN_THREADS = 1 << 38;
        const USE_EMBEDDED_ACTIVITIES = 1 << 39;
        const MODERATE_MEMBERS = 1 << 40;
        const PIN_MESSAGES = 1 << 51;
    }
}

impl Permissions {
    /// What @everyone may do in a new guild.
    pub const DEFAULT_EVERYONE: Permissions = Permissions::VIEW_CHANNEL
        .union(Permissions::SEND_MESSAGES)
        .union(Permissions::READ_MESSAGE_HISTORY)
        .union(Permissions::ADD_REACTIONS)
        .union(Permissions::EMBED_LINKS)
        .union(Permissions::ATTACH_FILES)
        .union(Permissions::CREATE_INSTANT_INVITE)
        .union(Permissions::CHANGE_NICKNAME)
        .union(Permissions::CONNECT)
        .union(Permissions::SPEAK)
        .union(Permissions::USE_VAD)
        .union(Permissions::CREATE_PUBLIC_THREADS)
        .union(Permissions::SEND_MESSAGES_IN_THREADS)
        .union(Permissions::USE_EXTERNAL_EMOJIS);
}

/// Permissions travel as decimal strings in JSON, as in Discord's API: a u64 does not fit in a
/// JavaScript number.
impl Serialize for Permissions {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.bits())
    }
}

impl<'de> Deserialize<'de> for Permissions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse::<u64>()
            .map(Permissions::from_bits_retain)
            .map_err(serde::de::Error::custom)
    }
}

/// Guild-wide permissions: the owner has all; otherwise @everyone's bits OR the member's roles'
/// bits, and ADMINISTRATOR grants all. Non-members have none.
pub fn base_permissions(state: &GuildState, user: &UserId) -> Permissions {
    if *user == state.owner {
        return Permissions::all();
    }
    let Some(member) = state.members.get(user) else {
        return Permissions::empty();
    };
    let mut perms = state
        .everyone_role()
        .map(|r| r.permissions)
        .unwrap_or_default();
    for role in member.roles.iter().filter_map(|id| state.roles.get(id)) {
        perms |= role.permissions;
    }
    if perms.contains(Permissions::ADMINISTRATOR) {
        Permissions::all()
    } else {
        perms
    }
}

/// Permissions in a channel: base permissions, then the channel's overwrites in Discord's
/// order: @everyone (deny, then allow), all of the member's roles together (deny, then allow),
/// the member (deny, then allow). Without VIEW_CHANNEL a member can do nothing in the channel.
pub fn channel_permissions(state: &GuildState, user: &UserId, channel: &Channel) -> Permissions {
    let base = base_permissions(state, user);
    if base.contains(Permissions::ADMINISTRATOR) {
        return Permissions::all();
    }
    let mut perms = base;
    let overwrite = |target| channel.overwrites.get(&target);
    if let Some(ow) = overwrite(OverwriteTarget::Role(state.id)) {
        perms = (perms - ow.deny) | ow.allow;
    }
    if let Some(member) = state.members.get(user) {
        let (mut deny, mut allow) = (Permissions::empty(), Permissions::empty());
        for role in &member.roles {
            if let Some(ow) = overwrite(OverwriteTarget::Role(*role)) {
                deny |= ow.deny;
                allow |= ow.allow;
            }
        }
        perms = (perms - deny) | allow;
    }
    if let Some(ow) = overwrite(OverwriteTarget::Member(*user)) {
        perms = (perms - ow.deny) | ow.allow;
    }
    if perms.contains(Permissions::VIEW_CHANNEL) {
        perms
    } else {
        Permissions::empty()
    }
}
