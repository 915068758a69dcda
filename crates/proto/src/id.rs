//! Identities and ids: users and nodes are ed25519 public keys, everything else is named by the
//! hash of the op that created it. All have a stable text form: 64 lowercase hex digits.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdParseError {
    #[error("an id is 64 hex digits, got {0} characters")]
    Length(usize),
    #[error("an id is lowercase hex digits")]
    NotHex,
    #[error("not a valid ed25519 public key")]
    NotAKey,
}

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &hex::encode(self.0)[..12])
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, IdParseError> {
                parse_hex32(s).map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hash_id!(
    /// The SHA-256 of an op's canonical unsigned bytes (see `spec/ops.md`). Guilds, channels,
    /// roles, invites, threads and messages are named by the id of the op that created them.
    OpId
);

hash_id!(
    /// A user: the 32 bytes of their ed25519 public key. Nothing ties it to a node, so a user
    /// who exports their key keeps their identity on another node.
    UserId
);

hash_id!(
    /// An invite's public key: the ed25519 key its secret derives (`InviteKey::from_secret`).
    /// `InviteCreate` carries it and a `Join` carries this key's signature over the joiner's
    /// join (`InviteKey::prove_join`), so no op holds the secret or anything it follows from.
    InviteKey
);

hash_id!(
    /// A node: the 32 bytes of its ed25519 public key, the libp2p identity key its peer id is
    /// made from (the net crate converts between the two). A member's `Home` names the nodes
    /// that serve the guild to them (`spec/auth.md` §13).
    NodeId
);

pub type GuildId = OpId;
pub type ChannelId = OpId;
pub type RoleId = OpId;
pub type MessageId = OpId;
pub type InviteId = OpId;

fn parse_hex32(s: &str) -> Result<[u8; 32], IdParseError> {
    if s.len() != 64 {
        return Err(IdParseError::Length(s.len()));
    }
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(IdParseError::NotHex);
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| IdParseError::NotHex)?;
    Ok(out)
}

impl UserId {
    pub fn verifying_key(&self) -> Result<VerifyingKey, IdParseError> {
        VerifyingKey::from_bytes(&self.0).map_err(|_| IdParseError::NotAKey)
    }

    /// Whether `signature` over `domain ‖ signed` is this user's: strict ed25519, weak keys
    /// refused, as for ops.
    pub fn signed(&self, domain: &[u8], signed: &[u8], signature: &[u8; 64]) -> bool {
        verify_strict(&self.0, domain, signed, signature)
    }
}

/// Whether `signature` over `domain ‖ signed` is by the ed25519 public key `key`: strict
/// verification (`VerifyingKey::verify_strict`), weak (small-order) keys refused.
fn verify_strict(key: &[u8; 32], domain: &[u8], signed: &[u8], signature: &[u8; 64]) -> bool {
    VerifyingKey::from_bytes(key).is_ok_and(|key| {
        !key.is_weak()
            && key
                .verify_strict(
                    &[domain, signed].concat(),
                    &ed25519_dalek::Signature::from_bytes(signature),
                )
                .is_ok()
    })
}

/// The prefix of the seed an invite secret derives its key from (`spec/ops.md` §6.1).
pub const INVITE_KEY_DOMAIN: &[u8] = b"guildhall/invite-key/v1\0";
/// The prefix of the bytes a join proof signs (`spec/ops.md` §6.1).
pub const JOIN_PROOF_DOMAIN: &[u8] = b"guildhall/join-proof/v1\0";
/// The prefix of the bytes a fetch proof signs (`spec/ops.md` §6.1).
pub const FETCH_PROOF_DOMAIN: &[u8] = b"guildhall/join-fetch/v1\0";

impl InviteKey {
    /// The signing key that the invite secret `secret` derives: the ed25519 key whose RFC 8032
    /// seed is `SHA-256(INVITE_KEY_DOMAIN ‖ secret)`. Whoever knows the secret holds it.
    pub fn keypair(secret: &[u8]) -> Keypair {
        Keypair::from_secret(sha256(&[INVITE_KEY_DOMAIN, secret]))
    }

    /// The public key of the invite whose secret is `secret`.
    pub fn from_secret(secret: &[u8]) -> InviteKey {
        InviteKey(Self::keypair(secret).user_id().0)
    }

    /// The proof, by the key `secret` derives, that `author` may join `guild` by `invite`: the
    /// signature over `JOIN_PROOF_DOMAIN ‖ join_proof_bytes(guild, invite, author)`.
    pub fn prove_join(
        secret: &[u8],
        guild: &GuildId,
        invite: &InviteId,
        author: &UserId,
    ) -> [u8; 64] {
        Self::keypair(secret).sign(JOIN_PROOF_DOMAIN, &join_proof_bytes(guild, invite, author))
    }

