//! `JoinKeys`: a batch's lookup keys, read from its live events once, for the lookups (each
//! source's distinct keys) and then for the column reader (each event's record found by its
//! key's index, not a dict lookup an event).
//!
//! Before, the engine built each source's key set in Python (`set(map(attrgetter(...)))`
//! over the live events, 26 M instructions of a 50,000-event bench/engine.py run), the
//! Materializer de-duplicated it again, and the reader read every event's key once more and
//! looked it up in the records: 1,931.8 → 1,912.1 M engine-only instructions read once
//! (callgrind, in batches of 10,000; runs of the same code differ by up to 5 M).

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

/// An event whose key is `None` (a non-text key field's): no record.
pub(crate) const NO_KEY: u32 = u32::MAX;

/// One join's keys of the live events.
pub(crate) struct EventKeys {
    /// Per event, the value its key origin read (what a column of the key field holds).
    pub(crate) values: Vec<Py<PyAny>>,
    /// Per event, the index of its key's text in `texts`, or `NO_KEY`.
    pub(crate) index: Vec<u32>,
    /// The distinct keys' texts, in order of first appearance (`""` among them if read).
    pub(crate) texts: Vec<Py<PyString>>,
}

/// The keys `ColumnReader.join_keys` read, for `ColumnReader.read` of the same `live` list.
#[pyclass(frozen, module = "usersignals._core")]
pub struct JoinKeys {
    pub(crate) live: Py<PyList>,
    pub(crate) joins: Vec<EventKeys>,
}

/// One join's keys being read, event by event.
pub(crate) struct KeyReader {
    keys: EventKeys,
    /// Per distinct key, its text's hash and its index in `keys.texts` (no copy of the text:
    /// an owned `String` per distinct key was half of the reading, callgrind).
    seen: HashTable<(u64, u32)>,
    hasher: DefaultHashBuilder,
    /// The key is the value's text as it is (a text field), else its `str()`.
    text: bool,
}

impl KeyReader {
    pub(crate) fn new(text: bool, events: usize) -> Self {
        KeyReader {
            keys: EventKeys {
                values: Vec::with_capacity(events),
                index: Vec::with_capacity(events),
                texts: Vec::new(),
            },
            seen: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            text,
        }
    }

    /// Add an event's key value; `false` (nothing added) when a text key is not a `str`,
    /// which `JoinKeys` leaves to the lookups' own reading.
    pub(crate) fn push(&mut self, value: Bound<'_, PyAny>) -> PyResult<bool> {
        let index = if self.text {
            let Ok(text) = value.cast::<PyString>() else {
                return Ok(false);
            };
            self.index_of(text)?
        } else if value.is_none() {
            NO_KEY
        } else {
            self.index_of(&value.str()?)?
        };
        self.keys.index.push(index);
        self.keys.values.push(value.unbind());
        Ok(true)
    }

    fn index_of(&mut self, text: &Bound<'_, PyString>) -> PyResult<u32> {
        let py = text.py();
        let key = text.to_str()?;
        let hash = self.hasher.hash_one(key);
        let texts = &self.keys.texts;
        let same = |&(known, index): &(u64, u32)| {
            known == hash
                && texts[index as usize]
                    .bind(py)
                    .to_str()
                    .is_ok_and(|t| t == key)
        };
        if let Some((_, index)) = self.seen.find(hash, same) {
            return Ok(*index);
        }
        let index = texts.len() as u32;
        self.seen
            .insert_unique(hash, (hash, index), |&(hash, _)| hash);
        self.keys.texts.push(text.clone().unbind());
        Ok(index)
    }

    /// The join's keys, and its distinct texts to look up (without `""`, which no record
    /// has: the lookups never fetch it).
    pub(crate) fn finish(self, py: Python<'_>) -> PyResult<(EventKeys, Bound<'_, PyList>)> {
        let wanted = (self.keys.texts.iter())
            .map(|text| text.bind(py))
            .filter(|text| text.to_str().map_or(true, |text| !text.is_empty()));
        let wanted = PyList::new(py, wanted)?;
        Ok((self.keys, wanted))
    }
}

/// Per distinct key of `keys`, the record `table` holds for it (the record's object as the
/// table holds it; `None` for no table or no record).
pub(crate) fn found<'py>(
    keys: &EventKeys,
    table: Option<&Bound<'py, PyDict>>,
) -> PyResult<Vec<Option<Bound<'py, PyAny>>>> {
    let Some(table) = table else {
        return Ok(vec![None; keys.texts.len()]);
    };
    let py = table.py();
    (keys.texts.iter())
        .map(|text| table.get_item(text.bind(py)))
        .collect()
}
