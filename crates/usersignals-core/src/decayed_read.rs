//! `DecayedScores` read straight from the stored bytes: the serving path's kernel.
//!
//! The same answer as [`DecayedSpec::read`] over the decoded state (bit-equal scores, the
//! same order, refusals and errors), without building the state: the key dictionary stays
//! borrowed from the bytes (a key becomes text only when it is excluded or written), each
//! bucket's cells are summed into the keys' scores as they are read, through buffers
//! reused across buckets, and the top k is selected, not the whole list sorted.

use std::cmp::Ordering;

use super::{decode_key_indices_into, top_k, ClassRef, DecayedSpec};
use super::{FORMAT_VERSION, SCORE_BITS, SIGNED_SUMS};
use crate::context::{NameSet, Refusal, Times};
use crate::decay::{get_bucket, get_run_form_or_narrow, scale_down, to_f64, unzigzag};
use crate::decay::{DecayBuckets, RunRead};
use crate::error::CoreError;
use crate::last_n::view::column_refs;
use crate::value::{Value, ValueRef};
use crate::varint::{self, Reader};

/// A read's answer over the stored bytes: `(key, score)`, best first, keys borrowed.
pub type StoredProfile<'a> = Vec<(ValueRef<'a>, f64)>;

impl DecayedSpec {
    /// `read` straight from the stored bytes. A state that does not decode is an error, as
    /// for `decode`, whether or not the read would have refused.
    pub fn read_stored<'a>(
        &self,
        retention_ms: i64,
        data: &'a [u8],
        times: &Times,
        exclude: &NameSet,
        limit: Option<usize>,
    ) -> Result<Result<(StoredProfile<'a>, Option<i64>), Refusal>, CoreError> {
        let decay = self.buckets(retention_ms);
        let mut r = Reader::new(data);
        r.expect_version("DecayedScores", FORMAT_VERSION)?;
        let newest = r.i64()?;
        let key_count = r.len(1)?;
        let keys = column_refs(&mut r, key_count)?;
        check_key_order(&keys)?;
        let signed = match r.u8()? {
            0 => false,
            SIGNED_SUMS => true,
            flags => return Err(CoreError::Codec(format!("unknown flags {flags}"))),
        };
        let view = times.view_time(newest);
        // The buckets to count are known from the header; the refusal waits for the bytes
        // to be read through, as `decode` then `read` would.
        let counted = decay.counted_range(newest, view);
        let buckets = Buckets {
            decay: &decay,
            key_count,
            signed,
            view,
            range: counted.as_ref().ok().copied(),
        };
        let (scores, last_top) = buckets.sum(&mut r)?;
        r.expect_done("DecayedScores state")?;
        if let Err(refusal) = counted.and_then(|_| DecayBuckets::check_last_top(last_top, view)) {
            return Ok(Err(refusal));
        }
        let top = self.top(&keys, &scores, exclude, limit);
        // Not capped at `until`: this read ignores it and counts every event up to the view.
        Ok(Ok((top, Some(newest.min(view)))))
    }

    /// The top `limit` (or `top_k`) of the scored keys not in `exclude`, best first: score
    /// descending, then key descending, as `profile` orders them.
    fn top<'a>(
        &self,
        keys: &[ValueRef<'a>],
        scores: &[Option<f64>],
        exclude: &NameSet,
        limit: Option<usize>,
    ) -> StoredProfile<'a> {
        let k = limit.filter(|l| *l > 0).unwrap_or(self.top_k);
        let mut text = String::new();
        let mut excluded = |key: &ValueRef<'_>| {
            !exclude.is_empty() && key.text(&mut text).is_some_and(|t| exclude.contains(t))
        };
        // Sized once: collecting a filter grows the vector by doubling from four.
        let mut candidates: Vec<(f64, u32)> = Vec::with_capacity(scores.len());
        candidates.extend(
            scores
                .iter()
                .enumerate()
                .filter_map(|(i, score)| Some(((*score)?, i as u32)))
                .filter(|(_, i)| !excluded(&keys[*i as usize])),
        );
        let key_of = |i: u32| keys[i as usize];
        // Keys are stored in class order. Among strings only, or ints and bools only, that
        // is Python's order too, so a key compares by its index: a total order (no score is
        // NaN: every decay factor is at most 1), in which the first k of a selection are
        // those of a sort. Other mixes go through `top_k`, which orders them as Python does.
        let by_index = candidates.iter().all(|(_, i)| is_text(&key_of(*i)))
            || candidates.iter().all(|(_, i)| is_integer(&key_of(*i)));
        if !by_index || candidates.iter().any(|(score, _)| score.is_nan()) {
            let owned: Vec<Value> = candidates
                .iter()
                .map(|(_, i)| key_of(*i).to_value())
                .collect();
            let mut ranked: Vec<(f64, &Value, u32)> = candidates
                .iter()
                .zip(&owned)
                .map(|((score, i), value)| (*score, value, *i))
                .collect();
            top_k(&mut ranked, k);
            return ranked.iter().map(|(s, _, i)| (key_of(*i), *s)).collect();
        }
        let order = |a: &(f64, u32), b: &(f64, u32)| {
            b.0.partial_cmp(&a.0)
                .unwrap_or(Ordering::Equal)
                .then(b.1.cmp(&a.1))
        };
        if k < candidates.len() {
            candidates.select_nth_unstable_by(k, order);
            candidates.truncate(k);
        }
        candidates.sort_unstable_by(order);
        candidates.iter().map(|(s, i)| (key_of(*i), *s)).collect()
    }
}

