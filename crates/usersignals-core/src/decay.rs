//! Time buckets for decayed sums, shared by `DecayedScores` and `MeanVector`.
//!
//! Mirrors `usersignals.aggregations.decay.DecayBuckets` (the reference model): each event
//! adds the integer `round(w · 2^F · 2^((t − b) / h))` to its bucket (`b` the bucket's start),
//! so sums are exact and independent of the batches; the decay to the view time is applied
//! when reading. A bucket is a UTC day, or an hour / minute / second when 16 half-lives are
//! shorter. Each bucket keeps its newest event time (`tops`), which is what makes an
//! `as_of` inside a bucket answerable or refusable.
//!
//! Float bit-equality with the reference: every float here is computed with the same
//! operations in the same order as the Python code. `(a − b) / h` divides two integers below
//! 2^53, which are exact as `f64`, so the IEEE quotient is the correctly rounded one Python's
//! `int / int` gives; `2.0 ** x` is the C library's `pow` on both sides (the base goes
//! through `black_box` so LLVM cannot rewrite `pow(2, x)` as `exp2(x)`, whose last bit may
//! differ); `ldexp` by a constant is a multiplication by an exact power of two; `round` is
//! round-half-even in both; integer → float conversion rounds to nearest-even in both.

use hashbrown::HashMap;

use serde_json::Value as Json;

use crate::context::{Refusal, AS_OF_LOOKBACK_MS};
use crate::error::CoreError;
use crate::value::Value;
use crate::varint::{pack_bits, put_i64, put_u64, unpack_bits_into, Reader};

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;
const MINUTE_MS: i64 = 60_000;
const SECOND_MS: i64 = 1_000;
/// 2^63: floats below it in magnitude convert to i64 exactly as to i128.
const I64_LIMIT: f64 = 9_223_372_036_854_775_808.0;
/// A bucket spans at most this many half-lives (so each term's growth is below 2^16).
const MAX_BUCKET_HALF_LIVES: i64 = 16;

/// Bucket index → the newest event time in it, buckets ascending.
///
/// A state has a few buckets (a day each, up to the retention): a sorted vector holds them
/// in one allocation, which a user's first event makes. A `BTreeMap` allocated a node there
/// too, and its inserts, searches and drops cost more than a vector's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tops(Vec<(i64, i64)>);

/// The buckets a new state's tops have room for before they grow.
const TOPS_ROOM: usize = 4;

impl Tops {
    pub fn new() -> Self {
        Tops(Vec::new())
    }

    pub fn with_capacity(buckets: usize) -> Self {
        Tops(Vec::with_capacity(buckets))
    }

    pub fn get(&self, bucket: &i64) -> Option<&i64> {
        let at = self.0.binary_search_by_key(bucket, |(b, _)| *b).ok()?;
        Some(&self.0[at].1)
    }

