//! Scalar values as the Python side sees them, with Python's equality and ordering.
//!
//! Filters and dedupe must agree with the Python reference, where `1 == 1.0 == True` and
//! comparing a string with a number is "no match" rather than an error.
//!
//! A value the scalars cannot hold (a list, an object, an integer beyond 64 bits: what an
//! event's `attrs` may carry) is kept as its JSON text (`Json`): a kept field gives it back
//! as it came, where it was once stored as null.

use std::cmp::Ordering;

use crate::error::CoreError;
use crate::varint::{put_i64, put_u64, Reader};

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A list, an object or an integer beyond 64 bits, as compact JSON text.
    Json(String),
}

/// A hashable key under Python's equality: numbers that compare equal share a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PyKey<'a> {
    Null,
    Num(i64),
    FloatBits(u64),
    Str(&'a str),
    /// A string of a digits column (see `ValueRef::Digits`), by its number.
    Digits(u64),
    /// A `Json` value, by its text (never equal to a string or a number).
    Json(&'a str),
}

/// A hashable key under exact identity (type and bits): what the codec's dictionaries use,
/// so that a stored `1.0` never comes back as `1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExactKey<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(u64),
    Str(&'a str),
    Json(&'a str),
}

const TAG_NULL: u8 = 0;
const TAG_FALSE: u8 = 1;
const TAG_TRUE: u8 = 2;
const TAG_INT: u8 = 3;
const TAG_FLOAT: u8 = 4;
const TAG_STR: u8 = 5;
/// A `Json` value: varint length, UTF-8 JSON text (LastN format version 3 and later).
const TAG_JSON: u8 = 6;

impl Value {
    pub fn py_key(&self) -> PyKey<'_> {
        match self {
            Value::Null => PyKey::Null,
            Value::Bool(b) => PyKey::Num(i64::from(*b)),
            Value::Int(i) => PyKey::Num(*i),
            Value::Float(f) => float_key(*f),
            Value::Str(s) => PyKey::Str(s),
            Value::Json(s) => PyKey::Json(s),
        }
    }

    pub fn exact_key(&self) -> ExactKey<'_> {
        match self {
            Value::Null => ExactKey::Null,
            Value::Bool(b) => ExactKey::Bool(*b),
            Value::Int(i) => ExactKey::Int(*i),
            Value::Float(f) => ExactKey::Float(f.to_bits()),
            Value::Str(s) => ExactKey::Str(s),
            Value::Json(s) => ExactKey::Json(s),
        }
    }

    pub fn py_eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::Float(a), b) | (b, Value::Float(a)) => match b.as_number() {
                Some(Num::Int(i)) => *a == i as f64 && a.fract() == 0.0,
                _ => false,
            },
            _ => self.py_key() == other.py_key(),
        }
    }

    fn as_number(&self) -> Option<Num> {
        match self {
            Value::Bool(b) => Some(Num::Int(i64::from(*b))),
            Value::Int(i) => Some(Num::Int(*i)),
            Value::Float(f) => Some(Num::Float(*f)),
            _ => None,
        }
    }

    /// Python's `<`/`>` between two values, or `None` where Python raises TypeError (or the
    /// left side is None): such a comparison never matches a filter.
    pub fn py_cmp(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
            _ => match (self.as_number()?, other.as_number()?) {
                (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
                (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
            },
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        self.as_ref().encode(out);
    }

    /// The value borrowed.
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::Int(i) => ValueRef::Int(*i),
            Value::Float(f) => ValueRef::Float(*f),
            Value::Str(s) => ValueRef::Str(s),
            Value::Json(s) => ValueRef::Json(s),
        }
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Value, CoreError> {
        Ok(match r.u8()? {
            TAG_NULL => Value::Null,
            TAG_FALSE => Value::Bool(false),
            TAG_TRUE => Value::Bool(true),
            TAG_INT => Value::Int(r.i64()?),
            TAG_FLOAT => {
                let bytes: [u8; 8] = r.bytes(8)?.try_into().expect("8 bytes were read");
                Value::Float(f64::from_le_bytes(bytes))
            }
            TAG_STR => Value::Str(utf8(r)?.to_owned()),
            TAG_JSON => Value::Json(utf8(r)?.to_owned()),
            tag => return Err(CoreError::Codec(format!("unknown value tag {tag}"))),
        })
    }

    pub fn from_json(json: &serde_json::Value) -> Result<Value, CoreError> {
        Ok(match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::Str(s.clone()),
            other => return Err(CoreError::Plan(format!("not a scalar value: {other}"))),
        })
    }
}

