//! Unit and property tests of the core, with a small kit for building guild histories.

mod access;
mod auth;
mod change_scan;
mod convergence;
mod encoding;
mod heads;
mod home;
mod removal;
mod sealed;
mod simulation;
mod vectors;

use crate::body::{Body, ChannelKind};
use crate::error::AuthError;
use crate::guild::{Guild, InsertError, Inserted, Verdict};
use crate::hlc::Hlc;
use crate::id::{ChannelId, Keypair, NodeId, OpId, UserId, sha256};
use crate::op::{Envelope, VerifiedOp};
use crate::perm::Permissions;

pub const SECRET: &[u8] = b"open sesame";

pub fn key(n: u8) -> Keypair {
    Keypair::from_secret([n; 32])
}

pub fn user(n: u8) -> UserId {
    key(n).user_id()
}

/// The identity key of test node `n` (seeded apart from the users' keys).
pub fn node_key(n: u8) -> Keypair {
    Keypair::from_secret(sha256(&[b"guildhall test node ", &[n]]))
}

pub fn node(n: u8) -> NodeId {
    node_key(n).node_id()
}

/// The nodes entitled to `guild`, found the slow way: every current member's homes.
pub fn scanned_entitlement(guild: &Guild) -> Vec<NodeId> {
    let nodes: std::collections::BTreeSet<NodeId> = guild
        .state()
        .members
        .values()
        .flat_map(|m| m.homes.iter().copied())
        .collect();
    nodes.into_iter().collect()
}

/// Whether `guild`'s entitlement index agrees with `scanned_entitlement`.
pub fn entitlement_is_indexed(guild: &Guild) -> bool {
    let scanned = scanned_entitlement(guild);
    guild.entitled_nodes().copied().eq(scanned.iter().copied())
        && scanned.iter().all(|n| guild.entitled(n))
}

pub fn genesis(owner: &Keypair, name: &str) -> VerifiedOp {
    Envelope {
        guild: OpId::default(),
        author: owner.user_id(),
        seq: 1,
        prev: None,
        hlc: Hlc::from_parts(1_000, 0),
        deps: vec![],
        body: Body::Genesis { name: name.into() },
    }
    .sign(owner)
    .unwrap()
    .verify()
    .unwrap()
}

/// A ban or a kick of `member`, cutting their log above `cutoff`.
pub fn removal(ban: bool, member: UserId, cutoff: u64) -> Body {
    let reason = String::new();
    if ban {
        Body::Ban {
            member,
            cutoff,
            reason,
        }
    } else {
        Body::Kick {
            member,
            cutoff,
            reason,
        }
    }
}

/// One node's replica of a guild, with a clock that moves forward one millisecond per op.
#[derive(Clone)]
pub struct Replica {
    pub guild: Guild,
    pub now: u64,
}

impl Replica {
    pub fn new(owner: &Keypair) -> Replica {
        Replica {
            guild: Guild::new(genesis(owner, "test guild")).unwrap(),
            now: 2_000,
        }
    }

    pub fn make(&mut self, who: &Keypair, body: Body) -> VerifiedOp {
        self.now += 1;
        self.guild
            .next_envelope(who.user_id(), self.now, body)
            .sign(who)
            .unwrap()
            .verify()
            .unwrap()
    }

    /// Authors an op on this replica and returns its id and verdict, or why the replica refused
    /// to hold it (which precheck then refuses too, so no node signs it).
    pub fn attempt(&mut self, who: &Keypair, body: Body) -> Result<(OpId, Verdict), InsertError> {
        let op = self.make(who, body);
        let id = op.id();
        let precheck = self.guild.precheck(op.envelope());
        match self.guild.insert(op) {
            Ok(Inserted::Applied { .. }) => {}
            Ok(other) => panic!("own op not applied: {other:?}"),
            Err(e) => {
                assert!(
                    precheck.is_err(),
                    "precheck passed an op refused with {e:?}"
                );
                return Err(e);
            }
        }
        let verdict = self.guild.verdict(&id).unwrap().clone();
        match (&precheck, &verdict) {
            (Ok(()), Verdict::Valid)
            | (Err(_), Verdict::Waiting(_))
            | (Err(AuthError::Equivocated | AuthError::ForkedChain), Verdict::Forked) => {}
            (Err(e), Verdict::Invalid(f)) => assert_eq!(e, f, "precheck and verdict agree"),
            _ => panic!("precheck {precheck:?} but verdict {verdict:?}"),
        }
        Ok((id, verdict))
    }

    /// Authors an op the replica must hold, and returns its id and verdict.
    pub fn act(&mut self, who: &Keypair, body: Body) -> (OpId, Verdict) {
        self.attempt(who, body).expect("the op is held")
    }

