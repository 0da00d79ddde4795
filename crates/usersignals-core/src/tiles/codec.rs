//! The `Count` / `Sum` state's stored form (the parent module's documentation lays it out):
//! its encoder, and its decoder into a [`TileState`] or, for the stored read, its header.

use super::{
    floor, Cells, Entry, GroupKey, TileSpec, TileState, EXACT_SPAN_MS, FORMAT_VERSION,
    GROUP_KEY_BYTES, READABLE_VERSIONS,
};
use crate::error::CoreError;
use crate::value::ValueRef;
use crate::varint::{put_i64, put_u64, Reader};

/// `cells`' entries into `out` (cleared first) in the canonical order: newest time first,
/// then by group bytes (`rank`).
fn canonical(cells: &Cells, rank: &[u32], out: &mut Vec<(i64, u32, i64)>) {
    out.clear();
    out.extend(cells.iter().map(|((t, g), v)| (*t, rank[*g as usize], *v)));
    out.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
}

/// The group index shifted left once, its low bit set when the value is 1 (then omitted):
/// most exact entries of a `Count` are one event each, so this saves a byte per entry.
pub(super) fn put_group_value(out: &mut Vec<u8>, group: u32, value: i64) {
    let one = u64::from(value == 1);
    put_u64(out, (u64::from(group) << 1) | one);
    if value != 1 {
        put_i64(out, value);
    }
}

pub fn encode(spec: &TileSpec, state: &TileState) -> Vec<u8> {
    // A state's groups (its `by` values seen) are usually a few dozen at most: their ranks
    // and order are then worked out on the stack, and one buffer serves both kinds of
    // entries. Six allocations an encode were about a fifth of its instructions.
    let n = state.groups.len();
    let (mut rank_room, mut used_room) = ([u32::MAX; SMALL_GROUPS], [0u32; SMALL_GROUPS]);
    let (mut rank_heap, mut used_heap) = (Vec::new(), Vec::new());
    let (rank, used_all) = if n <= SMALL_GROUPS {
        (&mut rank_room[..n], &mut used_room[..n])
    } else {
        rank_heap.resize(n, u32::MAX);
        used_heap.resize(n, 0);
        (&mut rank_heap[..], &mut used_heap[..])
    };
    // Only the groups still referenced (ranked 0 for now), ordered by their bytes: one form
    // for equal states.
    for (_, g) in state.cells.keys().chain(state.exact.keys()) {
        rank[*g as usize] = 0;
    }
    let mut count = 0;
    for g in (0..n as u32).filter(|g| rank[*g as usize] == 0) {
        used_all[count] = g;
        count += 1;
    }
    let used = &mut used_all[..count];
    used.sort_by(|a, b| state.groups[*a as usize].cmp(&state.groups[*b as usize]));
    used.iter()
        .enumerate()
        .for_each(|(r, g)| rank[*g as usize] = r as u32);
    let entries = state.cells.len() + state.exact.len();
    let mut out = Vec::with_capacity(16 + 16 * used.len() + 4 * entries);
    out.push(FORMAT_VERSION);
    put_i64(&mut out, state.newest);
    put_i64(&mut out, state.newest.wrapping_sub(state.exact_from));
    put_u64(&mut out, used.len() as u64);
    for g in used.iter() {
        out.extend_from_slice(&state.groups[*g as usize]);
    }
    let mut sorted = Vec::with_capacity(state.cells.len().max(state.exact.len()));
    let finest = spec.finest();
    let mut previous = floor(state.newest, finest);
    canonical(&state.cells, rank, &mut sorted);
    put_u64(&mut out, sorted.len() as u64);
    for &(start, group, value) in &sorted {
        put_u64(&mut out, (previous.wrapping_sub(start) / finest) as u64);
        put_group_value(&mut out, group, value);
        previous = start;
    }
    canonical(&state.exact, rank, &mut sorted);
    put_u64(&mut out, sorted.len() as u64);
    previous = state.newest;
    for &(ts, group, value) in &sorted {
        put_u64(&mut out, previous.wrapping_sub(ts) as u64);
        put_group_value(&mut out, group, value);
        previous = ts;
    }
    out
}

/// The groups [`encode`] ranks on the stack.
const SMALL_GROUPS: usize = 64;

pub fn decode(spec: &TileSpec, data: &[u8]) -> Result<TileState, CoreError> {
    let parsed = parse(spec, data)?;
    // A repeated entry overwrites the earlier one (the encoder never writes one).
    let cells = |entries: Vec<Entry>| -> Cells {
        entries
            .into_iter()
            .map(|(at, group, value)| ((at, group), value))
            .collect()
    };
    Ok(TileState {
        newest: parsed.newest,
        groups: parsed.groups,
        cells: cells(parsed.cells),
        exact: cells(parsed.exact),
        exact_from: parsed.exact_from,
    })
}

/// A stored state's version, newest time and exact boundary (format 1 has none: two days
/// before the newest event, which it always was).
pub(super) fn read_header(r: &mut Reader<'_>) -> Result<(i64, i64), CoreError> {
    let version = r.readable_version("tiles", &READABLE_VERSIONS)?;
    let newest = r.i64()?;
    let gap = if version == 1 {
        EXACT_SPAN_MS
    } else {
        r.i64()?
    };
    Ok((newest, newest.wrapping_sub(gap)))
}

/// A stored state as laid out: its groups, and its entries in the stored order (newest
/// first). `decode` collects them into maps; `read_stored` reads them as they are.
struct Parsed {
    newest: i64,
    exact_from: i64,
    groups: Vec<GroupKey>,
    cells: Vec<Entry>,
    exact: Vec<Entry>,
}

fn parse(spec: &TileSpec, data: &[u8]) -> Result<Parsed, CoreError> {
    let mut r = Reader::new(data);
    let (newest, exact_from) = read_header(&mut r)?;
    let count = r.len(spec.by.len())?;
    let mut groups = Vec::with_capacity(count);
    for _ in 0..count {
        // Decoded and written again: the key is the canonical form of the values. Borrowed
        // (a `String` per text value was allocated and freed) into a key given room up
        // front (grown from empty it was reallocated per value): `tiles::decode` 34.1 →
        // 23.8 M instructions (callgrind, bench/engine.py --events 50000 --batch 10000).
        let mut key = Vec::with_capacity(GROUP_KEY_BYTES);
        for _ in 0..spec.by.len() {
            ValueRef::decode(&mut r)?.encode(&mut key);
        }
        groups.push(key);
    }
    let finest = spec.finest();
    let mut read_entries = |first: i64, unit: i64| -> Result<Vec<Entry>, CoreError> {
        let n = r.len(2)?;
        let mut entries = Vec::with_capacity(n);
        let mut previous = first;
        for _ in 0..n {
            let at = previous.wrapping_sub((r.u64()? as i64).wrapping_mul(unit));
            let tagged = r.u64()?;
            let group = tagged >> 1;
            if group >= count as u64 {
                return Err(CoreError::Codec(format!("group {group} of {count}")));
            }
            let value = if tagged & 1 == 1 { 1 } else { r.i64()? };
            entries.push((at, group as u32, value));
            previous = at;
        }
        Ok(entries)
    };
    let cells = read_entries(floor(newest, finest), finest)?;
    let exact = read_entries(newest, 1)?;
    r.expect_done("tiles state")?;
    Ok(Parsed {
        newest,
        exact_from,
        groups,
        cells,
        exact,
    })
}
