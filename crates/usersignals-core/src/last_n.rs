//! `LastN`: a user's last n events by (time, CRC-32 of the event id), with kept fields.
//!
//! Mirrors `usersignals.aggregations.last_n` (the reference model) entry for entry; only the
//! stored format differs. State is the top n of the user's events by `(ts, tie)`, newest first,
//! which no batching can change; with `dedupe_by` only the newest event per value is kept.
//!
//! Stored format (version byte first, so a new layout is a new version, never a misread):
//!
//! ```text
//! 0x02 | varint columns | varint count | zigzag newest ts | count-1 varint gaps (newest first)
//!      | count x u32 LE ties | per kept column, the smallest of (earliest on a tie):
//!          1 plain: count values
//!          0 dictionary: varint size, values, codes (u8 while size <= 256, else varints)
//!          2 prefixed strings: varint len, shared prefix, then per entry varint len + suffix
//!          3 digits (version 2): varint len, shared prefix, varint width, then per entry
//!            the varint number its fixed-width digits spell (`i00012345` -> 12345)
//!          4 packed dictionary (version 2): varint size, values, then the codes packed
//!            at ceil(log2(size)) bits each, least significant bit first
//! ```
//!
//! Version 1 is version 2 without forms 3 and 4: it is still read, and written as version
//! 2 the next time a batch touches the state. Version 3 is version 2 whose values may be
//! JSON texts (`Value::Json`: a kept list, object or integer beyond 64 bits, tag 6): written
//! only for a state holding one, so that every other state stays readable by a build that
//! knows version 2 alone, and one holding one is refused by it, never misread.

use hashbrown::{HashMap, HashSet};

use crate::context::AS_OF_LOOKBACK_MS;
use crate::error::CoreError;
use crate::plan::LastNSpec;
use crate::value::{ExactKey, PyKey, Value};
use crate::varint::{
    for_each_narrow, pack_bits, put_i64, put_u64, unpack_bits, varint_len, zigzag64, Reader,
};

pub const FORMAT_VERSION: u8 = 0x02;
/// The version of a state holding a JSON value (see the module's documentation).
pub const JSON_VALUES_VERSION: u8 = 0x03;
/// The format versions `decode` reads: 1 lacks the digits and packed dictionary forms.
pub const READABLE_VERSIONS: [u8; 3] = [0x01, 0x02, 0x03];
const DICTIONARY: u8 = 0;
const PLAIN: u8 = 1;
const PREFIXED: u8 = 2;
const DIGITS: u8 = 3;
const PACKED: u8 = 4;
const MAX_BYTE_CODES: usize = 256;
/// The distinct values a column's dictionary has room for before it grows.
const VOCABULARY_ROOM: usize = 32;
/// The distinct values a column's dictionary finds by a scan rather than a map.
const SCANNED_VOCABULARY: usize = 8;
/// Digits a u64 always holds (10^19 - 1 < 2^64).
const MAX_DIGITS: usize = 19;

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub ts: i64,
    pub tie: u32,
    pub values: Vec<Value>,
}

/// An entry as the merge orders it: by `(ts, tie)`.
pub(crate) trait Timed {
    fn order(&self) -> (i64, u32);
}

impl Timed for Entry {
    fn order(&self) -> (i64, u32) {
        (self.ts, self.tie)
    }
}

/// The state after folding `new` (in arrival order) into `old`, and how many new entries
/// were already older than the retention plus the `as_of` look-back.
pub fn combine(
    spec: &LastNSpec,
    retention_ms: i64,
    old: Vec<Entry>,
    new: Vec<Entry>,
) -> (Vec<Entry>, usize) {
    combine_by(spec, retention_ms, old, new, |merged, index| {
        first_of_each(merged.iter().map(|e| e.values[index].py_key()))
    })
}

