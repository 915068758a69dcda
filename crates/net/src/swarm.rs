//! The swarm task: owns the libp2p swarm, turns its events into calls on the host, and the
//! handle's commands into network traffic.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use guildhall_proto::id::{GuildId, NodeId};
use guildhall_proto::op::Op;
use guildhall_proto::sealed::KeyId;
use guildhall_proto::signal::Signal;
use libp2p::identity::{Keypair, PublicKey};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, allow_block_list, identify, mdns, noise, ping, tcp, yamux};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::budget::{Bucket, Traffic};
use crate::protocol::{self, Request, Response};
use crate::{Applied, Batch, Command, Host, NetConfig, NetError, NetHandle, Refusal};

type Sync = request_response::Behaviour<request_response::cbor::codec::Codec<Request, Response>>;

#[derive(NetworkBehaviour)]
struct Behaviour {
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    sync: Sync,
    /// Local-network discovery (`NetConfig::mdns`); absent, it costs nothing.
    mdns: Toggle<mdns::tokio::Behaviour>,
}

/// What background work reports back to the swarm task.
enum Report {
    /// A peer's push was judged: answer it, forward what was new, blame what was broken.
    Pushed {
        peer: PeerId,
        guild: GuildId,
        channel: request_response::ResponseChannel<Response>,
        judged: Judged,
    },
    /// The answer to a peer's sync request, ready to send.
    Answer {
        peer: PeerId,
        channel: request_response::ResponseChannel<Response>,
        response: Response,
        after: AfterAnswer,
    },
    /// A sync batch was applied.
    Applied {
        peer: PeerId,
        guild: GuildId,
        faults: usize,
    },
}

/// What the swarm does once a request is answered.
enum AfterAnswer {
    Nothing,
    /// The peer's catch-up showed it holds ops of the guild we lack: pull them back.
    PullBack(GuildId),
    /// The peer proved an invite to fetch the guild: it is entitled to it for `JOIN_GRACE`.
    Grant(GuildId),
}

/// One item of a push, and what became of it (a stable code when it was broken).
type Verdict = (Arc<Vec<u8>>, Result<Applied, &'static str>);

/// Each item of a push with its verdict, in the order pushed.
struct Judged {
    ops: Vec<Verdict>,
    signals: Vec<Verdict>,
}

/// What is pushed to a peer: a committed op, or a signal.
#[derive(Clone)]
enum Item {
    Op(Arc<Vec<u8>>),
    Signal(Arc<Vec<u8>>),
}

impl Item {
    fn len(&self) -> usize {
        match self {
            Item::Op(b) | Item::Signal(b) => b.len(),
        }
    }
}

/// What waits to be pushed to one peer, oldest first, and whether a push to it is unanswered:
/// one at a time, so a slow peer slows only its own queue, and an author's ops arrive in
/// order.
#[derive(Default)]
struct Outbox {
    queue: VecDeque<(GuildId, Item)>,
    bytes: usize,
    in_flight: bool,
}

/// Bytes queued for one peer at most; past it, new items for that peer are dropped (it gets
/// the ops by catch-up; signals are ephemeral anyway).
const MAX_OUTBOX_BYTES: usize = 8 * 1024 * 1024;
/// Signals remembered as seen, so that each is shown and forwarded once.
const MAX_SEEN_SIGNALS: usize = 8_192;

/// A catch-up batch waiting to be verified and applied, in the order it was received.
struct SyncBatch {
    peer: PeerId,
    guild: GuildId,
    ops: Vec<serde_bytes::ByteBuf>,
}

/// A catch-up in progress with one peer for one guild. The next request goes out while the
/// previous batch is still being applied: it repeats the positions and moves the cursor.
struct Catchup {
    /// Where this node was in each log when the catch-up started.
    have: Vec<protocol::Position>,
    /// The last op received so far.
    after: Option<protocol::Cursor>,
    /// Batches received and not yet applied.
    queued: usize,
    /// The peer has more, but two batches are queued: ask once one is applied.
    deferred: bool,
    /// The last batch has been received (or the request failed).
    done: bool,
}

/// Batches of one catch-up queued for applying at most: bounds memory when fetching outruns
/// verifying.
const MAX_QUEUED_BATCHES: usize = 2;
/// Requests refused to a peer for its budget that earn it a strike: an honest node over budget
/// (a catch-up round of more guilds than the burst) is refused a few and asks again next round;
/// a peer that keeps hammering is blocked.
const REFUSALS_PER_STRIKE: u32 = 64;
/// The window those refusals are counted in.
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);
/// Peers that left whose budgets and strikes are kept at most, and peers blocked for faults
/// at most (an operator's deny-list is apart and kept whole).
const MAX_DEPARTED: usize = 10_000;
const MAX_STRUCK_OUT: usize = 10_000;

