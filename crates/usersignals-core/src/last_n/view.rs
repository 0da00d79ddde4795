//! A borrowed view of a stored LastN state, for reads: no allocation per entry.
//!
//! Reads touch a few fields of the newest entries; decoding every entry into owned values
//! (as `apply` must) costs an allocation per string. The view parses the same bytes into
//! slices of the input: dictionary columns keep their codes, prefixed strings keep
//! `(prefix, suffix)`, and a value becomes text only when it is compared or returned. A
//! state kept decoded (the training set's loop) reads through the same view, borrowing its
//! entries ([`LastNView::of_entries`]).

use std::collections::HashSet;

use super::{read_code, Entry, DICTIONARY, DIGITS, PACKED, PLAIN, PREFIXED};
use crate::context::{NameSet, ReadContext, Refusal, AS_OF_LOOKBACK_MS};
use crate::error::CoreError;
use crate::plan::LastNSpec;
use crate::value::{PyKey, ValueRef};
use crate::varint::Reader;

enum Column<'a> {
    Dictionary {
        vocab: Vec<ValueRef<'a>>,
        codes: Vec<u32>,
    },
    Plain(Vec<ValueRef<'a>>),
    Prefixed {
        prefix: &'a str,
        suffixes: Vec<&'a str>,
    },
    Digits {
        prefix: &'a str,
        width: usize,
        numbers: Vec<u64>,
    },
    /// Field `index` of decoded entries (a state kept decoded, not stored).
    Entries {
        entries: &'a [Entry],
        index: usize,
    },
}

impl<'a> Column<'a> {
    fn get(&self, row: usize) -> ValueRef<'a> {
        match self {
            Column::Dictionary { vocab, codes } => vocab[codes[row] as usize],
            Column::Plain(values) => values[row],
            Column::Prefixed { prefix, suffixes } => ValueRef::Prefixed(prefix, suffixes[row]),
            Column::Digits {
                prefix,
                width,
                numbers,
            } => ValueRef::Digits(prefix, *width, numbers[row]),
            Column::Entries { entries, index } => entries[row].values[*index].as_ref(),
        }
    }
}

pub struct LastNView<'a> {
    pub ts: Vec<i64>,
    columns: Vec<Column<'a>>,
}

fn utf8(bytes: &[u8]) -> Result<&str, CoreError> {
    std::str::from_utf8(bytes).map_err(|e| CoreError::Codec(format!("string is not UTF-8: {e}")))
}

/// `count` values of one column as `encode_values` wrote them, borrowed from the bytes (no
/// allocation per value): a DecayedScores read's keys. A column the view parses also
/// decodes (`decode_values`), with the same values.
pub(crate) fn column_refs<'a>(
    r: &mut Reader<'a>,
    count: usize,
) -> Result<Vec<ValueRef<'a>>, CoreError> {
    let column = LastNView::column(r, count)?;
    Ok((0..count).map(|row| column.get(row)).collect())
}

/// `count` results of `next`, or its first error: collected into a vector sized once
/// (`count` was checked against the bytes left), where collecting an iterator of results
/// grows it by doubling.
fn collect_n<T>(
    count: usize,
    mut next: impl FnMut() -> Result<T, CoreError>,
) -> Result<Vec<T>, CoreError> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(next()?);
    }
    Ok(out)
}

impl<'a> LastNView<'a> {
    /// Parse `data` (the same checks as `decode`, so a state that decodes also views).
    pub fn parse(data: &'a [u8], columns: usize) -> Result<Self, CoreError> {
        let mut r = Reader::new(data);
        let (count, ts) = super::decode_header(&mut r, columns)?;
        r.bytes(4 * count)?; // ties: reads do not need them
        let columns = (0..columns)
            .map(|_| Self::column(&mut r, count))
            .collect::<Result<Vec<_>, _>>()?;
        r.expect_done("LastN state")?;
        Ok(LastNView { ts, columns })
    }

    /// The view of decoded entries (newest first, as `decode` gives them): what a state kept
    /// decoded reads through, with the rows and values its bytes would give.
    pub fn of_entries(entries: &'a [Entry], columns: usize) -> Self {
        LastNView {
            ts: entries.iter().map(|entry| entry.ts).collect(),
            columns: (0..columns)
                .map(|index| Column::Entries { entries, index })
                .collect(),
        }
    }

