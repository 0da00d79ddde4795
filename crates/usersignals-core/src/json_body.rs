//! A user's answers written straight to the JSON body the HTTP API serves.
//!
//! The serving path's one call per request: each requested signal's stored state is read
//! with the request's context by the same kernels the per-signal reads use, and its answer
//! written as JSON text — no Python object per entry, no second encoding. Python supplies
//! what depends only on the signal and the request's shape (each answer's opening, `"name":
//! {"name":…,"version":…,"kind":…,"value":`, and its closing, the ignored parameters and
//! `}`); this module writes the value and the freshness between them.
//!
//! Python's object path (`SignalResult`, encoded by msgspec) stays the reference: the two
//! give equal JSON values, which the tests check. What this path cannot write exactly as
//! the reference would — a state in the old Python codec (migrated on the object path), a
//! state that does not decode (an error there), a `Count` label from a float (Python's
//! `str()` of a float) or a time outside the years 1–9999 — comes back [`Body::Unserved`],
//! and Python answers that request on the object path.

use std::borrow::Cow;
use std::io::Write as _;

use crate::context::{ReadContext, Refusal};
use crate::decoded::Decoded;
use crate::last_n::view::LastNView;
use crate::mean_vector::MeanAnswer;
use crate::plan::{Aggregation, LastNSpec, Plan};
use crate::tiles::TileAnswer;
use crate::value::{decimal, Value, ValueRef};
use crate::{decayed, distinct, last_n, mean_vector, seen, tiles};

/// One requested signal: its plan, the answer's opening and closing text, and its stored
/// state as the user record embeds it (a msgpack bin), `None` when the user has none.
pub struct Slot<'a> {
    pub plan: usize,
    pub head: &'a [u8],
    pub tail: &'a [u8],
    pub state: Option<&'a [u8]>,
}

#[derive(Debug, PartialEq)]
pub enum Body {
    /// `{"user_id":…,"signals":{…}}`.
    Written(Vec<u8>),
    /// The first slot (in request order) whose state cannot answer the context exactly.
    Refused { slot: usize, refusal: Refusal },
    /// Answer this request on the object path (see the module's note).
    Unserved,
}

/// Why an answer is not written here.
#[derive(Debug, PartialEq)]
pub(crate) struct Unserved;

pub(crate) type Answer = Result<Result<Option<i64>, Refusal>, Unserved>;

