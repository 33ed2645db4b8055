//! Checks shared by the fuzz targets: what every batch or footer a decoder accepts must satisfy.
//! A decoder may reject any input, but must never panic, never loop without bound and never
//! hand out bytes that fail the checks the format promises.

use bytes::Bytes;
use streamhouse_segment::{
    decode_segment, read_footer, BatchCursor, BatchHeader, RecordBatch, SegmentError, SegmentFooter,
};

/// Bytes of a batch that Kafka's CRC leaves out (base offset .. crc).
const CRC_PREFIX_LEN: usize = 21;

/// Tail a range reader fetches first in [`check_segment`]: big enough for the trailer and
/// a small footer, so both the one-read and the two-read paths of `read_footer` are fuzzed.
const FIRST_TAIL_LEN: usize = 128;

/// Splits `payload` as the produce handler does and checks every batch it accepts.
pub fn check_produce_payload(payload: Bytes) {
    let Ok(batches) = RecordBatch::parse_all(payload.clone()) else {
        return;
    };
    let mut at = 0;
    for batch in &batches {
        check_batch(batch);
        check_records(batch);
        assert_eq!(
            batch.bytes()[..],
            payload[at..at + batch.len()],
            "batch is not the payload's bytes"
        );
        at += batch.len();
    }
    assert_eq!(
        at,
        payload.len(),
        "accepted payload has bytes outside its batches"
    );
}

/// Record validation (what Produce runs after `parse_all`) never panics, stays within its
/// decompression limit, and accepts a batch only when its records decode to the declared count.
pub fn check_records(batch: &RecordBatch) {
    const LIMIT: usize = 1 << 20;
    if batch.validate_records(LIMIT).is_err() {
        return;
    }
    let decoded = batch
        .records(LIMIT)
        .expect("a validated batch opens")
        .collect::<Result<Vec<_>, _>>()
        .expect("a validated batch decodes");
    assert_eq!(decoded.len(), batch.record_count() as usize);
    for (i, record) in decoded.iter().enumerate() {
        assert_eq!(record.offset, batch.base_offset() + i as i64);
        assert!(record.timestamp <= batch.max_timestamp());
    }
}

/// Re-verifies one accepted batch from its bytes alone.
pub fn check_batch(batch: &RecordBatch) {
    let bytes = batch.bytes();
    let header = BatchHeader::parse(bytes).expect("an accepted batch has a parseable header");
    assert_eq!(&header, batch.header());
    assert_eq!(header.magic, 2);
    assert_eq!(header.total_len(), bytes.len());
    assert!(header.record_count > 0);
    assert_eq!(header.last_offset_delta, header.record_count - 1);
    assert_eq!(
        crc32c::crc32c(&bytes[CRC_PREFIX_LEN..]),
        header.crc,
        "accepted batch fails its CRC"
    );
}

/// Arbitrary bytes as a whole segment object: whole-object decoding, footer decoding from a
/// short tail, and range reads from many offsets and timestamps, as storage reads segments.
pub fn check_segment(object: Bytes) {
    let whole = read_footer(&object, object.len() as u64);
    check_tail_read(&object, &whole);
    if let Ok((footer, batches)) = decode_segment(object.clone()) {
        assert_eq!(
            Some(&footer),
            whole.as_ref().ok(),
            "decode_segment accepted a bad footer"
        );
        assert_eq!(batches.len(), footer.batch_count as usize);
        check_run(&object, &footer, &batches, i64::MIN);
        if let (Some(first), Some(last)) = (batches.first(), batches.last()) {
            assert_eq!(first.base_offset(), footer.base_offset);
            assert_eq!(last.last_offset(), footer.last_offset);
        }
    }
    let Ok(footer) = whole else { return };
    for offset in probe_offsets(&footer) {
        let pos = footer.seek(offset);
        assert!(
            (footer.data_start..=footer.data_end).contains(&pos),
            "seek({offset}) = {pos} is outside the data"
        );
        read_range(&object, &footer, pos, offset);
    }
    for ts in [
        i64::MIN,
        footer.min_timestamp,
        footer.max_timestamp,
        footer.max_timestamp.saturating_add(1),
    ] {
        if let Some(pos) = footer.seek_timestamp(ts) {
            assert!(
                (footer.data_start..footer.data_end).contains(&pos),
                "seek_timestamp({ts}) = {pos} is outside the data"
            );
            read_range(&object, &footer, pos, i64::MIN);
        }
    }
}

