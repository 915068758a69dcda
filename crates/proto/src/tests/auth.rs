//! One test per authorization rule of `spec/auth.md`.

use super::*;
use crate::body::OverwriteTarget;
use crate::error::AuthError;
use crate::id::{InviteKey, NodeId};
use crate::meta::MetaValue;
use crate::perm::Permissions as P;

fn invalid(e: AuthError) -> Verdict {
    Verdict::Invalid(e)
}

#[test]
fn members_send_and_strangers_cannot() {
    let (mut r, general, _) = guild_with_members();
    assert_eq!(r.say(&key(2), general, "hi").1, Verdict::Valid);
    let stranger = Body::MessageCreate {
        channel: general,
        content: "hi".into(),
        reply_to: None,
    };
    assert_eq!(
        r.refused(&key(9), stranger),
        (AuthError::NotMember, InsertError::AuthorNotMember)
    );
    let msgs = r.guild.messages(&general, None, None, 50);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].content, "hi");
}

#[test]
fn invites_check_secret_expiry_uses_and_revocation() {
    let mut r = Replica::new(&key(1));
    let bad = r.join_body(&key(2), r.guild.id());
    let bad = r.refused(&key(2), bad);
    assert_eq!(bad, (AuthError::UnknownInvite, InsertError::InviteUnusable));

    let invite = r.ok(&key(1), Body::invite_create(SECRET, 1, 5_000));
    let wrong = Body::join(&r.guild.id(), invite, &user(2), b"guess");
    assert_eq!(
        r.refused(&key(2), wrong),
        (AuthError::InviteSecretMismatch, InsertError::InviteUnusable)
    );
    // The holder's check of a joining node's fetch proof (federation.md §5): only the secret
    // makes one that opens the invite.
    let now = Hlc::from_parts(r.now, 0);
    let node = NodeId([9; 32]);
    let fetch = |secret: &[u8]| InviteKey::prove_fetch(secret, &r.guild.id(), &invite, &node);
    let (good, guess) = (fetch(SECRET), fetch(b"guess"));
    let check = |r: &Replica, proof| {
        r.guild
            .state()
            .check_fetch_proof(&invite, &node, proof, now)
    };
    assert_eq!(check(&r, &good), Ok(()));
    assert_eq!(check(&r, &guess), Err(AuthError::InviteSecretMismatch));
    r.join(&key(2), invite);
    assert_eq!(check(&r, &good), Err(AuthError::InviteExhausted));
    let join3 = r.join_body(&key(3), invite);
    assert_eq!(r.act(&key(3), join3).1, invalid(AuthError::InviteExhausted));
    let join2 = r.join_body(&key(2), invite);
    assert_eq!(r.act(&key(2), join2).1, invalid(AuthError::AlreadyMember));

    let timed = r.ok(&key(1), Body::invite_create(SECRET, 0, 5_000));
    r.now = 6_000;
    let late = r.join_body(&key(3), timed);
    assert_eq!(
        r.refused(&key(3), late),
        (AuthError::InviteExpired, InsertError::InviteUnusable)
    );

    let open = r.invite(&key(1));
    assert_eq!(
        r.act(&key(2), Body::InviteRevoke { invite: open }).1,
        invalid(AuthError::MissingPermission(P::MANAGE_GUILD))
    );
    r.ok(&key(1), Body::InviteRevoke { invite: open });
    let revoked = r.join_body(&key(4), open);
    assert_eq!(r.act(&key(4), revoked).1, invalid(AuthError::UnknownInvite));
}

/// A join proof opens its invite for its own author, guild and invite only: one seen in
/// another join, or made for another guild or invite, is refused at insertion.
#[test]
fn join_proofs_are_bound_to_author_guild_and_invite() {
    let mut r = Replica::new(&key(1));
    // Two invites with one secret, so one key: only the invite id tells their proofs apart.
    let invite = r.ok(&key(1), Body::invite_create(SECRET, 0, 0));
    let twin = r.ok(&key(1), Body::invite_create(SECRET, 0, 0));
    let gid = r.guild.id();
    let refused = (AuthError::InviteSecretMismatch, InsertError::InviteUnusable);

    // Bea's valid join, replayed by Cat: the proof is Bea's.
    let bea = r.ok(&key(2), Body::join(&gid, invite, &user(2), SECRET));
    let Body::Join { proof, .. } = r.guild.op(&bea).unwrap().envelope().body.clone() else {
        panic!("a join")
    };
    assert_eq!(r.refused(&key(3), Body::Join { invite, proof }), refused);
    // Made for Cat, but in another guild (the proof names the guild, whatever its invite id).
    let other = Replica {
        guild: Guild::new(genesis(&key(1), "another guild")).unwrap(),
        now: 2_000,
    };
    assert_ne!(other.guild.id(), gid);
    let elsewhere = Body::join(&other.guild.id(), invite, &user(3), SECRET);
    assert_eq!(r.refused(&key(3), elsewhere), refused);
    // Made for Cat in this guild, but for the twin invite.
    let Body::Join { proof, .. } = Body::join(&gid, twin, &user(3), SECRET) else {
        unreachable!()
    };
    assert_eq!(r.refused(&key(3), Body::Join { invite, proof }), refused);
    // A proof signed by another key (another secret) over the right bytes.
    let forged = Body::join(&gid, invite, &user(3), b"another secret");
    assert_eq!(r.refused(&key(3), forged), refused);
    // Cat's own proof opens either invite.
    r.ok(&key(3), Body::join(&gid, twin, &user(3), SECRET));
}

