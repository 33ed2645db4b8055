//! `decode_request`, the agent's request decoding, on well-formed and hostile frames. Inputs
//! found by the fuzzer (`scripts/fuzz.sh`, target `kafka_request`) are kept here as bytes.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader, RequestKind};
use kafka_protocol::protocol::{Encodable, StrBytes};
use streamhouse_protocol::{decode_request, DecodeError};

fn api_versions_frame(version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("it")))
        .encode(
            &mut buf,
            ApiKey::ApiVersions.request_header_version(version),
        )
        .unwrap();
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("it"))
        .with_client_software_version(StrBytes::from_static_str("1"))
        .encode(&mut buf, version)
        .unwrap();
    buf.freeze()
}

#[test]
fn decodes_a_served_request() {
    let request = decode_request(api_versions_frame(3)).unwrap();
    assert_eq!(request.api, ApiKey::ApiVersions);
    assert_eq!(request.header.correlation_id, 7);
    assert!(matches!(request.body, RequestKind::ApiVersions(_)));
}

#[test]
fn refuses_short_unknown_and_unsupported_requests() {
    let err = decode_request(Bytes::from_static(&[0, 18, 0, 3])).unwrap_err();
    assert!(matches!(err, DecodeError::ShortHeader(4)), "{err}");
    let err = decode_request(Bytes::from_static(&[0x7f, 0, 0, 0, 0, 0, 0, 1])).unwrap_err();
    assert!(matches!(err, DecodeError::UnknownApi(0x7f00)), "{err}");
    let mut frame = api_versions_frame(3).to_vec();
    frame[3] = 99; // version 99
    match decode_request(Bytes::from(frame)).unwrap_err() {
        // The correlation id survives so ApiVersions can still be answered (KIP-511).
        DecodeError::UnsupportedVersion { correlation_id, .. } => assert_eq!(correlation_id, 7),
        other => panic!("expected UnsupportedVersion, got {other}"),
    }
}

#[test]
fn a_truncated_body_is_malformed() {
    let frame = api_versions_frame(3);
    let err = decode_request(frame.slice(..frame.len() - 3)).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::Malformed {
                api: ApiKey::ApiVersions,
                ..
            }
        ),
        "{err}"
    );
}

/// Fuzzer crash (kafka_request): a 53-byte Fetch v12 frame whose topics array claims billions of
/// entries made kafka-protocol 0.18 `Vec::with_capacity` ~24 GiB before decoding one element,
/// which aborts the process (not a catchable error). Fixed in the patched copy under
/// third_party/kafka-protocol (see its STREAMHOUSE-PATCH.md); the frame is now malformed.
#[test]
fn a_huge_claimed_array_length_is_malformed_not_an_abort() {
    const FRAME: &[u8] = &[
        0x00, 0x01, 0x00, 0x0c, 0x00, 0x00, 0x00, 0x07, 0x00, 0x04, 0x73, 0x65, 0x65, 0x64, 0x00,
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x01, 0xf4, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x03, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00,
    ];
    let err = decode_request(Bytes::from_static(FRAME)).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::Malformed {
                api: ApiKey::Fetch,
                ..
            }
        ),
        "{err}"
    );
}
