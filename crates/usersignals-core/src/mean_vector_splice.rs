//! `MeanVector` applied over its stored bytes, re-encoding only the buckets a batch reaches.
//!
//! A state keeps a bucket a day for its whole retention (90 days in the reference module,
//! 33 numbers a bucket there), and a micro-batch of a live stream reaches one or two of them:
//! decoding every bucket, finding each one's common divisor again and encoding it was most of
//! the aggregation's cost per batch (callgrind: `mean_vector::encode` the largest single
//! codec step of the engine). A bucket's bytes after its header are a function of its sums
//! alone, so a bucket no row reaches is carried over as the bytes it was stored as; only the
//! headers are written again (each holds the gap from the bucket before it, which changes
//! when older buckets expire). The bytes are those [`apply_stored`] writes (a proptest
//! holds them equal), for states this codec wrote.
//!
//! A carried bucket's sums are not decoded, so a stored state whose sums are out of range
//! is refused only when a batch reaches that bucket (or a read does); its structure is
//! checked throughout, as `decode` checks it.

use super::{apply_stored, get_sums, put_sums, read_header, FORMAT_VERSION};
use super::{MeanVectorSpec, VectorRow, VectorState};
use crate::decay::{get_bucket, get_u128, skip_run, DecayBuckets, Tops};
use crate::error::CoreError;
use crate::splice::{self, StoredBucket};
use crate::varint::{put_i64, put_u64, Reader};

/// `apply_stored`'s answer (the new state's bytes, the rows older than the buckets it
/// keeps), decoding and encoding only the buckets `rows` fall in.
pub fn apply_spliced(
    spec: &MeanVectorSpec,
    retention_ms: i64,
    old: Option<&[u8]>,
    rows: &[VectorRow<'_>],
) -> Result<(Vec<u8>, usize), CoreError> {
    let Some(data) = old else {
        return apply_stored(spec, retention_ms, None, rows);
    };
    let decay = spec.buckets(retention_ms);
    let (newest, stored) = scan(data, spec.dim, decay.bucket_ms)?;
    let reached = splice::reached(&decay, rows);
    let mut partial = VectorState {
        newest,
        tops: Tops::with_capacity(reached.len()),
        ..VectorState::default()
    };
    for bucket in stored
        .iter()
        .filter(|b| reached.binary_search(&b.bucket).is_ok())
    {
        let sums = get_sums(&mut Reader::new(&data[bucket.body.clone()]), spec.dim)?;
        partial.buckets.insert(bucket.bucket, sums);
        partial.tops.insert(bucket.bucket, bucket.top);
    }
    let (state, expired) = spec.apply(retention_ms, Some(partial), rows);
    let first = decay.first_kept(state.newest);
    let carried: Vec<&StoredBucket> = (stored.iter())
        .filter(|b| b.bucket >= first && reached.binary_search(&b.bucket).is_err())
        .collect();
    Ok((merged(data, &state, &carried, spec.dim, &decay), expired))
}

/// The state's bytes: its header, then the applied buckets (encoded) and the `carried` ones
/// (their stored sums as they were), in ascending order.
fn merged(
    data: &[u8],
    state: &VectorState,
    carried: &[&StoredBucket],
    dim: usize,
    decay: &DecayBuckets,
) -> Vec<u8> {
    let carried_bytes: usize = carried.iter().map(|b| b.body.len() + 8).sum();
    let mut out = Vec::with_capacity(16 + carried_bytes + state.buckets.len() * (8 + 3 * dim));
    out.push(FORMAT_VERSION);
    put_i64(&mut out, state.newest);
    put_u64(&mut out, dim as u64);
    put_u64(&mut out, (state.buckets.len() + carried.len()) as u64);
    let mut quotients = Vec::with_capacity(dim);
    let applied = (state.buckets.iter()).map(|(bucket, sums)| {
        let top = state.tops.get(bucket).copied().unwrap_or(0);
        (*bucket, top, sums)
    });
    splice::put_buckets(
        &mut out,
        data,
        decay.bucket_ms,
        applied,
        carried,
        |out, sums| put_sums(out, sums, &mut quotients),
    );
    out
}

/// The stored state's newest time and its buckets, their sums passed over, with the checks
/// `decode` makes of the structure (the version, the dimension, the bucket order, the
/// lengths, nothing after the last bucket).
fn scan(data: &[u8], dim: usize, bucket_ms: i64) -> Result<(i64, Vec<StoredBucket>), CoreError> {
    let mut r = Reader::new(data);
    let (newest, count) = read_header(&mut r, dim)?;
    let mut buckets = Vec::with_capacity(count);
    let mut previous = None;
    for _ in 0..count {
        let (bucket, top) = get_bucket(&mut r, previous, bucket_ms)?;
        previous = Some(bucket);
        let start = data.len() - r.left();
        get_u128(&mut r)?; // Σ scale
        super::divisor(get_u128(&mut r)?)?;
        skip_run(&mut r, dim)?;
        let body = start..data.len() - r.left();
        buckets.push(StoredBucket { bucket, top, body });
    }
    r.expect_done("MeanVector state")?;
    Ok((newest, buckets))
}
