//! The SFU state machine: participants, rooms, forwarding and speaking detection. It owns one
//! str0m `Rtc` per participant and never touches a socket or a clock: datagrams and the time
//! come in as arguments, datagrams to send go out through a callback.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::crypto::CryptoProvider;
use str0m::media::{Direction, MediaData, MediaKind, Mid};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

/// A participant, named by whoever drives the SFU (the gateway numbers its voice sessions).
pub type ParticipantId = u64;

/// Media lines one offer may carry: the microphone plus up to this many minus one listening
/// slots. Polling an `Rtc` costs time per media line, so the count is bounded.
pub const MAX_MEDIA_LINES: usize = 26;
/// Offers longer than this are refused before parsing.
pub const MAX_OFFER_BYTES: usize = 64 * 1024;
/// A frame at least this loud (dBov, 0 is loudest) counts as speech.
pub const SPEAKING_LEVEL: i8 = -50;
/// Speaking ends after this long without a loud frame.
pub const SPEAKING_HOLD: Duration = Duration::from_millis(400);
/// A slot whose speaker has been silent this long may be handed to another speaker.
const SLOT_IDLE: Duration = Duration::from_secs(2);
/// A participant not connected this long after its offer is dropped.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Rounds of timeouts and forwarding one `poll` runs before yielding to the caller.
const MAX_ROUNDS: usize = 8;
/// How long the SFU may sleep when nothing is due.
const MAX_SLEEP: Duration = Duration::from_millis(500);

/// What a participant may do, as decided by the gateway (permissions, mutes and deafens).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flags {
    /// Its audio is forwarded (it has SPEAK and is not muted by itself or a moderator).
    pub speak: bool,
    /// It is sent the others' audio (it is not deafened).
    pub hear: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoiceEvent {
    /// ICE and DTLS are up: media can flow.
    Connected(ParticipantId),
    Speaking {
        participant: ParticipantId,
        speaking: bool,
    },
    /// The connection failed or timed out; the participant has been removed.
    Gone(ParticipantId),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VoiceError {
    #[error("the offer is not valid SDP: {0}")]
    BadOffer(String),
    #[error("an offer may carry at most {MAX_MEDIA_LINES} media lines and {MAX_OFFER_BYTES} bytes")]
    OfferTooLarge,
    #[error("the offer must send exactly one audio track")]
    NoMicrophone,
    #[error("the voice server has stopped")]
    Stopped,
}

impl VoiceError {
    /// A stable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            VoiceError::BadOffer(_) => "bad_offer",
            VoiceError::OfferTooLarge => "offer_too_large",
            VoiceError::NoMicrophone => "no_microphone",
            VoiceError::Stopped => "voice_unavailable",
        }
    }
}

/// Counters since the SFU started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SfuStats {
    pub participants: usize,
    pub connected: usize,
    pub packets_in: u64,
    pub packets_forwarded: u64,
    /// Packets from participants whose `Flags::speak` is off.
    pub packets_silenced: u64,
    /// Packets a listener had no free slot for.
    pub packets_unslotted: u64,
}

struct Slot {
    mid: Mid,
    source: Option<ParticipantId>,
    last_write: Option<Instant>,
}

struct Participant {
    rtc: Rtc,
    room: String,
    flags: Flags,
    connected: bool,
    offered: Instant,
    /// The media line the participant sends its microphone on.
    mic: Option<Mid>,
    /// Media lines the participant receives others on, each pinned to one speaker at a time.
    slots: Vec<Slot>,
    speaking: bool,
    last_loud: Option<Instant>,
    /// When its `Rtc` next wants `Input::Timeout`.
    due: Instant,
    /// Its `Rtc` took input or media since it was last polled: str0m needs it polled again.
    /// Only these are polled, so a wake costs the participants it touched, not all of them.
    changed: bool,
}

