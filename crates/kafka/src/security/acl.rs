//! Authorization by ACLs, with Kafka's semantics (`StandardAuthorizer`):
//!
//! - super users may do everything;
//! - a binding applies to a resource when its pattern covers the resource's name (the same
//!   literal name, the literal wildcard `*`, or a prefix), to a principal when it names that
//!   principal or `User:*`, and to a host when it names the client's address or `*`;
//! - a DENY for the operation (or for ALL) wins over any ALLOW;
//! - an ALLOW of READ, WRITE, DELETE or ALTER implies DESCRIBE, and ALTER_CONFIGS implies
//!   DESCRIBE_CONFIGS;
//! - without an applicable ALLOW the request is refused (Kafka's
//!   `allow.everyone.if.no.acl.found=false`).
//!
//! Every agent keeps the bindings in memory (no query per request), reloaded from the metadata
//! store on an interval and at once after a change made through this agent.

use parking_lot::RwLock;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use streamhouse_metadata::{
    AclBinding, AclBindingFilter, AclOperation, AclPatternType, AclPermission, AclResourceType,
    MetadataError, MetadataStore, WILDCARD,
};
use tracing::{debug, warn};

pub(crate) use streamhouse_metadata::{AclOperation as Op, AclResourceType as Resource};

/// The principal of requests on a connection that did not authenticate (Kafka's name).
const ANONYMOUS: &str = "User:ANONYMOUS";

/// The principal that stands for every user in a binding.
const ANY_USER: &str = "User:*";

/// Authorization settings of an agent.
#[derive(Debug, Clone)]
pub struct AclConfig {
    /// Enforce ACLs. When off, every request is allowed (ACLs can still be managed).
    pub enabled: bool,
    /// Principals (`User:admin`) allowed every operation on every resource.
    pub super_users: Vec<String>,
    /// How often the bindings are reloaded from the metadata store, which bounds how long a
    /// change made through another agent takes to apply here.
    pub refresh: Duration,
}

impl Default for AclConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            super_users: Vec::new(),
            refresh: Duration::from_secs(10),
        }
    }
}

/// Who is asking: the principal (`User:<name>`) and the client's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Requester {
    /// `User:<name>`, or [`ANONYMOUS`].
    pub principal: String,
    /// The client's IP address as text (matched against bindings' `host`).
    pub host: String,
}

/// Bindings of one resource type, indexed by name for literal and prefixed patterns.
#[derive(Debug, Default)]
struct ByName {
    literal: HashMap<String, Vec<AclBinding>>,
    prefixed: HashMap<String, Vec<AclBinding>>,
}

/// The bindings an agent authorizes with.
#[derive(Debug, Default)]
struct AclIndex {
    by_type: HashMap<AclResourceType, ByName>,
}

impl AclIndex {
    fn new(acls: Vec<AclBinding>) -> Self {
        let mut index = Self::default();
        for acl in acls {
            let by_name = index.by_type.entry(acl.resource_type).or_default();
            let map = match acl.pattern_type {
                AclPatternType::Literal => &mut by_name.literal,
                AclPatternType::Prefixed => &mut by_name.prefixed,
            };
            map.entry(acl.resource_name.clone()).or_default().push(acl);
        }
        index
    }

    /// Every binding whose pattern covers `kind`/`name`: looked up by the name, the wildcard
    /// and each prefix of the name, so the cost depends on the name's length, not on how many
    /// bindings exist.
    fn covering<'a>(
        &'a self,
        kind: AclResourceType,
        name: &'a str,
    ) -> impl Iterator<Item = &'a AclBinding> + 'a {
        let by_name = self.by_type.get(&kind);
        let literal = by_name.into_iter().flat_map(move |b| {
            let exact = b.literal.get(name);
            let wildcard = (name != WILDCARD)
                .then(|| b.literal.get(WILDCARD))
                .flatten();
            exact.into_iter().chain(wildcard).flatten()
        });
        let prefixed = by_name.into_iter().flat_map(move |b| {
            name.char_indices()
                .map(|(i, c)| &name[..i + c.len_utf8()])
                .filter_map(|prefix| b.prefixed.get(prefix))
                .flatten()
        });
        literal.chain(prefixed)
    }

    fn all(&self, kind: AclResourceType) -> impl Iterator<Item = &AclBinding> {
        self.by_type
            .get(&kind)
            .into_iter()
            .flat_map(|b| b.literal.values().chain(b.prefixed.values()).flatten())
    }
}

