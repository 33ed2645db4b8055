//! Arbitrary bytes as a segment object through every read path: `decode_segment`,
//! `read_footer` (whole and from a short tail) and `BatchCursor::with_footer` range reads.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    streamhouse_fuzz::check_segment(bytes::Bytes::copy_from_slice(data));
});
