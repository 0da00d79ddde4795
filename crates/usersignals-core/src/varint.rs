//! LEB128 varints and zigzag: small numbers in few bytes, the base of every state codec.

use crate::error::CoreError;

pub fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The bytes `put_u64` writes for `v`: one per 7 bits, one for 0.
pub fn varint_len(v: u64) -> usize {
    (64 - v.leading_zeros()).max(1).div_ceil(7) as usize
}

/// A zigzag-coded 64-bit value decoded (`0, 1, 2, 3` → `0, -1, 1, -2`).
#[inline]
pub fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// A 64-bit value zigzag-coded (`0, -1, 1, -2` → `0, 1, 2, 3`): small magnitudes, small
/// varints.
#[inline]
pub fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, zigzag64(v));
}

/// Writes `values` at `width` bits each (value n's bit i at bit n·width + i, least
/// significant first) into `out`, which holds enough zeroed bytes. Widths up to 64 go
/// through a 64-bit accumulator a whole value at a time; wider ones a byte's worth of bits
/// at a time.
pub fn pack_bits(out: &mut [u8], values: impl IntoIterator<Item = u128>, width: u32) {
    if width > 64 {
        return pack_wide(out, values, width);
    }
    pack_u64(out, values, width);
}

/// `pack_bits` for widths up to 64 in 64-bit arithmetic, 8 bytes stored at once: the bytes
/// of the 128-bit accumulator it replaces (a 128-bit shift per value and another per byte).
/// `decay::put_run`, a MeanVector bucket's quotients, went from 50.9 M to 31.5 M
/// instructions (callgrind, bench/engine.py --events 50000 --batch 10000).
fn pack_u64(out: &mut [u8], values: impl IntoIterator<Item = u128>, width: u32) {
    let mask = low_mask(width) as u64;
    // `filled` (the bits waiting in `acc`) stays below 64.
    let (mut acc, mut filled, mut at) = (0u64, 0u32, 0usize);
    for v in values {
        let v = v as u64 & mask;
        acc |= v << filled;
        let end = filled + width;
        if end < 64 {
            filled = end;
            continue;
        }
        out[at..at + 8].copy_from_slice(&acc.to_le_bytes());
        at += 8;
        // The value's bits past the 64 stored (none when it started them).
        acc = if filled == 0 { 0 } else { v >> (64 - filled) };
        filled = end - 64;
    }
    let left = filled.div_ceil(8) as usize;
    out[at..at + left].copy_from_slice(&acc.to_le_bytes()[..left]);
}

/// `pack_bits` for widths up to 64 as it was, through a 128-bit accumulator: the reference
/// `pack_u64` is held to.
#[cfg(test)]
fn pack_u128(out: &mut [u8], values: impl IntoIterator<Item = u128>, width: u32) {
    let mask = low_mask(width);
    let (mut acc, mut filled, mut at) = (0u128, 0u32, 0usize);
    for v in values {
        acc |= (v & mask) << filled;
        filled += width;
        while filled >= 8 {
            out[at] |= acc as u8;
            at += 1;
            acc >>= 8;
            filled -= 8;
        }
    }
    if filled > 0 {
        out[at] |= acc as u8;
    }
}

fn pack_wide(out: &mut [u8], values: impl IntoIterator<Item = u128>, width: u32) {
    let mut bit = 0usize;
    for v in values {
        let mut done = 0u32;
        while done < width {
            let shift = (bit % 8) as u32;
            let take = (8 - shift).min(width - done);
            out[bit / 8] |= (((v >> done) as u8) & low_bits(take)) << shift;
            bit += take as usize;
            done += take;
        }
    }
}

/// Reads `count` values of `width` bits each, as `pack_bits` wrote them (`bytes` holds at
/// least `count · width` bits).
pub fn unpack_bits(bytes: &[u8], count: usize, width: u32) -> Vec<u128> {
    let mut values = Vec::new();
    unpack_bits_into(bytes, count, width, &mut values);
    values
}

/// `unpack_bits` into `values` (cleared first), so a reader reuses one buffer.
pub fn unpack_bits_into(bytes: &[u8], count: usize, width: u32, values: &mut Vec<u128>) {
    values.clear();
    if width > 64 {
        return unpack_wide(bytes, count, width, values);
    }
    if width <= 56 {
        return unpack_narrow(bytes, count, width, values);
    }
    let mask = low_mask(width);
    values.reserve(count);
    let (mut acc, mut filled, mut at) = (0u128, 0u32, 0usize);
    for _ in 0..count {
        while filled < width {
            acc |= u128::from(bytes[at]) << filled;
            at += 1;
            filled += 8;
        }
        values.push(acc & mask);
        acc >>= width;
        filled -= width;
    }
}

