//! `Distinct`: HyperLogLog registers per time bucket, unioned over a request-time window.
//!
//! Mirrors `usersignals.aggregations.distinct` (the reference model) register for register:
//! the same hash (XXH3-64, seed 0x5EED, of the value's Python `str()`, which the binding
//! passes in), the same buckets, the same packing (sparse triples `(index hi, index lo,
//! rank)` in index order until dense — `2^precision` bytes — is smaller), the same estimate.
//! Registers are a max per register, so the state is the same whatever the batches.
//!
//! Stored format (version byte first):
//!
//! ```text
//! 0x01 | zigzag newest | varint bucket count | per bucket, oldest first:
//!      zigzag start (first) or varint gap to the previous start | varint length | packed
//! ```

use std::collections::BTreeMap;

use crate::context::{Refusal, Times, AS_OF_LOOKBACK_MS};
use crate::error::CoreError;
use crate::varint::{put_i64, put_u64, Reader};

pub const FORMAT_VERSION: u8 = 0x01;
const HASH_SEED: u64 = 0x5EED;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DistinctSpec {
    pub precision: u32,
    pub bucket_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DistinctState {
    pub newest: i64,
    /// Bucket start → packed registers.
    pub buckets: BTreeMap<i64, Vec<u8>>,
}

impl DistinctSpec {
    fn registers(&self) -> usize {
        1 << self.precision
    }

    /// The first bucket the state keeps: the retention and the `as_of` look-back before the
    /// newest event's bucket.
    fn first_kept(&self, newest: i64, retention_ms: i64) -> i64 {
        newest - newest.rem_euclid(self.bucket_ms) - retention_ms - AS_OF_LOOKBACK_MS
    }

    /// Fold `(ts, value)` rows (sorted by time; `None`: the field is missing) into `state`.
    pub fn apply(
        &self,
        retention_ms: i64,
        state: Option<DistinctState>,
        rows: &[(i64, Option<&str>)],
    ) -> (DistinctState, usize) {
        let last = rows.last().map_or(0, |row| row.0);
        let newest = state.as_ref().map_or(0, |s| s.newest).max(last);
        let first = self.first_kept(newest, retention_ms);
        let mut buckets = state.map(|s| s.buckets).unwrap_or_default();
        buckets.retain(|bucket, _| *bucket >= first);
        let shift = 64 - self.precision;
        let low_bits = (1u64 << shift) - 1;
        let mut touched: BTreeMap<i64, BTreeMap<usize, u8>> = BTreeMap::new();
        let mut expired = 0;
        for (ts, value) in rows {
            let bucket = ts - ts.rem_euclid(self.bucket_ms);
            if bucket < first {
                expired += 1;
                continue;
            }
            let Some(value) = value else { continue };
            let registers = touched
                .entry(bucket)
                .or_insert_with(|| self.sparse(buckets.get(&bucket).map(Vec::as_slice)));
            let hashed = xxhash_rust::xxh3::xxh3_64_with_seed(value.as_bytes(), HASH_SEED);
            let index = (hashed >> shift) as usize;
            let bit_length = 64 - (hashed & low_bits).leading_zeros();
            let rank = (shift - bit_length + 1) as u8;
            let current = registers.entry(index).or_insert(0);
            *current = (*current).max(rank);
        }
        for (bucket, registers) in touched {
            buckets.insert(bucket, self.pack(&registers));
        }
        (DistinctState { newest, buckets }, expired)
    }

    fn sparse(&self, packed: Option<&[u8]>) -> BTreeMap<usize, u8> {
        let Some(packed) = packed else {
            return BTreeMap::new();
        };
        if packed.len() == self.registers() {
            return packed
                .iter()
                .enumerate()
                .filter(|(_, r)| **r > 0)
                .map(|(i, r)| (i, *r))
                .collect();
        }
        packed
            .chunks_exact(3)
            .map(|t| ((usize::from(t[0]) << 8) | usize::from(t[1]), t[2]))
            .collect()
    }

    fn pack(&self, registers: &BTreeMap<usize, u8>) -> Vec<u8> {
        if 3 * registers.len() >= self.registers() {
            let mut dense = vec![0u8; self.registers()];
            registers.iter().for_each(|(i, r)| dense[*i] = *r);
            return dense;
        }
        registers
            .iter()
            .flat_map(|(i, r)| [(i >> 8) as u8, (i & 0xff) as u8, *r])
            .collect()
    }

    fn union_into(&self, union: &mut [u8], packed: &[u8]) {
        if packed.len() == self.registers() {
            union
                .iter_mut()
                .zip(packed)
                .for_each(|(u, r)| *u = (*u).max(*r));
        } else {
            for t in packed.chunks_exact(3) {
                let i = (usize::from(t[0]) << 8) | usize::from(t[1]);
                union[i] = union[i].max(t[2]);
            }
        }
    }

    /// The HyperLogLog estimate of dense registers, with linear counting for small counts.
    pub fn estimate(&self, registers: &[u8]) -> f64 {
        let m = self.registers() as f64;
        let zeros = registers.iter().filter(|r| **r == 0).count();
        // Summed in register order, as the reference does, for the same rounding. Each term
        // is 2^-r, built from its exponent bits: exact (a register is at most 255), and a
        // call to `powi` per register was a third of a Distinct read's instructions.
        let harmonic: f64 = registers.iter().fold(0.0, |sum, r| {
            sum + f64::from_bits((1023 - u64::from(*r)) << 52)
        });
        let alpha = match self.registers() {
            16 => 0.673,
            32 => 0.697,
            64 => 0.709,
            _ => 0.7213 / (1.0 + 1.079 / m),
        };
        let raw = alpha * m * m / harmonic;
        if raw <= 2.5 * m && zeros > 0 {
            return m * (m / zeros as f64).ln();
        }
        raw
    }

    /// The estimate over the buckets a context selects, and the newest time it includes:
    /// the buckets starting in `[max(V - retention, window start), end]` for the view time
    /// `V`. Refused when that reaches before the buckets the state keeps, and, for an `as_of`
    /// before the newest event, when the bucket holding the view's end may hold later events.
    pub fn read(
        &self,
        retention_ms: i64,
        state: &DistinctState,
        times: &Times,
    ) -> Result<(i64, Option<i64>), Refusal> {
        let newest = state.newest;
        let end = times.end(newest);
        let view = times.view_time(newest);
        let mut start = view.saturating_sub(retention_ms);
        if let Some(window_start) = times.start(newest) {
            start = start.max(window_start);
        }
        let first_kept = self.first_kept(newest, retention_ms);
        if start < first_kept {
            return Err(Refusal {
                view_ms: view,
                earliest_ms: first_kept + retention_ms,
                why: "its buckets from then expired",
            });
        }
        if state.buckets.is_empty() {
            return Ok((0, None)); // after the check, as the tiles' read
        }
        let straddled = end - end.rem_euclid(self.bucket_ms);
        if end < newest
            && start <= straddled // a bucket starting before the view is not counted
            && end < straddled + self.bucket_ms - 1
            && state.buckets.contains_key(&straddled)
        {
            // The view ends (as_of, or until) before newer events, inside a bucket that may
            // hold some of them: an answer then did not count them, and this one cannot
            // leave them out.
            return Err(Refusal {
                view_ms: end, // the view's end: its as_of or until
                earliest_ms: straddled + self.bucket_ms - 1,
                why: "events later than the view's end may share its bucket",
            });
        }
        let mut union = vec![0u8; self.registers()];
        let mut chosen = false;
        if start <= end {
            for (_, packed) in state.buckets.range(start..=end) {
                self.union_into(&mut union, packed);
                chosen = true;
            }
        }
        let estimate = if chosen {
            self.estimate(&union).round_ties_even() as i64
        } else {
            0
        };
        Ok((estimate, Some(newest.min(end))))
    }
}

pub fn encode(state: &DistinctState) -> Vec<u8> {
    // At most: the version, two 10-byte varints, and two more per bucket with its registers
    // (grown from one byte, the buffer was reallocated about three times a state).
    let registers: usize = state.buckets.values().map(Vec::len).sum();
    let mut out = Vec::with_capacity(21 + 20 * state.buckets.len() + registers);
    out.push(FORMAT_VERSION);
    put_i64(&mut out, state.newest);
    put_u64(&mut out, state.buckets.len() as u64);
    let mut previous: Option<i64> = None;
    for (bucket, packed) in &state.buckets {
        match previous {
            None => put_i64(&mut out, *bucket),
            Some(p) => put_u64(&mut out, (bucket - p) as u64),
        }
        previous = Some(*bucket);
        put_u64(&mut out, packed.len() as u64);
        out.extend_from_slice(packed);
    }
    out
}

pub fn decode(data: &[u8], spec: &DistinctSpec) -> Result<DistinctState, CoreError> {
    let mut r = Reader::new(data);
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(CoreError::Codec(format!(
            "Distinct format version {version}, expected {FORMAT_VERSION}"
        )));
    }
    let newest = r.i64()?;
    let count = r.len(2)?;
    let mut buckets = BTreeMap::new();
    let mut previous: Option<i64> = None;
    for _ in 0..count {
        let bucket = match previous {
            None => r.i64()?,
            Some(p) => p.wrapping_add(r.u64()? as i64),
        };
        previous = Some(bucket);
        let n = r.len(1)?;
        if n != spec.registers() && n % 3 != 0 {
            return Err(CoreError::Codec(format!(
                "{n} register bytes fit no packing"
            )));
        }
        let packed = r.bytes(n)?.to_vec();
        if n % 3 == 0 && n != spec.registers() {
            let max_index = packed
                .chunks_exact(3)
                .map(|t| (usize::from(t[0]) << 8) | usize::from(t[1]))
                .max();
            if max_index.is_some_and(|i| i >= spec.registers()) {
                return Err(CoreError::Codec(
                    "register index beyond the precision".into(),
                ));
            }
        }
        buckets.insert(bucket, packed);
    }
    r.expect_done("Distinct state")?;
    Ok(DistinctState { newest, buckets })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SPEC: DistinctSpec = DistinctSpec {
        precision: 6,
        bucket_ms: 1_000,
    };

    fn apply_in_batches(rows: &[(i64, Option<String>)], cuts: &[usize]) -> Vec<u8> {
        let mut state: Option<DistinctState> = None;
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (rows.len() + 1)).collect();
        bounds.push(rows.len());
        bounds.sort_unstable();
        let mut start = 0;
        for end in bounds {
            if end <= start {
                continue;
            }
            let mut batch: Vec<(i64, Option<&str>)> = rows[start..end]
                .iter()
                .map(|(t, v)| (*t, v.as_deref()))
                .collect();
            batch.sort_by_key(|r| r.0);
            // A day's retention (plus the two-day look-back) over times spread across ~4.6
            // days: some buckets expire.
            let (next, _) = SPEC.apply(86_400_000, state, &batch);
            state = Some(decode(&encode(&next), &SPEC).unwrap());
            start = end;
        }
        state.map(|s| encode(&s)).unwrap_or_default()
    }

    proptest! {
        #[test]
        fn any_batching_gives_the_same_bytes(
            rows in prop::collection::vec(
                ((0i64..20_000).prop_map(|t| t * 20_000), prop::option::of("[a-z]{1,3}")),
                1..80,
            ),
            cuts in prop::collection::vec(any::<usize>(), 0..5),
        ) {
            prop_assert_eq!(apply_in_batches(&rows, &cuts), apply_in_batches(&rows, &[]));
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes, &SPEC);
        }
    }

    #[test]
    fn hash_matches_python_xxhash() {
        // xxhash.xxh3_64_intdigest(b"cr000123", 0x5EED) in Python.
        assert_eq!(
            xxhash_rust::xxh3::xxh3_64_with_seed(b"cr000123", HASH_SEED),
            2_879_287_466_696_840_138
        );
    }

    #[test]
    fn the_estimate_sums_the_terms_powi_gives() {
        // Every register value at once, in an order that makes the sum's rounding matter.
        let registers: Vec<u8> = (0..=255u8).rev().chain(0..=255u8).collect();
        let by_powi = registers
            .iter()
            .fold(0.0, |sum, r| sum + 2f64.powi(-i32::from(*r)));
        let spec = DistinctSpec {
            precision: 9,
            bucket_ms: 1_000,
        };
        let m = 512.0;
        let raw = 0.7213 / (1.0 + 1.079 / m) * m * m / by_powi;
        assert_eq!(spec.estimate(&registers).to_bits(), raw.to_bits());
    }

    #[test]
    fn estimates_a_few_hundred_values_within_the_error() {
        let spec = DistinctSpec {
            precision: 10,
            bucket_ms: 1_000,
        };
        let values: Vec<String> = (0..300).map(|i| format!("v{i}")).collect();
        let rows: Vec<(i64, Option<&str>)> =
            values.iter().map(|v| (10, Some(v.as_str()))).collect();
        let (state, _) = spec.apply(1_000_000, None, &rows);
        let times = Times {
            now_ms: 100,
            ..Times::default()
        };
        let (estimate, newest) = spec.read(1_000_000, &state, &times).unwrap();
        assert!((285..=315).contains(&estimate), "{estimate}");
        assert_eq!(newest, Some(10));
    }
}
