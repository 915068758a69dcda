//! Home nodes and entitlement (`spec/auth.md` §13): a member names the nodes that serve them
//! the guild, and a node is entitled to the guild while some current member names it. And the
//! fetch proof a joining node shows before any member names it.

use super::*;
use crate::id::{InviteKey, NodeId};
use crate::limits;
use crate::op::Op;
use crate::perm::Permissions as P;

fn homes(r: &Replica, member: u8) -> Vec<NodeId> {
    r.guild.state().members[&user(member)]
        .homes
        .iter()
        .copied()
        .collect()
}

fn entitled(r: &Replica) -> Vec<NodeId> {
    assert!(entitlement_is_indexed(&r.guild), "the index agrees");
    r.guild.entitled_nodes().copied().collect()
}

/// Sorted node ids, as a `Home` carries them.
fn sorted(ns: &[u8]) -> Vec<NodeId> {
    let mut nodes: Vec<NodeId> = ns.iter().map(|n| node(*n)).collect();
    nodes.sort();
    nodes
}

fn home(ns: &[u8]) -> Body {
    Body::Home { nodes: sorted(ns) }
}

/// The replica a node rebuilds from `ops` delivered newest first: every removal waits for its
/// deps, and the guild is judged by the full resolution.
fn reference(ops: impl Iterator<Item = VerifiedOp>) -> Guild {
    let mut ops: Vec<VerifiedOp> = ops.collect();
    ops.sort_by_key(|op| std::cmp::Reverse((op.envelope().hlc, op.id())));
    let mut guild = Guild::new(ops.pop().unwrap()).unwrap();
    for op in ops {
        guild.insert(op).unwrap();
    }
    guild
}

fn assert_matches_reference(r: &Replica) {
    let full = reference(r.guild.ops().cloned());
    assert_eq!(full.state_hash(), r.guild.state_hash());
    assert!(full.entitled_nodes().eq(r.guild.entitled_nodes()));
    assert!(entitlement_is_indexed(&full));
}

#[test]
fn home_round_trips_and_refuses_unsorted_duplicate_or_too_many_nodes() {
    let r = Replica::new(&key(1));
    let envelope = |body: Body| r.guild.next_envelope(user(1), 3_000, body);
    for nodes in [vec![], sorted(&[1]), sorted(&[1, 2, 3, 4])] {
        let body = Body::Home {
            nodes: nodes.clone(),
        };
        assert_eq!(body.kind(), 20);
        assert!(body.is_control());
        let wire = envelope(body.clone()).sign(&key(1)).unwrap().encode();
        let op = Op::decode(&wire).unwrap();
        assert_eq!(op.envelope().body, body);
        assert_eq!(op.encode(), wire);
        // kind 20, the body's length, the count, then each key.
        let fields: Vec<u8> = std::iter::once(nodes.len() as u8)
            .chain(nodes.iter().flat_map(|n| n.0))
            .collect();
        let mut encoded = crate::wire::Writer::new();
        encoded.uint(20);
        encoded.bytes(&fields);
        assert!(op.unsigned_bytes().ends_with(&encoded.into_bytes()));
    }
    assert_eq!(Body::home([node(2), node(1), node(2)]), home(&[1, 2]));

    let [a, b] = [sorted(&[1, 2])[0], sorted(&[1, 2])[1]];
    let five = sorted(&[1, 2, 3, 4, 5]);
    assert_eq!(five.len(), limits::MAX_HOMES_PER_MEMBER + 1);
    for nodes in [vec![b, a], vec![a, a], vec![a, b, b], five] {
        let env = envelope(Body::Home { nodes });
        // Nothing is signed that would not decode ...
        assert_eq!(
            env.clone().sign(&key(1)).unwrap_err().code(),
            "malformed_op"
        );
        // ... and bytes made anyway do not decode.
        let wire = [&env.encode_unsigned()[..], &[0; 64]].concat();
        assert_eq!(Op::decode(&wire).unwrap_err().code(), "malformed_op");
    }
    // A count over the limit is refused before any key is read.
    let env = envelope(home(&[1]));
    let mut unsigned = env.encode_unsigned();
    let at = unsigned.len() - 33;
    assert_eq!(unsigned[at], 1, "the count");
    unsigned[at] = 5;
    let wire = [&unsigned[..], &[0; 64]].concat();
    assert_eq!(Op::decode(&wire).unwrap_err().code(), "malformed_op");
}

