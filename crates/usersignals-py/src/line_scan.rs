//! `lines_holding`: which of a block's raw lines hold a byte string — the pre-scan that finds
//! the deletion records among a block's events (`processing.pipeline.decode_segments`: only
//! the lines naming an `"op"` are parsed as one).
//!
//! Python's `[i for i, line in enumerate(lines) if needle in line]` took 0.32 µs an event of
//! 300,000 reference lines, as much as the rest of the block's checks: a loop step and a
//! search per line in the interpreter, where one pass with a prepared SIMD search
//! (`memchr::memmem`) takes a fraction of that.

use memchr::memmem::Finder;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

/// The indexes of the `lines` (bytes) that hold `needle`, in order.
#[pyfunction]
pub fn lines_holding(lines: &Bound<'_, PyList>, needle: &[u8]) -> PyResult<Vec<usize>> {
    let finder = Finder::new(needle);
    let mut found = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        if finder.find(line.cast::<PyBytes>()?.as_bytes()).is_some() {
            found.push(index);
        }
    }
    Ok(found)
}
