//! One guild's replica: the set of ops received so far and everything derived from it.
//!
//! Everything here is a deterministic function of the set of valid ops: `Guild::insert` in any
//! order, any number of times, ends in the same `state_hash`. Incremental insertion is the fast
//! path, and a removal re-judges only what it cuts; whenever an op can change verdicts in ways
//! that path does not follow (an equivocation, a removal cutting another removal) the guild
//! re-resolves from scratch with the reference algorithm of `spec/auth.md`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use foldhash::fast::RandomState;
use std::ops::Bound;
use std::sync::Arc;

use serde::Serialize;
use thiserror::Error;

use crate::bitset::BitSet;
use crate::body::{Body, ChannelKind};
use crate::error::AuthError;
use crate::history::{History, MessageView};
use crate::hlc::Hlc;
use crate::id::{ChannelId, GuildId, InviteId, MessageId, NodeId, OpId, UserId, sha256};
use crate::keyring::Keyring;
use crate::limits;
use crate::meta::{self, MetaDoc, MetaValue};
use crate::op::{Envelope, Op, VerifiedOp};
use crate::perm::Permissions;
use crate::sealed::Text;
use crate::state::GuildState;

mod sealing;

/// Why an op was refused outright. Unlike an authorization verdict, these are faults of the op
/// (or of whoever sent it), independent of what else the guild holds.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InsertError {
    #[error("the op belongs to another guild")]
    WrongGuild,
    #[error("deps may only cite guild-state ops")]
    DepNotGuildState,
    #[error("the op's timestamp is not after those of its deps")]
    CausalityViolation,
    #[error("too many ops are waiting for missing guild-state deps")]
    PendingFull,
    #[error("the peer that sent it has as many ops waiting for missing deps as one peer may")]
    PeerPendingFull,
    #[error("the author is not a member in the op's causal past, and only a join makes one")]
    AuthorNotMember,
    #[error("the author made 120 guild-state ops in the minute before this one")]
    GuildStateRate,
    #[error("the join names no invite in its causal past that its proof opens at its time")]
    InviteUnusable,
}

impl InsertError {
    pub fn code(&self) -> &'static str {
        match self {
            InsertError::WrongGuild => "wrong_guild",
            InsertError::DepNotGuildState => "dep_not_guild_state",
            InsertError::CausalityViolation => "causality_violation",
            InsertError::PendingFull => "pending_full",
            InsertError::PeerPendingFull => "peer_pending_full",
            InsertError::AuthorNotMember => "author_not_member",
            InsertError::GuildStateRate => "guild_state_rate",
            InsertError::InviteUnusable => "invite_unusable",
        }
    }
}

/// Two different ops by one author at one seq: proof that the author's key signed a fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EquivocationProof {
    pub author: UserId,
    pub seq: u64,
    pub first: Op,
    pub second: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Invalid(AuthError),
    /// A content op whose target (message or thread) has not arrived.
    Waiting(OpId),
    /// Not on the author's canonical chain: the author equivocated at or below this op's seq,
    /// or the op does not extend its `prev` (or builds on one that is not canonical).
    Forked,
}

impl Verdict {
    pub fn is_valid(&self) -> bool {
        matches!(self, Verdict::Valid)
    }
}

/// What an insertion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Already held: nothing changed.
    Duplicate,
    /// Held back until these guild-state deps arrive.
    Pending { missing: Vec<OpId> },
    /// Accepted into the guild (valid or not); `accepted` lists the ops added to the replica
    /// (this one, then any released from pending) in the order they entered, `changes` every op
    /// whose verdict changed, `gaps` the `prev`s of accepted ops that are not held (a log
    /// this replica has only part of: worth a catch-up).
    Applied {
        accepted: Vec<OpId>,
        changes: Vec<(OpId, Verdict)>,
        gaps: Vec<OpId>,
    },
}

/// How a replica reached its verdicts after guild-state ops: resolutions from scratch (the
/// reference algorithm, costing the whole guild) and removals decided without one (costing
/// what they cut).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resolutions {
    pub full: u64,
    pub incremental_removals: u64,
}

#[derive(Debug, Clone)]
struct ControlNode {
    id: OpId,
    hlc: Hlc,
    /// Every guild-state op reachable through deps (this op's causal past).
    past: BitSet,
    has_children: bool,
    /// For a removal, its effective cutoff (`spec/auth.md` §6): a function of its past, so
    /// fixed when it arrives.
    cutoff: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct Chain {
    /// seq → ops at that seq; more than one is an equivocation.
    ops: BTreeMap<u64, Vec<OpId>>,
}

/// Per author: the highest seq held and, when it is to be compared, the digest of the log up
/// to it (`Guild::log_digest`).
pub type LogPositions = BTreeMap<UserId, (u64, Option<[u8; 32]>)>;

const LOG_DIGEST_DOMAIN: &[u8] = b"guildhall/log-digest/v1\0";

/// The caps on ops held waiting for missing guild-state deps, in count and in encoded bytes.
/// Honest traffic rarely waits (gossip reorders a little; catch-up and joins send deps first),
/// so these only bound what a peer can park here.
pub const MAX_PENDING: usize = 10_000;
pub const MAX_PENDING_BYTES: usize = 8 * 1024 * 1024;
/// Bytes of pending ops one peer may have parked in a guild: an eighth of the guild's, so
/// that no one peer (a stranger minting keys, say) fills what others' ops may need.
pub const MAX_PENDING_BYTES_PER_PEER: usize = MAX_PENDING_BYTES / 8;

/// The cap on states kept by deps set (`Guild::state_at`). Content ops mostly cite the few
/// newest sets; without a cap, members citing ever new ones made every replica keep a whole
/// guild state per set.
const MAX_CACHED_STATES: usize = 64;

/// The cap on re-judging rounds while the set of honored removals settles.
const MAX_REMOVAL_ROUNDS: usize = 8;

/// Keys here are mostly SHA-256 op ids: a fast seeded hash is enough, and SipHash was a tenth
/// of the time spent reloading a guild.
type Map<K, V> = HashMap<K, V, RandomState>;

#[derive(Clone)]
pub struct Guild {
    id: GuildId,
    // Boxed: an op is a few hundred bytes, and a map of a million of them rehashes and
    // over-allocates by the slot.
    ops: Map<OpId, Box<VerifiedOp>>,
    verdicts: Map<OpId, Verdict>,
    chains: Map<UserId, Chain>,
    canonical: Map<OpId, bool>,
    control: Vec<ControlNode>,
    control_index: Map<OpId, usize>,
    control_order: BTreeMap<(Hlc, OpId), usize>,
    /// Valid guild-state ops in no valid guild-state op's causal past: what new ops cite.
    valid_heads: BTreeMap<(Hlc, OpId), usize>,
    /// Each author's joins: an op of anyone but the owner is held only with one in its past.
    joins: Map<UserId, Vec<usize>>,
    /// Each author's metadata changes: a change may name only authors with a valid one in its
    /// causal past.
    meta_by_author: Map<UserId, Vec<usize>>,
    /// Each author's guild-state ops by timestamp: their rate is bounded.
    control_by_author: Map<UserId, BTreeSet<(Hlc, usize)>>,
    /// Per Automerge change, the guild-state op carrying it first in (hlc, id) order: the one
    /// that may apply it, whatever the order carriers arrive in.
    meta_changes: Map<automerge::ChangeHash, usize>,
    meta: MetaDoc,
    current: GuildState,
    /// Every node some member of `current` names among their homes, with how many do: who is
    /// entitled to the guild (`spec/auth.md` §13), rebuilt whenever `current` is.
    entitled: BTreeMap<NodeId, u32>,
    states_at: Map<Vec<usize>, Arc<(BitSet, GuildState)>>,
    history: History,
    /// Content ops keyed by the message or thread they refer to.
    dependents: Map<OpId, Vec<OpId>>,
    /// Every op held, in (hlc, id) order: the order catch-up sends them in.
    order: BTreeSet<(Hlc, OpId)>,
    pending: Map<OpId, VerifiedOp>,
    pending_bytes: usize,
    /// The peer each pending op came from, when known, and the bytes each peer has pending.
    pending_from: Map<OpId, NodeId>,
    pending_by_peer: Map<NodeId, usize>,
    waiting_on: Map<OpId, Vec<OpId>>,
    /// Held ops whose `prev` is not held, by that `prev`: judged across a gap until it comes.
    awaiting_prev: Map<OpId, Vec<OpId>>,
    equivocations: Vec<EquivocationProof>,
    /// The removals honored against concurrent ops: the fixed point of the reference, found
    /// by `resolve_all` and kept by incremental insertion.
    effective_removals: BitSet,
    /// The rounds the reference takes to find it on the ops held (at most that many more after
    /// refused removals judged where they stand).
    removal_rounds: usize,
    /// Bumped whenever `current` is rebuilt: channel keys for sealing new text outlive no
    /// change of it.
    state_version: u64,
    keyring: Keyring,
    /// The guild-state ops invalid in the first round of the reference, where no removal is
    /// honored. A new op changes no other op's first-round verdict, so between resolutions
    /// this only grows; within two rounds, the honored set is the removals valid here.
    first_round_invalid: BitSet,
    /// Each user's removals (ban, kick, demotion) by target: those that may cut their ops.
    removals_by_target: Map<UserId, Vec<usize>>,
    resolutions: Resolutions,
}

impl Guild {
    /// A replica holding just the guild's genesis op.
    pub fn new(genesis: VerifiedOp) -> Result<Guild, InsertError> {
        let Body::Genesis { name } = &genesis.envelope().body else {
            return Err(InsertError::WrongGuild);
        };
        let id = genesis.id();
        let env = genesis.envelope();
        let current = GuildState::genesis(id, env.author, name, env.hlc);
        let mut guild = Guild {
            id,
            ops: Map::default(),
            verdicts: Map::default(),
            chains: Map::default(),
            canonical: Map::default(),
            control: Vec::new(),
            control_index: Map::default(),
            control_order: BTreeMap::new(),
            valid_heads: BTreeMap::new(),
            joins: Map::default(),
            control_by_author: Map::default(),
            meta_by_author: Map::default(),
            meta_changes: Map::default(),
            meta: MetaDoc::new(),
            entitled: entitled_index(&current),
            current,
            states_at: Map::default(),
            history: History::default(),
            dependents: Map::default(),
            order: BTreeSet::new(),
            pending: Map::default(),
            pending_bytes: 0,
            pending_from: Map::default(),
            pending_by_peer: Map::default(),
            waiting_on: Map::default(),
            awaiting_prev: Map::default(),
            equivocations: Vec::new(),
            effective_removals: BitSet::default(),
            removal_rounds: 1,
            state_version: 0,
            keyring: Keyring::new(id),
            first_round_invalid: BitSet::default(),
            removals_by_target: Map::default(),
            resolutions: Resolutions::default(),
        };
        guild.add_op(genesis);
        guild.verdicts.insert(id, Verdict::Valid);
        guild.add_valid_head(0);
        Ok(guild)
    }