pub(crate) async fn start<H: Host>(
    config: NetConfig,
    key: Keypair,
    host: Arc<H>,
) -> Result<NetHandle, NetError> {
    let start_err = |e: &dyn std::fmt::Display| NetError::Start(e.to_string());
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| start_err(&e))?
        .with_behaviour(|key| behaviour(key, config.mdns).map_err(|e| e.into()))
        .map_err(|e| start_err(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(24 * 3600)))
        .build();
    for peer in &config.deny {
        swarm.behaviour_mut().blocked.block_peer(*peer);
    }
    swarm
        .listen_on(config.listen.clone())
        .map_err(|e| start_err(&e))?;
    let peer_id = *swarm.local_peer_id();
    let announced = config.announce.clone().map(|a| {
        if peer_of(&a).is_some() {
            a
        } else {
            a.with(Protocol::P2p(peer_id))
        }
    });
    let listen_addrs = Arc::new(Mutex::new(announced.into_iter().collect::<Vec<_>>()));
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (reports, report_rx) = mpsc::unbounded_channel();
    let (batches, batch_rx) = mpsc::unbounded_channel();
    tokio::spawn(apply_batches(host.clone(), batch_rx, reports.clone()));
    let (listening, is_listening) = oneshot::channel();
    let mut known = HashMap::new();
    for addr in config.bootstrap.iter().chain(&read_peers_file(&config)) {
        if let Some(peer) = peer_of(addr) {
            known.insert(peer, addr.clone());
        }
    }
    let task = Task {
        swarm,
        host,
        config,
        listen_addrs: listen_addrs.clone(),
        listening: Some(listening),
        commands: command_rx,
        reports: reports.clone(),
        report_rx,
        served: HashSet::new(),
        outboxes: HashMap::new(),
        pushes: HashMap::new(),
        seen_signals: (HashSet::new(), VecDeque::new()),
        grace: HashMap::new(),
        node_ids: HashMap::new(),
        entitled_at_last_push: HashMap::new(),
        asks: HashMap::new(),
        catchups: HashMap::new(),
        syncing: HashMap::new(),
        batches,
        catchups_in_flight: HashMap::new(),
        catchups_waiting: HashMap::new(),
        strikes: HashMap::new(),
        faults: BTreeMap::new(),
        buckets: HashMap::new(),
        answering: HashMap::new(),
        refusals: HashMap::new(),
        known,
        departed: VecDeque::new(),
        last_left: HashMap::new(),
        struck_out: VecDeque::new(),
    };
    tokio::spawn(task.run());
    is_listening
        .await
        .map_err(|_| NetError::Start("the swarm stopped before listening".into()))?;
    Ok(NetHandle {
        commands,
        peer_id,
        listen_addrs,
    })
}

