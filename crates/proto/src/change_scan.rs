//! Counts the operations an Automerge change chunk claims, without expanding any run.
//!
//! Automerge run-length encodes a change's op columns, so a change of a hundred bytes can claim
//! 2^40 ops, and `automerge::Change::from_bytes` walks every one of them. This scan reads the
//! chunk's container, its change header and the run headers of its columns, adding up run
//! lengths as it goes: it costs O(bytes) whatever the runs claim, so a decoder can refuse such a
//! change before Automerge sees it (`spec/ops.md` §6.2). It checks only what the count needs,
//! and the one thing Automerge trusts without checking: that every actor index in the columns
//! names one of the change's actors (`Change::decode` panics otherwise). Everything else about
//! the change is Automerge's to judge.
//!
//! A compressed change chunk (what Automerge's `Change::bytes` makes of a change over 256 bytes,
//! and what earlier builds of this node signed) is inflated first, to at most
//! `MAX_INFLATED_CHANGE_BYTES`: Automerge inflates without a bound, so a 32 KiB chunk could
//! otherwise claim tens of MiB.

use std::fmt;
use std::io::Read;

use crate::wire::{DecodeError, Reader};

const MAGIC_BYTES: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const CHANGE_CHUNK: u8 = 1;
const COMPRESSED_CHANGE_CHUNK: u8 = 2;
const HASH_BYTES: usize = 32;
/// The most a compressed change may inflate to: room for any change within the op budget.
pub const MAX_INFLATED_CHANGE_BYTES: usize = 128 * 1024;

/// A column specification is `column id << 4 | deflate << 3 | column type`.
const DEFLATE_BIT: u32 = 0b1000;
const TYPE_BITS: u32 = 0b0111;
const ACTOR_TYPE: u32 = 1;
const DELTA_TYPE: u32 = 3;
const BOOLEAN_TYPE: u32 = 4;
const STRING_TYPE: u32 = 5;
const VALUE_TYPE: u32 = 7;

/// Automerge decodes exactly one op per row of this column (id 4, integer): the op's action.
const ACTION_COLUMN: u32 = 0x42;

/// The columns Automerge 0.12 writes in a change, in the ascending order a change lists them.
/// Anything else would leave the op count to Automerge's layout rules for unknown and grouped
/// columns, so a change may carry only these, each at most once and in this order.
const CHANGE_COLUMNS: [u32; 14] = [
    0x01, // object actor
    0x02, // object counter
    0x11, // key actor
    0x13, // key counter (delta)
    0x15, // key string
    0x34, // insert (boolean)
    ACTION_COLUMN,
    0x56, // value metadata
    0x57, // value bytes
    0x70, // predecessor group: the number of predecessors of each op
    0x71, // predecessor actor
    0x73, // predecessor counter (delta)
    0x94, // expand (boolean)
    0xa5, // mark name (string)
];

/// Why a change chunk was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    /// No magic bytes, or a chunk other than a change (a document, a bundle, an unknown type).
    NotAChange,
    /// A DEFLATE column: Automerge writes none in a change.
    CompressedColumn,
    /// A compressed change chunk that is not valid DEFLATE, or inflates past
    /// `MAX_INFLATED_CHANGE_BYTES`.
    BadCompression,
    /// A length or a field runs past the end of its chunk or column.
    Truncated,
    /// A LEB128 integer that is not minimal, overflows 64 bits or is too large for its field.
    BadInteger,
    /// Bytes after the chunk.
    TrailingBytes,
    /// A column outside `CHANGE_COLUMNS`, repeated or out of order.
    UnexpectedColumn,
    /// An actor column names an actor past the end of the change's actor list.
    UnknownActor,
    /// A column claims more rows than the budget.
    OverBudget,
}

impl ScanError {
    /// A short, stable description (the message of the `malformed_op` it causes).
    pub fn reason(self) -> &'static str {
        match self {
            ScanError::NotAChange => "metadata change is not an Automerge change chunk",
            ScanError::CompressedColumn => "metadata change has a compressed column",
            ScanError::BadCompression => {
                "metadata change does not inflate, or inflates past 131072 bytes"
            }
            ScanError::Truncated => "metadata change is truncated",
            ScanError::BadInteger => "metadata change has a malformed integer",
            ScanError::TrailingBytes => "metadata change has bytes after its chunk",
            ScanError::UnexpectedColumn => "metadata change has an unexpected column",
            ScanError::UnknownActor => "metadata change names an actor it does not list",
            ScanError::OverBudget => "metadata change claims too many operations",
        }
    }
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ScanError {}