/// Operations whose ALLOW grants `op` (besides ALL).
fn granting(op: AclOperation) -> &'static [AclOperation] {
    use AclOperation::*;
    match op {
        Describe => &[Describe, Read, Write, Delete, Alter],
        DescribeConfigs => &[DescribeConfigs, AlterConfigs],
        All => &[All],
        Read => &[Read],
        Write => &[Write],
        Create => &[Create],
        Delete => &[Delete],
        Alter => &[Alter],
        ClusterAction => &[ClusterAction],
        AlterConfigs => &[AlterConfigs],
        IdempotentWrite => &[IdempotentWrite],
    }
}

/// Whether `acl`'s entry (principal and host) applies to `who`.
fn applies_to(acl: &AclBinding, who: &Requester) -> bool {
    (acl.principal == who.principal || acl.principal == ANY_USER)
        && (acl.host == WILDCARD || acl.host == who.host)
}

/// Whether `acl`'s operation is `op` or ALL.
fn names(acl: &AclBinding, op: AclOperation) -> bool {
    acl.operation == op || acl.operation == AclOperation::All
}

/// Decides requests from the bindings in memory.
#[derive(Debug)]
pub struct Authorizer {
    enabled: bool,
    super_users: HashSet<String>,
    index: RwLock<Arc<AclIndex>>,
}

impl Authorizer {
    /// An authorizer with no bindings until [`Self::load`].
    pub fn new(config: &AclConfig) -> Self {
        Self {
            enabled: config.enabled,
            super_users: config.super_users.iter().cloned().collect(),
            index: RwLock::default(),
        }
    }

    /// Whether requests are checked at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Replaces the bindings in memory with the store's.
    pub async fn load(&self, store: &dyn MetadataStore) -> Result<(), MetadataError> {
        let acls = store.list_acls(&AclBindingFilter::default()).await?;
        let count = acls.len();
        *self.index.write() = Arc::new(AclIndex::new(acls));
        debug!(count, "ACL bindings loaded");
        Ok(())
    }

    /// Reloads the bindings every `every` until the authorizer is dropped; a failed reload
    /// keeps the previous bindings.
    pub fn spawn_refresh(
        self: &Arc<Self>,
        store: Arc<dyn MetadataStore>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let me: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(authorizer) = me.upgrade() else {
                    return;
                };
                if let Err(e) = authorizer.load(store.as_ref()).await {
                    warn!("reloading ACLs failed: {e}");
                }
            }
        })
    }

    fn snapshot(&self) -> Arc<AclIndex> {
        self.index.read().clone()
    }

    /// Whether `who` needs no ACL at all.
    fn bypasses(&self, who: &Requester) -> bool {
        !self.enabled || self.super_users.contains(&who.principal)
    }

    /// Whether `who` may perform `op` on the resource `kind`/`name`.
    pub fn permits(
        &self,
        who: &Requester,
        op: AclOperation,
        kind: AclResourceType,
        name: &str,
    ) -> bool {
        if self.bypasses(who) {
            return true;
        }
        let index = self.snapshot();
        let mut allowed = false;
        for acl in index.covering(kind, name).filter(|a| applies_to(a, who)) {
            match acl.permission {
                AclPermission::Deny if names(acl, op) => return false,
                AclPermission::Deny => {}
                AclPermission::Allow => {
                    allowed |=
                        acl.operation == AclOperation::All || granting(op).contains(&acl.operation);
                }
            }
        }
        allowed
    }

    /// Whether `who` may perform `op` on at least one resource of type `kind` (Kafka's
    /// `authorizeByResourceType`): some ALLOW pattern for it is not wholly covered by a DENY.
    /// Grants idempotent producers to principals that may write some topic (KIP-679).
    pub fn permits_some(&self, who: &Requester, op: AclOperation, kind: AclResourceType) -> bool {
        if self.bypasses(who) {
            return true;
        }
        let index = self.snapshot();
        let (denies, allows): (Vec<&AclBinding>, Vec<&AclBinding>) = index
            .all(kind)
            .filter(|a| applies_to(a, who) && names(a, op))
            .partition(|a| a.permission == AclPermission::Deny);
        // A DENY covers an ALLOW pattern when it matches every name that pattern matches.
        let covered = |allow: &AclBinding| {
            denies.iter().any(|deny| match deny.pattern_type {
                AclPatternType::Literal => {
                    deny.resource_name == WILDCARD
                        || (allow.pattern_type == AclPatternType::Literal
                            && deny.resource_name == allow.resource_name)
                }
                AclPatternType::Prefixed => allow.resource_name.starts_with(&deny.resource_name),
            })
        };
        allows.into_iter().any(|a| !covered(a))
    }
}

