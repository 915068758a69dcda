//! A seeded, deterministic simulation of one guild on many nodes: random partitions, reordered,
//! duplicated and lost gossip, catch-up, crashes, and malicious nodes sending what honest nodes
//! must refuse or survive (strangers' ops, bad joins, forks, replays, ops citing nothing held).
//! After the network heals, every honest node holds the same state and no honest author is
//! forked.
//!
//! Everything is drawn from one seeded generator and the core's ordered outputs, so a seed
//! replays exactly. In the test suite a few seeds run at a small size; a soak is
//!
//! ```sh
//! GUILDHALL_SIM_SEEDS=500 GUILDHALL_SIM_STEPS=3000 \
//!     cargo test --release -p guildhall-proto simulation -- --nocapture
//! ```
//!
//! and a failing seed replays with `GUILDHALL_SIM_SEED=<seed>` (steps as it failed with).

use std::collections::BTreeMap;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::*;
use crate::perm::Permissions as P;

const NODES: usize = 20;
const MALICIOUS: [usize; 2] = [7, 13];
const USERS_PER_NODE: usize = 2;
/// What a catch-up batch carries at most, as on the wire.
const BATCH_OPS: usize = 64;
const BATCH_BYTES: usize = 256 * 1024;
/// How many nodes a node forwards a new op to.
const GOSSIP_FANOUT: usize = 4;

struct SimNode {
    guild: Guild,
    /// What entered the replica, in the order it did: the store a restart rebuilds from.
    stored: Vec<VerifiedOp>,
    malicious: bool,
    now: u64,
}

struct SimUser {
    key: Keypair,
    home: usize,
}

struct Message {
    to: usize,
    from: usize,
    op: VerifiedOp,
}

