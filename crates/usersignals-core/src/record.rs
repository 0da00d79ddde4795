//! The user record codec: a version byte, then msgpack — byte for byte what the Python codec
//! (`usersignals.state.codec`, msgspec) writes, so either side reads the other's records.
//!
//! A record is `[progress, states, seen]`: the highest applied offset per source partition,
//! each signal's state as one msgpack value keyed by `name@version` (a native state is a
//! msgpack *bin* holding the aggregation's own format; a state of a Python aggregation is
//! whatever msgpack its codec wrote, kept as raw bytes), and the event-id fingerprints per
//! hour (`dedupe.rs`). Maps are written in key order, so the bytes are canonical.

use std::collections::BTreeMap;

use rmp::decode::{self, RmpRead};
use rmp::encode;
use rmp::Marker;

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

fn codec(message: impl std::fmt::Display) -> CoreError {
    CoreError::Codec(format!("user record: {message}"))
}

/// A cursor over the bytes being decoded: rmp reads from it, raw spans are sliced off it.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CoreError> {
        if self.rest.len() < n {
            return Err(codec("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn map_len(&mut self) -> Result<usize, CoreError> {
        Ok(decode::read_map_len(&mut self.rest).map_err(codec)? as usize)
    }

    fn text(&mut self) -> Result<&'a str, CoreError> {
        let n = decode::read_str_len(&mut self.rest).map_err(codec)? as usize;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes).map_err(codec)
    }

    fn int(&mut self) -> Result<i64, CoreError> {
        decode::read_int(&mut self.rest).map_err(codec)
    }

    fn bin(&mut self) -> Result<&'a [u8], CoreError> {
        let n = decode::read_bin_len(&mut self.rest).map_err(codec)? as usize;
        self.take(n)
    }

    /// One whole msgpack value, as the bytes it spans.
    fn value(&mut self) -> Result<&'a [u8], CoreError> {
        let start = self.rest;
        self.skip(0)?;
        Ok(&start[..start.len() - self.rest.len()])
    }

    fn length(&mut self, bytes: usize) -> Result<usize, CoreError> {
        let mut n = 0usize;
        for &b in self.take(bytes)? {
            n = (n << 8) | b as usize;
        }
        Ok(n)
    }

    fn skip(&mut self, depth: usize) -> Result<(), CoreError> {
        if depth > 64 {
            return Err(codec("nested too deep"));
        }
        let marker = self.rest.read_u8().map(Marker::from_u8).map_err(codec)?;
        let (payload, items) = match marker {
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
                (0, 0)
            }
            Marker::U8 | Marker::I8 => (1, 0),
            Marker::U16 | Marker::I16 => (2, 0),
            Marker::U32 | Marker::I32 | Marker::F32 => (4, 0),
            Marker::U64 | Marker::I64 | Marker::F64 => (8, 0),
            Marker::FixStr(n) => (n as usize, 0),
            Marker::Str8 | Marker::Bin8 => (self.length(1)?, 0),
            Marker::Str16 | Marker::Bin16 => (self.length(2)?, 0),
            Marker::Str32 | Marker::Bin32 => (self.length(4)?, 0),
            Marker::FixArray(n) => (0, n as usize),
            Marker::Array16 => (0, self.length(2)?),
            Marker::Array32 => (0, self.length(4)?),
            Marker::FixMap(n) => (0, 2 * n as usize),
            Marker::Map16 => (0, 2 * self.length(2)?),
            Marker::Map32 => (0, 2 * self.length(4)?),
            Marker::FixExt1 => (2, 0),
            Marker::FixExt2 => (3, 0),
            Marker::FixExt4 => (5, 0),
            Marker::FixExt8 => (9, 0),
            Marker::FixExt16 => (17, 0),
            Marker::Ext8 => (self.length(1)? + 1, 0),
            Marker::Ext16 => (self.length(2)? + 1, 0),
            Marker::Ext32 => (self.length(4)? + 1, 0),
            Marker::Reserved => return Err(codec("reserved msgpack marker")),
        };
        self.take(payload)?;
        for _ in 0..items {
            self.skip(depth + 1)?;
        }
        Ok(())
    }
}

