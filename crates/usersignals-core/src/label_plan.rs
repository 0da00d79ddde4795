//! A training set's plan: the events that feed each labelled user, in feeding order, and
//! where the user's labels fall among them. The port of the Python steps that used to lead
//! `usersignals.offline.training.compute_values` (the reference model is now in
//! `tests/unit/test_label_plan.py`): they were a third of a one-process training set's time,
//! a Python step or two per event.
//!
//! Per labelled user:
//! - with a dedupe horizon, when an event-id fingerprint occurs twice among the user's
//!   events, the repeats are dropped as the processor drops them: judged in the order the
//!   stream delivered the events (`usersignals.offline.arrival`: by partition and offset, the
//!   user's partitions merged by event time, each kept in offset order);
//! - the events are put in a total order: event time, then partition, then offset;
//! - the labels, in order of time (then row), are grouped where no event of the user falls
//!   between them (they read the same state), each group with the number of the user's
//!   events at or before its time.
//!
//! Users come in the order of their first label; a user without labels is left out.

use hashbrown::HashMap;

use crate::dedupe::{admit, Seen};
use crate::error::CoreError;

/// The events of a training set, index for index.
pub struct PlanEvents<'e> {
    /// Each event's user, as an index into the call's users.
    pub user: &'e [usize],
    pub ts: &'e [i64],
    /// Each event's partition, as its rank among the partitions' names in ascending order.
    pub partition: &'e [usize],
    pub offset: &'e [i64],
    /// Each event id's fingerprint ([`crate::dedupe::fingerprint`]).
    pub fingerprint: &'e [u32],
}

/// The labels, index for index: each one's user (as the events number them), time and row
/// in the label file (which breaks ties of time).
pub struct PlanLabels<'l> {
    pub user: &'l [usize],
    pub ts: &'l [i64],
    pub row: &'l [i64],
}

/// One labelled user's part of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlannedUser {
    /// The user's index (as the events number users).
    pub user: usize,
    /// Their events (indices into the call's events), in feeding order.
    pub events: Vec<usize>,
    /// Their label groups in time order: how many of `events` each includes, and its labels
    /// (indices into the call's labels) in time order.
    pub groups: Vec<(usize, Vec<usize>)>,
}

/// The plan of `labels` over `events` (see the module); `horizon_hours`: the event-id
/// dedupe's horizon, `None` for no dedupe.
pub fn plan_labels(
    users: usize,
    events: &PlanEvents<'_>,
    labels: &PlanLabels<'_>,
    horizon_hours: Option<i64>,
) -> Result<Vec<PlannedUser>, CoreError> {
    let count = events.user.len();
    let columns = [events.ts.len(), events.partition.len(), events.offset.len()];
    if columns.iter().any(|&n| n != count) || events.fingerprint.len() != count {
        return Err(CoreError::Batch("event columns of unequal lengths".into()));
    }
    if labels.ts.len() != labels.user.len() || labels.row.len() != labels.user.len() {
        return Err(CoreError::Batch("label columns of unequal lengths".into()));
    }
    if events.user.iter().chain(labels.user).any(|&u| u >= users) {
        return Err(CoreError::Batch("a user index is out of range".into()));
    }
    let mut by_user: Vec<Vec<usize>> = vec![Vec::new(); users];
    for (index, &user) in events.user.iter().enumerate() {
        by_user[user].push(index);
    }
    let mut order: Vec<usize> = (0..labels.user.len()).collect();
    order.sort_by_key(|&k| (labels.ts[k], labels.row[k]));
    let mut place: Vec<Option<usize>> = vec![None; users]; // user -> index in `planned`
    let mut planned: Vec<PlannedUser> = Vec::new();
    for label in order {
        let user = labels.user[label];
        let at = match place[user] {
            Some(at) => at,
            None => {
                let mut mine = std::mem::take(&mut by_user[user]);
                if let Some(horizon) = horizon_hours {
                    mine = without_repeats(events, mine, horizon);
                }
                // Stable: events alike in all three keep the order they came in.
                mine.sort_by_key(|&i| (events.ts[i], events.partition[i], events.offset[i]));
                planned.push(PlannedUser {
                    user,
                    events: mine,
                    groups: Vec::new(),
                });
                place[user] = Some(planned.len() - 1);
                planned.len() - 1
            }
        };
        let planned_user = &mut planned[at];
        let ts = labels.ts[label];
        let end = planned_user.events.partition_point(|&i| events.ts[i] <= ts);
        match planned_user.groups.last_mut() {
            Some((last_end, group)) if *last_end == end => group.push(label),
            _ => planned_user.groups.push((end, vec![label])),
        }
    }
    Ok(planned)
}