/// A footer read from a short tail is the same as one read from the whole object, including
/// after the second read that `need_tail_bytes` asks for.
fn check_tail_read(object: &Bytes, whole: &Result<SegmentFooter, SegmentError>) {
    let len = object.len();
    let first = read_footer(&object[len.saturating_sub(FIRST_TAIL_LEN)..], len as u64);
    let footer = match first {
        Err(e) => match e.need_tail_bytes() {
            Some(needed) if needed <= len => read_footer(&object[len - needed..], len as u64),
            _ => Err(e),
        },
        ok => ok,
    };
    assert_eq!(
        footer.ok(),
        whole.as_ref().ok().cloned(),
        "tail read and whole read disagree"
    );
}

/// Offsets worth seeking to: around the segment's ends and every index point.
fn probe_offsets(footer: &SegmentFooter) -> Vec<i64> {
    let mut offsets = vec![
        i64::MIN,
        footer.base_offset.saturating_sub(1),
        footer.base_offset,
        footer.base_offset / 2 + footer.last_offset / 2,
        footer.last_offset,
        footer.last_offset.saturating_add(1),
        i64::MAX,
    ];
    for point in footer.index_points().take(16) {
        offsets.extend([point.offset, point.offset.saturating_add(1)]);
    }
    offsets
}

/// Reads batches from `pos` to the end of the data with small, growing range reads, like the
/// storage reader, checking it always makes progress and only returns verified batches.
fn read_range(object: &Bytes, footer: &SegmentFooter, mut pos: u64, from_offset: i64) {
    let data_len = footer.data_end - footer.data_start;
    // Each round either moves past at least one whole batch or doubles the budget.
    let max_rounds = data_len / BatchHeader::LEN as u64 + 64;
    let mut budget = 64u64;
    let mut batches = Vec::new();
    for _ in 0..max_rounds {
        if pos >= footer.data_end {
            check_run(object, footer, &batches, from_offset);
            return;
        }
        let end = footer.data_end.min(pos + budget);
        let range = object.slice(pos as usize..end as usize);
        let mut cursor = BatchCursor::with_footer(range, pos, footer, from_offset);
        for batch in cursor.by_ref() {
            match batch {
                Ok(batch) => batches.push(batch),
                Err(_) => return check_run(object, footer, &batches, from_offset),
            }
        }
        let next = BatchCursor::position(&cursor);
        assert!(
            (pos..=end).contains(&next),
            "cursor moved from {pos} to {next}, outside {pos}..{end}"
        );
        if next == pos {
            assert!(
                end < footer.data_end,
                "cursor stuck at {pos} with the whole rest of the data"
            );
            budget *= 2;
        }
        pos = next;
    }
    panic!("reading from {pos} made no progress in {max_rounds} rounds");
}

/// Checks batches a reader returned for `from_offset`: each verified and inside the object's
/// data, offsets dense and inside the segment, none wholly before `from_offset`.
fn check_run(object: &Bytes, footer: &SegmentFooter, batches: &[RecordBatch], from_offset: i64) {
    let mut next_offset = None;
    for batch in batches {
        check_batch(batch);
        let at = batch.bytes().as_ptr() as u64 - object.as_ptr() as u64;
        assert!(
            at >= footer.data_start && at + batch.len() as u64 <= footer.data_end,
            "batch at {at} is outside the data"
        );
        assert!(
            batch.last_offset() >= from_offset,
            "batch below the requested offset"
        );
        assert!(
            batch.base_offset() >= footer.base_offset && batch.last_offset() <= footer.last_offset,
            "batch outside the segment's offsets"
        );
        if let Some(expected) = next_offset {
            assert_eq!(batch.base_offset(), expected, "offsets are not dense");
        }
        next_offset = Some(batch.last_offset() + 1);
    }
}
