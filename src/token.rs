//! Tokens: the secrets that name a session, and dop's merge.
//!
//! A [`Token`] is an opaque byte string of 1 to [`Token::MAX_LEN`] bytes, stored inline (no
//! allocation). Equality is constant-time over the bytes (the length is not secret), and
//! `Debug` never prints the bytes, so a token cannot leak through a log line.
//!
//! tether generates no randomness: tokens come from the caller ([`Token::new`]), who should
//! draw at least [`Token::SECURE_LEN`] bytes (128 bits) from a cryptographic source for
//! anything that can resume a session.

use core::fmt;
use subtle::ConstantTimeEq;

/// A session secret of 1 to [`Token::MAX_LEN`] bytes.
///
/// ```
/// use tether::Token;
/// let a = Token::new(b"AAAABBBB").unwrap();
/// let d = Token::new(b"DDDD").unwrap();
/// // dop's merge: cut the longer to the shorter's length, concatenate in byte order.
/// assert_eq!(a.merge(&d).as_bytes(), b"AAAADDDD");
/// assert_eq!(d.merge(&a), a.merge(&d));
/// // Debug does not print the secret.
/// assert!(!format!("{a:?}").contains("AAAA"));
/// ```
#[derive(Clone, Copy)]
pub struct Token {
    len: u8,
    bytes: [u8; Token::MAX_LEN],
}

/// Why bytes could not become a [`Token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// A token needs at least one byte.
    #[error("token is empty")]
    Empty,
    /// A token has at most [`Token::MAX_LEN`] bytes.
    #[error("token is {0} bytes, more than the maximum of {max}", max = Token::MAX_LEN)]
    TooLong(usize),
}

impl Token {
    /// The longest token: room for two 256-bit tokens merged.
    pub const MAX_LEN: usize = 64;
    /// The shortest token tether's own encodings accept for anything that can resume a
    /// session: 16 bytes, 128 bits.
    pub const SECURE_LEN: usize = 16;

    /// A token holding a copy of `bytes`.
    pub fn new(bytes: &[u8]) -> Result<Token, TokenError> {
        if bytes.is_empty() {
            return Err(TokenError::Empty);
        }
        if bytes.len() > Self::MAX_LEN {
            return Err(TokenError::TooLong(bytes.len()));
        }
        let mut buf = [0u8; Self::MAX_LEN];
        buf[..bytes.len()].copy_from_slice(bytes);
        Ok(Token {
            // Cannot truncate: checked against MAX_LEN (64) above.
            len: bytes.len() as u8,
            bytes: buf,
        })
    }

    /// A token of exactly `N` bytes; `N` is checked at compile time, so this cannot fail.
    pub(crate) fn from_array<const N: usize>(bytes: [u8; N]) -> Token {
        const { assert!(N >= 1 && N <= Token::MAX_LEN) };
        let mut buf = [0u8; Self::MAX_LEN];
        buf[..N].copy_from_slice(&bytes);
        Token {
            // N <= MAX_LEN (64), checked above.
            len: N as u8,
            bytes: buf,
        }
    }

    /// The token's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The token's length in bytes (never zero).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the token is at least [`Token::SECURE_LEN`] bytes long.
    pub fn is_secure(&self) -> bool {
        self.len() >= Self::SECURE_LEN
    }

    /// dop's `getUniqueToken`: cut the longer token to the shorter one's length, then
    /// concatenate the two in byte order (smaller first).
    ///
    /// The merge is commutative, so both ends compute the same session token without
    /// agreeing on who is "first", and its length is twice the shorter token's.
    /// Both halves fit: each is at most `MAX_LEN / 2` after the cut only if the shorter is;
    /// when the shorter token is longer than `MAX_LEN / 2`, each half is cut to `MAX_LEN / 2`
    /// so that the merge stays within `MAX_LEN` (dop never met this case: its tokens are 16).
    pub fn merge(&self, other: &Token) -> Token {
        let half = self.len().min(other.len()).min(Self::MAX_LEN / 2);
        let (a, b) = (&self.as_bytes()[..half], &other.as_bytes()[..half]);
        let (first, second) = if a <= b { (a, b) } else { (b, a) };
        let mut bytes = [0u8; Self::MAX_LEN];
        bytes[..half].copy_from_slice(first);
        bytes[half..2 * half].copy_from_slice(second);
        Token {
            // half <= 32, so 2 * half <= 64 fits a u8.
            len: (2 * half) as u8,
            bytes,
        }
    }
}

