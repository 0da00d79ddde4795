//! `Count` / `Sum` over time tiles, grouped by fields: combine, codec and read kernel.
//!
//! Mirrors `usersignals.aggregations.windowed` and `usersignals.aggregations.tiles` (the
//! reference models) cell for cell. The state is the newest event time `M`, the exact
//! boundary `B` (at least [`EXACT_SPAN_MS`] before `M`; later once the events from there on
//! make more than `exact_entries` entries, settled after each batch's events are added), the
//! events from `B` on at their exact times, and older events in integer cells `(bucket
//! start, group)` whose layout is a function of the event time and `M` alone, so the state
//! is the same whatever the batches. `Sum` keeps integers scaled by `10^decimals`.
//!
//! Stored format (version byte first; format 1, without the boundary, is read with `B` two
//! days before `M`, which it always was):
//!
//! ```text
//! 0x02 | zigzag newest | zigzag gap from B to newest
//!      | varint group count | per group (ordered by its encoded bytes):
//!      its `by` values (tagged, see `value.rs`)
//!      | varint cell count | per cell, newest start first, then by group:
//!          varint gap to the previous start in finest resolutions (the first from `M`
//!          floored to the finest resolution) | group and value
//!      | varint exact count | per exact entry, newest first, then by group:
//!          varint gap in ms to the previous time (the first from `M`) | group and value
//!
//! group and value = varint (group index << 1 | 1) when the value is 1 (most exact entries
//!          of a `Count`), else varint (group index << 1) | zigzag value
//! ```
//!
//! Groups are told apart by exact identity (type and value): a field holding both `1` and
//! `1.0` counts two groups, where the reference's dict would merge them (docs/native.md).

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};

use crate::batch::UserRows;
use crate::context::{NameSet, Refusal, Times, AS_OF_LOOKBACK_MS};
use crate::error::CoreError;
use crate::plan::missing;
use crate::value::Value;
use crate::varint::Reader;

pub const FORMAT_VERSION: u8 = 0x02;
/// The formats read: 1 has no exact boundary (two days before the newest event, always).
pub const READABLE_VERSIONS: [u8; 2] = [0x01, 0x02];
/// Events this recent (before the newest) keep their exact times (`EXACT_SPAN_MS` in Python).
pub const EXACT_SPAN_MS: i64 = 2 * 86_400_000;
/// The exact entries kept unless the plan says otherwise (`EXACT_ENTRIES` in Python, which
/// says why).
pub const EXACT_ENTRIES: usize = 2_048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileSpec {
    /// `(resolution, span)` per tier in ms, finest first; the last span is unused (retention).
    pub tiers: Vec<(i64, i64)>,
    pub by: Vec<String>,
    /// `Sum`: the field added up; `Count`: `None`.
    pub of: Option<String>,
    /// `10^decimals` for `Sum`, 1 for `Count`.
    pub scale: i64,
    /// How many of the newest entries (a distinct time and group) stay exact.
    pub exact_entries: usize,
}

/// A group: its `by` values in the value codec's bytes (exact identity, orderable).
pub type GroupKey = Vec<u8>;
/// `(time or bucket start, group index)` -> integer value.
pub type Cells = HashMap<(i64, u32), i64>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TileState {
    /// The newest event time; 0 only for a state with no events.
    pub newest: i64,
    /// Interned groups; cells and exact entries refer to them by index.
    pub groups: Vec<GroupKey>,
    pub cells: Cells,
    pub exact: Cells,
    /// The exact boundary: the tiles hold only events before it, `exact` every one from it.
    pub exact_from: i64,
}

/// One accepted event: its time, group and value (`None`: a missing or non-numeric measure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileRow {
    pub ts: i64,
    pub group: GroupKey,
    pub value: Option<i64>,
}

/// A read's answer: the total and the sum per first `by` value (`None`: no `by` fields,
/// labelled "all"), in group order; the caller labels them with Python's `str()`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TileAnswer {
    pub total: i64,
    pub by: Vec<(Option<Value>, i64)>,
    pub newest: Option<i64>,
}

