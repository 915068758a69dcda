//! The swarm task: owns the libp2p swarm, turns its events into calls on the host, and the
//! handle's commands into network traffic.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use guildhall_proto::id::GuildId;
use guildhall_proto::op::Op;
use guildhall_proto::signal::Signal;
use libp2p::gossipsub::{self, MessageAcceptance, MessageId, TopicHash};
use libp2p::identity::Keypair;
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

type Gossip =
    gossipsub::Behaviour<gossipsub::IdentityTransform, gossipsub::AllowAllSubscriptionFilter>;
type Sync = request_response::Behaviour<request_response::cbor::codec::Codec<Request, Response>>;

#[derive(NetworkBehaviour)]
struct Behaviour {
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    gossip: Gossip,
    sync: Sync,
    /// Local-network discovery (`NetConfig::mdns`); absent, it costs nothing.
    mdns: Toggle<mdns::tokio::Behaviour>,
}

/// What background work reports back to the swarm task.
enum Report {
    Validated {
        message: MessageId,
        source: PeerId,
        guild: GuildId,
        outcome: Result<Applied, &'static str>,
    },
    /// The answer to a peer's sync request, ready to send.
    Answer {
        peer: PeerId,
        channel: request_response::ResponseChannel<Response>,
        response: Response,
        pull_back: Option<GuildId>,
    },
    /// A sync batch was applied.
    Applied {
        peer: PeerId,
        guild: GuildId,
        faults: usize,
    },
}

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

/// Which of a guild's two topics a message came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carries {
    Ops,
    Signals,
}

/// A gossip message waiting for its turn: ops are applied in arrival order.
struct Inbound {
    message: MessageId,
    source: PeerId,
    guild: GuildId,
    carries: Carries,
    data: Vec<u8>,
}

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
    let (inbound, inbound_rx) = mpsc::unbounded_channel();
    tokio::spawn(apply_gossip(host.clone(), inbound_rx, reports.clone()));
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
        inbound,
        topics: HashMap::new(),
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
    let gossip_config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(protocol::MAX_GOSSIP_BYTES)
        .heartbeat_interval(Duration::from_millis(500))
        .message_id_fn(|m| MessageId::from(Sha256::digest(&m.data).to_vec()))
        .build()
        .map_err(|e| e.to_string())?;
    let mut gossip = Gossip::new_with_subscription_filter(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        gossip_config,
        gossipsub::AllowAllSubscriptionFilter {},
    )?;
    gossip.with_peer_score(peer_score(), gossipsub::PeerScoreThresholds::default())?;
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
        gossip,
        sync,
        mdns: Toggle::from(mdns),
    })
}

/// Score weights for one guild topic: only invalid messages count, as -10 times their
/// square, so three put a peer past the graylist threshold (-80). Mesh-delivery quotas (P3)
/// are off because a quiet guild delivers nothing for hours, and time in mesh (P1) is off so
/// that a long-connected peer cannot bank credit against invalid messages.
fn topic_score() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 0.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.5,
        ..Default::default()
    }
}

