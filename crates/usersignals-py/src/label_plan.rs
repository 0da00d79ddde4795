//! A training set's plan (`plan_labels`, `usersignals_core::label_plan`), read straight from
//! the shard's `(Event, Position)` pairs and kept native ([`PlannedLabels`]) for
//! `label_rows`, which takes it as it is.
//!
//! The Python steps this replaced built a list per field of every event (user, time,
//! partition, offset, event id) for the plan, lists of the plan's users that `label_rows`
//! converted back, and the events' times and ids again for `label_rows`: at 1 M events,
//! about 1.5 of a one-process training set's 12 CPU-seconds. Each field is now read once,
//! through its member descriptor (`attrs`), and the plan stays in Rust; Python reads its
//! parts only for the rounds of the object path and the labels' order.

use hashbrown::HashMap;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyList, PyString, PyTuple};
use usersignals_core::dedupe::fingerprint;
use usersignals_core::label_plan::{self, PlanEvents, PlanLabels};
use usersignals_core::training::LabelledUser;

use crate::attrs::Attr;
use crate::raise;

/// Archive rows' places in one sequence: a file's rank (by name) above its row number
/// (`usersignals.offline.training`: an archive's files are no partitions to merge).
const ROW_BITS: u32 = 40;

/// A labelled user as Python reads them (`LabelledUser` in `_core.pyi`).
type UserOut = (Vec<usize>, Vec<(usize, Vec<i64>)>);

/// A shard's plan: the events in feeding order, users one after another, and per labelled
/// user their events (places in that order) and label groups, as `label_rows` takes them.
#[pyclass(frozen, module = "usersignals._core")]
pub struct PlannedLabels {
    /// The events' indices (into the pairs planned) in feeding order.
    order: Vec<usize>,
    pub(crate) users: Vec<LabelledUser>,
    /// The labels' indices in the order the groups list them.
    label_order: Vec<usize>,
    /// The events' times and event-id fingerprints, in feeding order.
    pub(crate) ts: Vec<i64>,
    pub(crate) fingerprint: Vec<u32>,
}

#[pymethods]
impl PlannedLabels {
    #[getter]
    fn order(&self) -> Vec<usize> {
        self.order.clone()
    }

    #[getter]
    fn label_order(&self) -> Vec<usize> {
        self.label_order.clone()
    }

    /// Per user: their events (places in `order`), their groups (events included, times).
    #[getter]
    fn users(&self) -> Vec<UserOut> {
        (self.users.iter())
            .map(|user| (user.events.clone(), user.groups.clone()))
            .collect()
    }
}

/// The pairs' fields, index for index: users and partitions numbered in order of first
/// appearance, archive rows placed in one sequence (see [`ROW_BITS`]).
struct Read {
    user: Vec<usize>,
    users: HashMap<String, usize>,
    ts: Vec<i64>,
    fingerprint: Vec<u32>,
    partition: Vec<usize>,
    offset: Vec<i64>,
}

