//! `DecayedScores` applied over its stored bytes, re-encoding only the buckets a batch
//! reaches, where the rest of the state's bytes cannot have changed.
//!
//! As for `MeanVector` (`mean_vector_splice.rs`): a state keeps a bucket a day for its
//! retention, and a live micro-batch reaches one or two. A bucket's cells are stored by index
//! into the state's key dictionary, with every sum zigzag when any sum of the state is
//! negative; so a bucket no row reaches keeps its bytes exactly when the dictionary keeps its
//! indices and the sums their form. Here that is when no key is new (a new key moves the
//! indices after it), no stored bucket expires (its keys might leave the dictionary), and
//! the reached buckets' sums say the form stays as it was (a state that was signed stays so
//! when a reached bucket still holds a negative sum; one that was not, when none does). Any
//! other batch takes the full path, [`apply_stored`]. The bytes are the full path's (a
//! proptest holds them equal), for states this codec wrote.
//!
//! A carried bucket's cells are not decoded, so a stored state whose cells are damaged (a
//! key index out of range, a sum out of range) is refused only when a batch reaches that
//! bucket, or a read or a full application decodes it; its structure is checked
//! throughout.

use super::{add_row, apply_stored, encode, get_cells, holds_negative, is_new_key};
use super::{put_cells, read_buckets, read_header};
use super::{Cells, DecayedSpec, ScoresRow, ScoresState, FORMAT_VERSION, SIGNED_SUMS};
use crate::decay::{get_bucket, get_u128, DecayBuckets, DecayedState, Tops};
use crate::error::CoreError;
use crate::last_n;
use crate::splice::{self, StoredBucket};
use crate::value::Value;
use crate::varint::{put_i64, put_u64, Reader};

/// A stored bucket as the scan found it, and whether a sum of it is negative (known of a
/// signed state's buckets only).
struct Scanned {
    stored: StoredBucket,
    negative: bool,
}

impl Scanned {
    fn decoded(&self, data: &[u8], key_count: usize, signed: bool) -> Result<Cells, CoreError> {
        let mut body = Reader::new(&data[self.stored.body.clone()]);
        get_cells(&mut body, self.stored.bucket, key_count, signed)
    }
}

/// The reached buckets of a state under its whole key dictionary. Their fold must not
/// forget the keys only the carried buckets hold, nor drop a bucket: [`apply_spliced`] takes
/// this path only when no stored bucket lies before the first one kept, and rows older than
/// that expire without making one.
#[derive(Default)]
struct Reached(ScoresState);

impl DecayedState for Reached {
    fn newest_mut(&mut self) -> &mut i64 {
        &mut self.0.newest
    }

    fn tops_mut(&mut self) -> &mut Tops {
        &mut self.0.tops
    }

    fn drop_before(&mut self, first: i64) {
        debug_assert!(self.0.buckets.iter().all(|cells| cells.bucket >= first));
    }
}

