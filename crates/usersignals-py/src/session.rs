//! `BatchSession`: one micro-batch through the native pipeline (`usersignals_core::pipeline`)
//! when every signal of the registry is native. Two calls, with the enrichment lookups in
//! between: `NativePlans.select` (records, progress, event-id dedupe) and
//! `BatchSession.apply` (the plans, stale versions, the encoded records).

use std::collections::{BTreeMap, HashSet};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use usersignals_core::pipeline::{finish, select, Arrivals, Selection, Versions};
use usersignals_core::record;

use crate::{live_columns, raise, NativePlans};

/// Per plan key: (applied, expired) events, and the newest event time applied.
type Applied = (Vec<u64>, Vec<u64>, Option<i64>);
/// (batch user, new record bytes) for every record to write.
type Puts<'py> = Vec<(usize, Bound<'py, PyBytes>)>;

#[pyclass(module = "usersignals._core")]
pub struct BatchSession {
    plans: Py<NativePlans>,
    arrivals: Arrivals,
    selection: Selection,
}

#[pymethods]
impl BatchSession {
    /// Decode the batch users' records (`stored`, one per user, `None` for a new user), drop
    /// applied events and repeated event ids (`horizon_hours`: `None` turns that off), and
    /// advance the progress. See `usersignals.processing.native_batch`.
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (plans, user, ts, event_id, partitions, partition, offset, stored, horizon_hours))]
    fn select(
        py: Python<'_>,
        plans: Py<NativePlans>,
        user: Vec<u32>,
        ts: Vec<i64>,
        event_id: Vec<String>,
        partitions: Vec<String>,
        partition: Vec<u32>,
        offset: Vec<i64>,
        stored: Vec<Option<Bound<'_, PyBytes>>>,
        horizon_hours: Option<i64>,
    ) -> PyResult<Self> {
        let arrivals = Arrivals {
            users: stored.len(),
            user,
            ts,
            event_id,
            partitions,
            partition,
            offset,
        };
        let slices: Vec<Option<&[u8]>> = stored
            .iter()
            .map(|s| s.as_ref().map(|b| b.as_bytes()))
            .collect();
        let selection = py
            .detach(|| select(&arrivals, &slices, horizon_hours))
            .map_err(raise)?;
        Ok(BatchSession {
            plans,
            arrivals,
            selection,
        })
    }

    /// The events to apply (batch indices), user by user and each user's by event time: the
    /// order of `apply`'s columns.
    fn live(&self) -> Vec<usize> {
        self.selection.live()
    }

    /// (already applied, repeated event ids) among the batch's events.
    fn dropped(&self) -> (u64, u64) {
        (self.selection.duplicates, self.selection.repeats)
    }

    /// `(user, plan, stored value)` of the states the Python codec wrote, for the glue to
    /// migrate and hand back with `set_migrated`.
    fn foreign_states<'py>(&self, py: Python<'py>) -> Vec<(usize, usize, Bound<'py, PyBytes>)> {
        let plans = self.plans.get();
        self.selection
            .foreign_states(&plans.plans)
            .into_iter()
            .map(|(user, plan, value)| (user, plan, PyBytes::new(py, value)))
            .collect()
    }

    fn set_migrated(&mut self, user: usize, plan: usize, state: Vec<u8>) {
        self.selection.migrated.insert((user, plan), state);
    }

    /// Apply the plans to the live events (`columns` aligned with `live()`), drop stale
    /// versions (of `names`, not in `declared` or in `expired`), and encode: `(puts as
    /// (user, record bytes), applied per plan, expired per plan, newest event time)`.
    fn apply<'py>(
        &mut self,
        py: Python<'py>,
        columns: Vec<(String, Bound<'py, PyList>)>,
        declared: HashSet<String>,
        expired: HashSet<String>,
        names: HashSet<String>,
    ) -> PyResult<(Puts<'py>, Applied)> {
        let columns = live_columns(columns);
        let versions = Versions {
            declared,
            expired,
            names,
        };
        let plans = self.plans.get();
        let (arrivals, selection) = (&self.arrivals, &mut self.selection);
        let outcome = py
            .detach(|| finish(&plans.plans, arrivals, selection, columns, &versions))
            .map_err(raise)?;
        let puts = outcome
            .puts
            .iter()
            .map(|(user, data)| (*user, PyBytes::new(py, data)))
            .collect();
        Ok((puts, (outcome.applied, outcome.expired, outcome.newest_ms)))
    }
}

/// A user record's bytes with its progress replaced (a backfill hands the real Kafka progress
/// over in place of its feeding order); the states and fingerprints are kept as they are.
#[pyfunction]
pub fn replace_progress<'py>(
    py: Python<'py>,
    data: &[u8],
    progress: BTreeMap<String, i64>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut decoded = record::decode(data).map_err(raise)?;
    decoded.progress = progress;
    Ok(PyBytes::new(py, &record::encode(&decoded)))
}
