use proptest::prelude::*;

use super::codec::put_group_value;
use super::*;
use crate::varint::{put_i64, put_u64};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const RETENTION: i64 = 3 * DAY;

fn spec() -> TileSpec {
    TileSpec {
        tiers: vec![
            (5 * MINUTE, 2 * HOUR),
            (HOUR, DAY),
            (6 * HOUR, 8 * DAY),
            (DAY, 0),
        ],
        by: vec!["action".into(), "surface".into()],
        of: None,
        scale: 1,
        exact_entries: EXACT_ENTRIES,
    }
}

fn row(ts: i64, action: &str, surface: &str, value: Option<i64>) -> TileRow {
    let values = [Value::Str(action.into()), Value::Str(surface.into())];
    TileRow {
        ts,
        group: group_key(&values),
        value,
    }
}

/// The spec keeping `exact_entries` exact entries.
fn capped(exact_entries: usize) -> TileSpec {
    TileSpec {
        exact_entries,
        ..spec()
    }
}

/// A cap of a few exact entries (most states then tile some of their last two days), or the
/// real one.
fn caps() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..6, Just(EXACT_ENTRIES)]
}

fn in_batches(spec: &TileSpec, rows: &[TileRow], cuts: &[usize]) -> Vec<u8> {
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (rows.len() + 1)).collect();
    bounds.push(rows.len());
    bounds.sort_unstable();
    let (mut state, mut start) = (None, 0);
    for end in bounds {
        if end <= start {
            continue;
        }
        let mut batch = rows[start..end].to_vec();
        batch.sort_by_key(|r| r.ts);
        let (next, _) = spec.apply(RETENTION, state, &batch);
        state = Some(decode(spec, &encode(spec, &next)).unwrap());
        start = end;
    }
    state.map(|s| encode(spec, &s)).unwrap_or_default()
}

fn rows_strategy() -> impl Strategy<Value = Vec<TileRow>> {
    prop::collection::vec(
        (
            (0i64..12 * 24 * 12).prop_map(|t| 1_000 * DAY + t * 5 * MINUTE + 7),
            prop::sample::select(vec!["click", "save"]),
            prop::sample::select(vec!["home", "search"]),
            prop::option::of(-3i64..5),
        )
            .prop_map(|(ts, a, s, v)| row(ts, a, s, v)),
        1..80,
    )
}

