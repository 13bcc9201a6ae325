//! Keyed fingerprints of tokens: what the server's indexes (sessions by secret, ended
//! sessions' tombstones) are ordered by.
//!
//! A fingerprint is SipHash-2-4 of the token's bytes under a 128-bit key the server draws
//! once, from the caller's [`TokenSource`](crate::TokenSource), when it is created (tether
//! has no randomness of its own). SipHash is a pseudorandom function made for exactly this
//! (hash tables that attackers fill): without the key, a peer cannot choose tokens that
//! share a fingerprint, so it cannot pile candidates onto one index entry and make every
//! lookup compare against all of them. An unkeyed hash (the FNV used before) let it.
//!
//! Fingerprints only narrow the search: every candidate is still compared whole, in
//! constant time, so a collision costs one comparison and never a wrong match.

use crate::token::Token;

/// The key of a server's fingerprints.
#[derive(Clone, Copy)]
pub(crate) struct TokenKey {
    k0: u64,
    k1: u64,
}

impl core::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The key is a secret: it would let a peer forge collisions.
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from a token the caller drew for it (never sent anywhere). Every byte of the
    /// token counts: a token of at least 16 random bytes gives a full 128-bit key.
    pub fn from_token(t: &Token) -> TokenKey {
        TokenKey {
            k0: siphash24(0, 0, t.as_bytes(), 0),
            k1: siphash24(0, 0, t.as_bytes(), 1),
        }
    }

    /// A 16-byte key derived from `t` under this key (SipHash-2-4 as the pseudorandom
    /// function it is, twice, with two domain bytes): a session's secrets key from the
    /// server's master key and its merged token.
    pub fn derive(&self, t: &Token) -> Token {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&siphash24(self.k0, self.k1, t.as_bytes(), 0).to_be_bytes());
        b[8..].copy_from_slice(&siphash24(self.k0, self.k1, t.as_bytes(), 1).to_be_bytes());
        Token::from_array(b)
    }

    /// The token's fingerprint under this key.
    pub fn fingerprint(&self, t: &Token) -> u64 {
        siphash24(self.k0, self.k1, t.as_bytes(), 0xff)
    }
}

/// Bytes of a resumption secret: `[LOCATOR u64][GENERATION u32][TAG 16 bytes]`.
pub(crate) const SECRET_LEN: usize = 28;

/// A session's resumption secrets (tether's encoding), all derived from one key of the
/// session's own (itself derived from the server's master key, which the caller's token
/// source gave, and the session's merged token). Generation `g`'s secret is
/// `[LOCATOR][g][TAG]`: the locator (derived from the key) names the session in the
/// server's index, and the tag (SipHash-2-4 of `g` under the key, twice, with two domain
/// bytes: 128 bits) proves the secret was issued by a holder of the key. Deriving rather
/// than drawing each secret is what lets a server restored from an older copy of its
/// sessions still check the newer secrets its clients present (its copy holds the key and
/// an older oldest-accepted generation), and a secret older than the oldest accepted one is
/// refused wherever the session lives.
#[derive(Clone, Copy)]
pub(crate) struct SecretKey {
    key: TokenKey,
}

impl core::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    pub fn from_token(t: &Token) -> SecretKey {
        SecretKey {
            key: TokenKey::from_token(t),
        }
    }

    /// The session's name in the index: not secret on its own (it travels inside every
    /// secret), but a peer can neither choose it nor forge a tag for it.
    pub fn locator(&self) -> u64 {
        siphash24(self.key.k0, self.key.k1, b"locator", 0xff)
    }

    fn tag(&self, generation: u32) -> [u8; 16] {
        let g = generation.to_be_bytes();
        let mut tag = [0u8; 16];
        tag[..8].copy_from_slice(&siphash24(self.key.k0, self.key.k1, &g, 0).to_be_bytes());
        tag[8..].copy_from_slice(&siphash24(self.key.k0, self.key.k1, &g, 1).to_be_bytes());
        tag
    }

    /// Generation `generation`'s secret.
    pub fn secret(&self, generation: u32) -> Token {
        let mut b = [0u8; SECRET_LEN];
        b[..8].copy_from_slice(&self.locator().to_be_bytes());
        b[8..12].copy_from_slice(&generation.to_be_bytes());
        b[12..].copy_from_slice(&self.tag(generation));
        Token::from_array(b)
    }

    /// The generation of `t` if it is a secret of this key (the tag compared in constant
    /// time).
    pub fn open(&self, t: &Token) -> Option<u32> {
        let (loc, generation) = parse(t)?;
        let expected = self.secret(generation);
        (loc == self.locator() && expected == *t).then_some(generation)
    }
}

