//! The op envelope: the signed, hash-chained unit of replication, and its canonical bytes.

use std::collections::HashMap;

use ed25519_dalek::{Signature, Signer, VerifyingKey};
use thiserror::Error;

use crate::body::Body;
use crate::hlc::Hlc;
use crate::id::{GuildId, Keypair, OpId, UserId, sha256};
use crate::limits;
use crate::wire::{DecodeError, Reader, Writer};

pub const PROTOCOL_VERSION: u8 = 1;
const OP_ID_DOMAIN: &[u8] = b"guildhall/op-id/v1\0";
const SIGNATURE_DOMAIN: &[u8] = b"guildhall/op-sig/v1\0";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OpError {
    #[error("op is {0} bytes, more than the limit of {max}", max = limits::MAX_OP_BYTES)]
    TooLarge(usize),
    #[error("unknown protocol version {0}")]
    UnknownVersion(u8),
    #[error("cannot decode op: {0}")]
    Decode(#[from] DecodeError),
    #[error("malformed op: {0}")]
    Malformed(&'static str),
    #[error("signature does not verify for the op's author")]
    BadSignature,
    #[error("the signing key is not the op's author")]
    WrongSigner,
}

impl OpError {
    /// A stable machine-readable code for clients, peers and logs.
    pub fn code(&self) -> &'static str {
        match self {
            OpError::TooLarge(_) => "op_too_large",
            OpError::UnknownVersion(_) => "unknown_version",
            OpError::Decode(_) => "malformed_op",
            OpError::Malformed(_) => "malformed_op",
            OpError::BadSignature => "bad_signature",
            OpError::WrongSigner => "wrong_signer",
        }
    }
}

/// Everything an op says, before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The guild: the id of its genesis op; all zeros in the genesis op itself.
    pub guild: GuildId,
    pub author: UserId,
    /// Position in the author's log for this guild, from 1.
    pub seq: u64,
    /// The id of the author's op at `seq - 1`; `None` exactly when `seq == 1`.
    pub prev: Option<OpId>,
    pub hlc: Hlc,
    /// Guild-state heads the author had seen, strictly ascending, at most 16.
    pub deps: Vec<OpId>,
    pub body: Body,
}

impl Envelope {
    pub fn encode_unsigned(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(PROTOCOL_VERSION);
        w.fixed(&self.guild.0);
        w.fixed(&self.author.0);
        w.uint(self.seq);
        if let Some(prev) = &self.prev {
            w.fixed(&prev.0);
        }
        w.u64_be(self.hlc.0);
        w.uint(self.deps.len() as u64);
        for dep in &self.deps {
            w.fixed(&dep.0);
        }
        self.body.encode(&mut w);
        w.into_bytes()
    }

    pub fn is_genesis(&self) -> bool {
        matches!(self.body, Body::Genesis { .. })
    }

    /// Shape rules that need nothing but the op itself.
    pub fn check_well_formed(&self) -> Result<(), OpError> {
        let malformed = |why| Err(OpError::Malformed(why));
        if self.seq == 0 {
            return malformed("seq starts at 1");
        }
        if (self.seq == 1) != self.prev.is_none() {
            return malformed("prev is present exactly when seq > 1");
        }
        if self.deps.len() > limits::MAX_DEPS {
            return malformed("more than 16 deps");
        }
        if self.deps.windows(2).any(|w| w[0] >= w[1]) {
            return malformed("deps must be strictly ascending");
        }
        if self.is_genesis() {
            if self.guild != OpId::default() || self.seq != 1 || !self.deps.is_empty() {
                return malformed("genesis has a zero guild, seq 1 and no deps");
            }
        } else if self.guild == OpId::default() {
            return malformed("only genesis has a zero guild id");
        } else if self.deps.is_empty() {
            return malformed("every op but genesis cites at least one guild-state op");
        }
        crate::validate::check_body(&self.body).map_err(OpError::Malformed)
    }

    pub fn sign(self, key: &Keypair) -> Result<Op, OpError> {
        if key.user_id() != self.author {
            return Err(OpError::WrongSigner);
        }
        self.check_well_formed()?;
        let unsigned = self.encode_unsigned();
        if unsigned.len() + 64 > limits::MAX_OP_BYTES {
            return Err(OpError::TooLarge(unsigned.len() + 64));
        }
        let id = op_id_of(&unsigned);
        let signature = key.signing_key().sign(&signing_message(&id)).to_bytes();
        let op = Op {
            envelope: self,
            unsigned,
            signature,
            id,
        };
        // Whatever is signed must decode everywhere: the decoder's limits are the contract.
        Op::decode(&op.encode())?;
        Ok(op)
    }
}

impl Envelope {
    /// Signs, and vouches for the signature without checking it: a signature this process
    /// just made with the author's own key needs no verification (saves ~40 µs per op on the
    /// node's write path).
    pub fn sign_verified(self, key: &Keypair) -> Result<VerifiedOp, OpError> {
        self.sign(key).map(VerifiedOp)
    }
}

fn op_id_of(unsigned: &[u8]) -> OpId {
    OpId(sha256(&[OP_ID_DOMAIN, unsigned]))
}

fn signing_message(id: &OpId) -> Vec<u8> {
    [SIGNATURE_DOMAIN, &id.0].concat()
}

/// A decoded, well-formed op whose signature has not been checked yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    envelope: Envelope,
    unsigned: Vec<u8>,
    signature: [u8; 64],
    id: OpId,
}

