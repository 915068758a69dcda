//! Incremental strong removal (`spec/auth.md` §6): bans, kicks and demotions honored by
//! re-judging what they cut reach the verdicts of the reference resolution in any order of
//! arrival, and resolve from scratch only when a removal cuts another.

use proptest::prelude::*;

use super::*;
use crate::perm::Permissions as P;

/// Whether `guild`, built by incremental insertion, holds what the reference resolution of
/// the same ops gives: every verdict, the state hash, the honored removals, the heads new ops
/// cite, and a round count the reference does not exceed (equal within two rounds, where the
/// incremental path relies on it).
fn agrees_with_the_reference(guild: &Guild) -> Result<(), TestCaseError> {
    let reference = guild.resolved_from_scratch();
    for op in guild.ops() {
        let id = op.id();
        prop_assert_eq!(
            guild.verdict(&id),
            reference.verdict(&id),
            "{:?}",
            op.envelope().body
        );
    }
    prop_assert_eq!(guild.state_hash(), reference.state_hash());
    let (honored, rounds) = guild.honored_removals();
    let (expected, reference_rounds) = reference.honored_removals();
    prop_assert_eq!(honored, expected);
    prop_assert!(
        rounds >= reference_rounds,
        "{} < {}",
        rounds,
        reference_rounds
    );
    if rounds <= 2 {
        prop_assert_eq!(rounds, reference_rounds);
    }
    let next = |g: &Guild| g.next_envelope(user(1), 0, Body::Leave).deps;
    prop_assert_eq!(next(guild), next(&reference));
    prop_assert!(entitlement_is_indexed(guild));
    Ok(())
}

fn check(guild: &Guild) {
    agrees_with_the_reference(guild).unwrap();
}

/// Owner 1, members 2 to 6. Top (position 4) is held by nobody yet, senior (3) by 2, junior
/// (2) by 3 and 4, voice (1, no bits) by 5; 6 holds none. Top, senior and junior may ban, kick
/// and make channels; top and senior may manage roles.
struct Fixture {
    replica: Replica,
    roles: [OpId; 4],
}

fn fixture() -> Fixture {
    let (mut r, _, invite) = guild_with_members();
    for m in 4..=6 {
        r.join(&key(m), invite);
    }
    let moderate = P::BAN_MEMBERS | P::KICK_MEMBERS | P::MANAGE_CHANNELS;
    let top = role(&mut r, 1, "top", moderate | P::MANAGE_ROLES, 4);
    let senior = role(&mut r, 1, "senior", moderate | P::MANAGE_ROLES, 3);
    let junior = role(&mut r, 1, "junior", moderate, 2);
    let voice = role(&mut r, 1, "voice", P::empty(), 1);
    for (member, role) in [(2, senior), (3, junior), (4, junior), (5, voice)] {
        assert_eq!(grant(&mut r, 1, member, role).1, Verdict::Valid);
    }
    Fixture {
        replica: r,
        roles: [top, senior, junior, voice],
    }
}

const REPLICAS: usize = 3;

/// Each user signs on one replica only (as on their home node), so concurrency comes from
/// replicas that have not synced, not from forks.
fn home(actor: u8) -> usize {
    usize::from(actor) % REPLICAS
}

#[derive(Debug, Clone)]
enum Action {
    /// A message in the `pick`-th channel of the actor's current state.
    Say {
        actor: u8,
        pick: usize,
    },
    /// A ban or kick whose cutoff is `purge` below the target's head here.
    Remove {
        actor: u8,
        member: u8,
        ban: bool,
        purge: u64,
    },
    Revoke {
        actor: u8,
        member: u8,
        role: usize,
        purge: u64,
    },
    Grant {
        actor: u8,
        member: u8,
        role: usize,
    },
    /// Guild-state ops for removals to cut: a channel (which messages then use), an invite
    /// (which anyone may make).
    Channel {
        actor: u8,
    },
    Invite {
        actor: u8,
    },
    Sync {
        from: usize,
        to: usize,
    },
}

