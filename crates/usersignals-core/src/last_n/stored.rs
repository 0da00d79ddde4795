//! LastN's apply over stored bytes, the batch executor's path: the old state's values
//! borrowed from its bytes, the new entries' from the batch's columns, merged and encoded
//! with no value copied.
//!
//! Decoding a state into owned entries ([`super::decode`]) allocated a `String` per text
//! value and a `Vec` per entry, and each new entry cloned its values out of the batch: about
//! five allocations an entry, each freed once the state was encoded again. Here a stored
//! column's values are slices of the bytes (plain and dictionary forms) or of one text
//! buffer per column (the prefixed and digits forms, whose texts are not stored whole), and
//! an entry is its time, tie and where its values are. The bytes are those of decode,
//! [`super::combine`] and [`super::encode`] (a proptest holds them equal).

use super::{
    combine_by, decode_header, digits_header, encode_slots, first_of_each, push_digits_text,
    read_code, unpack_codes, Timed, DICTIONARY, DIGITS, PACKED, PLAIN, PREFIXED,
};
use crate::error::CoreError;
use crate::plan::LastNSpec;
use crate::value::{ExactKey, PyKey, Value, ValueRef};
use crate::varint::Reader;

/// A kept value as the encoder takes it: a string borrowed, whole.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Flat<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    Json(&'a str),
}

impl<'a> Flat<'a> {
    pub(crate) fn of(value: &'a Value) -> Self {
        match value {
            Value::Null => Flat::Null,
            Value::Bool(b) => Flat::Bool(*b),
            Value::Int(i) => Flat::Int(*i),
            Value::Float(f) => Flat::Float(*f),
            Value::Str(s) => Flat::Str(s),
            Value::Json(s) => Flat::Json(s),
        }
    }

    fn as_ref(self) -> ValueRef<'a> {
        match self {
            Flat::Null => ValueRef::Null,
            Flat::Bool(b) => ValueRef::Bool(b),
            Flat::Int(i) => ValueRef::Int(i),
            Flat::Float(f) => ValueRef::Float(f),
            Flat::Str(s) => ValueRef::Str(s),
            Flat::Json(s) => ValueRef::Json(s),
        }
    }

    /// A value as `ValueRef::decode` reads it (a string slice of the bytes).
    fn decode(r: &mut Reader<'a>) -> Result<Self, CoreError> {
        Ok(match ValueRef::decode(r)? {
            ValueRef::Null => Flat::Null,
            ValueRef::Bool(b) => Flat::Bool(b),
            ValueRef::Int(i) => Flat::Int(i),
            ValueRef::Float(f) => Flat::Float(f),
            ValueRef::Str(s) => Flat::Str(s),
            ValueRef::Json(s) => Flat::Json(s),
            // `ValueRef::decode` reads a string whole: the split forms are a view's.
            other => return Err(CoreError::Codec(format!("unexpected value {other:?}"))),
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        self.as_ref().encode(out);
    }

    /// `Value::exact_key` of the value.
    pub(crate) fn exact_key(&self) -> ExactKey<'a> {
        match *self {
            Flat::Null => ExactKey::Null,
            Flat::Bool(b) => ExactKey::Bool(b),
            Flat::Int(i) => ExactKey::Int(i),
            Flat::Float(f) => ExactKey::Float(f.to_bits()),
            Flat::Str(s) => ExactKey::Str(s),
            Flat::Json(s) => ExactKey::Json(s),
        }
    }

    /// `Value::py_key` of the value.
    fn py_key(&self) -> PyKey<'a> {
        self.as_ref().py_key()
    }
}

/// One user's new entries as the batch holds them: times, ties, the kept fields' columns
/// (by event index) and the user's accepted events, sorted by time.
pub(crate) struct NewRows<'b> {
    pub ts: &'b [i64],
    pub tie: &'b [u32],
    pub columns: Vec<&'b [Value]>,
    pub rows: &'b [usize],
}

/// An entry of the merge: its order, and its values' place (a stored entry's index, or a
/// batch event's).
#[derive(Clone, Copy)]
struct Slot {
    ts: i64,
    tie: u32,
    from: Source,
}

#[derive(Clone, Copy)]
enum Source {
    Stored(usize),
    Batch(usize),
}

impl Timed for Slot {
    fn order(&self) -> (i64, u32) {
        (self.ts, self.tie)
    }
}

/// `decode`, `combine` and `encode` in one: the new state's bytes and the count of expired
/// new entries.
pub(crate) fn apply_stored(
    spec: &LastNSpec,
    retention_ms: i64,
    old: Option<&[u8]>,
    new: &NewRows<'_>,
) -> Result<(Vec<u8>, usize), CoreError> {
    let columns = spec.keep.len();
    let stored = old.map(|data| Stored::parse(data, columns)).transpose()?;
    let old_slots = stored.as_ref().map_or_else(Vec::new, Stored::slots);
    let new_slots = (new.rows.iter())
        .map(|&i| Slot {
            ts: new.ts[i],
            tie: new.tie[i],
            from: Source::Batch(i),
        })
        .collect();
    let value = |slot: &Slot, column: usize| match (slot.from, &stored) {
        (Source::Stored(row), Some(stored)) => stored.columns[column].get(row),
        (Source::Batch(i), _) => Flat::of(&new.columns[column][i]),
        (Source::Stored(_), None) => Flat::Null,
    };
    let (merged, expired) = combine_by(spec, retention_ms, old_slots, new_slots, |merged, c| {
        first_of_each(merged.iter().map(|slot| value(slot, c).py_key()))
    });
    let bytes = encode_slots(&merged, columns, |c, values| {
        values.extend(merged.iter().map(|slot| value(slot, c)));
    });
    Ok((bytes, expired))
}

