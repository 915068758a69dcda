//! Guildhall's sans-IO core: identities, signed ops, permissions, authorization and the
//! materialization of guild state and channel history, as pure functions over data.

pub mod access;
pub mod bitset;
pub mod body;
pub mod change_scan;
pub mod dm;
pub mod error;
pub mod guild;
pub mod history;
pub mod hlc;
pub mod id;
pub mod keyring;
pub mod limits;
pub mod meta;
pub mod op;
pub mod perm;
pub mod sealed;
pub mod signal;
pub mod state;
pub mod validate;
pub mod wire;

pub use body::{Body, ChannelKind, OverwriteTarget};
pub use hlc::Hlc;
pub use id::{ChannelId, GuildId, InviteId, Keypair, MessageId, OpId, RoleId, UserId};
pub use op::{Envelope, Op, OpError, VerifiedOp, verify_batch};
pub use sealed::{ChannelKey, KeyId, Sealed, Text};

#[cfg(test)]
mod tests;
