//! The Broker's ACL administration, shared by the Kafka ACL APIs (CreateAcls, DescribeAcls,
//! DeleteAcls) and the HTTP admin API. Bindings live in the metadata store; after a change made
//! here this agent reloads them at once, other agents on their next refresh.

use std::net::SocketAddr;

use streamhouse_metadata::{AclBinding, AclBindingFilter};
use tracing::{info, warn};

use crate::api_error::ApiError;
use crate::broker::Broker;
use crate::security::Access;

/// ACL administration on a [`Broker`]; obtained with [`Broker::acls`].
pub struct Acls<'a> {
    broker: &'a Broker,
}

impl Broker {
    /// The ACL administration API of this agent.
    pub fn acls(&self) -> Acls<'_> {
        Acls { broker: self }
    }

    /// What `user` (`None`: not authenticated, `User:ANONYMOUS`) connecting from `peer` may do,
    /// decided by this agent's ACLs exactly as for its Kafka requests.
    pub fn access(&self, user: Option<&str>, peer: Option<SocketAddr>) -> Access {
        Access::new(&self.authorizer, user, peer)
    }
}

impl Acls<'_> {
    /// The bindings `filter` selects, ordered.
    pub async fn list(&self, filter: &AclBindingFilter) -> Result<Vec<AclBinding>, ApiError> {
        Ok(self.broker.metadata.list_acls(filter).await?)
    }

    /// Validates and stores `acls` (all or none); existing ones are left as they are.
    pub async fn create(&self, acls: &[AclBinding]) -> Result<(), ApiError> {
        for acl in acls {
            acl.validate().map_err(ApiError::Invalid)?;
        }
        self.broker.metadata.create_acls(acls).await?;
        for acl in acls {
            info!(
                principal = acl.principal,
                host = acl.host,
                operation = %acl.operation,
                permission = %acl.permission,
                resource = %acl.resource_type,
                name = acl.resource_name,
                pattern = %acl.pattern_type,
                "ACL created"
            );
        }
        self.reload_after_change().await;
        Ok(())
    }

    /// Deletes the bindings `filter` selects and returns them.
    pub async fn delete(&self, filter: &AclBindingFilter) -> Result<Vec<AclBinding>, ApiError> {
        let deleted = self.broker.metadata.delete_acls(filter).await?;
        if !deleted.is_empty() {
            info!(count = deleted.len(), ?filter, "ACLs deleted");
            self.reload_after_change().await;
        }
        Ok(deleted)
    }

    /// Reloads the bindings from the metadata store now (start-up does, before serving, so no
    /// request is decided on an empty set).
    pub async fn reload(&self) -> Result<(), ApiError> {
        let store = self.broker.metadata.as_ref();
        Ok(self.broker.authorizer.load(store).await?)
    }

    /// The change is stored; if the reload fails, the next periodic refresh applies it.
    async fn reload_after_change(&self) {
        if let Err(e) = self.reload().await {
            warn!("ACLs changed but reloading them failed: {e}");
        }
    }
}