    pub fn id(&self) -> GuildId {
        self.id
    }

    /// Makes room for `additional` more ops at once, so that loading many does not rehash the
    /// indexes over and over (each rehash a pause for whoever waits on this replica).
    pub fn reserve(&mut self, additional: usize) {
        self.ops.reserve(additional);
        self.verdicts.reserve(additional);
        self.canonical.reserve(additional);
    }

    /// The current guild state: every valid guild-state op folded in (hlc, op id) order.
    pub fn state(&self) -> &GuildState {
        &self.current
    }

    pub fn meta(&self) -> &MetaDoc {
        &self.meta
    }

    /// Whether `node` is entitled to this guild: some current member names it among their
    /// homes (`spec/auth.md` §13). The question a node asks before it serves the guild to a
    /// peer (a push of ops, a catch-up, a back-fill); O(log n) in the nodes entitled.
    pub fn entitled(&self, node: &NodeId) -> bool {
        self.entitled.contains_key(node)
    }

    /// Every node entitled to this guild, ascending.
    pub fn entitled_nodes(&self) -> impl Iterator<Item = &NodeId> {
        self.entitled.keys()
    }

    pub fn op(&self, id: &OpId) -> Option<&VerifiedOp> {
        self.ops.get(id).map(|op| &**op)
    }

    /// Every op held (not those pending), in no particular order.
    pub fn ops(&self) -> impl Iterator<Item = &VerifiedOp> {
        self.ops.values().map(|op| &**op)
    }

