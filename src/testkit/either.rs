//! [`Either`]: one machine type made of two, so that a [`Sim`](super::Sim) can hold a
//! client and a server side by side.

use crate::driver::{Input, Machine, Output};
use crate::time::Instant;

/// Either of two machines (or of their commands, events and errors).
///
/// ```
/// # #[cfg(feature = "testkit")] {
/// use tether::testkit::Either;
/// let cmd: Either<u8, &str> = Either::Left(1);
/// assert!(matches!(cmd, Either::Left(1)));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Either<L, R> {
    /// The first.
    Left(L),
    /// The second.
    Right(R),
}

impl<L, R> Either<L, R> {
    /// The left value, if it is one.
    pub fn left(&self) -> Option<&L> {
        match self {
            Either::Left(l) => Some(l),
            Either::Right(_) => None,
        }
    }

    /// The right value, if it is one.
    pub fn right(&self) -> Option<&R> {
        match self {
            Either::Left(_) => None,
            Either::Right(r) => Some(r),
        }
    }

    /// The left value, mutably.
    pub fn left_mut(&mut self) -> Option<&mut L> {
        match self {
            Either::Left(l) => Some(l),
            Either::Right(_) => None,
        }
    }

    /// The right value, mutably.
    pub fn right_mut(&mut self) -> Option<&mut R> {
        match self {
            Either::Left(_) => None,
            Either::Right(r) => Some(r),
        }
    }
}

impl<L: core::fmt::Display, R: core::fmt::Display> core::fmt::Display for Either<L, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Either::Left(l) => l.fmt(f),
            Either::Right(r) => r.fmt(f),
        }
    }
}

impl<L, R> core::error::Error for Either<L, R>
where
    L: core::error::Error,
    R: core::error::Error,
{
}

/// What a command for the wrong side of an [`Either`] gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a command for the other side of an Either machine")]
pub struct WrongSide;

/// The same input for another command type; `None` for a command.
fn retype<C, D>(input: Input<C>) -> Option<Input<D>> {
    match input {
        Input::Opened(l) => Some(Input::Opened(l)),
        Input::Received(l, b) => Some(Input::Received(l, b)),
        Input::Closed(l) => Some(Input::Closed(l)),
        Input::Timeout => Some(Input::Timeout),
        Input::Command(_) => None,
    }
}

fn map_output<E, F>(output: Output<E>, f: impl FnOnce(E) -> F) -> Output<F> {
    match output {
        Output::Transmit(t) => Output::Transmit(t),
        Output::Event(e) => Output::Event(f(e)),
        Output::Open(c) => Output::Open(c),
        Output::Close(l) => Output::Close(l),
        Output::Wait(d) => Output::Wait(d),
    }
}

impl<L: Machine, R: Machine> Machine for Either<L, R> {
    type Command = Either<L::Command, R::Command>;
    type Event = Either<L::Event, R::Event>;
    type Error = Either<Either<L::Error, R::Error>, WrongSide>;

    fn handle_input(
        &mut self,
        now: Instant,
        input: Input<Self::Command>,
    ) -> Result<(), Self::Error> {
        let left = |e| Either::Left(Either::Left(e));
        let right = |e| Either::Left(Either::Right(e));
        match (self, input) {
            (Either::Left(m), Input::Command(Either::Left(c))) => {
                m.handle_input(now, Input::Command(c)).map_err(left)
            }
            (Either::Right(m), Input::Command(Either::Right(c))) => {
                m.handle_input(now, Input::Command(c)).map_err(right)
            }
            (_, Input::Command(_)) => Err(Either::Right(WrongSide)),
            (Either::Left(m), other) => match retype(other) {
                Some(input) => m.handle_input(now, input).map_err(left),
                None => Ok(()),
            },
            (Either::Right(m), other) => match retype(other) {
                Some(input) => m.handle_input(now, input).map_err(right),
                None => Ok(()),
            },
        }
    }

    fn poll_output(&mut self) -> Output<Self::Event> {
        match self {
            Either::Left(m) => map_output(m.poll_output(), Either::Left),
            Either::Right(m) => map_output(m.poll_output(), Either::Right),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Either::Left(m) => m.poll_timeout(),
            Either::Right(m) => m.poll_timeout(),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Either::Left(m) => m.is_closed(),
            Either::Right(m) => m.is_closed(),
        }
    }
}
