//! `streamhouse user ...` against a server with SASL_SSL on the Kafka listener and HTTPS on the
//! HTTP listener: users added, listed and removed; logins follow at once.

use serde_json::{json, Value};

use crate::server::{one_line_error, success, Server};

fn users(s: &Server) -> Value {
    let out = s.ok(&["user", "list", "--format", "json"]);
    serde_json::from_str(&out).unwrap()
}

/// `user list` logged in as `user` with `password` over SCRAM-SHA-512.
fn login(s: &Server, user: &str, password: &str) -> std::process::Output {
    let env = [
        ("STREAMHOUSE_SASL_MECHANISM", "SCRAM-SHA-512"),
        ("STREAMHOUSE_SASL_USERNAME", user),
        ("STREAMHOUSE_SASL_PASSWORD", password),
    ];
    s.cli_with(&["user", "list"], "", &env)
}

#[test]
fn users_added_and_removed_over_sasl_ssl() {
    let certs = tempfile::tempdir().unwrap();
    let s = Server::start_secure(certs.path());
    assert_eq!(
        users(&s),
        json!([{"name": "admin", "credentials": [
            {"mechanism": "SCRAM-SHA-256", "iterations": 4096},
            {"mechanism": "SCRAM-SHA-512", "iterations": 4096},
        ]}])
    );

    let args = [
        "user",
        "add",
        "bob",
        "--password-stdin",
        "--mechanism",
        "SCRAM-SHA-512",
        "--iterations",
        "8192",
    ];
    let out = success(&s.cli_with_input(&args, "bob-pw\n"), &args);
    assert!(out.contains("user 'bob': SCRAM-SHA-512 set"), "{out}");
    assert_eq!(
        users(&s)[1],
        json!({"name": "bob", "credentials": [{"mechanism": "SCRAM-SHA-512", "iterations": 8192}]})
    );
    // The new user logs in at once (stdin's newline was not part of the password); not being a
    // super user, it is then refused listing users, which only a logged-in client gets to hear.
    let listed = one_line_error(&login(&s, "bob", "bob-pw"));
    assert!(listed.contains("CLUSTER_AUTHORIZATION_FAILED"), "{listed}");
    let wrong = one_line_error(&login(&s, "bob", "bob-pw\n"));
    assert!(wrong.contains("SASL login as 'bob' failed"), "{wrong}");

    let out = s.ok(&["user", "remove", "bob"]);
    assert!(out.contains("user 'bob': SCRAM-SHA-512 removed"), "{out}");
    let refused = one_line_error(&login(&s, "bob", "bob-pw"));
    assert!(refused.contains("SASL_AUTHENTICATION_FAILED"), "{refused}");
    assert_eq!(users(&s).as_array().unwrap().len(), 1);

    // The HTTP API over HTTPS, trusting the same certificate.
    let agents = s.ok(&["agent", "list", "--format", "json"]);
    assert!(agents.contains("\"local\": true"), "{agents}");
}

#[test]
fn user_command_errors_are_one_line() {
    let certs = tempfile::tempdir().unwrap();
    let s = Server::start_secure(certs.path());
    let cases: [(&[&str], &str, &str); 6] = [
        (
            &[
                "user",
                "add",
                "carol",
                "--password",
                "x",
                "--iterations",
                "100",
            ],
            "",
            "UNACCEPTABLE_CREDENTIAL: Too few iterations",
        ),
        (&["user", "add", "carol"], "", "a password is needed"),
        (
            &["user", "add", "carol", "--password-stdin"],
            "\n",
            "the password is empty",
        ),
        (&["user", "remove", "nobody"], "", "unknown user 'nobody'"),
        (
            &[
                "user",
                "remove",
                "admin",
                "--mechanism",
                "SCRAM-SHA-512",
                "--mechanism",
                "SCRAM-SHA-512",
            ],
            "",
            "",
        ),
        (
            &["user", "remove", "admin", "--mechanism", "SCRAM-SHA-512"],
            "",
            "RESOURCE_NOT_FOUND",
        ),
    ];
    for (args, input, expected) in cases {
        let out = s.cli_with_input(args, input);
        if expected.is_empty() {
            // Repeating a mechanism removes it once.
            success(&out, args);
            continue;
        }
        let line = one_line_error(&out);
        assert!(line.contains(expected), "{args:?}: {line}");
    }
    // Without TLS or without a login the listener hangs up; the message says what may be
    // missing.
    let plain = s.cli_with(&["user", "list"], "", &[("STREAMHOUSE_TLS_CA", "")]);
    let line = one_line_error(&plain);
    assert!(line.contains("does it require TLS"), "{line}");
    let anonymous = s.cli_with(&["user", "list"], "", &[("STREAMHOUSE_SASL_MECHANISM", "")]);
    let line = one_line_error(&anonymous);
    assert!(line.contains("SASL (--sasl-mechanism)"), "{line}");
    // The HTTPS API refuses a client that does not trust its certificate.
    let untrusted = s.cli_with(&["agent", "list"], "", &[("STREAMHOUSE_HTTP_CA", "")]);
    let line = one_line_error(&untrusted);
    assert!(line.contains("cannot reach the HTTP API"), "{line}");
}
