//! Guildhall's durable store: signed ops per guild, accounts, tokens, send nonces and DM ciphertext in one redb
//! file, written through a group-commit thread so that many concurrent writers share one fsync
//! and each is answered only after its data is durable.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use guildhall_proto::id::{GuildId, OpId, UserId};
use guildhall_proto::op::{Op, VerifiedOp};
use guildhall_proto::sealed::ChannelKey;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::oneshot;

/// Bumped on every incompatible change to the tables below.
pub const SCHEMA_VERSION: u64 = 3;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// op id → the op's wire bytes.
const OPS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ops");
/// guild id ‖ u64 BE arrival number → op id: each guild's ops in the order they were accepted,
/// which is an order the core accepts them in again on restart.
const GUILD_LOG: TableDefinition<&[u8], &[u8]> = TableDefinition::new("guild_log");
/// guild id → u64 BE hlc ‖ op id ‖ node address: a guild joined with recent history only,
/// whose older history is still being fetched, content ops before that op, from that node.
const BACKFILLS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("backfills");
/// guild id ‖ u64 BE arrival number → (): the guild's guild-state ops, which a restart loads
/// first.
const GUILD_CONTROL: TableDefinition<&[u8], ()> = TableDefinition::new("guild_control");
/// guild id ‖ author id → u64 BE seq ‖ u64 BE arrival number of the author's op with the
/// highest seq: where each author's log ends, which a restart loads first too.
const GUILD_HEADS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("guild_heads");
/// guild id → ops stored so far.
const GUILD_COUNTS: TableDefinition<&[u8], u64> = TableDefinition::new("guild_counts");
/// username → account record (JSON).
const ACCOUNTS: TableDefinition<&str, &str> = TableDefinition::new("accounts");
/// user id → username.
const USERS: TableDefinition<&[u8], &str> = TableDefinition::new("users");
/// SHA-256 of a bearer token → token record (JSON).
const TOKENS: TableDefinition<&[u8], &str> = TableDefinition::new("tokens");
/// user id ‖ client nonce → the op id the nonce produced ‖ u64 BE ms when it was stored.
const NONCES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("nonces");
/// u64 BE ms when stored ‖ user id ‖ client nonce → (): nonces by age, so the expired ones
/// are a range, not a scan.
const NONCE_AGES: TableDefinition<&[u8], ()> = TableDefinition::new("nonce_ages");
/// Expired nonces removed by one `ExpireNonces`, so no single commit grows large.
const MAX_EXPIRED_PER_WRITE: usize = 10_000;

/// user id ‖ channel id → the last message the user read there.
const READ_STATES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("read_states");

/// user id ‖ u64 BE version → the user's signed DM key record.
const DM_KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("dm_keys");
/// DM id → the signed envelope (ciphertext; the node cannot read it).
const DMS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("dms");
/// user id ‖ u64 BE arrival number → DM id: each local member's DMs in arrival order.
const DM_INBOX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("dm_inbox");
/// user id ‖ DM id → the DM's position in that user's inbox.
const DM_INBOX_INDEX: TableDefinition<&[u8], u64> = TableDefinition::new("dm_inbox_index");
/// user id → DMs in that user's inbox so far.
const DM_INBOX_COUNTS: TableDefinition<&[u8], u64> = TableDefinition::new("dm_inbox_counts");
/// DM id ‖ member user id → the member's home node address: DMs still to hand to other nodes.
const DM_OUTBOX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("dm_outbox");

/// guild id ‖ key id → channel id ‖ key: the channel keys this node made or was given
/// (`spec/auth.md` §9), kept as long as the guild's sealed text they open.
const CHANNEL_KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("channel_keys");

/// How many queued write jobs one transaction takes at most.
const MAX_GROUP: usize = 4096;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error(
        "the database was written by a newer guildhall (schema {found}; this build reads up to \
         {supported}); upgrade guildhall or point it at another data directory"
    )]
    SchemaTooNew { found: u64, supported: u64 },
    #[error("the username is taken")]
    UsernameTaken,
    #[error("no such account")]
    NoSuchAccount,
    /// A `Write::Dm` whose id is stored already (a replay, or a concurrent duplicate).
    #[error("the DM is stored already")]
    DuplicateDm,
    #[error("storage failure: {0}")]
    Db(String),
    #[error("the store is shut down")]
    Closed,
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountRecord {
    pub username: String,
    pub user_id: UserId,
    /// PHC string (argon2id).
    pub password_hash: String,
    /// The user's ed25519 secret key, sealed with the node's storage key.
    pub sealed_secret: Vec<u8>,
    pub created_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    pub username: String,
    pub user_id: UserId,
    pub created_ms: u64,
}

