//! The micro-batch pipeline around the executor, for a registry whose signals all run
//! natively: the port of the Python engine's per-user steps (`processing/engine.py`, the
//! reference model), in two calls per batch with the enrichment lookups in between.
//!
//! 1. [`select`]: decode each user's record, drop the events their progress shows as
//!    applied (a replay, unless the id was never met: offsets that went backwards) and
//!    the repeats of applied event ids ([`crate::dedupe`]), advance
//!    the progress, and order each user's remaining events by time (stable).
//! 2. [`finish`]: run the plans over those events ([`crate::batch::execute`]), place the new
//!    states, forget stale versions, and encode every record that changed.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::batch::{apply_decoded, execute, Batch};
use crate::decoded::Decoded;
use crate::dedupe;
use crate::error::CoreError;
use crate::mean_vector::SharedVector;
use crate::plan::Plan;
use crate::record::{self, StateBytes, StoredState, UserRecord};
use crate::value::Value;

/// A micro-batch's events as the pipeline reads them, index for index.
#[derive(Debug, Clone, Default)]
pub struct Arrivals {
    /// How many distinct users the batch has; `user[i]` indexes them.
    pub users: usize,
    pub user: Vec<u32>,
    pub ts: Vec<i64>,
    /// Each event id's fingerprint ([`dedupe::fingerprint`]).
    pub fingerprint: Vec<u32>,
    /// Source partitions by name; `partition[i]` indexes them.
    pub partitions: Vec<String>,
    pub partition: Vec<u32>,
    pub offset: Vec<i64>,
    /// Whether the partitions' offsets may go backwards (Kafka: a topic made again, a broker
    /// that lost its log): an event at or below its user's progress is then applied unless
    /// its id was met ([`dedupe::Kept`]). Off, the progress alone decides, as a
    /// spool's progress must: a deletion's record keeps only the progress of the events it
    /// acknowledged before it, with no ids, so they never bring the user back.
    pub rewinds: bool,
}

/// What [`select`] found, kept for [`finish`].
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Per batch user: the stored record's progress (advanced) and seen event ids (empty for
    /// a new user). Its states stay in the stored bytes, where `stored_states` finds them.
    pub records: Vec<UserRecord>,
    /// Per batch user: the stored record's states, as ranges of its bytes (which the caller
    /// keeps, and hands to [`finish`] again).
    pub stored_states: Vec<Vec<StoredState>>,
    /// Per batch user: the events to apply, by event time (batch indices).
    pub fresh: Vec<Vec<usize>>,
    /// Per batch user: whether the record is written (some event was not applied before).
    pub changed: Vec<bool>,
    /// Events already applied (offset not above the user's progress).
    pub duplicates: u64,
    /// Events whose `event_id` the user applied within the dedupe horizon.
    pub repeats: u64,
    /// Events at or below the user's progress whose id was never met: their partition's
    /// offsets went backwards ([`dedupe::Kept`]); taken as new events.
    pub rewound: u64,
    /// Native states that the Python codec wrote, re-encoded by the glue (user, plan).
    pub migrated: HashMap<(usize, usize), Vec<u8>>,
}

/// What a finished batch writes and counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// (batch user, new record bytes) for every changed record.
    pub puts: Vec<(usize, Vec<u8>)>,
    pub applied: Vec<u64>,
    pub expired: Vec<u64>,
    /// The newest event time applied, if any event was.
    pub newest_ms: Option<i64>,
}

/// The signal keys the record keeps: states of a registered signal's version that the
/// module no longer declares, or that a cut-over retired past its grace, are dropped.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    pub declared: HashSet<String>,
    pub expired: HashSet<String>,
    pub names: HashSet<String>,
}

impl Versions {
    fn stale(&self, key: &str) -> bool {
        let name = key.split_once('@').map_or(key, |(name, _)| name);
        (!self.declared.contains(key) || self.expired.contains(key)) && self.names.contains(name)
    }
}