/// Maps event times to bucket starts for one newest time `M` of a state.
pub struct Bucketer {
    /// `(cutoff, resolution)` per tier: tier `i` holds the times from its cutoff on.
    pub pairs: Vec<(i64, i64)>,
}

impl Bucketer {
    pub fn bucket(&self, ts: i64) -> Option<i64> {
        self.pairs
            .iter()
            .find(|(cutoff, _)| ts >= *cutoff)
            .map(|(_, resolution)| floor(ts, *resolution))
    }

    /// The width of the tier a bucket start lies in (the coarsest when before every cutoff).
    fn width(&self, bucket: i64) -> i64 {
        self.pairs
            .iter()
            .find(|(cutoff, _)| bucket >= *cutoff)
            .or(self.pairs.last())
            .map_or(1, |(_, resolution)| *resolution)
    }

    fn oldest(&self) -> i64 {
        self.pairs.last().map_or(i64::MIN, |(cutoff, _)| *cutoff)
    }
}

fn floor(ts: i64, resolution: i64) -> i64 {
    ts - ts.rem_euclid(resolution)
}

impl TileSpec {
    fn finest(&self) -> i64 {
        self.tiers[0].0
    }

    fn coarsest(&self) -> i64 {
        self.tiers[self.tiers.len() - 1].0
    }

    /// The part of `M` the cutoffs depend on: the second tier's resolution (the reference's
    /// `BucketerCache` granule), so users in one such interval share a layout.
    fn granule(&self) -> i64 {
        self.tiers.get(1).unwrap_or(&self.tiers[0]).0
    }

    /// The bucketer for a state whose newest event is at `newest`: tiles reach back the
    /// retention and the `as_of` look-back, as the reference's do.
    pub fn bucketer(&self, newest: i64, retention_ms: i64) -> Bucketer {
        let granule = self.granule();
        let newest = newest.div_euclid(granule) * granule;
        let oldest = floor(newest, self.coarsest()) - (retention_ms + AS_OF_LOOKBACK_MS);
        let mut pairs = Vec::with_capacity(self.tiers.len());
        for (index, (resolution, span)) in self.tiers.iter().enumerate() {
            let cutoff = match self.tiers.get(index + 1) {
                Some((align, _)) => (floor(newest, *align) - span).max(oldest),
                None => oldest,
            };
            pairs.push((cutoff, *resolution));
        }
        Bucketer { pairs }
    }

    /// The state's cells and exact entries laid out for a new newest time `newest`; a state
    /// with no events yet gets the boundary two days before it.
    fn settle(&self, state: Option<TileState>, newest: i64, bucketer: &Bucketer) -> TileState {
        let span_from = newest - EXACT_SPAN_MS;
        let Some(state) = state else {
            return TileState {
                newest,
                exact_from: span_from,
                ..TileState::default()
            };
        };
        let granule = self.granule();
        let unchanged = state.newest.div_euclid(granule) == newest.div_euclid(granule);
        let cells = if unchanged {
            state.cells
        } else {
            let mut moved = Cells::with_capacity(state.cells.len());
            for ((start, group), value) in state.cells {
                if let Some(bucket) = bucketer.bucket(start) {
                    let sum = moved.entry((bucket, group)).or_insert(0);
                    *sum = sum.wrapping_add(value);
                }
            }
            moved
        };
        let exact_from = state.exact_from.max(span_from);
        let mut settled = TileState {
            newest,
            groups: state.groups,
            cells,
            exact: state.exact,
            exact_from,
        };
        tile_before(&mut settled, exact_from, bucketer);
        settled
    }

    /// Fold `rows` (sorted by time) into `state`; also how many were past the retention.
    pub fn apply(
        &self,
        retention_ms: i64,
        state: Option<TileState>,
        rows: &[TileRow],
    ) -> (TileState, usize) {
        let last = rows.last().map_or(0, |row| row.ts);
        self.fold(retention_ms, state, last, rows.iter(), &mut Vec::new())
    }

