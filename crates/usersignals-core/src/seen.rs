//! `FirstSeen` / `LastSeen`: the earliest / latest event time, overall or per group.
//!
//! Mirrors `usersignals.aggregations.seen` (the reference model): a map from the group's
//! Python `str()` (the binding passes those texts; `""` is the whole-user group) to a time.
//! `LastSeen` drops the groups whose latest time is older than the retention and the `as_of`
//! look-back before the newest event, and does not apply events that old; `FirstSeen` keeps
//! the all-time earliest. A min or max per group: the same state whatever the batches.
//!
//! Stored format (version byte first):
//!
//! ```text
//! 0x01 | zigzag newest | varint group count | per group, in name order:
//!      varint length | UTF-8 name | zigzag (newest - time)
//! ```

use std::collections::BTreeMap;

use crate::batch::UserRows;
use crate::context::{NameSet, Refusal, Times, AS_OF_LOOKBACK_MS};
use crate::error::CoreError;
use crate::value::Value;
use crate::varint::{put_i64, put_u64, Reader};

pub const FORMAT_VERSION: u8 = 0x01;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenSpec {
    /// The field grouped by (`None`: the whole user).
    pub by: Option<String>,
    /// `LastSeen` (the latest time) or `FirstSeen` (the earliest).
    pub latest: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenState {
    pub newest: i64,
    /// Group name -> time, in name order (Python's string order: code points).
    pub times: BTreeMap<String, i64>,
}

/// A read's answer: the time per group in name order, and the newest time included.
pub type SeenAnswer = (Vec<(String, i64)>, Option<i64>);

impl SeenSpec {
    /// The oldest time a `LastSeen` state keeps (`-1` for `FirstSeen`: it keeps all).
    fn cutoff(&self, newest: i64, retention_ms: i64) -> i64 {
        if self.latest {
            newest - retention_ms - AS_OF_LOOKBACK_MS
        } else {
            -1
        }
    }

    /// Fold `(ts, group)` rows (sorted by time) into `state`; also how many were too old.
    pub fn apply(
        &self,
        retention_ms: i64,
        state: Option<SeenState>,
        rows: &[(i64, &str)],
    ) -> (SeenState, usize) {
        let last = rows.last().map_or(0, |row| row.0);
        let newest = state.as_ref().map_or(0, |s| s.newest).max(last);
        let cutoff = self.cutoff(newest, retention_ms);
        let mut times = state.map(|s| s.times).unwrap_or_default();
        times.retain(|_, ts| *ts >= cutoff);
        let mut expired = 0;
        for (ts, group) in rows {
            if *ts < cutoff {
                expired += 1;
                continue;
            }
            match times.get_mut(*group) {
                Some(have) if self.latest => *have = (*have).max(*ts),
                Some(have) => *have = (*have).min(*ts),
                None => {
                    times.insert((*group).to_owned(), *ts);
                }
            }
        }
        (SeenState { newest, times }, expired)
    }

    /// The reference's `SeenRuntime.read`: the time per group in name order, the newest
    /// time included, or the refusal. `allowed` filters the groups (the context's actions
    /// or surfaces when `by` is that field).
    pub fn read(
        &self,
        retention_ms: i64,
        state: &SeenState,
        times: &Times,
        allowed: Option<&NameSet>,
    ) -> Result<SeenAnswer, Refusal> {
        let end = times.end(state.newest);
        let wanted = state
            .times
            .iter()
            .filter(|(group, _)| allowed.is_none_or(|a| a.contains(group.as_str())));
        let newest = Some(state.newest.min(end));
        if !self.latest {
            let values = wanted.filter(|(_, ts)| **ts <= end);
            return Ok((values.map(|(g, t)| (g.clone(), *t)).collect(), newest));
        }
        let view = times.view_time(state.newest);
        let cutoff = view - retention_ms;
        if end < cutoff {
            // A view that ends before it starts holds nothing, whatever came later.
            return Ok((Default::default(), newest));
        }
        if let Some(later) = wanted
            .clone()
            .map(|(_, ts)| *ts)
            .filter(|ts| *ts > end)
            .max()
        {
            return Err(Refusal {
                view_ms: end, // the view's end: its as_of or until
                earliest_ms: later,
                why: "a newer event hides the latest one before it",
            });
        }
        if view - retention_ms < state.newest - retention_ms - AS_OF_LOOKBACK_MS {
            return Err(Refusal {
                view_ms: view,
                earliest_ms: state.newest - AS_OF_LOOKBACK_MS,
                why: "its retention reaches past the look-back",
            });
        }
        let values = wanted.filter(|(_, ts)| **ts >= cutoff);
        Ok((values.map(|(g, t)| (g.clone(), *t)).collect(), newest))
    }
}

/// The batch executor's step for one user and plan: apply the accepted `rows` (indices
/// into the batch, sorted by time) to the decoded state. `columns` holds the `by` field's
/// Python `str()` texts, or nothing for the whole-user group.
pub fn apply_rows(
    spec: &SeenSpec,
    old: Option<SeenState>,
    user: &UserRows<'_>,
) -> (SeenState, usize) {
    let (ts, columns, retention_ms) = (user.ts, &user.columns, user.retention_ms);
    let rows: Vec<(i64, &str)> = user
        .rows
        .iter()
        .map(|&i| {
            let group = match columns.first().map(|column| &column[i]) {
                None => "",
                Some(Value::Str(text)) => text.as_str(),
                // The glue renders a missing value as null; Python's str(None) is "None".
                Some(_) => "None",
            };
            (ts[i], group)
        })
        .collect();
    spec.apply(retention_ms, old, &rows)
}

pub fn encode(state: &SeenState) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    put_i64(&mut out, state.newest);
    put_u64(&mut out, state.times.len() as u64);
    for (group, ts) in &state.times {
        put_u64(&mut out, group.len() as u64);
        out.extend_from_slice(group.as_bytes());
        put_i64(&mut out, state.newest.wrapping_sub(*ts));
    }
    out
}

