//! Sealed text: the content of a channel that not every member may view, encrypted under a
//! channel key, so that a node replicating the guild for members who cannot view the channel
//! stores and forwards it without being able to read it (`spec/ops.md` §6.1, `spec/auth.md`
//! §9). Pure functions: keys and nonces are passed in.
//!
//! A channel key is 32 random bytes made by the node that first needs one; its id is a hash
//! binding it to its guild and channel, so a node handed a key checks that it opens what it was
//! asked for. Text is padded (as DMs are), then XChaCha20-Poly1305-encrypted with the author
//! and key id as associated data, so a sealed text cannot be moved under another author.

use std::fmt;

use chacha20poly1305::aead::{Aead, Payload};
use serde::{Serialize, Serializer};

use crate::dm::{aead, pad, unpad};
use crate::id::{ChannelId, GuildId, UserId, sha256};
use crate::wire::{DecodeError, Reader, Writer};

pub const KEY_ID_DOMAIN: &[u8] = b"guildhall/channel-key/v1\0";
pub const SEALED_AAD_DOMAIN: &[u8] = b"guildhall/sealed/v1\0";
/// Sealed plaintext is padded to a multiple of this, so lengths leak only coarsely.
pub const SEALED_PADDING: usize = 64;

/// The largest ciphertext of a field whose plain form holds at most `max_plain` bytes: that
/// text padded, plus the 16-byte tag. A sealed field is bounded as its plain form is.
pub const fn max_sealed_bytes(max_plain: usize) -> usize {
    (max_plain + 1).div_ceil(SEALED_PADDING) * SEALED_PADDING + 16
}

/// The id of a channel key: `sha256(domain ‖ guild ‖ channel ‖ key)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 32]);

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", hex::encode(&self.0[..8]))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

/// A channel key and what it belongs to.
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelKey {
    pub guild: GuildId,
    pub channel: ChannelId,
    pub key: [u8; 32],
}

impl fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelKey({:?}, {:?})", self.channel, self.id())
    }
}

impl ChannelKey {
    pub fn id(&self) -> KeyId {
        KeyId(sha256(&[
            KEY_ID_DOMAIN,
            &self.guild.0,
            &self.channel.0,
            &self.key,
        ]))
    }

    /// Seals `text` written by `author`, with a fresh random `nonce`.
    pub fn seal(&self, author: &UserId, text: &str, nonce: [u8; 24]) -> Sealed {
        let key = self.id();
        let ciphertext = aead(&self.key)
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: &pad(text.as_bytes(), SEALED_PADDING),
                    aad: &associated_data(&key, author),
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any length below 2^38 bytes");
        Sealed {
            key,
            nonce,
            ciphertext,
        }
    }

    /// The text `sealed` holds, if this is its key and it opens: `None` for a wrong key, a
    /// forged or altered ciphertext, bad padding or text that is not UTF-8.
    pub fn open(&self, author: &UserId, sealed: &Sealed) -> Option<String> {
        if sealed.key != self.id() {
            return None;
        }
        let padded = aead(&self.key)
            .decrypt(
                &sealed.nonce.into(),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &associated_data(&sealed.key, author),
                },
            )
            .ok()?;
        String::from_utf8(unpad(padded).ok()?).ok()
    }
}

fn associated_data(key: &KeyId, author: &UserId) -> Vec<u8> {
    [SEALED_AAD_DOMAIN, &key.0, &author.0].concat()
}

/// Text under a channel key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sealed {
    pub key: KeyId,
    #[serde(serialize_with = "hex_bytes")]
    pub nonce: [u8; 24],
    #[serde(serialize_with = "hex_bytes")]
    pub ciphertext: Vec<u8>,
}

fn hex_bytes<S: Serializer>(bytes: impl AsRef<[u8]>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

impl Sealed {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.fixed(&self.key.0);
        w.fixed(&self.nonce);
        w.bytes(&self.ciphertext);
    }

    /// Decodes a sealed field whose plain form holds at most `max_plain` bytes.
    pub(crate) fn decode(r: &mut Reader<'_>, max_plain: usize) -> Result<Sealed, DecodeError> {
        Ok(Sealed {
            key: KeyId(r.array("key id")?),
            nonce: r.array("nonce")?,
            ciphertext: r.bytes("ciphertext", max_sealed_bytes(max_plain))?.to_vec(),
        })
    }

    /// Shape rules: a ciphertext holds at least the tag and one padding block.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.ciphertext.len() < SEALED_PADDING + 16
            || !(self.ciphertext.len() - 16).is_multiple_of(SEALED_PADDING)
        {
            return Err("a sealed text is whole padding blocks plus the tag");
        }
        Ok(())
    }
}

/// A text field of a content op: plain, or sealed for a channel not every member may view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Text {
    Plain(String),
    Sealed(Sealed),
}

impl Text {
    pub fn plain(&self) -> Option<&str> {
        match self {
            Text::Plain(text) => Some(text),
            Text::Sealed(_) => None,
        }
    }

    pub fn sealed(&self) -> Option<&Sealed> {
        match self {
            Text::Sealed(sealed) => Some(sealed),
            Text::Plain(_) => None,
        }
    }

    pub fn is_sealed(&self) -> bool {
        matches!(self, Text::Sealed(_))
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Text {
        Text::Plain(text.to_owned())
    }
}

impl From<String> for Text {
    fn from(text: String) -> Text {
        Text::Plain(text)
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.plain() == Some(*other)
    }
}