/// Peer scoring without the IP colocation penalty: several nodes behind one address (a
/// household, a NAT, loopback in tests) are normal here.
fn peer_score() -> gossipsub::PeerScoreParams {
    gossipsub::PeerScoreParams {
        ip_colocation_factor_weight: 0.0,
        ..Default::default()
    }
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

/// Verifies and applies gossip ops one at a time, in arrival order, so that an author's ops
/// from one peer never overtake each other.
async fn apply_gossip<H: Host>(
    host: Arc<H>,
    mut inbound: mpsc::UnboundedReceiver<Inbound>,
    reports: mpsc::UnboundedSender<Report>,
) {
    while let Some(m) = inbound.recv().await {
        let outcome = match m.carries {
            Carries::Ops => match crate::verify_op(m.guild, &m.data, "wrong_topic") {
                Err(code) => Err(code),
                Ok(op) => Ok(host
                    .apply(m.guild, vec![op])
                    .await
                    .pop()
                    .unwrap_or(Applied::Duplicate)),
            },
            Carries::Signals => match Signal::verify(&m.data) {
                Err(e) => Err(e.code()),
                Ok(signal) if signal.guild != m.guild => Err("wrong_topic"),
                Ok(signal) => Ok(host.signal(signal)),
            },
        };
        let report = Report::Validated {
            message: m.message,
            source: m.source,
            guild: m.guild,
            outcome,
        };
        if reports.send(report).is_err() {
            return;
        }
    }
}

/// Verifies a batch from a peer (signature checks are the cost, so on every core) and
/// applies the ops that verify. Returns how many were at fault.
async fn apply_batch<H: Host>(host: &H, guild: GuildId, ops: Vec<serde_bytes::ByteBuf>) -> usize {
    let verified = crate::verify_ops(guild, ops.into_iter().map(|b| b.into_vec()).collect()).await;
    let mut faults = 0;
    let mut good = Vec::new();
    for op in verified {
        match op {
            Ok(op) => good.push(op),
            Err(code) => {
                tracing::warn!(%guild, code, "peer sent an op that does not verify");
                faults += 1;
            }
        }
    }
    for applied in host.apply(guild, good).await {
        if let Applied::Refused(code) = applied {
            tracing::warn!(%guild, code, "peer sent an op the core refused");
            faults += 1;
        }
    }
    faults
}

/// Applies catch-up batches one at a time, in the order received, while the swarm task
/// fetches the next.
async fn apply_batches<H: Host>(
    host: Arc<H>,
    mut batches: mpsc::UnboundedReceiver<SyncBatch>,
    reports: mpsc::UnboundedSender<Report>,
) {
    while let Some(batch) = batches.recv().await {
        let faults = apply_batch(&*host, batch.guild, batch.ops).await;
        let report = Report::Applied {
            peer: batch.peer,
            guild: batch.guild,
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
    inbound: mpsc::UnboundedSender<Inbound>,
    topics: HashMap<TopicHash, (GuildId, Carries)>,
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
            Command::Publish(guild, op) => {
                let topic = protocol::guild_topic(&guild);
                match self.swarm.behaviour_mut().gossip.publish(topic, op) {
                    Ok(_) => {}
                    // Peers that missed it catch up when they subscribe or on the next round.
                    Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
                    Err(e) => tracing::debug!(%guild, error = %e, "gossip publish failed"),
                }
            }
            Command::Signal(guild, signal) => {
                let topic = protocol::signal_topic(&guild);
                if let Err(e) = self.swarm.behaviour_mut().gossip.publish(topic, signal) {
                    tracing::trace!(%guild, error = %e, "signal not sent");
                }
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
                let id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
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
            Command::PeersServing(guild, reply) => {
                let _ = reply.send(self.peers_serving(&guild));
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
        }
    }

    fn serve(&mut self, guild: GuildId) {
        for (topic, carries) in [
            (protocol::guild_topic(&guild), Carries::Ops),
            (protocol::signal_topic(&guild), Carries::Signals),
        ] {
            self.topics.insert(topic.hash(), (guild, carries));
            let gossip = &mut self.swarm.behaviour_mut().gossip;
            if let Err(e) = gossip.subscribe(&topic) {
                tracing::warn!(%guild, error = ?e, "cannot subscribe to the guild's topic");
            }
            let _ = gossip.set_topic_params(topic, topic_score());
        }
        self.catch_up_with_all(guild);
    }

    /// Starts a catch-up for `guild` with every peer known to serve it.
    fn catch_up_with_all(&mut self, guild: GuildId) {
        for peer in self.peers_serving(&guild) {
            self.request_catchup(peer, guild);
        }
    }

    fn peers_serving(&self, guild: &GuildId) -> Vec<PeerId> {
        let hash = protocol::guild_topic(guild).hash();
        self.swarm
            .behaviour()
            .gossip
            .all_peers()
            .filter(|(_, topics)| topics.contains(&&hash))
            .map(|(peer, _)| *peer)
            .collect()
    }

    /// Starts a catch-up with `peer` for `guild`, unless one is under way.
    fn request_catchup(&mut self, peer: PeerId, guild: GuildId) {
        if self.syncing.contains_key(&(peer, guild)) {
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
        let guilds: Vec<GuildId> = self
            .topics
            .values()
            .filter(|(_, carries)| *carries == Carries::Ops)
            .map(|(guild, _)| *guild)
            .collect();
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
        }
    }

    /// Takes one token from the peer's bucket for this traffic.
    fn within_budget(&mut self, peer: PeerId, traffic: Traffic) -> bool {
        let now = Instant::now();
        let budget = self.config.budget(traffic);
        self.buckets
            .entry((peer, traffic))
            .or_insert_with(|| Bucket::full(budget, now))
            .take(budget, now)
    }

    /// Whether `peer` may make one more request of this kind now: within its budget and its
    /// requests in flight. A refusal is counted, and every `REFUSALS_PER_STRIKE` within a
    /// `REFUSAL_WINDOW` strike it.
    fn admit(&mut self, peer: PeerId, traffic: Traffic) -> Result<(), &'static str> {
        let answering = self.answering.get(&peer).copied().unwrap_or(0);
        let refused = if answering >= self.config.max_requests_in_flight {
            "too many requests in flight"
        } else if !self.within_budget(peer, traffic) {
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
            Report::Validated {
                message,
                source,
                guild,
                outcome,
            } => {
                let acceptance = match outcome {
                    Ok(Applied::Accepted) => MessageAcceptance::Accept,
                    Ok(Applied::AcceptedWithGap) => {
                        self.request_catchup(source, guild);
                        MessageAcceptance::Accept
                    }
                    Ok(Applied::Duplicate | Applied::Ignored(_)) => MessageAcceptance::Ignore,
                    Ok(Applied::Pending) => {
                        self.request_catchup(source, guild);
                        MessageAcceptance::Ignore
                    }
                    Ok(Applied::Refused(code)) | Err(code) => {
                        self.strike(source, code, 1);
                        MessageAcceptance::Reject
                    }
                };
                self.swarm
                    .behaviour_mut()
                    .gossip
                    .report_message_validation_result(&message, &source, acceptance);
            }
            Report::Answer {
                peer,
                channel,
                response,
                pull_back,
            } => {
                if let Some(answering) = self.answering.get_mut(&peer) {
                    *answering = answering.saturating_sub(1);
                }
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response);
                if let Some(guild) = pull_back {
                    self.request_catchup(peer, guild);
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
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                tracing::debug!(peer = %peer_id, "peer connected");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.on_identify(peer_id, info),
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(event)) => self.on_gossip(event),
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

    fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let gossip = &mut self.swarm.behaviour_mut().gossip;
                let Some((guild, carries)) = self.topics.get(&message.topic).copied() else {
                    // Not a topic we serve: gossipsub only delivers subscribed topics, so the
                    // peer pushed it unasked.
                    gossip.report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        MessageAcceptance::Reject,
                    );
                    self.strike(propagation_source, "unserved_topic", 1);
                    return;
                };
                if !self.within_budget(propagation_source, Traffic::Gossip) {
                    self.swarm
                        .behaviour_mut()
                        .gossip
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            MessageAcceptance::Ignore,
                        );
                    self.strike(propagation_source, "gossip_flood", 1);
                    return;
                }
                let _ = self.inbound.send(Inbound {
                    message: message_id,
                    source: propagation_source,
                    guild,
                    carries,
                    data: message.data,
                });
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                if let Some((guild, Carries::Ops)) = self.topics.get(&topic).copied() {
                    self.request_catchup(peer_id, guild);
                }
            }
            _ => {}
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
                if let Err(why) = self.admit(peer, Traffic::of(&request)) {
                    tracing::debug!(%peer, why, "sync request refused");
                    let refusal = refused(Refusal::new("rate_limited", why));
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .sync
                        .send_response(channel, refusal);
                    return;
                }
                let (host, reports) = (self.host.clone(), self.reports.clone());
                tokio::spawn(async move {
                    let (response, pull_back) = answer(host, request).await;
                    let _ = reports.send(Report::Answer {
                        peer,
                        channel,
                        response,
                        pull_back,
                    });
                });
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
            Response::DmKeys { .. } | Response::DmsTaken { .. } => {
                tracing::debug!(%peer, %guild, "a catch-up answered with a DM response");
                state.done = true;
                self.finish_if_done(key);
            }
        }
    }
}

