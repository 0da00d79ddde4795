//! `MeanVector` read straight from the stored bytes: the serving path's kernel.
//!
//! The same answer as [`MeanVectorSpec::read`] over the decoded state (bit-equal floats,
//! the same refusals and errors), without building it: each bucket's sums are decoded into
//! one buffer reused across buckets and added, decayed, to the totals as they are read, in
//! 64-bit arithmetic where the values fit (a 128-bit multiply or conversion to float is a
//! software routine).

use super::{component_sum, MeanAnswer, MeanVectorSpec, COMPONENT_BITS, SCALE_BITS};
use crate::context::{Refusal, Times};
use crate::decay::{
    get_bucket, get_i128, get_run_or_narrow, get_u128, scale_down, to_f64, DecayBuckets, RunRead,
};
use crate::error::CoreError;
use crate::varint::{self, Reader};

impl MeanVectorSpec {
    /// `read` straight from the stored bytes. A state that does not decode is an error, as
    /// for `decode`, whether or not the read would have refused.
    pub fn read_stored(
        &self,
        retention_ms: i64,
        data: &[u8],
        times: &Times,
    ) -> Result<Result<(MeanAnswer, Option<i64>), Refusal>, CoreError> {
        let decay = self.buckets(retention_ms);
        let mut r = Reader::new(data);
        let (newest, count) = super::read_header(&mut r, self.dim)?;
        let view = times.view_time(newest);
        let counted = decay.counted_range(newest, view);
        let mut totals = vec![0.0f64; self.dim + 1];
        let range = counted.as_ref().ok().copied();
        let last_top = self.sum(&mut r, count, &decay, view, range, &mut totals)?;
        r.expect_done("MeanVector state")?;
        if let Err(refusal) = counted.and_then(|_| DecayBuckets::check_last_top(last_top, view)) {
            return Ok(Err(refusal));
        }
        if count == 0 {
            return Ok(Ok((MeanAnswer::default(), None))); // after the refusal, as `read`
        }
        let weight = totals[0];
        let vector = (weight != 0.0).then(|| {
            let scale = scale_down(1.0, COMPONENT_BITS) / weight;
            totals[1..].iter().map(|v| v * scale).collect()
        });
        // Not capped at `until`: this read ignores it and counts every event up to the view.
        let newest = newest.min(view);
        Ok(Ok((MeanAnswer { vector, weight }, Some(newest))))
    }

    /// Reads the `count` buckets (checked as `decode` checks them) and adds each counted
    /// one (`range`; `None`: none), decayed to `view`, to `totals`, ascending by bucket as
    /// `read` does; returns the newest time of the last counted bucket, if the state has it.
    fn sum(
        &self,
        r: &mut Reader<'_>,
        count: usize,
        decay: &DecayBuckets,
        view: i64,
        range: Option<(i64, i64)>,
        totals: &mut [f64],
    ) -> Result<Option<i64>, CoreError> {
        let mut quotients = Vec::with_capacity(self.dim);
        let (mut previous, mut last_top) = (None, None);
        for _ in 0..count {
            let (bucket, top) = get_bucket(r, previous, decay.bucket_ms)?;
            previous = Some(bucket);
            let scale = get_i128(r)?;
            let d = i128::try_from(get_u128(r)?)
                .map_err(|_| CoreError::Codec("divisor out of range".into()))?;
            let run = get_run_or_narrow(r, self.dim, &mut quotients)?;
            let factor = match range {
                Some((first, last)) if first <= bucket && bucket <= last => {
                    if bucket == last {
                        last_top = Some(top);
                    }
                    Some(scale_down(decay.decay_to(bucket, view), SCALE_BITS))
                }
                _ => None,
            };
            if let Some(factor) = factor {
                totals[0] += to_f64(scale) * factor;
            }
            read_components(run, d, factor, &mut totals[1..], &mut quotients)?;
        }
        Ok(last_top)
    }
}

/// A bucket's components (its quotients' run, as `get_run_or_narrow` read it, and its
/// divisor `d`): added times `factor` to `totals` when the bucket is counted, else only
/// checked, as `add_components` and `check_components` do over the unpacked quotients.
/// A run packed in at most 56 bits with a divisor of 64 bits (nearly every bucket) is
/// added as it is unpacked: its products fit i128, so there is nothing to check.
fn read_components(
    run: RunRead<'_>,
    d: i128,
    factor: Option<f64>,
    totals: &mut [f64],
    quotients: &mut Vec<u128>,
) -> Result<(), CoreError> {
    if let (RunRead::Narrow { bytes, width }, Ok(d64)) = (&run, i64::try_from(d)) {
        if let Some(factor) = factor {
            add_narrow(totals, bytes, *width, d64, factor);
        }
        return Ok(());
    }
    if let RunRead::Narrow { bytes, width } = run {
        varint::unpack_bits_into(bytes, totals.len(), width, quotients);
    }
    match factor {
        Some(factor) => add_components(totals, quotients, d, factor),
        None => check_components(quotients, d), // not counted: only checked
    }
}

/// `add_components` of quotients packed in `width` (at most 56) bits, read in place: each
/// quotient unzigzagged is below 2^55 in size, so its product with `d` (64 bits) is the
/// `i64` one or, past 64 bits, the `i128` one `component_sum` makes (never an error).
fn add_narrow(totals: &mut [f64], bytes: &[u8], width: u32, d: i64, factor: f64) {
    let mut slots = totals.iter_mut();
    varint::for_each_narrow(bytes, slots.len(), width, |quotient| {
        let q = varint::unzigzag(quotient);
        let sum = match d <= 1 {
            true => q as f64,
            false => match q.checked_mul(d) {
                Some(sum) => sum as f64,
                None => to_f64(i128::from(q) * i128::from(d)),
            },
        };
        if let Some(total) = slots.next() {
            *total += sum * factor;
        }
    });
}

