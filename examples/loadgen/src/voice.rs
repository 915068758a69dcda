//! The voice SFU under load: str0m peers in rooms of four, each sending a 20 ms frame stream,
//! against an SFU on its own thread so its CPU time can be read apart from the peers'.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use guildhall_voice::peer::{FRAME_INTERVAL, Peer};
use guildhall_voice::{Flags, Voice, VoiceConfig};

use crate::procfs::cpu_time;
use crate::{record, report};

const ROOM_SIZE: usize = 4;
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Starts the SFU on a thread of its own; returns its handle and the thread's `/proc` stat path.
fn start_sfu() -> (Voice, String) {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new().name("voice-sfu".into());
    thread
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let (voice, mut events) = Voice::start(VoiceConfig {
                    listen: SocketAddr::new(LOOPBACK, 0),
                    announce: None,
                })
                .expect("voice binds");
                // /proc/thread-self names this thread: its stat is the SFU's CPU time.
                let task = std::fs::read_link("/proc/thread-self").expect("procfs");
                tx.send((voice, format!("/proc/{}/stat", task.display())))
                    .expect("loadgen waits");
                while events.recv().await.is_some() {}
            });
        })
        .expect("thread starts");
    rx.recv().expect("SFU thread starts")
}

/// Frames all `peers` have received, from anyone.
fn frames_received(peers: &[Peer]) -> u64 {
    peers
        .iter()
        .map(|p| p.stats().received.values().sum::<u64>())
        .sum()
}

pub async fn voice(participants: usize, seconds: u64) {
    let (sfu, stat) = start_sfu();
    let all = Flags {
        speak: true,
        hear: true,
    };
    let mut peers = Vec::with_capacity(participants);
    for i in 0..participants {
        let id = i as u64 + 1;
        let (peer, offer) = Peer::new(id, ROOM_SIZE - 1, LOOPBACK)
            .await
            .expect("peer binds");
        let room = format!("room{}", i / ROOM_SIZE);
        let answer = sfu
            .offer(id, &room, all, offer)
            .await
            .expect("offer accepted");
        peer.answer(answer).await.expect("answer applies");
        peers.push(peer);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while peers.iter().any(|p| !p.stats().connected) {
        assert!(
            Instant::now() < deadline,
            "peers did not all connect in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let every stream settle before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let listeners_per_frame = (0..participants)
        .map(|i| {
            let room_start = i / ROOM_SIZE * ROOM_SIZE;
            (participants - room_start).min(ROOM_SIZE) - 1
        })
        .sum::<usize>() as f64;
    let before = sfu.stats().await.expect("SFU runs");
    let cpu_before = cpu_time(&stat);
    let received_before = frames_received(&peers);
    let started = Instant::now();
    for peer in &peers {
        peer.reset_latencies();
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let after = sfu.stats().await.expect("SFU runs");
    let cpu = (cpu_time(&stat) - cpu_before).as_secs_f64();
    let received = frames_received(&peers) - received_before;
    let forwarded = after.packets_forwarded - before.packets_forwarded;
    let expected = listeners_per_frame * elapsed / FRAME_INTERVAL.as_secs_f64();
    let pps = forwarded as f64 / elapsed;
    let load = cpu / elapsed;
    record("forwarded_per_s", pps);
    record("expected_per_s", expected / elapsed);
    record("sfu_cpu_fraction", load);
    println!(
        "voice: {participants} participants in rooms of {ROOM_SIZE}, {seconds} s: forwarded {pps:.0} packets/s \
         ({:.1}% of the {:.0} expected), received {:.0}/s",
        100.0 * forwarded as f64 / expected,
        expected / elapsed,
        received as f64 / elapsed,
    );
    println!(
        "voice SFU thread: {:.1}% of a core, {:.1} µs per forwarded packet, about {:.0} forwarded streams per core",
        100.0 * load,
        if forwarded > 0 {
            cpu * 1e6 / forwarded as f64
        } else {
            0.0
        },
        if load > 0.0 {
            pps / (1.0 / FRAME_INTERVAL.as_secs_f64()) / load
        } else {
            0.0
        },
    );
    let latencies: Vec<u64> = peers
        .iter()
        .flat_map(|p| p.stats().latencies_us.into_iter().map(u64::from))
        .collect();
    if !latencies.is_empty() {
        report("voice frame, peer → SFU → peer (loopback)", latencies);
    }
}
