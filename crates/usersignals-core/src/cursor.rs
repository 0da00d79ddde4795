//! A cursor over msgpack bytes being decoded: rmp reads from its `rest`, raw spans are sliced
//! off it, and its errors name what is being decoded (a user record, a packed lookup record).

use rmp::decode::{self, RmpRead};
use rmp::Marker;

use crate::error::CoreError;

pub struct Cursor<'a> {
    pub rest: &'a [u8],
    /// What is decoded, as the errors name it.
    what: &'static str,
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8], what: &'static str) -> Self {
        Cursor { rest: data, what }
    }

    /// A codec error naming what is decoded.
    pub fn fail(&self, message: impl std::fmt::Display) -> CoreError {
        CoreError::Codec(format!("{}: {message}", self.what))
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CoreError> {
        if self.rest.len() < n {
            return Err(self.fail("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub fn marker(&mut self) -> Result<Marker, CoreError> {
        decode::read_marker(&mut self.rest).map_err(|_| self.fail("truncated"))
    }

    pub fn map_len(&mut self) -> Result<usize, CoreError> {
        let n = decode::read_map_len(&mut self.rest).map_err(|e| self.fail(e))?;
        Ok(n as usize)
    }

    /// A text's bytes, not checked to be UTF-8.
    pub fn text_bytes(&mut self) -> Result<&'a [u8], CoreError> {
        let n = decode::read_str_len(&mut self.rest).map_err(|e| self.fail(e))? as usize;
        self.take(n)
    }

    pub fn text(&mut self) -> Result<&'a str, CoreError> {
        let n = decode::read_str_len(&mut self.rest).map_err(|e| self.fail(e))? as usize;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes).map_err(|e| self.fail(e))
    }

    pub fn int(&mut self) -> Result<i64, CoreError> {
        decode::read_int(&mut self.rest).map_err(|e| self.fail(e))
    }

    pub fn bin(&mut self) -> Result<&'a [u8], CoreError> {
        let n = decode::read_bin_len(&mut self.rest).map_err(|e| self.fail(e))? as usize;
        self.take(n)
    }

    /// One whole msgpack value, as the bytes it spans.
    pub fn value(&mut self) -> Result<&'a [u8], CoreError> {
        let start = self.rest;
        self.skip(0)?;
        Ok(&start[..start.len() - self.rest.len()])
    }

    /// A big-endian length of `bytes` bytes.
    pub fn length(&mut self, bytes: usize) -> Result<usize, CoreError> {
        let mut n = 0usize;
        for &b in self.take(bytes)? {
            n = (n << 8) | b as usize;
        }
        Ok(n)
    }

    /// Reads past one value, whatever it holds (only its framing is checked).
    fn skip(&mut self, depth: usize) -> Result<(), CoreError> {
        if depth > 64 {
            return Err(self.fail("nested too deep"));
        }
        let marker = (self.rest.read_u8().map(Marker::from_u8)).map_err(|e| self.fail(e))?;
        let (payload, items) = match marker {
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
                (0, 0)
            }
            Marker::U8 | Marker::I8 => (1, 0),
            Marker::U16 | Marker::I16 => (2, 0),
            Marker::U32 | Marker::I32 | Marker::F32 => (4, 0),
            Marker::U64 | Marker::I64 | Marker::F64 => (8, 0),
            Marker::FixStr(n) => (n as usize, 0),
            Marker::Str8 | Marker::Bin8 => (self.length(1)?, 0),
            Marker::Str16 | Marker::Bin16 => (self.length(2)?, 0),
            Marker::Str32 | Marker::Bin32 => (self.length(4)?, 0),
            Marker::FixArray(n) => (0, n as usize),
            Marker::Array16 => (0, self.length(2)?),
            Marker::Array32 => (0, self.length(4)?),
            Marker::FixMap(n) => (0, 2 * n as usize),
            Marker::Map16 => (0, 2 * self.length(2)?),
            Marker::Map32 => (0, 2 * self.length(4)?),
            Marker::FixExt1 => (2, 0),
            Marker::FixExt2 => (3, 0),
            Marker::FixExt4 => (5, 0),
            Marker::FixExt8 => (9, 0),
            Marker::FixExt16 => (17, 0),
            Marker::Ext8 => (self.length(1)? + 1, 0),
            Marker::Ext16 => (self.length(2)? + 1, 0),
            Marker::Ext32 => (self.length(4)? + 1, 0),
            Marker::Reserved => return Err(self.fail("reserved msgpack marker")),
        };
        self.take(payload)?;
        for _ in 0..items {
            self.skip(depth + 1)?;
        }
        Ok(())
    }
}
