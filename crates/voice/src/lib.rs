//! Guildhall's voice SFU: one str0m WebRTC connection per participant on one UDP socket, each
//! speaker's Opus frames forwarded to the others in its voice channel without transcoding.
//!
//! `sfu` is the state machine (no sockets, no clocks of its own), `server` the tokio task that
//! owns the socket, and `peer` a str0m voice client for tests and the load generator.

pub mod peer;
mod server;
mod sfu;

pub use server::{Voice, VoiceConfig};
pub use sfu::{
    CONNECT_TIMEOUT, Flags, MAX_MEDIA_LINES, MAX_OFFER_BYTES, ParticipantId, SPEAKING_HOLD,
    SPEAKING_LEVEL, Sfu, SfuStats, VoiceError, VoiceEvent,
};