/// No op carries the invite secret, nor its hash or the key seed it derives: a replica holds
/// the invite's public key and signatures by it, from which the secret does not follow.
#[test]
fn no_op_reveals_the_invite_secret() {
    // 16 bytes as a node draws them (rest.md §4.8), fixed so the test replays.
    let secret: [u8; 16] = sha256(&[b"some random bytes"])[..16].try_into().unwrap();
    let mut r = Replica::new(&key(1));
    let invite = r.ok(&key(1), Body::invite_create(&secret, 0, 0));
    let join = Body::join(&r.guild.id(), invite, &user(2), &secret);
    r.ok(&key(2), join);
    let seed = crate::id::InviteKey::keypair(&secret).secret();
    let derived: [&[u8]; 4] = [&secret, &seed, &sha256(&[&secret]), &seed[..16]];
    for op in r.guild.ops() {
        let wire = op.encode();
        for needle in derived {
            assert!(
                !wire.windows(needle.len()).any(|w| w == needle),
                "{:?} reveals the secret",
                op.envelope().body.kind()
            );
        }
        match &op.envelope().body {
            Body::InviteCreate { key, .. } => {
                assert_eq!(*key, crate::id::InviteKey::from_secret(&secret));
                let mut body = crate::wire::Writer::new();
                op.envelope().body.encode(&mut body);
                // kind, length, key (32), max_uses 0, expires_at_ms 0.
                assert_eq!(body.into_bytes().len(), 2 + 32 + 1 + 1);
            }
            Body::Join { invite: i, .. } => {
                assert_eq!(*i, invite);
                let mut body = crate::wire::Writer::new();
                op.envelope().body.encode(&mut body);
                // kind, length, invite (32), proof (64).
                assert_eq!(body.into_bytes().len(), 2 + 32 + 64);
            }
            _ => {}
        }
    }
}

#[test]
fn channel_management_needs_manage_channels() {
    let (mut r, general, _) = guild_with_members();
    let create = Body::ChannelCreate {
        kind: ChannelKind::Voice,
        name: "voice".into(),
        parent: None,
        position: 1,
    };
    assert_eq!(
        r.act(&key(2), create.clone()).1,
        invalid(AuthError::MissingPermission(P::MANAGE_CHANNELS))
    );
    let mods = role(&mut r, 1, "mods", P::MANAGE_CHANNELS, 1);
    grant(&mut r, 1, 2, mods);
    let voice = r.ok(&key(2), create);
    assert_eq!(
        r.say(&key(2), voice, "hello?").1,
        invalid(AuthError::WrongChannelKind)
    );
    r.ok(&key(2), Body::ChannelDelete { channel: general });
    assert_eq!(
        r.say(&key(3), general, "gone").1,
        invalid(AuthError::UnknownChannel)
    );
    let nested = Body::ChannelCreate {
        kind: ChannelKind::Text,
        name: "child".into(),
        parent: Some(voice),
        position: 0,
    };
    assert_eq!(
        r.act(&key(1), nested).1,
        invalid(AuthError::WrongChannelKind)
    );
}

#[test]
fn role_hierarchy_and_grantable_bits() {
    let (mut r, _, _) = guild_with_members();
    let admin_bits = P::MANAGE_ROLES | P::KICK_MEMBERS;
    let mods = role(&mut r, 1, "mods", admin_bits, 5);
    let low = role(&mut r, 1, "low", P::empty(), 2);
    grant(&mut r, 1, 2, mods);

    let at_own_level = Body::RoleCreate {
        name: "peer".into(),
        permissions: 0,
        color: 0,
        position: 5,
    };
    assert_eq!(
        r.act(&key(2), at_own_level).1,
        invalid(AuthError::Hierarchy)
    );
    let too_strong = Body::RoleCreate {
        name: "bans".into(),
        permissions: P::BAN_MEMBERS.bits(),
        color: 0,
        position: 3,
    };
    assert_eq!(
        r.act(&key(2), too_strong).1,
        invalid(AuthError::CannotGrant(P::BAN_MEMBERS))
    );
    let edit_own = Body::RoleUpdate {
        role: mods,
        permissions: admin_bits.bits(),
        position: 4,
    };
    assert_eq!(r.act(&key(2), edit_own).1, invalid(AuthError::Hierarchy));

    assert_eq!(grant(&mut r, 2, 3, low).1, Verdict::Valid);
    assert_eq!(grant(&mut r, 2, 3, mods).1, invalid(AuthError::Hierarchy));
    assert_eq!(
        grant(&mut r, 3, 3, low).1,
        invalid(AuthError::MissingPermission(P::MANAGE_ROLES))
    );
    let everyone = r.guild.id();
    assert_eq!(
        grant(&mut r, 1, 3, everyone).1,
        invalid(AuthError::EveryoneRole)
    );
    assert_eq!(
        r.act(&key(1), Body::RoleDelete { role: everyone }).1,
        invalid(AuthError::EveryoneRole)
    );
    let revoke_unheld = Body::MemberRoleRevoke {
        member: user(3),
        role: mods,
        cutoff: 0,
    };
    assert_eq!(
        r.act(&key(1), revoke_unheld).1,
        invalid(AuthError::RoleNotHeld)
    );

    // Removing bits you lack is allowed; adding them is not.
    let everyone_update = |perms: P| Body::RoleUpdate {
        role: everyone,
        permissions: perms.bits(),
        position: 0,
    };
    let fewer = P::DEFAULT_EVERYONE - P::ADD_REACTIONS;
    assert_eq!(r.act(&key(2), everyone_update(fewer)).1, Verdict::Valid);
    assert_eq!(
        r.act(&key(2), everyone_update(fewer | P::MANAGE_GUILD)).1,
        invalid(AuthError::CannotGrant(P::MANAGE_GUILD))
    );
}

