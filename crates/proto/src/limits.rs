//! Size limits every node enforces, checked while decoding, before any signature is verified.

/// A whole signed op on the wire: 64 KiB.
pub const MAX_OP_BYTES: usize = 64 * 1024;
/// An op body's encoded fields.
pub const MAX_BODY_BYTES: usize = 48 * 1024;
/// Causal deps per op.
pub const MAX_DEPS: usize = 16;
/// Message content: 4,000 characters, and at most this many bytes of UTF-8.
pub const MAX_CONTENT_CHARS: usize = 4_000;
pub const MAX_CONTENT_BYTES: usize = 16 * 1024;
/// Guild, channel, role and thread names: 1 to 100 characters.
pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_NAME_BYTES: usize = 400;
pub const MAX_REASON_BYTES: usize = 2_048;
pub const MAX_EMOJI_BYTES: usize = 64;
pub const MAX_META_CHANGE_BYTES: usize = 32 * 1024;
/// Rows in any one column of a metadata change, which bounds its ops and its predecessors
/// (`change_scan`). More ops of distinct schema keys than fit in `MAX_META_CHANGE_BYTES`: every
/// key but the four `guild.*` ones is at least 74 bytes, stored once per op.
pub const MAX_META_CHANGE_OPS: u64 = 512;
/// Invites that may still admit someone, per creator and per guild: what a member with
/// CREATE_INSTANT_INVITE (which @everyone has) can make every replica hold.
pub const MAX_INVITES_PER_MEMBER: usize = 100;
pub const MAX_INVITES_PER_GUILD: usize = 1_000;
/// Guild-state ops per author in any minute of their timestamps, counted over an op's causal
/// past (`Guild::insert` refuses one more): each is kept by every replica for good. It binds
/// every author whose ops extend their log (every honest node's users); ops that cite none of
/// their author's earlier ones are forked, and bounded only by the per-peer gossip rate.
pub const MAX_GUILD_STATE_OPS_PER_MINUTE: usize = 120;
/// Values written into the metadata document (topics, descriptions, icon URLs).
pub const MAX_META_VALUE_CHARS: usize = 1_024;
/// Nodes a member may name as their homes in one `Home` op: the nodes that serve them the
/// guild (`spec/auth.md` §13), so what bounds how many nodes one member entitles.
pub const MAX_HOMES_PER_MEMBER: usize = 4;
