//! Integration tests of the segment format against real Kafka RecordBatch v2 bytes.

mod common;
mod compacted;
mod corruption;
mod kafka_compat;
mod records;
mod roundtrip;
