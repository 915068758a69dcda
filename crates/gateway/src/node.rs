//! The node's shell around the core: guild replicas in memory, the one write path (precheck,
//! sign, insert, durable commit, fan-out), accounts' keys, presence and rate limits.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use guildhall_net::{Applied, Multiaddr, NetHandle};
use guildhall_proto::access;
use guildhall_proto::body::Body;
use guildhall_proto::guild::{Guild, InsertError, Inserted, Verdict};
use guildhall_proto::hlc::Hlc;
use guildhall_proto::id::{ChannelId, GuildId, Keypair, NodeId, OpId, UserId};
use guildhall_proto::op::{Envelope, VerifiedOp};
use guildhall_proto::signal::{Signal, SignalKind};
use guildhall_store::{BackfillProgress, Store, StoreError, TokenRecord, Write};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::accounts;
use crate::error::ApiError;
use crate::views;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub heartbeat_interval: Duration,
    /// How long a disconnected gateway session stays resumable.
    pub session_ttl: Duration,
    /// Sustained requests per second per user, and the burst allowed above it.
    pub user_rate: f64,
    pub user_burst: f64,
    /// Account creation and login attempts per second per IP, and burst.
    pub auth_rate: f64,
    pub auth_burst: f64,
    /// Requests per second per IP address, of any kind, and burst.
    pub ip_rate: f64,
    pub ip_burst: f64,
    pub max_frame_bytes: usize,
    /// How far into the future a peer's op may be timestamped before it is held back.
    pub max_clock_skew: Duration,
    /// How long a send nonce is remembered: a retry within it never duplicates.
    pub nonce_retention: Duration,
    /// Ops a restart loads before serving, besides guild-state ops and the end of every
    /// author's log: the newest. Older history loads in the background.
    pub restart_recent: u64,
    /// Content ops a join by invite fetches from the guild's node: the newest ones. Older
    /// history is back-filled afterwards, newest first.
    pub join_recent: usize,
    /// What a join by invite takes from the guild's node at most, in ops, bytes and time
    /// (`spec/federation.md` §5): a node that sends more, or slower, is refused.
    pub join_max_ops: usize,
    pub join_max_bytes: usize,
    pub join_timeout: Duration,
    /// Whether that back-fill runs on its own until history is complete; otherwise only as
    /// clients page back into history not yet fetched.
    pub backfill_in_background: bool,
}

impl NodeConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        NodeConfig {
            data_dir,
            heartbeat_interval: Duration::from_secs(30),
            session_ttl: Duration::from_secs(120),
            user_rate: 50.0,
            user_burst: 200.0,
            auth_rate: 1.0,
            auth_burst: 10.0,
            ip_rate: 500.0,
            ip_burst: 1_000.0,
            max_frame_bytes: 64 * 1024,
            max_clock_skew: Duration::from_secs(60),
            nonce_retention: Duration::from_secs(24 * 60 * 60),
            restart_recent: 2_000,
            join_recent: 1_000,
            join_max_ops: 1_000_000,
            join_max_bytes: 256 * 1024 * 1024,
            join_timeout: Duration::from_secs(120),
            backfill_in_background: true,
        }
    }
}

/// Something that happened in a guild, for the gateway sessions allowed to see it.
#[derive(Debug, Clone)]
pub struct Event {
    pub guild: GuildId,
    pub gate: Gate,
    pub name: &'static str,
    pub data: Value,
}

/// Which members of the event's guild may see it.
#[derive(Debug, Clone)]
pub enum Gate {
    Guild,
    /// Those with VIEW_CHANNEL on this channel (a thread's parent).
    Channel(ChannelId),
    /// Exactly these users (still members): for a deleted channel, those who could view it.
    Users(Arc<BTreeSet<UserId>>),
}

/// An event with its payload serialized once for every session that sends it.
#[derive(Debug)]
pub struct Published {
    pub event: Event,
    /// `event.data` as JSON, serialized once and shared by every session buffering it.
    pub data: Arc<str>,
}

pub use guildhall_proto::signal::Status;

#[derive(Default)]
pub struct Metrics {
    pub ops_committed: AtomicU64,
    pub requests: AtomicU64,
    pub gateway_sessions: AtomicU64,
    pub dispatches: AtomicU64,
}

