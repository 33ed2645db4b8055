//! Fetch response frames whose records are not copied: the stored batches' own buffers become
//! chunks of one vectored write.
//!
//! kafka-protocol encodes a message only into one contiguous buffer, which copies every fetched
//! byte once more (with the page faults of a fresh multi-megabyte buffer per response). Here the
//! two outer levels of the served versions (4..=12: throttle time, error, session, topics by
//! name, partition arrays) are written by hand, each partition by kafka-protocol with empty
//! records, and the frame is split where the records go. Anything this layout does not cover
//! (tagged fields, a version outside the range) is refused, and the caller falls back to the
//! contiguous encoding; the tests compare both byte for byte.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{FetchResponse, ResponseHeader};
use kafka_protocol::protocol::Encodable;

/// Fetch versions whose layout [`fetch_frame`] writes (the served range).
const VERSIONS: std::ops::RangeInclusive<i16> = 4..=12;
/// First flexible (compact, tagged-field) version.
const FLEXIBLE: i16 = 12;

/// A frame as a queue of buffers, written with vectored writes.
#[derive(Debug, Default)]
pub(crate) struct Chunks {
    chunks: VecDeque<Bytes>,
    remaining: usize,
}

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.remaining += chunk.len();
            self.chunks.push_back(chunk);
        }
    }
}

impl Buf for Chunks {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |c| c.as_ref())
    }

    fn advance(&mut self, mut cnt: usize) {
        self.remaining -= cnt;
        while cnt > 0 {
            let front = self.chunks.front_mut().expect("advanced past the end");
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.chunks.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, chunk) in dst.iter_mut().zip(&self.chunks) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }
}

/// Builds the chunks: small fields accumulate in `buf`, records are pushed as they are.
#[derive(Default)]
struct Writer {
    out: Chunks,
    buf: BytesMut,
}

impl Writer {
    fn records(&mut self, records: Vec<Bytes>) {
        let fields = self.buf.split().freeze();
        self.out.push(fields);
        records.into_iter().for_each(|r| self.out.push(r));
    }

    fn finish(mut self) -> Chunks {
        let fields = self.buf.split().freeze();
        self.out.push(fields);
        let size = self.out.remaining as i32;
        self.out
            .chunks
            .push_front(Bytes::copy_from_slice(&size.to_be_bytes()));
        self.out.remaining += 4;
        self.out
    }
}

/// A Fetch response whose partitions' records are kept apart as the stored batches' own
/// buffers, `records[topic][partition]` in the response's order, instead of one joined copy per
/// partition; such a partition's `records` field is an empty placeholder.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct FetchReply {
    pub(crate) response: FetchResponse,
    pub(crate) records: Vec<Vec<Vec<Bytes>>>,
}

impl FetchReply {
    /// The response with each partition's records joined into its `records` field (a copy):
    /// what the contiguous encoder takes.
    pub(crate) fn joined(mut self) -> FetchResponse {
        for (topic, records) in self.response.responses.iter_mut().zip(self.records) {
            for (p, chunks) in topic.partitions.iter_mut().zip(records) {
                if chunks.iter().any(|c| !c.is_empty()) {
                    let mut joined = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
                    chunks.iter().for_each(|c| joined.extend_from_slice(c));
                    p.records = Some(joined.freeze());
                }
            }
        }
        self.response
    }

    /// The records kept apart for partition `p` of topic `t` (none when not kept apart).
    fn chunks(&self, t: usize, p: usize) -> &[Bytes] {
        self.records
            .get(t)
            .and_then(|t| t.get(p))
            .map_or(&[], Vec::as_slice)
    }
}

/// A response this layout does not cover: left to the contiguous encoder.
#[derive(Debug)]
struct Unsupported;

/// The frame (size, `header`, `reply`) of a Fetch response at `version`, records uncopied; or
/// `reply` back, unchanged, when its layout is not covered here.
pub(crate) fn fetch_frame(
    header: &ResponseHeader,
    header_version: i16,
    mut reply: FetchReply,
    version: i16,
) -> Result<Chunks, FetchReply> {
    let mut w = Writer::default();
    match write_frame(&mut w, header, header_version, &mut reply, version) {
        Ok(()) => Ok(w.finish()),
        Err(Unsupported) => Err(reply),
    }
}

fn write_frame(
    w: &mut Writer,
    header: &ResponseHeader,
    header_version: i16,
    reply: &mut FetchReply,
    version: i16,
) -> Result<(), Unsupported> {
    let mut response = std::mem::take(&mut reply.response);
    let written = write_body(w, header, header_version, &mut response, reply, version);
    reply.response = response;
    written
}

