//! Reading batches back out of (a range of) a segment object.

use std::sync::Arc;

use bytes::Bytes;

use crate::batch::{check_batch_crc, peek_total_len, BatchHeader, RecordBatch, PREFIX_LEN};
use crate::error::SegmentError;
use crate::footer::{decode_header, read_footer, SegmentFooter};

/// Iterates verified batches of a segment, given the object's bytes from a batch boundary.
///
/// Every yielded batch has a valid Kafka CRC and follows the previous one without an offset gap.
/// Batches whose last offset is below `from_offset` are skipped (by `new` without a CRC check).
/// When the data ends before `data_end`, iteration ends cleanly and [`BatchCursor::position`]
/// tells where to continue; bad bytes before `data_end` yield one `Err` with their byte range,
/// then `None`, and `position` stays at the bad batch (or block).
///
/// Kafka's CRC leaves out the first 21 bytes of a batch (base offset, length, leader epoch,
/// magic, CRC). A cursor made with [`BatchCursor::with_footer`] also checks those against the
/// footer's index (offsets and a per-block checksum) before yielding a block's batches, so no
/// corrupted byte is ever returned as data; [`BatchCursor::new`] cannot.
pub struct BatchCursor {
    data: Bytes,
    /// Absolute position of `data[0]`.
    start: u64,
    /// Index into `data` of the next batch.
    at: usize,
    data_end: u64,
    from_offset: i64,
    /// Base offset the next batch must have, once known.
    next_offset: Option<i64>,
    footer: Option<Arc<SegmentFooter>>,
    /// Absolute position up to which the footer's block checksums were verified.
    verified_end: u64,
    /// Whether each batch's own CRC is checked (see [`BatchCursor::trusting_batch_crcs`]).
    check_crcs: bool,
    done: bool,
}

impl BatchCursor {
    /// Cursor over `data`, the object's bytes from absolute position `pos` (a batch boundary),
    /// checking each batch's magic, length and CRC and that offsets are consecutive.
    pub fn new(data: Bytes, pos: u64, data_end: u64, from_offset: i64) -> Self {
        BatchCursor {
            data,
            start: pos,
            at: 0,
            data_end,
            from_offset,
            next_offset: None,
            footer: None,
            verified_end: pos,
            check_crcs: true,
            done: false,
        }
    }

    /// Like [`BatchCursor::new`], also verifying everything Kafka's CRC does not cover against
    /// `footer`. `pos` must be an index block start (as [`SegmentFooter::seek`] and
    /// [`SegmentFooter::seek_timestamp`] return). Whole blocks are verified before any of their
    /// batches is yielded, so a range that ends inside a block stops at that block's start.
    pub fn with_footer(data: Bytes, pos: u64, footer: &SegmentFooter, from_offset: i64) -> Self {
        Self::with_shared_footer(data, pos, Arc::new(footer.clone()), from_offset)
    }

    /// [`BatchCursor::with_footer`] sharing `footer` instead of copying it (its index grows
    /// with the segment): for readers that make a cursor per read.
    pub fn with_shared_footer(
        data: Bytes,
        pos: u64,
        footer: Arc<SegmentFooter>,
        from_offset: i64,
    ) -> Self {
        let data_end = footer.data_end;
        BatchCursor {
            footer: Some(footer),
            ..Self::new(data, pos, data_end, from_offset)
        }
    }

    /// The same cursor without the check of each batch's CRC (Kafka's, over its records),
    /// keeping every other check: for bytes this process validated itself when it took them in
    /// (a writer's write-through copy in memory), where recomputing the CRC on every read
    /// would only cost CPU. Bytes read from storage are always checked.
    pub fn trusting_batch_crcs(self) -> Self {
        BatchCursor {
            check_crcs: false,
            ..self
        }
    }

