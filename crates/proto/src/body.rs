//! Op bodies: what an op does. Each has a stable numeric kind and a canonical encoding
//! (`spec/ops.md` lists them field by field).

use serde::{Deserialize, Serialize};

use crate::id::{ChannelId, GuildId, InviteId, InviteKey, MessageId, NodeId, OpId, RoleId, UserId};
use crate::limits;
use crate::sealed::{Sealed, Text};
use crate::wire::{DecodeError, Reader, Writer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Text,
    Voice,
    Category,
}

/// Who a channel permission overwrite applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "id")]
pub enum OverwriteTarget {
    Role(RoleId),
    Member(UserId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    // Guild-state (control) ops: they form the causal DAG that `deps` point into.
    Genesis {
        name: String,
    },
    /// An Automerge change to the guild's cosmetic metadata document (see `meta`).
    MetaChange {
        change: Vec<u8>,
    },
    RoleCreate {
        name: String,
        permissions: u64,
        color: u32,
        position: u32,
    },
    RoleUpdate {
        role: RoleId,
        permissions: u64,
        position: u32,
    },
    RoleDelete {
        role: RoleId,
    },
    MemberRoleGrant {
        member: UserId,
        role: RoleId,
    },
    /// A demotion: `cutoff` is the highest seq of the member's log the remover had seen.
    MemberRoleRevoke {
        member: UserId,
        role: RoleId,
        cutoff: u64,
    },
    ChannelCreate {
        kind: ChannelKind,
        name: String,
        parent: Option<ChannelId>,
        position: u32,
    },
    ChannelDelete {
        channel: ChannelId,
    },
    OverwriteSet {
        channel: ChannelId,
        target: OverwriteTarget,
        allow: u64,
        deny: u64,
    },
    OverwriteClear {
        channel: ChannelId,
        target: OverwriteTarget,
    },
    /// An invite, opened by whoever knows its secret. The secret itself is in no op: only the
    /// public key it derives (`InviteKey::from_secret`).
    InviteCreate {
        key: InviteKey,
        max_uses: u32,
        expires_at_ms: u64,
    },
    InviteRevoke {
        invite: InviteId,
    },
    /// The author joins by `invite`, proving they know its secret without revealing it:
    /// `proof` is the invite key's signature over this guild, invite and author
    /// (`InviteKey::prove_join`), so it opens the invite for this author only.
    Join {
        invite: InviteId,
        proof: [u8; 64],
    },
    Leave,
    Kick {
        member: UserId,
        cutoff: u64,
        reason: String,
    },
    Ban {
        member: UserId,
        cutoff: u64,
        reason: String,
    },
    Unban {
        member: UserId,
    },
    /// The owner closes the guild for good: every later op is refused.
    GuildDelete,
    /// The author's home nodes: the nodes that serve them the guild, which replaces the set
    /// named before. Strictly ascending, at most `limits::MAX_HOMES_PER_MEMBER`, maybe empty
    /// (homed nowhere). A node is entitled to the guild while a member names it
    /// (`spec/auth.md` §13).
    Home {
        nodes: Vec<NodeId>,
    },
    // Content ops: channel history. Never cited by `deps`. Their text is sealed (kinds 40 to
    // 42) in a channel not every member may view.
    MessageCreate {
        channel: ChannelId,
        content: Text,
        reply_to: Option<MessageId>,
    },
    MessageEdit {
        message: MessageId,
        content: Text,
    },
    MessageDelete {
        message: MessageId,
    },
    ReactionAdd {
        message: MessageId,
        emoji: String,
    },
    ReactionRemove {
        message: MessageId,
        emoji: String,
    },
    Pin {
        message: MessageId,
    },
    Unpin {
        message: MessageId,
    },
    ThreadCreate {
        channel: ChannelId,
        name: Text,
        message: Option<MessageId>,
    },
}

impl Body {
    /// The `InviteCreate` of an invite whose secret is `secret`: it carries the public key the
    /// secret derives, never the secret.
    pub fn invite_create(secret: &[u8], max_uses: u32, expires_at_ms: u64) -> Body {
        Body::InviteCreate {
            key: InviteKey::from_secret(secret),
            max_uses,
            expires_at_ms,
        }
    }

    /// `author`'s `Join` of `guild` by `invite`, whose secret is `secret`: it carries the invite
    /// key's proof for this author, guild and invite, never the secret.
    pub fn join(guild: &GuildId, invite: InviteId, author: &UserId, secret: &[u8]) -> Body {
        Body::Join {
            invite,
            proof: InviteKey::prove_join(secret, guild, &invite, author),
        }
    }

