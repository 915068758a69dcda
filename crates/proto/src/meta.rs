//! The guild's cosmetic metadata: a flat Automerge map (guild name and description, channel
//! names, topics, positions and categories, role names and colors, nicknames).
//!
//! Only metadata lives in Automerge: its per-key merge cannot express "a removal invalidates the
//! removed member's concurrent actions", so who-may-do-what lives in `state` (see
//! `spec/auth.md`). Keys are flat (`channel.<id>.topic`) so that two members editing at once
//! never create rival nested objects, and every key maps to exactly one permission check.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, Change, ChangeHash, ObjType, ROOT, ReadDoc, ScalarValue};
use serde::Serialize;

use crate::change_scan;
use crate::error::AuthError;
use crate::id::{ChannelId, OpId, RoleId, UserId};
use crate::limits;
use crate::perm::Permissions;
use crate::state::GuildState;

/// A value in the metadata document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum MetaValue {
    Str(String),
    Int(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Guild,
    Channel(OpId),
    Role(OpId),
    Member(UserId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Name,
    Text,
    Id,
    Position,
    Color,
}

/// A metadata key: what it belongs to and which field (`spec/auth.md` §7). Its string form
/// (`channel.<id>.topic`) is the key in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    GuildName,
    GuildDescription,
    GuildIcon,
    GuildSystemChannel,
    ChannelName(ChannelId),
    ChannelTopic(ChannelId),
    ChannelPosition(ChannelId),
    ChannelParent(ChannelId),
    RoleName(RoleId),
    RoleColor(RoleId),
    MemberNick(UserId),
}

impl fmt::Display for MetaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaKey::GuildName => f.write_str("guild.name"),
            MetaKey::GuildDescription => f.write_str("guild.description"),
            MetaKey::GuildIcon => f.write_str("guild.icon"),
            MetaKey::GuildSystemChannel => f.write_str("guild.system_channel"),
            MetaKey::ChannelName(c) => write!(f, "channel.{c}.name"),
            MetaKey::ChannelTopic(c) => write!(f, "channel.{c}.topic"),
            MetaKey::ChannelPosition(c) => write!(f, "channel.{c}.position"),
            MetaKey::ChannelParent(c) => write!(f, "channel.{c}.parent"),
            MetaKey::RoleName(r) => write!(f, "role.{r}.name"),
            MetaKey::RoleColor(r) => write!(f, "role.{r}.color"),
            MetaKey::MemberNick(u) => write!(f, "member.{u}.nick"),
        }
    }
}

impl FromStr for MetaKey {
    type Err = ();

    fn from_str(key: &str) -> Result<MetaKey, ()> {
        let parts: Vec<&str> = key.split('.').collect();
        let id = |s: &str| s.parse::<OpId>().map_err(drop);
        Ok(match parts.as_slice() {
            ["guild", "name"] => MetaKey::GuildName,
            ["guild", "description"] => MetaKey::GuildDescription,
            ["guild", "icon"] => MetaKey::GuildIcon,
            ["guild", "system_channel"] => MetaKey::GuildSystemChannel,
            ["channel", c, "name"] => MetaKey::ChannelName(id(c)?),
            ["channel", c, "topic"] => MetaKey::ChannelTopic(id(c)?),
            ["channel", c, "position"] => MetaKey::ChannelPosition(id(c)?),
            ["channel", c, "parent"] => MetaKey::ChannelParent(id(c)?),
            ["role", r, "name"] => MetaKey::RoleName(id(r)?),
            ["role", r, "color"] => MetaKey::RoleColor(id(r)?),
            ["member", u, "nick"] => MetaKey::MemberNick(u.parse().map_err(drop)?),
            _ => return Err(()),
        })
    }
}

impl MetaKey {
    /// What the key belongs to (whose permission it needs) and the shape of its value.
    fn rule(self) -> (Scope, Shape) {
        match self {
            MetaKey::GuildName => (Scope::Guild, Shape::Name),
            MetaKey::GuildDescription | MetaKey::GuildIcon => (Scope::Guild, Shape::Text),
            MetaKey::GuildSystemChannel => (Scope::Guild, Shape::Id),
            MetaKey::ChannelName(c) => (Scope::Channel(c), Shape::Name),
            MetaKey::ChannelTopic(c) => (Scope::Channel(c), Shape::Text),
            MetaKey::ChannelPosition(c) => (Scope::Channel(c), Shape::Position),
            MetaKey::ChannelParent(c) => (Scope::Channel(c), Shape::Id),
            MetaKey::RoleName(r) => (Scope::Role(r), Shape::Name),
            MetaKey::RoleColor(r) => (Scope::Role(r), Shape::Color),
            MetaKey::MemberNick(u) => (Scope::Member(u), Shape::Name),
        }
    }
}

fn parse_key(key: &str) -> Result<(Scope, Shape), String> {
    key.parse::<MetaKey>()
        .map(MetaKey::rule)
        .map_err(|()| format!("unknown metadata key {key:?}"))
}

