//! The deps a node picks for its own ops (`ops.md` §4.4): only valid heads, always covering the
//! author's previous op, so that neither concurrency nor ops nobody may make fork an honest
//! author; and a node never signs a seq it has signed before.

use super::*;
use crate::meta::MetaValue;

/// Owner 1 with #general and an invite, seen by every side of a partition.
fn base() -> (Replica, ChannelId, OpId) {
    let mut r = Replica::new(&key(1));
    let general = r.text_channel(&key(1), "general");
    let invite = r.invite(&key(1));
    (r, general, invite)
}

fn message(channel: ChannelId, content: &str) -> Body {
    Body::MessageCreate {
        channel,
        content: content.into(),
        reply_to: None,
    }
}

fn held_in(order: impl IntoIterator<Item = VerifiedOp>) -> Guild {
    let mut ops = order.into_iter();
    let mut guild = Guild::new(ops.next().expect("genesis first")).unwrap();
    for op in ops {
        guild.insert(op).unwrap();
    }
    guild
}

#[test]
fn a_hundred_concurrent_guild_state_heads_fork_nobody() {
    let (base, general, invite) = base();
    let joiners: Vec<Keypair> = (0..100).map(|i| key(10 + i)).collect();
    // Each joins on a side of its own: a hundred guild-state heads, none citing another.
    let joins: Vec<VerifiedOp> = joiners
        .iter()
        .map(|who| {
            let mut side = base.clone();
            let id = side.join(who, invite);
            side.guild.op(&id).unwrap().clone()
        })
        .collect();
    let mut healed = base.clone();
    for join in &joins {
        healed.guild.insert(join.clone()).unwrap();
    }
    let first = healed.make(&joiners[0], message(general, "probe"));
    assert_eq!(
        first.envelope().deps.len(),
        crate::limits::MAX_DEPS,
        "more heads than one op may cite"
    );

    // Everyone speaks twice, and changes the guild state once, on the healed replica.
    let mut written = Vec::new();
    for (i, who) in joiners.iter().enumerate() {
        written.push(healed.ok(who, message(general, &format!("{i} one"))));
        written.push(healed.ok(who, message(general, &format!("{i} two"))));
        let nick = healed
            .guild
            .meta()
            .make_change(
                &who.user_id(),
                &[(
                    &format!("member.{}.nick", who.user_id()),
                    Some(MetaValue::Str(format!("nick {i}"))),
                )],
            )
            .unwrap();
        written.push(healed.ok(who, Body::MetaChange { change: nick }));
    }
    written.push(healed.ok(&key(1), message(general, "owner after the heal")));

    // Any delivery order ends in the same state, with every op valid.
    let mut ops: Vec<VerifiedOp> = healed.guild.ops().cloned().collect();
    ops.sort_by_key(|op| std::cmp::Reverse((op.envelope().hlc, op.id())));
    let genesis = ops.pop().unwrap();
    let reversed = held_in(std::iter::once(genesis).chain(ops));
    for replica in [&healed.guild, &reversed] {
        for id in written.iter().copied().chain(joins.iter().map(|j| j.id())) {
            assert_eq!(replica.verdict(&id), Some(&Verdict::Valid), "{id:?}");
        }
    }
    assert_eq!(reversed.state_hash(), healed.guild.state_hash());
    assert_eq!(healed.guild.messages(&general, None, None, 500).len(), 201);
}

#[test]
fn ops_nobody_may_make_are_never_cited() {
    let (mut r, general, invite) = base();
    let members: Vec<Keypair> = (0..17).map(|i| key(10 + i)).collect();
    let joins: Vec<OpId> = members.iter().map(|who| r.join(who, invite)).collect();
    let topic = r.ok(
        &key(1),
        Body::ChannelCreate {
            kind: ChannelKind::Text,
            name: "later".into(),
            parent: None,
            position: 1,
        },
    );
    // Each member signs a guild-state op they may not make, citing only their own join and
    // stamped after everything: seventeen heads newer than the owner's last op.
    for (who, join) in members.iter().zip(&joins) {
        let env = Envelope {
            guild: r.guild.id(),
            author: who.user_id(),
            seq: 2,
            prev: Some(*join),
            hlc: Hlc::from_parts(r.now + 1_000, 0),
            deps: vec![*join],
            body: Body::RoleCreate {
                name: "junk".into(),
                permissions: 0,
                color: 0,
                position: 1,
            },
        };
        let junk = env.sign_verified(who).unwrap();
        let id = junk.id();
        r.guild.insert(junk).unwrap();
        assert!(matches!(r.verdict(&id), Verdict::Invalid(_)));
    }
    let next = r.make(&key(1), message(general, "still here"));
    assert_eq!(next.envelope().deps, vec![topic], "only the valid head");
    let id = next.id();
    r.guild.insert(next).unwrap();
    assert_eq!(r.verdict(&id), Verdict::Valid);
    // A member whose latest op was refused still writes: their op cites it, to extend it.
    r.ok(&key(10), message(general, "me too"));
}

