//! `DecayedScores`: per-key decayed scores in exact fixed-point sums per time bucket, read
//! as a top-k profile.
//!
//! Mirrors `ScoresRuntime` in `usersignals.aggregations.decayed` (the reference model): the
//! same buckets, terms, retention, `as_of` rules, scores and order; only the stored format
//! differs. Sums are `i128` (the reference's are unbounded Python integers: a term is below
//! 1000 · 2^36, so 2^80 events would be needed to overflow).
//!
//! Stored format (version byte first):
//!
//! ```text
//! 0x01 | zigzag newest | varint key count | keys in canonical order, as a LastN column
//!        (the smallest of its forms: ids such as `c042` as numbers)
//!      | flags (bit 0: some sum is negative, so sums are zigzag) | varint bucket count
//!      | per bucket, ascending: zigzag bucket (first) or varint gap | varint newest − start
//!        | varint (cell count << 2 | packed << 1 | bitmap) | the keys: a bitmap over the key
//!          dictionary, or varint gaps between key indices (the smaller, list on a tie)
//!        | the sums in key index order (zigzag if flagged): varints, or (packed) the bit
//!          width of the largest and every sum in that many bits (the smaller; `run_form`)
//! ```
//!
//! The key dictionary is shared by every bucket (a category appears once, not once a day),
//! and a bucket with most keys spends a bit per key on which it holds. The form is a
//! function of the state, so the bytes are canonical whatever the batches.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};

use crate::context::{Refusal, Times};
use crate::decay::{get_bucket, get_run_form, put_bucket, run_form, unzigzag, zigzag};
use crate::decay::{scale_down, DecayBuckets, DecayParams, DecayedRow, DecayedState, Tops};
use crate::error::CoreError;
use crate::last_n;
use crate::value::Value;
use crate::varint::{put_i64, put_u64, Reader};

pub const FORMAT_VERSION: u8 = 0x01;
/// Fixed-point fraction bits of score terms (`_SCORE_BITS` in Python).
const SCORE_BITS: i32 = 20;
const SIGNED_SUMS: u8 = 1;

#[derive(Debug, Clone, PartialEq)]
pub struct DecayedSpec {
    pub key: String,
    pub decay: DecayParams,
    pub top_k: usize,
}

/// A key under Python's equality (`1 == 1.0 == True`), totally ordered for the codec.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyClass {
    Num(i64),
    /// A non-integral (or out-of-i64) float, by its total-order bits.
    Float(i64),
    Str(String),
}

impl KeyClass {
    /// `None` for what the reference skips (a missing key) and for NaN, which no Python
    /// dict lookup ever finds again.
    pub fn of(value: &Value) -> Option<KeyClass> {
        ClassRef::of(value).map(|class| match class {
            ClassRef::Num(n) => KeyClass::Num(n),
            ClassRef::Float(bits) => KeyClass::Float(bits),
            ClassRef::Str(s) => KeyClass::Str(s.to_owned()),
        })
    }
}

/// A [`KeyClass`] borrowed from its value: the same variants in the same order, so it orders
/// as `KeyClass` does, without copying a string (a read checks every key's order).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ClassRef<'a> {
    Num(i64),
    Float(i64),
    Str(&'a str),
}

