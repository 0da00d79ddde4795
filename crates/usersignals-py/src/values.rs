//! The Materializer's check of a fetched vector field (`usersignals.values`), in one pass
//! over the components: it runs for every record a lookup fetches, and Python's version
//! (a set of the component types, then `math.fsum`) was a few percent of a batch.

use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyInt, PyList, PyTuple};

/// The reasons, as `usersignals.values` names them; `UNSURE` leaves the verdict to Python.
const WRONG_TYPE: &str = "wrong_type";
const WRONG_LENGTH: &str = "wrong_length";
pub const UNSURE: &str = "unsure";

/// Far enough below the largest float that no sum of components can overflow on the way
/// (`math.fsum` raises then, which Python's check reads as not finite).
const SAFE_TOTAL: f64 = 1e300;

/// `None` when `value` is a list or tuple of `dim` ints and floats (exactly those types)
/// whose absolute sum stays far from overflow; the reason when it is not a list or tuple,
/// has another length or holds another type; `"unsure"` for the rest (a NaN, an infinity,
/// a huge component: Python's own check decides those).
#[pyfunction]
pub fn check_vector(value: &Bound<'_, PyAny>, dim: usize) -> Option<&'static str> {
    let items: Vec<Bound<'_, PyAny>> = if let Ok(list) = value.cast::<PyList>() {
        list.iter().collect()
    } else if let Ok(tuple) = value.cast::<PyTuple>() {
        tuple.iter().collect()
    } else {
        return Some(WRONG_TYPE);
    };
    if items.len() != dim {
        return Some(WRONG_LENGTH);
    }
    let mut total = 0.0f64;
    let mut unsure = false;
    for item in &items {
        if let Ok(float) = item.cast_exact::<PyFloat>() {
            total += float.value().abs();
        } else if item.is_exact_instance_of::<PyInt>() {
            match item.extract::<f64>() {
                Ok(number) => total += number.abs(),
                Err(_) => unsure = true, // too large for a float: fsum's verdict
            }
        } else {
            return Some(WRONG_TYPE);
        }
    }
    // A NaN or infinite total is not safe either.
    let safe = total.is_finite() && total < SAFE_TOTAL;
    (unsure || !safe).then_some(UNSURE)
}
