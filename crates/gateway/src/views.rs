//! The JSON shapes clients see (`spec/rest.md`), and the gateway events an applied op causes.

use std::borrow::Cow;
use std::sync::Arc;

use guildhall_proto::access;
use guildhall_proto::body::{Body, ChannelKind};
use guildhall_proto::guild::{Guild, Verdict};
use guildhall_proto::history::MessageView;
use guildhall_proto::id::{ChannelId, GuildId, OpId, UserId};
use guildhall_proto::meta::MetaKey;
use guildhall_proto::perm::Permissions;
use guildhall_proto::sealed::Text;
use guildhall_proto::state::Channel;
use serde_json::{Value, json};

use crate::node::{Event, Gate};

/// What clients see of a text field by `author` in `channel`: sealed text opened with the
/// channel keys held here, or empty until its key is fetched.
pub(crate) fn shown_text<'a>(
    guild: &Guild,
    author: &UserId,
    text: &'a Text,
    channel: &ChannelId,
) -> Cow<'a, str> {
    guild.open_text(author, text, channel).unwrap_or_default()
}

pub fn message_json(guild: &Guild, m: &MessageView) -> Value {
    let reactions: Vec<Value> = m
        .reactions
        .iter()
        .map(|(emoji, users)| json!({ "emoji": emoji, "count": users.len(), "users": users }))
        .collect();
    json!({
        "id": m.id,
        "channel_id": m.channel,
        "author_id": m.author,
        "content": shown_text(guild, &m.author, &m.content, &m.channel),
        "timestamp_ms": m.hlc.ms(),
        "hlc": m.hlc.0.to_string(),
        "edited_at_ms": m.edited_at.map(|h| h.ms()),
        "reply_to": m.reply_to,
        "reactions": reactions,
        "pinned": m.pinned,
        "thread_id": m.thread,
    })
}

/// A thread, if `id` is a `ThreadCreate` held.
pub fn thread_json(guild: &Guild, id: &OpId) -> Option<Value> {
    let env = guild.op(id)?.envelope();
    let Body::ThreadCreate {
        channel,
        name,
        message,
    } = &env.body
    else {
        return None;
    };
    let name = shown_text(guild, &env.author, name, channel);
    Some(json!({ "id": id, "channel_id": channel, "name": name, "message_id": message }))
}

fn meta_str(guild: &Guild, key: MetaKey) -> Option<String> {
    guild.meta().get_str(key)
}

pub fn channel_json(guild: &Guild, id: &ChannelId, c: &Channel) -> Value {
    let overwrites: Vec<Value> = c
        .overwrites
        .iter()
        .map(|(target, o)| json!({ "target": target, "allow": o.allow, "deny": o.deny }))
        .collect();
    let position = guild
        .meta()
        .get_int(MetaKey::ChannelPosition(*id))
        .unwrap_or(i64::from(c.position));
    json!({
        "id": id,
        "guild_id": guild.id(),
        "kind": c.kind,
        "name": meta_str(guild, MetaKey::ChannelName(*id)).unwrap_or_else(|| c.name.clone()),
        "topic": meta_str(guild, MetaKey::ChannelTopic(*id)),
        "parent_id": c.parent,
        "position": position,
        "overwrites": overwrites,
    })
}

/// The channels `user` may view, in display order.
pub fn visible_channels(guild: &Guild, user: &UserId) -> Vec<Value> {
    let state = guild.state();
    let mut channels: Vec<Value> = state
        .channels
        .iter()
        .filter(|(id, _)| {
            state
                .channel_permissions(user, id)
                .contains(Permissions::VIEW_CHANNEL)
        })
        .map(|(id, c)| channel_json(guild, id, c))
        .collect();
    channels.sort_by_key(|c| (c["position"].as_i64(), c["id"].as_str().map(str::to_owned)));
    channels
}

pub fn guild_json(guild: &Guild, user: &UserId) -> Value {
    let state = guild.state();
    let roles: Vec<Value> = state
        .roles
        .iter()
        .map(|(id, r)| {
            json!({
                "id": id,
                "name": meta_str(guild, MetaKey::RoleName(*id)).unwrap_or_else(|| r.name.clone()),
                "color": guild
                    .meta()
                    .get_int(MetaKey::RoleColor(*id))
                    .unwrap_or(i64::from(r.color)),
                "permissions": r.permissions,
                "position": r.position,
            })
        })
        .collect();
    json!({
        "id": guild.id(),
        "name": meta_str(guild, MetaKey::GuildName).unwrap_or_else(|| state.name.clone()),
        "description": meta_str(guild, MetaKey::GuildDescription),
        "icon": meta_str(guild, MetaKey::GuildIcon),
        "owner_id": state.owner,
        "member_count": state.members.len(),
        "roles": roles,
        "channels": visible_channels(guild, user),
        "permissions": state.permissions(user),
    })
}

pub fn member_json(guild: &Guild, user: &UserId) -> Option<Value> {
    let member = guild.state().members.get(user)?;
    let nick = meta_str(guild, MetaKey::MemberNick(*user));
    Some(json!({
        "user_id": user,
        "roles": member.roles,
        "joined_at_ms": member.joined_at.ms(),
        "nick": nick,
    }))
}

pub fn read_states_json(states: &[(ChannelId, OpId)]) -> Value {
    json!(
        states
            .iter()
            .map(|(c, m)| json!({ "channel_id": c, "last_read_id": m }))
            .collect::<Vec<_>>()
    )
}

/// `name` for the thread `thread`, gated by its parent channel.
fn thread_event(guild: &Guild, name: &'static str, thread: &OpId) -> Option<Event> {
    Some(Event {
        guild: guild.id(),
        gate: Gate::Channel(access::gate_channel(guild, thread)),
        name,
        data: thread_json(guild, thread)?,
    })
}

