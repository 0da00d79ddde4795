//! `MeanVector`: the decayed, weighted mean of a vector field, in exact fixed-point sums per
//! time bucket.
//!
//! Mirrors `VectorRuntime` in `usersignals.aggregations.decayed` (the reference model): per
//! bucket `[Σ scale, Σ scale · q_1, …, Σ scale · q_dim]` with `scale = round(w · growth ·
//! 2^16)` and `q_i = round(component_i · 2^16)`; the read decays each bucket to the view
//! time and divides. Sums are `i128`: a component must be within ±2^46 (|q| < 2^62) for the
//! event to count natively (the reference's unbounded integers take any finite one; such
//! an event adds nothing here — see docs/native.md), which leaves room for 2^22 events of
//! the largest weight in one bucket.
//!
//! Stored format (version byte first):
//!
//! ```text
//! 0x01 | zigzag newest | varint dim | varint bucket count
//!      | per bucket, ascending: zigzag bucket (first) or varint gap | varint newest − start
//!        | zigzag Σ scale | varint d | the dim zigzag (component sum / d) as a run:
//!          varints, or bit-packed at the width of the largest (see `decay::put_run`)
//! ```
//!
//! `d` is the greatest common divisor of the bucket's component sums (0 when all are 0).
//! A bucket of one event holds `scale · q_i`, so `d` is a multiple of `scale` and the
//! quotients are the quantized components themselves: 2–3 bytes each instead of 5. The
//! divisor is a function of the sums, so the bytes stay canonical and the sums exact.

use crate::context::{Refusal, Times};
use crate::decay::{
    get_bucket, get_i128, get_run, get_u128, put_bucket, put_i128, put_run, put_u128,
};
use crate::decay::{scale_down, DecayBuckets, DecayParams, DecayedRow, DecayedState, Tops};
use crate::decay::{unzigzag, zigzag};
use crate::error::CoreError;
use crate::value::Value;
use crate::varint::{put_i64, put_u64, zigzag64, Reader};
use std::collections::BTreeMap;

pub const FORMAT_VERSION: u8 = 0x01;
/// Fixed-point fraction bits of each event's scale and of the components (Python's
/// `_SCALE_BITS`, `_COMPONENT_BITS`).
const SCALE_BITS: i32 = 16;
const COMPONENT_BITS: i32 = 16;
/// The largest |q| counted natively (see the module doc).
const MAX_QUANTIZED: f64 = (1u64 << 62) as f64;

#[derive(Debug, Clone, PartialEq)]
pub struct MeanVectorSpec {
    pub of: String,
    pub dim: usize,
    pub decay: DecayParams,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct VectorState {
    pub newest: i64,
    /// Bucket → `[Σ scale, Σ scale · q_i …]`.
    pub buckets: BTreeMap<i64, Vec<i128>>,
    pub tops: Tops,
}

impl DecayedState for VectorState {
    fn newest_mut(&mut self) -> &mut i64 {
        &mut self.newest
    }

    fn tops_mut(&mut self) -> &mut Tops {
        &mut self.tops
    }

    fn drop_before(&mut self, first: i64) {
        self.buckets = self.buckets.split_off(&first);
        self.tops = self.tops.split_off(&first);
    }
}

impl DecayedRow for VectorRow<'_> {
    fn ts(&self) -> i64 {
        self.ts
    }

    fn action(&self) -> &Value {
        self.action
    }
}

/// A read's answer: the mean vector (`None` when the weight is 0) and the decayed weight.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeanAnswer {
    pub vector: Option<Vec<f64>>,
    pub weight: f64,
}

/// A vector field's value as a batch column holds it: shared, since every event of an item
/// carries the item's one embedding (cloning the components per event was a fresh 256 bytes
/// per event of the reference workload, and the page faults of a large batch).
pub type SharedVector = std::sync::Arc<[f64]>;

/// One event as `apply` takes it. `vector` is `None` when the field is not a list or tuple
/// or a component is not a number (Python's `float()` of it failed).
pub struct VectorRow<'a> {
    pub ts: i64,
    pub action: &'a Value,
    pub vector: Option<&'a [f64]>,
}

/// The reference's `_quantize`: `round(ldexp(component, 16))` per component, or `None`
/// where it adds nothing (wrong length, not finite).
pub fn quantize(vector: &[f64], dim: usize) -> Option<Vec<i128>> {
    quantizable(vector, dim).then(|| vector.iter().map(|c| quantized(*c)).collect())
}

