//! `event_id` as an idempotency key: the port of `usersignals.processing.dedupe` (the
//! reference model; its docstring states the guarantees). A user's record keeps, per hour of
//! event time, the sorted distinct CRC-32 fingerprints of the ids applied in that hour, as
//! big-endian u32s; an event whose fingerprint was applied within the horizon is a repeat.
//! An hour keeps at most [`IDS_PER_HOUR`] of them: a bot's record stays bounded.

use std::collections::{BTreeMap, BTreeSet};

use hashbrown::{HashMap, HashSet};

pub const HOUR_MS: i64 = 3_600_000;

/// The fingerprints an hour of a user's record keeps at most (32 KiB): the ids applied once
/// it is full are not recorded (a repeat of one is applied again), and the hour's events at
/// or below the progress are taken as replays (the progress decides, as without a dedupe).
/// A bench's top user (4,200 events a second) grew a record of a MB a minute, rewritten in
/// every batch of theirs. Part of the record format: a larger cap would leave hours full
/// under the old one looking open. The reference is `usersignals.processing.dedupe`.
pub const IDS_PER_HOUR: usize = 8_192;

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
    let mut admitted = Vec::with_capacity(events.len());
    admit_into(horizon_hours, seen, events, &mut admitted, &mut Vec::new());
    admitted
}

/// [`admit`] into `admitted` (cleared first), with `added` a buffer of its own (its content
/// is of no use after): a caller admitting user after user keeps both, not two allocations
/// per user.
pub fn admit_into(
    horizon_hours: i64,
    seen: &mut Seen,
    events: &[(i64, u32)],
    admitted: &mut Vec<usize>,
    added: &mut Vec<(i64, u32)>,
) {
    admit_capped(horizon_hours, IDS_PER_HOUR, seen, events, admitted, added);
}

/// [`admit_into`] with hours of at most `ids_per_hour` fingerprints (tests try small caps).
fn admit_capped(
    horizon_hours: i64,
    ids_per_hour: usize,
    seen: &mut Seen,
    events: &[(i64, u32)],
    admitted: &mut Vec<usize>,
    added: &mut Vec<(i64, u32)>,
) {
    let mut newest_hour = seen.keys().next_back().copied().unwrap_or(-(1 << 62));
    let mut known = Known::of(seen, events.len());
    let mut filled = Filled::default();
    admitted.clear();
    // (hour, fingerprint) of the events admitted within the horizon, in arrival order.
    added.clear();
    for (index, &(ts, fingerprint)) in events.iter().enumerate() {
        let hour = ts.div_euclid(HOUR_MS);
        let first = newest_hour - horizon_hours;
        if hour >= first {
            let have = known.newest(fingerprint, added);
            if have.is_some_and(|h| h >= first) {
                continue; // a repeat within the horizon
            }
            if !filled.full(ids_per_hour, seen, added, hour) {
                known.apply(fingerprint, hour);
                added.push((hour, fingerprint));
                filled.recorded(hour);
            }
        }
        admitted.push(index);
        newest_hour = newest_hour.max(hour);
    }
    let first = newest_hour - horizon_hours;
    seen.retain(|hour, _| *hour >= first);
    added.sort_unstable();
    added.dedup();
    for fresh in added.chunk_by(|a, b| a.0 == b.0) {
        let hour = fresh[0].0;
        if hour < first {
            continue;
        }
        let fresh = fresh.iter().map(|(_, fingerprint)| *fingerprint);
        let blob = seen.entry(hour).or_default();
        *blob = if is_sorted(blob) {
            merge(fresh, blob)
        } else {
            let all: BTreeSet<u32> = fresh.chain(unpack(blob)).collect();
            all.iter().flat_map(|f| f.to_be_bytes()).collect()
        };
    }
}

/// Whether an hour holds `ids_per_hour` fingerprints, stored and added by `admit`: counted
/// per hour only once a user's stored hour and batch could reach the cap, so the many users
/// far from it pay nothing.
#[derive(Default)]
struct Filled {
    /// Per hour, the fingerprints `admit` added: a map, as a training set's plan admits a
    /// user's whole history at once (hundreds of hours).
    counts: Option<HashMap<i64, usize>>,
}

impl Filled {
    fn full(&mut self, ids_per_hour: usize, seen: &Seen, added: &[(i64, u32)], hour: i64) -> bool {
        let stored = seen.get(&hour).map_or(0, |blob| blob.len() / 4);
        if stored + added.len() < ids_per_hour {
            return false;
        }
        let counts = self.counts.get_or_insert_with(|| {
            let mut counts = HashMap::new();
            for (hour, _) in added {
                *counts.entry(*hour).or_default() += 1;
            }
            counts
        });
        stored + counts.get(&hour).copied().unwrap_or(0) >= ids_per_hour
    }