/// A stored quotient (zigzag) that fits 64 bits, as the `i64` it stands for.
fn unzigzag64(quotient: u128) -> Option<i64> {
    u64::try_from(quotient).ok().map(varint::unzigzag)
}

/// Adds each component's sum (`component_sum` of its quotient and the bucket's divisor `d`)
/// times `factor` to `totals`, as `to_f64(component_sum(..)?) * factor` would: for a
/// divisor and quotients of 64 bits (nearly all), the product is made and converted in
/// 64 bits, without the 128-bit values' conversions and checks per component (a third of
/// a MeanVector read's instructions, callgrind, bench/read_kernels.py); any other goes the
/// 128-bit way.
fn add_components(
    totals: &mut [f64],
    quotients: &[u128],
    d: i128,
    factor: f64,
) -> Result<(), CoreError> {
    let Ok(d64) = i64::try_from(d) else {
        for (total, quotient) in totals.iter_mut().zip(quotients) {
            *total += to_f64(component_sum(*quotient, d)?) * factor;
        }
        return Ok(());
    };
    for (total, quotient) in totals.iter_mut().zip(quotients) {
        let sum = unzigzag64(*quotient).and_then(|q| {
            if d64 <= 1 {
                Some(q)
            } else {
                q.checked_mul(d64)
            }
        });
        let sum = match sum {
            Some(sum) => sum as f64,
            None => to_f64(component_sum(*quotient, d)?),
        };
        *total += sum * factor;
    }
    Ok(())
}

/// `component_sum`'s check of a bucket that is not counted: a quotient and a divisor of 64
/// bits cannot leave i128, so only others are checked.
fn check_components(quotients: &[u128], d: i128) -> Result<(), CoreError> {
    if i64::try_from(d).is_ok() && quotients.iter().all(|q| unzigzag64(*q).is_some()) {
        return Ok(());
    }
    for quotient in quotients {
        component_sum(*quotient, d)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Quotients (zigzag) and divisors of every size: 64-bit ones, products past 64 bits,
    /// values past 64 bits, and products past i128 (an error).
    fn quotient() -> impl Strategy<Value = u128> {
        prop_oneof![
            0u128..1 << 20,
            any::<u64>().prop_map(u128::from),
            any::<u128>()
        ]
    }

    fn divisor() -> impl Strategy<Value = i128> {
        prop_oneof![
            0i128..3,
            1i128..1 << 20,
            any::<u64>().prop_map(|d| i128::from(d >> 1)),
            any::<u64>().prop_map(i128::from),
            (0i128..i128::MAX)
        ]
    }

    proptest! {
        /// The 64-bit path adds the very floats (and fails where) the 128-bit one does.
        #[test]
        fn components_add_as_the_128_bit_sums_do(
            quotients in prop::collection::vec(quotient(), 0..8),
            d in divisor(),
            factor in prop_oneof![Just(1.0), 1e-12f64..1e3],
        ) {
            let start: Vec<f64> = (0..quotients.len()).map(|i| i as f64 * 0.25).collect();
            let mut reference = start.clone();
            let expected = quotients.iter().zip(reference.iter_mut()).try_for_each(|(q, total)| {
                *total += to_f64(component_sum(*q, d)?) * factor;
                Ok::<(), CoreError>(())
            });
            let mut totals = start;
            let got = add_components(&mut totals, &quotients, d, factor);
            prop_assert_eq!(got.is_ok(), expected.is_ok());
            if got.is_ok() {
                let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(bits(&totals), bits(&reference));
            }
            let checked = quotients.iter().try_for_each(|q| component_sum(*q, d).map(|_| ()));
            prop_assert_eq!(check_components(&quotients, d), checked);
        }

        /// A run read by `get_run_or_narrow` and `read_components` adds the floats (and
        /// fails where, leaving the reader where) `get_run_into` then `add_components`, or
        /// `check_components` for a bucket not counted, do: packed runs narrow and wide,
        /// varint runs, and truncated ones.
        #[test]
        fn components_read_in_place_as_unpacked(
            quotients in prop::collection::vec(prop_oneof![
                0u128..1 << 20,
                0u128..1 << 56,
                (0u128..1 << 56).prop_map(|q| q | 1 << 55),
                quotient(),
            ], 0..12),
            d in divisor(),
            factor in prop::option::of(prop_oneof![Just(1.0), 1e-12f64..1e3]),
            cut in prop::option::of(0usize..64),
        ) {
            let mut bytes = Vec::new();
            crate::decay::put_run(&mut bytes, &quotients);
            if let Some(cut) = cut {
                bytes.truncate(cut.min(bytes.len()));
            }
            let start: Vec<f64> = (0..quotients.len()).map(|i| i as f64 * 0.5).collect();
            let (mut expected_totals, mut totals) = (start.clone(), start);
            let mut r = Reader::new(&bytes);
            let mut unpacked = Vec::new();
            let expected = crate::decay::get_run_into(&mut r, quotients.len(), &mut unpacked)
                .and_then(|()| match factor {
                    Some(f) => add_components(&mut expected_totals, &unpacked, d, f),
                    None => check_components(&unpacked, d),
                });
            let expected_left = r.left();
            let mut r = Reader::new(&bytes);
            let mut buffer = Vec::new();
            let got = get_run_or_narrow(&mut r, quotients.len(), &mut buffer)
                .and_then(|run| read_components(run, d, factor, &mut totals, &mut buffer));
            prop_assert_eq!(&got, &expected);
            prop_assert_eq!(r.left(), expected_left);
            if got.is_ok() {
                let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(bits(&totals), bits(&expected_totals));
            }
        }
    }
}