/// One durable change. A job is a list of these, committed together or not at all.
#[derive(Debug, Clone)]
pub enum Write {
    /// A signed op of a guild (see `Write::op`); `author`, `seq` and `control` index it.
    Op {
        guild: GuildId,
        id: OpId,
        bytes: Vec<u8>,
        author: UserId,
        seq: u64,
        control: bool,
    },
    /// Fails the job with `UsernameTaken` if the name exists.
    CreateAccount(AccountRecord),
    /// Replaces an existing account (password change, key import).
    UpdateAccount(AccountRecord),
    Token {
        hash: [u8; 32],
        record: TokenRecord,
    },
    RevokeToken {
        hash: [u8; 32],
    },
    /// Every token of a user (logout everywhere).
    RevokeTokensOf {
        user: UserId,
    },
    Nonce {
        user: UserId,
        nonce: String,
        op: OpId,
        at_ms: u64,
    },
    /// Forgets nonces stored before `before_ms` (the oldest ones, up to a bound per write).
    ExpireNonces {
        before_ms: u64,
    },
    /// Where a guild's back-fill stands (`None`: done, or never needed).
    Backfill {
        guild: GuildId,
        progress: Option<BackfillProgress>,
    },
    ReadState {
        user: UserId,
        channel: OpId,
        message: OpId,
    },
    /// A channel key this node made (stored before anything sealed with it) or was given.
    ChannelKey(ChannelKey),
    /// A verified DM key record; a (user, version) already stored keeps its first record.
    DmKey {
        user: UserId,
        version: u64,
        bytes: Vec<u8>,
    },
    /// A verified DM envelope, appended to the inbox of each of `local_members`. Fails the job
    /// with `DuplicateDm` if the id is stored already.
    Dm {
        id: [u8; 32],
        bytes: Vec<u8>,
        local_members: Vec<UserId>,
    },
    /// A DM still to hand to `member`'s home node at `home`.
    DmOutbox {
        id: [u8; 32],
        member: UserId,
        home: Vec<u8>,
    },
    /// `member`'s home node has the DM.
    DmHandedOver {
        id: [u8; 32],
        member: UserId,
    },
}

/// One DM of a member's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    pub position: u64,
    pub id: [u8; 32],
    pub envelope: Vec<u8>,
}

impl Write {
    /// Stores a guild's op.
    pub fn op(guild: GuildId, op: &VerifiedOp) -> Write {
        let env = op.envelope();
        Write::Op {
            guild,
            id: op.id(),
            bytes: op.encode(),
            author: env.author,
            seq: env.seq,
            control: env.body.is_control(),
        }
    }
}

/// A back-fill to resume: content ops before `before` (hlc, op id), asked of `source` (a
/// libp2p multiaddr, as bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillProgress {
    pub before: (u64, OpId),
    pub source: Vec<u8>,
}

/// A DM pending delivery to another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDm {
    pub id: [u8; 32],
    pub member: UserId,
    pub home: Vec<u8>,
}

struct Job {
    writes: Vec<Write>,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// A handle on the store; clones share the database and the commit thread. When the last clone
/// is dropped the commit thread finishes its queue and the database file is closed.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    committer: Arc<Committer>,
}

