//! `/api/v1/users`: SCRAM users created, changed, listed and deleted over HTTP.

use axum::http::StatusCode;
use serde_json::json;
use streamhouse_kafka::security::{ScramAlgorithm, ScramCredential};

use crate::harness::App;

#[tokio::test]
async fn user_lifecycle() {
    let app = App::start().await;
    let list = app.get("/api/v1/users").await.expect(StatusCode::OK);
    assert_eq!(list, json!([]));

    let alice = app
        .put("/api/v1/users/alice", json!({"password": "alice-pw"}))
        .await
        .expect(StatusCode::OK);
    let both_4096 = json!({"name": "alice", "credentials": [
        {"mechanism": "SCRAM-SHA-256", "iterations": 4096},
        {"mechanism": "SCRAM-SHA-512", "iterations": 4096},
    ]});
    assert_eq!(alice, both_4096);

    // A new SCRAM-SHA-512 password; the SCRAM-SHA-256 one stays.
    let body = json!({"password": "new-pw", "mechanisms": ["scram_sha_512"], "iterations": 8192});
    let changed = app
        .put("/api/v1/users/alice", body)
        .await
        .expect(StatusCode::OK);
    assert_eq!(changed["credentials"][1]["iterations"], 8192);
    let user = "bob with spaces,=";
    let path = "/api/v1/users/bob%20with%20spaces%2C%3D";
    let body = json!({"password": "b", "mechanisms": ["SCRAM-SHA-256", "SCRAM-SHA-256"]});
    app.put(path, body).await.expect(StatusCode::OK);
    let list = app.get("/api/v1/users").await.expect(StatusCode::OK);
    assert_eq!(list[0]["name"], "alice");
    assert_eq!(
        list[1],
        json!({"name": user, "credentials": [
            {"mechanism": "SCRAM-SHA-256", "iterations": 4096},
        ]})
    );

    // Stored as SCRAM derivatives of the password, which is nowhere in them.
    let metadata = app.broker.metadata();
    for (mechanism, alg, password) in [
        ("SCRAM-SHA-256", ScramAlgorithm::Sha256, "alice-pw"),
        ("SCRAM-SHA-512", ScramAlgorithm::Sha512, "new-pw"),
    ] {
        let record = metadata.get_credential("alice", mechanism).await.unwrap();
        let credential = ScramCredential::from_record(record.unwrap());
        assert!(credential.matches_password(alg, password), "{mechanism}");
        assert!(!credential.matches_password(alg, "wrong"), "{mechanism}");
    }

    let one = "/api/v1/users/alice?mechanism=SCRAM-SHA-256";
    assert_eq!(app.delete(one).await.status, StatusCode::NO_CONTENT);
    app.delete(one)
        .await
        .expect_error(StatusCode::NOT_FOUND, "unknown_user");
    let list = app.get("/api/v1/users").await.expect(StatusCode::OK);
    assert_eq!(
        list[0]["credentials"],
        json!([{"mechanism": "SCRAM-SHA-512", "iterations": 8192}])
    );
    assert_eq!(
        app.delete("/api/v1/users/alice").await.status,
        StatusCode::NO_CONTENT
    );
    app.delete("/api/v1/users/alice")
        .await
        .expect_error(StatusCode::NOT_FOUND, "unknown_user");
    app.delete(path).await.expect(StatusCode::NO_CONTENT);
    let list = app.get("/api/v1/users").await.expect(StatusCode::OK);
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn invalid_users_are_refused() {
    let app = App::start().await;
    let long_name = format!("/api/v1/users/{}", "x".repeat(256));
    for (path, body) in [
        (
            "/api/v1/users/a",
            json!({"password": "pw", "iterations": 4095}),
        ),
        (
            "/api/v1/users/a",
            json!({"password": "pw", "iterations": 16385}),
        ),
        ("/api/v1/users/a", json!({"password": ""})),
        ("/api/v1/users/a", json!({"password": "x".repeat(1025)})),
        (
            "/api/v1/users/a",
            json!({"password": "pw", "mechanisms": []}),
        ),
        (
            "/api/v1/users/a",
            json!({"password": "pw", "mechanisms": ["PLAIN"]}),
        ),
        (
            "/api/v1/users/a",
            json!({"password": "pw", "mechanisms": ["GSSAPI"]}),
        ),
        ("/api/v1/users/a%0Ab", json!({"password": "pw"})),
        (long_name.as_str(), json!({"password": "pw"})),
    ] {
        let reply = app.put(path, body.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path} {body}");
        reply.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    for body in [
        json!({"password": "pw", "extra": 1}),
        json!({"mechanisms": ["SCRAM-SHA-256"]}),
        json!({"password": "pw", "iterations": 4096.5}),
        json!({"password": 7}),
    ] {
        app.put("/api/v1/users/a", body)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    app.delete("/api/v1/users/a?mechanism=MD5")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    app.delete("/api/v1/users/nobody")
        .await
        .expect_error(StatusCode::NOT_FOUND, "unknown_user");
    let list = app.get("/api/v1/users").await.expect(StatusCode::OK);
    assert_eq!(list, json!([]), "a refused request changed nothing");
}
