//! The training set's binding: a shard's labelled users, as its plan lists them (`plan_labels`
//! in `label_plan`, which stays native), computed and read in one call (`label_rows`,
//! `usersignals_core::training`). Each column's value is written as JSON text
//! by the serving path's kernels (`json_body`) into one buffer per column: no Python object
//! per entry, nor per value.

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use usersignals_core::json_body::{JsonColumns, LabelColumn};
use usersignals_core::training::{self, TrainingEvents};

use crate::columns::Columns;
use crate::label_plan::PlannedLabels;
use crate::text_buffers::{offsets_bytes, TextBuffer};
use crate::{raise, read_context, FiltersArg, NativePlans, TimesArg};

/// A column of the training set: (plan index, the context's times, whose `as_of` and "now"
/// each label sets, and its filters).
type ColumnArg = (usize, TimesArg, FiltersArg);
/// Per column: the offsets of its labels' values (`labels + 1` native-endian i64s), and the
/// values' JSON texts one after another (an Arrow string column's buffers).
type LabelValues<'py> = Vec<(Bound<'py, PyBytes>, Bound<'py, TextBuffer>)>;

fn label_columns(columns: Vec<ColumnArg>) -> Vec<LabelColumn> {
    columns
        .into_iter()
        .map(|(plan, times, filters)| LabelColumn {
            plan,
            context: read_context(times, filters),
        })
        .collect()
}

fn values_out<'py>(py: Python<'py>, values: JsonColumns) -> PyResult<LabelValues<'py>> {
    (values.offsets.iter().zip(values.data))
        .map(|(offsets, data)| {
            Ok((
                offsets_bytes(py, offsets)?,
                Bound::new(py, TextBuffer::new(data))?,
            ))
        })
        .collect()
}

/// The labels of a shard's plan (`plan_labels`: its users, their events in feeding order
/// and label groups, the events' times and event ids), per label in the plan's order, as
/// column buffers (`None` when a label is for the object path). `columns` are the plans'
/// field columns of the plan's events in feeding order, as the engine's pipeline builds
/// them for its live events.
#[pyfunction]
#[pyo3(signature = (plans, planned, columns, horizon_hours, label_columns_arg))]
pub fn label_rows<'py>(
    py: Python<'py>,
    plans: PyRef<'py, NativePlans>,
    planned: PyRef<'py, PlannedLabels>,
    mut columns: PyRefMut<'py, Columns>,
    horizon_hours: Option<i64>,
    label_columns_arg: Vec<ColumnArg>,
) -> PyResult<Option<LabelValues<'py>>> {
    let columns = columns.take()?;
    let count = planned.ts.len();
    if columns.columns.iter().any(|column| column.len() != count)
        || columns
            .vectors
            .iter()
            .any(|(_, column)| column.len() != count)
    {
        return Err(raise(usersignals_core::CoreError::Batch(
            "field columns of another length than the plan's events".into(),
        )));
    }
    let mut wanted = label_columns(label_columns_arg);
    let events = TrainingEvents {
        ts: &planned.ts,
        fingerprint: &planned.fingerprint,
        columns: &columns,
    };
    let (plans, users) = (&plans.plans, &planned.users);
    let values = py
        .detach(|| training::label_rows(plans, &events, users, horizon_hours, &mut wanted))
        .map_err(raise)?;
    values.map(|values| values_out(py, values)).transpose()
}