/// The body of one user's answers; `user` is the user id already as JSON text.
pub fn user_body(plans: &[Plan], user: &[u8], slots: &[Slot<'_>], context: &ReadContext) -> Body {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(b"{\"user_id\":");
    out.extend_from_slice(user);
    out.extend_from_slice(b",\"signals\":{");
    for (i, slot) in slots.iter().enumerate() {
        let Some(plan) = plans.get(slot.plan) else {
            return Body::Unserved;
        };
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(slot.head);
        let newest = match write_answer(plan, slot.state, context, &mut out) {
            Ok(Ok(newest)) => newest,
            Ok(Err(refusal)) => return Body::Refused { slot: i, refusal },
            Err(Unserved) => return Body::Unserved,
        };
        if write_freshness(newest, context.times.now_ms, &mut out).is_err() {
            return Body::Unserved;
        }
        out.extend_from_slice(slot.tail);
    }
    out.extend_from_slice(b"}}");
    Body::Written(out)
}

/// One column of a training set: a plan read with a context whose `as_of` and "now" are each
/// label's time (`usersignals.offline.training`).
pub struct LabelColumn {
    pub plan: usize,
    pub context: ReadContext,
}

/// A training set's values as JSON text, column by column: label `i`'s value in column `c`
/// is `data[c][offsets[c][i]..offsets[c][i + 1]]` (Arrow's layout of a string column, which
/// the glue wraps without a copy).
#[derive(Debug, Clone)]
pub struct JsonColumns {
    pub offsets: Vec<Vec<i64>>,
    pub data: Vec<Vec<u8>>,
    /// How many labels are coming, for sizing the columns ahead ([`Self::make_room`]).
    expected: usize,
}

impl JsonColumns {
    pub fn new(columns: usize) -> Self {
        Self::for_labels(columns, 0)
    }

    /// Columns for `labels` labels (an estimate: more or fewer still fit).
    pub fn for_labels(columns: usize, labels: usize) -> Self {
        let offsets = (0..columns).map(|_| {
            let mut offsets = Vec::with_capacity(labels + 1);
            offsets.push(0);
            offsets
        });
        JsonColumns {
            offsets: offsets.collect(),
            data: vec![Vec::new(); columns],
            expected: labels,
        }
    }

    /// Room in each column for the labels still to come, at the average size so far (and
    /// at least double, as growing would): a column grown by doubling copied its texts
    /// again at every step, hundreds of MB for a `LastN`'s, an eighth of a training set's
    /// label reads (py-spy). An estimate too large costs address space, not memory: the
    /// pages are touched only as the texts are written; one the system refuses is dropped,
    /// and the column grows as it would have.
    fn make_room(&mut self) {
        let done = self.len();
        let Some(left) = self.expected.checked_sub(done).filter(|&left| left > 0) else {
            return;
        };
        for data in &mut self.data {
            let average = data.len() / done.max(1) + 1;
            if data.capacity() - data.len() < 2 * average {
                let ahead = (average * left).saturating_add(average * left / 4);
                if data.try_reserve(ahead.max(data.capacity())).is_err() {
                    data.reserve(average);
                }
            }
        }
    }

    /// How many labels the columns hold.
    pub fn len(&self) -> usize {
        self.offsets.first().map_or(0, |o| o.len() - 1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Label `label`'s value in column `column`.
    pub fn value(&self, column: usize, label: usize) -> &[u8] {
        let offsets = &self.offsets[column];
        &self.data[column][offsets[label] as usize..offsets[label + 1] as usize]
    }
}

/// The same labels' values; the sizing estimate plays no part.
impl PartialEq for JsonColumns {
    fn eq(&self, other: &Self) -> bool {
        self.offsets == other.offsets && self.data == other.data
    }
}

/// Append the values of `columns` over a user's states (decoded, by plan: `None` for no
/// state) at label time `ts` to `out`, each as
/// the JSON text of the answer's value (no freshness: a training set keeps the value alone).
/// `false`, and `out` as it was, when one of them is for the object path: a refusal, or what
/// [`user_body`] leaves unserved.
pub fn label_values(
    plans: &[Plan],
    states: &[Option<Decoded>],
    columns: &mut [LabelColumn],
    ts: i64,
    out: &mut JsonColumns,
) -> bool {
    out.make_room();
    for (c, column) in columns.iter_mut().enumerate() {
        let answered = plans.get(column.plan).is_some_and(|plan| {
            column.context.times.as_of_ms = Some(ts);
            column.context.times.now_ms = ts;
            let state = states.get(column.plan).and_then(Option::as_ref);
            matches!(
                write_decoded_answer(plan, state, &column.context, &mut out.data[c]),
                Ok(Ok(_))
            )
        });
        if !answered {
            for (written, offsets) in out.data.iter_mut().zip(&out.offsets).take(c + 1) {
                written.truncate(offsets.last().copied().unwrap_or(0) as usize);
            }
            return false;
        }
    }
    for (offsets, written) in out.offsets.iter_mut().zip(&out.data) {
        offsets.push(written.len() as i64);
    }
    true
}

/// `,"newest_event_ms":…,"newest_event_time":…,"age_ms":…` as `result_of` computes them.
fn write_freshness(newest: Option<i64>, now_ms: i64, out: &mut Vec<u8>) -> Result<(), Unserved> {
    let Some(newest) = newest else {
        out.extend_from_slice(
            b",\"newest_event_ms\":null,\"newest_event_time\":null,\"age_ms\":null",
        );
        return Ok(());
    };
    out.extend_from_slice(b",\"newest_event_ms\":");
    write_int(newest, out);
    out.extend_from_slice(b",\"newest_event_time\":\"");
    write_iso_ms(newest, out).ok_or(Unserved)?;
    out.extend_from_slice(b"\",\"age_ms\":");
    write_int(now_ms.saturating_sub(newest).max(0), out);
    Ok(())
}

/// Python's `datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")`,
/// with its float arithmetic: the seconds as a float, the fraction rounded half-even to
/// microseconds (CPython's `_PyTime_DoubleToDenominator`), then truncated to milliseconds.
/// `None` outside the years 1–9999, which Python refuses.
pub fn iso_ms(ms: i64) -> Option<String> {
    let mut out = Vec::with_capacity(29);
    write_iso_ms(ms, &mut out)?;
    Some(String::from_utf8(out).expect("ASCII"))
}

/// The UTC calendar fields of `ms` as [`iso_ms`] renders them: `[year, month, day, hour,
/// minute, second, millisecond]`, with Python's float arithmetic; `None` outside the years
/// 1–9999.
pub(crate) fn iso_fields(ms: i64) -> Option<[i64; 7]> {
    let t = ms as f64 / 1000.0;
    let mut seconds = t.trunc();
    let mut micros = ((t - seconds) * 1e6).round_ties_even();
    if micros >= 1e6 {
        micros -= 1e6;
        seconds += 1.0;
    } else if micros < 0.0 {
        micros += 1e6;
        seconds -= 1.0;
    }
    let seconds = seconds as i64;
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    if !(1..=9999).contains(&year) {
        return None;
    }
    let (hour, minute, second) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    Some([year, month, day, hour, minute, second, micros as i64 / 1000])
}

/// [`iso_ms`] written into `out` (nothing written when `None`).
fn write_iso_ms(ms: i64, out: &mut Vec<u8>) -> Option<()> {
    let [year, month, day, hour, minute, second, millis] = iso_fields(ms)?;
    // `{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}+00:00`,
    // each field's digits put in place in a template (every field is within 0 and 9999
    // here): a time per answer, written field by field through `decimal` and its padding,
    // was about 2 % of the five reads' instructions (callgrind, bench/read_kernels.py).
    let mut text = *b"0000-00-00T00:00:00.000+00:00";
    let fields = [
        (year, 0, 4),
        (month, 5, 2),
        (day, 8, 2),
        (hour, 11, 2),
        (minute, 14, 2),
        (second, 17, 2),
        (millis, 20, 3),
    ];
    for (value, at, width) in fields {
        let mut rest = value.unsigned_abs();
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
    }
    out.extend_from_slice(&text);
    Some(())
}

/// `value` zero-padded to `width` digits (as `{value:0width$}`). `decimal` writes the digits
/// at the end of its buffer, so a buffer of zeros holds the padding already: one copy, where
/// the zeros pushed one by one were about a tenth of a DecayedScores key's writing (digits
/// ids, `c001`) and of a time's (callgrind, bench/read_kernels.py).
pub(crate) fn write_padded(value: u64, width: usize, out: &mut Vec<u8>) {
    let mut buf = [b'0'; 20];
    let len = decimal(value, &mut buf).len();
    match buf.len().checked_sub(width.max(len)) {
        Some(start) => out.extend_from_slice(&buf[start..]),
        None => {
            // Wider than any u64: the zeros beyond the buffer first.
            out.extend(std::iter::repeat_n(b'0', width - buf.len()));
            out.extend_from_slice(&buf);
        }
    }
}

/// `write_padded` as it was written before (the zeros pushed one by one, then the digits):
/// the reference its test compares with.
#[cfg(test)]
pub(crate) fn write_padded_by_pushes(value: u64, width: usize, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let digits = decimal(value, &mut digits);
    out.extend(std::iter::repeat_n(
        b'0',
        width.saturating_sub(digits.len()),
    ));
    out.extend_from_slice(digits);
}

/// An integer as `Display` writes it, without the formatting machinery.
fn write_int(value: i64, out: &mut Vec<u8>) {
    if value < 0 {
        out.push(b'-');
    }
    let mut digits = [0u8; 20];
    out.extend_from_slice(decimal(value.unsigned_abs(), &mut digits));
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The state inside the record's msgpack bin (8, 16 or 32), or `None` for anything else
/// (a state of the old Python codec is a msgpack array) or trailing bytes.
fn unbin(stored: &[u8]) -> Option<&[u8]> {
    let (&header, rest) = stored.split_first()?;
    let width = match header {
        0xC4 => 1,
        0xC5 => 2,
        0xC6 => 4,
        _ => return None,
    };
    let (length, data) = rest.split_at_checked(width)?;
    let length = length.iter().fold(0usize, |n, b| n << 8 | usize::from(*b));
    (data.len() == length).then_some(data)
}

/// Whether `version` is one this plan's aggregation reads (`_READABLE` in Python).
fn readable(aggregate: &Aggregation, version: u8) -> bool {
    match aggregate {
        Aggregation::LastN(_) => last_n::READABLE_VERSIONS.contains(&version),
        Aggregation::Distinct(..) => version == distinct::FORMAT_VERSION,
        Aggregation::Tiles(_) => tiles::READABLE_VERSIONS.contains(&version),
        Aggregation::Seen(_) => version == seen::FORMAT_VERSION,
        Aggregation::DecayedScores(_) => version == decayed::FORMAT_VERSION,
        Aggregation::MeanVector(_) => version == mean_vector::FORMAT_VERSION,
    }
}

/// One signal's value (as `NativeSignals.read` answers it), and the newest time it includes.
pub(crate) fn write_answer(
    plan: &Plan,
    stored: Option<&[u8]>,
    context: &ReadContext,
    out: &mut Vec<u8>,
) -> Answer {
    let Some(stored) = stored else {
        out.extend_from_slice(empty_answer(&plan.aggregate));
        return Ok(Ok(None));
    };
    let data = unbin(stored).ok_or(Unserved)?;
    if !data.first().is_some_and(|v| readable(&plan.aggregate, *v)) {
        return Err(Unserved);
    }
    let (times, retention) = (&context.times, plan.retention_ms);
    match &plan.aggregate {
        Aggregation::LastN(spec) => {
            let view = LastNView::parse(data, spec.keep.len()).map_err(|_| Unserved)?;
            Ok(write_last_n(&view, spec, retention, context, out))
        }
        Aggregation::Distinct(spec, _) => {
            let state = distinct::decode(data, spec).map_err(|_| Unserved)?;
            Ok(write_estimate(spec.read(retention, &state, times), out))
        }
        Aggregation::Tiles(spec) => {
            let (actions, surfaces) = (context.actions.as_ref(), context.surfaces.as_ref());
            let read = spec.read_stored(retention, data, times, actions, surfaces);
            write_tile_answer(spec.scale, read.map_err(|_| Unserved)?, out)
        }
        Aggregation::Seen(spec) => {
            let state = seen::decode(data).map_err(|_| Unserved)?;
            let allowed = context.allowed_by(spec.by.as_deref());
            Ok(write_seen_answer(
                spec.read(retention, &state, times, allowed),
                out,
            ))
        }
        Aggregation::DecayedScores(spec) => {
            let read = spec.read_stored(retention, data, times, &context.exclude, context.limit);
            Ok(read.map_err(|_| Unserved)?.map(|(top, newest)| {
                write_profile(top.iter().copied(), out);
                newest
            }))
        }
        Aggregation::MeanVector(spec) => {
            let read = spec.read_stored(retention, data, times);
            Ok(write_mean(read.map_err(|_| Unserved)?, out))
        }
    }
}

/// [`write_answer`] over a state kept decoded (the training set's loop): the same kernels
/// on the decoded form, the same text (a proptest holds the two equal).
pub(crate) fn write_decoded_answer(
    plan: &Plan,
    state: Option<&Decoded>,
    context: &ReadContext,
    out: &mut Vec<u8>,
) -> Answer {
    let Some(state) = state else {
        out.extend_from_slice(empty_answer(&plan.aggregate));
        return Ok(Ok(None));
    };
    let (times, retention) = (&context.times, plan.retention_ms);
    match (&plan.aggregate, state) {
        (Aggregation::LastN(spec), Decoded::LastN(entries)) => {
            let view = LastNView::of_entries(entries, spec.keep.len());
            Ok(write_last_n(&view, spec, retention, context, out))
        }
        (Aggregation::Distinct(spec, _), Decoded::Distinct(state)) => {
            Ok(write_estimate(spec.read(retention, state, times), out))
        }
        (Aggregation::Tiles(spec), Decoded::Tiles(state)) => {
            let (actions, surfaces) = (context.actions.as_ref(), context.surfaces.as_ref());
            let read = spec.read(retention, state, times, actions, surfaces);
            write_tile_answer(spec.scale, read, out)
        }
        (Aggregation::Seen(spec), Decoded::Seen(state)) => {
            let allowed = context.allowed_by(spec.by.as_deref());
            Ok(write_seen_answer(
                spec.read(retention, state, times, allowed),
                out,
            ))
        }
        (Aggregation::DecayedScores(spec), Decoded::Scores(state)) => {
            let read = spec.read(retention, state, times, &context.exclude, context.limit);
            Ok(read.map(|(top, newest)| {
                write_profile(top.iter().map(|(key, score)| (key.as_ref(), *score)), out);
                newest
            }))
        }
        (Aggregation::MeanVector(spec), Decoded::Vector(state)) => {
            Ok(write_mean(spec.read(retention, state, times), out))
        }
        _ => Err(Unserved),
    }
}

type Read<T> = Result<(T, Option<i64>), Refusal>;

/// A LastN's rows the context selects, as [`write_rows`] writes them.
fn write_last_n(
    view: &LastNView<'_>,
    spec: &LastNSpec,
    retention_ms: i64,
    context: &ReadContext,
    out: &mut Vec<u8>,
) -> Result<Option<i64>, Refusal> {
    view.select(spec, retention_ms, context)
        .map(|(rows, newest)| {
            write_rows(view, &spec.keep, &rows, out);
            newest
        })
}

/// A Distinct's `{"estimate": …}`.
fn write_estimate(read: Read<i64>, out: &mut Vec<u8>) -> Result<Option<i64>, Refusal> {
    read.map(|(estimate, newest)| {
        write!(out, "{{\"estimate\":{estimate}}}").expect("writing to a Vec cannot fail");
        newest
    })
}

fn write_tile_answer(scale: i64, read: Result<TileAnswer, Refusal>, out: &mut Vec<u8>) -> Answer {
    match read {
        Ok(answer) => write_tiles(scale, &answer, out).map(|()| Ok(answer.newest)),
        Err(refusal) => Ok(Err(refusal)),
    }
}

fn write_seen_answer(
    read: Read<Vec<(String, i64)>>,
    out: &mut Vec<u8>,
) -> Result<Option<i64>, Refusal> {
    read.map(|(values, newest)| {
        write_seen(&values, out);
        newest
    })
}

/// A MeanVector's `{"vector": …, "weight": …}`.
fn write_mean(read: Read<MeanAnswer>, out: &mut Vec<u8>) -> Result<Option<i64>, Refusal> {
    read.map(|(answer, newest)| {
        out.extend_from_slice(b"{\"vector\":");
        match &answer.vector {
            None => out.extend_from_slice(b"null"),
            Some(vector) => write_floats(vector, out),
        }
        out.extend_from_slice(b",\"weight\":");
        write_float(answer.weight, out);
        out.push(b'}');
        newest
    })
}

/// What a native signal answers for a user without state (`_EMPTY` in Python).
fn empty_answer(aggregate: &Aggregation) -> &'static [u8] {
    match aggregate {
        Aggregation::LastN(_) | Aggregation::DecayedScores(_) => b"[]",
        Aggregation::Distinct(..) => b"{\"estimate\":0}",
        Aggregation::Tiles(_) => b"{\"total\":0,\"by\":{}}",
        Aggregation::Seen(_) => b"{}",
        Aggregation::MeanVector(_) => b"{\"vector\":null,\"weight\":0.0}",
    }
}

/// LastN entries as `{"ts": …, <kept field>: …}`, newest first.
fn write_rows(view: &LastNView<'_>, keep: &[String], rows: &[usize], out: &mut Vec<u8>) {
    // Each kept field's `,"key":` written once per call, copied once per row: a training
    // set writes every entry again for each of its user's labels.
    let keys: Vec<Vec<u8>> = keep
        .iter()
        .map(|k| {
            let mut key = vec![b','];
            write_text(k, &mut key);
            key.push(b':');
            key
        })
        .collect();
    let mut text = String::new();
    out.push(b'[');
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"ts\":");
        write_int(view.ts[*row], out);
        for (column, key) in keys.iter().enumerate() {
            out.extend_from_slice(key);
            write_ref(view.get(column, *row), &mut text, out);
        }
        out.push(b'}');
    }
    out.push(b']');
}

/// `{"total", "by"}` as `tiles_value` in the binding builds it: labels are the first `by`
/// value's Python `str()`, summed and sorted; amounts are divided by the scale for `Sum`.
fn write_tiles(scale: i64, answer: &TileAnswer, out: &mut Vec<u8>) -> Result<(), Unserved> {
    // Sorted by label, equal labels summed (as a map by label would): a few entries.
    let mut labelled: Vec<(Cow<'_, str>, i64)> = Vec::with_capacity(answer.by.len());
    for (first, amount) in &answer.by {
        let label = match first {
            None => Cow::Borrowed("all"),
            Some(value) => python_str(value).ok_or(Unserved)?,
        };
        labelled.push((label, *amount));
    }
    labelled.sort_by(|a, b| a.0.cmp(&b.0));
    labelled.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            // As `+=` on a map's entry (wrapping in a release build).
            kept.1 = kept.1.wrapping_add(later.1);
        }
        same
    });
    let amount = |value: i64, out: &mut Vec<u8>| {
        if scale == 1 || answer.newest.is_none() {
            write_int(value, out);
        } else {
            // Python's int / int: correctly rounded, as this division is for |x| < 2^53.
            write_float(value as f64 / scale as f64, out);
        }
    };
    out.extend_from_slice(b"{\"total\":");
    amount(answer.total, out);
    out.extend_from_slice(b",\"by\":{");
    for (i, (label, value)) in labelled.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_text(label, out);
        out.push(b':');
        amount(*value, out);
    }
    out.extend_from_slice(b"}}");
    Ok(())
}

