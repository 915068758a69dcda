//! What nodes say to each other: the sync request-response protocol (pushes of new ops and
//! signals, catch-up, join, back-fill, DMs) and its limits. `spec/federation.md` is the normative description of these types.

use guildhall_proto::guild::LogPositions;
use guildhall_proto::hlc::Hlc;
use guildhall_proto::id::{GuildId, InviteId, OpId, UserId};
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

/// The request-response protocol for join and catch-up.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/guildhall/sync/1");
/// The identify protocol version nodes announce.
pub const PROTOCOL_VERSION: &str = "/guildhall/1";

/// Ops in one sync response, and their total encoded bytes: whichever is reached first.
pub const MAX_BATCH_OPS: usize = 2_000;
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// A request names a guild and at most this many authors' positions.
pub const MAX_REQUEST_BYTES: u64 = 256 * 1024;
pub const MAX_HAVE_AUTHORS: usize = 4_096;
/// A response: one batch of ops plus its CBOR framing.
pub const MAX_RESPONSE_BYTES: u64 = MAX_BATCH_BYTES as u64 + 256 * 1024;
/// DMs handed over in one request, and their total bytes.
pub const MAX_DMS_PER_REQUEST: usize = 64;
pub const MAX_DM_REQUEST_BYTES: usize = 192 * 1024;
/// DM key records in one answer (a user's newest).
pub const MAX_DM_KEY_RECORDS: usize = 64;
/// Channel keys asked for in one request.
pub const MAX_CHANNEL_KEYS: usize = 64;
/// Ops and signals in one push, and their total bytes: whichever is reached first. Well
/// under `MAX_REQUEST_BYTES`, which also holds the request's framing; an op of the largest
/// size (`limits::MAX_OP_BYTES`) always fits alone.
pub const MAX_PUSH_ITEMS: usize = 256;
pub const MAX_PUSH_BYTES: usize = 192 * 1024;

/// Where a node is in one author's log: the author, the highest seq held, and (when it is to
/// be compared) the digest of every op held up to it (`Guild::log_digest`).
pub type Position = (UserId, u64, Option<serde_bytes::ByteArray<32>>);
/// The (hlc, op id) of the last op received; the next batch starts after it.
pub type Cursor = (u64, OpId);

pub fn positions_to_wire(positions: &LogPositions) -> Vec<Position> {
    positions
        .iter()
        .map(|(author, (seq, digest))| (*author, *seq, digest.map(serde_bytes::ByteArray::new)))
        .collect()
}

pub fn positions_from_wire(positions: &[Position]) -> LogPositions {
    positions
        .iter()
        .map(|(author, seq, digest)| (*author, (*seq, digest.map(|d| d.into_array()))))
        .collect()
}

pub fn cursor_from_wire((hlc, id): Cursor) -> (Hlc, OpId) {
    (Hlc(hlc), id)
}