/// [`combine`] over any entries: `dedupe(merged, field)` flags the merged entries to keep
/// under `dedupe_by` (see [`first_of_each`]).
pub(crate) fn combine_by<E: Timed>(
    spec: &LastNSpec,
    retention_ms: i64,
    old: Vec<E>,
    mut new: Vec<E>,
    dedupe: impl Fn(&[E], usize) -> Vec<bool>,
) -> (Vec<E>, usize) {
    if new.is_empty() {
        return (old, 0);
    }
    let ts = |e: &E| e.order().0;
    let newest_new = new.iter().map(ts).max().unwrap_or(i64::MIN);
    let newest = old.first().map_or(newest_new, |e| ts(e).max(newest_new));
    // Expiry is by each event's own time against the newest time seen: the same result
    // whichever batch an old event arrives in. The look-back keeps what an earlier `as_of`
    // needs.
    let cutoff = newest.saturating_sub(retention_ms.saturating_add(AS_OF_LOOKBACK_MS));
    let arrived = new.len();
    new.retain(|e| ts(e) >= cutoff);
    let expired = arrived - new.len();
    // Stable: entries equal in (ts, tie) keep arrival order, as the Python reference does.
    new.sort_by_key(|e| std::cmp::Reverse(e.order()));
    let mut merged = Vec::with_capacity(old.len() + new.len());
    let mut old = old.into_iter().filter(|e| ts(e) >= cutoff).peekable();
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
        let mut flags = dedupe(&merged, index).into_iter();
        merged.retain(|_| flags.next().unwrap_or(false));
    }
    merged.truncate(spec.n);
    (merged, expired)
}

/// Whether each key is the first of its equals (newest first: the entry `dedupe_by` keeps).
pub(crate) fn first_of_each<'k>(keys: impl Iterator<Item = PyKey<'k>>) -> Vec<bool> {
    let mut seen: HashSet<PyKey<'_>> = HashSet::new();
    keys.map(|key| seen.insert(key)).collect()
}

pub fn encode(entries: &[Entry], columns: usize) -> Vec<u8> {
    encode_slots(entries, columns, |column, values| {
        values.extend(entries.iter().map(|e| Flat::of(&e.values[column])));
    })
}

/// The stored bytes of `slots` (newest first) with `columns` kept fields, field `c`'s
/// values (one per slot, in order) appended to a buffer by `column(c, buffer)`.
fn encode_slots<'v, E: Timed>(
    slots: &[E],
    columns: usize,
    mut column: impl FnMut(usize, &mut Vec<Flat<'v>>),
) -> Vec<u8> {
    let n = slots.len();
    let mut values = Vec::with_capacity(n * columns);
    (0..columns).for_each(|c| column(c, &mut values));
    // A single entry's columns are plain (see `encode_refs`): its exact size is known, and
    // most touched states of a batch are a user's first entry, whose buffer was otherwise
    // reallocated as its values were written.
    let capacity = match n {
        1 => 25 + values.iter().map(|v| 1 + encoded_len(v)).sum::<usize>(),
        _ => 16 + n * 8,
    };
    let mut out = Vec::with_capacity(capacity);
    let json = values.iter().any(|v| matches!(v, Flat::Json(_)));
    out.push(if json {
        JSON_VALUES_VERSION
    } else {
        FORMAT_VERSION
    });
    put_u64(&mut out, columns as u64);
    put_u64(&mut out, n as u64);
    if let Some(first) = slots.first() {
        put_i64(&mut out, first.order().0);
        for pair in slots.windows(2) {
            // Newest first, so every gap is >= 0: one byte per gap under 128 ms.
            put_u64(
                &mut out,
                pair[0].order().0.wrapping_sub(pair[1].order().0) as u64,
            );
        }
        for slot in slots {
            out.extend_from_slice(&slot.order().1.to_le_bytes());
        }
    }
    for c in 0..columns {
        encode_refs(&mut out, &values[c * n..(c + 1) * n]);
    }
    out
}