impl<'a> ClassRef<'a> {
    fn of(value: &'a Value) -> Option<ClassRef<'a>> {
        Some(match value {
            Value::Null => return None,
            Value::Bool(b) => ClassRef::Num(i64::from(*b)),
            Value::Int(i) => ClassRef::Num(*i),
            Value::Float(f) if f.is_nan() => return None,
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.223_372_036_854_776e18 => {
                ClassRef::Num(*f as i64)
            }
            Value::Float(f) => {
                let bits = f.to_bits() as i64;
                ClassRef::Float(bits ^ ((((bits >> 63) as u64) >> 1) as i64))
            }
            Value::Str(s) => ClassRef::Str(s),
        })
    }
}

/// Which of two Python-equal keys names the class: ints before floats before bools, so the
/// choice does not depend on the order events came in (the reference keeps the first seen).
fn exact_rank(value: &Value) -> u8 {
    match value {
        Value::Int(_) => 0,
        Value::Float(_) => 1,
        _ => 2,
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoresState {
    pub newest: i64,
    /// Each key class's value as answers show it.
    pub keys: BTreeMap<KeyClass, Value>,
    /// Bucket → key → fixed-point sum.
    pub cells: BTreeMap<i64, BTreeMap<KeyClass, i128>>,
    pub tops: Tops,
}

impl ScoresState {
    /// Adds `value` to the cell `(key, bucket)`, as the reference's `cells[cell] += value`.
    pub fn add(&mut self, key: &Value, bucket: i64, value: i128) {
        let Some(class) = KeyClass::of(key) else {
            return;
        };
        match self.keys.get_mut(&class) {
            Some(shown) if exact_rank(key) < exact_rank(shown) => *shown = key.clone(),
            Some(_) => {}
            None => {
                self.keys.insert(class.clone(), key.clone());
            }
        }
        *self
            .cells
            .entry(bucket)
            .or_default()
            .entry(class)
            .or_insert(0) += value;
    }
}

impl DecayedState for ScoresState {
    fn newest_mut(&mut self) -> &mut i64 {
        &mut self.newest
    }

    fn tops_mut(&mut self) -> &mut Tops {
        &mut self.tops
    }

    fn drop_before(&mut self, first: i64) {
        self.cells = self.cells.split_off(&first);
        self.tops = self.tops.split_off(&first);
        let used: HashSet<&KeyClass> = self.cells.values().flat_map(|c| c.keys()).collect();
        self.keys.retain(|class, _| used.contains(class));
    }
}

impl DecayedRow for ScoresRow<'_> {
    fn ts(&self) -> i64 {
        self.ts
    }

    fn action(&self) -> &Value {
        self.action
    }
}

/// A read's answer: `(key, score)`, best first.
pub type Profile = Vec<(Value, f64)>;

/// One event as `apply` takes it: its time, its key value and its action.
pub struct ScoresRow<'a> {
    pub ts: i64,
    pub key: &'a Value,
    pub action: &'a Value,
}

impl DecayedSpec {
    pub fn buckets(&self, retention_ms: i64) -> DecayBuckets {
        self.decay.buckets(retention_ms)
    }

    /// Fold one user's rows (sorted by time) into `state`: the new state and how many rows
    /// were older than the buckets it keeps.
    pub fn apply(
        &self,
        retention_ms: i64,
        state: Option<ScoresState>,
        rows: &[ScoresRow<'_>],
    ) -> (ScoresState, usize) {
        let decay = self.buckets(retention_ms);
        decay.fold(&self.decay, state, rows, |state, row, bucket, weight| {
            // The reference skips a missing key (and, in the fold, a zero weight).
            if KeyClass::of(row.key).is_none() {
                return false;
            }
            let term = decay.term(weight, row.ts, bucket, SCORE_BITS);
            state.add(row.key, bucket, term);
            true
        })
    }

    /// Every key's score at the view time, summed over its buckets in ascending order (the
    /// reference's order after a decode), so each float is bit-equal to the reference's.
    pub fn scores<'s>(
        &self,
        retention_ms: i64,
        state: &'s ScoresState,
        view: i64,
    ) -> Result<BTreeMap<&'s KeyClass, f64>, Refusal> {
        let decay = self.buckets(retention_ms);
        let (first, last) = decay.counted(state.newest, &state.tops, view)?;
        let mut scores: BTreeMap<&KeyClass, f64> = BTreeMap::new();
        if first > last {
            return Ok(scores);
        }
        for (bucket, cells) in state.cells.range(first..=last) {
            let factor = scale_down(decay.decay_to(*bucket, view), SCORE_BITS);
            for (class, value) in cells {
                let score = scores.entry(class).or_insert(0.0);
                *score += *value as f64 * factor;
            }
        }
        Ok(scores)
    }

    /// The top-k profile `[(key, score)]` and the newest time it includes, or the refusal.
    pub fn read(
        &self,
        retention_ms: i64,
        state: &ScoresState,
        times: &Times,
        exclude: &HashSet<String>,
        limit: Option<usize>,
    ) -> Result<(Profile, Option<i64>), Refusal> {
        let view = times.view_time(state.newest);
        let scores = self.scores(retention_ms, state, view)?;
        let scored = scores
            .into_iter()
            .map(|(class, score)| (score, &state.keys[class]));
        let top = self.profile(scored, exclude, limit);
        Ok((top, Some(state.newest.min(times.end(state.newest)))))
    }