/// Python's `str()` of a label value, where it is exact here (not for floats).
fn python_str(value: &Value) -> Option<Cow<'_, str>> {
    Some(match value {
        Value::Null => Cow::Borrowed("None"),
        Value::Bool(true) => Cow::Borrowed("True"),
        Value::Bool(false) => Cow::Borrowed("False"),
        Value::Int(i) => Cow::Owned(i.to_string()),
        Value::Float(_) | Value::Json(_) => return None,
        Value::Str(s) => Cow::Borrowed(s),
    })
}

fn write_seen(values: &[(String, i64)], out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (group, ts)) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_text(group, out);
        write!(out, ":{ts}").expect("writing to a Vec cannot fail");
    }
    out.push(b'}');
}

fn write_profile<'v>(top: impl Iterator<Item = (ValueRef<'v>, f64)>, out: &mut Vec<u8>) {
    let mut text = String::new();
    out.push(b'[');
    for (i, (key, score)) in top.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"key\":");
        write_ref(key, &mut text, out);
        out.extend_from_slice(b",\"score\":");
        write_float(score, out);
        out.push(b'}');
    }
    out.push(b']');
}

fn write_ref(value: ValueRef<'_>, text: &mut String, out: &mut Vec<u8>) {
    match value {
        ValueRef::Null => out.extend_from_slice(b"null"),
        ValueRef::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        ValueRef::Int(i) => write_int(i, out),
        ValueRef::Float(f) => write_float(f, out),
        ValueRef::Str(s) => write_text(s, out), // most texts: no call to `text` first
        ValueRef::Json(s) => out.extend_from_slice(s.as_bytes()), // compact JSON already
        // An id of a digits column: its prefix, then the number, which needs no escape.
        ValueRef::Digits(prefix, width, number) if plain(prefix) => {
            out.push(b'"');
            out.extend_from_slice(prefix.as_bytes());
            write_padded(number, width, out);
            out.push(b'"');
        }
        other => write_text(other.text(text).unwrap_or_default(), out),
    }
}

