//! The JSON form (what HTTP bodies carry) never panics, and what parses round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tally_protocol::{SignedAuthorization, SignedReceipt};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<SignedReceipt>(data) {
        let json = serde_json::to_string(&r).unwrap();
        let again: SignedReceipt = serde_json::from_str(&json).unwrap();
        assert_eq!(again, r);
        let _ = SignedReceipt::decode(&r.encode());
    }
    let _ = serde_json::from_slice::<SignedAuthorization>(data);
});
