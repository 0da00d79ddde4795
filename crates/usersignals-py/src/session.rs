//! `BatchSession`: one micro-batch through the native pipeline (`usersignals_core::pipeline`)
//! when every signal of the registry is native. Two calls, with the enrichment lookups in
//! between: `NativePlans.select` (records, progress, event-id dedupe) and
//! `BatchSession.apply` (the plans, stale versions, the encoded records).

use std::collections::{BTreeMap, HashSet};

use hashbrown::HashMap;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use usersignals_core::dedupe::fingerprint;
use usersignals_core::pipeline::{finish, select, Arrivals, Selection, Versions};
use usersignals_core::record;

use crate::attrs::Attr;
use crate::columns::Columns;
use crate::{raise, CoreError, NativePlans};

/// A batch's arrivals read from its `Event` and `Position` objects, and its distinct user
/// ids (indexed by `Arrivals::user`, in order of first appearance).
fn arrivals_of<'py>(
    events: &Bound<'py, PyList>,
    positions: &Bound<'py, PyList>,
) -> PyResult<(Arrivals, Vec<String>)> {
    let py = events.py();
    if events.len() != positions.len() {
        return Err(CoreError::new_err("events and positions differ in length"));
    }
    let count = events.len();
    // Room for every event's user up front, not grown from empty by rehashes: `index_of`
    // 9.2 -> 6.8 M instructions (callgrind, bench/engine.py --events 50000 --batch 10000).
    let mut users: HashMap<String, u32> = HashMap::with_capacity(count);
    let mut partitions: HashMap<String, u32> = HashMap::new();
    let mut arrivals = Arrivals {
        users: 0,
        user: Vec::with_capacity(count),
        ts: Vec::with_capacity(count),
        fingerprint: Vec::with_capacity(count),
        partitions: Vec::new(),
        partition: Vec::with_capacity(count),
        offset: Vec::with_capacity(count),
        rewinds: false,
    };
    // The partition's text object the last position held, and its index: a batch's
    // positions mostly share one object per partition, and the same object is the same text
    // (held here, so its address is not reused), which then is not hashed again.
    let mut last_partition: Option<(Bound<'py, PyAny>, u32)> = None;
    // Each read through the member descriptor of the structs' fields (see `attrs`).
    let attr = |name: &Bound<'py, PyString>| Attr::new(name.clone());
    let (mut user_attr, mut ts_attr) = (attr(intern!(py, "user_id")), attr(intern!(py, "ts")));
    let mut event_id_attr = attr(intern!(py, "event_id"));
    let mut partition_attr = attr(intern!(py, "partition"));
    let mut offset_attr = attr(intern!(py, "offset"));
    for (event, position) in events.iter().zip(positions.iter()) {
        let user = user_attr.get(&event)?;
        arrivals
            .user
            .push(index_of(&mut users, user.cast::<PyString>()?.to_str()?));
        arrivals.ts.push(ts_attr.get(&event)?.extract()?);
        let event_id = event_id_attr.get(&event)?;
        (arrivals.fingerprint).push(fingerprint(event_id.cast::<PyString>()?.to_str()?));
        let partition = partition_attr.get(&position)?;
        let index = match &last_partition {
            Some((known, index)) if known.is(&partition) => *index,
            _ => {
                let index = index_of(&mut partitions, partition.cast::<PyString>()?.to_str()?);
                last_partition = Some((partition, index));
                index
            }
        };
        arrivals.partition.push(index);
        arrivals.offset.push(offset_attr.get(&position)?.extract()?);
    }
    arrivals.users = users.len();
    arrivals.partitions = in_index_order(partitions);
    Ok((arrivals, in_index_order(users)))
}

/// `name`'s index in `names`, given the next one when it is new.
fn index_of(names: &mut HashMap<String, u32>, name: &str) -> u32 {
    let next = names.len() as u32;
    *names.entry_ref(name).or_insert(next)
}

/// The names by their indices (`0..len`, each once, as `index_of` gives them): each put in
/// its place, no sort.
fn in_index_order(names: HashMap<String, u32>) -> Vec<String> {
    let mut ordered = vec![String::new(); names.len()];
    for (name, index) in names {
        ordered[index as usize] = name;
    }
    ordered
}

/// Per plan key: (applied, expired) events, and the newest event time applied.
type Applied = (Vec<u64>, Vec<u64>, Option<i64>);
/// The new record bytes of every record to write, by user key.
type Puts<'py> = Bound<'py, PyDict>;

/// The users' records, `get_many` asked for their `keys` in key order and answered in the
/// users' (`keys`' own order): a store reads a call's keys as neighbours, in its memtable's
/// skip list and its files' blocks, which share cache lines then (RocksDB's multi-gets of a
/// 256,000-record table: 3.5 µs a key at random, 1.6 µs sorted). The keys share their
/// prefix, so the user ids' order is theirs.
fn read_in_key_order<'py>(
    keys: &Bound<'py, PyList>,
    users: &[String],
    get_many: &Bound<'py, PyAny>,
) -> PyResult<Vec<Option<Bound<'py, PyBytes>>>> {
    let mut order: Vec<usize> = (0..users.len()).collect();
    order.sort_unstable_by(|&a, &b| users[a].as_bytes().cmp(users[b].as_bytes()));
    let sorted = PyList::new(
        keys.py(),
        order
            .iter()
            .map(|&index| keys.get_item(index))
            .collect::<PyResult<Vec<_>>>()?,
    )?;
    let answered: Vec<Option<Bound<'py, PyBytes>>> = get_many.call1((&sorted,))?.extract()?;
    if answered.len() != users.len() {
        return Ok(answered); // refused by the caller, with the count
    }
    let mut stored: Vec<Option<Bound<'py, PyBytes>>> = vec![None; users.len()];
    for (record, &index) in answered.into_iter().zip(&order) {
        stored[index] = record;
    }
    Ok(stored)
}

