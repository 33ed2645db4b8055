//! Every API endpoint, with its error cases.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use streamhouse_kafka::MAX_PARTITIONS;

use crate::harness::App;

#[tokio::test]
async fn health_and_readiness() {
    let app = App::start().await;
    let health = app.get("/health").await;
    assert_eq!(
        (health.status, health.text().as_str()),
        (StatusCode::OK, "ok")
    );
    let ready = app.get("/ready").await;
    assert_eq!(
        (ready.status, ready.text().as_str()),
        (StatusCode::OK, "ready")
    );
}

#[tokio::test]
async fn topic_lifecycle() {
    let app = App::start().await;
    let created = app.create_topic("orders", 3).await;
    assert_eq!(created["name"], "orders");
    assert_eq!(created["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(created["config"]["retention.ms"], "604800000");

    let list = app.get("/api/v1/topics").await.expect(StatusCode::OK);
    assert_eq!(list[0]["name"], "orders");
    assert_eq!(list[0]["partitions"], 3);

    let described = app
        .get("/api/v1/topics/orders")
        .await
        .expect(StatusCode::OK);
    let p0 = &described["partitions"][0];
    assert_eq!(
        (
            &p0["high_watermark"],
            &p0["log_start_offset"],
            &p0["segment_count"]
        ),
        (&json!(0), &json!(0), &json!(0))
    );

    let deleted = app
        .call(Method::DELETE, "/api/v1/topics/orders", None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    app.get("/api/v1/topics/orders")
        .await
        .expect_error(StatusCode::NOT_FOUND, "unknown_topic");
    app.call(Method::DELETE, "/api/v1/topics/orders", None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "unknown_topic");
}

#[tokio::test]
async fn create_topic_errors() {
    let app = App::start().await;
    app.create_topic("t", 1).await;
    let again = app.post("/api/v1/topics", json!({"name": "t"})).await;
    again.expect_error(StatusCode::CONFLICT, "topic_exists");
    for bad in [
        json!({"name": "a b"}),
        json!({"name": "ok", "partitions": 0}),
        json!({"name": "ok", "partitions": MAX_PARTITIONS + 1}),
        json!({"name": "ok", "config": {"segment.bytes": "10"}}),
        // Validated as Kafka's broker validates, in the same place as over Kafka.
        json!({"name": "ok", "config": {"no.such.setting": "1"}}),
        json!({"name": "ok", "config": {"retention.ms": "-2"}}),
        json!({"name": "ok", "config": {"cleanup.policy": "compact,forever"}}),
    ] {
        let reply = app.post("/api/v1/topics", bad).await;
        reply.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    for malformed in [
        json!({"partitions": 1}),
        json!({"name": "x", "bogus": 1}),
        json!([1]),
    ] {
        let reply = app.post("/api/v1/topics", malformed).await;
        reply.expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    let not_json = app
        .raw(
            Method::POST,
            "/api/v1/topics",
            "application/json",
            Body::from("{"),
        )
        .await;
    not_json.expect_error(StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn alter_config_and_partitions() {
    let app = App::start().await;
    app.create_topic("cfg", 1).await;
    let uri = "/api/v1/topics/cfg/config";
    let body = json!({"retention.ms": "1000", "cleanup.policy": "delete"});
    let altered = app.call(Method::PATCH, uri, Some(body)).await;
    assert_eq!(
        altered.expect(StatusCode::OK)["config"]["retention.ms"],
        "1000"
    );
    let reset = app
        .call(Method::PATCH, uri, Some(json!({"retention.ms": null})))
        .await
        .expect(StatusCode::OK);
    assert_eq!(reset["config"]["retention.ms"], "604800000");
    for bad in [
        json!({"segment.ms": "abc"}),
        json!({"retention.bytes": "-3"}),
        json!({"cleanup.policy": "compact,never"}),
        json!({"typo.ms": "1"}),
    ] {
        app.call(Method::PATCH, uri, Some(bad))
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    app.call(Method::PATCH, "/api/v1/topics/nope/config", Some(json!({})))
        .await
        .expect_error(StatusCode::NOT_FOUND, "unknown_topic");

    let grown = app
        .post("/api/v1/topics/cfg/partitions", json!({"count": 4}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(grown["partitions"].as_array().unwrap().len(), 4);
    app.post("/api/v1/topics/cfg/partitions", json!({"count": 2}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    app.post("/api/v1/topics/nope/partitions", json!({"count": 2}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "unknown_topic");
}

#[tokio::test]
async fn produce_and_consume_utf8() {
    let app = App::start().await;
    app.create_topic("events", 1).await;
    let produced = app
        .produce(
            "events",
            json!([
                {"key": "k1", "value": "hello", "headers": [{"key": "h", "value": "x"}],
                 "timestamp_ms": 1700000000000i64},
                {"value": "world"},
                {"key": "k3", "value": null}
            ]),
        )
        .await;
    let offsets: Vec<i64> = produced["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, vec![0, 1, 2]);

    let read = app
        .get("/api/v1/topics/events/partitions/0/records?offset=0")
        .await
        .expect(StatusCode::OK);
    let records = read["records"].as_array().unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["key"], "k1");
    assert_eq!(records[0]["value"], "hello");
    assert_eq!(records[0]["timestamp_ms"], 1700000000000i64);
    assert_eq!(records[0]["headers"], json!([{"key": "h", "value": "x"}]));
    assert_eq!(records[1]["key"], Value::Null);
    assert_eq!(records[2]["value"], Value::Null);
    assert_eq!(
        (&read["next_offset"], &read["high_watermark"]),
        (&json!(3), &json!(3))
    );

    let page = app
        .get("/api/v1/topics/events/partitions/0/records?offset=1&max_records=1")
        .await
        .expect(StatusCode::OK);
    assert_eq!(page["records"][0]["value"], "world");
    assert_eq!(page["records"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_offset"], 2);

    let at_end = app
        .get("/api/v1/topics/events/partitions/0/records?offset=3")
        .await
        .expect(StatusCode::OK);
    assert_eq!(at_end["records"], json!([]));
    assert_eq!(at_end["next_offset"], 3);

    let described = app.get("/api/v1/topics/events/partitions/0").await;
    let p = described.expect(StatusCode::OK);
    assert_eq!(p["high_watermark"], 3);
    assert_eq!(p["segment_count"], 1);
    assert!(p["size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(p["lease"]["agent_id"], "test-agent");
}

#[tokio::test]
async fn produce_and_consume_base64() {
    let app = App::start().await;
    app.create_topic("bin", 1).await;
    let body = json!({
        "encoding": "base64",
        "records": [{"key": "AAE=", "value": "/wA=", "headers": [{"key": "h", "value": "AQ=="}]}]
    });
    app.post("/api/v1/topics/bin/records", body)
        .await
        .expect(StatusCode::OK);
    let read = app
        .get("/api/v1/topics/bin/partitions/0/records?encoding=base64")
        .await
        .expect(StatusCode::OK);
    let r = &read["records"][0];
    assert_eq!((&r["key"], &r["value"]), (&json!("AAE="), &json!("/wA=")));
    assert_eq!(r["headers"][0]["value"], "AQ==");
    // The same bytes as text: invalid UTF-8 is replaced, never an error.
    let text = app
        .get("/api/v1/topics/bin/partitions/0/records")
        .await
        .expect(StatusCode::OK);
    assert_eq!(text["records"][0]["value"], "\u{fffd}\u{0}");
}

#[tokio::test]
async fn keyed_records_follow_the_kafka_partitioner() {
    let app = App::start().await;
    app.create_topic("keyed", 7).await;
    let produced = app
        .produce(
            "keyed",
            json!([{"key": "21", "value": "a"}, {"key": "21", "value": "b"}]),
        )
        .await;
    // Kafka: toPositive(murmur2("21")) % 7, murmur2("21") = -973932308.
    let expected = ((-973932308i32 & 0x7fff_ffff) as u32 % 7) as u64;
    let offsets = produced["offsets"].as_array().unwrap();
    assert!(offsets.iter().all(|o| o["partition"] == expected));
    assert_eq!(
        (&offsets[0]["offset"], &offsets[1]["offset"]),
        (&json!(0), &json!(1))
    );

    let keyless = app
        .produce("keyed", json!([{"value": "x"}, {"value": "y"}]))
        .await;
    let parts: Vec<&Value> = keyless["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["partition"])
        .collect();
    assert_ne!(parts[0], parts[1], "keyless records rotate over partitions");
}

#[tokio::test]
async fn record_errors() {
    let app = App::start().await;
    app.create_topic("r", 1).await;
    let produce = |body: Value| app.post("/api/v1/topics/r/records", body);
    produce(json!({"records": []}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    produce(json!({"records": [{"value": "x", "partition": 5}]}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "unknown_partition");
    produce(json!({"encoding": "base64", "records": [{"value": "!!"}]}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    produce(json!({"encoding": "rot13", "records": [{"value": "x"}]}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    app.post(
        "/api/v1/topics/missing/records",
        json!({"records": [{"value": "x"}]}),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "unknown_topic");

    app.get("/api/v1/topics/r/partitions/0/records?offset=5")
        .await
        .expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "offset_out_of_range");
    app.get("/api/v1/topics/r/partitions/0/records?max_records=0")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    app.get("/api/v1/topics/r/partitions/0/records?offset=abc")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    app.get("/api/v1/topics/r/partitions/9/records")
        .await
        .expect_error(StatusCode::NOT_FOUND, "unknown_partition");
    app.get("/api/v1/topics/r/partitions/-1/records")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    app.get("/api/v1/topics/missing/partitions/0/records")
        .await
        .expect_error(StatusCode::NOT_FOUND, "unknown_topic");
    app.get("/api/v1/topics/r/partitions/3")
        .await
        .expect_error(StatusCode::NOT_FOUND, "unknown_partition");
}

#[tokio::test]
async fn groups_offsets_and_lag() {
    let app = App::start().await;
    app.create_topic("g", 2).await;
    app.produce(
        "g",
        json!([{"value": "a", "partition": 0}, {"value": "b", "partition": 0}]),
    )
    .await;
    assert_eq!(
        app.get("/api/v1/groups").await.expect(StatusCode::OK),
        json!([])
    );
    app.get("/api/v1/groups/readers")
        .await
        .expect_error(StatusCode::NOT_FOUND, "unknown_group");
    app.get("/api/v1/groups/readers/lag")
        .await
        .expect_error(StatusCode::NOT_FOUND, "unknown_group");

    let reset = json!({"offsets": [{"topic": "g", "partition": 0, "offset": 1}]});
    let lag = app
        .post("/api/v1/groups/readers/offsets", reset)
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        lag,
        json!([{"topic": "g", "partition": 0, "committed": 1, "high_watermark": 2, "lag": 1}])
    );
    let list = app.get("/api/v1/groups").await.expect(StatusCode::OK);
    assert_eq!(list[0]["group_id"], "readers");
    assert_eq!(list[0]["state"], "Empty");
    assert_eq!(list[0]["total_lag"], 1);
    let described = app
        .get("/api/v1/groups/readers")
        .await
        .expect(StatusCode::OK);
    assert_eq!(described["members"], json!([]));
    assert_eq!(described["offsets"][0]["lag"], 1);

    for bad in [
        json!({"offsets": [{"topic": "g", "partition": 0, "offset": 3}]}),
        json!({"offsets": []}),
    ] {
        app.post("/api/v1/groups/readers/offsets", bad)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    app.post(
        "/api/v1/groups/readers/offsets",
        json!({"offsets": [{"topic": "nope", "partition": 0, "offset": 0}]}),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "unknown_topic");
    app.post(
        "/api/v1/groups/readers/offsets",
        json!({"offsets": [{"topic": "g", "partition": 7, "offset": 0}]}),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "unknown_partition");

    let deleted = app
        .call(Method::DELETE, "/api/v1/groups/readers", None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    app.call(Method::DELETE, "/api/v1/groups/readers", None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "unknown_group");
}

#[tokio::test]
async fn agents_leases_and_stats() {
    let app = App::start().await;
    let agents = app.get("/api/v1/agents").await.expect(StatusCode::OK);
    assert_eq!(agents[0]["agent_id"], "test-agent");
    assert_eq!(agents[0]["local"], true);
    assert_eq!(agents[0]["leases_held"], 0);
    assert_eq!(
        app.get("/api/v1/leases").await.expect(StatusCode::OK),
        json!([])
    );

    let before = app.get("/api/v1/stats").await.expect(StatusCode::OK);
    app.create_topic("s", 1).await;
    app.produce("s", json!([{"value": "a"}, {"value": "b"}]))
        .await;
    let after = app.get("/api/v1/stats").await.expect(StatusCode::OK);
    let records = |v: &Value| v["records_in_total"].as_i64().unwrap();
    assert_eq!(records(&after) - records(&before), 2);
    let bytes_in = |v: &Value| v["bytes_in_total"].as_u64().unwrap();
    assert!(bytes_in(&after) > bytes_in(&before));

    let leases = app.get("/api/v1/leases").await.expect(StatusCode::OK);
    assert_eq!(leases[0]["topic"], "s");
    assert_eq!(leases[0]["agent_id"], "test-agent");
    let agents = app.get("/api/v1/agents").await.expect(StatusCode::OK);
    assert_eq!(agents[0]["leases_held"], 1);
}

#[tokio::test]
async fn unknown_endpoints_are_json_404s() {
    let app = App::start().await;
    app.get("/api/v1/nope")
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let wrong_method = app.call(Method::PUT, "/api/v1/topics", None).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn acl_lifecycle() {
    let app = App::start().await;
    let acl = json!({"resource_type": "TOPIC", "resource_name": "orders-", "pattern_type": "PREFIXED",
                     "principal": "User:alice", "operation": "READ", "permission": "ALLOW"});
    let created = app
        .post("/api/v1/acls", acl.clone())
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(created["host"], "*", "host defaults to any");
    app.post("/api/v1/acls", acl)
        .await
        .expect(StatusCode::CREATED);
    let literal = json!({"resource_type": "GROUP", "resource_name": "g", "principal": "User:bob",
                         "host": "10.0.0.1", "operation": "DELETE", "permission": "DENY"});
    let created = app
        .post("/api/v1/acls", literal)
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(created["pattern_type"], "LITERAL");

    let all = app.get("/api/v1/acls").await.expect(StatusCode::OK);
    assert_eq!(
        all.as_array().unwrap().len(),
        2,
        "creating twice stores once: {all}"
    );
    let matching = app
        .get("/api/v1/acls?resource_type=TOPIC&resource_name=orders-eu&pattern_type=MATCH")
        .await
        .expect(StatusCode::OK);
    assert_eq!(matching[0]["resource_name"], "orders-");
    assert_eq!(matching.as_array().unwrap().len(), 1);
    let by_bob = app
        .get("/api/v1/acls?principal=User:bob&permission=DENY")
        .await;
    assert_eq!(by_bob.expect(StatusCode::OK)[0]["host"], "10.0.0.1");

    for (body, code) in [
        (
            json!({"resource_type": "GROUP", "resource_name": "g", "principal": "User:a",
                "operation": "WRITE", "permission": "ALLOW"}),
            "invalid_request",
        ),
        (
            json!({"resource_type": "CLUSTER", "resource_name": "c", "principal": "User:a",
                "operation": "ALTER", "permission": "ALLOW"}),
            "invalid_request",
        ),
        (
            json!({"resource_type": "TOPIC", "resource_name": "t", "principal": "alice",
                "operation": "READ", "permission": "ALLOW"}),
            "invalid_request",
        ),
        (
            json!({"resource_type": "TOPIC", "resource_name": "t", "principal": "User:a",
                "operation": "READ", "permission": "MAYBE"}),
            "bad_request",
        ),
        (
            json!({"resource_type": "TOPIC", "principal": "User:a",
                "operation": "READ", "permission": "ALLOW"}),
            "bad_request",
        ),
    ] {
        app.post("/api/v1/acls", body)
            .await
            .expect_error(StatusCode::BAD_REQUEST, code);
    }
    app.get("/api/v1/acls?operation=FLY")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    app.call(Method::DELETE, "/api/v1/acls", None)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");

    let deleted = app
        .call(Method::DELETE, "/api/v1/acls?principal=User:alice", None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(deleted[0]["resource_name"], "orders-");
    let left = app.get("/api/v1/acls").await.expect(StatusCode::OK);
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["principal"], "User:bob");
}
