//! Kafka topic-config names (`retention.ms`, ...) to and from [`TopicConfig`].

use std::fmt::Display;

use streamhouse_metadata::TopicConfig;

/// Why a topic setting was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid value {value:?} for config '{name}': {reason}")]
pub(crate) struct ConfigError {
    name: String,
    value: String,
    reason: &'static str,
}

/// Applies `name=value` settings on top of the defaults. Unknown names are kept verbatim in
/// `extra` (clients send settings such as `cleanup.policy` that need no action here).
pub(crate) fn parse<'a>(
    entries: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<TopicConfig, ConfigError> {
    let mut config = TopicConfig::default();
    for (name, value) in entries {
        let Some(value) = value else { continue };
        let err = |reason| ConfigError {
            name: name.to_string(),
            value: value.to_string(),
            reason,
        };
        let number = || value.parse::<i64>().map_err(|_| err("not an integer"));
        match name {
            "retention.ms" => config.retention_ms = non_negative_or_unlimited(number()?),
            "retention.bytes" => config.retention_bytes = non_negative_or_unlimited(number()?),
            "segment.bytes" => {
                config.segment_bytes = u64::try_from(number()?)
                    .ok()
                    .filter(|&b| b >= 1024)
                    .ok_or_else(|| err("must be at least 1024"))?
            }
            "segment.ms" => {
                config.segment_ms = u64::try_from(number()?)
                    .ok()
                    .filter(|&ms| ms >= 1)
                    .ok_or_else(|| err("must be positive"))?
            }
            _ => {
                config.extra.insert(name.to_string(), value.to_string());
            }
        }
    }
    Ok(config)
}

/// Kafka spells "unlimited" as -1.
fn non_negative_or_unlimited(v: i64) -> Option<i64> {
    (v >= 0).then_some(v)
}

/// Every setting of a topic as `(name, value, is_default)`, for DescribeConfigs.
pub(crate) fn describe(config: &TopicConfig) -> Vec<(String, String, bool)> {
    let default = TopicConfig::default();
    let unlimited = |v: Option<i64>| v.unwrap_or(-1);
    let mut out = Vec::new();
    let mut push = |name: &str, value: &dyn Display, is_default: bool| {
        out.push((name.to_string(), value.to_string(), is_default))
    };
    push(
        "retention.ms",
        &unlimited(config.retention_ms),
        config.retention_ms == default.retention_ms,
    );
    push(
        "retention.bytes",
        &unlimited(config.retention_bytes),
        config.retention_bytes == default.retention_bytes,
    );
    push(
        "segment.bytes",
        &config.segment_bytes,
        config.segment_bytes == default.segment_bytes,
    );
    push(
        "segment.ms",
        &config.segment_ms,
        config.segment_ms == default.segment_ms,
    );
    if !config.extra.contains_key("cleanup.policy") {
        push("cleanup.policy", &"delete", true);
    }
    for (name, value) in &config.extra {
        push(name, value, false);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_and_keeps_unknown() {
        let c = parse([
            ("retention.ms", Some("-1")),
            ("segment.bytes", Some("1048576")),
            ("cleanup.policy", Some("delete")),
        ])
        .unwrap();
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.segment_bytes, 1 << 20);
        assert_eq!(c.extra["cleanup.policy"], "delete");
        assert!(parse([("segment.bytes", Some("10"))]).is_err());
        assert!(parse([("retention.ms", Some("abc"))]).is_err());
    }

    #[test]
    fn describe_reports_defaults() {
        let d = describe(&TopicConfig::default());
        assert!(d.iter().all(|(_, _, is_default)| *is_default));
        assert!(d
            .iter()
            .any(|(n, v, _)| n == "retention.ms" && v == "604800000"));
    }
}
