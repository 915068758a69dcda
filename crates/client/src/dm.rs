//! End-to-end encrypted DMs on the client: the keyring that holds the user's DM secrets (they
//! never reach the node), sealing and opening envelopes, and each conversation's messages with
//! their replies, edits, deletes and reactions.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use guildhall_proto::dm::{self, DmEnvelope, DmError, DmKeyRecord, SealRandomness, Sealing};
use guildhall_proto::id::{Keypair, sha256};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{Client, ClientError, Result};

pub use guildhall_proto::dm::pair_conversation;
pub use guildhall_proto::id::UserId;

/// Edits and messages: the same limit as guild messages.
pub const MAX_DM_CONTENT_CHARS: usize = 4_000;

/// The user's identity key and every DM secret it has had, newest last. Old secrets are kept
/// so history stays readable after a rotation. Save it somewhere only the user can read.
#[derive(Clone, Serialize, Deserialize)]
pub struct DmKeyring {
    identity: String,
    /// (version, X25519 secret), hex.
    secrets: Vec<(u64, String)>,
}

impl DmKeyring {
    /// A keyring with a fresh DM secret (version 1) for the identity key `identity_hex` (what
    /// `Client::export_key` returns, or a key the client holds itself).
    pub fn new(identity_hex: &str) -> Result<DmKeyring> {
        let mut keyring = DmKeyring {
            identity: identity_hex.to_owned(),
            secrets: Vec::new(),
        };
        keyring.identity()?;
        keyring.rotate();
        Ok(keyring)
    }

    pub fn load(path: &Path) -> Result<DmKeyring> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ClientError::Dm(format!("cannot read {}: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| ClientError::Dm(format!("bad keyring: {e}")))
    }

    /// Writes the keyring with owner-only permissions.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let text = serde_json::to_string(self).expect("a keyring serializes");
        // A crash mid-write must not lose the secrets (and with them all DM history): write a
        // new file, then rename it over the old one.
        let fresh = path.with_extension("new");
        options
            .open(&fresh)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&fresh, path))
            .map_err(|e| ClientError::Dm(format!("cannot write {}: {e}", path.display())))
    }

    fn identity(&self) -> Result<Keypair> {
        let bytes: [u8; 32] = hex::decode(&self.identity)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| ClientError::Dm("the identity key is not 32 hex bytes".into()))?;
        Ok(Keypair::from_secret(bytes))
    }

    pub fn user(&self) -> UserId {
        self.identity().expect("checked when made").user_id()
    }

    /// Starts a new DM secret; publish it with `Client::publish_dm_key`.
    pub fn rotate(&mut self) -> u64 {
        let version = self.secrets.last().map_or(1, |(v, _)| v + 1);
        let secret: [u8; 32] = rand::random();
        self.secrets.push((version, hex::encode(secret)));
        version
    }

    fn secrets(&self) -> impl Iterator<Item = (u64, [u8; 32])> + '_ {
        self.secrets.iter().filter_map(|(v, s)| {
            let bytes: [u8; 32] = hex::decode(s).ok()?.try_into().ok()?;
            Some((*v, bytes))
        })
    }

    fn current(&self) -> (u64, [u8; 32]) {
        self.secrets().last().expect("a keyring has a secret")
    }

    /// The public DM key in use.
    pub fn public_key(&self) -> [u8; 32] {
        dm::public_key(&self.current().1)
    }

    fn secret_for(&self, public: &[u8; 32]) -> Option<[u8; 32]> {
        self.secrets()
            .map(|(_, s)| s)
            .find(|s| &dm::public_key(s) == public)
    }

    /// The current key's record, signed by the identity key, naming `home`.
    fn record(&self, home: Vec<u8>) -> Vec<u8> {
        let (version, secret) = self.current();
        DmKeyRecord {
            user: self.user(),
            key: dm::public_key(&secret),
            version,
            created_ms: now_ms(),
            home,
        }
        .sign(&self.identity().expect("checked when made"))
    }
}