/// A varint-length UTF-8 text of a tagged value.
fn utf8<'a>(r: &mut Reader<'a>) -> Result<&'a str, CoreError> {
    let n = r.len(1)?;
    std::str::from_utf8(r.bytes(n)?)
        .map_err(|e| CoreError::Codec(format!("string is not UTF-8: {e}")))
}

fn float_key(f: f64) -> PyKey<'static> {
    // 2^63 as f64; integral floats inside i64's range equal that integer in Python.
    if f.fract() == 0.0 && f.abs() < 9.223_372_036_854_776e18 {
        PyKey::Num(f as i64)
    } else {
        PyKey::FloatBits(f.to_bits())
    }
}

/// A value borrowed from stored bytes (see `last_n::view`): no allocation per value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    Json(&'a str),
    /// A string of a prefixed column: the column's shared prefix and this entry's suffix.
    Prefixed(&'a str, &'a str),
    /// A string of a digits column: the column's shared prefix, then this entry's number
    /// zero-padded to the column's width (`i00012345`).
    Digits(&'a str, usize, u64),
}

impl<'a> ValueRef<'a> {
    /// Decode one tagged value (the format of `Value::encode`), strings as slices.
    pub fn decode(r: &mut Reader<'a>) -> Result<Self, CoreError> {
        Ok(match r.u8()? {
            TAG_NULL => ValueRef::Null,
            TAG_FALSE => ValueRef::Bool(false),
            TAG_TRUE => ValueRef::Bool(true),
            TAG_INT => ValueRef::Int(r.i64()?),
            TAG_FLOAT => {
                let bytes: [u8; 8] = r.bytes(8)?.try_into().expect("8 bytes were read");
                ValueRef::Float(f64::from_le_bytes(bytes))
            }
            TAG_STR => ValueRef::Str(utf8(r)?),
            TAG_JSON => ValueRef::Json(utf8(r)?),
            tag => return Err(CoreError::Codec(format!("unknown value tag {tag}"))),
        })
    }

    /// The tagged bytes of the value (`Value::encode`'s format).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            ValueRef::Null => out.push(TAG_NULL),
            ValueRef::Bool(false) => out.push(TAG_FALSE),
            ValueRef::Bool(true) => out.push(TAG_TRUE),
            ValueRef::Int(i) => {
                out.push(TAG_INT);
                put_i64(out, i);
            }
            ValueRef::Float(f) => {
                out.push(TAG_FLOAT);
                out.extend_from_slice(&f.to_le_bytes());
            }
            ValueRef::Str(s) => {
                out.push(TAG_STR);
                put_u64(out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            ValueRef::Json(s) => {
                out.push(TAG_JSON);
                put_u64(out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            ValueRef::Prefixed(..) | ValueRef::Digits(..) => self.to_value().encode(out),
        }
    }

    /// Python's equality key. Within one column every string shares the prefix (and a
    /// digits column the width), so the suffix alone is the key of a prefixed string and
    /// the number alone that of a digits string.
    pub fn py_key(&self) -> PyKey<'a> {
        match *self {
            ValueRef::Null => PyKey::Null,
            ValueRef::Bool(b) => PyKey::Num(i64::from(b)),
            ValueRef::Int(i) => PyKey::Num(i),
            ValueRef::Float(f) => float_key(f),
            ValueRef::Str(s) | ValueRef::Prefixed(_, s) => PyKey::Str(s),
            ValueRef::Digits(_, _, number) => PyKey::Digits(number),
            ValueRef::Json(s) => PyKey::Json(s),
        }
    }

    /// The owned value.
    pub fn to_value(self) -> Value {
        match self {
            ValueRef::Null => Value::Null,
            ValueRef::Bool(b) => Value::Bool(b),
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::Float(f) => Value::Float(f),
            ValueRef::Str(s) => Value::Str(s.to_owned()),
            ValueRef::Json(s) => Value::Json(s.to_owned()),
            ValueRef::Prefixed(prefix, suffix) => Value::Str([prefix, suffix].concat()),
            ValueRef::Digits(prefix, width, number) => {
                let mut text = String::with_capacity(prefix.len() + width.max(1));
                text.push_str(prefix);
                push_padded(&mut text, number, width);
                Value::Str(text)
            }
        }
    }

    /// The value's text if it is a string, joined into `buf` when it has a prefix.
    pub fn text<'b>(&self, buf: &'b mut String) -> Option<&'b str>
    where
        'a: 'b,
    {
        match *self {
            ValueRef::Str(s) => Some(s),
            ValueRef::Prefixed(prefix, suffix) => {
                buf.clear();
                buf.push_str(prefix);
                buf.push_str(suffix);
                Some(buf.as_str())
            }
            ValueRef::Digits(prefix, width, number) => {
                buf.clear();
                buf.push_str(prefix);
                push_padded(buf, number, width);
                Some(buf.as_str())
            }
            _ => None,
        }
    }
}

