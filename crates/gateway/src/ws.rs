//! The WebSocket gateway (`spec/gateway.md`): hello, identify or resume, sequenced dispatches
//! from a per-session buffer that outlives the socket (so resume replays exactly what was
//! missed), heartbeats, sends with nonces, typing, presence and subscriptions.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::response::Response;
use guildhall_proto::body::Body;
use guildhall_proto::id::{ChannelId, GuildId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};

use crate::error::ApiError;
use crate::node::{Event, Gate, Node, Published, Status};
use crate::views;

/// Close codes (4000–4999 are ours; 4000 is reserved; see `spec/gateway.md`).
pub mod close {
    pub const UNKNOWN_OP: u16 = 4001;
    pub const DECODE_ERROR: u16 = 4002;
    pub const NOT_AUTHENTICATED: u16 = 4003;
    pub const AUTHENTICATION_FAILED: u16 = 4004;
    pub const ALREADY_AUTHENTICATED: u16 = 4005;
    pub const RATE_LIMITED: u16 = 4008;
    pub const SESSION_TIMED_OUT: u16 = 4009;
    pub const FRAME_TOO_LARGE: u16 = 4010;
    pub const SLOW_CONSUMER: u16 = 4011;
    pub const SESSION_REPLACED: u16 = 4012;
}

