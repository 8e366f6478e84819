//! Every binary decoder is total, and whatever decodes re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tally_protocol::*;

macro_rules! roundtrip {
    ($t:ty, $data:expr) => {
        if let Ok(v) = <$t>::decode($data) {
            assert_eq!(v.encode(), $data, concat!(stringify!($t), " is not canonical"));
        }
    };
}

fuzz_target!(|data: &[u8]| {
    roundtrip!(SignedReceipt, data);
    roundtrip!(Receipt, data);
    roundtrip!(HostCheckpoint, data);
    roundtrip!(SignedAuthorization, data);
    roundtrip!(Authorization, data);
    roundtrip!(UsageFacts, data);
    roundtrip!(PriceSchedule, data);
    roundtrip!(Metered, data);
    roundtrip!(MeterInput, data);
    roundtrip!(MeterOutcome, data);
    roundtrip!(BatchHeader, data);
    roundtrip!(SignedBatchHeader, data);
    roundtrip!(Submission, data);
    roundtrip!(SignedSubmission, data);
    if let Ok(s) = SignedSubmission::decode(data) {
        let _ = s.verify();
    }
    if let Ok(r) = SignedReceipt::decode(data) {
        let _ = r.verify();
        let _ = r.left_siblings();
        // Equivocation evidence between the bundle and itself, and the bundle split in
        // two halves read as two bundles, never panics.
        let _ = r.contradiction(&r);
        let half = data.len() / 2;
        if let (Ok(a), Ok(b)) = (
            SignedReceipt::decode(&data[..half]),
            SignedReceipt::decode(&data[half..]),
        ) {
            let _ = a.contradiction(&b);
        }
    }
});
