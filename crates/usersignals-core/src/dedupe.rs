//! `event_id` as an idempotency key: the port of `usersignals.processing.dedupe` (the
//! reference model; its docstring states the guarantees). A user's record keeps, per hour of
//! event time, the sorted distinct CRC-32 fingerprints of the ids applied in that hour, as
//! big-endian u32s; an event whose fingerprint was applied within the horizon is a repeat.

use std::collections::{BTreeMap, BTreeSet};

use hashbrown::HashMap;

pub const HOUR_MS: i64 = 3_600_000;

/// Hour → sorted distinct big-endian fingerprints.
pub type Seen = BTreeMap<i64, Vec<u8>>;

fn unpack(blob: &[u8]) -> impl Iterator<Item = u32> + '_ {
    blob.chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}

/// An event id's fingerprint, its CRC-32: what a record keeps of an applied id, and LastN's
/// tie-break between entries of equal time. Read once per event, when a batch is read.
pub fn fingerprint(event_id: &str) -> u32 {
    crc32fast::hash(event_id.as_bytes())
}

/// The events (`(ts, fingerprint of the event_id)` in arrival order) that are not repeats,
/// by position in `events`; `seen` becomes the user's new fingerprints.
pub fn admit(horizon_hours: i64, seen: &mut Seen, events: &[(i64, u32)]) -> Vec<usize> {
    let mut newest_hour = seen.keys().next_back().copied().unwrap_or(-(1 << 62));
    // Fingerprint → the newest hour it was applied in (hours ascend, so later ones win).
    // Rebuilt for every touched user of every batch: foldhash, not SipHash.
    let mut known: HashMap<u32, i64> = HashMap::new();
    for (hour, blob) in seen.iter() {
        for fingerprint in unpack(blob) {
            known.insert(fingerprint, *hour);
        }
    }
    let mut admitted = Vec::with_capacity(events.len());
    let mut added: BTreeMap<i64, BTreeSet<u32>> = BTreeMap::new();
    for (index, &(ts, fingerprint)) in events.iter().enumerate() {
        let hour = ts.div_euclid(HOUR_MS);
        let first = newest_hour - horizon_hours;
        if hour >= first {
            let have = known.get(&fingerprint).copied();
            if have.is_some_and(|h| h >= first) {
                continue; // a repeat within the horizon
            }
            if have.is_none_or(|h| h < hour) {
                known.insert(fingerprint, hour);
            }
            added.entry(hour).or_default().insert(fingerprint);
        }
        admitted.push(index);
        newest_hour = newest_hour.max(hour);
    }
    if added.is_empty() && seen.is_empty() {
        return admitted;
    }
    let first = newest_hour - horizon_hours;
    let mut merged = Seen::new();
    let hours: BTreeSet<i64> = seen.keys().chain(added.keys()).copied().collect();
    for hour in hours.into_iter().filter(|h| *h >= first) {
        let blob = seen.remove(&hour).unwrap_or_default();
        let Some(fresh) = added.get_mut(&hour) else {
            merged.insert(hour, blob); // unchanged: already sorted and distinct
            continue;
        };
        fresh.extend(unpack(&blob));
        merged.insert(hour, fresh.iter().flat_map(|f| f.to_be_bytes()).collect());
    }
    *seen = merged;
    admitted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_within_the_horizon_is_dropped_and_a_later_one_is_not() {
        let mut seen = Seen::new();
        let day = 24 * HOUR_MS;
        let (a, b, c) = (fingerprint("a"), fingerprint("b"), fingerprint("c"));
        let first = admit(24, &mut seen, &[(0, a), (10, a), (20, b)]);
        assert_eq!(first, vec![0, 2]);
        assert_eq!(seen[&0].len(), 8);
        // Two days on: the hour of "a" has left the horizon, so "a" counts again.
        let later = admit(24, &mut seen, &[(2 * day, c), (2 * day + 1, a)]);
        assert_eq!(later, vec![0, 1]);
        assert_eq!(seen.keys().copied().collect::<Vec<_>>(), vec![48]);
    }
}
