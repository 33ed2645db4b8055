//! Damaged objects: never returned as valid data.

use bytes::Bytes;
use proptest::prelude::*;
use streamhouse_segment::{decode_segment, read_footer, BatchCursor, RecordBatch, SegmentError};

use crate::common::{positions, segment};
use crate::roundtrip::{footer_via_tail, interval, specs};

fn flipped(object: &Bytes, at: usize, xor: u8) -> Bytes {
    let mut bytes = object.to_vec();
    bytes[at] ^= xor;
    Bytes::from(bytes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_flipped_byte_is_detected(
        specs in specs(), interval in interval(), at in any::<prop::sample::Index>(), xor in 1u8..=255,
        pick in any::<prop::sample::Index>()
    ) {
        let (seg, pushed) = segment(0, &specs, interval);
        let at = at.index(seg.to_bytes().len());
        let object = flipped(&seg.to_bytes(), at, xor);
        let err = decode_segment(object.clone());
        prop_assert!(err.is_err(), "flip at {} of {} went unnoticed", at, seg.to_bytes().len());

        // The range-read path: whatever it returns must be the original bytes.
        let Ok(footer) = footer_via_tail(&object, 64) else { return Ok(()) };
        let starts = positions(&seg, &pushed);
        let offset = pick.index(footer.record_count.max(1) as usize) as i64;
        for (pos, from) in [(footer.seek(offset), offset), (footer.data_start, i64::MIN)] {
            let data = object.slice(pos as usize..footer.data_end as usize);
            let results: Vec<_> = BatchCursor::with_footer(data, pos, &footer, from).collect();
            for batch in results.iter().flatten() {
                let i = pushed.iter().position(|b| b.base_offset() == batch.base_offset()).expect("known batch");
                prop_assert_eq!(batch.bytes(), pushed[i].bytes(), "corrupt batch at {} returned", starts[i]);
            }
            let flip_in_data = (footer.data_start..footer.data_end).contains(&(at as u64));
            if from == i64::MIN && flip_in_data {
                prop_assert!(results.last().is_some_and(Result::is_err), "full read missed flip at {}", at);
            }
        }
    }

    #[test]
    fn truncated_object_is_rejected(specs in specs(), interval in interval(), keep in any::<prop::sample::Index>()) {
        let (seg, _) = segment(0, &specs, interval);
        let object = seg.to_bytes().slice(..keep.index(seg.to_bytes().len()));
        prop_assert!(decode_segment(object.clone()).is_err());
        let err = read_footer(&object, object.len() as u64).expect_err("truncated object has no footer");
        prop_assert!(err.need_tail_bytes().is_none(), "{}", err);
    }
}

#[test]
fn base_offset_flip_is_caught_by_the_index() {
    let (seg, pushed) = segment(0, &[(2, 50, 0); 20], 200);
    let second = seg.footer.data_start as usize + pushed[0].len();
    let object = flipped(&seg.to_bytes(), second + 7, 0x01);
    let err = decode_segment(object).expect_err("base offset flip");
    assert!(matches!(err, SegmentError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("batch base offset 3"), "{err}");
    assert_eq!(err.byte_range(), Some(second as u64..second as u64 + 8));
}

#[test]
fn leader_epoch_flip_is_caught_by_the_prefix_checksum() {
    let (seg, _) = segment(0, &[(2, 50, 0); 20], 200);
    let object = flipped(&seg.to_bytes(), seg.footer.data_start as usize + 13, 0x10);
    let err = decode_segment(object).expect_err("epoch flip");
    assert!(
        matches!(
            err,
            SegmentError::ChecksumMismatch {
                what: "batch prefix",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.byte_range().map(|r| r.start),
        Some(seg.footer.data_start)
    );
}

#[test]
fn errors_name_the_damaged_structure() {
    let (seg, pushed) = segment(0, &[(2, 50, 0); 5], 4096);
    let cases = [
        (0, "bad segment magic at bytes 0..4"),
        (9, "header CRC mismatch at bytes 0..20"),
        (seg.to_bytes().len() - 1, "bad trailer magic"),
        (seg.to_bytes().len() - 7, "unsupported segment format"),
        (seg.footer.data_end as usize + 3, "footer CRC mismatch"),
        (
            seg.footer.data_start as usize + pushed[0].len() + 70,
            "batch CRC mismatch",
        ),
    ];
    for (at, message) in cases {
        let err = decode_segment(flipped(&seg.to_bytes(), at, 0x04)).expect_err(message);
        assert!(err.to_string().contains(message), "flip at {at}: {err}");
    }
}

#[test]
fn plain_cursor_checks_crc_and_continuity() {
    let (seg, pushed) = segment(0, &[(2, 50, 0); 4], 4096);
    let footer = &seg.footer;
    let read = |object: &Bytes| -> Vec<Result<RecordBatch, SegmentError>> {
        let data = object.slice(footer.data_start as usize..footer.data_end as usize);
        BatchCursor::new(data, footer.data_start, footer.data_end, 0).collect()
    };
    assert_eq!(read(&seg.to_bytes()).len(), 4);
    let third = footer.data_start as usize + pushed[0].len() * 2;
    let results = read(&flipped(&seg.to_bytes(), third + 7, 0x02));
    assert_eq!(results.len(), 3, "two batches, then the error");
    let err = results[2].as_ref().expect_err("gap");
    assert!(
        err.to_string().contains("does not follow offset 3"),
        "{err}"
    );

    let mut cursor = BatchCursor::new(
        flipped(&seg.to_bytes(), third + 100, 0x02).slice(footer.data_start as usize..),
        footer.data_start,
        footer.data_end,
        0,
    );
    assert_eq!(cursor.by_ref().take(2).filter(Result::is_ok).count(), 2);
    let err = cursor.next().expect("third item").expect_err("CRC");
    assert_eq!(
        err.byte_range(),
        Some(third as u64..(third + pushed[2].len()) as u64)
    );
    assert_eq!(
        cursor.position(),
        third as u64,
        "position stays at the bad batch"
    );
    assert!(cursor.next().is_none(), "iteration ends after an error");
}

#[test]
fn a_trusting_cursor_skips_only_the_batch_crc() {
    let (seg, pushed) = segment(0, &[(2, 50, 0); 20], 200);
    let footer = seg.footer.clone();
    let read = |object: &Bytes, trust: bool| {
        let data = object.slice(footer.data_start as usize..footer.data_end as usize);
        let cursor = BatchCursor::with_footer(data, footer.data_start, &footer, i64::MIN);
        let cursor = if trust {
            cursor.trusting_batch_crcs()
        } else {
            cursor
        };
        cursor.collect::<Result<Vec<RecordBatch>, SegmentError>>()
    };
    // A flipped value byte: only Kafka's batch CRC covers it.
    let in_records = footer.data_start as usize + pushed[0].len() - 3;
    let object = flipped(&seg.to_bytes(), in_records, 0x01);
    assert!(matches!(
        read(&object, false),
        Err(SegmentError::ChecksumMismatch { what: "batch", .. })
    ));
    assert_eq!(read(&object, true).expect("not re-checked").len(), 20);
    // A flipped base offset is still caught: the structure and the footer's prefix checksum
    // are checked either way.
    let second = footer.data_start as usize + pushed[0].len();
    let object = flipped(&seg.to_bytes(), second + 7, 0x01);
    assert!(read(&object, true).is_err());
}
