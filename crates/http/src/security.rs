//! Security of the HTTP listener: who is asking (HTTP Basic against the agent's SCRAM
//! credentials), whether the request was meant for this server (the Host allow-list against DNS
//! rebinding), the headers that keep the console out of other sites' frames and scripts, and
//! the audit log of every change.
//!
//! Authorization itself is the agent's: each handler asks the [`Caller`]'s
//! [`Access`](streamhouse_kafka::security::Access), the same ACL decision the Kafka handlers
//! make for the principal `User:<name>`.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header::{AUTHORIZATION, HOST, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use streamhouse_kafka::security::{principal, Access, SaslAuthenticator};
use streamhouse_metadata::{AclOperation, AclResourceType};
use tracing::{debug, info};

use crate::error::{HttpError, HttpResult};
use crate::AppState;

/// The challenge of a 401: HTTP Basic, UTF-8 user names and passwords (RFC 7617).
const BASIC_CHALLENGE: &str = "Basic realm=\"streamhouse\", charset=\"UTF-8\"";

/// The challenge sent to the console's own requests (marked `X-Requested-With`): a browser
/// shows its native login dialog for a `Basic` challenge, which would bypass the console's form
/// and leave credentials cached by the browser, sent with every later request to this origin.
const CONSOLE_CHALLENGE: &str = "StreamHouse-Basic realm=\"streamhouse\"";

/// The page may load its own script and stylesheet and call its own API; nothing inline,
/// nothing from elsewhere, never inside another site's frame.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// How the HTTP listener is secured; [`HttpOptions::default`] is the open listener of a
/// development agent (no authentication, any Host, console on).
#[derive(Clone)]
pub struct HttpOptions {
    /// Checks HTTP Basic credentials against the agent's SCRAM credentials. `None`: requests
    /// are not authenticated and act as `User:ANONYMOUS` (which ACLs, when enforced, refuse
    /// unless granted).
    pub authenticator: Option<Arc<SaslAuthenticator>>,
    /// Require authentication for `/health`, `/ready` and `/metrics` too (open otherwise, so
    /// probes and Prometheus need no credentials).
    pub protect_probes: bool,
    /// Serve the web console at `/` and `/ui/...`.
    pub console: bool,
    /// The Host header values requests must carry.
    pub allowed_hosts: AllowedHosts,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            authenticator: None,
            protect_probes: false,
            console: true,
            allowed_hosts: AllowedHosts::any(),
        }
    }
}

/// The Host header values a request may carry: a browser tricked by DNS rebinding sends the
/// attacker's host name, which is not among them.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    /// Lowercase host names and IP addresses, without port.
    names: HashSet<String>,
    /// Accept every IP address literal: a listener on the unspecified address is reached at
    /// addresses it cannot list, and an IP literal cannot be rebound (the browser's origin is
    /// then that address itself, not a name an attacker controls).
    any_ip: bool,
    /// Accept every Host (the check is off).
    any: bool,
}

impl AllowedHosts {
    /// Every Host accepted: the check is off.
    pub fn any() -> Self {
        Self {
            names: HashSet::new(),
            any_ip: true,
            any: true,
        }
    }

    /// The default of a listener bound to `listen` and advertised as `advertised_host`:
    /// `localhost`, the loopback addresses, the listener's address (any IP literal when it is
    /// the unspecified address), the advertised host, and `extra` (`*` turns the check off).
    pub fn for_listener(listen: SocketAddr, advertised_host: &str, extra: &[String]) -> Self {
        if extra.iter().any(|h| h.trim() == "*") {
            return Self::any();
        }
        let mut names: HashSet<String> = ["localhost", "127.0.0.1", "::1"]
            .into_iter()
            .map(str::to_string)
            .collect();
        names.insert(listen.ip().to_string());
        names.insert(normalize(advertised_host));
        names.extend(extra.iter().map(|h| normalize(h)));
        Self {
            names,
            any_ip: listen.ip().is_unspecified(),
            any: false,
        }
    }

    /// Whether a request whose Host header (or URI authority) is `host` may be served.
    fn admits(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let name = normalize(strip_port(host));
        self.names.contains(&name) || (self.any_ip && name.parse::<IpAddr>().is_ok())
    }
}

