//! `ColumnReader`: the plans' field columns read from a batch's live events and the records
//! the Materializer joined onto them, in one pass over the events, without a Python list
//! per column. The Python glue (`usersignals.processing.native`) describes once where each
//! column comes from; the reference for what a column holds is the engine's per-user Python
//! path (`aggregations/rows.py` and the signals' field resolution), which the pipeline's
//! property tests hold the core to.

use hashbrown::hash_map::Entry;
use hashbrown::HashMap;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use usersignals_core::mean_vector::SharedVector;
use usersignals_core::packed::Field;
use usersignals_core::pipeline::LiveColumns;
use usersignals_core::Value;

use crate::attrs::Attr;
use crate::join_keys::{self, JoinKeys, KeyReader, NO_KEY};
use crate::packed::PackedFields;
use crate::{to_value, to_vector, CoreError};

/// Where a value is read from an event.
enum Origin {
    /// An attribute of the event (`Event.<name>`).
    Event(Py<PyString>),
    /// A dotted path into `Event.attrs`: `None` where a step is absent or not an object.
    Attrs(Vec<Py<PyString>>),
    /// A field of the record the `source`-th join found for the event (`None` on a miss),
    /// by name as Python and as the core reads it.
    Record(usize, Py<PyString>, String),
    /// The value the `join`-th join read as the event's key (a column of the same event
    /// field, such as LastN's `item_id`): read once per event, not twice.
    JoinKey(usize),
}

/// How a column hands its values to the core.
#[derive(Clone, Copy)]
enum Render {
    /// As core values (`to_value`).
    Value,
    /// As Python's `str()` of the value (`None` stays null): what Distinct hashes.
    Text,
    /// As vectors of floats (MeanVector's input), each distinct object converted once.
    Vector,
}

struct Column {
    name: String,
    origin: Origin,
    render: Render,
}

/// A lookup source's join: its name in the records handed to `read`, and where each
/// event's key is read; `text` when the key is text already, else it is `str()` of the value
/// (`""` for `None`, which no record has).
struct Join {
    source: Py<PyString>,
    key: Origin,
    text: bool,
}

/// The live columns `read` built, handed to the core call that applies them (once).
#[pyclass(module = "usersignals._core")]
pub struct Columns {
    columns: Option<LiveColumns>,
}

impl Columns {
    pub(crate) fn take(&mut self) -> PyResult<LiveColumns> {
        self.columns
            .take()
            .ok_or_else(|| CoreError::new_err("these columns were already applied"))
    }
}

#[pyclass(frozen, module = "usersignals._core")]
pub struct ColumnReader {
    columns: Vec<Column>,
    joins: Vec<Join>,
}

/// `(kind, parts)` as Python describes an origin: `("event", [name])`, `("attrs", path)`,
/// or `("record", [join index, field])`.
type OriginArg = (String, Vec<String>);

fn origin(py: Python<'_>, (kind, parts): OriginArg) -> PyResult<Origin> {
    let name = |i: usize| -> PyResult<Py<PyString>> {
        let part = parts
            .get(i)
            .ok_or_else(|| CoreError::new_err(format!("a {kind} origin lacks a part")))?;
        Ok(PyString::intern(py, part).unbind())
    };
    Ok(match kind.as_str() {
        "event" => Origin::Event(name(0)?),
        "attrs" => Origin::Attrs((0..parts.len()).map(name).collect::<PyResult<_>>()?),
        "record" => {
            let join = (parts.first().and_then(|join| join.parse().ok()))
                .ok_or_else(|| CoreError::new_err("a record origin's join is not an index"))?;
            Origin::Record(join, name(1)?, parts[1].clone())
        }
        other => return Err(CoreError::new_err(format!("no column origin {other:?}"))),
    })
}

fn render(name: &str) -> PyResult<Render> {
    Ok(match name {
        "value" => Render::Value,
        "text" => Render::Text,
        "vector" => Render::Vector,
        other => return Err(CoreError::new_err(format!("no column rendering {other:?}"))),
    })
}

