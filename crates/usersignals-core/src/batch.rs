//! The batch executor: one call per micro-batch, events as columns, states as bytes.
//!
//! Events are grouped by user and applied in event-time order (stable: equal times keep
//! batch order, as the Python engine's sort does). For each user and plan the core decodes
//! the stored state once, folds in the events the plan's filter accepts, and encodes the new
//! state; a plan that accepts none of a user's events leaves that state untouched (`None`).
//! [`apply_decoded`] applies the same events to states kept decoded by its caller, and
//! encodes nothing.

use std::collections::HashMap;

use crate::decayed::{self, ScoresRow};
use crate::decoded::{mismatch, Decoded};
use crate::error::CoreError;
use crate::last_n::{self, Entry, NewRows};
use crate::mean_vector::{self, SharedVector, VectorRow};
use crate::plan::{vector_column, Aggregation, Plan, Predicate};
use crate::value::Value;
use crate::{seen, tiles};

/// A micro-batch as columns, index for index. `user[i]` indexes the batch's users.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub users: usize,
    pub user: Vec<u32>,
    pub ts: Vec<i64>,
    /// Each event id's fingerprint ([`crate::dedupe::fingerprint`]).
    pub fingerprint: Vec<u32>,
    /// The fields the plans read (event fields, attributes, enriched fields), by name.
    pub names: Vec<String>,
    pub columns: Vec<Vec<Value>>,
    /// Vector fields (MeanVector), by `vec:` column name: per event the components as
    /// floats, or `None` where the value is not a list of numbers.
    pub vectors: Vec<(String, Vec<Option<SharedVector>>)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchOutput<S = Vec<u8>> {
    /// `states[user][plan]`: the new state's bytes ([`execute`]) or `()` ([`apply_decoded`]:
    /// the state changed in place), `None` where nothing changed.
    pub states: Vec<Vec<Option<S>>>,
    /// Per plan: events applied, and events already older than the retention.
    pub applied: Vec<u64>,
    pub expired: Vec<u64>,
}

struct Bound<'p> {
    plan: &'p Plan,
    filter: Option<Predicate<usize>>,
    /// The columns the aggregation reads (LastN: the kept fields; Distinct: the text column;
    /// DecayedScores: key, action; MeanVector: action, then its index in `Batch::vectors`).
    columns: Vec<usize>,
}

impl Batch {
    /// The columns agree in length, and `states` (per user, per plan) has this batch's shape.
    fn check<S>(&self, states: &[Vec<S>], plans: usize) -> Result<(), CoreError> {
        let n = self.ts.len();
        if self.user.len() != n || self.fingerprint.len() != n {
            return Err(CoreError::Batch(
                "user, ts and fingerprint differ in length".into(),
            ));
        }
        if self.names.len() != self.columns.len()
            || self.columns.iter().any(|c| c.len() != n)
            || self.vectors.iter().any(|(_, v)| v.len() != n)
        {
            return Err(CoreError::Batch("a field column differs in length".into()));
        }
        if self.user.iter().any(|u| *u as usize >= self.users) {
            return Err(CoreError::Batch("a user index is out of range".into()));
        }
        if states.len() != self.users || states.iter().any(|s| s.len() != plans) {
            return Err(CoreError::Batch(
                "stored states are not users x plans".into(),
            ));
        }
        Ok(())
    }
}

pub fn execute(
    plans: &[Plan],
    batch: &Batch,
    stored: &[Vec<Option<&[u8]>>],
) -> Result<BatchOutput, CoreError> {
    batch.check(stored, plans.len())?;
    run(plans, batch, |user, p, step| {
        if let Some(applied) = step.stored(stored[user][p]) {
            return applied;
        }
        let old = (stored[user][p].map(|bytes| Decoded::decode(&plans[p], bytes))).transpose()?;
        let (state, expired) = step.decoded(old)?;
        Ok((state.encode(&plans[p])?, expired))
    })
}

/// [`execute`]'s application on decoded states, which it updates in place
/// (`states[user][plan]`, `None` for no state yet): nothing is decoded and nothing encoded.
/// Encoding a state it leaves gives the bytes [`execute`] would have written (a proptest
/// holds them equal); a caller that reads the states decoded never encodes them (the
/// training set's loop).
pub fn apply_decoded(
    plans: &[Plan],
    batch: &Batch,
    states: &mut [Vec<Option<Decoded>>],
) -> Result<BatchOutput<()>, CoreError> {
    batch.check(states, plans.len())?;
    run(plans, batch, |user, p, step| {
        let (state, expired) = step.decoded(states[user][p].take())?;
        states[user][p] = Some(state);
        Ok(((), expired))
    })
}

