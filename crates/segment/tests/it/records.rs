//! Record validation and bounded decompression (issue 12): real clients' batches in every codec
//! pass and decode; batches that lie about their records, carry garbage or expand past the
//! limit are refused without decompressing more than the limit.

use bytes::Bytes;
use kafka_protocol::records::Compression as KafkaCompression;
use streamhouse_segment::{RecordBatch, SegmentError};

use crate::common::{encode, records};

const MIB: usize = 1024 * 1024;

fn one(bytes: Bytes) -> RecordBatch {
    RecordBatch::parse_all(bytes)
        .expect("well-framed batch")
        .remove(0)
}

/// A zig-zag varint, as Kafka writes record fields.
fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// One record's bytes with its length prefix; `length_delta` makes the prefix lie.
fn record(offset_delta: i64, key: Option<&[u8]>, value: &[u8], length_delta: i64) -> Vec<u8> {
    let mut body = vec![0u8]; // attributes
    varint(&mut body, 0); // timestamp delta
    varint(&mut body, offset_delta);
    match key {
        Some(k) => {
            varint(&mut body, k.len() as i64);
            body.extend_from_slice(k);
        }
        None => varint(&mut body, -1),
    }
    varint(&mut body, value.len() as i64);
    body.extend_from_slice(value);
    varint(&mut body, 0); // headers
    let mut out = Vec::new();
    varint(&mut out, body.len() as i64 + length_delta);
    out.extend_from_slice(&body);
    out
}