/// `host[:port]` and `[v6]:port` without the port.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        // More than one ':' is a bare IPv6 address, which has no port.
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// Lowercase, without brackets and the trailing dot of a fully qualified name.
fn normalize(host: &str) -> String {
    host.trim()
        .trim_matches(['[', ']'])
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Refuses requests for another host (421 Misdirected Request): DNS rebinding protection.
/// Requests without a Host (HTTP/1.0 tools) cannot come from a browser and pass.
pub(crate) async fn check_host(
    State(s): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| header_text(request.headers(), &HOST).map(str::to_string));
    match host {
        Some(host) if !s.options.allowed_hosts.admits(&host) => {
            tracing::debug!(host, "request for a host not in the allow-list refused");
            HttpError::MisdirectedHost(host).into_response()
        }
        _ => next.run(request).await,
    }
}

/// Adds the security headers to every response (the API's too: a JSON error page is a page).
/// No CORS headers are ever sent, so other origins' scripts cannot read any answer.
pub(crate) async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ];
    for (name, value) in set {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}

/// The client's address, as axum's connect info of both listeners (plain TCP and TLS).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub SocketAddr);

/// The agent serves HTTP only through the connection guard (over plain TCP or TLS).
impl<L> Connected<IncomingStream<'_, crate::guard::Guarded<L>>> for ClientAddr
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    L::Io: Unpin,
{
    fn connect_info(stream: IncomingStream<'_, crate::guard::Guarded<L>>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// Who is asking: the authenticated user (`None`: anonymous), the client's address, and what
/// the agent's ACLs let it do. Put in the request by [`authenticate`].
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    user: Option<String>,
    peer: Option<SocketAddr>,
    access: Access,
}

impl Caller {
    /// The principal, `User:<name>` or `User:ANONYMOUS`.
    pub(crate) fn principal(&self) -> String {
        principal(self.user.as_deref())
    }

    /// Whether the caller may `op` on `kind`/`name`, without logging a refusal: for filtering
    /// listings, where leaving out what the caller may not see is the normal case.
    pub(crate) fn sees(&self, op: AclOperation, kind: AclResourceType, name: &str) -> bool {
        self.access.shows(op, kind, name)
    }

    /// Refuses with 403 unless the caller may `op` on `kind`/`name`.
    pub(crate) fn require(
        &self,
        op: AclOperation,
        kind: AclResourceType,
        name: &str,
    ) -> HttpResult<()> {
        if self.access.allows(op, kind, name) {
            Ok(())
        } else {
            Err(self.refused(op, kind, name))
        }
    }

    /// Refuses with 403 unless the caller may `op` on the cluster.
    pub(crate) fn require_cluster(&self, op: AclOperation) -> HttpResult<()> {
        if self.access.on_cluster(op) {
            Ok(())
        } else {
            let cluster = streamhouse_metadata::CLUSTER_NAME;
            Err(self.refused(op, AclResourceType::Cluster, cluster))
        }
    }

    /// Refuses with 403 unless the caller may create the topic `name` (CREATE on the cluster
    /// or on the topic, as CreateTopics).
    pub(crate) fn require_create_topic(&self, name: &str) -> HttpResult<()> {
        if self.access.creates_topic(name) {
            Ok(())
        } else {
            Err(self.refused(AclOperation::Create, AclResourceType::Topic, name))
        }
    }

    fn refused(&self, op: AclOperation, kind: AclResourceType, name: &str) -> HttpError {
        HttpError::Forbidden(format!(
            "{} is not authorized to {op} {kind} '{name}'",
            self.principal()
        ))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, HttpError> {
        // Every route that takes a Caller sits behind `authenticate`; a route added without it
        // fails loudly here rather than running unauthorized.
        parts.extensions.get::<Self>().cloned().ok_or_else(|| {
            HttpError::Internal("route is not behind the authentication layer".into())
        })
    }
}

/// Authenticates the request (when the listener requires it) and attaches its [`Caller`];
/// anonymous or wrongly authenticated requests get 401 with a `WWW-Authenticate` challenge.
pub(crate) async fn authenticate(
    State(s): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|c| c.0 .0);
    let user = match &s.options.authenticator {
        None => None,
        Some(auth) => match basic_login(auth, request.headers()).await {
            Ok(user) => Some(user),
            Err(failure) => {
                let path = request.uri().path();
                match &failure {
                    // A browser's first request comes without credentials: not worth a line.
                    LoginFailure::Missing(why) => {
                        debug!(?peer, path, "HTTP request refused: {why}")
                    }
                    LoginFailure::Invalid { user } => {
                        info!(?peer, path, user, "HTTP authentication failed")
                    }
                }
                return unauthenticated(request.headers(), &failure);
            }
        },
    };
    let access = s.broker.access(user.as_deref(), peer);
    request
        .extensions_mut()
        .insert(Caller { user, peer, access });
    next.run(request).await
}

/// Why a request is not authenticated.
enum LoginFailure {
    /// No usable credentials: none, another scheme, or a malformed header.
    Missing(&'static str),
    /// Credentials of an unknown user or with a wrong password (not told apart, as on the
    /// Kafka listener).
    Invalid {
        /// The user name the client gave.
        user: String,
    },
}

/// The user of a valid `Authorization: Basic` header, or why there is none.
async fn basic_login(
    auth: &Arc<SaslAuthenticator>,
    headers: &HeaderMap,
) -> Result<String, LoginFailure> {
    use LoginFailure::Missing;
    let value =
        header_text(headers, &AUTHORIZATION).ok_or(Missing("no credentials (use HTTP Basic)"))?;
    let (scheme, encoded) = value
        .split_once(' ')
        .ok_or(Missing("malformed Authorization header"))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Missing("unsupported authorization scheme (use HTTP Basic)"));
    }
    let decoded = BASE64
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(Missing("malformed Basic credentials"))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or(Missing("malformed Basic credentials"))?;
    let (user, password) = (user.to_string(), password.to_string());
    let auth = auth.clone();
    let checked = user.clone();
    // A first login derives the salted password (thousands of HMACs): off the async workers.
    let valid = tokio::task::spawn_blocking(move || auth.verify_password(&checked, &password))
        .await
        .unwrap_or(false);
    if valid {
        Ok(user)
    } else {
        Err(LoginFailure::Invalid { user })
    }
}