/// A short fingerprint of a user's DM key, for comparing out of band (the node holds users'
/// identity keys today, so a dishonest node could publish a DM key of its own).
pub fn fingerprint(key: &[u8; 32]) -> String {
    let digest = sha256(&[b"guildhall/dm/v1 fingerprint\0", key]);
    digest[..10]
        .chunks(2)
        .map(hex::encode)
        .collect::<Vec<_>>()
        .join("-")
}

/// What a DM says once opened (`spec/dm.md` §4): the JSON inside the ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DmPayload {
    Message {
        content: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<String>,
    },
    Edit {
        target: String,
        content: String,
    },
    Delete {
        target: String,
    },
    Reaction {
        target: String,
        emoji: String,
        add: bool,
    },
}

/// A DM that opened: who sent it, with which DM key, and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedDm {
    pub id: String,
    pub conversation: [u8; 32],
    pub sender: UserId,
    pub members: BTreeSet<UserId>,
    pub sent_ms: u64,
    pub payload: DmPayload,
}

/// A DM the node stored: its id and its place in the sender's inbox.
#[derive(Debug, Clone, Deserialize)]
pub struct SentDm {
    pub id: String,
    pub position: u64,
}

/// One entry of the inbox: a position and the envelope's bytes.
#[derive(Debug, Clone)]
pub struct InboxDm {
    pub position: u64,
    pub envelope: Vec<u8>,
}

impl Client {
    /// Publishes the keyring's current DM key, naming this node as home. Idempotent.
    pub async fn publish_dm_key(&self, keyring: &DmKeyring) -> Result<()> {
        let published = self.dm_keys(&keyring.user()).await?;
        if published.iter().any(|r| r.key == keyring.public_key()) {
            return Ok(());
        }
        let home = self.get::<serde_json::Value>("/dms/home").await?;
        let home = hex::decode(home["home"].as_str().unwrap_or_default())
            .map_err(|_| ClientError::Dm("the node's home is not hex".into()))?;
        self.put(
            "/users/@me/dm-keys",
            json!({ "record": hex::encode(keyring.record(home)) }),
        )
        .await
    }

