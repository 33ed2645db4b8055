//! Integration tests: the conformance suite against every backend, plus backend specifics.

mod cached;
mod hooked;
mod lease_scale;
mod postgres;
mod sqlite;
