//! Shared objects: the segments of many partitions in one object (docs/format.md, "Shared
//! objects").
//!
//! One flush of one agent writes one object, whatever the number of partitions it carries, so
//! object-store requests scale with flushes, not with partitions. Each partition's part is a
//! complete segment (header, batches, footer, trailer), so a reader given its byte range reads it
//! exactly like a whole segment object. A small index at the end names each part, for tools and
//! recovery; readers normally take the ranges from the metadata store.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::SegmentError;

/// Magic at the very end of a shared object.
pub const SHARED_MAGIC: [u8; 4] = *b"SHOB";
/// Version of the shared-object layout.
pub const SHARED_VERSION: u16 = 1;
/// Size of the trailer closing a shared object.
pub const SHARED_TRAILER_LEN: usize = 16;
/// Size of one index entry.
const ENTRY_LEN: usize = 16 + 4 + 8 + 8;

/// Where one partition's segment lies in a shared object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedEntry {
    /// The topic's id (its UUID bytes).
    pub topic_id: [u8; 16],
    /// The partition.
    pub partition: u32,
    /// Position of the segment in the object.
    pub offset: u64,
    /// Length of the segment.
    pub len: u64,
}

/// Lays segments of many partitions out as one shared object, without copying them: the
/// object is returned as its parts, which an upload sends back to back.
#[derive(Debug, Default)]
pub struct SharedObjectBuilder {
    parts: Vec<Bytes>,
    entries: Vec<SharedEntry>,
    len: u64,
}

impl SharedObjectBuilder {
    /// An empty object.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a whole encoded segment of `topic_id`/`partition`, given as its consecutive
    /// parts; returns where it lies.
    pub fn push(&mut self, topic_id: [u8; 16], partition: u32, segment: &[Bytes]) -> SharedEntry {
        let entry = SharedEntry {
            topic_id,
            partition,
            offset: self.len,
            len: segment.iter().map(|part| part.len() as u64).sum(),
        };
        self.len += entry.len;
        self.parts.extend_from_slice(segment);
        self.entries.push(entry);
        entry
    }

    /// Segments pushed so far.
    pub fn entries(&self) -> &[SharedEntry] {
        &self.entries
    }

    /// Appends the index and trailer; returns the object's parts (in order) and its length.
    pub fn finish(mut self) -> (Vec<Bytes>, u64) {
        let mut index = BytesMut::with_capacity(4 + ENTRY_LEN * self.entries.len());
        index.put_u32(self.entries.len() as u32);
        for entry in &self.entries {
            index.put_slice(&entry.topic_id);
            index.put_u32(entry.partition);
            index.put_u64(entry.offset);
            index.put_u64(entry.len);
        }
        let mut trailer = BytesMut::with_capacity(SHARED_TRAILER_LEN);
        trailer.put_u32(index.len() as u32);
        trailer.put_u32(crate::crc32c(&index));
        trailer.put_u16(SHARED_VERSION);
        trailer.put_u16(0);
        trailer.put_slice(&SHARED_MAGIC);
        self.len += (index.len() + trailer.len()) as u64;
        self.parts.push(index.freeze());
        self.parts.push(trailer.freeze());
        (self.parts, self.len)
    }
}

/// Decodes the index of a shared object of `object_len` bytes from its `tail` (its last bytes;
/// the whole object works). Checks the trailer, the index CRC and that every entry lies inside
/// the data, in order and without overlap.
pub fn read_shared_index(tail: &[u8], object_len: u64) -> Result<Vec<SharedEntry>, SegmentError> {
    let start = object_len - tail.len() as u64;
    let trailer = tail
        .len()
        .checked_sub(SHARED_TRAILER_LEN)
        .map(|at| &tail[at..])
        .ok_or_else(|| truncated(start, object_len, "shared object trailer"))?;
    if trailer[12..16] != SHARED_MAGIC {
        return Err(SegmentError::BadMagic {
            what: "shared object",
            range: object_len - 4..object_len,
            expected: format!("{SHARED_MAGIC:?}"),
            found: format!("{:?}", &trailer[12..16]),
        });
    }
    let version = u16::from_be_bytes([trailer[8], trailer[9]]);
    let flags = u16::from_be_bytes([trailer[10], trailer[11]]);
    if version != SHARED_VERSION || flags != 0 {
        return Err(SegmentError::Unsupported {
            range: object_len - 8..object_len - 4,
            detail: format!("shared object version {version} flags {flags:#x}"),
        });
    }
    let index_len = u32::from_be_bytes(trailer[0..4].try_into().expect("4 bytes")) as usize;
    let index_end = tail.len() - SHARED_TRAILER_LEN;
    let index = index_end
        .checked_sub(index_len)
        .map(|at| &tail[at..index_end])
        .ok_or_else(|| truncated(start, object_len, "shared object index"))?;
    let expected = u32::from_be_bytes(trailer[4..8].try_into().expect("4 bytes"));
    let found = crate::crc32c(index);
    let index_start = object_len - (SHARED_TRAILER_LEN + index_len) as u64;
    if expected != found {
        return Err(SegmentError::ChecksumMismatch {
            what: "shared object index",
            range: index_start..index_start + index_len as u64,
            expected,
            found,
        });
    }
    parse_entries(index, index_start)
}