/// The principal of a requester: `User:<name>`, or `User:ANONYMOUS` when it did not
/// authenticate (Kafka's names).
pub fn principal(user: Option<&str>) -> String {
    user.map_or_else(|| ANONYMOUS.to_string(), |u| format!("User:{u}"))
}

/// The authorizer bound to one request's requester: what the Kafka handlers and the HTTP API
/// ask before acting (obtained with [`crate::Broker::access`] outside this crate).
#[derive(Debug, Clone)]
pub struct Access {
    authorizer: Arc<Authorizer>,
    /// `None` when authorization is off, so nothing is allocated per request then.
    who: Option<Arc<Requester>>,
}

impl Access {
    /// The access of a request from `user` (`None`: not authenticated) at `peer`.
    pub(crate) fn new(
        authorizer: &Arc<Authorizer>,
        user: Option<&str>,
        peer: Option<SocketAddr>,
    ) -> Self {
        let who = authorizer.enabled().then(|| {
            Arc::new(Requester {
                principal: principal(user),
                host: peer.map(|p| p.ip().to_string()).unwrap_or_default(),
            })
        });
        Self {
            authorizer: authorizer.clone(),
            who,
        }
    }

    /// Whether the request may perform `op` on `kind`/`name`; a refusal is logged (principal,
    /// operation and resource: no credentials ever reach this point).
    pub fn allows(&self, op: Op, kind: Resource, name: &str) -> bool {
        let Some(who) = &self.who else {
            return true;
        };
        let allowed = self.authorizer.permits(who, op, kind, name);
        if !allowed {
            debug!(
                principal = who.principal,
                host = who.host,
                operation = %op,
                resource = %kind,
                name,
                "authorization failed"
            );
        }
        allowed
    }

    /// Like [`Self::allows`] without logging, for filtering listings (where leaving out what
    /// the requester may not see is the normal case, not a refusal).
    pub fn shows(&self, op: Op, kind: Resource, name: &str) -> bool {
        self.who
            .as_ref()
            .is_none_or(|who| self.authorizer.permits(who, op, kind, name))
    }

    /// Whether the request may perform `op` on the cluster.
    pub fn on_cluster(&self, op: Op) -> bool {
        self.allows(op, Resource::Cluster, streamhouse_metadata::CLUSTER_NAME)
    }

    /// Whether the request may create the topic `name`: CREATE on the cluster (any topic) or on
    /// the topic.
    pub fn creates_topic(&self, name: &str) -> bool {
        self.shows(
            Op::Create,
            Resource::Cluster,
            streamhouse_metadata::CLUSTER_NAME,
        ) || self.allows(Op::Create, Resource::Topic, name)
    }