/// The host's answer to a peer's request, and the guild to pull back from the peer when its
/// catch-up shows it holds ops we lack (so one side's catch-up heals both).
async fn answer<H: Host>(host: Arc<H>, request: Request) -> (Response, Option<GuildId>) {
    match request {
        Request::DmKeys { user } => {
            let mut records = host.dm_keys(&user);
            let newest = records.len().saturating_sub(protocol::MAX_DM_KEY_RECORDS);
            let records = records
                .drain(newest..)
                .map(serde_bytes::ByteBuf::from)
                .collect();
            (Response::DmKeys { records }, None)
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
            (response, None)
        }
        // Comparing digests and cutting a batch read up to 2,000 ops under the guild's lock:
        // off the async workers, which must keep serving gossip meanwhile.
        Request::Catchup { guild, have, after } => {
            blocking(move || answer_catchup(&*host, guild, &have, after)).await
        }
        Request::Join {
            guild,
            invite,
            secret,
            after,
            recent,
        } => {
            blocking(move || {
                let after = after.map(protocol::cursor_from_wire);
                let recent = recent.map(|n| n as usize);
                let batch = host.join_ops(&guild, &invite, &secret, after, recent);
                (ops_response(batch), None)
            })
            .await
        }
        Request::Backfill { guild, before } => {
            blocking(move || {
                let before = protocol::cursor_from_wire(before);
                let batch = host.backfill_ops(&guild, before).ok_or_else(|| {
                    Refusal::new("unknown_guild", "this node does not serve that guild")
                });
                (ops_response(batch), None)
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
) -> (Response, Option<GuildId>) {
    if have.len() > protocol::MAX_HAVE_AUTHORS {
        let refused = Response::Refused {
            code: "too_many_authors".into(),
            message: "the version vector is too long".into(),
        };
        return (refused, None);
    }
    let have = protocol::positions_from_wire(have);
    let pull_back = host.lacks_from(&guild, &have).then_some(guild);
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
