//! Ephemeral signals that cross nodes (typing, presence): signed by the user's key so a node
//! cannot speak for users it does not hold, timestamped with an expiry, and never stored.

use serde::{Deserialize, Serialize};

use crate::id::{ChannelId, GuildId, Keypair, UserId};
use crate::op::OpError;
use crate::wire::{Reader, Writer};

const SIGNAL_VERSION: u8 = 1;
const SIGNAL_DOMAIN: &[u8] = b"guildhall/signal/v1\0";
/// The longest a signal may claim to stay true.
pub const MAX_SIGNAL_TTL_MS: u64 = 300_000;
/// A signed signal's size: version, guild, user, kind, payload, expiry, signature.
pub const MAX_SIGNAL_BYTES: usize = 1 + 32 + 32 + 1 + 32 + 8 + 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Online,
    Idle,
    Dnd,
    Offline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    Typing { channel: ChannelId },
    Presence { status: Status },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    pub guild: GuildId,
    pub user: UserId,
    pub kind: SignalKind,
    /// Wall-clock milliseconds after which the signal no longer holds.
    pub expires_at_ms: u64,
}

impl Signal {
    fn unsigned_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(SIGNAL_VERSION);
        w.fixed(&self.guild.0);
        w.fixed(&self.user.0);
        match self.kind {
            SignalKind::Typing { channel } => {
                w.u8(1);
                w.fixed(&channel.0);
            }
            SignalKind::Presence { status } => {
                w.u8(2);
                w.u8(match status {
                    Status::Online => 1,
                    Status::Idle => 2,
                    Status::Dnd => 3,
                    Status::Offline => 4,
                });
            }
        }
        w.u64_be(self.expires_at_ms);
        w.into_bytes()
    }

    /// The signal's wire form, signed by `key` (which must be the user's).
    pub fn sign(&self, key: &Keypair) -> Vec<u8> {
        key.sign_appended(SIGNAL_DOMAIN, self.unsigned_bytes())
    }

    /// Decodes a signal and checks it is signed by its user (strict ed25519, as for ops).
    pub fn verify(bytes: &[u8]) -> Result<Signal, OpError> {
        if bytes.len() > MAX_SIGNAL_BYTES {
            return Err(OpError::TooLarge(bytes.len()));
        }
        let mut r = Reader::new(bytes);
        let version = r.u8("version")?;
        if version != SIGNAL_VERSION {
            return Err(OpError::UnknownVersion(version));
        }
        let guild = GuildId::from_bytes(r.array("guild")?);
        let user = UserId(r.array("user")?);
        let kind = match r.u8("signal kind")? {
            1 => SignalKind::Typing {
                channel: ChannelId::from_bytes(r.array("channel")?),
            },
            2 => SignalKind::Presence {
                status: match r.u8("status")? {
                    1 => Status::Online,
                    2 => Status::Idle,
                    3 => Status::Dnd,
                    4 => Status::Offline,
                    _ => return Err(OpError::Malformed("unknown status")),
                },
            },
            _ => return Err(OpError::Malformed("unknown signal kind")),
        };
        let expires_at_ms = r.u64_be("expiry")?;
        let signed_len = r.position();
        let signature: [u8; 64] = r.array("signature")?;
        r.finish()?;
        if !user.signed(SIGNAL_DOMAIN, &bytes[..signed_len], &signature) {
            return Err(OpError::BadSignature);
        }
        Ok(Signal {
            guild,
            user,
            kind,
            expires_at_ms,
        })
    }

    /// Whether the signal still holds at `now_ms` and does not claim to hold for longer than
    /// `MAX_SIGNAL_TTL_MS` (with `skew_ms` of clock difference allowed).
    pub fn is_current(&self, now_ms: u64, skew_ms: u64) -> bool {
        self.expires_at_ms > now_ms
            && self.expires_at_ms <= now_ms.saturating_add(MAX_SIGNAL_TTL_MS + skew_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::OpId;

    fn signal(key: &Keypair) -> Signal {
        Signal {
            guild: OpId([1; 32]),
            user: key.user_id(),
            kind: SignalKind::Typing {
                channel: OpId([2; 32]),
            },
            expires_at_ms: 10_000,
        }
    }

    #[test]
    fn signals_round_trip_and_refuse_tampering() {
        let key = Keypair::from_secret([9; 32]);
        let bytes = signal(&key).sign(&key);
        assert_eq!(Signal::verify(&bytes), Ok(signal(&key)));
        for at in [0, 1, 40, 66, 100, bytes.len() - 1] {
            let mut tampered = bytes.clone();
            tampered[at] ^= 1;
            assert!(Signal::verify(&tampered).is_err(), "byte {at} is covered");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Signal::verify(&longer).is_err());
        assert!(Signal::verify(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn a_signal_by_another_key_does_not_verify() {
        let key = Keypair::from_secret([9; 32]);
        let other = Keypair::from_secret([8; 32]);
        let forged = signal(&key).sign(&other);
        assert_eq!(Signal::verify(&forged), Err(OpError::BadSignature));
    }

    #[test]
    fn expiry_bounds_how_long_a_signal_holds() {
        let s = Signal {
            expires_at_ms: 20_000,
            ..signal(&Keypair::from_secret([9; 32]))
        };
        assert!(s.is_current(19_999, 0));
        assert!(!s.is_current(20_000, 0));
        let far = Signal {
            expires_at_ms: 1_000 + MAX_SIGNAL_TTL_MS + 1,
            ..s
        };
        assert!(!far.is_current(1_000, 0));
        assert!(far.is_current(1_000, 1));
    }
}