impl Op {
    pub fn decode(bytes: &[u8]) -> Result<Op, OpError> {
        if bytes.len() > limits::MAX_OP_BYTES {
            return Err(OpError::TooLarge(bytes.len()));
        }
        let mut r = Reader::new(bytes);
        let version = r.u8("version")?;
        if version != PROTOCOL_VERSION {
            return Err(OpError::UnknownVersion(version));
        }
        let guild = OpId(r.array("guild")?);
        let author = UserId(r.array("author")?);
        let seq = r.uint("seq")?;
        let prev = if seq > 1 {
            Some(OpId(r.array("prev")?))
        } else {
            None
        };
        let hlc = Hlc(r.u64_be("hlc")?);
        let n_deps = r.uint("deps")?;
        if n_deps > limits::MAX_DEPS as u64 {
            return Err(OpError::Malformed("more than 16 deps"));
        }
        let deps = (0..n_deps)
            .map(|_| r.array("dep").map(OpId))
            .collect::<Result<Vec<_>, _>>()?;
        let body = Body::decode(&mut r)?;
        let unsigned_len = r.position();
        let signature = r.array::<64>("signature")?;
        r.finish()?;
        let envelope = Envelope {
            guild,
            author,
            seq,
            prev,
            hlc,
            deps,
            body,
        };
        envelope.check_well_formed()?;
        let unsigned = bytes[..unsigned_len].to_vec();
        Ok(Op {
            id: op_id_of(&unsigned),
            envelope,
            unsigned,
            signature,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        [&self.unsigned[..], &self.signature[..]].concat()
    }

    /// The length of `encode()`'s output, without building it.
    pub fn encoded_len(&self) -> usize {
        self.unsigned.len() + self.signature.len()
    }

    pub fn id(&self) -> OpId {
        self.id
    }

    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    pub fn unsigned_bytes(&self) -> &[u8] {
        &self.unsigned
    }

    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }

    /// The guild this op belongs to: for genesis, its own id.
    pub fn guild(&self) -> GuildId {
        if self.envelope.is_genesis() {
            self.id
        } else {
            self.envelope.guild
        }
    }

    /// Verifies the signature by the rules of `spec/ops.md` §5: ZIP-215 ed25519 by an author
    /// that is not a weak key.
    pub fn verify(self) -> Result<VerifiedOp, OpError> {
        if !usable_author(&self.envelope.author) {
            return Err(OpError::BadSignature);
        }
        ed25519_zebra::VerificationKey::try_from(self.envelope.author.0)
            .and_then(|key| {
                key.verify(
                    &Signature::from_bytes(&self.signature),
                    &signing_message(&self.id),
                )
            })
            .map_err(|_| OpError::BadSignature)?;
        Ok(VerifiedOp(self))
    }
}

/// Whether `author` is a key ops may be signed by: a point, not of small order.
fn usable_author(author: &UserId) -> bool {
    VerifyingKey::from_bytes(&author.0).is_ok_and(|key| !key.is_weak())
}

impl Op {
    /// Decodes an op this node verified before it stored it under `id`: the signature is not
    /// checked again, but the bytes must still hash to `id`, so a damaged store is caught.
    /// Never for bytes from anywhere else.
    pub fn decode_stored(bytes: &[u8], id: &OpId) -> Result<VerifiedOp, OpError> {
        let op = Op::decode(bytes)?;
        if op.id != *id {
            return Err(OpError::Malformed(
                "stored bytes do not hash to their op id",
            ));
        }
        Ok(VerifiedOp(op))
    }
}

/// Verifies many ops, each with its own verdict, exactly as `Op::verify` would: under ZIP-215
/// one batch equation accepts the same signatures as checking each, so the batch is checked at
/// once (each author's key decoded once, its terms summed), and only a batch that fails is
/// checked op by op to find which. `rng` draws the batch's random coefficients.
pub fn verify_batch(
    ops: Vec<Op>,
    rng: impl rand_core::CryptoRng,
) -> Vec<Result<VerifiedOp, OpError>> {
    let mut usable: HashMap<UserId, bool> = HashMap::new();
    let mut batch = ed25519_zebra::batch::Verifier::new();
    let authors_ok: Vec<bool> = ops
        .iter()
        .map(|op| {
            let author = op.envelope.author;
            let ok = *usable
                .entry(author)
                .or_insert_with(|| usable_author(&author));
            if ok {
                batch.queue((
                    ed25519_zebra::VerificationKeyBytes::from(author.0),
                    Signature::from_bytes(&op.signature),
                    &signing_message(&op.id),
                ));
            }
            ok
        })
        .collect();
    let all_good = batch.verify(rng).is_ok();
    ops.into_iter()
        .zip(authors_ok)
        .map(|(op, author_ok)| match (author_ok, all_good) {
            (false, _) => Err(OpError::BadSignature),
            (true, true) => Ok(VerifiedOp(op)),
            (true, false) => op.verify(),
        })
        .collect()
}

/// An op whose signature verified against its author. Only this type enters a guild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedOp(Op);

impl VerifiedOp {
    pub fn op(&self) -> &Op {
        &self.0
    }

    pub fn into_op(self) -> Op {
        self.0
    }
}

impl std::ops::Deref for VerifiedOp {
    type Target = Op;
    fn deref(&self) -> &Op {
        &self.0
    }
}