#[pymethods]
impl ColumnReader {
    /// `columns`: (name, rendering, origin) per column; `joins`: (source, key origin, key is
    /// text) per lookup source, the index a `record` origin names.
    #[new]
    fn new(
        py: Python<'_>,
        columns: Vec<(String, String, OriginArg)>,
        joins: Vec<(String, OriginArg, bool)>,
    ) -> PyResult<Self> {
        let keys: Vec<OriginArg> = joins.iter().map(|(_, key, _)| key.clone()).collect();
        let joins = (joins.into_iter())
            .map(|(source, key, text)| {
                Ok(Join {
                    source: PyString::intern(py, &source).unbind(),
                    key: origin(py, key)?,
                    text,
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let columns = (columns.into_iter())
            .map(|(name, rendering, from)| {
                let origin = match keys.iter().position(|key| *key == from) {
                    Some(join) => Origin::JoinKey(join),
                    None => origin(py, from)?,
                };
                if matches!(origin, Origin::Record(join, ..) if join >= joins.len()) {
                    return Err(CoreError::new_err(format!("{name}: no such join")));
                }
                Ok(Column {
                    name,
                    origin,
                    render: render(&rendering)?,
                })
            })
            .collect::<PyResult<_>>()?;
        Ok(ColumnReader { columns, joins })
    }

    /// Per join, the keys of `live` (the events to apply, in order): `(keys, texts)`, the
    /// keys for `read` of the same list, and per join the distinct texts to look up, in
    /// order of first appearance (no `""`, which no record has; a `None` key has no text).
    /// `None` when a text field's key is not a `str` (the lookups then read the keys).
    fn join_keys<'py>(
        &self,
        live: &Bound<'py, PyList>,
    ) -> PyResult<Option<(JoinKeys, Vec<Bound<'py, PyList>>)>> {
        let py = live.py();
        let mut attrs: Vec<Attr<'py>> = (self.joins.iter())
            .map(|join| origin_attr(py, &join.key))
            .collect();
        let mut readers: Vec<KeyReader> = (self.joins.iter())
            .map(|join| KeyReader::new(join.text, live.len()))
            .collect();
        for event in live.iter() {
            let joins = self.joins.iter().zip(&mut attrs).zip(&mut readers);
            for ((join, attr), reader) in joins {
                if !reader.push(read_origin(py, &event, &join.key, attr)?)? {
                    return Ok(None);
                }
            }
        }
        let (joins, texts) = (readers.into_iter())
            .map(|reader| reader.finish(py))
            .collect::<PyResult<(Vec<_>, Vec<_>)>>()?;
        let live = live.clone().unbind();
        Ok(Some((JoinKeys { live, joins }, texts)))
    }

    /// The columns of `live` (the events to apply, in order), with `records` (per source,
    /// the records by key), and per join the events whose key found no record; `keys`, if
    /// given, are `join_keys` of the same `live` list (read once: each distinct key's
    /// record is found once, not an event's key read and looked up per event).
    ///
    /// One pass over the events, each read whole (its joins, then every column) while it is
    /// in cache: `live` comes user by user, so consecutive events lie far apart in memory,
    /// and a pass per column missed the cache on every event again (a 200,000-event
    /// backfill batch: 0.61-0.62 s a pass per column, 0.38-0.41 s read whole).
    #[pyo3(signature = (live, records, keys=None))]
    fn read<'py>(
        &self,
        live: &Bound<'py, PyList>,
        records: &Bound<'py, PyDict>,
        keys: Option<&Bound<'py, JoinKeys>>,
    ) -> PyResult<(Columns, Vec<u64>)> {
        let py = live.py();
        let tables = (self.joins.iter())
            .map(|join| {
                let table = records.get_item(join.source.bind(py))?;
                Ok(table.and_then(|t| t.cast_into::<PyDict>().ok()))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let mut joined = Joined::new(self, live, tables, keys)?;
        let mut sinks: Vec<Sink<'py>> = (self.columns.iter())
            .map(|column| Sink::new(column.render, live.len()))
            .collect();
        let mut column_attrs: Vec<Attr<'py>> = (self.columns.iter())
            .map(|column| origin_attr(py, &column.origin))
            .collect();
        // Per column, where its field was in the last packed record read (see
        // `PackedFields::get_hinted`).
        let mut hints = vec![0usize; self.columns.len()];
        for (at, event) in live.iter().enumerate() {
            joined.read(self, at, &event)?;
            let columns =
                (self.columns.iter().zip(&mut sinks)).zip(column_attrs.iter_mut().zip(&mut hints));
            for ((column, sink), (attr, hint)) in columns {
                match &column.origin {
                    Origin::Record(join, name, field) => match &joined.rows[*join] {
                        Some(Row::Packed(record)) => sink.push_packed(record, name, field, hint)?,
                        Some(Row::Dict(record)) => sink.push(
                            (record.get_item(name.bind(py))?)
                                .unwrap_or_else(|| py.None().into_bound(py)),
                        )?,
                        None => sink.push(py.None().into_bound(py))?,
                    },
                    Origin::JoinKey(join) => sink.push(joined.keys[*join].clone())?,
                    other => sink.push(read_origin(py, &event, other, attr)?)?,
                }
            }
        }
        let columns = Some(self.live_columns(sinks));
        Ok((Columns { columns }, joined.misses))
    }
}

impl ColumnReader {
    /// The filled columns, named, as the core takes them.
    fn live_columns(&self, sinks: Vec<Sink<'_>>) -> LiveColumns {
        let mut out = LiveColumns {
            names: Vec::new(),
            columns: Vec::new(),
            vectors: Vec::new(),
        };
        for (column, sink) in self.columns.iter().zip(sinks) {
            match sink {
                Sink::Vectors { vectors, .. } => out.vectors.push((column.name.clone(), vectors)),
                Sink::Values { values, .. } => {
                    out.names.push(column.name.clone());
                    out.columns.push(values);
                }
            }
        }
        out
    }
}

/// Each event's joins, as `read` takes them: its records and key values, and the misses.
struct Joined<'py> {
    /// Per join, the current event's record and key value.
    rows: Vec<Option<Row<'py>>>,
    keys: Vec<Bound<'py, PyAny>>,
    /// Per join, the events whose key found no record.
    misses: Vec<u64>,
    from: JoinedFrom<'py>,
}

enum JoinedFrom<'py> {
    /// Each event's key read by its origin and looked up in its join's table.
    Events {
        attrs: Vec<Attr<'py>>,
        tables: Vec<Option<Bound<'py, PyDict>>>,
    },
    /// `JoinKeys`: per join, each distinct key's record, found once.
    Keys {
        keys: Bound<'py, JoinKeys>,
        rows: Vec<Vec<Option<Row<'py>>>>,
    },
}

impl<'py> Joined<'py> {
    fn new(
        reader: &ColumnReader,
        live: &Bound<'py, PyList>,
        tables: Vec<Option<Bound<'py, PyDict>>>,
        keys: Option<&Bound<'py, JoinKeys>>,
    ) -> PyResult<Self> {
        let py = live.py();
        let from = match keys {
            None => JoinedFrom::Events {
                attrs: (reader.joins.iter())
                    .map(|join| origin_attr(py, &join.key))
                    .collect(),
                tables,
            },
            Some(keys) => {
                let given = keys.get();
                if !given.live.bind(py).is(live) || given.joins.len() != reader.joins.len() {
                    return Err(CoreError::new_err("these keys are of other events"));
                }
                let rows = (given.joins.iter().zip(&tables))
                    .map(|(join, table)| {
                        let found = join_keys::found(join, table.as_ref())?;
                        Ok(found.into_iter().map(|r| r.and_then(as_row)).collect())
                    })
                    .collect::<PyResult<_>>()?;
                JoinedFrom::Keys {
                    keys: keys.clone(),
                    rows,
                }
            }
        };
        Ok(Joined {
            rows: Vec::with_capacity(reader.joins.len()),
            keys: Vec::with_capacity(reader.joins.len()),
            misses: vec![0; reader.joins.len()],
            from,
        })
    }

    /// The joins of `event`, the `at`-th of `live`.
    fn read(
        &mut self,
        reader: &ColumnReader,
        at: usize,
        event: &Bound<'py, PyAny>,
    ) -> PyResult<()> {
        let py = event.py();
        self.rows.clear();
        self.keys.clear();
        for (j, join) in reader.joins.iter().enumerate() {
            let (key, row) = match &mut self.from {
                JoinedFrom::Events { attrs, tables } => {
                    let key = read_origin(py, event, &join.key, &mut attrs[j])?;
                    let row = join_row(&key, join, tables[j].as_ref())?;
                    (key, row)
                }
                JoinedFrom::Keys { keys, rows } => {
                    let keys = &keys.get().joins[j];
                    let index = keys.index[at];
                    let row = if index == NO_KEY {
                        None
                    } else {
                        rows[j][index as usize].clone()
                    };
                    (keys.values[at].bind(py).clone(), row)
                }
            };
            self.misses[j] += u64::from(row.is_none());
            self.rows.push(row);
            self.keys.push(key);
        }
        Ok(())
    }
}

/// One column being filled, event by event.
enum Sink<'py> {
    Values {
        rendering: Render,
        values: Vec<Value>,
    },
    Vectors {
        vectors: Vec<Option<SharedVector>>,
        /// Each distinct list object converted once: the Materializer joins one record, and
        /// so one list object, onto every event of an item. Identity is safe: `held` keeps
        /// every object in the map alive for the whole call, so no address is reused.
        converted: HashMap<*mut pyo3::ffi::PyObject, Option<SharedVector>>,
        held: Vec<Bound<'py, PyAny>>,
    },
}

impl<'py> Sink<'py> {
    fn new(rendering: Render, events: usize) -> Self {
        match rendering {
            Render::Vector => Sink::Vectors {
                vectors: Vec::with_capacity(events),
                converted: HashMap::new(),
                held: Vec::new(),
            },
            rendering => Sink::Values {
                rendering,
                values: Vec::with_capacity(events),
            },
        }
    }

