//! Properties of dop's token merge and of `Token`.

use proptest::prelude::*;
use tether::Token;

fn token_strategy() -> impl Strategy<Value = Token> {
    proptest::collection::vec(any::<u8>(), 1..=Token::MAX_LEN).prop_map(|v| Token::new(&v).unwrap())
}

#[test]
fn seed_example_aaaabbbb_dddd() {
    let a = Token::new(b"AAAABBBB").unwrap();
    let d = Token::new(b"DDDD").unwrap();
    assert_eq!(a.merge(&d).as_bytes(), b"AAAADDDD");
}

#[test]
fn seed_004_step_8_merge() {
    // Server local AAAA, client local BBBB: both get AAAABBBB.
    let server = Token::new(b"AAAA").unwrap();
    let client = Token::new(b"BBBB").unwrap();
    assert_eq!(server.merge(&client).as_bytes(), b"AAAABBBB");
    assert_eq!(client.merge(&server).as_bytes(), b"AAAABBBB");
}

#[test]
fn dop_trace_merge() {
    // From the real dop run (seeds/dop-wire-trace.txt): client 2HuI7oOHwVpjd8qB, server
    // o6ZjuqLMF30mbzpb, resumed with 2HuI7oOHwVpjd8qBo6ZjuqLMF30mbzpb.
    let c = Token::new(b"2HuI7oOHwVpjd8qB").unwrap();
    let s = Token::new(b"o6ZjuqLMF30mbzpb").unwrap();
    assert_eq!(c.merge(&s).as_bytes(), b"2HuI7oOHwVpjd8qBo6ZjuqLMF30mbzpb");
}

proptest! {
    #[test]
    fn merge_is_commutative(a in token_strategy(), b in token_strategy()) {
        prop_assert_eq!(a.merge(&b), b.merge(&a));
    }

    #[test]
    fn merge_is_twice_the_shorter(a in token_strategy(), b in token_strategy()) {
        let shorter = a.len().min(b.len()).min(Token::MAX_LEN / 2);
        prop_assert_eq!(a.merge(&b).len(), 2 * shorter);
    }

    #[test]
    fn merge_halves_are_the_cut_tokens_in_byte_order(a in token_strategy(), b in token_strategy()) {
        let m = a.merge(&b);
        let half = m.len() / 2;
        let (first, second) = m.as_bytes().split_at(half);
        prop_assert!(first <= second);
        let mut cut = [&a.as_bytes()[..half], &b.as_bytes()[..half]];
        cut.sort();
        prop_assert_eq!(first, cut[0]);
        prop_assert_eq!(second, cut[1]);
    }

    #[test]
    fn equality_is_byte_equality(a in proptest::collection::vec(any::<u8>(), 1..=64), b in proptest::collection::vec(any::<u8>(), 1..=64)) {
        prop_assert_eq!(Token::new(&a).unwrap() == Token::new(&b).unwrap(), a == b);
    }

    #[test]
    fn debug_never_shows_the_bytes(a in proptest::collection::vec(b'A'..=b'Z', 8..=64)) {
        let t = Token::new(&a).unwrap();
        let shown = format!("{t:?}");
        prop_assert!(!shown.contains(core::str::from_utf8(&a[..8]).unwrap()));
    }
}
