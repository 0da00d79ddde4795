//! The binding's conversions for `Count` / `Sum` tiles and `FirstSeen` / `LastSeen`: read
//! answers to JSON-ready Python values, and the reference's states to and from the stored
//! bytes (the migration of the old Python codec, and the tests' comparisons).

use std::collections::BTreeMap;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyList, PyTuple};
use usersignals_core::seen::{self, SeenState};
use usersignals_core::tiles::{self, Cells, GroupKey, TileAnswer, TileSpec, TileState};
use usersignals_core::Value;

use crate::{raise, to_py, to_value};

/// `{"total", "by"}` as the reference answers: labels are the first `by` value's Python
/// `str()` ("all" without `by` fields), sorted; amounts are divided by the scale (floats)
/// for `Sum`, plain integers for `Count` (and for a state without entries).
pub fn tiles_value<'py>(
    py: Python<'py>,
    spec: &TileSpec,
    answer: &TileAnswer,
) -> PyResult<Bound<'py, PyDict>> {
    let mut labelled: BTreeMap<String, i64> = BTreeMap::new();
    for (first, amount) in &answer.by {
        let label = match first {
            None => "all".to_owned(),
            Some(value) => to_py(py, value)?.str()?.to_string(),
        };
        *labelled.entry(label).or_insert(0) += amount;
    }
    let out = PyDict::new(py);
    let by = PyDict::new(py);
    // An empty state answers integer zeros, as the reference's early return does.
    if spec.scale == 1 || answer.newest.is_none() {
        out.set_item("total", answer.total)?;
        for (label, amount) in labelled {
            by.set_item(label, amount)?;
        }
    } else {
        // Python's int / int: correctly rounded, as this division is for |x| < 2^53.
        let scale = spec.scale as f64;
        out.set_item("total", PyFloat::new(py, answer.total as f64 / scale))?;
        for (label, amount) in labelled {
            by.set_item(label, PyFloat::new(py, amount as f64 / scale))?;
        }
    }
    out.set_item("by", by)?;
    Ok(out)
}

/// Entries as the reference's `(time, group tuple, value)`, in the stored order.
type PyEntries<'py> = Vec<(i64, Bound<'py, PyTuple>, i64)>;

fn entries_to_py<'py>(
    py: Python<'py>,
    spec: &TileSpec,
    groups: &[GroupKey],
    cells: &Cells,
) -> PyResult<Bound<'py, PyList>> {
    let mut sorted: Vec<_> = cells.iter().collect();
    sorted.sort_by_key(|((at, group), _)| (std::cmp::Reverse(*at), *group));
    let out = PyList::empty(py);
    for ((at, group), value) in sorted {
        let values = spec.group_values(&groups[*group as usize]).map_err(raise)?;
        let items = values
            .iter()
            .map(|v| to_py(py, v))
            .collect::<PyResult<Vec<_>>>()?;
        out.append((*at, PyTuple::new(py, items)?, *value))?;
    }
    Ok(out)
}

/// A decoded Count/Sum state: its newest time, cells, exact entries and exact boundary.
pub type PyTiles<'py> = (i64, Bound<'py, PyList>, Bound<'py, PyList>, i64);

pub fn decode_tiles<'py>(py: Python<'py>, spec: &TileSpec, data: &[u8]) -> PyResult<PyTiles<'py>> {
    let state = tiles::decode(spec, data).map_err(raise)?;
    let cells = entries_to_py(py, spec, &state.groups, &state.cells)?;
    let exact = entries_to_py(py, spec, &state.groups, &state.exact)?;
    Ok((state.newest, cells, exact, state.exact_from))
}

pub fn encode_tiles(
    spec: &TileSpec,
    (newest, exact_from): (i64, i64),
    cells: PyEntries<'_>,
    exact: PyEntries<'_>,
) -> PyResult<Vec<u8>> {
    let mut state = TileState {
        newest,
        exact_from,
        ..TileState::default()
    };
    let mut index: BTreeMap<GroupKey, u32> = BTreeMap::new();
    for (entries, exact) in [(cells, false), (exact, true)] {
        for (at, group, value) in entries {
            if group.len() != spec.by.len() {
                return Err(crate::CoreError::new_err(
                    "group length differs from the plan's by",
                ));
            }
            let values = (group.iter().map(|v| to_value(&v))).collect::<PyResult<Vec<Value>>>()?;
            let key = tiles::group_key(&values);
            let next = index.len() as u32;
            let id = *index.entry(key.clone()).or_insert_with(|| {
                state.groups.push(key);
                next
            });
            let target = if exact {
                &mut state.exact
            } else {
                &mut state.cells
            };
            *target.entry((at, id)).or_insert(0) += value;
        }
    }
    Ok(tiles::encode(spec, &state))
}

pub fn decode_seen(data: &[u8]) -> PyResult<(i64, BTreeMap<String, i64>)> {
    let state = seen::decode(data).map_err(raise)?;
    Ok((state.newest, state.times))
}

pub fn encode_seen(newest: i64, times: BTreeMap<String, i64>) -> Vec<u8> {
    seen::encode(&SeenState { newest, times })
}

pub fn seen_value<'py>(py: Python<'py>, values: &[(String, i64)]) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    for (group, ts) in values {
        out.set_item(group, *ts)?;
    }
    Ok(out)
}