/// A float as the shortest text that reads back the same number (as msgspec writes it, but
/// for the exponent's sign: `1e+16` here, `1e16` there), `null` for NaN and the infinities.
fn write_float(f: f64, out: &mut Vec<u8>) {
    serde_json::to_writer(out, &f).expect("writing to a Vec cannot fail");
}

fn write_floats(values: &[f64], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_float(*v, out);
    }
    out.push(b']');
}

/// A string as JSON text (quoted and escaped, as serde_json writes it). Most strings
/// need no escape, and are copied between quotes.
fn write_text(s: &str, out: &mut Vec<u8>) {
    if plain(s) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, s).expect("writing to a Vec cannot fail");
    }
}

/// Whether serde_json writes `s` as it is: no control character, quote or backslash (it
/// leaves the rest of UTF-8 unescaped).
fn plain(s: &str) -> bool {
    // Eight bytes at a time (a LastN's texts are mostly ids and short names, read again for
    // every answer they are in), the rest one by one.
    let mut words = s.as_bytes().chunks_exact(8);
    for word in &mut words {
        if needs_escape(u64::from_le_bytes(word.try_into().expect("chunks of 8"))) {
            return false;
        }
    }
    (words.remainder().iter()).all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// Whether a byte of `word` is a control character, a quote or a backslash: the exact
/// tests "has a byte less than n" (n <= 128) and "has a zero byte" of Bit Twiddling Hacks
/// (bytes of UTF-8 from 0x80 up are never flagged by the first).
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH != 0;
    let has_control = word.wrapping_sub(ONES * 0x20) & !word & HIGH != 0;
    has_control
        || has_zero(word ^ (ONES * u64::from(b'"')))
        || has_zero(word ^ (ONES * u64::from(b'\\')))
}

#[cfg(test)]
#[path = "json_body_tests.rs"]
mod tests;