#[test]
fn administrator_has_every_bit_but_not_rank() {
    let (mut r, general, _) = guild_with_members();
    let admins = role(&mut r, 1, "admins", P::ADMINISTRATOR, 3);
    let senior = role(&mut r, 1, "senior", P::empty(), 4);
    grant(&mut r, 1, 2, admins);
    grant(&mut r, 1, 3, senior);
    assert_eq!(r.guild.state().permissions(&user(2)), P::all());
    let deny_all = Body::OverwriteSet {
        channel: general,
        target: OverwriteTarget::Member(user(2)),
        allow: 0,
        deny: P::all().bits(),
    };
    r.ok(&key(1), deny_all);
    // An overwrite keeps someone out of #general now, so its text is sealed.
    let channel_key = crate::sealed::ChannelKey {
        guild: r.guild.id(),
        channel: general,
        key: [7; 32],
    };
    let sealed = Body::MessageCreate {
        channel: general,
        content: crate::sealed::Text::Sealed(channel_key.seal(
            &user(2),
            "admins see through overwrites",
            [1; 24],
        )),
        reply_to: None,
    };
    assert_eq!(r.act(&key(2), sealed).1, Verdict::Valid);
    let kick = Body::Kick {
        member: user(3),
        cutoff: r.cutoff(&key(3)),
        reason: String::new(),
    };
    assert_eq!(r.act(&key(2), kick).1, invalid(AuthError::Hierarchy));
    let kick_owner = Body::Kick {
        member: user(1),
        cutoff: 0,
        reason: String::new(),
    };
    assert_eq!(
        r.act(&key(2), kick_owner).1,
        invalid(AuthError::OwnerImmune)
    );
}

#[test]
fn overwrites_resolve_everyone_then_roles_then_member() {
    let (mut r, general, _) = guild_with_members();
    let speakers = role(&mut r, 1, "speakers", P::empty(), 1);
    grant(&mut r, 1, 3, speakers);
    let set = |target, allow: P, deny: P| Body::OverwriteSet {
        channel: general,
        target,
        allow: allow.bits(),
        deny: deny.bits(),
    };
    let everyone = OverwriteTarget::Role(r.guild.id());
    r.ok(&key(1), set(everyone, P::empty(), P::SEND_MESSAGES));
    assert_eq!(
        r.say(&key(2), general, "muted").1,
        invalid(AuthError::MissingPermission(P::SEND_MESSAGES))
    );
    r.ok(
        &key(1),
        set(
            OverwriteTarget::Role(speakers),
            P::SEND_MESSAGES,
            P::empty(),
        ),
    );
    assert_eq!(
        r.say(&key(3), general, "role allow beats everyone deny").1,
        Verdict::Valid
    );
    r.ok(
        &key(1),
        set(
            OverwriteTarget::Member(user(3)),
            P::empty(),
            P::SEND_MESSAGES,
        ),
    );
    assert_eq!(
        r.say(&key(3), general, "member deny beats role allow").1,
        invalid(AuthError::MissingPermission(P::SEND_MESSAGES))
    );
    r.ok(
        &key(1),
        set(
            OverwriteTarget::Member(user(2)),
            P::SEND_MESSAGES,
            P::empty(),
        ),
    );
    assert_eq!(r.say(&key(2), general, "member allow").1, Verdict::Valid);

    r.ok(&key(1), set(everyone, P::empty(), P::VIEW_CHANNEL));
    assert_eq!(
        r.guild.state().channel_permissions(&user(2), &general),
        P::empty(),
        "without VIEW_CHANNEL nothing is allowed in the channel"
    );
    assert_eq!(
        r.act(
            &key(2),
            Body::OverwriteClear {
                channel: general,
                target: everyone
            }
        )
        .1,
        invalid(AuthError::MissingPermission(P::MANAGE_ROLES))
    );
    let both = set(everyone, P::SEND_MESSAGES, P::SEND_MESSAGES);
    assert!(matches!(
        r.act(&key(1), both).1,
        Verdict::Invalid(AuthError::BadRequest(_))
    ));
}

