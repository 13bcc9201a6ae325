//! The keys of a dual-channel session, and the tag every `feed` datagram carries.
//!
//! The server draws one **session secret** per player (from the caller's `TokenSource`,
//! at least [`MIN_SECRET_LEN`] bytes) and sends it on `main` only, in `CONN_INIT_REP`.
//! Both sides derive two values from it, each with its own label, so that neither tells
//! anything of the other or of the secret:
//!
//! - the **feed key** ([`FeedKey::derive`]), which tags every `feed` datagram both ways;
//! - the **reconnection proof** ([`reconnection_proof`]), which `CONNECTION` carries on
//!   a new `main`.
//!
//! Nothing that crosses `feed` (tokens A and B, tags) suffices to authenticate on `main`
//! or to forge a datagram: see docs/PROTOCOL.md 4.11.
//!
//! The primitive is HMAC-SHA-256 (RFC 2104, FIPS 180-4) from RustCrypto's `hmac` and
//! `sha2`: pure Rust, no build script, `no_std`, constant-time tag comparison. Derivation
//! is HKDF-Expand (RFC 5869) with the secret as the pseudorandom key: the secret is already
//! uniformly random (the caller's `TokenSource` draws it), so HKDF-Extract is not needed.
//! The tag is the HMAC truncated to its first [`FEED_TAG_LEN`] bytes (128 bits, as RFC 4868
//! truncates HMAC-SHA-256 for IPsec).
//!
//! ```
//! use tether::wire::{FeedKey, reconnection_proof};
//! use tether::Token;
//!
//! let secret = Token::new(&[7; 16]).unwrap();
//! let key = FeedKey::derive(&secret, 3);
//! let tag = key.tag(b"header", b"content");
//! assert!(key.verify(b"header", &tag, b"content"));
//! assert!(!key.verify(b"header", &tag, b"Content"));
//! // Another player, another key; the proof for `main` is neither the secret nor the key.
//! assert!(!FeedKey::derive(&secret, 4).verify(b"header", &tag, b"content"));
//! assert_ne!(reconnection_proof(&secret, 3), secret);
//! ```

use crate::token::Token;
use core::fmt;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of the tag in every `feed` datagram's header (128 bits).
pub const FEED_TAG_LEN: usize = 16;

/// The shortest session secret either side accepts, in bytes (128 bits), whatever the
/// token mode: the secret keys the tag of `feed` and proves a reconnection of `main`.
pub const MIN_SECRET_LEN: usize = 16;

/// Bytes of the reconnection proof (128 bits).
pub const PROOF_LEN: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// The HKDF label of the feed key.
const FEED_LABEL: &[u8] = b"tether/1 dual feed key";
/// The HKDF label of the reconnection proof.
const RECONNECT_LABEL: &[u8] = b"tether/1 dual reconnection proof";

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length (RFC 2104: longer ones are hashed, shorter ones
    // padded), so this never fails; the fallback only keeps the function total.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| HmacSha256::new(&Default::default()))
}

/// HKDF-Expand's first block: `HMAC(secret, label || PLAYER u16 || 0x01)`, 32 bytes.
fn expand(secret: &Token, label: &[u8], player: u16) -> [u8; 32] {
    let mut m = keyed(secret.as_bytes());
    m.update(label);
    m.update(&player.to_be_bytes());
    m.update(&[1]);
    m.finalize().into_bytes().into()
}

/// What `CONNECTION` carries to reconnect `main`: the first [`PROOF_LEN`] bytes of
/// HKDF-Expand(secret, `"tether/1 dual reconnection proof" || PLAYER u16`). Only the two
/// ends of `main` know the secret, so only they can make it; it never crosses `feed`.
pub fn reconnection_proof(secret: &Token, player: u16) -> Token {
    let okm = expand(secret, RECONNECT_LABEL, player);
    // PROOF_LEN (16) is within 1..=Token::MAX_LEN, so `new` cannot refuse it.
    Token::new(&okm[..PROOF_LEN]).unwrap_or(*secret)
}

