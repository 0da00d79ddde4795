//! `EventChecks`: whether every event of a decoded block passes `EventDecoder.check`'s rules
//! (`usersignals.events.decode`), in one pass over the events.
//!
//! The block path decodes with msgspec, then asks whether the whole block is valid (the
//! common case) before it takes it as it is; any other block goes through the reference,
//! event by event, which says what is wrong. Python's column-wise checks (a list of lengths
//! per id field, their minimum and maximum, a set of the names, the times) were about a
//! third of a valid block's decoding on the Kafka processor's fetch thread: 0.42-0.44 µs an
//! event of 1.32-1.49 (300,000 reference lines).

use hashbrown::HashSet;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use crate::attrs::Attr;

/// The text fields that must be non-empty and within a length, as `decode._ID_FIELDS`.
const ID_FIELDS: [&str; 5] = ["event_id", "user_id", "item_id", "action", "surface"];
const USER_FIELD: usize = 1;
const ACTION_FIELD: usize = 3;
const SURFACE_FIELD: usize = 4;

/// `EventPolicy`'s rules, read from its attributes (the names are the policy's).
#[derive(FromPyObject)]
struct Policy {
    max_id_chars: usize,
    max_user_id_chars: usize,
    /// `None` accepts any name.
    allowed_actions: Option<HashSet<String>>,
    allowed_surfaces: Option<HashSet<String>>,
    min_ts_ms: i64,
    max_future_ms: i64,
}

/// An `EventPolicy`'s rules, as the block path asks them.
#[pyclass(frozen, module = "usersignals._core")]
pub struct EventChecks {
    policy: Policy,
}

#[pymethods]
impl EventChecks {
    #[new]
    fn new(policy: Policy) -> Self {
        EventChecks { policy }
    }

    /// Whether `EventDecoder.check(event, now_ms)` finds nothing wrong with any of
    /// `events`. False as well for what the reference must look at itself: a time outside
    /// 64 bits, a name UTF-8 cannot hold (a lone surrogate: msgspec decodes none, but an
    /// `Event` made in Python may hold one).
    fn all_pass(&self, events: &Bound<'_, PyList>, now_ms: i64) -> PyResult<bool> {
        let py = events.py();
        let mut fields = ID_FIELDS.map(|name| Attr::new(PyString::intern(py, name)));
        let mut ts = Attr::new(PyString::intern(py, "ts"));
        let policy = &self.policy;
        let max_ts = now_ms.saturating_add(policy.max_future_ms);
        for event in events.iter() {
            for (index, field) in fields.iter_mut().enumerate() {
                let value = field.get(&event)?;
                let limit = if index == USER_FIELD {
                    policy.max_user_id_chars
                } else {
                    policy.max_id_chars
                };
                // `len()` of a str: code points, as Python's rule counts them.
                let chars = value.len()?;
                if chars == 0 || chars > limit || !self.allowed(index, &value) {
                    return Ok(false);
                }
            }
            let Ok(time) = ts.get(&event)?.extract::<i64>() else {
                return Ok(false);
            };
            if time < policy.min_ts_ms || time > max_ts {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl EventChecks {
    /// Whether the `index`-th id field's `value` is among its allowed names, if the policy
    /// names them (the action's and the surface's).
    fn allowed(&self, index: usize, value: &Bound<'_, PyAny>) -> bool {
        let allowed = match index {
            ACTION_FIELD => &self.policy.allowed_actions,
            SURFACE_FIELD => &self.policy.allowed_surfaces,
            _ => return true,
        };
        let Some(allowed) = allowed else {
            return true;
        };
        let Ok(text) = value.cast::<PyString>() else {
            return false;
        };
        text.to_str().is_ok_and(|name| allowed.contains(name))
    }
}