    /// A `Home` naming `nodes`, put in canonical order (sorted, duplicates dropped). More than
    /// `limits::MAX_HOMES_PER_MEMBER` distinct nodes is still refused when signing.
    pub fn home(nodes: impl IntoIterator<Item = NodeId>) -> Body {
        let nodes: std::collections::BTreeSet<NodeId> = nodes.into_iter().collect();
        Body::Home {
            nodes: nodes.into_iter().collect(),
        }
    }

    /// The text a content op carries: a message's content, or a thread's name.
    pub fn text(&self) -> Option<&Text> {
        match self {
            Body::MessageCreate { content, .. } | Body::MessageEdit { content, .. } => {
                Some(content)
            }
            Body::ThreadCreate { name, .. } => Some(name),
            _ => None,
        }
    }

    pub fn text_mut(&mut self) -> Option<&mut Text> {
        match self {
            Body::MessageCreate { content, .. } | Body::MessageEdit { content, .. } => {
                Some(content)
            }
            Body::ThreadCreate { name, .. } => Some(name),
            _ => None,
        }
    }

    pub fn kind(&self) -> u16 {
        match self {
            Body::Genesis { .. } => 1,
            Body::MetaChange { .. } => 2,
            Body::RoleCreate { .. } => 3,
            Body::RoleUpdate { .. } => 4,
            Body::RoleDelete { .. } => 5,
            Body::MemberRoleGrant { .. } => 6,
            Body::MemberRoleRevoke { .. } => 7,
            Body::ChannelCreate { .. } => 8,
            Body::ChannelDelete { .. } => 9,
            Body::OverwriteSet { .. } => 10,
            Body::OverwriteClear { .. } => 11,
            Body::InviteCreate { .. } => 12,
            Body::InviteRevoke { .. } => 13,
            Body::Join { .. } => 14,
            Body::Leave => 15,
            Body::Kick { .. } => 16,
            Body::Ban { .. } => 17,
            Body::Unban { .. } => 18,
            Body::GuildDelete => 19,
            Body::Home { .. } => 20,
            Body::MessageCreate { content, .. } if content.is_sealed() => 40,
            Body::MessageEdit { content, .. } if content.is_sealed() => 41,
            Body::ThreadCreate { name, .. } if name.is_sealed() => 42,
            Body::MessageCreate { .. } => 32,
            Body::MessageEdit { .. } => 33,
            Body::MessageDelete { .. } => 34,
            Body::ReactionAdd { .. } => 35,
            Body::ReactionRemove { .. } => 36,
            Body::Pin { .. } => 37,
            Body::Unpin { .. } => 38,
            Body::ThreadCreate { .. } => 39,
        }
    }

    /// Guild-state ops change who may do what (or the guild's metadata); they are the only
    /// ops `deps` may cite.
    pub fn is_control(&self) -> bool {
        self.kind() < 32
    }

    /// The member a removal (ban, kick or demotion) targets, with the cut of their log the
    /// remover had seen: their ops beyond it that did not see the removal are judged as if it
    /// had already happened (strong removal, `spec/auth.md`).
    pub fn removal(&self) -> Option<(UserId, u64)> {
        match self {
            Body::Kick { member, cutoff, .. }
            | Body::Ban { member, cutoff, .. }
            | Body::MemberRoleRevoke { member, cutoff, .. } => Some((*member, *cutoff)),
            _ => None,
        }
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.uint(self.kind().into());
        let mut b = Writer::new();
        self.encode_fields(&mut b);
        w.bytes(&b.into_bytes());
    }

