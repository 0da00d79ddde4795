//! `usersignals._core`: the thin PyO3 binding of `usersignals-core`.
//!
//! Only conversion lives here: Python columns and bytes in, bytes and JSON-ready objects
//! out. The executor runs with the GIL released, so serving threads are not held up by a
//! batch. Errors surface as `CoreError` / `CoreStateError`, which the Python glue
//! (`usersignals.processing.native`) wraps into the project's error tree.

mod allocator;
mod attrs;
mod columns;
mod event_checks;
mod join_keys;
mod label_plan;
mod line_scan;
mod packed;
mod reads;
mod record_cache;
mod routing;
mod session;
mod text_buffers;
mod tiles_seen;
mod training;
mod values;

use std::collections::BTreeMap;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use usersignals_core::batch::{execute, Batch};
use usersignals_core::context::{NameSet, ReadContext, Refusal, Times};
use usersignals_core::decayed::{DecayedSpec, ScoresState};
use usersignals_core::dedupe::fingerprint;
use usersignals_core::distinct::{self, DistinctSpec, DistinctState};
use usersignals_core::last_n::view::LastNView;
use usersignals_core::last_n::{self, Entry, FORMAT_VERSION};
use usersignals_core::mean_vector::{MeanVectorSpec, VectorState};
use usersignals_core::pipeline::LiveColumns;
use usersignals_core::plan::{Aggregation, LastNSpec, Plan};
use usersignals_core::seen::{self, SeenSpec};
use usersignals_core::tiles::{self, TileSpec};
use usersignals_core::value::ValueRef;
use usersignals_core::{decayed, mean_vector};
use usersignals_core::{CoreError as Error, Value};

create_exception!(
    _core,
    CoreError,
    PyException,
    "A plan, batch or state the core refused."
);
create_exception!(
    _core,
    CoreStateError,
    CoreError,
    "A stored state or record that did not decode; args: (batch user index, plan key or \"\" for the whole record, message)."
);

/// A request's times as Python passes them: `(as_of, now, until, window, since)`.
type TimesArg = (Option<i64>, i64, Option<i64>, Option<i64>, Option<i64>);
/// A refused read as Python receives it: `(view time, earliest as_of, why)`.
type RefusalOut = (i64, i64, &'static str);

fn times_of((as_of_ms, now_ms, until_ms, window_ms, since_ms): TimesArg) -> Times {
    Times {
        as_of_ms,
        now_ms,
        until_ms,
        window_ms,
        since_ms,
    }
}

/// A request's filters as Python passes them: `(actions, surfaces, exclude, dedupe,
/// limit)` (`_filters` in `usersignals.processing.native`).
pub(crate) type FiltersArg = (
    Option<NameSet>,
    Option<NameSet>,
    NameSet,
    bool,
    Option<usize>,
);

/// A request's context as Python passes it, for the core.
pub(crate) fn read_context(
    times: TimesArg,
    (actions, surfaces, exclude, dedupe, limit): FiltersArg,
) -> ReadContext {
    ReadContext {
        times: times_of(times),
        actions,
        surfaces,
        exclude,
        dedupe,
        limit,
    }
}

fn refusal_out(refusal: &Refusal) -> RefusalOut {
    (refusal.view_ms, refusal.earliest_ms, refusal.why)
}

pub(crate) fn raise(error: Error) -> PyErr {
    match error {
        Error::UserState {
            user,
            plan,
            message,
        } => CoreStateError::new_err((user, plan, message)),
        // A whole record: no plan.
        Error::UserRecord { user, message } => CoreStateError::new_err((user, "", message)),
        other => CoreError::new_err(other.to_string()),
    }
}

/// A Python value as a core value: a scalar as itself; a list, a tuple, a dict or an integer
/// beyond 64 bits (what an event's `attrs` may hold, decoded from JSON) as its JSON text,
/// `Value::Json`. Anything else (a set, bytes, a datetime, an object of the caller's: never
/// in a decoded event) is null, as before: JSON would change its type on the way back.
pub(crate) fn to_value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    Ok(if obj.is_none() {
        Value::Null
    } else if let Ok(s) = obj.cast::<PyString>() {
        s.to_str().map_or(Value::Null, |s| Value::Str(s.to_owned()))
    } else if let Ok(b) = obj.cast::<PyBool>() {
        Value::Bool(b.is_true())
    } else if obj.is_instance_of::<PyInt>() {
        match obj.extract::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => json_value(obj)?,
        }
    } else if let Ok(f) = obj.cast::<PyFloat>() {
        Value::Float(f.value())
    } else if obj.is_instance_of::<PyList>()
        || obj.is_instance_of::<PyDict>()
        || obj.is_instance_of::<PyTuple>()
    {
        json_value(obj)?
    } else {
        Value::Null
    })
}