    /// [`TileSpec::apply`] over rows that write their group key into `key` (a buffer the
    /// caller keeps): `last` is the newest row's time.
    fn fold<R: GroupedRow>(
        &self,
        retention_ms: i64,
        state: Option<TileState>,
        last: i64,
        rows: impl Iterator<Item = R>,
        key: &mut Vec<u8>,
    ) -> (TileState, usize) {
        let newest = state.as_ref().map_or(0, |s| s.newest).max(last);
        let bucketer = self.bucketer(newest, retention_ms);
        let mut state = self.settle(state, newest, &bucketer);
        // Group bytes -> index, as a table of indices into `state.groups` (no key copied).
        let hasher = DefaultHashBuilder::default();
        let hash = |group: &[u8]| hasher.hash_one(group);
        // Room from the start for a new state's first groups and entries: grown from empty,
        // the index and the entries' map each took hashbrown's rehash path, about 11 M
        // instructions of a 50,000-event bench/engine.py run.
        let mut index: HashTable<u32> =
            HashTable::with_capacity(state.groups.len().max(TABLE_ROOM));
        if state.exact.capacity() == 0 {
            state.exact = Cells::with_capacity(TABLE_ROOM);
        }
        for (i, group) in state.groups.iter().enumerate() {
            index.insert_unique(hash(group), i as u32, |j| hash(&state.groups[*j as usize]));
        }
        let exact_from = state.exact_from;
        let mut expired = 0;
        for row in rows {
            let ts = row.ts();
            let target = if ts >= exact_from {
                (ts, &mut state.exact)
            } else {
                match bucketer.bucket(ts) {
                    Some(bucket) => (bucket, &mut state.cells),
                    None => {
                        expired += 1;
                        continue;
                    }
                }
            };
            let Some(value) = row.value() else { continue };
            let group_bytes = row.group(key);
            // Looked up before inserting: a key is copied once per new group, not per event.
            let h = hash(group_bytes);
            let group = match index.find(h, |j| state.groups[*j as usize] == group_bytes) {
                Some(group) => *group,
                None => {
                    let group = state.groups.len() as u32;
                    index.insert_unique(h, group, |j| hash(&state.groups[*j as usize]));
                    state.groups.push(group_bytes.to_vec());
                    group
                }
            };
            let slot = target.1.entry((target.0, group)).or_insert(0);
            *slot = slot.wrapping_add(value);
        }
        self.trim(&mut state, &bucketer);
        (state, expired)
    }

    /// Past `exact_entries` entries, moves those of the time of the first entry past the cap
    /// (counting from the newest) and older into their tiles, and moves the boundary after
    /// that time. After a batch's events are added, as which entries are the newest depends
    /// on all of them.
    fn trim(&self, state: &mut TileState, bucketer: &Bucketer) {
        let cap = self.exact_entries;
        if state.exact.len() <= cap {
            return;
        }
        let mut times: Vec<i64> = state.exact.keys().map(|(ts, _)| *ts).collect();
        // The time of the first entry past the cap, newest first: linear, not a sort.
        let (_, past, _) = times.select_nth_unstable_by(cap, |a, b| b.cmp(a));
        let exact_from = *past + 1;
        state.exact_from = exact_from;
        tile_before(state, exact_from, bucketer);
    }

    /// The view's `[start, end]`, the start no earlier than the retention edge (rounded up
    /// to the coarsest tile); refused when the tiles it needs expired.
    fn span(&self, retention_ms: i64, newest: i64, times: &Times) -> Result<(i64, i64), Refusal> {
        let view = times.view_time(newest);
        let coarsest = self.coarsest();
        let edge = view.saturating_sub(retention_ms);
        let mut start = -(-edge).div_euclid(coarsest) * coarsest;
        if let Some(window_start) = times.start(newest) {
            start = start.max(window_start);
        }
        let oldest = self.bucketer(newest, retention_ms).oldest();
        if start < oldest {
            return Err(Refusal {
                view_ms: view,
                earliest_ms: oldest + retention_ms,
                why: "its tiles from then expired",
            });
        }
        Ok((start, times.end(newest)))
    }

