//! Voice channels through the real gateway, with str0m peers as clients: signalling, voice
//! states and events, CONNECT and SPEAK, moderator mutes, deafens and moves, and clean-up when
//! people leave, lose permission or drop their session.

mod common;

use std::time::Duration;

use common::{TestNode, WAIT, dispatch_where, guild_with};
use guildhall_client::{Client, ClientError, Gateway, User};
use guildhall_voice::peer::Peer;
use serde_json::json;

const VIEW_CHANNEL: u64 = 1 << 10;
const CONNECT: u64 = 1 << 20;
const SPEAK: u64 = 1 << 21;
/// Long enough for a few 20 ms frames, were any forwarded.
const QUIET: Duration = Duration::from_millis(500);

struct InVoice {
    gw: Gateway,
    peer: Peer,
}

/// Connects `client` to the gateway and joins `channel` with a str0m peer sending frames tagged
/// `tag`.
async fn join(client: &Client, tag: u64, guild: &str, channel: &str) -> InVoice {
    let mut gw = Gateway::connect(client).await.unwrap();
    let peer = connect(&mut gw, tag, guild, channel).await.unwrap();
    InVoice { gw, peer }
}

async fn connect(
    gw: &mut Gateway,
    tag: u64,
    guild: &str,
    channel: &str,
) -> Result<Peer, ClientError> {
    let (peer, offer) = Peer::new(tag, 4, "127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let answer = gw
        .voice_connect(guild, channel, &offer, false, false)
        .await?;
    peer.answer(answer).await.unwrap();
    Ok(peer)
}

fn tag(i: usize) -> u64 {
    i as u64 + 1
}

async fn hears(listener: &Peer, speaker: u64) -> bool {
    listener
        .wait_for_frames(speaker, listener.received_from(speaker) + 5, WAIT)
        .await
}

async fn silent(listener: &Peer, speaker: u64) -> bool {
    // Frames already in flight when the change was made may still land.
    tokio::time::sleep(Duration::from_millis(100)).await;
    listener.received_from_during(speaker, QUIET).await == 0
}

/// The next VOICE_STATE_UPDATE of `user` with `field` equal to `value`.
async fn voice_state_where(gw: &mut Gateway, user: &str, field: &str, value: serde_json::Value) {
    loop {
        let state = dispatch_where(gw, "VOICE_STATE_UPDATE", "user_id", user).await;
        if state.data[field] == value {
            return;
        }
    }
}

async fn voice_guild(
    node: &TestNode,
    others: &[&str],
) -> (String, String, String, Vec<(Client, User)>) {
    let (guild, text, people) = guild_with(node, others).await;
    let voice = people[0]
        .0
        .create_channel(&guild.id, "Lounge", "voice")
        .await
        .unwrap();
    (guild.id, voice.id, text, people)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_in_a_voice_channel_hear_each_other() {
    let node = TestNode::start().await.with_voice();
    let (guild, lounge, text, people) = voice_guild(&node, &["bea", "cai", "dot"]).await;
    let mut watcher = Gateway::connect(&people[3].0).await.unwrap();

    let mut voices = Vec::new();
    for (i, (client, _)) in people.iter().take(3).enumerate() {
        voices.push(join(client, tag(i), &guild, &lounge).await);
    }
    for (i, listener) in voices.iter().enumerate() {
        for speaker in (0..3).filter(|s| *s != i) {
            assert!(
                hears(&listener.peer, tag(speaker)).await,
                "{i} hears {speaker}"
            );
        }
        assert_eq!(
            listener.peer.received_from(tag(i)),
            0,
            "nobody hears themselves"
        );
    }

    for (_, user) in people.iter().take(3) {
        let state = dispatch_where(&mut watcher, "VOICE_STATE_UPDATE", "user_id", &user.id).await;
        assert_eq!(state.data["channel_id"], json!(lounge));
        assert_eq!(state.data["guild_id"], json!(guild));
    }
    let speaking = watcher.wait_for("VOICE_SPEAKING", WAIT).await.unwrap();
    assert_eq!(speaking.data["channel_id"], json!(lounge));
    assert_eq!(speaking.data["speaking"], json!(true));

    let states = people[3].0.voice_states(&guild).await.unwrap();
    assert_eq!(states.len(), 3);
    let metrics = reqwest::get(format!("{}/metrics", node.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("guildhall_voice_participants 3\n"),
        "{metrics}"
    );
    assert!(metrics.contains("guildhall_voice_packets_forwarded_total"));
    let mut late = Gateway::connect(&people[3].0).await.unwrap();
    let ready = late.wait_for("READY", WAIT).await.unwrap();
    let listed = &ready.data["guilds"][0]["voice_states"];
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(3),
        "READY lists who is in voice"
    );

    let mut bystander = Gateway::connect(&people[3].0).await.unwrap();
    let refused = connect(&mut bystander, 9, &guild, &text)
        .await
        .err()
        .unwrap();
    assert!(matches!(refused, ClientError::Api { ref code, .. } if code == "unknown_channel"));
    let (_, offer) = Peer::new(9, 1, "127.0.0.1".parse().unwrap()).await.unwrap();
    let garbled = bystander
        .voice_connect(&guild, &lounge, &offer[..offer.len() / 2], false, false)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(garbled, ClientError::Api { ref code, .. } if code == "bad_offer"),
        "{garbled:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_speak_are_enforced_and_follow_permission_changes() {
    let node = TestNode::start().await.with_voice();
    let (guild, lounge, _, people) = voice_guild(&node, &["bea", "cai"]).await;
    let owner = &people[0].0;
    let (bea, cai) = (&people[1].1, &people[2].1);

    owner
        .set_member_overwrite(&guild, &lounge, &cai.id, 0, CONNECT)
        .await
        .unwrap();
    let mut cai_gw = Gateway::connect(&people[2].0).await.unwrap();
    let refused = connect(&mut cai_gw, 3, &guild, &lounge)
        .await
        .err()
        .unwrap();
    assert!(matches!(refused, ClientError::Api { ref code, .. } if code == "missing_permission"));

    owner
        .set_member_overwrite(&guild, &lounge, &bea.id, 0, SPEAK)
        .await
        .unwrap();
    let mut ada = join(owner, tag(0), &guild, &lounge).await;
    let mut bea_voice = join(&people[1].0, tag(1), &guild, &lounge).await;
    voice_state_where(&mut ada.gw, &bea.id, "suppress", json!(true)).await;
    assert!(
        hears(&bea_voice.peer, tag(0)).await,
        "without SPEAK one still hears"
    );
    assert!(
        silent(&ada.peer, tag(1)).await,
        "without SPEAK one is heard by no one"
    );

    owner
        .set_member_overwrite(&guild, &lounge, &bea.id, 0, 0)
        .await
        .unwrap();
    assert!(
        hears(&ada.peer, tag(1)).await,
        "SPEAK given back while connected"
    );
    voice_state_where(&mut ada.gw, &bea.id, "suppress", json!(false)).await;

    owner
        .set_member_overwrite(&guild, &lounge, &bea.id, 0, VIEW_CHANNEL)
        .await
        .unwrap();
    // Losing the channel disconnects, and the user is told so though it can no longer see
    // the channel.
    voice_state_where(&mut ada.gw, &bea.id, "channel_id", json!(null)).await;
    voice_state_where(&mut bea_voice.gw, &bea.id, "channel_id", json!(null)).await;
    assert!(silent(&ada.peer, tag(1)).await);
    assert_eq!(owner.voice_states(&guild).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderators_mute_deafen_move_and_disconnect() {
    let node = TestNode::start().await.with_voice();
    let (guild, lounge, _, people) = voice_guild(&node, &["bea", "cai"]).await;
    let owner = &people[0].0;
    let stage = owner
        .create_channel(&guild, "Stage", "voice")
        .await
        .unwrap();
    let bea = &people[1].1;
    let ada = join(owner, tag(0), &guild, &lounge).await;
    let mut bea_voice = join(&people[1].0, tag(1), &guild, &lounge).await;
    assert!(hears(&ada.peer, tag(1)).await);

    let denied = people[2]
        .0
        .moderate_voice(&guild, &bea.id, json!({ "mute": true }))
        .await;
    assert!(
        matches!(denied, Err(ClientError::Api { status: 403, .. })),
        "{denied:?}"
    );

    owner
        .moderate_voice(&guild, &bea.id, json!({ "mute": true }))
        .await
        .unwrap();
    voice_state_where(&mut bea_voice.gw, &bea.id, "mute", json!(true)).await;
    assert!(silent(&ada.peer, tag(1)).await, "server-muted");
    // A moderator's mute outlasts leaving and rejoining.
    bea_voice.gw.voice_leave().await.unwrap();
    let peer = connect(&mut bea_voice.gw, tag(1), &guild, &lounge)
        .await
        .unwrap();
    bea_voice.peer = peer;
    assert!(
        silent(&ada.peer, tag(1)).await,
        "still server-muted after rejoining"
    );
    owner
        .moderate_voice(&guild, &bea.id, json!({ "mute": false }))
        .await
        .unwrap();
    assert!(hears(&ada.peer, tag(1)).await);

    owner
        .moderate_voice(&guild, &bea.id, json!({ "deaf": true }))
        .await
        .unwrap();
    assert!(
        silent(&bea_voice.peer, tag(0)).await,
        "server-deafened hears nothing"
    );
    owner
        .moderate_voice(&guild, &bea.id, json!({ "deaf": false }))
        .await
        .unwrap();
    assert!(hears(&bea_voice.peer, tag(0)).await);

    bea_voice.gw.voice_state(true, false).await.unwrap();
    assert!(silent(&ada.peer, tag(1)).await, "self-muted");
    bea_voice.gw.voice_state(false, false).await.unwrap();
    assert!(hears(&ada.peer, tag(1)).await);

    let moved = owner
        .moderate_voice(&guild, &bea.id, json!({ "channel_id": stage.id }))
        .await
        .unwrap();
    assert_eq!(moved["channel_id"], json!(stage.id));
    voice_state_where(&mut bea_voice.gw, &bea.id, "moved", json!(true)).await;
    voice_state_where(&mut bea_voice.gw, &bea.id, "channel_id", json!(stage.id)).await;
    assert!(silent(&ada.peer, tag(1)).await, "moved to another channel");
    let cai = join(&people[2].0, tag(2), &guild, &stage.id).await;
    assert!(hears(&cai.peer, tag(1)).await, "heard in the new channel");

    owner
        .moderate_voice(&guild, &bea.id, json!({ "channel_id": null }))
        .await
        .unwrap();
    assert!(silent(&cai.peer, tag(1)).await, "disconnected");
    let states = owner.voice_states(&guild).await.unwrap();
    assert!(states.iter().all(|s| s["user_id"] != json!(bea.id)));

    let bad = owner
        .moderate_voice(&guild, &bea.id, json!({ "mute": "yes" }))
        .await;
    assert!(
        matches!(bad, Err(ClientError::Api { status: 400, .. })),
        "{bad:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderator_of_one_guild_cannot_touch_a_call_in_another() {
    let node = TestNode::start().await.with_voice();
    let (guild, _, _, people) = voice_guild(&node, &["bea", "cai"]).await;
    let (owner, bea, cai) = (&people[0].0, &people[1], &people[2].0);
    let other = bea.0.create_guild("Bea's den").await.unwrap();
    let den = bea
        .0
        .create_channel(&other.id, "Den", "voice")
        .await
        .unwrap();
    let invite = bea.0.create_invite(&other.id, 0, 0).await.unwrap();
    cai.accept_invite(&invite.code).await.unwrap();
    let _bea_voice = join(&bea.0, tag(1), &other.id, &den.id).await;
    let cai_voice = join(cai, tag(2), &other.id, &den.id).await;
    assert!(hears(&cai_voice.peer, tag(1)).await);

    // The owner of the first guild moderates bea there; her call in the other guild stands.
    let answer = owner
        .moderate_voice(
            &guild,
            &bea.1.id,
            json!({ "mute": true, "channel_id": null }),
        )
        .await;
    assert!(
        matches!(answer, Ok(ref a) if a["channel_id"] == json!(null)),
        "{answer:?}"
    );
    assert!(
        hears(&cai_voice.peer, tag(1)).await,
        "still heard in the other guild"
    );
    let states = bea.0.voice_states(&other.id).await.unwrap();
    assert_eq!(states.len(), 2, "still connected in the other guild");
    assert!(states.iter().all(|s| s["mute"] == json!(false)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_kicks_and_dropped_sessions_end_voice() {
    let node = TestNode::start_with(|c| c.session_ttl = Duration::from_millis(500))
        .await
        .with_voice();
    let (guild, lounge, _, people) = voice_guild(&node, &["bea", "cai"]).await;
    let owner = &people[0].0;
    let ada = join(owner, tag(0), &guild, &lounge).await;
    let mut bea = join(&people[1].0, tag(1), &guild, &lounge).await;
    let mut cai = join(&people[2].0, tag(2), &guild, &lounge).await;
    assert!(hears(&ada.peer, tag(1)).await && hears(&ada.peer, tag(2)).await);

    bea.gw.voice_leave().await.unwrap();
    assert!(silent(&ada.peer, tag(1)).await, "left");

    cai.gw.drop_connection().await;
    let gone = async {
        loop {
            if owner.voice_states(&guild).await.unwrap().len() == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT, gone)
        .await
        .expect("an expired session leaves voice");
    assert!(silent(&ada.peer, tag(2)).await);

    let peer = connect(&mut bea.gw, tag(1), &guild, &lounge).await.unwrap();
    assert!(hears(&ada.peer, tag(1)).await);
    owner.kick(&guild, &people[1].1.id).await.unwrap();
    assert!(
        silent(&ada.peer, tag(1)).await,
        "kicked members are disconnected"
    );
    drop(peer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_voice_says_so() {
    let node = TestNode::start().await;
    let (guild, lounge, _, people) = voice_guild(&node, &[]).await;
    let mut gw = Gateway::connect(&people[0].0).await.unwrap();
    let refused = connect(&mut gw, 1, &guild, &lounge).await.err().unwrap();
    assert!(matches!(refused, ClientError::Api { ref code, .. } if code == "voice_unavailable"));
}