    pub fn verdict(&self, id: &OpId) -> Option<&Verdict> {
        self.verdicts.get(id)
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn equivocations(&self) -> &[EquivocationProof] {
        &self.equivocations
    }

    /// How often this replica resolved from scratch, and how many removals it decided without.
    pub fn resolutions(&self) -> Resolutions {
        self.resolutions
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The encoded bytes of the ops pending.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Drops the pending ops stamped before `before_ms`, whose deps have not come: a peer
    /// that sends an op sends its deps first, so these are what nobody will complete. Any
    /// that are real come again with a catch-up. Returns how many were dropped.
    pub fn expire_pending(&mut self, before_ms: u64) -> usize {
        let expired: Vec<OpId> = self
            .pending
            .iter()
            .filter(|(_, op)| op.envelope().hlc.ms() < before_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            self.take_pending(id);
        }
        self.waiting_on.retain(|_, waiters| {
            waiters.retain(|w| self.pending.contains_key(w));
            !waiters.is_empty()
        });
        expired.len()
    }

    fn take_pending(&mut self, id: &OpId) -> Option<VerifiedOp> {
        let op = self.pending.remove(id)?;
        let bytes = op.op().encoded_len();
        self.pending_bytes -= bytes;
        if let Some(peer) = self.pending_from.remove(id)
            && let Some(held) = self.pending_by_peer.get_mut(&peer)
        {
            *held -= bytes;
            if *held == 0 {
                self.pending_by_peer.remove(&peer);
            }
        }
        Some(op)
    }

    /// Bytes of pending ops that came from `peer`.
    pub fn pending_bytes_from(&self, peer: &NodeId) -> usize {
        self.pending_by_peer.get(peer).copied().unwrap_or(0)
    }

    /// Highest seq held per author (a version vector for catch-up).
    pub fn version_vector(&self) -> BTreeMap<UserId, u64> {
        self.chains
            .iter()
            .filter_map(|(a, c)| c.ops.keys().next_back().map(|s| (*a, *s)))
            .collect()
    }

    /// The author's latest op on their canonical chain: (seq, id, hlc).
    pub fn chain_head(&self, author: &UserId) -> Option<(u64, OpId, Hlc)> {
        let chain = self.chains.get(author)?;
        chain.ops.iter().rev().find_map(|(seq, ids)| {
            ids.iter()
                .find(|id| self.canonical.get(id).copied().unwrap_or(false))
                .map(|id| (*seq, *id, self.ops[id].envelope().hlc))
        })
    }

    /// The author's op at their highest seq held, canonical or not: what their next op
    /// follows, so that a node never signs one seq twice.
    fn last_op(&self, author: &UserId) -> Option<OpId> {
        self.chains
            .get(author)?
            .ops
            .values()
            .next_back()
            .map(|ids| ids[0])
    }

    /// The deps of an op following `prev`: first what covers `prev` (itself if it is a
    /// guild-state op, else its deps), then the other valid heads, newest first, up to
    /// `MAX_DEPS`, sorted by id. Only valid heads, so that ops nobody may make cannot steer
    /// honest ones; `prev` always covered, so the op extends it however many heads are
    /// concurrent.
    fn deps_after(&self, prev: Option<&OpId>) -> Vec<OpId> {
        let required: Vec<usize> = match prev.map(|p| (p, self.ops[p].envelope())) {
            None => Vec::new(),
            Some((p, env)) if env.body.is_control() => vec![self.control_index[p]],
            Some((_, env)) => env.deps.iter().map(|d| self.control_index[d]).collect(),
        };
        let newest_first: Vec<usize> = self.valid_heads.values().rev().copied().collect();
        let mut chosen = Vec::new();
        let mut covered = BitSet::default();
        let choose = |idx: usize, chosen: &mut Vec<usize>, covered: &mut BitSet| {
            covered.union_with(&self.control[idx].past);
            covered.insert(idx);
            chosen.push(idx);
        };
        for r in required {
            if covered.contains(r) {
                continue;
            }
            // A required op that is not valid is in no valid head's past: cite it itself.
            let head = newest_first
                .iter()
                .copied()
                .find(|&h| h == r || self.control[h].past.contains(r))
                .unwrap_or(r);
            choose(head, &mut chosen, &mut covered);
        }
        for head in newest_first {
            if chosen.len() >= limits::MAX_DEPS {
                break;
            }
            if !covered.contains(head) {
                choose(head, &mut chosen, &mut covered);
            }
        }
        let mut ids: Vec<OpId> = chosen.into_iter().map(|i| self.control[i].id).collect();
        ids.sort();
        ids
    }

    /// The envelope of `author`'s next op in this guild: next seq after their latest op,
    /// deps from `deps_after`, and a timestamp after all of them (and at `now_ms` if the clock
    /// is ahead).
    pub fn next_envelope(&self, author: UserId, now_ms: u64, body: Body) -> Envelope {
        let prev = self.last_op(&author);
        let deps = self.deps_after(prev.as_ref());
        let prev_env = prev.map(|p| self.ops[&p].envelope());
        let seen = deps
            .iter()
            .map(|d| self.ops[d].envelope().hlc)
            .chain(prev_env.map(|p| p.hlc))
            .max()
            .unwrap_or_default();
        Envelope {
            guild: self.id,
            author,
            seq: prev_env.map_or(1, |p| p.seq + 1),
            prev,
            hlc: Hlc::next(seen, now_ms),
            deps,
            body,
        }
    }

    /// Ops by `author` with seq in `from..=to` on any fork, for catch-up.
    pub fn ops_by_author(&self, author: &UserId, from: u64, to: u64) -> Vec<&VerifiedOp> {
        if from > to {
            return Vec::new();
        }
        self.chains
            .get(author)
            .into_iter()
            .flat_map(|c| c.ops.range(from..=to))
            .flat_map(|(_, ids)| ids.iter().map(|id| &*self.ops[id]))
            .collect()
    }

    /// A digest of every op held by `author` with seq at most `up_to`, forks included: two
    /// replicas holding different ops of one log below the same seq (an equivocation each saw
    /// one side of) differ here though their version vectors agree.
    pub fn log_digest(&self, author: &UserId, up_to: u64) -> [u8; 32] {
        // The chain is in seq order already; within a seq, ids are in arrival order, which
        // differs between replicas, so those (rarely more than one) are sorted.
        let ids: Vec<&OpId> = self
            .chains
            .get(author)
            .into_iter()
            .flat_map(|c| c.ops.range(..=up_to))
            .flat_map(|(_, ids)| {
                let mut at_seq: Vec<&OpId> = ids.iter().collect();
                at_seq.sort();
                at_seq
            })
            .collect();
        let parts: Vec<&[u8]> = std::iter::once(LOG_DIGEST_DOMAIN)
            .chain(ids.iter().map(|id| &id.0[..]))
            .collect();
        sha256(&parts)
    }

    /// Where this replica is in every author's log: the top of the run of seqs it holds
    /// without a gap from seq 1, and the digest up to it. What a catch-up request states, so
    /// that catch-up fills every gap.
    pub fn log_positions(&self) -> LogPositions {
        self.chains
            .iter()
            .filter_map(|(author, chain)| {
                let mut top = 0;
                for &seq in chain.ops.keys() {
                    if seq != top + 1 {
                        break;
                    }
                    top = seq;
                }
                (top > 0).then(|| (*author, (top, Some(self.log_digest(author, top)))))
            })
            .collect()
    }

    /// Whether some seq below the author's highest is not held here.
    fn has_gap(&self, author: &UserId) -> bool {
        self.chains
            .get(author)
            .and_then(|c| {
                c.ops
                    .keys()
                    .next_back()
                    .map(|top| c.ops.len() as u64 != *top)
            })
            .unwrap_or(false)
    }

    /// Whether any author's log is held with gaps: history still to back-fill.
    pub fn has_gaps(&self) -> bool {
        self.chains.keys().any(|author| self.has_gap(author))
    }

    /// What a joining replica needs: every guild-state op, every author's latest op (so that
    /// it knows where each log ends, and signs no seq twice for a user of its own), and the
    /// newest `recent` content ops (with everything newer than the oldest of them). In (hlc,
    /// id) order after the cursor, cut like `ops_missing_from`.
    pub fn ops_for_join(
        &self,
        recent: usize,
        after: Option<(Hlc, OpId)>,
        max_ops: usize,
        max_bytes: usize,
    ) -> (Vec<&VerifiedOp>, bool) {
        let is_content = |id: &OpId| !self.ops[id].envelope().body.is_control();
        let floor = self
            .order
            .iter()
            .rev()
            .filter(|(_, id)| is_content(id))
            .take(recent)
            .last()
            .copied();
        let heads: HashSet<&OpId> = self
            .chains
            .values()
            .filter_map(|c| c.ops.values().next_back())
            .flatten()
            .collect();
        let wanted = |key: &(Hlc, OpId)| {
            !is_content(&key.1) || floor.is_some_and(|f| *key >= f) || heads.contains(&key.1)
        };
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let keys = self
            .order
            .range((start, Bound::Unbounded))
            .filter(|k| wanted(k));
        self.cut_batch(keys, max_ops, max_bytes)
    }

    /// The content ops before `before` in (hlc, id) order, newest first: history a replica
    /// that joined with recent ops only back-fills, batch by batch, moving `before` to the last
    /// op received. Cut like `ops_missing_from`.
    pub fn content_before(
        &self,
        before: (Hlc, OpId),
        max_ops: usize,
        max_bytes: usize,
    ) -> (Vec<&VerifiedOp>, bool) {
        let keys = self
            .order
            .range(..before)
            .rev()
            .filter(|(_, id)| !self.ops[id].envelope().body.is_control());
        self.cut_batch(keys, max_ops, max_bytes)
    }

    /// Where the back-fill of a replica made by a join starts: the oldest content op held
    /// that is not its author's latest (those come with a join whatever their age), or else
    /// the newest content op held. Every content op below it is to be fetched, some perhaps
    /// again.
    pub fn backfill_start(&self) -> Option<(Hlc, OpId)> {
        let is_content = |id: &OpId| !self.ops[id].envelope().body.is_control();
        let is_latest = |id: &OpId| {
            let env = self.ops[id].envelope();
            self.chains[&env.author]
                .ops
                .keys()
                .next_back()
                .is_some_and(|top| *top == env.seq)
        };
        let mut content = self.order.iter().filter(|(_, id)| is_content(id));
        content
            .clone()
            .find(|(_, id)| !is_latest(id))
            .or_else(|| content.next_back())
            .copied()
    }

    /// The ops named by `keys`, up to `max_ops` or `max_bytes` of encoded ops (at least one),
    /// and whether more remain.
    fn cut_batch<'a>(
        &self,
        keys: impl Iterator<Item = &'a (Hlc, OpId)>,
        max_ops: usize,
        max_bytes: usize,
    ) -> (Vec<&VerifiedOp>, bool) {
        let mut ops = Vec::new();
        let mut bytes = 0;
        for (_, id) in keys {
            let op = &*self.ops[id];
            bytes += op.op().encoded_len();
            // At least one op per batch, whatever the limits, so a transfer always progresses.
            if !ops.is_empty() && (ops.len() >= max_ops || bytes > max_bytes) {
                return (ops, true);
            }
            ops.push(op);
        }
        (ops, false)
    }

    /// The ops a replica at `have` lacks: for each author, those above its seq, and every op at
    /// or below it when its digest differs from ours there (a fork it has not seen). In (hlc,
    /// id) order, which puts every op after its predecessors, starting after the cursor `after`
    /// (the last op of the previous batch); cut after `max_ops` ops or `max_bytes` of encoded
    /// ops, with `true` when more remain. A catch-up keeps `have` fixed and moves the cursor,
    /// so a long resend of a forked log makes progress batch by batch.
    pub fn ops_missing_from(
        &self,
        have: &LogPositions,
        after: Option<(Hlc, OpId)>,
        max_ops: usize,
        max_bytes: usize,
    ) -> (Vec<&VerifiedOp>, bool) {
        // Per author, the lowest seq the asker lacks.
        let from: HashMap<UserId, u64> = self
            .version_vector()
            .into_iter()
            .map(|(author, ours)| {
                let from = match have.get(&author) {
                    None => 1,
                    // Digests compare only over the same range: when the asker is ahead, it is
                    // the one to pull.
                    Some((seq, Some(digest)))
                        if ours >= *seq
                            && !self.has_gap(&author)
                            && self.log_digest(&author, *seq) != *digest =>
                    {
                        1
                    }
                    Some((seq, _)) => seq + 1,
                };
                (author, from)
            })
            .collect();
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let keys = self
            .order
            .range((start, Bound::Unbounded))
            .filter(|(_, id)| {
                let env = self.ops[id].envelope();
                from.get(&env.author).is_some_and(|from| env.seq >= *from)
            });
        self.cut_batch(keys, max_ops, max_bytes)
    }

    /// Whether a replica at `have` holds ops this one lacks: a higher seq, an author unknown
    /// here, or a different digest below a seq both hold.
    pub fn lacks_from(&self, have: &LogPositions) -> bool {
        let ours = self.version_vector();
        have.iter()
            .any(|(author, (seq, digest))| match ours.get(author) {
                None => true,
                Some(held) if held < seq => true,
                Some(_) => {
                    !self.has_gap(author)
                        && digest.is_some_and(|d| d != self.log_digest(author, *seq))
                }
            })
    }

    /// Whether an op authored here as `next_envelope` builds it would be canonical and valid:
    /// the check a node makes before signing for a client, so that refused requests never
    /// enter the log. Exact for such ops: nothing held is concurrent with them but the valid
    /// heads their deps leave out, and their removals are applied as insertion would.
    pub fn precheck(&self, env: &Envelope) -> Result<(), AuthError> {
        // Whatever such an author signs now lands above their fork, where nothing is canonical.
        if self.equivocations.iter().any(|p| p.author == env.author) {
            return Err(AuthError::Equivocated);
        }
        let last = self.last_op(&env.author);
        let canonical = match &env.prev {
            None => env.seq == 1 && last.is_none(),
            Some(prev) => {
                last.as_ref() == Some(prev)
                    && self.canonical.get(prev).copied().unwrap_or(false)
                    && self.extends_prev(env) == Some(true)
            }
        };
        if !canonical {
            return Err(AuthError::ForkedChain);
        }
        let past = self.past_of(&env.deps);
        if let Some(retry_ms) = self.over_guild_state_rate(env, &past) {
            return Err(AuthError::GuildStateRate(retry_ms));
        }
        let state = self.state_for_new(env, &past);
        if env.body.is_control() {
            if let Body::Join { invite, proof } = &env.body {
                state.check_join_proof(invite, &env.author, proof)?;
            }
            state.authorize(&env.author, &env.body, env.hlc)?;
            if let Body::MetaChange { change } = &env.body {
                self.check_meta_deps(change, &past, &self.invalid_control())?;
            }
            return Ok(());
        }
        match self.authorize_content(&state, env) {
            Ok(()) => Ok(()),
            Err(ContentError::Auth(e)) => Err(e),
            Err(ContentError::Waiting(target)) => match &env.body {
                Body::MessageCreate { channel, .. } | Body::ThreadCreate { channel, .. }
                    if *channel == target =>
                {
                    Err(AuthError::UnknownChannel)
                }
                _ => Err(AuthError::UnknownMessage),
            },
        }
    }

    /// The state a new op with causal past `past` is judged in: the current state when its
    /// past holds every valid op (the usual case), else its valid past folded, with the
    /// honored removals of its author that it does not see applied.
    fn state_for_new(&self, env: &Envelope, past: &BitSet) -> Cow<'_, GuildState> {
        if self.valid_heads.values().all(|h| past.contains(*h)) {
            return Cow::Borrowed(&self.current);
        }
        let mut state = self.fold(past, &self.invalid_control());
        let exempt = env.body.removal().map(|(target, _)| target);
        let removals =
            self.removals_cutting(&env.author, env.seq, past, &self.effective_removals, exempt);
        self.apply_removals(&mut state, removals);
        Cow::Owned(state)
    }

    fn apply_removals(&self, state: &mut GuildState, removals: Vec<usize>) {
        for r in removals {
            let rop = &self.ops[&self.control[r].id];
            let renv = rop.envelope();
            state.apply(rop.id(), &renv.author, &renv.body, renv.hlc);
        }
    }

    /// A metadata change depends only on changes of valid ops in its causal past, and names
    /// only actors with a valid change there (which were therefore applied before it, in every
    /// order of arrival).
    fn check_meta_deps(
        &self,
        change: &[u8],
        past: &BitSet,
        invalid: &BitSet,
    ) -> Result<(), AuthError> {
        let links = meta::change_links(change)?;
        for dep in links.deps {
            match self.meta_changes.get(&dep) {
                Some(&d) if past.contains(d) && !invalid.contains(d) => {}
                Some(&d) => return Err(AuthError::InvalidDependency(self.control[d].id)),
                None => {
                    return Err(AuthError::BadMetaChange(format!(
                        "depends on the unknown change {dep}"
                    )));
                }
            }
        }
        let known = |user: &UserId| {
            self.meta_by_author.get(user).is_some_and(|ops| {
                ops.iter()
                    .any(|&d| past.contains(d) && !invalid.contains(d))
            })
        };
        if !links.actors?.iter().all(known) {
            return Err(AuthError::BadMetaChange(
                "names an actor with no valid change in its causal past".into(),
            ));
        }
        Ok(())
    }

    /// Adds an op (whose signature was verified) to the guild.
    pub fn insert(&mut self, op: VerifiedOp) -> Result<Inserted, InsertError> {
        self.insert_from(op, None)
    }