    /// One fingerprint added in `hour` (counted once the counts exist).
    fn recorded(&mut self, hour: i64) {
        if let Some(counts) = &mut self.counts {
            *counts.entry(hour).or_default() += 1;
        }
    }
}

/// What a user's record keeps of the ids it met, asked of its events at or below its
/// progress for their partition (replays, or a partition whose offsets went backwards):
/// built once per such user, not scanned per event (a bot's replay of 40,000 events over
/// 96,000 kept fingerprints took seconds scanned). The reference model is
/// `usersignals.processing.dedupe.KeptIds`.
pub struct Kept {
    /// Events before this hour are outside what the record keeps: the older of the first
    /// hour kept (fingerprints pruned under a shorter horizon, or not kept at all before
    /// the dedupe was on) and the horizon back from the newest hour.
    trusted_before: i64,
    fingerprints: HashSet<u32>,
    /// Hours of [`IDS_PER_HOUR`] fingerprints: their later ids were not recorded, so the
    /// progress decides for their events too.
    full: Vec<i64>,
}

impl Kept {
    /// `None` when the record keeps no fingerprints: the progress alone decides.
    pub fn of(horizon_hours: i64, seen: &Seen) -> Option<Kept> {
        let (&oldest, &newest) = (seen.keys().next()?, seen.keys().next_back()?);
        Some(Kept {
            trusted_before: oldest.max(newest - horizon_hours),
            fingerprints: seen.values().flat_map(|blob| unpack(blob)).collect(),
            full: (seen.iter())
                .filter(|(_, blob)| blob.len() / 4 >= IDS_PER_HOUR)
                .map(|(hour, _)| *hour)
                .collect(),
        })
    }

    /// Whether the event (`ts`, `fingerprint`) was met before: its fingerprint is kept
    /// (applied, or dropped as a repeat of one kept); outside what the record keeps (and in
    /// a full hour), the progress is trusted, as before.
    pub fn met(&self, ts: i64, fingerprint: u32) -> bool {
        let hour = ts.div_euclid(HOUR_MS);
        hour < self.trusted_before
            || self.full.contains(&hour)
            || self.fingerprints.contains(&fingerprint)
    }
}

/// Events a user's batch may have for `admit` to look their fingerprints up in the stored
/// hours (a binary search in each) rather than in a map of every stored fingerprint: a map
/// rebuilt for every touched user of every batch, which was most of `admit`'s time for the
/// many users with an event or two (callgrind, bench/engine.py).
const SEARCHED_EVENTS: usize = 16;

/// Past `SEARCHED_EVENTS`, the stored hours are still searched while they hold at least this
/// many fingerprints per event and hour: a bot's record of 260,000 fingerprints (the top
/// user of a minute of bench/ingest.py's freshness feed) was made a map of them in every
/// batch for its few thousand events there, where about 18 steps of a binary search per
/// event and hour do.
const SEARCHED_PER_EVENT_HOUR: usize = 8;