/// Dispatches a session keeps for replay; a detached session that overflows it cannot resume.
const MAX_BUFFERED: usize = 4096;
/// Rate-limit refusals in a row before the socket is closed.
const MAX_REFUSALS: u32 = 20;

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map.lock().expect("sessions lock").get(id).cloned()
    }

    fn insert(&self, session: Arc<Session>) {
        self.map
            .lock()
            .expect("sessions lock")
            .insert(session.id.clone(), session);
    }

    fn remove(&self, id: &str) {
        self.map.lock().expect("sessions lock").remove(id);
    }

    pub fn len(&self) -> usize {
        self.map.lock().expect("sessions lock").len()
    }

    /// Ends the sessions identified with a token (logout) or, with `None`, all of a user's
    /// (logout everywhere): their sockets close with 4004 and they cannot be resumed.
    pub fn revoke(&self, user: &UserId, token_hash: Option<&[u8; 32]>) {
        let doomed = self.of_user(user, |s| token_hash.is_none_or(|h| *h == s.token_hash));
        for session in doomed {
            session.inner.lock().expect("session lock").revoked = true;
            session.wake.notify_waiters();
            self.remove(&session.id);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues a dispatch for every session of one user (DMs: addressed to users, not guilds).
    pub fn push_to_user(&self, user: &UserId, name: &'static str, data: &Value) {
        let data: Arc<str> = data.to_string().into();
        for session in self.of_user(user, |_| true) {
            session.push_encoded(name, data.clone());
        }
    }

    /// A user's sessions that `keep` selects, taken out of the lock before they are used.
    fn of_user(&self, user: &UserId, keep: impl Fn(&Session) -> bool) -> Vec<Arc<Session>> {
        self.map
            .lock()
            .expect("sessions lock")
            .values()
            .filter(|s| s.user == *user && keep(s))
            .cloned()
            .collect()
    }
}

struct Session {
    id: String,
    user: UserId,
    /// The hash of the token that identified it: logging that token out ends the session.
    token_hash: [u8; 32],
    inner: Mutex<SessionInner>,
    wake: Notify,
}

#[derive(Clone)]
struct Buffered {
    seq: u64,
    name: &'static str,
    data: Arc<str>,
}

impl Buffered {
    fn frame(&self) -> Utf8Bytes {
        let (name, seq, data) = (self.name, self.seq, &self.data);
        format!(r#"{{"op":"dispatch","t":"{name}","s":{seq},"d":{data}}}"#).into()
    }
}

#[derive(Default)]
struct SessionInner {
    seq: u64,
    /// Dispatches not yet acknowledged, each as its seq, name and shared JSON payload: the
    /// frame is rendered when sent, so a thousand sessions keep one copy of an event.
    buffer: VecDeque<Buffered>,
    /// Per guild, the channels asked for; a guild absent here means all it may view.
    subscriptions: HashMap<GuildId, HashSet<ChannelId>>,
    attached: bool,
    detached_at: Option<Instant>,
    /// Events were lost (slow consumer or overflow while detached): no resume possible.
    broken: bool,
    /// Its token was logged out.
    revoked: bool,
    /// The socket currently attached, so a resume elsewhere can displace it.
    generation: u64,
}

impl Session {
    fn push(&self, name: &'static str, data: Value) {
        self.push_encoded(name, data.to_string().into());
    }

    /// Queues a dispatch whose payload is already JSON (serialized once for all sessions).
    fn push_encoded(&self, name: &'static str, data: Arc<str>) {
        let mut inner = self.inner.lock().expect("session lock");
        inner.seq += 1;
        let seq = inner.seq;
        inner.buffer.push_back(Buffered { seq, name, data });
        if inner.buffer.len() > MAX_BUFFERED {
            inner.buffer.pop_front();
            if !inner.attached {
                inner.broken = true;
            }
        }
        drop(inner);
        self.wake.notify_waiters();
    }

    /// Drops frames the client says it has (its heartbeat's `seq`): resume never needs them.
    fn forget_through(&self, seen: u64) {
        let mut inner = self.inner.lock().expect("session lock");
        while inner.buffer.front().is_some_and(|b| b.seq <= seen) {
            inner.buffer.pop_front();
        }
    }

    /// Frames after `after`, or `None` if some of them are gone.
    fn frames_after(&self, after: u64) -> Option<Vec<Buffered>> {
        let inner = self.inner.lock().expect("session lock");
        if inner.broken {
            return None;
        }
        let first = inner.buffer.front().map_or(inner.seq + 1, |b| b.seq);
        if after + 1 < first || after > inner.seq {
            return None;
        }
        Some(
            inner
                .buffer
                .iter()
                .filter(|b| b.seq > after)
                .cloned()
                .collect(),
        )
    }

    /// Whether this user's session should see `event`.
    fn wants(&self, node: &Node, event: &Event) -> bool {
        // Your own voice state reaches you even from a channel you can no longer see, so a
        // client always learns it was disconnected.
        if event.name == "VOICE_STATE_UPDATE"
            && event.data.get("user_id") == Some(&json!(self.user))
        {
            return true;
        }
        let Ok(guild) = node.guild(&event.guild) else {
            return false;
        };
        let guild = guild.lock().expect("guild lock");
        let state = guild.state();
        if !state.is_member(&self.user) {
            // Tell a removed member they were removed, nothing else.
            return event.data.get("user_id") == Some(&json!(self.user));
        }
        let channel = match &event.gate {
            Gate::Guild => return true,
            Gate::Users(users) => return users.contains(&self.user),
            Gate::Channel(channel) => *channel,
        };
        if !guildhall_proto::access::may_view(&guild, &self.user, &channel) {
            return false;
        }
        let inner = self.inner.lock().expect("session lock");
        inner
            .subscriptions
            .get(&event.guild)
            .is_none_or(|channels| channels.contains(&channel))
    }
}

/// Moves hub events the session may see into its buffer, until the session expires.
async fn pump(
    node: Arc<Node>,
    session: Arc<Session>,
    mut events: broadcast::Receiver<Arc<Published>>,
) {
    let ttl = node.config.session_ttl;
    loop {
        tokio::select! {
            received = events.recv() => match received {
                Ok(published) => {
                    let event = &published.event;
                    if event.name == "TYPING_START" && event.data["user_id"] == json!(session.user) {
                        continue;
                    }
                    if session.wants(&node, event) {
                        session.push_encoded(event.name, published.data.clone());
                        node.metrics.dispatches.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    session.inner.lock().expect("session lock").broken = true;
                    session.wake.notify_waiters();
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            () = tokio::time::sleep(ttl.min(Duration::from_secs(1))) => {}
        }
        let expired = {
            let inner = session.inner.lock().expect("session lock");
            inner.revoked
                || (!inner.attached && inner.detached_at.is_some_and(|t| t.elapsed() >= ttl))
        };
        if expired {
            break;
        }
    }
    node.sessions.remove(&session.id);
    node.voice_leave(&session.user, Some(&session.id));
    if node.set_presence(&session.user, None, -1) {
        node.announce_presence(&session.user);
    }
}

pub async fn upgrade(State(node): State<Arc<Node>>, ws: WebSocketUpgrade) -> Response {
    let hard_limit = node.config.max_frame_bytes * 4;
    // Small per-socket buffers: most sessions sit idle, and the defaults (128 KiB each way)
    // would cost ~140 KiB per client.
    ws.max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| connection(node, socket))
}

#[derive(Deserialize)]
struct ClientFrame {
    op: String,
    #[serde(default)]
    d: Value,
}

#[derive(Deserialize)]
struct Identify {
    token: String,
    #[serde(default)]
    status: Option<Status>,
}

#[derive(Deserialize)]
struct Resume {
    token: String,
    session_id: String,
    seq: u64,
}

#[derive(Deserialize)]
struct Send {
    guild_id: GuildId,
    channel_id: ChannelId,
    content: String,
    nonce: Option<String>,
    reply_to: Option<guildhall_proto::id::MessageId>,
}

#[derive(Deserialize)]
struct Subscribe {
    guild_id: GuildId,
    channels: Option<Vec<ChannelId>>,
}

#[derive(Deserialize)]
struct Typing {
    guild_id: GuildId,
    channel_id: ChannelId,
}

#[derive(Deserialize)]
struct Presence {
    status: Status,
}

struct Conn {
    node: Arc<Node>,
    socket: WebSocket,
}

enum Incoming {
    Frame(ClientFrame),
    Closed,
    Fatal(u16, &'static str),
}

impl Conn {
    async fn send(&mut self, value: Value) -> bool {
        self.socket
            .send(Message::Text(value.to_string().into()))
            .await
            .is_ok()
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let _ = self
            .socket
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
    }

    async fn next(&mut self) -> Incoming {
        loop {
            match self.socket.recv().await {
                Some(Ok(Message::Text(text))) => {
                    if text.len() > self.node.config.max_frame_bytes {
                        return Incoming::Fatal(close::FRAME_TOO_LARGE, "frame too large");
                    }
                    return match serde_json::from_str(&text) {
                        Ok(frame) => Incoming::Frame(frame),
                        Err(_) => Incoming::Fatal(
                            close::DECODE_ERROR,
                            "frames are JSON objects with an op",
                        ),
                    };
                }
                Some(Ok(Message::Binary(_))) => {
                    return Incoming::Fatal(close::DECODE_ERROR, "binary frames are not accepted");
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => return Incoming::Closed,
                Some(Err(_)) => {
                    return Incoming::Fatal(close::FRAME_TOO_LARGE, "frame too large or broken");
                }
            }
        }
    }
}

async fn connection(node: Arc<Node>, socket: WebSocket) {
    node.metrics
        .gateway_sessions
        .fetch_add(1, Ordering::Relaxed);
    let mut conn = Conn {
        node: node.clone(),
        socket,
    };
    let interval = node.config.heartbeat_interval;
    let hello =
        json!({ "op": "hello", "d": { "heartbeat_interval_ms": interval.as_millis() as u64 } });
    if !conn.send(hello).await {
        return;
    }
    let Some((session, after)) = authenticate(&mut conn).await else {
        return;
    };
    let generation = {
        let mut inner = session.inner.lock().expect("session lock");
        inner.attached = true;
        inner.detached_at = None;
        inner.generation += 1;
        inner.generation
    };
    session.wake.notify_waiters();
    serve(&mut conn, &session, after, generation).await;
    let mut inner = session.inner.lock().expect("session lock");
    if inner.generation == generation {
        inner.attached = false;
        inner.detached_at = Some(Instant::now());
    }
}

/// Waits for identify or resume; returns the session and the last seq the client has.
async fn authenticate(conn: &mut Conn) -> Option<(Arc<Session>, u64)> {
    let node = conn.node.clone();
    let deadline = tokio::time::Instant::now() + node.config.heartbeat_interval;
    loop {
        let incoming = match tokio::time::timeout_at(deadline, conn.next()).await {
            Ok(incoming) => incoming,
            Err(_) => {
                conn.close(
                    close::NOT_AUTHENTICATED,
                    "identify within one heartbeat interval",
                )
                .await;
                return None;
            }
        };
        let frame = match incoming {
            Incoming::Frame(f) => f,
            Incoming::Closed => return None,
            Incoming::Fatal(code, why) => {
                conn.close(code, why).await;
                return None;
            }
        };
        match frame.op.as_str() {
            "identify" => {
                let Ok(identify) = serde_json::from_value::<Identify>(frame.d) else {
                    conn.close(close::DECODE_ERROR, "identify needs a token")
                        .await;
                    return None;
                };
                let Ok(account) = node.authenticate(&identify.token) else {
                    conn.close(close::AUTHENTICATION_FAILED, "invalid token")
                        .await;
                    return None;
                };
                let session = Arc::new(Session {
                    id: hex::encode(rand::random::<[u8; 16]>()),
                    user: account.user_id,
                    token_hash: crate::accounts::token_hash(&identify.token),
                    inner: Mutex::new(SessionInner::default()),
                    wake: Notify::new(),
                });
                let events = node.subscribe();
                let status = identify.status.unwrap_or(Status::Online);
                let guilds: Vec<Value> = node
                    .guilds_of(&account.user_id)
                    .iter()
                    .filter_map(|g| {
                        node.with_member_guild(&account.user_id, g, |g| {
                            Ok(node.guild_view(g, &account.user_id))
                        })
                        .ok()
                    })
                    .collect();
                session.push(
                    "READY",
                    json!({
                        "session_id": session.id,
                        "user": { "id": account.user_id, "username": account.username },
                        "guilds": guilds,
                        "read_states": node
                            .store
                            .read_states(&account.user_id)
                            .map(|r| views::read_states_json(&r))
                            .unwrap_or_default(),
                        "status": status,
                    }),
                );
                node.sessions.insert(session.clone());
                tokio::spawn(pump(node.clone(), session.clone(), events));
                if node.set_presence(&account.user_id, Some(status), 1) {
                    node.announce_presence(&account.user_id);
                }
                return Some((session, 0));
            }
            "resume" => {
                let Ok(resume) = serde_json::from_value::<Resume>(frame.d) else {
                    conn.close(
                        close::DECODE_ERROR,
                        "resume needs token, session_id and seq",
                    )
                    .await;
                    return None;
                };
                let Ok(account) = node.authenticate(&resume.token) else {
                    conn.close(close::AUTHENTICATION_FAILED, "invalid token")
                        .await;
                    return None;
                };
                let session = node
                    .sessions
                    .get(&resume.session_id)
                    .filter(|s| s.user == account.user_id);
                match session {
                    Some(s) if s.frames_after(resume.seq).is_some() => {
                        s.push("RESUMED", json!({ "session_id": s.id }));
                        return Some((s, resume.seq));
                    }
                    _ => {
                        let invalid =
                            json!({ "op": "invalid_session", "d": { "resumable": false } });
                        if !conn.send(invalid).await {
                            return None;
                        }
                    }
                }
            }
            "heartbeat" => {
                if !conn.send(json!({ "op": "heartbeat_ack" })).await {
                    return None;
                }
            }
            _ => {
                conn.close(close::NOT_AUTHENTICATED, "identify or resume first")
                    .await;
                return None;
            }
        }
    }
}

async fn serve(conn: &mut Conn, session: &Arc<Session>, mut sent: u64, generation: u64) {
    let node = conn.node.clone();
    let heartbeat_deadline = node.config.heartbeat_interval.mul_f64(1.5);
    let mut last_heartbeat = Instant::now();
    let mut refusals = 0u32;
    loop {
        let woken = session.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let (revoked, replaced) = {
            let inner = session.inner.lock().expect("session lock");
            (inner.revoked, inner.generation != generation)
        };
        if revoked {
            conn.close(close::AUTHENTICATION_FAILED, "logged out").await;
            return;
        }
        if replaced {
            conn.close(close::SESSION_REPLACED, "resumed elsewhere")
                .await;
            return;
        }
        match session.frames_after(sent) {
            Some(frames) => {
                for buffered in frames {
                    if conn
                        .socket
                        .send(Message::Text(buffered.frame()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    sent = buffered.seq;
                }
            }
            None => {
                conn.close(close::SLOW_CONSUMER, "events were dropped; identify again")
                    .await;
                return;
            }
        }
        let remaining = heartbeat_deadline.saturating_sub(last_heartbeat.elapsed());
        tokio::select! {
            () = &mut woken => {}
            () = tokio::time::sleep(remaining) => {
                conn.close(close::SESSION_TIMED_OUT, "no heartbeat").await;
                return;
            }
            incoming = conn.next() => {
                let frame = match incoming {
                    Incoming::Frame(f) => f,
                    Incoming::Closed => return,
                    Incoming::Fatal(code, why) => {
                        conn.close(code, why).await;
                        return;
                    }
                };
                if frame.op == "heartbeat" {
                    last_heartbeat = Instant::now();
                    if let Some(seen) = frame.d.get("seq").and_then(Value::as_u64) {
                        session.forget_through(seen);
                    }
                    if !conn.send(json!({ "op": "heartbeat_ack" })).await {
                        return;
                    }
                    continue;
                }
                let reply = match handle(&node, session, frame).await {
                    Ok(reply) => {
                        refusals = 0;
                        reply
                    }
                    Err(Handled::Close(code, why)) => {
                        conn.close(code, why).await;
                        return;
                    }
                    Err(Handled::Error(nonce, e)) => {
                        if e.code == "rate_limited" {
                            refusals += 1;
                            if refusals > MAX_REFUSALS {
                                conn.close(close::RATE_LIMITED, "rate limited").await;
                                return;
                            }
                        }
                        let mut d = e.body();
                        d["nonce"] = json!(nonce);
                        Some(json!({ "op": "error", "d": d }))
                    }
                };
                if let Some(reply) = reply
                    && !conn.send(reply).await
                {
                    return;
                }
            }
        }
    }
}

enum Handled {
    Close(u16, &'static str),
    Error(Option<String>, ApiError),
}

fn decode<T: for<'de> Deserialize<'de>>(d: Value) -> Result<T, Handled> {
    serde_json::from_value(d).map_err(|e| {
        Handled::Error(
            None,
            ApiError::bad_request("invalid_payload", format!("bad payload: {e}")),
        )
    })
}

async fn handle(
    node: &Arc<Node>,
    session: &Arc<Session>,
    frame: ClientFrame,
) -> Result<Option<Value>, Handled> {
    let user = session.user;
    match frame.op.as_str() {
        "send" => {
            let send: Send = decode(frame.d)?;
            let nonce = send.nonce.clone();
            let fail = |e| Handled::Error(nonce.clone(), e);
            node.user_rate_check(&user).map_err(fail)?;
            let body = Body::MessageCreate {
                channel: send.channel_id,
                content: send.content.into(),
                reply_to: send.reply_to,
            };
            let id =
                crate::rest::send_message(node, &user, &send.guild_id, body, send.nonce.as_deref())
                    .await
                    .map_err(fail)?;
            Ok(Some(
                json!({ "op": "ack", "d": { "nonce": send.nonce, "message_id": id } }),
            ))
        }
        "typing" => {
            let typing: Typing = decode(frame.d)?;
            node.user_rate_check(&user)
                .map_err(|e| Handled::Error(None, e))?;
            node.typing(&user, &typing.guild_id, &typing.channel_id)
                .map_err(|e| Handled::Error(None, e))?;
            Ok(None)
        }
        "presence" => {
            let presence: Presence = decode(frame.d)?;
            node.user_rate_check(&user)
                .map_err(|e| Handled::Error(None, e))?;
            if node.set_presence(&user, Some(presence.status), 0) {
                node.announce_presence(&user);
            }
            Ok(None)
        }
        "subscribe" => {
            let subscribe: Subscribe = decode(frame.d)?;
            node.with_member_guild(&user, &subscribe.guild_id, |_| Ok(()))
                .map_err(|e| Handled::Error(None, e))?;
            let mut inner = session.inner.lock().expect("session lock");
            match subscribe.channels {
                Some(channels) => {
                    inner
                        .subscriptions
                        .insert(subscribe.guild_id, channels.into_iter().collect());
                }
                None => {
                    inner.subscriptions.remove(&subscribe.guild_id);
                }
            }
            Ok(Some(
                json!({ "op": "subscribed", "d": { "guild_id": subscribe.guild_id } }),
            ))
        }
        "voice_connect" => {
            let connect: crate::voice::VoiceConnect = decode(frame.d)?;
            let (guild_id, channel_id) = (connect.guild_id, connect.channel_id);
            let nonce = connect.nonce.clone();
            let fail = |e| Handled::Error(nonce.clone(), e);
            node.user_rate_check(&user).map_err(fail)?;
            let sdp = node
                .voice_connect(&user, &session.id, connect)
                .await
                .map_err(fail)?;
            Ok(Some(json!({
                "op": "voice_answer",
                "d": { "nonce": nonce, "guild_id": guild_id, "channel_id": channel_id, "sdp": sdp },
            })))
        }
        "voice_state" => {
            let change: crate::voice::SelfVoice = decode(frame.d)?;
            node.user_rate_check(&user)
                .map_err(|e| Handled::Error(None, e))?;
            node.voice_self(&user, change)
                .map_err(|e| Handled::Error(None, e))?;
            Ok(None)
        }
        "voice_leave" => {
            node.voice_leave(&user, Some(&session.id));
            Ok(None)
        }
        "identify" | "resume" => Err(Handled::Close(
            close::ALREADY_AUTHENTICATED,
            "already authenticated",
        )),
        _ => Err(Handled::Close(close::UNKNOWN_OP, "unknown op")),
    }
}
