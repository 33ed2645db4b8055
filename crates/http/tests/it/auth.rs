//! The HTTP listener of an agent with SASL on: HTTP Basic against the SCRAM users, every
//! endpoint authorized by the ACLs of its Kafka equivalent, the Host allow-list, security
//! headers, and the settings that turn the console and open probes off.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use streamhouse_http::HttpOptions;

use crate::harness::{App, Reply};

/// A binding of `principal` allowing `operation` on a resource.
fn allow(kind: &str, name: &str, pattern: &str, principal: &str, operation: &str) -> Value {
    json!({"resource_type": kind, "resource_name": name, "pattern_type": pattern,
           "principal": principal, "operation": operation, "permission": "ALLOW"})
}

async fn grant(admin: &App, acl: Value) {
    admin
        .post("/api/v1/acls", acl)
        .await
        .expect(StatusCode::CREATED);
}

#[track_caller]
fn forbidden(reply: &Reply) {
    reply.expect_error(StatusCode::FORBIDDEN, "authorization_failed");
}

fn names(list: &Value, field: &str) -> Vec<String> {
    let items = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"));
    items
        .iter()
        .map(|i| i[field].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn anonymous_and_wrong_credentials_are_challenged() {
    let admin = App::start_secured().await;
    let anonymous = admin.anonymous();
    for (method, uri) in [
        (Method::GET, "/api/v1/topics"),
        (Method::POST, "/api/v1/topics"),
        (Method::GET, "/api/v1/users"),
        (Method::PUT, "/api/v1/users/eve"),
        (Method::POST, "/api/v1/acls"),
        (Method::DELETE, "/api/v1/groups/g"),
        (Method::GET, "/api/v1/stats"),
    ] {
        let body = Some(json!({"name": "t", "password": "x"}));
        let reply = anonymous.call(method.clone(), uri, body).await;
        reply.expect_error(StatusCode::UNAUTHORIZED, "unauthenticated");
        let challenge = reply.headers["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with("Basic realm="),
            "{method} {uri}: {challenge}"
        );
    }
    // Nothing was created by the refused requests.
    assert!(admin
        .broker
        .metadata()
        .get_topic("t")
        .await
        .unwrap()
        .is_none());
    assert!(admin.broker.users().describe("eve").await.is_err());

    for creds in [("admin", "wrong"), ("nobody", "admin-pw"), ("admin", "")] {
        let reply = admin.as_user(creds.0, creds.1).get("/api/v1/topics").await;
        reply.expect_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    for header in ["Bearer abc", "Basic !!!", "Basic YWRtaW4="] {
        let reply = admin
            .with_header("authorization", header)
            .get("/api/v1/topics")
            .await;
        reply.expect_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    // The console's own requests get a challenge browsers do not answer with their dialog.
    let console = anonymous.with_header("x-requested-with", "streamhouse-console");
    let reply = console.get("/api/v1/topics").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let challenge = reply.headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("StreamHouse-Basic"), "{challenge}");

    // Probes, metrics and the console's page and assets stay open.
    for uri in [
        "/health",
        "/ready",
        "/metrics",
        "/",
        "/ui/topics",
        "/ui/assets/app.js",
    ] {
        assert_eq!(anonymous.get(uri).await.status, StatusCode::OK, "{uri}");
    }
    admin.get("/api/v1/topics").await.expect(StatusCode::OK);
}

#[tokio::test]
async fn a_changed_or_deleted_user_is_refused_at_once() {
    let admin = App::start_secured().await;
    admin.add_user("alice", "first").await;
    let alice = admin.as_user("alice", "first");
    alice.get("/api/v1/agents").await.expect(StatusCode::OK);
    admin.add_user("alice", "second").await;
    alice
        .get("/api/v1/agents")
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    let alice = admin.as_user("alice", "second");
    alice.get("/api/v1/agents").await.expect(StatusCode::OK);
    let deleted = admin.delete("/api/v1/users/alice").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    alice
        .get("/api/v1/agents")
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn foreign_hosts_are_refused() {
    let admin = App::start_secured().await;
    let evil = admin.with_header("host", "evil.example");
    let body = json!({"name": "rebound", "partitions": 1});
    evil.post("/api/v1/topics", body)
        .await
        .expect_error(StatusCode::MISDIRECTED_REQUEST, "misdirected_request");
    assert!(admin
        .broker
        .metadata()
        .get_topic("rebound")
        .await
        .unwrap()
        .is_none());
    for uri in ["/", "/health", "/api/v1/topics"] {
        let reply = evil.get(uri).await;
        assert_eq!(reply.status, StatusCode::MISDIRECTED_REQUEST, "{uri}");
        let reply = admin
            .with_header("host", "evil.example:8080")
            .get(uri)
            .await;
        assert_eq!(reply.status, StatusCode::MISDIRECTED_REQUEST, "{uri}");
    }
    for host in [
        "localhost:8080",
        "127.0.0.1:8080",
        "[::1]:8080",
        "broker.internal:8080",
    ] {
        let reply = admin.with_header("host", host).get("/api/v1/topics").await;
        assert_eq!(reply.status, StatusCode::OK, "{host}");
    }
}

#[tokio::test]
async fn security_headers_and_no_cors() {
    let admin = App::start_secured().await;
    let cross_site = admin.with_header("origin", "https://evil.example");
    for uri in ["/", "/ui/assets/app.js", "/api/v1/topics", "/api/v1/nope"] {
        let reply = cross_site.get(uri).await;
        let header = |name: &str| {
            reply
                .headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let csp = header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{uri}: {csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{uri}: {csp}");
        assert_eq!(header("x-frame-options").as_deref(), Some("DENY"), "{uri}");
        assert_eq!(
            header("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{uri}"
        );
        assert_eq!(header("access-control-allow-origin"), None, "{uri}");
    }
    // A preflight is not answered with any CORS permission either.
    let preflight = cross_site
        .with_header("access-control-request-method", "DELETE")
        .call(Method::OPTIONS, "/api/v1/topics/x", None)
        .await;
    assert!(!preflight.status.is_success(), "{}", preflight.status);
    assert!(preflight
        .headers
        .get("access-control-allow-origin")
        .is_none());
    // A cross-site form can POST only text/plain, urlencoded or multipart bodies, even with
    // credentials the browser remembers: every change takes JSON, so such a POST changes nothing.
    let forged = r#"{"name": "forged", "partitions": 1}"#;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let reply = cross_site
            .raw(Method::POST, "/api/v1/topics", content_type, forged.into())
            .await;
        assert!(
            reply.status.is_client_error(),
            "{content_type}: {}",
            reply.status
        );
    }
    let forged_topic = admin.broker.metadata().get_topic("forged").await.unwrap();
    assert!(forged_topic.is_none());
    // Nothing inline in the page: the policy would block it.
    let page = admin.get("/").await.text();
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "{page}"
    );
    let script = admin.get("/ui/assets/app.js").await.text();
    assert!(
        !script.contains("style: \""),
        "inline style attribute in app.js"
    );
}

/// Over HTTP, alice can do exactly what her ACLs allow over Kafka, operation by operation.
#[tokio::test]
async fn users_can_do_what_their_acls_allow() {
    let admin = App::start_secured().await;
    admin.add_user("alice", "alice-pw").await;
    let alice = admin.as_user("alice", "alice-pw");
    admin.create_topic("secret", 1).await;
    admin.create_topic("orders", 2).await;
    admin
        .produce("secret", json!([{"value": "classified", "partition": 0}]))
        .await;

    // No ACLs: nothing but the broker list.
    assert_eq!(
        alice.get("/api/v1/topics").await.expect(StatusCode::OK),
        json!([])
    );
    alice.get("/api/v1/agents").await.expect(StatusCode::OK);
    for (method, uri, body) in [
        (Method::GET, "/api/v1/topics/secret", None),
        (Method::GET, "/api/v1/topics/secret/partitions/0", None),
        (
            Method::GET,
            "/api/v1/topics/secret/partitions/0/records",
            None,
        ),
        (
            Method::POST,
            "/api/v1/topics/secret/records",
            Some(json!({"records": [{"value": "x"}]})),
        ),
        (Method::DELETE, "/api/v1/topics/secret", None),
        (
            Method::PATCH,
            "/api/v1/topics/secret/config",
            Some(json!({"retention.ms": "1000"})),
        ),
        (
            Method::POST,
            "/api/v1/topics/secret/partitions",
            Some(json!({"count": 3})),
        ),
        (
            Method::POST,
            "/api/v1/topics",
            Some(json!({"name": "mine", "partitions": 1})),
        ),
        (Method::GET, "/api/v1/users", None),
        (
            Method::PUT,
            "/api/v1/users/eve",
            Some(json!({"password": "eve-pw"})),
        ),
        (Method::DELETE, "/api/v1/users/admin", None),
        (Method::GET, "/api/v1/acls", None),
        (
            Method::POST,
            "/api/v1/acls",
            Some(allow("TOPIC", "*", "LITERAL", "User:alice", "ALL")),
        ),
        (Method::DELETE, "/api/v1/acls?principal=User:alice", None),
        (Method::GET, "/api/v1/groups/g", None),
        (Method::GET, "/api/v1/groups/g/lag", None),
        (Method::DELETE, "/api/v1/groups/g", None),
        (
            Method::POST,
            "/api/v1/groups/g/offsets",
            Some(json!({"offsets": [{"topic": "orders", "partition": 0, "offset": 0}]})),
        ),
    ] {
        let reply = alice.call(method.clone(), uri, body).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{method} {uri}: {}",
            reply.text()
        );
    }
    assert!(admin.broker.users().describe("eve").await.is_err());
    assert_eq!(
        admin.get("/api/v1/topics/secret/partitions/1").await.status,
        StatusCode::NOT_FOUND
    );
    let stats = alice.get("/api/v1/stats").await.expect(StatusCode::OK);
    assert_eq!(
        stats["records_in_total"], 0,
        "records of topics alice cannot see"
    );
    assert_eq!(
        alice.get("/api/v1/leases").await.expect(StatusCode::OK),
        json!([])
    );

    // Read and write on orders (both imply DESCRIBE).
    grant(
        &admin,
        allow("TOPIC", "orders", "LITERAL", "User:alice", "WRITE"),
    )
    .await;
    grant(
        &admin,
        allow("TOPIC", "orders", "LITERAL", "User:alice", "READ"),
    )
    .await;
    let produced = alice
        .produce("orders", json!([{"value": "v", "partition": 0}]))
        .await;
    assert_eq!(produced["offsets"][0]["offset"], 0);
    let read = alice
        .get("/api/v1/topics/orders/partitions/0/records")
        .await
        .expect(StatusCode::OK);
    assert_eq!(read["records"][0]["value"], "v");
    assert_eq!(
        names(
            &alice.get("/api/v1/topics").await.expect(StatusCode::OK),
            "name"
        ),
        ["orders"]
    );
    let described = alice
        .get("/api/v1/topics/orders")
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        described["config"],
        json!({}),
        "configs need DESCRIBE_CONFIGS"
    );
    grant(
        &admin,
        allow(
            "TOPIC",
            "orders",
            "LITERAL",
            "User:alice",
            "DESCRIBE_CONFIGS",
        ),
    )
    .await;
    let described = alice
        .get("/api/v1/topics/orders")
        .await
        .expect(StatusCode::OK);
    assert!(
        described["config"]["retention.ms"].is_string(),
        "{described}"
    );
    forbidden(
        &alice
            .get("/api/v1/topics/secret/partitions/0/records")
            .await,
    );
    forbidden(&alice.delete("/api/v1/topics/orders").await);
    let stats = alice.get("/api/v1/stats").await.expect(StatusCode::OK);
    assert_eq!(stats["records_in_total"], 1, "orders only");

    // Create and delete under a prefix.
    grant(
        &admin,
        allow("TOPIC", "alice-", "PREFIXED", "User:alice", "CREATE"),
    )
    .await;
    grant(
        &admin,
        allow("TOPIC", "alice-", "PREFIXED", "User:alice", "DELETE"),
    )
    .await;
    alice.create_topic("alice-1", 1).await;
    forbidden(&alice.post("/api/v1/topics", json!({"name": "bob-1"})).await);
    assert_eq!(
        alice.delete("/api/v1/topics/alice-1").await.status,
        StatusCode::NO_CONTENT
    );

    // Groups: committing needs READ on the group and on each topic, as OffsetCommit.
    let commit = json!({"offsets": [{"topic": "orders", "partition": 0, "offset": 1}]});
    forbidden(&alice.post("/api/v1/groups/g/offsets", commit.clone()).await);
    grant(&admin, allow("GROUP", "g", "LITERAL", "User:alice", "READ")).await;
    alice
        .post("/api/v1/groups/g/offsets", commit)
        .await
        .expect(StatusCode::OK);
    let secret_commit = json!({"offsets": [{"topic": "secret", "partition": 0, "offset": 1}]});
    forbidden(
        &alice
            .post("/api/v1/groups/g/offsets", secret_commit.clone())
            .await,
    );
    admin
        .post("/api/v1/groups/g/offsets", secret_commit)
        .await
        .expect(StatusCode::OK);
    admin
        .post(
            "/api/v1/groups/other/offsets",
            json!({"offsets": [{"topic": "orders", "partition": 0, "offset": 0}]}),
        )
        .await
        .expect(StatusCode::OK);
    // Listing shows the groups alice may describe; offsets only of topics she may describe.
    let groups = alice.get("/api/v1/groups").await.expect(StatusCode::OK);
    assert_eq!(names(&groups, "group_id"), ["g"]);
    let lag = alice
        .get("/api/v1/groups/g/lag")
        .await
        .expect(StatusCode::OK);
    assert_eq!(names(&lag, "topic"), ["orders"]);
    let details = alice.get("/api/v1/groups/g").await.expect(StatusCode::OK);
    assert_eq!(names(&details["offsets"], "topic"), ["orders"]);
    assert_eq!(
        admin
            .get("/api/v1/groups/g/lag")
            .await
            .expect(StatusCode::OK)
            .as_array()
            .unwrap()
            .len(),
        2
    );
    forbidden(&alice.delete("/api/v1/groups/g").await);
    grant(
        &admin,
        allow("GROUP", "g", "LITERAL", "User:alice", "DELETE"),
    )
    .await;
    assert_eq!(
        alice.delete("/api/v1/groups/g").await.status,
        StatusCode::NO_CONTENT
    );

    // Cluster DESCRIBE lists users and ACLs; ALTER changes them.
    grant(
        &admin,
        allow(
            "CLUSTER",
            "kafka-cluster",
            "LITERAL",
            "User:alice",
            "DESCRIBE",
        ),
    )
    .await;
    let users = alice.get("/api/v1/users").await.expect(StatusCode::OK);
    assert_eq!(names(&users, "name"), ["admin", "alice"]);
    alice.get("/api/v1/acls").await.expect(StatusCode::OK);
    let groups = alice.get("/api/v1/groups").await.expect(StatusCode::OK);
    assert_eq!(
        names(&groups, "group_id"),
        ["other"],
        "every group with cluster DESCRIBE"
    );
    forbidden(
        &alice
            .put("/api/v1/users/eve", json!({"password": "eve-pw"}))
            .await,
    );
    grant(
        &admin,
        allow("CLUSTER", "kafka-cluster", "LITERAL", "User:alice", "ALTER"),
    )
    .await;
    alice
        .put("/api/v1/users/eve", json!({"password": "eve-pw"}))
        .await
        .expect(StatusCode::OK);
    grant(
        &alice,
        allow("TOPIC", "secret", "LITERAL", "User:eve", "READ"),
    )
    .await;
    let eve = admin.as_user("eve", "eve-pw");
    let read = eve
        .get("/api/v1/topics/secret/partitions/0/records")
        .await
        .expect(StatusCode::OK);
    assert_eq!(read["records"][0]["value"], "classified");

    // A DENY wins over any ALLOW.
    let deny = json!({"resource_type": "TOPIC", "resource_name": "secret", "principal": "User:eve",
                      "operation": "READ", "permission": "DENY"});
    grant(&admin, deny).await;
    forbidden(&eve.get("/api/v1/topics/secret/partitions/0/records").await);
    // The super user bypasses ACLs.
    admin
        .get("/api/v1/topics/secret/partitions/0/records")
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn console_and_open_probes_can_be_turned_off() {
    let app = App::start_secured_with(|options| HttpOptions {
        console: false,
        protect_probes: true,
        ..options
    })
    .await;
    let anonymous = app.anonymous();
    for uri in ["/", "/ui/topics", "/ui/assets/app.js"] {
        assert_eq!(app.get(uri).await.status, StatusCode::NOT_FOUND, "{uri}");
    }
    for uri in ["/health", "/ready", "/metrics"] {
        let reply = anonymous.get(uri).await;
        reply.expect_error(StatusCode::UNAUTHORIZED, "unauthenticated");
        assert_eq!(app.get(uri).await.status, StatusCode::OK, "{uri}");
    }
}