    /// Whether `proof` is this key's signature over `author`'s join of `guild` by `invite`
    /// (strict ed25519, weak keys refused): a proof made for another author, guild or invite
    /// does not open it.
    pub fn opens_join(
        &self,
        guild: &GuildId,
        invite: &InviteId,
        author: &UserId,
        proof: &[u8; 64],
    ) -> bool {
        verify_strict(
            &self.0,
            JOIN_PROOF_DOMAIN,
            &join_proof_bytes(guild, invite, author),
            proof,
        )
    }

    /// The proof, by the key `secret` derives, that node `requester` may fetch `guild` to join
    /// it by `invite`: the signature over `FETCH_PROOF_DOMAIN ‖ fetch_proof_bytes(guild,
    /// invite, requester)`. It names the requesting node, whose peer id the transport
    /// authenticates, so it opens nothing for any other node.
    pub fn prove_fetch(
        secret: &[u8],
        guild: &GuildId,
        invite: &InviteId,
        requester: &NodeId,
    ) -> [u8; 64] {
        Self::keypair(secret).sign(
            FETCH_PROOF_DOMAIN,
            &fetch_proof_bytes(guild, invite, requester),
        )
    }

    /// Whether `proof` is this key's signature over node `requester`'s fetch of `guild` by
    /// `invite` (strict ed25519, weak keys refused): a proof made for another node, guild or
    /// invite does not open it, nor does a join proof.
    pub fn opens_fetch(
        &self,
        guild: &GuildId,
        invite: &InviteId,
        requester: &NodeId,
        proof: &[u8; 64],
    ) -> bool {
        verify_strict(
            &self.0,
            FETCH_PROOF_DOMAIN,
            &fetch_proof_bytes(guild, invite, requester),
            proof,
        )
    }
}

/// What a fetch proof signs after `FETCH_PROOF_DOMAIN`: `guild ‖ invite ‖ requester`, 96 bytes.
pub fn fetch_proof_bytes(guild: &GuildId, invite: &InviteId, requester: &NodeId) -> [u8; 96] {
    invite_proof_bytes(guild, invite, &requester.0)
}

/// What a join proof signs after `JOIN_PROOF_DOMAIN`: `guild ‖ invite ‖ author`, 96 bytes.
pub fn join_proof_bytes(guild: &GuildId, invite: &InviteId, author: &UserId) -> [u8; 96] {
    invite_proof_bytes(guild, invite, &author.0)
}

/// `guild ‖ invite ‖ holder`: what both invite proofs sign, each after its own domain, the
/// holder being the joining author or the fetching node.
fn invite_proof_bytes(guild: &GuildId, invite: &InviteId, holder: &[u8; 32]) -> [u8; 96] {
    let mut out = [0u8; 96];
    out[..32].copy_from_slice(&guild.0);
    out[32..64].copy_from_slice(&invite.0);
    out[64..].copy_from_slice(holder);
    out
}

pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// A user's (or node's) secret signing key. The node stores it; the core only signs with it.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
}

impl Keypair {
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    pub fn secret(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    pub fn user_id(&self) -> UserId {
        UserId(self.signing.verifying_key().to_bytes())
    }

    /// The id of the node whose identity key this is.
    pub fn node_id(&self) -> NodeId {
        NodeId(self.signing.verifying_key().to_bytes())
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// This key's signature over `domain ‖ signed` (checked by `UserId::signed`).
    pub(crate) fn sign(&self, domain: &[u8], signed: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.signing.sign(&[domain, signed].concat()).to_bytes()
    }

    /// `unsigned` followed by this key's signature over `domain ‖ unsigned`: the wire form of
    /// signals and DM records and envelopes (checked by `UserId::signed`).
    pub(crate) fn sign_appended(&self, domain: &[u8], mut unsigned: Vec<u8>) -> Vec<u8> {
        let signature = self.sign(domain, &unsigned);
        unsigned.extend_from_slice(&signature);
        unsigned
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({:?})", self.user_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_rejects_garbage() {
        let id = OpId([0xab; 32]);
        let text = id.to_string();
        assert_eq!(text, "ab".repeat(32));
        assert_eq!(text.parse::<OpId>(), Ok(id));
        assert_eq!("abc".parse::<OpId>(), Err(IdParseError::Length(3)));
        assert_eq!("AB".repeat(32).parse::<OpId>(), Err(IdParseError::NotHex));
        assert_eq!("zz".repeat(32).parse::<OpId>(), Err(IdParseError::NotHex));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<OpId>(&json).unwrap(), id);
    }

    #[test]
    fn user_id_is_the_public_key() {
        let kp = Keypair::from_secret([7; 32]);
        let user = kp.user_id();
        assert_eq!(user.verifying_key().unwrap().to_bytes(), user.0);
    }
}
