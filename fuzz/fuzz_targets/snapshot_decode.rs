//! Any bytes decode to a session snapshot or a typed error, never a panic; what decodes
//! re-encodes to the same bytes (the format is exact, checksummed and length-checked).
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tether::connect::{dual, merge};
use tether::peer::PeerSnapshot;

macro_rules! check {
    ($ty:ty, $data:expr) => {
        if let Ok(snapshot) = <$ty>::decode(Bytes::copy_from_slice($data)) {
            let mut out = BytesMut::new();
            snapshot.encode(&mut out);
            assert_eq!(
                &out[..],
                $data,
                "{} re-encodes differently",
                stringify!($ty)
            );
        }
    };
}

fuzz_target!(|data: &[u8]| {
    check!(merge::MergeSessionSnapshot, data);
    check!(merge::MergeClientSnapshot, data);
    check!(merge::MergeEndedSnapshot, data);
    check!(dual::PlayerSnapshot, data);
    check!(dual::DualClientSnapshot, data);
    check!(PeerSnapshot<merge::MergeSessionSnapshot>, data);
    check!(PeerSnapshot<dual::DualClientSnapshot>, data);
});