    /// Sets `bucket`'s newest time, and gives the one it replaces.
    pub fn insert(&mut self, bucket: i64, top: i64) -> Option<i64> {
        // Decoding inserts buckets in ascending order: a push.
        if self.0.last().is_none_or(|(last, _)| *last < bucket) {
            self.0.push((bucket, top));
            return None;
        }
        match self.0.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, top)),
            Err(at) => {
                self.0.insert(at, (bucket, top));
                None
            }
        }
    }

    /// Raises `bucket`'s newest time to `ts` (or sets it, for a new bucket).
    pub fn raise(&mut self, bucket: i64, ts: i64) {
        if self.0.capacity() == 0 {
            // A new state's: allocated directly with room for a few buckets (an insert
            // into an empty vector takes the general growth path, about 130 instructions).
            self.0 = Vec::with_capacity(TOPS_ROOM);
        }
        match self.0.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(at) => self.0[at].1 = self.0[at].1.max(ts),
            Err(at) => self.0.insert(at, (bucket, ts)),
        }
    }

    /// Keeps the buckets before `first` and gives the others (as `BTreeMap::split_off`).
    pub fn split_off(&mut self, first: &i64) -> Self {
        let at = self.0.partition_point(|(b, _)| b < first);
        Tops(self.0.split_off(at))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(bucket, newest time)`, buckets ascending.
    pub fn iter(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.0.iter().copied()
    }
}

impl FromIterator<(i64, i64)> for Tops {
    fn from_iter<I: IntoIterator<Item = (i64, i64)>>(pairs: I) -> Self {
        let mut tops = Tops::new();
        for (bucket, top) in pairs {
            tops.insert(bucket, top);
        }
        tops
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecayBuckets {
    pub half_life: i64,
    pub retention_ms: i64,
    pub bucket_ms: i64,
}

/// The parameters both decayed aggregations share, parsed from their `to_json()` plus
/// `half_life_ms` (the JSON shows the half-life as a duration text).
#[derive(Debug, Clone, PartialEq)]
pub struct DecayParams {
    pub half_life_ms: i64,
    /// Looked up once per event: foldhash rather than SipHash (see the workspace Cargo.toml).
    pub weights: HashMap<String, f64>,
    pub default_weight: f64,
}

impl DecayParams {
    pub fn from_json(json: &Json) -> Result<Self, CoreError> {
        let bad = |what: &str| CoreError::Plan(format!("missing or invalid {what:?}"));
        let half_life_ms = json["half_life_ms"]
            .as_i64()
            .filter(|h| *h > 0)
            .ok_or_else(|| bad("half_life_ms"))?;
        let weights = json["weights"]
            .as_object()
            .ok_or_else(|| bad("weights"))?
            .iter()
            .map(|(action, w)| Ok((action.clone(), w.as_f64().ok_or_else(|| bad("weights"))?)))
            .collect::<Result<_, CoreError>>()?;
        let default_weight = json["default_weight"]
            .as_f64()
            .ok_or_else(|| bad("default_weight"))?;
        Ok(DecayParams {
            half_life_ms,
            weights,
            default_weight,
        })
    }

    /// `weights.get(event.action, default_weight)`.
    pub fn weight(&self, action: &Value) -> f64 {
        match action {
            Value::Str(a) => self.weights.get(a).copied(),
            _ => None,
        }
        .unwrap_or(self.default_weight)
    }

    pub fn buckets(&self, retention_ms: i64) -> DecayBuckets {
        DecayBuckets::new(self.half_life_ms, retention_ms)
    }
}

/// `2^x` with the C library's `pow`, as Python's `2.0 ** x`.
fn two_to(x: f64) -> f64 {
    std::hint::black_box(2.0f64).powf(x)
}

/// The first event time an answer at `view` may include: `view − retention` rounded up to
/// `granule` (`retention_start` in Python).
pub fn retention_start(view: i64, retention_ms: i64, granule: i64) -> i64 {
    let edge = view.saturating_sub(retention_ms);
    -((-edge).div_euclid(granule)) * granule
}

/// What the shared fold needs of a decayed state (`ScoresState`, `VectorState`).
pub trait DecayedState: Default {
    fn newest_mut(&mut self) -> &mut i64;
    fn tops_mut(&mut self) -> &mut Tops;
    /// Forget every bucket before `first` (and what only they used).
    fn drop_before(&mut self, first: i64);
}

/// What the shared fold needs of an event row.
pub trait DecayedRow {
    fn ts(&self) -> i64;
    fn action(&self) -> &Value;
}

impl DecayBuckets {
    /// The fold both decayed aggregations share, as their references do: the newest time
    /// advances to the last row's (rows are sorted by time), buckets before the first kept
    /// one are dropped, a row older than them counts as expired, a row whose action weighs 0
    /// is skipped; each other row goes to `add(state, row, bucket, weight)`, and when that
    /// took it (`true`) its bucket's newest time moves up to the row's. Returns the state
    /// and the number of expired rows.
    pub fn fold<S: DecayedState, R: DecayedRow>(
        &self,
        params: &DecayParams,
        state: Option<S>,
        rows: &[R],
        mut add: impl FnMut(&mut S, &R, i64, f64) -> bool,
    ) -> (S, usize) {
        let mut state = state.unwrap_or_default();
        let last = rows.last().map_or(0, DecayedRow::ts);
        let newest = state.newest_mut();
        *newest = (*newest).max(last).max(0);
        let first = self.first_kept(*newest);
        state.drop_before(first);
        let mut expired = 0;
        for row in rows {
            let bucket = self.bucket_of(row.ts());
            if bucket < first {
                expired += 1;
                continue;
            }
            let weight = params.weight(row.action());
            if weight == 0.0 || !add(&mut state, row, bucket, weight) {
                continue;
            }
            state.tops_mut().raise(bucket, row.ts());
        }
        (state, expired)
    }

    pub fn new(half_life: i64, retention_ms: i64) -> Self {
        let longest = MAX_BUCKET_HALF_LIVES.saturating_mul(half_life);
        let bucket_ms = [DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS]
            .into_iter()
            .find(|size| *size <= longest)
            .unwrap_or(SECOND_MS);
        DecayBuckets {
            half_life,
            retention_ms,
            bucket_ms,
        }
    }

    pub fn bucket_of(&self, ts: i64) -> i64 {
        ts.div_euclid(self.bucket_ms)
    }

    /// The oldest bucket a state whose newest event is at `newest` keeps.
    pub fn first_kept(&self, newest: i64) -> i64 {
        let start = retention_start(
            newest.saturating_sub(AS_OF_LOOKBACK_MS),
            self.retention_ms,
            self.bucket_ms,
        );
        start.div_euclid(self.bucket_ms)
    }

    /// `2^((ts − bucket start) / half_life)`.
    pub fn growth(&self, ts: i64, bucket: i64) -> f64 {
        two_to((ts - bucket * self.bucket_ms) as f64 / self.half_life as f64)
    }

    /// The factor that turns a bucket's sum into its value at `view`.
    pub fn decay_to(&self, bucket: i64, view: i64) -> f64 {
        two_to((bucket * self.bucket_ms - view) as f64 / self.half_life as f64)
    }

    /// The first and last bucket an answer at `view` counts, or the reference's refusal.
    pub fn counted(&self, newest: i64, tops: &Tops, view: i64) -> Result<(i64, i64), Refusal> {
        let (first, last) = self.counted_range(newest, view)?;
        Self::check_last_top(tops.get(&last).copied(), view)?;
        Ok((first, last))
    }

    /// `counted`'s buckets before the check of the last one's newest time: what a read over
    /// the stored bytes knows before it meets that bucket.
    pub fn counted_range(&self, newest: i64, view: i64) -> Result<(i64, i64), Refusal> {
        let size = self.bucket_ms;
        let first = retention_start(view, self.retention_ms, size).div_euclid(size);
        let kept = self.first_kept(newest);
        if first < kept {
            return Err(Refusal {
                view_ms: view,
                earliest_ms: (kept - 1) * size + self.retention_ms + 1,
                why: "its retention reaches past the look-back",
            });
        }
        Ok((first, view.div_euclid(size)))
    }

    /// `counted`'s refusal when the last counted bucket (whose newest time is `top`, if the
    /// state has it) holds events after the view time.
    pub fn check_last_top(top: Option<i64>, view: i64) -> Result<(), Refusal> {
        match top.filter(|top| *top > view) {
            Some(top) => Err(Refusal {
                view_ms: view,
                earliest_ms: top,
                why: "events later than as_of share its bucket (UTC day)",
            }),
            None => Ok(()),
        }
    }

    /// `round(ldexp(weight · growth, bits))`, the integer one event adds.
    pub fn term(&self, weight: f64, ts: i64, bucket: i64, bits: i32) -> i128 {
        // weight is within ±1000 and growth below 2^16: the product times 2^bits is far
        // inside i128 (and exact as a multiplication by a power of two).
        let term = ((weight * self.growth(ts, bucket)) * 2f64.powi(bits)).round_ties_even();
        // The same value as `term as i128`, through i64 where it fits: the float to i128
        // cast is a software routine.
        if term.abs() < I64_LIMIT {
            i128::from(term as i64)
        } else {
            term as i128
        }
    }
}

/// `v as f64`, through `i64` when it fits: the same correctly rounded conversion, without
/// the 128-bit one's software routine (most sums fit). `black_box` keeps LLVM from seeing
/// that both arms are the same conversion and merging them back into the slow one.
pub fn to_f64(v: i128) -> f64 {
    match i64::try_from(v) {
        Ok(small) => small as f64,
        Err(_) => std::hint::black_box(v) as f64,
    }
}

/// `math.ldexp(x, -bits)`: exact scaling by a power of two (correctly rounded if subnormal).
pub fn scale_down(x: f64, bits: i32) -> f64 {
    x * 2f64.powi(-bits)
}

pub fn put_i128(out: &mut Vec<u8>, v: i128) {
    put_u128(out, zigzag(v));
}

pub fn put_u128(out: &mut Vec<u8>, mut v: u128) {
    // The same bytes as the loop below, in 64-bit arithmetic, where most values fit.
    if let Ok(small) = u64::try_from(v) {
        return put_u64(out, small);
    }
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn get_u128(r: &mut Reader<'_>) -> Result<u128, CoreError> {
    // Most stored values fit 63 bits (a MeanVector's quotients, a DecayedScores' sums):
    // those are read in 64-bit arithmetic, where each 128-bit shift and or of the loop below
    // is several instructions. The serving reads spent about 6 % of their instructions in
    // this loop (callgrind, bench/read_kernels.py).
    if let Some(v) = r.short_varint() {
        return Ok(u128::from(v));
    }
    u128_by_groups(r)
}

/// A 128-bit varint read 7 bits at a time in 128-bit arithmetic: every value, and the
/// reference the 64-bit path of `get_u128` is tested against.
fn u128_by_groups(r: &mut Reader<'_>) -> Result<u128, CoreError> {
    let mut v: u128 = 0;
    let mut shift = 0;
    // Up to 19 groups of 7 bits; the 19th may hold only the 2 bits left of 128.
    while shift < 128 {
        let b = r.u8()?;
        let bits = u128::from(b & 0x7f);
        if shift == 126 && bits > 0b11 {
            break;
        }
        v |= bits << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
        shift += 7;
    }
    Err(CoreError::Codec("128-bit varint too long".into()))
}

pub fn get_i128(r: &mut Reader<'_>) -> Result<i128, CoreError> {
    Ok(unzigzag(get_u128(r)?))
}

/// The marker of a run written as varints (else the byte is the packed width in bits).
const RUN_OF_VARINTS: u8 = 0xFF;

/// Unsigned values whose count the reader knows, in the smaller of two forms (varints on a
/// tie, so the choice is a function of the values): `0xFF` then varints, or the bit width
/// `w` of the largest value then every value in `w` bits, least significant bit first.
/// Sums of 17–23 bits take 3 bytes either way below 2^21 and 4 as varints above it; packed
/// at the run's width they take its width.
pub fn put_run(out: &mut Vec<u8>, values: &[u128]) {
    let form = RunForm::of(values.iter().copied());
    if !form.packed {
        out.push(RUN_OF_VARINTS);
    }
    form.write(out, values.iter().copied());
}

/// Reads `count` values written by `put_run`.
pub fn get_run(r: &mut Reader<'_>, count: usize) -> Result<Vec<u128>, CoreError> {
    let mut values = Vec::new();
    get_run_into(r, count, &mut values)?;
    Ok(values)
}

/// Passes over a run of `count` values written by `put_run`, reading only what tells its
/// length: the checks `get_run` makes of the form (a width past 128 bits, a varint too long,
/// bytes that run out), not the values.
pub fn skip_run(r: &mut Reader<'_>, count: usize) -> Result<(), CoreError> {
    let width = r.u8()?;
    if width == RUN_OF_VARINTS {
        for _ in 0..count {
            get_u128(r)?;
        }
        return Ok(());
    }
    if width > 128 {
        return Err(CoreError::Codec(format!("packed width {width}")));
    }
    r.bytes(count.saturating_mul(usize::from(width)).div_ceil(8))?;
    Ok(())
}

/// `get_run` into `values` (cleared first): a read reuses one buffer for every run.
pub fn get_run_into(
    r: &mut Reader<'_>,
    count: usize,
    values: &mut Vec<u128>,
) -> Result<(), CoreError> {
    let width = r.u8()?;
    get_run_of_width(r, count, width, values)
}

/// The rest of a run whose first byte, `width` (or the varints' marker), was read.
fn get_run_of_width(
    r: &mut Reader<'_>,
    count: usize,
    width: u8,
    values: &mut Vec<u128>,
) -> Result<(), CoreError> {
    if width == RUN_OF_VARINTS {
        values.clear();
        for _ in 0..count {
            values.push(get_u128(r)?);
        }
        return Ok(());
    }
    unpack_run_into(r, count, width, values)
}

/// A run of values as `put_run` wrote it, read as far as a caller can use it without
/// unpacking: a packed run of at most 56 bits left as its bytes (each value then one load,
/// a shift and a mask: `varint::for_each_narrow`), any other run in `values`.
pub enum RunRead<'a> {
    /// `count` values packed at `width` (0 to 56) bits in `bytes`.
    Narrow { bytes: &'a [u8], width: u32 },
    /// The values are in the caller's buffer, as `get_run_into` leaves them.
    Unpacked,
}

/// `get_run_into`, but a packed run of at most 56 bits is not unpacked ([`RunRead`]): a
/// MeanVector read adds each component as it is read, without storing it as a `u128` and
/// reading it back (callgrind, bench/read_kernels.py).
pub fn get_run_or_narrow<'a>(
    r: &mut Reader<'a>,
    count: usize,
    values: &mut Vec<u128>,
) -> Result<RunRead<'a>, CoreError> {
    let width = r.u8()?;
    if width == RUN_OF_VARINTS {
        get_run_of_width(r, count, width, values)?;
        return Ok(RunRead::Unpacked);
    }
    narrow_or_unpacked(r, count, width, values)
}

/// `put_run`'s smaller form of a run, chosen from the values' sizes alone (nothing is
/// written twice), for a caller that flags the form elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunForm {
    /// Packed at `width` bits (after a width byte), else varints.
    pub packed: bool,
    width: u32,
}

impl RunForm {
    pub fn of(values: impl Iterator<Item = u128>) -> Self {
        let (mut count, mut varint_bytes, mut width) = (0usize, 0usize, 0u32);
        for v in values {
            let bits = 128 - v.leading_zeros();
            count += 1;
            // A varint is a byte per 7 bits, and one byte for 0.
            varint_bytes += bits.max(1).div_ceil(7) as usize;
            width = width.max(bits);
        }
        let packed_len = 1 + (count * width as usize).div_ceil(8);
        RunForm {
            packed: packed_len < varint_bytes,
            width,
        }
    }

    /// Writes `values` (those `of` saw) in this form: the width byte and the packed bits,
    /// or the varints.
    pub fn write(self, out: &mut Vec<u8>, values: impl ExactSizeIterator<Item = u128>) {
        if !self.packed {
            values.for_each(|v| put_u128(out, v));
            return;
        }
        out.push(self.width as u8);
        let start = out.len();
        out.resize(start + (values.len() * self.width as usize).div_ceil(8), 0);
        pack_bits(&mut out[start..], values, self.width);
    }
}

/// Reads what `RunForm::write` wrote: packed (`width` not yet read) or varints.
pub fn get_run_form(
    r: &mut Reader<'_>,
    count: usize,
    packed: bool,
) -> Result<Vec<u128>, CoreError> {
    let mut values = Vec::new();
    get_run_form_into(r, count, packed, &mut values)?;
    Ok(values)
}

/// `get_run_form` into `values` (cleared first): a read reuses one buffer for every run.
pub fn get_run_form_into(
    r: &mut Reader<'_>,
    count: usize,
    packed: bool,
    values: &mut Vec<u128>,
) -> Result<(), CoreError> {
    if !packed {
        values.clear();
        // Each varint is at least a byte: the bytes left bound a count read from the input.
        values.reserve(count.min(r.left()));
        for _ in 0..count {
            values.push(get_u128(r)?);
        }
        return Ok(());
    }
    let width = r.u8()?;
    unpack_run_into(r, count, width, values)
}

/// `get_run_form_into`, but a packed run of at most 56 bits is not unpacked ([`RunRead`]).
pub fn get_run_form_or_narrow<'a>(
    r: &mut Reader<'a>,
    count: usize,
    packed: bool,
    values: &mut Vec<u128>,
) -> Result<RunRead<'a>, CoreError> {
    if !packed {
        get_run_form_into(r, count, packed, values)?;
        return Ok(RunRead::Unpacked);
    }
    let width = r.u8()?;
    narrow_or_unpacked(r, count, width, values)
}

/// A packed run of `width` bits (not the varints' marker) left as its bytes when the width
/// is at most 56, else unpacked into `values`.
fn narrow_or_unpacked<'a>(
    r: &mut Reader<'a>,
    count: usize,
    width: u8,
    values: &mut Vec<u128>,
) -> Result<RunRead<'a>, CoreError> {
    if width > 56 {
        unpack_run_into(r, count, width, values)?;
        return Ok(RunRead::Unpacked);
    }
    let bytes = r.bytes(count.saturating_mul(usize::from(width)).div_ceil(8))?;
    Ok(RunRead::Narrow {
        bytes,
        width: u32::from(width),
    })
}

#[cfg(test)]
fn unpack_run(r: &mut Reader<'_>, count: usize, width: u8) -> Result<Vec<u128>, CoreError> {
    let mut values = Vec::new();
    unpack_run_into(r, count, width, &mut values)?;
    Ok(values)
}

fn unpack_run_into(
    r: &mut Reader<'_>,
    count: usize,
    width: u8,
    values: &mut Vec<u128>,
) -> Result<(), CoreError> {
    if width > 128 {
        return Err(CoreError::Codec(format!("packed width {width}")));
    }
    let bytes = r.bytes(count.saturating_mul(usize::from(width)).div_ceil(8))?;
    unpack_bits_into(bytes, count, u32::from(width), values);
    Ok(())
}

pub fn zigzag(v: i128) -> u128 {
    ((v << 1) ^ (v >> 127)) as u128
}

pub fn unzigzag(v: u128) -> i128 {
    ((v >> 1) as i128) ^ -((v & 1) as i128)
}

/// The bucket list header both states share: each bucket (zigzag first, then the varint
/// gap to the previous one, ascending) and its newest time as an offset from its start.
pub fn put_bucket(out: &mut Vec<u8>, previous: Option<i64>, bucket: i64, top_offset: i64) {
    match previous {
        None => put_i64(out, bucket),
        Some(p) => put_u64(out, (bucket - p) as u64),
    }
    put_u64(out, top_offset as u64);
}

/// Reads what `put_bucket` wrote: the bucket and its newest time.
pub fn get_bucket(
    r: &mut Reader<'_>,
    previous: Option<i64>,
    bucket_ms: i64,
) -> Result<(i64, i64), CoreError> {
    let bucket = match previous {
        None => r.i64()?,
        Some(p) => {
            let gap = r.u64()?;
            if gap == 0 {
                return Err(CoreError::Codec("buckets out of order".into()));
            }
            p.checked_add_unsigned(gap)
                .ok_or_else(|| CoreError::Codec("bucket out of range".into()))?
        }
    };
    let offset = r.u64()?;
    let top = bucket
        .checked_mul(bucket_ms)
        .and_then(|start| start.checked_add_unsigned(offset))
        .ok_or_else(|| CoreError::Codec("bucket time out of range".into()))?;
    Ok((bucket, top))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn bucket_sizes_follow_the_half_life() {
        assert_eq!(DecayBuckets::new(7 * DAY_MS, DAY_MS).bucket_ms, DAY_MS);
        assert_eq!(DecayBuckets::new(HOUR_MS, DAY_MS).bucket_ms, HOUR_MS);
        assert_eq!(DecayBuckets::new(1_000, DAY_MS).bucket_ms, SECOND_MS);
    }

    #[test]
    fn retention_start_rounds_up() {
        assert_eq!(retention_start(10_500, 1_000, 1_000), 10_000);
        assert_eq!(retention_start(10_001, 1_000, 1_000), 10_000);
        assert_eq!(retention_start(10_000, 1_000, 1_000), 9_000);
        assert_eq!(retention_start(-1_500, 0, 1_000), -1_000);
    }

    /// The packed-run reader as it was first written, bit by bit: the reference.
    fn bit_at_a_time(bytes: &[u8], count: usize, width: u8) -> Option<Vec<u128>> {
        let width = usize::from(width);
        let bytes = bytes.get(..count.saturating_mul(width).div_ceil(8))?;
        let mut values = vec![0u128; count];
        for (n, value) in values.iter_mut().enumerate() {
            for i in 0..width {
                let bit = n * width + i;
                if (bytes[bit / 8] >> (bit % 8)) & 1 == 1 {
                    *value |= 1 << i;
                }
            }
        }
        Some(values)
    }

    proptest! {
        #[test]
        fn u128_varints_read_as_the_128_bit_reference(
            bytes in crate::varint::varint_like_bytes(24, 22)
        ) {
            let (mut fast, mut reference) = (Reader::new(&bytes), Reader::new(&bytes));
            prop_assert_eq!(get_u128(&mut fast), u128_by_groups(&mut reference));
            prop_assert_eq!(fast.left(), reference.left());
        }

        #[test]
        fn i128_round_trips(v in any::<i128>()) {
            let mut out = Vec::new();
            put_i128(&mut out, v);
            let mut r = Reader::new(&out);
            prop_assert_eq!(get_i128(&mut r).unwrap(), v);
            prop_assert!(r.is_done());
        }

        #[test]
        fn runs_round_trip_in_the_smaller_form(
            values in prop::collection::vec(
                prop_oneof![0u128..300_000, any::<u128>(), Just(0u128)], 0..40)
        ) {
            let mut out = Vec::new();
            put_run(&mut out, &values);
            let mut varints = Vec::new();
            values.iter().for_each(|v| put_u128(&mut varints, *v));
            prop_assert!(out.len() <= varints.len() + 1);
            let mut r = Reader::new(&out);
            prop_assert_eq!(get_run(&mut r, values.len()).unwrap(), values);
            prop_assert!(r.is_done());
        }

        #[test]
        fn packed_runs_keep_the_bit_by_bit_layout(
            values in prop::collection::vec(any::<u128>(), 1..20), width in 1u32..=128
        ) {
            // The stored layout: value n's bit i at bit 8 + n * width + i, LSB first.
            let values: Vec<u128> = values.iter().map(|v| v & (u128::MAX >> (128 - width))).collect();
            let width = values.iter().map(|v| 128 - v.leading_zeros()).max().unwrap_or(0);
            let mut expected = vec![0u8; 1 + (values.len() * width as usize).div_ceil(8)];
            let mut bit = 8;
            for v in &values {
                for i in 0..width {
                    expected[bit / 8] |= (((v >> i) & 1) as u8) << (bit % 8);
                    bit += 1;
                }
            }
            let form = RunForm::of(values.iter().copied());
            if form.packed {
                let mut out = Vec::new();
                form.write(&mut out, values.iter().copied());
                prop_assert_eq!(&out[1..], &expected[1..]);
                let mut r = Reader::new(&out);
                prop_assert_eq!(get_run_form(&mut r, values.len(), true).unwrap(), values);
            }
        }

        #[test]
        fn unpacking_matches_the_bit_at_a_time_reference(
            bytes in prop::collection::vec(any::<u8>(), 0..200),
            count in 0usize..24,
            width in 0u8..=128,
        ) {
            let fast = unpack_run(&mut Reader::new(&bytes), count, width).ok();
            prop_assert_eq!(fast, bit_at_a_time(&bytes, count, width));
        }

        #[test]
        fn bad_runs_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..40), n in 0usize..20) {
            let _ = get_run(&mut Reader::new(&bytes), n);
        }

        #[test]
        fn bad_varints_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..24)) {
            let _ = get_i128(&mut Reader::new(&bytes));
        }
    }

    /// A step on `Tops` and on the `BTreeMap` it replaces.
    #[derive(Debug, Clone)]
    enum TopsStep {
        Insert(i64, i64),
        Raise(i64, i64),
        SplitOff(i64),
    }

    proptest! {
        #[test]
        fn tops_hold_what_the_map_they_replace_held(
            steps in prop::collection::vec(prop_oneof![
                (-5i64..20, any::<i64>()).prop_map(|(b, t)| TopsStep::Insert(b, t)),
                (-5i64..20, any::<i64>()).prop_map(|(b, t)| TopsStep::Raise(b, t)),
                (-5i64..20).prop_map(TopsStep::SplitOff),
            ], 0..40),
        ) {
            let mut tops = Tops::new();
            let mut map = std::collections::BTreeMap::new();
            for step in steps {
                match step {
                    TopsStep::Insert(b, t) => prop_assert_eq!(tops.insert(b, t), map.insert(b, t)),
                    TopsStep::Raise(b, t) => {
                        tops.raise(b, t);
                        let top = map.entry(b).or_insert(t);
                        *top = (*top).max(t);
                    }
                    TopsStep::SplitOff(b) => {
                        let (rest, rest_map) = (tops.split_off(&b), map.split_off(&b));
                        prop_assert!(rest.iter().eq(rest_map.into_iter()));
                    }
                }
                prop_assert!(tops.iter().eq(map.iter().map(|(b, t)| (*b, *t))));
                prop_assert_eq!(tops.len(), map.len());
                for b in -6i64..21 {
                    prop_assert_eq!(tops.get(&b), map.get(&b));
                }
            }
        }
    }
}