static JSON_ENCODE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static JSON_DECODE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `obj` as compact JSON text, written by msgspec as it reads events (so a kept object
/// comes back as it came); null when JSON cannot carry it (a set inside a list, say: the
/// encoder's TypeError). Any other error (a stop raised by a signal handler) propagates.
fn json_value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    let py = obj.py();
    let encode = JSON_ENCODE.import(py, "msgspec.json", "encode")?;
    match encode.call1((obj,)) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes.cast_into::<PyBytes>()?.as_bytes().to_vec());
            Ok(text.map_or(Value::Null, Value::Json))
        }
        Err(err) if err.is_instance_of::<pyo3::exceptions::PyTypeError>(py) => Ok(Value::Null),
        Err(err) => Err(err),
    }
}

/// A `Value::Json`'s text as the Python value it was.
fn json_to_py<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    JSON_DECODE
        .import(py, "msgspec.json", "decode")?
        .call1((PyBytes::new(py, text.as_bytes()),))
}

pub(crate) fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Float(f) => PyFloat::new(py, *f).into_any(),
        Value::Str(s) => PyString::new(py, s).into_any(),
        Value::Json(s) => json_to_py(py, s)?,
    })
}

fn ref_to_py<'py>(
    py: Python<'py>,
    value: ValueRef<'_>,
    text: &mut String,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        ValueRef::Null => py.None().into_bound(py),
        ValueRef::Bool(b) => PyBool::new(py, b).to_owned().into_any(),
        ValueRef::Int(i) => i.into_pyobject(py)?.into_any(),
        ValueRef::Float(f) => PyFloat::new(py, f).into_any(),
        ValueRef::Json(s) => json_to_py(py, s)?,
        other => PyString::new(py, other.text(text).unwrap_or_default()).into_any(),
    })
}

/// A `vec:` column's value as the core takes it: each component as Python's `float()` of it
/// (what the reference's `math.ldexp` takes), or `None` when the value is not a list or
/// tuple or a component is not a number.
fn to_vector(obj: &Bound<'_, PyAny>) -> Option<Vec<f64>> {
    let items = if let Ok(list) = obj.cast::<PyList>() {
        list.iter().collect::<Vec<_>>()
    } else {
        obj.cast::<PyTuple>().ok()?.iter().collect()
    };
    items.iter().map(|c| c.extract::<f64>().ok()).collect()
}

/// The compiled plans of the native signals, parsed once at Engine construction.
#[pyclass(frozen, module = "usersignals._core")]
pub struct NativePlans {
    pub(crate) plans: Vec<Plan>,
}

/// Accessors of the plans by aggregation: one lookup, one "not a ..." error.
impl NativePlans {
    fn found(&self, plan: usize) -> PyResult<&Plan> {
        self.plans
            .get(plan)
            .ok_or_else(|| CoreError::new_err("no such plan"))
    }

    /// The plan at `plan` and its spec, when `pick` finds the aggregation it expects.
    fn spec_of<'s, T>(
        &'s self,
        plan: usize,
        kind: &str,
        pick: impl Fn(&'s Aggregation) -> Option<&'s T>,
    ) -> PyResult<(&'s Plan, &'s T)> {
        let found = self.found(plan)?;
        let spec = pick(&found.aggregate)
            .ok_or_else(|| CoreError::new_err(format!("{} is not a {kind} plan", found.key)))?;
        Ok((found, spec))
    }