#[test]
fn messages_edit_delete_react_pin_and_reply() {
    let (mut r, general, _) = guild_with_members();
    let (m, _) = r.say(&key(2), general, "first");
    let edit = |content: &str| Body::MessageEdit {
        message: m,
        content: content.into(),
    };
    assert_eq!(
        r.act(&key(3), edit("hijack")).1,
        invalid(AuthError::NotAuthor)
    );
    r.ok(&key(2), edit("first, edited"));
    r.ok(&key(2), edit("first, edited twice"));
    let react = |emoji: &str, add: bool| match add {
        true => Body::ReactionAdd {
            message: m,
            emoji: emoji.into(),
        },
        false => Body::ReactionRemove {
            message: m,
            emoji: emoji.into(),
        },
    };
    r.ok(&key(3), react("👍", true));
    r.ok(&key(2), react("👍", true));
    r.ok(&key(2), react("👍", false));
    r.ok(&key(1), react("🎉", true));
    assert_eq!(
        r.act(&key(3), Body::Pin { message: m }).1,
        invalid(AuthError::MissingPermission(P::MANAGE_MESSAGES))
    );
    r.ok(&key(1), Body::Pin { message: m });
    let reply = r.ok(
        &key(3),
        Body::MessageCreate {
            channel: general,
            content: "a reply".into(),
            reply_to: Some(m),
        },
    );

    let view = r.guild.message(&m).unwrap();
    assert_eq!(view.content, "first, edited twice");
    assert!(view.edited_at.is_some());
    assert_eq!(
        view.reactions["👍"].iter().collect::<Vec<_>>(),
        vec![&user(3)]
    );
    assert_eq!(view.reactions["🎉"].len(), 1);
    assert!(view.pinned);
    assert_eq!(r.guild.message(&reply).unwrap().reply_to, Some(m));

    assert_eq!(
        r.act(&key(3), Body::MessageDelete { message: m }).1,
        invalid(AuthError::MissingPermission(P::MANAGE_MESSAGES))
    );
    r.ok(&key(1), Body::MessageDelete { message: m });
    assert!(
        r.guild.message(&m).is_none(),
        "a delete wins over everything"
    );
    assert_eq!(
        r.act(&key(2), edit("too late")).1,
        Verdict::Valid,
        "edits after a delete are kept but hidden"
    );
    assert!(r.guild.message(&m).is_none());
    assert_eq!(r.guild.messages(&general, None, None, 50).len(), 1);
}

#[test]
fn threads_inherit_parent_permissions() {
    let (mut r, general, _) = guild_with_members();
    let (m, _) = r.say(&key(2), general, "let's discuss");
    let thread = r.thread_on(&key(3), general, m, "discussion");
    assert_eq!(r.say(&key(2), thread, "in thread").1, Verdict::Valid);
    assert_eq!(r.guild.message(&m).unwrap().thread, Some(thread));
    assert_eq!(
        r.guild.threads(&general),
        vec![(thread, "discussion".into())]
    );
    r.ok(
        &key(1),
        Body::OverwriteSet {
            channel: general,
            target: OverwriteTarget::Member(user(2)),
            allow: 0,
            deny: P::SEND_MESSAGES_IN_THREADS.bits(),
        },
    );
    assert_eq!(
        r.say(&key(2), thread, "no longer").1,
        invalid(AuthError::MissingPermission(P::SEND_MESSAGES_IN_THREADS))
    );
    assert_eq!(
        r.say(&key(2), general, "still in the channel").1,
        Verdict::Valid
    );
    assert_eq!(r.guild.messages(&thread, None, None, 10).len(), 1);
}

#[test]
fn kick_ban_unban_and_rejoin() {
    let (mut r, general, invite) = guild_with_members();
    let ban = Body::Ban {
        member: user(2),
        cutoff: r.cutoff(&key(2)),
        reason: "spam".into(),
    };
    assert_eq!(
        r.act(&key(3), ban.clone()).1,
        invalid(AuthError::MissingPermission(P::BAN_MEMBERS))
    );
    r.ok(&key(1), ban);
    assert_eq!(
        r.say(&key(2), general, "still here?").1,
        invalid(AuthError::Banned)
    );
    let rejoin = r.join_body(&key(2), invite);
    assert_eq!(r.act(&key(2), rejoin.clone()).1, invalid(AuthError::Banned));
    r.ok(&key(1), Body::Unban { member: user(2) });
    r.ok(&key(2), rejoin);
    assert_eq!(r.say(&key(2), general, "back").1, Verdict::Valid);

    let kick = Body::Kick {
        member: user(3),
        cutoff: r.cutoff(&key(3)),
        reason: String::new(),
    };
    r.ok(&key(1), kick);
    assert_eq!(
        r.say(&key(3), general, "kicked").1,
        invalid(AuthError::NotMember)
    );
    r.join(&key(3), invite);
    assert_eq!(r.say(&key(3), general, "rejoined").1, Verdict::Valid);
    assert_eq!(
        r.act(&key(1), Body::Leave).1,
        invalid(AuthError::OwnerImmune)
    );
    r.ok(&key(3), Body::Leave);
    assert_eq!(
        r.say(&key(3), general, "left").1,
        invalid(AuthError::NotMember)
    );
}

#[test]
fn ban_beats_concurrent_messages_beyond_the_cut() {
    let (mut a, general, _) = guild_with_members();
    let (before, _) = a.say(&key(2), general, "seen by the moderator");
    let mut b = a.clone();
    // On node B, user 2 keeps talking; on node A, the owner bans user 2 concurrently.
    let (during, v) = b.say(&key(2), general, "spam 1");
    assert_eq!(v, Verdict::Valid, "valid where the ban is not yet known");
    let (during2, _) = b.say(&key(2), general, "spam 2");
    a.ok(
        &key(1),
        Body::Ban {
            member: user(2),
            cutoff: a.cutoff(&key(2)),
            reason: "spam".into(),
        },
    );
    a.sync_from(&b);
    b.sync_from(&a);
    for r in [&a, &b] {
        assert_eq!(r.verdict(&before), Verdict::Valid);
        assert_eq!(r.verdict(&during), invalid(AuthError::Banned));
        assert_eq!(r.verdict(&during2), invalid(AuthError::Banned));
        assert_eq!(r.guild.messages(&general, None, None, 50).len(), 1);
    }
    assert_eq!(a.guild.state_hash(), b.guild.state_hash());
}