fn read_pairs<'py>(pairs: &Bound<'py, PyList>, archive_prefix: &str) -> PyResult<Read> {
    let py = pairs.py();
    let count = pairs.len();
    let attr = |name: &Bound<'py, PyString>| Attr::new(name.clone());
    let (mut user_attr, mut ts_attr) = (attr(intern!(py, "user_id")), attr(intern!(py, "ts")));
    let mut event_id_attr = attr(intern!(py, "event_id"));
    let (mut partition_attr, mut offset_attr) =
        (attr(intern!(py, "partition")), attr(intern!(py, "offset")));
    let mut read = Read {
        user: Vec::with_capacity(count),
        users: HashMap::new(),
        ts: Vec::with_capacity(count),
        fingerprint: Vec::with_capacity(count),
        partition: Vec::with_capacity(count),
        offset: Vec::with_capacity(count),
    };
    let mut partitions: HashMap<String, usize> = HashMap::new();
    // The partition object the last position held and its index: an archive's positions
    // share one text object per file, which then is not hashed again.
    let mut last: Option<(Bound<'py, PyAny>, usize)> = None;
    for pair in pairs.iter() {
        let pair = pair.cast_into::<PyTuple>()?;
        let (event, position) = (pair.get_item(0)?, pair.get_item(1)?);
        let user = user_attr.get(&event)?;
        read.user.push(index_of(
            &mut read.users,
            user.cast::<PyString>()?.to_str()?,
        ));
        read.ts.push(ts_attr.get(&event)?.extract()?);
        let event_id = event_id_attr.get(&event)?;
        (read.fingerprint).push(fingerprint(event_id.cast::<PyString>()?.to_str()?));
        let partition = partition_attr.get(&position)?;
        let index = match &last {
            Some((known, index)) if known.is(&partition) => *index,
            _ => {
                let index = index_of(&mut partitions, partition.cast::<PyString>()?.to_str()?);
                last = Some((partition, index));
                index
            }
        };
        read.partition.push(index);
        read.offset.push(offset_attr.get(&position)?.extract()?);
    }
    let ranks = placed(partitions, archive_prefix);
    for (partition, offset) in read.partition.iter_mut().zip(&mut read.offset) {
        let (rank, file) = ranks[*partition];
        *partition = rank;
        if let Some(file) = file {
            *offset |= (file as i64) << ROW_BITS;
        }
    }
    Ok(read)
}

/// Per partition (by its index): its rank among the placed names in ascending order, and
/// for an archive file its own rank among the files, which goes above its row numbers (all
/// files are placed under `archive_prefix`).
fn placed(partitions: HashMap<String, usize>, archive_prefix: &str) -> Vec<(usize, Option<usize>)> {
    let mut files: Vec<&str> = (partitions.keys())
        .filter(|name| name.starts_with(archive_prefix))
        .map(String::as_str)
        .collect();
    files.sort_unstable();
    let file_rank: HashMap<&str, usize> = files.iter().enumerate().map(|(r, f)| (*f, r)).collect();
    let place = |name: &str| match file_rank.get(name) {
        Some(_) => archive_prefix.to_string(),
        None => name.to_string(),
    };
    let mut names: Vec<String> = partitions.keys().map(|name| place(name)).collect();
    names.sort_unstable();
    names.dedup();
    let mut ranks = vec![(0, None); partitions.len()];
    for (name, &index) in &partitions {
        let rank = names.binary_search(&place(name)).expect("a placed name");
        ranks[index] = (rank, file_rank.get(name.as_str()).copied());
    }
    ranks
}

/// `name`'s index in `names`, given the next one when it is new.
fn index_of(names: &mut HashMap<String, usize>, name: &str) -> usize {
    let next = names.len();
    *names.entry_ref(name).or_insert(next)
}

/// Which events feed each labelled user, in what order, and where the labels fall among
/// them (see `usersignals_core::label_plan`): the events as `(Event, Position)` pairs; the
/// labels' users, times and rows; the event-id dedupe's horizon in hours (`None`: no
/// dedupe); the partition prefix of archive rows.
#[pyfunction]
#[pyo3(signature = (pairs, label_user, label_ts, label_row, horizon_hours, archive_prefix))]
pub fn plan_labels(
    py: Python<'_>,
    pairs: &Bound<'_, PyList>,
    label_user: Vec<PyBackedStr>,
    label_ts: Vec<i64>,
    label_row: Vec<i64>,
    horizon_hours: Option<i64>,
    archive_prefix: &str,
) -> PyResult<PlannedLabels> {
    let mut read = read_pairs(pairs, archive_prefix)?;
    let label_user: Vec<usize> = (label_user.iter())
        .map(|user| index_of(&mut read.users, user))
        .collect();
    let events = PlanEvents {
        user: &read.user,
        ts: &read.ts,
        partition: &read.partition,
        offset: &read.offset,
        fingerprint: &read.fingerprint,
    };
    let labels = PlanLabels {
        user: &label_user,
        ts: &label_ts,
        row: &label_row,
    };
    let users = read.users.len();
    let planned = py
        .detach(|| label_plan::plan_labels(users, &events, &labels, horizon_hours))
        .map_err(raise)?;
    let mut plan = PlannedLabels {
        order: Vec::with_capacity(read.ts.len()),
        users: Vec::with_capacity(planned.len()),
        label_order: Vec::with_capacity(label_ts.len()),
        ts: Vec::new(),
        fingerprint: Vec::new(),
    };
    for user in planned {
        let first = plan.order.len();
        plan.order.extend(&user.events);
        let groups = (user.groups.into_iter())
            .map(|(end, group)| {
                let times = group.iter().map(|&k| label_ts[k]).collect();
                plan.label_order.extend(group);
                (end, times)
            })
            .collect();
        let events = (first..plan.order.len()).collect();
        plan.users.push(LabelledUser { events, groups });
    }
    plan.ts = plan.order.iter().map(|&i| read.ts[i]).collect();
    plan.fingerprint = plan.order.iter().map(|&i| read.fingerprint[i]).collect();
    Ok(plan)
}