impl Arrivals {
    fn check(&self, stored: usize) -> Result<(), CoreError> {
        let n = self.ts.len();
        let lengths = [
            self.user.len(),
            self.fingerprint.len(),
            self.partition.len(),
        ];
        if lengths.iter().any(|l| *l != n) || self.offset.len() != n {
            return Err(CoreError::Batch("event columns differ in length".into()));
        }
        if stored != self.users || self.user.iter().any(|u| *u as usize >= self.users) {
            return Err(CoreError::Batch("users and stored records disagree".into()));
        }
        if self
            .partition
            .iter()
            .any(|p| *p as usize >= self.partitions.len())
        {
            return Err(CoreError::Batch("a partition index is out of range".into()));
        }
        Ok(())
    }

    fn not_applied(&self, i: usize, progress: &BTreeMap<String, i64>) -> bool {
        let partition = &self.partitions[self.partition[i] as usize];
        self.offset[i] > progress.get(partition).copied().unwrap_or(-1)
    }

    fn advance(&self, progress: &mut BTreeMap<String, i64>, events: &[usize]) {
        for &i in events {
            let partition = &self.partitions[self.partition[i] as usize];
            let offset = self.offset[i];
            match progress.get_mut(partition) {
                Some(applied) if *applied >= offset => {}
                Some(applied) => *applied = offset,
                None => {
                    progress.insert(partition.clone(), offset);
                }
            }
        }
    }
}

pub fn select(
    arrivals: &Arrivals,
    stored: &[Option<&[u8]>],
    horizon_hours: Option<i64>,
) -> Result<Selection, CoreError> {
    arrivals.check(stored.len())?;
    // Sized up front: collected through a `Result`, the pairs' vector grew by doubling.
    // With the buffers `select_records` keeps across users: `select` 79.1 → 66.8 M
    // instructions (callgrind, bench/engine.py --events 50000 --batch 10000).
    let mut records: Vec<UserRecord> = Vec::with_capacity(stored.len());
    let mut states: Vec<Vec<StoredState>> = Vec::with_capacity(stored.len());
    for (user, raw) in stored.iter().enumerate() {
        let (record, stored_states) = match raw {
            Some(data) => record::decode_in_place(data).map_err(|e| CoreError::UserRecord {
                user,
                message: e.to_string(),
            })?,
            None => (UserRecord::default(), Vec::new()),
        };
        records.push(record);
        states.push(stored_states);
    }
    let mut selection = select_records(arrivals, records, horizon_hours)?;
    selection.stored_states = states;
    Ok(selection)
}

/// [`select`] over records already decoded (one per batch user), for a caller that keeps
/// their states itself ([`apply_to_decoded`]); [`finish`] writes the states [`select`] found.
pub fn select_records(
    arrivals: &Arrivals,
    records: Vec<UserRecord>,
    horizon_hours: Option<i64>,
) -> Result<Selection, CoreError> {
    arrivals.check(records.len())?;
    let by_user = by_user(arrivals);
    let mut out = Selection {
        records: Vec::with_capacity(arrivals.users),
        stored_states: vec![Vec::new(); arrivals.users],
        fresh: Vec::with_capacity(arrivals.users),
        changed: Vec::with_capacity(arrivals.users),
        ..Selection::default()
    };
    // Kept across users: a `Vec` of each user's keys was an allocation per user, and so
    // were the unapplied events, the admitted ones and the dedupe's additions.
    let mut keys: Vec<(i64, u32)> = Vec::new();
    let (mut unapplied, mut admitted, mut added) = (Vec::new(), Vec::new(), Vec::new());
    for (events, mut record) in by_user.chunks().zip(records) {
        out.rewound += unapplied_into(arrivals, events, &record, horizon_hours, &mut unapplied);
        out.duplicates += (events.len() - unapplied.len()) as u64;
        arrivals.advance(&mut record.progress, &unapplied);
        out.changed.push(!unapplied.is_empty());
        let mut fresh = match horizon_hours {
            Some(hours) if !unapplied.is_empty() => {
                keys.clear();
                keys.extend(
                    unapplied
                        .iter()
                        .map(|&i| (arrivals.ts[i], arrivals.fingerprint[i])),
                );
                dedupe::admit_into(hours, &mut record.seen, &keys, &mut admitted, &mut added);
                out.repeats += (unapplied.len() - admitted.len()) as u64;
                admitted.iter().map(|&k| unapplied[k]).collect()
            }
            _ => unapplied.clone(),
        };
        fresh.sort_by_key(|&i| arrivals.ts[i]);
        out.records.push(record);
        out.fresh.push(fresh);
    }
    Ok(out)
}

