//! Guildhall's peer-to-peer shell: a libp2p swarm that pushes signed ops and signals of each
//! guild to the nodes entitled to it, answers their join, catch-up and back-fill requests, and
//! hands every peer's op to the node through [`Host`].

mod budget;
pub mod protocol;
#[cfg(feature = "stranger")]
pub mod stranger;
mod swarm;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use budget::Budget;
use guildhall_proto::guild::LogPositions;
use guildhall_proto::hlc::Hlc;
use guildhall_proto::id::{GuildId, InviteId, InviteKey, NodeId, OpId, UserId};
use guildhall_proto::op::{Op, VerifiedOp};
use guildhall_proto::sealed::{ChannelKey, KeyId};
use guildhall_proto::signal::Signal;
pub use libp2p::identity::Keypair as NodeKey;
pub use libp2p::{Multiaddr, PeerId};
pub use swarm::{node_of, peer_of};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Where to accept peers, e.g. `/ip4/0.0.0.0/tcp/4001`.
    pub listen: Multiaddr,
    /// The address put in invite codes, when the listen address is not what peers can dial
    /// (`0.0.0.0`, or behind NAT). Must end in `/p2p/<this node's peer id>` or have none.
    pub announce: Option<Multiaddr>,
    /// Peers dialed at start and redialed whenever the connection drops.
    pub bootstrap: Vec<Multiaddr>,
    /// Nodes never to connect with (operator deny-list).
    pub deny: Vec<PeerId>,
    /// Where the addresses of peers met so far are kept, so a restart redials them.
    pub peers_file: Option<PathBuf>,
    /// Find peers on the local network with mDNS (libp2p's `_p2p._udp.local`) and dial them.
    /// Off by default: it multicasts on every non-loopback interface.
    pub mdns: bool,
    /// How often each guild is reconciled with every peer entitled to it.
    pub catchup_interval: Duration,
    /// How often dropped peers are redialed.
    pub redial_interval: Duration,
    /// Invalid messages or refused ops that get a peer blocked. An honest node never relays
    /// such ops (it validates before forwarding), so a few are evidence enough.
    pub max_strikes: u32,
    /// Ops and signals per second a peer may push, and the burst above it.
    pub peer_rate: f64,
    pub peer_burst: f64,
    /// Sync requests a peer may make, by kind (§6): beyond them it is refused with
    /// `rate_limited`, and struck for every `REFUSALS_PER_STRIKE` refusals. Pushes are bounded by
    /// `peer_rate` (per op or signal) and the in-flight limit.
    pub catchup_budget: Budget,
    pub join_budget: Budget,
    pub backfill_budget: Budget,
    /// DM key lookups and DM hand-overs together.
    pub dm_budget: Budget,
    /// Channel key requests.
    pub channel_key_budget: Budget,
    /// How long what is kept about a peer that left (its budgets, refusals and strikes) is
    /// kept: long enough that leaving and coming back refills no budget and clears no strike
    /// sooner than waiting would.
    pub forget_peers_after: Duration,
    /// A peer's requests being answered at once; more are refused with `rate_limited`. This
    /// node keeps its own catch-ups with one peer to a quarter of it, so two honest nodes never
    /// meet it.
    pub max_requests_in_flight: usize,
}

impl NetConfig {
    pub fn new(listen: Multiaddr) -> Self {
        NetConfig {
            listen,
            announce: None,
            bootstrap: Vec::new(),
            deny: Vec::new(),
            peers_file: None,
            mdns: false,
            catchup_interval: Duration::from_secs(10),
            redial_interval: Duration::from_secs(2),
            max_strikes: 3,
            peer_rate: 2_000.0,
            peer_burst: 10_000.0,
            // A catch-up round is one request per shared guild every 10 s, and a long catch-up
            // one per batch applied: a node sharing 1 000 guilds with us stays within it.
            catchup_budget: Budget::new(100.0, 1_000.0),
            // A join or back-fill is one request per batch, each verified (and a back-fill
            // stored) before the next: a few per second.
            join_budget: Budget::new(10.0, 100.0),
            backfill_budget: Budget::new(10.0, 100.0),
            dm_budget: Budget::new(10.0, 100.0),
            // A node asks when sealed text it cannot open arrives, or its users' view changes:
            // once per guild per round, to each peer.
            channel_key_budget: Budget::new(10.0, 100.0),
            max_requests_in_flight: 32,
            forget_peers_after: Duration::from_secs(600),
        }
    }
}