    fn column(r: &mut Reader<'a>, count: usize) -> Result<Column<'a>, CoreError> {
        Ok(match r.u8()? {
            DICTIONARY => {
                let size = r.len(1)?;
                let vocab = collect_n(size, || ValueRef::decode(r))?;
                let codes = collect_n(count, || read_code(r, size))?;
                Column::Dictionary { vocab, codes }
            }
            PLAIN => Column::Plain(collect_n(count, || ValueRef::decode(r))?),
            PREFIXED => {
                let shared = r.len(1)?;
                let prefix = utf8(r.bytes(shared)?)?;
                let suffixes = collect_n(count, || {
                    let n = r.len(1)?;
                    utf8(r.bytes(n)?)
                })?;
                Column::Prefixed { prefix, suffixes }
            }
            DIGITS => {
                let (prefix, width) = super::digits_header(r)?;
                let limit = 10u64.pow(width as u32);
                let numbers = collect_n(count, || {
                    let number = r.u64_in_loop()?;
                    if number >= limit {
                        return Err(CoreError::Codec(format!(
                            "{number} does not fit {width} digits"
                        )));
                    }
                    Ok(number)
                })?;
                Column::Digits {
                    prefix,
                    width,
                    numbers,
                }
            }
            PACKED => {
                let size = r.len(1)?;
                let vocab = collect_n(size, || ValueRef::decode(r))?;
                let codes = super::unpack_codes(r, count, size)?;
                Column::Dictionary { vocab, codes }
            }
            mode => return Err(CoreError::Codec(format!("unknown column mode {mode}"))),
        })
    }

    pub fn get(&self, column: usize, row: usize) -> ValueRef<'a> {
        self.columns[column].get(row)
    }

    /// The rows a context selects, newest first, and the newest time the view includes: the
    /// same rules as `LastNRuntime.read` in the Python reference, refusals included.
    ///
    /// The view's time `V` is the `as_of` (or the wall clock, or the newest event if later);
    /// nothing older than `V - retention` counts. When the state holds events after `V`,
    /// older events they pushed out may belong to the answer: see [`Self::check_nothing_dropped`].
    pub fn select(
        &self,
        spec: &LastNSpec,
        retention_ms: i64,
        context: &ReadContext,
    ) -> Result<(Vec<usize>, Option<i64>), Refusal> {
        let fields = super::ReadFields::of(spec);
        let newest_ts = self.ts.first().copied().unwrap_or(0);
        let times = &context.times;
        let view = times.view_time(newest_ts);
        let end = times.end(newest_ts);
        let mut start = view.saturating_sub(retention_ms);
        if let Some(window_start) = times.start(newest_ts) {
            start = start.max(window_start);
        }
        // `limit or n`, as the reference reads it: a zero limit means none.
        let limit = context.limit.filter(|l| *l > 0).unwrap_or(spec.n);
        let mut seen: HashSet<PyKey<'a>> = HashSet::new();
        let mut buf = String::new();
        let mut in_set = |set: &NameSet, value: ValueRef<'a>| {
            value.text(&mut buf).is_some_and(|text| set.contains(text))
        };
        let mut out = Vec::new();
        let mut newest = None;
        // Entries after the view's end (its as_of, or an until): they may have pushed older
        // ones out.
        let later = self.ts.iter().take_while(|ts| **ts > end).count();
        let mut complete = false;
        for (row, ts) in self.ts.iter().enumerate() {
            if *ts > end {
                continue;
            }
            newest.get_or_insert(*ts);
            if *ts < start {
                complete = true;
                break;
            }
            if let (Some(actions), Some(i)) = (&context.actions, fields.action) {
                if !in_set(actions, self.get(i, row)) {
                    continue;
                }
            }
            if let (Some(surfaces), Some(i)) = (&context.surfaces, fields.surface) {
                if !in_set(surfaces, self.get(i, row)) {
                    continue;
                }
            }
            if let Some(i) = fields.item_id {
                let item = self.get(i, row);
                if !context.exclude.is_empty() && in_set(&context.exclude, item) {
                    continue;
                }
                if context.dedupe && !seen.insert(item.py_key()) {
                    continue;
                }
            }
            out.push(row);
            if out.len() >= limit {
                complete = true;
                break;
            }
        }
        // A view that ends before it starts holds nothing, whatever came later.
        if later > 0 && end >= start && (!complete || spec.dedupe_by.is_some()) {
            self.check_nothing_dropped(spec, retention_ms, end, start)?;
        }
        Ok((out, newest))
    }

    /// Refuse when events the read needs may have been dropped: to make room for newer ones
    /// (a full state, or with `dedupe_by` an item engaged again after the view time, whose
    /// older entry may belong anywhere in the answer), or by age (the read starts before what
    /// the state keeps). The earliest `as_of` answered is then the newest event's time.
    fn check_nothing_dropped(
        &self,
        spec: &LastNSpec,
        retention_ms: i64,
        end: i64,
        start: i64,
    ) -> Result<(), Refusal> {
        let newest_ts = self.ts.first().copied().unwrap_or(0);
        let dropped_by_room = self.ts.len() >= spec.n || spec.dedupe_by.is_some();
        let kept_from = newest_ts
            .saturating_sub(retention_ms)
            .saturating_sub(AS_OF_LOOKBACK_MS);
        if dropped_by_room || start < kept_from {
            return Err(Refusal {
                view_ms: end, // the view's end: its as_of or until
                earliest_ms: newest_ts,
                why: "newer events took the room of older ones it needs",
            });
        }
        Ok(())
    }
}
