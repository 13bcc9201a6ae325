//! Deterministic token sources for tests, benches and fuzz targets: tether takes its
//! randomness from the caller, and a test wants to know (or at least replay) every token.
//! Never for a real server: these are predictable on purpose.

use crate::token::{Token, TokenSource};

/// Tokens 1, 2, 3, ...: the n-th is 16 bytes of the value `n` (wrapping after 255), so that
/// a test can write down the token it expects (`Token::new(&[2; 16])` is the second).
///
/// ```
/// use tether::testkit::CountingTokens;
/// use tether::{Token, TokenSource};
/// let mut tokens = CountingTokens::new();
/// assert_eq!(tokens.next_token(), Token::new(&[1; 16]).unwrap());
/// assert_eq!(tokens.next_token(), Token::new(&[2; 16]).unwrap());
/// assert_eq!(tokens.issued(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CountingTokens(u8);

impl CountingTokens {
    /// A source whose first token is `[1; 16]`.
    pub const fn new() -> Self {
        CountingTokens(0)
    }

    /// How many tokens it gave (modulo 256).
    pub const fn issued(&self) -> u8 {
        self.0
    }
}

impl TokenSource for CountingTokens {
    fn next_token(&mut self) -> Token {
        self.0 = self.0.wrapping_add(1);
        token_from([self.0; 16])
    }
}

/// Deterministic 128-bit tokens from a seed (a linear congruential sequence): distinct for
/// 2^64 draws, and different seeds give different sequences. The scenario model's servers
/// use it; so can any test that needs many distinct tokens it does not write down.
///
/// ```
/// use tether::testkit::SeqTokens;
/// use tether::TokenSource;
/// let (mut a, mut b) = (SeqTokens::new(7), SeqTokens::new(7));
/// let first = a.next_token();
/// assert_eq!(first, b.next_token()); // same seed, same tokens
/// assert_ne!(first, a.next_token());
/// assert!(first.is_secure());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeqTokens(u64);

impl SeqTokens {
    /// A sequence starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SeqTokens(seed)
    }

    fn next(&mut self) -> Token {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.0.to_be_bytes());
        b[8..].copy_from_slice(&(!self.0).to_be_bytes());
        token_from(b)
    }
}

impl TokenSource for SeqTokens {
    fn next_token(&mut self) -> Token {
        self.next()
    }
}

/// A 16-byte token: within [`Token`]'s length bounds, so never refused.
pub(crate) fn token_from(b: [u8; 16]) -> Token {
    Token::new(&b).unwrap_or_else(|_| unreachable!("16 bytes always make a token"))
}