/// The application step [`run`] hands its caller: one user's accepted events for one plan.
struct Step<'s, 'b> {
    bound: &'s Bound<'s>,
    batch: &'b Batch,
    rows: &'s [usize],
    scratch: &'s mut Scratch<'b>,
}

impl<'s, 'b> Step<'s, 'b> {
    fn new(
        bound: &'s Bound<'s>,
        batch: &'b Batch,
        rows: &'s [usize],
        scratch: &'s mut Scratch<'b>,
    ) -> Self {
        Step {
            bound,
            batch,
            rows,
            scratch,
        }
    }

    /// The old decoded state in, the new one and the count of expired events out.
    fn decoded(&mut self, old: Option<Decoded>) -> Result<(Decoded, usize), CoreError> {
        apply(self.bound, self.batch, old, self.rows, self.scratch)
    }

    /// The old state's bytes in, the new state's bytes and the count of expired events out,
    /// for an aggregation applied over its bytes: LastN, whose decoded entries cost an
    /// allocation per text value, and MeanVector and DecayedScores, whose buckets the rows do
    /// not reach are carried as stored; `None` for the others.
    fn stored(&mut self, old: Option<&[u8]>) -> Option<Result<(Vec<u8>, usize), CoreError>> {
        let retention_ms = self.bound.plan.retention_ms;
        match &self.bound.plan.aggregate {
            Aggregation::LastN(spec) => {
                let new = NewRows {
                    ts: &self.batch.ts,
                    tie: &self.batch.fingerprint,
                    columns: (self.bound.columns.iter())
                        .map(|&c| &self.batch.columns[c][..])
                        .collect(),
                    rows: self.rows,
                };
                Some(last_n::apply_stored(spec, retention_ms, old, &new))
            }
            Aggregation::MeanVector(spec) => {
                let columns = (self.bound.columns[0], self.bound.columns[1]);
                let rows = self.scratch.vectors(self.batch, columns, self.rows);
                Some(mean_vector::apply_spliced(spec, retention_ms, old, rows))
            }
            Aggregation::DecayedScores(spec) => {
                let columns = (self.bound.columns[0], self.bound.columns[1]);
                let rows = self.scratch.scores(self.batch, columns, self.rows);
                Some(decayed::apply_spliced(spec, retention_ms, old, rows))
            }
            _ => None,
        }
    }
}

/// Groups the events by user and applies them in event-time order, user by user and plan by
/// plan. `each(user, plan, step)` gets the old state, runs `step` on it and gives the new
/// state's output (its bytes, or nothing); a plan that accepts none of a user's events is not
/// called.
fn run<S: Clone>(
    plans: &[Plan],
    batch: &Batch,
    mut each: impl FnMut(usize, usize, &mut Step<'_, '_>) -> Result<(S, usize), CoreError>,
) -> Result<BatchOutput<S>, CoreError> {
    let names: HashMap<&str, usize> = batch
        .names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let bound = plans
        .iter()
        .map(|plan| bind(plan, &names, batch))
        .collect::<Result<Vec<_>, _>>()?;
    let (flags, flags_of) = accepted(&bound, batch);
    let mut order: Vec<usize> = (0..batch.ts.len()).collect();
    order.sort_by_key(|&i| (batch.user[i], batch.ts[i]));
    let mut out = BatchOutput {
        states: vec![vec![None; plans.len()]; batch.users],
        applied: vec![0; plans.len()],
        expired: vec![0; plans.len()],
    };
    // One buffer of a user's accepted rows for every user and plan (and `scratch`, of the
    // rows `apply` builds from them): a `Vec` each was an allocation per touched state, about
    // 190,000 a 50,000-event bench/engine.py run: 1,877.1 → 1,867.4 M engine-only
    // instructions (callgrind).
    let mut rows: Vec<usize> = Vec::new();
    let mut scratch = Scratch::default();
    for group in order.chunk_by(|a, b| batch.user[*a] == batch.user[*b]) {
        let user = batch.user[group[0]] as usize;
        for (p, b) in bound.iter().enumerate() {
            rows.clear();
            let accepted = &flags[flags_of[p]];
            rows.extend(group.iter().copied().filter(|&i| accepted[i]));
            if rows.is_empty() {
                continue;
            }
            let mut step = Step::new(b, batch, &rows, &mut scratch);
            let (state, expired) = each(user, p, &mut step).map_err(|e| CoreError::UserState {
                user,
                plan: b.plan.key.clone(),
                message: e.to_string(),
            })?;
            out.applied[p] += (rows.len() - expired) as u64;
            out.expired[p] += expired as u64;
            out.states[user][p] = Some(state);
        }
    }
    Ok(out)
}