impl Participant {
    /// The slot carrying `source` to this participant, pinning a free (or long idle) one.
    fn slot_for(&mut self, source: ParticipantId, now: Instant) -> Option<Mid> {
        if let Some(slot) = self.slots.iter().find(|s| s.source == Some(source)) {
            return Some(slot.mid);
        }
        // A free slot first; failing that, one whose speaker has gone quiet.
        let free = match self.slots.iter().position(|s| s.source.is_none()) {
            Some(i) => &mut self.slots[i],
            None => self
                .slots
                .iter_mut()
                .find(|s| s.last_write.is_none_or(|t| now - t >= SLOT_IDLE))?,
        };
        free.source = Some(source);
        free.last_write = None;
        Some(free.mid)
    }

    fn release(&mut self, source: ParticipantId) {
        for slot in &mut self.slots {
            if slot.source == Some(source) {
                slot.source = None;
            }
        }
    }

    fn handle(&mut self, input: Input) {
        self.changed = true;
        if let Err(e) = self.rtc.handle_input(input) {
            tracing::debug!(error = %e, "voice input refused; disconnecting");
            self.rtc.disconnect();
        }
    }
}

/// A connection for Opus voice only, as both ends of ours set it up.
pub(crate) fn audio_rtc(crypto: Arc<CryptoProvider>, now: Instant) -> Rtc {
    Rtc::builder()
        .set_crypto_provider(crypto)
        .clear_codecs()
        .enable_opus(true, false)
        // Opus is sent without NACK: waiting to reorder only adds latency.
        .set_reordering_size_audio(0)
        .build(now)
}

pub struct Sfu {
    crypto: Arc<CryptoProvider>,
    /// Where participants reach the SFU (host candidates given in every answer).
    candidates: Vec<SocketAddr>,
    participants: HashMap<ParticipantId, Participant>,
    /// The participant last seen at each remote address, so routing is not a scan.
    routes: HashMap<SocketAddr, ParticipantId>,
    events: Vec<VoiceEvent>,
    stats: SfuStats,
}

impl Sfu {
    pub fn new(candidates: Vec<SocketAddr>) -> Self {
        Sfu {
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            candidates,
            participants: HashMap::new(),
            routes: HashMap::new(),
            events: Vec::new(),
            stats: SfuStats::default(),
        }
    }

    /// Answers a participant's offer: a new connection, or a renegotiation (more listening
    /// slots) of an existing one. Moves the participant to `room` if it was elsewhere.
    pub fn offer(
        &mut self,
        id: ParticipantId,
        room: &str,
        flags: Flags,
        sdp: &str,
        now: Instant,
    ) -> Result<String, VoiceError> {
        if sdp.len() > MAX_OFFER_BYTES || sdp.matches("\nm=").count() > MAX_MEDIA_LINES {
            return Err(VoiceError::OfferTooLarge);
        }
        let offer =
            SdpOffer::from_sdp_string(sdp).map_err(|e| VoiceError::BadOffer(e.to_string()))?;
        let audio_out = offer
            .media_lines
            .iter()
            .filter(|m| {
                !m.disabled && m.typ.to_string() == "audio" && m.direction() == Direction::SendOnly
            })
            .count();
        if audio_out != 1 {
            return Err(VoiceError::NoMicrophone);
        }
        let answer: SdpAnswer = match self.participants.get_mut(&id) {
            Some(participant) => {
                let answer = participant
                    .rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .map_err(|e| VoiceError::BadOffer(e.to_string()))?;
                participant.due = now;
                participant.changed = true;
                answer
            }
            None => {
                let mut rtc = audio_rtc(self.crypto.clone(), now);
                for addr in &self.candidates {
                    let candidate = Candidate::host(*addr, "udp")
                        .map_err(|e| VoiceError::BadOffer(e.to_string()))?;
                    rtc.add_local_candidate(candidate);
                }
                let answer = rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .map_err(|e| VoiceError::BadOffer(e.to_string()))?;
                self.participants.insert(
                    id,
                    Participant {
                        rtc,
                        room: room.to_owned(),
                        flags,
                        connected: false,
                        offered: now,
                        mic: None,
                        slots: Vec::new(),
                        speaking: false,
                        last_loud: None,
                        due: now,
                        changed: true,
                    },
                );
                answer
            }
        };
        self.move_to(id, room);
        self.set_flags(id, flags);
        Ok(answer.to_sdp_string())
    }

