//! Topic settings under their Kafka names (`retention.ms`, ...): the one place they are
//! validated (as Kafka's broker does, for CreateTopics, AlterConfigs, IncrementalAlterConfigs and
//! the HTTP API alike), changed, and turned to and from [`TopicConfig`].

use std::collections::{BTreeMap, BTreeSet};

use streamhouse_metadata::TopicConfig;

/// Why a topic setting was refused (Kafka's INVALID_CONFIG).
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid value {value:?} for config '{name}': {reason}")]
pub(crate) struct ConfigError {
    name: String,
    value: String,
    reason: String,
}

impl ConfigError {
    fn new(name: &str, value: &str, reason: impl Into<String>) -> Self {
        Self {
            name: name.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// One change to a topic setting: Kafka's IncrementalAlterConfigs operations (KIP-339).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// Give the setting this value.
    Set(String),
    /// Return the setting to its default.
    Delete,
    /// Add these comma-separated items to a list setting (items already there are kept once).
    Append(String),
    /// Remove these comma-separated items from a list setting.
    Subtract(String),
}

/// Longest value accepted. Values are stored in the topic's row and returned by every
/// DescribeConfigs; Kafka's own are short (the longest, throttled-replica lists, are a few
/// entries per partition), so anything near this is a mistake, not a setting.
const MAX_VALUE_BYTES: usize = 4096;

/// What values a setting takes, as Kafka's `TopicConfig` definitions say.
#[derive(Clone, Copy)]
enum Kind {
    /// A 64-bit integer at least this.
    Long(i64),
    /// A 32-bit integer at least this.
    Int(i32),
    Bool,
    /// A real number in `0..=1`.
    Ratio,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// A comma-separated list; APPEND and SUBTRACT apply only to these.
    List,
}

/// Every topic setting Kafka 4 defines, with the values it accepts and, for list settings, the
/// default APPEND and SUBTRACT start from. Names outside this table are refused, as Kafka does
/// (a typo would otherwise be kept and silently ignored).
const SETTINGS: &[(&str, Kind, Option<&str>)] = &[
    ("cleanup.policy", Kind::List, Some(DEFAULT_CLEANUP_POLICY)),
    (
        "compression.type",
        Kind::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        None,
    ),
    ("compression.gzip.level", Kind::Int(-1), None),
    ("compression.lz4.level", Kind::Int(1), None),
    ("compression.zstd.level", Kind::Int(-131072), None),
    ("delete.retention.ms", Kind::Long(0), None),
    ("file.delete.delay.ms", Kind::Long(0), None),
    ("flush.messages", Kind::Long(1), None),
    ("flush.ms", Kind::Long(0), None),
    (
        "follower.replication.throttled.replicas",
        Kind::List,
        Some(""),
    ),
    ("index.interval.bytes", Kind::Int(0), None),
    (
        "leader.replication.throttled.replicas",
        Kind::List,
        Some(""),
    ),
    ("local.retention.bytes", Kind::Long(-2), None),
    ("local.retention.ms", Kind::Long(-2), None),
    ("max.compaction.lag.ms", Kind::Long(1), None),
    ("max.message.bytes", Kind::Int(0), None),
    ("message.timestamp.after.max.ms", Kind::Long(0), None),
    ("message.timestamp.before.max.ms", Kind::Long(0), None),
    (
        "message.timestamp.type",
        Kind::OneOf(&["CreateTime", "LogAppendTime"]),
        None,
    ),
    ("min.cleanable.dirty.ratio", Kind::Ratio, None),
    ("min.compaction.lag.ms", Kind::Long(0), None),
    ("min.insync.replicas", Kind::Int(1), None),
    ("preallocate", Kind::Bool, None),
    ("remote.log.copy.disable", Kind::Bool, None),
    ("remote.log.delete.on.disable", Kind::Bool, None),
    ("remote.storage.enable", Kind::Bool, None),
    ("retention.bytes", Kind::Long(-1), None),
    ("retention.ms", Kind::Long(-1), None),
    // Below Kafka's minimum (1 MiB since 4.0) so tests can roll small segments.
    ("segment.bytes", Kind::Int(1024), None),
    ("segment.index.bytes", Kind::Int(4), None),
    ("segment.jitter.ms", Kind::Long(0), None),
    ("segment.ms", Kind::Long(1), None),
    ("unclean.leader.election.enable", Kind::Bool, None),
];

const DEFAULT_CLEANUP_POLICY: &str = "delete";

/// The settings that change what the agent does and live in [`TopicConfig`]'s own fields; all
/// others are kept verbatim in `TopicConfig::extra`.
const TYPED: [&str; 4] = [
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
];

/// Checks one `name=value` setting as Kafka's broker does.
pub(crate) fn validate(name: &str, value: &str) -> Result<(), ConfigError> {
    let err = |reason: &str| ConfigError::new(name, value, reason);
    let Some(&(_, kind, _)) = SETTINGS.iter().find(|(n, _, _)| *n == name) else {
        return Err(err("unknown topic config"));
    };
    if value.len() > MAX_VALUE_BYTES {
        return Err(err(&format!("longer than {MAX_VALUE_BYTES} bytes")));
    }
    match kind {
        Kind::Long(min) => match value.trim().parse::<i64>() {
            Ok(v) if v >= min => Ok(()),
            Ok(_) => Err(err(&format!("must be at least {min}"))),
            Err(_) => Err(err("not a 64-bit integer")),
        },
        Kind::Int(min) => match value.trim().parse::<i32>() {
            Ok(v) if v >= min => Ok(()),
            Ok(_) => Err(err(&format!("must be at least {min}"))),
            Err(_) => Err(err("not a 32-bit integer")),
        },
        Kind::Bool => match value.trim().to_ascii_lowercase().as_str() {
            "true" | "false" => Ok(()),
            _ => Err(err("must be true or false")),
        },
        Kind::Ratio => match value.trim().parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
            _ => Err(err("must be a number between 0 and 1")),
        },
        Kind::OneOf(words) if words.contains(&value.trim()) => Ok(()),
        Kind::OneOf(words) => Err(err(&format!("must be one of {}", words.join(", ")))),
        Kind::List if name == "cleanup.policy" => validate_cleanup_policy(value).map_err(err),
        Kind::List => Ok(()),
    }
}

fn validate_cleanup_policy(value: &str) -> Result<(), &'static str> {
    let items = list_items(value);
    if items.is_empty() {
        return Err("must name delete, compact, or both");
    }
    if items.iter().any(|p| *p != "delete" && *p != "compact") {
        return Err("must be delete, compact, or compact,delete");
    }
    Ok(())
}