    fn push(&mut self, value: Bound<'py, PyAny>) -> PyResult<()> {
        match self {
            Sink::Values { rendering, values } => values.push(as_value(&value, *rendering)?),
            Sink::Vectors {
                vectors,
                converted,
                held,
            } => {
                let vector = match converted.entry(value.as_ptr()) {
                    Entry::Occupied(known) => known.get().clone(),
                    Entry::Vacant(slot) => {
                        let vector = to_vector(&value).map(SharedVector::from);
                        held.push(value);
                        slot.insert(vector).clone()
                    }
                };
                vectors.push(vector);
            }
        }
        Ok(())
    }

    /// The value of a packed record's field `field` (`name` in Python): the core's parse
    /// where it models the value, Python's value of it where it does not (the mapping that
    /// `usersignals.enrich.packed.PackedRecord` adds to the parse).
    fn push_packed(
        &mut self,
        record: &Bound<'py, PackedFields>,
        name: &Py<PyString>,
        field: &str,
        hint: &mut usize,
    ) -> PyResult<()> {
        let py = record.py();
        let python = || record.as_any().get_item(name.bind(py));
        match self {
            Sink::Values { rendering, values } => {
                values.push(match record.get().field_hinted(py, field, hint) {
                    None | Some(Field::Scalar(Value::Null)) => Value::Null,
                    Some(Field::Scalar(value)) => match (*rendering, value) {
                        (Render::Value, value) | (Render::Text, value @ Value::Str(_)) => {
                            value.clone()
                        }
                        (Render::Text, Value::Int(i)) => Value::Str(i.to_string()),
                        (Render::Text, Value::Bool(b)) => {
                            Value::Str(if *b { "True" } else { "False" }.to_owned())
                        }
                        // A float in a text column: Python's `str()` of it, built by Python.
                        (_, value) => as_value(&crate::to_py(py, value)?, *rendering)?,
                    },
                    // A list of numbers, or what the core leaves to Python (a nested map, bytes,
                    // an integer past i64): its Python value read as `to_value` reads a dict
                    // record's (JSON text), its text Python's.
                    Some(_) => as_value(&python()?, *rendering)?,
                })
            }
            Sink::Vectors { vectors, .. } => {
                vectors.push(match record.get().field_hinted(py, field, hint) {
                    Some(Field::Numbers(numbers)) => Some(numbers.clone()),
                    None | Some(Field::Scalar(_)) => None,
                    Some(Field::Other) => to_vector(&python()?).map(SharedVector::from),
                })
            }
        }
        Ok(())
    }
}

/// A record a join found: a dict as a source returned it, or packed bytes the core parsed.
#[derive(Clone)]
enum Row<'py> {
    Dict(Bound<'py, PyDict>),
    Packed(Bound<'py, PackedFields>),
}

/// The record `join` finds in `table` for an event whose key field holds `key`, if any.
fn join_row<'py>(
    key: &Bound<'py, PyAny>,
    join: &Join,
    table: Option<&Bound<'py, PyDict>>,
) -> PyResult<Option<Row<'py>>> {
    let Some(table) = table else {
        return Ok(None);
    };
    let key = if join.text {
        key.clone()
    } else if key.is_none() {
        return Ok(None); // "" is never fetched
    } else {
        key.str()?.into_any()
    };
    Ok(table.get_item(key)?.and_then(as_row))
}