fn message_event(guild: &Guild, name: &'static str, message: &OpId) -> Option<Event> {
    let view = guild.message(message)?;
    Some(Event {
        guild: guild.id(),
        gate: Gate::Channel(access::gate_channel(guild, &view.channel)),
        name,
        data: message_json(guild, &view),
    })
}

/// MESSAGE_DELETE for `message`, if it names a message.
fn delete_event(guild: &Guild, message: &OpId) -> Option<Event> {
    match &guild.op(message)?.envelope().body {
        Body::MessageCreate { channel, .. } => Some(Event {
            guild: guild.id(),
            gate: Gate::Channel(access::gate_channel(guild, channel)),
            name: "MESSAGE_DELETE",
            data: json!({ "id": message, "channel_id": channel }),
        }),
        _ => None,
    }
}

/// The events clients should see after `changes` (ops whose verdict changed) were applied.
pub fn events_for(guild: &Guild, changes: &[(OpId, Verdict)]) -> Vec<Event> {
    let gid = guild.id();
    let mut events = Vec::new();
    let guild_wide = |name: &'static str, data: Value| Event {
        guild: gid,
        gate: Gate::Guild,
        name,
        data,
    };
    for (id, verdict) in changes {
        let Some(op) = guild.op(id) else { continue };
        let env = op.envelope();
        if !verdict.is_valid() {
            // A late removal can invalidate a message clients already show.
            events.extend(delete_event(guild, id));
            continue;
        }
        let event = match &env.body {
            Body::MessageCreate { .. } => message_event(guild, "MESSAGE_CREATE", id),
            Body::MessageEdit { message, .. }
            | Body::ReactionAdd { message, .. }
            | Body::ReactionRemove { message, .. }
            | Body::Pin { message }
            | Body::Unpin { message } => message_event(guild, "MESSAGE_UPDATE", message),
            Body::MessageDelete { message } => delete_event(guild, message),
            Body::ThreadCreate { .. } => thread_event(guild, "THREAD_CREATE", id),
            Body::ChannelCreate { .. } => guild.state().channels.get(id).map(|c| Event {
                guild: gid,
                gate: if c.kind == ChannelKind::Category {
                    Gate::Guild
                } else {
                    Gate::Channel(*id)
                },
                name: "CHANNEL_CREATE",
                data: channel_json(guild, id, c),
            }),
            Body::ChannelDelete { channel } => Some(Event {
                guild: gid,
                gate: Gate::Users(Arc::new(guild.viewers_before(id, channel))),
                name: "CHANNEL_DELETE",
                data: json!({ "id": channel, "guild_id": gid }),
            }),
            Body::Join { .. } => Some(guild_wide(
                "GUILD_MEMBER_ADD",
                member_json(guild, &env.author).unwrap_or(json!({ "user_id": env.author })),
            )),
            Body::Leave => Some(guild_wide(
                "GUILD_MEMBER_REMOVE",
                json!({ "user_id": env.author, "guild_id": gid, "reason": "leave" }),
            )),
            Body::Kick { member, .. } => Some(guild_wide(
                "GUILD_MEMBER_REMOVE",
                json!({ "user_id": member, "guild_id": gid, "reason": "kick" }),
            )),
            Body::Ban { member, .. } => Some(guild_wide(
                "GUILD_BAN_ADD",
                json!({ "user_id": member, "guild_id": gid }),
            )),
            Body::Unban { member } => Some(guild_wide(
                "GUILD_BAN_REMOVE",
                json!({ "user_id": member, "guild_id": gid }),
            )),
            Body::MemberRoleGrant { member, .. } | Body::MemberRoleRevoke { member, .. } => {
                member_json(guild, member).map(|m| guild_wide("GUILD_MEMBER_UPDATE", m))
            }
            Body::GuildDelete => Some(guild_wide("GUILD_DELETE", json!({ "id": gid }))),
            Body::InviteCreate { .. } | Body::InviteRevoke { .. } | Body::Genesis { .. } => None,
            Body::Home { .. } => None,
            Body::MetaChange { .. }
            | Body::RoleCreate { .. }
            | Body::RoleUpdate { .. }
            | Body::RoleDelete { .. }
            | Body::OverwriteSet { .. }
            | Body::OverwriteClear { .. } => Some(guild_wide(
                "GUILD_UPDATE",
                json!({ "id": gid, "op_kind": env.body.kind() }),
            )),
        };
        events.extend(event);
    }
    with_guild_ids(gid, events)
}

/// The events clients should see once channel keys arrived that open the sealed text of `ops`:
/// the message or thread as it now reads.
pub fn events_opened(guild: &Guild, ops: &[OpId]) -> Vec<Event> {
    let events = ops
        .iter()
        .filter(|id| guild.verdict(id).is_some_and(Verdict::is_valid))
        .filter_map(|id| match &guild.op(id)?.envelope().body {
            Body::MessageCreate { .. } => message_event(guild, "MESSAGE_UPDATE", id),
            Body::MessageEdit { message, .. } => message_event(guild, "MESSAGE_UPDATE", message),
            Body::ThreadCreate { .. } => thread_event(guild, "THREAD_UPDATE", id),
            _ => None,
        })
        .collect();
    with_guild_ids(guild.id(), events)
}

/// Every event says which guild it belongs to.
fn with_guild_ids(guild: GuildId, mut events: Vec<Event>) -> Vec<Event> {
    for event in &mut events {
        if let Some(data) = event.data.as_object_mut() {
            data.entry("guild_id").or_insert(json!(guild));
        }
    }
    events
}