/// What summing the stored buckets needs to know.
struct Buckets<'d> {
    decay: &'d DecayBuckets,
    key_count: usize,
    signed: bool,
    view: i64,
    /// The first and last bucket counted; `None`: the read refuses, count none.
    range: Option<(i64, i64)>,
}

impl Buckets<'_> {
    /// Reads every bucket (checked as `decode` checks it) and sums the counted ones into
    /// each key's score, ascending by bucket as `scores` does (so each float is bit-equal);
    /// also the newest time of the last counted bucket, if the state has that bucket.
    fn sum(&self, r: &mut Reader<'_>) -> Result<(Vec<Option<f64>>, Option<i64>), CoreError> {
        let bucket_count = r.len(3)?;
        let mut scores: Vec<Option<f64>> = vec![None; self.key_count];
        let (mut indices, mut sums) = (Vec::new(), Vec::new());
        let (mut previous, mut last_top) = (None, None);
        for _ in 0..bucket_count {
            let (bucket, top) = get_bucket(r, previous, self.decay.bucket_ms)?;
            previous = Some(bucket);
            let header = r.u64()?;
            let count = usize::try_from(header >> 2).unwrap_or(usize::MAX);
            decode_key_indices_into(r, count, header & 1 == 1, self.key_count, &mut indices)?;
            let run = get_run_form_or_narrow(r, count, header & 2 == 2, &mut sums)?;
            let factor = match self.range {
                Some((first, last)) if first <= bucket && bucket <= last => {
                    if bucket == last {
                        last_top = Some(top);
                    }
                    let decayed = self.decay.decay_to(bucket, self.view);
                    Some(scale_down(decayed, SCORE_BITS))
                }
                _ => None,
            };
            self.add_cells(run, &indices, &sums, factor, &mut scores)?;
        }
        Ok((scores, last_top))
    }

    /// A bucket's cells (its keys' indices, its sums' run as `get_run_form_or_narrow` read
    /// it): each sum converted (an error past i128) and, when the bucket is counted, added
    /// times `factor` to its key's score. A run packed in at most 56 bits is added as it is
    /// unpacked; its sums convert without error, so a bucket not counted has nothing to do.
    fn add_cells(
        &self,
        run: RunRead<'_>,
        indices: &[u32],
        sums: &[u128],
        factor: Option<f64>,
        scores: &mut [Option<f64>],
    ) -> Result<(), CoreError> {
        let RunRead::Narrow { bytes, width } = run else {
            for (index, sum) in indices.iter().zip(sums) {
                let sum = self.value(*sum)?;
                if let Some(factor) = factor {
                    *scores[*index as usize].get_or_insert(0.0) += sum * factor;
                }
            }
            return Ok(());
        };
        let Some(factor) = factor else {
            return Ok(());
        };
        let mut cells = indices.iter();
        varint::for_each_narrow(bytes, indices.len(), width, |stored| {
            // `value` of a sum of 64 bits.
            let sum = match self.signed {
                true => varint::unzigzag(stored) as f64,
                false => stored as f64,
            };
            if let Some(index) = cells.next() {
                *scores[*index as usize].get_or_insert(0.0) += sum * factor;
            }
        });
        Ok(())
    }
}