/// Ops for a peer, oldest first in an order where each follows its predecessors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub ops: Vec<Vec<u8>>,
    /// Cut at a limit: ask again.
    pub more: bool,
}

/// How long a node that proved an invite to fetch a guild (a join) stays entitled to it
/// without being home to a member: long enough for the join op and home binding it makes
/// next to arrive.
pub const JOIN_GRACE: Duration = Duration::from_secs(600);

/// Why a node refused a peer's request, with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    pub code: String,
    pub message: String,
}

impl Refusal {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Refusal {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// What the node did with one op from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Stored (whatever its verdict), or a signal shown: forward it.
    Accepted,
    /// Stored, but its author's earlier ops are not all held here: forward it and catch up
    /// with the sender.
    AcceptedWithGap,
    /// Already held.
    Duplicate,
    /// Held until the guild-state ops it cites arrive: catch up with the sender.
    Pending,
    /// Not for this node now (a guild it does not serve, a timestamp too far ahead, a signal
    /// seen already or expired): dropped without blame, not forwarded.
    Ignored(&'static str),
    /// Broken (deps that are not guild-state ops, or not older than it): the sender is at
    /// fault.
    Refused(&'static str),
}

/// The node behind the swarm: its replicas and its one apply path.
pub trait Host: Send + Sync + 'static {
    /// Where this node is in every author's log of a guild, or `None` if the guild is not
    /// served here.
    fn log_positions(&self, guild: &GuildId) -> Option<LogPositions>;
    /// Whether `node` may be sent anything of a guild served here: it is home to a current
    /// member (`auth.md` entitlement).
    fn entitled(&self, guild: &GuildId, node: &NodeId) -> bool;
    /// Whether a peer at `have` holds ops of the guild this node lacks.
    fn lacks_from(&self, guild: &GuildId, have: &LogPositions) -> bool;
    /// The next batch of ops a peer at `have` lacks, after the cursor, bounded by
    /// `MAX_BATCH_OPS` / `MAX_BATCH_BYTES` (`Guild::ops_missing_from`).
    fn missing_ops(
        &self,
        guild: &GuildId,
        have: &LogPositions,
        after: Option<(Hlc, OpId)>,
    ) -> Option<Batch>;
    /// Checks the fetch proof of `requester`, whose user wants to join with an invite, then
    /// answers with the guild's next batch after the cursor: every guild-state op and the
    /// newest `recent` content ops (`Guild::ops_for_join`), or everything when `recent` is
    /// `None`.
    fn join_ops(
        &self,
        guild: &GuildId,
        invite: &InviteId,
        requester: &NodeId,
        proof: &[u8; 64],
        after: Option<(Hlc, OpId)>,
        recent: Option<usize>,
    ) -> Result<Batch, Refusal>;
    /// Where this node's catch-ups of a guild start: `None` (from the beginning) unless its
    /// older history is still being back-filled; then after the newest op it held then, so a
    /// catch-up brings news and not that history, oldest first, as news (§3).
    fn catchup_start(&self, _guild: &GuildId) -> Option<(Hlc, OpId)> {
        None
    }
    /// The batch of content ops before `before`, newest first (`Guild::content_before`), or
    /// `None` if the guild is not served here, or not with its whole history.
    fn backfill_ops(&self, guild: &GuildId, before: (Hlc, OpId)) -> Option<Batch>;
    /// Shows a peer's signal (signature checked, of the guild it was pushed for) to local
    /// clients: `Accepted` if it is forwarded on.
    fn signal(&self, signal: Signal) -> Applied;
    /// Validates, stores and fans out ops of one guild from the peer at `from`, in order;
    /// what waits for missing deps is charged to that peer.
    fn apply(
        &self,
        guild: GuildId,
        from: NodeId,
        ops: Vec<VerifiedOp>,
    ) -> impl Future<Output = Vec<Applied>> + Send;
    /// The signed DM key records held for a user, oldest version first.
    fn dm_keys(&self, user: &UserId) -> Vec<Vec<u8>>;
    /// The channel keys among `ids` held for a guild whose channel `requester` is a viewer
    /// node of (`Guild::keys_for`); a host that seals nothing holds none.
    fn channel_keys(
        &self,
        _guild: &GuildId,
        _requester: &NodeId,
        _ids: &[KeyId],
    ) -> Vec<ChannelKey> {
        Vec::new()
    }
    /// Verifies and durably stores DMs a peer hands over for this node's users; answers once
    /// they are stored, with how many there were.
    fn take_dms(
        &self,
        envelopes: Vec<Vec<u8>>,
    ) -> impl Future<Output = Result<u32, Refusal>> + Send;
}

#[derive(Debug, Error)]
pub enum NetError {
    #[error("cannot start the swarm: {0}")]
    Start(String),
    #[error("cannot reach {0}: {1}")]
    Unreachable(String, String),
    #[error("the peer refused: {0}")]
    Refused(Refusal),
    #[error("the peer sent a bad response: {0}")]
    BadResponse(String),
    #[error("the network task stopped")]
    Stopped,
}

enum Command {
    Publish(GuildId, Vec<u8>),
    Signal(GuildId, Vec<u8>),
    Serve(GuildId),
    /// A request to one node: dialed at `addr` if given, else one connected already.
    Ask {
        peer: PeerId,
        addr: Option<Multiaddr>,
        request: Box<protocol::Request>,
        reply: oneshot::Sender<Result<protocol::Response, NetError>>,
    },
    Block(PeerId),
    Unblock(PeerId),
    Strike(PeerId, &'static str),
    Peers(oneshot::Sender<Vec<PeerId>>),
    PeersEntitled(GuildId, oneshot::Sender<Vec<PeerId>>),
    Faults(oneshot::Sender<BTreeMap<&'static str, u64>>),
    TrackedPeers(oneshot::Sender<usize>),
}

/// How long a DM or channel key lookup waits for each peer.
const KEYS_TIMEOUT: Duration = Duration::from_secs(2);

/// The node's handle on the running swarm; cheap to clone.
#[derive(Clone)]
pub struct NetHandle {
    commands: mpsc::UnboundedSender<Command>,
    peer_id: PeerId,
    listen_addrs: Arc<Mutex<Vec<Multiaddr>>>,
}

/// Starts the swarm on the tokio runtime; returns once it listens.
pub async fn start<H: Host>(
    config: NetConfig,
    key: NodeKey,
    host: Arc<H>,
) -> Result<NetHandle, NetError> {
    swarm::start(config, key, host).await
}

impl NetHandle {
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// This node's key, as members name it in their home bindings.
    pub fn node_id(&self) -> NodeId {
        node_of(&self.peer_id).expect("the node key is ed25519")
    }

    /// Addresses peers can dial, each ending in `/p2p/<peer id>`.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen_addrs.lock().expect("listen addrs lock").clone()
    }

    fn send(&self, command: Command) {
        // The swarm task only stops with the runtime; there is nobody left to tell.
        let _ = self.commands.send(command);
    }

    /// Pushes a committed local op to the connected peers entitled to the guild.
    pub fn publish(&self, guild: GuildId, op: Vec<u8>) {
        self.send(Command::Publish(guild, op));
    }

    /// Pushes a signed signal (typing, presence) to the connected peers entitled to the guild.
    pub fn signal(&self, guild: GuildId, signal: Vec<u8>) {
        self.send(Command::Signal(guild, signal));
    }

    /// Serves the guild: takes its pushes and reconciles it with the peers entitled to it.
    pub fn serve(&self, guild: GuildId) {
        self.send(Command::Serve(guild));
    }

    /// Asks the node at `addr` (ending in `/p2p/<peer id>`) to let a user of ours join: the
    /// guild's next batch after the cursor (the last op of the previous batch). The invite's
    /// secret stays here: the request carries a proof of it bound to this node.
    pub async fn join(
        &self,
        addr: Multiaddr,
        guild: GuildId,
        invite: InviteId,
        secret: &[u8],
        after: Option<(Hlc, OpId)>,
        recent: Option<usize>,
    ) -> Result<Batch, NetError> {
        let proof = InviteKey::prove_fetch(secret, &guild, &invite, &self.node_id());
        let request = protocol::Request::Join {
            guild,
            invite,
            proof: serde_bytes::ByteArray::new(proof),
            after: after.map(protocol::cursor_to_wire),
            recent: recent.map(|n| n.min(u32::MAX as usize) as u32),
        };
        self.ask_for_ops(addr, request).await
    }

    /// Asks `peer` (dialed at `addr` if given) for the guild's content ops before `before`,
    /// newest first.
    pub async fn backfill(
        &self,
        peer: PeerId,
        addr: Option<Multiaddr>,
        guild: GuildId,
        before: (Hlc, OpId),
    ) -> Result<Batch, NetError> {
        let before = protocol::cursor_to_wire(before);
        let request = protocol::Request::Backfill { guild, before };
        ops_of(self.ask(peer, addr, request).await?)
    }

    async fn ask_for_ops(
        &self,
        addr: Multiaddr,
        request: protocol::Request,
    ) -> Result<Batch, NetError> {
        ops_of(self.ask_at(addr, request).await?)
    }

    /// The DM key records connected peers hold for `user`, each verified by the caller.
    /// All connected peers are asked at once, and a peer slower than `DM_KEYS_TIMEOUT` is
    /// left out, so one stalled peer cannot hold up a client's lookup.
    pub async fn dm_keys(&self, user: UserId) -> Vec<Vec<u8>> {
        let asks = self.peers().await.into_iter().map(|peer| async move {
            let asked = self.ask(peer, None, protocol::Request::DmKeys { user });
            match tokio::time::timeout(KEYS_TIMEOUT, asked).await {
                Ok(Ok(protocol::Response::DmKeys { records })) => {
                    let newest = records.len().saturating_sub(protocol::MAX_DM_KEY_RECORDS);
                    records
                        .into_iter()
                        .skip(newest)
                        .map(|b| b.into_vec())
                        .collect()
                }
                _ => Vec::new(),
            }
        });
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// The channel keys among `ids` (at most `MAX_CHANNEL_KEYS`) that the connected peers
    /// entitled to the guild give this node, all asked at once, each left out after
    /// `KEYS_TIMEOUT`. A key that is not one asked for (its id does not match) strikes its
    /// sender.
    pub async fn channel_keys(&self, guild: GuildId, ids: &[KeyId]) -> Vec<ChannelKey> {
        let ids: BTreeSet<KeyId> = ids
            .iter()
            .take(protocol::MAX_CHANNEL_KEYS)
            .copied()
            .collect();
        let wire: Vec<_> = ids
            .iter()
            .map(|id| serde_bytes::ByteArray::new(id.0))
            .collect();
        let asks = self.peers_entitled(guild).await.into_iter().map(|peer| {
            let request = protocol::Request::ChannelKeys {
                guild,
                keys: wire.clone(),
            };
            let ids = &ids;
            async move {
                let asked = self.ask(peer, None, request);
                let Ok(Ok(protocol::Response::ChannelKeys { keys })) =
                    tokio::time::timeout(KEYS_TIMEOUT, asked).await
                else {
                    return Vec::new();
                };
                // Counted before any is hashed: an honest answer holds at most what was asked.
                if keys.len() > ids.len() {
                    self.strike(peer, "bad_channel_key");
                    return Vec::new();
                }
                let keys: Vec<ChannelKey> = keys
                    .into_iter()
                    .map(|(channel, key)| ChannelKey {
                        guild,
                        channel,
                        key: key.into_array(),
                    })
                    .collect();
                if keys.iter().any(|key| !ids.contains(&key.id())) {
                    self.strike(peer, "bad_channel_key");
                    return Vec::new();
                }
                keys
            }
        });
        let given: BTreeMap<KeyId, ChannelKey> = futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .map(|key| (key.id(), key))
            .collect();
        given.into_values().collect()
    }

    /// Hands DMs to the home node at `addr` (ending in `/p2p/<peer id>`); returns once that
    /// node has stored them.
    pub async fn deliver_dms(
        &self,
        addr: Multiaddr,
        envelopes: Vec<Vec<u8>>,
    ) -> Result<u32, NetError> {
        let request = protocol::Request::Dms {
            envelopes: envelopes
                .into_iter()
                .map(serde_bytes::ByteBuf::from)
                .collect(),
        };
        match self.ask_at(addr, request).await? {
            protocol::Response::DmsTaken { count } => Ok(count),
            other => Err(unexpected(other)),
        }
    }

    async fn ask_at(
        &self,
        addr: Multiaddr,
        request: protocol::Request,
    ) -> Result<protocol::Response, NetError> {
        let peer = swarm::peer_of(&addr).ok_or_else(|| {
            NetError::Unreachable(addr.to_string(), "the address has no /p2p/<peer id>".into())
        })?;
        self.ask(peer, Some(addr), request).await
    }

    /// Sends `peer` any request, as it is: for attacking a node in tests.
    #[cfg(feature = "stranger")]
    pub async fn request(
        &self,
        peer: PeerId,
        request: protocol::Request,
    ) -> Result<protocol::Response, NetError> {
        self.ask(peer, None, request).await
    }

    async fn ask(
        &self,
        peer: PeerId,
        addr: Option<Multiaddr>,
        request: protocol::Request,
    ) -> Result<protocol::Response, NetError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Ask {
            peer,
            addr,
            request: Box::new(request),
            reply,
        });
        match answer.await.map_err(|_| NetError::Stopped)?? {
            protocol::Response::Refused { code, message } => {
                Err(NetError::Refused(Refusal { code, message }))
            }
            response => Ok(response),
        }
    }

