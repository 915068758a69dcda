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
