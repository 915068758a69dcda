//! Read-side rules: who may see a guild, read a channel or thread, type, or join voice.

use super::*;
use crate::OverwriteTarget;
use crate::access::{self, Denied};
use crate::perm::Permissions;

#[test]
fn outsiders_the_banned_and_members_of_a_deleted_guild_each_get_their_answer() {
    let (mut r, _, _) = guild_with_members();
    assert_eq!(access::member(r.guild.state(), &user(2)), Ok(()));
    assert_eq!(
        access::member(r.guild.state(), &user(9)),
        Err(Denied::NotMember)
    );
    assert_eq!(Denied::NotMember.code(), "unknown_guild");
    let cutoff = r.cutoff(&key(3));
    r.ok(&key(1), removal(true, user(3), cutoff));
    assert_eq!(
        access::member(r.guild.state(), &user(3)),
        Err(Denied::Banned)
    );
    r.ok(&key(1), Body::GuildDelete);
    assert_eq!(
        access::member(r.guild.state(), &user(2)),
        Err(Denied::GuildDeleted)
    );
}

#[test]
fn a_thread_is_read_and_typed_in_by_its_parents_rules() {
    let (mut r, general, _) = guild_with_members();
    let (message, _) = r.say(&key(2), general, "start a thread here");
    let thread = r.thread_on(&key(2), general, message, "side");
    assert_eq!(access::gate_channel(&r.guild, &thread), general);
    assert_eq!(access::gate_channel(&r.guild, &general), general);
    assert_eq!(access::read(&r.guild, &user(3), &thread), Ok(()));
    assert_eq!(access::typing(&r.guild, &user(3), &thread), Ok(general));
    assert!(access::may_view(&r.guild, &user(3), &thread));

    // Denied the parent, user 3 loses the thread with it.
    r.ok(
        &key(1),
        Body::OverwriteSet {
            channel: general,
            target: OverwriteTarget::Member(user(3)),
            allow: 0,
            deny: Permissions::VIEW_CHANNEL.bits(),
        },
    );
    assert_eq!(
        access::read(&r.guild, &user(3), &thread),
        Err(Denied::CannotRead)
    );
    assert_eq!(
        access::typing(&r.guild, &user(3), &thread),
        Err(Denied::CannotSend)
    );
    assert!(!access::may_view(&r.guild, &user(3), &thread));
    assert_eq!(access::read(&r.guild, &user(2), &thread), Ok(()));
    assert_eq!(
        access::read(&r.guild, &user(2), &OpId([9; 32])),
        Err(Denied::UnknownChannel)
    );
}

#[test]
fn voice_needs_a_voice_channel_view_and_connect_and_speaking_needs_speak() {
    let (mut r, general, _) = guild_with_members();
    let lounge = r.ok(
        &key(1),
        Body::ChannelCreate {
            kind: ChannelKind::Voice,
            name: "lounge".into(),
            parent: None,
            position: 1,
        },
    );
    let state = |r: &Replica| r.guild.state().clone();
    assert_eq!(access::voice(&state(&r), &user(2), &lounge), Ok(true));
    assert_eq!(
        access::voice(&state(&r), &user(2), &general),
        Err(Denied::NotVoice)
    );
    assert_eq!(
        access::typing(&r.guild, &user(2), &lounge),
        Err(Denied::CannotSend),
        "nobody types in a voice channel"
    );
    assert_eq!(
        access::voice(&state(&r), &user(9), &lounge),
        Err(Denied::NotMember)
    );
    for (deny, expected) in [
        (Permissions::SPEAK, Ok(false)),
        (Permissions::CONNECT, Err(Denied::CannotConnect)),
    ] {
        r.ok(
            &key(1),
            Body::OverwriteSet {
                channel: lounge,
                target: OverwriteTarget::Member(user(2)),
                allow: 0,
                deny: deny.bits(),
            },
        );
        assert_eq!(access::voice(&state(&r), &user(2), &lounge), expected);
    }
}
