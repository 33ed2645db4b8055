//! Kafka request frame decoding for StreamHouse agents.
//!
//! [`decode_request`] turns one request frame into a typed request, refusing any API or version
//! outside [`versions`], the one table of served versions that ApiVersions advertises. It is pure
//! (no broker, no I/O) and has no dependencies beyond the codec, so the agent's connection and the
//! `kafka_request` fuzz target (`fuzz/`) run exactly the same code, and the fuzz build stays small.

#![warn(missing_docs)]

mod request;
pub mod versions;

pub use request::{decode_request, DecodeError, DecodedRequest};