    fn last_n(&self, plan: usize) -> PyResult<(&Plan, &LastNSpec)> {
        self.spec_of(plan, "LastN", |a| match a {
            Aggregation::LastN(spec) => Some(spec),
            _ => None,
        })
    }

    fn distinct(&self, plan: usize) -> PyResult<(&Plan, &DistinctSpec)> {
        self.spec_of(plan, "Distinct", |a| match a {
            Aggregation::Distinct(spec, _) => Some(spec),
            _ => None,
        })
    }

    fn tiles(&self, plan: usize) -> PyResult<(&Plan, &TileSpec)> {
        self.spec_of(plan, "Count/Sum", |a| match a {
            Aggregation::Tiles(spec) => Some(spec),
            _ => None,
        })
    }

    fn seen(&self, plan: usize) -> PyResult<(&Plan, &SeenSpec)> {
        self.spec_of(plan, "FirstSeen/LastSeen", |a| match a {
            Aggregation::Seen(spec) => Some(spec),
            _ => None,
        })
    }

    /// A DecayedScores plan, its spec and its bucket width.
    fn decayed(&self, plan: usize) -> PyResult<(&Plan, &DecayedSpec, i64)> {
        let (found, spec) = self.spec_of(plan, "DecayedScores", |a| match a {
            Aggregation::DecayedScores(spec) => Some(spec),
            _ => None,
        })?;
        Ok((found, spec, spec.buckets(found.retention_ms).bucket_ms))
    }

    /// A MeanVector plan, its spec and its bucket width.
    fn mean_vector(&self, plan: usize) -> PyResult<(&Plan, &MeanVectorSpec, i64)> {
        let (found, spec) = self.spec_of(plan, "MeanVector", |a| match a {
            Aggregation::MeanVector(spec) => Some(spec),
            _ => None,
        })?;
        Ok((found, spec, spec.buckets(found.retention_ms).bucket_ms))
    }
}

/// A DecayedScores state as Python passes it: `(newest, [(key, bucket, sum)], {bucket: top})`.
type ScoresParts<'py> = (i64, Vec<(Bound<'py, PyAny>, i64, i128)>, BTreeMap<i64, i64>);
/// A MeanVector state as Python passes it: `(newest, {bucket: sums}, {bucket: top})`.
type VectorParts = (i64, BTreeMap<i64, Vec<i128>>, BTreeMap<i64, i64>);

#[pymethods]
impl NativePlans {
    #[new]
    fn new(plans: Vec<String>) -> PyResult<Self> {
        let plans = plans
            .iter()
            .map(|p| Plan::from_json(p))
            .collect::<Result<_, _>>();
        Ok(NativePlans {
            plans: plans.map_err(raise)?,
        })
    }

    /// The fields each plan reads, in the order the plans were given.
    fn fields(&self) -> Vec<Vec<String>> {
        self.plans.iter().map(Plan::fields).collect()
    }