fn check_value(key: &str, shape: Shape, value: &ScalarValue) -> Result<(), String> {
    let ok = match (shape, value) {
        (Shape::Name, ScalarValue::Str(s)) => crate::validate::check_body(&crate::Body::Genesis {
            name: s.to_string(),
        })
        .is_ok(),
        (Shape::Text, ScalarValue::Str(s)) => s.chars().count() <= limits::MAX_META_VALUE_CHARS,
        (Shape::Id, ScalarValue::Str(s)) => s.parse::<OpId>().is_ok(),
        (Shape::Position, ScalarValue::Int(i)) => (0..=i64::from(u32::MAX)).contains(i),
        (Shape::Color, ScalarValue::Int(i)) => (0..=0xff_ffff).contains(i),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("invalid value for {key:?}"))
    }
}

pub fn actor_for(user: &UserId) -> ActorId {
    ActorId::from(&user.0[..])
}

/// Parses a change with Automerge, which expands every run of its columns, so only after the
/// op count is known to be bounded. Decoded ops have passed this scan already (`validate`); it
/// is repeated here, for O(bytes), so that no caller can hand Automerge a change that has not.
fn parse_change(bytes: &[u8]) -> Result<Change, String> {
    change_scan::claimed_ops(bytes, limits::MAX_META_CHANGE_OPS).map_err(|e| e.to_string())?;
    Change::from_bytes(bytes.to_vec()).map_err(|e| format!("not an Automerge change: {e}"))
}

/// Decodes a metadata change and checks its shape: authored by `author`'s actor, root-level
/// scalar puts and deletes of known keys only.
fn decode_change(author: &UserId, bytes: &[u8]) -> Result<(Change, Vec<(String, Scope)>), String> {
    let change = parse_change(bytes)?;
    if change.actor_id() != &actor_for(author) {
        return Err("the change's actor is not the op's author".into());
    }
    let expanded = change.decode();
    let mut keys = Vec::new();
    for op in &expanded.operations {
        let key = match (&op.obj, &op.key, op.insert) {
            (automerge::legacy::ObjectId::Root, automerge::legacy::Key::Map(k), false) => {
                k.to_string()
            }
            _ => return Err("only keys of the root map may be written".into()),
        };
        let (scope, shape) = parse_key(&key)?;
        match &op.action {
            automerge::legacy::OpType::Put(value) => check_value(&key, shape, value)?,
            automerge::legacy::OpType::Delete => {}
            _ => {
                return Err(format!(
                    "only scalar puts and deletes are allowed, at {key:?}"
                ));
            }
        }
        keys.push((key, scope));
    }
    if keys.is_empty() {
        return Err("the change writes nothing".into());
    }
    Ok((change, keys))
}

/// Authorizes a metadata change key by key against the guild state at the op's causal deps.
pub fn authorize_change(
    state: &GuildState,
    author: &UserId,
    bytes: &[u8],
) -> Result<(), AuthError> {
    let (_, keys) = decode_change(author, bytes).map_err(AuthError::BadMetaChange)?;
    for (_, scope) in keys {
        match scope {
            Scope::Guild => {
                require(state.permissions(author), Permissions::MANAGE_GUILD)?;
            }
            Scope::Channel(channel) => {
                state.require_in_channel(author, &channel, Permissions::MANAGE_CHANNELS)?;
            }
            Scope::Role(role) => {
                require(state.permissions(author), Permissions::MANAGE_ROLES)?;
                let r = state.roles.get(&role).ok_or(AuthError::UnknownRole)?;
                if role == state.id {
                    return Err(AuthError::EveryoneRole);
                }
                if u64::from(r.position) >= state.top_position(author) {
                    return Err(AuthError::Hierarchy);
                }
            }
            Scope::Member(member) => {
                if !state.is_member(&member) {
                    return Err(AuthError::UnknownMember);
                }
                if member == *author {
                    require(state.permissions(author), Permissions::CHANGE_NICKNAME)?;
                } else {
                    require(state.permissions(author), Permissions::MANAGE_NICKNAMES)?;
                    if member == state.owner
                        || state.top_position(&member) >= state.top_position(author)
                    {
                        return Err(AuthError::Hierarchy);
                    }
                }
            }
        }
    }
    Ok(())
}

fn require(have: Permissions, needed: Permissions) -> Result<(), AuthError> {
    if have.contains(needed) {
        Ok(())
    } else {
        Err(AuthError::MissingPermission(needed - have))
    }
}

/// What a change links to, read in one parse.
pub struct ChangeLinks {
    pub hash: ChangeHash,
    /// The Automerge hashes it depends on.
    pub deps: Vec<ChangeHash>,
    /// The users whose changes Automerge must have applied before it: the actors its ops name,
    /// and its own actor unless this is that actor's first change. Automerge panics applying a
    /// change that names an actor it has not seen. An error when an actor is no user.
    pub actors: Result<Vec<UserId>, AuthError>,
}

