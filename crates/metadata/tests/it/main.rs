//! Integration tests: the conformance suite against every backend, plus backend specifics.

mod cached;
mod postgres;
mod sqlite;