/// A batch with `count` declared records around `payload` (compressed with `codec`).
fn batch(codec: i16, count: i32, payload: &[u8]) -> RecordBatch {
    let mut buf = Vec::new();
    buf.extend_from_slice(&0i64.to_be_bytes());
    buf.extend_from_slice(&((49 + payload.len()) as i32).to_be_bytes());
    buf.extend_from_slice(&(-1i32).to_be_bytes());
    buf.push(2);
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&codec.to_be_bytes());
    buf.extend_from_slice(&(count - 1).to_be_bytes());
    buf.extend_from_slice(&1_000i64.to_be_bytes());
    buf.extend_from_slice(&1_000i64.to_be_bytes());
    buf.extend_from_slice(&(-1i64).to_be_bytes());
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    buf.extend_from_slice(&(-1i32).to_be_bytes());
    buf.extend_from_slice(&count.to_be_bytes());
    buf.extend_from_slice(payload);
    let crc = streamhouse_segment::crc32c(&buf[21..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    one(Bytes::from(buf))
}

#[test]
fn validation_counts_null_keys_in_the_same_pass() {
    let mut payload = record(0, Some(b"k"), b"v", 0);
    payload.extend(record(1, None, b"v", 0));
    payload.extend(record(2, Some(b""), b"v", 0));
    payload.extend(record(3, None, b"", 0));
    // An empty key is a key; only null ones count.
    assert_eq!(
        batch(0, 4, &payload)
            .validate_counting_null_keys(MIB)
            .unwrap(),
        2
    );
    let keyed = record(0, Some(b"k"), b"v", 0);
    assert_eq!(
        batch(0, 1, &keyed)
            .validate_counting_null_keys(MIB)
            .unwrap(),
        0
    );
}

fn reason(e: SegmentError) -> String {
    match e {
        SegmentError::InvalidBatch { reason, .. } => reason,
        other => panic!("expected an invalid batch, got {other}"),
    }
}

#[test]
fn client_batches_in_every_codec_validate_and_decode() {
    let codecs = [
        KafkaCompression::None,
        KafkaCompression::Gzip,
        KafkaCompression::Snappy,
        KafkaCompression::Lz4,
        KafkaCompression::Zstd,
    ];
    for codec in codecs {
        let batch = one(encode(&records(50, 300, 1_000), codec));
        batch
            .validate_records(MIB)
            .unwrap_or_else(|e| panic!("{codec:?}: {e}"));
        let decoded: Vec<_> = batch
            .records(MIB)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(decoded.len(), 50, "{codec:?}");
        assert_eq!(decoded[7].offset, 7);
        assert_eq!(decoded[7].timestamp, 1_007);
        assert_eq!(decoded[7].key.as_deref(), Some(&b"key-7"[..]));
        assert_eq!(decoded[7].value.as_deref(), Some(&[b'h'; 300][..]));
    }
}

#[test]
fn a_record_count_that_lies_is_refused() {
    // 1,000 declared, 1 present: the payload ends inside record 1.
    let b = batch(0, 1000, &record(0, Some(b"k"), b"v", 0));
    let why = reason(b.validate_records(MIB).unwrap_err());
    assert!(why.contains("ends inside record 1 of 1000"), "{why}");
    // Fewer declared than present: bytes follow the last record.
    let two = [record(0, None, b"a", 0), record(1, None, b"b", 0)].concat();
    let why = reason(batch(0, 1, &two).validate_records(MIB).unwrap_err());
    assert!(why.contains("bytes follow the 1 declared records"), "{why}");
}

#[test]
fn record_lengths_varints_and_headers_that_lie_are_refused() {
    let longer = record(0, Some(b"k"), b"v", 5);
    let why = reason(batch(0, 1, &longer).validate_records(MIB).unwrap_err());
    assert!(
        why.contains("payload ends") || why.contains("declares"),
        "{why}"
    );
    let shorter = [record(0, Some(b"k"), b"value", -2), vec![0; 2]].concat();
    let why = reason(batch(0, 1, &shorter).validate_records(MIB).unwrap_err());
    assert!(why.contains("declares"), "{why}");
    let gap = [record(0, None, b"a", 0), record(2, None, b"b", 0)].concat();
    let why = reason(batch(0, 2, &gap).validate_records(MIB).unwrap_err());
    assert!(why.contains("consecutive"), "{why}");
    // Length 20, attributes, then an 11-byte timestamp varlong.
    let overlong_varint = [vec![40u8, 0], vec![0xff; 11], vec![0; 8]].concat();
    let why = reason(
        batch(0, 1, &overlong_varint)
            .validate_records(MIB)
            .unwrap_err(),
    );
    assert!(why.contains("varint"), "{why}");
    // A header with a null key (-1).
    let mut body = vec![0u8, 0, 0, 1];
    varint(&mut body, 1);
    body.push(b'v');
    varint(&mut body, 1);
    varint(&mut body, -1);
    varint(&mut body, -1);
    let mut rec = Vec::new();
    varint(&mut rec, body.len() as i64);
    rec.extend_from_slice(&body);
    let why = reason(batch(0, 1, &rec).validate_records(MIB).unwrap_err());
    assert!(why.contains("null header key"), "{why}");
}

#[test]
fn garbage_compressed_payloads_are_refused() {
    for codec in 1..=4i16 {
        let b = batch(codec, 1, &[0x5a; 200]);
        let why = reason(b.validate_records(MIB).unwrap_err());
        assert!(
            why.contains("decompress") || why.contains("decode") || why.contains("zstd"),
            "codec {codec}: {why}"
        );
    }
}

#[test]
fn a_decompression_bomb_stops_at_the_limit() {
    // One record with a 64 MiB value of zeros: ~2 KB compressed.
    let huge = record(0, None, &vec![0u8; 64 * MIB], 0);
    let zstd = zstd::encode_all(&huge[..], 3).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &huge).unwrap();
    let gzip = gz.finish().unwrap();
    let lz4 = lz4_frame(&huge, |b| {
        b.block_mode(lz4::BlockMode::Independent);
    });
    assert!(zstd.len() < 64 * 1024 && gzip.len() < 1024 * 1024 && lz4.len() < 1024 * 1024);
    // Uncompressed records read in place are held to the same limit.
    for (codec, payload) in [(4i16, zstd), (1, gzip), (3, lz4), (0, huge.clone())] {
        let b = batch(codec, 1, &payload);
        assert!(matches!(
            b.validate_records(MIB),
            Err(SegmentError::TooLarge { limit, .. }) if limit == MIB as u64
        ));
        // Streams fail on the read past the limit; payloads expanded whole, before reading.
        match b.records(MIB) {
            Err(e) => assert!(matches!(e, SegmentError::TooLarge { .. }), "{e}"),
            Ok(mut records) => {
                assert!(matches!(
                    records.next(),
                    Some(Err(SegmentError::TooLarge { .. }))
                ));
                assert!(records.next().is_none());
            }
        }
        // Within a larger limit the same batch is valid.
        b.validate_records(65 * MIB).unwrap();
    }
    // A snappy block that claims 3 GiB is refused from its claim, not allocated.
    let mut claim = Vec::new();
    let mut n: u64 = 3 << 30;
    while n >= 0x80 {
        claim.push((n as u8) | 0x80);
        n >>= 7;
    }
    claim.push(n as u8);
    claim.extend_from_slice(&[0; 16]);
    assert!(matches!(
        batch(2, 1, &claim).validate_records(MIB),
        Err(SegmentError::TooLarge { .. })
    ));
}

/// Records over several 64 KiB lz4 blocks, in one uncompressed payload.
fn many_records(count: usize) -> Vec<u8> {
    (0..count)
        .flat_map(|i| {
            let key = format!("key-{i}");
            let value: Vec<u8> = (0..700).map(|j| (i * 31 + j * 7) as u8 % 61).collect();
            record(i as i64, Some(key.as_bytes()), &value, 0)
        })
        .collect()
}