    /// The top `limit` (or `top_k`) of the scored keys not in `exclude`, best first; a
    /// key's class is a string exactly when its value is.
    fn profile<'k>(
        &self,
        scored: impl Iterator<Item = (f64, &'k Value)>,
        exclude: &HashSet<String>,
        limit: Option<usize>,
    ) -> Profile {
        let mut candidates: Vec<(f64, &Value)> = scored
            .filter(|(_, key)| !matches!(key, Value::Str(s) if exclude.contains(s)))
            .collect();
        top_k(
            &mut candidates,
            limit.filter(|l| *l > 0).unwrap_or(self.top_k),
        );
        candidates
            .into_iter()
            .map(|(s, k)| (k.clone(), s))
            .collect()
    }
}

impl DecayedSpec {
    /// `read` straight from the stored bytes, without building the state's maps (the
    /// serving path): each key's score is summed by key index, over the same buckets in the
    /// same ascending order, so every float and the order are `read`'s. A state that does
    /// not decode is an error, as for `decode`.
    pub fn read_stored(
        &self,
        retention_ms: i64,
        data: &[u8],
        times: &Times,
        exclude: &HashSet<String>,
        limit: Option<usize>,
    ) -> Result<Result<(Profile, Option<i64>), Refusal>, CoreError> {
        let decay = self.buckets(retention_ms);
        let parsed = parse(data, decay.bucket_ms, last_n::view::column_values)?;
        let view = times.view_time(parsed.newest);
        let (first, last) = match decay.counted(parsed.newest, &parsed.tops, view) {
            Ok(counted) => counted,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let mut scores: Vec<Option<f64>> = vec![None; parsed.keys.len()];
        for (bucket, cells) in parsed
            .cells
            .iter()
            .filter(|(b, _)| first <= *b && *b <= last)
        {
            let factor = scale_down(decay.decay_to(*bucket, view), SCORE_BITS);
            for (index, value) in cells {
                *scores[*index].get_or_insert(0.0) += to_f64(*value) * factor;
            }
        }
        let scored = scores
            .iter()
            .zip(&parsed.keys)
            .filter_map(|(score, key)| Some(((*score)?, key)));
        let top = self.profile(scored, exclude, limit);
        let newest = parsed.newest;
        Ok(Ok((top, Some(newest.min(times.end(newest))))))
    }
}

/// Sorts `candidates` as `heapq.nlargest` orders `(score, key)` pairs — score descending,
/// then key descending — and keeps the first `k`. Where keys tied on a score do not compare
/// in Python (a string and a number), the reference falls back to ordering every key by
/// its `repr`; so does this.
fn top_k(candidates: &mut Vec<(f64, &Value)>, k: usize) {
    let mut incomparable = false;
    candidates.sort_by(|a, b| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(Ordering::Equal)
            .then_with(|| {
                b.1.py_cmp(a.1).unwrap_or_else(|| {
                    incomparable = true;
                    Ordering::Equal
                })
            })
    });
    if incomparable {
        candidates.sort_by(|a, b| {
            b.0.partial_cmp(&a.0)
                .unwrap_or(Ordering::Equal)
                .then_with(|| py_repr(b.1).cmp(&py_repr(a.1)))
        });
    }
    candidates.truncate(k);
}

/// Python's `repr` of a key, for the reference's fallback order. Exact for ints, bools and
/// strings of printable characters (every key the `key` field kind admits in practice).
fn py_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("{f:?}"),
        Value::Str(s) => {
            let quote = if s.contains('\'') && !s.contains('"') {
                '"'
            } else {
                '\''
            };
            let mut out = String::with_capacity(s.len() + 2);
            out.push(quote);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == quote => {
                        out.push('\\');
                        out.push(c);
                    }
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                        out.push_str(&format!("\\x{:02x}", c as u32));
                    }
                    c => out.push(c),
                }
            }
            out.push(quote);
            out
        }
    }
}

