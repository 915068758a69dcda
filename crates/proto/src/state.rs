//! Guild state (who may do what) and the pure authorize-then-apply step for guild-state ops.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::body::{Body, ChannelKind, OverwriteTarget};
use crate::error::AuthError;
use crate::hlc::Hlc;
use crate::id::{ChannelId, GuildId, InviteId, InviteKey, NodeId, OpId, RoleId, UserId};
use crate::limits;
use crate::perm::{Permissions, base_permissions, channel_permissions};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Role {
    pub name: String,
    pub color: u32,
    pub permissions: Permissions,
    /// Hierarchy: higher manages lower. @everyone is 0.
    pub position: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub roles: BTreeSet<RoleId>,
    pub joined_at: Hlc,
    /// The nodes that serve them the guild, as their latest valid `Home` named them: empty
    /// from their join (and for the owner from genesis) until they send one.
    pub homes: BTreeSet<NodeId>,
}

impl Member {
    fn joined(at: Hlc) -> Member {
        Member {
            roles: BTreeSet::new(),
            joined_at: at,
            homes: BTreeSet::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Overwrite {
    pub allow: Permissions,
    pub deny: Permissions,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Channel {
    pub kind: ChannelKind,
    pub name: String,
    pub parent: Option<ChannelId>,
    pub position: u32,
    #[serde(serialize_with = "serialize_overwrites")]
    pub overwrites: BTreeMap<OverwriteTarget, Overwrite>,
}

fn serialize_overwrites<S: serde::Serializer>(
    overwrites: &BTreeMap<OverwriteTarget, Overwrite>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(overwrites.iter())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invite {
    pub creator: UserId,
    /// The public key its secret derives; the secret itself is in no op.
    #[serde(skip)]
    pub key: InviteKey,
    pub max_uses: u32,
    pub expires_at_ms: u64,
    pub uses: u32,
}

impl Invite {
    fn expired_at(&self, at: Hlc) -> bool {
        self.expires_at_ms != 0 && at.ms() >= self.expires_at_ms
    }

    fn exhausted(&self) -> bool {
        self.max_uses != 0 && self.uses >= self.max_uses
    }

    /// Whether it may still admit someone at `at`.
    fn usable_at(&self, at: Hlc) -> bool {
        !self.expired_at(at) && !self.exhausted()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BanRecord {
    pub by: UserId,
    pub reason: String,
}

/// The authorization-relevant state of a guild, folded from its valid guild-state ops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuildState {
    pub id: GuildId,
    pub name: String,
    pub owner: UserId,
    pub roles: BTreeMap<RoleId, Role>,
    pub members: BTreeMap<UserId, Member>,
    pub channels: BTreeMap<ChannelId, Channel>,
    pub bans: BTreeMap<UserId, BanRecord>,
    pub invites: BTreeMap<InviteId, Invite>,
    /// Set by the owner's `GuildDelete`: no op after it is valid.
    pub deleted: bool,
}

impl GuildState {
    /// The state right after genesis: the creator owns the guild and is its only member;
    /// @everyone (whose id is the guild id) has the default permissions.
    pub fn genesis(id: GuildId, owner: UserId, name: &str, at: Hlc) -> Self {
        let everyone = Role {
            name: "@everyone".into(),
            color: 0,
            permissions: Permissions::DEFAULT_EVERYONE,
            position: 0,
        };
        GuildState {
            id,
            name: name.to_owned(),
            owner,
            roles: BTreeMap::from([(id, everyone)]),
            members: BTreeMap::from([(owner, Member::joined(at))]),
            channels: BTreeMap::new(),
            bans: BTreeMap::new(),
            invites: BTreeMap::new(),
            deleted: false,
        }
    }

    pub fn everyone_role(&self) -> Option<&Role> {
        self.roles.get(&self.id)
    }

    pub fn is_member(&self, user: &UserId) -> bool {
        self.members.contains_key(user)
    }

    /// A member's place in the hierarchy: the highest position among their roles; the owner is
    /// above everyone.
    pub fn top_position(&self, user: &UserId) -> u64 {
        if *user == self.owner {
            return u64::MAX;
        }
        self.members
            .get(user)
            .into_iter()
            .flat_map(|m| m.roles.iter())
            .filter_map(|r| self.roles.get(r))
            .map(|r| u64::from(r.position))
            .max()
            .unwrap_or(0)
    }

    pub fn permissions(&self, user: &UserId) -> Permissions {
        base_permissions(self, user)
    }

    pub fn channel_permissions(&self, user: &UserId, channel: &ChannelId) -> Permissions {
        self.channels
            .get(channel)
            .map(|c| channel_permissions(self, user, c))
            .unwrap_or_default()
    }

    fn require(&self, user: &UserId, needed: Permissions) -> Result<Permissions, AuthError> {
        let have = self.permissions(user);
        if have.contains(needed) {
            Ok(have)
        } else {
            Err(AuthError::MissingPermission(needed - have))
        }
    }

    /// Whether every member, present and future, may view `channel`: @everyone may, and no
    /// overwrite there denies it to a role or a member. Text in any other channel is to be
    /// sealed (`spec/auth.md` §9; not enforced yet).
    pub fn open_to_all(&self, channel: &ChannelId) -> bool {
        let Some(channel) = self.channels.get(channel) else {
            return false;
        };
        let everyone = OverwriteTarget::Role(self.id);
        let mut perms = self
            .everyone_role()
            .map(|r| r.permissions)
            .unwrap_or_default();
        if let Some(ow) = channel.overwrites.get(&everyone) {
            perms = (perms - ow.deny) | ow.allow;
        }
        let viewable = perms.intersects(Permissions::VIEW_CHANNEL | Permissions::ADMINISTRATOR);
        viewable
            && channel.overwrites.iter().all(|(target, ow)| {
                *target == everyone || !ow.deny.contains(Permissions::VIEW_CHANNEL)
            })
    }

    /// The nodes home to a member who may view `channel`: those a channel key may be given to.
    pub fn viewer_nodes(&self, channel: &ChannelId) -> BTreeSet<NodeId> {
        self.members
            .iter()
            .filter(|(user, _)| self.may_view(user, channel))
            .flat_map(|(_, member)| member.homes.iter().copied())
            .collect()
    }

    /// Whether `node` is among `viewer_nodes(channel)`, without collecting them.
    pub fn is_viewer_node(&self, channel: &ChannelId, node: &NodeId) -> bool {
        self.members
            .iter()
            .any(|(user, member)| member.homes.contains(node) && self.may_view(user, channel))
    }

    fn may_view(&self, user: &UserId, channel: &ChannelId) -> bool {
        self.channel_permissions(user, channel)
            .contains(Permissions::VIEW_CHANNEL)
    }

    pub fn require_in_channel(
        &self,
        user: &UserId,
        channel: &ChannelId,
        needed: Permissions,
    ) -> Result<Permissions, AuthError> {
        if !self.channels.contains_key(channel) {
            return Err(AuthError::UnknownChannel);
        }
        let have = self.channel_permissions(user, channel);
        if have.contains(needed) {
            Ok(have)
        } else {
            Err(AuthError::MissingPermission(needed - have))
        }
    }

    fn below_author(&self, author: &UserId, position: u64) -> Result<(), AuthError> {
        if position < self.top_position(author) {
            Ok(())
        } else {
            Err(AuthError::Hierarchy)
        }
    }

    fn role(&self, role: &RoleId) -> Result<&Role, AuthError> {
        self.roles.get(role).ok_or(AuthError::UnknownRole)
    }

    fn manageable_role(&self, author: &UserId, role: &RoleId) -> Result<&Role, AuthError> {
        if *role == self.id {
            return Err(AuthError::EveryoneRole);
        }
        let r = self.role(role)?;
        self.below_author(author, r.position.into())?;
        Ok(r)
    }

    fn manageable_member(&self, author: &UserId, member: &UserId) -> Result<(), AuthError> {
        if *member == self.owner {
            return Err(AuthError::OwnerImmune);
        }
        if member == author {
            return Err(AuthError::SelfTarget);
        }
        self.below_author(author, self.top_position(member))
    }

    fn grantable(have: Permissions, wanted: Permissions) -> Result<(), AuthError> {
        let missing = wanted - have;
        if missing.is_empty() {
            Ok(())
        } else {
            Err(AuthError::CannotGrant(missing))
        }
    }

    /// Whether `author` may perform guild-state op `body` (with id `id`, at `hlc`) in this state.
    pub fn authorize(&self, author: &UserId, body: &Body, hlc: Hlc) -> Result<(), AuthError> {
        if self.deleted {
            return Err(AuthError::GuildDeleted);
        }
        if let Body::Join { .. } = body {
            return self.authorize_join(author, body, hlc);
        }
        if self.bans.contains_key(author) {
            return Err(AuthError::Banned);
        }
        if !self.is_member(author) {
            return Err(AuthError::NotMember);
        }
        match body {
            Body::Genesis { .. } => Err(AuthError::BadRequest("a guild has one genesis")),
            Body::Leave if *author == self.owner => Err(AuthError::OwnerImmune),
            Body::GuildDelete if *author == self.owner => Ok(()),
            Body::GuildDelete => Err(AuthError::OwnerOnly),
            Body::MetaChange { change } => crate::meta::authorize_change(self, author, change),
            Body::Leave => Ok(()),
            // A member names their own homes; nothing else is needed.
            Body::Home { .. } => Ok(()),
            Body::RoleCreate {
                permissions,
                position,
                ..
            } => {
                let have = self.require(author, Permissions::MANAGE_ROLES)?;
                if *position == 0 {
                    return Err(AuthError::EveryoneRole);
                }
                self.below_author(author, (*position).into())?;
                Self::grantable(have, Permissions::from_bits_retain(*permissions))
            }
            Body::RoleUpdate {
                role,
                permissions,
                position,
            } => {
                let have = self.require(author, Permissions::MANAGE_ROLES)?;
                let old = if *role == self.id {
                    if *position != 0 {
                        return Err(AuthError::EveryoneRole);
                    }
                    self.role(role)?
                } else {
                    if *position == 0 {
                        return Err(AuthError::EveryoneRole);
                    }
                    self.below_author(author, (*position).into())?;
                    self.manageable_role(author, role)?
                };
                let added = Permissions::from_bits_retain(*permissions) - old.permissions;
                Self::grantable(have, added)
            }
            Body::RoleDelete { role } => {
                self.require(author, Permissions::MANAGE_ROLES)?;
                self.manageable_role(author, role).map(|_| ())
            }
            Body::MemberRoleGrant { member, role }
            | Body::MemberRoleRevoke { member, role, .. } => {
                self.require(author, Permissions::MANAGE_ROLES)?;
                self.manageable_role(author, role)?;
                let target = self.members.get(member).ok_or(AuthError::UnknownMember)?;
                if member != author && *member != self.owner {
                    self.below_author(author, self.top_position(member))?;
                }
                if matches!(body, Body::MemberRoleRevoke { .. }) && !target.roles.contains(role) {
                    return Err(AuthError::RoleNotHeld);
                }
                Ok(())
            }
            Body::ChannelCreate { kind, parent, .. } => {
                self.require(author, Permissions::MANAGE_CHANNELS)?;
                match (kind, parent) {
                    (_, None) => Ok(()),
                    (ChannelKind::Category, Some(_)) => {
                        Err(AuthError::BadRequest("a category cannot have a parent"))
                    }
                    (_, Some(p)) => match self.channels.get(p) {
                        Some(c) if c.kind == ChannelKind::Category => Ok(()),
                        Some(_) => Err(AuthError::WrongChannelKind),
                        None => Err(AuthError::UnknownChannel),
                    },
                }
            }
            Body::ChannelDelete { channel } => self
                .require_in_channel(author, channel, Permissions::MANAGE_CHANNELS)
                .map(|_| ()),
            Body::OverwriteSet {
                channel,
                target,
                allow,
                deny,
            } => {
                let have = self.require_in_channel(author, channel, Permissions::MANAGE_ROLES)?;
                if allow & deny != 0 {
                    return Err(AuthError::BadRequest(
                        "a bit cannot be both allowed and denied",
                    ));
                }
                if let OverwriteTarget::Role(role) = target {
                    let r = self.role(role)?;
                    if *role != self.id {
                        self.below_author(author, r.position.into())?;
                    }
                }
                Self::grantable(have, Permissions::from_bits_retain(allow | deny))
            }
            Body::OverwriteClear { channel, target } => {
                // Clearing is as strong as setting: the same hierarchy and held bits.
                let have = self.require_in_channel(author, channel, Permissions::MANAGE_ROLES)?;
                let existing = self.channels[channel]
                    .overwrites
                    .get(target)
                    .ok_or(AuthError::UnknownOverwrite)?;
                if let OverwriteTarget::Role(role) = target
                    && *role != self.id
                {
                    self.below_author(author, self.role(role)?.position.into())?;
                }
                Self::grantable(have, existing.allow | existing.deny)
            }
            Body::InviteCreate { .. } => {
                self.require(author, Permissions::CREATE_INSTANT_INVITE)?;
                let usable: Vec<&Invite> =
                    self.invites.values().filter(|i| i.usable_at(hlc)).collect();
                let theirs = usable.iter().filter(|i| i.creator == *author).count();
                if theirs >= limits::MAX_INVITES_PER_MEMBER
                    || usable.len() >= limits::MAX_INVITES_PER_GUILD
                {
                    return Err(AuthError::TooManyInvites);
                }
                Ok(())
            }
            Body::InviteRevoke { invite } => {
                let inv = self.invites.get(invite).ok_or(AuthError::UnknownInvite)?;
                if inv.creator == *author {
                    Ok(())
                } else {
                    self.require(author, Permissions::MANAGE_GUILD).map(|_| ())
                }
            }
            Body::Kick { member, .. } => {
                self.require(author, Permissions::KICK_MEMBERS)?;
                if !self.is_member(member) {
                    return Err(AuthError::UnknownMember);
                }
                self.manageable_member(author, member)
            }
            Body::Ban { member, .. } => {
                self.require(author, Permissions::BAN_MEMBERS)?;
                if self.bans.contains_key(member) {
                    return Err(AuthError::Banned);
                }
                self.manageable_member(author, member)
            }
            Body::Unban { member } => {
                self.require(author, Permissions::BAN_MEMBERS)?;
                match self.bans.contains_key(member) {
                    true => Ok(()),
                    false => Err(AuthError::NotBanned),
                }
            }
            Body::Join { .. } => unreachable!("handled above"),
            _ => Err(AuthError::BadRequest("not a guild-state op")),
        }
    }

    fn authorize_join(&self, author: &UserId, body: &Body, hlc: Hlc) -> Result<(), AuthError> {
        let Body::Join { invite, .. } = body else {
            unreachable!("only called for joins")
        };
        if self.bans.contains_key(author) {
            return Err(AuthError::Banned);
        }
        if self.is_member(author) {
            return Err(AuthError::AlreadyMember);
        }
        // The proof was checked when the join was admitted (`Guild::insert`): an invite's key
        // never changes, so checking it again in every fold would only cost a signature each.
        self.check_invite_opened(invite, hlc, |_| true)
    }

    /// Whether a join's proof opens `invite`: what a node checks before it signs a join, since
    /// authorization leaves the proof to admission.
    pub fn check_join_proof(
        &self,
        invite: &InviteId,
        author: &UserId,
        proof: &[u8; 64],
    ) -> Result<(), AuthError> {
        let inv = self.invites.get(invite).ok_or(AuthError::UnknownInvite)?;
        if inv.key.opens_join(&self.id, invite, author, proof) {
            Ok(())
        } else {
            Err(AuthError::InviteSecretMismatch)
        }
    }

    /// Whether node `requester` may fetch this guild to join it by `invite` at `at`: `proof`
    /// must be the invite key's fetch proof for this guild, that invite and that node
    /// (`InviteKey::prove_fetch`), and the invite usable at `at`. What a node holding the guild
    /// checks before it serves a node no member is homed at (`spec/auth.md` §13).
    pub fn check_fetch_proof(
        &self,
        invite: &InviteId,
        requester: &NodeId,
        proof: &[u8; 64],
        at: Hlc,
    ) -> Result<(), AuthError> {
        self.check_invite_opened(invite, at, |key| {
            key.opens_fetch(&self.id, invite, requester, proof)
        })
    }

    /// Whether `invite` admits someone at `at`, `opens` saying whether what they hold (a
    /// secret, a join's proof or a fetch proof) opens the invite's key.
    fn check_invite_opened(
        &self,
        invite: &InviteId,
        at: Hlc,
        opens: impl FnOnce(&InviteKey) -> bool,
    ) -> Result<(), AuthError> {
        if self.deleted {
            return Err(AuthError::GuildDeleted);
        }
        let inv = self.invites.get(invite).ok_or(AuthError::UnknownInvite)?;
        if !opens(&inv.key) {
            return Err(AuthError::InviteSecretMismatch);
        }
        if inv.expired_at(at) {
            return Err(AuthError::InviteExpired);
        }
        if inv.exhausted() {
            return Err(AuthError::InviteExhausted);
        }
        Ok(())
    }

    /// Applies an authorized guild-state op. `id` names what the op creates.
    pub fn apply(&mut self, id: OpId, author: &UserId, body: &Body, hlc: Hlc) {
        match body {
            Body::Genesis { .. } | Body::MetaChange { .. } => {}
            Body::RoleCreate {
                name,
                permissions,
                color,
                position,
            } => {
                self.roles.insert(
                    id,
                    Role {
                        name: name.clone(),
                        color: *color,
                        permissions: Permissions::from_bits_retain(*permissions),
                        position: *position,
                    },
                );
            }
            Body::RoleUpdate {
                role,
                permissions,
                position,
            } => {
                if let Some(r) = self.roles.get_mut(role) {
                    r.permissions = Permissions::from_bits_retain(*permissions);
                    r.position = *position;
                }
            }
            Body::RoleDelete { role } => {
                self.roles.remove(role);
                for m in self.members.values_mut() {
                    m.roles.remove(role);
                }
                for c in self.channels.values_mut() {
                    c.overwrites.remove(&OverwriteTarget::Role(*role));
                }
            }
            Body::MemberRoleGrant { member, role } => {
                if let Some(m) = self.members.get_mut(member) {
                    m.roles.insert(*role);
                }
            }
            Body::MemberRoleRevoke { member, role, .. } => {
                if let Some(m) = self.members.get_mut(member) {
                    m.roles.remove(role);
                }
            }
            Body::ChannelCreate {
                kind,
                name,
                parent,
                position,
            } => {
                self.channels.insert(
                    id,
                    Channel {
                        kind: *kind,
                        name: name.clone(),
                        parent: *parent,
                        position: *position,
                        overwrites: BTreeMap::new(),
                    },
                );
            }
            Body::ChannelDelete { channel } => {
                self.channels.remove(channel);
                for c in self.channels.values_mut() {
                    if c.parent == Some(*channel) {
                        c.parent = None;
                    }
                }
            }
            Body::OverwriteSet {
                channel,
                target,
                allow,
                deny,
            } => {
                if let Some(c) = self.channels.get_mut(channel) {
                    c.overwrites.insert(
                        *target,
                        Overwrite {
                            allow: Permissions::from_bits_retain(*allow),
                            deny: Permissions::from_bits_retain(*deny),
                        },
                    );
                }
            }
            Body::OverwriteClear { channel, target } => {
                if let Some(c) = self.channels.get_mut(channel) {
                    c.overwrites.remove(target);
                }
            }
            Body::InviteCreate {
                key,
                max_uses,
                expires_at_ms,
            } => {
                // Invites that can admit nobody any more leave the state as new ones come, so
                // it holds at most the capped number of usable ones and those spent since.
                self.invites.retain(|_, invite| invite.usable_at(hlc));
                self.invites.insert(
                    id,
                    Invite {
                        creator: *author,
                        key: *key,
                        max_uses: *max_uses,
                        expires_at_ms: *expires_at_ms,
                        uses: 0,
                    },
                );
            }
            Body::InviteRevoke { invite } => {
                self.invites.remove(invite);
            }
            Body::Join { invite, .. } => {
                if let Some(inv) = self.invites.get_mut(invite) {
                    inv.uses += 1;
                }
                self.members.insert(*author, Member::joined(hlc));
            }
            Body::Leave => {
                self.members.remove(author);
            }
            Body::Kick { member, .. } => {
                self.members.remove(member);
            }
            Body::Ban { member, reason, .. } => {
                self.members.remove(member);
                self.bans.insert(
                    *member,
                    BanRecord {
                        by: *author,
                        reason: reason.clone(),
                    },
                );
            }
            Body::Unban { member } => {
                self.bans.remove(member);
            }
            Body::GuildDelete => self.deleted = true,
            Body::Home { nodes } => {
                if let Some(m) = self.members.get_mut(author) {
                    m.homes = nodes.iter().copied().collect();
                }
            }
            _ => {}
        }
    }
}