fn action() -> impl Strategy<Value = Action> {
    let actor = 1u8..=6;
    // Mostly those who may remove someone: the owner, the senior and the juniors.
    let remover = prop_oneof![3 => 1u8..=4, 1 => 5u8..=6];
    let member = 2u8..=6;
    let replica = 0..REPLICAS;
    prop_oneof![
        5 => (actor.clone(), 0usize..4).prop_map(|(actor, pick)| Action::Say { actor, pick }),
        3 => (remover.clone(), member.clone(), any::<bool>(), 0u64..3).prop_map(
            |(actor, member, ban, purge)| Action::Remove { actor, member, ban, purge }
        ),
        2 => (remover.clone(), member.clone(), 0usize..4, 0u64..3).prop_map(
            |(actor, member, role, purge)| Action::Revoke { actor, member, role, purge }
        ),
        2 => (remover.clone(), member, 0usize..4)
            .prop_map(|(actor, member, role)| Action::Grant { actor, member, role }),
        1 => remover.prop_map(|actor| Action::Channel { actor }),
        1 => actor.prop_map(|actor| Action::Invite { actor }),
        2 => (replica.clone(), replica).prop_map(|(from, to)| Action::Sync { from, to }),
    ]
}

impl Fixture {
    fn run(&self, replicas: &mut [Replica], action: &Action) {
        let (actor, body) = match *action {
            Action::Sync { from, to } => {
                let source = replicas[from].clone();
                replicas[to].sync_from(&source);
                return;
            }
            Action::Say { actor, pick } => {
                let channels = &replicas[home(actor)].guild.state().channels;
                let Some(&channel) = channels.keys().nth(pick % channels.len().max(1)) else {
                    return;
                };
                let body = Body::MessageCreate {
                    channel,
                    content: "hello".into(),
                    reply_to: None,
                };
                (actor, body)
            }
            Action::Remove {
                actor,
                member,
                ban,
                purge,
            } => {
                let cutoff = replicas[home(actor)].cutoff(&key(member));
                (
                    actor,
                    removal(ban, user(member), cutoff.saturating_sub(purge)),
                )
            }
            Action::Revoke {
                actor,
                member,
                role,
                purge,
            } => {
                let cutoff = replicas[home(actor)].cutoff(&key(member));
                let body = Body::MemberRoleRevoke {
                    member: user(member),
                    role: self.roles[role],
                    cutoff: cutoff.saturating_sub(purge),
                };
                (actor, body)
            }
            Action::Grant {
                actor,
                member,
                role,
            } => {
                let body = Body::MemberRoleGrant {
                    member: user(member),
                    role: self.roles[role],
                };
                (actor, body)
            }
            Action::Channel { actor } => {
                let body = Body::ChannelCreate {
                    kind: ChannelKind::Text,
                    name: "side".into(),
                    parent: None,
                    position: 0,
                };
                (actor, body)
            }
            Action::Invite { actor } => (actor, Body::invite_create(SECRET, 0, 0)),
        };
        // Ops refused outright (by a member who was removed, say) are simply not held.
        let _ = replicas[home(actor)].attempt(&key(actor), body);
    }
}

