//! A voice client on str0m, for tests and the load generator: it sends a numbered, timestamped
//! frame every 20 ms on its microphone and counts, per sender, what arrives on its slots.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Opus sends a frame every 20 ms.
pub const FRAME_INTERVAL: Duration = Duration::from_millis(20);
/// Bytes per frame: about what Opus makes of speech at 32 kbit/s.
pub const FRAME_BYTES: usize = 80;
/// RTP ticks per frame at 48 kHz.
const FRAME_TICKS: u64 = 960;

/// Send times are microseconds since this, so any peer in the process can read them.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

#[derive(Debug, Clone, Default)]
pub struct PeerStats {
    pub connected: bool,
    pub sent: u64,
    /// Frames received, by the sender's tag.
    pub received: HashMap<u64, u64>,
    /// Send → receive time of every frame received, in microseconds.
    pub latencies_us: Vec<u32>,
}

enum PeerCommand {
    Answer(String, oneshot::Sender<Result<(), String>>),
    AddSlots(usize, oneshot::Sender<String>),
    Sending(bool),
}

/// A running voice client. Dropping it hangs up.
pub struct Peer {
    commands: mpsc::UnboundedSender<PeerCommand>,
    stats: Arc<Mutex<PeerStats>>,
    task: JoinHandle<()>,
}

impl Peer {
    /// Binds a socket on `ip` and makes an offer with a microphone and `slots` listening
    /// slots. Frames it sends carry `tag`.
    pub async fn new(tag: u64, slots: usize, ip: IpAddr) -> io::Result<(Peer, String)> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let local = socket.local_addr()?;
        let now = Instant::now();
        let mut rtc = crate::sfu::audio_rtc(Arc::new(str0m::crypto::from_feature_flags()), now);
        let candidate = Candidate::host(local, "udp").map_err(io::Error::other)?;
        rtc.add_local_candidate(candidate);
        let mut api = rtc.sdp_api();
        let mic = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        for _ in 0..slots {
            api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        let (offer, pending) = api.apply().expect("new media needs an offer");
        let (commands, command_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(PeerStats::default()));
        let client = Client {
            rtc,
            socket,
            local,
            mic,
            tag,
            pending: Some(pending),
            sending: true,
            seq: 0,
            stats: stats.clone(),
        };
        let task = tokio::spawn(client.run(command_rx));
        Ok((
            Peer {
                commands,
                stats,
                task,
            },
            offer.to_sdp_string(),
        ))
    }

    /// Applies the SFU's answer to the last offer.
    pub async fn answer(&self, sdp: String) -> Result<(), String> {
        let (reply, done) = oneshot::channel();
        self.commands
            .send(PeerCommand::Answer(sdp, reply))
            .map_err(|_| "peer stopped".to_owned())?;
        done.await.map_err(|_| "peer stopped".to_owned())?
    }

    /// Adds listening slots: returns the offer that renegotiates them.
    pub async fn add_slots(&self, count: usize) -> Option<String> {
        let (reply, offer) = oneshot::channel();
        self.commands
            .send(PeerCommand::AddSlots(count, reply))
            .ok()?;
        offer.await.ok()
    }

    pub fn set_sending(&self, sending: bool) {
        let _ = self.commands.send(PeerCommand::Sending(sending));
    }

    pub fn stats(&self) -> PeerStats {
        self.stats.lock().expect("peer stats").clone()
    }

    /// Forgets the latencies measured so far (a load run measures after warm-up).
    pub fn reset_latencies(&self) {
        self.stats.lock().expect("peer stats").latencies_us.clear();
    }

    /// Frames received from the peer tagged `tag`.
    pub fn received_from(&self, tag: u64) -> u64 {
        let stats = self.stats.lock().expect("peer stats");
        stats.received.get(&tag).copied().unwrap_or(0)
    }

    /// Frames from `tag` that arrive during the next `window`.
    pub async fn received_from_during(&self, tag: u64, window: Duration) -> u64 {
        let before = self.received_from(tag);
        tokio::time::sleep(window).await;
        self.received_from(tag) - before
    }

