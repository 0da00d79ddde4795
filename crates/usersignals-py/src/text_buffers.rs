//! A text column's buffers lent to Python (`TextBuffer`: a training set's JSON values, read
//! by Arrow without a copy), and their gathering into the label file's row order
//! (`TextGather`, `usersignals.offline.features_file`), in memory that a `TextGather` lends
//! again once Python is done with it: a row group's texts (about 240 MB of `LastN` answers
//! at 16,384 labels of the reference workload) written into new memory were mostly page
//! faults, the system mapping and zeroing every page first. See
//! `usersignals_core::text_column`.

use std::borrow::Cow;
use std::os::raw::{c_int, c_void};
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::buffer::PyUntypedBuffer;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use usersignals_core::text_column::{gather_with, TextChunk};

use crate::raise;

/// A column's JSON texts, lent to Python through the buffer protocol (read-only bytes):
/// `pyarrow.py_buffer` wraps them as an Arrow buffer without copying them. A training set's
/// texts run to hundreds of MB (a LastN of 500 entries is several KB a label). One that a
/// `TextGather` made gives its memory back to it when Python lets go of it (the last
/// buffer view holds a reference to this object, so none is left then).
#[pyclass(frozen, module = "usersignals._core")]
pub struct TextBuffer {
    data: Vec<u8>,
    lender: Option<Arc<Spares>>,
}

impl TextBuffer {
    pub fn new(data: Vec<u8>) -> Self {
        TextBuffer { data, lender: None }
    }
}

impl Drop for TextBuffer {
    fn drop(&mut self) {
        if let Some(lender) = &self.lender {
            lender.take_back(std::mem::take(&mut self.data));
        }
    }
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

/// The text vectors of a `TextGather`'s buffers that Python let go of, kept to be written
/// again: at most `keep` of them (a row group's columns), the largest when there are more.
struct Spares {
    vectors: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl Spares {
    /// A vector for `size` bytes: the smallest kept one with room for them, else a new one
    /// (a kept one too small is not grown: that would copy its old bytes for nothing).
    fn room(&self, size: usize) -> Vec<u8> {
        if size == 0 {
            return Vec::new(); // an empty column keeps no one's memory from the next
        }
        let kept = {
            let mut vectors = self.vectors.lock().unwrap_or_else(PoisonError::into_inner);
            let fitting = (vectors.iter().enumerate())
                .filter(|(_, vector)| vector.capacity() >= size)
                .min_by_key(|(_, vector)| vector.capacity())
                .map(|(at, _)| at);
            fitting.map(|at| vectors.swap_remove(at))
        };
        kept.unwrap_or_else(|| Vec::with_capacity(size))
    }

    /// Keeps `vector` when there is room, or in place of a smaller one: as the groups'
    /// texts grow, the larger memory is what the next ones fit in.
    fn take_back(&self, vector: Vec<u8>) {
        if vector.capacity() == 0 {
            return;
        }
        let mut vectors = self.vectors.lock().unwrap_or_else(PoisonError::into_inner);
        if vectors.len() < self.keep {
            vectors.push(vector);
            return;
        }
        let smallest = (vectors.iter_mut()).min_by_key(|kept| kept.capacity());
        if let Some(smallest) = smallest.filter(|kept| kept.capacity() < vector.capacity()) {
            *smallest = vector; // the smaller one is freed here
        }
    }
}

/// Gathers text columns into a new order, one column of a row group a call, writing each
/// into the memory of the buffers it made before that Python has let go of (`keep` of them
/// at most: the columns of one row group). Everything is freed with the last of it.
#[pyclass(frozen, module = "usersignals._core")]
pub struct TextGather {
    spares: Arc<Spares>,
}

#[pymethods]
impl TextGather {
    #[new]
    fn new(keep: usize) -> Self {
        TextGather {
            spares: Arc::new(Spares {
                vectors: Mutex::new(Vec::new()),
                keep,
            }),
        }
    }

    /// The texts of a column's chunks (each an Arrow `large_string` array's offsets
    /// buffer, exactly its texts' `len + 1` offsets, and its texts buffer) in the order
    /// `order` (an int64 buffer of indices into the chunks read as one column) gives: the
    /// new offsets (from 0) and the texts, as `label_rows` returns a column. Only the
    /// picked texts' offsets are read and checked, so a call costs what it gathers. The
    /// GIL stays held: a buffer may be written to by Python (a read-only view says nothing
    /// of the memory under it), and without page faults the copy is short.
    fn take<'py>(
        &self,
        py: Python<'py>,
        chunks: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
        order: Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, TextBuffer>)> {
        let mut exports = Vec::with_capacity(2 * chunks.len() + 1);
        for (offsets, data) in &chunks {
            exports.push(PyUntypedBuffer::get(offsets)?);
            exports.push(PyUntypedBuffer::get(data)?);
        }
        exports.push(PyUntypedBuffer::get(&order)?);
        let bytes = (exports.iter())
            .map(|export| buffer_bytes(export, py))
            .collect::<PyResult<Vec<_>>>()?;
        let (order, pairs) = bytes.split_last().expect("the order's export");
        let offsets = (pairs.iter().step_by(2))
            .map(|offsets| int64s(offsets))
            .collect::<PyResult<Vec<_>>>()?;
        let texts: Vec<TextChunk<'_>> = (offsets.iter().zip(pairs.iter().skip(1).step_by(2)))
            .map(|(offsets, data)| TextChunk { offsets, data })
            .collect();
        let order = int64s(order)?;
        let (offsets, data) =
            gather_with(&texts, &order, |size| self.spares.room(size)).map_err(raise)?;
        let buffer = TextBuffer {
            data,
            lender: Some(Arc::clone(&self.spares)),
        };
        Ok((offsets_bytes(py, &offsets)?, Bound::new(py, buffer)?))
    }
}

/// Offsets as an Arrow offsets buffer holds them: native-endian i64s.
pub fn offsets_bytes<'py>(py: Python<'py>, offsets: &[i64]) -> PyResult<Bound<'py, PyBytes>> {
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
    // while the export is held. A writable buffer could change under the slice only
    // through code that runs while this thread holds the GIL, and none does: `take` never
    // lets the GIL go.
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
