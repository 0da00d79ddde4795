//! The training set's binding: a shard's labelled users, as its plan lists them (`plan_labels`
//! in `label_plan`, which stays native), computed and read in one call (`label_rows`,
//! `usersignals_core::training`). Each column's value is written as JSON text
//! by the serving path's kernels (`json_body`) into one buffer per column: no Python object
//! per entry, nor per value.

use std::borrow::Cow;
use std::os::raw::{c_int, c_void};

use pyo3::buffer::PyUntypedBuffer;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use usersignals_core::json_body::{JsonColumns, LabelColumn};
use usersignals_core::text_column::{gather, TextChunk};
use usersignals_core::training::{self, TrainingEvents};

use crate::columns::Columns;
use crate::label_plan::PlannedLabels;
use crate::{raise, read_context, FiltersArg, NativePlans, TimesArg};

/// A column of the training set: (plan index, the context's times, whose `as_of` and "now"
/// each label sets, and its filters).
type ColumnArg = (usize, TimesArg, FiltersArg);
/// Per column: the offsets of its labels' values (`labels + 1` native-endian i64s), and the
/// values' JSON texts one after another (an Arrow string column's buffers).
type LabelValues<'py> = Vec<(Bound<'py, PyBytes>, Bound<'py, TextBuffer>)>;

/// A column's JSON texts, lent to Python through the buffer protocol (read-only bytes):
/// `pyarrow.py_buffer` wraps them as an Arrow buffer without copying them. A training set's
/// texts run to hundreds of MB (a LastN of 500 entries is several KB a label).
#[pyclass(frozen, module = "usersignals._core")]
pub struct TextBuffer {
    data: Vec<u8>,
}

#[pymethods]
impl TextBuffer {
    /// # Safety
    /// `view` is the buffer Python asks to fill; the texts live as long as this object,
    /// which the view holds a reference to, and never change.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let data = &slf.get().data;
        // SAFETY: as above. `readonly` is 1: PyBuffer_FillInfo itself refuses a request for
        // a writable view.
        let filled = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                data.as_ptr() as *mut c_void,
                data.len() as ffi::Py_ssize_t,
                1,
                flags,
            )
        };
        if filled == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.data.len()
    }
}

fn label_columns(columns: Vec<ColumnArg>) -> Vec<LabelColumn> {
    columns
        .into_iter()
        .map(|(plan, times, filters)| LabelColumn {
            plan,
            context: read_context(times, filters),
        })
        .collect()
}

fn values_out<'py>(py: Python<'py>, values: JsonColumns) -> PyResult<LabelValues<'py>> {
    (values.offsets.iter().zip(values.data))
        .map(|(offsets, data)| {
            Ok((
                offsets_bytes(py, offsets)?,
                Bound::new(py, TextBuffer { data })?,
            ))
        })
        .collect()
}

/// Offsets as an Arrow offsets buffer holds them: native-endian i64s.
fn offsets_bytes<'py>(py: Python<'py>, offsets: &[i64]) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, offsets.len() * 8, |out| {
        for (place, offset) in out.chunks_exact_mut(8).zip(offsets) {
            place.copy_from_slice(&offset.to_ne_bytes());
        }
        Ok(())
    })
}

/// A buffer's bytes (any object with the buffer protocol, a `pyarrow.Buffer` say), while
/// `buffer` holds the export and the caller holds the GIL.
fn buffer_bytes<'b>(buffer: &'b PyUntypedBuffer, _gil: Python<'_>) -> PyResult<&'b [u8]> {
    if !buffer.is_c_contiguous() {
        return Err(crate::CoreError::new_err("a buffer that is not contiguous"));
    }
    if buffer.len_bytes() == 0 {
        return Ok(&[]); // its pointer may be null, which no slice may hold
    }
    // SAFETY: a contiguous buffer's `len_bytes` bytes start at `buf_ptr` and stay there
    // while the export is held. A writable buffer (pyarrow's own report themselves so)
    // could change under the slice only through code that runs while this thread holds
    // the GIL, and none does: `take_texts` never lets the GIL go.
    Ok(unsafe { std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, buffer.len_bytes()) })
}