    /// The reference's `TileRuntime.read`: the total and per-label sums over the view.
    /// `actions` / `surfaces` filter the groups when those are `by` fields.
    pub fn read(
        &self,
        retention_ms: i64,
        state: &TileState,
        times: &Times,
        actions: Option<&NameSet>,
        surfaces: Option<&NameSet>,
    ) -> Result<TileAnswer, Refusal> {
        let entries = EntriesRef {
            newest: state.newest,
            exact_from: state.exact_from,
            groups: &state.groups,
            exact: state.exact.iter().map(|((t, g), v)| (*t, *g, *v)),
            cells: state.cells.iter().map(|((t, g), v)| (*t, *g, *v)),
        };
        self.read_entries(retention_ms, entries, times, actions, surfaces)
    }

    fn read_entries(
        &self,
        retention_ms: i64,
        state: EntriesRef<'_, impl Iterator<Item = Entry>, impl Iterator<Item = Entry>>,
        times: &Times,
        actions: Option<&NameSet>,
        surfaces: Option<&NameSet>,
    ) -> Result<TileAnswer, Refusal> {
        let (mut exact, mut cells) = (state.exact.peekable(), state.cells.peekable());
        // Before the empty answer: a state whose counted events all expired still knows its
        // newest event, and an `as_of` those events covered is refused, not answered 0.
        let (start, end) = self.span(retention_ms, state.newest, times)?;
        if exact.peek().is_none() && cells.peek().is_none() {
            return Ok(TileAnswer::default());
        }
        let labels = self.labels(state.groups, actions, surfaces);
        // Per group index: its sum, if any entry of the view holds it.
        let mut sums: Vec<Option<i64>> = vec![None; state.groups.len()];
        for (ts, group, value) in exact {
            if start <= ts && ts <= end && labels[group as usize].1 {
                let sum = sums[group as usize].get_or_insert(0);
                *sum = sum.wrapping_add(value);
            }
        }
        let bucketer = self.bucketer(state.newest, retention_ms);
        // Tiles hold only events before the exact boundary: that bounds their last time.
        let exact_from = state.exact_from;
        // An as_of before the newest event: a tile straddling the view's edges may hold
        // events after as_of, or another share before the start than the finer tile the
        // answer served at as_of counted; such a read is refused, the others are exact.
        let view = times.view_time(state.newest);
        let earlier = view < state.newest;
        for (bucket, group, value) in cells {
            if bucket > end || !labels[group as usize].1 {
                continue;
            }
            let last = (bucket + bucketer.width(bucket)).min(exact_from) - 1;
            if last < start {
                continue;
            }
            if earlier && (bucket < start || last > end) {
                return Err(Refusal {
                    view_ms: view,
                    earliest_ms: state.newest,
                    why: "a tile straddling the window's edge holds events of other times",
                });
            }
            let sum = sums[group as usize].get_or_insert(0);
            *sum = sum.wrapping_add(value);
        }
        let mut answer = answer_of(state.groups, &labels, &sums);
        answer.newest = Some(state.newest.min(end));
        Ok(answer)
    }

    /// Per group: its first `by` value (its label) and whether the context's filters want it.
    fn labels(
        &self,
        groups: &[GroupKey],
        actions: Option<&NameSet>,
        surfaces: Option<&NameSet>,
    ) -> Vec<(Option<Value>, bool)> {
        let action_at = self.by.iter().position(|b| b == "action");
        let surface_at = self.by.iter().position(|b| b == "surface");
        let allows =
            |values: &[Value], at: Option<usize>, allowed: Option<&NameSet>| match (at, allowed) {
                (Some(at), Some(allowed)) => {
                    matches!(&values[at], Value::Str(s) if allowed.contains(s))
                }
                _ => true,
            };
        groups
            .iter()
            .map(|key| {
                let values = self.group_values(key).unwrap_or_default();
                let wanted = values.len() == self.by.len()
                    && allows(&values, action_at, actions)
                    && allows(&values, surface_at, surfaces);
                (values.into_iter().next(), wanted)
            })
            .collect()
    }

    /// The `by` values of a group key.
    pub fn group_values(&self, key: &[u8]) -> Result<Vec<Value>, CoreError> {
        let mut r = Reader::new(key);
        let values = (0..self.by.len())
            .map(|_| Value::decode(&mut r))
            .collect::<Result<Vec<_>, _>>()?;
        r.expect_done("a group")?;
        Ok(values)
    }
}