/// A record's parts, borrowed from its bytes, in stored order.
struct Parts<'a> {
    progress: Vec<(&'a str, i64)>,
    states: Vec<(&'a str, &'a [u8])>,
    seen: Vec<(i64, &'a [u8])>,
}

fn parts(data: &[u8]) -> Result<Parts<'_>, CoreError> {
    match data.first() {
        Some(v) if READABLE.contains(v) => {}
        other => {
            let shown = other.map_or("None".to_string(), |v| v.to_string());
            return Err(CoreError::Codec(format!(
                "unknown codec version {shown}, expected {RECORD_VERSION}"
            )));
        }
    }
    let mut cursor = Cursor { rest: &data[1..] };
    let fields = decode::read_array_len(&mut cursor.rest).map_err(codec)?;
    if !(2..=3).contains(&fields) {
        return Err(codec(format!("{fields} fields, expected 2 or 3")));
    }
    let mut parts = Parts {
        progress: Vec::new(),
        states: Vec::new(),
        seen: Vec::new(),
    };
    for _ in 0..cursor.map_len()? {
        let partition = cursor.text()?;
        parts.progress.push((partition, cursor.int()?));
    }
    for _ in 0..cursor.map_len()? {
        let key = cursor.text()?;
        parts.states.push((key, cursor.value()?));
    }
    if fields == 3 {
        for _ in 0..cursor.map_len()? {
            let hour = cursor.int()?;
            parts.seen.push((hour, cursor.bin()?));
        }
    }
    if !cursor.rest.is_empty() {
        return Err(codec("trailing bytes"));
    }
    Ok(parts)
}

pub fn decode(data: &[u8]) -> Result<UserRecord, CoreError> {
    let parts = parts(data)?;
    Ok(UserRecord {
        progress: parts
            .progress
            .into_iter()
            .map(|(partition, offset)| (partition.to_string(), offset))
            .collect(),
        states: parts
            .states
            .into_iter()
            .map(|(key, state)| (key.to_string(), state.to_vec()))
            .collect(),
        seen: parts
            .seen
            .into_iter()
            .map(|(hour, blob)| (hour, blob.to_vec()))
            .collect(),
    })
}

/// A record's states keyed by `name@version`, borrowed from its bytes (the whole record is
/// checked as `decode` checks it): what a serving read answers from, no state copied.
pub fn states_of(data: &[u8]) -> Result<Vec<(&str, &[u8])>, CoreError> {
    Ok(parts(data)?.states)
}

pub fn encode(record: &UserRecord) -> Vec<u8> {
    let size: usize = record.states.values().map(Vec::len).sum::<usize>()
        + record.seen.values().map(Vec::len).sum::<usize>()
        + 64;
    let mut out = Vec::with_capacity(size);
    out.push(RECORD_VERSION);
    // Writes to a Vec cannot fail.
    let _ = encode::write_array_len(&mut out, 3);
    let _ = encode::write_map_len(&mut out, record.progress.len() as u32);
    for (partition, offset) in &record.progress {
        let _ = encode::write_str(&mut out, partition);
        let _ = encode::write_sint(&mut out, *offset);
    }
    let _ = encode::write_map_len(&mut out, record.states.len() as u32);
    for (key, state) in &record.states {
        let _ = encode::write_str(&mut out, key);
        out.extend_from_slice(state);
    }
    let _ = encode::write_map_len(&mut out, record.seen.len() as u32);
    for (hour, blob) in &record.seen {
        let _ = encode::write_sint(&mut out, *hour);
        let _ = encode::write_bin(&mut out, blob);
    }
    out
}

/// A native state as the record embeds it: a msgpack bin around the aggregation's bytes.
pub fn wrap_native(state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(state.len() + 5);
    let _ = encode::write_bin(&mut out, state);
    out
}

/// The aggregation's bytes of a native state, or `None` when the stored value is not a bin
/// (a state the Python codec wrote, which the glue migrates).
pub fn unwrap_native(value: &[u8]) -> Option<&[u8]> {
    let mut cursor = Cursor { rest: value };
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
            prop_assert_eq!(states_of(&bytes).unwrap(), states);
            prop_assert_eq!(decode(&bytes).unwrap(), record);
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
