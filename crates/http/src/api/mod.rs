//! The JSON API under `/api/v1`, plus `/health` and `/ready`. Each handler authorizes its caller
//! by the ACLs of the request's Kafka equivalent (named in its doc comment).

mod acls;
mod cluster;
mod groups;
mod records;
mod topics;
mod users;

use axum::routing::{get, post, put};
use axum::Router;

use crate::AppState;

/// The probes, `/health` and `/ready` (open unless `HttpOptions::protect_probes`).
pub(crate) fn probes() -> Router<AppState> {
    Router::new()
        .route("/health", get(cluster::health))
        .route("/ready", get(cluster::ready))
}

/// Every `/api/v1` route; each handler authorizes its [`crate::security::Caller`].
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/topics", get(topics::list).post(topics::create))
        .route(
            "/api/v1/topics/{topic}",
            get(topics::describe).delete(topics::delete),
        )
        .route(
            "/api/v1/topics/{topic}/config",
            axum::routing::patch(topics::alter_config),
        )
        .route(
            "/api/v1/topics/{topic}/partitions",
            post(topics::add_partitions),
        )
        .route(
            "/api/v1/topics/{topic}/partitions/{partition}",
            get(topics::describe_partition),
        )
        .route("/api/v1/topics/{topic}/records", post(records::produce))
        .route(
            "/api/v1/topics/{topic}/partitions/{partition}/records",
            get(records::consume),
        )
        .route("/api/v1/groups", get(groups::list))
        .route(
            "/api/v1/groups/{group}",
            get(groups::describe).delete(groups::delete),
        )
        .route("/api/v1/groups/{group}/lag", get(groups::lag))
        .route(
            "/api/v1/groups/{group}/offsets",
            post(groups::reset_offsets),
        )
        .route(
            "/api/v1/acls",
            get(acls::list).post(acls::create).delete(acls::delete),
        )
        .route("/api/v1/agents", get(cluster::agents))
        .route("/api/v1/leases", get(cluster::leases))
        .route("/api/v1/stats", get(cluster::stats))
        .route("/api/v1/users", get(users::list))
        .route(
            "/api/v1/users/{name}",
            put(users::set_password).delete(users::delete),
        )
}