#[test]
fn mutual_concurrent_bans_both_apply() {
    let (mut a, general, _) = guild_with_members();
    let x = role(&mut a, 1, "x", P::BAN_MEMBERS, 3);
    let y = role(&mut a, 1, "y", P::BAN_MEMBERS, 2);
    grant(&mut a, 1, 2, x);
    grant(&mut a, 1, 3, y);
    let mut b = a.clone();
    // Node B: the owner raises role y above x, and 3 (now senior) bans 2.
    b.ok(
        &key(1),
        Body::RoleUpdate {
            role: y,
            permissions: P::BAN_MEMBERS.bits(),
            position: 4,
        },
    );
    let ban_2 = ban(&mut b, 3, 2);
    let (msg_3, _) = b.say(&key(3), general, "3 after banning 2");
    // Node A, concurrently: 2 (senior in A's view) bans 3, then talks.
    let ban_3 = ban(&mut a, 2, 3);
    let (msg_2, _) = a.say(&key(2), general, "2 after banning 3");
    a.sync_from(&b);
    b.sync_from(&a);
    for r in [&a, &b] {
        assert_eq!(r.verdict(&ban_2), Verdict::Valid);
        assert_eq!(r.verdict(&ban_3), Verdict::Valid);
        assert!(!r.verdict(&msg_2).is_valid());
        assert!(!r.verdict(&msg_3).is_valid());
        assert!(r.guild.state().bans.contains_key(&user(2)));
        assert!(r.guild.state().bans.contains_key(&user(3)));
    }
    assert_eq!(a.guild.state_hash(), b.guild.state_hash());
}

fn ban(r: &mut Replica, who: u8, member: u8) -> OpId {
    let cutoff = r.cutoff(&key(member));
    r.ok(
        &key(who),
        Body::Ban {
            member: user(member),
            cutoff,
            reason: String::new(),
        },
    )
}

#[test]
fn a_removal_cut_by_a_concurrent_removal_does_not_cut_others() {
    let (mut a, general, invite) = guild_with_members();
    a.join(&key(4), invite);
    let senior = role(&mut a, 1, "senior", P::BAN_MEMBERS, 3);
    let junior = role(&mut a, 1, "junior", P::BAN_MEMBERS, 2);
    grant(&mut a, 1, 2, senior);
    grant(&mut a, 1, 3, junior);
    let (mut b, mut c) = (a.clone(), a.clone());
    // Concurrently: 2 bans 3; 3 bans 4; 4 talks.
    let ban_3 = ban(&mut a, 2, 3);
    let ban_4 = ban(&mut b, 3, 4);
    let (msg_4, _) = c.say(&key(4), general, "still here");
    for r in [&mut a, &mut b, &mut c] {
        let (x, y) = (r.clone(), r.clone());
        r.sync_from(&x);
        r.sync_from(&y);
    }
    let (a0, b0, c0) = (a.clone(), b.clone(), c.clone());
    for r in [&mut a, &mut b, &mut c] {
        r.sync_from(&a0);
        r.sync_from(&b0);
        r.sync_from(&c0);
    }
    for r in [&a, &b, &c] {
        assert_eq!(r.verdict(&ban_3), Verdict::Valid);
        assert_eq!(r.verdict(&ban_4), invalid(AuthError::Banned));
        assert_eq!(r.verdict(&msg_4), Verdict::Valid);
        assert!(r.guild.state().is_member(&user(4)));
    }
    assert_eq!(a.guild.state_hash(), b.guild.state_hash());
    assert_eq!(a.guild.state_hash(), c.guild.state_hash());
}

#[test]
fn a_cycle_of_concurrent_bans_resolves_the_same_everywhere() {
    let (mut a, _, invite) = guild_with_members();
    for m in 4..=7 {
        a.join(&key(m), invite);
    }
    // Banners 2, 3, 4 share one rank; promoters 5, 6, 7 each raise one of them, concurrently,
    // so each ban is valid where it was made: 2 bans 3, 3 bans 4, 4 bans 2.
    let mods = role(&mut a, 1, "mods", P::BAN_MEMBERS, 3);
    let top = role(&mut a, 1, "top", P::BAN_MEMBERS, 4);
    let promoters = role(&mut a, 1, "promoters", P::BAN_MEMBERS | P::MANAGE_ROLES, 10);
    for m in 2..=4 {
        grant(&mut a, 1, m, mods);
    }
    for m in 5..=7 {
        grant(&mut a, 1, m, promoters);
    }
    let mut replicas = vec![a.clone(), a.clone(), a.clone()];
    let bans: Vec<OpId> = [(5, 2, 3), (6, 3, 4), (7, 4, 2)]
        .into_iter()
        .zip(replicas.iter_mut())
        .map(|((promoter, who, target), r)| {
            assert_eq!(grant(r, promoter, who, top).1, Verdict::Valid);
            ban(r, who, target)
        })
        .collect();
    let snapshot = replicas.clone();
    for r in &mut replicas {
        for other in snapshot.iter().rev() {
            r.sync_from(other);
        }
    }
    let hash = replicas[0].guild.state_hash();
    for r in &replicas {
        assert_eq!(r.guild.state_hash(), hash);
        // The honored set never settles (each honored ban cuts the next banner), so none is
        // honored against concurrent ops: all three stand and all three members are banned.
        for b in &bans {
            assert_eq!(r.verdict(b), Verdict::Valid);
        }
        for m in 2..=4 {
            assert!(r.guild.state().bans.contains_key(&user(m)));
        }
    }
}

