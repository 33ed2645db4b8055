//! Arbitrary bytes as one Kafka request frame (after the size prefix), through the agent's own
//! decode path: `streamhouse_protocol::decode_request`, the function the connection calls for
//! every frame (version table check, header and body decoding, with the patched codec). Produce
//! payloads that decode are then split into record batches as the produce handler does. Nothing
//! may panic, and every batch accepted must really pass its CRC.

#![no_main]

use kafka_protocol::messages::RequestKind;
use libfuzzer_sys::fuzz_target;
use streamhouse_fuzz::check_produce_payload;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = streamhouse_protocol::decode_request(bytes::Bytes::copy_from_slice(data))
    else {
        return;
    };
    assert_eq!(request.api as i16, request.header.request_api_key);
    if let RequestKind::Produce(produce) = request.body {
        let payloads = produce
            .topic_data
            .into_iter()
            .flat_map(|t| t.partition_data);
        for records in payloads.filter_map(|p| p.records) {
            check_produce_payload(records);
        }
    }
});
