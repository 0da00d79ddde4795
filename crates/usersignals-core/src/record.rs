//! The user record codec: a version byte, then msgpack — byte for byte what the Python codec
//! (`usersignals.state.codec`, msgspec) writes, so either side reads the other's records.
//!
//! A record is `[progress, states, seen]`: the highest applied offset per source partition,
//! each signal's state as one msgpack value keyed by `name@version` (a native state is a
//! msgpack *bin* holding the aggregation's own format; a state of a Python aggregation is
//! whatever msgpack its codec wrote, kept as raw bytes), and the event-id fingerprints per
//! hour (`dedupe.rs`). Maps are written in key order, so the bytes are canonical.

use std::collections::BTreeMap;
use std::ops::Range;

use rmp::decode;
use rmp::encode;

use crate::cursor::Cursor;
use crate::error::CoreError;

/// The record format version written; version 1 is version 2 without `seen`.
pub const RECORD_VERSION: u8 = 2;
const READABLE: [u8; 2] = [1, 2];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserRecord {
    pub progress: BTreeMap<String, i64>,
    /// Each state as one whole msgpack value.
    pub states: BTreeMap<String, Vec<u8>>,
    pub seen: BTreeMap<i64, Vec<u8>>,
}

/// What the errors name.
const WHAT: &str = "user record";

/// A record's parts, borrowed from its bytes, in stored order.
struct Parts<'a> {
    progress: Vec<(&'a str, i64)>,
    states: Vec<(&'a str, &'a [u8])>,
    seen: Vec<(i64, &'a [u8])>,
}

fn parts(data: &[u8]) -> Result<Parts<'_>, CoreError> {
    parts_keeping(data, true)
}

/// [`parts`], the progress and the seen event ids kept only with `all` (else checked and
/// left: a serving read needs the states alone, and a busy user's record holds fingerprints
/// for many hours).
fn parts_keeping(data: &[u8], all: bool) -> Result<Parts<'_>, CoreError> {
    match data.first() {
        Some(v) if READABLE.contains(v) => {}
        other => {
            let shown = other.map_or("None".to_string(), |v| v.to_string());
            return Err(CoreError::Codec(format!(
                "unknown codec version {shown}, expected {RECORD_VERSION}"
            )));
        }
    }
    let mut cursor = Cursor::new(&data[1..], WHAT);
    let fields = decode::read_array_len(&mut cursor.rest).map_err(|e| cursor.fail(e))?;
    if !(2..=3).contains(&fields) {
        return Err(cursor.fail(format!("{fields} fields, expected 2 or 3")));
    }
    let mut parts = Parts {
        progress: Vec::new(),
        states: Vec::new(),
        seen: Vec::new(),
    };
    for _ in 0..cursor.map_len()? {
        let partition = cursor.text()?;
        let offset = cursor.int()?;
        if all {
            parts.progress.push((partition, offset));
        }
    }
    let states = cursor.map_len()?;
    // Sized once (an entry takes two bytes at least, so the bytes left bound a bad count).
    parts.states.reserve(states.min(cursor.rest.len() / 2));
    for _ in 0..states {
        let key = cursor.text()?;
        parts.states.push((key, cursor.value()?));
    }
    if fields == 3 {
        for _ in 0..cursor.map_len()? {
            let hour = cursor.int()?;
            let seen = cursor.bin()?;
            if all {
                parts.seen.push((hour, seen));
            }
        }
    }
    if !cursor.rest.is_empty() {
        return Err(cursor.fail("trailing bytes"));
    }
    Ok(parts)
}

pub fn decode(data: &[u8]) -> Result<UserRecord, CoreError> {
    let parts = parts(data)?;
    Ok(UserRecord {
        states: (parts.states.iter())
            .map(|(key, state)| (key.to_string(), state.to_vec()))
            .collect(),
        ..without_states(parts)
    })
}

/// `data` with its progress replaced by `progress`, its states and seen event ids kept as
/// they are: the states are copied as bytes, never decoded (a backfill hands the real Kafka
/// progress over in place of its feeding order, for every record it computed). The same
/// bytes as `encode` of the decoded record with the new progress: the states in key order,
/// a key stored twice counted once, its last value.
pub fn replace_progress(
    data: &[u8],
    progress: &BTreeMap<String, i64>,
) -> Result<Vec<u8>, CoreError> {
    let parts = parts(data)?;
    // Last to first: of a key stored twice the last counts, as in `decode`'s map.
    let mut states: Vec<(&[u8], StateBytes<'_>)> = (parts.states.iter().rev())
        .map(|(key, value)| (key.as_bytes(), StateBytes::Value(value)))
        .collect();
    in_key_order(&mut states);
    let seen = (parts.seen.iter())
        .map(|(hour, blob)| (*hour, blob.to_vec()))
        .collect();
    Ok(encode_parts(progress, &states, &seen))
}

/// `states` in key order, each key once: of equal keys the first given stays (the caller
/// puts first the one that counts). What [`encode_parts`] takes.
pub fn in_key_order(states: &mut Vec<(&[u8], StateBytes<'_>)>) {
    // Stable: equal keys keep the order given, and `dedup_by` keeps the first of a run.
    states.sort_by(|a, b| a.0.cmp(b.0));
    states.dedup_by(|later, earlier| later.0 == earlier.0);
}

/// A record's progress and seen event ids, owned; its states left out.
fn without_states(parts: Parts<'_>) -> UserRecord {
    UserRecord {
        progress: (parts.progress.into_iter())
            .map(|(partition, offset)| (partition.to_string(), offset))
            .collect(),
        states: BTreeMap::new(),
        seen: (parts.seen.into_iter())
            .map(|(hour, blob)| (hour, blob.to_vec()))
            .collect(),
    }
}

/// Where one stored state lies in its record's bytes: its key's text and its msgpack value.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredState {
    key: Range<usize>,
    pub value: Range<usize>,
}

impl StoredState {
    /// The state's key (`name@version`, UTF-8) in `data`, the record these ranges came from.
    pub fn key<'d>(&self, data: &'d [u8]) -> &'d [u8] {
        &data[self.key.clone()]
    }
}