struct Committer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Committer {
    fn submit(&self, job: Job) -> Result<(), StoreError> {
        self.jobs
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(job)
            .map_err(|_| StoreError::Closed)
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Store {
    /// Opens (or creates) the database at `path`, refusing one from a newer schema.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Arc::new(Database::create(path).map_err(db_err)?);
        let txn = db.begin_write().map_err(db_err)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let found = meta
                .get("schema_version")
                .map_err(db_err)?
                .map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::SchemaTooNew {
                        found: v,
                        supported: SCHEMA_VERSION,
                    });
                }
                Some(found) if found < SCHEMA_VERSION => {
                    if found < 2 {
                        date_schema_1_nonces(&txn, now_ms())?;
                    }
                    index_schema_2_logs(&txn)?;
                    meta.insert("schema_version", SCHEMA_VERSION)
                        .map_err(db_err)?;
                }
                Some(_) => {}
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)
                        .map_err(db_err)?;
                }
            }
            txn.open_table(OPS).map_err(db_err)?;
            txn.open_table(GUILD_LOG).map_err(db_err)?;
            txn.open_table(GUILD_COUNTS).map_err(db_err)?;
            txn.open_table(ACCOUNTS).map_err(db_err)?;
            txn.open_table(USERS).map_err(db_err)?;
            txn.open_table(TOKENS).map_err(db_err)?;
            txn.open_table(NONCES).map_err(db_err)?;
            txn.open_table(NONCE_AGES).map_err(db_err)?;
            txn.open_table(BACKFILLS).map_err(db_err)?;
            txn.open_table(GUILD_CONTROL).map_err(db_err)?;
            txn.open_table(GUILD_HEADS).map_err(db_err)?;
            txn.open_table(READ_STATES).map_err(db_err)?;
            txn.open_table(DM_KEYS).map_err(db_err)?;
            txn.open_table(DMS).map_err(db_err)?;
            txn.open_table(DM_INBOX).map_err(db_err)?;
            txn.open_table(DM_INBOX_COUNTS).map_err(db_err)?;
            txn.open_table(DM_OUTBOX).map_err(db_err)?;
            txn.open_table(DM_INBOX_INDEX).map_err(db_err)?;
            txn.open_table(CHANNEL_KEYS).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        let (jobs, rx) = mpsc::channel();
        let writer_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("store-commit".into())
            .spawn(move || commit_loop(&writer_db, &rx))
            .map_err(db_err)?;
        let committer = Arc::new(Committer {
            jobs: Some(jobs),
            thread: Some(thread),
        });
        Ok(Store { db, committer })
    }

    /// Commits `writes` as one unit and returns once they are durable. Concurrent calls share
    /// a transaction (group commit).
    pub async fn write(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.enqueue(writes)?.await
    }

    /// Queues `writes` now and returns what resolves once they are durable. Jobs commit in
    /// the order they were queued, so a caller holding a lock while queueing fixes the order.
    pub fn enqueue(
        &self,
        writes: Vec<Write>,
    ) -> Result<impl Future<Output = Result<(), StoreError>> + use<>, StoreError> {
        let (reply, done) = oneshot::channel();
        self.committer.submit(Job { writes, reply })?;
        Ok(async move { done.await.map_err(|_| StoreError::Closed)? })
    }

    pub fn schema_version(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        Ok(meta
            .get("schema_version")
            .map_err(db_err)?
            .map_or(0, |v| v.value()))
    }

    /// Every guild with stored ops.
    pub fn guilds(&self) -> Result<Vec<GuildId>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let counts = txn.open_table(GUILD_COUNTS).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in counts.iter().map_err(db_err)? {
            let (k, _) = entry.map_err(db_err)?;
            out.push(OpId(k.value().try_into().map_err(db_err)?));
        }
        Ok(out)
    }

    /// How many ops of the guild are stored: its log's arrival numbers are `0..len`.
    pub fn guild_log_len(&self, guild: &GuildId) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let counts = txn.open_table(GUILD_COUNTS).map_err(db_err)?;
        Ok(counts
            .get(guild.0.as_slice())
            .map_err(db_err)?
            .map_or(0, |v| v.value()))
    }

    /// The arrival numbers of the guild's guild-state ops and of each author's latest op: what
    /// a restart loads before recent history.
    pub fn guild_log_anchors(&self, guild: &GuildId) -> Result<BTreeSet<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let control = txn.open_table(GUILD_CONTROL).map_err(db_err)?;
        let heads = txn.open_table(GUILD_HEADS).map_err(db_err)?;
        let mut anchors = BTreeSet::new();
        let (start, end) = (log_key(guild, 0), log_key(guild, u64::MAX));
        for entry in control
            .range(start.as_slice()..=end.as_slice())
            .map_err(db_err)?
        {
            let (key, _) = entry.map_err(db_err)?;
            anchors.insert(position_of(key.value())?);
        }
        let (start, end) = (
            [&guild.0[..], &[0; 32]].concat(),
            [&guild.0[..], &[0xff; 32]].concat(),
        );
        for entry in heads
            .range(start.as_slice()..=end.as_slice())
            .map_err(db_err)?
        {
            let (_, value) = entry.map_err(db_err)?;
            anchors.insert(position_of(value.value())?);
        }
        Ok(anchors)
    }

    /// Calls `visit` with each of the guild's ops (arrival number, id, wire bytes) whose
    /// arrival number is in `positions`, oldest first or `newest_first`, stopping at the first
    /// error. Streams: a million ops are never all in memory.
    pub fn visit_guild_log<E: From<StoreError>>(
        &self,
        guild: &GuildId,
        positions: std::ops::Range<u64>,
        newest_first: bool,
        mut visit: impl FnMut(u64, OpId, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let log = txn.open_table(GUILD_LOG).map_err(db_err)?;
        let ops = txn.open_table(OPS).map_err(db_err)?;
        let (start, end) = (
            log_key(guild, positions.start),
            log_key(guild, positions.end),
        );
        let range = log
            .range(start.as_slice()..end.as_slice())
            .map_err(db_err)?;
        let entries: Box<dyn Iterator<Item = _>> = if newest_first {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        for entry in entries {
            let (key, id) = entry.map_err(db_err)?;
            let (id, bytes) = logged_op(&ops, id.value())?;
            visit(position_of(key.value())?, id, bytes.value())?;
        }
        Ok(())
    }

    /// `visit_guild_log` for the given arrival numbers only, in the order given.
    pub fn visit_guild_positions<E: From<StoreError>>(
        &self,
        guild: &GuildId,
        positions: impl IntoIterator<Item = u64>,
        mut visit: impl FnMut(u64, OpId, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let log = txn.open_table(GUILD_LOG).map_err(db_err)?;
        let ops = txn.open_table(OPS).map_err(db_err)?;
        for position in positions {
            let id = log
                .get(log_key(guild, position).as_slice())
                .map_err(db_err)?
                .ok_or_else(|| db_err("no op at that arrival number"))?;
            let (id, bytes) = logged_op(&ops, id.value())?;
            visit(position, id, bytes.value())?;
        }
        Ok(())
    }

    pub fn op(&self, id: &OpId) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let ops = txn.open_table(OPS).map_err(db_err)?;
        Ok(ops
            .get(id.0.as_slice())
            .map_err(db_err)?
            .map(|v| v.value().to_vec()))
    }

    pub fn account(&self, username: &str) -> Result<Option<AccountRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let accounts = txn.open_table(ACCOUNTS).map_err(db_err)?;
        accounts
            .get(username)
            .map_err(db_err)?
            .map(|v| serde_json::from_str(v.value()).map_err(db_err))
            .transpose()
    }

    pub fn username_of(&self, user: &UserId) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let users = txn.open_table(USERS).map_err(db_err)?;
        Ok(users
            .get(user.0.as_slice())
            .map_err(db_err)?
            .map(|v| v.value().to_owned()))
    }

    pub fn token(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let tokens = txn.open_table(TOKENS).map_err(db_err)?;
        tokens
            .get(hash.as_slice())
            .map_err(db_err)?
            .map(|v| serde_json::from_str(v.value()).map_err(db_err))
            .transpose()
    }

    /// The op a send nonce produced, and when the nonce was stored (ms).
    pub fn nonce(&self, user: &UserId, nonce: &str) -> Result<Option<(OpId, u64)>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let nonces = txn.open_table(NONCES).map_err(db_err)?;
        let Some(v) = nonces
            .get(nonce_key(user, nonce).as_slice())
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        let (id, at) = v
            .value()
            .split_at_checked(32)
            .ok_or_else(|| db_err("short nonce record"))?;
        Ok(Some((
            OpId(id.try_into().map_err(db_err)?),
            u64::from_be_bytes(at.try_into().map_err(db_err)?),
        )))
    }
}