/// A record as the reader reads it: a dict, or a packed record; anything else is none.
fn as_row(record: Bound<'_, PyAny>) -> Option<Row<'_>> {
    match record.cast_into::<PyDict>() {
        Ok(record) => Some(Row::Dict(record)),
        Err(other) => (other.into_inner())
            .cast_into::<PackedFields>()
            .ok()
            .map(Row::Packed),
    }
}

/// The event attribute an origin reads (`attrs` for a path into it; a record's field or a
/// join's key is read otherwise, by no attribute of the event).
fn origin_attr<'py>(py: Python<'py>, origin: &Origin) -> Attr<'py> {
    Attr::new(match origin {
        Origin::Event(name) => name.bind(py).clone(),
        _ => intern!(py, "attrs").clone(),
    })
}

/// An event-side origin's value (`None` where an attribute path is absent); `attr` is the
/// origin's (`origin_attr`), which reads the event's structs' fields by their descriptors.
fn read_origin<'py>(
    py: Python<'py>,
    event: &Bound<'py, PyAny>,
    origin: &Origin,
    attr: &mut Attr<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    match origin {
        Origin::Event(_) => attr.get(event),
        Origin::Attrs(path) => {
            let mut node = attr.get(event)?;
            for part in path {
                let Ok(object) = node.cast::<PyDict>() else {
                    return Ok(py.None().into_bound(py));
                };
                node = object
                    .get_item(part.bind(py))?
                    .unwrap_or_else(|| py.None().into_bound(py));
            }
            Ok(node)
        }
        Origin::Record(..) | Origin::JoinKey(_) => {
            Err(CoreError::new_err("a record field is not an event's"))
        }
    }
}

/// A value as the core takes it; a text column's non-text values as `str()` renders them.
fn as_value(value: &Bound<'_, PyAny>, rendering: Render) -> PyResult<Value> {
    Ok(match rendering {
        Render::Text if !value.is_none() && !value.is_instance_of::<PyString>() => {
            to_value(value.str()?.as_any())?
        }
        _ => to_value(value)?,
    })
}
