//! The serving path's binding: one call per request writes a user's answers as the JSON
//! body (`usersignals_core::json_body`), so no Python object is built per entry.

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use usersignals_core::json_body::{user_body, Body, Slot};

use crate::{read_context, refusal_out, FiltersArg, NativePlans, RefusalOut, TimesArg};

/// One requested signal as Python passes it: `(plan index, the answer's opening, its
/// closing, the stored state as the record embeds it or None)`.
type SlotArg<'py> = (
    usize,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Option<Bound<'py, PyBytes>>,
);

/// What Python gets back: the body, or the first refusing slot and its refusal, or `None`
/// (answer this request on the object path).
#[derive(IntoPyObject)]
pub enum BodyOut<'py> {
    Body(Bound<'py, PyBytes>),
    Refused((usize, RefusalOut)),
}

/// `{"user_id": …, "signals": {…}}` for one user; see `usersignals.serving.bodies`. `user`
/// is the user id as JSON text; `times` as for `read_last_n`.
#[pyfunction]
#[pyo3(signature = (plans, user, slots, times, filters))]
pub fn read_body<'py>(
    py: Python<'py>,
    plans: PyRef<'py, NativePlans>,
    user: &[u8],
    slots: Vec<SlotArg<'py>>,
    times: TimesArg,
    filters: FiltersArg,
) -> Option<BodyOut<'py>> {
    let context = read_context(times, filters);
    let slots: Vec<Slot<'_>> = slots
        .iter()
        .map(|(plan, head, tail, state)| Slot {
            plan: *plan,
            head: head.as_bytes(),
            tail: tail.as_bytes(),
            state: state.as_ref().map(|s| s.as_bytes()),
        })
        .collect();
    match user_body(&plans.plans, user, &slots, &context) {
        Body::Written(body) => Some(BodyOut::Body(PyBytes::new(py, &body))),
        Body::Refused { slot, refusal } => Some(BodyOut::Refused((slot, refusal_out(&refusal)))),
        Body::Unserved => None,
    }
}
