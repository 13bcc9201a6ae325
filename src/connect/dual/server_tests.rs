//! Unit tests of the dual-channel server's player table.

use super::*;

use proptest::prelude::*;

const STATES: [PlayerState; 4] = [
    PlayerState::AwaitFeedInit,
    PlayerState::AwaitFinalAuth,
    PlayerState::Connected,
    PlayerState::MainLost,
];
const INPUTS: [PlayerInput; 4] = [
    PlayerInput::FeedInit,
    PlayerInput::FinalAuth,
    PlayerInput::Connection,
    PlayerInput::MainClosed,
];

#[test]
fn main_lost_refuses_feed_init_and_resumes_by_connection() {
    let f = |s, i| fire(SERVER_TRANSITIONS, s, i).ok();
    assert_eq!(f(PlayerState::MainLost, PlayerInput::FeedInit), None);
    assert_eq!(f(PlayerState::AwaitFeedInit, PlayerInput::Connection), None);
    assert_eq!(
        f(PlayerState::MainLost, PlayerInput::Connection),
        Some(PlayerState::Connected)
    );
}

/// A pair without a row is the typed error and leaves the player as it was; a pair
/// with a row moves it to its target.
fn check(from: PlayerState, input: PlayerInput) -> Result<(), TestCaseError> {
    let row = SERVER_TRANSITIONS
        .iter()
        .find(|(s, i, _)| *s == from && *i == input);
    let mut pl = Player {
        state: from,
        announced: false,
        feed: None,
        token_a: Token::new(&[1; 16]).unwrap(),
        token_b: None,
        secret: Token::new(&[2; 16]).unwrap(),
        feed_attempt: 0,
        feed_tx: FeedSender::pending(SERVER_SENDER),
        feed_rx: FeedReceiver::pending(64),
        last_feed_rx: Instant::ZERO,
        last_feed_tx: Instant::ZERO,
    };
    let got = pl.step(input);
    match row {
        Some(&(_, _, to)) => {
            prop_assert_eq!(got, Ok(()));
            prop_assert_eq!(pl.state, to);
        }
        None => {
            prop_assert_eq!(got, Err(NoTransition { state: from, input }));
            prop_assert_eq!(pl.state, from);
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn step_follows_the_table(s in 0..STATES.len(), i in 0..INPUTS.len()) {
        check(STATES[s], INPUTS[i])?;
    }
}

#[test]
fn step_follows_the_table_on_every_pair() {
    for s in STATES {
        for i in INPUTS {
            check(s, i).unwrap();
        }
    }
}
