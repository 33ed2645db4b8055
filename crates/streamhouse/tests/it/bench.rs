//! `bench produce` and `bench consume`: small runs complete and their JSON reports parse.

use serde_json::Value;

use crate::server::Server;

#[test]
fn bench_produce_then_consume_report_json() {
    let s = Server::start();
    let produce_json = s.scratch().join("produce.json");
    let out = s.ok(&[
        "bench",
        "produce",
        "--topic",
        "b",
        "--partitions",
        "2",
        "--records",
        "2000",
        "--record-size",
        "256",
        "--json",
        produce_json.to_str().unwrap(),
    ]);
    assert!(out.contains("produce-ack latency ms"), "{out}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&produce_json).unwrap()).unwrap();
    assert_eq!(report["mode"], "produce");
    assert_eq!(report["produce"]["records"], 2000);
    assert_eq!(report["produce"]["bytes"], 2000 * 256);
    assert_eq!(report["errors"]["count"], 0);
    assert_eq!(report["produce_ack_ms"]["count"], 2000);
    assert!(report["produce_ack_ms"]["p99"].as_f64().unwrap() > 0.0);

    let consume_json = s.scratch().join("consume.json");
    s.ok(&[
        "bench",
        "consume",
        "--topic",
        "b",
        "--json",
        consume_json.to_str().unwrap(),
    ]);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&consume_json).unwrap()).unwrap();
    assert_eq!(report["consume"]["records"], 2000);
    assert_eq!(report["consume"]["bytes"], 2000 * 256);
}

#[test]
fn bench_e2e_receives_every_acknowledged_record() {
    let s = Server::start();
    let json = s.scratch().join("e2e.json");
    s.ok(&[
        "bench",
        "e2e",
        "--topic",
        "e",
        "--partitions",
        "2",
        "--records",
        "200",
        "--rate",
        "400",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["produce"]["records"], 200);
    assert_eq!(report["received"], 200);
    assert_eq!(report["end_to_end_ms"]["count"], 200);
}
