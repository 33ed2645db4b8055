//! Access control lists as stored: Kafka's model of ACL bindings (a resource pattern plus an
//! access control entry) and the filters that select them for listing and deletion.
//!
//! Names and wire codes are Kafka's, so bindings read the same in the metadata store, the HTTP
//! API, the CLI and Kafka's own admin tools. Deciding whether a request is allowed is the
//! agent's business (`streamhouse_kafka::security`); this module only describes and selects.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A name that is not one of an ACL enum's values.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("unknown {kind} '{value}' (expected one of: {expected})")]
pub struct AclParseError {
    /// What was being parsed (`operation`, ...).
    pub kind: &'static str,
    /// The text given.
    pub value: String,
    /// The accepted names, comma-separated.
    pub expected: String,
}

/// Upper case without `_` and `-`, so `describe-configs`, `DescribeConfigs` and
/// `DESCRIBE_CONFIGS` all name the same value.
fn normalized(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '_' | '-'))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Defines an enum whose values have a Kafka name (used in storage, JSON and the CLI) and a
/// Kafka wire code, with `Display`/`FromStr` over the name and lookups by code.
macro_rules! kafka_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:literal {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal / $code:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const VALUES: &'static [Self] = &[$(Self::$variant,)+];

            /// Kafka's name (`READ`, `TOPIC`, ...).
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            /// Kafka's wire code.
            pub fn code(self) -> i8 {
                match self {
                    $(Self::$variant => $code,)+
                }
            }

            /// The value with this wire code.
            pub fn from_code(code: i8) -> Option<Self> {
                Self::VALUES.iter().copied().find(|v| v.code() == code)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $name {
            type Err = AclParseError;

            /// Accepts the name in any case, with or without `_`/`-` between words.
            fn from_str(s: &str) -> Result<Self, AclParseError> {
                let wanted = normalized(s);
                Self::VALUES
                    .iter()
                    .copied()
                    .find(|v| normalized(v.name()) == wanted)
                    .ok_or_else(|| AclParseError {
                        kind: $kind,
                        value: s.to_string(),
                        expected: Self::VALUES
                            .iter()
                            .map(|v| v.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            }
        }
    };
}

kafka_enum! {
    /// The kind of resource a binding protects.
    AclResourceType, "resource type" {
        /// A topic (by name).
        Topic = "TOPIC" / 2,
        /// A consumer group (by group id).
        Group = "GROUP" / 3,
        /// The cluster as a whole; its one name is [`CLUSTER_NAME`].
        Cluster = "CLUSTER" / 4,
        /// A transactional producer (by `transactional.id`).
        TransactionalId = "TRANSACTIONAL_ID" / 5,
    }
}

kafka_enum! {
    /// How a binding's resource name is matched.
    AclPatternType, "pattern type" {
        /// The name exactly; the literal name `*` matches every resource of its type.
        Literal = "LITERAL" / 3,
        /// Every name starting with the binding's name.
        Prefixed = "PREFIXED" / 4,
    }
}

kafka_enum! {
    /// An operation on a resource.
    AclOperation, "operation" {
        /// Every operation.
        All = "ALL" / 2,
        /// Consume from a topic; join, sync and commit in a group.
        Read = "READ" / 3,
        /// Produce to a topic.
        Write = "WRITE" / 4,
        /// Create topics (on a topic name, or on the cluster for any topic).
        Create = "CREATE" / 5,
        /// Delete topics, records, groups.
        Delete = "DELETE" / 6,
        /// Add partitions; on the cluster, change ACLs.
        Alter = "ALTER" / 7,
        /// See that a resource exists (metadata, offsets, group descriptions, ACL listings).
        Describe = "DESCRIBE" / 8,
        /// Inter-broker requests (kept for compatibility; StreamHouse agents send none).
        ClusterAction = "CLUSTER_ACTION" / 9,
        /// Read configurations.
        DescribeConfigs = "DESCRIBE_CONFIGS" / 10,
        /// Change configurations.
        AlterConfigs = "ALTER_CONFIGS" / 11,
        /// Initialise an idempotent producer (on the cluster).
        IdempotentWrite = "IDEMPOTENT_WRITE" / 12,
    }
}

kafka_enum! {
    /// Whether a binding grants or refuses.
    AclPermission, "permission" {
        /// Refuses; wins over any allow.
        Deny = "DENY" / 2,
        /// Grants.
        Allow = "ALLOW" / 3,
    }
}

kafka_enum! {
    /// Which bindings a filter selects by pattern.
    AclPatternFilter, "pattern filter" {
        /// Any pattern type; with a name, bindings with exactly that name.
        Any = "ANY" / 1,
        /// The bindings that apply to the named resource: the same literal name, the literal
        /// wildcard `*`, and every prefix of the name.
        Match = "MATCH" / 2,
        /// Literal bindings (with a name: that exact name).
        Literal = "LITERAL" / 3,
        /// Prefixed bindings (with a name: that exact prefix).
        Prefixed = "PREFIXED" / 4,
    }
}

/// The only name of the [`AclResourceType::Cluster`] resource, as in Kafka.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// The literal resource name and principal name that match everything.
pub const WILDCARD: &str = "*";

impl AclResourceType {
    /// The operations that mean something on this resource type (Kafka's lists), besides
    /// [`AclOperation::All`].
    pub fn operations(self) -> &'static [AclOperation] {
        use AclOperation::*;
        match self {
            Self::Topic => &[
                Read,
                Write,
                Create,
                Describe,
                Delete,
                Alter,
                DescribeConfigs,
                AlterConfigs,
            ],
            Self::Group => &[Read, Describe, Delete],
            Self::TransactionalId => &[Write, Describe],
            Self::Cluster => &[
                Create,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
                Alter,
                Describe,
            ],
        }
    }
}

/// One ACL: `principal` from `host` is allowed or denied `operation` on the resources
/// `resource_type`/`resource_name`/`pattern_type` selects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    /// Kind of resource.
    pub resource_type: AclResourceType,
    /// Resource name, prefix, or the literal wildcard `*`.
    pub resource_name: String,
    /// How `resource_name` is matched.
    pub pattern_type: AclPatternType,
    /// `User:<name>`, or `User:*` for every user.
    pub principal: String,
    /// Client IP address the entry applies to, or `*` for any.
    pub host: String,
    /// The operation.
    pub operation: AclOperation,
    /// Allow or deny.
    pub permission: AclPermission,
}

impl AclBinding {
    /// Checks the binding as Kafka does before storing it; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        // PostgreSQL text cannot hold NUL, and no Kafka name contains one.
        let texts = [&self.resource_name, &self.principal, &self.host];
        if texts.iter().any(|t| t.contains('\0')) {
            return Err("names must not contain NUL characters".into());
        }
        if self.resource_name.is_empty() {
            return Err("the resource name must not be empty".into());
        }
        if self.resource_type == AclResourceType::Cluster
            && (self.resource_name != CLUSTER_NAME || self.pattern_type != AclPatternType::Literal)
        {
            return Err(format!(
                "the cluster resource is the literal name '{CLUSTER_NAME}'"
            ));
        }
        match self.principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => {
                return Err(format!(
                    "principal '{}' is not of the form User:<name>",
                    self.principal
                ))
            }
        }
        if self.host.is_empty() {
            return Err("the host must not be empty (use * for any host)".into());
        }
        if self.operation != AclOperation::All
            && !self.resource_type.operations().contains(&self.operation)
        {
            return Err(format!(
                "operation {} does not apply to {} resources (they support: ALL, {})",
                self.operation,
                self.resource_type,
                self.resource_type
                    .operations()
                    .iter()
                    .map(|o| o.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(())
    }

    /// Whether this binding's resource pattern covers the resource `kind`/`name`: the same
    /// literal name, the literal wildcard, or a prefix of `name`.
    pub fn covers(&self, kind: AclResourceType, name: &str) -> bool {
        self.resource_type == kind
            && match self.pattern_type {
                AclPatternType::Literal => {
                    self.resource_name == name || self.resource_name == WILDCARD
                }
                AclPatternType::Prefixed => name.starts_with(&self.resource_name),
            }
    }
}

/// Selects bindings for listing or deletion; `None` fields match anything. The default
/// selects every binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclBindingFilter {
    /// Kind of resource.
    pub resource_type: Option<AclResourceType>,
    /// Resource name (how it is compared depends on `pattern`).
    pub resource_name: Option<String>,
    /// Which pattern types, and how `resource_name` is compared.
    pub pattern: AclPatternFilter,
    /// Exact principal.
    pub principal: Option<String>,
    /// Exact host.
    pub host: Option<String>,
    /// Exact operation (`ALL` selects only bindings for `ALL`).
    pub operation: Option<AclOperation>,
    /// Exact permission.
    pub permission: Option<AclPermission>,
}

impl Default for AclBindingFilter {
    fn default() -> Self {
        Self {
            resource_type: None,
            resource_name: None,
            pattern: AclPatternFilter::Any,
            principal: None,
            host: None,
            operation: None,
            permission: None,
        }
    }
}

impl AclBindingFilter {
    /// Whether `acl` is selected.
    pub fn matches(&self, acl: &AclBinding) -> bool {
        fn either<T: PartialEq>(wanted: &Option<T>, actual: &T) -> bool {
            wanted.as_ref().is_none_or(|w| w == actual)
        }
        let name = self.resource_name.as_deref();
        let same_name = name.is_none_or(|n| n == acl.resource_name);
        let pattern = match self.pattern {
            AclPatternFilter::Any => same_name,
            AclPatternFilter::Literal => acl.pattern_type == AclPatternType::Literal && same_name,
            AclPatternFilter::Prefixed => acl.pattern_type == AclPatternType::Prefixed && same_name,
            AclPatternFilter::Match => name.is_none_or(|n| acl.covers(acl.resource_type, n)),
        };
        pattern
            && either(&self.resource_type, &acl.resource_type)
            && either(&self.principal, &acl.principal)
            && either(&self.host, &acl.host)
            && either(&self.operation, &acl.operation)
            && either(&self.permission, &acl.permission)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(kind: AclResourceType, name: &str, pattern: AclPatternType) -> AclBinding {
        AclBinding {
            resource_type: kind,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: AclOperation::Read,
            permission: AclPermission::Allow,
        }
    }

    #[test]
    fn names_parse_in_any_spelling_and_codes_round_trip() {
        for s in ["describe-configs", "DescribeConfigs", "DESCRIBE_CONFIGS"] {
            assert_eq!(
                s.parse::<AclOperation>().unwrap(),
                AclOperation::DescribeConfigs
            );
        }
        let err = "reed".parse::<AclOperation>().unwrap_err();
        assert!(err.to_string().contains("READ"), "{err}");
        for op in AclOperation::VALUES {
            assert_eq!(AclOperation::from_code(op.code()), Some(*op));
        }
        assert_eq!(
            AclPermission::from_code(1),
            None,
            "ANY is a filter value only"
        );
        assert_eq!(
            serde_json::to_string(&AclOperation::IdempotentWrite).unwrap(),
            "\"IDEMPOTENT_WRITE\""
        );
    }

    #[test]
    fn validation_follows_kafka() {
        use AclPatternType::*;
        use AclResourceType::*;
        assert!(binding(Topic, "t", Literal).validate().is_ok());
        assert!(binding(Topic, "", Literal).validate().is_err());
        let mut write_group = binding(Group, "g", Literal);
        write_group.operation = AclOperation::Write;
        assert!(write_group.validate().unwrap_err().contains("GROUP"));
        let mut cluster = binding(Cluster, CLUSTER_NAME, Literal);
        cluster.operation = AclOperation::Alter;
        assert!(cluster.validate().is_ok());
        cluster.resource_name = "other".into();
        assert!(cluster.validate().is_err());
        let mut anonymous = binding(Topic, "t", Literal);
        anonymous.principal = "alice".into();
        assert!(anonymous.validate().is_err());
    }

    #[test]
    fn filters_select_by_pattern_kind() {
        use AclPatternType::*;
        use AclResourceType::*;
        let literal = binding(Topic, "orders", Literal);
        let wildcard = binding(Topic, "*", Literal);
        let prefix = binding(Topic, "ord", Prefixed);
        let group = binding(Group, "orders", Literal);
        let all = [&literal, &wildcard, &prefix, &group];
        let selected = |filter: AclBindingFilter| -> Vec<&AclBinding> {
            all.iter().copied().filter(|a| filter.matches(a)).collect()
        };
        assert_eq!(selected(AclBindingFilter::default()).len(), 4);
        let named = |pattern, name: &str| AclBindingFilter {
            resource_type: Some(Topic),
            resource_name: Some(name.into()),
            pattern,
            ..AclBindingFilter::default()
        };
        assert_eq!(
            selected(named(AclPatternFilter::Match, "orders")),
            [&literal, &wildcard, &prefix]
        );
        assert_eq!(
            selected(named(AclPatternFilter::Match, "other")),
            [&wildcard]
        );
        assert_eq!(selected(named(AclPatternFilter::Any, "orders")), [&literal]);
        assert_eq!(
            selected(named(AclPatternFilter::Prefixed, "ord")),
            [&prefix]
        );
        assert!(selected(named(AclPatternFilter::Literal, "ord")).is_empty());
        let deny_only = AclBindingFilter {
            permission: Some(AclPermission::Deny),
            ..AclBindingFilter::default()
        };
        assert!(selected(deny_only).is_empty());
    }
}