    /// `insert` for an op a peer sent, `from` its node key when known: while the op waits for
    /// its deps, that peer is charged for it, up to `MAX_PENDING_BYTES_PER_PEER`.
    pub fn insert_from(
        &mut self,
        op: VerifiedOp,
        from: Option<NodeId>,
    ) -> Result<Inserted, InsertError> {
        if op.guild() != self.id {
            return Err(InsertError::WrongGuild);
        }
        let id = op.id();
        if self.ops.contains_key(&id) || self.pending.contains_key(&id) {
            return Ok(Inserted::Duplicate);
        }
        let missing = self.missing_deps(op.envelope());
        if !missing.is_empty() {
            let bytes = op.op().encoded_len();
            if self.pending.len() >= MAX_PENDING || self.pending_bytes + bytes > MAX_PENDING_BYTES {
                return Err(InsertError::PendingFull);
            }
            if let Some(peer) = from {
                if self.pending_bytes_from(&peer) + bytes > MAX_PENDING_BYTES_PER_PEER {
                    return Err(InsertError::PeerPendingFull);
                }
                *self.pending_by_peer.entry(peer).or_default() += bytes;
                self.pending_from.insert(id, peer);
            }
            self.pending_bytes += bytes;
            for m in &missing {
                self.waiting_on.entry(*m).or_default().push(id);
            }
            self.pending.insert(id, op);
            return Ok(Inserted::Pending { missing });
        }
        self.admissible(op.envelope())?;
        let mut changes = Vec::new();
        let mut accepted = Vec::new();
        let mut ready = vec![op];
        while let Some(op) = ready.pop() {
            let id = op.id();
            if self.admissible(op.envelope()).is_ok() {
                accepted.push(id);
                changes.extend(self.accept(op));
            }
            for waiter in self.waiting_on.remove(&id).unwrap_or_default() {
                let still_missing = self
                    .pending
                    .get(&waiter)
                    .map(|w| self.missing_deps(w.envelope()));
                if still_missing.is_some_and(|m| m.is_empty()) {
                    ready.extend(self.take_pending(&waiter));
                }
            }
        }
        let gaps = accepted
            .iter()
            .filter_map(|id| self.ops.get(id)?.envelope().prev)
            .filter(|prev| !self.ops.contains_key(prev))
            .collect();
        Ok(Inserted::Applied {
            accepted,
            changes,
            gaps,
        })
    }

    /// The deps not held. Only these hold an op back: a missing `prev` leaves a gap in its
    /// author's log, judged provisionally (`recompute_canonical`), so a replica can hold the
    /// recent part of a log before, or without, the rest.
    fn missing_deps(&self, env: &Envelope) -> Vec<OpId> {
        let missing: BTreeSet<OpId> = env
            .deps
            .iter()
            .filter(|id| !self.ops.contains_key(id))
            .copied()
            .collect();
        missing.into_iter().collect()
    }

    /// The rules on an op's deps (all present), which no later op can change: they cite
    /// guild-state ops, and the op is timestamped after them.
    fn check_deps(&self, env: &Envelope) -> Result<(), InsertError> {
        for dep in &env.deps {
            let Some(&idx) = self.control_index.get(dep) else {
                return Err(InsertError::DepNotGuildState);
            };
            if self.control[idx].hlc >= env.hlc {
                return Err(InsertError::CausalityViolation);
            }
        }
        Ok(())
    }

    /// What an op must pass to be held at all (its deps all held): the rules on its deps, and
    /// an author who is the owner or has joined in its causal past, or else a join whose
    /// invite is in its past and opens with its proof at its time. These depend on the deps
    /// alone, so every replica decides them alike whenever the op arrives; an op failing them
    /// could never be valid, and holding it would let strangers fill the replica.
    fn admissible(&self, env: &Envelope) -> Result<(), InsertError> {
        self.check_deps(env)?;
        let past = self.past_of(&env.deps);
        if self.over_guild_state_rate(env, &past).is_some() {
            return Err(InsertError::GuildStateRate);
        }
        match &env.body {
            Body::Join { invite, proof } => {
                self.check_join(invite, &env.author, proof, env.hlc, &past)
            }
            _ if env.author == self.ops[&self.id].envelope().author => Ok(()),
            _ => self
                .joins
                .get(&env.author)
                .is_some_and(|joins| joins.iter().any(|j| past.contains(*j)))
                .then_some(())
                .ok_or(InsertError::AuthorNotMember),
        }
    }

    /// The lasting part of an invite check: the invite's own op, not the state, so that no
    /// later op can change the answer (a revocation or the use count decide the verdict). The
    /// join's proof must be the invite key's signature over this guild, the invite and the
    /// join's author, so a proof seen in another join opens nothing for anyone else.
    fn check_join(
        &self,
        invite: &InviteId,
        author: &UserId,
        proof: &[u8; 64],
        at: Hlc,
        past: &BitSet,
    ) -> Result<(), InsertError> {
        let usable = self
            .control_index
            .get(invite)
            .filter(|&&idx| past.contains(idx))
            .map(|_| &self.ops[invite].envelope().body)
            .is_some_and(|body| match body {
                Body::InviteCreate {
                    key, expires_at_ms, ..
                } => {
                    (*expires_at_ms == 0 || at.ms() < *expires_at_ms)
                        && key.opens_join(&self.id, invite, author, proof)
                }
                _ => false,
            });
        usable.then_some(()).ok_or(InsertError::InviteUnusable)
    }

    /// Whether guild-state op `env` is one too many for its author: they have
    /// `MAX_GUILD_STATE_OPS_PER_MINUTE` guild-state ops in its causal past stamped in the minute
    /// before it. If so, the milliseconds until the oldest of those leaves that minute. A fact
    /// of the op's causal past, so every replica decides it alike; stamping ops apart to pass
    /// it puts them in the future, where nodes hold them back (`federation.md` §2).
    fn over_guild_state_rate(&self, env: &Envelope, past: &BitSet) -> Option<u64> {
        const WINDOW_MS: u64 = 60_000;
        if !env.body.is_control() {
            return None;
        }
        let from = Hlc::from_parts(env.hlc.ms().saturating_sub(WINDOW_MS - 1), 0);
        let mut recent = self
            .control_by_author
            .get(&env.author)?
            .range((from, 0)..)
            .filter(|(_, idx)| past.contains(*idx));
        let oldest = recent.next()?.0;
        let held = 1 + recent
            .take(limits::MAX_GUILD_STATE_OPS_PER_MINUTE - 1)
            .count();
        (held >= limits::MAX_GUILD_STATE_OPS_PER_MINUTE)
            .then(|| (oldest.ms() + WINDOW_MS).saturating_sub(env.hlc.ms()))
    }

    /// The causal past of an op with these deps (all guild-state ops held).
    fn past_of(&self, deps: &[OpId]) -> BitSet {
        let mut past = BitSet::default();
        for dep in deps {
            let idx = self.control_index[dep];
            past.union_with(&self.control[idx].past);
            past.insert(idx);
        }
        past
    }

    /// Whether an op extends its `prev`: the author's op at `seq - 1`, timestamped before it,
    /// with deps the op's own deps cover (and `prev` itself among them if it is a guild-state
    /// op: an author never cites older heads than before). `None` when `prev` is not held.
    fn extends_prev(&self, env: &Envelope) -> Option<bool> {
        let Some(prev) = &env.prev else {
            return Some(env.seq == 1);
        };
        let p = self.ops.get(prev)?.envelope();
        if p.author != env.author || p.seq + 1 != env.seq || p.hlc >= env.hlc {
            return Some(false);
        }
        let past = self.past_of(&env.deps);
        let covered = |id: &OpId| past.contains(self.control_index[id]);
        Some(p.deps.iter().all(covered) && (!p.body.is_control() || covered(prev)))
    }

    /// Whether the op at `seq` (alone there) of `chain` is chosen, given whether the op below
    /// it ended the chain: it extends its `prev`, or, across a gap in the log (nothing held at
    /// `seq - 1`), its `prev` is not held, to be checked when it arrives.
    fn chosen_at(&self, chain: &Chain, seq: u64, id: &OpId, ended_below: bool) -> bool {
        if ended_below {
            return false;
        }
        let gap = seq > 1 && !chain.ops.contains_key(&(seq - 1));
        match self.extends_prev(self.ops[id].envelope()) {
            Some(extends) => extends,
            None => gap,
        }
    }

    /// Whether `author`'s chain has ended below `seq`: the nearest seq held below is an
    /// equivocation or its op is not canonical.
    fn chain_ended_below(&self, chain: &Chain, seq: u64) -> bool {
        chain.ops.range(..seq).next_back().is_some_and(|(_, ids)| {
            ids.len() > 1 || !self.canonical.get(&ids[0]).copied().unwrap_or(false)
        })
    }