#[pyclass(module = "usersignals._core")]
pub struct BatchSession {
    plans: Py<NativePlans>,
    arrivals: Arrivals,
    /// The users' stored records as `get_many` answered: the selection's stored states are
    /// ranges of these, read again when the batch is applied (no copy of them is made).
    stored: Vec<Option<Py<PyBytes>>>,
    selection: Selection,
    /// The batch's distinct user ids (indexed as `Arrivals::user`): `apply` hands the records
    /// back in their order, which is their keys' order.
    users: Vec<String>,
    /// Their keys, as `select` handed them to Python (and `apply` hands them back).
    keys: Py<PyList>,
}

impl BatchSession {
    fn stored<'s>(&'s self, py: Python<'_>) -> Vec<Option<&'s [u8]>> {
        (self.stored.iter())
            .map(|data| data.as_ref().map(|data| data.as_bytes(py)))
            .collect()
    }
}

#[pymethods]
impl BatchSession {
    /// Read the batch from its events and their positions (`usersignals.events.model`'s
    /// `Event` and `Position`, in one pass), fetch the users' records with `get_many` (their
    /// keys: `key_prefix` + user id, distinct users in order of first appearance), decode
    /// them, drop applied events and repeated event ids (`horizon_hours`: `None` turns that
    /// off), and advance the progress; `rewinds`: the positions' offsets may go backwards
    /// (`Arrivals::rewinds`). Returns the session and the users' keys. See
    /// `usersignals.processing.native_batch`.
    #[staticmethod]
    #[pyo3(signature = (plans, events, positions, key_prefix, get_many, horizon_hours, rewinds = false))]
    fn select<'py>(
        plans: Py<NativePlans>,
        events: &Bound<'py, PyList>,
        positions: &Bound<'py, PyList>,
        key_prefix: &[u8],
        get_many: &Bound<'py, PyAny>,
        horizon_hours: Option<i64>,
        rewinds: bool,
    ) -> PyResult<(Self, Bound<'py, PyList>)> {
        let py = events.py();
        let (mut arrivals, users) = arrivals_of(events, positions)?;
        arrivals.rewinds = rewinds;
        let keys = PyList::new(
            py,
            users
                .iter()
                .map(|user| {
                    PyBytes::new_with(py, key_prefix.len() + user.len(), |key| {
                        key[..key_prefix.len()].copy_from_slice(key_prefix);
                        key[key_prefix.len()..].copy_from_slice(user.as_bytes());
                        Ok(())
                    })
                })
                .collect::<PyResult<Vec<_>>>()?,
        )?;
        let stored = read_in_key_order(&keys, &users, get_many)?;
        if stored.len() != arrivals.users {
            return Err(CoreError::new_err(
                "get_many answered a different number of records",
            ));
        }
        let slices: Vec<Option<&[u8]>> = stored
            .iter()
            .map(|s| s.as_ref().map(|b| b.as_bytes()))
            .collect();
        let selection = py
            .detach(|| select(&arrivals, &slices, horizon_hours))
            .map_err(raise)?;
        let session = BatchSession {
            plans,
            arrivals,
            stored: stored
                .into_iter()
                .map(|data| data.map(Bound::unbind))
                .collect(),
            selection,
            users,
            keys: keys.clone().unbind(),
        };
        Ok((session, keys))
    }

    /// The events to apply, taken from `events` (the batch's, as given to `select`), user by
    /// user and each user's by event time: the order of `apply`'s columns. (A list of
    /// indices for Python to take the events by cost 3.8 ms a 100,000-event batch.)
    fn live<'py>(&self, events: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyList>> {
        let live = self.selection.live();
        let mut taken = Vec::with_capacity(live.len());
        for index in live {
            taken.push(events.get_item(index)?);
        }
        PyList::new(events.py(), taken)
    }

    /// (already applied, repeated event ids, taken though at or below their user's
    /// progress) among the batch's events.
    fn dropped(&self) -> (u64, u64, u64) {
        let selection = &self.selection;
        (selection.duplicates, selection.repeats, selection.rewound)
    }

    /// `(user, plan, stored value)` of the states the Python codec wrote, for the glue to
    /// migrate and hand back with `set_migrated`.
    fn foreign_states<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Vec<(usize, usize, Bound<'py, PyBytes>)>> {
        let plans = self.plans.get();
        let stored = self.stored(py);
        let foreign = (self.selection)
            .foreign_states(&plans.plans, &stored)
            .map_err(raise)?;
        Ok(foreign
            .into_iter()
            .map(|(user, plan, value)| (user, plan, PyBytes::new(py, value)))
            .collect())
    }

    fn set_migrated(&mut self, user: usize, plan: usize, state: Vec<u8>) {
        self.selection.migrated.insert((user, plan), state);
    }

    /// Apply the plans to the live events (`columns` aligned with `live()`), drop stale
    /// versions (of `names`, not in `declared` or in `expired`), and encode: `(puts as
    /// {user key: record bytes}, applied per plan, expired per plan, newest event time)`. The
    /// puts come in their keys' order (the users' ids share the keys' prefix), the order the
    /// RocksDB store writes them in: Python's sort of a batch's keys in random order was
    /// 39 M of 2,109 M instructions (callgrind, bench/engine.py at 50,000 events in batches
    /// of 10,000); on keys in order it is one pass. Keyed here, not as (user, bytes) pairs
    /// that Python then keyed (a tuple and an int each, and its loop): 1,896.0 → 1,877.1 M
    /// engine-only instructions.
    fn apply<'py>(
        &self,
        py: Python<'py>,
        mut columns: PyRefMut<'py, Columns>,
        declared: HashSet<String>,
        expired: HashSet<String>,
        names: HashSet<String>,
    ) -> PyResult<(Puts<'py>, Applied)> {
        let columns = columns.take()?;
        let versions = Versions {
            declared,
            expired,
            names,
        };
        let plans = self.plans.get();
        let stored = self.stored(py);
        let (arrivals, selection) = (&self.arrivals, &self.selection);
        let outcome = py
            .detach(|| {
                finish(
                    &plans.plans,
                    arrivals,
                    selection,
                    &stored,
                    columns,
                    &versions,
                )
            })
            .map_err(raise)?;
        let users = &self.users;
        // Most comparisons are of the ids' first 8 bytes as one integer.
        let mut ordered: Vec<(u64, &(usize, Vec<u8>))> = (outcome.puts.iter())
            .map(|put| (id_head(&users[put.0]), put))
            .collect();
        ordered.sort_unstable_by(|(head_a, a), (head_b, b)| {
            (head_a.cmp(head_b)).then_with(|| users[a.0].cmp(&users[b.0]))
        });
        let (keys, puts) = (self.keys.bind(py), PyDict::new(py));
        for (_, (user, data)) in ordered {
            puts.set_item(keys.get_item(*user)?, PyBytes::new(py, data))?;
        }
        Ok((puts, (outcome.applied, outcome.expired, outcome.newest_ms)))
    }
}