fn behaviour(key: &Keypair, with_mdns: bool) -> Result<Behaviour, String> {
    let codec = request_response::cbor::codec::Codec::default()
        .set_request_size_maximum(protocol::MAX_REQUEST_BYTES)
        .set_response_size_maximum(protocol::MAX_RESPONSE_BYTES);
    let sync = Sync::with_codec(
        codec,
        [(protocol::SYNC_PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(Duration::from_secs(30)),
    );
    let mdns = with_mdns
        .then(|| mdns::tokio::Behaviour::new(mdns::Config::default(), key.public().to_peer_id()))
        .transpose()
        .map_err(|e| format!("mDNS: {e}"))?;
    Ok(Behaviour {
        blocked: Default::default(),
        identify: identify::Behaviour::new(identify::Config::new(
            protocol::PROTOCOL_VERSION.into(),
            key.public(),
        )),
        ping: ping::Behaviour::default(),
        sync,
        mdns: Toggle::from(mdns),
    })
}

/// The node key a peer id carries: peer ids of ed25519 keys are the key itself (an identity
/// multihash of its protobuf encoding). `None` for peers with other kinds of keys, which are
/// entitled to nothing.
pub fn node_of(peer: &PeerId) -> Option<NodeId> {
    const IDENTITY: u64 = 0;
    let hash = peer.as_ref();
    if hash.code() != IDENTITY {
        return None;
    }
    let key = PublicKey::try_decode_protobuf(hash.digest()).ok()?;
    Some(NodeId(key.try_into_ed25519().ok()?.to_bytes()))
}

/// The peer id an address names (`/p2p/<peer id>`), if it names one.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

fn read_peers_file(config: &NetConfig) -> Vec<Multiaddr> {
    let Some(path) = &config.peers_file else {
        return Vec::new();
    };
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Judges a peer's push: its ops as a batch is judged, then its signals, each shown.
async fn judge_push<H: Host>(
    host: &H,
    guild: GuildId,
    from: NodeId,
    ops: Vec<Arc<Vec<u8>>>,
    signals: Vec<Arc<Vec<u8>>>,
) -> Judged {
    let ops_bytes = ops.iter().map(|b| b.to_vec()).collect();
    let verdicts = judge_ops(host, guild, from, ops_bytes).await;
    let ops = ops.into_iter().zip(verdicts).collect();
    let signals = signals
        .into_iter()
        .map(|bytes| {
            let verdict = match Signal::verify(&bytes) {
                Err(e) => Err(e.code()),
                Ok(signal) if signal.guild != guild => Err("wrong_guild"),
                Ok(signal) => Ok(host.signal(signal)),
            };
            (bytes, verdict)
        })
        .collect();
    Judged { ops, signals }
}

/// Verifies ops from a peer (signature checks are the cost, so on every core) and applies
/// those that verify, in order: each op's verdict, or the stable code it was refused with.
async fn judge_ops<H: Host>(
    host: &H,
    guild: GuildId,
    from: NodeId,
    ops: Vec<Vec<u8>>,
) -> Vec<Result<Applied, &'static str>> {
    let verified = crate::verify_ops(guild, ops).await;
    let mut good = Vec::new();
    let mut broken = Vec::new();
    for op in verified {
        match op {
            Ok(op) => {
                good.push(op);
                broken.push(None);
            }
            Err(code) => broken.push(Some(code)),
        }
    }
    let mut applied = host.apply(guild, from, good).await.into_iter();
    broken
        .into_iter()
        .map(|code| match code {
            Some(code) => Err(code),
            None => Ok(applied.next().unwrap_or(Applied::Duplicate)),
        })
        .collect()
}

/// Judges a catch-up batch from a peer. Returns how many ops were at fault.
async fn apply_batch<H: Host>(host: &H, batch: SyncBatch) -> usize {
    // Catch-ups are asked only of peers entitled to the guild, which have node keys.
    let Some(from) = node_of(&batch.peer) else {
        return batch.ops.len();
    };
    let (guild, ops) = (
        batch.guild,
        batch.ops.into_iter().map(|b| b.into_vec()).collect(),
    );
    let mut faults = 0;
    for verdict in judge_ops(host, guild, from, ops).await {
        if let Ok(Applied::Refused(code)) | Err(code) = verdict {
            tracing::warn!(%guild, code, "peer sent an op that does not verify or the core refused");
            faults += 1;
        }
    }
    faults
}

/// Hands each catch-up batch to its guild's worker, so that a guild whose batches are slow to
/// apply holds up only its own catch-ups; within a guild, batches are applied in the order
/// received. A worker lives as long as the swarm: guilds are the ones this node serves. What
/// waits is bounded by `MAX_QUEUED_BATCHES` per catch-up.
async fn apply_batches<H: Host>(
    host: Arc<H>,
    mut batches: mpsc::UnboundedReceiver<SyncBatch>,
    reports: mpsc::UnboundedSender<Report>,
) {
    let mut workers: HashMap<GuildId, mpsc::UnboundedSender<SyncBatch>> = HashMap::new();
    while let Some(batch) = batches.recv().await {
        let worker = workers.entry(batch.guild).or_insert_with(|| {
            let (to_worker, from_dispatch) = mpsc::unbounded_channel();
            tokio::spawn(apply_guild_batches(
                host.clone(),
                from_dispatch,
                reports.clone(),
            ));
            to_worker
        });
        if worker.send(batch).is_err() {
            return;
        }
    }
}

async fn apply_guild_batches<H: Host>(
    host: Arc<H>,
    mut batches: mpsc::UnboundedReceiver<SyncBatch>,
    reports: mpsc::UnboundedSender<Report>,
) {
    while let Some(batch) = batches.recv().await {
        let (peer, guild) = (batch.peer, batch.guild);
        let faults = apply_batch(&*host, batch).await;
        let report = Report::Applied {
            peer,
            guild,
            faults,
        };
        if reports.send(report).is_err() {
            return;
        }
    }
}

struct Task<H: Host> {
    swarm: Swarm<Behaviour>,
    host: Arc<H>,
    config: NetConfig,
    listen_addrs: Arc<Mutex<Vec<Multiaddr>>>,
    listening: Option<oneshot::Sender<()>>,
    commands: mpsc::UnboundedReceiver<Command>,
    reports: mpsc::UnboundedSender<Report>,
    report_rx: mpsc::UnboundedReceiver<Report>,
    /// Guilds served here: pushes of others are refused.
    served: HashSet<GuildId>,
    /// What waits to be pushed to each connected peer, and the pushes unanswered.
    outboxes: HashMap<PeerId, Outbox>,
    pushes: HashMap<OutboundRequestId, PeerId>,
    /// Digests of the signals seen lately, and the order they came in (the oldest are
    /// forgotten first).
    seen_signals: (HashSet<[u8; 32]>, VecDeque<[u8; 32]>),
    /// Peers entitled to a guild for a while because they proved an invite to fetch it.
    grace: HashMap<(GuildId, PeerId), Instant>,
    /// The node key of each connected peer.
    node_ids: HashMap<PeerId, Option<NodeId>>,
    /// Per guild, the peers its last push went to.
    entitled_at_last_push: HashMap<GuildId, HashSet<PeerId>>,
    asks: HashMap<OutboundRequestId, oneshot::Sender<Result<Response, NetError>>>,
    catchups: HashMap<OutboundRequestId, (PeerId, GuildId)>,
    /// One catch-up per (peer, guild) at a time.
    syncing: HashMap<(PeerId, GuildId), Catchup>,
    /// Catch-up requests sent to each peer and not answered yet, and the guilds whose next
    /// request waits for one of them to be answered: a quarter of the peer's in-flight limit
    /// (`NetConfig::max_requests_in_flight`, if it has ours), leaving room for other requests.
    catchups_in_flight: HashMap<PeerId, usize>,
    catchups_waiting: HashMap<PeerId, VecDeque<GuildId>>,
    batches: mpsc::UnboundedSender<SyncBatch>,
    strikes: HashMap<PeerId, u32>,
    /// Faults seen from peers, by code, for operators.
    faults: BTreeMap<&'static str, u64>,
    /// Each peer's budget for gossip and for each kind of request (§6).
    buckets: HashMap<(PeerId, Traffic), Bucket>,
    /// Each peer's requests being answered now, and its requests refused for its budget.
    answering: HashMap<PeerId, usize>,
    /// Per peer: requests refused since the start of the current minute, and that start.
    refusals: HashMap<PeerId, (u32, Instant)>,
    /// Peers to keep connected with, and where to reach them.
    known: HashMap<PeerId, Multiaddr>,
    /// Peers that left, oldest first: what is kept about them is dropped after a while.
    departed: VecDeque<(PeerId, Instant)>,
    last_left: HashMap<PeerId, Instant>,
    /// Peers blocked for their faults, oldest first.
    struck_out: VecDeque<PeerId>,
}

impl<H: Host> Task<H> {
    async fn run(mut self) {
        let mut catchup = tokio::time::interval(self.config.catchup_interval);
        let mut redial = tokio::time::interval(self.config.redial_interval);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm(event),
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => return,
                },
                Some(report) = self.report_rx.recv() => self.on_report(report),
                _ = catchup.tick() => self.catch_up_everywhere(),
                _ = redial.tick() => self.redial(),
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish(guild, op) => self.push(guild, Item::Op(Arc::new(op)), None),
            Command::Signal(guild, signal) => {
                let signal = Arc::new(signal);
                self.seen_signal(&signal);
                self.push(guild, Item::Signal(signal), None);
            }
            Command::Serve(guild) => self.serve(guild),
            Command::Ask {
                peer,
                addr,
                request,
                reply,
            } => {
                if let Some(addr) = addr {
                    self.known.insert(peer, addr.clone());
                    self.swarm.add_peer_address(peer, addr);
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_request(&peer, *request);
                self.asks.insert(id, reply);
            }
            Command::Block(peer) => {
                self.swarm.behaviour_mut().blocked.block_peer(peer);
            }
            Command::Unblock(peer) => {
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                self.redial();
            }
            Command::Strike(peer, code) => self.strike(peer, code, 1),
            Command::Faults(reply) => {
                let _ = reply.send(self.faults.clone());
            }
            Command::TrackedPeers(reply) => {
                let tracked: HashSet<PeerId> = self
                    .buckets
                    .keys()
                    .map(|(peer, _)| *peer)
                    .chain(self.strikes.keys().copied())
                    .chain(self.refusals.keys().copied())
                    .collect();
                let _ = reply.send(tracked.len());
            }
            Command::PeersEntitled(guild, reply) => {
                let _ = reply.send(self.peers_entitled(&guild));
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
        }
    }

    fn serve(&mut self, guild: GuildId) {
        self.served.insert(guild);
        self.catch_up_with_all(guild);
    }

    /// Starts a catch-up for `guild` with every connected peer entitled to it.
    fn catch_up_with_all(&mut self, guild: GuildId) {
        for peer in self.peers_entitled(&guild) {
            self.request_catchup(peer, guild);
        }
    }

    /// Whether `peer` may be sent anything of `guild`: it is home to a current member, or
    /// proved an invite to fetch the guild within `JOIN_GRACE` and has not been home to a
    /// member since (the grace ends there, so a ban ends what the join began).
    /// The node key a connected peer's id carries (`node_of`), remembered while it stays.
    fn node_id(&mut self, peer: &PeerId) -> Option<NodeId> {
        *self.node_ids.entry(*peer).or_insert_with(|| node_of(peer))
    }

    fn entitled(&mut self, guild: &GuildId, peer: &PeerId) -> bool {
        if !self.served.contains(guild) {
            return false;
        }
        let node = self.node_id(peer);
        if node.is_some_and(|node| self.host.entitled(guild, &node)) {
            self.grace.remove(&(*guild, *peer));
            return true;
        }
        self.grace
            .get(&(*guild, *peer))
            .is_some_and(|until| *until > Instant::now())
    }

    fn peers_entitled(&mut self, guild: &GuildId) -> Vec<PeerId> {
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        connected
            .into_iter()
            .filter(|peer| self.entitled(guild, peer))
            .collect()
    }

    /// Queues an item for every connected peer entitled to the guild but `except` (the peer
    /// it came from), and pushes to those with no push unanswered. A peer entitled at the
    /// previous push of the guild is sent this one too, so the op that ends its entitlement
    /// (its member's ban, kick or leave) is the last it is sent.
    fn push(&mut self, guild: GuildId, item: Item, except: Option<PeerId>) {
        let now = self.peers_entitled(&guild);
        let before = self
            .entitled_at_last_push
            .insert(guild, now.iter().copied().collect())
            .unwrap_or_default();
        let ending: Vec<PeerId> = before
            .into_iter()
            .filter(|peer| !now.contains(peer) && self.swarm.is_connected(peer))
            .collect();
        for peer in now.into_iter().chain(ending) {
            if Some(peer) == except {
                continue;
            }
            let outbox = self.outboxes.entry(peer).or_default();
            if outbox.bytes + item.len() > MAX_OUTBOX_BYTES {
                tracing::debug!(%peer, %guild, "push queue full: the peer gets it by catch-up");
                continue;
            }
            outbox.bytes += item.len();
            outbox.queue.push_back((guild, item.clone()));
            self.send_push(peer);
        }
    }

    /// Sends the next push to `peer` unless one is unanswered: the oldest items of one guild,
    /// up to `MAX_PUSH_ITEMS` and `MAX_PUSH_BYTES`.
    fn send_push(&mut self, peer: PeerId) {
        let Some(outbox) = self.outboxes.get_mut(&peer) else {
            return;
        };
        let Some(&(guild, _)) = outbox.queue.front() else {
            return;
        };
        if outbox.in_flight {
            return;
        }
        let (mut ops, mut signals, mut bytes) = (Vec::new(), Vec::new(), 0);
        while let Some((g, item)) = outbox.queue.front() {
            let full = ops.len() + signals.len() >= protocol::MAX_PUSH_ITEMS
                || (bytes > 0 && bytes + item.len() > protocol::MAX_PUSH_BYTES);
            if *g != guild || full {
                break;
            }
            let Some((_, item)) = outbox.queue.pop_front() else {
                break;
            };
            bytes += item.len();
            match item {
                Item::Op(b) => ops.push(serde_bytes::ByteBuf::from(b.to_vec())),
                Item::Signal(b) => signals.push(serde_bytes::ByteBuf::from(b.to_vec())),
            }
        }
        outbox.bytes -= bytes;
        outbox.in_flight = true;
        let request = Request::Push {
            guild,
            ops,
            signals,
        };
        let id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
        self.pushes.insert(id, peer);
    }

    fn push_answered(&mut self, peer: PeerId) {
        if let Some(outbox) = self.outboxes.get_mut(&peer) {
            outbox.in_flight = false;
        }
        self.send_push(peer);
    }

    /// Remembers a signal as seen; false if it was seen already.
    fn seen_signal(&mut self, signal: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(signal).into();
        let (seen, order) = &mut self.seen_signals;
        if !seen.insert(digest) {
            return false;
        }
        order.push_back(digest);
        if order.len() > MAX_SEEN_SIGNALS
            && let Some(oldest) = order.pop_front()
        {
            seen.remove(&oldest);
        }
        true
    }

    /// Starts a catch-up with `peer` for `guild`, unless one is under way or the peer is not
    /// entitled to it (a request shows where this node is in every author's log).
    fn request_catchup(&mut self, peer: PeerId, guild: GuildId) {
        if self.syncing.contains_key(&(peer, guild)) || !self.entitled(&guild, &peer) {
            return;
        }
        let Some(have) = self.host.log_positions(&guild) else {
            return;
        };
        let after = self.host.catchup_start(&guild);
        self.syncing.insert(
            (peer, guild),
            Catchup {
                have: protocol::positions_to_wire(&have),
                after: after.map(protocol::cursor_to_wire),
                queued: 0,
                deferred: false,
                done: false,
            },
        );
        self.send_catchup(peer, guild);
    }

    /// Sends the catch-up's next request, or queues it while a quarter of
    /// `max_requests_in_flight` of ours are unanswered by that peer.
    fn send_catchup(&mut self, peer: PeerId, guild: GuildId) {
        let Some(state) = self.syncing.get(&(peer, guild)) else {
            return;
        };
        let in_flight = self.catchups_in_flight.entry(peer).or_default();
        if *in_flight >= (self.config.max_requests_in_flight / 4).max(1) {
            self.catchups_waiting
                .entry(peer)
                .or_default()
                .push_back(guild);
            return;
        }
        *in_flight += 1;
        let request = Request::Catchup {
            guild,
            have: state.have.clone(),
            after: state.after,
        };
        let id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
        self.catchups.insert(id, (peer, guild));
    }

    /// A catch-up request to `peer` was answered (or failed): the next one waiting goes out.
    fn catchup_answered(&mut self, peer: PeerId) {
        if let Some(in_flight) = self.catchups_in_flight.get_mut(&peer) {
            *in_flight = in_flight.saturating_sub(1);
        }
        while let Some(guild) = self
            .catchups_waiting
            .get_mut(&peer)
            .and_then(VecDeque::pop_front)
        {
            if self.syncing.contains_key(&(peer, guild)) {
                self.send_catchup(peer, guild);
                return;
            }
        }
    }

    /// Ends a catch-up once its last batch is received and every batch applied.
    fn finish_if_done(&mut self, key: (PeerId, GuildId)) {
        if self
            .syncing
            .get(&key)
            .is_some_and(|s| s.done && s.queued == 0)
        {
            self.syncing.remove(&key);
        }
    }

    fn catch_up_everywhere(&mut self) {
        let now = Instant::now();
        self.grace.retain(|_, until| *until > now);
        self.forget_departed();
        let guilds: Vec<GuildId> = self.served.iter().copied().collect();
        for guild in guilds {
            self.catch_up_with_all(guild);
        }
    }

    fn redial(&mut self) {
        let connected: HashSet<PeerId> = self.swarm.connected_peers().copied().collect();
        let to_dial: Vec<Multiaddr> = self
            .known
            .iter()
            .filter(|(peer, _)| !connected.contains(peer))
            .map(|(_, addr)| addr.clone())
            .collect();
        for addr in to_dial {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "redial failed");
            }
        }
    }

    /// Drops what is kept about peers that left `forget_peers_after` ago and have not come
    /// back, and about the oldest of them at once when more than `MAX_DEPARTED` wait: a
    /// stranger minting peer ids costs a bounded amount of memory.
    fn forget_departed(&mut self) {
        let now = Instant::now();
        let mut forgotten = HashSet::new();
        while let Some(&(peer, left)) = self.departed.front() {
            let due = now.saturating_duration_since(left) >= self.config.forget_peers_after;
            if !due && self.departed.len() <= MAX_DEPARTED {
                break;
            }
            self.departed.pop_front();
            // Only its latest departure counts, and only if it has not come back since.
            if self.last_left.get(&peer) == Some(&left) {
                self.last_left.remove(&peer);
                if !self.swarm.is_connected(&peer) {
                    forgotten.insert(peer);
                }
            }
        }
        if forgotten.is_empty() {
            return;
        }
        for peer in &forgotten {
            for traffic in Traffic::ALL {
                self.buckets.remove(&(*peer, traffic));
            }
            self.strikes.remove(peer);
            self.refusals.remove(peer);
            self.answering.remove(peer);
            self.catchups_in_flight.remove(peer);
            self.catchups_waiting.remove(peer);
        }
        self.syncing
            .retain(|(peer, _), _| !forgotten.contains(peer));
        for peers in self.entitled_at_last_push.values_mut() {
            peers.retain(|peer| !forgotten.contains(peer));
        }
    }

    /// Counts a fault against a peer; past the limit the peer is blocked.
    fn strike(&mut self, peer: PeerId, why: &'static str, count: u32) {
        *self.faults.entry(why).or_default() += u64::from(count);
        let strikes = self.strikes.entry(peer).or_default();
        *strikes += count;
        tracing::warn!(%peer, why, strikes = *strikes, "peer misbehaved");
        if *strikes >= self.config.max_strikes {
            tracing::warn!(%peer, "blocking the peer: too many faults");
            self.known.remove(&peer);
            self.swarm.behaviour_mut().blocked.block_peer(peer);
            self.struck_out.push_back(peer);
            // Peer ids are free to make: the oldest blocks go first, never a denied peer's.
            while self.struck_out.len() > MAX_STRUCK_OUT {
                if let Some(oldest) = self.struck_out.pop_front()
                    && !self.config.deny.contains(&oldest)
                {
                    self.swarm.behaviour_mut().blocked.unblock_peer(oldest);
                }
            }
        }
    }

    /// Takes `count` tokens from the peer's bucket for this traffic.
    fn within_budget(&mut self, peer: PeerId, traffic: Traffic, count: usize) -> bool {
        let now = Instant::now();
        let budget = self.config.budget(traffic);
        self.buckets
            .entry((peer, traffic))
            .or_insert_with(|| Bucket::full(budget, now))
            .take_many(budget, now, count)
    }

    /// Whether `peer` may make one more request now: within its requests in flight and its
    /// budget for the request's kind (for a push, one token per op and signal). A refusal is
    /// counted; a push over budget strikes the peer (`gossip_flood`), and other requests
    /// strike it every `REFUSALS_PER_STRIKE` refusals within a `REFUSAL_WINDOW`.
    fn admit(&mut self, peer: PeerId, request: &Request) -> Result<(), &'static str> {
        let traffic = Traffic::of(request);
        let tokens = match request {
            Request::Push { ops, signals, .. } => ops.len() + signals.len(),
            _ => 1,
        };
        let answering = self.answering.get(&peer).copied().unwrap_or(0);
        let refused = if answering >= self.config.max_requests_in_flight {
            "too many requests in flight"
        } else if !self.within_budget(peer, traffic, tokens) {
            if traffic == Traffic::Gossip {
                *self.faults.entry("rate_limited").or_default() += 1;
                self.strike(peer, "gossip_flood", 1);
                return Err("over the gossip budget");
            }
            "over the request budget"
        } else {
            *self.answering.entry(peer).or_default() += 1;
            return Ok(());
        };
        *self.faults.entry("rate_limited").or_default() += 1;
        // Counted per minute, so that an honest peer now and then over its budget never adds up
        // to a strike over a long uptime.
        let now = Instant::now();
        let (count, since) = self.refusals.entry(peer).or_insert((0, now));
        if now.duration_since(*since) > REFUSAL_WINDOW {
            (*count, *since) = (0, now);
        }
        *count += 1;
        if count.is_multiple_of(REFUSALS_PER_STRIKE) {
            self.strike(peer, "request_flood", 1);
        }
        Err(refused)
    }

    fn on_report(&mut self, report: Report) {
        match report {
            Report::Pushed {
                peer,
                guild,
                channel,
                judged,
            } => self.on_pushed(peer, guild, channel, judged),
            Report::Answer {
                peer,
                channel,
                response,
                after,
            } => {
                self.answer(peer, channel, response);
                match after {
                    AfterAnswer::Nothing => {}
                    AfterAnswer::PullBack(guild) => self.request_catchup(peer, guild),
                    AfterAnswer::Grant(guild) => {
                        self.grace
                            .insert((guild, peer), Instant::now() + crate::JOIN_GRACE);
                    }
                }
            }
            Report::Applied {
                peer,
                guild,
                faults,
            } => {
                if faults > 0 {
                    self.strike(peer, "bad_sync_batch", faults as u32);
                }
                let key = (peer, guild);
                if let Some(state) = self.syncing.get_mut(&key) {
                    state.queued -= 1;
                    if std::mem::take(&mut state.deferred) {
                        self.send_catchup(peer, guild);
                    }
                }
                self.finish_if_done(key);
            }
        }
    }

    fn answer(
        &mut self,
        peer: PeerId,
        channel: request_response::ResponseChannel<Response>,
        response: Response,
    ) {
        if let Some(answering) = self.answering.get_mut(&peer) {
            *answering = answering.saturating_sub(1);
        }
        let _ = self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(channel, response);
    }

    /// A peer's push was judged: what was new goes on to the other entitled peers, broken ops
    /// and signals strike the peer, and gaps or missing deps start a catch-up with it.
    fn on_pushed(
        &mut self,
        peer: PeerId,
        guild: GuildId,
        channel: request_response::ResponseChannel<Response>,
        judged: Judged,
    ) {
        let count = (judged.ops.len() + judged.signals.len()) as u32;
        self.answer(peer, channel, Response::Pushed { count });
        let mut catch_up = false;
        for (bytes, verdict) in judged.ops {
            match verdict {
                Ok(Applied::Accepted) => self.push(guild, Item::Op(bytes), Some(peer)),
                Ok(Applied::AcceptedWithGap) => {
                    self.push(guild, Item::Op(bytes), Some(peer));
                    catch_up = true;
                }
                Ok(Applied::Pending) => catch_up = true,
                Ok(Applied::Duplicate | Applied::Ignored(_)) => {}
                Ok(Applied::Refused(code)) | Err(code) => self.strike(peer, code, 1),
            }
        }
        for (bytes, verdict) in judged.signals {
            match verdict {
                Ok(Applied::Accepted) => self.push(guild, Item::Signal(bytes), Some(peer)),
                Ok(_) => {}
                Err(code) => self.strike(peer, code, 1),
            }
        }
        if catch_up {
            self.request_catchup(peer, guild);
        }
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address.with(Protocol::P2p(*self.swarm.local_peer_id()));
                tracing::info!(address = %full, "federation listening");
                let mut addrs = self.listen_addrs.lock().expect("listen addrs lock");
                addrs.push(full);
                // Invite codes take the first: an announced address, else one other hosts can
                // reach, loopback last.
                let announced = usize::from(self.config.announce.is_some());
                addrs[announced..].sort_by_key(is_loopback);
                drop(addrs);
                if let Some(listening) = self.listening.take() {
                    let _ = listening.send(());
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } => {
                tracing::debug!(peer = %peer_id, "peer connected");
                if num_established.get() == 1 {
                    let guilds: Vec<GuildId> = self.served.iter().copied().collect();
                    for guild in guilds {
                        self.request_catchup(peer_id, guild);
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                // What was queued comes by catch-up when the peer is back.
                self.outboxes.remove(&peer_id);
                self.node_ids.remove(&peer_id);
                let now = Instant::now();
                self.departed.push_back((peer_id, now));
                self.last_left.insert(peer_id, now);
                self.forget_departed();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.on_identify(peer_id, info),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync(event),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                self.on_discovered(found)
            }
            // An expired peer stays known: it is redialed like any peer met.
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Expired(_))) => {}
            _ => {}
        }
    }

    fn on_identify(&mut self, peer: PeerId, info: identify::Info) {
        if info.protocol_version != protocol::PROTOCOL_VERSION {
            return;
        }
        let Some(addr) = info.listen_addrs.into_iter().find(|a| {
            // Unspecified addresses cannot be dialed.
            !a.iter().any(|p| {
                matches!(p, Protocol::Ip4(ip) if ip.is_unspecified())
                    || matches!(p, Protocol::Ip6(ip) if ip.is_unspecified())
            })
        }) else {
            return;
        };
        let addr = addr.with_p2p(peer).unwrap_or_else(|a| a);
        if self.known.get(&peer) != Some(&addr) {
            self.known.insert(peer, addr);
            self.write_peers_file();
        }
    }

    /// Peers found by mDNS: dialed unless denied or connected already, and kept like any peer
    /// met, so the redial and the peers file hold on to them.
    fn on_discovered(&mut self, found: Vec<(PeerId, Multiaddr)>) {
        let mut addrs: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
        for (peer, addr) in found {
            addrs.entry(peer).or_default().push(addr);
        }
        let mut learned = false;
        for (peer, addrs) in addrs {
            if self
                .swarm
                .behaviour()
                .blocked
                .blocked_peers()
                .contains(&peer)
                || self.swarm.is_connected(&peer)
            {
                continue;
            }
            if let Entry::Vacant(known) = self.known.entry(peer) {
                known.insert(addrs[0].clone());
                learned = true;
            }
            tracing::debug!(%peer, addrs = ?addrs, "dialing a peer found by mDNS");
            let dial = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(dial) {
                tracing::debug!(%peer, error = %e, "cannot dial a peer found by mDNS");
            }
        }
        if learned {
            self.write_peers_file();
        }
    }

    fn write_peers_file(&self) {
        let Some(path) = &self.config.peers_file else {
            return;
        };
        let mut lines: Vec<String> = self.known.values().map(|a| a.to_string()).collect();
        lines.sort();
        let tmp = path.with_extension("tmp");
        let written = std::fs::write(&tmp, lines.join("\n") + "\n")
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot save the peers file");
        }
    }

    fn on_sync(&mut self, event: request_response::Event<Request, Response>) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.on_request(peer, request, channel);
            }
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.asks.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                } else if let Some(peer) = self.pushes.remove(&request_id) {
                    if let Response::Refused { code, message } = response {
                        tracing::debug!(%peer, code, message, "push refused");
                    }
                    self.push_answered(peer);
                } else if let Some((peer, guild)) = self.catchups.remove(&request_id) {
                    self.catchup_answered(peer);
                    self.on_catchup_response(peer, guild, response);
                } else {
                    tracing::debug!(%peer, "response to a request not made");
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.asks.remove(&request_id) {
                    let _ = reply.send(Err(NetError::Unreachable(
                        peer.to_string(),
                        error.to_string(),
                    )));
                } else if let Some(peer) = self.pushes.remove(&request_id) {
                    // The ops come by catch-up; signals are ephemeral.
                    tracing::debug!(%peer, error = %error, "push failed");
                    self.push_answered(peer);
                } else if let Some(key) = self.catchups.remove(&request_id) {
                    tracing::debug!(%peer, error = %error, "catch-up request failed");
                    self.catchup_answered(peer);
                    if let Some(state) = self.syncing.get_mut(&key) {
                        state.done = true;
                    }
                    self.finish_if_done(key);
                }
            }
            _ => {}
        }
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        request: Request,
        channel: request_response::ResponseChannel<Response>,
    ) {
        if let Err(why) = self.admit(peer, &request) {
            tracing::debug!(%peer, why, "sync request refused");
            let refusal = refused(Refusal::new("rate_limited", why));
            let _ = self
                .swarm
                .behaviour_mut()
                .sync
                .send_response(channel, refusal);
            return;
        }
        let refusal = match &request {
            Request::Push { ops, signals, .. }
                if ops.len() + signals.len() > protocol::MAX_PUSH_ITEMS =>
            {
                self.strike(peer, "push_too_large", 1);
                Some(Refusal::new("push_too_large", "too many items in one push"))
            }
            Request::Push { guild, .. } if !self.served.contains(guild) => Some(Refusal::new(
                "unknown_guild",
                "this node does not serve that guild",
            )),
            Request::Push { .. } if self.node_id(&peer).is_none() => Some(Refusal::new(
                "not_entitled",
                "only nodes with ed25519 keys may push",
            )),
            Request::ChannelKeys { keys, .. } if keys.len() > protocol::MAX_CHANNEL_KEYS => {
                self.strike(peer, "too_many_keys", 1);
                Some(Refusal::new(
                    "too_many_keys",
                    "too many keys in one request",
                ))
            }
            Request::Catchup { guild, .. }
            | Request::Backfill { guild, .. }
            | Request::ChannelKeys { guild, .. }
                if !self.entitled(guild, &peer) =>
            {
                *self.faults.entry("not_entitled").or_default() += 1;
                Some(Refusal::new(
                    "not_entitled",
                    "this node is home to no member of that guild",
                ))
            }
            _ => None,
        };
        if let Some(refusal) = refusal {
            self.answer(peer, channel, refused(refusal));
            return;
        }
        let (host, reports) = (self.host.clone(), self.reports.clone());
        if let Request::Push {
            guild,
            ops,
            signals,
        } = request
        {
            let from = self
                .node_id(&peer)
                .expect("keyless pushers are refused above");
            let ops = ops.into_iter().map(|b| Arc::new(b.into_vec())).collect();
            let signals = signals
                .into_iter()
                .filter(|b| self.seen_signal(b))
                .map(|b| Arc::new(b.into_vec()))
                .collect();
            tokio::spawn(async move {
                let judged = judge_push(&*host, guild, from, ops, signals).await;
                let _ = reports.send(Report::Pushed {
                    peer,
                    guild,
                    channel,
                    judged,
                });
            });
            return;
        }
        let requester = self.node_id(&peer);
        tokio::spawn(async move {
            let (response, after) = answer(host, requester, request).await;
            let _ = reports.send(Report::Answer {
                peer,
                channel,
                response,
                after,
            });
        });
    }

    fn on_catchup_response(&mut self, peer: PeerId, guild: GuildId, response: Response) {
        let key = (peer, guild);
        let Some(state) = self.syncing.get_mut(&key) else {
            return;
        };
        match response {
            Response::Ops { ops, more } => {
                // The next batch starts after this one's last op, so it can be asked for before
                // this one is applied. An op that then fails to verify is fetched again by a
                // later catch-up, which starts from what is really held.
                if let Some(last) = ops.last().and_then(|b| Op::decode(b).ok()) {
                    state.after = Some((last.envelope().hlc.0, last.id()));
                }
                state.queued += 1;
                state.done = !more;
                let ask_now = more && state.queued < MAX_QUEUED_BATCHES;
                state.deferred = more && !ask_now;
                let _ = self.batches.send(SyncBatch { peer, guild, ops });
                if ask_now {
                    self.send_catchup(peer, guild);
                }
            }
            Response::Refused { code, message } => {
                tracing::debug!(%peer, %guild, code, message, "catch-up refused");
                state.done = true;
                self.finish_if_done(key);
            }
            Response::DmKeys { .. }
            | Response::DmsTaken { .. }
            | Response::Pushed { .. }
            | Response::ChannelKeys { .. } => {
                tracing::debug!(%peer, %guild, "a catch-up answered with the wrong kind");
                state.done = true;
                self.finish_if_done(key);
            }
        }
    }
}