fn write_body(
    w: &mut Writer,
    header: &ResponseHeader,
    header_version: i16,
    body: &mut FetchResponse,
    reply: &FetchReply,
    version: i16,
) -> Result<(), Unsupported> {
    let covered = VERSIONS.contains(&version)
        && body.unknown_tagged_fields.is_empty()
        && body
            .responses
            .iter()
            .all(|t| t.unknown_tagged_fields.is_empty());
    if !covered {
        return Err(Unsupported);
    }
    let flexible = version >= FLEXIBLE;
    header
        .encode(&mut w.buf, header_version)
        .map_err(|_| Unsupported)?;
    w.buf.put_i32(body.throttle_time_ms); // v1+
    if version >= 7 {
        w.buf.put_i16(body.error_code);
        w.buf.put_i32(body.session_id);
    }
    put_len(&mut w.buf, body.responses.len(), flexible);
    for (t, topic) in body.responses.iter_mut().enumerate() {
        put_str(&mut w.buf, topic.topic.as_str(), flexible);
        put_len(&mut w.buf, topic.partitions.len(), flexible);
        for (i, p) in topic.partitions.iter_mut().enumerate() {
            partition(w, p, reply.chunks(t, i), version)?;
        }
        if flexible {
            w.buf.put_u8(0); // no tagged fields
        }
    }
    if flexible {
        w.buf.put_u8(0); // no tagged fields
    }
    Ok(())
}

/// One partition: kafka-protocol writes its fields with empty records, whose encoding (the
/// last field, then in v12 the tagged fields, none) is replaced by the real length and bytes:
/// the `chunks` kept apart for it, else its `records` field.
fn partition(
    w: &mut Writer,
    p: &mut PartitionData,
    chunks: &[Bytes],
    version: i16,
) -> Result<(), Unsupported> {
    let records: Vec<Bytes> = match &p.records {
        _ if chunks.iter().any(|c| !c.is_empty()) => chunks.to_vec(),
        Some(r) if !r.is_empty() => vec![r.clone()],
        _ => return p.encode(&mut w.buf, version).map_err(|_| Unsupported),
    };
    // Given back unchanged if the layout turns out not to be covered.
    let kept = p.records.replace(Bytes::new());
    let start = w.buf.len();
    let encoded = p.encode(&mut w.buf, version);
    p.records = kept;
    let empty: &[u8] = if version >= FLEXIBLE {
        &[1, 0] // compact length 0 (+1), then zero tagged fields
    } else {
        &[0, 0, 0, 0]
    };
    if encoded.is_err() || !w.buf[start..].ends_with(empty) {
        return Err(Unsupported);
    }
    w.buf.truncate(w.buf.len() - empty.len());
    // Bytes are length-prefixed like arrays: i32, or the compact length + 1 from v12.
    let len = records.iter().map(Bytes::len).sum();
    put_len(&mut w.buf, len, version >= FLEXIBLE);
    w.records(records);
    if version >= FLEXIBLE {
        w.buf.put_u8(0);
    }
    Ok(())
}

// kafka-protocol's field encoders (`protocol::types`) are crate-private, hence these three.
fn put_len(buf: &mut BytesMut, len: usize, flexible: bool) {
    if flexible {
        put_uvarint(buf, len as u64 + 1);
    } else {
        buf.put_i32(len as i32);
    }
}

fn put_str(buf: &mut BytesMut, s: &str, flexible: bool) {
    if flexible {
        put_uvarint(buf, s.len() as u64 + 1);
    } else {
        buf.put_i16(s.len() as i16);
    }
    buf.put_slice(s.as_bytes());
}

