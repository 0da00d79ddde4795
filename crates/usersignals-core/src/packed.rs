//! A lookup record kept as the msgpack bytes its table stored (`usersignals tables load`),
//! with its fields parsed once into what the batch's columns read: scalars, and lists of
//! numbers as vectors. The Materializer's cache holds these instead of Python dicts, so a
//! fetched record costs no Python object per field (an item with a 32-float embedding was 36
//! objects, about 3 µs to decode and 0.5 µs to free).
//!
//! Python's decoding (msgspec, `usersignals.enrich.sources`) stays the reference: a field the
//! core does not model — a nested map, a list holding anything but numbers, bytes, an
//! integer past `i64` — is [`Field::Other`], and the binding asks Python for its value.
//! Bytes that Python might read differently (an extension type, a nested map keyed by
//! something other than text or an integer, trailing bytes, deep nesting) are refused, and
//! the caller decodes them the Python way.

use rmp::decode::RmpRead;
use rmp::Marker;

use crate::cursor::Cursor;
use crate::error::CoreError;
use crate::mean_vector::SharedVector;
use crate::value::Value;

/// Nesting deeper than this is left to Python (msgspec's own limit is far higher; no table
/// row of ours nests at all).
const MAX_DEPTH: usize = 32;
/// A record with more fields than this is left to Python: a field is found by a scan of the
/// names (a handful of fields: cheaper than hashing), which grows with every field, for each
/// name read and for each name parsed (a repeated name keeps its last value).
pub const MAX_FIELDS: usize = 64;

/// One field's value as the columns read it.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// nil, a bool, an integer within `i64`, a float, a text.
    Scalar(Value),
    /// A list whose items are all integers or floats (not bools), as floats: what a vector
    /// column reads (Python's `float()` of each).
    Numbers(SharedVector),
    /// Anything else; its Python value is Python's to give.
    Other,
}

/// A record's fields in the order they were written; a repeated name keeps its last value,
/// as a Python dict built from the map does. A name is the span of the record's bytes it
/// was written in (`start..end`), read against those bytes (so two parses compare equal
/// only as spans): a `Box<str>` per name was four allocations a reference item, and its
/// UTF-8 check is ASCII-first (`from_utf8` costs about 100 instructions on a short name).
/// With `float64s`, 1,912.1 → 1,896.0 M engine-only instructions (callgrind, bench/engine.py
/// at 50,000 events in batches of 10,000: 20,712 item records parsed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PackedFields {
    fields: Vec<(u32, u32, Field)>,
}

/// What the errors name.
const WHAT: &str = "packed record";

impl PackedFields {
    /// The fields of `data`, which must be exactly one msgpack map with text keys.
    pub fn parse(data: &[u8]) -> Result<Self, CoreError> {
        if u32::try_from(data.len()).is_err() {
            return Err(CoreError::Codec(format!("{WHAT}: past 4 GiB")));
        }
        let mut c = Cursor::new(data, WHAT);
        let n = c.map_len()?;
        if n > MAX_FIELDS {
            return Err(c.fail(format!("{n} fields, past {MAX_FIELDS}")));
        }
        let mut fields: Vec<(u32, u32, Field)> = Vec::with_capacity(n);
        for _ in 0..n {
            let name = c.text_bytes()?;
            if !name.is_ascii() {
                std::str::from_utf8(name).map_err(|e| c.fail(e))?;
            }
            // Within `data`, which fits u32: the span just read ends where the rest starts.
            let end = (data.len() - c.rest.len()) as u32;
            let start = end - name.len() as u32;
            let field = read_field(&mut c)?;
            match fields
                .iter_mut()
                .find(|(s, e, _)| span(data, *s, *e) == name)
            {
                Some(slot) => slot.2 = field,
                None => fields.push((start, end, field)),
            }
        }
        if !c.rest.is_empty() {
            return Err(c.fail("trailing bytes after the map"));
        }
        Ok(PackedFields { fields })
    }

    /// The field `name`, if the record has it; `data` is the record's bytes, as parsed.
    pub fn get(&self, data: &[u8], name: &str) -> Option<&Field> {
        // Records have a handful of fields: a scan beats hashing the name.
        (self.fields.iter())
            .find(|(start, end, _)| span(data, *start, *end) == name.as_bytes())
            .map(|(_, _, field)| field)
    }