#[test]
fn a_member_sets_their_own_homes_and_entitles_those_nodes() {
    let (mut r, _, invite) = guild_with_members();
    assert_eq!(entitled(&r), vec![], "nobody is homed anywhere at first");
    assert!(homes(&r, 1).is_empty(), "the owner starts homed nowhere");

    r.ok(&key(2), home(&[1, 2]));
    assert_eq!(homes(&r, 2), sorted(&[1, 2]));
    assert!(r.guild.entitled(&node(1)) && r.guild.entitled(&node(2)));
    assert!(!r.guild.entitled(&node(3)));
    // A second Home replaces the set.
    r.ok(&key(2), home(&[2, 3]));
    assert_eq!(homes(&r, 2), sorted(&[2, 3]));
    assert_eq!(entitled(&r), sorted(&[2, 3]));
    // Two members sharing a node: it stays entitled until neither names it.
    r.ok(&key(3), home(&[3]));
    r.ok(&key(1), home(&[1]));
    assert_eq!(entitled(&r), sorted(&[1, 2, 3]));
    r.ok(&key(2), home(&[]));
    assert!(homes(&r, 2).is_empty());
    assert_eq!(entitled(&r), sorted(&[1, 3]));
    r.ok(&key(3), Body::Leave);
    assert_eq!(entitled(&r), sorted(&[1]));

    // Nobody names another's homes: a stranger's Home is not even held.
    assert_eq!(
        r.refused(&key(9), home(&[9])),
        (AuthError::NotMember, InsertError::AuthorNotMember)
    );
    // One who left is no member; a re-join starts homed nowhere.
    assert_eq!(
        r.act(&key(3), home(&[3])).1,
        Verdict::Invalid(AuthError::NotMember)
    );
    r.join(&key(3), invite);
    assert!(homes(&r, 3).is_empty());
    assert!(!r.guild.entitled(&node(3)));
    assert_matches_reference(&r);
}

#[test]
fn entitlement_ends_with_leave_kick_and_ban() {
    let (mut r, _, invite) = guild_with_members();
    r.join(&key(4), invite);
    for (who, n) in [(2, 2), (3, 3), (4, 4)] {
        r.ok(&key(who), home(&[n]));
    }
    assert_eq!(entitled(&r), sorted(&[2, 3, 4]));
    r.ok(&key(2), Body::Leave);
    assert_eq!(entitled(&r), sorted(&[3, 4]));
    let cutoff = r.cutoff(&key(3));
    r.ok(&key(1), removal(false, user(3), cutoff));
    assert_eq!(entitled(&r), sorted(&[4]));
    let cutoff = r.cutoff(&key(4));
    r.ok(&key(1), removal(true, user(4), cutoff));
    assert_eq!(entitled(&r), vec![]);
    // A banned user's Home is invalid, and entitles nothing.
    assert_eq!(
        r.act(&key(4), home(&[4])).1,
        Verdict::Invalid(AuthError::Banned)
    );
    assert_eq!(entitled(&r), vec![]);
    // Back after an unban, homed nowhere until they say so.
    r.ok(&key(1), Body::Unban { member: user(4) });
    r.join(&key(4), invite);
    assert_eq!(entitled(&r), vec![]);
    r.ok(&key(4), home(&[4]));
    assert_eq!(entitled(&r), sorted(&[4]));
    // Nothing is valid after the guild is deleted.
    r.ok(&key(1), Body::GuildDelete);
    assert_eq!(
        r.act(&key(4), home(&[5])).1,
        Verdict::Invalid(AuthError::GuildDeleted)
    );
    assert_matches_reference(&r);
}