    /// Moves a participant to another room: nobody in the old room hears it any more.
    pub fn move_to(&mut self, id: ParticipantId, room: &str) {
        let Some(participant) = self.participants.get_mut(&id) else {
            return;
        };
        if participant.room == room {
            return;
        }
        participant.room = room.to_owned();
        for slot in &mut participant.slots {
            slot.source = None;
        }
        for other in self.participants.values_mut() {
            other.release(id);
        }
        self.stop_speaking(id);
    }

    pub fn set_flags(&mut self, id: ParticipantId, flags: Flags) {
        let Some(participant) = self.participants.get_mut(&id) else {
            return;
        };
        participant.flags = flags;
        if !flags.speak {
            self.stop_speaking(id);
        }
    }

    /// Ends a participant's connection (it left, or the gateway session ended).
    pub fn leave(&mut self, id: ParticipantId) {
        if let Some(mut participant) = self.participants.remove(&id) {
            participant.rtc.disconnect();
        }
        self.routes.retain(|_, p| *p != id);
        for other in self.participants.values_mut() {
            other.release(id);
        }
    }

    pub fn contains(&self, id: ParticipantId) -> bool {
        self.participants.contains_key(&id)
    }

    pub fn stats(&self) -> SfuStats {
        SfuStats {
            participants: self.participants.len(),
            connected: self.participants.values().filter(|p| p.connected).count(),
            ..self.stats
        }
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<VoiceEvent> {
        std::mem::take(&mut self.events)
    }

    /// A datagram arrived on the SFU's socket. Unknown senders are dropped.
    pub fn receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        buf: &[u8],
    ) {
        let Ok(receive) = Receive::new(Protocol::Udp, source, destination, buf) else {
            return;
        };
        let input = Input::Receive(now, receive);
        let routed = self.routes.get(&source).copied().filter(|id| {
            self.participants
                .get(id)
                .is_some_and(|p| p.rtc.accepts(&input))
        });
        let id = match routed {
            Some(id) => id,
            None => {
                let Some((&id, _)) = self
                    .participants
                    .iter()
                    .find(|(_, p)| p.rtc.accepts(&input))
                else {
                    tracing::trace!(%source, "voice datagram for no participant");
                    return;
                };
                self.routes.insert(source, id);
                id
            }
        };
        if let Some(participant) = self.participants.get_mut(&id) {
            participant.handle(input);
        }
    }