#[test]
fn a_removal_never_cuts_what_the_remover_saw() {
    let (mut r, general, _) = guild_with_members();
    let (said, _) = r.say(&key(2), general, "before the ban");
    // A ban claiming cutoff 0 still cannot undo 2's join, which the owner had seen.
    let ban_op = r.ok(
        &key(1),
        Body::Ban {
            member: user(2),
            cutoff: 0,
            reason: "purge".into(),
        },
    );
    assert_eq!(r.verdict(&ban_op), Verdict::Valid);
    assert!(r.guild.state().bans.contains_key(&user(2)));
    // Messages are not guild-state ops: a low cutoff purges them, like deleting history.
    assert_eq!(r.verdict(&said), invalid(AuthError::Banned));
}

#[test]
fn clearing_an_overwrite_needs_the_rank_and_bits_setting_it_did() {
    let (mut r, general, _) = guild_with_members();
    let high = role(&mut r, 1, "high", P::empty(), 5);
    let mods = role(&mut r, 1, "mods", P::MANAGE_ROLES | P::VIEW_CHANNEL, 3);
    grant(&mut r, 1, 2, mods);
    r.ok(
        &key(1),
        Body::OverwriteSet {
            channel: general,
            target: OverwriteTarget::Role(high),
            allow: 0,
            deny: P::SEND_MESSAGES.bits(),
        },
    );
    let clear = |target| Body::OverwriteClear {
        channel: general,
        target,
    };
    assert_eq!(
        r.act(&key(2), clear(OverwriteTarget::Role(high))).1,
        invalid(AuthError::Hierarchy)
    );
    r.ok(
        &key(1),
        Body::OverwriteSet {
            channel: general,
            target: OverwriteTarget::Member(user(3)),
            allow: 0,
            deny: P::MANAGE_GUILD.bits(),
        },
    );
    assert_eq!(
        r.act(&key(2), clear(OverwriteTarget::Member(user(3)))).1,
        invalid(AuthError::CannotGrant(P::MANAGE_GUILD))
    );
}

#[test]
fn the_genesis_op_heads_its_authors_chain_even_against_a_fork_that_ends_it() {
    let mut r = Replica::new(&key(1));
    let general = r.text_channel(&key(1), "general");
    // A second op by the owner at seq 1: a fork against genesis, whatever its id.
    let mut forks = Vec::new();
    for i in 0..8 {
        let env = Envelope {
            guild: r.guild.id(),
            author: user(1),
            seq: 1,
            prev: None,
            hlc: Hlc::from_parts(9_000 + i, 0),
            deps: vec![general],
            body: Body::Leave,
        };
        let op = env.sign(&key(1)).unwrap().verify().unwrap();
        forks.push(op.id());
        r.guild.insert(op).unwrap();
    }
    assert!(
        forks.iter().any(|f| *f < r.guild.id()),
        "some fork sorts below genesis"
    );
    assert_eq!(r.verdict(&r.guild.id()), Verdict::Valid);
    // The owner equivocated at seq 1: nothing they signed after genesis is trusted.
    assert_eq!(r.verdict(&general), Verdict::Forked);
    for f in &forks {
        assert_eq!(r.verdict(f), Verdict::Forked);
    }
    assert!(!r.guild.equivocations().is_empty());
}

#[test]
fn a_message_naming_a_channel_outside_its_past_is_judged_alike_in_any_order() {
    let mut a = Replica::new(&key(1));
    let invite = a.invite(&key(1));
    a.join(&key(2), invite);
    let mut b = a.clone();
    let late = a.text_channel(&key(1), "late");
    // 2, not having seen #late, names it anyway.
    let (msg, _) = b.say(&key(2), late, "into the unknown");
    let mut c = a.clone();
    c.sync_from(&b);
    b.sync_from(&a);
    for r in [&b, &c] {
        assert_eq!(r.verdict(&msg), invalid(AuthError::UnknownChannel));
    }
    assert_eq!(b.guild.state_hash(), c.guild.state_hash());
}

#[test]
fn demotion_invalidates_concurrent_use_of_the_role_only() {
    let (mut a, general, _) = guild_with_members();
    let mods = role(&mut a, 1, "mods", P::BAN_MEMBERS, 1);
    grant(&mut a, 1, 2, mods);
    let mut b = a.clone();
    let revoke = a.ok(
        &key(1),
        Body::MemberRoleRevoke {
            member: user(2),
            role: mods,
            cutoff: a.cutoff(&key(2)),
        },
    );
    // Concurrently, 2 bans 3 and keeps chatting.
    let ban = b.ok(
        &key(2),
        Body::Ban {
            member: user(3),
            cutoff: b.cutoff(&key(3)),
            reason: String::new(),
        },
    );
    let (chat, _) = b.say(&key(2), general, "still a member");
    a.sync_from(&b);
    b.sync_from(&a);
    for r in [&a, &b] {
        assert_eq!(r.verdict(&revoke), Verdict::Valid);
        assert_eq!(
            r.verdict(&ban),
            invalid(AuthError::MissingPermission(P::BAN_MEMBERS))
        );
        assert_eq!(r.verdict(&chat), Verdict::Valid);
        assert!(r.guild.state().is_member(&user(3)));
    }
    assert_eq!(a.guild.state_hash(), b.guild.state_hash());
}