impl Store {
    /// Back-fills still under way, by guild.
    pub fn backfills(&self) -> Result<Vec<(GuildId, BackfillProgress)>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(BACKFILLS).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            let v = v.value();
            if v.len() < 40 {
                return Err(db_err("short back-fill record"));
            }
            let hlc = u64::from_be_bytes(v[..8].try_into().map_err(db_err)?);
            let op = OpId(v[8..40].try_into().map_err(db_err)?);
            let progress = BackfillProgress {
                before: (hlc, op),
                source: v[40..].to_vec(),
            };
            out.push((OpId(k.value().try_into().map_err(db_err)?), progress));
        }
        Ok(out)
    }

    /// When the oldest send nonce still remembered was stored.
    pub fn oldest_nonce_ms(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let ages = txn.open_table(NONCE_AGES).map_err(db_err)?;
        let Some((age, _)) = ages.first().map_err(db_err)? else {
            return Ok(None);
        };
        let at = age
            .value()
            .get(..8)
            .ok_or_else(|| db_err("short nonce age"))?;
        Ok(Some(u64::from_be_bytes(at.try_into().map_err(db_err)?)))
    }

    /// Where `user` stopped reading, per channel.
    pub fn read_states(&self, user: &UserId) -> Result<Vec<(OpId, OpId)>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(READ_STATES).map_err(db_err)?;
        let start = [&user.0[..], &[0; 32]].concat();
        let end = [&user.0[..], &[0xff; 32]].concat();
        let mut out = Vec::new();
        for entry in table
            .range(start.as_slice()..=end.as_slice())
            .map_err(db_err)?
        {
            let (k, v) = entry.map_err(db_err)?;
            let channel = OpId(k.value()[32..].try_into().map_err(db_err)?);
            out.push((channel, OpId(v.value().try_into().map_err(db_err)?)));
        }
        Ok(out)
    }
}