/// A record decoded for a micro-batch, which changes its progress and seen event ids (owned
/// here, `states` left empty) but rewrites only the states it applies events to: the stored
/// states stay in `data`, as ranges of it, and go into the new record as they are (one copy,
/// where `decode` and `encode` made three of every state).
pub fn decode_in_place(data: &[u8]) -> Result<(UserRecord, Vec<StoredState>), CoreError> {
    let parts = parts(data)?;
    let at = |part: &[u8]| {
        let start = part.as_ptr() as usize - data.as_ptr() as usize;
        start..start + part.len()
    };
    let states = (parts.states.iter())
        .map(|(key, value)| StoredState {
            key: at(key.as_bytes()),
            value: at(value),
        })
        .collect();
    Ok((without_states(parts), states))
}

/// A record's states keyed by `name@version`, borrowed from its bytes (the whole record is
/// checked as `decode` checks it): what a serving read answers from, no state copied.
pub fn states_of(data: &[u8]) -> Result<Vec<(&str, &[u8])>, CoreError> {
    Ok(parts_keeping(data, false)?.states)
}

/// A state as [`encode_parts`] writes it into a record.
#[derive(Debug, Clone, Copy)]
pub enum StateBytes<'a> {
    /// A whole msgpack value, as a record holds it (a stored state, kept as it is).
    Value(&'a [u8]),
    /// A native state's own bytes, written as a msgpack bin: how a record embeds a native
    /// state, which [`unwrap_native`] reads back.
    Native(&'a [u8]),
}

impl StateBytes<'_> {
    fn len(&self) -> usize {
        match self {
            StateBytes::Value(value) => value.len(),
            StateBytes::Native(state) => state.len() + 5,
        }
    }
}

