//! Voice channels on this node: who is in which voice channel (in memory, per node), the
//! gateway's voice ops, moderator mutes, deafens and moves, and the SFU's flags kept in step
//! with permissions as the guild changes. Media itself is `guildhall-voice`'s job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use guildhall_proto::access;
use guildhall_proto::guild::Guild;
use guildhall_proto::id::{ChannelId, GuildId, UserId};
use guildhall_proto::perm::Permissions;
use guildhall_voice::{Flags, ParticipantId, Voice, VoiceError, VoiceEvent};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::error::ApiError;
use crate::node::{Event, Gate, Node};

/// The SFU and the voice states of this node's users.
pub struct VoiceHub {
    sfu: Voice,
    states: Mutex<VoiceStates>,
}

#[derive(Default)]
struct VoiceStates {
    by_user: HashMap<UserId, VoiceState>,
    next_participant: ParticipantId,
    /// Moderator mutes and deafens; they outlast leaving and rejoining.
    moderated: HashMap<(GuildId, UserId), Moderation>,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Moderation {
    mute: bool,
    deaf: bool,
}

#[derive(Clone)]
struct VoiceState {
    guild: GuildId,
    channel: ChannelId,
    /// The gateway session that connected; its end ends the connection.
    session: String,
    participant: ParticipantId,
    self_mute: bool,
    self_deaf: bool,
    moderation: Moderation,
    speaking: bool,
    /// It lacks SPEAK in the channel: connected, heard by no one.
    suppress: bool,
}

impl VoiceState {
    fn json(&self, user: &UserId, channel: Option<ChannelId>) -> Value {
        json!({
            "guild_id": self.guild,
            "channel_id": channel,
            "user_id": user,
            "session_id": self.session,
            "self_mute": self.self_mute,
            "self_deaf": self.self_deaf,
            "mute": self.moderation.mute,
            "deaf": self.moderation.deaf,
            "speaking": self.speaking && channel.is_some(),
            "suppress": self.suppress,
        })
    }

    /// The state as it now stands, for those who can see its channel.
    fn event(&self, user: &UserId) -> Event {
        Event {
            guild: self.guild,
            gate: Gate::Channel(self.channel),
            name: "VOICE_STATE_UPDATE",
            data: self.json(user, Some(self.channel)),
        }
    }

    /// The user left this state's channel, for those who could see it; `moved` when another
    /// event puts them in another channel straight after.
    fn left_event(&self, user: &UserId, moved: bool) -> Event {
        let mut data = self.json(user, None);
        data["moved"] = json!(moved);
        Event {
            guild: self.guild,
            gate: Gate::Channel(self.channel),
            name: "VOICE_STATE_UPDATE",
            data,
        }
    }

    /// What the SFU lets through: a deafened user is muted too, as in every voice app.
    fn flags(&self, may_speak: bool) -> Flags {
        let deaf = self.self_deaf || self.moderation.deaf;
        Flags {
            speak: may_speak && !deaf && !self.self_mute && !self.moderation.mute,
            hear: !deaf,
        }
    }

    fn room(&self) -> String {
        room(&self.guild, &self.channel)
    }
}

fn room(guild: &GuildId, channel: &ChannelId) -> String {
    format!("{guild}/{channel}")
}

/// Whether an event can change who may be in, or speak in, a voice channel (messages, typing,
/// presence and voice events cannot).
fn may_change_voice_rights(event: &str) -> bool {
    !(event.starts_with("VOICE_")
        || event.starts_with("MESSAGE_")
        || matches!(event, "TYPING_START" | "PRESENCE_UPDATE" | "THREAD_CREATE"))
}

fn voice_error(e: VoiceError) -> ApiError {
    match e {
        VoiceError::Stopped => unavailable(),
        e => ApiError::bad_request(e.code(), e.to_string()),
    }
}

fn unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "voice_unavailable",
        "this node does not serve voice",
    )
}

/// A gateway `voice_connect`: join (or renegotiate in) a voice channel with an SDP offer.
#[derive(Deserialize)]
pub struct VoiceConnect {
    /// Echoed in the `voice_answer` or `error` that answers this request.
    #[serde(default)]
    pub nonce: Option<String>,
    pub guild_id: GuildId,
    pub channel_id: ChannelId,
    pub sdp: String,
    #[serde(default)]
    pub self_mute: bool,
    #[serde(default)]
    pub self_deaf: bool,
}

/// A gateway `voice_state`: the user's own mute and deafen.
#[derive(Deserialize)]
pub struct SelfVoice {
    pub self_mute: bool,
    pub self_deaf: bool,
}