/// `write!(buf, "{number:0width$}")` without the formatting machinery (a read writes an
/// id of a digits column per entry it answers).
fn push_padded(buf: &mut String, number: u64, width: usize) {
    let mut digits = [0u8; 20];
    let digits = decimal(number, &mut digits);
    buf.extend(std::iter::repeat_n('0', width.saturating_sub(digits.len())));
    buf.push_str(std::str::from_utf8(digits).expect("ASCII digits"));
}

/// The two digits of each number below 100, `"00"` to `"99"`.
const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// `number`'s decimal digits (as `Display` writes them), in the end of `buf`. Two digits
/// a step from a table, as `Display` does: a read writes a time of 13 digits per LastN entry
/// and an id per entry or key, about 3 % of the five reads' instructions a digit at a time
/// (callgrind, bench/read_kernels.py).
pub(crate) fn decimal(number: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    let mut rest = number;
    while rest >= 100 {
        let pair = (rest % 100) as usize * 2;
        rest /= 100;
        at -= 2;
        buf[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if rest >= 10 {
        let pair = rest as usize * 2;
        at -= 2;
        buf[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        buf[at] = b'0' + rest as u8;
    }
    &buf[at..]
}

#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            ".{0,12}".prop_map(Value::Str),
            ".{0,12}".prop_map(|text| Value::Json(format!("[{text:?}]"))),
        ]
    }

    #[test]
    fn decimal_writes_every_length_as_display_does() {
        let mut numbers = vec![0, u64::MAX];
        let mut power = 1u64;
        while let Some(next) = power.checked_mul(10) {
            numbers.extend([power - 1, power, power + 1, next / 2]);
            power = next;
        }
        numbers.extend(0..1000);
        for number in numbers {
            let mut buf = [0u8; 20];
            assert_eq!(decimal(number, &mut buf), number.to_string().as_bytes());
        }
    }

    proptest! {
        #[test]
        fn padded_numbers_are_written_as_format_writes_them(number in any::<u64>(), width in 0usize..25) {
            let mut buf = String::from("x");
            push_padded(&mut buf, number, width);
            prop_assert_eq!(buf, format!("x{number:0width$}"));
        }

        #[test]
        fn values_round_trip_exactly(v in any_value()) {
            let mut out = Vec::new();
            v.encode(&mut out);
            let back = Value::decode(&mut Reader::new(&out)).unwrap();
            prop_assert_eq!(back.exact_key(), v.exact_key());
        }

        /// Any bytes (values written, then perhaps cut or damaged): decoded borrowed and
        /// written again, they give what decoding them owned and writing again gives, or
        /// the same error (`tiles::parse` re-writes its group keys the borrowed way).
        #[test]
        fn borrowed_values_write_again_as_owned_ones(
            values in prop::collection::vec(any_value(), 0..4),
            cut in any::<prop::sample::Index>(),
            damage in prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
        ) {
            let mut data = Vec::new();
            values.iter().for_each(|v| v.encode(&mut data));
            if let Some((at, byte)) = damage.filter(|_| !data.is_empty()) {
                let at = at.index(data.len());
                data[at] = byte;
            }
            let data = &data[..cut.index(data.len() + 1)];
            let (mut owned, mut borrowed) = (Reader::new(data), Reader::new(data));
            let (mut by_owned, mut by_borrowed) = (Vec::new(), Vec::new());
            for _ in 0..values.len() {
                let a = Value::decode(&mut owned).map(|v| v.encode(&mut by_owned));
                let b = ValueRef::decode(&mut borrowed).map(|v| v.encode(&mut by_borrowed));
                prop_assert_eq!(a.map_err(|e| e.to_string()), b.map_err(|e| e.to_string()));
                prop_assert_eq!(&by_owned, &by_borrowed);
            }
        }
    }

    #[test]
    fn python_equality_across_number_types() {
        assert!(Value::Int(1).py_eq(&Value::Float(1.0)));
        assert!(Value::Bool(true).py_eq(&Value::Int(1)));
        assert!(!Value::Int(1).py_eq(&Value::Str("1".into())));
        assert_eq!(Value::Float(2.0).py_key(), Value::Int(2).py_key());
        assert_ne!(Value::Float(2.5).py_key(), Value::Int(2).py_key());
    }

    #[test]
    fn ordering_across_types_is_no_match() {
        assert_eq!(Value::Str("a".into()).py_cmp(&Value::Int(1)), None);
        assert_eq!(Value::Null.py_cmp(&Value::Int(1)), None);
        assert_eq!(
            Value::Int(1).py_cmp(&Value::Float(1.5)),
            Some(Ordering::Less)
        );
    }
}
