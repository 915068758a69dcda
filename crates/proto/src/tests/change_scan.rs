//! The op-count scan of metadata changes (`change_scan`) against real Automerge changes: it
//! agrees with Automerge on every change a node builds, and refuses, for a few bytes of work,
//! changes whose runs claim billions of ops, as well as truncated, compressed and foreign chunks.

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{AutoCommit, Change, ROOT};
use proptest::prelude::*;

use crate::body::Body;
use crate::change_scan::{ScanError, claimed_ops};
use crate::error::AuthError;
use crate::hlc::Hlc;
use crate::id::{OpId, sha256};
use crate::limits::{MAX_META_CHANGE_BYTES, MAX_META_CHANGE_OPS};
use crate::meta::{MetaDoc, MetaValue};
use crate::op::{Envelope, Op, OpError};
use crate::validate::check_body;
use crate::wire::{Reader, Writer};

use super::user;

const BUDGET: u64 = MAX_META_CHANGE_OPS;
const PUT: u64 = 1;

fn automerge_ops(bytes: &[u8]) -> u64 {
    let change = Change::from_bytes(bytes.to_vec()).expect("Automerge parses the change");
    change.decode().operations.len() as u64
}

fn id_text(n: u8) -> String {
    OpId([n; 32]).to_string()
}

/// Schema keys of every scope, so that edits reach several keys and repeat some.
fn schema_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("guild.name".to_string()),
        Just("guild.description".to_string()),
        (0u8..3).prop_map(|c| format!("channel.{}.topic", id_text(c))),
        (0u8..3).prop_map(|c| format!("channel.{}.position", id_text(c))),
        (0u8..2).prop_map(|r| format!("role.{}.color", id_text(r))),
        (1u8..4).prop_map(|u| format!("member.{}.nick", user(u))),
    ]
}

fn edit_value() -> impl Strategy<Value = Option<MetaValue>> {
    prop_oneof![
        "[a-z ]{1,40}".prop_map(|s| Some(MetaValue::Str(s))),
        any::<i64>().prop_map(|i| Some(MetaValue::Int(i))),
        Just(None),
    ]
}

/// The edits of one change: `None` deletes the key.
type Edits = Vec<(String, Option<MetaValue>)>;

/// Changes by one of three authors, each a list of puts and deletes.
fn change_plans() -> impl Strategy<Value = Vec<(u8, Edits)>> {
    let edits = proptest::collection::vec((schema_key(), edit_value()), 1..40);
    proptest::collection::vec((1u8..4, edits), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every change `MetaDoc::make_change` builds, on a document that already holds other
    /// authors' changes (so with dependencies, predecessors and other actors), is an uncompressed
    /// change that passes the scan, and the scan counts exactly the ops Automerge decodes.
    #[test]
    fn node_changes_pass_and_the_scan_counts_automerges_ops(plans in change_plans()) {
        let mut doc = MetaDoc::new();
        for (n, (author, edits)) in plans.iter().enumerate() {
            let edits: Vec<(&str, Option<MetaValue>)> =
                edits.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            let Some(bytes) = doc.make_change(&user(*author), &edits) else {
                continue;
            };
            prop_assert_eq!(claimed_ops(&bytes, BUDGET), Ok(automerge_ops(&bytes)));
            prop_assert_eq!(check_body(&Body::MetaChange { change: bytes.clone() }), Ok(()));
            doc.apply(OpId([n as u8; 32]), &bytes).expect("a node's own change applies");
        }
    }

    /// Automerge's own encoding of any timestamp (a signed LEB128 in the change header) is read
    /// as the minimal encoding it is.
    #[test]
    fn any_timestamp_passes(time in any::<i64>()) {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "guild.name", "x").unwrap();
        doc.commit_with(CommitOptions::default().with_time(time));
        let bytes = doc.get_last_local_change().unwrap().raw_bytes().to_vec();
        prop_assert_eq!(claimed_ops(&bytes, BUDGET), Ok(1));
    }

    /// Arbitrary bytes, bare or behind a change chunk's header, never panic the scan.
    #[test]
    fn garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = claimed_ops(&body, u64::MAX);
        let _ = claimed_ops(&chunk(1, &body), BUDGET);
    }
}