pub fn decode(data: &[u8]) -> Result<SeenState, CoreError> {
    let mut r = Reader::new(data);
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(CoreError::Codec(format!(
            "seen format version {version}, expected {FORMAT_VERSION}"
        )));
    }
    let newest = r.i64()?;
    let count = r.len(2)?;
    let mut times = BTreeMap::new();
    for _ in 0..count {
        let n = r.len(1)?;
        let group = std::str::from_utf8(r.bytes(n)?)
            .map_err(|e| CoreError::Codec(format!("group is not UTF-8: {e}")))?;
        times.insert(group.to_owned(), newest.wrapping_sub(r.i64()?));
    }
    r.expect_done("seen state")?;
    Ok(SeenState { newest, times })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const DAY: i64 = 86_400_000;

    fn in_batches(spec: &SeenSpec, rows: &[(i64, String)], cuts: &[usize]) -> Vec<u8> {
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (rows.len() + 1)).collect();
        bounds.push(rows.len());
        bounds.sort_unstable();
        let (mut state, mut start) = (None, 0);
        for end in bounds.into_iter().filter(|e| *e > 0) {
            if end <= start {
                continue;
            }
            let mut batch: Vec<(i64, &str)> = rows[start..end]
                .iter()
                .map(|(t, g)| (*t, g.as_str()))
                .collect();
            batch.sort_by_key(|r| r.0);
            let (next, _) = spec.apply(DAY, state, &batch);
            state = Some(decode(&encode(&next)).unwrap());
            start = end;
        }
        state.map(|s| encode(&s)).unwrap_or_default()
    }

    /// The naive recompute: per group the min or max of the times not older than the
    /// retention and look-back before the newest time of all.
    fn naive(spec: &SeenSpec, rows: &[(i64, String)]) -> SeenState {
        let newest = rows.iter().map(|r| r.0).max().unwrap_or(0).max(0);
        let cutoff = spec.cutoff(newest, DAY);
        let mut times = BTreeMap::new();
        for (ts, group) in rows.iter().filter(|r| r.0 >= cutoff) {
            let entry = times.entry(group.clone()).or_insert(*ts);
            *entry = if spec.latest {
                (*entry).max(*ts)
            } else {
                (*entry).min(*ts)
            };
        }
        SeenState { newest, times }
    }

    proptest! {
        #[test]
        fn any_batching_gives_the_naive_state(
            rows in prop::collection::vec(((0i64..400).prop_map(|t| t * 3_600_000), "[ab]{0,2}"), 1..60),
            cuts in prop::collection::vec(any::<usize>(), 0..5),
            latest in any::<bool>(),
        ) {
            let spec = SeenSpec { by: Some("action".into()), latest };
            let once = in_batches(&spec, &rows, &[]);
            prop_assert_eq!(&in_batches(&spec, &rows, &cuts), &once);
            prop_assert_eq!(decode(&once).unwrap(), naive(&spec, &rows));
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..48)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn last_seen_refuses_an_as_of_hidden_by_a_newer_event() {
        let spec = SeenSpec {
            by: None,
            latest: true,
        };
        let (state, _) = spec.apply(DAY, None, &[(10 * DAY, ""), (12 * DAY, "")]);
        let times = Times {
            as_of_ms: Some(11 * DAY),
            now_ms: 20 * DAY,
            ..Times::default()
        };
        let refusal = spec.read(DAY, &state, &times, None).unwrap_err();
        assert_eq!((refusal.view_ms, refusal.earliest_ms), (11 * DAY, 12 * DAY));
        let now = Times {
            now_ms: 12 * DAY + 5,
            ..Times::default()
        };
        let (values, newest) = spec.read(DAY, &state, &now, None).unwrap();
        assert_eq!(values, [(String::new(), 12 * DAY)]);
        assert_eq!(newest, Some(12 * DAY));
    }

    #[test]
    fn a_state_is_a_few_bytes_a_group() {
        let spec = SeenSpec {
            by: Some("action".into()),
            latest: false,
        };
        let rows = [
            (5 * DAY, "click"),
            (5 * DAY + 9, "save"),
            (6 * DAY, "click"),
        ];
        let (state, _) = spec.apply(DAY, None, &rows);
        // version, newest (5 bytes), count, then per group its name and a 4-byte time gap
        assert_eq!(encode(&state).len(), 1 + 5 + 1 + (1 + 5 + 4) + (1 + 4 + 4));
    }
}
