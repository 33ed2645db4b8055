//! StreamHouse segment format: Kafka RecordBatch v2 batches of one partition, stored exactly as
//! produced (only the base offset rewritten), in one immutable object with a checksummed footer
//! holding sparse offset and timestamp indexes. The byte layout is specified in `docs/format.md`.
//!
//! Pure: no IO. Writers use [`SegmentBuilder`]; readers range-read the object's tail, decode it
//! with [`read_footer`], [`SegmentFooter::seek`] to a position and iterate a [`BatchCursor`]:
//!
//! ```no_run
//! use std::ops::Range;
//! use bytes::Bytes;
//! use streamhouse_segment::{read_footer, BatchCursor, RecordBatch, SegmentError};
//!
//! /// Batches from `offset` on, reading at most ~`budget` bytes of batch data per request.
//! fn fetch(
//!     get_range: impl Fn(Range<u64>) -> Bytes,
//!     object_len: u64,
//!     offset: i64,
//!     budget: u64,
//! ) -> Result<Vec<RecordBatch>, SegmentError> {
//!     let tail = get_range(object_len.saturating_sub(64 * 1024)..object_len);
//!     let footer = match read_footer(&tail, object_len) {
//!         Err(e) if e.need_tail_bytes().is_some() => {
//!             let needed = e.need_tail_bytes().unwrap() as u64;
//!             read_footer(&get_range(object_len - needed..object_len), object_len)?
//!         }
//!         other => other?,
//!     };
//!     let mut budget = budget.max(64 * 1024);
//!     let mut pos = footer.seek(offset);
//!     let mut batches = Vec::new();
//!     while pos < footer.data_end {
//!         let end = footer.data_end.min(pos + budget);
//!         let mut cursor = BatchCursor::with_footer(get_range(pos..end), pos, &footer, offset);
//!         for batch in cursor.by_ref() {
//!             batches.push(batch?);
//!         }
//!         if cursor.position() == pos {
//!             budget *= 2; // one index block is larger than the budget
//!         }
//!         pos = cursor.position();
//!     }
//!     Ok(batches)
//! }
//! ```

#![warn(missing_docs)]

mod batch;
mod builder;
mod compact;
mod control;
mod crc;
mod cursor;
mod error;
mod expand;
mod footer;
mod records;
mod shared;
mod wire;

pub use batch::{BatchHeader, Compression, RecordBatch};
pub use builder::{EncodedSegment, SegmentBuilder, DEFAULT_INDEX_INTERVAL};
pub use control::ControlMarker;
pub use crc::{crc32c, crc32c_append};
pub use cursor::{decode_pieces, decode_segment, BatchCursor};
pub use error::SegmentError;
pub use footer::{
    read_footer, IndexPoint, SegmentFooter, COMPACTED_VERSION, FORMAT_VERSION, HEADER_LEN,
    SEGMENT_MAGIC, TRAILER_LEN, TRAILER_MAGIC,
};
pub use records::{Record, Records};
pub use shared::{
    read_shared_index, SharedEntry, SharedObjectBuilder, SHARED_MAGIC, SHARED_TRAILER_LEN,
    SHARED_VERSION,
};

#[cfg(test)]
mod test_support;