/// The key of one player's `feed`, both ways: HMAC-SHA-256 keyed with HKDF-Expand(secret,
/// `"tether/1 dual feed key" || PLAYER u16`), 32 bytes.
///
/// Holds the keyed HMAC state, so that tagging a datagram costs two SHA-256 blocks for a
/// short one and nothing is derived per datagram. `Debug` prints no key material.
#[derive(Clone)]
pub struct FeedKey {
    mac: HmacSha256,
}

impl FeedKey {
    /// The feed key of `player`'s session with this secret.
    pub fn derive(secret: &Token, player: u16) -> FeedKey {
        FeedKey {
            mac: keyed(&expand(secret, FEED_LABEL, player)),
        }
    }

    fn mac_of(&self, header: &[u8], content: &[u8]) -> HmacSha256 {
        let mut m = self.mac.clone();
        m.update(header);
        m.update(content);
        m
    }

    /// The tag of a datagram: the first [`FEED_TAG_LEN`] bytes of the HMAC of its header
    /// fields (`MAGIC SEQ SENDER`) followed by its content.
    pub fn tag(&self, header: &[u8], content: &[u8]) -> [u8; FEED_TAG_LEN] {
        let full = self.mac_of(header, content).finalize().into_bytes();
        let mut tag = [0u8; FEED_TAG_LEN];
        tag.copy_from_slice(&full[..FEED_TAG_LEN]);
        tag
    }

    /// Whether `tag` is the tag of `header` and `content`, compared in constant time.
    pub fn verify(&self, header: &[u8], tag: &[u8], content: &[u8]) -> bool {
        tag.len() == FEED_TAG_LEN
            && self
                .mac_of(header, content)
                .verify_truncated_left(tag)
                .is_ok()
    }
}

impl fmt::Debug for FeedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FeedKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> alloc::string::String {
        b.iter().map(|x| alloc::format!("{x:02x}")).collect()
    }

    /// Vectors computed independently (Python's `hmac` and `hashlib`), so that another
    /// implementation can check itself against tether's (docs/PROTOCOL.md 4.11).
    #[test]
    fn derivations_match_the_documented_vectors() {
        let secret = Token::new(&[0x11; 16]).unwrap();
        assert_eq!(
            hex(&expand(&secret, FEED_LABEL, 0)),
            "bd9ae50dd3cc164536f1b31f7b7764ab054d59437b88a949f65f94100062b8d5"
        );
        assert_eq!(
            hex(reconnection_proof(&secret, 0).as_bytes()),
            "bdc81e562d3d72b83fd824c6705dd47f"
        );
        let key = FeedKey::derive(&secret, 0);
        assert_eq!(
            hex(&key.tag(
                &[0xff, 0x1c, 0xec, 0x0f, 0xfe, 0xed, 0xef, 0xec, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
                &[0]
            )),
            "79707daeda5cd24dd85ab3dff4435a0b"
        );
    }

    #[test]
    fn a_tag_binds_every_byte_and_the_player() {
        let secret = Token::new(&[3; 16]).unwrap();
        let key = FeedKey::derive(&secret, 9);
        let tag = key.tag(b"0123456789abcdefgh", b"\x01\x02\x00\x07xy");
        assert!(key.verify(b"0123456789abcdefgh", &tag, b"\x01\x02\x00\x07xy"));
        assert!(!key.verify(b"0123456789abcdefgi", &tag, b"\x01\x02\x00\x07xy"));
        assert!(!key.verify(b"0123456789abcdefgh", &tag, b"\x01\x02\x00\x07xz"));
        assert!(!key.verify(b"0123456789abcdefgh", &tag[..8], b"\x01\x02\x00\x07xy"));
        assert!(!key.verify(b"0123456789abcdefgh", &[0; 16], b"\x01\x02\x00\x07xy"));
        assert!(!FeedKey::derive(&secret, 8).verify(
            b"0123456789abcdefgh",
            &tag,
            b"\x01\x02\x00\x07xy"
        ));
        assert_ne!(
            reconnection_proof(&secret, 9),
            reconnection_proof(&secret, 8)
        );
        assert_eq!(alloc::format!("{key:?}"), "FeedKey(..)");
    }
}
