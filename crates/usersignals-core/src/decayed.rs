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
//!          width of the largest and every sum in that many bits (the smaller; `RunForm`)
//! ```
//!
//! The key dictionary is shared by every bucket (a category appears once, not once a day),
//! and a bucket with most keys spends a bit per key on which it holds. The form is a
//! function of the state, so the bytes are canonical whatever the batches.

use std::cmp::Ordering;

use crate::context::{NameSet, Refusal, Times};
use crate::decay::{get_bucket, get_run_form, put_bucket, unzigzag, zigzag, RunForm};
use crate::decay::{scale_down, to_f64, DecayBuckets, DecayParams, DecayedRow, DecayedState, Tops};
use crate::error::CoreError;
use crate::last_n;
use crate::value::Value;
use crate::varint::{put_i64, put_u64, varint_len, Reader};

pub const FORMAT_VERSION: u8 = 0x01;
/// Fixed-point fraction bits of score terms (`_SCORE_BITS` in Python).
const SCORE_BITS: i32 = 20;
const SIGNED_SUMS: u8 = 1;
/// The keys a new bucket (and a new state's key dictionary) has room for before it grows.
const CELLS_ROOM: usize = 4;

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
            Value::Json(_) => return None, // a list or an object is no key
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

/// One time bucket's cells: key indices (into `ScoresState::keys`) ascending, and each
/// key's fixed-point sum, index for index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cells {
    pub bucket: i64,
    pub keys: Vec<u32>,
    pub sums: Vec<i128>,
}

/// The state as it is stored, so decode and encode are a walk over it: the key dictionary
/// once, in canonical order, and each bucket's cells by key index. (A map of maps keyed by
/// the key itself allocated a copy of the key per cell on every decode.)
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoresState {
    pub newest: i64,
    /// Each key class's value as answers show it, ordered by class (`ClassRef`).
    pub keys: Vec<Value>,
    /// Buckets ascending.
    pub buckets: Vec<Cells>,
    pub tops: Tops,
}

impl ScoresState {
    /// Adds `value` to the cell `(key, bucket)`, as the reference's `cells[cell] += value`.
    pub fn add(&mut self, key: &Value, bucket: i64, value: i128) {
        let Some(index) = self.key_index(key) else {
            return;
        };
        let cells = self.bucket_mut(bucket);
        match cells.keys.binary_search(&index) {
            Ok(at) => cells.sums[at] += value,
            Err(at) => {
                cells.keys.insert(at, index);
                cells.sums.insert(at, value);
            }
        }
    }

