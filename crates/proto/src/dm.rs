//! End-to-end encrypted direct messages: signed DM key records, the envelope nodes store and
//! relay, and sealing and opening it. Pure functions: every random value is passed in, so the
//! scheme is testable with vectors (`spec/dm.md`).
//!
//! A message is encrypted once under a random body key (XChaCha20-Poly1305); the body key is
//! wrapped to each member's X25519 DM key under a key derived (HKDF-SHA256) from two
//! Diffie-Hellman results: the message's ephemeral key with the member's key (secrecy), and the
//! sender's DM key with the member's key (the member can tell the sender's DM key made it).
//! Every wrap is bound to a hash of the header and body, so no member can alter the body and
//! keep another member's wrap valid. Nodes see who talks to whom and when, never what.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::id::{Keypair, UserId, sha256};
use crate::wire::{DecodeError, Reader, Writer};

const DM_VERSION: u8 = 1;
const KEY_RECORD_DOMAIN: &[u8] = b"guildhall/dm-key/v1\0";
const ENVELOPE_DOMAIN: &[u8] = b"guildhall/dm/v1\0";
const BODY_AAD_DOMAIN: &[u8] = b"guildhall/dm/v1 body\0";
const WRAP_INFO: &[u8] = b"guildhall/dm/v1 wrap\0";
const PAIR_DOMAIN: &[u8] = b"guildhall/dm/v1 pair\0";
const KEY_COMMIT_DOMAIN: &[u8] = b"guildhall/dm/v1 key commit\0";

/// Members of one conversation, the sender included.
pub const MAX_DM_MEMBERS: usize = 25;
/// The encrypted body: a padded plaintext plus the 16-byte tag.
pub const MAX_DM_BODY_BYTES: usize = 32 * 1024;
/// Plaintext is padded to a multiple of this, so lengths leak only coarsely.
pub const DM_PADDING: usize = 256;
/// A node's address in a key record (a libp2p multiaddr's bytes).
pub const MAX_HOME_BYTES: usize = 256;
const WRAP_BYTES: usize = 32 + 32 + 24 + 48;
/// Version, conversation, sender, sender key, ephemeral key, key commitment, sent time, wraps,
/// body, signature.
pub const MAX_DM_ENVELOPE_BYTES: usize =
    1 + 32 * 5 + 8 + 1 + MAX_DM_MEMBERS * WRAP_BYTES + 24 + 3 + MAX_DM_BODY_BYTES + 64;
const MAX_KEY_RECORD_BYTES: usize = 1 + 32 + 32 + 10 + 8 + 2 + MAX_HOME_BYTES + 64;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DmError {
    #[error("the DM is {0} bytes, more than the limit of {max}", max = MAX_DM_ENVELOPE_BYTES)]
    TooLarge(usize),
    #[error("unknown DM format version {0}")]
    UnknownVersion(u8),
    #[error("the DM is cut short: {0}")]
    Truncated(&'static str),
    #[error("malformed DM: {0}")]
    Malformed(String),
    #[error("the signature does not verify for the DM's sender")]
    BadSignature,
    #[error("a conversation has 1 to {MAX_DM_MEMBERS} members, the sender among them")]
    BadMembers,
    #[error("this DM is not addressed to you")]
    NotARecipient,
    #[error("the DM is wrapped to a DM key you do not hold")]
    UnknownKey,
    #[error("the DM was altered or was not made by the sender's DM key")]
    Tampered,
    #[error("a DM key is not a usable X25519 key (low order)")]
    BadKey,
    #[error("the sender's DM key is not one the sender published")]
    UnknownSenderKey,
    #[error("this DM was already received")]
    Replayed,
}

impl DmError {
    /// A stable machine-readable code for clients, peers and logs.
    pub fn code(&self) -> &'static str {
        match self {
            DmError::TooLarge(_) => "dm_too_large",
            DmError::UnknownVersion(_) => "unknown_version",
            DmError::Truncated(_) => "dm_truncated",
            DmError::Malformed(_) => "malformed_dm",
            DmError::BadSignature => "bad_signature",
            DmError::BadMembers => "dm_bad_members",
            DmError::NotARecipient => "dm_not_recipient",
            DmError::UnknownKey => "dm_unknown_key",
            DmError::Tampered => "dm_tampered",
            DmError::BadKey => "dm_bad_key",
            DmError::UnknownSenderKey => "dm_unknown_sender_key",
            DmError::Replayed => "dm_replayed",
        }
    }
}