/// Which events each plan's filter accepts, worked out up front (a tight loop over the
/// columns): plan `p`'s flags are `flags[flags_of[p]]`. Plans with the same filter share one
/// pass of it (the reference's recent_engagements and distinct_creators both take `action in
/// ENGAGEMENTS`), and the plans without one a row of `true`: `Predicate::accepts` 15.7 ->
/// 10.4 M instructions (callgrind, bench/engine.py --events 50000 --batch 10000).
fn accepted(bound: &[Bound<'_>], batch: &Batch) -> (Vec<Vec<bool>>, Vec<usize>) {
    let events = batch.ts.len();
    // Each distinct filter as its `Debug` text: the same text is the same predicate over the
    // same columns (floats print as the shortest text that reads back as the same value).
    let mut filters: Vec<Option<String>> = Vec::new();
    let mut flags: Vec<Vec<bool>> = Vec::new();
    let flags_of = (bound.iter())
        .map(|b| {
            let text = b.filter.as_ref().map(|filter| format!("{filter:?}"));
            if let Some(known) = filters.iter().position(|known| *known == text) {
                return known;
            }
            flags.push(match &b.filter {
                None => vec![true; events],
                Some(f) => (0..events)
                    .map(|row| f.accepts(&batch.columns, row))
                    .collect(),
            });
            filters.push(text);
            flags.len() - 1
        })
        .collect();
    (flags, flags_of)
}

/// One user's accepted events for one plan, as the tiles and seen batch steps take them.
pub struct UserRows<'b> {
    pub retention_ms: i64,
    /// The batch's event times, by event index.
    pub ts: &'b [i64],
    /// The aggregation's columns (`Aggregation::columns`), by event index.
    pub columns: &'b [&'b [Value]],
    /// The user's accepted events (indices), sorted by time.
    pub rows: &'b [usize],
}

impl Bound<'_> {
    /// The user's rows, with this plan's columns listed into `columns` (a buffer kept
    /// across users: a `Vec` each was an allocation per user and plan).
    fn user_rows<'s, 'b: 's>(
        &self,
        batch: &'b Batch,
        rows: &'s [usize],
        columns: &'s mut Vec<&'b [Value]>,
    ) -> UserRows<'s> {
        columns.clear();
        columns.extend(self.columns.iter().map(|&c| &batch.columns[c][..]));
        UserRows {
            retention_ms: self.plan.retention_ms,
            ts: &batch.ts,
            columns,
            rows,
        }
    }
}

fn bind<'p>(
    plan: &'p Plan,
    names: &HashMap<&str, usize>,
    batch: &Batch,
) -> Result<Bound<'p>, CoreError> {
    let filter = plan.filter.as_ref().map(|f| f.bind(names)).transpose()?;
    let wanted = match &plan.aggregate {
        // Its vector column is not a scalar column: it is found in `batch.vectors` below.
        Aggregation::MeanVector(_) => vec!["action".into()],
        other => other.columns(),
    };
    let mut columns: Vec<usize> = wanted
        .iter()
        .map(|k| {
            names
                .get(k.as_str())
                .copied()
                .ok_or_else(|| CoreError::Batch(format!("no column for field {k:?}")))
        })
        .collect::<Result<_, _>>()?;
    if let Aggregation::MeanVector(spec) = &plan.aggregate {
        let name = vector_column(&spec.of);
        let index = batch.vectors.iter().position(|(n, _)| *n == name);
        columns.push(index.ok_or_else(|| CoreError::Batch(format!("no column for {name:?}")))?);
    }
    Ok(Bound {
        plan,
        filter,
        columns,
    })
}

/// The aggregation's own state out of `old` (variant `$variant` of [`Decoded`]); a state of
/// another aggregation is refused.
macro_rules! picked {
    ($plan:expr, $old:expr, $variant:path) => {
        $old.map(|state| match state {
            $variant(inner) => Ok(inner),
            _ => Err(mismatch($plan)),
        })
        .transpose()
    };
}

/// The rows `apply` hands an aggregation, in buffers kept across users and plans (cleared
/// before each use): a `Vec` of them per touched state was an allocation each.
#[derive(Default)]
struct Scratch<'b> {
    distinct: Vec<(i64, Option<&'b str>)>,
    scores: Vec<ScoresRow<'b>>,
    vectors: Vec<VectorRow<'b>>,
    /// The tiles' group key of the event at hand.
    tile_key: Vec<u8>,
    /// A tiles or seen plan's columns (`UserRows::columns`).
    columns: Vec<&'b [Value]>,
}

