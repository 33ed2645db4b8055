//! `produce` and `consume` against a live server.

use serde_json::Value;

use crate::server::{success, Server};

fn produce(s: &Server, args: &[&str], input: &str) -> String {
    success(&s.cli_with_input(args, input), args)
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn produce_then_consume_round_trips_keys_values_and_headers() {
    let s = Server::start();
    s.ok(&["topic", "create", "events", "--partitions", "3"]);
    let input = "k1:v1\nk2:v2\nk3:v3\n\nno-key\n";
    let args = [
        "produce",
        "events",
        "-K",
        ":",
        "-H",
        "source=test",
        "-H",
        "n=1",
    ];
    let out = produce(&s, &args, input);
    assert!(out.contains("produced 4 records to events"), "{out}");

    let text = s.ok(&["consume", "events", "--exit-at-end"]);
    let mut values: Vec<_> = text.lines().collect();
    values.sort();
    assert_eq!(values, ["no-key", "v1", "v2", "v3"]);

    let records = json_lines(&s.ok(&["consume", "events", "-e", "--format", "json"]));
    assert_eq!(records.len(), 4);
    let k2 = records
        .iter()
        .find(|r| r["key"] == "k2")
        .expect("k2 consumed");
    assert_eq!(k2["value"], "v2");
    assert_eq!(k2["headers"]["source"], "test");
    assert_eq!(k2["headers"]["n"], "1");
    assert!(k2["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
}

#[test]
fn consume_start_positions_and_limits() {
    let s = Server::start();
    s.ok(&["topic", "create", "log"]);
    produce(&s, &["produce", "log"], "r0\nr1\nr2\nr3\nr4\n");

    let from_two = s.ok(&["consume", "log", "--offset", "2", "-e"]);
    assert_eq!(from_two.lines().collect::<Vec<_>>(), ["r2", "r3", "r4"]);
    let limited = s.ok(&["consume", "log", "--max-messages", "2"]);
    assert_eq!(limited.lines().collect::<Vec<_>>(), ["r0", "r1"]);
    assert_eq!(s.ok(&["consume", "log", "--offset", "latest", "-e"]), "");

    let records = json_lines(&s.ok(&["consume", "log", "-e", "--format", "json"]));
    let ts = records[3]["timestamp"].as_i64().unwrap();
    let from_ts = s.ok(&["consume", "log", "-e", "--from-timestamp", &ts.to_string()]);
    assert!(
        from_ts.lines().count() >= 2 && from_ts.ends_with("r4\n"),
        "{from_ts}"
    );
    let future = (ts + 3_600_000).to_string();
    assert_eq!(
        s.ok(&["consume", "log", "-e", "--from-timestamp", &future]),
        ""
    );
}

#[test]
fn keyed_records_land_on_one_partition() {
    let s = Server::start();
    s.ok(&["topic", "create", "keyed", "--partitions", "4"]);
    produce(
        &s,
        &["produce", "keyed", "-K", "="],
        "same=1\nsame=2\nsame=3\n",
    );
    let records = json_lines(&s.ok(&["consume", "keyed", "-e", "--format", "json"]));
    assert_eq!(records.len(), 3);
    assert!(records
        .iter()
        .all(|r| r["partition"] == records[0]["partition"]));
    let offsets: Vec<_> = records
        .iter()
        .map(|r| r["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, [0, 1, 2]);
}