impl From<DecodeError> for DmError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Truncated(what) => DmError::Truncated(what),
            other => DmError::Malformed(other.to_string()),
        }
    }
}

/// The public half of an X25519 DM key for a secret.
pub fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*secret)).to_bytes()
}

/// The conversation id of the 1:1 DM between two users: the same whoever computes it.
pub fn pair_conversation(a: &UserId, b: &UserId) -> [u8; 32] {
    let (low, high) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    sha256(&[PAIR_DOMAIN, &low.0, &high.0])
}

/// A user's X25519 DM key, signed by the user's identity key. A user rotates by publishing a
/// record with a higher version; older records stay valid so history stays readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmKeyRecord {
    pub user: UserId,
    pub key: [u8; 32],
    pub version: u64,
    pub created_ms: u64,
    /// Where the user's home node is reached (a libp2p multiaddr's bytes; empty if unknown).
    pub home: Vec<u8>,
}

impl DmKeyRecord {
    fn unsigned_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(DM_VERSION);
        w.fixed(&self.user.0);
        w.fixed(&self.key);
        w.uint(self.version);
        w.u64_be(self.created_ms);
        w.bytes(&self.home);
        w.into_bytes()
    }

    /// The record's wire form, signed by `identity` (which must be the user's).
    pub fn sign(&self, identity: &Keypair) -> Vec<u8> {
        identity.sign_appended(KEY_RECORD_DOMAIN, self.unsigned_bytes())
    }

    /// Decodes a record, checks its user signed it and that its key is usable.
    pub fn verify(bytes: &[u8]) -> Result<DmKeyRecord, DmError> {
        if bytes.len() > MAX_KEY_RECORD_BYTES {
            return Err(DmError::TooLarge(bytes.len()));
        }
        let mut r = Reader::new(bytes);
        check_version(&mut r)?;
        let record = DmKeyRecord {
            user: UserId(r.array("user")?),
            key: r.array("dm key")?,
            version: r.uint("version")?,
            created_ms: r.u64_be("created")?,
            home: r.bytes("home", MAX_HOME_BYTES)?.to_vec(),
        };
        let signed_len = r.position();
        let signature: [u8; 64] = r.array("signature")?;
        r.finish()?;
        verify_signature(
            &record.user,
            KEY_RECORD_DOMAIN,
            &bytes[..signed_len],
            &signature,
        )?;
        if is_low_order(&record.key) {
            return Err(DmError::BadKey);
        }
        Ok(record)
    }
}

/// The body key wrapped to one member's DM key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrap {
    pub user: UserId,
    /// The member's X25519 DM key this wrap opens with.
    pub key: [u8; 32],
    pub nonce: [u8; 24],
    /// The 32-byte body key and its 16-byte tag.
    pub sealed: [u8; 48],
}

/// What nodes store and relay: ciphertext, its members, and the sender's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmEnvelope {
    pub conversation: [u8; 32],
    pub sender: UserId,
    /// The sender's X25519 DM key (one of the sender's published records).
    pub sender_key: [u8; 32],
    /// This message's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// SHA-256 of the body key: every member must unwrap the same key, so all of them read
    /// the same message (the AEAD alone does not commit to its key).
    pub key_commit: [u8; 32],
    /// The sender's wall clock, milliseconds since the Unix epoch.
    pub sent_ms: u64,
    /// One per member, the sender included, in any order, users unique.
    pub wraps: Vec<Wrap>,
    pub body_nonce: [u8; 24],
    pub body: Vec<u8>,
}

/// An envelope whose signature checked, with its id and the exact bytes received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDm {
    pub envelope: DmEnvelope,
    /// SHA-256 of the signed bytes (without the signature): names the message everywhere.
    pub id: [u8; 32],
    pub bytes: Vec<u8>,
}