/// A user's `events` that its record shows as not applied yet, into `unapplied` (cleared
/// first); the count of those taken though at or below the progress (rewound).
fn unapplied_into(
    arrivals: &Arrivals,
    events: &[usize],
    record: &UserRecord,
    horizon_hours: Option<i64>,
    unapplied: &mut Vec<usize>,
) -> u64 {
    let mut rewound = 0;
    // What the record keeps of the ids it met, once a user has an event at or below its
    // progress (`None` inside: it keeps none, the progress alone decides).
    let mut kept: Option<Option<dedupe::Kept>> = None;
    unapplied.clear();
    unapplied.extend((events.iter().copied()).filter(|&i| {
        if arrivals.not_applied(i, &record.progress) {
            return true;
        }
        // At or below the progress: a replay, unless the partition's offsets went backwards
        // and the id was never met. Without a horizon no id is kept.
        let Some(hours) = horizon_hours.filter(|_| arrivals.rewinds) else {
            return false;
        };
        let kept = kept.get_or_insert_with(|| dedupe::Kept::of(hours, &record.seen));
        let never = kept
            .as_ref()
            .is_some_and(|kept| !kept.met(arrivals.ts[i], arrivals.fingerprint[i]));
        rewound += u64::from(never);
        never
    }));
    rewound
}

/// The batch's events grouped by user, each user's in arrival order: one list of event
/// indices and where each user's start. A `Vec` per user was an allocation or two each,
/// 26,831 users a 50,000-event bench/engine.py run; with the keys' buffer below, `select`
/// 57.2 → 52.3 M instructions (callgrind).
struct ByUser {
    events: Vec<usize>,
    /// `starts[u]..starts[u + 1]`: user `u`'s events in `events`.
    starts: Vec<usize>,
}

impl ByUser {
    fn chunks(&self) -> impl Iterator<Item = &[usize]> + '_ {
        self.starts.windows(2).map(|w| &self.events[w[0]..w[1]])
    }
}

/// A counting sort of the events by user, stable (arrival order within a user).
fn by_user(arrivals: &Arrivals) -> ByUser {
    let mut starts = vec![0usize; arrivals.users + 1];
    for &u in &arrivals.user {
        starts[u as usize + 1] += 1;
    }
    for u in 0..arrivals.users {
        starts[u + 1] += starts[u];
    }
    let mut next = starts.clone();
    let mut events = vec![0usize; arrivals.user.len()];
    for (i, &u) in arrivals.user.iter().enumerate() {
        events[next[u as usize]] = i;
        next[u as usize] += 1;
    }
    ByUser { events, starts }
}

/// (batch user, plan, the state's stored value).
type PlanState<'s> = (usize, usize, &'s [u8]);

impl Selection {
    /// The events to apply, user by user, each user's by time: the order of [`finish`]'s
    /// columns.
    pub fn live(&self) -> Vec<usize> {
        self.fresh.iter().flatten().copied().collect()
    }