#[test]
fn a_late_ban_hides_what_the_banned_member_enabled() {
    // 2 (a moderator) grants 3 a role that lets 3 post in a locked channel; 2's grant was
    // concurrent with 2's own ban, so it is void, and so are 3's posts that relied on it.
    let (mut a, _, _) = guild_with_members();
    let locked = a.text_channel(&key(1), "locked");
    let mods = role(&mut a, 1, "mods", P::MANAGE_ROLES | P::BAN_MEMBERS, 3);
    let posters = role(&mut a, 1, "posters", P::empty(), 1);
    grant(&mut a, 1, 2, mods);
    a.ok(
        &key(1),
        Body::OverwriteSet {
            channel: locked,
            target: OverwriteTarget::Role(a.guild.id()),
            allow: 0,
            deny: P::SEND_MESSAGES.bits(),
        },
    );
    a.ok(
        &key(1),
        Body::OverwriteSet {
            channel: locked,
            target: OverwriteTarget::Role(posters),
            allow: P::SEND_MESSAGES.bits(),
            deny: 0,
        },
    );
    let mut b = a.clone();
    let (grant_op, _) = grant(&mut b, 2, 3, posters);
    let (post, v) = b.say(&key(3), locked, "thanks to my new role");
    assert_eq!(v, Verdict::Valid);
    a.ok(
        &key(1),
        Body::Ban {
            member: user(2),
            cutoff: a.cutoff(&key(2)),
            reason: String::new(),
        },
    );
    a.sync_from(&b);
    b.sync_from(&a);
    for r in [&a, &b] {
        assert_eq!(r.verdict(&grant_op), invalid(AuthError::Banned));
        assert_eq!(
            r.verdict(&post),
            invalid(AuthError::MissingPermission(P::SEND_MESSAGES))
        );
        assert!(r.guild.messages(&locked, None, None, 10).is_empty());
    }
}

#[test]
fn metadata_changes_are_checked_key_by_key() {
    let (mut r, general, _) = guild_with_members();
    let change = |r: &Replica, who: u8, key: &str, value: MetaValue| Body::MetaChange {
        change: r
            .guild
            .meta()
            .make_change(&user(who), &[(key, Some(value))])
            .expect("the edit changes something"),
    };
    let rename = change(&r, 2, "guild.name", MetaValue::Str("mine now".into()));
    assert_eq!(
        r.act(&key(2), rename).1,
        invalid(AuthError::MissingPermission(P::MANAGE_GUILD))
    );
    let rename = change(&r, 1, "guild.name", MetaValue::Str("Renamed".into()));
    r.ok(&key(1), rename);
    assert_eq!(
        r.guild
            .meta()
            .get_str(crate::meta::MetaKey::GuildName)
            .as_deref(),
        Some("Renamed")
    );

    let topic_key = format!("channel.{general}.topic");
    let topic = change(&r, 2, &topic_key, MetaValue::Str("hi".into()));
    assert_eq!(
        r.act(&key(2), topic).1,
        invalid(AuthError::MissingPermission(P::MANAGE_CHANNELS))
    );
    let nick = change(
        &r,
        2,
        &format!("member.{}.nick", user(2)),
        MetaValue::Str("two".into()),
    );
    r.ok(&key(2), nick);
    let other_nick = change(
        &r,
        2,
        &format!("member.{}.nick", user(3)),
        MetaValue::Str("x".into()),
    );
    assert_eq!(
        r.act(&key(2), other_nick).1,
        invalid(AuthError::MissingPermission(P::MANAGE_NICKNAMES))
    );

    let forged_actor = change(&r, 1, "guild.name", MetaValue::Str("forged".into()));
    assert!(matches!(
        r.act(&key(2), forged_actor).1,
        Verdict::Invalid(AuthError::BadMetaChange(_))
    ));
    let unknown_key = change(&r, 1, "guild.secret_plans", MetaValue::Str("x".into()));
    assert!(matches!(
        r.act(&key(1), unknown_key).1,
        Verdict::Invalid(AuthError::BadMetaChange(_))
    ));
    let bad_value = change(&r, 1, "guild.name", MetaValue::Int(7));
    assert!(matches!(
        r.act(&key(1), bad_value).1,
        Verdict::Invalid(AuthError::BadMetaChange(_))
    ));

    let high = role(&mut r, 1, "high", P::MANAGE_ROLES, 5);
    let low = role(&mut r, 1, "low", P::MANAGE_ROLES, 2);
    grant(&mut r, 1, 2, low);
    let recolor = change(
        &r,
        2,
        &format!("role.{high}.color"),
        MetaValue::Int(0xff0000),
    );
    assert_eq!(r.act(&key(2), recolor).1, invalid(AuthError::Hierarchy));
    assert_eq!(
        r.guild
            .meta()
            .get_str(crate::meta::MetaKey::GuildName)
            .as_deref(),
        Some("Renamed")
    );
}

#[test]
fn only_the_owner_deletes_a_guild_and_nothing_follows_it() {
    let (mut r, general, invite) = guild_with_members();
    let admins = role(&mut r, 1, "admins", P::ADMINISTRATOR, 5);
    grant(&mut r, 1, 2, admins);
    assert_eq!(
        r.act(&key(2), Body::GuildDelete).1,
        invalid(AuthError::OwnerOnly)
    );
    r.ok(&key(1), Body::GuildDelete);
    assert!(r.guild.state().deleted);
    assert_eq!(
        r.say(&key(1), general, "anyone here?").1,
        invalid(AuthError::GuildDeleted)
    );
    let join = r.join_body(&key(4), invite);
    assert_eq!(r.act(&key(4), join).1, invalid(AuthError::GuildDeleted));
}