    fn encode_fields(&self, w: &mut Writer) {
        match self {
            Body::Genesis { name } => w.str(name),
            Body::MetaChange { change } => w.bytes(change),
            Body::RoleCreate {
                name,
                permissions,
                color,
                position,
            } => {
                w.str(name);
                w.uint(*permissions);
                w.uint((*color).into());
                w.uint((*position).into());
            }
            Body::RoleUpdate {
                role,
                permissions,
                position,
            } => {
                w.fixed(&role.0);
                w.uint(*permissions);
                w.uint((*position).into());
            }
            Body::RoleDelete { role } => w.fixed(&role.0),
            Body::MemberRoleGrant { member, role } => {
                w.fixed(&member.0);
                w.fixed(&role.0);
            }
            Body::MemberRoleRevoke {
                member,
                role,
                cutoff,
            } => {
                w.fixed(&member.0);
                w.fixed(&role.0);
                w.uint(*cutoff);
            }
            Body::ChannelCreate {
                kind,
                name,
                parent,
                position,
            } => {
                w.u8(match kind {
                    ChannelKind::Text => 0,
                    ChannelKind::Voice => 1,
                    ChannelKind::Category => 2,
                });
                w.str(name);
                w.option(parent.as_ref(), |w, p| w.fixed(&p.0));
                w.uint((*position).into());
            }
            Body::ChannelDelete { channel } => w.fixed(&channel.0),
            Body::OverwriteSet {
                channel,
                target,
                allow,
                deny,
            } => {
                w.fixed(&channel.0);
                encode_target(w, target);
                w.uint(*allow);
                w.uint(*deny);
            }
            Body::OverwriteClear { channel, target } => {
                w.fixed(&channel.0);
                encode_target(w, target);
            }
            Body::InviteCreate {
                key,
                max_uses,
                expires_at_ms,
            } => {
                w.fixed(&key.0);
                w.uint((*max_uses).into());
                w.uint(*expires_at_ms);
            }
            Body::InviteRevoke { invite } => w.fixed(&invite.0),
            Body::Join { invite, proof } => {
                w.fixed(&invite.0);
                w.fixed(proof);
            }
            Body::Leave => {}
            Body::Kick {
                member,
                cutoff,
                reason,
            }
            | Body::Ban {
                member,
                cutoff,
                reason,
            } => {
                w.fixed(&member.0);
                w.uint(*cutoff);
                w.str(reason);
            }
            Body::Unban { member } => w.fixed(&member.0),
            Body::GuildDelete => {}
            Body::Home { nodes } => {
                w.uint(nodes.len() as u64);
                for node in nodes {
                    w.fixed(&node.0);
                }
            }
            Body::MessageCreate {
                channel,
                content,
                reply_to,
            } => {
                w.fixed(&channel.0);
                encode_text(w, content);
                w.option(reply_to.as_ref(), |w, m| w.fixed(&m.0));
            }
            Body::MessageEdit { message, content } => {
                w.fixed(&message.0);
                encode_text(w, content);
            }
            Body::MessageDelete { message } | Body::Pin { message } | Body::Unpin { message } => {
                w.fixed(&message.0)
            }
            Body::ReactionAdd { message, emoji } | Body::ReactionRemove { message, emoji } => {
                w.fixed(&message.0);
                w.str(emoji);
            }
            Body::ThreadCreate {
                channel,
                name,
                message,
            } => {
                w.fixed(&channel.0);
                encode_text(w, name);
                w.option(message.as_ref(), |w, m| w.fixed(&m.0));
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let kind = r.uint("body kind")?;
        let fields = r.bytes("body", limits::MAX_BODY_BYTES)?;
        let mut f = Reader::new(fields);
        let body = Self::decode_fields(kind, &mut f)?;
        f.finish()?;
        Ok(body)
    }

    fn decode_fields(kind: u64, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let op_id = |r: &mut Reader<'_>, what| r.array::<32>(what).map(OpId);
        let user = |r: &mut Reader<'_>, what| r.array::<32>(what).map(UserId);
        let name = |r: &mut Reader<'_>| r.str("name", limits::MAX_NAME_BYTES).map(str::to_owned);
        Ok(match kind {
            1 => Body::Genesis { name: name(r)? },
            2 => Body::MetaChange {
                change: r
                    .bytes("meta change", limits::MAX_META_CHANGE_BYTES)?
                    .to_vec(),
            },
            3 => Body::RoleCreate {
                name: name(r)?,
                permissions: r.uint("permissions")?,
                color: r.u32("color")?,
                position: r.u32("position")?,
            },
            4 => Body::RoleUpdate {
                role: op_id(r, "role")?,
                permissions: r.uint("permissions")?,
                position: r.u32("position")?,
            },
            5 => Body::RoleDelete {
                role: op_id(r, "role")?,
            },
            6 => Body::MemberRoleGrant {
                member: user(r, "member")?,
                role: op_id(r, "role")?,
            },
            7 => Body::MemberRoleRevoke {
                member: user(r, "member")?,
                role: op_id(r, "role")?,
                cutoff: r.uint("cutoff")?,
            },
            8 => Body::ChannelCreate {
                kind: match r.u8("channel kind")? {
                    0 => ChannelKind::Text,
                    1 => ChannelKind::Voice,
                    2 => ChannelKind::Category,
                    tag => {
                        return Err(DecodeError::BadTag {
                            field: "channel kind",
                            tag: tag.into(),
                        });
                    }
                },
                name: name(r)?,
                parent: r.option("parent", |r| op_id(r, "parent"))?,
                position: r.u32("position")?,
            },
            9 => Body::ChannelDelete {
                channel: op_id(r, "channel")?,
            },
            10 => Body::OverwriteSet {
                channel: op_id(r, "channel")?,
                target: decode_target(r)?,
                allow: r.uint("allow")?,
                deny: r.uint("deny")?,
            },
            11 => Body::OverwriteClear {
                channel: op_id(r, "channel")?,
                target: decode_target(r)?,
            },
            12 => Body::InviteCreate {
                key: InviteKey(r.array("invite key")?),
                max_uses: r.u32("max uses")?,
                expires_at_ms: r.uint("expires at")?,
            },
            13 => Body::InviteRevoke {
                invite: op_id(r, "invite")?,
            },
            14 => Body::Join {
                invite: op_id(r, "invite")?,
                proof: r.array("join proof")?,
            },
            15 => Body::Leave,
            16 | 17 => {
                let member = user(r, "member")?;
                let cutoff = r.uint("cutoff")?;
                let reason = r.str("reason", limits::MAX_REASON_BYTES)?.to_owned();
                if kind == 16 {
                    Body::Kick {
                        member,
                        cutoff,
                        reason,
                    }
                } else {
                    Body::Ban {
                        member,
                        cutoff,
                        reason,
                    }
                }
            }
            18 => Body::Unban {
                member: user(r, "member")?,
            },
            19 => Body::GuildDelete,
            20 => {
                let count = r.uint("home nodes")?;
                if count > limits::MAX_HOMES_PER_MEMBER as u64 {
                    return Err(DecodeError::Invalid("more than 4 home nodes"));
                }
                let nodes = (0..count)
                    .map(|_| r.array("home node").map(NodeId))
                    .collect::<Result<Vec<_>, _>>()?;
                check_homes(&nodes).map_err(DecodeError::Invalid)?;
                Body::Home { nodes }
            }
            32 | 40 => Body::MessageCreate {
                channel: op_id(r, "channel")?,
                content: decode_text(r, kind == 40, limits::MAX_CONTENT_BYTES)?,
                reply_to: r.option("reply to", |r| op_id(r, "reply to"))?,
            },
            33 | 41 => Body::MessageEdit {
                message: op_id(r, "message")?,
                content: decode_text(r, kind == 41, limits::MAX_CONTENT_BYTES)?,
            },
            34 => Body::MessageDelete {
                message: op_id(r, "message")?,
            },
            35 | 36 => {
                let message = op_id(r, "message")?;
                let emoji = r.str("emoji", limits::MAX_EMOJI_BYTES)?.to_owned();
                if kind == 35 {
                    Body::ReactionAdd { message, emoji }
                } else {
                    Body::ReactionRemove { message, emoji }
                }
            }
            37 => Body::Pin {
                message: op_id(r, "message")?,
            },
            38 => Body::Unpin {
                message: op_id(r, "message")?,
            },
            39 | 42 => Body::ThreadCreate {
                channel: op_id(r, "channel")?,
                name: decode_text(r, kind == 42, limits::MAX_NAME_BYTES)?,
                message: r.option("message", |r| op_id(r, "message"))?,
            },
            tag => {
                return Err(DecodeError::BadTag {
                    field: "body kind",
                    tag,
                });
            }
        })
    }
}

/// The rule on a `Home`'s nodes, checked when decoding and before signing: at most
/// `MAX_HOMES_PER_MEMBER`, strictly ascending (so no duplicates).
pub(crate) fn check_homes(nodes: &[NodeId]) -> Result<(), &'static str> {
    if nodes.len() > limits::MAX_HOMES_PER_MEMBER {
        return Err("more than 4 home nodes");
    }
    if nodes.windows(2).any(|w| w[0] >= w[1]) {
        return Err("home nodes must be strictly ascending");
    }
    Ok(())
}

fn encode_target(w: &mut Writer, target: &OverwriteTarget) {
    match target {
        OverwriteTarget::Role(role) => {
            w.u8(0);
            w.fixed(&role.0);
        }
        OverwriteTarget::Member(user) => {
            w.u8(1);
            w.fixed(&user.0);
        }
    }
}

fn decode_target(r: &mut Reader<'_>) -> Result<OverwriteTarget, DecodeError> {
    match r.u8("overwrite target")? {
        0 => Ok(OverwriteTarget::Role(OpId(r.array("role")?))),
        1 => Ok(OverwriteTarget::Member(UserId(r.array("member")?))),
        tag => Err(DecodeError::BadTag {
            field: "overwrite target",
            tag: tag.into(),
        }),
    }
}

fn encode_text(w: &mut Writer, text: &Text) {
    match text {
        Text::Plain(text) => w.str(text),
        Text::Sealed(sealed) => sealed.encode(w),
    }
}

/// A text field: a string of at most `max_plain` bytes, or sealed text (the body's kind says
/// which).
fn decode_text(r: &mut Reader<'_>, sealed: bool, max_plain: usize) -> Result<Text, DecodeError> {
    Ok(if sealed {
        Text::Sealed(Sealed::decode(r, max_plain)?)
    } else {
        Text::Plain(r.str("text", max_plain)?.to_owned())
    })
}
