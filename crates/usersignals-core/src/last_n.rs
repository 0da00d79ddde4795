//! `LastN`: a user's last n events by (time, CRC-32 of the event id), with kept fields.
//!
//! Mirrors `usersignals.aggregations.last_n` (the reference model) entry for entry; only the
//! stored format differs. State is the top n of the user's events by `(ts, tie)`, newest first,
//! which no batching can change; with `dedupe_by` only the newest event per value is kept.
//!
//! Stored format (version byte first, so a new layout is a new version, never a misread):
//!
//! ```text
//! 0x01 | varint columns | varint count | zigzag newest ts | count-1 varint gaps (newest first)
//!      | count x u32 LE ties | per kept column, the smallest of:
//!          0 dictionary: varint size, values, codes (u8 while size <= 256, else varints)
//!          1 plain: count values
//!          2 prefixed strings: varint len, shared prefix, then per entry varint len + suffix
//! ```

use std::collections::{HashMap, HashSet};

use crate::context::AS_OF_LOOKBACK_MS;
use crate::error::CoreError;
use crate::plan::LastNSpec;
use crate::value::{ExactKey, PyKey, Value};
use crate::varint::{put_i64, put_u64, Reader};

pub const FORMAT_VERSION: u8 = 0x01;
const DICTIONARY: u8 = 0;
const PLAIN: u8 = 1;
const PREFIXED: u8 = 2;
const MAX_BYTE_CODES: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub ts: i64,
    pub tie: u32,
    pub values: Vec<Value>,
}

impl Entry {
    fn order(&self) -> (i64, u32) {
        (self.ts, self.tie)
    }
}

pub fn tie_of(event_id: &str) -> u32 {
    crc32fast::hash(event_id.as_bytes())
}