/// The total and the sum per label of the groups' `sums` (by group index), groups in key
/// order and equal labels merged; `labels` as [`TileSpec::labels`] gives them.
fn answer_of(
    groups: &[GroupKey],
    labels: &[(Option<Value>, bool)],
    sums: &[Option<i64>],
) -> TileAnswer {
    let mut by: Vec<(Option<Value>, i64)> = Vec::new();
    let mut total: i64 = 0;
    let mut summed: Vec<(&GroupKey, u32, i64)> = sums
        .iter()
        .enumerate()
        .filter_map(|(g, sum)| Some((&groups[g], g as u32, (*sum)?)))
        .collect();
    summed.sort();
    for (_, group, amount) in summed {
        total = total.wrapping_add(amount);
        let label = &labels[group as usize].0;
        match by.last_mut() {
            Some((last, sum)) if same(last, label) => *sum = sum.wrapping_add(amount),
            _ => by.push((label.clone(), amount)),
        }
    }
    TileAnswer {
        total,
        by,
        newest: None,
    }
}

/// Moves the exact entries before `exact_from` into their tiles (in place: most stay).
fn tile_before(state: &mut TileState, exact_from: i64, bucketer: &Bucketer) {
    for ((ts, group), value) in state.exact.extract_if(|(ts, _), _| *ts < exact_from) {
        if let Some(bucket) = bucketer.bucket(ts) {
            let sum = state.cells.entry((bucket, group)).or_insert(0);
            *sum = sum.wrapping_add(value);
        }
    }
}

/// Whether two first values are one group label: exact identity, as the group keys are.
fn same(a: &Option<Value>, b: &Option<Value>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.exact_key() == b.exact_key(),
        (None, None) => true,
        _ => false,
    }
}

/// A `Count` / `Sum` plan from its `to_json()` and the tiers in ms (`tiers_ms`, which the
/// glue adds: the JSON shows them as durations).
pub fn spec_from_json(json: &serde_json::Value) -> Result<TileSpec, CoreError> {
    let names = |j: &serde_json::Value| -> Option<Vec<String>> {
        j.as_array()?
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let by = names(&json["by"]).ok_or_else(|| missing("by"))?;
    let tiers: Vec<(i64, i64)> = json["tiers_ms"]
        .as_array()
        .and_then(|tiers| {
            tiers
                .iter()
                .map(|t| Some((t.get(0)?.as_i64()?, t.get(1)?.as_i64()?)))
                .collect()
        })
        .filter(|tiers: &Vec<(i64, i64)>| !tiers.is_empty() && tiers.iter().all(|t| t.0 > 0))
        .ok_or_else(|| missing("tiers_ms"))?;
    let (of, scale) = match json["kind"].as_str() {
        Some("sum") => {
            let of = json["of"].as_str().ok_or_else(|| missing("of"))?;
            let decimals = json["decimals"]
                .as_u64()
                .filter(|d| *d <= 9)
                .ok_or_else(|| missing("decimals"))?;
            (Some(of.to_owned()), 10i64.pow(decimals as u32))
        }
        _ => (None, 1),
    };
    // Set only by a signal that changes it (`Count(exact_entries=...)`).
    let exact_entries = match json.get("exact_entries") {
        None => EXACT_ENTRIES,
        Some(entries) => entries
            .as_u64()
            .filter(|entries| *entries > 0)
            .and_then(|entries| usize::try_from(entries).ok())
            .ok_or_else(|| missing("exact_entries"))?,
    };
    Ok(TileSpec {
        tiers,
        by,
        of,
        scale,
        exact_entries,
    })
}

/// A row [`TileSpec::fold`] reads: its time, its value, and its group key's bytes.
trait GroupedRow {
    fn ts(&self) -> i64;
    fn value(&self) -> Option<i64>;
    /// The group key: the row's own, or written into `key` (cleared first).
    fn group<'k>(&'k self, key: &'k mut Vec<u8>) -> &'k [u8];
}

impl GroupedRow for &TileRow {
    fn ts(&self) -> i64 {
        self.ts
    }

    fn value(&self) -> Option<i64> {
        self.value
    }

    fn group<'k>(&'k self, _: &'k mut Vec<u8>) -> &'k [u8] {
        &self.group
    }
}

/// An event of the batch: its `by` values are encoded only when it counts, into the
/// executor's key buffer.
struct EventRow<'u, 'b> {
    ts: i64,
    value: Option<i64>,
    by: &'u [&'b [Value]],
    event: usize,
}

