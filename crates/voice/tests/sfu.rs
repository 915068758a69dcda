//! The SFU on a real UDP socket with str0m peers as clients: forwarding, rooms, mutes, deafens,
//! leaving, churn, renegotiation and refused offers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use guildhall_voice::peer::Peer;
use guildhall_voice::{Flags, Voice, VoiceConfig, VoiceError, VoiceEvent};
use tokio::sync::mpsc::UnboundedReceiver;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(10);
const ALL: Flags = Flags {
    speak: true,
    hear: true,
};

fn start() -> (Voice, UnboundedReceiver<VoiceEvent>) {
    Voice::start(VoiceConfig {
        listen: SocketAddr::new(LOOPBACK, 0),
        announce: None,
    })
    .expect("voice starts")
}

async fn join(voice: &Voice, id: u64, room: &str, slots: usize, flags: Flags) -> Peer {
    let (peer, offer) = Peer::new(id, slots, LOOPBACK).await.expect("peer binds");
    let answer = voice
        .offer(id, room, flags, offer)
        .await
        .expect("offer accepted");
    peer.answer(answer).await.expect("answer applies");
    peer
}

/// Waits until `done` holds, checking every 20 ms.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Frames `peer` gets from `from` over the next half second.
async fn arriving(peer: &Peer, from: u64) -> u64 {
    peer.received_from_during(from, Duration::from_millis(500))
        .await
}

#[tokio::test]
async fn three_participants_hear_each_other_and_no_one_else() {
    let (voice, _events) = start();
    let a = join(&voice, 1, "lobby", 3, ALL).await;
    let b = join(&voice, 2, "lobby", 3, ALL).await;
    let c = join(&voice, 3, "lobby", 3, ALL).await;
    let elsewhere = join(&voice, 4, "other", 3, ALL).await;
    let peers = [(1, &a), (2, &b), (3, &c)];
    until("everyone hears everyone", || {
        peers.iter().all(|(me, peer)| {
            peers
                .iter()
                .filter(|(other, _)| other != me)
                .all(|(other, _)| peer.received_from(*other) >= 25)
        })
    })
    .await;
    assert_eq!(a.received_from(1), 0, "nobody hears themselves");
    assert!(elsewhere.stats().received.is_empty(), "rooms are apart");
    assert!(
        peers
            .iter()
            .all(|(_, p)| !p.stats().received.contains_key(&4))
    );
    let stats = voice.stats().await.unwrap();
    assert_eq!((stats.participants, stats.connected), (4, 4));
    assert!(stats.packets_forwarded >= 150);
}

#[tokio::test]
async fn twelve_participants_in_three_rooms_each_hear_exactly_their_room() {
    let (voice, _events) = start();
    let room_of = |id: u64| (id - 1) / 4;
    let mut peers = Vec::new();
    for id in 1..=12 {
        let room = format!("room{}", room_of(id));
        peers.push((id, join(&voice, id, &room, 3, ALL).await));
    }
    let mates = |me: u64| -> Vec<u64> {
        (1..=12)
            .filter(|o| *o != me && room_of(*o) == room_of(me))
            .collect()
    };
    until("everyone hears their three room-mates", || {
        peers
            .iter()
            .all(|(me, p)| mates(*me).iter().all(|o| p.received_from(*o) >= 25))
    })
    .await;
    for (_, peer) in &peers {
        peer.set_sending(false);
    }
    // Once nothing is sent and nothing more arrives, count what arrived.
    let total = || -> u64 {
        peers
            .iter()
            .map(|(_, p)| p.stats().received.values().sum::<u64>())
            .sum()
    };
    let mut last = total();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = total();
        if now == last {
            break;
        }
        last = now;
    }
    for (me, peer) in &peers {
        let mut heard: Vec<u64> = peer.stats().received.keys().copied().collect();
        heard.sort();
        assert_eq!(heard, mates(*me), "participant {me} hears exactly its room");
    }
    // Nothing arrives that the SFU did not forward. Not all of it arrives: on a loaded machine
    // up to ~8 % went missing with no UDP buffer drops counted by the kernel, so the receiving
    // str0m stacks discard some (not yet explained; see the stop note).
    let forwarded = voice.stats().await.unwrap().packets_forwarded;
    assert!(last <= forwarded, "forwarded {forwarded}, received {last}");
    assert!(
        last >= 12 * 3 * 25,
        "forwarded {forwarded}, received {last}"
    );
}