    /// Adds an op to the replica's indexes; true when the verdicts of ops already held may
    /// change (an equivocation, or a chain whose canonical part moves above this op).
    fn add_op(&mut self, op: VerifiedOp) -> bool {
        let id = op.id();
        let env = op.envelope();
        let seq_ops = self
            .chains
            .entry(env.author)
            .or_default()
            .ops
            .entry(env.seq)
            .or_default();
        seq_ops.push(id);
        let equivocated = seq_ops.len() > 1;
        let mut shares_change = false;
        if equivocated {
            self.equivocations.push(EquivocationProof {
                author: env.author,
                seq: env.seq,
                first: self.ops[&seq_ops[0]].op().clone(),
                second: op.op().clone(),
            });
        }
        if env.body.is_control() {
            let idx = self.control.len();
            let mut past = BitSet::default();
            for dep in &env.deps {
                let d = self.control_index[dep];
                past.union_with(&self.control[d].past);
                past.insert(d);
                self.control[d].has_children = true;
            }
            let cutoff = env
                .body
                .removal()
                .map(|(target, stated)| self.effective_cutoff(&past, &target, stated));
            if let Some((target, _)) = env.body.removal() {
                self.removals_by_target.entry(target).or_default().push(idx);
            }
            self.control.push(ControlNode {
                id,
                hlc: env.hlc,
                past,
                has_children: false,
                cutoff,
            });
            self.control_index.insert(id, idx);
            self.control_order.insert((env.hlc, id), idx);
            if let Body::Join { .. } = &env.body {
                self.joins.entry(env.author).or_default().push(idx);
            }
            self.control_by_author
                .entry(env.author)
                .or_default()
                .insert((env.hlc, idx));
            if let Body::MetaChange { .. } = &env.body {
                self.meta_by_author.entry(env.author).or_default().push(idx);
            }
            if let Body::MetaChange { change } = &env.body
                && let Ok(meta::ChangeLinks { hash, .. }) = meta::change_links(change)
            {
                let first = self.meta_changes.entry(hash).or_insert(idx);
                if *first != idx {
                    // Another op carries the same change: the first in (hlc, id) order may
                    // apply it, which may take the change from one that already did.
                    shares_change = true;
                    let key = |i: usize| (self.control[i].hlc, self.control[i].id);
                    if key(idx) < key(*first) {
                        *first = idx;
                    }
                }
            }
        }
        // Messages name their channel; only a thread (a content op) needs the back-reference.
        if let Some(target) = content_target(&env.body)
            && !self.control_index.contains_key(&target)
        {
            self.dependents.entry(target).or_default().push(id);
        }
        if let Some(sealed) = env.body.text().and_then(Text::sealed) {
            self.keyring.note_sealed(id, sealed.key);
        }
        let (author, seq, hlc, prev) = (env.author, env.seq, env.hlc, env.prev);
        if let Some(prev) = prev.filter(|p| !self.ops.contains_key(p)) {
            self.awaiting_prev.entry(prev).or_default().push(id);
        }
        self.order.insert((hlc, id));
        self.ops.insert(id, Box::new(op));
        let chain = &self.chains[&author];
        let on_chain =
            !equivocated && self.chosen_at(chain, seq, &id, self.chain_ended_below(chain, seq));
        self.canonical.insert(id, on_chain);
        // Ops that named this one as `prev` before it came were judged across a gap; one that
        // is not the next op of this log (another author's, or at another seq) is now known
        // not to extend it.
        let named_by = self.awaiting_prev.remove(&id).unwrap_or_default();
        let extends_here = |w: &OpId| {
            let env = self.ops[w].envelope();
            env.author == author && env.seq == seq + 1
        };
        if equivocated || shares_change || !named_by.iter().all(extends_here) {
            return true;
        }
        // An op filling a gap decides the op above it, provisionally chosen until now.
        chain
            .ops
            .range(seq + 1..)
            .next()
            .is_some_and(|(&above, ids)| {
                let now = ids.len() == 1 && self.chosen_at(chain, above, &ids[0], !on_chain);
                now != self.canonical.get(&ids[0]).copied().unwrap_or(false)
            })
    }

    fn accept(&mut self, op: VerifiedOp) -> Vec<(OpId, Verdict)> {
        let id = op.id();
        let is_control = op.envelope().body.is_control();
        let unsettled = self.add_op(op);
        let canonical = self.canonical[&id];
        if unsettled || (!canonical && !self.tops_its_chain(&id)) {
            return self.resolve_all();
        }
        let verdict = if !canonical {
            if is_control {
                self.first_round_invalid.insert(self.control_index[&id]);
            }
            Verdict::Forked
        } else if is_control {
            let idx = self.control_index[&id];
            match self.judge_new_control(idx) {
                NewControl::Alone(judged) => {
                    let verdict = match judged {
                        Ok(()) => self.apply_meta_of(id),
                        Err(e) => Verdict::Invalid(e),
                    };
                    if verdict.is_valid() {
                        self.refold_current();
                        self.add_valid_head(idx);
                    }
                    verdict
                }
                NewControl::Honored => return self.honor_new_removal(idx),
                NewControl::Unsettled => return self.resolve_all(),
            }
        } else {
            self.judge_content(id)
        };
        self.verdicts.insert(id, verdict.clone());
        let mut changes = vec![(id, verdict.clone())];
        if !is_control {
            self.index_content(id, &verdict);
        }
        // Content ops that named this op before it arrived (a thread, or a channel outside
        // their causal past) were waiting for it.
        changes.extend(self.rejudge_content(self.dependents_of(&id)));
        changes
    }

    /// Judges new canonical guild-state op `idx` in the verdicts held, records its verdict in
    /// the first round of the reference, and says whether that decides it (`spec/auth.md` §6,
    /// incremental removal). Within two rounds the honored set is the removals valid in the
    /// first, so a removal valid in neither round, like any other op, changes no other verdict,
    /// and one valid in both joins the honored set with a recut; one valid in just one of them
    /// moves the reference into more rounds.
    fn judge_new_control(&mut self, idx: usize) -> NewControl {
        let invalid = self.invalid_control();
        let base = self.fold(&self.control[idx].past, &invalid);
        let judged = self.judge_control(idx, &invalid, &self.effective_removals, Some(&base));
        let first_round = self.valid_in_first_round(idx, &invalid, &base, &judged);
        if !first_round {
            self.first_round_invalid.insert(idx);
        }
        if self.ops[&self.control[idx].id]
            .envelope()
            .body
            .removal()
            .is_none()
        {
            return NewControl::Alone(judged);
        }
        if self.removal_rounds <= 2 {
            match (first_round, judged.is_ok()) {
                (false, false) => {
                    self.resolutions.incremental_removals += 1;
                    return NewControl::Alone(judged);
                }
                (true, true) => return NewControl::Honored,
                _ => {}
            }
        }
        if judged.is_err() && self.inert_if_refused(idx) {
            // Valid in some round, it is honored in the next and may be refused in the one
            // after: the reference may take one round more.
            self.removal_rounds += 1;
            self.resolutions.incremental_removals += 1;
            return NewControl::Alone(judged);
        }
        NewControl::Unsettled
    }

    /// Whether guild-state op `idx` is valid in the first round of the reference, where no
    /// removal is honored, given `judged`, its verdict on `base` (its past folded without the
    /// ops `invalid`) with the honored removals applied. The same verdict, unless the two
    /// rounds differ in its past or an honored removal cuts it.
    fn valid_in_first_round(
        &self,
        idx: usize,
        invalid: &BitSet,
        base: &GuildState,
        judged: &Result<(), AuthError>,
    ) -> bool {
        let past = &self.control[idx].past;
        let mut first = self.first_round_invalid.clone();
        first.intersect_with(past);
        let mut last = invalid.clone();
        last.intersect_with(past);
        let none_honored = BitSet::default();
        if !first.same_as(&last) {
            self.judge_control(idx, &self.first_round_invalid, &none_honored, None)
                .is_ok()
        } else if self
            .removals_cutting_control(idx, &self.effective_removals)
            .is_empty()
        {
            judged.is_ok()
        } else {
            self.judge_control(idx, invalid, &none_honored, Some(base))
                .is_ok()
        }
    }

    /// Honors new removal `idx`, valid in the first round and with the honored set applied:
    /// re-judges what it cuts and what builds on that, or resolves from scratch when that
    /// changes a removal or a metadata change.
    fn honor_new_removal(&mut self, idx: usize) -> Vec<(OpId, Verdict)> {
        let Some(recut) = self.recut(idx) else {
            return self.resolve_all();
        };
        self.resolutions.incremental_removals += 1;
        let id = self.control[idx].id;
        self.verdicts.insert(id, Verdict::Valid);
        let mut changes = vec![(id, Verdict::Valid)];
        for (c, judged) in recut.control {
            let verdict = match judged {
                Ok(()) => Verdict::Valid,
                Err(e) => Verdict::Invalid(e),
            };
            let cid = self.control[c].id;
            if self.verdicts.get(&cid) != Some(&verdict) {
                self.verdicts.insert(cid, verdict.clone());
                changes.push((cid, verdict));
            }
        }
        self.effective_removals.insert(idx);
        self.removal_rounds = 2;
        if recut.flipped.is_empty() {
            self.add_valid_head(idx);
        } else {
            self.states_at.clear();
            self.recompute_valid_heads();
        }
        self.refold_current();
        let mut content = recut.content;
        if let Some(first) = recut.first_flipped {
            content.extend(self.content_seeing(&recut.flipped, first));
        }
        content.extend(self.dependents_of(&id));
        changes.extend(self.rejudge_content(content));
        changes
    }

    /// The last round of the reference with removal `idx` honored as well, where it differs
    /// from the verdicts held: the guild-state ops it cuts and those whose past holds one that
    /// changed validity, re-judged in (hlc, id) order. `None` when a removal or a metadata
    /// change among them changes validity: the honored set or the document would move, which
    /// takes more rounds than this one.
    fn recut(&self, idx: usize) -> Option<Recut> {
        let mut effective = self.effective_removals.clone();
        effective.insert(idx);
        let (cut_control, content) = self.ops_cut_by(idx);
        let mut recut = Recut {
            control: Vec::new(),
            flipped: BitSet::default(),
            first_flipped: None,
            content,
        };
        let key = |i: usize| (self.control[i].hlc, self.control[i].id);
        let Some(from) = cut_control.iter().map(|&c| key(c)).min() else {
            return Some(recut);
        };
        let mut cut = BitSet::default();
        for c in cut_control {
            cut.insert(c);
        }
        let mut invalid = self.invalid_control();
        for (&at, &c) in self.control_order.range(from..) {
            let node = &self.control[c];
            if !self.canonical[&node.id]
                || !(cut.contains(c) || node.past.intersects(&recut.flipped))
            {
                continue;
            }
            let judged = self.judge_control(c, &invalid, &effective, None);
            if judged.is_ok() == invalid.contains(c) {
                let body = &self.ops[&node.id].envelope().body;
                if body.removal().is_some() || matches!(body, Body::MetaChange { .. }) {
                    return None;
                }
                if judged.is_ok() {
                    invalid.remove(c);
                } else {
                    invalid.insert(c);
                }
                recut.flipped.insert(c);
                recut.first_flipped.get_or_insert(at);
            }
            recut.control.push((c, judged));
        }
        Some(recut)
    }