impl Store {
    /// The channel keys held for a guild.
    pub fn channel_keys(&self, guild: &GuildId) -> Result<Vec<ChannelKey>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(CHANNEL_KEYS).map_err(db_err)?;
        let start = [&guild.0[..], &[0; 32]].concat();
        let end = [&guild.0[..], &[0xff; 32]].concat();
        let mut out = Vec::new();
        for entry in table
            .range(start.as_slice()..=end.as_slice())
            .map_err(db_err)?
        {
            let value = entry.map_err(db_err)?.1.value().to_vec();
            let (channel, key) = value
                .split_at_checked(32)
                .ok_or_else(|| db_err("short key"))?;
            out.push(ChannelKey {
                guild: *guild,
                channel: OpId(channel.try_into().map_err(db_err)?),
                key: key.try_into().map_err(db_err)?,
            });
        }
        Ok(out)
    }

    /// A user's DM key records, oldest version first.
    pub fn dm_keys(&self, user: &UserId) -> Result<Vec<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(DM_KEYS).map_err(db_err)?;
        let start = [&user.0[..], &[0; 8]].concat();
        let end = [&user.0[..], &[0xff; 8]].concat();
        let mut out = Vec::new();
        for entry in table
            .range(start.as_slice()..=end.as_slice())
            .map_err(db_err)?
        {
            out.push(entry.map_err(db_err)?.1.value().to_vec());
        }
        Ok(out)
    }

    /// A stored DM envelope.
    pub fn dm(&self, id: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(DMS).map_err(db_err)?;
        Ok(table
            .get(id.as_slice())
            .map_err(db_err)?
            .map(|v| v.value().to_vec()))
    }

    /// Up to `limit` DMs of `user`'s inbox after position `after` (0: from the start), each with
    /// its position and id, in arrival order.
    pub fn dm_inbox(
        &self,
        user: &UserId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let inbox = txn.open_table(DM_INBOX).map_err(db_err)?;
        let dms = txn.open_table(DMS).map_err(db_err)?;
        let start = [&user.0[..], &after.saturating_add(1).to_be_bytes()].concat();
        let end = [&user.0[..], &[0xff; 8]].concat();
        let mut out = Vec::new();
        for entry in inbox
            .range(start.as_slice()..=end.as_slice())
            .map_err(db_err)?
            .take(limit)
        {
            let (k, id) = entry.map_err(db_err)?;
            let position = u64::from_be_bytes(k.value()[32..].try_into().map_err(db_err)?);
            let bytes = dms
                .get(id.value())
                .map_err(db_err)?
                .ok_or_else(|| StoreError::Db("an inbox entry names a missing DM".into()))?;
            out.push(InboxEntry {
                position,
                id: id.value().try_into().map_err(db_err)?,
                envelope: bytes.value().to_vec(),
            });
        }
        Ok(out)
    }

    /// Where a DM sits in a user's inbox, if it is there.
    pub fn dm_position(&self, user: &UserId, id: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(DM_INBOX_INDEX).map_err(db_err)?;
        let key = [&user.0[..], &id[..]].concat();
        Ok(table
            .get(key.as_slice())
            .map_err(db_err)?
            .map(|v| v.value()))
    }

    /// Every DM still to hand to another node.
    pub fn dm_outbox(&self) -> Result<Vec<PendingDm>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(DM_OUTBOX).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            let key = k.value();
            out.push(PendingDm {
                id: key[..32].try_into().map_err(db_err)?,
                member: UserId(key[32..].try_into().map_err(db_err)?),
                home: v.value().to_vec(),
            });
        }
        Ok(out)
    }
}

fn log_key(guild: &GuildId, n: u64) -> Vec<u8> {
    [&guild.0[..], &n.to_be_bytes()].concat()
}

/// The op a guild log entry names: its id and its stored bytes.
fn logged_op<'t>(
    ops: &'t impl ReadableTable<&'static [u8], &'static [u8]>,
    id: &[u8],
) -> Result<(OpId, redb::AccessGuard<'t, &'static [u8]>), StoreError> {
    let bytes = ops
        .get(id)
        .map_err(db_err)?
        .ok_or_else(|| db_err("guild log names a missing op"))?;
    Ok((OpId(id.try_into().map_err(db_err)?), bytes))
}

/// The arrival number at the end of a log key or a head record.
fn position_of(bytes: &[u8]) -> Result<u64, StoreError> {
    let tail = bytes
        .len()
        .checked_sub(8)
        .ok_or_else(|| db_err("short log key"))?;
    Ok(u64::from_be_bytes(
        bytes[tail..].try_into().map_err(db_err)?,
    ))
}