/// A change's links, or an error if the bytes are not a change.
pub fn change_links(bytes: &[u8]) -> Result<ChangeLinks, AuthError> {
    let change = parse_change(bytes).map_err(AuthError::BadMetaChange)?;
    let own = (change.seq() != 1).then(|| change.actor_id());
    let actors = own
        .into_iter()
        .chain(change.other_actor_ids())
        .map(|actor| {
            <[u8; 32]>::try_from(actor.to_bytes())
                .map(UserId)
                .map_err(|_| AuthError::BadMetaChange("names an actor that is no user".into()))
        })
        .collect();
    Ok(ChangeLinks {
        hash: change.hash(),
        deps: change.deps().to_vec(),
        actors,
    })
}

/// The metadata document of one guild, built from its valid metadata changes.
#[derive(Debug, Clone, Default)]
pub struct MetaDoc {
    doc: AutoCommit,
    applied: HashMap<ChangeHash, OpId>,
    /// The actors of the changes applied: the only ones Automerge knows.
    actors: HashSet<ActorId>,
}

impl MetaDoc {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a change whose op is authorized. Fails (and changes nothing) if an Automerge
    /// dependency is missing, i.e. its op was invalid, or Automerge refuses the change.
    pub fn apply(&mut self, op: OpId, bytes: &[u8]) -> Result<(), AuthError> {
        let change = parse_change(bytes).map_err(AuthError::BadMetaChange)?;
        if let Some(missing) = change.deps().iter().find(|d| !self.applied.contains_key(d)) {
            return Err(AuthError::BadMetaChange(format!(
                "depends on the unknown or invalid change {missing}"
            )));
        }
        let hash = change.hash();
        if self.applied.contains_key(&hash) {
            return Err(AuthError::BadMetaChange("duplicate change".into()));
        }
        // Automerge panics applying a change that names an actor it does not know, and it
        // learns a new actor only from that actor's change at seq 1. An honest change names only
        // actors of changes it depends on (its predecessors', its own previous change's), so
        // they are known. A change without ops is never valid (`decode_change`): refused before
        // its actor is recorded.
        if change.is_empty() {
            return Err(AuthError::BadMetaChange("the change writes nothing".into()));
        }
        let new_actor = |a: &ActorId| !self.actors.contains(a);
        if change.other_actor_ids().iter().any(new_actor)
            || (change.seq() != 1 && new_actor(change.actor_id()))
        {
            return Err(AuthError::BadMetaChange(
                "names an actor of no applied change".into(),
            ));
        }
        let actor = change.actor_id().clone();
        self.doc
            .apply_changes([change])
            .map_err(|e| AuthError::BadMetaChange(e.to_string()))?;
        self.applied.insert(hash, op);
        self.actors.insert(actor);
        Ok(())
    }

    fn get(&self, key: &str) -> Option<MetaValue> {
        match self.doc.get(ROOT, key).ok().flatten()?.0 {
            automerge::Value::Scalar(s) => match s.as_ref() {
                ScalarValue::Str(s) => Some(MetaValue::Str(s.to_string())),
                ScalarValue::Int(i) => Some(MetaValue::Int(*i)),
                _ => None,
            },
            automerge::Value::Object(ObjType::Map) | automerge::Value::Object(_) => None,
        }
    }

    pub fn get_str(&self, key: MetaKey) -> Option<String> {
        match self.get(&key.to_string())? {
            MetaValue::Str(s) => Some(s),
            MetaValue::Int(_) => None,
        }
    }

    pub fn get_int(&self, key: MetaKey) -> Option<i64> {
        match self.get(&key.to_string())? {
            MetaValue::Int(i) => Some(i),
            MetaValue::Str(_) => None,
        }
    }

    /// Every key and its current value, sorted: the document's materialized content.
    pub fn entries(&self) -> BTreeMap<String, MetaValue> {
        self.doc
            .keys(ROOT)
            .filter_map(|k| self.get(&k).map(|v| (k, v)))
            .collect()
    }

    /// Builds (but does not apply) a change by `author` that puts the given values; `None`
    /// deletes a key. The change depends on everything applied so far. `None` when the edits
    /// would change nothing. Keys are `MetaKey`s, or any text (a test or an attacker crafting
    /// a change authorization must refuse).
    pub fn make_change<K: fmt::Display>(
        &self,
        author: &UserId,
        edits: &[(K, Option<MetaValue>)],
    ) -> Option<Vec<u8>> {
        let mut fork = self.doc.clone().with_actor(actor_for(author));
        for (key, value) in edits {
            let key = key.to_string();
            let result = match value {
                Some(MetaValue::Str(s)) => fork.put(ROOT, &key, s.as_str()),
                Some(MetaValue::Int(i)) => fork.put(ROOT, &key, *i),
                None if fork.get(ROOT, &key).ok().flatten().is_some() => fork.delete(ROOT, &key),
                None => Ok(()),
            };
            result.expect("writes to the root map of a local fork cannot fail");
        }
        // Edits that change nothing make no change (and no op).
        fork.commit()?;
        // Uncompressed, so that every node can count its ops without inflating it
        // (`Change::bytes` would DEFLATE a change over 256 bytes).
        fork.get_last_local_change().map(|c| c.raw_bytes().to_vec())
    }
}