/// Native-endian i64s in a buffer's bytes: borrowed where they are 8-byte aligned (an
/// Arrow buffer's are, and a sliced array's offsets start at a multiple of 8), else copied.
fn int64s(bytes: &[u8]) -> PyResult<Cow<'_, [i64]>> {
    if bytes.len() % 8 != 0 {
        return Err(crate::CoreError::new_err(
            "an int64 buffer of a length not a multiple of 8",
        ));
    }
    // SAFETY: every bit pattern is a valid i64; `align_to` only borrows what is aligned.
    let (head, aligned, tail) = unsafe { bytes.align_to::<i64>() };
    if head.is_empty() && tail.is_empty() {
        return Ok(Cow::Borrowed(aligned));
    }
    Ok(Cow::Owned(
        (bytes.chunks_exact(8))
            .map(|b| i64::from_ne_bytes(b.try_into().expect("chunks of 8")))
            .collect(),
    ))
}

/// The texts of a column's chunks (each an Arrow `large_string` array's offsets buffer,
/// exactly its texts' `len + 1` offsets, and its texts buffer) in the order `order` (an
/// int64 buffer of indices into the chunks read as one column) gives: the new offsets
/// (from 0) and the texts, as `label_rows` returns a column (`usersignals.offline.
/// features_file`). Only the picked texts' offsets are read and checked, so a call costs
/// what it gathers (a call per row group). The GIL stays held: the buffers may be
/// writable Python objects. See `usersignals_core::text_column`.
#[pyfunction]
pub fn take_texts<'py>(
    py: Python<'py>,
    chunks: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
    order: Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, TextBuffer>)> {
    let exports = (chunks.iter())
        .map(|(offsets, data)| Ok((PyUntypedBuffer::get(offsets)?, PyUntypedBuffer::get(data)?)))
        .collect::<PyResult<Vec<_>>>()?;
    let offsets = (exports.iter())
        .map(|(offsets, _)| int64s(buffer_bytes(offsets, py)?))
        .collect::<PyResult<Vec<_>>>()?;
    let texts = (exports.iter().zip(&offsets))
        .map(|((_, data), offsets)| {
            Ok(TextChunk {
                offsets,
                data: buffer_bytes(data, py)?,
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let order_export = PyUntypedBuffer::get(&order)?;
    let order = int64s(buffer_bytes(&order_export, py)?)?;
    let (offsets, data) = gather(&texts, &order).map_err(raise)?;
    Ok((
        offsets_bytes(py, &offsets)?,
        Bound::new(py, TextBuffer { data })?,
    ))
}

/// The labels of a shard's plan (`plan_labels`: its users, their events in feeding order
/// and label groups, the events' times and event ids), per label in the plan's order, as
/// column buffers (`None` when a label is for the object path). `columns` are the plans'
/// field columns of the plan's events in feeding order, as the engine's pipeline builds
/// them for its live events.
#[pyfunction]
#[pyo3(signature = (plans, planned, columns, horizon_hours, label_columns_arg))]
pub fn label_rows<'py>(
    py: Python<'py>,
    plans: PyRef<'py, NativePlans>,
    planned: PyRef<'py, PlannedLabels>,
    mut columns: PyRefMut<'py, Columns>,
    horizon_hours: Option<i64>,
    label_columns_arg: Vec<ColumnArg>,
) -> PyResult<Option<LabelValues<'py>>> {
    let columns = columns.take()?;
    let count = planned.ts.len();
    if columns.columns.iter().any(|column| column.len() != count)
        || columns
            .vectors
            .iter()
            .any(|(_, column)| column.len() != count)
    {
        return Err(raise(usersignals_core::CoreError::Batch(
            "field columns of another length than the plan's events".into(),
        )));
    }
    let mut wanted = label_columns(label_columns_arg);
    let events = TrainingEvents {
        ts: &planned.ts,
        fingerprint: &planned.fingerprint,
        columns: &columns,
    };
    let (plans, users) = (&plans.plans, &planned.users);
    let values = py
        .detach(|| training::label_rows(plans, &events, users, horizon_hours, &mut wanted))
        .map_err(raise)?;
    values.map(|values| values_out(py, values)).transpose()
}