    /// Authors an op the replica refuses to hold: what precheck says, and the insert error.
    pub fn refused(&mut self, who: &Keypair, body: Body) -> (AuthError, InsertError) {
        let op = self.make(who, body);
        let precheck = self
            .guild
            .precheck(op.envelope())
            .expect_err("precheck refuses");
        let refused = self
            .guild
            .insert(op.clone())
            .expect_err("insertion refuses");
        assert!(
            self.guild.op(&op.id()).is_none(),
            "a refused op is not held"
        );
        (precheck, refused)
    }

    /// Like `act`, but the op must be valid.
    pub fn ok(&mut self, who: &Keypair, body: Body) -> OpId {
        let (id, verdict) = self.act(who, body);
        assert_eq!(verdict, Verdict::Valid, "{id:?}");
        id
    }

    /// Receives every op `other` holds.
    pub fn sync_from(&mut self, other: &Replica) {
        for op in other.guild.ops() {
            self.guild.insert(op.clone()).unwrap();
        }
        self.now = self.now.max(other.now);
    }

    pub fn verdict(&self, id: &OpId) -> Verdict {
        self.guild.verdict(id).cloned().expect("op is held")
    }

    pub fn text_channel(&mut self, who: &Keypair, name: &str) -> ChannelId {
        self.ok(
            who,
            Body::ChannelCreate {
                kind: ChannelKind::Text,
                name: name.into(),
                parent: None,
                position: 0,
            },
        )
    }

    /// A thread named `name` that `who` starts on `message` in `channel`; it must be valid.
    pub fn thread_on(
        &mut self,
        who: &Keypair,
        channel: ChannelId,
        message: OpId,
        name: &str,
    ) -> OpId {
        self.ok(
            who,
            Body::ThreadCreate {
                channel,
                name: name.into(),
                message: Some(message),
            },
        )
    }

    pub fn invite(&mut self, who: &Keypair) -> OpId {
        self.ok(who, Body::invite_create(SECRET, 0, 0))
    }

    pub fn join(&mut self, who: &Keypair, invite: OpId) -> OpId {
        let body = self.join_body(who, invite);
        self.ok(who, body)
    }

    /// `who`'s join by `invite`, proved with `SECRET`.
    pub fn join_body(&self, who: &Keypair, invite: OpId) -> Body {
        Body::join(&self.guild.id(), invite, &who.user_id(), SECRET)
    }

    pub fn say(&mut self, who: &Keypair, channel: ChannelId, text: &str) -> (OpId, Verdict) {
        self.act(
            who,
            Body::MessageCreate {
                channel,
                content: text.into(),
                reply_to: None,
            },
        )
    }

    /// The seq of `member`'s latest op this replica holds: the cutoff a removal carries.
    pub fn cutoff(&self, member: &Keypair) -> u64 {
        self.guild
            .chain_head(&member.user_id())
            .map_or(0, |(seq, _, _)| seq)
    }
}

/// Owner 1 with a #general channel and an invite; users 2 and 3 joined.
pub(super) fn guild_with_members() -> (Replica, ChannelId, OpId) {
    let mut r = Replica::new(&key(1));
    let general = r.text_channel(&key(1), "general");
    let invite = r.invite(&key(1));
    r.join(&key(2), invite);
    r.join(&key(3), invite);
    (r, general, invite)
}

/// Role `name`, created by `who` with `perms` at `position`; it must be valid.
pub(super) fn role(
    r: &mut Replica,
    who: u8,
    name: &str,
    perms: Permissions,
    position: u32,
) -> OpId {
    r.ok(
        &key(who),
        Body::RoleCreate {
            name: name.into(),
            permissions: perms.bits(),
            color: 0,
            position,
        },
    )
}

/// `who` grants `role` to `member`.
pub(super) fn grant(r: &mut Replica, who: u8, member: u8, role: OpId) -> (OpId, Verdict) {
    r.act(
        &key(who),
        Body::MemberRoleGrant {
            member: user(member),
            role,
        },
    )
}

/// A deterministic shuffle (xorshift), so a failing case replays exactly.
pub(super) fn shuffled<T>(mut items: Vec<T>, mut seed: u64) -> Vec<T> {
    seed |= 1;
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        items.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    items
}

/// A replica that received `ops` in this order.
pub(super) fn fresh_replica_from(ops: Vec<VerifiedOp>) -> Guild {
    let genesis = ops
        .iter()
        .find(|op| op.envelope().is_genesis())
        .expect("genesis is held")
        .clone();
    let mut guild = Guild::new(genesis).unwrap();
    for op in ops {
        guild.insert(op).unwrap();
    }
    guild
}