/// `ops` in a random order where each comes after its deps and its `prev`.
fn causally_shuffled(ops: Vec<VerifiedOp>, seed: u64) -> Vec<VerifiedOp> {
    let mut waiting = shuffled(ops, seed);
    let mut delivered: Vec<VerifiedOp> = Vec::new();
    let mut held = std::collections::HashSet::new();
    while !waiting.is_empty() {
        let env_ready = |op: &VerifiedOp| {
            let env = op.envelope();
            env.deps.iter().chain(&env.prev).all(|d| held.contains(d))
        };
        let next = waiting
            .iter()
            .position(env_ready)
            .expect("ops form a causal order");
        let op = waiting.remove(next);
        held.insert(op.id());
        delivered.push(op);
    }
    delivered
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn incremental_removal_matches_the_reference_in_any_order(
        actions in prop::collection::vec(action(), 1..60),
        seeds in prop::collection::vec(any::<u64>(), 2),
    ) {
        let fixture = fixture();
        let mut replicas = vec![fixture.replica.clone(); REPLICAS];
        for action in &actions {
            fixture.run(&mut replicas, action);
        }
        for r in &replicas {
            agrees_with_the_reference(&r.guild)?;
        }
        let snapshot = replicas.clone();
        for r in &mut replicas {
            for other in &snapshot {
                r.sync_from(other);
            }
        }
        let expected = replicas[0].guild.state_hash();
        for r in &replicas {
            prop_assert_eq!(r.guild.state_hash(), expected);
            agrees_with_the_reference(&r.guild)?;
        }

        let all: Vec<VerifiedOp> = replicas[0].guild.ops().cloned().collect();
        // In a causal order (each op after its deps and its prev) every resolution is a
        // removal's, and each insertion is checked; in any order, the end.
        let mut delivery = causally_shuffled(all.clone(), seeds[0]).into_iter();
        let mut guild = Guild::new(delivery.next().unwrap()).unwrap();
        for op in delivery {
            guild.insert(op).unwrap();
            agrees_with_the_reference(&guild)?;
        }
        prop_assert_eq!(guild.state_hash(), expected);
        let guild = fresh_replica_from(shuffled(all, seeds[1]));
        prop_assert_eq!(guild.state_hash(), expected);
        agrees_with_the_reference(&guild)?;
    }
}

/// `who`'s ban of `member`, cutting above `cutoff`, signed on `r` but not inserted.
fn ban_op(r: &mut Replica, who: u8, member: u8, cutoff: u64) -> VerifiedOp {
    let body = removal(true, user(member), cutoff);
    r.make(&key(who), body)
}

#[test]
fn one_ban_in_a_guild_of_10k_messages_resolves_nothing() {
    let (mut r, general, invite) = guild_with_members();
    for m in 4..=20 {
        r.join(&key(m), invite);
    }
    for i in 0..10_000u32 {
        let author = key(2 + (i % 19) as u8);
        let body = Body::MessageCreate {
            channel: general,
            content: format!("message {i}").into(),
            reply_to: None,
        };
        let op = r.make(&author, body);
        r.guild.insert(op).unwrap();
    }
    let before = r.guild.resolutions();
    assert_eq!(before.full, 0, "building the guild resolved nothing");
    let cutoff = r.cutoff(&key(2));
    let ban = ban_op(&mut r, 1, 2, cutoff);
    r.guild.insert(ban.clone()).unwrap();
    assert_eq!(r.verdict(&ban.id()), Verdict::Valid);
    let after = r.guild.resolutions();
    assert_eq!(after.full, 0);
    assert_eq!(after.incremental_removals, 1);
    assert_eq!(
        r.guild.messages(&general, None, None, usize::MAX).len(),
        10_000
    );
    check(&r.guild);
}

#[test]
fn a_ban_cuts_concurrent_messages_without_a_resolution() {
    let (mut a, general, _) = guild_with_members();
    let (seen, _) = a.say(&key(2), general, "seen by the moderator");
    let mut b = a.clone();
    let during: Vec<OpId> = (0..3)
        .map(|i| b.say(&key(2), general, &format!("spam {i}")).0)
        .collect();
    let (other, _) = b.say(&key(3), general, "not spam");
    let cutoff = a.cutoff(&key(2));
    a.ok(&key(1), removal(true, user(2), cutoff));
    // B holds the messages when the ban arrives; A holds the ban when they do.
    b.sync_from(&a);
    a.sync_from(&b);
    for r in [&a, &b] {
        assert_eq!(r.guild.resolutions().full, 0);
        assert_eq!(r.verdict(&seen), Verdict::Valid);
        for m in &during {
            assert_eq!(r.verdict(m), Verdict::Invalid(AuthError::Banned));
        }
        assert_eq!(r.verdict(&other), Verdict::Valid);
        assert_eq!(r.guild.messages(&general, None, None, 50).len(), 2);
        check(&r.guild);
    }
    assert_eq!(b.guild.resolutions().incremental_removals, 1);
    assert_eq!(a.guild.state_hash(), b.guild.state_hash());
}

