//! The request-time context as the read kernels take it: already resolved to a time range.
//!
//! Python resolves `window`/`since`/`until`/`as_of` into `end_ms`/`start_ms` (one place for
//! that logic, `ReadContext.end_ms`/`start_ms`); the kernels only apply them.

use std::collections::HashSet;

#[derive(Debug, Clone, Default)]
pub struct ReadContext {
    /// The last event time included (inclusive).
    pub end_ms: i64,
    /// The first event time included (inclusive); `None`: unbounded.
    pub start_ms: Option<i64>,
    pub actions: Option<HashSet<String>>,
    pub surfaces: Option<HashSet<String>>,
    pub exclude: HashSet<String>,
    pub dedupe: bool,
    pub limit: Option<usize>,
}