struct Sim {
    rng: Xoshiro256PlusPlus,
    nodes: Vec<SimNode>,
    users: Vec<SimUser>,
    in_flight: Vec<Message>,
    /// The side of the partition each node is on; messages between sides are lost.
    side: Vec<u8>,
    general: ChannelId,
    invite: OpId,
    moderators: OpId,
    /// Every op an honest node signed: none may end up forked.
    honest_ops: Vec<OpId>,
    strangers: u32,
    /// What happened, by kind: to show a run exercised what it claims.
    events: BTreeMap<String, usize>,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let owner = key(1);
        let mut start = Replica::new(&owner);
        let general = start.text_channel(&owner, "general");
        let invite = start.invite(&owner);
        let moderators = start.ok(
            &owner,
            Body::RoleCreate {
                name: "moderators".into(),
                permissions: (P::BAN_MEMBERS | P::KICK_MEMBERS | P::MANAGE_MESSAGES).bits(),
                color: 0,
                position: 1,
            },
        );
        let stored: Vec<VerifiedOp> = {
            let mut ops: Vec<VerifiedOp> = start.guild.ops().cloned().collect();
            ops.sort_by_key(|op| (op.envelope().hlc, op.id()));
            ops
        };
        let nodes = (0..NODES)
            .map(|i| SimNode {
                guild: start.guild.clone(),
                stored: stored.clone(),
                malicious: MALICIOUS.contains(&i),
                now: start.now,
            })
            .collect();
        let users = (0..NODES * USERS_PER_NODE)
            .map(|i| SimUser {
                // Key 1 is the owner's, at node 0.
                key: key(u8::try_from(i + 1).unwrap()),
                home: i / USERS_PER_NODE,
            })
            .collect();
        Sim {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            nodes,
            users,
            in_flight: Vec::new(),
            side: vec![0; NODES],
            general,
            invite,
            moderators,
            honest_ops: Vec::new(),
            strangers: 0,
            events: BTreeMap::new(),
        }
    }

    fn count(&mut self, event: String) {
        *self.events.entry(event).or_default() += 1;
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.rng.random_range(0..items.len())])
    }

    fn step(&mut self) {
        match self.rng.random_range(0..100) {
            0..40 => self.user_acts(),
            40..70 => self.deliver(),
            70..80 => self.catch_up(),
            80..84 => self.repartition(),
            84..86 => self.crash(),
            _ => self.misbehave(),
        }
    }

    /// A random user writes through their home node, which signs only what precheck accepts.
    fn user_acts(&mut self) {
        // The owner is busier than most, so that moderators exist and removals race.
        let user = if self.rng.random_bool(0.2) {
            0
        } else {
            self.rng.random_range(0..self.users.len())
        };
        let home = self.users[user].home;
        let who = self.users[user].key.user_id();
        let Some(body) = self.body_for(home, who) else {
            return;
        };
        let node = &mut self.nodes[home];
        node.now += 1 + self.rng.random_range(0..20);
        let env = node.guild.next_envelope(who, node.now, body);
        match node.guild.precheck(&env) {
            Ok(()) => {}
            Err(e @ (AuthError::ForkedChain | AuthError::Equivocated)) => {
                assert!(
                    node.malicious,
                    "node {home} cannot sign for its user: {e:?}"
                );
                return;
            }
            Err(_) => return,
        }
        let op = env.sign_verified(&self.users[user].key).unwrap();
        if !node.malicious {
            self.honest_ops.push(op.id());
        }
        self.receive(home, home, op);
    }

    fn body_for(&mut self, home: usize, who: UserId) -> Option<Body> {
        let guild = &self.nodes[home].guild;
        if !guild.state().is_member(&who) {
            return Some(Body::join(&guild.id(), self.invite, &who, SECRET));
        }
        let messages: Vec<OpId> = guild
            .messages(&self.general, None, None, usize::MAX)
            .into_iter()
            .map(|m| m.id)
            .collect();
        let members: Vec<UserId> = guild.state().members.keys().copied().collect();
        let banned: Vec<UserId> = guild.state().bans.keys().copied().collect();
        let cutoff_of =
            |guild: &Guild, member: &UserId| guild.chain_head(member).map_or(0, |(seq, _, _)| seq);
        Some(match self.rng.random_range(0..100) {
            // Homed at their node, sometimes at another too, sometimes nowhere.
            0..3 => {
                let mut homes = Vec::new();
                if self.rng.random_bool(0.9) {
                    homes.push(sim_node(home));
                }
                if self.rng.random_bool(0.3) {
                    homes.push(sim_node(self.rng.random_range(0..NODES)));
                }
                Body::home(homes)
            }
            3..50 => Body::MessageCreate {
                channel: self.general,
                content: format!(
                    "{} says {}",
                    &who.to_string()[..6],
                    self.rng.random::<u16>()
                )
                .into(),
                reply_to: self.pick(&messages),
            },
            50..62 => Body::ReactionAdd {
                message: self.pick(&messages)?,
                emoji: ["👍", "🎉"][self.rng.random_range(0..2)].into(),
            },
            62..70 => Body::MessageEdit {
                message: self.pick(&messages)?,
                content: "edited".into(),
            },
            70..75 => Body::MessageDelete {
                message: self.pick(&messages)?,
            },
            75..83 => Body::MemberRoleGrant {
                member: self.pick(&members)?,
                role: self.moderators,
            },
            83..91 => {
                let member = self.pick(&members)?;
                let cutoff = cutoff_of(&self.nodes[home].guild, &member);
                removal(self.rng.random_bool(0.4), member, cutoff)
            }
            91..94 => Body::Unban {
                member: self.pick(&banned)?,
            },
            94..97 => Body::ChannelCreate {
                kind: ChannelKind::Text,
                name: format!("room {}", self.rng.random::<u8>()),
                parent: None,
                position: 1,
            },
            _ => Body::Leave,
        })
    }

    /// A node inserts an op; what it holds it stores and gossips on to a few nodes, as a
    /// gossip mesh does (the partition decides what arrives).
    fn receive(&mut self, at: usize, from: usize, op: VerifiedOp) {
        if self.insert(at, from, op.clone()) {
            for _ in 0..GOSSIP_FANOUT {
                let to = self.rng.random_range(0..NODES);
                if to != at && to != from {
                    self.in_flight.push(Message {
                        to,
                        from: at,
                        op: op.clone(),
                    });
                }
            }
        }
    }

    /// Inserts an op at a node and stores what entered; whether it was new. Only a malicious
    /// node's ops may be refused.
    fn insert(&mut self, at: usize, from: usize, op: VerifiedOp) -> bool {
        let node = &mut self.nodes[at];
        match node.guild.insert(op) {
            Ok(Inserted::Applied { accepted, .. }) => {
                for id in accepted {
                    node.stored.push(node.guild.op(&id).unwrap().clone());
                }
                assert!(
                    entitlement_is_indexed(&node.guild),
                    "node {at}'s entitlement index disagrees with its members"
                );
                true
            }
            Ok(Inserted::Duplicate) => false,
            Ok(Inserted::Pending { .. }) => {
                self.count("pending".into());
                false
            }
            Err(e) => {
                assert!(
                    self.nodes[from].malicious,
                    "node {at} refused an op from honest node {from}: {e:?}"
                );
                self.count(format!("refused {}", e.code()));
                false
            }
        }
    }

    /// One message, picked at random (so gossip reorders), arrives, is lost to the partition,
    /// or arrives and stays in flight to arrive again.
    fn deliver(&mut self) {
        if self.in_flight.is_empty() {
            return;
        }
        let i = self.rng.random_range(0..self.in_flight.len());
        let duplicate = self.rng.random_bool(0.1);
        let message = if duplicate {
            let m = &self.in_flight[i];
            Message {
                to: m.to,
                from: m.from,
                op: m.op.clone(),
            }
        } else {
            self.in_flight.swap_remove(i)
        };
        if self.side[message.to] == self.side[message.from] {
            self.receive(message.to, message.from, message.op);
        } else {
            self.count("lost to a partition".into());
        }
    }

    /// A node pulls what it lacks from a node on its side, batch by batch.
    fn catch_up(&mut self) {
        let asker = self.rng.random_range(0..NODES);
        let source = self.rng.random_range(0..NODES);
        if asker != source && self.side[asker] == self.side[source] {
            self.sync(asker, source);
        }
    }

    fn sync(&mut self, asker: usize, source: usize) {
        let have = self.nodes[asker].guild.log_positions();
        let mut after = None;
        loop {
            let (batch, more): (Vec<VerifiedOp>, bool) = {
                let (ops, more) =
                    self.nodes[source]
                        .guild
                        .ops_missing_from(&have, after, BATCH_OPS, BATCH_BYTES);
                (ops.into_iter().cloned().collect(), more)
            };
            after = batch.last().map(|op| (op.envelope().hlc, op.id()));
            for op in batch {
                self.insert(asker, source, op);
            }
            if !more {
                return;
            }
        }
    }

    fn repartition(&mut self) {
        let sides = self.rng.random_range(1..=3u8);
        self.count(format!("partition into {sides}"));
        for node in 0..NODES {
            self.side[node] = self.rng.random_range(0..sides);
        }
    }

    /// A node restarts from its store: pending ops are lost, nothing held is, and the replica
    /// rebuilt is the one it had.
    fn crash(&mut self) {
        let at = self.rng.random_range(0..NODES);
        let node = &mut self.nodes[at];
        let before = node.guild.state_hash();
        let mut stored = node.stored.iter().cloned();
        let mut rebuilt = Guild::new(stored.next().unwrap()).unwrap();
        for op in stored {
            rebuilt.insert(op).unwrap();
        }
        assert_eq!(
            rebuilt.state_hash(),
            before,
            "node {at} restarted different"
        );
        node.guild = rebuilt;
        self.count("crash".into());
    }

    /// A malicious node does one of the things honest nodes must refuse or survive.
    fn misbehave(&mut self) {
        let at = self.pick(&MALICIOUS).unwrap();
        let stranger = {
            self.strangers += 1;
            let mut secret = [0xa5; 32];
            secret[..4].copy_from_slice(&self.strangers.to_le_bytes());
            Keypair::from_secret(secret)
        };
        let now = self.nodes[at].now + 1_000;
        let local_user = at * USERS_PER_NODE + self.rng.random_range(0..USERS_PER_NODE);
        let op = match self.rng.random_range(0..5) {
            // A stranger's guild-state op, citing what the node holds.
            0 => {
                let env = self.nodes[at].guild.next_envelope(
                    stranger.user_id(),
                    now,
                    Body::Ban {
                        member: key(1).user_id(),
                        cutoff: 0,
                        reason: String::new(),
                    },
                );
                env.sign_verified(&stranger).unwrap()
            }
            // A join with the proof of a join the node holds (replayed for the stranger), or
            // with a proof made from a guessed secret.
            1 => {
                let guild = &self.nodes[at].guild;
                // The least by id, so that a seed replays alike (`ops` has no order).
                let seen = guild
                    .ops()
                    .filter_map(|op| match &op.envelope().body {
                        Body::Join { proof, .. } => Some((op.id(), *proof)),
                        _ => None,
                    })
                    .min_by_key(|(id, _)| *id)
                    .map(|(_, proof)| proof);
                let body = match seen {
                    Some(proof) => Body::Join {
                        invite: self.invite,
                        proof,
                    },
                    None => Body::join(&guild.id(), self.invite, &stranger.user_id(), b"guess"),
                };
                let env = guild.next_envelope(stranger.user_id(), now, body);
                env.sign_verified(&stranger).unwrap()
            }
            // A fork: a local user's key signs a second op at a seq it has used, sent to some.
            2 => {
                let user = &self.users[local_user];
                let guild = &self.nodes[at].guild;
                let Some((seq, id, _)) = guild.chain_head(&user.key.user_id()) else {
                    return;
                };
                if seq < 2 {
                    return;
                }
                let below = guild.op(&id).unwrap();
                let mut env = guild.next_envelope(
                    user.key.user_id(),
                    now,
                    Body::MessageCreate {
                        channel: self.general,
                        content: "fork".into(),
                        reply_to: None,
                    },
                );
                (env.seq, env.prev) = (seq, below.envelope().prev);
                env.sign_verified(&user.key).unwrap()
            }
            // An op citing a guild-state op nobody holds: it can only wait.
            3 => Envelope {
                guild: self.nodes[at].guild.id(),
                author: stranger.user_id(),
                seq: 1,
                prev: None,
                hlc: Hlc::from_parts(now, 0),
                deps: vec![OpId(sha256(&[&self.strangers.to_le_bytes()]))],
                body: Body::Leave,
            }
            .sign_verified(&stranger)
            .unwrap(),
            // A replay of something old.
            _ => {
                let stored = &self.nodes[at].stored;
                stored[self.rng.random_range(0..stored.len())].clone()
            }
        };
        for to in 0..NODES {
            if to != at && self.rng.random_bool(0.5) {
                self.in_flight.push(Message {
                    to,
                    from: at,
                    op: op.clone(),
                });
            }
        }
    }

    /// The network heals: everything in flight arrives, then honest nodes reconcile by
    /// catch-up, pair by pair, until nothing moves.
    fn heal(&mut self) {
        self.side = vec![0; NODES];
        while !self.in_flight.is_empty() {
            self.deliver();
        }
        let honest: Vec<usize> = (0..NODES).filter(|n| !MALICIOUS.contains(n)).collect();
        for pass in 0.. {
            assert!(pass < 4, "catch-up keeps finding ops after {pass} passes");
            let before: Vec<usize> = self.nodes.iter().map(|n| n.guild.len()).collect();
            for &a in &honest {
                for &b in &honest {
                    if a != b {
                        self.sync(a, b);
                    }
                }
            }
            if self.nodes.iter().map(|n| n.guild.len()).eq(before) {
                break;
            }
        }
    }

    fn check(&mut self) {
        let verdicts: Vec<String> = {
            let guild = &self.nodes[0].guild;
            guild
                .ops()
                .map(|op| {
                    let body = &op.envelope().body;
                    let kind = match body {
                        Body::Kick { .. }
                        | Body::Ban { .. }
                        | Body::MemberRoleGrant { .. }
                        | Body::Home { .. } => {
                            format!("{body:?}").split(' ').next().unwrap().to_owned()
                        }
                        _ => "op".to_owned(),
                    };
                    match guild.verdict(&op.id()).unwrap() {
                        Verdict::Invalid(e) => format!("{kind} invalid {}", e.code()),
                        v => format!("{kind} {v:?}"),
                    }
                })
                .collect()
        };
        for v in verdicts {
            self.count(v);
        }
        let proofs = self.nodes[0].guild.equivocations().len();
        *self.events.entry("equivocation proofs".into()).or_default() = proofs;
        let honest: Vec<&SimNode> = self.nodes.iter().filter(|n| !n.malicious).collect();
        let expected = honest[0].guild.state_hash();
        let entitled = scanned_entitlement(&honest[0].guild);
        *self.events.entry("entitled nodes".into()).or_default() = entitled.len();
        for (i, node) in honest.iter().enumerate() {
            assert_eq!(node.guild.state_hash(), expected, "honest node {i} differs");
            assert!(
                node.guild.entitled_nodes().eq(entitled.iter()),
                "honest node {i}'s entitled nodes are not its members' homes"
            );
            for id in &self.honest_ops {
                assert_ne!(
                    node.guild.verdict(id),
                    Some(&Verdict::Forked),
                    "an honest op is forked"
                );
                assert!(node.guild.verdict(id).is_some(), "an honest op is missing");
            }
        }
    }
}