pub struct Node {
    pub config: NodeConfig,
    pub store: Store,
    storage_key: [u8; 32],
    guilds: RwLock<HashMap<GuildId, Arc<Mutex<Guild>>>>,
    keys: Mutex<HashMap<UserId, Keypair>>,
    /// Recent send nonces, so a retry racing its original gets the original's id.
    nonces: Mutex<HashMap<(UserId, String), (OpId, u64)>>,
    events: broadcast::Sender<Arc<Published>>,
    presence: Mutex<HashMap<UserId, (Status, usize)>>,
    /// Statuses other nodes announced for their users, each until its expiry (ms).
    remote_presence: Mutex<HashMap<UserId, (Status, u64)>>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    pub sessions: crate::ws::Sessions,
    pub metrics: Metrics,
    pub started: Instant,
    /// Set when a commit failed after its op entered a replica: memory and disk may differ, so
    /// writes stop until a restart reloads from disk.
    write_failed: std::sync::atomic::AtomicBool,
    /// The federation swarm, once started: local ops are pushed to peers through it.
    net: OnceLock<NetHandle>,
    /// Serializes adopting guilds fetched from peers.
    adopting: tokio::sync::Mutex<()>,
    /// Guilds whose older history is still being fetched, and from where.
    pub(crate) backfills: Mutex<HashMap<GuildId, BackfillProgress>>,
    /// One back-fill batch at a time, node-wide.
    pub(crate) backfilling: tokio::sync::Mutex<()>,
    /// What each back-fill running keeps in memory only (`backfill.rs`).
    pub(crate) backfill_runs: Mutex<HashMap<GuildId, crate::backfill::BackfillRun>>,
    /// Guilds whose older stored history a restart has not loaded yet (`history.rs`).
    pub(crate) loading: Mutex<HashMap<GuildId, crate::history::Older>>,
    /// Told whenever more of that history is loaded.
    pub(crate) loaded: tokio::sync::Notify,
    /// Wakes the task that hands DMs to other nodes.
    pub(crate) dm_delivery: Arc<tokio::sync::Notify>,
    /// The SFU and voice states, once voice is started.
    pub(crate) voice: OnceLock<crate::voice::VoiceHub>,
    pub(crate) key_fetch: crate::channel_keys::KeyFetch,
}

/// How often, at most, send nonces past their retention are looked for.
const NONCE_EXPIRY_INTERVAL: Duration = Duration::from_secs(60);
/// Ops from peers still waiting for their deps this long after their timestamp are dropped
/// (`Guild::expire_pending`), checked this often.
const PENDING_TTL: Duration = Duration::from_secs(600);
const PENDING_EXPIRY_INTERVAL: Duration = Duration::from_secs(60);
/// Rate-limit buckets kept before idle ones are dropped.
const MAX_BUCKETS: usize = 100_000;
/// Recent nonces kept in memory; older ones are still found in the store.
const MAX_RECENT_NONCES: usize = 100_000;
/// How long a typing indicator holds.
pub const TYPING_TTL_MS: u64 = 10_000;
/// How long a status announced to other nodes holds, and how often it is re-announced.
const PRESENCE_TTL_MS: u64 = 150_000;
const PRESENCE_REFRESH: Duration = Duration::from_secs(60);
/// Remote statuses kept before expired ones are dropped.
const MAX_REMOTE_PRESENCE: usize = 100_000;

/// The status others see, from the chosen status and the number of sessions.
fn visible((status, sessions): (Status, usize)) -> Status {
    if sessions == 0 {
        Status::Offline
    } else {
        status
    }
}

