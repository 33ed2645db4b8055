//! The HTTP side of the operator commands: JSON requests to the server's admin API, with
//! failures rewritten into one readable line.

use anyhow::{anyhow, bail, Context};
use reqwest::{Certificate, Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::Endpoints;

/// A client of the admin API rooted at `--http`.
pub struct Http {
    client: reqwest::Client,
    base: String,
    /// HTTP Basic user name and password, sent with every request.
    credentials: Option<(String, String)>,
}

impl Http {
    /// A client for the admin API at `endpoints.http`, with the shared deadline.
    pub fn new(endpoints: &Endpoints) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(endpoints.timeout)
            .connect_timeout(endpoints.timeout);
        if let Some(ca) = &endpoints.http_ca {
            let pem = std::fs::read(ca)
                .with_context(|| format!("reading the HTTP API's CA {}", ca.display()))?;
            let certs = Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|certs| !certs.is_empty())
                .ok_or_else(|| anyhow!("{} holds no PEM certificate", ca.display()))?;
            builder = builder.tls_certs_only(certs);
        }
        let client = builder.build()?;
        let base = endpoints.http.trim_end_matches('/').to_string();
        let credentials = endpoints.security.http_credentials()?;
        if credentials.is_some() {
            refuse_clear_text_password(&base)?;
        }
        Ok(Self {
            client,
            base,
            credentials,
        })
    }

    /// `GET path`, decoded from JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(Method::GET, path, |r| r).await
    }

    /// `method path` with a JSON body, answer decoded from JSON (`null` when empty).
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        self.send(method, path, |r| r.json(body)).await
    }

    /// Sends the request; a group change refused by an agent that does not coordinate the
    /// group is sent once more, to the coordinator the refusal names.
    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> anyhow::Result<T> {
        let mut base = self.base.clone();
        let body = loop {
            let mut request = self.client.request(method.clone(), format!("{base}{path}"));
            if let Some((user, password)) = &self.credentials {
                request = request.basic_auth(user, Some(password));
            }
            let response = build(request)
                .send()
                .await
                .map_err(|e| anyhow!("cannot reach the HTTP API at {base}: {}", root_cause(&e)))?;
            match checked_body(&method, path, response).await? {
                Answer::Body(body) => break body,
                Answer::Coordinator(at) if base == self.base => {
                    base = rebased(&self.base, &at)?;
                    if self.credentials.is_some() {
                        refuse_clear_text_password(&base)?;
                    }
                }
                Answer::Coordinator(at) => {
                    bail!("{method} {path}: the group's coordinator moved again (to {at}); retry")
                }
            }
        };
        let json = if body.trim().is_empty() {
            "null"
        } else {
            &body
        };
        serde_json::from_str(json)
            .map_err(|e| anyhow!("{method} {path}: unexpected answer from the HTTP API: {e}"))
    }
}

/// An error when a password would travel in clear: plain `http://` is for a server on this
/// machine (loopback) only.
fn refuse_clear_text_password(base: &str) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(base).with_context(|| format!("--http {base} is not a URL"))?;
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if url.scheme() == "http" && !loopback {
        bail!(
            "refusing to send the password for the HTTP API in clear to {base}: use https:// \
             (--http-ca to trust its certificate)"
        );
    }
    Ok(())
}

/// What the API answered, short of an error.
#[derive(Debug, PartialEq)]
enum Answer {
    /// The body of a 2xx answer.
    Body(String),
    /// `not_coordinator`: the group's coordinator (`host:port`), where to send the request.
    Coordinator(String),
}

