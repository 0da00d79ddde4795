use proptest::prelude::*;

use super::super::tests::{arb_column, arb_events};
use super::super::{combine, decode, encode, Entry};
use super::{apply_stored, NewRows};
use crate::plan::LastNSpec;
use crate::value::Value;

/// `events` with their first kept field's values from `column` (as far as it goes), so
/// the stored state's first column takes every form.
fn with_column(mut events: Vec<Entry>, column: &[Value]) -> Vec<Entry> {
    for (event, value) in events.iter_mut().zip(column) {
        event.values[0] = value.clone();
    }
    events
}

/// The executor's path before: the old state decoded, the new entries cloned out of the
/// batch, combined and encoded.
fn owned(
    spec: &LastNSpec,
    retention: i64,
    old: Option<&[u8]>,
    new: &NewRows<'_>,
) -> (Vec<u8>, usize) {
    let old = old.map(|bytes| decode(bytes, spec.keep.len()).unwrap());
    let entries = (new.rows.iter())
        .map(|&i| Entry {
            ts: new.ts[i],
            tie: new.tie[i],
            values: new.columns.iter().map(|c| c[i].clone()).collect(),
        })
        .collect();
    let (state, expired) = combine(spec, retention, old.unwrap_or_default(), entries);
    (encode(&state, spec.keep.len()), expired)
}

proptest! {
    #[test]
    fn applying_over_the_stored_bytes_writes_what_decoding_did(
        old in arb_events(),
        new in arb_events(),
        old_column in arb_column(),
        new_column in arb_column(),
        n in 1usize..60,
        dedupe in any::<bool>(),
        retention in prop::sample::select(vec![3_600_000i64, 86_400_000, 1 << 40]),
        stored in any::<bool>(),
    ) {
        let spec = LastNSpec {
            n,
            keep: vec!["item_id".into(), "action".into(), "score".into()],
            dedupe_by: dedupe.then_some(0),
        };
        let (old, _) = combine(&spec, retention, Vec::new(), with_column(old, &old_column));
        let bytes = stored.then(|| encode(&old, 3));
        let new = with_column(new, &new_column);
        // The batch's columns, and the user's events in time order (stable), as `run` has them.
        let columns: Vec<Vec<Value>> = (0..3)
            .map(|c| new.iter().map(|e| e.values[c].clone()).collect())
            .collect();
        let ts: Vec<i64> = new.iter().map(|e| e.ts).collect();
        let tie: Vec<u32> = new.iter().map(|e| e.tie).collect();
        let mut rows: Vec<usize> = (0..new.len()).collect();
        rows.sort_by_key(|&i| ts[i]);
        let rows = NewRows {
            ts: &ts,
            tie: &tie,
            columns: columns.iter().map(Vec::as_slice).collect(),
            rows: &rows,
        };
        let fast = apply_stored(&spec, retention, bytes.as_deref(), &rows).unwrap();
        prop_assert_eq!(fast, owned(&spec, retention, bytes.as_deref(), &rows));
    }

    #[test]
    fn a_stored_state_that_does_not_decode_is_refused_as_decoding_refused_it(
        events in arb_events(),
        column in arb_column(),
        cut in any::<prop::sample::Index>(),
        byte in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let spec = LastNSpec { n: 500, keep: vec!["a".into(), "b".into(), "c".into()], dedupe_by: None };
        let mut bytes = encode(&with_column(events, &column), 3);
        // A truncated state, or one with a byte changed.
        if value % 2 == 0 {
            bytes.truncate(cut.index(bytes.len() + 1));
        } else {
            let at = byte.index(bytes.len());
            bytes[at] = value;
        }
        let rows = NewRows { ts: &[], tie: &[], columns: vec![&[], &[], &[]], rows: &[] };
        let fast = apply_stored(&spec, 1 << 40, Some(&bytes), &rows).map(|_| ()).map_err(|e| e.to_string());
        let slow = decode(&bytes, 3).map(|_| ()).map_err(|e| e.to_string());
        prop_assert_eq!(fast, slow);
    }
}