impl Node {
    /// Serves voice channels through `sfu`, whose events arrive on `events`.
    pub fn attach_voice(
        self: &Arc<Self>,
        sfu: Voice,
        mut events: mpsc::UnboundedReceiver<VoiceEvent>,
    ) {
        let hub = VoiceHub {
            sfu,
            states: Mutex::new(VoiceStates::default()),
        };
        if self.voice.set(hub).is_err() {
            return;
        }
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let Some(node) = node.upgrade() else { return };
                node.on_sfu_event(event);
            }
        });
        let mut guild_events = self.subscribe();
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let changed = match guild_events.recv().await {
                    Ok(published) if !may_change_voice_rights(published.event.name) => continue,
                    Ok(published) => Some(published.event.guild),
                    Err(broadcast::error::RecvError::Lagged(_)) => None,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let Some(node) = node.upgrade() else { return };
                node.refresh_voice(changed);
            }
        });
    }

    /// The SFU's counters, if this node serves voice.
    pub async fn voice_stats(&self) -> Option<guildhall_voice::SfuStats> {
        self.voice.get()?.sfu.stats().await.ok()
    }

    fn hub(&self) -> Result<&VoiceHub, ApiError> {
        self.voice.get().ok_or_else(unavailable)
    }

    /// Joins a voice channel (or answers a renegotiation): returns the SDP answer.
    pub async fn voice_connect(
        &self,
        user: &UserId,
        session: &str,
        req: VoiceConnect,
    ) -> Result<String, ApiError> {
        let hub = self.hub()?;
        let may_speak = self.may_speak(user, &req.guild_id, &req.channel_id)?;
        let (state, previous) = {
            let mut states = hub.states.lock().expect("voice lock");
            let moderation = states
                .moderated
                .get(&(req.guild_id, *user))
                .copied()
                .unwrap_or_default();
            let previous = states.by_user.get(user).cloned();
            let participant = match &previous {
                Some(p) if p.session == session => p.participant,
                _ => {
                    states.next_participant += 1;
                    states.next_participant
                }
            };
            let state = VoiceState {
                guild: req.guild_id,
                channel: req.channel_id,
                session: session.to_owned(),
                participant,
                self_mute: req.self_mute,
                self_deaf: req.self_deaf,
                moderation,
                speaking: false,
                suppress: !may_speak,
            };
            (state, previous)
        };
        let answer = hub
            .sfu
            .offer(
                state.participant,
                &state.room(),
                state.flags(may_speak),
                req.sdp,
            )
            .await
            .map_err(voice_error)?;
        hub.states
            .lock()
            .expect("voice lock")
            .by_user
            .insert(*user, state.clone());
        if let Some(previous) = previous {
            if previous.participant != state.participant {
                hub.sfu.leave(previous.participant);
            }
            if (previous.guild, previous.channel) != (state.guild, state.channel) {
                self.publish(previous.left_event(user, true));
            }
        }
        self.publish(state.event(user));
        Ok(answer)
    }

    /// Changes the user's own mute and deafen.
    pub fn voice_self(&self, user: &UserId, change: SelfVoice) -> Result<(), ApiError> {
        self.change_voice(user, |state| {
            state.self_mute = change.self_mute;
            state.self_deaf = change.self_deaf;
        })
        .ok_or_else(|| ApiError::bad_request("not_in_voice", "you are not in a voice channel"))
    }

    /// Applies `change` to a user's voice state, pushes the new flags to the SFU and tells
    /// everyone who can see the channel. `None` if the user is not in voice.
    fn change_voice(&self, user: &UserId, change: impl FnOnce(&mut VoiceState)) -> Option<()> {
        let hub = self.voice.get()?;
        let (guild, channel) = {
            let mut states = hub.states.lock().expect("voice lock");
            let state = states.by_user.get_mut(user)?;
            change(state);
            (state.guild, state.channel)
        };
        let may_speak = self.may_speak(user, &guild, &channel).unwrap_or(false);
        let state = {
            let mut states = hub.states.lock().expect("voice lock");
            let state = states.by_user.get_mut(user)?;
            state.suppress = !may_speak;
            state.clone()
        };
        hub.sfu.set_flags(state.participant, state.flags(may_speak));
        self.publish(state.event(user));
        Some(())
    }

    /// Whether `user` may be in `channel` (`Err` if not), and may speak there.
    fn may_speak(
        &self,
        user: &UserId,
        guild: &GuildId,
        channel: &ChannelId,
    ) -> Result<bool, ApiError> {
        let guild = self.guild(guild)?;
        Ok(access::voice(
            guild.lock().expect("guild lock").state(),
            user,
            channel,
        )?)
    }

    /// Leaves voice, if `user` is in it (and, with `session`, only if that session joined).
    pub fn voice_leave(&self, user: &UserId, session: Option<&str>) {
        let Some(hub) = self.voice.get() else { return };
        let state = {
            let mut states = hub.states.lock().expect("voice lock");
            match states.by_user.get(user) {
                Some(s) if session.is_none_or(|id| s.session == id) => states.by_user.remove(user),
                _ => None,
            }
        };
        if let Some(state) = state {
            hub.sfu.leave(state.participant);
            self.publish(state.left_event(user, false));
        }
    }

    /// A moderator's mute, deafen, move or disconnect of someone in voice.
    pub fn voice_moderate(
        &self,
        actor: &UserId,
        guild_id: &GuildId,
        target: &UserId,
        change: ModerateVoice,
    ) -> Result<Value, ApiError> {
        let hub = self.hub()?;
        let current = hub
            .states
            .lock()
            .expect("voice lock")
            .by_user
            .get(target)
            .filter(|s| s.guild == *guild_id)
            .cloned();
        {
            let guild = self.guild(guild_id)?;
            let guild = guild.lock().expect("guild lock");
            let state = guild.state();
            if !state.is_member(actor) {
                return Err(ApiError::not_found(
                    "unknown_guild",
                    "no such guild, or you are not a member",
                ));
            }
            let in_channel = |perm: Permissions| match &current {
                Some(s) => state.channel_permissions(actor, &s.channel).contains(perm),
                None => state.permissions(actor).contains(perm),
            };
            let needs = [
                (
                    change.mute.is_some(),
                    Permissions::MUTE_MEMBERS,
                    "MUTE_MEMBERS",
                ),
                (
                    change.deaf.is_some(),
                    Permissions::DEAFEN_MEMBERS,
                    "DEAFEN_MEMBERS",
                ),
                (
                    change.channel_id.is_some(),
                    Permissions::MOVE_MEMBERS,
                    "MOVE_MEMBERS",
                ),
            ];
            for (asked, perm, name) in needs {
                if asked && !in_channel(perm) {
                    return Err(ApiError::forbidden(format!("you need {name}")));
                }
            }
            if let Some(Some(to)) = change.channel_id {
                if current.is_none() {
                    return Err(ApiError::bad_request(
                        "not_in_voice",
                        "only someone in a voice channel can be moved",
                    ));
                }
                if !state
                    .channel_permissions(actor, &to)
                    .contains(Permissions::MOVE_MEMBERS)
                {
                    return Err(ApiError::forbidden(
                        "you need MOVE_MEMBERS in the target channel",
                    ));
                }
                access::voice(guild.state(), target, &to)?;
            }
        }
        let moderation = {
            let mut states = hub.states.lock().expect("voice lock");
            let moderation = states.moderated.entry((*guild_id, *target)).or_default();
            moderation.mute = change.mute.unwrap_or(moderation.mute);
            moderation.deaf = change.deaf.unwrap_or(moderation.deaf);
            let moderation = *moderation;
            if moderation == Moderation::default() {
                states.moderated.remove(&(*guild_id, *target));
            }
            // A moderator of this guild acts only on a voice connection in this guild.
            if let Some(state) = states
                .by_user
                .get_mut(target)
                .filter(|s| s.guild == *guild_id)
            {
                state.moderation = moderation;
            }
            moderation
        };
        if let Some(current) = current {
            match change.channel_id {
                Some(None) => self.voice_leave(target, Some(&current.session)),
                Some(Some(to)) => {
                    self.publish(current.left_event(target, true));
                    self.change_voice(target, |state| state.channel = to);
                    if let Some(state) = self.voice_state_of(target) {
                        hub.sfu.move_to(state.participant, &state.room());
                    }
                }
                None => {
                    self.change_voice(target, |_| {});
                }
            }
        }
        Ok(json!({
            "user_id": target,
            "mute": moderation.mute,
            "deaf": moderation.deaf,
            "channel_id": self.voice_state_of(target).filter(|s| s.guild == *guild_id).map(|s| s.channel),
        }))
    }

    fn voice_state_of(&self, user: &UserId) -> Option<VoiceState> {
        let hub = self.voice.get()?;
        let states = hub.states.lock().expect("voice lock");
        states.by_user.get(user).cloned()
    }

    /// A guild as `viewer` sees it (`views::guild_json`) with its voice states: what READY
    /// and `GET /guilds/{g}` show.
    pub fn guild_view(&self, guild: &Guild, viewer: &UserId) -> Value {
        let mut view = crate::views::guild_json(guild, viewer);
        view["voice_states"] = json!(self.voice_states_json(guild, viewer));
        view
    }

    /// The voice states in `guild` that `viewer` can see (voice channels it may view).
    fn voice_states_json(&self, guild: &Guild, viewer: &UserId) -> Vec<Value> {
        let Some(hub) = self.voice.get() else {
            return Vec::new();
        };
        let state = guild.state();
        let states = hub.states.lock().expect("voice lock");
        let mut visible: Vec<Value> = states
            .by_user
            .iter()
            .filter(|(_, s)| {
                s.guild == guild.id()
                    && state
                        .channel_permissions(viewer, &s.channel)
                        .contains(Permissions::VIEW_CHANNEL)
            })
            .map(|(user, s)| s.json(user, Some(s.channel)))
            .collect();
        visible.sort_by(|a, b| a["user_id"].as_str().cmp(&b["user_id"].as_str()));
        visible
    }

    /// Re-checks everyone in voice in `guild` (or every guild) after it changed: those who may
    /// no longer be there are disconnected, and speaking rights follow SPEAK.
    fn refresh_voice(&self, guild: Option<GuildId>) {
        let Some(hub) = self.voice.get() else { return };
        let in_voice: Vec<(UserId, VoiceState)> = {
            let states = hub.states.lock().expect("voice lock");
            states
                .by_user
                .iter()
                .filter(|(_, s)| guild.is_none_or(|g| s.guild == g))
                .map(|(u, s)| (*u, s.clone()))
                .collect()
        };
        for (user, state) in in_voice {
            match self.may_speak(&user, &state.guild, &state.channel) {
                // SPEAK was given or taken: new flags, and everyone sees who cannot be heard.
                Ok(may_speak) if state.suppress == may_speak => {
                    self.change_voice(&user, |_| {});
                }
                Ok(_) => {}
                Err(_) => self.voice_leave(&user, Some(&state.session)),
            }
        }
    }

    fn on_sfu_event(&self, event: VoiceEvent) {
        let Some(hub) = self.voice.get() else { return };
        // `None` for a connection that is gone.
        let (participant, speaking) = match event {
            VoiceEvent::Connected(_) => return,
            VoiceEvent::Speaking {
                participant,
                speaking,
            } => (participant, Some(speaking)),
            VoiceEvent::Gone(participant) => (participant, None),
        };
        let found = {
            let mut states = hub.states.lock().expect("voice lock");
            states
                .by_user
                .iter_mut()
                .find(|(_, s)| s.participant == participant)
                .map(|(user, s)| {
                    s.speaking = speaking.unwrap_or(s.speaking);
                    (*user, s.clone())
                })
        };
        let Some((user, state)) = found else { return };
        match speaking {
            None => self.voice_leave(&user, Some(&state.session)),
            Some(speaking) => self.publish(Event {
                guild: state.guild,
                gate: Gate::Channel(state.channel),
                name: "VOICE_SPEAKING",
                data: json!({
                    "guild_id": state.guild,
                    "channel_id": state.channel,
                    "user_id": user,
                    "speaking": speaking,
                }),
            }),
        }
    }
}