/// The body of a 2xx answer, the coordinator a `not_coordinator` refusal names, or an error
/// carrying the server's message.
async fn checked_body(method: &Method, path: &str, response: Response) -> anyhow::Result<Answer> {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        return Ok(Answer::Body(body));
    }
    let document = serde_json::from_str::<Value>(&body).ok();
    let coordinator = document.as_ref().and_then(|v| {
        let refused = v.get("code").and_then(Value::as_str) == Some("not_coordinator");
        refused.then(|| v.get("coordinator").and_then(Value::as_str))?
    });
    if let Some(at) = coordinator {
        return Ok(Answer::Coordinator(at.to_string()));
    }
    let message = document
        .and_then(|v| error_message(&v))
        .unwrap_or_else(|| body.trim().to_string());
    if status == reqwest::StatusCode::NOT_FOUND && message.is_empty() {
        bail!("{method} {path}: not found (does this server have the HTTP admin API?)");
    }
    bail!("{method} {path}: {status}: {message}")
}

/// `base` (`scheme://host:port`) with the host and port of `addr` (`host:port`).
fn rebased(base: &str, addr: &str) -> anyhow::Result<String> {
    let mut url =
        reqwest::Url::parse(base).with_context(|| format!("--http {base} is not a URL"))?;
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
        .ok_or_else(|| anyhow!("the coordinator's HTTP address {addr:?} is not host:port"))?;
    url.set_host(Some(host))
        .with_context(|| format!("the coordinator's HTTP host {host:?}"))?;
    url.set_port(Some(port))
        .map_err(|()| anyhow!("{base} cannot take a port"))?;
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// The message of an error document (`{"error": "..."}` or `{"error": {"message": "..."}}`).
fn error_message(v: &Value) -> Option<String> {
    let e = v.get("error").or_else(|| v.get("message"))?;
    match e {
        Value::String(s) => Some(s.clone()),
        other => other
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| Some(other.to_string())),
    }
}

/// reqwest nests the useful part ("Connection refused") several sources deep.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Percent-encodes one path segment (topic and group names may hold `.`, `_`, `-` only in
/// Kafka, but a mistyped name must not change the path).
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_documents_yield_their_message() {
        let v: Value = serde_json::json!({"error": "unknown topic 'x'"});
        assert_eq!(error_message(&v).unwrap(), "unknown topic 'x'");
        let v: Value = serde_json::json!({"error": {"code": 3, "message": "nope"}});
        assert_eq!(error_message(&v).unwrap(), "nope");
        assert_eq!(error_message(&serde_json::json!({"x": 1})), None);
    }

    #[test]
    fn passwords_go_in_clear_only_to_loopback() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:8080",
            "https://agent.example:8080",
        ] {
            assert!(refuse_clear_text_password(ok).is_ok(), "{ok}");
        }
        let err = refuse_clear_text_password("http://agent.example:8080").unwrap_err();
        assert!(err.to_string().contains("use https://"), "{err}");
        assert!(refuse_clear_text_password("http://10.1.2.3").is_err());
    }

    #[tokio::test]
    async fn a_not_coordinator_refusal_names_where_to_resend() {
        let refusal = |body: &str| {
            let answer = http::Response::builder().status(503).body(body.to_string());
            Response::from(answer.unwrap())
        };
        let doc = r#"{"error":"group 'g' is coordinated by agent 1","code":"not_coordinator","coordinator":"10.0.0.2:8081"}"#;
        let answer = checked_body(&Method::POST, "/x", refusal(doc))
            .await
            .unwrap();
        assert_eq!(answer, Answer::Coordinator("10.0.0.2:8081".into()));
        let unknown = r#"{"error":"no live agent","code":"not_coordinator"}"#;
        let err = checked_body(&Method::POST, "/x", refusal(unknown)).await;
        assert!(err.unwrap_err().to_string().contains("no live agent"));
        assert_eq!(
            rebased("https://a.example:8080", "10.0.0.2:8081").unwrap(),
            "https://10.0.0.2:8081"
        );
        assert_eq!(
            rebased("http://127.0.0.1:1", "[::1]:2").unwrap(),
            "http://[::1]:2"
        );
        assert!(rebased("http://127.0.0.1:1", "nowhere").is_err());
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(segment("orders.v1_a-b"), "orders.v1_a-b");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
