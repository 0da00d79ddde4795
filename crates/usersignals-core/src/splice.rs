//! What the decayed aggregations' splices share (`mean_vector_splice.rs`,
//! `decayed_splice.rs`): a batch's rows applied to the buckets they reach, and the other
//! buckets of the stored state written back as the bytes they were stored as.
//!
//! Both states store their buckets ascending, each behind a header that holds the gap from
//! the bucket before it ([`put_bucket`]) and its newest time, then a body that is a function
//! of the bucket alone (given the state's key dictionary and sum form, for DecayedScores).
//! So a bucket no row reaches keeps its body; only the headers are written again.

use std::ops::Range;

use crate::decay::{put_bucket, DecayBuckets, DecayedRow};

/// A stored bucket as a scan of the state found it: its index, its newest event time, and
/// where its body lies in the stored bytes.
pub struct StoredBucket {
    pub bucket: i64,
    pub top: i64,
    pub body: Range<usize>,
}

/// The buckets `rows` (sorted by time) fall in, ascending, each once.
pub fn reached<R: DecayedRow>(decay: &DecayBuckets, rows: &[R]) -> Vec<i64> {
    let mut reached: Vec<i64> = rows.iter().map(|row| decay.bucket_of(row.ts())).collect();
    reached.dedup();
    reached
}

/// Writes a state's buckets in ascending order: the `applied` ones (ascending; each
/// `(bucket, its newest time, what put_body writes)`), their bodies by `put_body`, and the
/// `carried` ones as their stored bodies in `data`, each behind a header written again.
pub fn put_buckets<A>(
    out: &mut Vec<u8>,
    data: &[u8],
    bucket_ms: i64,
    applied: impl Iterator<Item = (i64, i64, A)>,
    carried: &[&StoredBucket],
    mut put_body: impl FnMut(&mut Vec<u8>, A),
) {
    let mut previous = None;
    let mut applied = applied.peekable();
    for stored in carried {
        while let Some((bucket, top, body)) = applied.next_if(|(b, _, _)| *b < stored.bucket) {
            put_bucket(out, previous, bucket, top - bucket * bucket_ms);
            put_body(out, body);
            previous = Some(bucket);
        }
        put_bucket(
            out,
            previous,
            stored.bucket,
            stored.top - stored.bucket * bucket_ms,
        );
        out.extend_from_slice(&data[stored.body.clone()]);
        previous = Some(stored.bucket);
    }
    for (bucket, top, body) in applied {
        put_bucket(out, previous, bucket, top - bucket * bucket_ms);
        put_body(out, body);
        previous = Some(bucket);
    }
}
