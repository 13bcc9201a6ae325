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

    /// The token's fingerprint under this key.
    pub fn fingerprint(&self, t: &Token) -> u64 {
        siphash24(self.k0, self.k1, t.as_bytes(), 0xff)
    }
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
    fn the_key_changes_every_fingerprint() {
        let a = TokenKey::from_token(&Token::new(&[1; 16]).unwrap());
        let b = TokenKey::from_token(&Token::new(&[2; 16]).unwrap());
        let t = Token::new(&[7; 32]).unwrap();
        assert_ne!(a.fingerprint(&t), b.fingerprint(&t));
        assert_eq!(alloc::format!("{a:?}"), "TokenKey(..)");
    }
}