impl<'b> Scratch<'b> {
    /// Distinct's rows: each event's time and its text column's text (`None` if not text).
    fn distinct(
        &mut self,
        batch: &'b Batch,
        text: usize,
        rows: &[usize],
    ) -> &[(i64, Option<&'b str>)] {
        let text = &batch.columns[text];
        self.distinct.clear();
        self.distinct.extend(rows.iter().map(|&i| match &text[i] {
            Value::Str(s) => (batch.ts[i], Some(s.as_str())),
            _ => (batch.ts[i], None),
        }));
        &self.distinct
    }

    /// DecayedScores' rows, from its `(key, action)` columns.
    fn scores(
        &mut self,
        batch: &'b Batch,
        (key, action): (usize, usize),
        rows: &[usize],
    ) -> &[ScoresRow<'b>] {
        let (key, action) = (&batch.columns[key], &batch.columns[action]);
        self.scores.clear();
        self.scores.extend(rows.iter().map(|&i| ScoresRow {
            ts: batch.ts[i],
            key: &key[i],
            action: &action[i],
        }));
        &self.scores
    }

    /// MeanVector's rows, from its action column and its vector column.
    fn vectors(
        &mut self,
        batch: &'b Batch,
        (action, vectors): (usize, usize),
        rows: &[usize],
    ) -> &[VectorRow<'b>] {
        let (action, vectors) = (&batch.columns[action], &batch.vectors[vectors].1);
        self.vectors.clear();
        self.vectors.extend(rows.iter().map(|&i| VectorRow {
            ts: batch.ts[i],
            action: &action[i],
            vector: vectors[i].as_deref(),
        }));
        &self.vectors
    }
}

/// `old` (of the plan's aggregation, `None` for no state yet) with the accepted `rows`
/// applied, and how many of them were already older than the retention.
fn apply<'b>(
    bound: &Bound<'_>,
    batch: &'b Batch,
    old: Option<Decoded>,
    rows: &[usize],
    scratch: &mut Scratch<'b>,
) -> Result<(Decoded, usize), CoreError> {
    let plan = bound.plan;
    let retention_ms = plan.retention_ms;
    Ok(match &plan.aggregate {
        Aggregation::LastN(spec) => {
            let old = picked!(plan, old, Decoded::LastN)?;
            let new = rows
                .iter()
                .map(|&i| Entry {
                    ts: batch.ts[i],
                    tie: batch.fingerprint[i],
                    values: bound
                        .columns
                        .iter()
                        .map(|&c| batch.columns[c][i].clone())
                        .collect(),
                })
                .collect();
            let (state, expired) =
                last_n::combine(spec, retention_ms, old.unwrap_or_default(), new);
            (Decoded::LastN(state), expired)
        }
        Aggregation::Distinct(spec, _) => {
            let old = picked!(plan, old, Decoded::Distinct)?;
            let rows = scratch.distinct(batch, bound.columns[0], rows);
            let (state, expired) = spec.apply(retention_ms, old, rows);
            (Decoded::Distinct(state), expired)
        }
        Aggregation::Tiles(spec) => {
            let old = picked!(plan, old, Decoded::Tiles)?;
            let user = bound.user_rows(batch, rows, &mut scratch.columns);
            let (state, expired) = tiles::apply_rows(spec, old, &user, &mut scratch.tile_key);
            (Decoded::Tiles(state), expired)
        }
        Aggregation::Seen(spec) => {
            let old = picked!(plan, old, Decoded::Seen)?;
            let user = bound.user_rows(batch, rows, &mut scratch.columns);
            let (state, expired) = seen::apply_rows(spec, old, &user);
            (Decoded::Seen(state), expired)
        }
        Aggregation::DecayedScores(spec) => {
            let old = picked!(plan, old, Decoded::Scores)?;
            let rows = scratch.scores(batch, (bound.columns[0], bound.columns[1]), rows);
            let (state, expired) = spec.apply(retention_ms, old, rows);
            (Decoded::Scores(state), expired)
        }
        Aggregation::MeanVector(spec) => {
            let old = picked!(plan, old, Decoded::Vector)?;
            let rows = scratch.vectors(batch, (bound.columns[0], bound.columns[1]), rows);
            let (state, expired) = spec.apply(retention_ms, old, rows);
            (Decoded::Vector(state), expired)
        }
    })
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
