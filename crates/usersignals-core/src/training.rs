//! The training set's loop: each labelled user's events applied group by group, with each
//! label read in between, in one call (`usersignals.offline.training`).
//!
//! A user's labels are grouped where no event of the user falls between them (they read the
//! same state). For each group, the user's events up to it go through the micro-batch
//! pipeline's own steps ([`select_records`], [`apply_to_decoded`]: progress, event-id
//! dedupe when given a horizon, the plans), on the record kept in memory from the group
//! before (the training set gives no horizon: it judges repeats first, over each user's
//! whole history in the stream's order, `offline/arrival.py`), its states kept
//! decoded; then each label of the group is read from the decoded states with every
//! column's context at the label's time ([`label_values`]). The same states as the engine's
//! rounds of micro-batches, without a Python step per round, and with no state decoded or
//! encoded: a training set never stores them.

use crate::error::CoreError;
use crate::json_body::{label_values, JsonColumns, LabelColumn};
use crate::pipeline::{apply_to_decoded, select_records, Arrivals, LiveColumns};
use crate::plan::Plan;
use crate::record::UserRecord;

/// One labelled user: their events (indices into the call's event columns, in feeding
/// order), and per label group, in time order, how many of those events it includes and
/// its labels' times.
#[derive(Debug, Clone, Default)]
pub struct LabelledUser {
    pub events: Vec<usize>,
    pub groups: Vec<(usize, Vec<i64>)>,
}

/// The events of a training set's users: times, event ids' fingerprints
/// ([`crate::dedupe::fingerprint`]), and the plans' field columns, index for index.
pub struct TrainingEvents<'e> {
    pub ts: &'e [i64],
    pub fingerprint: &'e [u32],
    pub columns: &'e LiveColumns,
}

/// Per label (users in order, their groups in order, each group's times in order): each
/// column's value as JSON text; `None` when a label is for the object path to read (then
/// the caller reads them all there).
pub fn label_rows(
    plans: &[Plan],
    events: &TrainingEvents<'_>,
    users: &[LabelledUser],
    horizon_hours: Option<i64>,
    columns: &mut [LabelColumn],
) -> Result<Option<JsonColumns>, CoreError> {
    let labels = (users.iter())
        .flat_map(|user| user.groups.iter().map(|(_, times)| times.len()))
        .sum();
    let mut out = JsonColumns::for_labels(columns.len(), labels);
    for user in users {
        let mut record = UserRecord::default();
        // The user's states stay decoded from one group to the next, and the labels read
        // them so: the record keeps only the progress and the seen event ids.
        let mut decoded = vec![vec![None; plans.len()]];
        let mut done = 0;
        for (end, times) in &user.groups {
            let span = user.events.get(done..*end).ok_or_else(|| {
                CoreError::Batch("a label group ends outside its user's events".into())
            })?;
            if !span.is_empty() {
                let arrivals = arrivals_of(events, span, done);
                let mut selection = select_records(&arrivals, vec![record], horizon_hours)?;
                let live: Vec<usize> = selection.live().iter().map(|&i| span[i]).collect();
                let columns = gather(events.columns, &live);
                apply_to_decoded(plans, &arrivals, &selection, columns, &mut decoded)?;
                record = selection.records.pop().unwrap_or_default();
            }
            done = *end;
            for &ts in times {
                if !label_values(plans, &decoded[0], columns, ts, &mut out) {
                    return Ok(None);
                }
            }
        }
    }
    Ok(Some(out))
}

/// A span of one user's events as a micro-batch, `first` the span's place among them: the
/// offsets follow the feeding order, so no event reads as applied.
fn arrivals_of(events: &TrainingEvents<'_>, span: &[usize], first: usize) -> Arrivals {
    Arrivals {
        users: 1,
        user: vec![0; span.len()],
        ts: span.iter().map(|&i| events.ts[i]).collect(),
        fingerprint: span.iter().map(|&i| events.fingerprint[i]).collect(),
        partitions: vec!["training".into()],
        partition: vec![0; span.len()],
        offset: (first..first + span.len()).map(|k| k as i64).collect(),
        rewinds: false,
    }
}

/// The rows `live` of every column, in that order.
fn gather(columns: &LiveColumns, live: &[usize]) -> LiveColumns {
    LiveColumns {
        names: columns.names.clone(),
        columns: (columns.columns.iter())
            .map(|column| live.iter().map(|&i| column[i].clone()).collect())
            .collect(),
        vectors: (columns.vectors.iter())
            .map(|(name, column)| {
                (
                    name.clone(),
                    live.iter().map(|&i| column[i].clone()).collect(),
                )
            })
            .collect(),
    }
}