proptest! {
    #[test]
    fn any_batching_gives_the_same_bytes(
        rows in rows_strategy(),
        cuts in prop::collection::vec(any::<usize>(), 0..5),
        exact_entries in caps(),
    ) {
        let spec = capped(exact_entries);
        prop_assert_eq!(in_batches(&spec, &rows, &cuts), in_batches(&spec, &rows, &[]));
    }

    /// Windows that start at or after the exact boundary are exact: the naive count of the
    /// events in `[start, end]`. With the real cap, that is every window within the span.
    #[test]
    fn recent_windows_equal_a_naive_recompute(
        rows in rows_strategy(),
        window in prop::sample::select(vec![HOUR, DAY]),
        back in 0i64..DAY,
        exact_entries in caps(),
    ) {
        let spec = capped(exact_entries);
        let mut sorted = rows.clone();
        sorted.sort_by_key(|r| r.ts);
        let (state, _) = spec.apply(RETENTION, None, &sorted);
        let as_of = state.newest - back;
        let times = Times { as_of_ms: Some(as_of), now_ms: as_of, window_ms: Some(window), ..Times::default() };
        // The naive boundary: just after the time of the first entry (a distinct time and
        // group of the rows that add) past the cap, newest first; else two days back.
        let mut entries: Vec<(i64, &[u8])> = sorted
            .iter()
            .filter(|r| r.value.is_some() && r.ts >= state.newest - EXACT_SPAN_MS)
            .map(|r| (r.ts, r.group.as_slice()))
            .collect();
        entries.sort_unstable_by(|a, b| b.cmp(a));
        entries.dedup();
        let boundary = match entries.get(exact_entries) {
            Some(&(past, _)) => past + 1,
            None => state.newest - EXACT_SPAN_MS,
        };
        prop_assert_eq!(state.exact_from, boundary);
        let answer = spec.read(RETENTION, &state, &times, None, None);
        let inside = sorted.iter().filter(|r| (as_of - window..=as_of).contains(&r.ts));
        let expected: i64 = inside.filter_map(|r| r.value).sum();
        if as_of - window >= boundary {
            prop_assert_eq!(answer.unwrap().total, expected);
        }
    }

    #[test]
    fn reading_the_bytes_equals_reading_the_decoded_state(
        rows in rows_strategy(),
        view_offset in -(5 * DAY)..DAY,
        as_of in any::<bool>(),
        window in prop::option::of(prop::sample::select(vec![HOUR, DAY, 7 * DAY])),
        actions in prop::option::of(prop::sample::select(vec!["click", "save"])),
        exact_entries in caps(),
    ) {
        let spec = capped(exact_entries);
        let bytes = in_batches(&spec, &rows, &[]);
        let state = decode(&spec, &bytes).unwrap();
        let at = state.newest + view_offset;
        let times = Times {
            as_of_ms: as_of.then_some(at),
            now_ms: at,
            window_ms: window,
            ..Times::default()
        };
        let actions: Option<NameSet> = actions.map(|a| NameSet::from([a.to_owned()]));
        prop_assert_eq!(
            spec.read_stored(RETENTION, &bytes, &times, actions.as_ref(), None).unwrap(),
            spec.read(RETENTION, &state, &times, actions.as_ref(), None)
        );
    }

    /// Groups of mixed value types (labels that merge, or order otherwise than their
    /// keys), filtered by surface: the bytes read as the decoded state.
    #[test]
    fn mixed_groups_read_from_the_bytes_as_decoded(
        rows in prop::collection::vec(
            (0i64..(4 * 24 * 12), 0usize..7, prop::sample::select(vec!["home", "search"])),
            1..60,
        ),
        view_offset in -DAY..DAY,
        as_of in any::<bool>(),
        window in prop::option::of(prop::sample::select(vec![HOUR, DAY])),
        surfaces in prop::option::of(prop::sample::select(vec!["home", "search"])),
    ) {
        let spec = TileSpec { by: vec!["kind".into(), "surface".into()], ..spec() };
        let kinds = [
            Value::Int(1), Value::Str("1".into()), Value::Float(1.0), Value::Bool(true),
            Value::Str("a".into()), Value::Str("bb".into()), Value::Null,
        ];
        let mut rows: Vec<TileRow> = rows
            .into_iter()
            .map(|(t, kind, surface)| TileRow {
                ts: 1_000 * DAY + t * 5 * MINUTE,
                group: group_key(&[kinds[kind].clone(), Value::Str(surface.into())]),
                value: Some(1),
            })
            .collect();
        rows.sort_by_key(|r| r.ts);
        let (state, _) = spec.apply(RETENTION, None, &rows);
        let bytes = encode(&spec, &state);
        let state = decode(&spec, &bytes).unwrap();
        let at = state.newest + view_offset;
        let times = Times { as_of_ms: as_of.then_some(at), now_ms: at, window_ms: window, ..Times::default() };
        let surfaces: Option<NameSet> = surfaces.map(|s| NameSet::from([s.to_owned()]));
        prop_assert_eq!(
            spec.read_stored(RETENTION, &bytes, &times, None, surfaces.as_ref()).unwrap(),
            spec.read(RETENTION, &state, &times, None, surfaces.as_ref())
        );
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode(&spec(), &bytes);
        let _ = spec().read_stored(RETENTION, &bytes, &Times::default(), None, None);
    }
}

#[test]
fn old_events_fold_into_coarser_tiles_and_expire() {
    let spec = spec();
    let newest = 1_000 * DAY;
    let rows = [
        row(newest - 9 * DAY, "click", "home", Some(1)), // past retention + look-back
        row(newest - 4 * DAY + 7, "click", "home", Some(1)),
        row(newest - 4 * DAY + HOUR, "click", "home", Some(1)),
        row(newest, "save", "home", Some(1)),
    ];
    let (state, expired) = spec.apply(RETENTION, None, &rows);
    assert_eq!(expired, 1);
    assert_eq!(state.exact.len(), 1);
    // both 4-day-old events share one 6-hour tile
    assert_eq!(state.cells.values().copied().collect::<Vec<_>>(), [2]);
    // Read as of a day and a half back: the retention reaches back to the 4-day-old tile.
    let times = Times {
        as_of_ms: Some(newest - DAY - DAY / 2),
        now_ms: newest,
        ..Times::default()
    };
    let actions: NameSet = ["click".to_owned()].into();
    let answer = spec
        .read(RETENTION, &state, &times, Some(&actions), None)
        .unwrap();
    assert_eq!(answer.total, 2);
    assert_eq!(answer.by, [(Some(Value::Str("click".into())), 2)]);
    let far = Times {
        as_of_ms: Some(newest - 3 * DAY),
        ..times
    };
    let refusal = spec.read(RETENTION, &state, &far, None, None).unwrap_err();
    assert_eq!(refusal.why, "its tiles from then expired");
}