    /// Absolute position of the next batch to read (where to continue after a partial range).
    ///
    /// Through a `&mut BatchCursor`, `Iterator::position` shadows this method: call
    /// `BatchCursor::position(&cursor)` there.
    pub fn position(&self) -> u64 {
        self.start + self.at as u64
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>, SegmentError> {
        loop {
            let pos = BatchCursor::position(self);
            if pos >= self.data_end {
                return Ok(None);
            }
            if self.footer.is_some() && pos >= self.verified_end && !self.verify_block(pos)? {
                return Ok(None);
            }
            let Some(total) = self.complete_batch_len(pos)? else {
                return Ok(None);
            };
            let batch = RecordBatch::read(&self.data, self.at, self.start, self.gaps())?;
            self.check_continuity(&batch, pos)?;
            let wanted = batch.last_offset() >= self.from_offset;
            if wanted && self.footer.is_none() && self.check_crcs {
                batch.check_crc(pos)?;
            }
            self.at += total;
            if wanted {
                return Ok(Some(batch));
            }
        }
    }

    /// Length of the batch at `pos` if `data` holds all of it; `None` for a partial range.
    fn complete_batch_len(&self, pos: u64) -> Result<Option<usize>, SegmentError> {
        let Some(total) = peek_total_len(&self.data[self.at..]) else {
            return Ok(None);
        };
        let end = pos + total as u64;
        if total < BatchHeader::LEN || end > self.data_end {
            return Err(SegmentError::corrupt(
                pos..end.min(self.data_end),
                format!(
                    "batch length field {total} does not fit between the batch and data end {}",
                    self.data_end
                ),
            ));
        }
        Ok((total <= self.data.len() - self.at).then_some(total))
    }

    /// Whether the segment is a compacted one, whose offsets may have gaps.
    fn gaps(&self) -> bool {
        self.footer
            .as_deref()
            .is_some_and(SegmentFooter::allows_gaps)
    }

    fn check_continuity(&mut self, batch: &RecordBatch, pos: u64) -> Result<(), SegmentError> {
        let gaps = self.gaps();
        let follows = |expected: i64| match gaps {
            true => batch.base_offset() >= expected,
            false => batch.base_offset() == expected,
        };
        if let Some(expected) = self.next_offset.filter(|&e| !follows(e)) {
            return Err(SegmentError::corrupt(
                pos..pos + 8,
                format!(
                    "batch base offset {} does not follow offset {}",
                    batch.base_offset(),
                    expected - 1
                ),
            ));
        }
        self.next_offset = Some(batch.last_offset() + 1);
        Ok(())
    }

    /// Verifies the index block starting at `pos` if `data` holds all of it (`Ok(false)` if not):
    /// batch boundaries, base offsets and the checksum of the bytes Kafka's CRC leaves out.
    fn verify_block(&mut self, pos: u64) -> Result<bool, SegmentError> {
        let footer = self.footer.as_ref().expect("verify_block needs a footer");
        let block = footer.block_starting_at(pos).ok_or_else(|| {
            SegmentError::corrupt(pos..pos, "cursor position is not an index block start")
        })?;
        let end = footer.block_end(block);
        if end > self.start + self.data.len() as u64 {
            return Ok(false);
        }
        let stop = (end - self.start) as usize;
        let first_offset = footer.block_first_offset(block);
        let gaps = footer.allows_gaps();
        let walk = walk_block(
            &self.data[..stop],
            (self.start, self.at),
            first_offset,
            gaps,
            self.check_crcs,
        )?;
        let next_block_offset = match block + 1 < footer.index.len() {
            true => footer.block_first_offset(block + 1),
            false => footer.last_offset + 1,
        };
        let ends_right = match gaps {
            true => walk.next_offset <= next_block_offset,
            false => walk.next_offset == next_block_offset,
        };
        if !ends_right {
            return Err(SegmentError::corrupt(
                pos..end,
                format!(
                    "index block ends before offset {}, the index says {next_block_offset}",
                    walk.next_offset
                ),
            ));
        }
        let crc = walk.prefix_crc;
        let stored = footer.index[block].prefix_crc;
        if crc != stored {
            return Err(SegmentError::ChecksumMismatch {
                what: "batch prefix",
                range: pos..end,
                expected: stored,
                found: crc,
            });
        }
        self.verified_end = end;
        Ok(true)
    }
}

/// What walking the batch headers of one index block found.
struct BlockWalk {
    /// Offset after the block's last record.
    next_offset: i64,
    /// CRC-32C over the 21-byte prefixes of the block's batches.
    prefix_crc: u32,
}

/// Walks the batches in `block[at..]`, which must end exactly at a batch end, checking each
/// batch's CRC (when `check_crcs`) and that offsets start at `first_offset` and are consecutive
/// (with `gaps`, a compacted segment: increasing). One pass over a block that fits in cache, so
/// the cursor need not re-check CRCs. `start` is the position of `block[0]`.
fn walk_block(
    block: &[u8],
    (start, mut at): (u64, usize),
    first_offset: i64,
    gaps: bool,
    check_crcs: bool,
) -> Result<BlockWalk, SegmentError> {
    let end = start + block.len() as u64;
    let block_start = start + at as u64;
    let mut walk = BlockWalk {
        next_offset: first_offset,
        prefix_crc: 0,
    };
    while at < block.len() {
        let batch_pos = start + at as u64;
        if block.len() - at < BatchHeader::LEN {
            return Err(SegmentError::corrupt(
                batch_pos..end,
                "index block ends inside a batch",
            ));
        }
        let header = BatchHeader::parse_at(&block[at..], batch_pos)?;
        header.validate(batch_pos, gaps)?;
        // The block's first batch starts exactly at the index's offset, even with gaps.
        let first = batch_pos == block_start;
        let in_order = match gaps && !first {
            true => header.base_offset >= walk.next_offset,
            false => header.base_offset == walk.next_offset,
        };
        if !in_order {
            return Err(SegmentError::corrupt(
                batch_pos..batch_pos + 8,
                format!(
                    "batch base offset {} where the index expects {}",
                    header.base_offset, walk.next_offset
                ),
            ));
        }
        let batch_end = at + header.total_len();
        if batch_end > block.len() {
            return Err(SegmentError::corrupt(
                batch_pos..start + batch_end as u64,
                "batch crosses the end of its index block",
            ));
        }
        if check_crcs {
            check_batch_crc(&header, &block[at..batch_end], batch_pos)?;
        }
        walk.prefix_crc = crate::crc32c_append(walk.prefix_crc, &block[at..at + PREFIX_LEN]);
        walk.next_offset = header.last_offset() + 1;
        at = batch_end;
    }
    Ok(walk)
}

impl std::fmt::Debug for BatchCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchCursor")
            .field("range", &(self.start..self.start + self.data.len() as u64))
            .field("position", &BatchCursor::position(self))
            .field("data_end", &self.data_end)
            .field("from_offset", &self.from_offset)
            .field("verified", &self.footer.is_some())
            .finish_non_exhaustive()
    }
}