/// The state after folding `new` (in arrival order) into `old`, and how many new entries
/// were already older than the retention plus the `as_of` look-back.
pub fn combine(
    spec: &LastNSpec,
    retention_ms: i64,
    old: Vec<Entry>,
    mut new: Vec<Entry>,
) -> (Vec<Entry>, usize) {
    if new.is_empty() {
        return (old, 0);
    }
    let newest_new = new.iter().map(|e| e.ts).max().unwrap_or(i64::MIN);
    let newest = old.first().map_or(newest_new, |e| e.ts.max(newest_new));
    // Expiry is by each event's own time against the newest time seen: the same result
    // whichever batch an old event arrives in. The look-back keeps what an earlier `as_of`
    // needs.
    let cutoff = newest.saturating_sub(retention_ms.saturating_add(AS_OF_LOOKBACK_MS));
    let arrived = new.len();
    new.retain(|e| e.ts >= cutoff);
    let expired = arrived - new.len();
    // Stable: entries equal in (ts, tie) keep arrival order, as the Python reference does.
    new.sort_by_key(|e| std::cmp::Reverse(e.order()));
    let mut merged = Vec::with_capacity(old.len() + new.len());
    let mut old = old.into_iter().filter(|e| e.ts >= cutoff).peekable();
    let mut new = new.into_iter().peekable();
    loop {
        // Old first among equals: Python's stable sort of `old + fresh`.
        let take_old = match (old.peek(), new.peek()) {
            (Some(o), Some(n)) => o.order() >= n.order(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_old { old.next() } else { new.next() };
        merged.extend(next);
        if spec.dedupe_by.is_none() && merged.len() == spec.n {
            break;
        }
    }
    if let Some(index) = spec.dedupe_by {
        let mut seen: HashSet<PyKey<'_>> = HashSet::new();
        let keep: Vec<bool> = merged
            .iter()
            .map(|e| seen.insert(e.values[index].py_key()))
            .collect();
        let mut flags = keep.into_iter();
        merged.retain(|_| flags.next().unwrap_or(false));
    }
    merged.truncate(spec.n);
    (merged, expired)
}

pub fn encode(entries: &[Entry], columns: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + entries.len() * 8);
    out.push(FORMAT_VERSION);
    put_u64(&mut out, columns as u64);
    put_u64(&mut out, entries.len() as u64);
    if let Some(first) = entries.first() {
        put_i64(&mut out, first.ts);
        for pair in entries.windows(2) {
            // Newest first, so every gap is >= 0: one byte per gap under 128 ms.
            put_u64(&mut out, pair[0].ts.wrapping_sub(pair[1].ts) as u64);
        }
        for entry in entries {
            out.extend_from_slice(&entry.tie.to_le_bytes());
        }
    }
    for column in 0..columns {
        encode_column(&mut out, entries, column);
    }
    out
}

fn encode_column(out: &mut Vec<u8>, entries: &[Entry], column: usize) {
    let values: Vec<&Value> = entries.iter().map(|e| &e.values[column]).collect();
    // Every applicable form, then the smallest (earliest on a tie): a deterministic
    // choice, so the bytes stay canonical.
    let mut best = vec![PLAIN];
    values.iter().for_each(|v| v.encode(&mut best));
    for candidate in [dictionary_form(&values), prefixed_form(&values)]
        .into_iter()
        .flatten()
    {
        if candidate.len() < best.len() {
            best = candidate;
        }
    }
    out.extend_from_slice(&best);
}

/// Distinct values once, then a code per entry (one byte while there are at most 256).
fn dictionary_form(values: &[&Value]) -> Option<Vec<u8>> {
    let mut vocab: HashMap<ExactKey<'_>, usize> = HashMap::new();
    let mut order: Vec<&Value> = Vec::new();
    let codes: Vec<usize> = values
        .iter()
        .map(|v| {
            *vocab.entry(v.exact_key()).or_insert_with(|| {
                order.push(v);
                order.len() - 1
            })
        })
        .collect();
    if order.len() == values.len() && values.len() > 1 {
        return None; // all distinct: never smaller than plain
    }
    let mut out = vec![DICTIONARY];
    put_u64(&mut out, order.len() as u64);
    order.iter().for_each(|v| v.encode(&mut out));
    for code in codes {
        if order.len() <= MAX_BYTE_CODES {
            out.push(code as u8);
        } else {
            put_u64(&mut out, code as u64);
        }
    }
    Some(out)
}

/// Strings sharing a prefix (`i00012345`, `category-7`): the prefix once, then suffixes.
fn prefixed_form(values: &[&Value]) -> Option<Vec<u8>> {
    let texts: Vec<&str> = values
        .iter()
        .map(|v| match v {
            Value::Str(s) => Some(s.as_str()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let first = texts.first()?;
    let mut shared = first.len();
    for text in &texts[1..] {
        shared = shared.min(common_prefix(first, text));
    }
    let mut out = vec![PREFIXED];
    put_u64(&mut out, shared as u64);
    out.extend_from_slice(&first.as_bytes()[..shared]);
    for text in texts {
        put_u64(&mut out, (text.len() - shared) as u64);
        out.extend_from_slice(&text.as_bytes()[shared..]);
    }
    Some(out)
}

/// Length in bytes of the common prefix, ending on a character boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, ca), cb)| ca != cb)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}

/// Version, field count and entry count, then the times: what `decode` and the view share.
fn decode_header(r: &mut Reader<'_>, columns: usize) -> Result<(usize, Vec<i64>), CoreError> {
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(CoreError::Codec(format!(
            "LastN format version {version}, expected {FORMAT_VERSION}"
        )));
    }
    let stored_columns = r.u64()?;
    if stored_columns != columns as u64 {
        return Err(CoreError::Codec(format!(
            "LastN state has {stored_columns} kept fields, the plan keeps {columns}"
        )));
    }
    let count = r.len(5)?;
    let mut times = Vec::with_capacity(count);
    if count > 0 {
        let mut ts = r.i64()?;
        times.push(ts);
        for _ in 1..count {
            ts = ts.wrapping_sub(r.u64()? as i64);
            times.push(ts);
        }
    }
    Ok((count, times))
}

pub fn decode(data: &[u8], columns: usize) -> Result<Vec<Entry>, CoreError> {
    let mut r = Reader::new(data);
    let (_, times) = decode_header(&mut r, columns)?;
    let mut entries = Vec::with_capacity(times.len());
    for ts in times {
        let bytes: [u8; 4] = r.bytes(4)?.try_into().expect("4 bytes were read");
        let tie = u32::from_le_bytes(bytes);
        entries.push(Entry {
            ts,
            tie,
            values: Vec::with_capacity(columns),
        });
    }
    for _ in 0..columns {
        decode_column(&mut r, &mut entries)?;
    }
    if !r.is_done() {
        return Err(CoreError::Codec("trailing bytes after LastN state".into()));
    }
    Ok(entries)
}

fn decode_column(r: &mut Reader<'_>, entries: &mut [Entry]) -> Result<(), CoreError> {
    match r.u8()? {
        DICTIONARY => {
            let size = r.len(1)?;
            let vocab: Vec<Value> = (0..size)
                .map(|_| Value::decode(r))
                .collect::<Result<_, _>>()?;
            for entry in entries.iter_mut() {
                let code = if size <= MAX_BYTE_CODES {
                    u64::from(r.u8()?)
                } else {
                    r.u64()?
                };
                let value = vocab.get(code as usize).ok_or_else(|| {
                    CoreError::Codec(format!("code {code} outside a dictionary of {size}"))
                })?;
                entry.values.push(value.clone());
            }
        }
        PLAIN => {
            for entry in entries.iter_mut() {
                entry.values.push(Value::decode(r)?);
            }
        }
        PREFIXED => {
            let shared = r.len(1)?;
            let prefix = r.bytes(shared)?;
            for entry in entries.iter_mut() {
                let n = r.len(1)?;
                let mut text = prefix.to_vec();
                text.extend_from_slice(r.bytes(n)?);
                let text = String::from_utf8(text)
                    .map_err(|e| CoreError::Codec(format!("string is not UTF-8: {e}")))?;
                entry.values.push(Value::Str(text));
            }
        }
        mode => return Err(CoreError::Codec(format!("unknown column mode {mode}"))),
    }
    Ok(())
}

/// Positions of kept fields the read filters use (by name, as in the Python reference).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadFields {
    pub action: Option<usize>,
    pub surface: Option<usize>,
    pub item_id: Option<usize>,
}

impl ReadFields {
    pub fn of(spec: &LastNSpec) -> Self {
        let find = |name: &str| spec.keep.iter().position(|k| k == name);
        ReadFields {
            action: find("action"),
            surface: find("surface"),
            item_id: find("item_id"),
        }
    }
}

pub mod view;

#[cfg(test)]
mod tests;