#[test]
fn sums_round_half_to_even_like_python() {
    assert_eq!(measure(1_000, &Value::Float(0.0025)), Some(2));
    assert_eq!(measure(1, &Value::Float(2.5)), Some(2));
    assert_eq!(measure(1, &Value::Float(3.5)), Some(4));
    assert_eq!(measure(100, &Value::Int(-7)), Some(-700));
    assert_eq!(measure(100, &Value::Bool(true)), None);
    assert_eq!(measure(100, &Value::Str("1".into())), None);
}

#[test]
fn a_busy_user_state_stays_small() {
    // Two weeks of an event every 10 minutes over 4 groups: fine tiles recently, coarse older.
    let spec = spec();
    let actions = ["click", "save"];
    let surfaces = ["home", "search"];
    let rows: Vec<TileRow> = (0..2_016)
        .map(|i| {
            row(
                1_000 * DAY + i * 10 * MINUTE,
                actions[i as usize % 2],
                surfaces[i as usize / 2 % 2],
                Some(1),
            )
        })
        .collect();
    let (state, expired) = spec.apply(RETENTION, None, &rows);
    let bytes = encode(&spec, &state);
    let back = decode(&spec, &bytes).unwrap();
    assert_eq!(encode(&spec, &back), bytes);
    assert_eq!(
        back.cells.values().sum::<i64>() + back.exact.values().sum::<i64>(),
        2_016 - expired as i64
    );
    assert!(bytes.len() < 2_000, "{} bytes", bytes.len());
}

fn value_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..4).prop_map(Value::Int),
        prop::sample::select(vec![0.5, 1.0, -2.25, f64::NAN]).prop_map(Value::Float),
        prop::sample::select(vec!["click", "save", "a-much-longer-text-than-32-bytes-x"])
            .prop_map(|s| Value::Str(s.into())),
    ]
}

proptest! {
    /// The executor's step (each event's key written into a buffer kept across users) gives
    /// the bytes of `TileRow`s with a key each, as it built them before.
    #[test]
    fn apply_rows_equals_rows_with_keys_of_their_own(
        events in prop::collection::vec(
            ((0i64..12 * 24 * 12), value_strategy(), value_strategy(), value_strategy()),
            1..60,
        ),
        sum in any::<bool>(),
        cut in any::<usize>(),
    ) {
        let spec = TileSpec {
            of: sum.then(|| "value".to_owned()),
            scale: if sum { 100 } else { 1 },
            ..spec()
        };
        let mut events = events;
        events.sort_by_key(|e| e.0);
        let ts: Vec<i64> = events.iter().map(|e| 1_000 * DAY + e.0 * 5 * MINUTE).collect();
        let column = |k: usize| -> Vec<Value> {
            events.iter().map(|e| [&e.1, &e.2, &e.3][k].clone()).collect()
        };
        let (action, surface, value) = (column(0), column(1), column(2));
        let mut columns: Vec<&[Value]> = vec![&action, &surface];
        if sum {
            columns.push(&value);
        }
        // Two batches, the second onto the first's state, the buffer dirty from the first.
        let cut = cut % (events.len() + 1);
        let all: Vec<usize> = (0..events.len()).collect();
        let mut key = b"left over".to_vec();
        let (mut got_state, mut want_state) = (None, None);
        for rows in [&all[..cut], &all[cut..]] {
            let user = UserRows { retention_ms: RETENTION, ts: &ts, columns: &columns, rows };
            let (got, got_expired) = apply_rows(&spec, got_state, &user, &mut key);
            let before: Vec<TileRow> = rows
                .iter()
                .map(|&i| TileRow {
                    ts: ts[i],
                    group: group_key([&action[i], &surface[i]]),
                    value: if sum { measure(spec.scale, &value[i]) } else { Some(1) },
                })
                .collect();
            let (want, want_expired) = spec.apply(RETENTION, want_state, &before);
            prop_assert_eq!(got_expired, want_expired);
            prop_assert_eq!(encode(&spec, &got), encode(&spec, &want));
            (got_state, want_state) = (Some(got), Some(want));
        }
    }
}