/// The locator and generation a secret claims (not yet checked).
pub(crate) fn parse(t: &Token) -> Option<(u64, u32)> {
    let b = t.as_bytes();
    if b.len() != SECRET_LEN {
        return None;
    }
    let mut loc = [0u8; 8];
    loc.copy_from_slice(&b[..8]);
    let mut g = [0u8; 4];
    g.copy_from_slice(&b[8..12]);
    Some((u64::from_be_bytes(loc), u32::from_be_bytes(g)))
}

/// A locator as a token (8 bytes), for tombstones.
pub(crate) fn locator_token(loc: u64) -> Token {
    Token::from_array(loc.to_be_bytes())
}

/// SipHash-2-4 (Aumasson and Bernstein, 2012) of `data`, then one byte `domain` when it is
/// not `0xff` (so that one key gives the two halves of a derived key).
fn siphash24(k0: u64, k1: u64, data: &[u8], domain: u8) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let extra: &[u8] = if domain == 0xff { &[] } else { &[domain] };
    let total = data.len() + extra.len();
    let mut bytes = data.iter().chain(extra).copied();
    let mut block = [0u8; 8];
    let mut full = total / 8;
    while full > 0 {
        for b in block.iter_mut() {
            *b = bytes.next().unwrap_or(0);
        }
        compress(&mut v, u64::from_le_bytes(block));
        full -= 1;
    }
    // The last block: the bytes left, zero padded, the length's low byte on top.
    let mut last = [0u8; 8];
    for (d, s) in last.iter_mut().zip(bytes) {
        *d = s;
    }
    // Truncation is the algorithm's: only the length's low byte goes in.
    last[7] = total as u8;
    compress(&mut v, u64::from_le_bytes(last));
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

fn compress(v: &mut [u64; 4], m: u64) {
    v[3] ^= m;
    round(v);
    round(v);
    v[0] ^= m;
}

fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference vectors of the SipHash paper (appendix A: key 00..0f, messages
    /// 00, 00 01, ..., as little-endian u64).
    #[test]
    fn siphash_matches_the_reference_vectors() {
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        let msg: [u8; 15] = core::array::from_fn(|i| i as u8);
        assert_eq!(siphash24(k0, k1, &[], 0xff), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(k0, k1, &msg, 0xff), 0xa129_ca61_49be_45e5);
        assert_eq!(siphash24(k0, k1, &msg[..8], 0xff), 0x93f5_f579_9a93_2462);
    }

    #[test]
    fn secrets_open_only_under_their_key() {
        let a = SecretKey::from_token(&Token::new(&[1; 16]).unwrap());
        let b = SecretKey::from_token(&Token::new(&[2; 16]).unwrap());
        let s = a.secret(7);
        assert_eq!(s.len(), SECRET_LEN);
        assert_eq!(parse(&s), Some((a.locator(), 7)));
        assert_eq!(a.open(&s), Some(7));
        assert_eq!(b.open(&s), None);
        // Another generation under the same locator: the tag gives it away.
        let mut forged = s.as_bytes().to_vec();
        forged[11] = 8;
        assert_eq!(a.open(&Token::new(&forged).unwrap()), None);
    }

    #[test]
    fn the_key_changes_every_fingerprint() {
        let a = TokenKey::from_token(&Token::new(&[1; 16]).unwrap());
        let b = TokenKey::from_token(&Token::new(&[2; 16]).unwrap());
        let t = Token::new(&[7; 32]).unwrap();
        assert_ne!(a.fingerprint(&t), b.fingerprint(&t));
        assert_eq!(alloc::format!("{a:?}"), "TokenKey(..)");
    }
}