    /// Every cell as `(key, bucket, sum)`: buckets ascending, then keys in class order.
    pub fn cells(&self) -> impl Iterator<Item = (&Value, i64, i128)> + '_ {
        self.buckets.iter().flat_map(move |cells| {
            let keys = cells.keys.iter().map(|k| &self.keys[*k as usize]);
            keys.zip(&cells.sums)
                .map(|(key, sum)| (key, cells.bucket, *sum))
        })
    }

    /// The index of `key`'s class, added in class order if new (later indices move up);
    /// `None` for a value that is not a key.
    fn key_index(&mut self, key: &Value) -> Option<u32> {
        let class = Some(ClassRef::of(key)?);
        let at = match self.keys.binary_search_by(|k| ClassRef::of(k).cmp(&class)) {
            Ok(at) => {
                if exact_rank(key) < exact_rank(&self.keys[at]) {
                    self.keys[at] = key.clone();
                }
                at
            }
            Err(at) => {
                self.keys.insert(at, key.clone());
                let moved = at as u32;
                for cells in &mut self.buckets {
                    let from = cells.keys.partition_point(|k| *k < moved);
                    cells.keys[from..].iter_mut().for_each(|k| *k += 1);
                }
                at
            }
        };
        Some(at as u32)
    }

    /// The cells of `bucket`, added empty in order if new.
    fn bucket_mut(&mut self, bucket: i64) -> &mut Cells {
        let at = self.buckets.partition_point(|c| c.bucket < bucket);
        if self.buckets.get(at).is_none_or(|c| c.bucket != bucket) {
            // Room for a few keys from the start: grown from empty, a new bucket's two
            // vectors took the general growth path, about 130 instructions each.
            let cells = Cells {
                bucket,
                keys: Vec::with_capacity(CELLS_ROOM),
                sums: Vec::with_capacity(CELLS_ROOM),
            };
            self.buckets.insert(at, cells);
        }
        &mut self.buckets[at]
    }

    /// Drops the keys no cell holds; the others keep their order (and so their cells').
    fn forget_unused_keys(&mut self) {
        let mut used = vec![false; self.keys.len()];
        for cells in &self.buckets {
            cells.keys.iter().for_each(|k| used[*k as usize] = true);
        }
        if used.iter().all(|u| *u) {
            return;
        }
        let mut renumbered = Vec::with_capacity(used.len());
        let mut next = 0u32;
        for u in &used {
            renumbered.push(next);
            next += u32::from(*u);
        }
        let mut flags = used.iter();
        self.keys.retain(|_| flags.next().copied().unwrap_or(false));
        for cells in &mut self.buckets {
            cells
                .keys
                .iter_mut()
                .for_each(|k| *k = renumbered[*k as usize]);
        }
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
        let dropped = self.buckets.partition_point(|c| c.bucket < first);
        self.buckets.drain(..dropped);
        self.tops = self.tops.split_off(&first);
        self.forget_unused_keys();
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

/// Whether `key` is a key whose class `keys` (a dictionary in class order) lacks; false
/// for a value that is no key (a row the fold skips).
fn is_new_key(keys: &[Value], key: &Value) -> bool {
    let class = ClassRef::of(key);
    class.is_some()
        && keys
            .binary_search_by(|k| ClassRef::of(k).cmp(&class))
            .is_err()
}

/// One row's term added to its cell; false for a row the reference skips (a missing key;
/// the fold skips a zero weight).
fn add_row(
    decay: &DecayBuckets,
    state: &mut ScoresState,
    row: &ScoresRow<'_>,
    bucket: i64,
    weight: f64,
) -> bool {
    if ClassRef::of(row.key).is_none() {
        return false;
    }
    let term = decay.term(weight, row.ts, bucket, SCORE_BITS);
    state.add(row.key, bucket, term);
    true
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
        // A new state's keys and buckets with room for a few (see `CELLS_ROOM`).
        let state = state.unwrap_or_else(|| ScoresState {
            keys: Vec::with_capacity(CELLS_ROOM),
            buckets: Vec::with_capacity(CELLS_ROOM),
            ..ScoresState::default()
        });
        decay.fold(
            &self.decay,
            Some(state),
            rows,
            |state, row, bucket, weight| add_row(&decay, state, row, bucket, weight),
        )
    }

    /// Every scored key and its score at the view time, in class order; each score is
    /// summed over its buckets in ascending order (the reference's order after a decode),
    /// so each float is bit-equal to the reference's.
    pub fn scores<'s>(
        &self,
        retention_ms: i64,
        state: &'s ScoresState,
        view: i64,
    ) -> Result<Vec<(&'s Value, f64)>, Refusal> {
        let decay = self.buckets(retention_ms);
        let (first, last) = decay.counted(state.newest, &state.tops, view)?;
        // Per key index: its score, if a counted bucket holds the key.
        let mut scores: Vec<Option<f64>> = vec![None; state.keys.len()];
        for cells in state
            .buckets
            .iter()
            .filter(|c| first <= c.bucket && c.bucket <= last)
        {
            let factor = scale_down(decay.decay_to(cells.bucket, view), SCORE_BITS);
            for (index, value) in cells.keys.iter().zip(&cells.sums) {
                *scores[*index as usize].get_or_insert(0.0) += to_f64(*value) * factor;
            }
        }
        Ok(state
            .keys
            .iter()
            .zip(scores)
            .filter_map(|(key, score)| Some((key, score?)))
            .collect())
    }

    /// The top-k profile `[(key, score)]` and the newest time it includes, or the refusal.
    pub fn read(
        &self,
        retention_ms: i64,
        state: &ScoresState,
        times: &Times,
        exclude: &NameSet,
        limit: Option<usize>,
    ) -> Result<(Profile, Option<i64>), Refusal> {
        let view = times.view_time(state.newest);
        let scores = self.scores(retention_ms, state, view)?;
        let scored = scores.into_iter().map(|(key, score)| (score, key));
        let top = self.profile(scored, exclude, limit);
        // Not capped at `until`: this read ignores it and counts every event up to the view.
        Ok((top, Some(state.newest.min(view))))
    }

    /// The top `limit` (or `top_k`) of the scored keys not in `exclude`, best first; a
    /// key's class is a string exactly when its value is.
    fn profile<'k>(
        &self,
        scored: impl Iterator<Item = (f64, &'k Value)>,
        exclude: &NameSet,
        limit: Option<usize>,
    ) -> Profile {
        let mut candidates: Vec<(f64, &Value, ())> = scored
            .filter(|(_, key)| !matches!(key, Value::Str(s) if exclude.contains(s)))
            .map(|(score, key)| (score, key, ()))
            .collect();
        top_k(
            &mut candidates,
            limit.filter(|l| *l > 0).unwrap_or(self.top_k),
        );
        candidates
            .into_iter()
            .map(|(s, k, ())| (k.clone(), s))
            .collect()
    }
}

