//! A typed Rust client for a guildhall node: the REST API (`spec/rest.md`) and a gateway
//! connection (`spec/gateway.md`) that heartbeats, and reconnects with backoff and resume.

pub mod dm;

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[derive(Debug, Error)]
pub enum ClientError {
    /// The node refused the request: its stable code and message.
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        retry_after: Option<f64>,
    },
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("gateway: {0}")]
    Gateway(String),
    #[error("gateway closed with {code}: {reason}")]
    Closed { code: u16, reason: String },
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// A DM could not be sealed or opened, with the scheme's stable code.
    #[error("{code}: {0}", code = .0.code())]
    DmRefused(#[from] guildhall_proto::dm::DmError),
    #[error("dm: {0}")]
    Dm(String),
}

impl ClientError {
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            ClientError::DmRefused(e) => Some(e.code()),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub username: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Auth {
    pub token: String,
    pub user: User,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Reaction {
    pub emoji: String,
    pub count: usize,
    pub users: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub channel_id: String,
    pub author_id: String,
    pub content: String,
    pub timestamp_ms: u64,
    pub edited_at_ms: Option<u64>,
    pub reply_to: Option<String>,
    pub reactions: Vec<Reaction>,
    pub pinned: bool,
    pub thread_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Channel {
    pub id: String,
    pub guild_id: String,
    pub kind: String,
    pub name: String,
    pub topic: Option<String>,
    pub parent_id: Option<String>,
    pub position: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Guild {
    pub id: String,
    pub name: String,
    pub owner_id: String,
    pub member_count: usize,
    pub channels: Vec<Channel>,
}

impl Guild {
    /// The first text channel, where a new guild's conversation starts.
    pub fn first_text_channel(&self) -> Option<&Channel> {
        self.channels.iter().find(|c| c.kind == "text")
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Invite {
    pub id: String,
    pub code: String,
}

/// History cursors: messages strictly before or after a message id.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub before: Option<String>,
    pub after: Option<String>,
    pub limit: Option<usize>,
}

/// REST access for one account.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// `base` is the node's address, such as `http://127.0.0.1:8080`.
    pub fn new(base: &str) -> Self {
        Client {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            token: None,
        }
    }

    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T> {
        let mut request = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            let text = response.text().await?;
            let text = if text.is_empty() { "null" } else { &text };
            return serde_json::from_str(text).map_err(|e| ClientError::Gateway(e.to_string()));
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Err(ClientError::Api {
            status: status.as_u16(),
            code: body["code"].as_str().unwrap_or("unknown").to_owned(),
            message: body["message"].as_str().unwrap_or_default().to_owned(),
            retry_after: body["retry_after"].as_f64(),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, body: Value) -> Result<T> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn patch<T: DeserializeOwned>(&self, path: &str, body: Value) -> Result<T> {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> Result<()> {
        self.call::<Value>(reqwest::Method::PUT, path, Some(body))
            .await
            .map(drop)
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.call::<Value>(reqwest::Method::DELETE, path, None)
            .await
            .map(drop)
    }

    /// Creates an account and returns a client holding its token.
    pub async fn register(base: &str, username: &str, password: &str) -> Result<(Client, User)> {
        Self::authenticate(base, "/auth/register", username, password).await
    }

    pub async fn login(base: &str, username: &str, password: &str) -> Result<(Client, User)> {
        Self::authenticate(base, "/auth/login", username, password).await
    }

    async fn authenticate(
        base: &str,
        path: &str,
        username: &str,
        password: &str,
    ) -> Result<(Client, User)> {
        let anonymous = Client::new(base);
        let auth: Auth = anonymous
            .post(path, json!({ "username": username, "password": password }))
            .await?;
        Ok((anonymous.with_token(&auth.token), auth.user))
    }

    pub async fn logout(&self) -> Result<()> {
        self.post::<Value>("/auth/logout", json!({}))
            .await
            .map(drop)
    }

    pub async fn me(&self) -> Result<User> {
        self.get("/users/@me").await
    }

    /// The account's secret signing key (64 hex digits), to take the identity to another node.
    pub async fn export_key(&self, password: &str) -> Result<String> {
        let exported: Value = self
            .post("/users/@me/key", json!({ "password": password }))
            .await?;
        exported["secret_key"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Gateway("the key export has no secret_key".into()))
    }

    /// A user's public profile: `{ "id", "username", "status" }`.
    pub async fn profile(&self, user: &str) -> Result<Value> {
        self.get(&format!("/users/{user}")).await
    }

    pub async fn create_guild(&self, name: &str) -> Result<Guild> {
        self.post("/guilds", json!({ "name": name })).await
    }

    pub async fn guilds(&self) -> Result<Vec<Guild>> {
        self.get("/guilds").await
    }

    pub async fn guild(&self, guild: &str) -> Result<Guild> {
        self.get(&format!("/guilds/{guild}")).await
    }

    /// Deletes a guild (owner only).
    pub async fn delete_guild(&self, guild: &str) -> Result<()> {
        self.delete(&format!("/guilds/{guild}")).await
    }

    pub async fn create_channel(&self, guild: &str, name: &str, kind: &str) -> Result<Channel> {
        self.post(
            &format!("/guilds/{guild}/channels"),
            json!({ "name": name, "kind": kind }),
        )
        .await
    }

    pub async fn update_channel(
        &self,
        guild: &str,
        channel: &str,
        update: Value,
    ) -> Result<Channel> {
        self.patch(&format!("/guilds/{guild}/channels/{channel}"), update)
            .await
    }

    pub async fn delete_channel(&self, guild: &str, channel: &str) -> Result<()> {
        self.delete(&format!("/guilds/{guild}/channels/{channel}"))
            .await
    }

    pub async fn channels(&self, guild: &str) -> Result<Vec<Channel>> {
        self.get(&format!("/guilds/{guild}/channels")).await
    }

    pub async fn create_invite(
        &self,
        guild: &str,
        max_uses: u32,
        max_age_secs: u64,
    ) -> Result<Invite> {
        self.post(
            &format!("/guilds/{guild}/invites"),
            json!({ "max_uses": max_uses, "max_age_secs": max_age_secs }),
        )
        .await
    }

    pub async fn accept_invite(&self, code: &str) -> Result<Guild> {
        self.post(&format!("/invites/{code}/accept"), json!({}))
            .await
    }

    pub async fn send(&self, guild: &str, channel: &str, content: &str) -> Result<Message> {
        self.send_with(guild, channel, content, None, None).await
    }

    pub async fn send_with(
        &self,
        guild: &str,
        channel: &str,
        content: &str,
        nonce: Option<&str>,
        reply_to: Option<&str>,
    ) -> Result<Message> {
        self.post(
            &format!("/guilds/{guild}/channels/{channel}/messages"),
            json!({ "content": content, "nonce": nonce, "reply_to": reply_to }),
        )
        .await
    }

    pub async fn messages(&self, guild: &str, channel: &str, page: &Page) -> Result<Vec<Message>> {
        let mut query = Vec::new();
        if let Some(b) = &page.before {
            query.push(format!("before={b}"));
        }
        if let Some(a) = &page.after {
            query.push(format!("after={a}"));
        }
        if let Some(l) = page.limit {
            query.push(format!("limit={l}"));
        }
        self.get(&format!(
            "/guilds/{guild}/channels/{channel}/messages?{}",
            query.join("&")
        ))
        .await
    }

    fn message_path(guild: &str, channel: &str, message: &str) -> String {
        format!("/guilds/{guild}/channels/{channel}/messages/{message}")
    }

    fn reaction_path(guild: &str, channel: &str, message: &str, emoji: &str) -> String {
        format!(
            "{}/reactions/{emoji}",
            Self::message_path(guild, channel, message)
        )
    }

    pub async fn edit(
        &self,
        guild: &str,
        channel: &str,
        message: &str,
        content: &str,
    ) -> Result<Message> {
        self.patch(
            &Self::message_path(guild, channel, message),
            json!({ "content": content }),
        )
        .await
    }

    pub async fn delete_message(&self, guild: &str, channel: &str, message: &str) -> Result<()> {
        self.delete(&Self::message_path(guild, channel, message))
            .await
    }

    pub async fn react(
        &self,
        guild: &str,
        channel: &str,
        message: &str,
        emoji: &str,
    ) -> Result<()> {
        self.put(
            &Self::reaction_path(guild, channel, message, emoji),
            json!({}),
        )
        .await
    }

    pub async fn unreact(
        &self,
        guild: &str,
        channel: &str,
        message: &str,
        emoji: &str,
    ) -> Result<()> {
        self.delete(&Self::reaction_path(guild, channel, message, emoji))
            .await
    }

    pub async fn pin(&self, guild: &str, channel: &str, message: &str) -> Result<()> {
        self.put(
            &format!("/guilds/{guild}/channels/{channel}/pins/{message}"),
            json!({}),
        )
        .await
    }

    pub async fn pins(&self, guild: &str, channel: &str) -> Result<Vec<Message>> {
        self.get(&format!("/guilds/{guild}/channels/{channel}/pins"))
            .await
    }

    /// Starts a thread, from a message or on its own; returns the thread's id.
    pub async fn create_thread(
        &self,
        guild: &str,
        channel: &str,
        name: &str,
        message: Option<&str>,
    ) -> Result<String> {
        let thread: Value = self
            .post(
                &format!("/guilds/{guild}/channels/{channel}/threads"),
                json!({ "name": name, "message_id": message }),
            )
            .await?;
        Ok(thread["id"].as_str().unwrap_or_default().to_owned())
    }

    /// Marks `message` as the last one read in `channel`.
    pub async fn mark_read(&self, guild: &str, channel: &str, message: &str) -> Result<()> {
        self.put(
            &format!("/guilds/{guild}/channels/{channel}/read"),
            json!({ "message_id": message }),
        )
        .await
    }

    /// Per channel, the last message read: `[{channel_id, last_read_id}]`.
    pub async fn read_states(&self) -> Result<Value> {
        self.get("/users/@me/read-states").await
    }

    pub async fn search(&self, guild: &str, query: &str) -> Result<Vec<Message>> {
        let query: String = query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        self.get(&format!("/guilds/{guild}/search?q={query}")).await
    }

    pub async fn set_member_overwrite(
        &self,
        guild: &str,
        channel: &str,
        user: &str,
        allow: u64,
        deny: u64,
    ) -> Result<()> {
        self.put(
            &format!("/guilds/{guild}/channels/{channel}/overwrites/member/{user}"),
            json!({ "allow": allow.to_string(), "deny": deny.to_string() }),
        )
        .await
    }

    /// A guild's members: `{ user_id, username, status, roles, nick, joined_at_ms }` each.
    pub async fn members(&self, guild: &str) -> Result<Vec<Value>> {
        self.get(&format!("/guilds/{guild}/members")).await
    }

    pub async fn kick(&self, guild: &str, user: &str) -> Result<()> {
        self.delete(&format!("/guilds/{guild}/members/{user}"))
            .await
    }

    pub async fn ban(&self, guild: &str, user: &str) -> Result<()> {
        self.put(&format!("/guilds/{guild}/bans/{user}"), json!({}))
            .await
    }

    pub async fn unban(&self, guild: &str, user: &str) -> Result<()> {
        self.delete(&format!("/guilds/{guild}/bans/{user}")).await
    }

    /// Who is in the guild's voice channels (those the caller can view).
    pub async fn voice_states(&self, guild: &str) -> Result<Vec<Value>> {
        self.get(&format!("/guilds/{guild}/voice-states")).await
    }

    /// A moderator's change to someone in voice: any of `mute`, `deaf` and `channel_id` (a
    /// channel to move them to, or `null` to disconnect them).
    pub async fn moderate_voice(&self, guild: &str, user: &str, change: Value) -> Result<Value> {
        self.patch(&format!("/guilds/{guild}/members/{user}/voice"), change)
            .await
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One dispatch: its name, sequence number and payload.
#[derive(Debug, Clone)]
pub struct Dispatch {
    pub name: String,
    pub seq: u64,
    pub data: Value,
}

/// A gateway connection. Frames that are not dispatches (acks, errors) are queued apart, so a
/// caller can wait for either.
pub struct Gateway {
    url: String,
    token: String,
    socket: Socket,
    pub session_id: String,
    /// The last dispatch sequence number received.
    pub seq: u64,
    pub heartbeat_interval: Duration,
    dispatches: VecDeque<Dispatch>,
    replies: VecDeque<Value>,
    /// Numbers voice requests, so each reply is matched to its request by nonce.
    voice_requests: u64,
}

/// The error an `error` frame carries.
fn api_error_from_frame(frame: &Value) -> ClientError {
    ClientError::Api {
        status: 0,
        code: frame["d"]["code"].as_str().unwrap_or("unknown").to_owned(),
        message: frame["d"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        retry_after: frame["d"]["retry_after"].as_f64(),
    }
}

fn gateway_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let ws = base
        .strip_prefix("https://")
        .map(|rest| format!("wss://{rest}"))
        .or_else(|| {
            base.strip_prefix("http://")
                .map(|rest| format!("ws://{rest}"))
        })
        .unwrap_or_else(|| base.to_owned());
    format!("{ws}/api/v1/gateway")
}

impl Gateway {
    /// A new connection for the client's account, before identify or resume.
    async fn attach(client: &Client) -> Result<Gateway> {
        let token = client
            .token()
            .ok_or_else(|| ClientError::Gateway("the client has no token".into()))?;
        let url = gateway_url(client.base());
        let (socket, heartbeat_interval) = Self::open(&url).await?;
        Ok(Gateway {
            url,
            token: token.to_owned(),
            socket,
            session_id: String::new(),
            seq: 0,
            heartbeat_interval,
            dispatches: VecDeque::new(),
            replies: VecDeque::new(),
            voice_requests: 0,
        })
    }

    /// Takes over an existing session (one a previous run of this client saved, say) from
    /// dispatch `seq`; a connection still holding it is closed with 4012. Returns whether it
    /// resumed, or (the session being gone) identified anew, when the caller should re-sync
    /// over REST.
    pub async fn resume(client: &Client, session_id: &str, seq: u64) -> Result<(Gateway, bool)> {
        let mut gateway = Self::attach(client).await?;
        gateway.session_id = session_id.to_owned();
        gateway.seq = seq;
        let resumed = gateway.resume_on_socket().await?;
        Ok((gateway, resumed))
    }

    /// Connects and identifies; returns once READY arrived (its payload is the first dispatch).
    pub async fn connect(client: &Client) -> Result<Gateway> {
        let mut gateway = Self::attach(client).await?;
        let token = gateway.token.clone();
        gateway
            .send_frame(json!({ "op": "identify", "d": { "token": token } }))
            .await?;
        let ready = gateway.wait_for("READY", Duration::from_secs(10)).await?;
        gateway.session_id = ready.data["session_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        gateway.dispatches.push_front(ready);
        Ok(gateway)
    }

    async fn open(url: &str) -> Result<(Socket, Duration)> {
        let (mut socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .map_err(|e| ClientError::Gateway(e.to_string()))?;
        let hello = next_json(&mut socket, Duration::from_secs(10)).await?;
        let interval = hello["d"]["heartbeat_interval_ms"]
            .as_u64()
            .unwrap_or(30_000);
        Ok((socket, Duration::from_millis(interval)))
    }

    /// Reconnects after a dropped connection and resumes; on `invalid_session` identifies
    /// anew (the caller should then re-sync over REST). Retries with exponential backoff.
    pub async fn reconnect(&mut self) -> Result<bool> {
        let mut delay = Duration::from_millis(50);
        for _ in 0..8 {
            match self.try_resume().await {
                Ok(resumed) => return Ok(resumed),
                Err(ClientError::Gateway(_)) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(other) => return Err(other),
            }
        }
        Err(ClientError::Gateway("could not reconnect".into()))
    }

    async fn try_resume(&mut self) -> Result<bool> {
        let (socket, interval) = Self::open(&self.url).await?;
        self.socket = socket;
        self.heartbeat_interval = interval;
        self.resume_on_socket().await
    }

    /// Sends resume on the current socket: true once RESUMED, false after identifying anew.
    async fn resume_on_socket(&mut self) -> Result<bool> {
        let resume = json!({ "op": "resume", "d": {
            "token": self.token, "session_id": self.session_id, "seq": self.seq,
        }});
        self.send_frame(resume).await?;
        loop {
            let frame = next_json(&mut self.socket, Duration::from_secs(10)).await?;
            match frame["op"].as_str() {
                Some("dispatch") => {
                    let resumed = frame["t"] == "RESUMED";
                    self.take_dispatch(&frame);
                    if resumed {
                        return Ok(true);
                    }
                }
                Some("invalid_session") => {
                    self.send_frame(json!({ "op": "identify", "d": { "token": self.token } }))
                        .await?;
                    self.seq = 0;
                    let ready = self.wait_for("READY", Duration::from_secs(10)).await?;
                    self.session_id = ready.data["session_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    return Ok(false);
                }
                _ => self.replies.push_back(frame),
            }
        }
    }

    /// Drops the TCP connection without a close handshake, as a network failure would.
    pub async fn drop_connection(&mut self) {
        use tokio::io::AsyncWriteExt;
        if let MaybeTlsStream::Plain(tcp) = self.socket.get_mut() {
            let _ = tcp.shutdown().await;
        }
    }

    async fn send_frame(&mut self, frame: Value) -> Result<()> {
        self.socket
            .send(WsMessage::text(frame.to_string()))
            .await
            .map_err(|e| ClientError::Gateway(e.to_string()))
    }

    /// Sends a raw frame (for tests of the node's input validation).
    pub async fn send_raw(&mut self, text: &str) -> Result<()> {
        self.socket
            .send(WsMessage::text(text.to_owned()))
            .await
            .map_err(|e| ClientError::Gateway(e.to_string()))
    }

    pub async fn heartbeat(&mut self) -> Result<()> {
        let seq = self.seq;
        self.send_frame(json!({ "op": "heartbeat", "d": { "seq": seq } }))
            .await?;
        self.wait_reply("heartbeat_ack", Duration::from_secs(10))
            .await
            .map(drop)
    }

    /// Sends a message through the gateway; returns the ack's message id.
    pub async fn send_message(
        &mut self,
        guild: &str,
        channel: &str,
        content: &str,
        nonce: &str,
    ) -> Result<String> {
        self.send_frame(json!({ "op": "send", "d": {
            "guild_id": guild, "channel_id": channel, "content": content, "nonce": nonce,
        }}))
        .await?;
        let reply = self
            .wait_reply_for_nonce(nonce, Duration::from_secs(10))
            .await?;
        if reply["op"] == "ack" {
            Ok(reply["d"]["message_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned())
        } else {
            Err(api_error_from_frame(&reply))
        }
    }

    /// Joins a voice channel (or renegotiates) with an SDP offer; returns the SDP answer.
    pub async fn voice_connect(
        &mut self,
        guild: &str,
        channel: &str,
        sdp: &str,
        self_mute: bool,
        self_deaf: bool,
    ) -> Result<String> {
        self.voice_requests += 1;
        let nonce = format!("voice:{}", self.voice_requests);
        self.send_frame(json!({ "op": "voice_connect", "d": {
            "nonce": nonce, "guild_id": guild, "channel_id": channel, "sdp": sdp,
            "self_mute": self_mute, "self_deaf": self_deaf,
        }}))
        .await?;
        let reply = self
            .wait_reply_for_nonce(&nonce, Duration::from_secs(10))
            .await?;
        if reply["op"] == "voice_answer" {
            Ok(reply["d"]["sdp"].as_str().unwrap_or_default().to_owned())
        } else {
            Err(api_error_from_frame(&reply))
        }
    }

    /// Sets one's own mute and deafen while in voice.
    pub async fn voice_state(&mut self, self_mute: bool, self_deaf: bool) -> Result<()> {
        self.send_frame(json!({ "op": "voice_state", "d": {
            "self_mute": self_mute, "self_deaf": self_deaf,
        }}))
        .await
    }

    pub async fn voice_leave(&mut self) -> Result<()> {
        self.send_frame(json!({ "op": "voice_leave", "d": {} }))
            .await
    }

    pub async fn typing(&mut self, guild: &str, channel: &str) -> Result<()> {
        self.send_frame(
            json!({ "op": "typing", "d": { "guild_id": guild, "channel_id": channel } }),
        )
        .await
    }

    pub async fn set_presence(&mut self, status: &str) -> Result<()> {
        self.send_frame(json!({ "op": "presence", "d": { "status": status } }))
            .await
    }

    /// Receives only `channels` of `guild` from now on (`None`: everything visible).
    pub async fn subscribe(&mut self, guild: &str, channels: Option<Vec<String>>) -> Result<()> {
        self.send_frame(
            json!({ "op": "subscribe", "d": { "guild_id": guild, "channels": channels } }),
        )
        .await?;
        self.wait_reply("subscribed", Duration::from_secs(10))
            .await
            .map(drop)
    }

    fn take_dispatch(&mut self, frame: &Value) {
        let seq = frame["s"].as_u64().unwrap_or(0);
        if seq <= self.seq {
            return;
        }
        self.seq = seq;
        self.dispatches.push_back(Dispatch {
            name: frame["t"].as_str().unwrap_or_default().to_owned(),
            seq,
            data: frame["d"].clone(),
        });
    }

    async fn pump(&mut self, deadline: tokio::time::Instant, what: &'static str) -> Result<()> {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(ClientError::Timeout(what));
        }
        let frame = next_json(&mut self.socket, left)
            .await
            .map_err(|e| match e {
                ClientError::Timeout(_) => ClientError::Timeout(what),
                other => other,
            })?;
        if frame["op"] == "dispatch" {
            self.take_dispatch(&frame);
        } else {
            self.replies.push_back(frame);
        }
        Ok(())
    }

    /// The next dispatch of any name.
    pub async fn next_dispatch(&mut self, timeout: Duration) -> Result<Dispatch> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(d) = self.dispatches.pop_front() {
                return Ok(d);
            }
            self.pump(deadline, "a dispatch").await?;
        }
    }

    /// The next dispatch named `name`, skipping others.
    pub async fn wait_for(&mut self, name: &str, timeout: Duration) -> Result<Dispatch> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(i) = self.dispatches.iter().position(|d| d.name == name) {
                let found = self.dispatches.remove(i).expect("index in range");
                self.dispatches.drain(..i);
                return Ok(found);
            }
            self.pump(deadline, "a named dispatch").await?;
        }
    }

    /// Dispatches already received and not yet taken.
    pub fn pending(&self) -> impl Iterator<Item = &Dispatch> {
        self.dispatches.iter()
    }

    async fn wait_reply(&mut self, op: &str, timeout: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(i) = self.replies.iter().position(|r| r["op"] == op) {
                return Ok(self.replies.remove(i).expect("index in range"));
            }
            self.pump(deadline, "a reply").await?;
        }
    }

    async fn wait_reply_for_nonce(&mut self, nonce: &str, timeout: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(i) = self.replies.iter().position(|r| r["d"]["nonce"] == nonce) {
                return Ok(self.replies.remove(i).expect("index in range"));
            }
            self.pump(deadline, "an ack").await?;
        }
    }

    /// Waits for the node to close the connection; returns its close code.
    pub async fn closed(&mut self, timeout: Duration) -> Result<u16> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.pump(deadline, "the close").await {
                Ok(()) => {}
                Err(ClientError::Closed { code, .. }) => return Ok(code),
                Err(other) => return Err(other),
            }
        }
    }
}

async fn next_json(socket: &mut Socket, timeout: Duration) -> Result<Value> {
    loop {
        let message = tokio::time::timeout(timeout, socket.next())
            .await
            .map_err(|_| ClientError::Timeout("a gateway frame"))?;
        match message {
            Some(Ok(WsMessage::Text(text))) => {
                return serde_json::from_str(&text)
                    .map_err(|e| ClientError::Gateway(e.to_string()));
            }
            Some(Ok(WsMessage::Close(frame))) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                });
                return Err(ClientError::Closed { code, reason });
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ClientError::Gateway(e.to_string())),
            None => return Err(ClientError::Gateway("connection ended".into())),
        }
    }
}
