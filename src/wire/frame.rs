//! Length-prefixed frames on stream transports (`main`).
//!
//! TCP (and any byte stream) does not keep message boundaries; R-Type took one `send` as one
//! message, which TCP does not promise. tether puts a 4-byte big-endian length before every
//! message: `[LEN u32][LEN bytes]`.
//!
//! [`FrameDecoder`] takes the stream in chunks of any size and yields each complete frame as
//! a [`Bytes`] slice of its buffer (the payload is copied once, into the buffer, and never
//! again). A length over the configured maximum is refused as soon as its 4 bytes are seen,
//! before anything is reserved for it, and the error is sticky: the stream cannot be
//! resynchronised after a bad length, so the decoder stays failed.

use super::DecodeError;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes in a frame's length prefix.
pub const FRAME_HEADER_LEN: usize = 4;

/// The default largest frame payload: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// The least room made at once for a frame in progress (4 KiB): small frames arrive whole
/// without a second allocation, and a bare length prefix holds no more than this.
pub const MIN_RESERVE: usize = 4096;

/// An empty read buffer with more spare capacity than this is released rather than kept
/// for the next frame.
const RELEASE_ABOVE: usize = 4 * MIN_RESERVE;

/// Largest frame a server accepts on a link that has not completed its handshake (every
/// handshake message is far smaller): with the bound on such links, what they can make a
/// server hold in all is bounded too.
pub const HANDSHAKE_MAX_FRAME: usize = 1024;

/// Splits a byte stream into frames.
///
/// ```
/// use bytes::Bytes;
/// use tether::wire::FrameDecoder;
///
/// let mut decoder = FrameDecoder::new(1024);
/// decoder.push(&[0, 0, 0, 2, b'h']);           // a frame split over two chunks...
/// assert_eq!(decoder.next_frame(), Ok(None));
/// decoder.push(&[b'i', 0, 0, 0, 1, b'!']);      // ...and a second frame in the same chunk
/// assert_eq!(decoder.next_frame(), Ok(Some(Bytes::from_static(b"hi"))));
/// assert_eq!(decoder.next_frame(), Ok(Some(Bytes::from_static(b"!"))));
/// assert_eq!(decoder.next_frame(), Ok(None));
/// ```
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    /// Older bytes: a partial frame copied in (or everything, with [`FrameDecoder::push`]).
    buf: BytesMut,
    /// Newer bytes given as `Bytes` ([`FrameDecoder::push_bytes`]), not copied: whole frames
    /// are sliced straight out of it.
    input: Bytes,
    max_frame: usize,
    /// The sticky failure: the length announced and the maximum then (both under 2^32,
    /// as a length prefix is), kept compact because every open link has a decoder.
    failed: Option<(u32, u32)>,
}

