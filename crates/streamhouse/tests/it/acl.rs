//! `acl add|list|remove` against a server with SASL and ACLs on, authenticating as a super user
//! (SCRAM) and as an ordinary user.

use serde_json::Value;

use crate::server::{one_line_error, success, Options, Server};

const ADMIN: [(&str, &str); 3] = [
    ("STREAMHOUSE_SASL_USERNAME", "admin"),
    ("STREAMHOUSE_SASL_MECHANISM", "SCRAM-SHA-512"),
    ("STREAMHOUSE_SASL_PASSWORD", "admin-pw-1"),
];

fn secured() -> Server {
    let args = [
        "--sasl-mechanisms",
        "PLAIN,SCRAM-SHA-512",
        "--super-user",
        "User:admin",
    ];
    Server::start_with(Options {
        args: args.iter().map(|a| a.to_string()).collect(),
        env: vec![
            (
                "STREAMHOUSE_SASL_USERS",
                "admin:admin-pw-1,alice:alice-pw-2".into(),
            ),
            ("STREAMHOUSE_LOG", "debug".into()),
        ],
        ..Options::default()
    })
}

fn as_admin(s: &Server, args: &[&str]) -> String {
    success(&s.cli_with(args, "", &ADMIN), args)
}

fn listed(s: &Server) -> Vec<Value> {
    let out = as_admin(s, &["acl", "list", "--format", "json"]);
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn acl_add_list_remove() {
    let s = secured();
    let out = as_admin(
        &s,
        &[
            "acl",
            "add",
            "--topic",
            "orders",
            "--principal",
            "User:alice",
            "--operation",
            "write",
            "--operation",
            "DESCRIBE",
        ],
    );
    assert!(
        out.contains("added ALLOW WRITE on TOPIC orders (LITERAL) for User:alice from *"),
        "{out}"
    );
    as_admin(
        &s,
        &[
            "acl",
            "add",
            "--topic",
            "logs-",
            "--pattern",
            "prefixed",
            "--principal",
            "User:*",
            "--operation",
            "read",
            "--deny",
        ],
    );
    let all = listed(&s);
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(all[0]["resource_name"], "logs-");
    assert_eq!(all[0]["pattern_type"], "PREFIXED");
    assert_eq!(all[0]["permission"], "DENY");
    let text = as_admin(
        &s,
        &["acl", "list", "--topic", "logs-app", "--pattern", "match"],
    );
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows[0].starts_with("RESOURCE_TYPE"), "{text}");
    assert!(
        rows[1].contains("logs-") && rows[1].contains("DENY"),
        "{text}"
    );

    // Alice authenticates but may not manage ACLs.
    let alice = [
        ("STREAMHOUSE_SASL_USERNAME", "alice"),
        ("STREAMHOUSE_SASL_PASSWORD", "alice-pw-2"),
        ("STREAMHOUSE_SASL_MECHANISM", "SCRAM-SHA-512"),
    ];
    let err = one_line_error(&s.cli_with(&["acl", "list"], "", &alice));
    assert!(err.contains("CLUSTER_AUTHORIZATION_FAILED"), "{err}");
    let wrong = [ADMIN[0], ADMIN[1], ("STREAMHOUSE_SASL_PASSWORD", "nope")];
    let err = one_line_error(&s.cli_with(&["acl", "list"], "", &wrong));
    assert!(err.contains("SASL_AUTHENTICATION_FAILED"), "{err}");
    let err = one_line_error(&s.cli(&["acl", "list"]));
    assert!(err.contains("closed the connection"), "{err}");
    let add_invalid = [
        "acl",
        "add",
        "--group",
        "g",
        "--principal",
        "User:alice",
        "--operation",
        "write",
    ];
    let err = one_line_error(&s.cli_with(&add_invalid, "", &ADMIN));
    assert!(
        err.contains("INVALID_REQUEST") && err.contains("GROUP"),
        "{err}"
    );

    let err = one_line_error(&s.cli_with(&["acl", "remove"], "", &ADMIN));
    assert!(err.contains("refusing to remove every ACL"), "{err}");
    let out = as_admin(&s, &["acl", "remove", "--principal", "User:alice"]);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("removed ")).count(),
        2,
        "{out}"
    );
    let out = as_admin(&s, &["acl", "remove", "--principal", "User:alice"]);
    assert!(out.contains("no ACL matched"), "{out}");
    assert_eq!(listed(&s).len(), 1);

    // The refusal is logged with the principal, and no password ever is.
    let log = s.log();
    assert!(
        log.contains("authorization failed") && log.contains("User:alice"),
        "{log}"
    );
    for secret in ["admin-pw-1", "alice-pw-2"] {
        assert!(!log.contains(secret), "{secret} in the server log");
    }
}
