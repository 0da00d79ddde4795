//! `Count` / `Sum` read straight from the stored bytes: the serving path's kernel.
//!
//! The same answer as [`TileSpec::read`] over the decoded state, without building it: the
//! groups' values stay borrowed from the bytes (their canonical keys, which order the
//! answer's groups, go into one buffer), and each entry is added to its group's sum as it
//! is read, so no entry is kept.

use super::{floor, read_header, TileAnswer, TileSpec, GROUP_KEY_BYTES};
use crate::context::{NameSet, Refusal, Times};
use crate::error::CoreError;
use crate::value::ValueRef;
use crate::varint::Reader;

/// One stored group: its canonical key (a range of the keys buffer), its first `by` value
/// (its label), whether the context's filters want it, and its sum over the view so far.
struct Group<'a> {
    key: (usize, usize),
    label: Option<ValueRef<'a>>,
    wanted: bool,
    sum: Option<i64>,
}

/// What summing the entries needs: the view and the state's tiles; and whether a tile
/// straddling the view's edges was counted.
struct View {
    /// `[start, end]`, or the refusal of a view whose tiles expired.
    span: Result<(i64, i64), Refusal>,
    /// The exact boundary: the tiles hold only events before it.
    exact_from: i64,
    /// Whether a straddling tile refuses the read (an as_of before the newest event).
    earlier: bool,
    straddled: bool,
}

impl TileSpec {
    /// `read` straight from the stored bytes. A state that does not decode is an error, as
    /// for `decode`, and so is one whose entries are not in the encoder's order (newest
    /// first, then by group), which `decode` would read with a repeated entry overwriting
    /// the earlier one.
    pub fn read_stored(
        &self,
        retention_ms: i64,
        data: &[u8],
        times: &Times,
        actions: Option<&NameSet>,
        surfaces: Option<&NameSet>,
    ) -> Result<Result<TileAnswer, Refusal>, CoreError> {
        let mut r = Reader::new(data);
        let (newest, exact_from) = read_header(&mut r)?;
        let mut keys = Vec::new();
        let mut groups = self.read_groups(&mut r, &mut keys, actions, surfaces)?;
        let view = times.view_time(newest);
        let mut state = View {
            span: self.span(retention_ms, newest, times),
            exact_from,
            earlier: view < newest,
            straddled: false,
        };
        let bucketer = self.bucketer(newest, retention_ms);
        let finest = self.finest();
        let cells = read_entries(
            &mut r,
            (floor(newest, finest), finest),
            &mut groups,
            |at, g| state.count_tile(at, bucketer.width(at), g),
        )?;
        let exact = read_entries(&mut r, (newest, 1), &mut groups, |ts, g| {
            state.count_exact(ts, g)
        })?;
        r.expect_done("tiles state")?;
        let (_, end) = match state.span {
            Ok(span) => span,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if cells + exact == 0 {
            return Ok(Ok(TileAnswer::default())); // after the span's refusal, as `read`
        }
        if state.straddled {
            return Ok(Err(Refusal {
                view_ms: view,
                earliest_ms: newest,
                why: "a tile straddling the window's edge holds events of other times",
            }));
        }
        Ok(Ok(answer(&keys, &groups, Some(newest.min(end)))))
    }

    /// The stored groups, each with its canonical key written into `keys`.
    fn read_groups<'a>(
        &self,
        r: &mut Reader<'a>,
        keys: &mut Vec<u8>,
        actions: Option<&NameSet>,
        surfaces: Option<&NameSet>,
    ) -> Result<Vec<Group<'a>>, CoreError> {
        let count = r.len(self.by.len())?;
        // Room for the usual keys up front: grown from empty by doubling, the buffer was
        // about 2,900 of a five-signal read's instructions (callgrind, bench/read_kernels.py).
        keys.reserve(count * GROUP_KEY_BYTES);
        let action_at = self.by.iter().position(|b| b == "action");
        let surface_at = self.by.iter().position(|b| b == "surface");
        let allows = |value: Option<ValueRef<'_>>, allowed: Option<&NameSet>| match (value, allowed)
        {
            (Some(value), Some(allowed)) => {
                matches!(value, ValueRef::Str(s) if allowed.contains(s))
            }
            _ => true,
        };
        let mut groups = Vec::with_capacity(count);
        for _ in 0..count {
            let start = keys.len();
            let (mut label, mut action, mut surface) = (None, None, None);
            for at in 0..self.by.len() {
                // Written again: the key is the canonical form of the values.
                let value = ValueRef::decode(r)?;
                value.encode(keys);
                label = label.or(Some(value));
                action = if action_at == Some(at) {
                    Some(value)
                } else {
                    action
                };
                surface = if surface_at == Some(at) {
                    Some(value)
                } else {
                    surface
                };
            }
            groups.push(Group {
                key: (start, keys.len()),
                label,
                wanted: allows(action, actions) && allows(surface, surfaces),
                sum: None,
            });
        }
        Ok(groups)
    }
}