    /// A user's published DM key records, each checked against the user's identity key.
    pub async fn dm_keys(&self, user: &UserId) -> Result<Vec<DmKeyRecord>> {
        let answer = self
            .get::<serde_json::Value>(&format!("/users/{user}/dm-keys"))
            .await?;
        let mut records = Vec::new();
        for text in answer["records"].as_array().into_iter().flatten() {
            let bytes = hex::decode(text.as_str().unwrap_or_default())
                .map_err(|_| ClientError::Dm("a record is not hex".into()))?;
            let record = DmKeyRecord::verify(&bytes)?;
            if record.user == *user {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// Encrypts `payload` to every member (the sender is added if missing) with their newest
    /// published DM key, signs it, and sends it. `conversation` is
    /// `dm::pair_conversation` for a 1:1 DM, or a group's random id.
    pub async fn send_dm(
        &self,
        keyring: &DmKeyring,
        conversation: [u8; 32],
        members: &[UserId],
        payload: &DmPayload,
    ) -> Result<SentDm> {
        check_payload(payload)?;
        let me = keyring.user();
        let mut entries = vec![(me, keyring.public_key())];
        for member in members.iter().filter(|m| **m != me) {
            let newest = self
                .dm_keys(member)
                .await?
                .into_iter()
                .max_by_key(|r| r.version)
                .ok_or_else(|| ClientError::Dm(format!("{member} has published no DM key yet")))?;
            entries.push((*member, newest.key));
        }
        let random = SealRandomness {
            ephemeral_secret: rand::random(),
            body_key: rand::random(),
            body_nonce: rand::random(),
            wrap_nonces: entries.iter().map(|_| rand::random()).collect(),
        };
        let plaintext = serde_json::to_vec(payload).expect("a payload serializes");
        let (_, secret) = keyring.current();
        let envelope = dm::seal(
            &Sealing {
                conversation,
                sender: me,
                sender_secret: &secret,
                members: &entries,
                sent_ms: now_ms(),
                plaintext: &plaintext,
            },
            &random,
        )?;
        self.post_dm_envelope(&envelope.sign(&keyring.identity()?))
            .await
    }

    /// Sends an envelope already sealed and signed.
    pub async fn post_dm_envelope(&self, wire: &[u8]) -> Result<SentDm> {
        self.post("/dms", json!({ "envelope": hex::encode(wire) }))
            .await
    }

    /// Up to `limit` DMs of the inbox after `after` (0 from the start), oldest first.
    pub async fn dm_inbox(&self, after: u64, limit: usize) -> Result<Vec<InboxDm>> {
        let page: serde_json::Value = self
            .get::<serde_json::Value>(&format!("/dms?after={after}&limit={limit}"))
            .await?;
        page["dms"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                Ok(InboxDm {
                    position: d["position"].as_u64().unwrap_or_default(),
                    envelope: hex::decode(d["envelope"].as_str().unwrap_or_default())
                        .map_err(|_| ClientError::Dm("an envelope is not hex".into()))?,
                })
            })
            .collect()
    }

    /// Opens the envelope of a `DM_CREATE` dispatch (`d.envelope`, hex).
    pub async fn open_dm_dispatch(
        &self,
        keyring: &DmKeyring,
        data: &serde_json::Value,
    ) -> Result<OpenedDm> {
        let envelope = hex::decode(data["envelope"].as_str().unwrap_or_default())
            .map_err(|_| ClientError::Dm("the dispatch's envelope is not hex".into()))?;
        self.open_dm(keyring, &envelope).await
    }

    /// Verifies and decrypts an envelope, and checks its sender published the DM key it was
    /// made with.
    pub async fn open_dm(&self, keyring: &DmKeyring, bytes: &[u8]) -> Result<OpenedDm> {
        let verified = DmEnvelope::verify(bytes)?;
        let envelope = &verified.envelope;
        let plaintext = dm::open(envelope, &keyring.user(), |k| keyring.secret_for(k))?;
        let sender_keys = self.dm_keys(&envelope.sender).await?;
        if !sender_keys.iter().any(|r| r.key == envelope.sender_key) {
            return Err(DmError::UnknownSenderKey.into());
        }
        let payload: DmPayload = serde_json::from_slice(&plaintext)
            .map_err(|e| DmError::Malformed(format!("the payload is not a DM payload: {e}")))?;
        check_payload(&payload)?;
        Ok(OpenedDm {
            id: hex::encode(verified.id),
            conversation: envelope.conversation,
            sender: envelope.sender,
            members: envelope.members().copied().collect(),
            sent_ms: envelope.sent_ms,
            payload,
        })
    }
}

fn check_payload(payload: &DmPayload) -> std::result::Result<(), DmError> {
    let content = match payload {
        DmPayload::Message { content, .. } | DmPayload::Edit { content, .. } => content,
        DmPayload::Reaction { emoji, .. } if emoji.is_empty() || emoji.len() > 64 => {
            return Err(DmError::Malformed("an emoji is 1 to 64 bytes".into()));
        }
        _ => return Ok(()),
    };
    let chars = content.chars().count();
    if chars == 0 || chars > MAX_DM_CONTENT_CHARS {
        return Err(DmError::Malformed(format!(
            "content is 1 to {MAX_DM_CONTENT_CHARS} characters"
        )));
    }
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One message of a conversation as its members see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmMessage {
    pub id: String,
    pub sender: UserId,
    pub sent_ms: u64,
    pub content: String,
    pub reply_to: Option<String>,
    pub edited: bool,
    pub deleted: bool,
    /// Emoji → who reacted with it.
    pub reactions: BTreeMap<String, BTreeSet<UserId>>,
}

/// A conversation's state, built from its opened DMs in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    pub members: BTreeSet<UserId>,
    pub messages: Vec<DmMessage>,
    index: HashMap<String, usize>,
    seen: HashSet<String>,
}

impl Conversation {
    /// Applies one opened DM. A DM seen before is `Replayed`; one from a non-member, or an
    /// edit or delete of someone else's message, is refused. The member set follows the
    /// latest DM of a member (a group grows or shrinks by sending to a new set).
    pub fn apply(&mut self, dm: &OpenedDm) -> std::result::Result<(), DmError> {
        if self.seen.contains(&dm.id) {
            return Err(DmError::Replayed);
        }
        if !self.members.is_empty() && !self.members.contains(&dm.sender) {
            return Err(DmError::Malformed("the sender is not a member".into()));
        }
        if is_pair(dm) && !names_its_pair(dm) {
            return Err(DmError::Malformed(
                "a 1:1 DM's conversation id is the pair's id".into(),
            ));
        }
        match &dm.payload {
            DmPayload::Message { content, reply_to } => {
                self.index.insert(dm.id.clone(), self.messages.len());
                self.messages.push(DmMessage {
                    id: dm.id.clone(),
                    sender: dm.sender,
                    sent_ms: dm.sent_ms,
                    content: content.clone(),
                    reply_to: reply_to.clone(),
                    edited: false,
                    deleted: false,
                    reactions: BTreeMap::new(),
                });
            }
            DmPayload::Edit { target, content } => {
                let message = self.own_message(target, &dm.sender)?;
                message.content = content.clone();
                message.edited = true;
            }
            DmPayload::Delete { target } => {
                let message = self.own_message(target, &dm.sender)?;
                message.content.clear();
                message.deleted = true;
                message.reactions.clear();
            }
            DmPayload::Reaction { target, emoji, add } => {
                let message = self.message_mut(target)?;
                let users = message.reactions.entry(emoji.clone()).or_default();
                if *add {
                    users.insert(dm.sender);
                } else {
                    users.remove(&dm.sender);
                    if users.is_empty() {
                        message.reactions.remove(emoji);
                    }
                }
            }
        }
        self.seen.insert(dm.id.clone());
        self.members = dm.members.clone();
        Ok(())
    }

    pub fn message(&self, id: &str) -> Option<&DmMessage> {
        self.index.get(id).map(|&i| &self.messages[i])
    }

    fn message_mut(&mut self, id: &str) -> std::result::Result<&mut DmMessage, DmError> {
        let i = *self
            .index
            .get(id)
            .ok_or_else(|| DmError::Malformed(format!("no message {id} here")))?;
        Ok(&mut self.messages[i])
    }

    fn own_message(
        &mut self,
        id: &str,
        sender: &UserId,
    ) -> std::result::Result<&mut DmMessage, DmError> {
        let message = self.message_mut(id)?;
        if message.sender != *sender || message.deleted {
            return Err(DmError::Malformed(
                "only the author edits or deletes a message, and not once deleted".into(),
            ));
        }
        Ok(message)
    }
}

/// A DM between exactly two people: a 1:1 conversation, not a group.
fn is_pair(dm: &OpenedDm) -> bool {
    dm.members.len() == 2
}

/// Whether the DM's conversation id is the 1:1 id of its two members.
fn names_its_pair(dm: &OpenedDm) -> bool {
    let mut members = dm.members.iter();
    match (members.next(), members.next()) {
        (Some(a), Some(b)) => dm::pair_conversation(a, b) == dm.conversation,
        _ => false,
    }
}

/// Every conversation of a user, fed from the inbox and `DM_CREATE` dispatches. 1:1
/// conversations and groups are kept apart, so a group whose id collides with a pair's id
/// cannot take over that 1:1 conversation.
#[derive(Debug, Default)]
pub struct Conversations {
    pub pairs: BTreeMap<[u8; 32], Conversation>,
    pub groups: BTreeMap<[u8; 32], Conversation>,
}

impl Conversations {
    pub fn apply(&mut self, dm: &OpenedDm) -> std::result::Result<(), DmError> {
        let conversations = if is_pair(dm) {
            &mut self.pairs
        } else {
            &mut self.groups
        };
        conversations.entry(dm.conversation).or_default().apply(dm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(n: u8) -> UserId {
        Keypair::from_secret([n; 32]).user_id()
    }

    fn dm(id: &str, sender: u8, members: &[u8], payload: DmPayload) -> OpenedDm {
        OpenedDm {
            id: id.into(),
            conversation: [1; 32],
            sender: user(sender),
            members: members.iter().map(|&n| user(n)).collect(),
            sent_ms: 0,
            payload,
        }
    }

    fn message(content: &str) -> DmPayload {
        DmPayload::Message {
            content: content.into(),
            reply_to: None,
        }
    }

    #[test]
    fn edits_deletes_and_reactions_follow_the_rules() {
        let mut c = Conversation::default();
        c.apply(&dm("m1", 1, &[1, 2, 3], message("hi"))).unwrap();
        let edit = |id: &str, by| {
            dm(
                id,
                by,
                &[1, 2, 3],
                DmPayload::Edit {
                    target: "m1".into(),
                    content: "hello".into(),
                },
            )
        };
        assert!(c.apply(&edit("e1", 2)).is_err(), "only the author edits");
        c.apply(&edit("e2", 1)).unwrap();
        assert_eq!(c.message("m1").unwrap().content, "hello");
        let react = DmPayload::Reaction {
            target: "m1".into(),
            emoji: "👍".into(),
            add: true,
        };
        c.apply(&dm("r1", 2, &[1, 2, 3], react)).unwrap();
        assert_eq!(c.message("m1").unwrap().reactions["👍"].len(), 1);
        assert_eq!(
            c.apply(&dm("r1", 2, &[1, 2, 3], message("again"))),
            Err(DmError::Replayed)
        );
        assert!(c.apply(&dm("x", 9, &[9, 1], message("let me in"))).is_err());
        let delete = DmPayload::Delete {
            target: "m1".into(),
        };
        c.apply(&dm("d1", 1, &[1, 2, 3], delete)).unwrap();
        let m = c.message("m1").unwrap();
        assert!(m.deleted && m.content.is_empty() && m.reactions.is_empty());
    }

    #[test]
    fn nobody_takes_over_a_pair_conversation() {
        let pair = dm::pair_conversation(&user(1), &user(2));
        // Cal writes to ada under the ada–bea id, as a 1:1 and as a group.
        let mut as_pair = dm("m", 3, &[1, 3], message("i am bea"));
        as_pair.conversation = pair;
        let mut as_group = dm("g", 3, &[1, 3, 4], message("hi"));
        as_group.conversation = pair;
        let mut all = Conversations::default();
        assert!(all.apply(&as_pair).is_err());
        all.apply(&as_group).unwrap();
        let mut from_bea = dm("b", 2, &[1, 2], message("really bea"));
        from_bea.conversation = pair;
        all.apply(&from_bea).unwrap();
        assert_eq!(all.pairs[&pair].messages[0].content, "really bea");
    }

    #[test]
    fn keyrings_survive_a_save_and_open_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let mut keyring = DmKeyring::new(&hex::encode([5; 32])).unwrap();
        let old = keyring.public_key();
        keyring.rotate();
        keyring.save(&path).unwrap();
        let loaded = DmKeyring::load(&path).unwrap();
        assert_ne!(loaded.public_key(), old);
        assert!(loaded.secret_for(&old).is_some());
        assert_eq!(loaded.user(), user(5));
        assert_eq!(fingerprint(&old).len(), 24);
    }
}
