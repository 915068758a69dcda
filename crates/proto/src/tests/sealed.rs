//! Sealed text: channels not every member may view carry only ciphertext, and only the
//! channel key opens it.

use super::*;
use crate::OverwriteTarget;
use crate::error::AuthError;
use crate::limits;
use crate::perm::Permissions;
use crate::sealed::{ChannelKey, Sealed, Text};

fn channel_key(r: &Replica, channel: ChannelId, byte: u8) -> ChannelKey {
    ChannelKey {
        guild: r.guild.id(),
        channel,
        key: [byte; 32],
    }
}

/// #general plus #staff, which @everyone may not view and role "staff" (held by user 2) may;
/// users 2 and 3 are members, homed at nodes 2 and 3.
fn guild_with_private_channel() -> (Replica, ChannelId, ChannelId) {
    let (mut r, general, _) = guild_with_members();
    let staff = r.text_channel(&key(1), "staff");
    let role = r.ok(
        &key(1),
        Body::RoleCreate {
            name: "staff".into(),
            permissions: 0,
            color: 0,
            position: 1,
        },
    );
    r.ok(
        &key(1),
        Body::MemberRoleGrant {
            member: user(2),
            role,
        },
    );
    let view = Permissions::VIEW_CHANNEL.bits();
    let everyone = OverwriteTarget::Role(r.guild.id());
    for (target, allow, deny) in [(everyone, 0, view), (OverwriteTarget::Role(role), view, 0)] {
        r.ok(
            &key(1),
            Body::OverwriteSet {
                channel: staff,
                target,
                allow,
                deny,
            },
        );
    }
    for n in [2, 3] {
        r.ok(&key(n), Body::home([node(n)]));
    }
    (r, general, staff)
}

fn sealed_message(channel: ChannelId, sealed: Sealed) -> Body {
    Body::MessageCreate {
        channel,
        content: Text::Sealed(sealed),
        reply_to: None,
    }
}

#[test]
fn a_channel_is_open_to_all_only_when_no_overwrite_keeps_anyone_out() {
    let (r, general, staff) = guild_with_private_channel();
    assert!(r.guild.state().open_to_all(&general));
    assert!(!r.guild.state().open_to_all(&staff));
    assert!(!r.guild.state().open_to_all(&OpId([9; 32])));
    assert_eq!(
        r.guild.state().viewer_nodes(&staff),
        [node(2)].into_iter().collect(),
        "the owner names no home; user 3 may not view"
    );
    assert_eq!(
        r.guild.state().viewer_nodes(&general),
        [node(2), node(3)].into_iter().collect()
    );
    for (channel, n, viewer) in [(staff, 2, true), (staff, 3, false), (general, 3, true)] {
        assert_eq!(r.guild.state().is_viewer_node(&channel, &node(n)), viewer);
    }
}

#[test]
fn a_deny_for_one_role_closes_a_channel_everyone_may_view() {
    let (mut r, general, _) = guild_with_members();
    let role = r.ok(
        &key(1),
        Body::RoleCreate {
            name: "muted".into(),
            permissions: 0,
            color: 0,
            position: 1,
        },
    );
    r.ok(
        &key(1),
        Body::OverwriteSet {
            channel: general,
            target: OverwriteTarget::Role(role),
            allow: 0,
            deny: Permissions::VIEW_CHANNEL.bits(),
        },
    );
    assert!(!r.guild.state().open_to_all(&general));
}