    /// The ops removal `idx` cuts when honored (`spec/auth.md` §6): its target's canonical ops
    /// above its effective cutoff that do not see it, but for removals of its own author (the
    /// mutual-removal exemption, which content ops do not have). Guild-state ops, then content
    /// ops; read from the target's log, whatever the size of the guild.
    fn ops_cut_by(&self, idx: usize) -> (Vec<usize>, Vec<OpId>) {
        let node = &self.control[idx];
        let env = self.ops[&node.id].envelope();
        let (Some((target, _)), Some(cutoff)) = (env.body.removal(), node.cutoff) else {
            return (Vec::new(), Vec::new());
        };
        let mut seen = BitSet::default();
        seen.insert(idx);
        let (mut control, mut content) = (Vec::new(), Vec::new());
        let above = self
            .chains
            .get(&target)
            .into_iter()
            .flat_map(|chain| chain.ops.range(cutoff + 1..))
            .flat_map(|(_, ids)| ids)
            .filter(|id| self.canonical[*id]);
        for id in above {
            let cut = self.ops[id].envelope();
            match self.control_index.get(id) {
                Some(&c) => {
                    let exempt = cut.body.removal().is_some_and(|(t, _)| t == env.author);
                    if !exempt && !self.control[c].past.contains(idx) {
                        control.push(c);
                    }
                }
                None if !self.deps_see(&cut.deps, &seen) => content.push(*id),
                None => {}
            }
        }
        (control, content)
    }

    /// Whether ops with these deps have one of `ops` in their causal past.
    fn deps_see(&self, deps: &[OpId], ops: &BitSet) -> bool {
        deps.iter().any(|d| {
            let d = self.control_index[d];
            ops.contains(d) || self.control[d].past.intersects(ops)
        })
    }

    /// The canonical content ops after `from` whose deps see one of `ops`: those judged in a
    /// state that changed when `ops` changed validity. Content citing them comes after them.
    fn content_seeing(&self, ops: &BitSet, from: (Hlc, OpId)) -> Vec<OpId> {
        self.order
            .range((Bound::Excluded(from), Bound::Unbounded))
            .map(|(_, id)| id)
            .filter(|id| self.canonical[*id] && !self.control_index.contains_key(*id))
            .filter(|id| self.deps_see(&self.ops[*id].envelope().deps, ops))
            .copied()
            .collect()
    }

    /// Whether op `id` is alone at the highest seq of its author's log here: then its being
    /// non-canonical decides no other op's verdict (nothing cites it yet, and nothing of that
    /// log is above it), so a member signing ops that extend nothing costs what judging each
    /// costs, not a resolution each.
    fn tops_its_chain(&self, id: &OpId) -> bool {
        let env = self.ops[id].envelope();
        self.chains[&env.author]
            .ops
            .last_key_value()
            .is_some_and(|(seq, ids)| *seq == env.seq && ids.len() == 1)
    }

    /// Whether removal `idx`, judged invalid, changes no other verdict, so that it needs no
    /// re-resolution (`spec/auth.md` §6, incremental insertion): every other guild-state op
    /// held is in its causal past, so it is concurrent with none, and cuts nothing whichever
    /// round of the reference algorithm honors it; it can only delay that algorithm's fixed
    /// point by one round, which the rounds counted leave room for. A flood of removals nobody
    /// may make costs what judging each costs, not a resolution each.
    fn inert_if_refused(&self, idx: usize) -> bool {
        self.control[idx].past.len() + 1 == self.control.len()
            && self.removal_rounds < MAX_REMOVAL_ROUNDS - 1
    }

    /// Makes valid guild-state op `idx` a head, replacing the heads in its past.
    fn add_valid_head(&mut self, idx: usize) {
        let node = &self.control[idx];
        self.valid_heads
            .retain(|_, head| !node.past.contains(*head));
        self.valid_heads.insert((node.hlc, node.id), idx);
    }

    /// The valid guild-state ops in no valid op's past, after verdicts changed wholesale.
    fn recompute_valid_heads(&mut self) {
        let valid: Vec<usize> = (0..self.control.len())
            .filter(|&i| self.verdicts[&self.control[i].id].is_valid())
            .collect();
        let mut covered = BitSet::default();
        for &i in &valid {
            covered.union_with(&self.control[i].past);
        }
        self.valid_heads = valid
            .into_iter()
            .filter(|&i| !covered.contains(i))
            .map(|i| ((self.control[i].hlc, self.control[i].id), i))
            .collect();
    }

    /// Applies op `id` to the metadata document if it is a metadata change.
    fn apply_meta_of(&mut self, id: OpId) -> Verdict {
        match &self.ops[&id].envelope().body {
            Body::MetaChange { change } => match self.meta.apply(id, change) {
                Ok(()) => Verdict::Valid,
                Err(e) => Verdict::Invalid(e),
            },
            _ => Verdict::Valid,
        }
    }

    fn invalid_control(&self) -> BitSet {
        let mut invalid = BitSet::default();
        for (i, node) in self.control.iter().enumerate() {
            if self.verdicts.get(&node.id).is_some_and(|v| !v.is_valid()) {
                invalid.insert(i);
            }
        }
        invalid
    }

    /// The state folded from the valid guild-state ops in `past`, in (hlc, id) order.
    fn fold(&self, past: &BitSet, invalid: &BitSet) -> GuildState {
        let genesis = self.ops[&self.id].envelope();
        let Body::Genesis { name } = &genesis.body else {
            unreachable!("a guild starts with its genesis op")
        };
        let mut state = GuildState::genesis(self.id, genesis.author, name, genesis.hlc);
        for &idx in self.control_order.values() {
            if past.contains(idx) && !invalid.contains(idx) {
                let op = &self.ops[&self.control[idx].id];
                let env = op.envelope();
                state.apply(op.id(), &env.author, &env.body, env.hlc);
            }
        }
        state
    }

    fn refold_current(&mut self) {
        let mut all = BitSet::default();
        for i in 0..self.control.len() {
            all.insert(i);
        }
        self.current = self.fold(&all, &self.invalid_control());
        self.entitled = entitled_index(&self.current);
        self.state_version += 1;
    }

    /// The honored removals (ban, kick, demotion) in `effective` that cut an op by `author` at
    /// `seq` with causal past `past`: targeting `author`, not seen, above their effective
    /// cutoff, and not by `exempt_remover` (mutual removal). In (hlc, id) order, the order
    /// they apply in; read from the index of `author`'s removals.
    fn removals_cutting(
        &self,
        author: &UserId,
        seq: u64,
        past: &BitSet,
        effective: &BitSet,
        exempt_remover: Option<UserId>,
    ) -> Vec<usize> {
        let mut cutting: Vec<usize> = self
            .removals_by_target
            .get(author)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&r| effective.contains(r) && !past.contains(r))
            .filter(|&r| self.control[r].cutoff.is_some_and(|cutoff| seq > cutoff))
            .filter(|&r| Some(self.ops[&self.control[r].id].envelope().author) != exempt_remover)
            .collect();
        cutting.sort_by_key(|&r| (self.control[r].hlc, self.control[r].id));
        cutting
    }

    /// `removals_cutting` guild-state op `idx`: a removal is exempt from its own target's.
    fn removals_cutting_control(&self, idx: usize, effective: &BitSet) -> Vec<usize> {
        let node = &self.control[idx];
        let env = self.ops[&node.id].envelope();
        let exempt = env.body.removal().map(|(target, _)| target);
        self.removals_cutting(&env.author, env.seq, &node.past, effective, exempt)
    }

    /// A removal never cuts the target's guild-state ops that the remover had seen: its cut
    /// is at least the target's highest seq among them (in the removal's `past`), whatever
    /// cutoff it states.
    fn effective_cutoff(&self, past: &BitSet, target: &UserId, stated: u64) -> u64 {
        self.control_by_author
            .get(target)
            .into_iter()
            .flatten()
            .filter(|(_, i)| past.contains(*i))
            .map(|(_, i)| self.ops[&self.control[*i].id].envelope().seq)
            .fold(stated, u64::max)
    }

    /// Judges a guild-state op: authorized in the state of its valid causal past, with every
    /// concurrent removal of its author applied first (strong removal).
    fn judge_control(
        &self,
        idx: usize,
        invalid: &BitSet,
        effective: &BitSet,
        base: Option<&GuildState>,
    ) -> Result<(), AuthError> {
        let node = &self.control[idx];
        let op = &self.ops[&node.id];
        let env = op.envelope();
        if matches!(env.body, Body::Genesis { .. }) {
            return Ok(());
        }
        let mut state = match base {
            Some(s) => s.clone(),
            None => self.fold(&node.past, invalid),
        };
        // Mutual removal: a removal is not undone by a concurrent removal of its author by its
        // own target; both apply.
        let removals = self.removals_cutting_control(idx, effective);
        self.apply_removals(&mut state, removals);
        state.authorize(&env.author, &env.body, env.hlc)?;
        if let Body::MetaChange { change } = &env.body {
            self.check_meta_deps(change, &node.past, invalid)?;
        }
        Ok(())
    }

    /// The state at a set of deps, cached: most content ops share the same few.
    fn state_at(&mut self, deps: &[OpId]) -> Arc<(BitSet, GuildState)> {
        let key: Vec<usize> = deps.iter().map(|d| self.control_index[d]).collect();
        if let Some(s) = self.states_at.get(&key) {
            return s.clone();
        }
        let mut past = BitSet::default();
        for &d in &key {
            past.union_with(&self.control[d].past);
            past.insert(d);
        }
        let state = self.fold(&past, &self.invalid_control());
        let entry = Arc::new((past, state));
        if self.states_at.len() >= MAX_CACHED_STATES {
            self.states_at.clear();
        }
        self.states_at.insert(key, entry.clone());
        entry
    }

