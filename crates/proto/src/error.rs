//! Why an op is not (or not yet) part of a guild. Every reason has a stable code.

use thiserror::Error;

use crate::id::OpId;
use crate::perm::Permissions;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("the author is not a member of the guild")]
    NotMember,
    #[error("the author is banned from the guild")]
    Banned,
    #[error("the author is already a member")]
    AlreadyMember,
    #[error("missing permission {0:?}")]
    MissingPermission(Permissions),
    #[error("the target is at or above the author's highest role")]
    Hierarchy,
    #[error("cannot grant permissions the author does not hold: {0:?}")]
    CannotGrant(Permissions),
    #[error("the guild owner cannot be removed")]
    OwnerImmune,
    #[error("use leave to remove yourself")]
    SelfTarget,
    #[error("unknown role")]
    UnknownRole,
    #[error("unknown channel")]
    UnknownChannel,
    #[error("unknown member")]
    UnknownMember,
    #[error("unknown or revoked invite")]
    UnknownInvite,
    #[error("unknown overwrite")]
    UnknownOverwrite,
    #[error("unknown message")]
    UnknownMessage,
    #[error("the invite secret does not match: it does not derive the invite's key")]
    InviteSecretMismatch,
    #[error("the invite has expired")]
    InviteExpired,
    #[error("the invite has reached its maximum uses")]
    InviteExhausted,
    #[error("the user is not banned")]
    NotBanned,
    #[error("the member does not have that role")]
    RoleNotHeld,
    #[error("@everyone cannot be deleted, granted or revoked, and stays at position 0")]
    EveryoneRole,
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("wrong channel type for this op")]
    WrongChannelKind,
    #[error("only the message's author may do this")]
    NotAuthor,
    #[error("invalid metadata change: {0}")]
    BadMetaChange(String),
    #[error("depends on the invalid op {0}")]
    InvalidDependency(OpId),
    #[error("the author signed two ops at one seq in this guild and is no longer trusted there")]
    Equivocated,
    #[error(
        "the author's latest op in this guild is not canonical, so nothing more they sign there counts"
    )]
    ForkedChain,
    #[error("the creator or the guild holds as many usable invites as it may")]
    TooManyInvites,
    #[error("too many guild-state ops by this author in a minute; retry in {0} ms")]
    GuildStateRate(u64),
    #[error("the guild was deleted")]
    GuildDeleted,
    #[error("only the guild's owner may do this")]
    OwnerOnly,
    #[error("text in a channel not every member may view must be sealed")]
    NotSealed,
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::NotMember => "not_member",
            AuthError::Banned => "banned",
            AuthError::AlreadyMember => "already_member",
            AuthError::MissingPermission(_) => "missing_permission",
            AuthError::Hierarchy => "role_hierarchy",
            AuthError::CannotGrant(_) => "cannot_grant",
            AuthError::OwnerImmune => "owner_immune",
            AuthError::SelfTarget => "self_target",
            AuthError::UnknownRole => "unknown_role",
            AuthError::UnknownChannel => "unknown_channel",
            AuthError::UnknownMember => "unknown_member",
            AuthError::UnknownInvite => "unknown_invite",
            AuthError::UnknownOverwrite => "unknown_overwrite",
            AuthError::UnknownMessage => "unknown_message",
            AuthError::GuildDeleted => "guild_deleted",
            AuthError::OwnerOnly => "owner_only",
            AuthError::InviteSecretMismatch => "invite_secret_mismatch",
            AuthError::InviteExpired => "invite_expired",
            AuthError::InviteExhausted => "invite_exhausted",
            AuthError::NotBanned => "not_banned",
            AuthError::RoleNotHeld => "role_not_held",
            AuthError::EveryoneRole => "everyone_role",
            AuthError::BadRequest(_) => "bad_request",
            AuthError::WrongChannelKind => "wrong_channel_kind",
            AuthError::NotAuthor => "not_author",
            AuthError::BadMetaChange(_) => "bad_meta_change",
            AuthError::InvalidDependency(_) => "invalid_dependency",
            AuthError::Equivocated => "equivocated",
            AuthError::ForkedChain => "forked_chain",
            AuthError::TooManyInvites => "too_many_invites",
            AuthError::GuildStateRate(_) => "guild_state_rate",
            AuthError::NotSealed => "not_sealed",
        }
    }
}
