//! Property: whatever is appended, with flushes and rolls anywhere, reads back byte-identical
//! (apart from the rewritten base offset) from any start offset, across many segments, on the
//! in-memory and the local-filesystem object store.

use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::ObjectStore;
use proptest::prelude::*;
use streamhouse_segment::RecordBatch;
use streamhouse_storage::{PartitionReader, WriterConfig};

use crate::support::{batch, test_config, Env};

#[derive(Debug, Clone)]
enum Op {
    /// One produce request: (records, value length) per batch.
    Append(Vec<(usize, usize)>),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((1usize..12, 0usize..300), 1..4).prop_map(Op::Append),
        1 => Just(Op::Flush),
    ]
}

/// A batch as appended: its assigned offsets and its original bytes.
struct Expected {
    base_offset: i64,
    last_offset: i64,
    original: RecordBatch,
}

async fn run(ops: Vec<Op>, local: bool, segment_max_bytes: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = if local {
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap())
    } else {
        Arc::new(InMemory::new())
    };
    let env = Env::new(store).await;
    let config = WriterConfig {
        segment_max_bytes,
        ..test_config()
    };
    let writer = env.writer(config, None).await.unwrap();
    let mut expected: Vec<Expected> = Vec::new();
    let mut tickets = Vec::new();
    let mut timestamp = 0;
    for op in ops {
        match op {
            Op::Flush => {
                writer.flush().await.unwrap();
            }
            Op::Append(shape) => {
                let batches: Vec<RecordBatch> = shape
                    .iter()
                    .map(|&(records, value_len)| {
                        timestamp += 10;
                        batch(records, value_len, timestamp, None)
                    })
                    .collect();
                let appended = writer.append(batches.clone()).unwrap();
                let next = expected.last().map_or(0, |e| e.last_offset + 1);
                assert_eq!(appended.base_offset, next, "offsets must be consecutive");
                let mut base = appended.base_offset;
                for original in batches {
                    let last = base + i64::from(original.record_count()) - 1;
                    expected.push(Expected {
                        base_offset: base,
                        last_offset: last,
                        original,
                    });
                    base = last + 1;
                }
                assert_eq!(base - 1, appended.last_offset);
                tickets.push(appended.durable);
            }
        }
        // Let background rolls run at arbitrary points.
        tokio::task::yield_now().await;
    }
    writer.flush().await.unwrap();
    for ticket in tickets {
        ticket.wait().await.unwrap();
    }
    let end = expected.last().map_or(0, |e| e.last_offset + 1);
    assert_eq!(writer.high_watermark(), end);

    let local_reader = env.local_reader(&writer);
    let cold_reader = env.cold_reader();
    for start in 0..end {
        let max_bytes = 1 + (start as usize * 97) % 2048;
        check_read_from(&local_reader, start, max_bytes, &expected, end).await;
        check_read_from(&cold_reader, start, max_bytes, &expected, end).await;
    }
}

/// Reads from `start` to the end in `max_bytes` steps and compares with what was appended.
async fn check_read_from(
    reader: &PartitionReader,
    start: i64,
    max_bytes: usize,
    expected: &[Expected],
    end: i64,
) {
    let first = expected
        .iter()
        .position(|e| e.base_offset <= start && start <= e.last_offset)
        .unwrap();
    let mut want = expected[first..].iter();
    let mut next = start;
    while next < end {
        let read = reader.read(next, max_bytes).await.unwrap();
        assert!(!read.batches.is_empty(), "no progress at {next}");
        assert_eq!(read.high_watermark, end);
        for got in &read.batches {
            let want = want.next().expect("more batches than appended");
            assert_eq!(got.base_offset(), want.base_offset);
            assert_eq!(got.last_offset(), want.last_offset);
            assert_eq!(got.bytes()[8..], want.original.bytes()[8..]);
        }
        if read.batches.len() > 1 {
            assert!(read.size_bytes() <= max_bytes);
        }
        next = read.next_offset;
    }
    assert!(want.next().is_none());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn appended_batches_read_back_identically_from_any_offset(
        ops in prop::collection::vec(op(), 1..40),
        local in any::<bool>(),
        segment_max_bytes in prop_oneof![Just(u64::MAX), 512u64..8192],
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run(ops, local, segment_max_bytes));
    }
}
