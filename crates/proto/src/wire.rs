//! The canonical binary encoding every signed byte goes through.
//!
//! One value has exactly one encoding: integers are minimal unsigned LEB128, byte strings and
//! lists carry their length, options a 0/1 tag. The decoder rejects anything else (non-minimal
//! integers, bad tags, invalid UTF-8, trailing bytes), so `encode(decode(b)) == b` for every
//! accepted `b`, which is what lets us hash and sign the bytes we received.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("unexpected end of input while reading {0}")]
    Truncated(&'static str),
    #[error("integer is not minimally encoded or overflows 64 bits")]
    BadInteger,
    #[error("{field} is {len} bytes, more than the limit of {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{0} is not valid UTF-8")]
    BadUtf8(&'static str),
    #[error("invalid tag {tag} for {field}")]
    BadTag { field: &'static str, tag: u64 },
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
    #[error("{0}")]
    Invalid(&'static str),
}

#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn uint(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.push(byte);
                return;
            }
            self.buf.push(byte | 0x80);
        }
    }

    pub fn u64_be(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn fixed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub fn bytes(&mut self, bytes: &[u8]) {
        self.uint(bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
    }

    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    pub fn bool(&mut self, v: bool) {
        self.buf.push(v as u8);
    }

    pub fn option<T>(&mut self, v: Option<&T>, write: impl FnOnce(&mut Self, &T)) {
        match v {
            None => self.buf.push(0),
            Some(v) => {
                self.buf.push(1);
                write(self, v);
            }
        }
    }
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() - self.pos < n {
            return Err(DecodeError::Truncated(what));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub fn uint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = self.u8(what)?;
            let payload = u64::from(byte & 0x7f);
            if i == 9 && payload > 1 {
                return Err(DecodeError::BadInteger);
            }
            value |= payload << (7 * i);
            if byte & 0x80 == 0 {
                if byte == 0 && i > 0 {
                    return Err(DecodeError::BadInteger);
                }
                return Ok(value);
            }
        }
        Err(DecodeError::BadInteger)
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        u32::try_from(self.uint(what)?).map_err(|_| DecodeError::BadInteger)
    }

    pub fn u64_be(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array::<8>(what)?))
    }

    pub fn bytes(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.uint(what)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > max {
            return Err(DecodeError::TooLong {
                field: what,
                len,
                max,
            });
        }
        self.take(len, what)
    }

    pub fn str(&mut self, what: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes(what, max)?).map_err(|_| DecodeError::BadUtf8(what))
    }

    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::BadTag {
                field: what,
                tag: tag.into(),
            }),
        }
    }

    pub fn option<T>(
        &mut self,
        what: &'static str,
        read: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        if self.bool(what)? {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn uint_vectors() {
        for (value, bytes) in [
            (0u64, vec![0x00]),
            (1, vec![0x01]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (300, vec![0xac, 0x02]),
            (
                u64::MAX,
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut w = Writer::new();
            w.uint(value);
            assert_eq!(w.into_bytes(), bytes);
            assert_eq!(Reader::new(&bytes).uint("v"), Ok(value));
        }
    }

    #[test]
    fn non_minimal_and_overflowing_integers_are_rejected() {
        for bad in [
            &[0x80, 0x00][..],
            &[0xff, 0x00],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            &[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        ] {
            assert_eq!(Reader::new(bad).uint("v"), Err(DecodeError::BadInteger));
        }
        assert_eq!(
            Reader::new(&[0x80]).uint("v"),
            Err(DecodeError::Truncated("v"))
        );
    }

    proptest! {
        #[test]
        fn uint_round_trips(v: u64) {
            let mut w = Writer::new();
            w.uint(v);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(r.uint("v"), Ok(v));
            prop_assert!(r.finish().is_ok());
        }

        #[test]
        fn reader_never_panics(bytes: Vec<u8>) {
            let mut r = Reader::new(&bytes);
            let _ = r.uint("a");
            let _ = r.str("b", 16);
            let _ = r.option("c", |r| r.array::<4>("d"));
        }
    }
}
