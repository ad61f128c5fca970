//! Byte-level encoding shared by every on-disk format: little-endian fixed-width
//! integers, LEB128 varints, zigzag for signed values, and a bounds-checked reader.
//!
//! One byte order everywhere (little-endian); lengths and offsets are fixed-width
//! integers or varints on disk, never `usize`.

/// Appends `v` as an unsigned LEB128 varint (at most 10 bytes).
#[inline]
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` zigzag-encoded as a varint, so small negative numbers stay short.
#[inline]
pub fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag(v));
}

/// Maps signed to unsigned so that values near zero get small codes.
#[inline]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
#[inline]
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends a little-endian `u16`.
#[inline]
pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a little-endian `u32`.
#[inline]
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a little-endian `u64`.
#[inline]
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a little-endian `i64`.
#[inline]
pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a varint length followed by the bytes.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Why a [`Reader`] could not decode a value; the caller adds file and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeFault {
    /// The input ended before the value did.
    Truncated,
    /// A varint ran past 10 bytes or overflowed 64 bits.
    BadVarint,
    /// A declared length exceeds what remains or a sane limit.
    BadLength,
    /// Bytes that should be UTF-8 were not.
    BadUtf8,
}

impl std::fmt::Display for DecodeFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DecodeFault::Truncated => "truncated value",
            DecodeFault::BadVarint => "malformed varint",
            DecodeFault::BadLength => "length out of bounds",
            DecodeFault::BadUtf8 => "invalid UTF-8",
        })
    }
}

/// A cursor over untrusted bytes: every read is bounds-checked and fails with a
/// [`DecodeFault`] instead of panicking.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True when every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Takes the next `n` bytes.
    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeFault> {
        let end = self.pos.checked_add(n).ok_or(DecodeFault::BadLength)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeFault::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeFault> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// Reads one byte.
    #[inline]
    pub fn u8(&mut self) -> Result<u8, DecodeFault> {
        let b = *self.buf.get(self.pos).ok_or(DecodeFault::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads a little-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, DecodeFault> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeFault> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeFault> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian `i64`.
    pub fn i64(&mut self) -> Result<i64, DecodeFault> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// Reads an unsigned LEB128 varint.
    #[inline]
    pub fn uvarint(&mut self) -> Result<u64, DecodeFault> {
        // Fast path: most varints in cell columns are one byte.
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        let mut v: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err(DecodeFault::BadVarint);
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err(DecodeFault::BadVarint);
            }
        }
    }

    /// Reads a zigzag varint.
    #[inline]
    pub fn ivarint(&mut self) -> Result<i64, DecodeFault> {
        Ok(unzigzag(self.uvarint()?))
    }

    /// Reads a varint that must fit in `u32`.
    pub fn uvarint32(&mut self) -> Result<u32, DecodeFault> {
        u32::try_from(self.uvarint()?).map_err(|_| DecodeFault::BadVarint)
    }

    /// Reads a varint length (at most `max`) followed by that many bytes.
    pub fn bytes(&mut self, max: usize) -> Result<&'a [u8], DecodeFault> {
        let n = self.uvarint()?;
        let n = usize::try_from(n).map_err(|_| DecodeFault::BadLength)?;
        if n > max || n > self.remaining() {
            return Err(DecodeFault::BadLength);
        }
        self.take(n)
    }

    /// Reads a varint-length UTF-8 string of at most `max` bytes.
    pub fn str(&mut self, max: usize) -> Result<&'a str, DecodeFault> {
        std::str::from_utf8(self.bytes(max)?).map_err(|_| DecodeFault::BadUtf8)
    }

    /// Reads a count that will size an allocation: it may not exceed the bytes left
    /// divided by the smallest encoding of one element.
    pub fn count(&mut self, min_elem_bytes: usize) -> Result<usize, DecodeFault> {
        let n = usize::try_from(self.uvarint()?).map_err(|_| DecodeFault::BadLength)?;
        if n.saturating_mul(min_elem_bytes.max(1)) > self.remaining() {
            return Err(DecodeFault::BadLength);
        }
        Ok(n)
    }
}

/// CRC32 (Castagnoli is not used; this is the IEEE polynomial from `crc32fast`).
#[inline]
pub fn crc32(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        let values = [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX];
        for v in values {
            let mut out = Vec::new();
            put_uvarint(&mut out, v);
            assert!(out.len() <= 10);
            assert_eq!(Reader::new(&out).uvarint(), Ok(v));
        }
        for v in [0i64, 1, -1, 63, -64, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            put_ivarint(&mut out, v);
            assert_eq!(Reader::new(&out).ivarint(), Ok(v));
        }
    }

    #[test]
    fn overlong_varints_are_rejected() {
        assert_eq!(
            Reader::new(&[0xff; 11]).uvarint(),
            Err(DecodeFault::BadVarint)
        );
        let mut ten = vec![0xffu8; 9];
        ten.push(0x02); // bit 64 set
        assert_eq!(Reader::new(&ten).uvarint(), Err(DecodeFault::BadVarint));
        assert_eq!(Reader::new(&[0x80]).uvarint(), Err(DecodeFault::Truncated));
    }

    #[test]
    fn lengths_are_checked_before_use() {
        let mut out = Vec::new();
        put_uvarint(&mut out, 1 << 40);
        assert_eq!(Reader::new(&out).bytes(1024), Err(DecodeFault::BadLength));
        assert_eq!(Reader::new(&out).count(1), Err(DecodeFault::BadLength));
    }
}