#[test]
fn usable_invites_are_capped_and_spent_ones_leave_the_state() {
    let (mut r, _, _) = guild_with_members();
    let one_use = |r: &mut Replica, who: u8| r.act(&key(who), Body::invite_create(SECRET, 1, 0));
    // A plain member (@everyone may create invites) up to the cap, then no more.
    let mut made = Vec::new();
    for _ in 0..crate::limits::MAX_INVITES_PER_MEMBER {
        let (id, verdict) = one_use(&mut r, 2);
        assert_eq!(verdict, Verdict::Valid);
        made.push(id);
    }
    assert_eq!(one_use(&mut r, 2).1, invalid(AuthError::TooManyInvites));
    // Another member is not held to Bea's count.
    assert_eq!(one_use(&mut r, 3).1, Verdict::Valid);
    // Once one is spent, Bea may make another, and the spent one leaves the state with it.
    r.join(&key(4), made[0]);
    let (fresh, verdict) = one_use(&mut r, 2);
    assert_eq!(verdict, Verdict::Valid);
    let invites = &r.guild.state().invites;
    assert!(!invites.contains_key(&made[0]) && invites.contains_key(&fresh));
    assert_eq!(
        invites.values().filter(|i| i.creator == user(2)).count(),
        crate::limits::MAX_INVITES_PER_MEMBER
    );
}

#[test]
fn removals_nobody_may_make_change_nothing_in_any_order() {
    let (mut r, general, _) = guild_with_members();
    r.say(&key(3), general, "before");
    // Bea may not ban: each of her bans is judged where it stands, concurrent with nothing.
    let bans: Vec<OpId> = (0..40)
        .map(|i| {
            let body = if i % 2 == 0 {
                Body::Ban {
                    member: user(3),
                    cutoff: 0,
                    reason: String::new(),
                }
            } else {
                Body::Kick {
                    member: user(1),
                    cutoff: 0,
                    reason: String::new(),
                }
            };
            let (id, verdict) = r.act(&key(2), body);
            assert!(matches!(verdict, Verdict::Invalid(_)), "{verdict:?}");
            id
        })
        .collect();
    let (after, _) = r.say(&key(3), general, "after");
    assert_eq!(r.verdict(&after), Verdict::Valid);
    // The reference, whatever the order: newest first makes every ban wait, then re-resolve.
    let mut ops: Vec<VerifiedOp> = r.guild.ops().cloned().collect();
    ops.sort_by_key(|op| std::cmp::Reverse((op.envelope().hlc, op.id())));
    let genesis = ops.pop().unwrap();
    let mut reference = Guild::new(genesis).unwrap();
    for op in ops {
        reference.insert(op).unwrap();
    }
    assert_eq!(reference.state_hash(), r.guild.state_hash());
    for id in &bans {
        assert_eq!(reference.verdict(id), r.guild.verdict(id));
    }
}

#[test]
fn guild_state_ops_are_bounded_per_author_and_minute() {
    let (mut r, general, _) = guild_with_members();
    let max = crate::limits::MAX_GUILD_STATE_OPS_PER_MINUTE;
    // Leave room for the ops the owner made setting up, a millisecond apart.
    r.now += 60_000;
    let role = |n: usize| Body::RoleCreate {
        name: format!("role {n}"),
        permissions: 0,
        color: 0,
        position: 1,
    };
    for n in 0..max {
        r.ok(&key(1), role(n));
    }
    // One more in the same minute: refused before signing, and by every replica.
    let (precheck, refused) = r.refused(&key(1), role(max));
    assert!(matches!(precheck, AuthError::GuildStateRate(ms) if ms > 0 && ms <= 60_000));
    assert_eq!(refused, InsertError::GuildStateRate);
    // Messages are not guild-state ops, and others are not held to the owner's count.
    assert_eq!(r.say(&key(1), general, "still talking").1, Verdict::Valid);
    r.ok(&key(2), Body::Leave);
    // A minute after the first of them, there is room again.
    r.now += 60_000;
    r.ok(&key(1), role(max + 1));
}

#[test]
fn metadata_keys_round_trip_through_their_text_and_nothing_else_parses() {
    use crate::meta::MetaKey;
    let (c, u) = (OpId([7; 32]), user(2));
    let keys = [
        (MetaKey::GuildName, "guild.name".to_owned()),
        (MetaKey::GuildDescription, "guild.description".into()),
        (MetaKey::GuildIcon, "guild.icon".into()),
        (MetaKey::GuildSystemChannel, "guild.system_channel".into()),
        (MetaKey::ChannelName(c), format!("channel.{c}.name")),
        (MetaKey::ChannelTopic(c), format!("channel.{c}.topic")),
        (MetaKey::ChannelPosition(c), format!("channel.{c}.position")),
        (MetaKey::ChannelParent(c), format!("channel.{c}.parent")),
        (MetaKey::RoleName(c), format!("role.{c}.name")),
        (MetaKey::RoleColor(c), format!("role.{c}.color")),
        (MetaKey::MemberNick(u), format!("member.{u}.nick")),
    ];
    for (key, text) in keys {
        assert_eq!(key.to_string(), text);
        assert_eq!(text.parse::<MetaKey>(), Ok(key));
    }
    for bad in [
        "guild",
        "guild.owner",
        "channel.xyz.name",
        "role.{c}.position",
        "",
    ] {
        assert_eq!(bad.parse::<MetaKey>(), Err(()), "{bad}");
    }
}