#[test]
fn a_node_never_signs_a_seq_twice() {
    let (mut r, general, invite) = base();
    let bea = key(2);
    let join = r.join(&bea, invite);
    // Bea's key, elsewhere, signs an op that does not extend her join (its prev is not hers).
    let stray = Envelope {
        guild: r.guild.id(),
        author: bea.user_id(),
        seq: 2,
        prev: Some(r.guild.id()),
        hlc: Hlc::from_parts(r.now + 10, 0),
        deps: vec![join],
        body: message(general, "stray"),
    }
    .sign_verified(&bea)
    .unwrap();
    let stray_id = stray.id();
    r.guild.insert(stray).unwrap();
    assert_eq!(r.verdict(&stray_id), Verdict::Forked);

    let next = r
        .guild
        .next_envelope(bea.user_id(), r.now + 20, message(general, "hi"));
    assert_eq!(
        (next.seq, next.prev),
        (3, Some(stray_id)),
        "above the stray op"
    );
    assert_eq!(r.guild.precheck(&next), Err(AuthError::ForkedChain));
    assert!(r.guild.equivocations().is_empty());
}

#[test]
fn two_carriers_of_one_metadata_change_are_judged_alike_in_either_order() {
    let (mut r, _, _) = base();
    let change = r
        .guild
        .meta()
        .make_change(
            &user(1),
            &[("guild.description", Some(MetaValue::Str("once".into())))],
        )
        .unwrap();
    let body = Body::MetaChange { change };
    let first = r.make(&key(1), body.clone());
    r.guild.insert(first.clone()).unwrap();
    let again = r.make(&key(1), body);
    let mut base: Vec<VerifiedOp> = r
        .guild
        .ops()
        .filter(|op| op.id() != first.id())
        .cloned()
        .collect();
    base.sort_by_key(|op| (op.envelope().hlc, op.id()));
    let in_order = held_in(base.iter().cloned().chain([first.clone(), again.clone()]));
    let reversed = held_in(base.iter().cloned().chain([again.clone(), first.clone()]));
    for guild in [&in_order, &reversed] {
        assert_eq!(guild.verdict(&first.id()), Some(&Verdict::Valid));
        assert!(matches!(
            guild.verdict(&again.id()),
            Some(Verdict::Invalid(AuthError::BadMetaChange(_)))
        ));
    }
    assert_eq!(in_order.state_hash(), reversed.state_hash());
}

#[test]
fn ops_extending_nothing_are_judged_alike_in_any_order() {
    let (mut r, general, invite) = base();
    let bea = key(2);
    let join = r.join(&bea, invite);
    // Bea's key signs a run of ops above her join that name the genesis op as prev: each
    // extends nothing, and the first ends her log.
    let mut forked = Vec::new();
    for seq in 2..30 {
        let op = Envelope {
            guild: r.guild.id(),
            author: bea.user_id(),
            seq,
            prev: Some(r.guild.id()),
            hlc: Hlc::from_parts(r.now + seq, 0),
            deps: vec![join],
            body: if seq % 3 == 0 {
                Body::Leave
            } else {
                message(general, "stray")
            },
        }
        .sign_verified(&bea)
        .unwrap();
        forked.push(op.id());
        r.guild.insert(op).unwrap();
    }
    r.ok(&key(1), message(general, "owner after"));
    let mut ops: Vec<VerifiedOp> = r.guild.ops().cloned().collect();
    ops.sort_by_key(|op| std::cmp::Reverse((op.envelope().hlc, op.id())));
    let genesis = ops.pop().unwrap();
    let reversed = held_in(std::iter::once(genesis).chain(ops));
    for id in &forked {
        assert_eq!(r.verdict(id), Verdict::Forked);
        assert_eq!(reversed.verdict(id), Some(&Verdict::Forked));
    }
    assert_eq!(reversed.state_hash(), r.guild.state_hash());
}