/// The stored bytes of `state`; tops are stored as offsets from their bucket's start
/// (`bucket_ms` wide, the spec's).
pub fn encode(state: &ScoresState, bucket_ms: i64) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    put_i64(&mut out, state.newest);
    put_u64(&mut out, state.keys.len() as u64);
    let values: Vec<Value> = state.keys.values().cloned().collect();
    last_n::encode_values(&mut out, &values);
    let index: BTreeMap<&KeyClass, usize> =
        state.keys.keys().enumerate().map(|(i, c)| (c, i)).collect();
    let signed = state
        .cells
        .values()
        .flat_map(|c| c.values())
        .any(|v| *v < 0);
    out.push(if signed { SIGNED_SUMS } else { 0 });
    put_u64(&mut out, state.cells.len() as u64);
    let size = state.keys.len();
    let mut previous = None;
    for (bucket, cells) in &state.cells {
        let top = state.tops.get(bucket).copied().unwrap_or(0);
        put_bucket(&mut out, previous, *bucket, top - bucket * bucket_ms);
        previous = Some(*bucket);
        let indices: Vec<usize> = cells.keys().map(|class| index[class]).collect();
        let mut gaps = Vec::new();
        let mut at = 0;
        for i in &indices {
            put_u64(&mut gaps, (i - at) as u64);
            at = i + 1;
        }
        let bitmap_len = size.div_ceil(8);
        let bitmap = bitmap_len < gaps.len();
        let sums: Vec<u128> = cells
            .values()
            .map(|v| if signed { zigzag(*v) } else { *v as u128 })
            .collect();
        let (packed, sums) = run_form(&sums);
        let flags = u64::from(packed) << 1 | u64::from(bitmap);
        put_u64(&mut out, ((indices.len() as u64) << 2) | flags);
        if bitmap {
            let mut bits = vec![0u8; bitmap_len];
            indices.iter().for_each(|i| bits[i / 8] |= 1 << (i % 8));
            out.extend_from_slice(&bits);
        } else {
            out.extend_from_slice(&gaps);
        }
        out.extend_from_slice(&sums);
    }
    out
}