fn lz4_frame(raw: &[u8], build: impl Fn(&mut lz4::EncoderBuilder)) -> Vec<u8> {
    let mut builder = lz4::EncoderBuilder::new();
    build(&mut builder);
    let mut encoder = builder.build(Vec::new()).unwrap();
    std::io::Write::write_all(&mut encoder, raw).unwrap();
    let (out, result) = encoder.finish();
    result.unwrap();
    out
}

fn assert_records(b: &RecordBatch, count: usize, what: &str) {
    b.validate_records(MIB)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let decoded: Vec<_> = b.records(MIB).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(decoded.len(), count, "{what}");
    for (i, record) in decoded.iter().enumerate() {
        assert_eq!(
            record.key.as_deref(),
            Some(format!("key-{i}").as_bytes()),
            "{what}"
        );
        let value: Vec<u8> = (0..700).map(|j| (i * 31 + j * 7) as u8 % 61).collect();
        assert_eq!(record.value.as_deref(), Some(&value[..]), "{what}");
    }
}

#[test]
fn lz4_frames_of_every_shape_decode() {
    use lz4::liblz4::BlockChecksum;
    use lz4::{BlockMode, BlockSize, ContentChecksum};
    let count = 300; // ~215 KB: four 64 KiB blocks
    let raw = many_records(count);
    for mode in [BlockMode::Independent, BlockMode::Linked] {
        for block_size in [BlockSize::Max64KB, BlockSize::Max256KB, BlockSize::Max4MB] {
            for checksums in [false, true] {
                let frame = lz4_frame(&raw, |b| {
                    b.block_mode(mode.clone()).block_size(block_size.clone());
                    if checksums {
                        b.checksum(ContentChecksum::ChecksumEnabled)
                            .block_checksum(BlockChecksum::BlockChecksumEnabled)
                            .content_size(raw.len() as u64);
                    } else {
                        b.checksum(ContentChecksum::NoChecksum);
                    }
                });
                let what = format!("{mode:?} {block_size:?} checksums {checksums}");
                assert_records(&batch(3, count as i32, &frame), count, &what);
            }
        }
    }
    // Incompressible blocks are stored as they are (the high bit of their size): Kafka's Java
    // producer writes those when compression does not pay.
    let mut frame = lz4_frame(b"", |b| {
        b.block_mode(BlockMode::Independent)
            .block_checksum(BlockChecksum::NoBlockChecksum)
            .checksum(ContentChecksum::NoChecksum);
    });
    let end_mark = frame.split_off(frame.len() - 4);
    assert_eq!(end_mark, [0; 4]);
    for chunk in raw.chunks(64 * 1024) {
        frame.extend_from_slice(&(chunk.len() as u32 | 0x8000_0000).to_le_bytes());
        frame.extend_from_slice(chunk);
    }
    frame.extend_from_slice(&end_mark);
    assert_records(&batch(3, count as i32, &frame), count, "stored blocks");
    // A batch read after a larger one on the same thread sees only its own bytes.
    let small = many_records(5);
    let frame = lz4_frame(&small, |b| {
        b.block_mode(BlockMode::Independent);
    });
    assert_records(&batch(3, 5, &frame), 5, "after a larger batch");
}

#[test]
fn lz4_frames_that_lie_are_refused() {
    use lz4::liblz4::BlockChecksum;
    use lz4::{BlockMode, ContentChecksum};
    let raw = many_records(100);
    let frame = lz4_frame(&raw, |b| {
        b.block_mode(BlockMode::Independent)
            .checksum(ContentChecksum::ChecksumEnabled)
            .block_checksum(BlockChecksum::BlockChecksumEnabled)
            .content_size(raw.len() as u64);
    });
    let refused = |frame: &[u8], expect: &str| {
        let why = reason(batch(3, 100, frame).validate_records(MIB).unwrap_err());
        assert!(why.contains(expect), "{expect}: {why}");
    };
    let flipped = |at: usize| {
        let mut f = frame.clone();
        f[at] ^= 0x01;
        f
    };
    // Magic 4, FLG, BD, content size 8, HC: the first block's size at 15, its data at 19.
    refused(&flipped(0), "magic number");
    refused(&flipped(14), "descriptor checksum");
    refused(&flipped(25), "block checksum");
    let mut sizes = flipped(6);
    sizes[14] = (twox_hash::XxHash32::oneshot(0, &sizes[4..14]) >> 8) as u8;
    refused(&sizes, "declares");
    let mut content = frame.clone();
    let last = content.len() - 1;
    content[last] ^= 0x01;
    refused(&content, "content checksum");
    let mut trailing = frame.clone();
    trailing.push(0);
    refused(&trailing, "follow the frame");
    refused(&frame[..frame.len() / 2], "cut short");
    // A block that claims more than the frame's block size.
    let mut oversized = frame.clone();
    oversized[15..19].copy_from_slice(&(65 * 1024u32).to_le_bytes());
    refused(&oversized, "exceeds the frame's");
}
