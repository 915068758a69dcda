//! Read-side rules, next to the write-side ones of `state.rs` and `guild.rs`: who may see a
//! guild, read a channel, type in it, or be in a voice channel. REST, the WebSocket gateway,
//! voice and search all ask here, so one rule has one answer (`spec/rest.md` §3,
//! `spec/gateway.md` §9, `spec/voice.md`).

use thiserror::Error;

use crate::body::{Body, ChannelKind};
use crate::guild::Guild;
use crate::id::{ChannelId, UserId};
use crate::perm::Permissions;
use crate::state::GuildState;

/// Why a read or a signal is refused, with a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Denied {
    /// Also the answer to anyone outside the guild: its existence is not revealed.
    #[error("no such guild, or you are not a member")]
    NotMember,
    #[error("the author is banned from the guild")]
    Banned,
    #[error("the guild was deleted")]
    GuildDeleted,
    #[error("no such channel")]
    UnknownChannel,
    #[error("you cannot read this channel")]
    CannotRead,
    #[error("you cannot send messages in this channel")]
    CannotSend,
    #[error("no such voice channel in this guild")]
    NotVoice,
    #[error("you need CONNECT in this voice channel")]
    CannotConnect,
}

impl Denied {
    pub fn code(&self) -> &'static str {
        match self {
            Denied::NotMember => "unknown_guild",
            Denied::Banned => "banned",
            Denied::GuildDeleted => "guild_deleted",
            Denied::UnknownChannel => "unknown_channel",
            Denied::CannotRead | Denied::CannotSend | Denied::CannotConnect => "missing_permission",
            Denied::NotVoice => "unknown_channel",
        }
    }
}

/// Whether `user` may read and write the guild at all: a banned user is told so, anyone else
/// outside it finds no such guild, and a member of a deleted guild learns it is gone.
pub fn member(state: &GuildState, user: &UserId) -> Result<(), Denied> {
    if state.bans.contains_key(user) {
        Err(Denied::Banned)
    } else if !state.is_member(user) {
        Err(Denied::NotMember)
    } else if state.deleted {
        Err(Denied::GuildDeleted)
    } else {
        Ok(())
    }
}

/// The channel whose permissions gate `channel`: a thread's parent, else `channel` itself.
/// A thread inherits everything from its parent.
pub fn gate_channel(guild: &Guild, channel: &ChannelId) -> ChannelId {
    thread_parent(guild, channel).unwrap_or(*channel)
}

/// The parent channel of a thread; `None` if `channel` is not a thread held here.
pub fn thread_parent(guild: &Guild, channel: &ChannelId) -> Option<ChannelId> {
    match &guild.op(channel)?.envelope().body {
        Body::ThreadCreate { channel, .. } => Some(*channel),
        _ => None,
    }
}

/// Whether `user` may see what happens in `channel` (a channel or thread): `VIEW_CHANNEL` in
/// its gating channel. What live events are shown by.
pub fn may_view(guild: &Guild, user: &UserId, channel: &ChannelId) -> bool {
    guild
        .state()
        .channel_permissions(user, &gate_channel(guild, channel))
        .contains(Permissions::VIEW_CHANNEL)
}

/// Whether `user` may read the history of `channel` (a channel or thread): `VIEW_CHANNEL`
/// and `READ_MESSAGE_HISTORY` in its gating channel, which must exist.
pub fn read(guild: &Guild, user: &UserId, channel: &ChannelId) -> Result<(), Denied> {
    let gate = gate_channel(guild, channel);
    let state = guild.state();
    if !state.channels.contains_key(&gate) {
        return Err(Denied::UnknownChannel);
    }
    let perms = state.channel_permissions(user, &gate);
    if !perms.contains(Permissions::VIEW_CHANNEL | Permissions::READ_MESSAGE_HISTORY) {
        return Err(Denied::CannotRead);
    }
    Ok(())
}

/// The channel whose `VIEW_CHANNEL` gates `user` typing in `channel` (a thread's parent), if
/// they may send there: a text channel or a thread of one, with `SEND_MESSAGES` (or
/// `SEND_MESSAGES_IN_THREADS`).
pub fn typing(guild: &Guild, user: &UserId, channel: &ChannelId) -> Result<ChannelId, Denied> {
    let (gate, needed) = match thread_parent(guild, channel) {
        Some(parent) => (parent, Permissions::SEND_MESSAGES_IN_THREADS),
        None => (*channel, Permissions::SEND_MESSAGES),
    };
    let state = guild.state();
    let text = state
        .channels
        .get(&gate)
        .is_some_and(|c| c.kind == ChannelKind::Text);
    if text && state.channel_permissions(user, &gate).contains(needed) {
        Ok(gate)
    } else {
        Err(Denied::CannotSend)
    }
}

/// Whether `user` may be in `channel` (a voice channel it can view and connect to), and if so
/// whether it may speak there.
pub fn voice(state: &GuildState, user: &UserId, channel: &ChannelId) -> Result<bool, Denied> {
    if state.deleted || !state.is_member(user) {
        return Err(Denied::NotMember);
    }
    if state.channels.get(channel).map(|c| c.kind) != Some(ChannelKind::Voice) {
        return Err(Denied::NotVoice);
    }
    let permissions = state.channel_permissions(user, channel);
    if !permissions.contains(Permissions::VIEW_CHANNEL | Permissions::CONNECT) {
        return Err(Denied::CannotConnect);
    }
    Ok(permissions.contains(Permissions::SPEAK))
}