/// `apply` over stored bytes: decode `old`, fold in `rows`, encode (the batch executor's arm).
pub fn apply_stored(
    spec: &DecayedSpec,
    retention_ms: i64,
    old: Option<&[u8]>,
    rows: &[ScoresRow<'_>],
) -> Result<(Vec<u8>, usize), CoreError> {
    let bucket_ms = spec.buckets(retention_ms).bucket_ms;
    let old = old.map(|bytes| decode(bytes, bucket_ms)).transpose()?;
    let (state, expired) = spec.apply(retention_ms, old, rows);
    Ok((encode(&state, bucket_ms), expired))
}

/// `v as f64`, through `i64` when it fits: the same correctly rounded conversion, without
/// the 128-bit one's software routine (most sums fit). `black_box` keeps LLVM from seeing
/// that both arms are the same conversion and merging them back into the slow one.
fn to_f64(v: i128) -> f64 {
    match i64::try_from(v) {
        Ok(small) => small as f64,
        Err(_) => std::hint::black_box(v) as f64,
    }
}

pub fn decode(data: &[u8], bucket_ms: i64) -> Result<ScoresState, CoreError> {
    let parsed = parse(data, bucket_ms, last_n::decode_values)?;
    // `parse` checked that every key has a class.
    let classes: Vec<KeyClass> = parsed.keys.iter().filter_map(KeyClass::of).collect();
    let mut state = ScoresState {
        newest: parsed.newest,
        tops: parsed.tops,
        ..ScoresState::default()
    };
    for (class, value) in classes.iter().zip(parsed.keys) {
        state.keys.insert(class.clone(), value);
    }
    for (bucket, cells) in parsed.cells {
        let row = state.cells.entry(bucket).or_default();
        for (index, sum) in cells {
            row.insert(classes[index].clone(), sum);
        }
    }
    Ok(state)
}

/// A stored state as laid out: its keys in index (canonical) order, and each bucket's cells
/// by key index. `decode` builds the maps `apply` needs from it; `read_stored` reads it as is.
struct Parsed {
    newest: i64,
    keys: Vec<Value>,
    /// Bucket (ascending) → `(key index, fixed-point sum)`.
    cells: Vec<(i64, Vec<(usize, i128)>)>,
    tops: Tops,
}

/// `keys` reads the key dictionary (`last_n::decode_values`, or the view's borrowed form).
fn parse(
    data: &[u8],
    bucket_ms: i64,
    keys: impl FnOnce(&mut Reader<'_>, usize) -> Result<Vec<Value>, CoreError>,
) -> Result<Parsed, CoreError> {
    let mut r = Reader::new(data);
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(CoreError::Codec(format!(
            "DecayedScores format version {version}, expected {FORMAT_VERSION}"
        )));
    }
    let newest = r.i64()?;
    let key_count = r.len(1)?;
    let keys = keys(&mut r, key_count)?;
    let mut previous_class = None;
    for value in &keys {
        let class = ClassRef::of(value)
            .filter(|c| previous_class.as_ref().is_none_or(|last| last < c))
            .ok_or_else(|| CoreError::Codec("keys out of order or not keys".into()))?;
        previous_class = Some(class);
    }
    let signed = match r.u8()? {
        0 => false,
        SIGNED_SUMS => true,
        flags => return Err(CoreError::Codec(format!("unknown flags {flags}"))),
    };
    let bucket_count = r.len(3)?;
    let mut parsed = Parsed {
        newest,
        keys,
        cells: Vec::with_capacity(bucket_count),
        tops: Tops::new(),
    };
    let mut previous = None;
    for _ in 0..bucket_count {
        let (bucket, top) = get_bucket(&mut r, previous, bucket_ms)?;
        previous = Some(bucket);
        parsed.tops.insert(bucket, top);
        let header = r.u64()?;
        let count = usize::try_from(header >> 2).unwrap_or(usize::MAX);
        let indices = decode_key_indices(&mut r, count, header & 1 == 1, key_count)?;
        let sums = get_run_form(&mut r, count, header & 2 == 2)?;
        let mut cells = Vec::with_capacity(count);
        for (i, sum) in indices.into_iter().zip(sums) {
            let value = if signed {
                unzigzag(sum)
            } else {
                i128::try_from(sum).map_err(|_| CoreError::Codec("sum out of range".into()))?
            };
            cells.push((i, value));
        }
        parsed.cells.push((bucket, cells));
    }
    if !r.is_done() {
        return Err(CoreError::Codec(
            "trailing bytes after DecayedScores state".into(),
        ));
    }
    Ok(parsed)
}

/// A bucket's `count` key indices: a bitmap over the `key_count` keys, or varint gaps.
fn decode_key_indices(
    r: &mut Reader<'_>,
    count: usize,
    bitmap: bool,
    key_count: usize,
) -> Result<Vec<usize>, CoreError> {
    if count > key_count {
        return Err(CoreError::Codec("more cells than keys".into()));
    }
    let indices = if bitmap {
        let bits = r.bytes(key_count.div_ceil(8))?;
        // The set bits, a byte at a time; bits past the key count (padding) do not count.
        let mut indices = Vec::with_capacity(count);
        for (at, byte) in bits.iter().enumerate() {
            let mut byte = *byte;
            while byte != 0 {
                let i = at * 8 + byte.trailing_zeros() as usize;
                if i < key_count {
                    indices.push(i);
                }
                byte &= byte - 1;
            }
        }
        indices
    } else {
        let mut at = 0usize;
        let mut indices = Vec::with_capacity(count);
        for _ in 0..count {
            let i = usize::try_from(r.u64()?)
                .ok()
                .and_then(|gap| at.checked_add(gap))
                .filter(|i| *i < key_count)
                .ok_or_else(|| CoreError::Codec("key index out of range".into()))?;
            indices.push(i);
            at = i + 1;
        }
        indices
    };
    if indices.len() != count {
        return Err(CoreError::Codec(
            "bitmap disagrees with the cell count".into(),
        ));
    }
    Ok(indices)
}

#[cfg(test)]
#[path = "decayed_tests.rs"]
mod tests;
