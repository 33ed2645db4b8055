//! Integration tests of request decoding: well-formed frames, hostile frames, and every input the
//! fuzzer (`scripts/fuzz.sh`) found, kept as bytes.

mod decode;
