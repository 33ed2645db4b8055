//! Builder -> object -> readers: byte-identical batches, correct seeks, partial ranges.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use streamhouse_segment::{
    decode_pieces, decode_segment, read_footer, BatchCursor, EncodedSegment, RecordBatch,
    SegmentBuilder, SegmentError, SegmentFooter, TRAILER_LEN,
};

use crate::common::{batch, positions, segment, BatchSpec};

pub fn specs() -> impl Strategy<Value = Vec<BatchSpec>> {
    prop::collection::vec((1usize..8, 0usize..300, 0i64..10_000), 0..40)
}

pub fn interval() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), 64usize..2048, Just(4096)]
}

fn same_bytes(a: &[RecordBatch], b: &[RecordBatch]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.bytes() == y.bytes())
}

/// Reads the footer the way storage does: a tail of `first_read` bytes, then what it asks for.
pub fn footer_via_tail(object: &Bytes, first_read: usize) -> Result<SegmentFooter, SegmentError> {
    let mut read = first_read;
    loop {
        let tail = &object[object.len() - read.min(object.len())..];
        match read_footer(tail, object.len() as u64) {
            Err(e) if e.need_tail_bytes().is_some_and(|n| n > read) => {
                read = e.need_tail_bytes().unwrap()
            }
            other => return other,
        }
    }
}

/// Batches read from `pos` to the data end with a footer-verified cursor.
fn read_from(
    seg: &EncodedSegment,
    footer: &SegmentFooter,
    pos: u64,
    from: i64,
) -> Vec<RecordBatch> {
    let data = seg.to_bytes().slice(pos as usize..footer.data_end as usize);
    BatchCursor::with_footer(data, pos, footer, from)
        .collect::<Result<_, _>>()
        .expect("valid segment reads cleanly")
}