impl GroupedRow for EventRow<'_, '_> {
    fn ts(&self) -> i64 {
        self.ts
    }

    fn value(&self) -> Option<i64> {
        self.value
    }

    fn group<'k>(&'k self, key: &'k mut Vec<u8>) -> &'k [u8] {
        key.clear();
        self.by
            .iter()
            .for_each(|column| column[self.event].encode(key));
        key
    }
}

/// The batch executor's step for one user and plan: apply the accepted `rows` (indices
/// into the batch, sorted by time) to the decoded state. `columns` are the `by` columns,
/// then the summed one. `key` is a buffer kept across users: a `TileRow` per event, each
/// with a group key `Vec` of its own, cost 7.9 M instructions of the 1,856.9 M engine-only
/// (callgrind, bench/engine.py --events 50000 --batch 10000).
pub fn apply_rows(
    spec: &TileSpec,
    old: Option<TileState>,
    user: &UserRows<'_>,
    key: &mut Vec<u8>,
) -> (TileState, usize) {
    let (ts, columns, retention_ms) = (user.ts, &user.columns, user.retention_ms);
    let (by, measured) = columns.split_at(spec.by.len());
    let rows = user.rows.iter().map(|&i| EventRow {
        ts: ts[i],
        value: match measured.first() {
            Some(column) => measure(spec.scale, &column[i]),
            None => Some(1),
        },
        by,
        event: i,
    });
    let last = user.rows.last().map_or(0, |&i| ts[i]);
    spec.fold(retention_ms, old, last, rows, key)
}

/// The group key of values (the value codec's bytes, concatenated).
pub fn group_key<'a>(values: impl IntoIterator<Item = &'a Value>) -> GroupKey {
    // One allocation for the usual key (a few short texts); grown from empty, it was three
    // per event and plan (callgrind, bench/engine.py).
    let mut key = Vec::with_capacity(GROUP_KEY_BYTES);
    values.into_iter().for_each(|v| v.encode(&mut key));
    key
}

/// The room a group key is given up front.
const GROUP_KEY_BYTES: usize = 32;

/// The largest scaled magnitude of a `Sum` value that counts (`MAX_SUM_SCALED` in
/// `aggregations/windowed.py`, which says why).
pub const MAX_SUM_SCALED: i64 = 1 << 53;

/// The reference's `_value`: 1 for `Count`; for `Sum` an int or float times the scale,
/// rounded half to even as Python's `round` does, when its magnitude is at most
/// [`MAX_SUM_SCALED`]. Anything else adds nothing.
pub fn measure(scale: i64, raw: &Value) -> Option<i64> {
    match raw {
        Value::Int(i) => i
            .checked_mul(scale)
            .filter(|scaled| scaled.unsigned_abs() <= MAX_SUM_SCALED as u64),
        Value::Float(f) => {
            let scaled = f * scale as f64;
            // NaN and infinities fail the comparison too.
            (scaled.abs() <= MAX_SUM_SCALED as f64).then(|| scaled.round_ties_even() as i64)
        }
        _ => None,
    }
}

/// The groups and exact entries a new state's tables have room for before they grow.
const TABLE_ROOM: usize = 4;

/// A stored entry: `(time or tile start, group index, value)`.
type Entry = (i64, u32, i64);

/// What `read_entries` reads: a state's newest time, its groups and its entries.
struct EntriesRef<'a, E, C> {
    newest: i64,
    /// The exact boundary: the tiles hold only events before it.
    exact_from: i64,
    groups: &'a [GroupKey],
    exact: E,
    cells: C,
}

mod codec;
mod stored_read;

use codec::read_header;
pub use codec::{decode, encode};

#[cfg(test)]
mod tests;
