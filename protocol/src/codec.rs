//! Wire primitives shared by every message: fixed-width little-endian integers, LEB128
//! varints (unsigned, and zigzag for signed values), length-prefixed byte strings and
//! UTF-8 strings, booleans and element counts.
//!
//! Decoders are nom parsers over `&[u8]` that name the field they read, so every
//! failure becomes a precise [`DecodeError`]. Encoders append to any [`BufMut`] and never
//! allocate beyond growing the buffer.

use bytes::BufMut;
use nom::bytes::complete::take;
use nom::number::complete::{le_f64, le_i64, le_u16, le_u32, le_u64, le_u8};
use nom::IResult;

use crate::error::DecodeError;

/// Result of a crate parser: the rest of the input and the value.
pub(crate) type PResult<'a, T> = IResult<&'a [u8], T, DecodeError>;

/// Largest encoding of a `u32` varint.
pub const MAX_VARINT32_LEN: usize = 5;
/// Largest encoding of a `u64` varint.
pub const MAX_VARINT64_LEN: usize = 10;

pub(crate) fn truncated(what: &'static str) -> nom::Err<DecodeError> {
    nom::Err::Error(DecodeError::Truncated { what })
}

pub(crate) fn invalid(what: &'static str, reason: &'static str) -> nom::Err<DecodeError> {
    nom::Err::Error(DecodeError::Invalid { what, reason })
}

/// Runs a payload parser over a complete payload: nom errors become the inner
/// [`DecodeError`] and leftover bytes are [`DecodeError::TrailingBytes`].
pub(crate) fn run<'a, T>(
    input: &'a [u8],
    parser: impl FnOnce(&'a [u8]) -> PResult<'a, T>,
) -> Result<T, DecodeError> {
    match parser(input) {
        Ok(([], value)) => Ok(value),
        Ok((rest, _)) => Err(DecodeError::TrailingBytes { extra: rest.len() }),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(e),
        Err(nom::Err::Incomplete(_)) => Err(DecodeError::Truncated { what: "payload" }),
    }
}

macro_rules! fixed {
    ($(#[$doc:meta])* $name:ident, $ty:ty, $nom:ident) => {
        $(#[$doc])*
        pub(crate) fn $name<'a>(i: &'a [u8], what: &'static str) -> PResult<'a, $ty> {
            $nom::<&[u8], DecodeError>(i).map_err(|_| truncated(what))
        }
    };
}

fixed!(
    /// One byte.
    u8_, u8, le_u8
);
fixed!(
    /// Little-endian `u16`.
    u16_le, u16, le_u16
);
fixed!(
    /// Little-endian `u32`.
    u32_le, u32, le_u32
);
fixed!(
    /// Little-endian `u64`.
    u64_le, u64, le_u64
);
fixed!(
    /// Little-endian two's complement `i64`.
    i64_le, i64, le_i64
);
fixed!(
    /// Little-endian IEEE 754 binary64.
    f64_le, f64, le_f64
);

/// A boolean byte: `0` or `1`, anything else is invalid.
pub(crate) fn bool_<'a>(i: &'a [u8], what: &'static str) -> PResult<'a, bool> {
    let (i, b) = u8_(i, what)?;
    match b {
        0 => Ok((i, false)),
        1 => Ok((i, true)),
        _ => Err(invalid(what, "boolean must be 0 or 1")),
    }
}

/// Unsigned LEB128 of at most `max_len` bytes holding at most `bits` bits.
fn varint<'a>(i: &'a [u8], what: &'static str, max_len: usize, bits: u32) -> PResult<'a, u64> {
    let mut value = 0u64;
    for (n, &byte) in i.iter().enumerate().take(max_len) {
        let shift = 7 * n as u32;
        let chunk = u64::from(byte & 0x7f);
        if n + 1 == max_len && (byte & 0x80 != 0 || chunk >> (bits - shift) != 0) {
            return Err(invalid(what, "varint overflows its type"));
        }
        value |= chunk << shift;
        if byte & 0x80 == 0 {
            return Ok((&i[n + 1..], value));
        }
    }
    Err(truncated(what))
}

/// Unsigned LEB128 `u32` (at most 5 bytes).
pub(crate) fn varint_u32<'a>(i: &'a [u8], what: &'static str) -> PResult<'a, u32> {
    let (i, v) = varint(i, what, MAX_VARINT32_LEN, 32)?;
    // `varint` has already checked that at most 32 bits are set.
    Ok((i, v as u32))
}

/// Unsigned LEB128 `u64` (at most 10 bytes).
pub(crate) fn varint_u64<'a>(i: &'a [u8], what: &'static str) -> PResult<'a, u64> {
    varint(i, what, MAX_VARINT64_LEN, 64)
}

/// Zigzag-mapped LEB128 `i64` (at most 10 bytes).
pub(crate) fn varint_i64<'a>(i: &'a [u8], what: &'static str) -> PResult<'a, i64> {
    let (i, v) = varint_u64(i, what)?;
    Ok((i, unzigzag(v)))
}

/// Byte string: `varint u32` length, then that many bytes. Longer than `max` is invalid.
pub(crate) fn bytes_<'a>(i: &'a [u8], what: &'static str, max: usize) -> PResult<'a, &'a [u8]> {
    let (i, len) = varint_u32(i, what)?;
    if len as usize > max {
        return Err(invalid(what, "longer than its limit"));
    }
    take::<u32, &[u8], DecodeError>(len)(i).map_err(|_| truncated(what))
}

/// UTF-8 string: a byte string that must be valid UTF-8.
pub(crate) fn str_<'a>(i: &'a [u8], what: &'static str, max: usize) -> PResult<'a, &'a str> {
    let (i, b) = bytes_(i, what, max)?;
    match std::str::from_utf8(b) {
        Ok(s) => Ok((i, s)),
        Err(_) => Err(invalid(what, "not valid UTF-8")),
    }
}