impl DmEnvelope {
    /// The bytes the body is bound to: everything but the wraps' sealed keys and the body.
    fn header_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(DM_VERSION);
        w.fixed(&self.conversation);
        w.fixed(&self.sender.0);
        w.fixed(&self.sender_key);
        w.fixed(&self.ephemeral);
        w.fixed(&self.key_commit);
        w.u64_be(self.sent_ms);
        w.u8(self.wraps.len() as u8);
        for wrap in &self.wraps {
            w.fixed(&wrap.user.0);
            w.fixed(&wrap.key);
        }
        w.into_bytes()
    }

    /// What every wrap is bound to: the header, the body nonce and the body.
    fn context(&self) -> [u8; 32] {
        sha256(&[&self.header_bytes(), &self.body_nonce, &self.body])
    }

    fn unsigned_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(DM_VERSION);
        w.fixed(&self.conversation);
        w.fixed(&self.sender.0);
        w.fixed(&self.sender_key);
        w.fixed(&self.ephemeral);
        w.fixed(&self.key_commit);
        w.u64_be(self.sent_ms);
        w.u8(self.wraps.len() as u8);
        for wrap in &self.wraps {
            w.fixed(&wrap.user.0);
            w.fixed(&wrap.key);
            w.fixed(&wrap.nonce);
            w.fixed(&wrap.sealed);
        }
        w.fixed(&self.body_nonce);
        w.bytes(&self.body);
        w.into_bytes()
    }

    /// The envelope's wire form, signed by `identity` (which must be the sender's).
    pub fn sign(&self, identity: &Keypair) -> Vec<u8> {
        identity.sign_appended(ENVELOPE_DOMAIN, self.unsigned_bytes())
    }

    /// Decodes an envelope, checks its shape and its sender's signature. Says nothing of the
    /// ciphertext: only a member can check that (`open`).
    pub fn verify(bytes: &[u8]) -> Result<VerifiedDm, DmError> {
        if bytes.len() > MAX_DM_ENVELOPE_BYTES {
            return Err(DmError::TooLarge(bytes.len()));
        }
        let mut r = Reader::new(bytes);
        check_version(&mut r)?;
        let conversation = r.array("conversation")?;
        let sender = UserId(r.array("sender")?);
        let sender_key = r.array("sender key")?;
        let ephemeral = r.array("ephemeral key")?;
        let key_commit = r.array("key commitment")?;
        let sent_ms = r.u64_be("sent time")?;
        let count = r.u8("member count")? as usize;
        if count == 0 || count > MAX_DM_MEMBERS {
            return Err(DmError::BadMembers);
        }
        let mut wraps = Vec::with_capacity(count);
        for _ in 0..count {
            wraps.push(Wrap {
                user: UserId(r.array("member")?),
                key: r.array("member key")?,
                nonce: r.array("wrap nonce")?,
                sealed: r.array("wrapped key")?,
            });
        }
        let body_nonce = r.array("body nonce")?;
        let body = r.bytes("body", MAX_DM_BODY_BYTES)?.to_vec();
        let signed_len = r.position();
        let signature: [u8; 64] = r.array("signature")?;
        r.finish()?;
        let envelope = DmEnvelope {
            conversation,
            sender,
            sender_key,
            ephemeral,
            key_commit,
            sent_ms,
            wraps,
            body_nonce,
            body,
        };
        if !members_are_valid(&envelope.sender, &envelope.wraps) {
            return Err(DmError::BadMembers);
        }
        if envelope.body.len() < 16 {
            return Err(DmError::Truncated("body"));
        }
        verify_signature(&sender, ENVELOPE_DOMAIN, &bytes[..signed_len], &signature)?;
        Ok(VerifiedDm {
            id: sha256(&[&bytes[..signed_len]]),
            envelope,
            bytes: bytes.to_vec(),
        })
    }

    /// The members, the sender included.
    pub fn members(&self) -> impl Iterator<Item = &UserId> {
        self.wraps.iter().map(|w| &w.user)
    }
}