    /// The stored states of `plans` that are not in native form (user, plan, stored value),
    /// for users with events to apply: the glue migrates them with the reference codec.
    /// `stored`: the records [`select`] read.
    pub fn foreign_states<'s>(
        &self,
        plans: &[Plan],
        stored: &[Option<&'s [u8]>],
    ) -> Result<Vec<PlanState<'s>>, CoreError> {
        self.check_stored(stored)?;
        // Whether a value is native first, and only then which plan's it is: almost every
        // state is native, and finding each one's plan first (its key compared with each
        // plan's) was half the call: `foreign_states` 6.35 -> 3.33 M instructions
        // (callgrind, bench/engine.py --events 50000 --batch 10000).
        let foreign = |value: &[u8]| record::unwrap_native(value).is_none();
        Ok(self.plan_states(plans, stored, foreign))
    }

    /// `stored` holds a record for each user, each long enough for its stored states: the
    /// records [`select`] read, as far as their lengths tell.
    fn check_stored(&self, stored: &[Option<&[u8]>]) -> Result<(), CoreError> {
        let fits = |(states, data): (&Vec<StoredState>, &Option<&[u8]>)| {
            let len = data.map_or(0, <[u8]>::len);
            states.iter().all(|state| state.value.end <= len)
        };
        if stored.len() != self.records.len() || !self.stored_states.iter().zip(stored).all(fits) {
            return Err(CoreError::Batch(
                "the stored records are not the selection's".into(),
            ));
        }
        Ok(())
    }

    /// (user, plan, stored value) of every stored state of `plans` whose value `wanted`
    /// accepts, for users with events to apply; `stored` checked.
    fn plan_states<'s>(
        &self,
        plans: &[Plan],
        stored: &[Option<&'s [u8]>],
        wanted: impl Fn(&[u8]) -> bool,
    ) -> Vec<PlanState<'s>> {
        let mut out = Vec::new();
        for (user, states) in self.stored_states.iter().enumerate() {
            if self.fresh[user].is_empty() || states.is_empty() {
                continue;
            }
            let data = stored[user].unwrap_or_default();
            for state in states {
                let value = &data[state.value.clone()];
                if !wanted(value) {
                    continue; // looked at before the key: cheaper than finding the plan
                }
                let key = state.key(data);
                if let Some(p) = plans.iter().position(|plan| plan.key.as_bytes() == key) {
                    out.push((user, p, value));
                }
            }
        }
        out
    }

    /// Per user and plan, the native state to apply events to; `stored` checked.
    fn stored_states<'s>(
        &'s self,
        plans: &[Plan],
        stored: &[Option<&'s [u8]>],
    ) -> Result<Vec<Vec<Option<&'s [u8]>>>, CoreError> {
        let mut out = vec![vec![None; plans.len()]; self.records.len()];
        for (user, p, value) in self.plan_states(plans, stored, |_| true) {
            let native = match self.migrated.get(&(user, p)) {
                Some(state) => state.as_slice(),
                None => record::unwrap_native(value).ok_or_else(|| CoreError::UserState {
                    user,
                    plan: plans[p].key.clone(),
                    message: "a state in the Python codec's form was not migrated".into(),
                })?,
            };
            out[user][p] = Some(native);
        }
        Ok(out)
    }

    /// A changed user's new record: the progress and seen event ids as the batch left
    /// them, the plans' new states (`new[plan]`) in place of the stored ones, and the other
    /// stored states as they are, less stale versions when the user had events to apply.
    /// `states`: a buffer kept across users.
    fn encode_user<'s>(
        &self,
        user: usize,
        data: &'s [u8],
        keys: &'s PlanKeys<'_>,
        new: &'s [Option<Vec<u8>>],
        versions: &Versions,
        states: &mut Vec<(&'s [u8], StateBytes<'s>)>,
    ) -> Vec<u8> {
        let applied = !self.fresh[user].is_empty();
        let stored = &self.stored_states[user];
        if !keys.merge(data, stored, applied.then_some(new), versions, states) {
            *states = slow_states(data, stored, keys.plans, applied.then_some(new), versions);
        }
        record::encode_parts(
            &self.records[user].progress,
            states,
            &self.records[user].seen,
        )
    }
}