/// `data` (the bytes from `pos`) cut at `cuts` (fractions of its length) into pieces.
fn pieces(data: &Bytes, cuts: &[f64]) -> Vec<Bytes> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|c| (c * data.len() as f64) as usize)
        .collect();
    at.extend([0, data.len()]);
    at.sort_unstable();
    at.windows(2).map(|w| data.slice(w[0]..w[1])).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Decoding a range given as pieces (cache blocks) yields the same batches and stops at
    /// the same position as one cursor over the same range in one buffer, wherever the cuts
    /// fall and wherever the range ends.
    #[test]
    fn pieces_decode_like_one_buffer(
        specs in specs(),
        interval in interval(),
        cuts in prop::collection::vec(0.0f64..1.0, 0..6),
        from_block in any::<prop::sample::Index>(),
        end_at in 0.0f64..1.5,
        from in 0i64..200,
    ) {
        let (seg, _) = segment(1_000, &specs, interval);
        let footer = &seg.footer;
        prop_assume!(footer.data_end > footer.data_start);
        let object = seg.to_bytes();
        // Seeks land on index block starts, where reads begin.
        let pos = footer.seek(footer.base_offset + from_block.index(200) as i64);
        prop_assume!(pos < footer.data_end);
        let len = footer.data_end - pos;
        let end = pos + ((len as f64 * end_at) as u64).min(len);
        let data = object.slice(pos as usize..end as usize);
        let mut whole = BatchCursor::with_footer(data.clone(), pos, footer, 1_000 + from);
        let expected: Vec<RecordBatch> = whole.by_ref().collect::<Result<_, _>>().expect("valid");
        let (got, reached) =
            decode_pieces(&pieces(&data, &cuts), pos, &Arc::new(footer.clone()), 1_000 + from, true)
                .expect("valid");
        prop_assert!(same_bytes(&got, &expected));
        prop_assert_eq!(reached, BatchCursor::position(&whole));
    }

    #[test]
    fn decode_segment_returns_pushed_batches(specs in specs(), interval in interval(), base in 0i64..1 << 40) {
        let (seg, pushed) = segment(base, &specs, interval);
        let (footer, decoded) = decode_segment(seg.to_bytes()).expect("decodes");
        prop_assert_eq!(&footer, &seg.footer);
        prop_assert!(same_bytes(&decoded, &pushed));
        prop_assert_eq!(footer.record_count, specs.iter().map(|s| s.0 as i64).sum::<i64>());
        prop_assert_eq!(footer.batch_count as usize, specs.len());
        prop_assert_eq!(footer.data_end as usize + footer.index_len() * 20 + 68 + TRAILER_LEN, seg.to_bytes().len());
    }

    #[test]
    fn cursor_from_any_offset_starts_at_the_batch_holding_it(
        specs in specs(), interval in interval(), first_read in 0usize..300, pick in any::<prop::sample::Index>()
    ) {
        let (seg, pushed) = segment(1_000, &specs, interval);
        let footer = footer_via_tail(&seg.to_bytes(), first_read).expect("footer");
        prop_assert_eq!(&footer, &seg.footer);
        let offset = 1_000 + pick.index(footer.record_count.max(1) as usize + 2) as i64 - 1;
        let pos = footer.seek(offset);
        let read = read_from(&seg, &footer, pos, offset);
        let expected: Vec<_> = pushed.iter().filter(|b| b.last_offset() >= offset).cloned().collect();
        prop_assert!(same_bytes(&read, &expected), "offset {} from {}", offset, pos);
        if let (Some(first), true) = (read.first(), offset >= 1_000) {
            prop_assert!(first.base_offset() <= offset && offset <= first.last_offset());
        }
        let starts = positions(&seg, &pushed);
        let holder = pushed.iter().position(|b| b.last_offset() >= offset);
        prop_assert!(holder.is_none_or(|i| pos <= starts[i]));
    }

    #[test]
    fn seek_timestamp_never_skips_a_matching_batch(specs in specs(), interval in interval(), ts in -5i64..10_010) {
        let (seg, pushed) = segment(0, &specs, interval);
        let starts = positions(&seg, &pushed);
        let first_match = pushed.iter().position(|b| b.max_timestamp() >= ts);
        match (seg.footer.seek_timestamp(ts), first_match) {
            (None, None) => {}
            (Some(pos), Some(i)) => {
                prop_assert!(pos <= starts[i]);
                let before = starts.iter().zip(&pushed).filter(|(&p, _)| p < pos);
                prop_assert!(before.clone().all(|(_, b)| b.max_timestamp() < ts));
                let read = read_from(&seg, &seg.footer, pos, i64::MIN);
                prop_assert_eq!(read.len(), pushed.len() - before.count());
            }
            (got, want) => prop_assert!(false, "seek_timestamp {:?} but first match {:?}", got, want),
        }
    }

    #[test]
    fn partial_ranges_end_cleanly_and_resume(
        specs in specs(), interval in interval(), cut in any::<prop::sample::Index>(), verified in any::<bool>()
    ) {
        let (seg, pushed) = segment(0, &specs, interval);
        let footer = &seg.footer;
        let (start, end) = (footer.data_start as usize, footer.data_end as usize);
        let mut pos = footer.data_start;
        let mut read = Vec::new();
        let mut fetch_end = start + cut.index(end - start + 1);
        // Ranges as a reader would issue them: the first cut anywhere, then the rest.
        loop {
            let data = seg.to_bytes().slice(pos as usize..fetch_end.max(pos as usize));
            let mut cursor = match verified {
                true => BatchCursor::with_footer(data, pos, footer, i64::MIN),
                false => BatchCursor::new(data, pos, footer.data_end, i64::MIN),
            };
            for batch in cursor.by_ref() {
                read.push(batch.expect("partial range ends without error"));
            }
            let next = cursor.position();
            prop_assert!(next <= fetch_end.max(pos as usize) as u64);
            if next == footer.data_end {
                break;
            }
            prop_assert!(fetch_end < end, "stopped at {} before data end with all data", next);
            pos = next;
            fetch_end = end;
        }
        prop_assert!(same_bytes(&read, &pushed));
    }
}

