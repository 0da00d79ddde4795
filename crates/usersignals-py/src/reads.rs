//! The serving path's binding: one call per request writes a user's answers as the JSON
//! body (`usersignals_core::json_body`), so no Python object is built per entry.

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use usersignals_core::context::ReadContext;
use usersignals_core::json_body::{user_body, Body, Slot};
use usersignals_core::record::states_of;

use crate::{read_context, refusal_out, FiltersArg, NativePlans, RefusalOut, TimesArg};

/// What Python gets back: the body, or the first refusing slot and its refusal, or `None`
/// (answer this request on the object path).
#[derive(IntoPyObject)]
pub enum BodyOut<'py> {
    Body(Bound<'py, PyBytes>),
    Refused((usize, RefusalOut)),
}

fn body_out(py: Python<'_>, body: Body) -> Option<BodyOut<'_>> {
    match body {
        Body::Written(body) => Some(BodyOut::Body(PyBytes::new(py, &body))),
        Body::Refused { slot, refusal } => Some(BodyOut::Refused((slot, refusal_out(&refusal)))),
        Body::Unserved => None,
    }
}

/// A GET route's query as the core keeps it between requests: per requested signal its
/// plan, its answer's opening and closing and the key of its state in a user record; the
/// context with every time but "now". Built once per query string (`serving/queries.py`).
#[pyclass(frozen, module = "usersignals._core")]
pub struct BodyQuery {
    slots: Vec<(usize, Vec<u8>, Vec<u8>, String)>,
    context: ReadContext,
}

#[pymethods]
impl BodyQuery {
    #[new]
    #[pyo3(signature = (slots, times, filters))]
    fn new(
        slots: Vec<(usize, Vec<u8>, Vec<u8>, String)>,
        times: TimesArg,
        filters: FiltersArg,
    ) -> Self {
        BodyQuery {
            slots,
            context: read_context(times, filters),
        }
    }
}

/// `{"user_id": …, "signals": {…}}` for one user and a prepared query (`user` is the user
/// id as JSON text), from the user's whole stored record (`None`: the user
/// has none): the record's states are found in its bytes, none copied. `None` also when the
/// record does not decode: the object path raises its error.
#[pyfunction]
#[pyo3(signature = (plans, query, user, record, now_ms))]
pub fn read_record_body<'py>(
    py: Python<'py>,
    plans: PyRef<'py, NativePlans>,
    query: &BodyQuery,
    user: &[u8],
    record: Option<&[u8]>,
    now_ms: i64,
) -> Option<BodyOut<'py>> {
    let states = match record.map(states_of) {
        None => Vec::new(),
        Some(Ok(states)) => states,
        Some(Err(_)) => return None,
    };
    let slots: Vec<Slot<'_>> = query
        .slots
        .iter()
        .map(|(plan, head, tail, key)| Slot {
            plan: *plan,
            head,
            tail,
            state: states.iter().find(|(k, _)| k == key).map(|(_, s)| *s),
        })
        .collect();
    let mut context = query.context.clone();
    context.times.now_ms = now_ms;
    body_out(py, user_body(&plans.plans, user, &slots, &context))
}