impl From<DecodeError> for ScanError {
    /// `Reader::take`, `u8`, `uint` and `u32` fail only by running out of input or by a bad
    /// integer; `Reader::finish` by trailing bytes.
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::BadInteger => ScanError::BadInteger,
            DecodeError::TrailingBytes(_) => ScanError::TrailingBytes,
            _ => ScanError::Truncated,
        }
    }
}

/// The number of ops the change chunk `bytes` claims: the rows of its action column. Refuses
/// the chunk as soon as any column claims more than `budget` rows, so the work done is
/// proportional to the bytes read, never to the rows claimed.
pub fn claimed_ops(bytes: &[u8], budget: u64) -> Result<u64, ScanError> {
    let mut chunk = Reader::new(bytes);
    if chunk.array::<4>("magic bytes")? != MAGIC_BYTES {
        return Err(ScanError::NotAChange);
    }
    // The checksum is Automerge's to check; the op count does not depend on it.
    chunk.take(4, "checksum")?;
    let chunk_type = chunk.u8("chunk type")?;
    let len = usize::try_from(chunk.uint("chunk length")?).map_err(|_| ScanError::Truncated)?;
    let data = chunk.take(len, "chunk")?;
    chunk.finish()?;
    match chunk_type {
        CHANGE_CHUNK => scan_change(&mut Reader::new(data), budget),
        COMPRESSED_CHANGE_CHUNK => scan_change(&mut Reader::new(&inflate(data)?), budget),
        _ => Err(ScanError::NotAChange),
    }
}

/// The raw DEFLATE data of a compressed change chunk, inflated: the data of the change chunk
/// it stands for. Reads at most one byte past the bound, so a bomb costs that much.
fn inflate(data: &[u8]) -> Result<Vec<u8>, ScanError> {
    let mut inflated = Vec::new();
    flate2::read::DeflateDecoder::new(data)
        .take(MAX_INFLATED_CHANGE_BYTES as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|_| ScanError::BadCompression)?;
    if inflated.len() > MAX_INFLATED_CHANGE_BYTES {
        return Err(ScanError::BadCompression);
    }
    Ok(inflated)
}

fn scan_change(change: &mut Reader<'_>, budget: u64) -> Result<u64, ScanError> {
    let deps = change.uint("dependencies")?;
    for _ in 0..deps {
        change.take(HASH_BYTES, "dependency")?;
    }
    skip_bytes(change)?; // the change's own actor, index 0 in its columns
    change.uint("seq")?;
    change.uint("start op")?;
    read_signed(change)?; // time
    skip_bytes(change)?; // message
    let other_actors = change.uint("other actors")?;
    for _ in 0..other_actors {
        skip_bytes(change)?;
    }
    // The loop above read a length byte for each of them, so this cannot overflow.
    let actors = other_actors + 1;

    // All the (specification, length) pairs come first, then the data of each column in turn.
    let columns = change.uint("columns")?;
    let mut layout = Vec::with_capacity(CHANGE_COLUMNS.len());
    let mut next_allowed = 0;
    for _ in 0..columns {
        let spec = change.u32("column specification")?;
        let len =
            usize::try_from(change.uint("column length")?).map_err(|_| ScanError::Truncated)?;
        if spec & DEFLATE_BIT != 0 {
            return Err(ScanError::CompressedColumn);
        }
        let position = CHANGE_COLUMNS[next_allowed..]
            .iter()
            .position(|&allowed| allowed == spec)
            .ok_or(ScanError::UnexpectedColumn)?;
        next_allowed += position + 1;
        layout.push((spec, len));
    }

    let mut ops = 0;
    for (spec, len) in layout {
        let data = change.take(len, "column data")?;
        let rows = column_rows(spec, data, actors, budget)?;
        if spec == ACTION_COLUMN {
            ops = rows;
        }
    }
    // What follows the columns, up to the end of the chunk, is Automerge's "extra bytes": no ops.
    Ok(ops)
}

/// How the values of a run-length encoded column are encoded.
#[derive(Clone, Copy)]
enum RunValue {
    /// An unsigned LEB128: group, integer and value metadata columns.
    Unsigned,
    /// An unsigned LEB128 index into the change's actors (its own actor, then the others).
    Actor { actors: u64 },
    /// A signed LEB128: delta columns.
    Signed,
    /// An unsigned LEB128 length, then that many bytes: string columns.
    Text,
}