/// Sorts `candidates` as `heapq.nlargest` orders `(score, key)` pairs — score descending,
/// then key descending — and keeps the first `k`. Where keys tied on a score do not compare
/// in Python (a string and a number), the reference falls back to ordering every key by
/// its `repr`; so does this. Each candidate carries a `T` along.
fn top_k<T>(candidates: &mut Vec<(f64, &Value, T)>, k: usize) {
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
        Value::Json(s) => s.clone(), // never a key (`ClassRef::of`)
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
/// (`bucket_ms` wide, the spec's). Each bucket's forms are chosen from their sizes, then
/// only the chosen ones are written.
pub fn encode(state: &ScoresState, bucket_ms: i64) -> Vec<u8> {
    let cells: usize = state.buckets.iter().map(|c| c.keys.len()).sum();
    // Room for what is usually written (a key of a few characters, 3-byte sums): too little
    // was a reallocation or two per state.
    let mut out =
        Vec::with_capacity(24 + 16 * state.keys.len() + 12 * state.buckets.len() + 6 * cells);
    out.push(FORMAT_VERSION);
    put_i64(&mut out, state.newest);
    put_u64(&mut out, state.keys.len() as u64);
    last_n::encode_values(&mut out, &state.keys);
    let signed = holds_negative(&state.buckets);
    out.push(if signed { SIGNED_SUMS } else { 0 });
    put_u64(&mut out, state.buckets.len() as u64);
    let bitmap_len = state.keys.len().div_ceil(8);
    let mut previous = None;
    for cells in &state.buckets {
        let bucket = cells.bucket;
        let top = state.tops.get(&bucket).copied().unwrap_or(0);
        put_bucket(&mut out, previous, bucket, top - bucket * bucket_ms);
        previous = Some(bucket);
        put_cells(&mut out, cells, signed, bitmap_len);
    }
    out
}

/// Whether any of the state's sums is negative: then every sum is stored zigzag.
fn holds_negative(buckets: &[Cells]) -> bool {
    buckets.iter().any(|c| c.sums.iter().any(|v| *v < 0))
}

/// A bucket's cells as stored after its header: the cell count and forms, the keys (a
/// bitmap of `bitmap_len` bytes over the dictionary, or gaps) and the sums.
fn put_cells(out: &mut Vec<u8>, cells: &Cells, signed: bool, bitmap_len: usize) {
    let gaps_len: usize = key_gaps(&cells.keys).map(varint_len).sum();
    let bitmap = bitmap_len < gaps_len;
    let sums = || {
        cells
            .sums
            .iter()
            .map(move |v| if signed { zigzag(*v) } else { *v as u128 })
    };
    let form = RunForm::of(sums());
    let flags = u64::from(form.packed) << 1 | u64::from(bitmap);
    put_u64(out, ((cells.keys.len() as u64) << 2) | flags);
    if bitmap {
        let start = out.len();
        out.resize(start + bitmap_len, 0);
        for i in &cells.keys {
            out[start + *i as usize / 8] |= 1 << (i % 8);
        }
    } else {
        key_gaps(&cells.keys).for_each(|gap| put_u64(out, gap));
    }
    form.write(out, sums());
}

/// The gaps between ascending key indices, as stored: the first from 0, each next from
/// one past the previous.
fn key_gaps(keys: &[u32]) -> impl Iterator<Item = u64> + '_ {
    let mut at = 0;
    keys.iter().map(move |i| {
        let gap = i - at;
        at = i + 1;
        u64::from(gap)
    })
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

/// A stored state's header, up to its buckets.
struct Header {
    newest: i64,
    keys: Vec<Value>,
    signed: bool,
    bucket_count: usize,
}

fn read_header(r: &mut Reader<'_>) -> Result<Header, CoreError> {
    r.expect_version("DecayedScores", FORMAT_VERSION)?;
    let newest = r.i64()?;
    let key_count = r.len(1)?;
    let keys = last_n::decode_values(r, key_count)?;
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
    Ok(Header {
        newest,
        keys,
        signed,
        bucket_count,
    })
}

pub fn decode(data: &[u8], bucket_ms: i64) -> Result<ScoresState, CoreError> {
    let mut r = Reader::new(data);
    let header = read_header(&mut r)?;
    read_buckets(&mut r, header, bucket_ms)
}

/// The state whose `header` was read from `r`: its buckets, read to the end.
fn read_buckets(
    r: &mut Reader<'_>,
    header: Header,
    bucket_ms: i64,
) -> Result<ScoresState, CoreError> {
    let Header {
        newest,
        keys,
        signed,
        bucket_count,
    } = header;
    let key_count = keys.len();
    let mut state = ScoresState {
        newest,
        keys,
        buckets: Vec::with_capacity(bucket_count),
        tops: Tops::with_capacity(bucket_count),
    };
    let mut previous = None;
    for _ in 0..bucket_count {
        let (bucket, top) = get_bucket(r, previous, bucket_ms)?;
        previous = Some(bucket);
        state.tops.insert(bucket, top);
        state.buckets.push(get_cells(r, bucket, key_count, signed)?);
    }
    r.expect_done("DecayedScores state")?;
    Ok(state)
}

/// One bucket's cells as [`put_cells`] wrote them, under a dictionary of `key_count` keys.
fn get_cells(
    r: &mut Reader<'_>,
    bucket: i64,
    key_count: usize,
    signed: bool,
) -> Result<Cells, CoreError> {
    let header = r.u64()?;
    let count = usize::try_from(header >> 2).unwrap_or(usize::MAX);
    let keys = decode_key_indices(r, count, header & 1 == 1, key_count)?;
    let sums = get_run_form(r, count, header & 2 == 2)?
        .into_iter()
        .map(|sum| match signed {
            true => Ok(unzigzag(sum)),
            false => i128::try_from(sum).map_err(|_| CoreError::Codec("sum out of range".into())),
        })
        .collect::<Result<Vec<i128>, CoreError>>()?;
    Ok(Cells { bucket, keys, sums })
}

/// A bucket's `count` key indices: a bitmap over the `key_count` keys, or varint gaps.
fn decode_key_indices(
    r: &mut Reader<'_>,
    count: usize,
    bitmap: bool,
    key_count: usize,
) -> Result<Vec<u32>, CoreError> {
    let mut indices = Vec::new();
    decode_key_indices_into(r, count, bitmap, key_count, &mut indices)?;
    Ok(indices)
}

/// `decode_key_indices` into `indices` (cleared first): a read reuses one buffer.
pub(crate) fn decode_key_indices_into(
    r: &mut Reader<'_>,
    count: usize,
    bitmap: bool,
    key_count: usize,
    indices: &mut Vec<u32>,
) -> Result<(), CoreError> {
    // Key indices are u32 in memory: a dictionary beyond that is not a state this writes.
    if count > key_count || u32::try_from(key_count).is_err() {
        return Err(CoreError::Codec("more cells than keys".into()));
    }
    indices.clear();
    indices.reserve(count);
    if bitmap {
        let bits = r.bytes(key_count.div_ceil(8))?;
        // The set bits, a byte at a time; bits past the key count (padding) do not count.
        for (at, byte) in bits.iter().enumerate() {
            let mut byte = *byte;
            while byte != 0 {
                let i = at * 8 + byte.trailing_zeros() as usize;
                if i < key_count {
                    indices.push(i as u32);
                }
                byte &= byte - 1;
            }
        }
    } else {
        let mut at = 0usize;
        for _ in 0..count {
            let i = usize::try_from(r.u64()?)
                .ok()
                .and_then(|gap| at.checked_add(gap))
                .filter(|i| *i < key_count)
                .ok_or_else(|| CoreError::Codec("key index out of range".into()))?;
            indices.push(i as u32);
            at = i + 1;
        }
    }
    if indices.len() != count {
        return Err(CoreError::Codec(
            "bitmap disagrees with the cell count".into(),
        ));
    }
    Ok(())
}

#[path = "decayed_read.rs"]
mod stored_read;
pub use stored_read::StoredProfile;

#[path = "decayed_splice.rs"]
mod splice;
pub use splice::apply_spliced;

#[cfg(test)]
#[path = "decayed_tests.rs"]
mod tests;
