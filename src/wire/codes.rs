//! The code table: the first byte of every message.
//!
//! Codes 0 to 17 are R-Type's, with the values its C++ enum had on 2022-10-08, so that a
//! capture reads the same. Everything tether adds lives in ranges of its own.

/// R-Type: a message that carries nothing (keep-alive).
pub const DUMMY: u8 = 0;
/// R-Type: an element update on `feed`: `[TYPE u8][SID u16][DATA]`.
pub const UPDATE_MSG: u8 = 1;
/// R-Type: a sync message on `main`, same layout as `UPDATE_MSG`.
pub const SYNC_MSG: u8 = 2;
/// R-Type: the server's reply to `CONN_INIT` (player id and token A).
pub const CONN_INIT_REP: u8 = 3;
/// R-Type: the client's feed init on `feed` (player id and token A).
pub const FEED_INIT: u8 = 4;
/// R-Type: the server's reply to `FEED_INIT` (token B).
pub const FEED_INIT_REP: u8 = 5;
/// R-Type: a text request.
pub const TEXT_REQ: u8 = 6;
/// R-Type: a text reply.
pub const TEXT_REP: u8 = 7;
/// R-Type: the connection request that reconnects `main`.
pub const CONNECTION: u8 = 8;
/// R-Type: the client leaves for good.
pub const DISCONNECTION: u8 = 9;
/// R-Type: the first message of a connection.
pub const CONN_INIT: u8 = 10;
/// R-Type: a connection step failed; the connection is closed after it.
pub const CONN_FAILED: u8 = 11;
/// R-Type: the connection (or reconnection) is established.
pub const CONN_OK: u8 = 12;
/// R-Type: a sync request (opens a sync context).
pub const SYNC_REQ: u8 = 13;
/// R-Type: the replier starts a sync context.
pub const SYNC_START: u8 = 14;
/// R-Type: the replier ends a sync context.
pub const SYNC_END: u8 = 15;
/// R-Type: the requester confirms the end of a sync context.
pub const SYNC_OK: u8 = 16;
/// R-Type: a sync request or sync message is refused.
pub const REFUSED: u8 = 17;
/// tether: the final auth request (R-Type's docs never gave it a code).
pub const FINAL_AUTH: u8 = 18;

/// tether: a token-merge token message (a local token, sent twice).
pub const TOKEN: u8 = 0x20;
/// tether: a token-merge resumption (the old merged token), and the server's confirmation.
pub const RESUME: u8 = 0x21;
/// tether: a token-merge formal disconnection (never in-band with application data).
pub const DISCONNECT: u8 = 0x22;

/// tether: the session layer's cumulative acknowledgement, also its heartbeat on `main`:
/// `[0x23][RECEIVED u64]`.
pub const ACK: u8 = 0x23;
/// tether: a token-merge resumption secret: the server's offer of the next secret to resume
/// with, and the client's confirmation that it holds it: `[0x24][TOKEN]`.
pub const SECRET: u8 = 0x24;

/// The range of journal-sync (SDMP) codes.
pub const JOURNAL_RANGE: core::ops::RangeInclusive<u8> = 0x30..=0x3f;
/// The range of anchored two-way sync (SyncML) codes.
pub const ANCHORED_RANGE: core::ops::RangeInclusive<u8> = 0x40..=0x4f;

/// tether: an application message on `main`, opaque to tether.
pub const APP: u8 = 0x50;