    /// Drops and refuses every connection with `peer` until unblocked.
    pub fn block(&self, peer: PeerId) {
        self.send(Command::Block(peer));
    }

    pub fn unblock(&self, peer: PeerId) {
        self.send(Command::Unblock(peer));
    }

    /// Counts a fault the node found in what `peer` sent (a lying answer the swarm cannot
    /// judge), with a stable code: one strike, as if the swarm had seen it (§6).
    pub fn strike(&self, peer: PeerId, code: &'static str) {
        self.send(Command::Strike(peer, code));
    }

    /// Faults seen from peers so far, by code (`bad_signature`, `gossip_flood`, ...).
    pub async fn faults(&self) -> BTreeMap<&'static str, u64> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Faults(reply));
        answer.await.unwrap_or_default()
    }

    /// Peers this node keeps budgets, refusals or strikes for: those connected and those that
    /// left less than `forget_peers_after` ago (at most `MAX_DEPARTED` of them).
    pub async fn tracked_peers(&self) -> usize {
        let (reply, answer) = oneshot::channel();
        self.send(Command::TrackedPeers(reply));
        answer.await.unwrap_or_default()
    }

    /// Connected peers entitled to a guild served here: those a published op reaches at once.
    pub async fn peers_entitled(&self, guild: GuildId) -> Vec<PeerId> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::PeersEntitled(guild, reply));
        answer.await.unwrap_or_default()
    }

    /// Peers connected now.
    pub async fn peers(&self) -> Vec<PeerId> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Peers(reply));
        answer.await.unwrap_or_default()
    }
}