impl Buckets<'_> {
    /// A stored sum as the float the scores add: `to_f64` of its i128 (zigzag when the sums
    /// are signed), an error past i128. A sum of 64 bits (nearly all) is converted in 64
    /// bits, the same correctly rounded value without the 128-bit conversions and checks
    /// (callgrind, bench/read_kernels.py).
    fn value(&self, stored: u128) -> Result<f64, CoreError> {
        if let Ok(small) = u64::try_from(stored) {
            return Ok(match self.signed {
                true => varint::unzigzag(small) as f64,
                false => small as f64,
            });
        }
        let sum = match self.signed {
            true => unzigzag(stored),
            false => {
                i128::try_from(stored).map_err(|_| CoreError::Codec("sum out of range".into()))?
            }
        };
        Ok(to_f64(sum))
    }
}

fn is_text(key: &ValueRef<'_>) -> bool {
    matches!(
        key,
        ValueRef::Str(_) | ValueRef::Prefixed(..) | ValueRef::Digits(..)
    )
}

fn is_integer(key: &ValueRef<'_>) -> bool {
    matches!(key, ValueRef::Int(_) | ValueRef::Bool(_))
}

/// `decode`'s check of the key dictionary: every value a key, in strictly ascending class
/// order (`ClassRef`'s), compared without building the strings where the column's form
/// allows it.
fn check_key_order(keys: &[ValueRef<'_>]) -> Result<(), CoreError> {
    let mut texts = (String::new(), String::new());
    let mut previous: Option<&ValueRef<'_>> = None;
    for key in keys {
        let ascending = match previous {
            None => is_key(key),
            Some(last) => class_cmp(last, key, &mut texts) == Some(Ordering::Less),
        };
        if !ascending {
            return Err(CoreError::Codec("keys out of order or not keys".into()));
        }
        previous = Some(key);
    }
    Ok(())
}

/// A number's class (`ClassRef` of the owned value, which for a number borrows nothing).
fn number_class(key: &ValueRef<'_>) -> Option<ClassRef<'static>> {
    Some(match ClassRef::of(&key.to_value())? {
        ClassRef::Num(n) => ClassRef::Num(n),
        ClassRef::Float(bits) => ClassRef::Float(bits),
        ClassRef::Str(_) => return None,
    })
}

fn is_key(key: &ValueRef<'_>) -> bool {
    is_text(key) || number_class(key).is_some()
}

/// The order of two keys' classes, `None` when the second is not a key (the first was
/// checked before it). Numbers come before strings, as `ClassRef`'s variants do.
fn class_cmp(a: &ValueRef<'_>, b: &ValueRef<'_>, texts: &mut (String, String)) -> Option<Ordering> {
    match (is_text(a), is_text(b)) {
        (false, false) => Some(number_class(a)?.cmp(&number_class(b)?)),
        (false, true) => Some(Ordering::Less),
        (true, false) => number_class(b).map(|_| Ordering::Greater),
        (true, true) => Some(text_cmp(a, b, texts)),
    }
}

/// Two strings' order. Within one column the prefix (and a digits column's width) is
/// shared, so the suffixes, or the zero-padded numbers, order as the whole texts do.
fn text_cmp(a: &ValueRef<'_>, b: &ValueRef<'_>, texts: &mut (String, String)) -> Ordering {
    match (*a, *b) {
        (ValueRef::Str(x), ValueRef::Str(y)) => x.cmp(y),
        (ValueRef::Prefixed(p, x), ValueRef::Prefixed(q, y)) if p == q => x.cmp(y),
        (ValueRef::Digits(p, w, x), ValueRef::Digits(q, v, y)) if p == q && w == v => x.cmp(&y),
        _ => a.text(&mut texts.0).cmp(&b.text(&mut texts.1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The 64-bit conversion gives the float (or the error) of the 128-bit one.
        #[test]
        fn stored_sums_convert_as_the_128_bit_ones(
            stored in prop_oneof![0u128..1 << 20, any::<u64>().prop_map(u128::from), any::<u128>()],
            signed in any::<bool>(),
        ) {
            let decay = DecayBuckets::new(3_600_000, 86_400_000);
            let buckets =
                Buckets { decay: &decay, key_count: 0, signed, view: 0, range: None };
            let expected = match signed {
                true => Ok(unzigzag(stored)),
                false => i128::try_from(stored)
                    .map_err(|_| CoreError::Codec("sum out of range".into())),
            };
            let got = buckets.value(stored).map(f64::to_bits);
            prop_assert_eq!(got, expected.map(|sum| to_f64(sum).to_bits()));
        }

        /// A bucket's sums read by `get_run_form_or_narrow` and `add_cells` give the scores
        /// (and the error, and leave the reader where) `get_run_form_into` and the loop
        /// over the unpacked sums did: packed runs narrow and wide, varint runs, truncated
        /// ones, buckets counted or not.
        #[test]
        fn cells_add_in_place_as_unpacked(
            cells in prop::collection::vec((0u32..6, prop_oneof![
                0u128..1 << 20,
                0u128..1 << 56,
                (0u128..1 << 56).prop_map(|q| q | 1 << 55),
                any::<u64>().prop_map(u128::from),
                any::<u128>(),
            ]), 0..12),
            signed in any::<bool>(),
            factor in prop::option::of(prop_oneof![Just(1.0), 1e-12f64..1e3]),
            cut in prop::option::of(0usize..64),
        ) {
            let (indices, stored): (Vec<u32>, Vec<u128>) = cells.into_iter().unzip();
            let form = crate::decay::RunForm::of(stored.iter().copied());
            let mut bytes = Vec::new();
            form.write(&mut bytes, stored.iter().copied());
            if let Some(cut) = cut {
                bytes.truncate(cut.min(bytes.len()));
            }
            let decay = DecayBuckets::new(3_600_000, 86_400_000);
            let buckets = Buckets { decay: &decay, key_count: 6, signed, view: 0, range: None };
            let start: Vec<Option<f64>> = (0..6).map(|i| (i % 2 == 0).then_some(i as f64)).collect();
            let mut expected_scores = start.clone();
            let mut r = Reader::new(&bytes);
            let mut sums = Vec::new();
            let expected = crate::decay::get_run_form_into(&mut r, stored.len(), form.packed, &mut sums)
                .and_then(|()| {
                    for (index, sum) in indices.iter().zip(&sums) {
                        let sum = buckets.value(*sum)?;
                        if let Some(factor) = factor {
                            *expected_scores[*index as usize].get_or_insert(0.0) += sum * factor;
                        }
                    }
                    Ok(())
                });
            let expected_left = r.left();
            let mut scores = start;
            let mut r = Reader::new(&bytes);
            let mut buffer = Vec::new();
            let got = get_run_form_or_narrow(&mut r, stored.len(), form.packed, &mut buffer)
                .and_then(|run| buckets.add_cells(run, &indices, &buffer, factor, &mut scores));
            prop_assert_eq!(&got, &expected);
            prop_assert_eq!(r.left(), expected_left);
            if got.is_ok() {
                let bits = |v: &[Option<f64>]| v.iter().map(|f| f.map(f64::to_bits)).collect::<Vec<_>>();
                prop_assert_eq!(bits(&scores), bits(&expected_scores));
            }
        }
    }
}