impl RunValue {
    fn skip(self, column: &mut Reader<'_>) -> Result<(), ScanError> {
        match self {
            RunValue::Unsigned => {
                column.uint("column value")?;
            }
            RunValue::Actor { actors } => {
                if column.uint("actor index")? >= actors {
                    return Err(ScanError::UnknownActor);
                }
            }
            RunValue::Signed => {
                read_signed(column)?;
            }
            RunValue::Text => skip_bytes(column)?,
        }
        Ok(())
    }
}

/// The rows a column's data claims, read from its run headers.
fn column_rows(spec: u32, data: &[u8], actors: u64, budget: u64) -> Result<u64, ScanError> {
    let mut column = Reader::new(data);
    let mut rows = RowCount { rows: 0, budget };
    match spec & TYPE_BITS {
        // Alternating run lengths of false and true.
        BOOLEAN_TYPE => {
            while !is_done(&column) {
                rows.add(column.uint("boolean run")?)?;
            }
        }
        // Raw value bytes, sliced by the lengths in the value metadata column: no rows.
        VALUE_TYPE => {}
        ACTOR_TYPE => count_rle_rows(&mut column, &mut rows, RunValue::Actor { actors })?,
        DELTA_TYPE => count_rle_rows(&mut column, &mut rows, RunValue::Signed)?,
        STRING_TYPE => count_rle_rows(&mut column, &mut rows, RunValue::Text)?,
        _ => count_rle_rows(&mut column, &mut rows, RunValue::Unsigned)?,
    }
    Ok(rows.rows)
}

/// Automerge's run-length encoding: a signed header n, then for n > 0 one value repeated n
/// times, for n < 0 a literal run of -n values, for n = 0 an unsigned count of nulls.
fn count_rle_rows(
    column: &mut Reader<'_>,
    rows: &mut RowCount,
    value: RunValue,
) -> Result<(), ScanError> {
    while !is_done(column) {
        match read_signed(column)? {
            0 => rows.add(column.uint("null run")?)?,
            repeated if repeated > 0 => {
                rows.add(repeated.unsigned_abs())?;
                value.skip(column)?;
            }
            literal => {
                let values = literal.unsigned_abs();
                // Checked first, so the loop reads at most `budget` values, each of them bytes
                // that are there.
                rows.add(values)?;
                for _ in 0..values {
                    value.skip(column)?;
                }
            }
        }
    }
    Ok(())
}

struct RowCount {
    rows: u64,
    budget: u64,
}

impl RowCount {
    fn add(&mut self, rows: u64) -> Result<(), ScanError> {
        self.rows = self
            .rows
            .checked_add(rows)
            .filter(|&total| total <= self.budget)
            .ok_or(ScanError::OverBudget)?;
        Ok(())
    }
}

fn is_done(column: &Reader<'_>) -> bool {
    column.finish().is_ok()
}

/// A length-prefixed byte string (an actor id, the message, a string value).
fn skip_bytes(r: &mut Reader<'_>) -> Result<(), ScanError> {
    let len = usize::try_from(r.uint("length")?).map_err(|_| ScanError::Truncated)?;
    r.take(len, "bytes")?;
    Ok(())
}

/// Minimal signed LEB128 of an i64: at most 10 bytes, the 10th only a sign extension (`00` or
/// `7f`), and no last byte that merely repeats the sign of the byte before it.
fn read_signed(r: &mut Reader<'_>) -> Result<i64, ScanError> {
    let mut value: i64 = 0;
    let mut previous = 0u8;
    for i in 0..10 {
        let byte = r.u8("signed integer")?;
        if i == 9 && byte != 0x00 && byte != 0x7f {
            return Err(ScanError::BadInteger);
        }
        value |= i64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let sign_only =
                (byte == 0x00 && previous & 0x40 == 0) || (byte == 0x7f && previous & 0x40 != 0);
            if i > 0 && sign_only {
                return Err(ScanError::BadInteger);
            }
            if byte & 0x40 != 0 && i < 9 {
                value |= -1 << (7 * (i + 1));
            }
            return Ok(value);
        }
        previous = byte;
    }
    unreachable!("a 10th byte with the continuation bit is refused above")
}