/// [`Selection::encode_user`]'s states in any case: the new ones (`new`, `None` when the
/// user had no events to apply) and the stored ones, put in key order by a sort, each key
/// once, stale versions dropped when there were new ones.
fn slow_states<'s>(
    data: &'s [u8],
    stored: &[StoredState],
    plans: &'s [Plan],
    new: Option<&'s [Option<Vec<u8>>]>,
    versions: &Versions,
) -> Vec<(&'s [u8], StateBytes<'s>)> {
    let mut states: Vec<(&[u8], StateBytes<'_>)> = Vec::with_capacity(plans.len() + 2);
    for (plan, state) in plans.iter().zip(new.unwrap_or_default()) {
        if let Some(state) = state {
            states.push((plan.key.as_bytes(), StateBytes::Native(state)));
        }
    }
    // The stored ones last to first: of a key stored twice the last counts, as in a
    // decoded map.
    for state in stored.iter().rev() {
        states.push((
            state.key(data),
            StateBytes::Value(&data[state.value.clone()]),
        ));
    }
    // A new state comes before the stored one of its key, and the first given stays.
    record::in_key_order(&mut states);
    if new.is_some() {
        states.retain(|(key, _)| !is_stale(key, versions));
    }
    states
}

/// Whether a stored key is a stale version (keys are UTF-8: the record's parse read them as
/// text).
fn is_stale(key: &[u8], versions: &Versions) -> bool {
    std::str::from_utf8(key).is_ok_and(|key| versions.stale(key))
}

/// The plans' keys as a batch's records are written: in key order, each with whether it is
/// a stale version. Worked out once a batch, so that a record whose stored keys are in
/// order (as written) is merged with its new states, not sorted and checked key by key.
struct PlanKeys<'p> {
    plans: &'p [Plan],
    /// Plan indices by key; `None` when two plans share a key (then every record is sorted).
    sorted: Option<Vec<usize>>,
    stale: Vec<bool>,
}

impl<'p> PlanKeys<'p> {
    fn new(plans: &'p [Plan], versions: &Versions) -> Self {
        let mut sorted: Vec<usize> = (0..plans.len()).collect();
        sorted.sort_by(|a, b| plans[*a].key.cmp(&plans[*b].key));
        let distinct = (sorted.windows(2)).all(|w| plans[w[0]].key != plans[w[1]].key);
        PlanKeys {
            plans,
            sorted: distinct.then_some(sorted),
            stale: plans.iter().map(|plan| versions.stale(&plan.key)).collect(),
        }
    }

    /// What [`slow_states`] gives, by a merge of the plans' keys and the stored ones, into
    /// `states` (cleared first; a buffer kept across users, not a `Vec` per user); `false`
    /// (use `slow_states`) unless the stored keys are strictly increasing.
    fn merge<'s>(
        &'s self,
        data: &'s [u8],
        stored: &[StoredState],
        new: Option<&'s [Option<Vec<u8>>]>,
        versions: &Versions,
        states: &mut Vec<(&'s [u8], StateBytes<'s>)>,
    ) -> bool {
        states.clear();
        let Some(sorted) = self.sorted.as_ref() else {
            return false;
        };
        if !(stored.windows(2)).all(|w| w[0].key(data) < w[1].key(data)) {
            return false;
        }
        let value = |state: &StoredState| StateBytes::Value(&data[state.value.clone()]);
        let mut rest = stored.iter().peekable();
        for &p in sorted {
            let key = self.plans[p].key.as_bytes();
            // Stored states of keys no plan has (other signals, retired versions).
            while let Some(state) = rest.next_if(|state| state.key(data) < key) {
                if new.is_none() || !is_stale(state.key(data), versions) {
                    states.push((state.key(data), value(state)));
                }
            }
            let old = rest.next_if(|state| state.key(data) == key);
            if new.is_some() && self.stale[p] {
                continue;
            }
            match (new.and_then(|new| new[p].as_deref()), old) {
                (Some(state), _) => states.push((key, StateBytes::Native(state))),
                (None, Some(state)) => states.push((key, value(state))),
                (None, None) => {}
            }
        }
        for state in rest {
            if new.is_none() || !is_stale(state.key(data), versions) {
                states.push((state.key(data), value(state)));
            }
        }
        true
    }
}

