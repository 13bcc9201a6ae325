//! Anchored two-way sync (seed 002) messages, codes `0x40..=0x4f`.
//!
//! Placeholder until the anchored-sync work lands (issue 6): no message is defined yet, so
//! every code of the range decodes as [`DecodeError::UnknownCode`].

use super::{DecodeError, Reader};
use bytes::BytesMut;

/// An anchored-sync message (none defined yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnchoredMessage {}

impl AnchoredMessage {
    /// This message's code.
    pub fn code(&self) -> u8 {
        match *self {}
    }

    pub(crate) fn decode_body(code: u8, _r: &mut Reader) -> Result<Self, DecodeError> {
        Err(DecodeError::UnknownCode(code))
    }

    pub(crate) fn encode_body(&self, _out: &mut BytesMut) {
        match *self {}
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for AnchoredMessage {
    fn arbitrary(_u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Err(arbitrary::Error::IncorrectFormat)
    }
}