fn unpack_narrow(bytes: &[u8], count: usize, width: u32, values: &mut Vec<u128>) {
    values.reserve(count);
    for_each_narrow(bytes, count, width, |v| values.push(u128::from(v)));
}

/// Each of `count` values of `width` (at most 56) bits, as `unpack_bits` reads them. Each
/// value is within the 8 bytes from its first one, so it is one little-endian load, a shift
/// and a mask (no carried accumulator). Bytes past the end read as 0; the mask drops them,
/// as it drops the next value's bits.
pub fn for_each_narrow(bytes: &[u8], count: usize, width: u32, mut f: impl FnMut(u64)) {
    debug_assert!(width <= 56);
    let mask = (1u64 << width) - 1;
    let width = width as usize;
    for n in 0..count {
        let bit = n * width;
        let at = bit / 8;
        let word = match bytes.get(at..at + 8) {
            Some(word) => u64::from_le_bytes(word.try_into().expect("8 bytes")),
            None => {
                let mut tail = [0u8; 8];
                let rest = bytes.get(at..).unwrap_or_default();
                tail[..rest.len()].copy_from_slice(rest);
                u64::from_le_bytes(tail)
            }
        };
        f((word >> (bit % 8)) & mask);
    }
}

fn unpack_wide(bytes: &[u8], count: usize, width: u32, values: &mut Vec<u128>) {
    values.resize(count, 0);
    let mut bit = 0usize;
    for value in values.iter_mut() {
        let mut done = 0u32;
        while done < width {
            let shift = (bit % 8) as u32;
            let take = (8 - shift).min(width - done);
            *value |= u128::from((bytes[bit / 8] >> shift) & low_bits(take)) << done;
            bit += take as usize;
            done += take;
        }
    }
}

/// The lowest `width` (0 to 64) bits set.
fn low_mask(width: u32) -> u128 {
    (1u128 << width) - 1
}

/// A byte with its lowest `n` (1 to 8) bits set.
fn low_bits(n: u32) -> u8 {
    (0xFFu16 >> (8 - n)) as u8
}

/// A cursor over encoded bytes; every read checks bounds and reports what was truncated.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    pub fn is_done(&self) -> bool {
        self.pos == self.data.len()
    }

    /// The end of a state: no bytes after it; `what` names the state in the error.
    pub fn expect_done(&self, what: &str) -> Result<(), CoreError> {
        if !self.is_done() {
            return Err(CoreError::Codec(format!("trailing bytes after {what}")));
        }
        Ok(())
    }

    /// A state's leading format version byte, which must be `expected`; `what` names the
    /// state in the error.
    pub fn expect_version(&mut self, what: &str, expected: u8) -> Result<(), CoreError> {
        let version = self.u8()?;
        if version != expected {
            return Err(CoreError::Codec(format!(
                "{what} format version {version}, expected {expected}"
            )));
        }
        Ok(())
    }

    /// A state's leading format version byte, which must be one of `readable` (a state
    /// whose format changed reads its earlier ones too); `what` names the state in the error.
    pub fn readable_version(&mut self, what: &str, readable: &[u8]) -> Result<u8, CoreError> {
        let version = self.u8()?;
        if !readable.contains(&version) {
            return Err(CoreError::Codec(format!(
                "{what} format version {version}, expected one of {readable:?}"
            )));
        }
        Ok(version)
    }

    pub fn u8(&mut self) -> Result<u8, CoreError> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or_else(|| CoreError::Codec(format!("truncated at byte {}", self.pos)))?;
        self.pos += 1;
        Ok(b)
    }

    /// The bytes not read yet.
    pub fn left(&self) -> usize {
        self.data.len() - self.pos
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], CoreError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.data.len())
            .ok_or_else(|| CoreError::Codec(format!("truncated: {n} bytes at {}", self.pos)))?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub fn u64(&mut self) -> Result<u64, CoreError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CoreError::Codec(format!("varint too long at {}", self.pos)))
    }

    /// [`Self::u64`], inlined into a loop over a column of varints (a LastN's hundreds of
    /// times and ids): a walk over the slice left, where `u64` is a call and a checked `u8`
    /// per byte. A varint that runs out, or past 10 bytes, is left to `u64` from the same
    /// place, for the same error. (`u64` itself stays as it is: made like this everywhere
    /// it is no longer inlined where it was, and the reads took more instructions.)
    #[inline(always)]
    pub fn u64_in_loop(&mut self) -> Result<u64, CoreError> {
        let rest = &self.data[self.pos..];
        let mut v = 0u64;
        for (i, &b) in rest.iter().take(10).enumerate() {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.pos += i + 1;
                return Ok(v);
            }
        }
        self.u64()
    }

    /// A varint that ends within its first 9 bytes (63 bits at most), read in 64-bit
    /// arithmetic; `None`, and nothing read, when it runs longer or past the end: the
    /// caller's wider reader then reads it from the same place, errors included.
    pub fn short_varint(&mut self) -> Option<u64> {
        let rest = self.data.get(self.pos..)?;
        let mut v = 0u64;
        for (i, &b) in rest.iter().take(9).enumerate() {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.pos += i + 1;
                return Some(v);
            }
        }
        None
    }

    pub fn i64(&mut self) -> Result<i64, CoreError> {
        Ok(unzigzag(self.u64()?))
    }

    /// A count that must be plausible for the bytes left (guards allocations on bad input).
    pub fn len(&mut self, min_bytes_each: usize) -> Result<usize, CoreError> {
        let n = self.u64()?;
        let left = (self.data.len() - self.pos) as u64;
        if n.saturating_mul(min_bytes_each as u64) > left {
            return Err(CoreError::Codec(format!(
                "count {n} exceeds the {left} bytes left"
            )));
        }
        Ok(n as usize)
    }
}

