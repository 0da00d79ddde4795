//! The binding of the core's archive routing (`usersignals_core::route`): one call splits a
//! block of archive records for one shard of a local offline job.

use hashbrown::{HashMap, HashSet};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use usersignals_core::route::{user_of, Route, Router};

/// One shard's split of the job's users: by the stable hash, except the users the job
/// `assigned` to a shard; `borrowed` users (another shard's) are needed here too.
#[pyclass(frozen, module = "usersignals._core")]
pub struct ShareRouter {
    router: Router,
}

#[pymethods]
impl ShareRouter {
    #[new]
    #[pyo3(signature = (index, shards, assigned, borrowed))]
    fn new(
        index: u32,
        shards: u32,
        assigned: HashMap<String, u32>,
        borrowed: HashSet<String>,
    ) -> Self {
        Self {
            router: Router {
                index,
                shards,
                assigned,
                borrowed,
            },
        }
    }

    /// The indices in `lines` of this shard's records, of the borrowed users' records, and
    /// of the records the core cannot read for sure (Python routes those), each ascending.
    fn split(&self, lines: &Bound<'_, PyList>) -> PyResult<(Vec<usize>, Vec<usize>, Vec<usize>)> {
        let mut mine = Vec::new();
        let mut borrowed = Vec::new();
        let mut unsure = Vec::new();
        for (index, line) in lines.iter().enumerate() {
            let line = line.cast::<PyBytes>()?;
            match self.router.route(line.as_bytes()) {
                Route::Mine => mine.push(index),
                Route::Borrowed => borrowed.push(index),
                Route::Unsure => unsure.push(index),
                Route::Other => {}
            }
        }
        Ok((mine, borrowed, unsure))
    }
}

/// Each user's record count among `lines`, for the users the core reads for sure, and the
/// indices of the records it cannot read for sure (Python reads those with the reference),
/// ascending: a local backfill's sample of the archive (`usersignals.offline.balance`).
#[pyfunction]
pub fn count_users(lines: &Bound<'_, PyList>) -> PyResult<(HashMap<String, u64>, Vec<usize>)> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut unsure = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let line = line.cast::<PyBytes>()?;
        match user_of(line.as_bytes()) {
            Some(user) => match counts.get_mut(&*user) {
                Some(count) => *count += 1,
                None => {
                    counts.insert(user.into_owned(), 1);
                }
            },
            None => unsure.push(index),
        }
    }
    Ok((counts, unsure))
}