pub fn encode(record: &UserRecord) -> Vec<u8> {
    let states: Vec<(&[u8], StateBytes<'_>)> = (record.states.iter())
        .map(|(key, value)| (key.as_bytes(), StateBytes::Value(value)))
        .collect();
    encode_parts(&record.progress, &states, &record.seen)
}

/// A record from its parts; `states` keyed by their keys' UTF-8, in key order, keys distinct
/// (a map's order: what makes the bytes canonical).
pub fn encode_parts(
    progress: &BTreeMap<String, i64>,
    states: &[(&[u8], StateBytes<'_>)],
    seen: &BTreeMap<i64, Vec<u8>>,
) -> Vec<u8> {
    let size: usize = states
        .iter()
        .map(|(key, state)| key.len() + state.len() + 5)
        .sum::<usize>()
        + seen.values().map(|blob| blob.len() + 14).sum::<usize>()
        + progress
            .keys()
            .map(|partition| partition.len() + 14)
            .sum::<usize>()
        + 16;
    let mut out = Vec::with_capacity(size);
    out.push(RECORD_VERSION);
    // Writes to a Vec cannot fail.
    let _ = encode::write_array_len(&mut out, 3);
    let _ = encode::write_map_len(&mut out, progress.len() as u32);
    for (partition, offset) in progress {
        let _ = encode::write_str(&mut out, partition);
        let _ = encode::write_sint(&mut out, *offset);
    }
    let _ = encode::write_map_len(&mut out, states.len() as u32);
    for (key, state) in states {
        let _ = encode::write_str_len(&mut out, key.len() as u32);
        out.extend_from_slice(key);
        match state {
            StateBytes::Value(value) => out.extend_from_slice(value),
            StateBytes::Native(state) => {
                let _ = encode::write_bin(&mut out, state);
            }
        }
    }
    let _ = encode::write_map_len(&mut out, seen.len() as u32);
    for (hour, blob) in seen {
        let _ = encode::write_sint(&mut out, *hour);
        let _ = encode::write_bin(&mut out, blob);
    }
    out
}

/// A native state as the record embeds it: a msgpack bin around the aggregation's bytes
/// (what [`encode_parts`] writes for [`StateBytes::Native`]), for tests that build records.
#[cfg(test)]
pub(crate) fn wrap_native(state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(state.len() + 5);
    let _ = encode::write_bin(&mut out, state);
    out
}

/// The aggregation's bytes of a native state, or `None` when the stored value is not a bin
/// (a state the Python codec wrote, which the glue migrates).
pub fn unwrap_native(value: &[u8]) -> Option<&[u8]> {
    let mut cursor = Cursor::new(value, WHAT);
    match value.first() {
        Some(0xC4..=0xC6) => cursor.bin().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = UserRecord> {
        (
            prop::collection::btree_map("[a-z/0-9]{0,40}", any::<i64>(), 0..4),
            prop::collection::btree_map(
                "[a-z_]{1,12}@[0-9]",
                prop::collection::vec(any::<u8>(), 0..300),
                0..5,
            ),
            prop::collection::btree_map(
                any::<i64>(),
                prop::collection::vec(any::<u8>(), 0..70_000),
                0..3,
            ),
        )
            .prop_map(|(progress, states, seen)| UserRecord {
                progress,
                states: states
                    .into_iter()
                    .map(|(k, v)| (k, wrap_native(&v)))
                    .collect(),
                seen,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn a_record_round_trips(record in record()) {
            let bytes = encode(&record);
            let states: Vec<(&str, &[u8])> =
                record.states.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            prop_assert_eq!(states_of(&bytes).unwrap(), states.clone());
            prop_assert_eq!(decode(&bytes).unwrap(), record.clone());
            let (in_place, ranges) = decode_in_place(&bytes).unwrap();
            let found: Vec<(&str, &[u8])> = (ranges.iter())
                .map(|state| {
                    let key = std::str::from_utf8(state.key(&bytes)).unwrap();
                    (key, &bytes[state.value.clone()])
                })
                .collect();
            prop_assert_eq!(found, states);
            prop_assert_eq!(in_place, UserRecord { states: BTreeMap::new(), ..record });
        }

        #[test]
        fn states_of_refuses_what_decode_refuses(
            record in record(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            // A record cut short, or with one byte changed: the serving read keeps neither the
            // progress nor the seen ids, and must still refuse every record `decode` refuses,
            // with the same error.
            let bytes = encode(&record);
            let mut changed = bytes.clone();
            changed[flip.index(bytes.len())] = byte;
            for damaged in [&bytes[..cut.index(bytes.len())], &changed[..]] {
                match (states_of(damaged), decode(damaged)) {
                    (Ok(states), Ok(decoded)) => {
                        let owned: BTreeMap<String, Vec<u8>> = (states.iter())
                            .map(|(k, v)| (k.to_string(), v.to_vec()))
                            .collect();
                        prop_assert_eq!(owned, decoded.states);
                    }
                    (Err(a), Err(b)) => prop_assert_eq!(a, b),
                    (a, b) => prop_assert!(false, "states_of {:?}, decode {:?}", a.is_ok(), b.is_ok()),
                }
            }
        }

        #[test]
        fn replacing_the_progress_is_encoding_the_decoded_record_with_it(
            record in record(),
            // Keys from a small set, in any order, some twice: the stored order not canonical.
            stored in prop::collection::vec(
                ("[ab]@[12]", prop::collection::vec(any::<u8>(), 0..20)),
                0..6,
            ),
            progress in prop::collection::btree_map("[a-z/0-9]{0,12}", any::<i64>(), 0..4),
        ) {
            let states: Vec<(&[u8], StateBytes<'_>)> = (stored.iter())
                .map(|(key, state)| (key.as_bytes(), StateBytes::Native(state)))
                .collect();
            let data = encode_parts(&record.progress, &states, &record.seen);
            let mut expected = decode(&data).unwrap();
            expected.progress = progress.clone();
            prop_assert_eq!(replace_progress(&data, &progress).unwrap(), encode(&expected));
        }
    }

    #[test]
    fn a_python_state_is_kept_as_its_whole_msgpack_value() {
        // {"progress": {}, "states": {"s@1": [1, {"a": "b"}, 2.5]}, "seen": {}}
        let state = [
            0x93, 0x01, 0x81, 0xA1, b'a', 0xA1, b'b', 0xCB, 0x40, 0x04, 0, 0, 0, 0, 0, 0,
        ];
        let mut data = vec![2, 0x93, 0x80, 0x81, 0xA3, b's', b'@', b'1'];
        data.extend_from_slice(&state);
        data.push(0x80);
        let record = decode(&data).unwrap();
        assert_eq!(record.states["s@1"], state);
        assert_eq!(encode(&record), data);
        assert_eq!(unwrap_native(&record.states["s@1"]), None);
    }

    #[test]
    fn unknown_versions_and_truncation_are_refused() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[3, 0x93, 0x80, 0x80, 0x80]).is_err());
        assert!(decode(&[2, 0x93, 0x80, 0x81]).is_err());
        assert!(decode(&[2, 0x93, 0x80, 0x80, 0x80, 0x00]).is_err());
        assert!(states_of(&[2, 0x93, 0x80, 0x80, 0x80, 0x00]).is_err());
        // A version 1 record has no `seen`.
        assert_eq!(
            decode(&[1, 0x92, 0x80, 0x80]).unwrap(),
            UserRecord::default()
        );
    }
}