/// The node id of simulated node `i`.
fn sim_node(i: usize) -> NodeId {
    node(u8::try_from(i).unwrap())
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} is a number")))
        .unwrap_or(default)
}

fn run(seed: u64, steps: u64) -> Sim {
    let mut sim = Sim::new(seed);
    for _ in 0..steps {
        sim.step();
    }
    sim.heal();
    sim.check();
    sim
}

#[test]
fn twenty_nodes_two_malicious_converge_after_partitions_and_crashes() {
    let steps = env_or("GUILDHALL_SIM_STEPS", 600);
    let seeds: Vec<u64> = match std::env::var("GUILDHALL_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("GUILDHALL_SIM_SEED is a number")],
        Err(_) => (0..env_or("GUILDHALL_SIM_SEEDS", 3)).collect(),
    };
    for seed in seeds {
        let outcome = std::panic::catch_unwind(|| run(seed, steps));
        match outcome {
            Ok(sim) => println!(
                "seed {seed}: {} ops held, {} signed by honest nodes; {:?}",
                sim.nodes[0].guild.len(),
                sim.honest_ops.len(),
                sim.events
            ),
            Err(e) => {
                eprintln!(
                    "simulation failed; replay with GUILDHALL_SIM_SEED={seed} \
                     GUILDHALL_SIM_STEPS={steps}"
                );
                std::panic::resume_unwind(e)
            }
        }
    }
}

#[test]
fn a_seed_replays_exactly() {
    let hashes =
        |sim: &Sim| -> Vec<[u8; 32]> { sim.nodes.iter().map(|n| n.guild.state_hash()).collect() };
    assert_eq!(hashes(&run(42, 300)), hashes(&run(42, 300)));
}