#[tokio::test]
async fn muted_speakers_reach_no_one_and_deafened_listeners_get_nothing() {
    let (voice, _events) = start();
    let a = join(&voice, 1, "lobby", 3, ALL).await;
    let b = join(&voice, 2, "lobby", 3, ALL).await;
    let c = join(&voice, 3, "lobby", 3, ALL).await;
    until("b and c hear a", || {
        a.received_from(2) > 0 && b.received_from(1) > 0 && c.received_from(1) > 0
    })
    .await;

    voice.set_flags(
        1,
        Flags {
            speak: false,
            hear: true,
        },
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(arriving(&b, 1).await, 0, "a muted speaker reaches no one");
    assert_eq!(arriving(&c, 1).await, 0);
    assert!(arriving(&a, 2).await > 0, "a muted speaker still hears");
    assert!(arriving(&b, 3).await > 0, "the others still talk");
    assert!(voice.stats().await.unwrap().packets_silenced > 0);

    voice.set_flags(
        2,
        Flags {
            speak: true,
            hear: false,
        },
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let deafened = b.stats().received.values().sum::<u64>();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        b.stats().received.values().sum::<u64>(),
        deafened,
        "deafened hears nothing"
    );
    assert!(arriving(&c, 2).await > 0, "deafened still speaks");

    voice.set_flags(1, ALL);
    assert!(arriving(&c, 1).await > 0, "unmuted speaks again");
}

#[tokio::test]
async fn leaving_and_moving_stop_forwarding() {
    let (voice, mut events) = start();
    let a = join(&voice, 1, "lobby", 3, ALL).await;
    let b = join(&voice, 2, "lobby", 3, ALL).await;
    until("b hears a", || b.received_from(1) > 0).await;

    voice.move_to(1, "other");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(arriving(&b, 1).await, 0, "a moved away");
    let c = join(&voice, 3, "other", 3, ALL).await;
    until("c hears a in the new room", || c.received_from(1) > 0).await;

    voice.leave(1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(arriving(&c, 1).await, 0, "a left");
    assert_eq!(voice.stats().await.unwrap().participants, 2);
    drop(a);

    let mut connected = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let VoiceEvent::Connected(id) = event {
            connected.push(id);
        }
    }
    connected.sort();
    assert_eq!(connected, [1, 2, 3]);
}

#[tokio::test]
async fn churn_keeps_the_remaining_participants_talking() {
    let (voice, _events) = start();
    let steady = join(&voice, 100, "lobby", 4, ALL).await;
    let mut round_peers = Vec::new();
    for round in 0..4u64 {
        round_peers.clear();
        for i in 0..3 {
            let id = round * 10 + i;
            round_peers.push((id, join(&voice, id, "lobby", 4, ALL).await));
        }
        until("the steady peer hears this round", || {
            round_peers
                .iter()
                .all(|(id, _)| steady.received_from(*id) > 0)
        })
        .await;
        until("this round hears the steady peer", || {
            round_peers.iter().all(|(_, p)| p.received_from(100) > 0)
        })
        .await;
        for (id, _) in &round_peers {
            voice.leave(*id);
        }
    }
    let stats = voice.stats().await.unwrap();
    assert_eq!(stats.participants, 1, "everyone who left is gone");
}

#[tokio::test]
async fn more_speakers_than_slots_until_renegotiated() {
    let (voice, _events) = start();
    let listener = join(&voice, 1, "lobby", 1, ALL).await;
    let _speakers = [
        join(&voice, 2, "lobby", 3, ALL).await,
        join(&voice, 3, "lobby", 3, ALL).await,
        join(&voice, 4, "lobby", 3, ALL).await,
    ];
    until("the one slot carries someone", || {
        listener.stats().received.len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(listener.stats().received.len(), 1, "one slot, one speaker");
    assert!(voice.stats().await.unwrap().packets_unslotted > 0);

    let offer = listener.add_slots(2).await.expect("renegotiation offer");
    let answer = voice
        .offer(1, "lobby", ALL, offer)
        .await
        .expect("re-offer accepted");
    listener.answer(answer).await.expect("answer applies");
    until("all three speakers heard", || {
        listener.stats().received.len() == 3
    })
    .await;
}

#[tokio::test]
async fn speaking_is_reported_and_ends_when_muted() {
    let (voice, mut events) = start();
    let _a = join(&voice, 1, "lobby", 3, ALL).await;
    let _b = join(&voice, 2, "lobby", 3, ALL).await;
    let deadline = Instant::now() + WAIT;
    let mut speaking = Vec::new();
    while speaking.len() < 2 {
        let event = tokio::time::timeout_at(deadline.into(), events.recv())
            .await
            .expect("speaking events")
            .expect("voice runs");
        if let VoiceEvent::Speaking {
            participant,
            speaking: true,
        } = event
        {
            speaking.push(participant);
        }
    }
    voice.set_flags(
        1,
        Flags {
            speak: false,
            hear: true,
        },
    );
    loop {
        let event = tokio::time::timeout_at(deadline.into(), events.recv())
            .await
            .expect("a stop event")
            .expect("voice runs");
        if event
            == (VoiceEvent::Speaking {
                participant: 1,
                speaking: false,
            })
        {
            break;
        }
    }
}

#[tokio::test]
async fn bad_offers_are_refused_with_a_reason() {
    let (voice, _events) = start();
    let refused = voice.offer(1, "lobby", ALL, "not sdp".into()).await;
    assert!(
        matches!(refused, Err(VoiceError::BadOffer(_))),
        "{refused:?}"
    );

    let (_peer, offer) = Peer::new(2, 0, LOOPBACK).await.unwrap();
    let listen_only = offer.replace("a=sendonly", "a=recvonly");
    let refused = voice.offer(2, "lobby", ALL, listen_only).await;
    assert_eq!(refused, Err(VoiceError::NoMicrophone));

    let huge = format!("{offer}{}", "a=x\r\n".repeat(20_000));
    let refused = voice.offer(3, "lobby", ALL, huge).await;
    assert_eq!(refused, Err(VoiceError::OfferTooLarge));
    assert_eq!(
        voice.stats().await.unwrap().participants,
        0,
        "nothing was kept"
    );
}