    /// Apply one micro-batch; see `usersignals.processing.native.NativeBatch.apply`.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (users, user, ts, event_id, columns, stored))]
    fn apply<'py>(
        &self,
        py: Python<'py>,
        users: usize,
        user: Vec<u32>,
        ts: Vec<i64>,
        event_id: Vec<String>,
        mut columns: PyRefMut<'py, columns::Columns>,
        stored: Vec<Vec<Option<Bound<'py, PyBytes>>>>,
    ) -> PyResult<(Bound<'py, PyList>, Vec<u64>, Vec<u64>)> {
        let LiveColumns {
            names,
            columns,
            vectors,
        } = columns.take()?;
        let batch = Batch {
            users,
            user,
            ts,
            fingerprint: event_id.iter().map(|id| fingerprint(id)).collect(),
            names,
            columns,
            vectors,
        };
        let slices: Vec<Vec<Option<&[u8]>>> = stored
            .iter()
            .map(|row| {
                row.iter()
                    .map(|s| s.as_ref().map(|b| b.as_bytes()))
                    .collect()
            })
            .collect();
        let out = py
            .detach(|| execute(&self.plans, &batch, &slices))
            .map_err(raise)?;
        let states = PyList::empty(py);
        for row in out.states {
            let row: Vec<Option<Bound<'py, PyBytes>>> = row
                .iter()
                .map(|s| s.as_ref().map(|b| PyBytes::new(py, b)))
                .collect();
            states.append(row)?;
        }
        Ok((states, out.applied, out.expired))
    }

    /// Evaluate a stored LastN state with a request's context: `(entries as dicts, newest,
    /// refusal)`. `times` is `(as_of, now, until, window, since)`, resolved against the
    /// state (see `context::Times`); a refusal is `(view time, earliest as_of, why)`, which
    /// the glue raises as `AsOfError`, and comes with no entries.
    #[pyo3(signature = (plan, state, times, filters))]
    fn read_last_n<'py>(
        &self,
        py: Python<'py>,
        plan: usize,
        state: &[u8],
        times: TimesArg,
        filters: FiltersArg,
    ) -> PyResult<(Bound<'py, PyList>, Option<i64>, Option<RefusalOut>)> {
        let (found, spec) = self.last_n(plan)?;
        let view = LastNView::parse(state, spec.keep.len()).map_err(raise)?;
        let context = read_context(times, filters);
        let out = PyList::empty(py);
        let (rows, newest) = match view.select(spec, found.retention_ms, &context) {
            Ok(selected) => selected,
            Err(refusal) => return Ok((out, None, Some(refusal_out(&refusal)))),
        };
        let ts_key = PyString::intern(py, "ts");
        let keys: Vec<Bound<'py, PyString>> =
            spec.keep.iter().map(|k| PyString::intern(py, k)).collect();
        let mut text = String::new();
        for row in rows {
            let record = PyDict::new(py);
            record.set_item(&ts_key, view.ts[row])?;
            for (column, key) in keys.iter().enumerate() {
                record.set_item(key, ref_to_py(py, view.get(column, row), &mut text)?)?;
            }
            out.append(record)?;
        }
        Ok((out, newest, None))
    }

    /// Evaluate a stored Distinct state with a request's `times` (as for `read_last_n`):
    /// `(estimate, newest, refusal)`.
    fn read_distinct(
        &self,
        plan: usize,
        state: &[u8],
        times: TimesArg,
    ) -> PyResult<(i64, Option<i64>, Option<RefusalOut>)> {
        let (found, spec) = self.distinct(plan)?;
        let state = distinct::decode(state, spec).map_err(raise)?;
        Ok(
            match spec.read(found.retention_ms, &state, &times_of(times)) {
                Ok((estimate, newest)) => (estimate, newest, None),
                Err(refusal) => (0, None, Some(refusal_out(&refusal))),
            },
        )
    }

    /// A stored Distinct state as the reference's `(newest, {bucket start: registers})`.
    fn decode_distinct(
        &self,
        plan: usize,
        state: &[u8],
    ) -> PyResult<(i64, BTreeMap<i64, Vec<u8>>)> {
        let (_, spec) = self.distinct(plan)?;
        let state = distinct::decode(state, spec).map_err(raise)?;
        Ok((state.newest, state.buckets))
    }

    /// The stored bytes of a reference Distinct state (migration of the old codec, tests).
    fn encode_distinct<'py>(
        &self,
        py: Python<'py>,
        plan: usize,
        newest: i64,
        buckets: BTreeMap<i64, Vec<u8>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.distinct(plan)?;
        Ok(PyBytes::new(
            py,
            &distinct::encode(&DistinctState { newest, buckets }),
        ))
    }

    /// Evaluate a stored Count/Sum or FirstSeen/LastSeen state with a request's `times` (as
    /// for `read_last_n`) and its actions / surfaces: `(value, newest, refusal)`, the value
    /// `{"total", "by"}` or `{group: time}` as the reference answers.
    fn read_grouped<'py>(
        &self,
        py: Python<'py>,
        plan: usize,
        state: &[u8],
        times: TimesArg,
        actions: Option<NameSet>,
        surfaces: Option<NameSet>,
    ) -> PyResult<(Bound<'py, PyDict>, Option<i64>, Option<RefusalOut>)> {
        let found = self.found(plan)?;
        let (times, retention) = (times_of(times), found.retention_ms);
        let answer = match &found.aggregate {
            Aggregation::Tiles(spec) => {
                let (actions, surfaces) = (actions.as_ref(), surfaces.as_ref());
                // From the stored entries; entries out of the encoder's order (never
                // written) are read as `decode` reads them.
                let read = match spec.read_stored(retention, state, &times, actions, surfaces) {
                    Ok(read) => read,
                    Err(_) => {
                        let state = tiles::decode(spec, state).map_err(raise)?;
                        spec.read(retention, &state, &times, actions, surfaces)
                    }
                };
                read.map(|answer| (tiles_seen::tiles_value(py, spec, &answer), answer.newest))
            }
            Aggregation::Seen(spec) => {
                let state = seen::decode(state).map_err(raise)?;
                let context = ReadContext {
                    actions,
                    surfaces,
                    ..ReadContext::default()
                };
                let allowed = context.allowed_by(spec.by.as_deref());
                spec.read(retention, &state, &times, allowed)
                    .map(|(values, newest)| (tiles_seen::seen_value(py, &values), newest))
            }
            _ => {
                return Err(CoreError::new_err(format!(
                    "{} is not a Count/Sum or FirstSeen/LastSeen plan",
                    found.key
                )))
            }
        };
        match answer {
            Ok((value, newest)) => Ok((value?, newest, None)),
            Err(refusal) => Ok((PyDict::new(py), None, Some(refusal_out(&refusal)))),
        }
    }

    /// A stored Count/Sum state as the reference's `(newest, cells, exact, exact_from)`,
    /// each entry `(time or bucket start, group tuple, value)`, newest first.
    fn decode_tiles<'py>(
        &self,
        py: Python<'py>,
        plan: usize,
        state: &[u8],
    ) -> PyResult<tiles_seen::PyTiles<'py>> {
        tiles_seen::decode_tiles(py, self.tiles(plan)?.1, state)
    }

    /// The stored bytes of a reference Count/Sum state (migration of the old codec, tests).
    fn encode_tiles<'py>(
        &self,
        py: Python<'py>,
        plan: usize,
        newest: i64,
        cells: Vec<(i64, Bound<'py, PyTuple>, i64)>,
        exact: Vec<(i64, Bound<'py, PyTuple>, i64)>,
        exact_from: i64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let spec = self.tiles(plan)?.1;
        let data = tiles_seen::encode_tiles(spec, (newest, exact_from), cells, exact)?;
        Ok(PyBytes::new(py, &data))
    }

    /// A stored FirstSeen/LastSeen state as the reference's `(newest, {group: time})`.
    fn decode_seen(&self, plan: usize, state: &[u8]) -> PyResult<(i64, BTreeMap<String, i64>)> {
        self.seen(plan)?;
        tiles_seen::decode_seen(state)
    }

    /// The stored bytes of a reference FirstSeen/LastSeen state.
    fn encode_seen<'py>(
        &self,
        py: Python<'py>,
        plan: usize,
        newest: i64,
        times: BTreeMap<String, i64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.seen(plan)?;
        Ok(PyBytes::new(py, &tiles_seen::encode_seen(newest, times)))
    }

    /// Evaluate a stored DecayedScores state (`times` as for `read_last_n`): `([{"key",
    /// "score"}], newest, refusal)`, the top `limit` (or the plan's `top_k`) keys not in
    /// `exclude`.
    fn read_decayed_scores<'py>(
        &self,
        py: Python<'py>,
        plan: usize,
        state: &[u8],
        times: TimesArg,
        exclude: NameSet,
        limit: Option<usize>,
    ) -> PyResult<(Bound<'py, PyList>, Option<i64>, Option<RefusalOut>)> {
        let (found, spec, _) = self.decayed(plan)?;
        let out = PyList::empty(py);
        let read = spec
            .read_stored(found.retention_ms, state, &times_of(times), &exclude, limit)
            .map_err(raise)?;
        let (top, newest) = match read {
            Ok(answer) => answer,
            Err(refusal) => return Ok((out, None, Some(refusal_out(&refusal)))),
        };
        let (key, score) = (PyString::intern(py, "key"), PyString::intern(py, "score"));
        for (value, s) in top {
            let entry = PyDict::new(py);
            entry.set_item(&key, to_py(py, &value.to_value())?)?;
            entry.set_item(&score, s)?;
            out.append(entry)?;
        }
        Ok((out, newest, None))
    }

    /// Evaluate a stored MeanVector state: `({"vector", "weight"}, newest, refusal)`.
    fn read_mean_vector<'py>(
        &self,
        py: Python<'py>,
        plan: usize,
        state: &[u8],
        times: TimesArg,
    ) -> PyResult<(Bound<'py, PyDict>, Option<i64>, Option<RefusalOut>)> {
        let (found, spec, _) = self.mean_vector(plan)?;
        let read = spec.read_stored(found.retention_ms, state, &times_of(times));
        let out = PyDict::new(py);
        let (answer, newest) = match read.map_err(raise)? {
            Ok(answer) => answer,
            Err(refusal) => return Ok((out, None, Some(refusal_out(&refusal)))),
        };
        out.set_item("vector", answer.vector)?;
        out.set_item("weight", answer.weight)?;
        Ok((out, newest, None))
    }

    /// A stored DecayedScores state as `(newest, [(key, bucket, sum)], {bucket: top})`.
    fn decode_decayed_scores<'py>(
        &self,
        py: Python<'py>,
        plan: usize,
        state: &[u8],
    ) -> PyResult<ScoresParts<'py>> {
        let (_, _, bucket_ms) = self.decayed(plan)?;
        let state = decayed::decode(state, bucket_ms).map_err(raise)?;
        let mut cells = Vec::new();
        for (key, bucket, sum) in state.cells() {
            cells.push((to_py(py, key)?, bucket, sum));
        }
        Ok((state.newest, cells, state.tops.iter().collect()))
    }

    /// The stored bytes of a reference DecayedScores state (migration of the old codec).
    fn encode_decayed_scores<'py>(
        &self,
        py: Python<'py>,
        plan: usize,
        parts: ScoresParts<'py>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let (_, _, bucket_ms) = self.decayed(plan)?;
        let (newest, cells, tops) = parts;
        let mut state = ScoresState {
            newest,
            tops: tops.into_iter().collect(),
            ..ScoresState::default()
        };
        for (key, bucket, sum) in cells {
            state.add(&to_value(&key)?, bucket, sum);
        }
        Ok(PyBytes::new(py, &decayed::encode(&state, bucket_ms)))
    }

    /// A stored MeanVector state as `(newest, {bucket: sums}, {bucket: top})`.
    fn decode_mean_vector(&self, plan: usize, state: &[u8]) -> PyResult<VectorParts> {
        let (_, spec, bucket_ms) = self.mean_vector(plan)?;
        let state = mean_vector::decode(state, spec.dim, bucket_ms).map_err(raise)?;
        Ok((state.newest, state.buckets, state.tops.iter().collect()))
    }

    /// The stored bytes of a reference MeanVector state (migration of the old codec).
    fn encode_mean_vector<'py>(
        &self,
        py: Python<'py>,
        plan: usize,
        parts: VectorParts,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let (_, spec, bucket_ms) = self.mean_vector(plan)?;
        let (newest, buckets, tops) = parts;
        if buckets.values().any(|sums| sums.len() != spec.dim + 1) {
            return Err(CoreError::new_err("bucket sums differ from the plan's dim"));
        }
        let state = VectorState {
            newest,
            buckets,
            tops: tops.into_iter().collect(),
        };
        Ok(PyBytes::new(
            py,
            &mean_vector::encode(&state, spec.dim, bucket_ms),
        ))
    }

    /// A stored LastN state as the Python reference's entries `(ts, tie, *kept values)`.
    fn decode_last_n<'py>(
        &self,
        py: Python<'py>,
        plan: usize,
        state: &[u8],
    ) -> PyResult<Bound<'py, PyList>> {
        let (_, spec) = self.last_n(plan)?;
        let entries = last_n::decode(state, spec.keep.len()).map_err(raise)?;
        let out = PyList::empty(py);
        for entry in entries {
            let mut items = vec![entry.ts.into_pyobject(py)?.into_any()];
            items.push(entry.tie.into_pyobject(py)?.into_any());
            for value in &entry.values {
                items.push(to_py(py, value)?);
            }
            out.append(PyTuple::new(py, items)?)?;
        }
        Ok(out)
    }

    /// The stored bytes of reference entries (newest first): migrates states of the old
    /// Python codec, and lets tests compare the two implementations.
    fn encode_last_n<'py>(
        &self,
        py: Python<'py>,
        plan: usize,
        entries: Vec<Bound<'py, PyTuple>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let (_, spec) = self.last_n(plan)?;
        let columns = spec.keep.len();
        let entries = entries
            .iter()
            .map(|t| {
                if t.len() != columns + 2 {
                    return Err(CoreError::new_err(
                        "entry length differs from the plan's keep",
                    ));
                }
                let values = (2..columns + 2).map(|i| to_value(&t.get_item(i)?));
                Ok(Entry {
                    ts: t.get_item(0)?.extract()?,
                    tie: t.get_item(1)?.extract()?,
                    values: values.collect::<PyResult<_>>()?,
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(PyBytes::new(py, &last_n::encode(&entries, columns)))
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    allocator::configure();
    m.add_class::<NativePlans>()?;
    m.add_class::<session::BatchSession>()?;
    m.add_class::<columns::ColumnReader>()?;
    m.add_class::<columns::Columns>()?;
    m.add_class::<join_keys::JoinKeys>()?;
    m.add_class::<packed::PackedFields>()?;
    m.add_function(wrap_pyfunction!(packed::packed_records, m)?)?;
    m.add_class::<record_cache::RecordCache>()?;
    m.add_class::<text_buffers::TextBuffer>()?;
    m.add_class::<text_buffers::TextGather>()?;
    m.add_class::<routing::ShareRouter>()?;
    m.add_function(wrap_pyfunction!(routing::count_users, m)?)?;
    m.add_function(wrap_pyfunction!(session::replace_progress, m)?)?;
    m.add_function(wrap_pyfunction!(reads::read_record_body, m)?)?;
    m.add_class::<reads::BodyQuery>()?;
    m.add_function(wrap_pyfunction!(training::label_rows, m)?)?;
    m.add_function(wrap_pyfunction!(label_plan::plan_labels, m)?)?;
    m.add_class::<label_plan::PlannedLabels>()?;
    m.add_function(wrap_pyfunction!(values::check_records, m)?)?;
    m.add_class::<event_checks::EventChecks>()?;
    m.add_function(wrap_pyfunction!(line_scan::lines_holding, m)?)?;
    m.add("CHECK_UNSURE", values::UNSURE)?;
    m.add("PACKED_MAX_FIELDS", usersignals_core::packed::MAX_FIELDS)?;
    m.add("CoreError", m.py().get_type::<CoreError>())?;
    m.add("CoreStateError", m.py().get_type::<CoreStateError>())?;
    m.add("LAST_N_FORMAT_VERSION", FORMAT_VERSION)?;
    m.add("LAST_N_JSON_VALUES_VERSION", last_n::JSON_VALUES_VERSION)?;
    m.add(
        "LAST_N_READABLE_VERSIONS",
        last_n::READABLE_VERSIONS.to_vec(),
    )?;
    m.add("DISTINCT_FORMAT_VERSION", distinct::FORMAT_VERSION)?;
    m.add("TILES_FORMAT_VERSION", tiles::FORMAT_VERSION)?;
    m.add("TILES_READABLE_VERSIONS", tiles::READABLE_VERSIONS.to_vec())?;
    m.add("SEEN_FORMAT_VERSION", seen::FORMAT_VERSION)?;
    m.add("DECAYED_SCORES_FORMAT_VERSION", decayed::FORMAT_VERSION)?;
    m.add("MEAN_VECTOR_FORMAT_VERSION", mean_vector::FORMAT_VERSION)?;
    Ok(())
}
