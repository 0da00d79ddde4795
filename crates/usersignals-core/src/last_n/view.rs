//! A borrowed view of a stored LastN state, for reads: no allocation per entry.
//!
//! Reads touch a few fields of the newest entries; decoding every entry into owned values
//! (as `apply` must) costs an allocation per string. The view parses the same bytes into
//! slices of the input: dictionary columns keep their codes, prefixed strings keep
//! `(prefix, suffix)`, and a value becomes text only when it is compared or returned.

use std::collections::HashSet;

use super::{DICTIONARY, MAX_BYTE_CODES, PLAIN, PREFIXED};
use crate::context::ReadContext;
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
}

impl<'a> Column<'a> {
    fn get(&self, row: usize) -> ValueRef<'a> {
        match self {
            Column::Dictionary { vocab, codes } => vocab[codes[row] as usize],
            Column::Plain(values) => values[row],
            Column::Prefixed { prefix, suffixes } => ValueRef::Prefixed(prefix, suffixes[row]),
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

impl<'a> LastNView<'a> {
    /// Parse `data` (the same checks as `decode`, so a state that decodes also views).
    pub fn parse(data: &'a [u8], columns: usize) -> Result<Self, CoreError> {
        let mut r = Reader::new(data);
        let (count, ts) = super::decode_header(&mut r, columns)?;
        r.bytes(4 * count)?; // ties: reads do not need them
        let columns = (0..columns)
            .map(|_| Self::column(&mut r, count))
            .collect::<Result<Vec<_>, _>>()?;
        if !r.is_done() {
            return Err(CoreError::Codec("trailing bytes after LastN state".into()));
        }
        Ok(LastNView { ts, columns })
    }

    fn column(r: &mut Reader<'a>, count: usize) -> Result<Column<'a>, CoreError> {
        Ok(match r.u8()? {
            DICTIONARY => {
                let size = r.len(1)?;
                let vocab = (0..size)
                    .map(|_| ValueRef::decode(r))
                    .collect::<Result<Vec<_>, _>>()?;
                let codes = (0..count)
                    .map(|_| {
                        let code = if size <= MAX_BYTE_CODES {
                            u64::from(r.u8()?)
                        } else {
                            r.u64()?
                        };
                        if code >= size as u64 {
                            return Err(CoreError::Codec(format!(
                                "code {code} outside a dictionary of {size}"
                            )));
                        }
                        Ok(code as u32)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Column::Dictionary { vocab, codes }
            }
            PLAIN => Column::Plain(
                (0..count)
                    .map(|_| ValueRef::decode(r))
                    .collect::<Result<_, _>>()?,
            ),
            PREFIXED => {
                let shared = r.len(1)?;
                let prefix = utf8(r.bytes(shared)?)?;
                let suffixes = (0..count)
                    .map(|_| {
                        let n = r.len(1)?;
                        utf8(r.bytes(n)?)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Column::Prefixed { prefix, suffixes }
            }
            mode => return Err(CoreError::Codec(format!("unknown column mode {mode}"))),
        })
    }

    pub fn get(&self, column: usize, row: usize) -> ValueRef<'a> {
        self.columns[column].get(row)
    }

    /// The rows a context selects, newest first, and the newest time the view includes:
    /// the same rules as `last_n::read` (and the Python reference).
    pub fn select(&self, spec: &LastNSpec, context: &ReadContext) -> (Vec<usize>, Option<i64>) {
        let fields = super::ReadFields::of(spec);
        let limit = context.limit.unwrap_or(spec.n);
        let mut seen: HashSet<PyKey<'a>> = HashSet::new();
        let mut buf = String::new();
        let mut in_set = |set: &HashSet<String>, value: ValueRef<'a>| {
            value.text(&mut buf).is_some_and(|text| set.contains(text))
        };
        let mut out = Vec::new();
        let mut newest = None;
        for (row, ts) in self.ts.iter().enumerate() {
            if *ts > context.end_ms {
                continue;
            }
            newest.get_or_insert(*ts);
            if context.start_ms.is_some_and(|start| *ts < start) {
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
                break;
            }
        }
        (out, newest)
    }
}