/// 401 with the challenge the client can act on.
fn unauthenticated(headers: &HeaderMap, failure: &LoginFailure) -> Response {
    let console = header_text(headers, &HeaderName::from_static("x-requested-with")).is_some();
    let challenge = if console {
        CONSOLE_CHALLENGE
    } else {
        BASIC_CHALLENGE
    };
    let message = match failure {
        // One message for an unknown user and a wrong password, as on the Kafka listener.
        LoginFailure::Invalid { .. } => {
            "Authentication failed: invalid user name or password".to_string()
        }
        LoginFailure::Missing(why) => format!("authentication required: {why}"),
    };
    let mut response = HttpError::Unauthenticated(message).into_response();
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

/// Logs every state-changing request with its principal, source address and outcome, whatever
/// the outcome (a refused change is as telling as a successful one).
pub(crate) async fn audit(request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let caller = request.extensions().get::<Caller>().cloned();
    let response = next.run(request).await;
    let (principal, peer) =
        caller.map_or_else(|| (principal(None), None), |c| (c.principal(), c.peer));
    info!(
        principal,
        peer = peer.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        %method,
        path,
        status = response.status().as_u16(),
        "HTTP change"
    );
    response
}

fn header_text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_checked_without_port_and_case() {
        let listen: SocketAddr = "10.0.0.5:8080".parse().unwrap();
        let hosts =
            AllowedHosts::for_listener(listen, "Broker-1.internal", &["ops.example".into()]);
        for ok in [
            "localhost:8080",
            "LOCALHOST",
            "127.0.0.1:8080",
            "[::1]:8080",
            "10.0.0.5:8080",
            "broker-1.internal:8080",
            "broker-1.internal.",
            "ops.example",
        ] {
            assert!(hosts.admits(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "10.0.0.6:8080",
            "localhost.evil.example",
        ] {
            assert!(!hosts.admits(bad), "{bad}");
        }
        let any_ip = AllowedHosts::for_listener("0.0.0.0:8080".parse().unwrap(), "h", &[]);
        assert!(any_ip.admits("192.168.1.20:8080") && any_ip.admits("[fe80::1]:8080"));
        assert!(!any_ip.admits("evil.example"));
        assert!(AllowedHosts::for_listener(listen, "h", &["*".into()]).admits("evil.example"));
    }
}