    /// [`Self::get`] starting with the field at `hint`, which is set to where `name` is
    /// found: a caller that reads the same names from record after record of one table
    /// (the same fields, in the same order) finds each at its hint, where the scan compared
    /// the names before it. Parse keeps one field per name, so it is the field `get` finds.
    /// The column reader's 150,000 reads took 14.1 M instructions with `get`, 9.6 M so
    /// (callgrind, bench/engine.py --events 50000 --batch 10000).
    pub fn get_hinted(&self, data: &[u8], name: &str, hint: &mut usize) -> Option<&Field> {
        if let Some((start, end, field)) = self.fields.get(*hint) {
            if span(data, *start, *end) == name.as_bytes() {
                return Some(field);
            }
        }
        let at = (self.fields.iter())
            .position(|(start, end, _)| span(data, *start, *end) == name.as_bytes())?;
        *hint = at;
        Some(&self.fields[at].2)
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// The bytes of a name's span (empty when `data` is not the bytes parsed).
fn span(data: &[u8], start: u32, end: u32) -> &[u8] {
    data.get(start as usize..end as usize).unwrap_or_default()
}

/// A number as a list item: `Some(float)` for an integer or a float, `None` for any other
/// value (which is read past, checked like any nested value).
fn read_number(c: &mut Cursor<'_>, marker: Marker, depth: usize) -> Result<Option<f64>, CoreError> {
    Ok(match scalar(c, marker)? {
        Scalar::Value(Value::Int(i)) => Some(i as f64),
        Scalar::Value(Value::Float(f)) => Some(f),
        Scalar::Big(u) => Some(u as f64),
        Scalar::Value(_) => None,
        Scalar::Not => {
            skip(c, marker, depth)?;
            None
        }
    })
}

/// What a marker starts, as far as scalars go.
enum Scalar {
    /// A scalar, read.
    Value(Value),
    /// An unsigned integer past `i64::MAX`, read (Python holds it as an int).
    Big(u64),
    /// Not a scalar: nothing read past the marker.
    Not,
}

fn scalar(c: &mut Cursor<'_>, marker: Marker) -> Result<Scalar, CoreError> {
    Ok(Scalar::Value(match marker {
        Marker::Null => Value::Null,
        Marker::True => Value::Bool(true),
        Marker::False => Value::Bool(false),
        Marker::FixPos(n) => Value::Int(i64::from(n)),
        Marker::FixNeg(n) => Value::Int(i64::from(n)),
        Marker::U8 => Value::Int(i64::from(c.rest.read_data_u8().map_err(|e| c.fail(e))?)),
        Marker::U16 => Value::Int(i64::from(c.rest.read_data_u16().map_err(|e| c.fail(e))?)),
        Marker::U32 => Value::Int(i64::from(c.rest.read_data_u32().map_err(|e| c.fail(e))?)),
        Marker::U64 => {
            let n = c.rest.read_data_u64().map_err(|e| c.fail(e))?;
            match i64::try_from(n) {
                Ok(n) => Value::Int(n),
                Err(_) => return Ok(Scalar::Big(n)),
            }
        }
        Marker::I8 => Value::Int(i64::from(c.rest.read_data_i8().map_err(|e| c.fail(e))?)),
        Marker::I16 => Value::Int(i64::from(c.rest.read_data_i16().map_err(|e| c.fail(e))?)),
        Marker::I32 => Value::Int(i64::from(c.rest.read_data_i32().map_err(|e| c.fail(e))?)),
        Marker::I64 => Value::Int(c.rest.read_data_i64().map_err(|e| c.fail(e))?),
        Marker::F32 => Value::Float(f64::from(c.rest.read_data_f32().map_err(|e| c.fail(e))?)),
        Marker::F64 => Value::Float(c.rest.read_data_f64().map_err(|e| c.fail(e))?),
        Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
            let n = match marker {
                Marker::FixStr(n) => usize::from(n),
                Marker::Str8 => c.length(1)?,
                Marker::Str16 => c.length(2)?,
                _ => c.length(4)?,
            };
            let bytes = c.take(n)?;
            Value::Str(
                std::str::from_utf8(bytes)
                    .map_err(|e| c.fail(e))?
                    .to_owned(),
            )
        }
        _ => return Ok(Scalar::Not),
    }))
}

/// A top-level field's value.
fn read_field(c: &mut Cursor<'_>) -> Result<Field, CoreError> {
    let marker = c.marker()?;
    match scalar(c, marker)? {
        Scalar::Value(value) => return Ok(Field::Scalar(value)),
        Scalar::Big(_) => return Ok(Field::Other),
        Scalar::Not => {}
    }
    let items = match marker {
        Marker::FixArray(n) => usize::from(n),
        Marker::Array16 => c.length(2)?,
        Marker::Array32 => c.length(4)?,
        _ => {
            skip(c, marker, 0)?;
            return Ok(Field::Other);
        }
    };
    if let Some(numbers) = float64s(c, items) {
        return Ok(Field::Numbers(numbers));
    }
    let mut numbers = Vec::with_capacity(items.min(4096));
    let mut all_numbers = true;
    for _ in 0..items {
        // A msgpack float 64, what a table's embeddings hold, read in place: through the
        // general marker dispatch below each cost about 60 instructions (callgrind), most of
        // a reference item's parse (32 of them). The same value `scalar` reads.
        if let [0xcb, b0, b1, b2, b3, b4, b5, b6, b7, rest @ ..] = c.rest {
            if all_numbers {
                numbers.push(f64::from_be_bytes([*b0, *b1, *b2, *b3, *b4, *b5, *b6, *b7]));
            }
            c.rest = rest;
            continue;
        }
        let marker = c.marker()?;
        match read_number(c, marker, 1)? {
            Some(number) if all_numbers => numbers.push(number),
            Some(_) => {}
            None => all_numbers = false,
        }
    }
    Ok(if all_numbers {
        Field::Numbers(numbers.into())
    } else {
        Field::Other
    })
}

/// A list of `items` msgpack float 64s (a table's embeddings), read straight into the
/// shared vector: the general loop below fills a `Vec` that the `Arc` then copies (an
/// allocation and a copy of 256 bytes a reference item). `None`, nothing read, when any
/// item is something else.
fn float64s(c: &mut Cursor<'_>, items: usize) -> Option<SharedVector> {
    let bytes = c.rest.get(..items.checked_mul(9)?)?;
    if !bytes.chunks_exact(9).all(|item| item[0] == 0xcb) {
        return None;
    }
    let numbers = (bytes.chunks_exact(9))
        .map(|item| {
            let mut number = [0u8; 8];
            number.copy_from_slice(&item[1..]);
            f64::from_be_bytes(number)
        })
        .collect();
    c.rest = &c.rest[bytes.len()..];
    Some(numbers)
}

/// Read past one value whose marker was read, checking it as Python would decode it.
fn skip(c: &mut Cursor<'_>, marker: Marker, depth: usize) -> Result<(), CoreError> {
    if depth > MAX_DEPTH {
        return Err(c.fail("nested too deep"));
    }
    if !matches!(scalar(c, marker)?, Scalar::Not) {
        return Ok(());
    }
    let (items, map) = match marker {
        Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
            let width = match marker {
                Marker::Bin8 => 1,
                Marker::Bin16 => 2,
                _ => 4,
            };
            let n = c.length(width)?;
            c.take(n)?;
            return Ok(());
        }
        Marker::FixArray(n) => (usize::from(n), false),
        Marker::Array16 => (c.length(2)?, false),
        Marker::Array32 => (c.length(4)?, false),
        Marker::FixMap(n) => (usize::from(n), true),
        Marker::Map16 => (c.length(2)?, true),
        Marker::Map32 => (c.length(4)?, true),
        other => return Err(c.fail(format!("{other:?} is left to Python"))),
    };
    for _ in 0..items {
        if map {
            // A key Python hashes the same way whatever its bytes: text or an integer.
            let key = c.marker()?;
            match scalar(c, key)? {
                Scalar::Value(Value::Str(_) | Value::Int(_)) | Scalar::Big(_) => {}
                _ => return Err(c.fail("a nested map key that is not a text or an integer")),
            }
        }
        let marker = c.marker()?;
        skip(c, marker, depth + 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rmp::encode;

    /// Writes one field's value.
    type Write<'a> = &'a dyn Fn(&mut Vec<u8>);

    fn map(fields: &[(&str, Write<'_>)]) -> Vec<u8> {
        let mut out = Vec::new();
        encode::write_map_len(&mut out, fields.len() as u32).unwrap();
        for (name, write) in fields {
            encode::write_str(&mut out, name).unwrap();
            write(&mut out);
        }
        out
    }

    proptest! {
        /// Any record (names repeated in the map: the last value counts), any names asked
        /// in any order from any hint: the hinted read finds the field `get` finds, and
        /// leaves its hint on it.
        #[test]
        fn a_hinted_read_finds_what_get_finds(
            fields in proptest::collection::vec(("[a-e]{1,2}", any::<i64>()), 0..12),
            asked in proptest::collection::vec(("[a-e]{1,2}", 0usize..14), 0..20),
        ) {
            let data = {
                let mut out = Vec::new();
                encode::write_map_len(&mut out, fields.len() as u32).unwrap();
                for (name, value) in &fields {
                    encode::write_str(&mut out, name).unwrap();
                    encode::write_sint(&mut out, *value).unwrap();
                }
                out
            };
            let record = PackedFields::parse(&data).unwrap();
            for (name, start) in &asked {
                let mut hint = *start;
                let found = record.get_hinted(&data, name, &mut hint);
                prop_assert_eq!(found, record.get(&data, name));
                if found.is_some() {
                    prop_assert_eq!(record.get_hinted(&data, name, &mut hint.clone()), found);
                    let (start, end, _) = &record.fields[hint];
                    prop_assert_eq!(span(&data, *start, *end), name.as_bytes());
                }
            }
        }
    }

    #[test]
    fn scalars_and_number_lists_are_read() {
        let data = map(&[
            ("id", &|o| encode::write_str(o, "i1").unwrap()),
            ("n", &|o| {
                encode::write_sint(o, -300).unwrap();
            }),
            ("f", &|o| encode::write_f64(o, 0.5).unwrap()),
            ("b", &|o| encode::write_bool(o, true).unwrap()),
            ("z", &|o| encode::write_nil(o).unwrap()),
            ("v", &|o| {
                encode::write_array_len(o, 3).unwrap();
                encode::write_f32(o, 1.5).unwrap();
                encode::write_uint(o, 2).unwrap();
                encode::write_f64(o, -3.25).unwrap();
            }),
        ]);
        let fields = PackedFields::parse(&data).unwrap();
        assert_eq!(fields.len(), 6);
        assert_eq!(
            fields.get(&data, "id"),
            Some(&Field::Scalar(Value::Str("i1".into())))
        );
        assert_eq!(
            fields.get(&data, "n"),
            Some(&Field::Scalar(Value::Int(-300)))
        );
        assert_eq!(
            fields.get(&data, "f"),
            Some(&Field::Scalar(Value::Float(0.5)))
        );
        assert_eq!(
            fields.get(&data, "b"),
            Some(&Field::Scalar(Value::Bool(true)))
        );
        assert_eq!(fields.get(&data, "z"), Some(&Field::Scalar(Value::Null)));
        let numbers: SharedVector = vec![1.5, 2.0, -3.25].into();
        assert_eq!(fields.get(&data, "v"), Some(&Field::Numbers(numbers)));
        assert_eq!(fields.get(&data, "absent"), None);
        // An unsigned 64-bit encoding of a small integer is that integer.
        let wide_data = map(&[("u", &|o| encode::write_u64(o, 7).unwrap())]);
        let wide = PackedFields::parse(&wide_data).unwrap();
        assert_eq!(
            wide.get(&wide_data, "u"),
            Some(&Field::Scalar(Value::Int(7)))
        );
    }

    #[test]
    fn float_lists_read_in_place_agree_with_the_general_path() {
        let data = map(&[
            ("v", &|o| {
                encode::write_array_len(o, 4).unwrap();
                encode::write_f64(o, -0.0492).unwrap();
                encode::write_uint(o, 3).unwrap();
                encode::write_f64(o, f64::NAN).unwrap();
                encode::write_f32(o, 0.25).unwrap();
            }),
            ("w", &|o| {
                encode::write_array_len(o, 2).unwrap();
                encode::write_f64(o, 1.0).unwrap();
                encode::write_str(o, "x").unwrap();
            }),
        ]);
        let fields = PackedFields::parse(&data).unwrap();
        let Some(Field::Numbers(v)) = fields.get(&data, "v") else {
            panic!("not numbers: {:?}", fields.get(&data, "v"));
        };
        assert_eq!(v.len(), 4);
        assert_eq!((v[0], v[1], v[3]), (-0.0492, 3.0, 0.25));
        assert!(v[2].is_nan());
        assert_eq!(fields.get(&data, "w"), Some(&Field::Other));
        // A float 64 cut short is refused, as the general path refuses it.
        let mut cut = map(&[("v", &|o| {
            encode::write_array_len(o, 1).unwrap();
            encode::write_f64(o, 1.0).unwrap();
        })]);
        cut.pop();
        assert!(PackedFields::parse(&cut).is_err());
    }

    proptest! {
        /// Any list of float 64s and small integers, each kind read as the general path
        /// reads it: every float bit for bit (NaNs and signed zeros included).
        #[test]
        fn any_float_list_is_read_bit_for_bit(
            items in proptest::collection::vec(
                prop_oneof![
                    proptest::num::f64::ANY.prop_map(Ok),
                    (-1000i64..1000).prop_map(Err),
                ],
                0..48,
            )
        ) {
            let write = |o: &mut Vec<u8>| {
                encode::write_array_len(o, items.len() as u32).unwrap();
                for item in &items {
                    match item {
                        Ok(float) => encode::write_f64(o, *float).unwrap(),
                        Err(int) => {
                            encode::write_sint(o, *int).unwrap();
                        }
                    }
                }
            };
            let data = map(&[("v", &write)]);
            let fields = PackedFields::parse(&data).unwrap();
            let Some(Field::Numbers(read)) = fields.get(&data, "v") else {
                panic!("not numbers: {:?}", fields.get(&data, "v"));
            };
            let expected: Vec<u64> = items
                .iter()
                .map(|item| match item {
                    Ok(float) => float.to_bits(),
                    Err(int) => (*int as f64).to_bits(),
                })
                .collect();
            let got: Vec<u64> = read.iter().map(|x| x.to_bits()).collect();
            prop_assert_eq!(got, expected);
        }
    }

    /// The parse before names were spans of the record's bytes (a `String` each, checked
    /// by `from_utf8`): the reference the spans are held to.
    fn parsed_with_owned_names(data: &[u8]) -> Result<Vec<(String, Field)>, CoreError> {
        let mut c = Cursor::new(data, WHAT);
        let n = c.map_len()?;
        if n > MAX_FIELDS {
            return Err(c.fail("too many fields"));
        }
        let mut fields: Vec<(String, Field)> = Vec::new();
        for _ in 0..n {
            let name = c.text()?;
            let field = read_field(&mut c)?;
            match fields.iter_mut().find(|(known, _)| known == name) {
                Some(slot) => slot.1 = field,
                None => fields.push((name.to_owned(), field)),
            }
        }
        if !c.rest.is_empty() {
            return Err(c.fail("trailing bytes after the map"));
        }
        Ok(fields)
    }

    /// A name's bytes: ASCII, other UTF-8, or bytes that are not UTF-8.
    fn any_name() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            "[a-c]{0,3}".prop_map(String::into_bytes),
            "[aé名𐀀]{1,3}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..4),
        ]
    }

    proptest! {
        /// Any names (repeated, non-ASCII, not UTF-8), any field values: the spans find
        /// what the owned names found, and refuse what they refused.
        #[test]
        fn any_names_read_as_owned_names_read(
            fields in proptest::collection::vec((any_name(), any::<Option<i64>>()), 0..6),
            absent in any_name(),
        ) {
            let mut data = Vec::new();
            encode::write_map_len(&mut data, fields.len() as u32).unwrap();
            for (name, value) in &fields {
                encode::write_str_len(&mut data, name.len() as u32).unwrap();
                data.extend_from_slice(name);
                if let Some(v) = value {
                    encode::write_sint(&mut data, *v).unwrap();
                } else {
                    encode::write_array_len(&mut data, 0).unwrap();
                }
            }
            let expected = parsed_with_owned_names(&data);
            let parsed = PackedFields::parse(&data);
            prop_assert_eq!(parsed.is_ok(), expected.is_ok());
            let (Ok(parsed), Ok(expected)) = (parsed, expected) else {
                return Ok(());
            };
            prop_assert_eq!(parsed.len(), expected.len());
            for (name, field) in &expected {
                prop_assert_eq!(parsed.get(&data, name), Some(field));
            }
            if let Ok(absent) = std::str::from_utf8(&absent) {
                let found = expected.iter().find(|(name, _)| name == absent).map(|f| &f.1);
                prop_assert_eq!(parsed.get(&data, absent), found);
            }
        }

        /// Lists of float 64s only, what `float64s` reads in one pass: every float bit for
        /// bit, as the general loop reads them (a list cut short is refused by both).
        #[test]
        fn any_float64_list_is_read_as_the_general_loop_reads_it(
            items in proptest::collection::vec(proptest::num::f64::ANY, 0..40),
            cut in any::<bool>(),
        ) {
            let mut data = map(&[("v", &|o: &mut Vec<u8>| {
                encode::write_array_len(o, items.len() as u32).unwrap();
                for item in &items {
                    encode::write_f64(o, *item).unwrap();
                }
            })]);
            if cut && !items.is_empty() {
                data.pop();
            }
            let parsed = PackedFields::parse(&data);
            prop_assert_eq!(parsed.is_ok(), !cut || items.is_empty());
            let Ok(parsed) = parsed else {
                return Ok(());
            };
            let Some(Field::Numbers(read)) = parsed.get(&data, "v") else {
                panic!("not numbers: {:?}", parsed.get(&data, "v"));
            };
            let got: Vec<u64> = read.iter().map(|x| x.to_bits()).collect();
            let expected: Vec<u64> = items.iter().map(|x| x.to_bits()).collect();
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn what_python_models_differently_is_other() {
        let data = map(&[
            ("big", &|o| encode::write_u64(o, u64::MAX).unwrap()),
            ("bin", &|o| encode::write_bin(o, b"raw").unwrap()),
            ("bools", &|o| {
                encode::write_array_len(o, 2).unwrap();
                encode::write_f64(o, 1.0).unwrap();
                encode::write_bool(o, true).unwrap();
            }),
            ("nested", &|o| {
                encode::write_map_len(o, 1).unwrap();
                encode::write_sint(o, 7).unwrap();
                encode::write_bin(o, b"xy").unwrap();
            }),
        ]);
        let fields = PackedFields::parse(&data).unwrap();
        for name in ["big", "bin", "bools", "nested"] {
            assert_eq!(fields.get(&data, name), Some(&Field::Other), "{name}");
        }
    }

    #[test]
    fn more_fields_than_the_limit_are_refused() {
        let with = |count: usize| {
            let mut out = Vec::new();
            encode::write_map_len(&mut out, count as u32).unwrap();
            for n in 0..count {
                encode::write_str(&mut out, &format!("f{n}")).unwrap();
                encode::write_nil(&mut out).unwrap();
            }
            out
        };
        assert_eq!(
            PackedFields::parse(&with(MAX_FIELDS)).unwrap().len(),
            MAX_FIELDS
        );
        assert!(PackedFields::parse(&with(MAX_FIELDS + 1)).is_err());
    }

    #[test]
    fn a_repeated_name_keeps_its_last_value() {
        let data = map(&[
            ("a", &|o| encode::write_str(o, "first").unwrap()),
            ("a", &|o| encode::write_str(o, "last").unwrap()),
        ]);
        let fields = PackedFields::parse(&data).unwrap();
        assert_eq!(fields.len(), 1);
        assert_eq!(
            fields.get(&data, "a"),
            Some(&Field::Scalar(Value::Str("last".into())))
        );
    }

    #[test]
    fn bytes_python_might_read_otherwise_are_refused() {
        let good = map(&[("a", &|o| encode::write_str(o, "x").unwrap())]);
        let mut trailing = good.clone();
        trailing.push(0xc0);
        let mut bad_utf8 = Vec::new();
        encode::write_map_len(&mut bad_utf8, 1).unwrap();
        encode::write_str_len(&mut bad_utf8, 1).unwrap();
        bad_utf8.push(0xff);
        encode::write_nil(&mut bad_utf8).unwrap();
        let ext = map(&[("t", &|o| {
            encode::write_ext_meta(o, 1, -1).unwrap();
            o.push(0);
        })]);
        let list_key = map(&[("m", &|o| {
            encode::write_map_len(o, 1).unwrap();
            encode::write_array_len(o, 0).unwrap();
            encode::write_nil(o).unwrap();
        })]);
        let mut not_a_map = Vec::new();
        encode::write_str(&mut not_a_map, "x").unwrap();
        let mut deep = Vec::new();
        encode::write_map_len(&mut deep, 1).unwrap();
        encode::write_str(&mut deep, "d").unwrap();
        for _ in 0..=MAX_DEPTH + 1 {
            encode::write_array_len(&mut deep, 1).unwrap();
        }
        encode::write_nil(&mut deep).unwrap();
        for data in [
            trailing,
            bad_utf8,
            ext,
            list_key,
            not_a_map,
            deep,
            good[..3].to_vec(),
        ] {
            assert!(PackedFields::parse(&data).is_err(), "{data:?}");
        }
        assert!(PackedFields::parse(&good).is_ok());
    }
}