fn members_are_valid(sender: &UserId, wraps: &[Wrap]) -> bool {
    let mut users: Vec<&UserId> = wraps.iter().map(|w| &w.user).collect();
    users.sort();
    users.dedup();
    users.len() == wraps.len()
        && (1..=MAX_DM_MEMBERS).contains(&users.len())
        && users.contains(&sender)
}

/// The random values one sealing consumes; a client draws them from its CSPRNG.
#[derive(Debug, Clone)]
pub struct SealRandomness {
    pub ephemeral_secret: [u8; 32],
    pub body_key: [u8; 32],
    pub body_nonce: [u8; 24],
    /// One per member, in member order.
    pub wrap_nonces: Vec<[u8; 24]>,
}

/// What the sender knows when it seals a message.
pub struct Sealing<'a> {
    pub conversation: [u8; 32],
    pub sender: UserId,
    pub sender_secret: &'a [u8; 32],
    /// Every member with the DM key to wrap to, the sender (with its own key) included.
    pub members: &'a [(UserId, [u8; 32])],
    pub sent_ms: u64,
    pub plaintext: &'a [u8],
}

/// Encrypts `plaintext` to every member. The result is unsigned: the sender's identity key
/// signs it (`DmEnvelope::sign`).
pub fn seal(sealing: &Sealing, random: &SealRandomness) -> Result<DmEnvelope, DmError> {
    if random.wrap_nonces.len() != sealing.members.len() {
        return Err(DmError::Malformed("one wrap nonce per member".into()));
    }
    let padded = pad(sealing.plaintext, DM_PADDING);
    if padded.len() + 16 > MAX_DM_BODY_BYTES {
        return Err(DmError::TooLarge(padded.len() + 16));
    }
    let ephemeral = StaticSecret::from(random.ephemeral_secret);
    let sender_secret = StaticSecret::from(*sealing.sender_secret);
    let mut envelope = DmEnvelope {
        conversation: sealing.conversation,
        sender: sealing.sender,
        sender_key: PublicKey::from(&sender_secret).to_bytes(),
        ephemeral: PublicKey::from(&ephemeral).to_bytes(),
        key_commit: key_commitment(&random.body_key),
        sent_ms: sealing.sent_ms,
        wraps: sealing
            .members
            .iter()
            .zip(&random.wrap_nonces)
            .map(|((user, key), nonce)| Wrap {
                user: *user,
                key: *key,
                nonce: *nonce,
                sealed: [0; 48],
            })
            .collect(),
        body_nonce: random.body_nonce,
        body: Vec::new(),
    };
    if !members_are_valid(&envelope.sender, &envelope.wraps) {
        return Err(DmError::BadMembers);
    }
    envelope.body = aead(&random.body_key)
        .encrypt(
            &XNonce::from(random.body_nonce),
            Payload {
                msg: &padded,
                aad: &body_aad(&envelope),
            },
        )
        .map_err(|_| DmError::Malformed("cannot encrypt".into()))?;
    let context = envelope.context();
    for wrap in &mut envelope.wraps {
        let member = PublicKey::from(wrap.key);
        let for_secrecy = ephemeral.diffie_hellman(&member);
        let for_sender = sender_secret.diffie_hellman(&member);
        if !for_secrecy.was_contributory() || !for_sender.was_contributory() {
            return Err(DmError::BadKey);
        }
        let wrap_key = wrap_key(
            &envelope.ephemeral,
            for_secrecy.as_bytes(),
            for_sender.as_bytes(),
            &context,
            wrap,
        );
        let sealed = aead(&wrap_key)
            .encrypt(&XNonce::from(wrap.nonce), random.body_key.as_slice())
            .map_err(|_| DmError::Malformed("cannot wrap".into()))?;
        wrap.sealed = sealed.try_into().expect("a 32-byte key seals to 48 bytes");
    }
    Ok(envelope)
}

