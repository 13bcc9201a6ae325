//! A bounds-checked cursor over a received `Bytes`: every read is a typed error, never a
//! panic, and variable-length fields come out as zero-copy slices of the input.

use super::DecodeError;
use crate::token::Token;
use bytes::{Buf, Bytes};

/// Reads big-endian fields from the front of a `Bytes`.
#[derive(Debug, Clone)]
pub struct Reader {
    rest: Bytes,
}

impl Reader {
    /// A reader over `bytes`.
    pub fn new(bytes: Bytes) -> Self {
        Reader { rest: bytes }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn need(&self, n: usize, field: &'static str) -> Result<(), DecodeError> {
        if self.rest.len() < n {
            Err(DecodeError::Truncated { field })
        } else {
            Ok(())
        }
    }

    /// The next byte, not consumed (`None` at the end).
    pub fn peek_u8(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// One byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(1, field)?;
        Ok(self.rest.get_u8())
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.need(2, field)?;
        Ok(self.rest.get_u16())
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(4, field)?;
        Ok(self.rest.get_u32())
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.need(8, field)?;
        Ok(self.rest.get_u64())
    }

    /// A boolean byte: 0 or 1, anything else is a bad field.
    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::BadField {
                field,
                reason: "boolean must be 0 or 1",
            }),
        }
    }

    /// Exactly `n` bytes, as a slice of the input (no copy).
    pub fn bytes(&mut self, n: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        self.need(n, field)?;
        Ok(self.rest.split_to(n))
    }

    /// A `u8` length then that many bytes, the length at most `max`.
    pub fn bytes_u8(&mut self, max: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u8(field)?);
        if len > max {
            return Err(DecodeError::Oversized { field, len, max });
        }
        self.bytes(len, field)
    }

    /// A `u16` length then that many bytes, the length at most `max`.
    pub fn bytes_u16(&mut self, max: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(DecodeError::Oversized { field, len, max });
        }
        self.bytes(len, field)
    }

    /// A `u32` length then that many bytes, the length at most `max`.
    pub fn bytes_u32(&mut self, max: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u32(field)? as usize;
        if len > max {
            return Err(DecodeError::Oversized { field, len, max });
        }
        self.bytes(len, field)
    }

    /// A token: `[LEN u8][LEN bytes]`, 1 to [`Token::MAX_LEN`] bytes.
    pub fn token(&mut self, field: &'static str) -> Result<Token, DecodeError> {
        let len = usize::from(self.u8(field)?);
        if len == 0 {
            return Err(DecodeError::BadField {
                field,
                reason: "empty token",
            });
        }
        if len > Token::MAX_LEN {
            return Err(DecodeError::Oversized {
                field,
                len,
                max: Token::MAX_LEN,
            });
        }
        self.need(len, field)?;
        let token = Token::new(&self.rest[..len]).map_err(|_| DecodeError::BadField {
            field,
            reason: "invalid token",
        })?;
        self.rest.advance(len);
        Ok(token)
    }

    /// Everything left, as a slice of the input.
    pub fn rest(&mut self) -> Bytes {
        core::mem::take(&mut self.rest)
    }

    /// Succeeds only if nothing is left: layouts are exact, so that every accepted input has
    /// exactly one encoding.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.rest.len()))
        }
    }
}

/// Writes a token as `[LEN u8][bytes]`.
pub fn put_token(buf: &mut impl bytes::BufMut, token: &Token) {
    // Token::len() <= 64, fits a u8.
    buf.put_u8(token.len() as u8);
    buf.put_slice(token.as_bytes());
}