/// A change chunk around `body`, with the checksum Automerge computes: the first 4 bytes of
/// SHA-256 over the chunk type, the body length and the body.
fn chunk(chunk_type: u8, body: &[u8]) -> Vec<u8> {
    let mut len = Writer::new();
    len.uint(body.len() as u64);
    let len = len.into_bytes();
    let hash = sha256(&[&[chunk_type], &len, body]);
    let mut out = vec![0x85, 0x6f, 0x4a, 0x83];
    out.extend_from_slice(&hash[..4]);
    out.push(chunk_type);
    out.extend_from_slice(&len);
    out.extend_from_slice(body);
    out
}

/// A change chunk taken apart: the header fields before the column metadata, the columns, and
/// whatever follows them.
struct ChangeParts {
    header: Vec<u8>,
    columns: Vec<(u32, Vec<u8>)>,
    extra: Vec<u8>,
}

impl ChangeParts {
    /// Splits a well-formed, uncompressed change chunk.
    fn of(bytes: &[u8]) -> ChangeParts {
        let mut r = Reader::new(bytes);
        r.take(9, "magic, checksum, type").unwrap();
        let len = r.uint("chunk length").unwrap() as usize;
        let body = r.take(len, "chunk").unwrap();
        let mut r = Reader::new(body);
        let bytes_field = |r: &mut Reader<'_>| {
            let n = r.uint("length").unwrap() as usize;
            r.take(n, "bytes").unwrap();
        };
        let deps = r.uint("deps").unwrap() as usize;
        r.take(32 * deps, "deps").unwrap();
        bytes_field(&mut r); // actor
        r.uint("seq").unwrap();
        r.uint("start op").unwrap();
        while r.u8("time").unwrap() & 0x80 != 0 {}
        bytes_field(&mut r); // message
        for _ in 0..r.uint("other actors").unwrap() {
            bytes_field(&mut r);
        }
        let header = body[..r.position()].to_vec();
        let specs: Vec<(u32, usize)> = (0..r.uint("columns").unwrap())
            .map(|_| (r.u32("spec").unwrap(), r.uint("len").unwrap() as usize))
            .collect();
        let columns = specs
            .into_iter()
            .map(|(spec, len)| (spec, r.take(len, "column").unwrap().to_vec()))
            .collect();
        let extra = body[r.position()..].to_vec();
        ChangeParts {
            header,
            columns,
            extra,
        }
    }

    fn to_chunk(&self) -> Vec<u8> {
        chunk(1, &self.body())
    }

    fn body(&self) -> Vec<u8> {
        let mut meta = Writer::new();
        meta.uint(self.columns.len() as u64);
        for (spec, data) in &self.columns {
            meta.uint(u64::from(*spec));
            meta.uint(data.len() as u64);
        }
        let mut body = self.header.clone();
        body.extend(meta.into_bytes());
        for (_, data) in &self.columns {
            body.extend_from_slice(data);
        }
        body.extend_from_slice(&self.extra);
        body
    }
}