/// A ban concurrent with a Home stamped after it: the Home is cut, on the node that held the
/// ban first and on the node that held the Home first.
#[test]
fn a_ban_concurrent_with_a_later_home_voids_it() {
    let (mut a, _, _) = guild_with_members();
    a.ok(&key(2), home(&[2]));
    let mut b = a.clone();
    let cutoff = a.cutoff(&key(2));
    let ban = a.ok(&key(1), removal(true, user(2), cutoff));
    b.now = a.now + 10;
    let (moved, v) = b.act(&key(2), home(&[5]));
    assert_eq!(v, Verdict::Valid, "valid where the ban is not yet known");
    assert!(b.guild.entitled(&node(5)));
    let ban_hlc = a.guild.op(&ban).unwrap().envelope().hlc;
    assert!(b.guild.op(&moved).unwrap().envelope().hlc > ban_hlc);
    a.sync_from(&b);
    b.sync_from(&a);
    for r in [&a, &b] {
        assert_eq!(r.verdict(&ban), Verdict::Valid);
        assert_eq!(r.verdict(&moved), Verdict::Invalid(AuthError::Banned));
        assert_eq!(entitled(r), vec![]);
        assert_matches_reference(r);
    }
    assert_eq!(a.guild.state_hash(), b.guild.state_hash());
}

/// A kick concurrent with a Home voids it; a re-join that sees both starts homed nowhere.
#[test]
fn a_kick_concurrent_with_a_home_voids_it_and_a_rejoin_starts_empty() {
    let (mut a, _, invite) = guild_with_members();
    let mut b = a.clone();
    let cutoff = a.cutoff(&key(3));
    let kick = a.ok(&key(1), removal(false, user(3), cutoff));
    let (moved, _) = b.act(&key(3), home(&[3]));
    a.sync_from(&b);
    b.sync_from(&a);
    for r in [&a, &b] {
        assert_eq!(r.verdict(&kick), Verdict::Valid);
        assert_eq!(r.verdict(&moved), Verdict::Invalid(AuthError::NotMember));
        assert_eq!(entitled(r), vec![]);
    }
    a.join(&key(3), invite);
    assert!(homes(&a, 3).is_empty());
    assert_eq!(entitled(&a), vec![]);
    assert_matches_reference(&a);
}

/// The ban that voided a Home is itself voided by a demotion concurrent with it: the ban is
/// not honored, so the Home counts again.
#[test]
fn a_home_counts_again_when_the_ban_that_cut_it_is_voided() {
    let (mut a, _, _) = guild_with_members();
    let mods = a.ok(
        &key(1),
        Body::RoleCreate {
            name: "mods".into(),
            permissions: P::BAN_MEMBERS.bits(),
            color: 0,
            position: 1,
        },
    );
    a.ok(
        &key(1),
        Body::MemberRoleGrant {
            member: user(2),
            role: mods,
        },
    );
    let (mut b, mut c) = (a.clone(), a.clone());
    // A: the owner demotes 2. B: 2 bans 3. C: 3 moves home. All concurrent.
    let cutoff = a.cutoff(&key(2));
    let revoke = a.ok(
        &key(1),
        Body::MemberRoleRevoke {
            member: user(2),
            role: mods,
            cutoff,
        },
    );
    let cutoff = b.cutoff(&key(3));
    let ban = b.ok(&key(2), removal(true, user(3), cutoff));
    let (moved, _) = c.act(&key(3), home(&[3]));

    // B and C meet first: the ban is honored and cuts the Home.
    b.sync_from(&c);
    c.sync_from(&b);
    for r in [&b, &c] {
        assert_eq!(r.verdict(&ban), Verdict::Valid);
        assert_eq!(r.verdict(&moved), Verdict::Invalid(AuthError::Banned));
        assert!(!r.guild.entitled(&node(3)));
        assert_matches_reference(r);
    }
    // Then A's demotion arrives: the ban is void, and the Home stands.
    for r in [&mut b, &mut c] {
        r.sync_from(&a);
    }
    a.sync_from(&b);
    for r in [&a, &b, &c] {
        assert_eq!(r.verdict(&revoke), Verdict::Valid);
        assert_eq!(
            r.verdict(&ban),
            Verdict::Invalid(AuthError::MissingPermission(P::BAN_MEMBERS))
        );
        assert_eq!(r.verdict(&moved), Verdict::Valid);
        assert_eq!(entitled(r), sorted(&[3]));
        assert_matches_reference(r);
    }
    assert_eq!(a.guild.state_hash(), b.guild.state_hash());
    assert_eq!(a.guild.state_hash(), c.guild.state_hash());
}

