//! `topic create|list|describe|delete` against a live server.

use serde_json::Value;

use crate::server::{one_line_error, Server};

#[test]
fn topic_lifecycle() {
    let s = Server::start();
    let out = s.ok(&["topic", "create", "orders", "--partitions", "3"]);
    assert!(
        out.contains("created topic orders with 3 partitions"),
        "{out}"
    );

    let list = s.ok(&["topic", "list"]);
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["orders", "3"]),
        "{list}"
    );
    let list: Value = serde_json::from_str(&s.ok(&["topic", "list", "--format", "json"])).unwrap();
    assert_eq!(list[0]["name"], "orders");
    assert_eq!(list[0]["partitions"], 3);

    let again = one_line_error(&s.cli(&["topic", "create", "orders", "--partitions", "3"]));
    assert!(again.contains("TopicAlreadyExists"), "{again}");
    let out = s.ok(&["topic", "create", "orders", "--if-not-exists"]);
    assert!(out.contains("already exists"), "{out}");

    let described: Value =
        serde_json::from_str(&s.ok(&["topic", "describe", "orders", "--format", "json"])).unwrap();
    let partitions = described["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    assert!(partitions
        .iter()
        .all(|p| p["start_offset"] == 0 && p["end_offset"] == 0));
    let text = s.ok(&["topic", "describe", "orders"]);
    assert!(text.contains("partitions: 3"), "{text}");

    s.ok(&["topic", "delete", "orders"]);
    let list = s.ok(&["topic", "list"]);
    assert!(!list.contains("orders"), "{list}");
}

#[test]
fn describe_shows_end_offsets_after_produce() {
    let s = Server::start();
    s.ok(&["topic", "create", "t", "--partitions", "2"]);
    let out = s.cli_with_input(&["produce", "t", "--partition", "1"], "a\nb\nc\n");
    assert!(out.status.success());
    let described: Value =
        serde_json::from_str(&s.ok(&["topic", "describe", "t", "--format", "json"])).unwrap();
    assert_eq!(described["partitions"][0]["end_offset"], 0);
    assert_eq!(described["partitions"][1]["end_offset"], 3);
}