/// `PATCH /guilds/{g}/members/{u}/voice`: each field present is a change.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModerateVoice {
    #[serde(default)]
    pub mute: Option<bool>,
    #[serde(default)]
    pub deaf: Option<bool>,
    /// A channel to move to, or `null` to disconnect.
    #[serde(default, deserialize_with = "present")]
    pub channel_id: Option<Option<ChannelId>>,
}

/// Tells a field given as `null` from a field left out.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

pub mod routes {
    use std::sync::Arc;

    use axum::Json;
    use axum::extract::{Path, State};
    use guildhall_proto::id::{GuildId, UserId};
    use serde_json::{Value, json};

    use super::ModerateVoice;
    use crate::error::ApiError;
    use crate::node::Node;
    use crate::rest::{Authed, JsonBody, id};

    pub async fn list(
        State(node): State<Arc<Node>>,
        Authed(me): Authed,
        Path(g): Path<String>,
    ) -> Result<Json<Value>, ApiError> {
        let gid: GuildId = id(&g, "guild id")?;
        node.with_member_guild(&me.user_id, &gid, |guild| {
            Ok(Json(json!(node.voice_states_json(guild, &me.user_id))))
        })
    }

    pub async fn moderate(
        State(node): State<Arc<Node>>,
        Authed(me): Authed,
        Path((g, u)): Path<(String, String)>,
        JsonBody(change): JsonBody<ModerateVoice>,
    ) -> Result<Json<Value>, ApiError> {
        let gid: GuildId = id(&g, "guild id")?;
        let target: UserId = id(&u, "user id")?;
        node.voice_moderate(&me.user_id, &gid, &target, change)
            .map(Json)
    }
}
