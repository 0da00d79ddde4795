//! `RecordCache`: the Materializer's LRU cache of looked-up records
//! (`usersignals_core::record_cache`), holding the Python record objects. One call per batch
//! each way: the Python `OrderedDict` version took about 3 µs a key (bench/engine.py, 1 M
//! events: 0.6 s of the batches' lookups).

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySet, PyString};
use pyo3::{PyTraverseError, PyVisit};
use usersignals_core::record_cache::{Lookup, RecordCache as Cache};

#[pyclass(module = "usersignals._core")]
pub struct RecordCache {
    cache: Cache<Py<PyAny>>,
}

#[pymethods]
impl RecordCache {
    #[new]
    fn new(capacity: usize) -> Self {
        RecordCache {
            cache: Cache::new(capacity),
        }
    }

    fn __len__(&self) -> usize {
        self.cache.len()
    }

    /// The records are Python objects: the collector must see them, or a record that refers
    /// back to its cache would keep both alive for good.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for record in self.cache.records() {
            visit.call(record)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.cache.clear();
    }

    /// `(records found, keys known to be absent, keys to fetch)` for the text `keys` at time
    /// `now`; the keys found become the most recently used. A key is matched by its text
    /// (UTF-8): anything but a `str` is a `TypeError`, as a lone surrogate is a
    /// `UnicodeEncodeError` (the Materializer's keys are text decoded from events).
    #[allow(clippy::type_complexity)]
    fn get_many<'py>(
        &mut self,
        keys: &Bound<'py, PyAny>,
        now: f64,
    ) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PySet>, Bound<'py, PyList>)> {
        let py = keys.py();
        let found = PyDict::new(py);
        let absent = PySet::empty(py)?;
        let fetch = PyList::empty(py);
        for key in keys.try_iter()? {
            let key = key?;
            let text = key.cast::<PyString>()?.to_str()?;
            match self.cache.lookup(text, now) {
                Lookup::Found(record) => found.set_item(&key, record.bind(py))?,
                Lookup::Absent => absent.add(&key)?,
                Lookup::Fetch => fetch.append(&key)?,
            }
        }
        Ok((found, absent, fetch))
    }

    /// The text `keys` without a live entry at time `now` (what a lookup would fetch), in
    /// their order; the cache's use order is left as it is.
    fn missing<'py>(&self, keys: &Bound<'py, PyAny>, now: f64) -> PyResult<Bound<'py, PyList>> {
        let missing = PyList::empty(keys.py());
        for key in keys.try_iter()? {
            let key = key?;
            if !self.cache.is_live(key.cast::<PyString>()?.to_str()?, now) {
                missing.append(&key)?;
            }
        }
        Ok(missing)
    }

    /// Caches `records` (text key → record) until `expires` and the `absent` keys until
    /// `absent_expires`, then evicts the least recently used down to the capacity.
    fn put_many(
        &mut self,
        records: &Bound<'_, PyAny>,
        absent: &Bound<'_, PyAny>,
        expires: f64,
        absent_expires: f64,
    ) -> PyResult<()> {
        // An exact dict only: a subclass (an OrderedDict) is read through its own `items()`,
        // in its own order, which decides what the LRU evicts first.
        if let Ok(dict) = records.cast_exact::<PyDict>() {
            for (key, record) in dict.iter() {
                self.cache
                    .put(key.extract()?, Some(record.unbind()), expires);
            }
        } else {
            for item in records.call_method0("items")?.try_iter()? {
                let (key, record): (String, Py<PyAny>) = item?.extract()?;
                self.cache.put(key, Some(record), expires);
            }
        }
        for key in absent.try_iter()? {
            self.cache.put(key?.extract()?, None, absent_expires);
        }
        self.cache.evict();
        Ok(())
    }
}