fn list_items(value: &str) -> Vec<&str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// A topic config from `name=value` settings, validated, on top of the defaults. Settings
/// without a value (`None`) are skipped, as Kafka's CreateTopics does.
pub(crate) fn parse<'a>(
    entries: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<TopicConfig, ConfigError> {
    let mut config = TopicConfig::default();
    let mut explicit = BTreeSet::new();
    for (name, value) in entries {
        let Some(value) = value else { continue };
        validate(name, value)?;
        let value = value.trim();
        // `validate` checked the ranges; these only pick the field.
        let number = || value.parse::<i64>().expect("validated");
        match name {
            "retention.ms" => config.retention_ms = non_negative_or_unlimited(number()),
            "retention.bytes" => config.retention_bytes = non_negative_or_unlimited(number()),
            "segment.bytes" => config.segment_bytes = number() as u64,
            "segment.ms" => config.segment_ms = number() as u64,
            _ => {
                config.extra.insert(name.to_string(), value.to_string());
            }
        }
        explicit.insert(name.to_string());
    }
    config.explicit = Some(explicit);
    Ok(config)
}

/// Kafka spells "unlimited" as -1.
fn non_negative_or_unlimited(v: i64) -> Option<i64> {
    (v >= 0).then_some(v)
}

/// `config` after `changes`, applied in order, validated as a whole.
pub(crate) fn apply(
    config: &TopicConfig,
    changes: &[(String, ConfigChange)],
) -> Result<TopicConfig, ConfigError> {
    let mut settings = overrides(config);
    for (name, change) in changes {
        match change {
            ConfigChange::Set(value) => {
                settings.insert(name.clone(), value.clone());
            }
            ConfigChange::Delete => {
                // Kafka checks the name even when only removing it; a name stored before names
                // were checked can still be removed.
                if !SETTINGS.iter().any(|(n, _, _)| n == name) && !settings.contains_key(name) {
                    return Err(ConfigError::new(name, "", "unknown topic config"));
                }
                settings.remove(name);
            }
            ConfigChange::Append(items) | ConfigChange::Subtract(items) => {
                let Some(&(_, Kind::List, default)) = SETTINGS.iter().find(|(n, _, _)| n == name)
                else {
                    return Err(ConfigError::new(
                        name,
                        items,
                        "APPEND and SUBTRACT apply only to list configs",
                    ));
                };
                let current = settings
                    .get(name)
                    .map(String::as_str)
                    .or(default)
                    .unwrap_or("");
                let mut list: Vec<&str> = list_items(current);
                let given = list_items(items);
                if matches!(change, ConfigChange::Append(_)) {
                    for item in given {
                        if !list.contains(&item) {
                            list.push(item);
                        }
                    }
                } else {
                    list.retain(|item| !given.contains(item));
                }
                let value = list.join(",");
                settings.insert(name.clone(), value);
            }
        }
    }
    parse(settings.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))))
}

/// The settings given on the topic (its overrides), with their values.
pub(crate) fn overrides(config: &TopicConfig) -> BTreeMap<String, String> {
    describe(config)
        .into_iter()
        .filter(|(_, _, is_default)| !is_default)
        .map(|(k, v, _)| (k, v))
        .collect()
}