impl View {
    /// An exact entry: counted when inside the view.
    fn count_exact(&mut self, ts: i64, group: &Group<'_>) -> bool {
        matches!(self.span, Ok((start, end)) if start <= ts && ts <= end && group.wanted)
    }

    /// A tile of `width` from `bucket`: counted when it overlaps the view; a tile that
    /// straddles its edges refuses a read before the newest event (noted, not returned:
    /// the rest of the bytes must still decode).
    fn count_tile(&mut self, bucket: i64, width: i64, group: &Group<'_>) -> bool {
        let Ok((start, end)) = self.span else {
            return false;
        };
        if bucket > end || !group.wanted {
            return false;
        }
        // Tiles hold only events before the exact boundary: that bounds their last time.
        let last = (bucket + width).min(self.exact_from) - 1;
        if last < start {
            return false;
        }
        if self.earlier && (bucket < start || last > end) {
            self.straddled = true;
        }
        true
    }
}

/// Reads one list of entries (a count, then per entry its gap in `unit`s from the
/// previous time, the first from `first`, and its group and value), checks their order,
/// and adds each that `counts` to its group's sum. Returns how many entries there were.
fn read_entries(
    r: &mut Reader<'_>,
    (first, unit): (i64, i64),
    groups: &mut [Group<'_>],
    mut counts: impl FnMut(i64, &Group<'_>) -> bool,
) -> Result<usize, CoreError> {
    let n = r.len(2)?;
    let mut previous = first;
    let mut last: Option<(i64, u64)> = None;
    for _ in 0..n {
        let at = previous.wrapping_sub((r.u64()? as i64).wrapping_mul(unit));
        let tagged = r.u64()?;
        let index = tagged >> 1;
        let count = groups.len();
        let group = groups
            .get_mut(usize::try_from(index).unwrap_or(usize::MAX))
            .ok_or_else(|| CoreError::Codec(format!("group {index} of {count}")))?;
        let value = if tagged & 1 == 1 { 1 } else { r.i64()? };
        if last.is_some_and(|(t, g)| !(t > at || (t == at && g < index))) {
            return Err(CoreError::Codec("tiles entries out of order".into()));
        }
        last = Some((at, index));
        previous = at;
        if counts(at, group) {
            // As the decoded state's sums add: modulo 2^64.
            let sum = group.sum.get_or_insert(0);
            *sum = sum.wrapping_add(value);
        }
    }
    Ok(n)
}

/// The total and the sum per label, groups in key order and equal labels merged, as
/// `read_entries` in the parent module answers.
fn answer(keys: &[u8], groups: &[Group<'_>], newest: Option<i64>) -> TileAnswer {
    let mut summed: Vec<(&[u8], usize, i64)> = groups
        .iter()
        .enumerate()
        .filter_map(|(g, group)| Some((&keys[group.key.0..group.key.1], g, group.sum?)))
        .collect();
    summed.sort();
    let mut by: Vec<(Option<ValueRef<'_>>, i64)> = Vec::new();
    let mut total: i64 = 0;
    for (_, g, amount) in summed {
        total = total.wrapping_add(amount);
        let label = groups[g].label;
        match by.last_mut() {
            Some((last, sum)) if same(last, &label) => *sum = sum.wrapping_add(amount),
            _ => by.push((label, amount)),
        }
    }
    let by = by
        .into_iter()
        .map(|(label, sum)| (label.map(ValueRef::to_value), sum));
    TileAnswer {
        total,
        by: by.collect(),
        newest,
    }
}

/// Whether two first values are one group label: exact identity (type and bits), as the
/// group keys are (`ValueRef::decode` gives no prefixed or digits strings).
fn same(a: &Option<ValueRef<'_>>, b: &Option<ValueRef<'_>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => match (a, b) {
            (ValueRef::Float(x), ValueRef::Float(y)) => x.to_bits() == y.to_bits(),
            (ValueRef::Float(_), _) | (_, ValueRef::Float(_)) => false,
            _ => a == b,
        },
        (None, None) => true,
        _ => false,
    }
}