impl PartialEq for Token {
    /// Constant-time in the bytes; lengths are compared first (they are not secret).
    fn eq(&self, other: &Token) -> bool {
        self.len == other.len && bool::from(self.as_bytes().ct_eq(other.as_bytes()))
    }
}

impl Eq for Token {}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({} bytes)", self.len)
    }
}

impl TryFrom<&[u8]> for Token {
    type Error = TokenError;
    fn try_from(bytes: &[u8]) -> Result<Self, TokenError> {
        Token::new(bytes)
    }
}

/// Where a server's tokens come from: the caller's cryptographic randomness (tether draws
/// none of its own). Any `FnMut() -> Token` is one.
///
/// Both connection profiles' servers take one: the token-merge server for each new
/// transport's local token, the dual-channel server for tokens A and B.
///
/// ```
/// use tether::{Token, TokenSource};
/// let mut n = 0u8;
/// let mut source = move || { n += 1; Token::new(&[n; 16]).unwrap() };
/// assert_ne!(source.next_token(), source.next_token());
/// ```
pub trait TokenSource {
    /// A fresh, unpredictable token (at least [`Token::SECURE_LEN`] bytes unless the
    /// profile is configured for short tokens).
    fn next_token(&mut self) -> Token;
}

impl<F: FnMut() -> Token> TokenSource for F {
    fn next_token(&mut self) -> Token {
        self()
    }
}

/// Up to four tokens, each optional, stored at their used length: inline while their
/// lengths add up to at most [`TokenPack::INLINE`] bytes (a 16-byte local token, a 16-byte
/// remote token, their 32-byte merge and a 16-byte key: the token-merge server's session),
/// else in one boxed slice of exactly their length. A [`Token`] is 65 bytes inline whatever
/// its length; a registry of idle sessions keeps its tokens in one of these instead.
///
/// Tokens come out as [`Token`] values ([`TokenPack::get`]), so every comparison is still
/// [`Token`]'s constant-time one. `Debug` prints only the lengths.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum TokenPack {
    /// The lengths (0: absent; a token is never empty) and the bytes, one token after the
    /// other, zero-padded.
    Inline([u8; 4], [u8; TokenPack::INLINE]),
    /// The lengths and exactly the bytes.
    Boxed([u8; 4], alloc::boxed::Box<[u8]>),
}

impl TokenPack {
    /// The bytes held inline.
    pub const INLINE: usize = 80;

    /// The tokens given, in order (`None`: absent).
    pub fn new(tokens: [Option<&Token>; 4]) -> TokenPack {
        // A token is 1 to 64 bytes: its length fits a u8.
        let lens = tokens.map(|t| t.map_or(0, |t| t.len));
        let total: usize = lens.iter().map(|&l| usize::from(l)).sum();
        let bytes = tokens
            .iter()
            .flatten()
            .flat_map(|t| t.as_bytes().iter().copied());
        if total <= Self::INLINE {
            let mut buf = [0u8; Self::INLINE];
            for (d, s) in buf.iter_mut().zip(bytes) {
                *d = s;
            }
            TokenPack::Inline(lens, buf)
        } else {
            TokenPack::Boxed(lens, bytes.collect())
        }
    }