/// One column in the smallest of its forms (the earliest on a tie: a deterministic
/// choice, so the bytes stay canonical). Each form's size is worked out first and only the
/// chosen one is written.
pub(crate) fn encode_refs(out: &mut Vec<u8>, values: &[Flat<'_>]) {
    if values.len() <= 1 {
        // Plain is then the smallest form or tied with the prefixed one (a single text is
        // its own prefix), and earliest: no other form is worked out. Most touched states
        // of a batch are users' first entries, whose columns took most of LastN's encoding.
        out.push(PLAIN);
        values.iter().for_each(|v| v.encode(out));
        return;
    }
    // One shared prefix for the two forms that use it; one dictionary for the other two,
    // built last, as far as it could still beat the others.
    let texts = strings(values);
    let shared = texts.as_deref().and_then(shared_prefix);
    let digits = texts
        .as_deref()
        .zip(shared)
        .and_then(|(texts, shared)| digits_width(texts, shared));
    let plain = 1 + values.iter().map(|v| encoded_len(v)).sum::<usize>();
    let prefixed = texts.as_deref().zip(shared).map(prefixed_len);
    let digits_len = digits.map(|(shared, width, len)| len + header_len(shared, width));
    let others = [prefixed, digits_len].into_iter().flatten();
    let vocab = vocabulary(values, others.fold(plain, usize::min));
    let sizes = [
        (PLAIN, Some(plain)),
        (DICTIONARY, vocab.as_ref().map(dictionary_len)),
        (PREFIXED, prefixed),
        (DIGITS, digits_len),
        (PACKED, vocab.as_ref().map(packed_len)),
    ];
    let mut best = (PLAIN, plain);
    for (form, size) in sizes {
        if let Some(size) = size.filter(|size| *size < best.1) {
            best = (form, size);
        }
    }
    out.reserve(best.1);
    // The forms whose sizes were worked out are the ones that apply.
    match (best.0, vocab, texts, shared, digits) {
        (DICTIONARY, Some(vocab), ..) => dictionary_form(out, &vocab),
        (PACKED, Some(vocab), ..) => packed_form(out, &vocab),
        (PREFIXED, _, Some(texts), Some(shared), _) => prefixed_form(out, &texts, shared),
        (DIGITS, _, Some(texts), _, Some((shared, width, _))) => {
            digits_form(out, &texts, shared, width)
        }
        _ => {
            out.push(PLAIN);
            values.iter().for_each(|v| v.encode(out));
        }
    }
}

/// The bytes `Value::encode` writes for `value`.
fn encoded_len(value: &Flat<'_>) -> usize {
    match value {
        Flat::Null | Flat::Bool(_) => 1,
        Flat::Int(i) => 1 + varint_len(zigzag64(*i)),
        Flat::Float(_) => 9,
        Flat::Str(s) | Flat::Json(s) => 1 + varint_len(s.len() as u64) + s.len(),
    }
}

/// The distinct values in order of first appearance and each entry's code; `None` when
/// every value is distinct (a dictionary is then never smaller than plain values), or as
/// soon as the distinct values alone take more than `beat` bytes: both dictionary forms
/// are larger than that, so neither could be chosen over a form of `beat` bytes.
fn vocabulary<'v>(values: &[Flat<'v>], beat: usize) -> Option<Vocabulary<'v>> {
    let room = values.len().min(VOCABULARY_ROOM);
    // A few distinct values (actions, surfaces) are found by a scan of those seen so far;
    // a map is built only once there are more than `SCANNED_VOCABULARY`. Hashing every
    // value, and a map allocated per column, cost more than such a scan.
    let mut vocab: Option<HashMap<ExactKey<'v>, usize>> = None;
    let mut order: Vec<Flat<'v>> = Vec::with_capacity(room);
    let mut codes = Vec::with_capacity(values.len());
    // The form byte and at least a byte of size, then the distinct values.
    let mut least = 2;
    for v in values {
        let key = v.exact_key();
        let seen = match &vocab {
            None => order.iter().position(|o| o.exact_key() == key),
            Some(map) => map.get(&key).copied(),
        };
        let code = match seen {
            Some(code) => code,
            None => {
                order.push(*v);
                least += encoded_len(v);
                if least > beat {
                    return None;
                }
                let code = order.len() - 1;
                match &mut vocab {
                    Some(map) => {
                        map.insert(key, code);
                    }
                    None if order.len() > SCANNED_VOCABULARY => vocab = Some(map_of(&order)),
                    None => {}
                }
                code
            }
        };
        codes.push(code);
    }
    if order.len() == values.len() && values.len() > 1 {
        return None;
    }
    Some((order, codes))
}

/// The codes of `order`'s values, with room for a column of a few dozen distinct values.
fn map_of<'v>(order: &[Flat<'v>]) -> HashMap<ExactKey<'v>, usize> {
    // Grown from empty, the map's rehashes were a fifth of the column's encoding.
    let mut map = HashMap::with_capacity(VOCABULARY_ROOM.max(2 * order.len()));
    map.extend(
        order
            .iter()
            .enumerate()
            .map(|(code, v)| (v.exact_key(), code)),
    );
    map
}