    /// Drives every participant whose timers are due, forwards the media that came in, sends
    /// what str0m wants sent, and returns when to call again.
    pub fn poll(&mut self, now: Instant, send: &mut dyn FnMut(&Transmit)) -> Instant {
        let mut media = Vec::new();
        // Forwarded frames leave on the listener's next timeout, which str0m sets to `now`:
        // serve those here rather than after a trip through the caller's timer (a millisecond
        // or more per hop with tokio's).
        for _ in 0..MAX_ROUNDS {
            for participant in self.participants.values_mut() {
                if participant.due <= now {
                    participant.handle(Input::Timeout(now));
                }
            }
            let ids: Vec<ParticipantId> = self
                .participants
                .iter()
                .filter(|(_, p)| p.changed)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                self.drain(id, send, &mut media);
            }
            if media.is_empty() && self.participants.values().all(|p| p.due > now) {
                break;
            }
            for (from, data) in media.drain(..) {
                self.forward(from, &data, now);
            }
        }
        self.end_quiet_speakers(now);
        self.remove_dead(now);
        let mut next = now + MAX_SLEEP;
        for participant in self.participants.values() {
            next = next.min(participant.due);
            if !participant.connected {
                next = next.min(participant.offered + CONNECT_TIMEOUT);
            }
            if let Some(loud) = participant.last_loud.filter(|_| participant.speaking) {
                next = next.min(loud + SPEAKING_HOLD);
            }
        }
        next.max(now)
    }

    /// Polls one participant's `Rtc` until it only has a timeout left (str0m requires this
    /// after every change), collecting its media.
    fn drain(
        &mut self,
        id: ParticipantId,
        send: &mut dyn FnMut(&Transmit),
        media: &mut Vec<(ParticipantId, MediaData)>,
    ) {
        let Some(participant) = self.participants.get_mut(&id) else {
            return;
        };
        participant.changed = false;
        while participant.rtc.is_alive() {
            let output = match participant.rtc.poll_output() {
                Ok(output) => output,
                Err(e) => {
                    tracing::debug!(participant = id, error = %e, "voice poll failed");
                    participant.rtc.disconnect();
                    break;
                }
            };
            match output {
                Output::Timeout(at) => {
                    participant.due = at;
                    break;
                }
                Output::Transmit(transmit) => send(&transmit),
                Output::Event(event) => match event {
                    Event::Connected => {
                        participant.connected = true;
                        self.events.push(VoiceEvent::Connected(id));
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        participant.rtc.disconnect();
                    }
                    Event::MediaAdded(added) if added.kind == MediaKind::Audio => {
                        match added.direction {
                            Direction::RecvOnly => participant.mic = Some(added.mid),
                            Direction::SendOnly => participant.slots.push(Slot {
                                mid: added.mid,
                                source: None,
                                last_write: None,
                            }),
                            _ => {}
                        }
                    }
                    Event::MediaData(data) => {
                        self.stats.packets_in += 1;
                        media.push((id, data));
                    }
                    _ => {}
                },
            }
        }
    }

    /// Sends one frame of a participant's microphone to everyone else in its room who hears.
    fn forward(&mut self, from: ParticipantId, data: &MediaData, now: Instant) {
        let Some(source) = self.participants.get_mut(&from) else {
            return;
        };
        if source.mic != Some(data.mid) {
            return;
        }
        if !source.flags.speak {
            self.stats.packets_silenced += 1;
            return;
        }
        let level = data.ext_vals.audio_level;
        if level.is_some_and(|l| l >= SPEAKING_LEVEL) {
            source.last_loud = Some(now);
            if !source.speaking {
                source.speaking = true;
                self.events.push(VoiceEvent::Speaking {
                    participant: from,
                    speaking: true,
                });
            }
        }
        let room = source.room.clone();
        for (&id, listener) in self.participants.iter_mut() {
            if id == from || listener.room != room || !listener.flags.hear || !listener.connected {
                continue;
            }
            let Some(mid) = listener.slot_for(from, now) else {
                self.stats.packets_unslotted += 1;
                continue;
            };
            let Some(writer) = listener.rtc.writer(mid) else {
                continue;
            };
            let Some(pt) = writer.match_params(data.params) else {
                continue;
            };
            let writer = match level {
                Some(level) => writer.audio_level(level, level >= SPEAKING_LEVEL),
                None => writer,
            };
            let written = writer.write(pt, data.network_time, data.time, data.data.clone());
            listener.changed = true;
            match written {
                Ok(()) => {
                    self.stats.packets_forwarded += 1;
                    if let Some(slot) = listener.slots.iter_mut().find(|s| s.mid == mid) {
                        slot.last_write = Some(now);
                    }
                }
                Err(e) => tracing::debug!(participant = id, error = %e, "voice write failed"),
            }
        }
    }

    fn stop_speaking(&mut self, id: ParticipantId) {
        if let Some(participant) = self.participants.get_mut(&id)
            && participant.speaking
        {
            participant.speaking = false;
            self.events.push(VoiceEvent::Speaking {
                participant: id,
                speaking: false,
            });
        }
    }

    fn end_quiet_speakers(&mut self, now: Instant) {
        let quiet: Vec<ParticipantId> = self
            .participants
            .iter()
            .filter(|(_, p)| p.speaking && p.last_loud.is_none_or(|t| now - t >= SPEAKING_HOLD))
            .map(|(id, _)| *id)
            .collect();
        for id in quiet {
            self.stop_speaking(id);
        }
    }

    fn remove_dead(&mut self, now: Instant) {
        let dead: Vec<ParticipantId> = self
            .participants
            .iter()
            .filter(|(_, p)| {
                !p.rtc.is_alive() || (!p.connected && now - p.offered >= CONNECT_TIMEOUT)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.leave(id);
            self.events.push(VoiceEvent::Gone(id));
        }
    }
}