#[test]
fn sealed_content_is_judged_like_plain_content_and_kept_as_sealed() {
    let (mut r, _, staff) = guild_with_private_channel();
    let k = channel_key(&r, staff, 7);
    let message = r.ok(
        &key(2),
        sealed_message(staff, k.seal(&user(2), "sealed secret", [1; 24])),
    );
    let view = r.guild.message(&message).unwrap();
    assert_eq!(
        k.open(&user(2), view.content.sealed().unwrap()).unwrap(),
        "sealed secret"
    );
    r.ok(
        &key(2),
        Body::MessageEdit {
            message,
            content: Text::Sealed(k.seal(&user(2), "sealed edit", [3; 24])),
        },
    );
    let view = r.guild.message(&message).unwrap();
    assert_eq!(
        k.open(&user(2), view.content.sealed().unwrap()).unwrap(),
        "sealed edit"
    );
    let (_, verdict) = r.act(
        &key(3),
        sealed_message(staff, k.seal(&user(3), "cannot view", [4; 24])),
    );
    assert!(matches!(
        verdict,
        Verdict::Invalid(AuthError::MissingPermission(_))
    ));
    let thread = r.ok(
        &key(2),
        Body::ThreadCreate {
            channel: staff,
            name: Text::Sealed(k.seal(&user(2), "sealed thread", [5; 24])),
            message: Some(message),
        },
    );
    assert_eq!(r.guild.threads(&staff)[0].0, thread);
    assert!(r.guild.threads(&staff)[0].1.is_sealed());
}

#[test]
fn sealed_text_opens_only_with_its_key_for_its_author() {
    let (r, _, staff) = guild_with_private_channel();
    let k = channel_key(&r, staff, 7);
    let sealed = k.seal(&user(2), "for staff", [5; 24]);
    assert_eq!(k.open(&user(2), &sealed).as_deref(), Some("for staff"));
    assert_eq!(
        k.open(&user(3), &sealed),
        None,
        "moved under another author"
    );
    assert_eq!(channel_key(&r, staff, 8).open(&user(2), &sealed), None);
    let mut other_channel = k.clone();
    other_channel.channel = OpId([9; 32]);
    assert_ne!(other_channel.id(), k.id(), "a key id binds its channel");
    let mut tampered = sealed.clone();
    tampered.ciphertext[0] ^= 1;
    assert_eq!(k.open(&user(2), &tampered), None);
    assert_eq!(
        sealed.ciphertext.len(),
        crate::sealed::SEALED_PADDING + 16,
        "padded to one block"
    );
}

#[test]
fn sealed_bodies_round_trip_and_ciphertext_shape_is_checked() {
    let (r, _, staff) = guild_with_private_channel();
    let k = channel_key(&r, staff, 7);
    let sealed = k.seal(&user(2), "x", [6; 24]);
    for body in [
        sealed_message(staff, sealed.clone()),
        Body::MessageEdit {
            message: OpId([3; 32]),
            content: Text::Sealed(sealed.clone()),
        },
        Body::ThreadCreate {
            channel: staff,
            name: Text::Sealed(sealed.clone()),
            message: None,
        },
    ] {
        let op = r
            .guild
            .next_envelope(user(2), r.now + 1, body.clone())
            .sign(&key(2))
            .unwrap();
        let decoded = crate::op::Op::decode(&op.encode()).unwrap();
        assert_eq!(decoded.envelope().body, body);
        assert!((40..=42).contains(&body.kind()));
    }
    // A sealed field is bounded as its plain form is: 528 bytes is past a name's 464.
    let long = Sealed {
        ciphertext: vec![0; 8 * crate::sealed::SEALED_PADDING + 16],
        ..sealed.clone()
    };
    assert_eq!(crate::sealed::max_sealed_bytes(limits::MAX_NAME_BYTES), 464);
    let sign = |body| {
        r.guild
            .next_envelope(user(2), r.now + 1, body)
            .sign(&key(2))
    };
    assert!(sign(sealed_message(staff, long.clone())).is_ok());
    let long_name = Body::ThreadCreate {
        channel: staff,
        name: Text::Sealed(long),
        message: None,
    };
    assert!(matches!(
        sign(long_name),
        Err(crate::op::OpError::Decode(_))
    ));
    let mut short = sealed;
    short.ciphertext.truncate(20);
    assert!(
        r.guild
            .next_envelope(user(2), r.now + 1, sealed_message(staff, short))
            .sign(&key(2))
            .is_err()
    );
}