    fn judge_content(&mut self, id: OpId) -> Verdict {
        if !self.canonical.get(&id).copied().unwrap_or(false) {
            return Verdict::Forked;
        }
        let deps = self.ops[&id].envelope().deps.clone();
        let at = self.state_at(&deps);
        let (past, base) = (&at.0, &at.1);
        let env = self.ops[&id].envelope();
        let removals =
            self.removals_cutting(&env.author, env.seq, past, &self.effective_removals, None);
        let mut owned;
        let state = if removals.is_empty() {
            base
        } else {
            owned = base.clone();
            self.apply_removals(&mut owned, removals);
            &owned
        };
        match self.authorize_content(state, env) {
            Ok(()) => Verdict::Valid,
            Err(ContentError::Auth(e)) => Verdict::Invalid(e),
            Err(ContentError::Waiting(target)) => Verdict::Waiting(target),
        }
    }

    /// Where a message lives for permission purposes: its channel, or a thread's parent.
    fn resolve_channel(
        &self,
        state: &GuildState,
        channel: &ChannelId,
    ) -> Result<(ChannelId, bool), ContentError> {
        if state.channels.contains_key(channel) {
            return Ok((*channel, false));
        }
        match self.ops.get(channel).map(|op| &op.envelope().body) {
            Some(Body::ThreadCreate {
                channel: parent, ..
            }) => match self.verdicts.get(channel) {
                Some(Verdict::Valid) => Ok((*parent, true)),
                _ => Err(ContentError::Auth(AuthError::InvalidDependency(*channel))),
            },
            Some(_) => Err(ContentError::Auth(AuthError::UnknownChannel)),
            None => Err(ContentError::Waiting(*channel)),
        }
    }

    fn target_message(&self, message: &MessageId) -> Result<(&Envelope, ChannelId), ContentError> {
        let Some(op) = self.ops.get(message) else {
            return Err(ContentError::Waiting(*message));
        };
        let env = op.envelope();
        match (&env.body, self.verdicts.get(message)) {
            (Body::MessageCreate { channel, .. }, Some(Verdict::Valid)) => Ok((env, *channel)),
            (Body::MessageCreate { .. }, _) => {
                Err(ContentError::Auth(AuthError::InvalidDependency(*message)))
            }
            _ => Err(ContentError::Auth(AuthError::BadRequest(
                "the target is not a message",
            ))),
        }
    }

    fn authorize_content(&self, state: &GuildState, env: &Envelope) -> Result<(), ContentError> {
        if state.deleted {
            return Err(AuthError::GuildDeleted.into());
        }
        if state.bans.contains_key(&env.author) {
            return Err(AuthError::Banned.into());
        }
        if !state.is_member(&env.author) {
            return Err(AuthError::NotMember.into());
        }
        let in_channel = |channel: &ChannelId, needed: Permissions| -> Result<(), ContentError> {
            let (parent, is_thread) = self.resolve_channel(state, channel)?;
            let kind = state.channels.get(&parent).map(|c| c.kind);
            if kind != Some(ChannelKind::Text) {
                return Err(AuthError::WrongChannelKind.into());
            }
            let needed = if is_thread && needed.contains(Permissions::SEND_MESSAGES) {
                (needed - Permissions::SEND_MESSAGES) | Permissions::SEND_MESSAGES_IN_THREADS
            } else {
                needed
            };
            state.require_in_channel(&env.author, &parent, needed | Permissions::VIEW_CHANNEL)?;
            if env.body.text().is_some_and(|t| !t.is_sealed()) && !state.open_to_all(&parent) {
                return Err(AuthError::NotSealed.into());
            }
            Ok(())
        };
        match &env.body {
            Body::MessageCreate { channel, .. } => in_channel(channel, Permissions::SEND_MESSAGES),
            Body::ThreadCreate {
                channel, message, ..
            } => {
                if let Some(m) = message {
                    let (_, c) = self.target_message(m)?;
                    if c != *channel {
                        return Err(
                            AuthError::BadRequest("the message is not in that channel").into()
                        );
                    }
                }
                match self.resolve_channel(state, channel)? {
                    (_, true) => Err(AuthError::BadRequest("threads cannot be nested").into()),
                    _ => in_channel(channel, Permissions::CREATE_PUBLIC_THREADS),
                }
            }
            Body::MessageEdit { message, .. } => {
                let (target, channel) = self.target_message(message)?;
                if target.author != env.author {
                    return Err(AuthError::NotAuthor.into());
                }
                in_channel(&channel, Permissions::empty())
            }
            Body::MessageDelete { message } => {
                let (target, channel) = self.target_message(message)?;
                if target.author == env.author {
                    Ok(())
                } else {
                    in_channel(&channel, Permissions::MANAGE_MESSAGES)
                }
            }
            Body::ReactionAdd { message, .. } => {
                let (_, channel) = self.target_message(message)?;
                in_channel(
                    &channel,
                    Permissions::ADD_REACTIONS | Permissions::READ_MESSAGE_HISTORY,
                )
            }
            Body::ReactionRemove { message, .. } => {
                let (_, channel) = self.target_message(message)?;
                in_channel(&channel, Permissions::empty())
            }
            Body::Pin { message } | Body::Unpin { message } => {
                let (_, channel) = self.target_message(message)?;
                in_channel(&channel, Permissions::PIN_MESSAGES)
                    .or_else(|_| in_channel(&channel, Permissions::MANAGE_MESSAGES))
            }
            _ => Err(AuthError::BadRequest("not a content op").into()),
        }
    }

    fn index_content(&mut self, id: OpId, verdict: &Verdict) {
        let env = self.ops[&id].envelope();
        match &env.body {
            Body::MessageCreate { channel, .. } => {
                if verdict.is_valid() {
                    self.history.insert_message(*channel, env.hlc, id);
                } else {
                    self.history.remove_message(*channel, env.hlc, id);
                }
            }
            Body::ThreadCreate { channel, .. } => {
                self.history.set_thread(*channel, id, verdict.is_valid());
            }
            _ => {}
        }
    }

    /// The content ops that refer to `target`.
    fn dependents_of(&self, target: &OpId) -> Vec<OpId> {
        self.dependents.get(target).cloned().unwrap_or_default()
    }

    /// Re-judges content ops `ids`, and those that refer to any whose verdict changes, and
    /// theirs. Returns the verdicts that changed, in (hlc, id) order.
    fn rejudge_content(&mut self, ids: Vec<OpId>) -> Vec<(OpId, Verdict)> {
        let mut before: BTreeMap<(Hlc, OpId), Verdict> = BTreeMap::new();
        let mut queue = ids;
        while let Some(id) = queue.pop() {
            let verdict = self.judge_content(id);
            let held = &self.verdicts[&id];
            if *held != verdict {
                before
                    .entry((self.ops[&id].envelope().hlc, id))
                    .or_insert_with(|| held.clone());
                self.index_content(id, &verdict);
                self.verdicts.insert(id, verdict);
                queue.extend(self.dependents_of(&id));
            }
        }
        before
            .into_iter()
            .filter(|((_, id), was)| self.verdicts[id] != *was)
            .map(|((_, id), _)| (id, self.verdicts[&id].clone()))
            .collect()
    }

    /// One pass over the guild-state ops in (hlc, id) order, honoring the removals in
    /// `effective`: which ops are invalid, and why.
    fn judge_all_control(
        &self,
        forked: &BitSet,
        effective: &BitSet,
    ) -> (BitSet, HashMap<usize, AuthError>) {
        let mut invalid = forked.clone();
        let mut errors = HashMap::new();
        let mut previous: Option<(usize, GuildState)> = None;
        for &idx in self.control_order.values() {
            // In a linear history each op's past is its predecessor's plus the predecessor:
            // extend that state instead of folding from genesis.
            let base = previous.as_ref().and_then(|(p, state)| {
                let mut expected = self.control[*p].past.clone();
                expected.insert(*p);
                expected.same_as(&self.control[idx].past).then(|| {
                    let mut s = state.clone();
                    if !invalid.contains(*p) {
                        let op = &self.ops[&self.control[*p].id];
                        let env = op.envelope();
                        s.apply(op.id(), &env.author, &env.body, env.hlc);
                    }
                    s
                })
            });
            let base = base.unwrap_or_else(|| self.fold(&self.control[idx].past, &invalid));
            if !invalid.contains(idx)
                && let Err(e) = self.judge_control(idx, &invalid, effective, Some(&base))
            {
                invalid.insert(idx);
                errors.insert(idx, e);
            }
            previous = Some((idx, base));
        }
        (invalid, errors)
    }

    /// The reference algorithm: canonical chains, then guild-state ops to a fixed point of
    /// strong removal, then the metadata document, then every content op.
    fn resolve_all(&mut self) -> Vec<(OpId, Verdict)> {
        self.resolutions.full += 1;
        let before = std::mem::take(&mut self.verdicts);
        self.recompute_canonical();
        self.states_at.clear();

        let mut forked = BitSet::default();
        let mut removals = Vec::new();
        for (i, node) in self.control.iter().enumerate() {
            if !self.canonical[&node.id] {
                forked.insert(i);
            }
            if self.ops[&node.id].envelope().body.removal().is_some() {
                removals.push(i);
            }
        }
        // Which removals cut concurrent ops depends on which removals are valid, which depends
        // on the removals cutting them. Start from none and re-judge with the removals found
        // valid until that set settles; a cycle of removals that never settles keeps only those
        // valid in both of the last two rounds.
        let mut effective = BitSet::default();
        let mut rounds = 0;
        let (invalid, mut errors) = loop {
            let (invalid, errors) = self.judge_all_control(&forked, &effective);
            if rounds == 0 {
                self.first_round_invalid = invalid.clone();
            }
            let mut valid_removals = BitSet::default();
            for &r in &removals {
                if !invalid.contains(r) {
                    valid_removals.insert(r);
                }
            }
            rounds += 1;
            if valid_removals.same_as(&effective) {
                break (invalid, errors);
            }
            if rounds == MAX_REMOVAL_ROUNDS {
                effective.intersect_with(&valid_removals);
                break self.judge_all_control(&forked, &effective);
            }
            effective = valid_removals;
        };
        self.effective_removals = effective;
        self.removal_rounds = rounds;

        self.meta = MetaDoc::new();
        let order: Vec<usize> = self.control_order.values().copied().collect();
        for idx in order {
            let id = self.control[idx].id;
            let verdict = if !self.canonical[&id] {
                Verdict::Forked
            } else if let Some(e) = errors.remove(&idx) {
                Verdict::Invalid(e)
            } else if invalid.contains(idx) {
                Verdict::Forked
            } else {
                self.apply_meta_of(id)
            };
            self.verdicts.insert(id, verdict);
        }
        self.refold_current();
        self.recompute_valid_heads();

        self.history = History::default();
        let mut content: Vec<(Hlc, OpId)> = self
            .ops
            .values()
            .filter(|op| !op.envelope().body.is_control())
            .map(|op| (op.envelope().hlc, op.id()))
            .collect();
        content.sort();
        for (_, id) in &content {
            let verdict = self.judge_content(*id);
            self.index_content(*id, &verdict);
            self.verdicts.insert(*id, verdict);
        }
        // Targets can sort after the ops that refer to them (a reaction on a message that
        // arrived late with an older timestamp); settle those.
        for (_, id) in &content {
            if self.verdicts[id].is_valid() {
                self.rejudge_content(self.dependents_of(id));
            }
        }

        let mut changes: Vec<(OpId, Verdict)> = self
            .verdicts
            .iter()
            .filter(|(id, v)| before.get(id) != Some(v))
            .map(|(id, v)| (*id, v.clone()))
            .collect();
        changes.sort_by_key(|(id, _)| (self.ops[id].envelope().hlc, *id));
        changes
    }

