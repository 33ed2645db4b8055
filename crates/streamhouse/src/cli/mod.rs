//! Operator commands. Each one talks to a running server over the Kafka protocol or the HTTP
//! admin API, never to its database or data directory (except `segment inspect`, which decodes
//! a segment object read-only).

pub mod acl;
pub mod agent;
pub mod consume;
pub mod group;
pub mod http;
pub mod kafka;
pub mod kafka_security;
pub mod output;
pub mod produce;
pub mod segment;
pub mod topic;
pub mod user;

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

/// Where the server is and how to reach it: flags shared by every operator command.
#[derive(Debug, Clone, Args)]
pub struct Endpoints {
    /// Kafka listener of the server (`host:port`, comma-separated for several).
    #[arg(
        long,
        global = true,
        env = "STREAMHOUSE_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,
    /// Base URL of the server's HTTP admin API (`https://...` when it serves TLS).
    #[arg(
        long,
        alias = "http-url",
        global = true,
        env = "STREAMHOUSE_HTTP",
        default_value = "http://127.0.0.1:8080"
    )]
    pub http: String,
    /// Trust only the CA certificate(s) of this PEM file for an `https://` admin API
    /// [default: the system's trusted CAs].
    #[arg(long, global = true, env = "STREAMHOUSE_HTTP_CA")]
    pub http_ca: Option<std::path::PathBuf>,
    /// Give up on an unreachable or unresponsive server after this long (e.g. `500ms`, `10s`).
    #[arg(long, global = true, env = "STREAMHOUSE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// TLS and SASL for the Kafka listener.
    #[command(flatten)]
    pub security: kafka_security::KafkaSecurityArgs,
}

impl Endpoints {
    /// One connection to the first reachable agent, for the admin APIs any agent answers
    /// (SCRAM users, ACLs: they act on the shared metadata store).
    pub async fn admin_connection(&self) -> anyhow::Result<crate::client::Connection> {
        let security = self.security.resolve()?;
        let (bootstrap, timeout) = (&self.bootstrap, self.timeout);
        crate::client::connect_any(bootstrap, &security, timeout, "streamhouse-cli").await
    }
}

/// Parses `250ms`, `10s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .with_context(|| format!("'{s}' is not a duration like 500ms, 10s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        _ => bail!("unknown duration unit '{unit}' in '{s}' (use ms, s or m)"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a `key=value` flag value (`--config`, `--header`).
pub fn parse_key_value(s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("'{s}' is not key=value"),
    }
}

/// Output format of listing commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Text,
    /// One JSON document (or one per line for streams).
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("abc").is_err());
    }

    #[test]
    fn key_values_need_a_key() {
        assert_eq!(
            parse_key_value("a=b=c").unwrap(),
            ("a".to_string(), "b=c".to_string())
        );
        assert!(parse_key_value("=x").is_err());
        assert!(parse_key_value("novalue").is_err());
    }
}
