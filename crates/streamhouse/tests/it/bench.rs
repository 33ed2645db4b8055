//! `bench produce|consume|e2e` against a live server: runs complete, their JSON reports carry
//! the figures, and the records really are in the topic (counted by the independent
//! `consume` command, not inferred from timings).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::server::Server;

fn report(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Offsets per partition of every record in `topic`, read with the operator `consume`.
fn offsets(s: &Server, topic: &str) -> BTreeMap<i64, Vec<i64>> {
    let out = s.ok(&["consume", topic, "-e", "--format", "json"]);
    let mut by_partition: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for line in out.lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        let p = r["partition"].as_i64().unwrap();
        by_partition
            .entry(p)
            .or_default()
            .push(r["offset"].as_i64().unwrap());
    }
    by_partition
}

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
    let r = report(&produce_json);
    assert_eq!(r["mode"], "produce");
    assert_eq!(r["params"]["in_flight"], 128);
    assert_eq!(r["params"]["warm_up_records"], 2);
    assert_eq!(r["produce"]["records"], 2000);
    assert_eq!(r["produce"]["bytes"], 2000 * 256);
    assert_eq!(r["errors"]["count"], 0);
    assert_eq!(r["produce_ack_ms"]["count"], 2000);
    assert!(r["produce_ack_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(r["requests"].as_u64().unwrap() >= 1);

    // Every record (and the one warm-up record per partition) is there, once, in order.
    let offsets = offsets(&s, "b");
    assert_eq!(offsets.len(), 2, "{offsets:?}");
    let total: usize = offsets.values().map(Vec::len).sum();
    assert_eq!(total, 2002);
    for list in offsets.values() {
        assert!(list.iter().copied().eq(0..list.len() as i64));
    }

    let consume_json = s.scratch().join("consume.json");
    s.ok(&[
        "bench",
        "consume",
        "--topic",
        "b",
        "--json",
        consume_json.to_str().unwrap(),
    ]);
    let r = report(&consume_json);
    assert_eq!(r["consume"]["records"], 2002);
    assert_eq!(r["consume"]["bytes"], 2002 * 256);
    assert_eq!(r["errors"]["count"], 0);
}

#[test]
fn bench_batches_never_exceed_the_batch_size() {
    let s = Server::start();
    let json = s.scratch().join("small-batches.json");
    s.ok(&[
        "bench",
        "produce",
        "--topic",
        "small",
        "--partitions",
        "1",
        "--records",
        "640",
        "--record-size",
        "256",
        "--batch-size",
        "4096",
        "--in-flight",
        "1",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    let r = report(&json);
    assert_eq!(r["produce"]["records"], 640);
    // 16 records fill a batch, so at least 40 requests, whatever the timing.
    let requests = r["requests"].as_u64().unwrap();
    assert!((40..=640).contains(&requests), "{requests} requests");
    assert_eq!(offsets(&s, "small")[&0].len(), 641);
}

#[test]
fn bench_rate_mode_sends_what_the_schedule_says() {
    let s = Server::start();
    let json = s.scratch().join("rate.json");
    s.ok(&[
        "bench",
        "produce",
        "--topic",
        "r",
        "--partitions",
        "3",
        "--rate",
        "300",
        "--duration",
        "1s",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    let r = report(&json);
    // Records are due at seq / rate: exactly 300 fall in the first second, however late the
    // generator or the server runs.
    assert_eq!(r["produce"]["records"], 300);
    assert_eq!(r["produce_ack_ms"]["count"], 300);
    let total: usize = offsets(&s, "r").values().map(Vec::len).sum();
    assert_eq!(total, 303);
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
    let r = report(&json);
    assert_eq!(r["produce"]["records"], 200);
    assert_eq!(r["received"], 200);
    assert_eq!(r["end_to_end_ms"]["count"], 200);
    assert_eq!(r["errors"]["count"], 0);
}