/// One user's events less the repeats the processor drops; unchanged (in the order given)
/// when no fingerprint occurs twice among them, which is the common case.
fn without_repeats(events: &PlanEvents<'_>, mine: Vec<usize>, horizon_hours: i64) -> Vec<usize> {
    if mine.len() < 2 {
        return mine;
    }
    let mut counts: HashMap<u32, usize> = HashMap::with_capacity(mine.len());
    let mut repeated = false;
    for &i in &mine {
        let seen = counts.entry(events.fingerprint[i]).or_insert(0);
        *seen += 1;
        repeated |= *seen > 1;
    }
    if !repeated {
        return mine;
    }
    let arrived = arrival_order(events, mine);
    let pairs: Vec<(i64, u32)> = (arrived.iter())
        .map(|&i| (events.ts[i], events.fingerprint[i]))
        .collect();
    let admitted = admit(horizon_hours, &mut Seen::new(), &pairs);
    admitted.into_iter().map(|k| arrived[k]).collect()
}

/// One user's events in the order the stream delivered them: by partition and offset, and,
/// when they span several partitions, the partitions merged by event time, each kept in
/// offset order; of two heads of equal time, the lower partition's first.
fn arrival_order(events: &PlanEvents<'_>, mut mine: Vec<usize>) -> Vec<usize> {
    mine.sort_by_key(|&i| (events.partition[i], events.offset[i]));
    let mut runs: Vec<&[usize]> = Vec::new();
    let mut start = 0;
    for k in 1..=mine.len() {
        if k == mine.len() || events.partition[mine[k]] != events.partition[mine[start]] {
            runs.push(&mine[start..k]);
            start = k;
        }
    }
    if runs.len() < 2 {
        return mine;
    }
    // A k-way merge over the user's few partitions: at each step the head of least time, the
    // earliest run on ties (as Python's `heapq.merge` takes them).
    let mut heads = vec![0usize; runs.len()];
    let mut merged = Vec::with_capacity(mine.len());
    loop {
        let next = (0..runs.len())
            .filter(|&r| heads[r] < runs[r].len())
            .min_by_key(|&r| (events.ts[runs[r][heads[r]]], r));
        let Some(run) = next else { break };
        merged.push(runs[run][heads[run]]);
        heads[run] += 1;
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Columns {
        user: Vec<usize>,
        ts: Vec<i64>,
        partition: Vec<usize>,
        offset: Vec<i64>,
        fingerprint: Vec<u32>,
    }

    impl Columns {
        fn of(rows: &[(usize, i64, usize, i64, u32)]) -> Self {
            Columns {
                user: rows.iter().map(|r| r.0).collect(),
                ts: rows.iter().map(|r| r.1).collect(),
                partition: rows.iter().map(|r| r.2).collect(),
                offset: rows.iter().map(|r| r.3).collect(),
                fingerprint: rows.iter().map(|r| r.4).collect(),
            }
        }

        fn events(&self) -> PlanEvents<'_> {
            PlanEvents {
                user: &self.user,
                ts: &self.ts,
                partition: &self.partition,
                offset: &self.offset,
                fingerprint: &self.fingerprint,
            }
        }
    }

    #[test]
    fn users_come_by_first_label_and_labels_group_where_no_event_falls_between() {
        // (user, ts, partition, offset, fingerprint)
        let events = Columns::of(&[
            (0, 30, 0, 0, 1),
            (1, 10, 0, 1, 2),
            (0, 10, 0, 2, 3),
            (0, 20, 0, 3, 4),
        ]);
        let (user, ts, row) = (vec![0, 0, 1, 0], vec![25, 21, 5, 40], vec![0, 1, 2, 3]);
        let labels = PlanLabels {
            user: &user,
            ts: &ts,
            row: &row,
        };
        let plan = plan_labels(2, &events.events(), &labels, None).unwrap();
        assert_eq!(
            plan,
            vec![
                PlannedUser {
                    user: 1,
                    events: vec![1],
                    groups: vec![(0, vec![2])],
                },
                PlannedUser {
                    user: 0,
                    events: vec![2, 3, 0],
                    groups: vec![(2, vec![1, 0]), (3, vec![3])],
                },
            ]
        );
    }

    #[test]
    fn a_repeat_is_judged_in_arrival_order_across_partitions() {
        // The same id (fingerprint 9) on two partitions: partition 1's copy is older by
        // event time, so the merge delivers it first and partition 0's copy is the repeat.
        let events = Columns::of(&[(0, 50, 0, 7, 9), (0, 40, 1, 3, 9), (0, 60, 0, 8, 5)]);
        let (user, ts, row) = (vec![0], vec![100], vec![0]);
        let labels = PlanLabels {
            user: &user,
            ts: &ts,
            row: &row,
        };
        let plan = plan_labels(1, &events.events(), &labels, Some(24)).unwrap();
        assert_eq!(plan[0].events, vec![1, 2]);
        let plan = plan_labels(1, &events.events(), &labels, None).unwrap();
        assert_eq!(plan[0].events, vec![1, 0, 2]);
    }

    #[test]
    fn unequal_columns_are_refused() {
        let mut events = Columns::of(&[(0, 1, 0, 0, 1)]);
        events.ts.push(2);
        let labels = PlanLabels {
            user: &[],
            ts: &[],
            row: &[],
        };
        assert!(plan_labels(1, &events.events(), &labels, None).is_err());
    }
}