fn signed_leb(mut v: i64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        let done = (v == 0 && byte & 0x40 == 0) || (v == -1 && byte & 0x40 != 0);
        if done {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn unsigned_leb(v: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.uint(v);
    w.into_bytes()
}

/// One RLE run: `rows` copies of the (already encoded) value.
fn run(rows: u64, value: &[u8]) -> Vec<u8> {
    let mut out = signed_leb(i64::try_from(rows).unwrap());
    out.extend_from_slice(value);
    out
}

/// A real change by user 1 that puts one key.
fn real_change() -> Vec<u8> {
    MetaDoc::new()
        .make_change(
            &user(1),
            &[("guild.name", Some(MetaValue::Str("x".into())))],
        )
        .unwrap()
}

/// The real change rewritten so that its columns claim `ops` puts of null to `guild.name`, each
/// column a single run: a few dozen bytes whatever `ops` is.
fn bomb(ops: u64) -> Vec<u8> {
    let mut parts = ChangeParts::of(&real_change());
    let mut key = unsigned_leb(10);
    key.extend_from_slice(b"guild.name");
    parts.columns = vec![
        (0x15, run(ops, &key)),               // key string
        (0x34, unsigned_leb(ops)),            // insert: `ops` times false
        (0x42, run(ops, &unsigned_leb(PUT))), // action
        (0x56, run(ops, &unsigned_leb(0))),   // value metadata: null
        (0x70, run(ops, &unsigned_leb(0))),   // no predecessors
    ];
    parts.to_chunk()
}

/// An op carrying `change`, with a dummy signature: decoding checks the body before any
/// signature is verified.
fn op_bytes(change: Vec<u8>) -> Vec<u8> {
    let envelope = Envelope {
        guild: OpId([7; 32]),
        author: user(1),
        seq: 1,
        prev: None,
        hlc: Hlc::from_parts(5_000, 0),
        deps: vec![OpId([7; 32])],
        body: Body::MetaChange { change },
    };
    let mut bytes = envelope.encode_unsigned();
    bytes.extend_from_slice(&[0; 64]);
    bytes
}

#[test]
fn the_bomb_construction_is_a_change_automerge_accepts() {
    let small = bomb(3);
    assert_eq!(automerge_ops(&small), 3);
    assert_eq!(claimed_ops(&small, BUDGET), Ok(3));
    assert!(Op::decode(&op_bytes(small)).is_ok());

    let at_budget = bomb(BUDGET);
    assert_eq!(automerge_ops(&at_budget), BUDGET);
    assert_eq!(claimed_ops(&at_budget, BUDGET), Ok(BUDGET));
    assert_eq!(
        claimed_ops(&bomb(BUDGET + 1), BUDGET),
        Err(ScanError::OverBudget)
    );
}

#[test]
fn bombs_of_2_pow_30_and_2_pow_40_ops_are_refused_at_decode() {
    for ops in [1u64 << 30, 1 << 40] {
        let bytes = bomb(ops);
        assert!(bytes.len() < 200, "{} bytes", bytes.len());
        // Unbudgeted, the scan reads the claim in one step; Automerge would walk all of it.
        assert_eq!(claimed_ops(&bytes, u64::MAX), Ok(ops));
        assert_eq!(claimed_ops(&bytes, BUDGET), Err(ScanError::OverBudget));
        assert_eq!(
            check_body(&Body::MetaChange {
                change: bytes.clone()
            }),
            Err(ScanError::OverBudget.reason())
        );
        assert_eq!(
            Op::decode(&op_bytes(bytes)),
            Err(OpError::Malformed(ScanError::OverBudget.reason()))
        );
    }
}

/// One op whose predecessor list claims 2^40 entries: the op count is 1, but the predecessor
/// columns are over budget.
#[test]
fn a_predecessor_bomb_is_refused() {
    let mut parts = ChangeParts::of(&bomb(1));
    let huge = 1u64 << 40;
    parts.columns.pop();
    parts.columns.extend([
        (0x70, run(1, &unsigned_leb(huge))),
        (0x71, run(huge, &unsigned_leb(0))),
        (0x73, run(huge, &signed_leb(1))),
    ]);
    let bytes = parts.to_chunk();
    assert_eq!(claimed_ops(&bytes, u64::MAX), Ok(1));
    assert_eq!(claimed_ops(&bytes, BUDGET), Err(ScanError::OverBudget));
}

/// Automerge parses a change whose columns name an actor it does not list, and then panics
/// decoding it; the scan refuses it.
#[test]
fn actor_indices_past_the_actor_list_are_refused() {
    let with_predecessor_actor = |actor: u64| {
        let mut parts = ChangeParts::of(&bomb(1));
        parts.columns.pop();
        parts.columns.extend([
            (0x70, run(1, &unsigned_leb(1))),
            (0x71, run(1, &unsigned_leb(actor))),
            (0x73, run(1, &signed_leb(1))),
        ]);
        parts.to_chunk()
    };
    let own = with_predecessor_actor(0);
    assert_eq!(automerge_ops(&own), 1);
    assert_eq!(claimed_ops(&own, BUDGET), Ok(1));

    let unknown = with_predecessor_actor(1);
    let change = Change::from_bytes(unknown.clone()).expect("Automerge parses it");
    assert!(std::panic::catch_unwind(|| change.decode()).is_err());
    assert_eq!(claimed_ops(&unknown, BUDGET), Err(ScanError::UnknownActor));
}

/// Automerge panics applying a change that names an actor it has not seen: a first change at
/// seq 2, or one listing an actor of no applied change. The document refuses both.
#[test]
fn changes_naming_unknown_actors_do_not_apply() {
    let seq_field = 34; // after no deps and a 32-byte actor
    let mut parts = ChangeParts::of(&bomb(1));
    assert_eq!(parts.header[seq_field], 1);
    parts.header[seq_field] = 2;
    let second_without_first = parts.to_chunk();

    let mut parts = ChangeParts::of(&bomb(1));
    assert_eq!(parts.header.pop(), Some(0), "no other actors");
    parts.header.push(1);
    parts.header.push(32);
    parts.header.extend([9; 32]);
    let unknown_other_actor = parts.to_chunk();

    for bytes in [second_without_first, unknown_other_actor] {
        assert_eq!(claimed_ops(&bytes, BUDGET), Ok(1));
        assert!(matches!(
            MetaDoc::new().apply(OpId([1; 32]), &bytes),
            Err(AuthError::BadMetaChange(_))
        ));
    }
    assert_eq!(MetaDoc::new().apply(OpId([1; 32]), &bomb(1)), Ok(()));
}

/// Literal runs, null runs and boolean runs all count; a count past 2^64 is over any budget.
#[test]
fn every_run_kind_counts_and_sums_cannot_overflow() {
    let mut parts = ChangeParts::of(&bomb(4));
    let mut literal = signed_leb(-2);
    literal.extend([0x01, 0x01]);
    literal.extend(run(2, &unsigned_leb(PUT)));
    parts.columns[2].1 = literal;
    parts.columns[1].1 = [1, 2, 1].iter().flat_map(|&n| unsigned_leb(n)).collect();
    assert_eq!(claimed_ops(&parts.to_chunk(), BUDGET), Ok(4));

    let mut nulls = vec![0x00];
    nulls.extend(unsigned_leb(u64::MAX));
    nulls.push(0x00);
    nulls.extend(unsigned_leb(u64::MAX));
    parts.columns[2].1 = nulls;
    assert_eq!(
        claimed_ops(&parts.to_chunk(), u64::MAX),
        Err(ScanError::OverBudget)
    );
}

#[test]
fn truncated_and_extended_chunks_are_refused() {
    let bytes = bomb(2);
    for end in 0..bytes.len() {
        assert!(
            claimed_ops(&bytes[..end], BUDGET).is_err(),
            "prefix of {end}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(claimed_ops(&longer, BUDGET), Err(ScanError::TrailingBytes));
    // A chunk whose last column is a byte shorter than its metadata says.
    let mut body = ChangeParts::of(&bytes).body();
    body.pop();
    assert_eq!(
        claimed_ops(&chunk(1, &body), BUDGET),
        Err(ScanError::Truncated)
    );
}

#[test]
fn compressed_changes_are_inflated_within_a_bound() {
    // Automerge's `Change::bytes` DEFLATEs a change over 256 bytes, as earlier builds signed
    // them; they still decode, counted from the inflated data.
    let mut doc = AutoCommit::new();
    for c in 0..8 {
        doc.put(ROOT, format!("channel.{}.topic", id_text(c)), "a topic")
            .unwrap();
    }
    doc.commit();
    let mut change = doc.get_last_local_change().unwrap();
    let compressed = change.bytes().into_owned();
    assert_eq!(compressed[8], 2, "a compressed change chunk");
    assert_eq!(automerge_ops(&compressed), 8);
    assert_eq!(claimed_ops(&compressed, BUDGET), Ok(8));
    assert_eq!(claimed_ops(change.raw_bytes(), BUDGET), Ok(8));

    // A bomb: a few hundred bytes of DEFLATE that would inflate to 32 MiB.
    let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut deflate, &vec![0u8; 32 << 20]).unwrap();
    let bomb_data = deflate.finish().unwrap();
    assert!(bomb_data.len() < MAX_META_CHANGE_BYTES);
    assert_eq!(
        claimed_ops(&chunk(2, &bomb_data), BUDGET),
        Err(ScanError::BadCompression)
    );
    assert_eq!(
        claimed_ops(&chunk(2, b"not deflate at all"), BUDGET),
        Err(ScanError::BadCompression)
    );

    // A DEFLATE column in an otherwise plain change chunk.
    let mut parts = ChangeParts::of(&bomb(2));
    parts.columns[2].0 |= 0b1000;
    assert_eq!(
        claimed_ops(&parts.to_chunk(), BUDGET),
        Err(ScanError::CompressedColumn)
    );
}

#[test]
fn other_chunks_and_columns_are_refused() {
    let bytes = bomb(2);
    let body = ChangeParts::of(&bytes).body();
    for chunk_type in [0, 3, 9] {
        assert_eq!(
            claimed_ops(&chunk(chunk_type, &body), BUDGET),
            Err(ScanError::NotAChange)
        );
    }
    let mut bad_magic = bytes.clone();
    bad_magic[0] = 0x86;
    assert_eq!(claimed_ops(&bad_magic, BUDGET), Err(ScanError::NotAChange));

    let with_columns = |columns: Vec<(u32, Vec<u8>)>| {
        let mut parts = ChangeParts::of(&bytes);
        parts.columns = columns;
        claimed_ops(&parts.to_chunk(), BUDGET)
    };
    let action = (0x42, run(2, &unsigned_leb(PUT)));
    let insert = (0x34, unsigned_leb(2));
    assert_eq!(
        with_columns(vec![(0x23, vec![]), action.clone()]),
        Err(ScanError::UnexpectedColumn),
        "an unknown column"
    );
    assert_eq!(
        with_columns(vec![action.clone(), action.clone()]),
        Err(ScanError::UnexpectedColumn),
        "a repeated column"
    );
    assert_eq!(
        with_columns(vec![action.clone(), insert.clone()]),
        Err(ScanError::UnexpectedColumn),
        "columns out of order"
    );
    assert_eq!(with_columns(vec![insert, action]), Ok(2));
}

#[test]
fn non_minimal_integers_are_refused() {
    let mut parts = ChangeParts::of(&bomb(2));
    // 2 as a two-byte signed LEB128 run header.
    parts.columns[2].1 = vec![0x82, 0x00, 0x01];
    assert_eq!(
        claimed_ops(&parts.to_chunk(), BUDGET),
        Err(ScanError::BadInteger)
    );
    // An 11-byte signed integer.
    parts.columns[2].1 = [vec![0xff; 10], vec![0x00]].concat();
    assert_eq!(
        claimed_ops(&parts.to_chunk(), BUDGET),
        Err(ScanError::BadInteger)
    );
}

/// Why the budget is 512: a change of distinct keys that reaches it is over the byte limit
/// already, even with the shortest non-guild keys, so the budget never refuses a change the
/// byte limit would let through without repeating keys.
#[test]
fn the_byte_limit_refuses_distinct_key_changes_before_the_budget() {
    let keys: Vec<String> = (0..BUDGET)
        .map(|n| {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&n.to_be_bytes());
            format!("role.{}.name", OpId(id))
        })
        .collect();
    let edits: Vec<(&str, Option<MetaValue>)> = keys
        .iter()
        .map(|k| (k.as_str(), Some(MetaValue::Str("r".into()))))
        .collect();
    let bytes = MetaDoc::new().make_change(&user(1), &edits).unwrap();
    assert_eq!(claimed_ops(&bytes, BUDGET), Ok(BUDGET));
    assert!(
        bytes.len() > MAX_META_CHANGE_BYTES,
        "{} distinct keys in {} bytes",
        BUDGET,
        bytes.len()
    );
}