fn ops_of(response: protocol::Response) -> Result<Batch, NetError> {
    match response {
        protocol::Response::Ops { ops, more } => Ok(Batch {
            ops: ops.into_iter().map(|b| b.into_vec()).collect(),
            more,
        }),
        other => Err(unexpected(other)),
    }
}

fn unexpected(response: protocol::Response) -> NetError {
    NetError::BadResponse(format!("an answer of the wrong kind: {response:?}"))
}

/// Decodes ops from a peer and checks they belong to `guild`; the signatures are checked next.
fn decode_op(guild: GuildId, bytes: &[u8]) -> Result<Op, &'static str> {
    match Op::decode(bytes) {
        Ok(op) if op.guild() == guild => Ok(op),
        Ok(_) => Err("wrong_guild"),
        Err(e) => Err(e.code()),
    }
}

/// Decodes and verifies ops of `guild` from a peer on the blocking pool, split across the
/// machine's cores, each part verified as one batch (`proto::op::verify_batch`); each op gets
/// its own verdict (a stable error code on failure), in order.
pub async fn verify_ops(
    guild: GuildId,
    ops: Vec<Vec<u8>>,
) -> Vec<Result<VerifiedOp, &'static str>> {
    let verify = move |part: &[Vec<u8>]| {
        let mut verdicts = Vec::with_capacity(part.len());
        let (mut at, mut well_formed) = (Vec::new(), Vec::new());
        for bytes in part {
            match decode_op(guild, bytes) {
                Ok(op) => {
                    at.push(verdicts.len());
                    well_formed.push(op);
                    verdicts.push(Err("unverified"));
                }
                Err(code) => verdicts.push(Err(code)),
            }
        }
        let verified = guildhall_proto::verify_batch(well_formed, rand::rng());
        for (i, verdict) in at.into_iter().zip(verified) {
            verdicts[i] = verdict.map_err(|e| e.code());
        }
        verdicts
    };
    tokio::task::spawn_blocking(move || {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = ops.len().div_ceil(cores).max(64);
        std::thread::scope(|scope| {
            let workers: Vec<_> = ops
                .chunks(chunk)
                .map(|part| scope.spawn(move || verify(part)))
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("a verifier thread panicked"))
                .collect()
        })
    })
    .await
    .expect("the verifier task panicked")
}

/// Loads the node's libp2p identity from `path`, creating it on first start.
pub fn load_or_create_key(path: &std::path::Path) -> std::io::Result<NodeKey> {
    if let Ok(bytes) = std::fs::read(path) {
        return NodeKey::from_protobuf_encoding(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e));
    }
    let key = NodeKey::generate_ed25519();
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(key)
}
