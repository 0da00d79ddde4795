//! `PackedFields`: a lookup record's msgpack bytes and the fields the core parsed from them
//! (`usersignals_core::packed`). Python's `usersignals.enrich.packed.PackedRecord` derives
//! from it and adds the mapping a Python reader sees; the column reader and the record
//! checks read the parsed fields directly.

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use usersignals_core::packed::{Field, PackedFields as Fields};

use crate::raise;

#[pyclass(frozen, subclass, module = "usersignals._core")]
pub struct PackedFields {
    data: Py<PyBytes>,
    fields: Fields,
}

impl PackedFields {
    /// The field `name`, if the record has it.
    pub(crate) fn field(&self, name: &str) -> Option<&Field> {
        self.fields.get(name)
    }
}

#[pymethods]
impl PackedFields {
    /// Raises `CoreError` unless `data` is one msgpack map with text keys that the core
    /// reads as Python would (the caller then decodes it the Python way).
    #[new]
    fn new(data: Bound<'_, PyBytes>) -> PyResult<Self> {
        let fields = Fields::parse(data.as_bytes()).map_err(raise)?;
        Ok(PackedFields {
            data: data.unbind(),
            fields,
        })
    }

    /// The msgpack bytes, as the table stored them.
    #[getter]
    fn data(&self, py: Python<'_>) -> Py<PyBytes> {
        self.data.clone_ref(py)
    }

    fn __len__(&self) -> usize {
        self.fields.len()
    }
}
