//! The training set's binding: a shard's labelled users computed and read in one call
//! (`label_rows`, `usersignals_core::training`). Each column's value is written as JSON text
//! by the serving path's kernels (`json_body`): no Python object per entry.

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use usersignals_core::json_body::LabelColumn;
use usersignals_core::training::{self, LabelledUser, TrainingEvents};

use crate::columns::Columns;
use crate::{raise, read_context, FiltersArg, NativePlans, TimesArg};

/// A column of the training set: (plan index, the context's times, whose `as_of` and "now"
/// each label sets, and its filters).
type ColumnArg = (usize, TimesArg, FiltersArg);
/// A labelled user: their events (indices), their label groups (events included, times).
type UserArg = (Vec<usize>, Vec<(usize, Vec<i64>)>);
/// Per label: each column's value (JSON), or `None` for a label to read on the object path.
type LabelValues<'py> = Vec<Option<Vec<Bound<'py, PyBytes>>>>;

fn label_columns(columns: Vec<ColumnArg>) -> Vec<LabelColumn> {
    columns
        .into_iter()
        .map(|(plan, times, filters)| LabelColumn {
            plan,
            context: read_context(times, filters),
        })
        .collect()
}

fn values_out<'py>(py: Python<'py>, values: Vec<Option<Vec<Vec<u8>>>>) -> LabelValues<'py> {
    (values.into_iter())
        .map(|label| label.map(|v| v.iter().map(|b| PyBytes::new(py, b)).collect()))
        .collect()
}

/// The labels of `users` (each: their events as indices into `ts`, `event_id` and
/// `columns`, in feeding order; their label groups as (events included, label times)),
/// per label in that order. `columns` are the plans' field columns of every event, as the
/// engine's pipeline builds them for its live events.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (plans, ts, event_id, columns, users, horizon_hours, label_columns_arg))]
pub fn label_rows<'py>(
    py: Python<'py>,
    plans: PyRef<'py, NativePlans>,
    ts: Vec<i64>,
    event_id: Vec<String>,
    mut columns: PyRefMut<'py, Columns>,
    users: Vec<UserArg>,
    horizon_hours: Option<i64>,
    label_columns_arg: Vec<ColumnArg>,
) -> PyResult<LabelValues<'py>> {
    let columns = columns.take()?;
    let users: Vec<LabelledUser> = (users.into_iter())
        .map(|(events, groups)| LabelledUser { events, groups })
        .collect();
    if users.iter().flat_map(|u| &u.events).any(|&i| i >= ts.len()) {
        return Err(raise(usersignals_core::CoreError::Batch(
            "an event index is out of range".into(),
        )));
    }
    let mut wanted = label_columns(label_columns_arg);
    let events = TrainingEvents {
        ts: &ts,
        event_id: &event_id,
        columns: &columns,
    };
    let plans = &plans.plans;
    let values = py
        .detach(|| training::label_rows(plans, &events, &users, horizon_hours, &mut wanted))
        .map_err(raise)?;
    Ok(values_out(py, values))
}