/// The live events' field columns, aligned with [`Selection::live`].
#[derive(Debug, Clone, Default)]
pub struct LiveColumns {
    pub names: Vec<String>,
    pub columns: Vec<Vec<Value>>,
    pub vectors: Vec<(String, Vec<Option<SharedVector>>)>,
}

/// Run the plans over the live events (`columns`, aligned with [`Selection::live`]) and
/// encode every changed record; `stored`: the records [`select`] read, as it read them.
pub fn finish(
    plans: &[Plan],
    arrivals: &Arrivals,
    selection: &Selection,
    stored: &[Option<&[u8]>],
    columns: LiveColumns,
    versions: &Versions,
) -> Result<Outcome, CoreError> {
    selection.check_stored(stored)?;
    let batch = live_batch(arrivals, selection, columns);
    let executed = execute(plans, &batch, &selection.stored_states(plans, stored)?)?;
    let keys = PlanKeys::new(plans, versions);
    // With the tiles' and seen plans' columns listed into a buffer too: `finish` 669.9 →
    // 662.6 M instructions (callgrind, bench/engine.py --events 50000 --batch 10000).
    let mut states = Vec::new();
    let puts = (executed.states.iter().enumerate())
        .filter(|(user, _)| selection.changed[*user])
        .map(|(user, new)| {
            let data = stored[user].unwrap_or_default();
            let record = selection.encode_user(user, data, &keys, new, versions, &mut states);
            (user, record)
        })
        .collect();
    Ok(Outcome {
        puts,
        newest_ms: batch.ts.iter().copied().max(),
        applied: executed.applied,
        expired: executed.expired,
    })
}

/// [`finish`]'s application for a caller that keeps its users' states decoded (`decoded[user][plan]`,
/// updated in place) from one call to the next, starting from empty records: nothing is
/// decoded and nothing encoded. The records keep their progress and seen event ids; their
/// states stay in `decoded` (a caller that writes them encodes them; the training set's
/// loop only reads them). A record holding a state its `decoded` lacks is refused.
pub fn apply_to_decoded(
    plans: &[Plan],
    arrivals: &Arrivals,
    selection: &Selection,
    columns: LiveColumns,
    decoded: &mut [Vec<Option<Decoded>>],
) -> Result<(), CoreError> {
    for (user, (record, states)) in selection.records.iter().zip(decoded.iter()).enumerate() {
        let lacking = (plans.iter().zip(states))
            .find(|(plan, state)| state.is_none() && record.states.contains_key(&plan.key));
        if let Some((plan, _)) = lacking {
            return Err(CoreError::UserState {
                user,
                plan: plan.key.clone(),
                message: "a stored state was not handed over decoded".into(),
            });
        }
    }
    let batch = live_batch(arrivals, selection, columns);
    apply_decoded(plans, &batch, decoded)?;
    Ok(())
}

/// The live events as the executor takes them, user by user, each user's by time.
fn live_batch(arrivals: &Arrivals, selection: &Selection, columns: LiveColumns) -> Batch {
    let live = selection.live();
    Batch {
        users: selection.records.len(),
        user: live.iter().map(|&i| arrivals.user[i]).collect(),
        ts: live.iter().map(|&i| arrivals.ts[i]).collect(),
        fingerprint: live.iter().map(|&i| arrivals.fingerprint[i]).collect(),
        names: columns.names,
        columns: columns.columns,
        vectors: columns.vectors,
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
