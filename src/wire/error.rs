//! The typed errors of decoding.

/// Why bytes did not decode into a frame, datagram or message. Never a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the field `field` was complete.
    #[error("truncated: {field} needs more bytes")]
    Truncated {
        /// The field being read when the input ran out.
        field: &'static str,
    },
    /// The first byte is not a code tether knows.
    #[error("unknown message code {0:#04x}")]
    UnknownCode(u8),
    /// A length is over the configured or protocol maximum.
    #[error("{field} of {len} bytes is over the maximum of {max}")]
    Oversized {
        /// What was too long.
        field: &'static str,
        /// The length announced or found.
        len: usize,
        /// The maximum allowed.
        max: usize,
    },
    /// A field holds a value the protocol does not allow.
    #[error("bad field {field}: {reason}")]
    BadField {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Bytes are left after a message whose layout has no room for them.
    #[error("{0} unexpected bytes after the message")]
    TrailingBytes(usize),
    /// A `feed` datagram does not start with tether's magic number.
    #[error("bad magic number")]
    BadMagic,
}