/// The host's answer to a peer's request (`requester` is its node key), and what the swarm
/// does next: pull back from the peer when its catch-up shows it holds ops we lack (so one
/// side's catch-up heals both), or let it replicate a guild it proved an invite to.
async fn answer<H: Host>(
    host: Arc<H>,
    requester: Option<NodeId>,
    request: Request,
) -> (Response, AfterAnswer) {
    match request {
        Request::Push { .. } => (
            refused(Refusal::new(
                "unexpected",
                "pushes are judged, not answered",
            )),
            AfterAnswer::Nothing,
        ),
        Request::DmKeys { user } => {
            let mut records = host.dm_keys(&user);
            let newest = records.len().saturating_sub(protocol::MAX_DM_KEY_RECORDS);
            let records = records
                .drain(newest..)
                .map(serde_bytes::ByteBuf::from)
                .collect();
            (Response::DmKeys { records }, AfterAnswer::Nothing)
        }
        Request::ChannelKeys { guild, keys } => {
            let ids: Vec<KeyId> = keys.into_iter().map(|k| KeyId(k.into_array())).collect();
            let keys = match requester {
                Some(requester) => host.channel_keys(&guild, &requester, &ids),
                None => Vec::new(),
            };
            let keys = keys
                .into_iter()
                .map(|key| (key.channel, serde_bytes::ByteArray::new(key.key)))
                .collect();
            (Response::ChannelKeys { keys }, AfterAnswer::Nothing)
        }
        Request::Dms { envelopes } => {
            let bytes: usize = envelopes.iter().map(|e| e.len()).sum();
            let response = if envelopes.len() > protocol::MAX_DMS_PER_REQUEST
                || bytes > protocol::MAX_DM_REQUEST_BYTES
            {
                refused(Refusal::new(
                    "too_many_dms",
                    "too many DMs or bytes in one request",
                ))
            } else {
                let envelopes = envelopes.into_iter().map(|e| e.into_vec()).collect();
                match host.take_dms(envelopes).await {
                    Ok(count) => Response::DmsTaken { count },
                    Err(r) => refused(r),
                }
            };
            (response, AfterAnswer::Nothing)
        }
        // Comparing digests and cutting a batch read up to 2,000 ops under the guild's lock:
        // off the async workers, which must keep serving gossip meanwhile.
        Request::Catchup { guild, have, after } => {
            blocking(move || answer_catchup(&*host, guild, &have, after)).await
        }
        Request::Join {
            guild,
            invite,
            proof,
            after,
            recent,
        } => {
            blocking(move || {
                let after = after.map(protocol::cursor_from_wire);
                let recent = recent.map(|n| n as usize);
                let batch = match requester {
                    Some(requester) => {
                        host.join_ops(&guild, &invite, &requester, &proof, after, recent)
                    }
                    None => Err(Refusal::new(
                        "not_entitled",
                        "only nodes with ed25519 keys may join",
                    )),
                };
                let granted = batch.is_ok();
                let response = ops_response(batch);
                (
                    response,
                    if granted {
                        AfterAnswer::Grant(guild)
                    } else {
                        AfterAnswer::Nothing
                    },
                )
            })
            .await
        }
        Request::Backfill { guild, before } => {
            blocking(move || {
                let before = protocol::cursor_from_wire(before);
                let batch = host.backfill_ops(&guild, before).ok_or_else(|| {
                    Refusal::new("unknown_guild", "this node does not serve that guild")
                });
                (ops_response(batch), AfterAnswer::Nothing)
            })
            .await
        }
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .expect("a sync answer panicked")
}

fn refused(r: Refusal) -> Response {
    Response::Refused {
        code: r.code,
        message: r.message,
    }
}

/// A catch-up: the batch a peer at `have` lacks, and whether to pull back from it.
fn answer_catchup<H: Host>(
    host: &H,
    guild: GuildId,
    have: &[protocol::Position],
    after: Option<protocol::Cursor>,
) -> (Response, AfterAnswer) {
    if have.len() > protocol::MAX_HAVE_AUTHORS {
        let refused = Response::Refused {
            code: "too_many_authors".into(),
            message: "the version vector is too long".into(),
        };
        return (refused, AfterAnswer::Nothing);
    }
    let have = protocol::positions_from_wire(have);
    let pull_back = if host.lacks_from(&guild, &have) {
        AfterAnswer::PullBack(guild)
    } else {
        AfterAnswer::Nothing
    };
    let batch = host
        .missing_ops(&guild, &have, after.map(protocol::cursor_from_wire))
        .ok_or_else(|| Refusal::new("unknown_guild", "this node does not serve that guild"));
    (ops_response(batch), pull_back)
}

fn ops_response(batch: Result<Batch, Refusal>) -> Response {
    match batch {
        Ok(batch) => {
            tracing::debug!(ops = batch.ops.len(), more = batch.more, "sync answer");
            Response::Ops {
                ops: batch
                    .ops
                    .into_iter()
                    .map(serde_bytes::ByteBuf::from)
                    .collect(),
                more: batch.more,
            }
        }
        Err(r) => refused(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_id_carries_its_ed25519_node_key_and_no_other_kind() {
        let key = Keypair::generate_ed25519();
        let public = key.public().try_into_ed25519().unwrap().to_bytes();
        assert_eq!(node_of(&key.public().to_peer_id()), Some(NodeId(public)));
        // Random bytes in place of an encoded key name no node key.
        assert_eq!(node_of(&PeerId::random()), None);
    }
}