fn nonce_key(user: &UserId, nonce: &str) -> Vec<u8> {
    [&user.0[..], nonce.as_bytes()].concat()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Schemas before 3 had no index of guild-state ops and log heads: build them from the logs.
fn index_schema_2_logs(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let log = txn.open_table(GUILD_LOG).map_err(db_err)?;
    let ops = txn.open_table(OPS).map_err(db_err)?;
    let mut control = txn.open_table(GUILD_CONTROL).map_err(db_err)?;
    let mut heads = txn.open_table(GUILD_HEADS).map_err(db_err)?;
    for entry in log.iter().map_err(db_err)? {
        let (key, id) = entry.map_err(db_err)?;
        let (_, bytes) = logged_op(&ops, id.value())?;
        let op = Op::decode(bytes.value()).map_err(db_err)?;
        let env = op.envelope();
        let (guild, position) = key.value().split_at(32);
        let position = u64::from_be_bytes(position.try_into().map_err(db_err)?);
        index_op(
            &mut control,
            &mut heads,
            guild,
            position,
            (&env.author, env.seq, env.body.is_control()),
        )?;
    }
    Ok(())
}

/// Records a stored op in the indexes a restart loads first.
fn index_op(
    control: &mut redb::Table<&'static [u8], ()>,
    heads: &mut redb::Table<&'static [u8], &'static [u8]>,
    guild: &[u8],
    position: u64,
    (author, seq, is_control): (&UserId, u64, bool),
) -> Result<(), StoreError> {
    if is_control {
        let key = [guild, &position.to_be_bytes()].concat();
        control.insert(key.as_slice(), ()).map_err(db_err)?;
    }
    let key = [guild, &author.0[..]].concat();
    let higher = match heads.get(key.as_slice()).map_err(db_err)? {
        Some(v) => v
            .value()
            .get(..8)
            .is_some_and(|s| s < &seq.to_be_bytes()[..]),
        None => true,
    };
    if higher {
        let value = [seq.to_be_bytes(), position.to_be_bytes()].concat();
        heads
            .insert(key.as_slice(), value.as_slice())
            .map_err(db_err)?;
    }
    Ok(())
}

/// Schema 1 kept nonces forever with no date: date each one `now`, so it expires one
/// retention period after the upgrade.
fn date_schema_1_nonces(txn: &redb::WriteTransaction, now: u64) -> Result<(), StoreError> {
    let mut nonces = txn.open_table(NONCES).map_err(db_err)?;
    let mut ages = txn.open_table(NONCE_AGES).map_err(db_err)?;
    let mut undated = Vec::new();
    for entry in nonces.iter().map_err(db_err)? {
        let (key, value) = entry.map_err(db_err)?;
        if value.value().len() == 32 {
            undated.push((key.value().to_vec(), value.value().to_vec()));
        }
    }
    for (key, op) in undated {
        record_nonce(&mut nonces, &mut ages, &key, &op, now)?;
    }
    Ok(())
}

/// Records that the send nonce `key` (user id ‖ nonce) produced `op` at `at_ms`, and files it
/// by age for expiry.
fn record_nonce(
    nonces: &mut redb::Table<&'static [u8], &'static [u8]>,
    ages: &mut redb::Table<&'static [u8], ()>,
    key: &[u8],
    op: &[u8],
    at_ms: u64,
) -> Result<(), StoreError> {
    let value = [op, &at_ms.to_be_bytes()].concat();
    nonces.insert(key, value.as_slice()).map_err(db_err)?;
    let age = [&at_ms.to_be_bytes()[..], key].concat();
    ages.insert(age.as_slice(), ()).map_err(db_err)?;
    Ok(())
}

/// Takes every queued job (up to `MAX_GROUP`), applies them in one transaction and answers
/// each after the commit. A job whose precondition fails is skipped alone.
fn commit_loop(db: &Database, jobs: &mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let outcome = commit_group(db, &group);
        match outcome {
            Ok(results) => {
                for (job, result) in group.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = group.len(), "group commit failed");
                for job in group {
                    let _ = job.reply.send(Err(StoreError::Db(e.to_string())));
                }
            }
        }
    }
}

type JobResults = Vec<Result<(), StoreError>>;

fn commit_group(db: &Database, group: &[Job]) -> Result<JobResults, StoreError> {
    let txn = db.begin_write().map_err(db_err)?;
    let mut results = Vec::with_capacity(group.len());
    {
        let mut tables = Tables {
            ops: txn.open_table(OPS).map_err(db_err)?,
            log: txn.open_table(GUILD_LOG).map_err(db_err)?,
            counts: txn.open_table(GUILD_COUNTS).map_err(db_err)?,
            accounts: txn.open_table(ACCOUNTS).map_err(db_err)?,
            users: txn.open_table(USERS).map_err(db_err)?,
            tokens: txn.open_table(TOKENS).map_err(db_err)?,
            nonces: txn.open_table(NONCES).map_err(db_err)?,
            nonce_ages: txn.open_table(NONCE_AGES).map_err(db_err)?,
            backfills: txn.open_table(BACKFILLS).map_err(db_err)?,
            control: txn.open_table(GUILD_CONTROL).map_err(db_err)?,
            heads: txn.open_table(GUILD_HEADS).map_err(db_err)?,
            read_states: txn.open_table(READ_STATES).map_err(db_err)?,
            dm_keys: txn.open_table(DM_KEYS).map_err(db_err)?,
            dms: txn.open_table(DMS).map_err(db_err)?,
            dm_inbox: txn.open_table(DM_INBOX).map_err(db_err)?,
            dm_inbox_counts: txn.open_table(DM_INBOX_COUNTS).map_err(db_err)?,
            dm_inbox_index: txn.open_table(DM_INBOX_INDEX).map_err(db_err)?,
            dm_outbox: txn.open_table(DM_OUTBOX).map_err(db_err)?,
            channel_keys: txn.open_table(CHANNEL_KEYS).map_err(db_err)?,
            new_counts: HashMap::new(),
        };
        for job in group {
            results.push(tables.check(&job.writes).and_then(|()| {
                for w in &job.writes {
                    tables.apply(w)?;
                }
                Ok(())
            }));
        }
        tables.flush_counts()?;
    }
    txn.commit().map_err(db_err)?;
    Ok(results)
}