/// Whether [`quantize`] takes `vector`: of length `dim`, every component counted.
///
/// `|round(x)| < 2^62` is `|x| < 2^62` with no rounding: below 2^52 both hold, and from
/// 2^52 up every float is an integer (NaN and the infinities fail both). The rounding cost a
/// libm call per component, twice per component with [`quantized`] (callgrind).
fn quantizable(vector: &[f64], dim: usize) -> bool {
    vector.len() == dim
        && (vector.iter()).all(|c| (c * 2f64.powi(COMPONENT_BITS)).abs() < MAX_QUANTIZED)
}

/// A component's `round(ldexp(component, 16))`, of a vector [`quantizable`] takes.
fn quantized(component: f64) -> i128 {
    let q = round_ties_even(component * 2f64.powi(COMPONENT_BITS));
    // Below 2^62 in magnitude, so exact as i64 (a float to i128 cast is a software routine).
    i128::from(q as i64)
}

/// `q.saturating_mul(scale)`, in 64 bits when `scale` fits them (`narrow`) and the product
/// does: the same value without the 128-bit multiply and its overflow check, per event
/// and component. `MeanVectorSpec::apply` went from 56.6 M to 38.3 M instructions
/// (callgrind, bench/engine.py --events 50000 --batch 10000).
fn scaled(q: i128, scale: i128, narrow: Option<i64>) -> i128 {
    if let (Ok(q), Some(scale)) = (i64::try_from(q), narrow) {
        if let Some(product) = q.checked_mul(scale) {
            return i128::from(product);
        }
    }
    q.saturating_mul(scale)
}

/// 2^52: from here up every float is an integer.
const INTEGRAL: f64 = 4_503_599_627_370_496.0;

/// `x.round_ties_even()` without libm's `rint` (a call on the baseline x86-64 target): below
/// 2^52 in magnitude, adding 2^52 (with `x`'s sign) lands where floats are one apart, so the
/// addition itself rounds `x` to an integer, ties to even, and the subtraction is exact.
/// Only the sign of a zero may differ from `rint`'s, which the caller's `as i64` drops.
fn round_ties_even(x: f64) -> f64 {
    if x.abs() < INTEGRAL {
        let shift = INTEGRAL.copysign(x);
        (x + shift) - shift
    } else {
        x // integral already, or NaN or infinite
    }
}

impl MeanVectorSpec {
    pub fn buckets(&self, retention_ms: i64) -> DecayBuckets {
        self.decay.buckets(retention_ms)
    }