/// A column's distinct values in order of first appearance, and each entry's code.
type Vocabulary<'v> = (Vec<Flat<'v>>, Vec<usize>);

/// The dictionary forms' shared head: the form byte, the size and the values.
fn vocabulary_len(order: &[Flat<'_>]) -> usize {
    1 + varint_len(order.len() as u64) + order.iter().map(|v| encoded_len(v)).sum::<usize>()
}

fn dictionary_len((order, codes): &Vocabulary<'_>) -> usize {
    let codes = if order.len() <= MAX_BYTE_CODES {
        codes.len()
    } else {
        codes.iter().map(|c| varint_len(*c as u64)).sum()
    };
    vocabulary_len(order) + codes
}

/// Distinct values once, then a code per entry (one byte while there are at most 256).
fn dictionary_form(out: &mut Vec<u8>, (order, codes): &Vocabulary<'_>) {
    out.push(DICTIONARY);
    put_u64(out, order.len() as u64);
    order.iter().for_each(|v| v.encode(out));
    for &code in codes {
        if order.len() <= MAX_BYTE_CODES {
            out.push(code as u8);
        } else {
            put_u64(out, code as u64);
        }
    }
}

/// Bits a code of a dictionary of `size` values takes (0 for a single value).
fn code_bits(size: usize) -> u32 {
    usize::BITS - size.saturating_sub(1).leading_zeros()
}

fn packed_len((order, codes): &Vocabulary<'_>) -> usize {
    vocabulary_len(order) + (codes.len() * code_bits(order.len()) as usize).div_ceil(8)
}

/// Distinct values once, then the codes packed at the fewest bits that hold them: five
/// actions take 3 bits an entry rather than a byte.
fn packed_form(out: &mut Vec<u8>, (order, codes): &Vocabulary<'_>) {
    let bits = code_bits(order.len());
    out.push(PACKED);
    put_u64(out, order.len() as u64);
    order.iter().for_each(|v| v.encode(out));
    let start = out.len();
    out.resize(start + (codes.len() * bits as usize).div_ceil(8), 0);
    pack_bits(&mut out[start..], codes.iter().map(|&c| c as u128), bits);
}

/// Codes packed by `packed_form`, checked against the dictionary's size.
fn unpack_codes(r: &mut Reader<'_>, count: usize, size: usize) -> Result<Vec<u32>, CoreError> {
    let bits = code_bits(size);
    let packed = r.bytes((count * bits as usize).div_ceil(8))?;
    let mut codes = Vec::with_capacity(count);
    let outside =
        |code: u128| CoreError::Codec(format!("code {code} outside a dictionary of {size}"));
    if bits <= 56 {
        // Read in place (no vector of 128-bit values); the first code outside is the error.
        let mut bad = None;
        for_each_narrow(packed, count, bits, |code| {
            if code >= size as u64 || u32::try_from(code).is_err() {
                bad.get_or_insert(code);
            }
            codes.push(code as u32);
        });
        return match bad {
            Some(code) => Err(outside(u128::from(code))),
            None => Ok(codes),
        };
    }
    for code in unpack_bits(packed, count, bits) {
        match u32::try_from(code) {
            Ok(code) if (code as usize) < size => codes.push(code),
            _ => return Err(outside(code)),
        }
    }
    Ok(codes)
}

/// The prefixed and digits forms' head: the form byte and the shared prefix.
fn header_len(shared: usize, width: usize) -> usize {
    1 + varint_len(shared as u64)
        + shared
        + if width > 0 {
            varint_len(width as u64)
        } else {
            0
        }
}

/// Strings that are a shared prefix then a fixed number of digits (`i00012345`): the
/// prefix and width once, then each entry's number as a varint (3-4 bytes for 8 digits).
/// `Some((shared, width, bytes of the numbers))` when every text has that shape.
fn digits_width(texts: &[&str], shared: usize) -> Option<(usize, usize, usize)> {
    let width = texts[0].len() - shared;
    if !(1..=MAX_DIGITS).contains(&width) {
        return None;
    }
    let mut len = 0;
    for text in texts {
        len += varint_len(digits_number(text, shared, width)?);
    }
    Some((shared, width, len))
}

/// The number `text`'s digits after `shared` spell, if they are `width` ASCII digits.
fn digits_number(text: &str, shared: usize, width: usize) -> Option<u64> {
    let digits = &text.as_bytes()[shared..];
    if digits.len() != width || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
    )
}

