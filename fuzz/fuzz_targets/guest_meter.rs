//! The metering function never panics on any input, and its output always decodes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tally_protocol::MeterOutcome;

fuzz_target!(|data: &[u8]| {
    let outcome = tally_guest::meter_encoded(data);
    let bytes = outcome.encode();
    assert_eq!(MeterOutcome::decode(&bytes).unwrap(), outcome);
});