impl Iterator for BatchCursor {
    type Item = Result<RecordBatch, SegmentError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_batch().transpose();
        self.done = !matches!(item, Some(Ok(_)));
        item
    }
}

/// Decodes, as a cursor made with [`BatchCursor::with_footer`] at `pos` would, the bytes of a
/// segment from `pos` given as consecutive `pieces` (an object's cache blocks). Each batch is a
/// slice of the piece that holds it; only an index block that straddles two pieces is copied,
/// so a range spanning blocks costs at most one index block's copy per boundary instead of a
/// copy of the whole range. `check_crcs: false` is [`BatchCursor::trusting_batch_crcs`].
///
/// Returns the batches ending at or after `from_offset` and the position after the last whole
/// index block the pieces hold (where to continue).
pub fn decode_pieces(
    pieces: &[Bytes],
    pos: u64,
    footer: &Arc<SegmentFooter>,
    from_offset: i64,
    check_crcs: bool,
) -> Result<(Vec<RecordBatch>, u64), SegmentError> {
    let end = pos + pieces.iter().map(|p| p.len() as u64).sum::<u64>();
    let decode = |data: Bytes, at: u64, batches: &mut Vec<RecordBatch>| {
        let mut cursor = BatchCursor::with_shared_footer(data, at, footer.clone(), from_offset);
        cursor.check_crcs = check_crcs;
        for batch in cursor.by_ref() {
            batches.push(batch?);
        }
        Ok::<u64, SegmentError>(cursor.position())
    };
    let mut batches = Vec::new();
    let mut at = pos;
    while at < end {
        let (piece, start) = piece_at(pieces, pos, at);
        let piece_end = start + piece.len() as u64;
        let reached = decode(piece.slice((at - start) as usize..), at, &mut batches)?;
        if reached > at {
            at = reached;
            continue;
        }
        // The index block at `at` runs past this piece: copy just that block (as far as the
        // pieces go) and decode it on its own.
        if piece_end >= end {
            break;
        }
        let block = footer.block_starting_at(at).ok_or_else(|| {
            SegmentError::corrupt(at..at, "cursor position is not an index block start")
        })?;
        let block_end = footer.block_end(block).min(end);
        let reached = decode(copy_range(pieces, pos, at..block_end), at, &mut batches)?;
        if reached == at {
            break;
        }
        at = reached;
    }
    Ok((batches, at))
}