#[test]
fn a_ban_rejudges_what_builds_on_the_guild_state_ops_it_cuts() {
    let (mut a, general, _) = guild_with_members();
    let builders = role(&mut a, 1, "builders", P::MANAGE_CHANNELS, 1);
    grant(&mut a, 1, 2, builders);
    let mut b = a.clone();
    // On B, 2 makes a channel and 3 talks in it; on A, concurrently, the owner bans 2.
    let annex = b.text_channel(&key(2), "annex");
    let (in_annex, _) = b.say(&key(3), annex, "in the annex");
    let (in_general, _) = b.say(&key(3), general, "in general");
    let cutoff = a.cutoff(&key(2));
    a.ok(&key(1), removal(true, user(2), cutoff));
    b.sync_from(&a);
    a.sync_from(&b);
    for r in [&a, &b] {
        assert_eq!(r.guild.resolutions().full, 0);
        assert_eq!(r.verdict(&annex), Verdict::Invalid(AuthError::Banned));
        assert_eq!(
            r.verdict(&in_annex),
            Verdict::Invalid(AuthError::UnknownChannel)
        );
        assert_eq!(r.verdict(&in_general), Verdict::Valid);
        assert!(r.guild.messages(&annex, None, None, 50).is_empty());
        check(&r.guild);
    }
    assert_eq!(a.guild.state_hash(), b.guild.state_hash());
}

#[test]
fn concurrent_bans_by_many_moderators_resolve_nothing() {
    const MODERATORS: u8 = 30;
    let (mut r, general, invite) = guild_with_members();
    let moderators: Vec<u8> = (10..10 + MODERATORS).collect();
    let targets: Vec<u8> = (100..100 + MODERATORS).collect();
    for &m in moderators.iter().chain(&targets) {
        r.join(&key(m), invite);
    }
    let mods = role(&mut r, 1, "mods", P::BAN_MEMBERS, 1);
    for &m in &moderators {
        grant(&mut r, 1, m, mods);
    }
    for &t in &targets {
        r.say(&key(t), general, "hello");
    }
    // Every ban cites the same heads: each is concurrent with all the others.
    let bans: Vec<VerifiedOp> = moderators
        .iter()
        .zip(&targets)
        .map(|(&m, &t)| {
            let cutoff = r.cutoff(&key(t));
            ban_op(&mut r, m, t, cutoff)
        })
        .collect();
    for ban in &bans {
        r.guild.insert(ban.clone()).unwrap();
        assert_eq!(r.verdict(&ban.id()), Verdict::Valid);
    }
    let counts = r.guild.resolutions();
    assert_eq!(counts.full, 0);
    assert_eq!(counts.incremental_removals, u64::from(MODERATORS));
    check(&r.guild);
}

#[test]
fn a_removal_cutting_another_removal_resolves_from_scratch() {
    let (mut a, _, invite) = guild_with_members();
    a.join(&key(4), invite);
    let senior = role(&mut a, 1, "senior", P::BAN_MEMBERS, 3);
    let junior = role(&mut a, 1, "junior", P::BAN_MEMBERS, 2);
    grant(&mut a, 1, 2, senior);
    grant(&mut a, 1, 3, junior);
    let mut b = a.clone();
    let ban_4 = {
        let cutoff = b.cutoff(&key(4));
        b.ok(&key(3), removal(true, user(4), cutoff))
    };
    let ban_3 = {
        let cutoff = a.cutoff(&key(3));
        a.ok(&key(2), removal(true, user(3), cutoff))
    };
    // A honors 2's ban of 3, which cuts 3's ban of 4 when it arrives; B honors 3's ban of 4,
    // which 2's ban of 3 then cuts.
    let (a_before, b_before) = (a.guild.resolutions().full, b.guild.resolutions().full);
    a.sync_from(&b);
    b.sync_from(&a);
    assert_eq!(a.guild.resolutions().full, a_before + 1);
    assert_eq!(b.guild.resolutions().full, b_before + 1);
    for r in [&a, &b] {
        assert_eq!(r.verdict(&ban_3), Verdict::Valid);
        assert_eq!(r.verdict(&ban_4), Verdict::Invalid(AuthError::Banned));
        check(&r.guild);
    }
}