    /// Each author's canonical chain: from the lowest seq held, the op extending the chosen
    /// one below it; across a gap in the log (a seq not held), the op whose `prev` is not held,
    /// provisionally. An author who signed two ops at one seq is no longer trusted: their chain
    /// ends below it (the guild's genesis op still heads its author's chain, and the chain
    /// ends there).
    fn recompute_canonical(&mut self) {
        let mut canonical = Map::default();
        for chain in self.chains.values() {
            let mut ended = false;
            for (&seq, ids) in &chain.ops {
                let chosen = if ended {
                    None
                } else if ids.len() > 1 {
                    ids.iter().find(|id| **id == self.id).copied()
                } else {
                    Some(ids[0]).filter(|id| self.chosen_at(chain, seq, id, false))
                };
                for id in ids {
                    canonical.insert(*id, Some(*id) == chosen);
                }
                ended = chosen.is_none() || ids.len() > 1;
            }
        }
        self.canonical = canonical;
    }

    /// Messages of a channel or thread in order, oldest first, strictly between the cursors.
    pub fn messages(
        &self,
        channel: &ChannelId,
        before: Option<(Hlc, MessageId)>,
        after: Option<(Hlc, MessageId)>,
        limit: usize,
    ) -> Vec<MessageView> {
        self.history
            .page(channel, before, after, limit, |id| self.message(id))
    }

    /// A message as clients see it, or `None` if it is unknown, invalid or deleted.
    pub fn message(&self, id: &MessageId) -> Option<MessageView> {
        if self.verdicts.get(id) != Some(&Verdict::Valid) {
            return None;
        }
        let op = &self.ops[id];
        let env = op.envelope();
        let Body::MessageCreate {
            channel,
            content,
            reply_to,
        } = &env.body
        else {
            return None;
        };
        let mut view = MessageView {
            id: *id,
            channel: *channel,
            author: env.author,
            hlc: env.hlc,
            content: content.clone(),
            edited_at: None,
            reply_to: *reply_to,
            reactions: BTreeMap::new(),
            pinned: false,
            thread: None,
        };
        let mut edit = (env.hlc, *id);
        let mut reactions: BTreeMap<(String, UserId), ((Hlc, OpId), bool)> = BTreeMap::new();
        let mut pin: Option<((Hlc, OpId), bool)> = None;
        for dep in self.dependents.get(id).into_iter().flatten() {
            if self.verdicts.get(dep) != Some(&Verdict::Valid) {
                continue;
            }
            let denv = self.ops[dep].envelope();
            let key = (denv.hlc, *dep);
            match &denv.body {
                Body::MessageDelete { .. } => return None,
                Body::MessageEdit { content, .. } if key > edit => {
                    edit = key;
                    view.content = content.clone();
                    view.edited_at = Some(denv.hlc);
                }
                Body::ReactionAdd { emoji, .. } | Body::ReactionRemove { emoji, .. } => {
                    let added = matches!(denv.body, Body::ReactionAdd { .. });
                    let slot = reactions
                        .entry((emoji.clone(), denv.author))
                        .or_insert((key, added));
                    if key >= slot.0 {
                        *slot = (key, added);
                    }
                }
                Body::Pin { .. } | Body::Unpin { .. } => {
                    let pinned = matches!(denv.body, Body::Pin { .. });
                    if pin.is_none_or(|(k, _)| key > k) {
                        pin = Some((key, pinned));
                    }
                }
                Body::ThreadCreate { .. } => {
                    view.thread = Some(view.thread.map_or(*dep, |t: OpId| t.min(*dep)));
                }
                _ => {}
            }
        }
        for ((emoji, user), (_, added)) in reactions {
            if added {
                view.reactions.entry(emoji).or_default().insert(user);
            }
        }
        view.pinned = pin.is_some_and(|(_, p)| p);
        Some(view)
    }

    /// The members who could view `channel` as the author of guild-state op `op` saw the guild
    /// (its causal past): the audience of a channel's deletion, which the current state, where
    /// the channel is gone, can no longer tell.
    pub fn viewers_before(&self, op: &OpId, channel: &ChannelId) -> BTreeSet<UserId> {
        let Some(&idx) = self.control_index.get(op) else {
            return BTreeSet::new();
        };
        let state = self.fold(&self.control[idx].past, &self.invalid_control());
        state
            .members
            .keys()
            .filter(|user| {
                state
                    .channel_permissions(user, channel)
                    .contains(Permissions::VIEW_CHANNEL)
            })
            .copied()
            .collect()
    }

    /// Threads of a channel: (thread id, name), in creation order.
    pub fn threads(&self, channel: &ChannelId) -> Vec<(OpId, Text)> {
        self.history
            .threads(channel)
            .into_iter()
            .filter_map(|id| match &self.ops[&id].envelope().body {
                Body::ThreadCreate { name, .. } => Some((id, name.clone())),
                _ => None,
            })
            .collect()
    }

    /// A digest of everything materialized: guild state, metadata, every channel's history and
    /// the set of valid ops. Equal on every replica holding the same ops.
    pub fn state_hash(&self) -> [u8; 32] {
        #[derive(Serialize)]
        struct Snapshot<'a> {
            state: &'a GuildState,
            meta: BTreeMap<String, MetaValue>,
            channels: BTreeMap<ChannelId, Vec<MessageView>>,
            valid: BTreeSet<OpId>,
        }
        let channels = self
            .history
            .channels()
            .map(|c| (c, self.messages(&c, None, None, usize::MAX)))
            .collect();
        let snapshot = Snapshot {
            state: &self.current,
            meta: self.meta.entries(),
            channels,
            valid: self
                .verdicts
                .iter()
                .filter(|(_, v)| v.is_valid())
                .map(|(id, _)| *id)
                .collect(),
        };
        let json = serde_json::to_vec(&snapshot).expect("snapshot serializes");
        sha256(&[&json])
    }
}

#[cfg(test)]
impl Guild {
    /// A copy of this replica with every verdict resolved again by the reference algorithm:
    /// what incremental insertion must agree with.
    pub(crate) fn resolved_from_scratch(&self) -> Guild {
        let mut guild = self.clone();
        guild.resolve_all();
        guild
    }

    /// The honored removals, sorted, and the rounds the reference takes to find them (an
    /// upper bound after refused removals judged where they stand).
    pub(crate) fn honored_removals(&self) -> (Vec<OpId>, usize) {
        let mut honored: Vec<OpId> = (0..self.control.len())
            .filter(|&i| self.effective_removals.contains(i))
            .map(|i| self.control[i].id)
            .collect();
        honored.sort();
        (honored, self.removal_rounds)
    }
}

/// The nodes the members of `state` name as homes, each with how many members name it.
fn entitled_index(state: &GuildState) -> BTreeMap<NodeId, u32> {
    let mut index = BTreeMap::new();
    for member in state.members.values() {
        for node in &member.homes {
            *index.entry(*node).or_insert(0) += 1;
        }
    }
    index
}

/// What judging a new guild-state op on its own decides (`Guild::judge_new_control`).
enum NewControl {
    /// Its verdict, which changes no other.
    Alone(Result<(), AuthError>),
    /// A removal that joins the honored set: valid, with what it cuts to re-judge.
    Honored,
    /// More than this op's verdict may change in ways only a resolution follows.
    Unsettled,
}

/// The verdicts honoring one more removal changes (`Guild::recut`).
struct Recut {
    /// The guild-state ops re-judged, in (hlc, id) order, with their verdicts.
    control: Vec<(usize, Result<(), AuthError>)>,
    /// Those of them whose validity changed.
    flipped: BitSet,
    /// The first of those in (hlc, id) order: content after it may be judged in a new state.
    first_flipped: Option<(Hlc, OpId)>,
    /// The content ops the removal cuts.
    content: Vec<OpId>,
}

enum ContentError {
    Auth(AuthError),
    Waiting(OpId),
}

impl From<AuthError> for ContentError {
    fn from(e: AuthError) -> Self {
        ContentError::Auth(e)
    }
}

/// The message or thread a content op refers to and must wait for.
fn content_target(body: &Body) -> Option<OpId> {
    match body {
        Body::MessageEdit { message, .. }
        | Body::MessageDelete { message }
        | Body::ReactionAdd { message, .. }
        | Body::ReactionRemove { message, .. }
        | Body::Pin { message }
        | Body::Unpin { message }
        | Body::ThreadCreate {
            message: Some(message),
            ..
        } => Some(*message),
        Body::MessageCreate { channel, .. } => Some(*channel),
        _ => None,
    }
}