/// The piece of `pieces` (consecutive, the first at `pos`) holding position `at`, with its start.
fn piece_at(pieces: &[Bytes], pos: u64, at: u64) -> (&Bytes, u64) {
    let mut start = pos;
    for piece in pieces {
        let end = start + piece.len() as u64;
        if at < end {
            return (piece, start);
        }
        start = end;
    }
    unreachable!("position {at} is past the pieces")
}

/// Positions `range` of `pieces` (consecutive, the first at `pos`), copied into one buffer.
fn copy_range(pieces: &[Bytes], pos: u64, range: std::ops::Range<u64>) -> Bytes {
    let mut out = bytes::BytesMut::with_capacity((range.end - range.start) as usize);
    let mut start = pos;
    for piece in pieces {
        let end = start + piece.len() as u64;
        let (from, to) = (range.start.max(start), range.end.min(end));
        if from < to {
            out.extend_from_slice(&piece[(from - start) as usize..(to - start) as usize]);
        }
        start = end;
    }
    out.freeze()
}

/// Decodes and verifies a whole segment object: header, trailer, footer, every batch's CRC,
/// the index checksums and the summary. For `segment inspect` and tests.
pub fn decode_segment(object: Bytes) -> Result<(SegmentFooter, Vec<RecordBatch>), SegmentError> {
    let footer = read_footer(&object, object.len() as u64)?;
    let (base_offset, version) = decode_header(&object)?;
    if version != footer.version() {
        return Err(SegmentError::corrupt(
            4..6,
            format!(
                "header version {version} differs from trailer version {}",
                footer.version()
            ),
        ));
    }
    if base_offset != footer.base_offset {
        return Err(SegmentError::corrupt(
            8..16,
            format!(
                "header base offset {base_offset} differs from footer base offset {}",
                footer.base_offset
            ),
        ));
    }
    let data = object.slice(footer.data_start as usize..footer.data_end as usize);
    let mut cursor = BatchCursor::with_footer(data, footer.data_start, &footer, i64::MIN);
    let mut batches = Vec::with_capacity(footer.batch_count as usize);
    for batch in cursor.by_ref() {
        batches.push(batch?);
    }
    check_summary(&footer, &batches, cursor.position())?;
    Ok((footer, batches))
}

/// Checks the footer summary against the batches actually read.
fn check_summary(
    footer: &SegmentFooter,
    batches: &[RecordBatch],
    end: u64,
) -> Result<(), SegmentError> {
    let min_ts = batches
        .iter()
        .map(|b| b.header().base_timestamp)
        .min()
        .unwrap_or(-1);
    let max_ts = batches
        .iter()
        .map(RecordBatch::max_timestamp)
        .max()
        .unwrap_or(-1);
    let records: i64 = batches.iter().map(|b| i64::from(b.record_count())).sum();
    if end != footer.data_end
        || batches.len() != footer.batch_count as usize
        || records != footer.record_count
        || (min_ts, max_ts) != (footer.min_timestamp, footer.max_timestamp)
    {
        return Err(SegmentError::corrupt(
            footer.data_start..footer.data_end,
            format!(
                "batches ({} batches, {records} records, timestamps {min_ts}..={max_ts}, \
                 end {end}) disagree with the footer summary",
                batches.len()
            ),
        ));
    }
    Ok(())
}