    /// Token `i` (0 to 3), if present.
    pub fn get(&self, i: usize) -> Option<Token> {
        let (lens, bytes): (&[u8; 4], &[u8]) = match self {
            TokenPack::Inline(l, b) => (l, b),
            TokenPack::Boxed(l, b) => (l, b),
        };
        let start: usize = lens.get(..i)?.iter().map(|&l| usize::from(l)).sum();
        let len = usize::from(*lens.get(i)?);
        if len == 0 {
            return None;
        }
        Token::new(bytes.get(start..start + len)?).ok()
    }

    /// Bytes on the heap (none while inline).
    #[cfg(test)]
    pub fn heap_bytes(&self) -> usize {
        match self {
            TokenPack::Inline(..) => 0,
            TokenPack::Boxed(_, b) => b.len(),
        }
    }
}

impl fmt::Debug for TokenPack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (TokenPack::Inline(lens, _) | TokenPack::Boxed(lens, _)) = self;
        write!(f, "TokenPack({lens:?} bytes)")
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Token {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let len = u.int_in_range(1..=Self::MAX_LEN)?;
        let bytes = u.bytes(len)?;
        Token::new(bytes).map_err(|_| arbitrary::Error::IncorrectFormat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_and_too_long() {
        assert_eq!(Token::new(b"").unwrap_err(), TokenError::Empty);
        assert_eq!(Token::new(&[0; 65]).unwrap_err(), TokenError::TooLong(65));
        assert!(Token::new(&[0; 64]).is_ok());
    }

    #[test]
    fn merge_of_the_seed_example() {
        let aaaa = Token::new(b"AAAA").unwrap();
        let bbbb = Token::new(b"BBBB").unwrap();
        assert_eq!(bbbb.merge(&aaaa).as_bytes(), b"AAAABBBB");
    }

    #[test]
    fn merge_of_long_tokens_stays_within_max() {
        let a = Token::new(&[b'z'; 64]).unwrap();
        let b = Token::new(&[b'a'; 40]).unwrap();
        let m = a.merge(&b);
        assert_eq!(m.len(), 64);
        assert_eq!(&m.as_bytes()[..32], &[b'a'; 32]);
    }

    #[test]
    fn a_pack_keeps_its_tokens_at_their_used_length() {
        let (a, b) = (Token::new(&[1; 16]).unwrap(), Token::new(&[2; 16]).unwrap());
        let (m, k) = (a.merge(&b), Token::new(&[3; 16]).unwrap());
        let p = TokenPack::new([Some(&a), Some(&b), Some(&m), Some(&k)]);
        assert!(matches!(p, TokenPack::Inline(..)));
        assert_eq!(
            [p.get(0), p.get(1), p.get(2), p.get(3), p.get(4)],
            [Some(a), Some(b), Some(m), Some(k), None]
        );
        let q = TokenPack::new([Some(&m), None, Some(&a), None]);
        assert_eq!(
            [q.get(0), q.get(1), q.get(2), q.get(3)],
            [Some(m), None, Some(a), None]
        );
        // Longer tokens: exactly their bytes on the heap.
        let (x, y) = (Token::new(&[9; 64]).unwrap(), Token::new(&[8; 40]).unwrap());
        let r = TokenPack::new([Some(&x), Some(&y), Some(&x.merge(&y)), None]);
        assert_eq!(r.heap_bytes(), 64 + 40 + 64);
        assert_eq!(
            [r.get(0), r.get(1), r.get(2), r.get(3)],
            [Some(x), Some(y), Some(x.merge(&y)), None]
        );
        assert!(!alloc::format!("{r:?}").contains("9"));
        assert!(core::mem::size_of::<TokenPack>() <= 88);
    }

    #[test]
    fn equality_looks_at_length_and_bytes() {
        let a = Token::new(b"abcd").unwrap();
        assert_eq!(a, Token::new(b"abcd").unwrap());
        assert_ne!(a, Token::new(b"abce").unwrap());
        assert_ne!(a, Token::new(b"abc").unwrap());
    }
}