/// Store writes for a replica's ops, in the order given (the order they entered it).
fn op_writes(guild: &Guild, ids: impl IntoIterator<Item = OpId>) -> Vec<Write> {
    ids.into_iter()
        .filter_map(|id| guild.op(&id).map(|op| Write::op(guild.id(), op)))
        .collect()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Node {
    /// Opens the data dir (creating it), the store and the storage key, and rebuilds every
    /// guild replica from its stored ops.
    pub fn open(config: NodeConfig) -> Result<Arc<Node>, String> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| format!("cannot create {}: {e}", config.data_dir.display()))?;
        let store =
            Store::open(&config.data_dir.join("guildhall.redb")).map_err(|e| e.to_string())?;
        let storage_key =
            accounts::load_or_create_storage_key(&config.data_dir.join("storage.key"))
                .map_err(|e| format!("storage key: {e}"))?;
        let mut guilds = HashMap::new();
        let mut loading = HashMap::new();
        for id in store.guilds().map_err(|e| e.to_string())? {
            let (mut guild, older) =
                crate::history::load_recent(&store, &id, config.restart_recent)?;
            for key in store.channel_keys(&id).map_err(|e| e.to_string())? {
                guild.add_channel_key(key);
            }
            guilds.insert(id, Arc::new(Mutex::new(guild)));
            if let Some(older) = older {
                loading.insert(id, older);
            }
        }
        let backfills = store.backfills().map_err(|e| e.to_string())?;
        let backfills = backfills.into_iter().collect();
        let (events, _) = broadcast::channel(16 * 1024);
        let node = Arc::new(Node {
            config,
            store,
            storage_key,
            guilds: RwLock::new(guilds),
            keys: Mutex::new(HashMap::new()),
            nonces: Mutex::new(HashMap::new()),
            events,
            presence: Mutex::new(HashMap::new()),
            remote_presence: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            sessions: crate::ws::Sessions::default(),
            metrics: Metrics::default(),
            started: Instant::now(),
            write_failed: std::sync::atomic::AtomicBool::new(false),
            net: OnceLock::new(),
            adopting: tokio::sync::Mutex::new(()),
            backfills: Mutex::new(backfills),
            loading: Mutex::new(loading),
            loaded: tokio::sync::Notify::new(),
            backfilling: tokio::sync::Mutex::new(()),
            backfill_runs: Mutex::new(HashMap::new()),
            dm_delivery: Arc::new(tokio::sync::Notify::new()),
            voice: OnceLock::new(),
            key_fetch: Default::default(),
        });
        node.spawn_history_loader();
        Ok(node)
    }

    /// Forgets send nonces older than `nonce_retention`, now and then every minute (or every
    /// retention period, if shorter), for as long as the node lives.
    pub fn spawn_nonce_expiry(self: &Arc<Self>) {
        let node = Arc::downgrade(self);
        let every = self
            .config
            .nonce_retention
            .clamp(Duration::from_millis(10), NONCE_EXPIRY_INTERVAL);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(node) = node.upgrade() else { return };
                let retention = node.config.nonce_retention.as_millis() as u64;
                let before_ms = now_ms().saturating_sub(retention);
                // Batch by batch, each its own commit, so acks queued meanwhile are not held.
                while let Ok(Some(oldest)) = node.store.oldest_nonce_ms()
                    && oldest < before_ms
                {
                    let expire = Write::ExpireNonces { before_ms };
                    if let Err(e) = node.store.write(vec![expire]).await {
                        tracing::warn!(error = %e, "cannot expire send nonces");
                        break;
                    }
                }
            }
        });
    }

    /// Drops what peers left pending past `PENDING_TTL`, every minute, for as long as the node
    /// lives.
    fn spawn_pending_expiry(self: &Arc<Self>) {
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PENDING_EXPIRY_INTERVAL);
            loop {
                tick.tick().await;
                let Some(node) = node.upgrade() else { return };
                let before_ms = now_ms().saturating_sub(PENDING_TTL.as_millis() as u64);
                let guilds: Vec<_> = node
                    .guilds
                    .read()
                    .expect("guild map lock")
                    .values()
                    .cloned()
                    .collect();
                for guild in guilds {
                    let mut g = guild.lock().expect("guild lock");
                    let dropped = g.expire_pending(before_ms);
                    if dropped > 0 {
                        tracing::info!(guild = %g.id(), dropped, "expired pending ops");
                    }
                }
            }
        });
    }

    /// Connects the node to the federation swarm, serves every guild held through it, and
    /// keeps re-announcing the statuses of its connected users to other nodes.
    pub fn attach_net(self: &Arc<Self>, net: NetHandle) {
        for id in self.guilds.read().expect("guild map lock").keys() {
            net.serve(*id);
        }
        let _ = self.net.set(net);
        let claiming = Arc::downgrade(self);
        tokio::spawn(async move {
            if let Some(node) = claiming.upgrade() {
                node.claim_homes().await;
            }
        });
        self.spawn_pending_expiry();
        self.spawn_dm_delivery();
        self.spawn_key_fetch();
        self.resume_backfills();
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut refresh = tokio::time::interval(PRESENCE_REFRESH);
            refresh.tick().await;
            loop {
                refresh.tick().await;
                let Some(node) = node.upgrade() else { return };
                let connected: Vec<UserId> = {
                    let presence = node.presence.lock().expect("presence lock");
                    presence
                        .iter()
                        .filter(|(_, (_, sessions))| *sessions > 0)
                        .map(|(user, _)| *user)
                        .collect()
                };
                for user in connected {
                    node.signal_presence(&user);
                }
            }
        });
    }

    pub fn net(&self) -> Option<&NetHandle> {
        self.net.get()
    }

    /// Where peers can fetch this node's guilds from, for invite codes.
    pub fn federation_addr(&self) -> Option<Multiaddr> {
        self.net.get()?.listen_addrs().into_iter().next()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.events.subscribe()
    }

    /// Whether any session (or the voice hub) listens for events: without one, building and
    /// serializing them is wasted (a catch-up applies thousands of ops a second).
    fn has_listeners(&self) -> bool {
        self.events.receiver_count() > 0
    }

    pub fn publish(&self, event: Event) {
        if !self.has_listeners() {
            return;
        }
        let data = event.data.to_string().into();
        let _ = self.events.send(Arc::new(Published { event, data }));
    }

    pub fn guild(&self, id: &GuildId) -> Result<Arc<Mutex<Guild>>, ApiError> {
        self.guilds
            .read()
            .expect("guild map lock")
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found("unknown_guild", "no such guild on this node"))
    }

    /// Runs `f` on a guild the user is a member of.
    pub fn with_member_guild<T>(
        &self,
        user: &UserId,
        id: &GuildId,
        f: impl FnOnce(&Guild) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let guild = self.guild(id)?;
        let guild = guild.lock().expect("guild lock");
        access::member(guild.state(), user)?;
        f(&guild)
    }

    /// Guilds `user` is a member of.
    pub fn guilds_of(&self, user: &UserId) -> Vec<GuildId> {
        let guilds = self.guilds.read().expect("guild map lock");
        let mut ids: Vec<GuildId> = guilds
            .iter()
            .filter(|(_, g)| {
                let g = g.lock().expect("guild lock");
                !g.state().deleted && g.state().is_member(user)
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    pub(crate) fn guild_ids(&self) -> Vec<GuildId> {
        self.guilds
            .read()
            .expect("guild map lock")
            .keys()
            .copied()
            .collect()
    }

    pub fn guild_count(&self) -> usize {
        self.guilds.read().expect("guild map lock").len()
    }

    pub fn remember_key(&self, user: UserId, key: Keypair) {
        self.keys.lock().expect("key cache lock").insert(user, key);
    }

    pub fn storage_key(&self) -> &[u8; 32] {
        &self.storage_key
    }

    fn user_key(&self, user: &UserId) -> Result<Keypair, ApiError> {
        if let Some(k) = self.keys.lock().expect("key cache lock").get(user) {
            return Ok(k.clone());
        }
        let name = self
            .store
            .username_of(user)?
            .ok_or_else(|| ApiError::internal("no account holds this user's key"))?;
        let account = self
            .store
            .account(&name)?
            .ok_or_else(|| ApiError::internal("account vanished"))?;
        let key = accounts::open_secret(&self.storage_key, user, &account.sealed_secret)?;
        self.remember_key(*user, key.clone());
        Ok(key)
    }

    /// Creates a guild owned by `owner`, with a text and a voice channel to start with.
    pub async fn create_guild(&self, owner: &UserId, name: &str) -> Result<GuildId, ApiError> {
        self.refuse_if_read_only()?;
        let key = self.user_key(owner)?;
        let envelope = Envelope {
            guild: OpId::default(),
            author: *owner,
            seq: 1,
            prev: None,
            hlc: Hlc::next(Hlc::default(), now_ms()),
            deps: vec![],
            body: Body::Genesis { name: name.into() },
        };
        let genesis = envelope.sign_verified(&key)?;
        let id = genesis.id();
        let write = Write::op(id, &genesis);
        let guild = Guild::new(genesis)?;
        self.store.write(vec![write]).await?;
        self.metrics.ops_committed.fetch_add(1, Ordering::Relaxed);
        self.hold(guild);
        for (position, (kind, channel)) in [
            (guildhall_proto::body::ChannelKind::Text, "general"),
            (guildhall_proto::body::ChannelKind::Voice, "General"),
        ]
        .into_iter()
        .enumerate()
        {
            let body = Body::ChannelCreate {
                kind,
                name: channel.into(),
                parent: None,
                position: position as u32,
            };
            self.submit(owner, &id, body).await?;
        }
        self.claim_home(owner, &id).await?;
        Ok(id)
    }

    /// Binds `user` to this node in `guild` with a `Home` op naming it, unless the state does
    /// already (or the user is no member, or the node does not federate): peers serve a guild
    /// only to nodes home to a current member (`auth.md` §9). The user's key lives here, so
    /// this node is their one home.
    pub async fn claim_home(&self, user: &UserId, guild: &GuildId) -> Result<(), ApiError> {
        let Some(net) = self.net.get() else {
            return Ok(());
        };
        let node = net.node_id();
        let homed = {
            let g = self.guild(guild)?;
            let g = g.lock().expect("guild lock");
            g.state().members.get(user).map(|m| m.homes.contains(&node))
        };
        if homed == Some(false) {
            self.submit(user, guild, Body::home(vec![node])).await?;
        }
        Ok(())
    }

    /// `claim_home` for every member with an account here, in every guild held: a replica
    /// made before home bindings existed, or while not federating, gets them on attaching.
    async fn claim_homes(&self) {
        let guilds: Vec<(GuildId, Vec<UserId>)> = {
            let guilds = self.guilds.read().expect("guild map lock");
            guilds
                .iter()
                .map(|(id, g)| {
                    (
                        *id,
                        g.lock()
                            .expect("guild lock")
                            .state()
                            .members
                            .keys()
                            .copied()
                            .collect(),
                    )
                })
                .collect()
        };
        for (guild, members) in guilds {
            for user in members {
                if !matches!(self.store.username_of(&user), Ok(Some(_))) {
                    continue;
                }
                if let Err(e) = self.claim_home(&user, &guild).await {
                    tracing::warn!(%guild, %user, error = ?e, "cannot bind a member to this node");
                }
            }
        }
    }

    /// Starts holding a stored replica: served to clients and, when federating, to peers.
    fn hold(&self, guild: Guild) {
        let id = guild.id();
        self.guilds
            .write()
            .expect("guild map lock")
            .insert(id, Arc::new(Mutex::new(guild)));
        if let Some(net) = self.net.get() {
            net.serve(id);
        }
    }

    /// The one write path for a user's op: authorize against everything held, sign with the
    /// user's key, apply, commit durably, then fan out. Returns once the op is durable.
    pub async fn submit(
        &self,
        user: &UserId,
        guild: &GuildId,
        body: Body,
    ) -> Result<OpId, ApiError> {
        self.submit_with(user, guild, body, None).await
    }

    /// `submit` with a client nonce: a retry with the same nonce returns the first op's id and
    /// writes nothing.
    pub async fn submit_with(
        &self,
        user: &UserId,
        guild_id: &GuildId,
        body: Body,
        nonce: Option<&str>,
    ) -> Result<OpId, ApiError> {
        self.refuse_if_read_only()?;
        let key = self.user_key(user)?;
        let guild = self.guild(guild_id)?;
        let (id, committed, outcome) = {
            let mut g = guild.lock().expect("guild lock");
            if let Some(nonce) = nonce
                && let Some(id) = self.seen_nonce(user, nonce)?
            {
                drop(g);
                // Queued behind the original's commit: answered only once that is durable.
                self.store.write(vec![]).await?;
                return Ok(id);
            }
            // Writes answer outsiders as reads do. Accepting an invite is the one op a
            // non-member makes; the core judges it.
            if !matches!(body, Body::Join { .. }) {
                access::member(g.state(), user)?;
            }
            let mut envelope = g.next_envelope(*user, now_ms(), body);
            let made_key =
                g.seal_new_text(user, &mut envelope.body, rand::random(), rand::random());
            if let Some(key) = made_key {
                // Queued ahead of every op sealed with it, so never an op without its key on
                // disk; not awaited: the op's own commit comes after it.
                drop(self.store.enqueue(vec![Write::ChannelKey(key)])?);
            }
            g.precheck(&envelope)?;
            let op = envelope.sign_verified(&key)?;
            let id = op.id();
            let bytes = op.encode();
            let control = op.envelope().body.is_control();
            let write = Write::op(*guild_id, &op);
            let outcome = match g.insert(op)? {
                Inserted::Applied { changes, .. } if g.verdict(&id) == Some(&Verdict::Valid) => {
                    Ok(views::events_for(&g, &changes))
                }
                other => Err(ApiError::internal(format!(
                    "own op not applied as valid after precheck: {other:?}"
                ))),
            };
            // Whatever entered the replica is stored, valid or not, so memory and disk agree;
            // queueing under the guild lock keeps each guild's ops in replica order on disk.
            let mut writes = vec![write];
            if let (Some(nonce), Ok(_)) = (nonce, &outcome) {
                let mut recent = self.nonces.lock().expect("nonce lock");
                if recent.len() >= MAX_RECENT_NONCES {
                    recent.clear();
                }
                let at_ms = now_ms();
                recent.insert((*user, nonce.to_owned()), (id, at_ms));
                writes.push(Write::Nonce {
                    user: *user,
                    nonce: nonce.to_owned(),
                    op: id,
                    at_ms,
                });
            }
            (
                id,
                self.store.enqueue(writes),
                outcome.map(|events| (events, bytes, control)),
            )
        };
        self.settle(committed).await?;
        self.metrics.ops_committed.fetch_add(1, Ordering::Relaxed);
        let (events, bytes, control) = outcome?;
        if let Some(net) = self.net.get() {
            net.publish(*guild_id, bytes);
        }
        if control {
            self.want_keys(*guild_id);
        }
        for event in events {
            self.publish(event);
        }
        Ok(id)
    }

    /// The write path for ops from peers (already signature-checked): insert, store every op
    /// that entered the replica, await the commit, then fan out. Same core, same store, same
    /// events as a local op.
    pub async fn apply_remote(
        &self,
        guild_id: GuildId,
        from: NodeId,
        ops: Vec<VerifiedOp>,
    ) -> Vec<Applied> {
        self.apply_from_peer(guild_id, Some(from), ops, false).await
    }

    /// `apply_remote`; for `history` (back-filled ops, old news), without the events that
    /// announce new messages and threads.
    pub(crate) async fn apply_from_peer(
        &self,
        guild_id: GuildId,
        from: Option<NodeId>,
        ops: Vec<VerifiedOp>,
        history: bool,
    ) -> Vec<Applied> {
        let ignored = |why| vec![Applied::Ignored(why); ops.len()];
        if self.writes_refused() {
            return ignored("storage_failed");
        }
        let Ok(guild) = self.guild(&guild_id) else {
            return ignored("unknown_guild");
        };
        let now = now_ms();
        let skew = self.config.max_clock_skew.as_millis() as u64;
        let (results, committed, events) = {
            let mut g = guild.lock().expect("guild lock");
            let mut results = Vec::with_capacity(ops.len());
            let mut writes = Vec::new();
            let mut changes = Vec::new();
            let mut stored_ids = Vec::new();
            for op in ops {
                // Held back, not judged: validity must not depend on our clock. The op comes
                // again with a later catch-up.
                if op.envelope().hlc.is_too_far_ahead(now, skew) {
                    results.push(Applied::Ignored("too_far_ahead"));
                    continue;
                }
                results.push(match g.insert_from(op, from) {
                    Ok(Inserted::Duplicate) => Applied::Duplicate,
                    Ok(Inserted::Pending { .. }) => Applied::Pending,
                    Ok(Inserted::Applied {
                        accepted,
                        changes: changed,
                        gaps,
                    }) => {
                        stored_ids.extend(accepted.iter().copied());
                        writes.extend(op_writes(&g, accepted));
                        changes.extend(changed);
                        if gaps.is_empty() {
                            Applied::Accepted
                        } else {
                            Applied::AcceptedWithGap
                        }
                    }
                    Err(InsertError::PendingFull) => Applied::Ignored("pending_full"),
                    // Without blame: a peer relaying a partition's worth may meet it honestly.
                    Err(InsertError::PeerPendingFull) => Applied::Ignored("peer_pending_full"),
                    Err(e) => Applied::Refused(e.code()),
                });
            }
            if crate::channel_keys::may_want_keys(&g, &stored_ids) {
                self.want_keys(guild_id);
            }
            let mut events = if self.has_listeners() {
                views::events_for(&g, &changes)
            } else {
                Vec::new()
            };
            if history {
                events.retain(|e| !matches!(e.name, "MESSAGE_CREATE" | "THREAD_CREATE"));
            }
            let stored = writes.len();
            let committed = (stored > 0).then(|| (stored, self.store.enqueue(writes)));
            (results, committed, events)
        };
        if let Some((stored, committed)) = committed {
            if self.settle(committed).await.is_err() {
                return vec![Applied::Ignored("storage_failed"); results.len()];
            }
            self.metrics
                .ops_committed
                .fetch_add(stored as u64, Ordering::Relaxed);
        }
        for event in events {
            self.publish(event);
        }
        results
    }

    /// Takes in a replica fetched from a peer (`order`: its ops in the order they entered),
    /// stores it and serves it. Returns false if the guild was already held.
    pub async fn adopt(
        &self,
        guild: Guild,
        order: &[OpId],
        source: Option<Multiaddr>,
    ) -> Result<bool, ApiError> {
        let _adopting = self.adopting.lock().await;
        let id = guild.id();
        if self
            .guilds
            .read()
            .expect("guild map lock")
            .contains_key(&id)
        {
            return Ok(false);
        }
        let mut writes = op_writes(&guild, order.iter().copied());
        let stored = writes.len();
        // Recorded with the ops, so a crash cannot leave history with gaps and no back-fill.
        let backfill = source
            .zip(guild.backfill_start())
            .filter(|_| guild.has_gaps())
            .map(|(source, (hlc, op))| BackfillProgress {
                before: (hlc.0, op),
                source: source.to_vec(),
            });
        if let Some(progress) = &backfill {
            writes.push(Write::Backfill {
                guild: id,
                progress: Some(progress.clone()),
            });
        }
        self.store.write(writes).await?;
        self.metrics
            .ops_committed
            .fetch_add(stored as u64, Ordering::Relaxed);
        // Before the guild is served, so that no catch-up starts as if its history were whole.
        if let Some(progress) = backfill {
            self.backfills
                .lock()
                .expect("backfill lock")
                .insert(id, progress);
        }
        self.hold(guild);
        self.want_keys(id);
        Ok(true)
    }

    /// Awaits a commit queued under a guild lock. A failure leaves the replica ahead of the
    /// disk, so the node refuses writes until a restart reloads it.
    async fn settle(
        &self,
        committed: Result<impl Future<Output = Result<(), StoreError>>, StoreError>,
    ) -> Result<(), StoreError> {
        let result = match committed {
            Ok(pending) => pending.await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            self.write_failed.store(true, Ordering::Relaxed);
            tracing::error!(error = %e, "commit failed after apply; refusing writes until restart");
        }
        result
    }

    fn seen_nonce(&self, user: &UserId, nonce: &str) -> Result<Option<OpId>, ApiError> {
        let recent = self
            .nonces
            .lock()
            .expect("nonce lock")
            .get(&(*user, nonce.to_owned()))
            .copied();
        let seen = match recent {
            Some(seen) => Some(seen),
            None => self.store.nonce(user, nonce)?,
        };
        // Exactly the retention period, whether or not the sweep has removed it yet.
        let retention = self.config.nonce_retention.as_millis() as u64;
        Ok(seen
            .filter(|(_, at_ms)| now_ms() < at_ms.saturating_add(retention))
            .map(|(id, _)| id))
    }

    fn refuse_if_read_only(&self) -> Result<(), ApiError> {
        if self.writes_refused() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_failed",
                "a write to disk failed; this node refuses writes until it is restarted",
            ));
        }
        Ok(())
    }

    /// Whether writes are refused after a failed commit.
    pub fn writes_refused(&self) -> bool {
        self.write_failed.load(Ordering::Relaxed)
    }

    /// From now until a restart, refuse writes: memory and disk may disagree.
    pub(crate) fn refuse_writes(&self) {
        self.write_failed.store(true, Ordering::Relaxed);
    }

    /// Takes one token from `key`'s bucket, or says how long until one is available.
    pub fn rate_check(&self, key: String, rate: f64, burst: f64) -> Result<(), ApiError> {
        let mut buckets = self.buckets.lock().expect("bucket lock");
        let now = Instant::now();
        if buckets.len() >= MAX_BUCKETS {
            // A bucket idle long enough to have refilled is the same as no bucket.
            buckets.retain(|_, (_, last)| now.duration_since(*last) < Duration::from_secs(600));
        }
        let (tokens, last) = buckets.entry(key).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(ApiError::rate_limited((1.0 - *tokens) / rate))
        }
    }

    pub fn user_rate_check(&self, user: &UserId) -> Result<(), ApiError> {
        self.rate_check(
            format!("user:{user}"),
            self.config.user_rate,
            self.config.user_burst,
        )
    }

    /// Records a session's presence change: `status` is the chosen status (`None` keeps it;
    /// `Offline` means invisible while connected), `session_delta` the sessions opened (+1) or
    /// closed (-1). Returns whether the status others see changed.
    pub fn set_presence(
        &self,
        user: &UserId,
        status: Option<Status>,
        session_delta: isize,
    ) -> bool {
        let mut presence = self.presence.lock().expect("presence lock");
        let entry = presence.entry(*user).or_insert((Status::Online, 0));
        let before = visible(*entry);
        entry.1 = entry.1.saturating_add_signed(session_delta);
        if let Some(status) = status {
            entry.0 = status;
        }
        before != visible(*entry)
    }

    /// The user's status: from their sessions here, else as another node announced it.
    pub fn presence_of(&self, user: &UserId) -> Status {
        let local = self
            .presence
            .lock()
            .expect("presence lock")
            .get(user)
            .copied();
        match local {
            Some(entry) if entry.1 > 0 => visible(entry),
            _ => {
                let remote = self.remote_presence.lock().expect("presence lock");
                match remote.get(user) {
                    Some((status, expires)) if *expires > now_ms() => *status,
                    _ => Status::Offline,
                }
            }
        }
    }

    /// Tells every guild `user` is in, here and on other nodes, that their status changed.
    pub fn announce_presence(&self, user: &UserId) {
        self.publish_presence(user);
        self.signal_presence(user);
    }

    fn signal_presence(&self, user: &UserId) {
        let status = self.presence_of(user);
        for guild in self.guilds_of(user) {
            self.signal(
                user,
                &guild,
                SignalKind::Presence { status },
                PRESENCE_TTL_MS,
            );
        }
    }

    /// Sends a signal by `user` to the guild's other nodes, signed with the user's key.
    fn signal(&self, user: &UserId, guild: &GuildId, kind: SignalKind, ttl_ms: u64) {
        let Some(net) = self.net.get() else { return };
        let Ok(key) = self.user_key(user) else { return };
        let signal = Signal {
            guild: *guild,
            user: *user,
            kind,
            expires_at_ms: now_ms() + ttl_ms,
        };
        net.signal(*guild, signal.sign(&key));
    }

    /// The channel whose VIEW_CHANNEL gates `user` typing in `channel` (`access::typing`).
    fn typing_gate(
        &self,
        user: &UserId,
        guild: &GuildId,
        channel: &ChannelId,
    ) -> Result<ChannelId, ApiError> {
        self.with_member_guild(user, guild, |g| Ok(access::typing(g, user, channel)?))
    }

    fn publish_typing(&self, user: &UserId, guild: &GuildId, channel: &ChannelId, gate: ChannelId) {
        self.publish(Event {
            guild: *guild,
            gate: Gate::Channel(gate),
            name: "TYPING_START",
            data: json!({
                "guild_id": guild,
                "channel_id": channel,
                "user_id": user,
                "ttl_ms": TYPING_TTL_MS,
            }),
        });
    }

    /// A user of this node is typing: tell the sessions here and the guild's other nodes.
    pub fn typing(
        &self,
        user: &UserId,
        guild: &GuildId,
        channel: &ChannelId,
    ) -> Result<(), ApiError> {
        let gate = self.typing_gate(user, guild, channel)?;
        self.publish_typing(user, guild, channel, gate);
        self.signal(
            user,
            guild,
            SignalKind::Typing { channel: *channel },
            TYPING_TTL_MS,
        );
        Ok(())
    }

    /// A signal from another node (signature already checked): shown here if it still holds
    /// and its user may do what it says. A refused signal is not the relaying node's fault
    /// (its view of the guild may lag ours), so it is ignored, never rejected.
    pub fn apply_signal(&self, signal: Signal) -> Applied {
        let skew = self.config.max_clock_skew.as_millis() as u64;
        if !signal.is_current(now_ms(), skew) {
            return Applied::Ignored("stale_signal");
        }
        let (user, guild) = (signal.user, signal.guild);
        match signal.kind {
            SignalKind::Typing { channel } => match self.typing_gate(&user, &guild, &channel) {
                Ok(gate) => {
                    self.publish_typing(&user, &guild, &channel, gate);
                    Applied::Accepted
                }
                Err(_) => Applied::Ignored("not_allowed"),
            },
            SignalKind::Presence { status } => {
                if self.with_member_guild(&user, &guild, |_| Ok(())).is_err() {
                    return Applied::Ignored("not_a_member");
                }
                let before = self.presence_of(&user);
                {
                    let mut remote = self.remote_presence.lock().expect("presence lock");
                    if remote.len() >= MAX_REMOTE_PRESENCE {
                        let now = now_ms();
                        remote.retain(|_, (_, expires)| *expires > now);
                    }
                    remote.insert(user, (status, signal.expires_at_ms));
                }
                if self.presence_of(&user) != before {
                    self.publish_presence(&user);
                }
                Applied::Accepted
            }
        }
    }

    /// PRESENCE_UPDATE to this node's sessions in every guild `user` is in.
    fn publish_presence(&self, user: &UserId) {
        let status = self.presence_of(user);
        for guild in self.guilds_of(user) {
            self.publish(Event {
                guild,
                gate: Gate::Guild,
                name: "PRESENCE_UPDATE",
                data: json!({ "guild_id": guild, "user_id": user, "status": status }),
            });
        }
    }

    /// The account behind a bearer token.
    pub fn authenticate(&self, token: &str) -> Result<TokenRecord, ApiError> {
        self.store
            .token(&accounts::token_hash(token))?
            .ok_or_else(ApiError::unauthorized)
    }
}