    /// Whether the request may perform `op` on some resource of type `kind`.
    pub fn on_some(&self, op: Op, kind: Resource) -> bool {
        self.who
            .as_ref()
            .is_none_or(|who| self.authorizer.permits_some(who, op, kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AclOperation::*;
    use AclPatternType::{Literal, Prefixed};
    use AclPermission::{Allow, Deny};
    use AclResourceType::{Cluster, Group, Topic};

    fn acl(
        kind: AclResourceType,
        name: &str,
        pattern: AclPatternType,
        principal: &str,
        operation: AclOperation,
        permission: AclPermission,
    ) -> AclBinding {
        AclBinding {
            resource_type: kind,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: principal.into(),
            host: "*".into(),
            operation,
            permission,
        }
    }

    fn authorizer(acls: Vec<AclBinding>) -> Authorizer {
        let config = AclConfig {
            enabled: true,
            super_users: vec!["User:admin".into()],
            ..AclConfig::default()
        };
        let authorizer = Authorizer::new(&config);
        *authorizer.index.write() = Arc::new(AclIndex::new(acls));
        authorizer
    }

    fn user(name: &str) -> Requester {
        Requester {
            principal: format!("User:{name}"),
            host: "10.0.0.1".into(),
        }
    }

    #[test]
    fn literal_prefixed_and_wildcard_patterns() {
        let a = authorizer(vec![
            acl(Topic, "orders", Literal, "User:alice", Read, Allow),
            acl(Topic, "logs-", Prefixed, "User:alice", Write, Allow),
            acl(Topic, "*", Literal, "User:bob", Describe, Allow),
            acl(Group, "g", Literal, "User:*", Read, Allow),
        ]);
        let alice = user("alice");
        assert!(a.permits(&alice, Read, Topic, "orders"));
        assert!(
            !a.permits(&alice, Read, Topic, "orders2"),
            "literal is exact"
        );
        assert!(!a.permits(&alice, Write, Topic, "orders"));
        assert!(a.permits(&alice, Write, Topic, "logs-app"));
        assert!(a.permits(&alice, Write, Topic, "logs-"));
        assert!(
            !a.permits(&alice, Write, Topic, "logs"),
            "shorter than the prefix"
        );
        assert!(
            !a.permits(&alice, Read, Group, "orders"),
            "other resource type"
        );
        let bob = user("bob");
        assert!(a.permits(&bob, Describe, Topic, "anything"));
        assert!(!a.permits(&bob, Read, Topic, "anything"));
        assert!(
            a.permits(&user("carol"), Read, Group, "g"),
            "User:* applies to all"
        );
        assert!(
            !a.permits(&user("carol"), Read, Topic, "orders"),
            "no ACL means deny"
        );
    }

    #[test]
    fn deny_wins_and_describe_is_implied() {
        let a = authorizer(vec![
            acl(Topic, "*", Literal, "User:alice", All, Allow),
            acl(Topic, "secret", Literal, "User:alice", Read, Deny),
            acl(Topic, "p-", Prefixed, "User:*", Write, Deny),
            acl(Topic, "t", Literal, "User:bob", Write, Allow),
            acl(Topic, "c", Literal, "User:bob", AlterConfigs, Allow),
        ]);
        let alice = user("alice");
        assert!(a.permits(&alice, Write, Topic, "secret"));
        assert!(!a.permits(&alice, Read, Topic, "secret"));
        assert!(
            a.permits(&alice, Describe, Topic, "secret"),
            "a DENY of READ does not deny DESCRIBE"
        );
        assert!(
            !a.permits(&alice, Write, Topic, "p-1"),
            "prefixed deny for User:*"
        );
        let bob = user("bob");
        assert!(
            a.permits(&bob, Describe, Topic, "t"),
            "WRITE implies DESCRIBE"
        );
        assert!(!a.permits(&bob, Read, Topic, "t"));
        assert!(a.permits(&bob, DescribeConfigs, Topic, "c"));
        assert!(!a.permits(&bob, Describe, Topic, "c"));
    }

    #[test]
    fn hosts_super_users_and_disabled() {
        let mut from_host = acl(Topic, "t", Literal, "User:alice", Read, Allow);
        from_host.host = "10.0.0.2".into();
        let a = authorizer(vec![from_host]);
        let mut alice = user("alice");
        assert!(!a.permits(&alice, Read, Topic, "t"));
        alice.host = "10.0.0.2".into();
        assert!(a.permits(&alice, Read, Topic, "t"));
        assert!(a.permits(&user("admin"), Delete, Cluster, "kafka-cluster"));
        let off = Authorizer::new(&AclConfig::default());
        assert!(off.permits(&user("nobody"), Write, Topic, "t"));
    }

    #[test]
    fn permission_on_some_resource() {
        let a = authorizer(vec![
            acl(Topic, "t", Literal, "User:alice", Write, Allow),
            acl(Topic, "x-", Prefixed, "User:bob", Write, Allow),
            acl(Topic, "x", Prefixed, "User:bob", Write, Deny),
            acl(Topic, "y", Literal, "User:carol", Write, Allow),
            acl(Topic, "*", Literal, "User:carol", Write, Deny),
        ]);
        assert!(a.permits_some(&user("alice"), Write, Topic));
        assert!(!a.permits_some(&user("alice"), Read, Topic));
        assert!(!a.permits_some(&user("bob"), Write, Topic), "prefix denied");
        assert!(
            !a.permits_some(&user("carol"), Write, Topic),
            "wildcard deny"
        );
        assert!(a.permits_some(&user("admin"), Write, Topic));
    }
}