/// Decrypts an envelope for member `me`, whose DM secrets `secret_for` finds by public key.
/// Success proves the body is what the holder of `sender_key` sealed; the caller still checks
/// that `sender_key` is one the sender published (`DmKeyRecord`).
pub fn open(
    envelope: &DmEnvelope,
    me: &UserId,
    secret_for: impl Fn(&[u8; 32]) -> Option<[u8; 32]>,
) -> Result<Vec<u8>, DmError> {
    let wrap = envelope
        .wraps
        .iter()
        .find(|w| &w.user == me)
        .ok_or(DmError::NotARecipient)?;
    let secret = StaticSecret::from(secret_for(&wrap.key).ok_or(DmError::UnknownKey)?);
    let for_secrecy = secret.diffie_hellman(&PublicKey::from(envelope.ephemeral));
    let for_sender = secret.diffie_hellman(&PublicKey::from(envelope.sender_key));
    if !for_secrecy.was_contributory() || !for_sender.was_contributory() {
        return Err(DmError::Tampered);
    }
    let wrap_key = wrap_key(
        &envelope.ephemeral,
        for_secrecy.as_bytes(),
        for_sender.as_bytes(),
        &envelope.context(),
        wrap,
    );
    let body_key: [u8; 32] = aead(&wrap_key)
        .decrypt(&XNonce::from(wrap.nonce), wrap.sealed.as_slice())
        .map_err(|_| DmError::Tampered)?
        .try_into()
        .map_err(|_| DmError::Tampered)?;
    if key_commitment(&body_key) != envelope.key_commit {
        return Err(DmError::Tampered);
    }
    let padded = aead(&body_key)
        .decrypt(
            &XNonce::from(envelope.body_nonce),
            Payload {
                msg: &envelope.body,
                aad: &body_aad(envelope),
            },
        )
        .map_err(|_| DmError::Tampered)?;
    unpad(padded)
}

fn key_commitment(body_key: &[u8; 32]) -> [u8; 32] {
    sha256(&[KEY_COMMIT_DOMAIN, body_key])
}

fn body_aad(envelope: &DmEnvelope) -> Vec<u8> {
    [BODY_AAD_DOMAIN, &envelope.header_bytes()].concat()
}

fn wrap_key(
    ephemeral: &[u8; 32],
    for_secrecy: &[u8; 32],
    for_sender: &[u8; 32],
    context: &[u8; 32],
    wrap: &Wrap,
) -> [u8; 32] {
    let ikm = [for_secrecy.as_slice(), for_sender].concat();
    let info = [WRAP_INFO, context, &wrap.user.0, &wrap.key].concat();
    let mut key = [0; 32];
    Hkdf::<Sha256>::new(Some(ephemeral), &ikm)
        .expand(&info, &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    key
}

pub(crate) fn aead(key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&(*key).into())
}

/// Plaintext, a 0x80 marker, then zeros up to a multiple of `block`.
pub(crate) fn pad(plaintext: &[u8], block: usize) -> Vec<u8> {
    let len = (plaintext.len() + 1).div_ceil(block) * block;
    let mut padded = Vec::with_capacity(len);
    padded.extend_from_slice(plaintext);
    padded.push(0x80);
    padded.resize(len, 0);
    padded
}

pub(crate) fn unpad(mut padded: Vec<u8>) -> Result<Vec<u8>, DmError> {
    let marker = padded
        .iter()
        .rposition(|&b| b != 0)
        .filter(|&i| padded[i] == 0x80)
        .ok_or_else(|| DmError::Malformed("bad padding".into()))?;
    padded.truncate(marker);
    Ok(padded)
}

fn is_low_order(key: &[u8; 32]) -> bool {
    // A DH with a low-order point yields all zeros whatever the secret.
    !StaticSecret::from([0x42; 32])
        .diffie_hellman(&PublicKey::from(*key))
        .was_contributory()
}

fn check_version(r: &mut Reader) -> Result<(), DmError> {
    match r.u8("version")? {
        DM_VERSION => Ok(()),
        other => Err(DmError::UnknownVersion(other)),
    }
}

fn verify_signature(
    user: &UserId,
    domain: &[u8],
    signed: &[u8],
    signature: &[u8; 64],
) -> Result<(), DmError> {
    if user.signed(domain, signed, signature) {
        Ok(())
    } else {
        Err(DmError::BadSignature)
    }
}

#[cfg(test)]
mod tests;