/// Bytes for varint readers' proptests: any bytes shorter than `any_below`, or a run of
/// continuation bytes shorter than `runs_below` and one last byte, so that every varint
/// length, and every length past the readers' limits, is met.
#[cfg(test)]
pub(crate) fn varint_like_bytes(
    any_below: usize,
    runs_below: usize,
) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..any_below),
        (0..runs_below, any::<u8>()).prop_map(|(n, last)| {
            let mut bytes = vec![0xFFu8; n];
            bytes.push(last);
            bytes
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The 64-bit packing writes the bytes of the 128-bit one it takes over from.
        #[test]
        fn u64_packing_equals_the_128_bit_packing(
            width in 0u32..=64,
            raw in prop::collection::vec(any::<u128>(), 0..70),
            garbage in any::<bool>(),
        ) {
            // Masked to the width, or not (bits above it are dropped either way).
            let values: Vec<u128> = raw
                .iter()
                .map(|v| if garbage { *v } else { v & low_mask(width) })
                .collect();
            let len = (values.len() * width as usize).div_ceil(8);
            let (mut narrow, mut wide) = (vec![0u8; len], vec![0u8; len]);
            pack_u64(&mut narrow, values.iter().copied(), width);
            pack_u128(&mut wide, values.iter().copied(), width);
            prop_assert_eq!(narrow, wide);
        }

        #[test]
        fn the_loops_u64_reads_as_u64(
            bytes in varint_like_bytes(16, 13),
            start in 0usize..4,
        ) {
            let start = start.min(bytes.len());
            let (mut fast, mut reference) = (Reader::new(&bytes), Reader::new(&bytes));
            (fast.pos, reference.pos) = (start, start);
            prop_assert_eq!(fast.u64_in_loop(), reference.u64());
            prop_assert_eq!(fast.pos, reference.pos);
        }

        #[test]
        fn u64_round_trips(v in any::<u64>()) {
            let mut out = Vec::new();
            put_u64(&mut out, v);
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.u64().unwrap(), v);
            prop_assert!(r.is_done());
        }

        #[test]
        fn i64_round_trips(v in any::<i64>()) {
            let mut out = Vec::new();
            put_i64(&mut out, v);
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.i64().unwrap(), v);
        }
    }

    #[test]
    fn small_numbers_take_one_byte() {
        let mut out = Vec::new();
        put_u64(&mut out, 127);
        put_i64(&mut out, -64);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let mut r = Reader::new(&[0x80, 0x80]);
        assert!(matches!(r.u64(), Err(CoreError::Codec(_))));
        let mut r = Reader::new(&[5]);
        assert!(r.len(1).is_err());
    }
}