#[test]
fn homes_count_toward_the_guild_state_rate() {
    let (mut r, _, _) = guild_with_members();
    r.now += 60_000;
    for n in 0..limits::MAX_GUILD_STATE_OPS_PER_MINUTE {
        r.ok(&key(2), home(&[(n % 200) as u8]));
    }
    let (precheck, refused) = r.refused(&key(2), home(&[1]));
    assert!(matches!(precheck, AuthError::GuildStateRate(_)));
    assert_eq!(refused, InsertError::GuildStateRate);
}

/// A fetch proof opens its invite for its own node, guild and invite only.
#[test]
fn fetch_proofs_are_bound_to_node_guild_and_invite() {
    let mut r = Replica::new(&key(1));
    // Two invites with one secret, so one key: only the invite id tells their proofs apart.
    let invite = r.ok(&key(1), Body::invite_create(SECRET, 0, 0));
    let twin = r.ok(&key(1), Body::invite_create(SECRET, 0, 0));
    let gid = r.guild.id();
    let other = Guild::new(genesis(&key(1), "another guild")).unwrap().id();
    let invite_key = InviteKey::from_secret(SECRET);

    let proof = InviteKey::prove_fetch(SECRET, &gid, &invite, &node(1));
    assert!(invite_key.opens_fetch(&gid, &invite, &node(1), &proof));
    assert!(!invite_key.opens_fetch(&gid, &invite, &node(2), &proof));
    assert!(!invite_key.opens_fetch(&gid, &twin, &node(1), &proof));
    assert!(!invite_key.opens_fetch(&other, &invite, &node(1), &proof));
    assert!(!InviteKey::from_secret(b"guess").opens_fetch(&gid, &invite, &node(1), &proof));
    // A join proof over the same 96 bytes is no fetch proof, nor the other way round.
    let as_user = UserId(node(1).0);
    let join = InviteKey::prove_join(SECRET, &gid, &invite, &as_user);
    assert!(!invite_key.opens_fetch(&gid, &invite, &node(1), &join));
    assert!(!invite_key.opens_join(&gid, &invite, &as_user, &proof));
    let mut flipped = proof;
    flipped[10] ^= 1;
    assert!(!invite_key.opens_fetch(&gid, &invite, &node(1), &flipped));
}

#[test]
fn check_fetch_proof_gives_the_invite_codes() {
    let mut r = Replica::new(&key(1));
    let gid = r.guild.id();
    let once = r.ok(&key(1), Body::invite_create(SECRET, 1, 0));
    let timed = r.ok(&key(1), Body::invite_create(SECRET, 0, 5_000));
    let code = |r: &Replica, invite: &OpId, requester: u8, proof: &[u8; 64], ms: u64| {
        r.guild
            .state()
            .check_fetch_proof(invite, &node(requester), proof, Hlc::from_parts(ms, 0))
            .map_err(|e| e.code())
    };
    let proof = |invite: &OpId| InviteKey::prove_fetch(SECRET, &gid, invite, &node(2));
    let now = r.now;
    assert_eq!(code(&r, &once, 2, &proof(&once), now), Ok(()));
    assert_eq!(
        code(&r, &once, 3, &proof(&once), now),
        Err("invite_secret_mismatch"),
        "made for another node"
    );
    let guessed = InviteKey::prove_fetch(b"guess", &gid, &once, &node(2));
    assert_eq!(
        code(&r, &once, 2, &guessed, now),
        Err("invite_secret_mismatch")
    );
    assert_eq!(code(&r, &gid, 2, &proof(&gid), now), Err("unknown_invite"));
    assert_eq!(code(&r, &timed, 2, &proof(&timed), 4_999), Ok(()));
    assert_eq!(
        code(&r, &timed, 2, &proof(&timed), 5_000),
        Err("invite_expired")
    );
    r.join(&key(2), once);
    assert_eq!(
        code(&r, &once, 2, &proof(&once), now),
        Err("invite_exhausted")
    );
    r.ok(&key(1), Body::InviteRevoke { invite: timed });
    assert_eq!(
        code(&r, &timed, 2, &proof(&timed), now),
        Err("unknown_invite")
    );
    r.ok(&key(1), Body::GuildDelete);
    assert_eq!(code(&r, &once, 2, &proof(&once), now), Err("guild_deleted"));
}
