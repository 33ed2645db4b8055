//! The Kafka-protocol commands (`topic`, `produce`, `consume`, `group`) against a server that
//! requires SASL_SSL, with the global `--tls-ca` / `--sasl-*` flags; failures are one line.

use std::net::TcpListener;

use serde_json::Value;

use crate::server::{certificate, one_line_error, run, success, Options, Server};

/// `(key, value)` of every record of `topic`, sorted; consumed as `group`, which commits.
fn consume_as(s: &Server, topic: &str, group: &str) -> Vec<(String, String)> {
    let out = s.ok(&["consume", topic, "-e", "--format", "json", "-g", group]);
    let mut records: Vec<(String, String)> = out
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            (
                r["key"].as_str().unwrap().into(),
                r["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    records.sort();
    records
}

#[test]
fn kafka_commands_over_sasl_ssl() {
    let certs = tempfile::tempdir().unwrap();
    let s = Server::start_secure(certs.path());
    let out = s.ok(&["topic", "create", "events", "--partitions", "2"]);
    assert!(out.contains("created topic events"), "{out}");
    assert!(s.ok(&["topic", "list"]).contains("events"));

    let args = ["produce", "events", "-K", ":"];
    let out = success(&s.cli_with_input(&args, "k1:v1\nk2:v2\n"), &args);
    assert!(out.contains("produced 2 records to events"), "{out}");
    // The other mechanisms log the CLI's client in too (SCRAM-SHA-256 is the harness's default).
    for mechanism in ["PLAIN", "SCRAM-SHA-512"] {
        let env = [("STREAMHOUSE_SASL_MECHANISM", mechanism)];
        let out = s.cli_with(&args, &format!("{mechanism}:v\n"), &env);
        success(&out, &[mechanism]);
    }
    // The password from stdin, the records from a file.
    let file = s.scratch().join("records.txt");
    std::fs::write(&file, "k3:v3\n").unwrap();
    let file = file.to_str().unwrap();
    let args = [
        "produce",
        "events",
        "-K",
        ":",
        "-f",
        file,
        "--sasl-password-stdin",
    ];
    let no_env_password = [("STREAMHOUSE_SASL_PASSWORD", "")];
    success(&s.cli_with(&args, "admin-pw\n", &no_env_password), &args);

    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter().map(|&(k, v)| (k.into(), v.into())).collect()
    };
    let expected = pairs(&[
        ("PLAIN", "v"),
        ("SCRAM-SHA-512", "v"),
        ("k1", "v1"),
        ("k2", "v2"),
        ("k3", "v3"),
    ]);
    assert_eq!(consume_as(&s, "events", "g1"), expected);

    // Groups: listed over HTTPS; reset-offsets looks the offsets up over Kafka.
    assert!(s.ok(&["group", "list"]).contains("g1"));
    let out = s.ok(&[
        "group",
        "reset-offsets",
        "g1",
        "-t",
        "events",
        "--to-earliest",
    ]);
    assert!(out.contains("committed 2 offsets for group g1"), "{out}");
    assert_eq!(consume_as(&s, "events", "g1"), expected);
}

#[test]
fn kafka_command_security_errors_are_one_line() {
    let certs = tempfile::tempdir().unwrap();
    let s = Server::start_secure(certs.path());
    s.ok(&["topic", "create", "t"]);
    let wrong_password = [("STREAMHOUSE_SASL_PASSWORD", "wrong")];
    let no_tls = [("STREAMHOUSE_TLS_CA", "")];
    let no_sasl = [("STREAMHOUSE_SASL_MECHANISM", "")];
    let plain_in_clear = [
        ("STREAMHOUSE_TLS_CA", ""),
        ("STREAMHOUSE_SASL_MECHANISM", "PLAIN"),
    ];
    type Case<'a> = (&'a [&'a str], &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 8] = [
        (
            &["topic", "list"],
            "",
            &wrong_password,
            "SASL login as 'admin' failed",
        ),
        (
            &["produce", "t"],
            "r\n",
            &wrong_password,
            "SASL_AUTHENTICATION_FAILED",
        ),
        (
            &["consume", "t", "-e"],
            "",
            &wrong_password,
            "SASL login as 'admin' failed",
        ),
        (
            &["topic", "list"],
            "",
            &no_tls,
            "does it require TLS (--tls-ca)",
        ),
        (
            &["produce", "t"],
            "r\n",
            &no_sasl,
            "or SASL (--sasl-mechanism)",
        ),
        (
            &["topic", "list"],
            "",
            &plain_in_clear,
            "SASL PLAIN sends the password in clear",
        ),
        (
            &["topic", "list"],
            "",
            &[("STREAMHOUSE_SASL_PASSWORD", "")],
            "SASL SCRAM-SHA-256 needs a password",
        ),
        (
            &["produce", "t", "--sasl-password-stdin"],
            "r\n",
            &[],
            "--sasl-password-stdin and records without --file both read stdin",
        ),
    ];
    for (args, input, env, expected) in cases {
        let line = one_line_error(&s.cli_with(args, input, env));
        assert!(line.contains(expected), "{args:?} {env:?}: {line}");
    }
    // Nothing was written by the refused produces.
    assert_eq!(s.ok(&["consume", "t", "-e"]), "");
}

/// The HTTP commands (`agent list`, `topic describe`, `topic alter`) log in to the HTTP API with
/// the SASL user name and password; without them, or with a wrong one, the API refuses, and a
/// user without ACLs sees nothing.
#[test]
fn http_commands_log_in_with_the_sasl_user() {
    let certs = tempfile::tempdir().unwrap();
    let s = Server::start_secure(certs.path());
    s.ok(&["topic", "create", "events"]);
    assert!(s.ok(&["agent", "list"]).contains("agent-"));
    assert!(s.ok(&["topic", "describe", "events"]).contains("events"));

    let anonymous = [("STREAMHOUSE_SASL_USERNAME", "")];
    let line = one_line_error(&s.cli_with(&["agent", "list"], "", &anonymous));
    assert!(
        line.contains("401") && line.contains("authentication required"),
        "{line}"
    );
    let wrong = [("STREAMHOUSE_SASL_PASSWORD", "wrong")];
    let line = one_line_error(&s.cli_with(&["agent", "list"], "", &wrong));
    assert!(line.contains("invalid user name or password"), "{line}");

    // bob has no ACLs: the HTTP API lets him list agents and refuses to change topics.
    let add = ["user", "add", "bob", "--password-stdin"];
    success(&s.cli_with_input(&add, "bob-pw\n"), &add);
    let bob = [
        ("STREAMHOUSE_SASL_USERNAME", "bob"),
        ("STREAMHOUSE_SASL_PASSWORD", "bob-pw"),
    ];
    success(
        &s.cli_with(&["agent", "list"], "", &bob),
        &["agent", "list"],
    );
    let args = ["topic", "alter", "events", "--partitions", "3"];
    let line = one_line_error(&s.cli_with(&args, "", &bob));
    assert!(
        line.contains("403") && line.contains("User:bob is not authorized"),
        "{line}"
    );

    // The password goes in clear to a loopback address only.
    let remote = [("STREAMHOUSE_HTTP", "http://192.0.2.1:8080")];
    let line = one_line_error(&s.cli_with(&["agent", "list"], "", &remote));
    assert!(line.contains("refusing to send the password"), "{line}");
}

/// `--http-enabled=false` serves Kafka without any HTTP listener; HTTP authentication refuses to
/// start where passwords would cross the network in clear.
#[test]
fn http_listener_settings_are_enforced_at_start() {
    let s = Server::start_with(Options {
        args: vec!["--http-enabled=false".into()],
        no_http: true,
        ..Options::default()
    });
    let http = s.http.trim_start_matches("http://");
    assert!(
        std::net::TcpStream::connect(http).is_err(),
        "nothing listens on {http}"
    );
    s.ok(&["topic", "create", "t"]);

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let kafka = crate::server::free_addr();
    let port = crate::server::free_addr()
        .rsplit_once(':')
        .unwrap()
        .1
        .to_string();
    let args = [
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--kafka-addr",
        &kafka,
        "--http-addr",
        &format!("0.0.0.0:{port}"),
        "--sasl",
    ];
    let out = run(&args, "", &[("STREAMHOUSE_LOG", "warn")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("HTTP authentication sends passwords")
            && stderr.contains("--http-tls-cert"),
        "{stderr}"
    );
}

#[test]
fn tls_to_a_plaintext_or_silent_listener_is_one_line() {
    let s = Server::start();
    let certs = tempfile::tempdir().unwrap();
    let (cert, _) = certificate(certs.path());
    let tls = [("STREAMHOUSE_TLS_CA", cert.as_str())];
    let line = one_line_error(&s.cli_with(&["topic", "list"], "", &tls));
    assert!(line.contains("TLS handshake"), "{line}");

    // A listener that accepts connections but never answers: the handshake gives up at the
    // deadline instead of hanging.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let env = [
        ("STREAMHOUSE_BOOTSTRAP", addr.as_str()),
        ("STREAMHOUSE_TLS_CA", cert.as_str()),
        ("STREAMHOUSE_TIMEOUT", "300ms"),
    ];
    for args in [&["topic", "list"][..], &["consume", "t", "-e"]] {
        let line = one_line_error(&run(args, "", &env));
        assert!(line.contains("no answer within 300ms"), "{args:?}: {line}");
    }
}