/// Signs `body` by `who` as its node would: text sealed when the channel is not open to all,
/// with `fresh` as the key should one be made. Returns the op and the key made, if one was.
fn sealed_by_node(
    r: &mut Replica,
    who: &crate::id::Keypair,
    body: Body,
    fresh: u8,
) -> (crate::op::VerifiedOp, Option<ChannelKey>) {
    r.now += 1;
    let mut envelope = r.guild.next_envelope(who.user_id(), r.now, body);
    let made = r
        .guild
        .seal_new_text(&who.user_id(), &mut envelope.body, [fresh; 32], [fresh; 24]);
    (envelope.sign(who).unwrap().verify().unwrap(), made)
}

fn plain_message(channel: ChannelId, text: &str) -> Body {
    Body::MessageCreate {
        channel,
        content: text.into(),
        reply_to: None,
    }
}

#[test]
fn plain_text_in_a_channel_not_open_to_all_is_not_sealed() {
    let (mut r, general, staff) = guild_with_private_channel();
    r.ok(&key(2), plain_message(general, "open to all"));
    let (_, verdict) = r.act(&key(2), plain_message(staff, "in the clear"));
    assert_eq!(verdict, Verdict::Invalid(AuthError::NotSealed));
    assert_eq!(AuthError::NotSealed.code(), "not_sealed");
    let k = channel_key(&r, staff, 7);
    let message = r.ok(
        &key(2),
        sealed_message(staff, k.seal(&user(2), "sealed", [1; 24])),
    );
    for body in [
        Body::MessageEdit {
            message,
            content: "edited in the clear".into(),
        },
        Body::ThreadCreate {
            channel: staff,
            name: "a thread in the clear".into(),
            message: Some(message),
        },
    ] {
        let (_, verdict) = r.act(&key(2), body);
        assert_eq!(verdict, Verdict::Invalid(AuthError::NotSealed));
    }
    let thread = r.ok(
        &key(2),
        Body::ThreadCreate {
            channel: staff,
            name: Text::Sealed(k.seal(&user(2), "a thread", [2; 24])),
            message: None,
        },
    );
    let (_, verdict) = r.act(&key(2), plain_message(thread, "in a private thread"));
    assert_eq!(
        verdict,
        Verdict::Invalid(AuthError::NotSealed),
        "a thread is as private as its channel"
    );
}

#[test]
fn a_node_seals_new_text_with_a_key_that_outlives_no_state_change() {
    let (mut r, general, staff) = guild_with_private_channel();
    let (op, made) = sealed_by_node(&mut r, &key(2), plain_message(general, "hello"), 1);
    assert!(made.is_none(), "#general is open to all");
    assert_eq!(op.envelope().body.text().unwrap(), &"hello");
    r.guild.insert(op).unwrap();

    let (first, made) = sealed_by_node(&mut r, &key(2), plain_message(staff, "one"), 2);
    let made = made.expect("a first key for #staff");
    assert_eq!(made.channel, staff);
    let first_id = first.id();
    r.guild.insert(first).unwrap();
    assert_eq!(r.guild.verdict(&first_id), Some(&Verdict::Valid));
    let view = r.guild.message(&first_id).unwrap();
    assert_eq!(view.content.sealed().unwrap().key, made.id());
    assert_eq!(
        r.guild
            .open_text(&user(2), &view.content, &staff)
            .as_deref(),
        Some("one")
    );
    assert_eq!(
        r.guild.open_text(&user(2), &view.content, &general),
        None,
        "a key opens only its own channel's text"
    );

    let (second, again) = sealed_by_node(&mut r, &key(2), plain_message(staff, "two"), 3);
    assert!(again.is_none(), "the state has not changed: the same key");
    assert_eq!(
        second.envelope().body.text().unwrap().sealed().unwrap().key,
        made.id()
    );
    r.guild.insert(second).unwrap();

    r.ok(&key(1), Body::invite_create(b"another", 0, 0));
    let (third, rotated) = sealed_by_node(&mut r, &key(2), plain_message(staff, "three"), 4);
    let rotated = rotated.expect("a new key after the state changed");
    assert_ne!(rotated.id(), made.id());
    let third_id = third.id();
    r.guild.insert(third).unwrap();
    assert_eq!(r.guild.verdict(&third_id), Some(&Verdict::Valid));
}