/// Writes the digits form (`digits_width` checked that it applies).
fn digits_form(out: &mut Vec<u8>, texts: &[&str], shared: usize, width: usize) {
    out.push(DIGITS);
    put_u64(out, shared as u64);
    out.extend_from_slice(&texts[0].as_bytes()[..shared]);
    put_u64(out, width as u64);
    for text in texts {
        put_u64(out, digits_number(text, shared, width).unwrap_or(0));
    }
}

/// The digits form's text of `number`, checked to fit `width` (else it would misread).
fn digits_text(prefix: &str, width: usize, number: u64) -> Result<String, CoreError> {
    let mut text = String::with_capacity(prefix.len() + width);
    push_digits_text(&mut text, prefix, width, number)?;
    Ok(text)
}

/// [`digits_text`] appended to `text`.
fn push_digits_text(
    text: &mut String,
    prefix: &str,
    width: usize,
    number: u64,
) -> Result<(), CoreError> {
    if number >= 10u64.pow(width as u32) {
        return Err(CoreError::Codec(format!(
            "{number} does not fit {width} digits"
        )));
    }
    text.push_str(prefix);
    let mut digits = [b'0'; MAX_DIGITS];
    let mut rest = number;
    for digit in digits[..width].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    text.extend(digits[..width].iter().map(|d| char::from(*d)));
    Ok(())
}

/// Read the digits form's prefix and width.
fn digits_header<'r>(r: &mut Reader<'r>) -> Result<(&'r str, usize), CoreError> {
    let shared = r.len(1)?;
    let prefix = std::str::from_utf8(r.bytes(shared)?)
        .map_err(|e| CoreError::Codec(format!("string is not UTF-8: {e}")))?;
    // A count of digits, not of bytes that follow: checked against the u64's digits.
    let width = r.u64()?;
    if !(1..=MAX_DIGITS as u64).contains(&width) {
        return Err(CoreError::Codec(format!("{width} digits do not fit a u64")));
    }
    Ok((prefix, width as usize))
}

fn strings<'v>(values: &[Flat<'v>]) -> Option<Vec<&'v str>> {
    values
        .iter()
        .map(|v| match v {
            Flat::Str(s) => Some(*s),
            _ => None,
        })
        .collect()
}

/// Length in bytes of the prefix all `texts` share (on a character boundary).
fn shared_prefix(texts: &[&str]) -> Option<usize> {
    let first = texts.first()?;
    Some(texts[1..].iter().fold(first.len(), |shared, text| {
        common_prefix(&first[..shared], text)
    }))
}

fn prefixed_len((texts, shared): (&[&str], usize)) -> usize {
    let suffixes: usize = texts
        .iter()
        .map(|t| varint_len((t.len() - shared) as u64) + t.len() - shared)
        .sum();
    header_len(shared, 0) + suffixes
}

/// Strings sharing a prefix (`i00012345`, `category-7`): the prefix once, then suffixes.
fn prefixed_form(out: &mut Vec<u8>, texts: &[&str], shared: usize) {
    out.push(PREFIXED);
    put_u64(out, shared as u64);
    out.extend_from_slice(&texts[0].as_bytes()[..shared]);
    for text in texts {
        put_u64(out, (text.len() - shared) as u64);
        out.extend_from_slice(&text.as_bytes()[shared..]);
    }
}

/// Length in bytes of the common prefix, ending on a character boundary: the first
/// differing byte, moved back to the start of the character it falls in (equal bytes up
/// to a boundary are equal characters).
fn common_prefix(a: &str, b: &str) -> usize {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let mut at = x.iter().zip(y).take_while(|(p, q)| p == q).count();
    while !a.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Version, field count and entry count, then the times: what `decode` and the view share.
fn decode_header(r: &mut Reader<'_>, columns: usize) -> Result<(usize, Vec<i64>), CoreError> {
    r.readable_version("LastN", &READABLE_VERSIONS)?;
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
            ts = ts.wrapping_sub(r.u64_in_loop()? as i64);
            times.push(ts);
        }
    }
    Ok((count, times))
}