/// Every setting of a topic as `(name, value, is_default)`, for DescribeConfigs: the ones the
/// agent acts on and every setting given on the topic. `is_default` is false exactly for the
/// settings given on the topic.
pub(crate) fn describe(config: &TopicConfig) -> Vec<(String, String, bool)> {
    let default = TopicConfig::default();
    let given = |name: &str, differs: bool| match &config.explicit {
        Some(set) => set.contains(name),
        None => differs,
    };
    let unlimited = |v: Option<i64>| v.unwrap_or(-1).to_string();
    let typed = [
        (
            unlimited(config.retention_ms),
            config.retention_ms != default.retention_ms,
        ),
        (
            unlimited(config.retention_bytes),
            config.retention_bytes != default.retention_bytes,
        ),
        (
            config.segment_bytes.to_string(),
            config.segment_bytes != default.segment_bytes,
        ),
        (
            config.segment_ms.to_string(),
            config.segment_ms != default.segment_ms,
        ),
    ];
    let mut out: Vec<_> = TYPED
        .iter()
        .zip(typed)
        .map(|(name, (value, differs))| (name.to_string(), value, !given(name, differs)))
        .collect();
    if !config.extra.contains_key("cleanup.policy") {
        out.push(("cleanup.policy".into(), DEFAULT_CLEANUP_POLICY.into(), true));
    }
    for (name, value) in &config.extra {
        out.push((name.clone(), value.clone(), false));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, value: &str) -> (String, ConfigChange) {
        (name.into(), ConfigChange::Set(value.into()))
    }

    #[test]
    fn parses_known_settings_and_refuses_the_rest() {
        let c = parse([
            ("retention.ms", Some("-1")),
            ("segment.bytes", Some("1048576")),
            ("cleanup.policy", Some("delete")),
            ("message.timestamp.type", Some("CreateTime")),
        ])
        .unwrap();
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.segment_bytes, 1 << 20);
        assert_eq!(c.extra["cleanup.policy"], "delete");
        for (name, value) in [
            ("segment.bytes", "10"),
            ("retention.ms", "abc"),
            ("retention.ms", "-2"),
            ("retention.bytes", "-5"),
            ("cleanup.policy", "forever"),
            ("cleanup.policy", ""),
            ("cleanup.policy", "compact,forever"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("preallocate", "yes"),
            ("no.such.setting", "1"),
        ] {
            assert!(parse([(name, Some(value))]).is_err(), "{name}={value}");
        }
        let long = "1".repeat(MAX_VALUE_BYTES + 1);
        assert!(parse([("leader.replication.throttled.replicas", Some(&*long))]).is_err());
    }

    #[test]
    fn a_default_value_set_on_the_topic_is_reported_as_set() {
        let d = describe(&TopicConfig::default());
        assert!(d.iter().all(|(_, _, is_default)| *is_default));
        assert!(d
            .iter()
            .any(|(n, v, _)| n == "retention.ms" && v == "604800000"));
        let c = parse([("retention.ms", Some("604800000"))]).unwrap();
        let d = describe(&c);
        let given: Vec<_> = d.iter().filter(|(_, _, def)| !def).collect();
        assert_eq!(given.len(), 1);
        assert_eq!(given[0].0, "retention.ms");
    }

    #[test]
    fn changes_set_delete_append_and_subtract() {
        let c = parse([("retention.ms", Some("1000"))]).unwrap();
        let c = apply(
            &c,
            &[
                set("segment.ms", "5000"),
                ("retention.ms".into(), ConfigChange::Delete),
                (
                    "leader.replication.throttled.replicas".into(),
                    ConfigChange::Append("0:1,1:1".into()),
                ),
            ],
        )
        .unwrap();
        assert_eq!(c.retention_ms, TopicConfig::default().retention_ms);
        assert_eq!(c.segment_ms, 5000);
        let c = apply(
            &c,
            &[(
                "leader.replication.throttled.replicas".into(),
                ConfigChange::Subtract("0:1".into()),
            )],
        )
        .unwrap();
        assert_eq!(c.extra["leader.replication.throttled.replicas"], "1:1");
        let o = overrides(&c);
        assert_eq!(
            o.keys().collect::<Vec<_>>(),
            ["leader.replication.throttled.replicas", "segment.ms"]
        );
        // Appending to a list that defaults to delete gives delete plus the item.
        let both = apply(
            &c,
            &[(
                "cleanup.policy".into(),
                ConfigChange::Append("compact".into()),
            )],
        )
        .unwrap();
        assert_eq!(both.extra["cleanup.policy"], "delete,compact");
        assert!(apply(
            &c,
            &[("retention.ms".into(), ConfigChange::Append("1".into()))]
        )
        .is_err());
        assert!(apply(&c, &[("bogus".into(), ConfigChange::Delete)]).is_err());
    }
}