/// `encode` as it was: ranks, referenced groups and each kind of entries in vectors of
/// their own.
fn encode_reference(spec: &TileSpec, state: &TileState) -> Vec<u8> {
    let mut referenced = vec![false; state.groups.len()];
    for (_, g) in state.cells.keys().chain(state.exact.keys()) {
        referenced[*g as usize] = true;
    }
    let mut used: Vec<u32> = (0..state.groups.len() as u32)
        .filter(|g| referenced[*g as usize])
        .collect();
    used.sort_by(|a, b| state.groups[*a as usize].cmp(&state.groups[*b as usize]));
    let mut rank = vec![u32::MAX; state.groups.len()];
    used.iter()
        .enumerate()
        .for_each(|(r, g)| rank[*g as usize] = r as u32);
    let mut out = vec![FORMAT_VERSION];
    put_i64(&mut out, state.newest);
    put_i64(&mut out, state.newest - state.exact_from);
    put_u64(&mut out, used.len() as u64);
    for g in &used {
        out.extend_from_slice(&state.groups[*g as usize]);
    }
    let finest = spec.finest();
    let sorted = |cells: &Cells| {
        let mut entries: Vec<(i64, u32, i64)> = cells
            .iter()
            .map(|((t, g), v)| (*t, rank[*g as usize], *v))
            .collect();
        entries.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        entries
    };
    let mut previous = floor(state.newest, finest);
    let cells = sorted(&state.cells);
    put_u64(&mut out, cells.len() as u64);
    for (start, group, value) in cells {
        put_u64(&mut out, (previous.wrapping_sub(start) / finest) as u64);
        put_group_value(&mut out, group, value);
        previous = start;
    }
    let exact = sorted(&state.exact);
    put_u64(&mut out, exact.len() as u64);
    previous = state.newest;
    for (ts, group, value) in exact {
        put_u64(&mut out, previous.wrapping_sub(ts) as u64);
        put_group_value(&mut out, group, value);
        previous = ts;
    }
    out
}

proptest! {
    #[test]
    fn a_state_encodes_as_it_did(
        rows in prop::collection::vec(
            (
                (0i64..12 * 24 * 12).prop_map(|t| 1_000 * DAY + t * 5 * MINUTE + 7),
                0u32..45,
                0u32..3,
                prop::option::of(-3i64..5),
            ),
            1..200,
        ),
        later in 0i64..(12 * DAY),
    ) {
        // Up to 135 groups (past the ones ranked on the stack), some no longer referenced
        // once a later event expires their entries.
        let spec = spec();
        let mut rows: Vec<TileRow> = (rows.into_iter())
            .map(|(ts, a, s, v)| row(ts, &format!("a{a}"), &format!("s{s}"), v))
            .collect();
        rows.sort_by_key(|r| r.ts);
        let (state, _) = spec.apply(RETENTION, None, &rows);
        prop_assert_eq!(encode(&spec, &state), encode_reference(&spec, &state));
        let last = [row(state.newest + later, "a0", "s0", Some(1))];
        let (state, _) = spec.apply(RETENTION, Some(state), &last);
        prop_assert_eq!(encode(&spec, &state), encode_reference(&spec, &state));
    }
}

/// A state of format 1 (before the exact boundary was stored): read, decoded and read from
/// its bytes with the boundary two days before its newest event, which it always was.
#[test]
fn a_format_1_state_reads_with_its_boundary_two_days_back() {
    let spec = spec();
    let rows: Vec<TileRow> = (0..40)
        .map(|i| {
            row(
                1_000 * DAY + i * 3 * HOUR,
                ["click", "save"][i as usize % 2],
                "home",
                Some(1),
            )
        })
        .collect();
    let (state, _) = spec.apply(RETENTION, None, &rows);
    assert_eq!(state.exact_from, state.newest - EXACT_SPAN_MS);
    let current = encode(&spec, &state);
    // Format 1: the same bytes without the boundary's gap (two days, a 4-byte zigzag varint).
    let mut gap = Vec::new();
    put_i64(&mut gap, EXACT_SPAN_MS);
    let header = 1 + current[1..].iter().position(|b| b & 0x80 == 0).unwrap() + 1;
    assert_eq!(&current[header..header + gap.len()], gap.as_slice());
    let mut old = vec![0x01];
    old.extend_from_slice(&current[1..header]);
    old.extend_from_slice(&current[header + gap.len()..]);
    assert_eq!(
        decode(&spec, &old).unwrap(),
        decode(&spec, &current).unwrap()
    );
    let times = Times {
        now_ms: state.newest,
        window_ms: Some(3 * DAY),
        ..Times::default()
    };
    assert_eq!(
        spec.read_stored(RETENTION, &old, &times, None, None)
            .unwrap(),
        spec.read(RETENTION, &state, &times, None, None)
    );
    assert_eq!(encode(&spec, &decode(&spec, &old).unwrap()), current);
}