    /// Fold one user's rows (sorted by time) into `state`: the new state and how many rows
    /// were older than the buckets it keeps.
    pub fn apply(
        &self,
        retention_ms: i64,
        state: Option<VectorState>,
        rows: &[VectorRow<'_>],
    ) -> (VectorState, usize) {
        let decay = self.buckets(retention_ms);
        decay.fold(&self.decay, state, rows, |state, row, bucket, weight| {
            // Checked, then quantized component by component into the sums: no vector of
            // quantized components per event (an allocation each, callgrind).
            let Some(vector) = row.vector.filter(|v| quantizable(v, self.dim)) else {
                return false;
            };
            let scale = decay.term(weight, row.ts, bucket, SCALE_BITS);
            let sums = state
                .buckets
                .entry(bucket)
                .or_insert_with(|| vec![0; self.dim + 1]);
            // Saturating: beyond i128 needs 2^22 events of extreme components in one bucket.
            sums[0] = sums[0].saturating_add(scale);
            let narrow = i64::try_from(scale).ok();
            for (sum, component) in sums[1..].iter_mut().zip(vector) {
                *sum = sum.saturating_add(scaled(quantized(*component), scale, narrow));
            }
            true
        })
    }

    /// `({"vector", "weight"}, newest)` at the view time, or the reference's refusal.
    /// Buckets are summed in ascending order and each float op is the reference's, so the
    /// answer is bit-equal to it.
    pub fn read(
        &self,
        retention_ms: i64,
        state: &VectorState,
        times: &Times,
    ) -> Result<(MeanAnswer, Option<i64>), Refusal> {
        let decay = self.buckets(retention_ms);
        let view = times.view_time(state.newest);
        // Before the empty answer, as the tiles' read: an `as_of` the state's expired
        // buckets covered is refused even when no bucket is left.
        let (first, last) = decay.counted(state.newest, &state.tops, view)?;
        if state.buckets.is_empty() {
            return Ok((MeanAnswer::default(), None));
        }
        let mut totals = vec![0.0f64; self.dim + 1];
        if first <= last {
            for (bucket, sums) in state.buckets.range(first..=last) {
                let factor = scale_down(decay.decay_to(*bucket, view), SCALE_BITS);
                for (total, value) in totals.iter_mut().zip(sums) {
                    *total += *value as f64 * factor;
                }
            }
        }
        let weight = totals[0];
        let vector = (weight != 0.0).then(|| {
            let scale = scale_down(1.0, COMPONENT_BITS) / weight;
            totals[1..].iter().map(|v| v * scale).collect()
        });
        // Not capped at `until`: this read ignores it and counts every event up to the view.
        let newest = state.newest.min(view);
        Ok((MeanAnswer { vector, weight }, Some(newest)))
    }
}

/// The gcd, in 64 bits while both fit (most sums do, and a 128-bit remainder is a software
/// routine), there by Stein's binary method: shifts and subtractions where Euclid's takes a
/// hardware division a step, which was most of MeanVector's encoding (perf annotate).
fn gcd(a: u128, b: u128) -> u128 {
    match (u64::try_from(a), u64::try_from(b)) {
        (Ok(a), Ok(b)) => u128::from(binary_gcd(a, b)),
        _ => {
            let (mut a, mut b) = (a, b);
            while b != 0 {
                (a, b) = (b, a % b);
            }
            a
        }
    }
}

fn binary_gcd(mut a: u64, mut b: u64) -> u64 {
    if a == 0 || b == 0 {
        return a | b;
    }
    let shift = (a | b).trailing_zeros();
    a >>= a.trailing_zeros();
    loop {
        b >>= b.trailing_zeros();
        if a > b {
            std::mem::swap(&mut a, &mut b);
        }
        b -= a;
        if b == 0 {
            return a << shift;
        }
    }
}

/// The gcd of the magnitudes of `sums` (0 for none, or all zero). A bucket's sums usually
/// share their weights' factor, so most are multiples of the divisor found so far: one
/// remainder tells, where a gcd takes dozens of steps. It stops at 1, which divides all.
fn common_divisor(sums: &[i128]) -> u128 {
    let mut d = 0;
    for sum in sums {
        let sum = sum.unsigned_abs();
        if d > 1 && divides(d, sum) {
            continue;
        }
        d = gcd(d, sum);
        if d == 1 {
            break;
        }
    }
    d
}

/// Whether `d` (not 0) divides `x`, in 64 bits when both fit.
fn divides(d: u128, x: u128) -> bool {
    match (u64::try_from(d), u64::try_from(x)) {
        (Ok(d), Ok(x)) => x % d == 0, // one hardware division
        _ => x % d == 0,              // a 128-bit remainder: a software routine
    }
}

/// `sum / d` (exact: `d` divides `sum`), in 64 bits when both fit.
fn divide(sum: i128, d: u128) -> i128 {
    match (i64::try_from(sum), i64::try_from(d)) {
        (Ok(sum), Ok(d)) => i128::from(sum / d),
        _ => sum / d as i128,
    }
}

/// A bucket's common divisor of `sums`, and their quotients (zigzag) into `quotients`.
fn quotients_into(sums: &[i128], quotients: &mut Vec<u128>) -> u128 {
    quotients.clear();
    // Most sums fit 63 bits: then in 64-bit arithmetic throughout (no 128-bit test per
    // step): mean_vector::encode went from 43.9 M to 32.9 M instructions (callgrind,
    // bench/engine.py --events 50000 --batch 10000).
    let narrow = |sum: &i128| i64::try_from(*sum).is_ok_and(|s| s != i64::MIN);
    if sums.iter().all(narrow) {
        let d = common_divisor_u64(sums.iter().map(|sum| *sum as i64));
        let zigzag = |q: i64| u128::from(zigzag64(q));
        // d is at most the largest |sum| < 2^63: it fits i64, and d > 1 divides every sum.
        quotients.extend(sums.iter().map(|sum| match d {
            0 | 1 => zigzag(*sum as i64),
            _ => zigzag(*sum as i64 / d as i64),
        }));
        return u128::from(d);
    }
    let d = common_divisor(sums);
    // d divides every sum; a quotient of d > 1 always fits i128.
    quotients.extend(
        sums.iter()
            .map(|sum| zigzag(if d > 1 { divide(*sum, d) } else { *sum })),
    );
    d
}

/// `common_divisor` of sums that fit i64.
fn common_divisor_u64(sums: impl Iterator<Item = i64>) -> u64 {
    let mut d = 0;
    for sum in sums {
        let sum = sum.unsigned_abs();
        if d > 1 && sum % d == 0 {
            continue;
        }
        d = binary_gcd(d, sum);
        if d == 1 {
            break;
        }
    }
    d
}

/// The stored bytes of `state` (tops as offsets from their `bucket_ms`-wide bucket).
pub fn encode(state: &VectorState, dim: usize, bucket_ms: i64) -> Vec<u8> {
    // Most sums take 2-3 bytes; one buffer of quotients serves every bucket.
    let mut out = Vec::with_capacity(8 + state.buckets.len() * (8 + 3 * dim));
    out.push(FORMAT_VERSION);
    let mut quotients: Vec<u128> = Vec::with_capacity(dim);
    put_i64(&mut out, state.newest);
    put_u64(&mut out, dim as u64);
    put_u64(&mut out, state.buckets.len() as u64);
    let mut previous = None;
    for (bucket, sums) in &state.buckets {
        let top = state.tops.get(bucket).copied().unwrap_or(0);
        put_bucket(&mut out, previous, *bucket, top - bucket * bucket_ms);
        previous = Some(*bucket);
        put_sums(&mut out, sums, &mut quotients);
    }
    out
}

/// A bucket's sums as stored after its header: `Σ scale`, the divisor, the quotients' run
/// (`quotients` a buffer the caller reuses across buckets).
fn put_sums(out: &mut Vec<u8>, sums: &[i128], quotients: &mut Vec<u128>) {
    put_i128(out, sums[0]);
    let d = quotients_into(&sums[1..], quotients);
    put_u128(out, d);
    put_run(out, quotients);
}

/// What [`put_sums`] wrote, `dim` components.
fn get_sums(r: &mut Reader<'_>, dim: usize) -> Result<Vec<i128>, CoreError> {
    let mut sums = Vec::with_capacity(dim + 1);
    sums.push(get_i128(r)?);
    let d = divisor(get_u128(r)?)?;
    for quotient in get_run(r, dim)? {
        sums.push(component_sum(quotient, d)?);
    }
    Ok(sums)
}

fn divisor(stored: u128) -> Result<i128, CoreError> {
    i128::try_from(stored).map_err(|_| CoreError::Codec("divisor out of range".into()))
}

/// `apply` over stored bytes: decode `old`, fold in `rows`, encode (the batch executor's arm).
pub fn apply_stored(
    spec: &MeanVectorSpec,
    retention_ms: i64,
    old: Option<&[u8]>,
    rows: &[VectorRow<'_>],
) -> Result<(Vec<u8>, usize), CoreError> {
    let bucket_ms = spec.buckets(retention_ms).bucket_ms;
    let old = old
        .map(|bytes| decode(bytes, spec.dim, bucket_ms))
        .transpose()?;
    let (state, expired) = spec.apply(retention_ms, old, rows);
    Ok((encode(&state, spec.dim, bucket_ms), expired))
}

/// A component's sum from its stored quotient (zigzag) and the bucket's divisor `d`; an
/// error when it leaves i128. In 64 bits when both fit (a 128-bit multiply is a software
/// routine): the same product.
fn component_sum(quotient: u128, d: i128) -> Result<i128, CoreError> {
    let quotient = unzigzag(quotient);
    if d <= 1 {
        return Ok(quotient);
    }
    if let (Ok(q), Ok(d)) = (i64::try_from(quotient), i64::try_from(d)) {
        if let Some(sum) = q.checked_mul(d) {
            return Ok(i128::from(sum));
        }
    }
    quotient
        .checked_mul(d)
        .ok_or_else(|| CoreError::Codec("sum out of range".into()))
}

/// A stored state's header, up to its buckets: its newest time and how many buckets follow
/// (a state of another version or dimension refused).
fn read_header(r: &mut Reader<'_>, dim: usize) -> Result<(i64, usize), CoreError> {
    r.expect_version("MeanVector", FORMAT_VERSION)?;
    let newest = r.i64()?;
    let stored_dim = r.u64()?;
    if stored_dim != dim as u64 {
        return Err(CoreError::Codec(format!(
            "MeanVector of dimension {stored_dim}, expected {dim}"
        )));
    }
    // A bucket is at least 5 bytes: gap, newest, scale, divisor, and a run (1 when packed 0).
    let count = r.len(5)?;
    Ok((newest, count))
}

pub fn decode(data: &[u8], dim: usize, bucket_ms: i64) -> Result<VectorState, CoreError> {
    let mut r = Reader::new(data);
    let (newest, count) = read_header(&mut r, dim)?;
    let mut state = VectorState {
        newest,
        ..VectorState::default()
    };
    state.tops = Tops::with_capacity(count);
    let mut previous = None;
    for _ in 0..count {
        let (bucket, top) = get_bucket(&mut r, previous, bucket_ms)?;
        previous = Some(bucket);
        state.tops.insert(bucket, top);
        state.buckets.insert(bucket, get_sums(&mut r, dim)?);
    }
    r.expect_done("MeanVector state")?;
    Ok(state)
}

#[path = "mean_vector_read.rs"]
mod stored_read;

#[path = "mean_vector_splice.rs"]
mod splice;
pub use splice::apply_spliced;

#[cfg(test)]
#[path = "mean_vector_tests.rs"]
mod tests;
