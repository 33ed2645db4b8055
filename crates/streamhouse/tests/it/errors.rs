//! Failures print one `error: ...` line and exit non-zero.

use crate::server::{free_addr, one_line_error, run, Server};

#[test]
fn unknown_topic_is_one_line() {
    let s = Server::start();
    for args in [
        &["consume", "missing", "-e"][..],
        &["produce", "missing"],
        &["topic", "describe", "missing"],
    ] {
        let line = one_line_error(&s.cli(args));
        assert!(line.contains("unknown topic 'missing'"), "{args:?}: {line}");
    }
    let line = one_line_error(&s.cli(&["topic", "delete", "missing"]));
    assert!(line.contains("UnknownTopicOrPartition"), "{line}");
}

#[test]
fn server_down_is_one_line() {
    let closed = free_addr();
    let http = format!("http://{}", free_addr());
    let env = [
        ("STREAMHOUSE_BOOTSTRAP", closed.as_str()),
        ("STREAMHOUSE_HTTP", http.as_str()),
        ("STREAMHOUSE_TIMEOUT", "1s"),
    ];
    for args in [
        &["topic", "list"][..],
        &["consume", "t", "-e"],
        &["bench", "produce", "--records", "10"],
    ] {
        let line = one_line_error(&run(args, "", &env));
        assert!(
            line.contains(&format!("cannot reach the Kafka listener at {closed}")),
            "{line}"
        );
    }
    for args in [&["agent", "list"][..], &["group", "list"]] {
        let line = one_line_error(&run(args, "", &env));
        assert!(
            line.contains(&format!("cannot reach the HTTP API at {http}")),
            "{line}"
        );
    }
}

#[test]
fn bad_flags_exit_2() {
    for args in [
        &["topic", "create"][..],
        &["consume", "t", "--offset", "sideways"],
        &["bench", "produce", "--compression", "rar"],
        &["produce", "t", "--header", "novalue"],
    ] {
        let out = run(args, "", &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("error:"),
            "{args:?}"
        );
    }
}