impl FrameDecoder {
    /// A decoder that refuses frames whose payload is longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            input: Bytes::new(),
            max_frame,
            failed: None,
        }
    }

    /// The largest payload accepted.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Changes the largest payload accepted from the next frame on: a server reads a link
    /// that has not completed its handshake with a small limit (handshake messages are
    /// small) and raises it once the link is admitted, so that unadmitted links can never
    /// hold more than that limit each.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// Appends a chunk of the stream (copied). Does nothing once the decoder has failed, so
    /// a peer that sent a bad length cannot make it buffer any more.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.failed.is_none() {
            self.spill_input();
            self.buf.extend_from_slice(chunk);
        }
    }

    /// Appends a chunk of the stream without copying it: frames that lie whole in `chunk`
    /// come out as slices of it, and only a frame cut by the chunk's end is copied (to be
    /// completed by the next chunk). For drivers that read into a `BytesMut` and freeze.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use tether::wire::FrameDecoder;
    ///
    /// let chunk = Bytes::from_static(&[0, 0, 0, 2, b'h', b'i', 0, 0]);
    /// let mut decoder = FrameDecoder::new(1024);
    /// decoder.push_bytes(chunk.clone());
    /// let frame = decoder.next_frame().unwrap().unwrap();
    /// assert_eq!(frame, Bytes::from_static(b"hi"));
    /// assert_eq!(frame.as_ptr(), chunk[4..].as_ptr()); // a slice of the chunk, not a copy
    /// assert_eq!(decoder.next_frame(), Ok(None)); // half a header: kept for the next chunk
    /// decoder.push_bytes(Bytes::from_static(&[0, 1, b'!']));
    /// assert_eq!(decoder.next_frame(), Ok(Some(Bytes::from_static(b"!"))));
    /// ```
    pub fn push_bytes(&mut self, chunk: Bytes) {
        if self.failed.is_none() {
            // If a partial frame is buffered, next_frame copies from the chunk only what
            // completes it; the rest stays zero-copy.
            self.spill_input();
            self.input = chunk;
        }
    }

    /// Moves unread zero-copy input behind the buffer, keeping stream order, so that a new
    /// chunk can follow it.
    fn spill_input(&mut self) {
        if !self.input.is_empty() {
            let input = core::mem::take(&mut self.input);
            self.buf.extend_from_slice(&input);
        }
    }

    /// Bytes received and not yet returned as frames. Bounded by
    /// `max_frame + FRAME_HEADER_LEN` plus the last chunk pushed.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.input.len()
    }

    /// The next complete frame's payload, `Ok(None)` if more bytes are needed, or the
    /// (sticky) error of an oversized length prefix.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, DecodeError> {
        if let Some((len, max)) = self.failed {
            return Err(oversized(len as usize, max as usize));
        }
        if self.buf.is_empty() {
            return self.frame_from_input();
        }
        // Complete the buffered header, then the buffered payload, from the input (when
        // there is input: the copying `push` path never has any, and pays nothing here).
        if self.buf.len() < FRAME_HEADER_LEN {
            if !self.input.is_empty() {
                let take = (FRAME_HEADER_LEN - self.buf.len()).min(self.input.len());
                self.buf.extend_from_slice(&self.input.split_to(take));
            }
            if self.buf.len() < FRAME_HEADER_LEN {
                return Ok(None);
            }
        }
        let len = self.check_len(header_of(&self.buf))?;
        if self.buf.len() < FRAME_HEADER_LEN + len && !self.input.is_empty() {
            let missing = FRAME_HEADER_LEN + len - self.buf.len();
            let take = missing.min(self.input.len());
            self.buf.extend_from_slice(&self.input.split_to(take));
        }
        if self.buf.len() < FRAME_HEADER_LEN + len {
            let missing = FRAME_HEADER_LEN + len - self.buf.len();
            self.reserve_for(missing);
            return Ok(None);
        }
        self.buf.advance(FRAME_HEADER_LEN);
        let frame = self.buf.split_to(len).freeze();
        if self.buf.is_empty() && self.buf.capacity() > RELEASE_ABOVE {
            // What is left shares the frame's allocation: kept, it would keep a large
            // frame alive (and its memory held) for as long as the link is idle.
            self.buf = BytesMut::new();
        }
        Ok(Some(frame))
    }

    /// A frame sliced straight out of the zero-copy input, or the input's tail moved into
    /// the buffer to wait for more.
    fn frame_from_input(&mut self) -> Result<Option<Bytes>, DecodeError> {
        if self.input.len() < FRAME_HEADER_LEN {
            self.spill_input();
            return Ok(None);
        }
        let len = self.check_len(header_of(&self.input))?;
        if self.input.len() < FRAME_HEADER_LEN + len {
            self.reserve_for(FRAME_HEADER_LEN + len - self.input.len());
            self.spill_input();
            return Ok(None);
        }
        self.input.advance(FRAME_HEADER_LEN);
        Ok(Some(self.input.split_to(len)))
    }

    /// Makes room for part of a frame still `missing`: at most [`MIN_RESERVE`] ahead of
    /// what was received, so a length prefix alone cannot make the decoder hold the frame
    /// it announces. A peer that sends the frame slowly costs at most about twice what it
    /// sent, as the buffer doubles with what arrives.
    fn reserve_for(&mut self, missing: usize) {
        self.buf.reserve(missing.min(MIN_RESERVE));
    }

    /// The length a header announces, or the sticky failure if it is over the maximum (and
    /// everything held is released: nothing after a bad length can be trusted).
    fn check_len(&mut self, header: [u8; FRAME_HEADER_LEN]) -> Result<usize, DecodeError> {
        let len = u32::from_be_bytes(header) as usize;
        if len > self.max_frame {
            let err = oversized(len, self.max_frame);
            // Both fit: `len` came from a u32, and `max_frame` is below it.
            self.failed = Some((len as u32, self.max_frame as u32));
            self.buf = BytesMut::new();
            self.input = Bytes::new();
            return Err(err);
        }
        Ok(len)
    }

    /// Forgets buffered bytes and any failure: for a new transport.
    pub fn reset(&mut self) {
        // Released, not cleared: a reset link keeps no memory of what it carried.
        self.buf = BytesMut::new();
        self.input = Bytes::new();
        self.failed = None;
    }
}

