//! The single error type of this crate.

use std::ops::Range;

/// Everything that can be wrong with a record batch or a segment object.
///
/// Byte ranges are absolute positions in the segment object, except for errors from
/// [`RecordBatch::parse_all`](crate::RecordBatch::parse_all) and
/// [`BatchHeader::parse`](crate::BatchHeader::parse), where they are relative to the buffer given.
/// Storage adds the object key as context.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// The data ends before a structure that must be complete.
    #[error("segment truncated at bytes {}..{}: {detail}", .range.start, .range.end)]
    Truncated {
        /// Bytes that should be present.
        range: Range<u64>,
        /// What was being read.
        detail: String,
    },
    /// A magic number (segment header, trailer or batch magic byte) is wrong.
    #[error("bad {what} magic at bytes {}..{}: expected {expected}, found {found}", .range.start, .range.end)]
    BadMagic {
        /// Which magic.
        what: &'static str,
        /// Position of the magic field.
        range: Range<u64>,
        /// Expected value, rendered.
        expected: String,
        /// Found value, rendered.
        found: String,
    },
    /// The object was written in a format version or with flags this reader does not know.
    #[error("unsupported segment format at bytes {}..{}: {detail}", .range.start, .range.end)]
    Unsupported {
        /// Position of the version or flags field.
        range: Range<u64>,
        /// Which field and value.
        detail: String,
    },
    /// A stored CRC-32C does not match the bytes it covers.
    #[error("{what} CRC mismatch at bytes {}..{} (expected {expected:#010x}, found {found:#010x})", .range.start, .range.end)]
    ChecksumMismatch {
        /// Which checksum: "header", "batch", "batch prefix" or "footer".
        what: &'static str,
        /// Bytes covered by the checksum.
        range: Range<u64>,
        /// The stored checksum.
        expected: u32,
        /// The checksum computed over the bytes.
        found: u32,
    },
    /// A record batch violates the Kafka RecordBatch v2 rules this crate accepts.
    #[error("invalid record batch at bytes {}..{}: {reason}", .range.start, .range.end)]
    InvalidBatch {
        /// The batch (or as much of it as is known).
        range: Range<u64>,
        /// What is wrong.
        reason: String,
    },
    /// A batch's records expand past the limit its reader was given (a decompression bomb, or
    /// more than the topic's `max.message.bytes`); nothing past the limit was decompressed.
    #[error("record batch at bytes {}..{} expands past {limit} bytes", .range.start, .range.end)]
    TooLarge {
        /// The batch.
        range: Range<u64>,
        /// The limit on its decompressed records.
        limit: u64,
    },
    /// The segment structure is inconsistent (index, summary, offsets).
    #[error("corrupt segment at bytes {}..{}: {reason}", .range.start, .range.end)]
    Corrupt {
        /// Where the inconsistency was found.
        range: Range<u64>,
        /// What is inconsistent.
        reason: String,
    },
    /// [`read_footer`](crate::read_footer) got too short a tail: read the last `needed` bytes.
    #[error("segment footer needs the last {needed} bytes of the object, got {got}")]
    NeedTailBytes {
        /// Tail length that contains the whole footer and trailer.
        needed: usize,
        /// Tail length given.
        got: usize,
    },
    /// A batch pushed into a [`SegmentBuilder`](crate::SegmentBuilder) does not start at its next offset.
    #[error("batch base offset {found} does not continue the segment: expected {expected}")]
    OffsetMismatch {
        /// The builder's next offset.
        expected: i64,
        /// The batch's base offset.
        found: i64,
    },
    /// A segment would exceed the format's limits (4 GiB of data, 2^32 offsets).
    #[error("segment limit exceeded: {reason}")]
    LimitExceeded {
        /// Which limit.
        reason: String,
    },
}

impl SegmentError {
    /// The byte range the error is about, when it is about bytes.
    pub fn byte_range(&self) -> Option<Range<u64>> {
        match self {
            Self::Truncated { range, .. }
            | Self::BadMagic { range, .. }
            | Self::Unsupported { range, .. }
            | Self::ChecksumMismatch { range, .. }
            | Self::InvalidBatch { range, .. }
            | Self::TooLarge { range, .. }
            | Self::Corrupt { range, .. } => Some(range.clone()),
            Self::NeedTailBytes { .. }
            | Self::OffsetMismatch { .. }
            | Self::LimitExceeded { .. } => None,
        }
    }

    /// For [`SegmentError::NeedTailBytes`]: how many bytes from the end of the object to read.
    pub fn need_tail_bytes(&self) -> Option<usize> {
        match self {
            Self::NeedTailBytes { needed, .. } => Some(*needed),
            _ => None,
        }
    }

    pub(crate) fn corrupt(range: Range<u64>, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            range,
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_batch(range: Range<u64>, reason: impl Into<String>) -> Self {
        Self::InvalidBatch {
            range,
            reason: reason.into(),
        }
    }

    pub(crate) fn truncated(range: Range<u64>, detail: impl Into<String>) -> Self {
        Self::Truncated {
            range,
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_byte_range() {
        let err = SegmentError::ChecksumMismatch {
            what: "batch",
            range: 4096..5120,
            expected: 0xdead_beef,
            found: 0x1,
        };
        assert_eq!(
            err.to_string(),
            "batch CRC mismatch at bytes 4096..5120 (expected 0xdeadbeef, found 0x00000001)"
        );
        assert_eq!(err.byte_range(), Some(4096..5120));
        assert_eq!(err.need_tail_bytes(), None);
        let err = SegmentError::NeedTailBytes {
            needed: 300,
            got: 16,
        };
        assert_eq!((err.need_tail_bytes(), err.byte_range()), (Some(300), None));
    }
}
