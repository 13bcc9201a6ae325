//! Conflict policy: the server, never the client, resolves a conflict.

/// Which side's version of a record survives a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Winner {
    /// The server's version (or deletion) is kept and sent to the client (status 419).
    Server,
    /// The client's version (or deletion) is applied on the server (status 208).
    Client,
}

/// How the server resolves a conflict: both sides changed (or deleted) the same record since
/// the last sync, or, in a slow sync, both hold different versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ConflictPolicy {
    /// The server's version wins (SyncML's usual default).
    #[default]
    ServerWins,
    /// The client's version wins.
    ClientWins,
    /// The application decides: the server emits
    /// [`ServerEvent::Conflict`](super::ServerEvent::Conflict) and waits for
    /// [`ServerCommand::Resolve`](super::ServerCommand::Resolve).
    Ask,
}

impl ConflictPolicy {
    /// The winner the policy gives without asking, `None` for [`ConflictPolicy::Ask`].
    pub fn winner(self) -> Option<Winner> {
        match self {
            ConflictPolicy::ServerWins => Some(Winner::Server),
            ConflictPolicy::ClientWins => Some(Winner::Client),
            ConflictPolicy::Ask => None,
        }
    }
}