/// Fingerprint → the newest hour it was applied in, as `admit` asks.
enum Known<'s> {
    /// Built from every stored fingerprint (hours ascend, so later ones win), then kept up
    /// to date: foldhash, not SipHash.
    Map(HashMap<u32, i64>),
    /// The stored hours, each sorted (as written), searched; what `admit` added scanned (a
    /// batch of at most `SEARCHED_EVENTS` of the user's events: no allocation).
    Search(&'s Seen),
    /// The stored hours searched, and what `admit` added by fingerprint (its newest hour):
    /// a busy user's many events.
    SearchMapped(&'s Seen, HashMap<u32, i64>),
}

impl<'s> Known<'s> {
    fn of(seen: &'s Seen, events: usize) -> Self {
        let stored: usize = seen.values().map(|blob| blob.len() / 4).sum();
        let few = events <= SEARCHED_EVENTS;
        let searched = few
            || events
                .saturating_mul(seen.len())
                .saturating_mul(SEARCHED_PER_EVENT_HOUR)
                <= stored;
        if searched && seen.values().all(|blob| is_sorted(blob)) {
            return if few {
                Known::Search(seen)
            } else {
                Known::SearchMapped(seen, HashMap::with_capacity(events))
            };
        }
        let mut known = HashMap::with_capacity(stored);
        for (hour, blob) in seen.iter() {
            for fingerprint in unpack(blob) {
                known.insert(fingerprint, *hour);
            }
        }
        Known::Map(known)
    }

    /// The newest hour `fingerprint` was applied in, stored or `added` by this batch.
    fn newest(&self, fingerprint: u32, added: &[(i64, u32)]) -> Option<i64> {
        let (seen, fresh) = match self {
            Known::Map(known) => return known.get(&fingerprint).copied(),
            Known::Search(seen) => (seen, Self::scanned(fingerprint, added)),
            Known::SearchMapped(seen, mapped) => (seen, mapped.get(&fingerprint).copied()),
        };
        let stored = (seen.iter().rev())
            .find(|(_, blob)| contains(blob, fingerprint))
            .map(|(hour, _)| *hour);
        stored.max(fresh)
    }

    /// The newest hour `fingerprint` was added in, found in `added`.
    fn scanned(fingerprint: u32, added: &[(i64, u32)]) -> Option<i64> {
        (added.iter())
            .filter(|(_, added)| *added == fingerprint)
            .map(|(hour, _)| *hour)
            .max()
    }

    /// `fingerprint` applied in `hour` (a `Search` finds it in `admit`'s additions).
    fn apply(&mut self, fingerprint: u32, hour: i64) {
        let known = match self {
            Known::Map(known) | Known::SearchMapped(_, known) => known,
            Known::Search(_) => return,
        };
        let newest = known.entry(fingerprint).or_insert(hour);
        *newest = (*newest).max(hour);
    }
}

/// Whether a stored hour's fingerprints are strictly ascending, as they are written.
fn is_sorted(blob: &[u8]) -> bool {
    let mut previous = None;
    unpack(blob).all(|fingerprint| {
        let ascending = previous.is_none_or(|previous| previous < fingerprint);
        previous = Some(fingerprint);
        ascending
    })
}

/// Whether a strictly ascending hour holds `fingerprint`.
fn contains(blob: &[u8], fingerprint: u32) -> bool {
    let (mut low, mut high) = (0, blob.len() / 4);
    while low < high {
        let middle = (low + high) / 2;
        let at = &blob[middle * 4..middle * 4 + 4];
        match u32::from_be_bytes([at[0], at[1], at[2], at[3]]).cmp(&fingerprint) {
            std::cmp::Ordering::Less => low = middle + 1,
            std::cmp::Ordering::Greater => high = middle,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

/// The hour's bytes with `fresh` added: two ascending runs merged, each fingerprint once
/// (`fresh` and the old `blob` strictly ascending).
fn merge(fresh: impl ExactSizeIterator<Item = u32>, blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(blob.len() + 4 * fresh.len());
    let mut old = unpack(blob).peekable();
    for fingerprint in fresh {
        while let Some(stored) = old.next_if(|stored| *stored < fingerprint) {
            out.extend_from_slice(&stored.to_be_bytes());
        }
        old.next_if_eq(&fingerprint);
        out.extend_from_slice(&fingerprint.to_be_bytes());
    }
    old.for_each(|stored| out.extend_from_slice(&stored.to_be_bytes()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `admit` as it was before its search path and merge: a map of every stored
    /// fingerprint, and each touched hour re-sorted in a set; an hour records no more
    /// fingerprints once it holds `cap`, stored and added.
    fn reference(
        horizon_hours: i64,
        cap: usize,
        seen: &mut Seen,
        events: &[(i64, u32)],
    ) -> Vec<usize> {
        let mut newest_hour = seen.keys().next_back().copied().unwrap_or(-(1 << 62));
        let mut known: HashMap<u32, i64> = HashMap::new();
        for (hour, blob) in seen.iter() {
            for fingerprint in unpack(blob) {
                known.insert(fingerprint, *hour);
            }
        }
        let mut admitted = Vec::new();
        let mut added: BTreeMap<i64, BTreeSet<u32>> = BTreeMap::new();
        for (index, &(ts, fingerprint)) in events.iter().enumerate() {
            let hour = ts.div_euclid(HOUR_MS);
            let first = newest_hour - horizon_hours;
            if hour >= first {
                let have = known.get(&fingerprint).copied();
                if have.is_some_and(|h| h >= first) {
                    continue;
                }
                let stored = seen.get(&hour).map_or(0, |blob| blob.len() / 4);
                let fresh = added.get(&hour).map_or(0, BTreeSet::len);
                if stored + fresh < cap {
                    if have.is_none_or(|h| h < hour) {
                        known.insert(fingerprint, hour);
                    }
                    added.entry(hour).or_default().insert(fingerprint);
                }
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
                merged.insert(hour, blob);
                continue;
            };
            fresh.extend(unpack(&blob));
            merged.insert(hour, fresh.iter().flat_map(|f| f.to_be_bytes()).collect());
        }
        *seen = merged;
        admitted
    }

    fn arb_seen() -> impl Strategy<Value = Seen> {
        // Hours of a few small fingerprints (so events repeat them), mostly as written
        // (ascending, distinct), sometimes not.
        let hour = (prop::collection::vec(0u32..12, 0..8), any::<bool>()).prop_map(
            |(mut fingerprints, as_written)| {
                if as_written {
                    fingerprints.sort_unstable();
                    fingerprints.dedup();
                }
                fingerprints
                    .iter()
                    .flat_map(|f| f.to_be_bytes())
                    .collect::<Vec<u8>>()
            },
        );
        prop::collection::btree_map(0i64..60, hour, 0..5)
    }

    /// `admit` under the cap `cap` and `reference` admit the same events and keep the same
    /// fingerprints.
    fn same_as_reference(
        horizon: i64,
        cap: usize,
        seen: Seen,
        events: &[(i64, u32)],
    ) -> Result<(), TestCaseError> {
        let (mut mine, mut theirs) = (seen.clone(), seen);
        let mut admitted = Vec::new();
        admit_capped(
            horizon,
            cap,
            &mut mine,
            events,
            &mut admitted,
            &mut Vec::new(),
        );
        prop_assert_eq!(admitted, reference(horizon, cap, &mut theirs, events));
        prop_assert_eq!(mine, theirs);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn admitting_is_the_reference(
            seen in arb_seen(),
            events in prop::collection::vec((0..60 * HOUR_MS, 0u32..12), 0..40),
            horizon in 1i64..30,
            cap in prop_oneof![1usize..12, Just(IDS_PER_HOUR)],
        ) {
            same_as_reference(horizon, cap, seen, &events)?;
        }
    }

    /// A few hours of many fingerprints, as written, and events that repeat some of them:
    /// the stored hours searched though the batch has more than `SEARCHED_EVENTS` events.
    fn arb_large_seen() -> impl Strategy<Value = Seen> {
        let hour = prop::collection::btree_set(0u32..4_000, 0..2_000).prop_map(|set| {
            set.iter()
                .flat_map(|f| f.to_be_bytes())
                .collect::<Vec<u8>>()
        });
        prop::collection::btree_map(0i64..4, hour, 0..3)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn admitting_a_busy_users_batch_is_the_reference(
            seen in arb_large_seen(),
            events in prop::collection::vec((0..4 * HOUR_MS, 0u32..4_000), 17..120),
            horizon in 1i64..3,
            cap in prop_oneof![1_500usize..2_100, Just(IDS_PER_HOUR)],
        ) {
            same_as_reference(horizon, cap, seen, &events)?;
        }

        /// `admit_into` with buffers kept from user to user (left as the last user left
        /// them) admits what `admit` admits, and leaves the same fingerprints.
        #[test]
        fn admitting_into_kept_buffers_is_admitting(
            users in prop::collection::vec(
                (arb_seen(), prop::collection::vec((0..60 * HOUR_MS, 0u32..12), 0..20)),
                1..6,
            ),
            horizon in 1i64..30,
        ) {
            let (mut admitted, mut added) = (vec![7usize; 3], vec![(1i64, 2u32); 5]);
            for (seen, events) in users {
                let (mut mine, mut theirs) = (seen.clone(), seen);
                admit_into(horizon, &mut mine, &events, &mut admitted, &mut added);
                prop_assert_eq!(&admitted, &admit(horizon, &mut theirs, &events));
                prop_assert_eq!(mine, theirs);
            }
        }
    }

    #[test]
    fn a_full_hour_records_no_more_ids_and_its_replays_are_met() {
        let ids: Vec<(i64, u32)> = (0..IDS_PER_HOUR as u32 + 100).map(|i| (5, i)).collect();
        let mut seen = Seen::new();
        assert_eq!(admit(24, &mut seen, &ids).len(), ids.len());
        assert_eq!(seen[&0].len(), 4 * IDS_PER_HOUR);
        // A repeat of a recorded id is dropped; one of an id past the cap is applied again.
        let last = ids.len() as u32 - 1;
        assert_eq!(admit(24, &mut seen, &[(6, 0), (6, last)]), vec![1]);
        // Replayed at or below the progress, the full hour's events are all met.
        let kept = Kept::of(24, &seen).expect("fingerprints kept");
        assert!(kept.met(7, 0) && kept.met(7, last));
        assert!(!kept.met(HOUR_MS, last));
    }

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