struct Tables<'t> {
    ops: redb::Table<'t, &'static [u8], &'static [u8]>,
    log: redb::Table<'t, &'static [u8], &'static [u8]>,
    counts: redb::Table<'t, &'static [u8], u64>,
    accounts: redb::Table<'t, &'static str, &'static str>,
    users: redb::Table<'t, &'static [u8], &'static str>,
    tokens: redb::Table<'t, &'static [u8], &'static str>,
    nonces: redb::Table<'t, &'static [u8], &'static [u8]>,
    nonce_ages: redb::Table<'t, &'static [u8], ()>,
    backfills: redb::Table<'t, &'static [u8], &'static [u8]>,
    control: redb::Table<'t, &'static [u8], ()>,
    heads: redb::Table<'t, &'static [u8], &'static [u8]>,
    read_states: redb::Table<'t, &'static [u8], &'static [u8]>,
    dm_keys: redb::Table<'t, &'static [u8], &'static [u8]>,
    dms: redb::Table<'t, &'static [u8], &'static [u8]>,
    dm_inbox: redb::Table<'t, &'static [u8], &'static [u8]>,
    dm_inbox_counts: redb::Table<'t, &'static [u8], u64>,
    dm_inbox_index: redb::Table<'t, &'static [u8], u64>,
    dm_outbox: redb::Table<'t, &'static [u8], &'static [u8]>,
    channel_keys: redb::Table<'t, &'static [u8], &'static [u8]>,
    new_counts: HashMap<GuildId, u64>,
}