    /// Waits until `count` frames from `tag` have arrived in all; false on timeout.
    pub async fn wait_for_frames(&self, tag: u64, count: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.received_from(tag) < count {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Client {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    mic: Mid,
    tag: u64,
    pending: Option<SdpPendingOffer>,
    sending: bool,
    seq: u64,
    stats: Arc<Mutex<PeerStats>>,
}

impl Client {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<PeerCommand>) {
        let mut buf = vec![0u8; 2048];
        let mut next_frame = Instant::now();
        loop {
            let Some(timeout) = self.drain() else { return };
            let wake = if self.connected() && self.sending {
                timeout.min(next_frame)
            } else {
                timeout
            };
            // A timer set in the past still waits for tokio's next millisecond tick.
            if wake <= Instant::now() {
                self.wake(&mut next_frame);
                continue;
            }
            tokio::select! {
                command = commands.recv() => match command {
                    None => return,
                    Some(PeerCommand::Answer(sdp, reply)) => {
                        let _ = reply.send(self.accept(&sdp));
                    }
                    Some(PeerCommand::AddSlots(count, reply)) => {
                        let mut api = self.rtc.sdp_api();
                        for _ in 0..count {
                            api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
                        }
                        if let Some((offer, pending)) = api.apply() {
                            self.pending = Some(pending);
                            let _ = reply.send(offer.to_sdp_string());
                        }
                    }
                    Some(PeerCommand::Sending(on)) => self.sending = on,
                },
                received = self.socket.recv_from(&mut buf) => {
                    let Ok((n, source)) = received else { return };
                    if let Ok(receive) = Receive::new(Protocol::Udp, source, self.local, &buf[..n]) {
                        let _ = self.rtc.handle_input(Input::Receive(Instant::now(), receive));
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => self.wake(&mut next_frame),
            }
        }
    }

    /// A timer fired: str0m's timeout, and the next frame if it is due.
    fn wake(&mut self, next_frame: &mut Instant) {
        let now = Instant::now();
        let _ = self.rtc.handle_input(Input::Timeout(now));
        if self.connected() && self.sending && now >= *next_frame {
            self.send_frame(now);
            *next_frame += FRAME_INTERVAL;
            if *next_frame < now {
                *next_frame = now + FRAME_INTERVAL;
            }
        }
    }

    fn connected(&self) -> bool {
        self.stats.lock().expect("peer stats").connected
    }

    fn accept(&mut self, sdp: &str) -> Result<(), String> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
        let pending = self.pending.take().ok_or("no offer is pending")?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| e.to_string())
    }

    fn send_frame(&mut self, now: Instant) {
        let Some(writer) = self.rtc.writer(self.mic) else {
            return;
        };
        let Some(pt) = writer.payload_params().next().map(|p| p.pt()) else {
            return;
        };
        let mut frame = vec![0u8; FRAME_BYTES];
        frame[..8].copy_from_slice(&self.tag.to_be_bytes());
        let sent_us = now.duration_since(*EPOCH).as_micros() as u64;
        frame[8..16].copy_from_slice(&sent_us.to_be_bytes());
        frame[16..24].copy_from_slice(&self.seq.to_be_bytes());
        let time = MediaTime::new(self.seq * FRAME_TICKS, Frequency::FORTY_EIGHT_KHZ);
        if writer
            .audio_level(-20, true)
            .write(pt, now, time, frame)
            .is_ok()
        {
            self.seq += 1;
            self.stats.lock().expect("peer stats").sent += 1;
        }
    }

    /// Polls until str0m has nothing but a timeout; `None` once the connection is dead.
    fn drain(&mut self) -> Option<Instant> {
        loop {
            if !self.rtc.is_alive() {
                return None;
            }
            match self.rtc.poll_output().ok()? {
                Output::Timeout(at) => return Some(at),
                Output::Transmit(transmit) => {
                    let _ = self
                        .socket
                        .try_send_to(&transmit.contents, transmit.destination);
                }
                Output::Event(Event::Connected) => {
                    self.stats.lock().expect("peer stats").connected = true;
                }
                Output::Event(Event::MediaData(data)) if data.data.len() >= 16 => {
                    let tag = u64::from_be_bytes(data.data[..8].try_into().expect("8 bytes"));
                    let sent_us = u64::from_be_bytes(data.data[8..16].try_into().expect("8 bytes"));
                    let now_us = Instant::now().duration_since(*EPOCH).as_micros() as u64;
                    let mut stats = self.stats.lock().expect("peer stats");
                    *stats.received.entry(tag).or_default() += 1;
                    stats
                        .latencies_us
                        .push(now_us.saturating_sub(sent_us).min(u32::MAX as u64) as u32);
                }
                Output::Event(_) => {}
            }
        }
    }
}
