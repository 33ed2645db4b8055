//! A `streamhouse serve` child process on free ports, and running CLI commands against it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_streamhouse");

/// A running server, killed on drop.
pub struct Server {
    child: Child,
    /// Kafka listener `host:port`.
    pub kafka: String,
    /// HTTP base URL.
    pub http: String,
    /// Environment of CLI runs besides the endpoints (e.g. TLS and SASL settings).
    cli_env: Vec<(String, String)>,
    dir: TempDir,
}

/// How a test server is started.
#[derive(Default)]
pub struct Options<'a> {
    /// Extra `serve` flags.
    pub args: Vec<String>,
    /// Extra environment of `serve`.
    pub env: Vec<(&'a str, String)>,
    /// Extra environment of CLI runs.
    pub cli_env: Vec<(&'a str, String)>,
    /// The HTTP listener serves HTTPS (`cli_env` must let the CLI trust it).
    pub https: bool,
    /// The HTTP listener is turned off: wait for the Kafka listener instead.
    pub no_http: bool,
}

impl Server {
    /// Starts a server and waits until `/health` answers.
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    /// Starts a server requiring SASL_SSL (PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512; user `admin`,
    /// password `admin-pw`) and serving HTTPS, with a self-signed certificate written to
    /// `certs`. The CLI trusts it and logs in as admin over SCRAM-SHA-256 unless told otherwise.
    pub fn start_secure(certs: &Path) -> Self {
        let (cert, key) = certificate(certs);
        let args = [
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--http-tls-cert",
            &cert,
            "--http-tls-key",
            &key,
            "--sasl-mechanisms",
            "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
            "--super-user",
            "User:admin",
        ];
        Self::start_with(Options {
            args: args.iter().map(|a| a.to_string()).collect(),
            env: vec![("STREAMHOUSE_SASL_USERS", "admin:admin-pw".into())],
            cli_env: vec![
                ("STREAMHOUSE_TLS_CA", cert.clone()),
                ("STREAMHOUSE_HTTP_CA", cert),
                ("STREAMHOUSE_SASL_MECHANISM", "SCRAM-SHA-256".into()),
                ("STREAMHOUSE_SASL_USERNAME", "admin".into()),
                ("STREAMHOUSE_SASL_PASSWORD", "admin-pw".into()),
            ],
            https: true,
            ..Options::default()
        })
    }

    /// Starts a server with `options` and waits until it answers.
    pub fn start_with(options: Options) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (kafka, http) = (free_addr(), free_addr());
        let log = std::fs::File::create(dir.path().join("serve.log")).expect("log file");
        let child = Command::new(BIN)
            .args(["serve", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--kafka-addr", &kafka, "--http-addr", &http])
            .args(&options.args)
            .env("STREAMHOUSE_LOG", "warn")
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning streamhouse serve");
        let scheme = if options.https { "https" } else { "http" };
        let cli_env = options.cli_env.iter();
        let server = Self {
            child,
            kafka,
            http: format!("{scheme}://{http}"),
            cli_env: cli_env.map(|(k, v)| (k.to_string(), v.clone())).collect(),
            dir,
        };
        if options.no_http {
            server.wait_until(|| server.cli(&["topic", "list"]).status.success());
        } else if options.https {
            server.wait_until(|| server.cli(&["agent", "list"]).status.success());
        } else {
            server.wait_until(|| health_ok(&http));
        }
        server
    }

    fn wait_until(&self, ready: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if ready() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not become healthy; its log:\n{}", self.log());
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A scratch directory that lives as long as the server.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// Runs the CLI against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_input(args, "")
    }

    /// Runs the CLI against this server with `input` on stdin.
    pub fn cli_with_input(&self, args: &[&str], input: &str) -> Output {
        self.cli_with(args, input, &[])
    }

    /// Runs the CLI against this server with `input` on stdin and `env` besides the server's
    /// CLI environment (overriding it; an empty value leaves the variable unset).
    pub fn cli_with(&self, args: &[&str], input: &str, env: &[(&str, &str)]) -> Output {
        let mut all: Vec<(&str, &str)> = vec![
            ("STREAMHOUSE_BOOTSTRAP", self.kafka.as_str()),
            ("STREAMHOUSE_HTTP", self.http.as_str()),
        ];
        all.extend(self.cli_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        all.retain(|(k, _)| !env.iter().any(|(key, _)| key == k));
        all.extend(env.iter().filter(|(_, v)| !v.is_empty()));
        run(args, input, &all)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Runs the CLI and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        success(&self.cli(args), args)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with `args`, `input` on stdin and extra environment variables.
pub fn run(args: &[&str], input: &str, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("STREAMHOUSE_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning streamhouse");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("writing stdin");
    drop(stdin);
    child.wait_with_output().expect("waiting for streamhouse")
}

/// Asserts `out` succeeded; returns its stdout.
pub fn success(out: &Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "streamhouse {args:?} failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

/// Asserts `out` failed with exit code 1 and exactly one `error: ...` line on stderr; returns it.
pub fn one_line_error(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_string()
}

/// A self-signed certificate for 127.0.0.1 as `(cert.pem, key.pem)` paths under `dir`.
pub fn certificate(dir: &Path) -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let text = |p: &Path| p.to_str().unwrap().to_string();
    (text(&cert_path), text(&key_path))
}

/// A `127.0.0.1:port` nothing listens on (right now).
pub fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("local addr").to_string()
}

fn health_ok(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let request = format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut answer = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.0 200") | answer.starts_with("HTTP/1.1 200")
}