fn parse_entries(index: &[u8], data_end: u64) -> Result<Vec<SharedEntry>, SegmentError> {
    let bad = |detail: String| SegmentError::Unsupported {
        range: data_end..data_end + index.len() as u64,
        detail,
    };
    let count = index
        .get(..4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or_else(|| bad("empty shared object index".into()))?;
    if index.len() != 4 + count * ENTRY_LEN {
        return Err(bad(format!(
            "index of {} bytes for {count} entries",
            index.len()
        )));
    }
    let mut entries = Vec::with_capacity(count);
    let mut next = 0;
    for raw in index[4..].chunks_exact(ENTRY_LEN) {
        let entry = SharedEntry {
            topic_id: raw[..16].try_into().expect("16 bytes"),
            partition: u32::from_be_bytes(raw[16..20].try_into().expect("4 bytes")),
            offset: u64::from_be_bytes(raw[20..28].try_into().expect("8 bytes")),
            len: u64::from_be_bytes(raw[28..36].try_into().expect("8 bytes")),
        };
        let end = entry.offset.checked_add(entry.len);
        if entry.offset != next || end.is_none_or(|end| end > data_end) {
            return Err(bad(format!(
                "entry at {}+{} out of place",
                entry.offset, entry.len
            )));
        }
        next = entry.offset + entry.len;
        entries.push(entry);
    }
    Ok(entries)
}

fn truncated(start: u64, object_len: u64, detail: &str) -> SegmentError {
    SegmentError::Truncated {
        range: start..object_len,
        detail: detail.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(segments: &[&[u8]]) -> (Bytes, Vec<SharedEntry>) {
        let mut builder = SharedObjectBuilder::new();
        for (i, segment) in segments.iter().enumerate() {
            builder.push([i as u8; 16], i as u32, &[Bytes::copy_from_slice(segment)]);
        }
        let entries = builder.entries().to_vec();
        let (parts, len) = builder.finish();
        let bytes: Vec<u8> = parts.concat();
        assert_eq!(bytes.len() as u64, len);
        (Bytes::from(bytes), entries)
    }

    #[test]
    fn index_round_trips_and_locates_each_segment() {
        let (bytes, entries) = object(&[b"first", b"", b"third part"]);
        let decoded = read_shared_index(&bytes, bytes.len() as u64).unwrap();
        assert_eq!(decoded, entries);
        let third = entries[2];
        assert_eq!(
            &bytes[third.offset as usize..][..third.len as usize],
            b"third part"
        );
        // Only the tail is needed.
        let tail = &bytes[entries[2].offset as usize + 10..];
        assert_eq!(
            read_shared_index(tail, bytes.len() as u64).unwrap(),
            entries
        );
    }

    #[test]
    fn any_damage_to_index_or_trailer_is_an_error() {
        let (bytes, entries) = object(&[b"abc", b"defg"]);
        let data_end = (entries[1].offset + entries[1].len) as usize;
        for at in data_end..bytes.len() {
            let mut damaged = bytes.to_vec();
            damaged[at] ^= 0x40;
            assert!(
                read_shared_index(&damaged, bytes.len() as u64).is_err(),
                "flip at {at} not detected"
            );
        }
        assert!(read_shared_index(&bytes[bytes.len() - 3..], bytes.len() as u64).is_err());
    }
}
