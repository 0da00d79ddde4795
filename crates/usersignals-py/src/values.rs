//! The Materializer's checks of fetched records (`usersignals.values`), in the core: they
//! run for every record a lookup fetches, and Python's loop over fields and kinds (a set of
//! a vector's component types, `math.fsum`) was about a twentieth of a batch.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use usersignals_core::packed::Field;
use usersignals_core::Value;

use crate::packed::PackedFields;

/// The reasons, as `usersignals.values` names them; `UNSURE` leaves the verdict to Python.
const WRONG_TYPE: &str = "wrong_type";
const WRONG_LENGTH: &str = "wrong_length";
const NOT_FINITE: &str = "not_finite";
const NOT_AN_OBJECT: &str = "not_an_object";
pub const UNSURE: &str = "unsure";

/// Far enough below the largest float that no sum of components can overflow on the way
/// (`math.fsum` raises then, which Python's check reads as not finite).
const SAFE_TOTAL: f64 = 1e300;

/// A field kind as Python passes it: (0 key, 1 scalar, 2 number, 3 vector; the dimension).
type KindArg = (u8, usize);
/// A record's problem: (its index, the field or "*" for the whole record, the reason).
type Problem<'py> = (usize, Bound<'py, PyString>, &'static str);

/// `FieldKind.problem`: `None` when `value` fits the kind, else the reason; `UNSURE` where
/// only Python's `math.fsum` can tell (a vector with a NaN, an infinity or a huge
/// component).
fn problem(kind: KindArg, value: &Bound<'_, PyAny>) -> Option<&'static str> {
    match kind {
        // Exact types: a bool is an int subclass, and not a key.
        (0, _) => (!(value.is_exact_instance_of::<PyString>()
            || value.is_exact_instance_of::<PyInt>()))
        .then_some(WRONG_TYPE),
        (1, _) => match value.cast::<PyFloat>() {
            Ok(float) => (!float.value().is_finite()).then_some(NOT_FINITE),
            Err(_) => (!(value.is_instance_of::<PyString>() || value.is_instance_of::<PyInt>()))
                .then_some(WRONG_TYPE),
        },
        (2, _) => {
            if value.is_instance_of::<PyBool>() {
                Some(WRONG_TYPE)
            } else if let Ok(float) = value.cast::<PyFloat>() {
                (!float.value().is_finite()).then_some(NOT_FINITE)
            } else {
                (!value.is_instance_of::<PyInt>()).then_some(WRONG_TYPE)
            }
        }
        (_, dim) => vector_problem(value, dim),
    }
}

/// The vector kind: a list or tuple of `dim` ints and floats (exactly those types) whose
/// absolute sum stays far from overflow fits; the rest is `UNSURE`.
fn vector_problem(value: &Bound<'_, PyAny>, dim: usize) -> Option<&'static str> {
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

/// `problem` for a field of a packed record, as Python would see its decoded value: the
/// core's parse decides scalars and lists of numbers; anything else is `UNSURE`.
fn packed_problem(kind: KindArg, field: &Field) -> Option<&'static str> {
    match (kind, field) {
        (_, Field::Other) => Some(UNSURE),
        ((0, _), Field::Scalar(value)) => {
            (!matches!(value, Value::Str(_) | Value::Int(_))).then_some(WRONG_TYPE)
        }
        ((1, _), Field::Scalar(Value::Float(f))) | ((2, _), Field::Scalar(Value::Float(f))) => {
            (!f.is_finite()).then_some(NOT_FINITE)
        }
        // A bool is an int to the scalar kind, and not a number.
        ((1, _), Field::Scalar(_)) => None,
        ((2, _), Field::Scalar(value)) => (!matches!(value, Value::Int(_))).then_some(WRONG_TYPE),
        ((0..=2, _), Field::Numbers(_)) | (_, Field::Scalar(_)) => Some(WRONG_TYPE),
        ((_, dim), Field::Numbers(numbers)) => {
            if numbers.len() != dim {
                return Some(WRONG_LENGTH);
            }
            let total: f64 = numbers.iter().map(|n| n.abs()).sum();
            (!(total.is_finite() && total < SAFE_TOTAL)).then_some(UNSURE)
        }
    }
}

/// The problems of fetched `records` against the `expected` kinds of their fields (each
/// field's kinds in order; a missing or `None` field is not checked): per record that is not
/// a dict or a packed record, `(index, "*", "not_an_object")`; per field that does not fit,
/// its first problem
/// (`"unsure"`: let Python's check decide that field). Records without problems are not
/// mentioned: the common case costs no Python step.
#[pyfunction]
pub fn check_records<'py>(
    records: &Bound<'py, PyList>,
    expected: Vec<(Bound<'py, PyString>, Vec<KindArg>)>,
) -> Vec<Problem<'py>> {
    let whole = PyString::new(records.py(), "*");
    // A name that is not UTF-8 (a lone surrogate) names no field of a msgpack map.
    let texts: Vec<Option<&str>> = expected.iter().map(|(n, _)| n.to_str().ok()).collect();
    let mut out = Vec::new();
    for (index, record) in records.iter().enumerate() {
        if let Ok(packed) = record.cast::<PackedFields>() {
            for ((name, kinds), text) in expected.iter().zip(&texts) {
                let Some(field) = text.and_then(|n| packed.get().field(packed.py(), n)) else {
                    continue;
                };
                if matches!(field, Field::Scalar(Value::Null)) {
                    continue;
                }
                if let Some(reason) = kinds.iter().find_map(|kind| packed_problem(*kind, field)) {
                    out.push((index, name.clone(), reason));
                }
            }
            continue;
        }
        let Ok(record) = record.cast::<PyDict>() else {
            out.push((index, whole.clone(), NOT_AN_OBJECT));
            continue;
        };
        for (name, kinds) in &expected {
            let Some(value) = record.get_item(name).ok().flatten() else {
                continue;
            };
            if value.is_none() {
                continue;
            }
            if let Some(reason) = kinds.iter().find_map(|kind| problem(*kind, &value)) {
                out.push((index, name.clone(), reason));
            }
        }
    }
    out
}