/// The error of a length prefix over the maximum.
fn oversized(len: usize, max: usize) -> DecodeError {
    DecodeError::Oversized {
        field: "frame length",
        len,
        max,
    }
}

/// The first four bytes of `bytes` (the caller checked there are four; zeros otherwise).
fn header_of(bytes: &[u8]) -> [u8; FRAME_HEADER_LEN] {
    match bytes {
        [a, b, c, d, ..] => [*a, *b, *c, *d],
        _ => [0; FRAME_HEADER_LEN],
    }
}

/// Appends `payload` to `out` as one frame. Fails if the payload is over `u32::MAX` bytes.
pub fn encode_frame(payload: &[u8], out: &mut BytesMut) -> Result<(), DecodeError> {
    let len = u32::try_from(payload.len()).map_err(|_| DecodeError::Oversized {
        field: "frame length",
        len: payload.len(),
        max: u32::MAX as usize,
    })?;
    out.reserve(FRAME_HEADER_LEN + payload.len());
    out.put_u32(len);
    out.put_slice(payload);
    Ok(())
}

#[cfg(test)]
mod tests {

    /// A large frame read through the copying path leaves no large buffer behind once it
    /// is taken, and a reset releases the buffer whatever it held.
    #[test]
    fn a_large_frame_leaves_no_large_buffer_behind() {
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut wire = BytesMut::new();
        encode_frame(&alloc::vec![1u8; 300 * 1024], &mut wire).unwrap();
        d.push(&wire);
        let frame = d.next_frame().unwrap().unwrap();
        assert_eq!(frame.len(), 300 * 1024);
        assert!(d.buf.capacity() <= RELEASE_ABOVE, "{}", d.buf.capacity());
        d.push(&wire[..100_000]);
        d.reset();
        assert_eq!(d.buf.capacity(), 0);
    }

    use super::*;

    #[test]
    fn oversized_length_is_refused_before_reserving_and_stays_refused() {
        let mut d = FrameDecoder::new(16);
        d.push(&[0xff, 0xff, 0xff, 0xff]);
        let err = d.next_frame().unwrap_err();
        assert!(matches!(
            err,
            DecodeError::Oversized {
                len: 0xffff_ffff,
                max: 16,
                ..
            }
        ));
        assert!(
            d.buf.capacity() < 64,
            "no room reserved for the announced length"
        );
        d.push(&[0, 0, 0, 1, 7]);
        assert_eq!(d.next_frame(), Err(err));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn a_length_prefix_alone_reserves_little_and_the_buffer_grows_with_what_arrives() {
        let max = 1 << 20;
        let mut d = FrameDecoder::new(max);
        d.push(&(max as u32).to_be_bytes());
        assert_eq!(d.next_frame(), Ok(None));
        assert!(d.buf.capacity() <= 2 * MIN_RESERVE, "{}", d.buf.capacity());
        // The zero-copy path too.
        let mut z = FrameDecoder::new(max);
        z.push_bytes(Bytes::copy_from_slice(&(max as u32).to_be_bytes()));
        assert_eq!(z.next_frame(), Ok(None));
        assert!(z.buf.capacity() <= 2 * MIN_RESERVE, "{}", z.buf.capacity());
        // Fed slowly, the frame costs at most about twice what was received.
        let chunk = [7u8; 1000];
        let mut sent = 4;
        while sent < max {
            let n = chunk.len().min(max + 4 - sent);
            d.push(&chunk[..n]);
            sent += n;
            if let Some(f) = d.next_frame().unwrap() {
                assert_eq!(f.len(), max);
                break;
            }
            assert!(
                d.buf.capacity() <= 2 * sent + 2 * MIN_RESERVE,
                "{} for {sent}",
                d.buf.capacity()
            );
        }
    }

    #[test]
    fn empty_frames_are_frames() {
        let mut d = FrameDecoder::new(16);
        d.push(&[0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Ok(Some(Bytes::new())));
        assert_eq!(d.next_frame(), Ok(Some(Bytes::new())));
        assert_eq!(d.next_frame(), Ok(None));
    }
}