/// An id's first 8 bytes, big-endian, padded with zeros: ids in the order of their heads,
/// equal heads in the order of the whole ids, are in the ids' (bytewise) order.
fn id_head(id: &str) -> u64 {
    let mut head = [0u8; 8];
    let n = id.len().min(8);
    head[..n].copy_from_slice(&id.as_bytes()[..n]);
    u64::from_be_bytes(head)
}

/// User records' bytes with their progress replaced, record for record (a backfill hands the
/// real Kafka progress over in place of its feeding order; one call per chunk of its load);
/// the states and fingerprints are kept as they are. A record that does not decode raises
/// `CoreError` with args `(its index, message)`.
#[pyfunction]
pub fn replace_progress<'py>(
    py: Python<'py>,
    records: Vec<Bound<'py, PyBytes>>,
    progress: Vec<BTreeMap<String, i64>>,
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    if records.len() != progress.len() {
        return Err(CoreError::new_err("records and progress differ in length"));
    }
    (records.iter().zip(progress).enumerate())
        .map(|(index, (data, progress))| {
            let replaced = record::replace_progress(data.as_bytes(), &progress)
                .map_err(|e| CoreError::new_err((index, e.to_string())))?;
            Ok(PyBytes::new(py, &replaced))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{id_head, in_index_order, index_of};
    use hashbrown::HashMap;
    use proptest::prelude::*;

    proptest! {
        /// Any ids (any Unicode, shared prefixes, ids shorter than 8 bytes): by head, then
        /// whole, is the byte order the store keeps keys in.
        #[test]
        fn any_ids_by_head_then_whole_are_in_byte_order(
            mut ids in proptest::collection::vec("(u00|ab|)\\PC{0,10}", 0..40)
        ) {
            let mut expected = ids.clone();
            expected.sort_unstable();
            ids.sort_unstable_by(|a, b| (id_head(a).cmp(&id_head(b))).then_with(|| a.cmp(b)));
            prop_assert_eq!(ids, expected);
        }
    }

    proptest! {
        /// Any ids, in any order, some repeated: a map made with room for them all numbers
        /// them as the map grown from empty did (the code it replaces), and hands them back
        /// in the same order.
        #[test]
        fn a_map_with_room_numbers_ids_as_a_grown_one(
            ids in proptest::collection::vec("[a-d]{0,3}", 0..200),
        ) {
            let mut grown: HashMap<String, u32> = HashMap::new();
            let mut roomy: HashMap<String, u32> = HashMap::with_capacity(ids.len());
            for id in &ids {
                prop_assert_eq!(index_of(&mut roomy, id), index_of(&mut grown, id));
            }
            prop_assert_eq!(in_index_order(roomy), in_index_order(grown));
        }
    }

    #[test]
    fn ids_by_head_then_whole_are_in_byte_order() {
        let mut ids = vec![
            "u0057279",
            "u0057279x",
            "u005727",
            "",
            "a",
            "ab\u{0}",
            "ab",
            "ab\u{0}\u{1}",
            "é",
            "e\u{301}",
            "zzzzzzzzzzzz",
            "zzzzzzzzzzza",
            "u1",
            "u0",
        ];
        let mut expected = ids.clone();
        expected.sort_unstable();
        ids.sort_unstable_by(|a, b| (id_head(a).cmp(&id_head(b))).then_with(|| a.cmp(b)));
        assert_eq!(ids, expected);
    }
}