pub fn cursor_to_wire((hlc, id): (Hlc, OpId)) -> Cursor {
    (hlc.0, id)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// "Here is where I am in each author's log; send what I lack, after `after`." Authors not
    /// listed are ones the requester holds nothing of. A catch-up repeats the same `have` and
    /// moves `after` to the last op of each batch.
    Catchup {
        guild: GuildId,
        have: Vec<Position>,
        after: Option<Cursor>,
    },
    /// "New ops and signals of a guild, for a node entitled to it": sent as they are committed
    /// or first accepted, one push in flight per peer, each answered once applied.
    Push {
        guild: GuildId,
        ops: Vec<serde_bytes::ByteBuf>,
        signals: Vec<serde_bytes::ByteBuf>,
    },
    /// "A user of mine holds this invite; let me replicate the guild." `proof` is the invite
    /// key's signature binding the invite to the requesting node (`InviteKey::prove_fetch`), so
    /// the secret never leaves the joiner and the proof serves nobody else. Answered with every
    /// guild-state op and the newest `recent` content ops (all of history when `recent` is
    /// absent), in (hlc, id) order; the joiner repeats it, moving `after`, until `more` is
    /// false.
    Join {
        guild: GuildId,
        invite: InviteId,
        proof: serde_bytes::ByteArray<64>,
        after: Option<Cursor>,
        #[serde(default)]
        recent: Option<u32>,
    },
    /// "Send the guild's content ops before this one, newest first": history a node that
    /// joined with recent ops only fills in, moving `before` to the last op of each batch.
    Backfill { guild: GuildId, before: Cursor },
    /// "What DM key records do you hold for this user?"
    DmKeys { user: UserId },
    /// "Give me these channel keys of a guild": answered with those the answering node holds
    /// whose channel the requester is a viewer node of in its current state (`auth.md` §9).
    ChannelKeys {
        guild: GuildId,
        keys: Vec<serde_bytes::ByteArray<32>>,
    },
    /// "Here are DMs for members whose home you are": signed envelopes (`spec/dm.md`).
    Dms {
        envelopes: Vec<serde_bytes::ByteBuf>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Signed ops in an order where every op follows its predecessors; `more` when the batch
    /// was cut at a limit and the requester should ask again.
    Ops {
        ops: Vec<serde_bytes::ByteBuf>,
        more: bool,
    },
    Refused {
        code: String,
        message: String,
    },
    /// Signed DM key records, oldest version first.
    DmKeys {
        records: Vec<serde_bytes::ByteBuf>,
    },
    /// Channel keys asked for, each as its channel and the key (the requester checks each
    /// against the key id it asked for).
    ChannelKeys {
        keys: Vec<(OpId, serde_bytes::ByteArray<32>)>,
    },
    /// Every DM of the request is durably stored (or was already).
    DmsTaken {
        count: u32,
    },
    /// Every op of the push has been judged (and stored, when valid), every signal shown.
    Pushed {
        count: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbor<T: Serialize>(value: &T) -> String {
        let bytes = cbor4ii::serde::to_vec(Vec::new(), value).unwrap();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The bytes `spec/federation.md` §4 shows, so that the spec and the codec cannot drift.
    #[test]
    fn sync_messages_have_the_documented_cbor_bytes() {
        let guild = guildhall_proto::id::OpId([0x11; 32]);
        let author = UserId([0x22; 32]);
        let request = Request::Catchup {
            guild,
            have: vec![(author, 7, Some(serde_bytes::ByteArray::new([0x33; 32])))],
            after: Some((5, guildhall_proto::id::OpId([0x44; 32]))),
        };
        // {"catchup": {"guild": "1111…", "have": [["2222…", 7, h'3333…']], "after": [5,
        // "4444…"]}}: map(1), "catchup", map(3), "guild", the id, "have", array(1), array(3),
        // the author, 7, bytes(32), "after", array(2), 5, the id.
        let expected = format!(
            "a1{catchup}a3{guild_key}{guild}{have_key}8183{author}075820{digest}{after_key}8205{cursor}",
            catchup = "6763617463687570",
            guild_key = "656775696c64",
            guild = id_text(0x11),
            have_key = "6468617665",
            author = id_text(0x22),
            digest = "33".repeat(32),
            after_key = "656166746572",
            cursor = id_text(0x44),
        );
        assert_eq!(cbor(&request), expected);
        let response = Response::Ops {
            ops: vec![serde_bytes::ByteBuf::from(vec![1, 2, 3])],
            more: false,
        };
        assert_eq!(
            cbor(&response),
            "a1636f7073a2636f70738143010203646d6f7265f4"
        );
    }

    /// An id's CBOR form: a 64-character text string (head 0x78 0x40) of lowercase hex.
    fn id_text(byte: u8) -> String {
        let text = format!("{byte:02x}").repeat(32);
        let ascii: String = text.bytes().map(|c| format!("{c:02x}")).collect();
        format!("7840{ascii}")
    }
}