impl Tables<'_> {
    fn check(&self, writes: &[Write]) -> Result<(), StoreError> {
        for w in writes {
            match w {
                Write::CreateAccount(a)
                    if self
                        .accounts
                        .get(a.username.as_str())
                        .map_err(db_err)?
                        .is_some() =>
                {
                    return Err(StoreError::UsernameTaken);
                }
                Write::Dm { id, .. } if self.dms.get(id.as_slice()).map_err(db_err)?.is_some() => {
                    return Err(StoreError::DuplicateDm);
                }
                Write::UpdateAccount(a)
                    if self
                        .accounts
                        .get(a.username.as_str())
                        .map_err(db_err)?
                        .is_none() =>
                {
                    return Err(StoreError::NoSuchAccount);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn apply(&mut self, write: &Write) -> Result<(), StoreError> {
        match write {
            Write::Op {
                guild,
                id,
                bytes,
                author,
                seq,
                control,
            } => {
                if self.ops.get(id.0.as_slice()).map_err(db_err)?.is_some() {
                    return Ok(());
                }
                self.ops
                    .insert(id.0.as_slice(), bytes.as_slice())
                    .map_err(db_err)?;
                let n = match self.new_counts.get(guild) {
                    Some(n) => *n,
                    None => self
                        .counts
                        .get(guild.0.as_slice())
                        .map_err(db_err)?
                        .map_or(0, |v| v.value()),
                };
                self.log
                    .insert(log_key(guild, n).as_slice(), id.0.as_slice())
                    .map_err(db_err)?;
                index_op(
                    &mut self.control,
                    &mut self.heads,
                    &guild.0,
                    n,
                    (author, *seq, *control),
                )?;
                self.new_counts.insert(*guild, n + 1);
            }
            Write::CreateAccount(a) | Write::UpdateAccount(a) => {
                let json = serde_json::to_string(a).map_err(db_err)?;
                self.accounts
                    .insert(a.username.as_str(), json.as_str())
                    .map_err(db_err)?;
                self.users
                    .insert(a.user_id.0.as_slice(), a.username.as_str())
                    .map_err(db_err)?;
            }
            Write::Token { hash, record } => {
                let json = serde_json::to_string(record).map_err(db_err)?;
                self.tokens
                    .insert(hash.as_slice(), json.as_str())
                    .map_err(db_err)?;
            }
            Write::RevokeToken { hash } => {
                self.tokens.remove(hash.as_slice()).map_err(db_err)?;
            }
            Write::RevokeTokensOf { user } => {
                let mut doomed = Vec::new();
                for entry in self.tokens.iter().map_err(db_err)? {
                    let (k, v) = entry.map_err(db_err)?;
                    let record: TokenRecord = serde_json::from_str(v.value()).map_err(db_err)?;
                    if record.user_id == *user {
                        doomed.push(k.value().to_vec());
                    }
                }
                for k in doomed {
                    self.tokens.remove(k.as_slice()).map_err(db_err)?;
                }
            }
            Write::Nonce {
                user,
                nonce,
                op,
                at_ms,
            } => {
                let key = nonce_key(user, nonce);
                record_nonce(&mut self.nonces, &mut self.nonce_ages, &key, &op.0, *at_ms)?;
            }
            Write::Backfill { guild, progress } => match progress {
                Some(p) => {
                    let value = [&p.before.0.to_be_bytes()[..], &p.before.1.0, &p.source].concat();
                    self.backfills
                        .insert(guild.0.as_slice(), value.as_slice())
                        .map_err(db_err)?;
                }
                None => {
                    self.backfills.remove(guild.0.as_slice()).map_err(db_err)?;
                }
            },
            Write::ExpireNonces { before_ms } => {
                let cutoff = before_ms.to_be_bytes();
                let mut expired = Vec::new();
                for entry in self
                    .nonce_ages
                    .range(..cutoff.as_slice())
                    .map_err(db_err)?
                    .take(MAX_EXPIRED_PER_WRITE)
                {
                    expired.push(entry.map_err(db_err)?.0.value().to_vec());
                }
                for age in expired {
                    self.nonce_ages.remove(age.as_slice()).map_err(db_err)?;
                    let (at, key) = age.split_at(8);
                    // The nonce may have been stored again since (with a newer date): keep it.
                    let same = self
                        .nonces
                        .get(key)
                        .map_err(db_err)?
                        .is_some_and(|v| v.value().get(32..) == Some(at));
                    if same {
                        self.nonces.remove(key).map_err(db_err)?;
                    }
                }
            }
            Write::ReadState {
                user,
                channel,
                message,
            } => {
                let key = [&user.0[..], &channel.0[..]].concat();
                self.read_states
                    .insert(key.as_slice(), message.0.as_slice())
                    .map_err(db_err)?;
            }
            Write::ChannelKey(key) => {
                let id = [&key.guild.0[..], &key.id().0[..]].concat();
                let value = [&key.channel.0[..], &key.key[..]].concat();
                self.channel_keys
                    .insert(id.as_slice(), value.as_slice())
                    .map_err(db_err)?;
            }
            Write::DmKey {
                user,
                version,
                bytes,
            } => {
                let key = [&user.0[..], &version.to_be_bytes()].concat();
                if self.dm_keys.get(key.as_slice()).map_err(db_err)?.is_none() {
                    self.dm_keys
                        .insert(key.as_slice(), bytes.as_slice())
                        .map_err(db_err)?;
                }
            }
            Write::Dm {
                id,
                bytes,
                local_members,
            } => {
                self.dms
                    .insert(id.as_slice(), bytes.as_slice())
                    .map_err(db_err)?;
                for member in local_members {
                    let n = self
                        .dm_inbox_counts
                        .get(member.0.as_slice())
                        .map_err(db_err)?
                        .map_or(0, |v| v.value())
                        + 1;
                    let key = [&member.0[..], &n.to_be_bytes()].concat();
                    self.dm_inbox
                        .insert(key.as_slice(), id.as_slice())
                        .map_err(db_err)?;
                    self.dm_inbox_counts
                        .insert(member.0.as_slice(), n)
                        .map_err(db_err)?;
                    let index_key = [&member.0[..], &id[..]].concat();
                    self.dm_inbox_index
                        .insert(index_key.as_slice(), n)
                        .map_err(db_err)?;
                }
            }
            Write::DmOutbox { id, member, home } => {
                let key = [&id[..], &member.0[..]].concat();
                self.dm_outbox
                    .insert(key.as_slice(), home.as_slice())
                    .map_err(db_err)?;
            }
            Write::DmHandedOver { id, member } => {
                let key = [&id[..], &member.0[..]].concat();
                self.dm_outbox.remove(key.as_slice()).map_err(db_err)?;
            }
        }
        Ok(())
    }

    fn flush_counts(&mut self) -> Result<(), StoreError> {
        for (guild, n) in self.new_counts.drain() {
            self.counts.insert(guild.0.as_slice(), n).map_err(db_err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
