//! Arbitrary bytes as a produce payload (concatenated RecordBatch v2) through
//! `RecordBatch::parse_all`, the check every produced batch passes before it is stored.

#![no_main]

use libfuzzer_sys::fuzz_target;
use streamhouse_fuzz::check_produce_payload;

fuzz_target!(|data: &[u8]| {
    check_produce_payload(bytes::Bytes::copy_from_slice(data));
});