/// Optional UTF-8 string: a boolean byte, then the string when it is `1`.
pub(crate) fn opt_str<'a>(
    i: &'a [u8],
    what: &'static str,
    max: usize,
) -> PResult<'a, Option<&'a str>> {
    let (i, present) = bool_(i, what)?;
    if present {
        let (i, s) = str_(i, what, max)?;
        Ok((i, Some(s)))
    } else {
        Ok((i, None))
    }
}

/// Element count as a `varint u32`, checked against the bytes left: each element takes at
/// least `min_elem_len` bytes, so a count that cannot fit is rejected before any
/// `Vec::with_capacity`.
pub(crate) fn count<'a>(
    i: &'a [u8],
    what: &'static str,
    min_elem_len: usize,
) -> PResult<'a, usize> {
    let (i, n) = varint_u32(i, what)?;
    let n = checked_count(i, n, what, min_elem_len)?;
    Ok((i, n))
}

/// Checks an already-read count against the bytes left (see [`count`]).
pub(crate) fn checked_count(
    rest: &[u8],
    n: u32,
    what: &'static str,
    min_elem_len: usize,
) -> Result<usize, nom::Err<DecodeError>> {
    let n = n as usize;
    if n.saturating_mul(min_elem_len) > rest.len() {
        return Err(truncated(what));
    }
    Ok(n)
}

/// Maps a signed value so small magnitudes get short varints.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Number of bytes the LEB128 encoding of `v` takes.
pub fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends `v` as unsigned LEB128.
pub fn put_varint(out: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// Appends `v` as zigzag LEB128.
pub fn put_varint_i64(out: &mut impl BufMut, v: i64) {
    put_varint(out, zigzag(v));
}

/// Appends a byte string (`varint` length + bytes).
///
/// The length must fit a `u32`; longer inputs produce a frame the peer rejects.
pub fn put_bytes(out: &mut impl BufMut, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.put_slice(b);
}

/// Appends a UTF-8 string (`varint` length + bytes).
pub fn put_str(out: &mut impl BufMut, s: &str) {
    put_bytes(out, s.as_bytes());
}

/// Appends an optional string (boolean byte, then the string when present).
pub(crate) fn put_opt_str(out: &mut impl BufMut, s: Option<&str>) {
    match s {
        Some(s) => {
            out.put_u8(1);
            put_str(out, s);
        }
        None => out.put_u8(0),
    }
}

/// Appends a count (`varint u32`).
pub(crate) fn put_count(out: &mut impl BufMut, n: usize) {
    put_varint(out, n as u64);
}

/// Encoded size of a byte string.
pub(crate) fn bytes_len(b: &[u8]) -> usize {
    varint_len(b.len() as u64) + b.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        out
    }

    #[test]
    fn varint_known_encodings() {
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(1), [0x01]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(u64::MAX).len(), 10);
        assert_eq!(zigzag(0), 0);
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        assert_eq!(zigzag(i64::MIN), u64::MAX);
    }

    #[test]
    fn varint_u32_limits() {
        assert_eq!(
            varint_u32(&[0xff, 0xff, 0xff, 0xff, 0x0f], "x"),
            Ok((&[][..], u32::MAX))
        );
        // A 33rd bit, a sixth byte, and an unterminated varint are all refused.
        assert_eq!(
            varint_u32(&[0xff, 0xff, 0xff, 0xff, 0x1f], "x"),
            Err(invalid("x", "varint overflows its type"))
        );
        assert_eq!(
            varint_u32(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01], "x"),
            Err(invalid("x", "varint overflows its type"))
        );
        assert_eq!(varint_u32(&[0x80, 0x80], "x"), Err(truncated("x")));
        assert_eq!(varint_u32(&[], "x"), Err(truncated("x")));
    }

    #[test]
    fn varint_u64_limits() {
        let max = enc(u64::MAX);
        assert_eq!(varint_u64(&max, "x"), Ok((&[][..], u64::MAX)));
        let mut over = max.clone();
        over[9] = 0x02;
        assert_eq!(
            varint_u64(&over, "x"),
            Err(invalid("x", "varint overflows its type"))
        );
    }

    #[test]
    fn strings_check_limits_and_utf8() {
        assert_eq!(str_(b"\x02hi!", "s", 2), Ok((&b"!"[..], "hi")));
        assert_eq!(
            str_(b"\x03hi!", "s", 2),
            Err(invalid("s", "longer than its limit"))
        );
        assert_eq!(str_(b"\x05hi", "s", 9), Err(truncated("s")));
        assert_eq!(
            str_(b"\x01\xff", "s", 9),
            Err(invalid("s", "not valid UTF-8"))
        );
    }

    #[test]
    fn count_is_checked_against_remaining_bytes() {
        // Declares u32::MAX elements of at least 2 bytes with 3 bytes left.
        let input = [0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3];
        assert_eq!(count(&input, "n", 2), Err(truncated("n")));
        assert_eq!(count(&[1, 0, 0], "n", 2), Ok((&[0u8, 0][..], 1)));
    }

    proptest! {
        #[test]
        fn varint_round_trip(v in any::<u64>()) {
            let b = enc(v);
            prop_assert_eq!(b.len(), varint_len(v));
            prop_assert_eq!(varint_u64(&b, "v"), Ok((&[][..], v)));
        }

        #[test]
        fn zigzag_round_trip(v in any::<i64>()) {
            prop_assert_eq!(unzigzag(zigzag(v)), v);
        }
    }
}
