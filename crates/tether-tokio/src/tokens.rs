//! Session tokens from the operating system's randomness.

use tether::{Token, TokenSource};

/// A [`TokenSource`] that draws every token ([`Token::SECURE_LEN`] bytes, 128 bits) from
/// the operating system's cryptographic randomness (`getrandom`): what a server built on
/// this adapter gives its connection machine, and what a token-merge client draws its own
/// token from.
///
/// ```
/// use tether::connect::merge::MergeServer;
/// use tether::TokenSource;
/// use tether_tokio::OsTokens;
/// let server = MergeServer::new(Default::default(), OsTokens);
/// let client_token = OsTokens.next_token();
/// assert!(client_token.is_secure());
/// # let _ = server;
/// ```
///
/// # Panics
///
/// If the operating system has no randomness to give (`getrandom` fails: on Linux, only
/// before the kernel's pool is first seeded at boot), as std's `HashMap` seeding does:
/// a server must not hand out guessable tokens instead.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsTokens;

impl TokenSource for OsTokens {
    fn next_token(&mut self) -> Token {
        let mut bytes = [0; Token::SECURE_LEN];
        getrandom::fill(&mut bytes).expect("the operating system's randomness");
        Token::new(&bytes).expect("SECURE_LEN bytes make a token")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_secure_and_differ() {
        let (a, b) = (OsTokens.next_token(), OsTokens.next_token());
        assert!(a.is_secure() && b.is_secure());
        assert_eq!(a.as_bytes().len(), Token::SECURE_LEN);
        assert_ne!(a, b);
    }
}
