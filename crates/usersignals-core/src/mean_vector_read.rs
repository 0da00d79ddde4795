//! `MeanVector` read straight from the stored bytes: the serving path's kernel.
//!
//! The same answer as [`MeanVectorSpec::read`] over the decoded state (bit-equal floats,
//! the same refusals and errors), without building it: each bucket's sums are decoded into
//! one buffer reused across buckets and added, decayed, to the totals as they are read, in
//! 64-bit arithmetic where the values fit (a 128-bit multiply or conversion to float is a
//! software routine).

use super::FORMAT_VERSION;
use super::{component_sum, MeanAnswer, MeanVectorSpec, COMPONENT_BITS, SCALE_BITS};
use crate::context::{Refusal, Times};
use crate::decay::{
    get_bucket, get_i128, get_run_into, get_u128, scale_down, to_f64, DecayBuckets,
};
use crate::error::CoreError;
use crate::varint::Reader;

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
        r.expect_version("MeanVector", FORMAT_VERSION)?;
        let newest = r.i64()?;
        let stored_dim = r.u64()?;
        if stored_dim != self.dim as u64 {
            return Err(CoreError::Codec(format!(
                "MeanVector of dimension {stored_dim}, expected {}",
                self.dim
            )));
        }
        // As `decode`: a bucket is at least 5 bytes.
        let count = r.len(5)?;
        let view = times.view_time(newest);
        let counted = decay.counted_range(newest, view);
        let mut totals = vec![0.0f64; self.dim + 1];
        let range = counted.as_ref().ok().copied();
        let last_top = self.sum(&mut r, count, &decay, view, range, &mut totals)?;
        if !r.is_done() {
            return Err(CoreError::Codec(
                "trailing bytes after MeanVector state".into(),
            ));
        }
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
            get_run_into(r, self.dim, &mut quotients)?;
            let factor = match range {
                Some((first, last)) if first <= bucket && bucket <= last => {
                    if bucket == last {
                        last_top = Some(top);
                    }
                    Some(scale_down(decay.decay_to(bucket, view), SCALE_BITS))
                }
                _ => None,
            };
            let Some(factor) = factor else {
                // Not counted: only checked.
                for quotient in &quotients {
                    component_sum(*quotient, d)?;
                }
                continue;
            };
            totals[0] += to_f64(scale) * factor;
            for (total, quotient) in totals[1..].iter_mut().zip(&quotients) {
                *total += to_f64(component_sum(*quotient, d)?) * factor;
            }
        }
        Ok(last_top)
    }
}