/// A stored state's times, ties and columns.
struct Stored<'a> {
    times: Vec<i64>,
    ties: &'a [u8],
    columns: Vec<Column<'a>>,
}

/// A stored column's values: slices of the bytes, or of one buffer of the column's texts.
enum Column<'a> {
    Plain(Vec<Flat<'a>>),
    Coded(Vec<Flat<'a>>, Vec<u32>),
    /// The texts one after another, and where each ends.
    Texts(String, Vec<usize>),
}

impl Column<'_> {
    fn get(&self, row: usize) -> Flat<'_> {
        match self {
            Column::Plain(values) => values[row],
            Column::Coded(vocab, codes) => vocab[codes[row] as usize],
            Column::Texts(text, ends) => {
                let start = if row == 0 { 0 } else { ends[row - 1] };
                Flat::Str(&text[start..ends[row]])
            }
        }
    }
}

impl<'a> Stored<'a> {
    /// The checks and errors of [`super::decode`].
    fn parse(data: &'a [u8], columns: usize) -> Result<Self, CoreError> {
        let mut r = Reader::new(data);
        let (count, times) = decode_header(&mut r, columns)?;
        let ties = r.bytes(4 * count)?;
        let columns = (0..columns)
            .map(|_| parse_column(&mut r, count))
            .collect::<Result<Vec<_>, _>>()?;
        r.expect_done("LastN state")?;
        Ok(Stored {
            times,
            ties,
            columns,
        })
    }

    fn slots(&self) -> Vec<Slot> {
        (self.times.iter().zip(self.ties.chunks_exact(4)).enumerate())
            .map(|(row, (ts, tie))| Slot {
                ts: *ts,
                tie: u32::from_le_bytes([tie[0], tie[1], tie[2], tie[3]]),
                from: Source::Stored(row),
            })
            .collect()
    }
}

/// One column of `count` values, as `decode_column` reads it.
fn parse_column<'a>(r: &mut Reader<'a>, count: usize) -> Result<Column<'a>, CoreError> {
    let vocabulary = |r: &mut Reader<'a>| -> Result<Vec<Flat<'a>>, CoreError> {
        let size = r.len(1)?;
        (0..size).map(|_| Flat::decode(r)).collect()
    };
    Ok(match r.u8()? {
        DICTIONARY => {
            let vocab = vocabulary(r)?;
            let size = vocab.len();
            let mut codes = Vec::with_capacity(count);
            for _ in 0..count {
                codes.push(read_code(r, size)?);
            }
            Column::Coded(vocab, codes)
        }
        PLAIN => Column::Plain(
            (0..count)
                .map(|_| Flat::decode(r))
                .collect::<Result<_, _>>()?,
        ),
        PREFIXED => prefixed_texts(r, count)?,
        DIGITS => {
            let (prefix, width) = digits_header(r)?;
            let mut text = String::with_capacity(count * (prefix.len() + width));
            let mut ends = Vec::with_capacity(count);
            for _ in 0..count {
                push_digits_text(&mut text, prefix, width, r.u64()?)?;
                ends.push(text.len());
            }
            Column::Texts(text, ends)
        }
        PACKED => {
            let vocab = vocabulary(r)?;
            let codes = unpack_codes(r, count, vocab.len())?;
            Column::Coded(vocab, codes)
        }
        mode => return Err(CoreError::Codec(format!("unknown column mode {mode}"))),
    })
}

/// The prefixed form's texts, each checked to be UTF-8 as `decode_column` checks it.
fn prefixed_texts<'a>(r: &mut Reader<'a>, count: usize) -> Result<Column<'a>, CoreError> {
    let shared = r.len(1)?;
    let prefix = r.bytes(shared)?;
    let mut text = Vec::with_capacity(count * (shared + 4));
    let mut ends = Vec::with_capacity(count);
    for _ in 0..count {
        let n = r.len(1)?;
        let start = text.len();
        text.extend_from_slice(prefix);
        text.extend_from_slice(r.bytes(n)?);
        std::str::from_utf8(&text[start..])
            .map_err(|e| CoreError::Codec(format!("string is not UTF-8: {e}")))?;
        ends.push(text.len());
    }
    // Each text was checked, so the whole is UTF-8 and every end is on a boundary.
    let text = String::from_utf8(text)
        .map_err(|e| CoreError::Codec(format!("string is not UTF-8: {e}")))?;
    Ok(Column::Texts(text, ends))
}

#[cfg(test)]
#[path = "stored_tests.rs"]
mod tests;