/// `apply_stored`'s answer (the new state's bytes, the rows older than the buckets it
/// keeps), decoding and encoding only the buckets `rows` fall in where it can.
pub fn apply_spliced(
    spec: &DecayedSpec,
    retention_ms: i64,
    old: Option<&[u8]>,
    rows: &[ScoresRow<'_>],
) -> Result<(Vec<u8>, usize), CoreError> {
    let Some(data) = old else {
        return apply_stored(spec, retention_ms, None, rows);
    };
    let decay = spec.buckets(retention_ms);
    let mut r = Reader::new(data);
    let header = read_header(&mut r)?;
    if brings_a_new_key(spec, &header.keys, rows) {
        // A key new to the dictionary moves the indices after it, in every bucket.
        let state = read_buckets(&mut r, header, decay.bucket_ms)?;
        return Ok(applied_whole(spec, retention_ms, state, rows));
    }
    let (count, key_count) = (header.bucket_count, header.keys.len());
    let stored = scan(
        &mut r,
        data.len(),
        count,
        key_count,
        header.signed,
        decay.bucket_ms,
    )?;
    let newest = (header.newest)
        .max(rows.last().map_or(0, |row| row.ts))
        .max(0);
    // A bucket that expires may take keys out of the dictionary: every bucket decoded.
    let whole = (stored.first()).is_some_and(|b| b.stored.bucket < decay.first_kept(newest));
    let reached = splice::reached(&decay, rows);
    let reaches = |b: &&Scanned| reached.binary_search(&b.stored.bucket).is_ok();
    let mut state = ScoresState {
        newest: header.newest,
        keys: header.keys,
        buckets: Vec::with_capacity(if whole { count } else { reached.len() }),
        tops: Tops::with_capacity(if whole { count } else { reached.len() }),
    };
    for bucket in stored.iter().filter(|b| whole || reaches(b)) {
        state
            .buckets
            .push(bucket.decoded(data, key_count, header.signed)?);
        state.tops.insert(bucket.stored.bucket, bucket.stored.top);
    }
    if whole {
        return Ok(applied_whole(spec, retention_ms, state, rows));
    }
    let (Reached(mut state), expired) = decay.fold(
        &spec.decay,
        Some(Reached(state)),
        rows,
        |state, row, bucket, weight| add_row(&decay, &mut state.0, row, bucket, weight),
    );
    if state.keys.len() != key_count {
        // Not met: the rows' keys were looked for in the dictionary.
        return apply_stored(spec, retention_ms, old, rows);
    }
    let carried: Vec<&Scanned> = stored.iter().filter(|b| !reaches(b)).collect();
    let signed = holds_negative(&state.buckets) || carried.iter().any(|b| b.negative);
    if signed != header.signed {
        // Every sum's form changes: the carried buckets decoded too, and all encoded.
        for bucket in carried {
            state
                .buckets
                .push(bucket.decoded(data, key_count, header.signed)?);
            state.tops.insert(bucket.stored.bucket, bucket.stored.top);
        }
        state.buckets.sort_unstable_by_key(|cells| cells.bucket);
        return Ok((encode(&state, decay.bucket_ms), expired));
    }
    #[cfg(test)]
    SPLICED.with(|spliced| spliced.set(spliced.get() + 1));
    let carried: Vec<&StoredBucket> = carried.iter().map(|b| &b.stored).collect();
    Ok((merged(data, &state, &carried, signed, &decay), expired))
}

/// The full path's answer from the whole decoded state.
fn applied_whole(
    spec: &DecayedSpec,
    retention_ms: i64,
    state: ScoresState,
    rows: &[ScoresRow<'_>],
) -> (Vec<u8>, usize) {
    let (state, expired) = spec.apply(retention_ms, Some(state), rows);
    (
        encode(&state, spec.buckets(retention_ms).bucket_ms),
        expired,
    )
}

/// Whether a row the fold would count carries a key the dictionary lacks.
fn brings_a_new_key(spec: &DecayedSpec, keys: &[Value], rows: &[ScoresRow<'_>]) -> bool {
    (rows.iter())
        .filter(|row| spec.decay.weight(row.action) != 0.0)
        .any(|row| is_new_key(keys, row.key))
}

#[cfg(test)]
thread_local! {
    /// How many applications took the splice (the tests check that their cases reach it).
    pub(super) static SPLICED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The state's bytes: its header, then the applied buckets (encoded) and the `carried` ones
/// (their stored cells as they were), in ascending order.
fn merged(
    data: &[u8],
    state: &ScoresState,
    carried: &[&StoredBucket],
    signed: bool,
    decay: &DecayBuckets,
) -> Vec<u8> {
    let carried_bytes: usize = carried.iter().map(|b| b.body.len() + 8).sum();
    let mut out = Vec::with_capacity(32 + 16 * state.keys.len() + carried_bytes);
    out.push(FORMAT_VERSION);
    put_i64(&mut out, state.newest);
    put_u64(&mut out, state.keys.len() as u64);
    last_n::encode_values(&mut out, &state.keys);
    out.push(if signed { SIGNED_SUMS } else { 0 });
    put_u64(&mut out, (state.buckets.len() + carried.len()) as u64);
    let bitmap_len = state.keys.len().div_ceil(8);
    let applied = (state.buckets.iter()).map(|cells| {
        let top = state.tops.get(&cells.bucket).copied().unwrap_or(0);
        (cells.bucket, top, cells)
    });
    splice::put_buckets(
        &mut out,
        data,
        decay.bucket_ms,
        applied,
        carried,
        |out, cells| put_cells(out, cells, signed, bitmap_len),
    );
    out
}

/// The stored buckets after the header (`r` over the whole state, `total` bytes long), their
/// cells passed over, with the checks `decode` makes of the structure (the bucket order,
/// the lengths, nothing after the last bucket; not the key indices' range nor the sums'); of a `signed` state's buckets, whether they
/// hold a negative sum.
fn scan(
    r: &mut Reader<'_>,
    total: usize,
    count: usize,
    key_count: usize,
    signed: bool,
    bucket_ms: i64,
) -> Result<Vec<Scanned>, CoreError> {
    let mut buckets = Vec::with_capacity(count);
    let mut previous = None;
    for _ in 0..count {
        let (bucket, top) = get_bucket(r, previous, bucket_ms)?;
        previous = Some(bucket);
        let start = total - r.left();
        let negative = skip_cells(r, key_count, signed)?;
        let body = start..total - r.left();
        let stored = StoredBucket { bucket, top, body };
        buckets.push(Scanned { stored, negative });
    }
    r.expect_done("DecayedScores state")?;
    Ok(buckets)
}

/// Passes over one bucket's cells as `put_cells` wrote them; with `signed` (its sums
/// zigzag), whether one of them is negative: an odd stored value, told by its lowest bit.
fn skip_cells(r: &mut Reader<'_>, key_count: usize, signed: bool) -> Result<bool, CoreError> {
    let header = r.u64()?;
    let count = usize::try_from(header >> 2).unwrap_or(usize::MAX);
    if count > key_count {
        return Err(CoreError::Codec("more cells than keys".into()));
    }
    if header & 1 == 1 {
        r.bytes(key_count.div_ceil(8))?;
    } else {
        for _ in 0..count {
            r.u64()?;
        }
    }
    let mut negative = false;
    if header & 2 == 2 {
        let width = usize::from(r.u8()?);
        if width > 128 {
            return Err(CoreError::Codec(format!("packed width {width}")));
        }
        let bits = r.bytes(count.saturating_mul(width).div_ceil(8))?;
        // Least significant bit first: value i's lowest bit is bit i · width of the run.
        negative = signed
            && width > 0
            && (0..count).any(|i| bits[i * width / 8] >> (i * width % 8) & 1 == 1);
    } else {
        for _ in 0..count {
            let sum = get_u128(r)?;
            negative |= signed && sum & 1 == 1;
        }
    }
    Ok(negative)
}