#[test]
fn builder_tracks_progress_and_rejects_gaps() {
    let mut builder = SegmentBuilder::new(10);
    assert!(builder.is_empty());
    assert_eq!(
        (builder.base_offset(), builder.next_offset(), builder.size()),
        (10, 10, 24)
    );
    let first = batch(4, 10, 0).with_base_offset(10);
    builder.push(&first).expect("first batch");
    assert_eq!((builder.next_offset(), builder.record_count()), (14, 4));
    assert_eq!(builder.size(), 24 + first.len());
    let err = builder.push(&first).expect_err("offset 10 is not next");
    assert!(
        matches!(
            err,
            SegmentError::OffsetMismatch {
                expected: 14,
                found: 10
            }
        ),
        "{err}"
    );
    assert!(!builder.is_empty());
}

#[test]
fn push_at_stores_what_a_copied_rebase_would() {
    // Small batches are packed, large ones (64 KiB and up) kept as slices of the caller's
    // bytes behind their new offset: both must give the object a copy-and-push gives.
    let batches = [batch(3, 10, 0), batch(70, 1024, 5), batch(2, 20, 9)];
    let (mut in_place, mut copied) = (SegmentBuilder::new(100), SegmentBuilder::new(100));
    for b in &batches {
        in_place
            .push_at(b, in_place.next_offset())
            .expect("push_at");
        copied
            .push(&b.with_base_offset(copied.next_offset()))
            .expect("push");
    }
    assert_eq!(in_place.next_offset(), 175);
    let (in_place, copied) = (in_place.finish(), copied.finish());
    assert_eq!(in_place.to_bytes(), copied.to_bytes());
    assert_eq!(in_place.footer, copied.footer);
    let (_, read) = decode_segment(in_place.to_bytes()).expect("decodes");
    let bases: Vec<i64> = read.iter().map(RecordBatch::base_offset).collect();
    assert_eq!(bases, [100, 103, 173]);
}

#[test]
fn empty_segment_round_trips() {
    let seg = SegmentBuilder::new(77).finish();
    let (footer, batches) = decode_segment(seg.to_bytes()).expect("empty segment decodes");
    assert!(batches.is_empty());
    assert_eq!(
        (
            footer.last_offset,
            footer.record_count,
            footer.min_timestamp
        ),
        (76, 0, -1)
    );
    assert_eq!(footer.seek(77), footer.data_end);
    assert_eq!(footer.seek(0), footer.data_end);
    assert_eq!(footer.seek_timestamp(0), None);
    let read: Vec<_> =
        BatchCursor::with_footer(Bytes::new(), footer.data_end, &footer, 77).collect();
    assert!(read.is_empty());
}

#[test]
fn seek_clamps_to_the_segment() {
    let (seg, _) = segment(100, &[(5, 10, 0); 50], 256);
    let footer = &seg.footer;
    assert!(footer.index_len() > 5);
    assert_eq!(footer.seek(0), footer.data_start);
    assert_eq!(footer.seek(100), footer.data_start);
    assert_eq!(footer.seek(349), footer.seek(345));
    assert_eq!(footer.seek(350), footer.data_end);
    assert!(footer.memory_size() >= footer.index_len() * 20);
    assert_eq!(footer.index_interval(), 256);
    let points: Vec<_> = footer.index_points().collect();
    assert_eq!(points.len(), footer.index_len());
    assert_eq!(
        (points[0].offset, points[0].position),
        (100, footer.data_start)
    );
    for point in &points {
        assert_eq!(footer.seek(point.offset), point.position);
        assert_eq!(footer.seek(point.offset + 1), point.position);
    }
}

#[test]
fn short_tail_asks_for_exactly_the_footer() {
    let (seg, _) = segment(0, &[(3, 100, 0); 200], 512);
    let len = seg.to_bytes().len() as u64;
    let err =
        read_footer(&seg.to_bytes()[seg.to_bytes().len() - 4..], len).expect_err("tail too short");
    let needed = err.need_tail_bytes().expect("asks for more");
    let err = read_footer(&seg.to_bytes()[seg.to_bytes().len() - needed..], len)
        .expect_err("only the trailer");
    let needed = err.need_tail_bytes().expect("asks for the footer");
    assert_eq!(needed as u64, len - seg.footer.data_end);
    let footer =
        read_footer(&seg.to_bytes()[seg.to_bytes().len() - needed..], len).expect("exact tail");
    assert_eq!(footer, seg.footer);
}
