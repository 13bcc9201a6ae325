//! Randomness from the operating system ([`getrandom`]), for what tether leaves to its
//! caller: a client's token, a server's [`TokenSource`], a journal's epoch, resource ids.
//!
//! ```
//! use tether::connect::merge::{MergeClient, MergeServer};
//! use tether::sync::journal::MemJournal;
//! use tether::Instant;
//! use tether_tokio::random;
//!
//! let client = MergeClient::new(Instant::ZERO, Default::default(), random::token()).unwrap();
//! let server = MergeServer::new(Default::default(), random::Tokens);
//! let journal = MemJournal::new(random::u64(), 10_000); // its epoch
//! # let _ = (client, server, journal);
//! ```
//!
//! Each function **panics** if the operating system has no randomness to give (getrandom
//! fails only where there is no source at all: no `getrandom` system call and no
//! `/dev/urandom`), since tether's tokens and epochs must not be guessable and there is
//! nothing sound to fall back to.

use tether::{Token, TokenSource};

/// `N` random bytes from the operating system.
///
/// # Panics
///
/// If the operating system has no randomness source (see the [module docs](self)).
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut b = [0; N];
    if let Err(e) = getrandom::fill(&mut b) {
        panic!("the operating system has no randomness to give: {e}");
    }
    b
}

/// A random token of [`Token::SECURE_LEN`] bytes (a client's token, or a resource id
/// that never repeats: `random::token().as_bytes()`).
///
/// # Panics
///
/// If the operating system has no randomness source (see the [module docs](self)).
pub fn token() -> Token {
    match Token::new(&bytes::<{ Token::SECURE_LEN }>()) {
        Ok(token) => token,
        Err(_) => unreachable!("SECURE_LEN bytes make a token"),
    }
}

/// A random `u64` (a journal's epoch).
///
/// # Panics
///
/// If the operating system has no randomness source (see the [module docs](self)).
pub fn u64() -> u64 {
    u64::from_le_bytes(bytes())
}

/// A server's [`TokenSource`]: each token is [`token`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens;

impl TokenSource for Tokens {
    fn next_token(&mut self) -> Token {
        token()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_secure_length_and_differ() {
        let (a, b) = (token(), Tokens.next_token());
        assert_eq!(a.as_bytes().len(), Token::SECURE_LEN);
        assert_ne!(a.as_bytes(), b.as_bytes());
        assert_ne!(u64(), u64());
        assert_ne!(bytes::<32>(), bytes::<32>());
    }
}
