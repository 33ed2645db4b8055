//! `group ...` and `agent list` through the HTTP admin API; `consume --group` positions.

use serde_json::Value;

use crate::server::{success, Server};

fn values(out: &str) -> Vec<&str> {
    out.lines().collect()
}

#[test]
fn consume_with_group_commits_and_resumes() {
    let s = Server::start();
    s.ok(&["topic", "create", "jobs"]);
    success(
        &s.cli_with_input(&["produce", "jobs"], "j0\nj1\nj2\nj3\nj4\n"),
        &["produce"],
    );

    let first = s.ok(&[
        "consume",
        "jobs",
        "--group",
        "workers",
        "--max-messages",
        "2",
    ]);
    assert_eq!(values(&first), ["j0", "j1"]);
    let lag: Value =
        serde_json::from_str(&s.ok(&["group", "lag", "workers", "--format", "json"])).unwrap();
    assert_eq!(lag[0]["committed"], 2);
    assert_eq!(lag[0]["lag"], 3);
    let rest = s.ok(&["consume", "jobs", "--group", "workers", "-e"]);
    assert_eq!(values(&rest), ["j2", "j3", "j4"]);

    let groups = s.ok(&["group", "list"]);
    assert!(groups.contains("workers"), "{groups}");
    let described = s.ok(&["group", "describe", "workers"]);
    assert!(described.contains("group_id: workers"), "{described}");

    let dry = s.ok(&[
        "group",
        "reset-offsets",
        "workers",
        "--topic",
        "jobs",
        "--to-offset",
        "1",
        "--dry-run",
    ]);
    assert!(
        dry.contains("jobs/0 -> 1") && dry.contains("dry run"),
        "{dry}"
    );
    s.ok(&[
        "group",
        "reset-offsets",
        "workers",
        "--topic",
        "jobs",
        "--to-earliest",
    ]);
    let lag: Value =
        serde_json::from_str(&s.ok(&["group", "lag", "workers", "--format", "json"])).unwrap();
    assert_eq!(lag[0]["lag"], 5);
}

#[test]
fn agent_list_shows_this_agent() {
    let s = Server::start();
    let agents: Value =
        serde_json::from_str(&s.ok(&["agent", "list", "--format", "json"])).unwrap();
    let agents = agents.as_array().unwrap();
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert_eq!(agents[0]["local"], true);
    let text = s.ok(&["agent", "list"]);
    assert!(text.starts_with("AGENT_ID"), "{text}");
}

#[test]
fn topic_configs_and_partitions_via_http() {
    let s = Server::start();
    s.ok(&["topic", "create", "cfg", "--config", "retention.ms=60000"]);
    let d: Value =
        serde_json::from_str(&s.ok(&["topic", "describe", "cfg", "--format", "json"])).unwrap();
    assert_eq!(d["configs"]["retention.ms"], "60000");
    s.ok(&[
        "topic",
        "alter",
        "cfg",
        "--partitions",
        "3",
        "--config",
        "retention.ms=120000",
    ]);
    let d: Value =
        serde_json::from_str(&s.ok(&["topic", "describe", "cfg", "--format", "json"])).unwrap();
    assert_eq!(d["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(d["configs"]["retention.ms"], "120000");
}