pub fn decode(data: &[u8], columns: usize) -> Result<Vec<Entry>, CoreError> {
    let mut r = Reader::new(data);
    let (count, times) = decode_header(&mut r, columns)?;
    let ties = r.bytes(4 * count)?;
    let columns = (0..columns)
        .map(|_| decode_column(&mut r, count))
        .collect::<Result<Vec<_>, _>>()?;
    r.expect_done("LastN state")?;
    // Column by column as stored, then entry by entry: each value moves, none is copied.
    let mut columns: Vec<_> = columns.into_iter().map(Vec::into_iter).collect();
    let entries = times
        .into_iter()
        .zip(ties.chunks_exact(4))
        .map(|(ts, tie)| Entry {
            ts,
            tie: u32::from_le_bytes([tie[0], tie[1], tie[2], tie[3]]),
            values: columns.iter_mut().filter_map(Iterator::next).collect(),
        })
        .collect();
    Ok(entries)
}

/// A dictionary column's next code, checked against the dictionary's `size`: a byte each
/// while the dictionary has at most `MAX_BYTE_CODES` values, a varint past that.
#[inline]
fn read_code(r: &mut Reader<'_>, size: usize) -> Result<u32, CoreError> {
    let code = if size <= MAX_BYTE_CODES {
        u64::from(r.u8()?)
    } else {
        r.u64()?
    };
    if code >= size as u64 {
        return Err(CoreError::Codec(format!(
            "code {code} outside a dictionary of {size}"
        )));
    }
    Ok(code as u32)
}

/// One column of `count` entries, in whichever form it was written.
fn decode_column(r: &mut Reader<'_>, count: usize) -> Result<Vec<Value>, CoreError> {
    let mut values = Vec::with_capacity(count);
    match r.u8()? {
        DICTIONARY => {
            let size = r.len(1)?;
            let vocab: Vec<Value> = (0..size)
                .map(|_| Value::decode(r))
                .collect::<Result<_, _>>()?;
            for _ in 0..count {
                values.push(vocab[read_code(r, size)? as usize].clone());
            }
        }
        PLAIN => {
            for _ in 0..count {
                values.push(Value::decode(r)?);
            }
        }
        PREFIXED => {
            let shared = r.len(1)?;
            let prefix = r.bytes(shared)?;
            for _ in 0..count {
                let n = r.len(1)?;
                let mut text = Vec::with_capacity(shared + n);
                text.extend_from_slice(prefix);
                text.extend_from_slice(r.bytes(n)?);
                let text = String::from_utf8(text)
                    .map_err(|e| CoreError::Codec(format!("string is not UTF-8: {e}")))?;
                values.push(Value::Str(text));
            }
        }
        DIGITS => {
            let (prefix, width) = digits_header(r)?;
            for _ in 0..count {
                values.push(Value::Str(digits_text(prefix, width, r.u64()?)?));
            }
        }
        PACKED => {
            let size = r.len(1)?;
            let vocab: Vec<Value> = (0..size)
                .map(|_| Value::decode(r))
                .collect::<Result<_, _>>()?;
            let codes = unpack_codes(r, count, size)?;
            values.extend(codes.into_iter().map(|code| vocab[code as usize].clone()));
        }
        mode => return Err(CoreError::Codec(format!("unknown column mode {mode}"))),
    }
    Ok(values)
}

/// `values` in the smallest of the column forms above: also the DecayedScores key dictionary
/// (category ids `c001`, `c002` … as numbers, like LastN's item ids).
pub(crate) fn encode_values(out: &mut Vec<u8>, values: &[Value]) {
    encode_refs(out, &values.iter().map(Flat::of).collect::<Vec<_>>());
}

/// Reads `count` values written by `encode_values`.
pub(crate) fn decode_values(r: &mut Reader<'_>, count: usize) -> Result<Vec<Value>, CoreError> {
    decode_column(r, count)
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

mod stored;
pub mod view;

pub(crate) use stored::{apply_stored, Flat, NewRows};

#[cfg(test)]
mod tests;