/// Kafka's unsigned varint: 7 bits per byte, low first, the high bit set on all but the last.
fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse};
    use kafka_protocol::messages::{ApiKey, ProducerId, TopicName};
    use kafka_protocol::protocol::StrBytes;

    use super::*;

    fn contiguous(header: &ResponseHeader, hv: i16, body: &FetchResponse, v: i16) -> Vec<u8> {
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header.encode(&mut buf, hv).unwrap();
        body.encode(&mut buf, v).unwrap();
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        buf.to_vec()
    }

    fn partition(index: i32, records: Option<usize>, aborted: bool) -> PartitionData {
        PartitionData::default()
            .with_partition_index(index)
            .with_high_watermark(1_000 + i64::from(index))
            .with_last_stable_offset(900)
            .with_log_start_offset(3)
            .with_aborted_transactions(aborted.then(|| {
                vec![AbortedTransaction::default()
                    .with_producer_id(ProducerId(7))
                    .with_first_offset(12)]
            }))
            .with_records(records.map(|n| Bytes::from((0..n).map(|i| i as u8).collect::<Vec<_>>())))
    }

    fn response() -> FetchResponse {
        // Record lengths around the varint boundaries of the compact encoding.
        let first = FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("orders")))
            .with_partitions(vec![
                partition(0, Some(126), true),
                partition(1, Some(127), false),
                partition(2, None, false),
                partition(3, Some(0), true),
                partition(4, Some(16_384), false),
                partition(5, Some(300_000), true).with_error_code(0),
            ]);
        let second = FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![
                partition(0, Some(1), false)
                    .with_preferred_read_replica(kafka_protocol::messages::BrokerId(-1)),
                partition(9, None, false).with_error_code(6),
            ]);
        FetchResponse::default()
            .with_throttle_time_ms(5)
            .with_session_id(0)
            .with_responses(vec![first, second, FetchableTopicResponse::default()])
    }

    fn whole(response: FetchResponse) -> FetchReply {
        FetchReply {
            response,
            records: Vec::new(),
        }
    }

    /// `response` with every partition's records kept apart, cut into up to three chunks.
    fn apart(mut response: FetchResponse) -> FetchReply {
        let records = response
            .responses
            .iter_mut()
            .map(|t| {
                t.partitions
                    .iter_mut()
                    .map(|p| match &p.records {
                        Some(r) if !r.is_empty() => {
                            let r = p.records.replace(Bytes::new()).unwrap();
                            let (a, b) = (r.len() / 3, r.len() * 2 / 3);
                            vec![r.slice(..a), r.slice(a..b), r.slice(b..)]
                        }
                        _ => Vec::new(),
                    })
                    .collect()
            })
            .collect();
        FetchReply { response, records }
    }

    #[test]
    fn records_kept_apart_join_back_into_the_response() {
        assert_eq!(apart(response()).joined(), response());
        assert_eq!(whole(response()).joined(), response());
    }

    #[test]
    fn chunks_match_the_contiguous_encoding_in_every_served_version() {
        let (_, served) = streamhouse_protocol::versions::all()
            .find(|(api, _)| *api == ApiKey::Fetch)
            .unwrap();
        let (lowest, highest) = (served.min, served.max);
        assert!(VERSIONS.contains(&lowest) && VERSIONS.contains(&highest));
        for version in lowest..=highest {
            let hv = ApiKey::Fetch.response_header_version(version);
            let header = ResponseHeader::default().with_correlation_id(41);
            let expected = contiguous(&header, hv, &response(), version);
            for (reply, least) in [(whole(response()), 11), (apart(response()), 19)] {
                let mut chunks = fetch_frame(&header, hv, reply, version).unwrap();
                assert_eq!(chunks.remaining(), expected.len(), "v{version}");
                let records = chunks.chunks.len();
                let got = chunks.copy_to_bytes(chunks.remaining());
                assert_eq!(got.as_ref(), expected.as_slice(), "v{version}");
                assert!(
                    records >= least,
                    "records are chunks of their own (v{version})"
                );
            }
        }
    }

    #[test]
    fn tagged_fields_are_left_to_the_contiguous_encoder() {
        let mut body = response();
        body.responses[0]
            .unknown_tagged_fields
            .insert(3, Bytes::from_static(b"x"));
        let header = ResponseHeader::default();
        let back = fetch_frame(&header, 1, apart(body.clone()), 12).unwrap_err();
        assert_eq!(back, apart(body), "given back unchanged");
        assert_eq!(
            fetch_frame(&header, 1, apart(response()), 13).unwrap_err(),
            apart(response())
        );
    }

    #[test]
    fn vectored_reads_walk_every_chunk_once() {
        let mut chunks = Chunks::default();
        for part in [&b"ab"[..], b"", b"cde", b"f"] {
            chunks.push(Bytes::copy_from_slice(part));
        }
        let mut slices = [IoSlice::new(&[]); 8];
        assert_eq!(chunks.chunks_vectored(&mut slices), 3);
        chunks.advance(3);
        assert_eq!((chunks.remaining(), chunks.chunk()), (3, &b"de"[..]));
        chunks.advance(3);
        assert!(!chunks.has_remaining());
    }
}