#[test]
fn a_replica_wants_and_is_given_only_keys_of_channels_its_node_may_view() {
    let (mut author, _, staff) = guild_with_private_channel();
    let mut other = author.clone();
    let (op, made) = sealed_by_node(&mut author, &key(2), plain_message(staff, "secret"), 5);
    let made = made.unwrap();
    let id = op.id();
    author.guild.insert(op.clone()).unwrap();
    other.guild.insert(op).unwrap();

    let view = other.guild.message(&id).unwrap();
    assert_eq!(other.guild.open_text(&user(2), &view.content, &staff), None);
    assert_eq!(
        other.guild.wanted_keys(&node(2), 64, other.now),
        vec![made.id()]
    );
    assert!(
        other.guild.wanted_keys(&node(3), 64, other.now).is_empty(),
        "node 3's user may not view #staff"
    );
    assert!(author.guild.keys_for(&node(3), &[made.id()]).is_empty());
    assert_eq!(
        author.guild.keys_for(&node(2), &[made.id()]),
        vec![made.clone()]
    );
    assert!(
        author
            .guild
            .keys_for(&node(2), &[crate::sealed::KeyId([9; 32])])
            .is_empty()
    );

    let mut foreign = made.clone();
    foreign.guild = OpId([9; 32]);
    assert!(
        other.guild.add_channel_key(foreign).is_empty(),
        "another guild's key"
    );
    assert_eq!(other.guild.add_channel_key(made.clone()), vec![id]);
    assert!(other.guild.add_channel_key(made).is_empty(), "held already");
    let view = other.guild.message(&id).unwrap();
    assert_eq!(
        other
            .guild
            .open_text(&user(2), &view.content, &staff)
            .as_deref(),
        Some("secret")
    );
    assert!(other.guild.wanted_keys(&node(2), 64, other.now).is_empty());
}

#[test]
fn a_key_no_peer_gives_is_asked_for_less_and_less_until_the_state_changes() {
    use crate::keyring::{FIRST_RETRY_MS, LAST_RETRY_MS};
    let (mut r, _, staff) = guild_with_private_channel();
    // A member may seal under a key id nobody holds.
    let bogus = channel_key(&r, staff, 9);
    r.ok(
        &key(2),
        sealed_message(staff, bogus.seal(&user(2), "unreadable", [1; 24])),
    );
    let t = r.now;
    let wanted = |r: &Replica, at: u64| r.guild.wanted_keys(&node(2), 64, at);
    assert_eq!(wanted(&r, t), vec![bogus.id()]);
    r.guild.keys_not_given(&[bogus.id()], t);
    assert!(wanted(&r, t + FIRST_RETRY_MS - 1).is_empty());
    assert_eq!(wanted(&r, t + FIRST_RETRY_MS), vec![bogus.id()]);
    let mut at = t;
    for _ in 0..20 {
        r.guild.keys_not_given(&[bogus.id()], at);
        at += LAST_RETRY_MS;
    }
    let last = at - LAST_RETRY_MS;
    assert!(
        wanted(&r, last + LAST_RETRY_MS - 1).is_empty(),
        "the wait is capped"
    );
    assert_eq!(wanted(&r, last + LAST_RETRY_MS), vec![bogus.id()]);
    r.ok(&key(1), Body::invite_create(b"a change", 0, 0));
    assert_eq!(
        wanted(&r, last + 1),
        vec![bogus.id()],
        "a change of the state makes it worth asking at once"
    );
}
