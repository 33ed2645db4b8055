//! StreamHouse segment format: Kafka RecordBatch v2 batches of one partition, stored exactly as
//! produced (only the base offset rewritten), in one immutable object with a checksummed footer
//! holding sparse offset and timestamp indexes. The byte layout is specified in `docs/format.md`.
//!
//! Pure: no IO. Writers use [`SegmentBuilder`]; readers range-read the object's tail, decode it
//! with [`read_footer`], [`SegmentFooter::seek`] to a position and iterate a [`BatchCursor`].

mod batch;
mod builder;
mod cursor;
mod error;
mod footer;
mod wire;

pub use batch::{BatchHeader, Compression, RecordBatch};
pub use builder::{EncodedSegment, SegmentBuilder, DEFAULT_INDEX_INTERVAL};
pub use cursor::{decode_segment, BatchCursor};
pub use error::SegmentError;
pub use footer::{
    read_footer, SegmentFooter, FORMAT_VERSION, HEADER_LEN, SEGMENT_MAGIC, TRAILER_LEN,
    TRAILER_MAGIC,
};

#[cfg(test)]
mod test_support;
