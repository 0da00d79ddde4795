//! The training set's binding: one call per round reads every label of the round, each
//! column's value written as JSON text by the serving path's kernels (`json_body`), so no
//! Python object is built per entry and no record is decoded in Python.

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use usersignals_core::json_body::{label_values, LabelColumn};
use usersignals_core::record;

use crate::{read_context, FiltersArg, NativePlans, TimesArg};

/// A user's label times and their record as stored (`None`: the user has none).
type GroupArg<'py> = (Option<Bound<'py, PyBytes>>, Vec<i64>);

/// Per label, in the order of `groups` and their times: each column's value (JSON), or
/// `None` for a label to answer on the object path (a refusal, a record that does not
/// decode, a state the core leaves unserved). `columns`: (plan index, the context's times,
/// whose `as_of` and "now" each label sets, and its filters).
#[pyfunction]
pub fn read_label_values<'py>(
    py: Python<'py>,
    plans: PyRef<'py, NativePlans>,
    groups: Vec<GroupArg<'py>>,
    columns: Vec<(usize, TimesArg, FiltersArg)>,
) -> Vec<Option<Vec<Bound<'py, PyBytes>>>> {
    let mut columns: Vec<LabelColumn> = columns
        .into_iter()
        .map(|(plan, times, filters)| LabelColumn {
            plan,
            context: read_context(times, filters),
        })
        .collect();
    let mut out = Vec::new();
    for (raw, times) in &groups {
        let decoded = match raw {
            Some(data) => record::decode(data.as_bytes()).ok(),
            None => Some(record::UserRecord::default()),
        };
        for &ts in times {
            let values = decoded
                .as_ref()
                .and_then(|r| label_values(&plans.plans, &r.states, &mut columns, ts));
            out.push(values.map(|v| v.iter().map(|b| PyBytes::new(py, b)).collect()));
        }
    }
    out
}
