//! Security settings of `streamhouse serve` (TLS, SASL and ACLs on the Kafka listener; TLS,
//! authentication, the Host allow-list and the console on the HTTP listener), resolved from
//! flags/env and the TOML file, and turned into the listeners' configurations and the agent's
//! [`AclConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use streamhouse_http::{AllowedHosts, HttpOptions};
use streamhouse_kafka::security::{
    server_config, tls_acceptor, AclConfig, ListenerSecurity, Mechanism, SaslAuthenticator,
};
use streamhouse_kafka::Broker;
use streamhouse_metadata::MetadataStore;
use tokio_rustls::rustls::ServerConfig;

/// How soon users created through another agent can log in here.
const CREDENTIAL_REFRESH: Duration = Duration::from_secs(10);
/// How soon ACL changes made through another agent apply here.
const ACL_REFRESH: Duration = Duration::from_secs(10);

/// A user created at start-up. `Debug` hides the password so settings can be logged.
#[derive(Clone)]
pub struct SaslUser {
    pub name: String,
    password: String,
}

impl std::fmt::Debug for SaslUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SaslUser({:?}, password: <redacted>)", self.name)
    }
}

impl std::str::FromStr for SaslUser {
    type Err = anyhow::Error;

    /// Parses `NAME:PASSWORD` (the password may contain ':').
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.split_once(':') {
            Some((name, password)) if !name.is_empty() && !password.is_empty() => Ok(Self {
                name: name.to_string(),
                password: password.to_string(),
            }),
            // The value may hold a password: never echo it.
            _ => bail!("a SASL user must be given as NAME:PASSWORD"),
        }
    }
}

/// Resolved security settings. The default is plaintext and unauthenticated.
#[derive(Debug, Clone, Default)]
pub struct SecuritySettings {
    /// PEM certificate chain and private key; TLS is on when both are set.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The same for HTTPS on the HTTP listener.
    pub http_tls: Option<(PathBuf, PathBuf)>,
    /// SASL mechanisms offered; SASL is required when not empty.
    pub sasl_mechanisms: Vec<Mechanism>,
    /// Users whose (hashed) credentials are created at start-up.
    pub sasl_users: Vec<SaslUser>,
    /// ACL enforcement and super users.
    pub acl: AclConfig,
    /// How the HTTP listener is secured.
    pub http: HttpSettings,
}

/// Settings of the HTTP listener besides its address and TLS.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Serve the HTTP listener at all.
    pub enabled: bool,
    /// Serve the web console.
    pub console: bool,
    /// Require HTTP Basic authentication (by default whenever SASL is on).
    pub auth: bool,
    /// Require it for `/health`, `/ready` and `/metrics` too.
    pub protect_probes: bool,
    /// Host header values accepted besides the defaults (`*`: any).
    pub allowed_hosts: Vec<String>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            console: true,
            auth: false,
            protect_probes: false,
            allowed_hosts: Vec::new(),
        }
    }
}

impl SecuritySettings {
    /// Checks and combines the raw settings. `sasl` alone enables the SCRAM mechanisms.
    pub fn resolve(
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        http_tls_cert: Option<PathBuf>,
        http_tls_key: Option<PathBuf>,
        sasl: bool,
        mechanisms: Option<Vec<String>>,
        sasl_users: Vec<SaslUser>,
    ) -> anyhow::Result<Self> {
        let tls = pair(tls_cert, tls_key, "--tls-cert and --tls-key")?;
        let http_tls = pair(
            http_tls_cert,
            http_tls_key,
            "--http-tls-cert and --http-tls-key",
        )?;
        let mut sasl_mechanisms = mechanisms
            .unwrap_or_default()
            .iter()
            .map(|m| m.trim().parse::<Mechanism>())
            .collect::<Result<Vec<_>, _>>()?;
        if sasl && sasl_mechanisms.is_empty() {
            sasl_mechanisms = vec![Mechanism::ScramSha256, Mechanism::ScramSha512];
        }
        if sasl_mechanisms.is_empty() && !sasl_users.is_empty() {
            bail!("--sasl-user needs SASL enabled (--sasl or --sasl-mechanisms)");
        }
        Ok(Self {
            tls,
            http_tls,
            sasl_mechanisms,
            sasl_users,
            acl: AclConfig::default(),
            http: HttpSettings::default(),
        })
    }

    /// Adds the HTTP listener's settings; authentication is on by default whenever SASL is, so
    /// the HTTP API is never an open door next to a locked Kafka listener.
    pub fn with_http(mut self, auth: Option<bool>, http: HttpSettings) -> Self {
        self.http = HttpSettings {
            auth: auth.unwrap_or(!self.sasl_mechanisms.is_empty()),
            ..http
        };
        self
    }

    /// The HTTP listener's security for an agent listening on `listen`, advertised as
    /// `advertised_host`. Authentication checks the Kafka listener's credential cache when
    /// there is one (`kafka_sasl`), else a cache of its own that user changes reach the same
    /// way. Basic credentials travel with every request, so without HTTPS the listener must be
    /// on a loopback address (for tests, or behind a local TLS proxy).
    pub async fn http_options(
        &self,
        listen: SocketAddr,
        advertised_host: &str,
        kafka_sasl: Option<&Arc<SaslAuthenticator>>,
        broker: &Broker,
    ) -> anyhow::Result<HttpOptions> {
        let http = &self.http;
        let authenticator = if http.auth {
            if self.http_tls.is_none() && !listen.ip().is_loopback() {
                bail!(
                    "HTTP authentication sends passwords with every request: serve HTTPS \
                     (--http-tls-cert, --http-tls-key) or bind --http-addr to a loopback \
                     address ({listen} is not)"
                );
            }
            let auth = match kafka_sasl {
                Some(auth) => auth.clone(),
                None => {
                    let auth = Arc::new(SaslAuthenticator::new(Vec::new()));
                    auth.load(broker.metadata().as_ref())
                        .await
                        .context("loading SASL credentials for the HTTP listener")?;
                    auth.clone()
                        .spawn_refresh(broker.metadata().clone(), CREDENTIAL_REFRESH);
                    auth
                }
            };
            broker.register_authenticator(&auth);
            Some(auth)
        } else {
            None
        };
        Ok(HttpOptions {
            authenticator,
            protect_probes: http.protect_probes,
            console: http.console,
            allowed_hosts: AllowedHosts::for_listener(listen, advertised_host, &http.allowed_hosts),
        })
    }

    /// The HTTP listener's TLS configuration, when HTTPS is on.
    pub fn http_tls_config(&self) -> anyhow::Result<Option<Arc<ServerConfig>>> {
        let Some((cert, key)) = &self.http_tls else {
            return Ok(None);
        };
        let config = server_config(cert, key).context("loading the HTTP listener's TLS")?;
        Ok(Some(config))
    }

    /// Adds the ACL settings: enforced when `enabled`, by default whenever SASL is on (without
    /// SASL every client is `User:ANONYMOUS`, so ACLs are then opt-in).
    pub fn with_acl(
        mut self,
        enabled: Option<bool>,
        super_users: Vec<String>,
    ) -> anyhow::Result<Self> {
        if let Some(bad) = super_users.iter().find(|p| {
            !p.split_once(':')
                .is_some_and(|(t, n)| !t.is_empty() && !n.is_empty())
        }) {
            bail!("super user '{bad}' is not a principal like User:admin");
        }
        self.acl = AclConfig {
            enabled: enabled.unwrap_or(!self.sasl_mechanisms.is_empty()),
            super_users,
            refresh: ACL_REFRESH,
        };
        Ok(self)
    }

    /// Loads the certificate, stores the start-up users' (hashed) credentials in `metadata`
    /// and loads every stored credential, refreshed in the background.
    pub async fn listener_security(
        &self,
        metadata: &Arc<dyn MetadataStore>,
    ) -> anyhow::Result<ListenerSecurity> {
        let tls = match &self.tls {
            Some((cert, key)) => Some(tls_acceptor(cert, key).context("loading TLS")?),
            None => None,
        };
        if self.sasl_mechanisms.is_empty() {
            return Ok(ListenerSecurity { tls, sasl: None });
        }
        let auth = Arc::new(SaslAuthenticator::new(self.sasl_mechanisms.clone()));
        for user in &self.sasl_users {
            auth.create_user(metadata.as_ref(), &user.name, &user.password)
                .await
                .with_context(|| format!("storing the credentials of SASL user {}", user.name))?;
        }
        auth.load(metadata.as_ref())
            .await
            .context("loading SASL credentials")?;
        auth.clone()
            .spawn_refresh(metadata.clone(), CREDENTIAL_REFRESH);
        Ok(ListenerSecurity {
            tls,
            sasl: Some(auth),
        })
    }
}

/// A certificate and its key, given together or not at all.
fn pair(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    flags: &str,
) -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        _ => bail!("TLS needs both {flags}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_checked() {
        let resolve = |tls_cert: Option<&str>, http_key: Option<&str>, sasl, mechanisms, users| {
            let path = |p: Option<&str>| p.map(PathBuf::from);
            SecuritySettings::resolve(
                path(tls_cert),
                None,
                None,
                path(http_key),
                sasl,
                mechanisms,
                users,
            )
        };
        let s = resolve(None, None, false, None, vec![]).unwrap();
        assert!(s.tls.is_none() && s.http_tls.is_none() && s.sasl_mechanisms.is_empty());
        assert!(resolve(Some("c"), None, false, None, vec![]).is_err());
        let half_https = resolve(None, Some("k"), false, None, vec![]).unwrap_err();
        assert!(
            half_https.to_string().contains("--http-tls-cert"),
            "{half_https}"
        );
        let user: SaslUser = "alice:pa:ss".parse().unwrap();
        assert!(!format!("{user:?}").contains("pa:ss"));
        assert!(resolve(None, None, false, None, vec![user.clone()]).is_err());
        let s = resolve(None, None, true, None, vec![user]).unwrap();
        assert_eq!(s.sasl_mechanisms.len(), 2);
        let bad = resolve(None, None, false, Some(vec!["GSSAPI".into()]), vec![]);
        assert!(bad.is_err());
        assert!("nopassword".parse::<SaslUser>().is_err());
    }

    #[test]
    fn acls_follow_sasl_unless_set() {
        let resolve =
            |sasl| SecuritySettings::resolve(None, None, None, None, sasl, None, vec![]).unwrap();
        let (plain, sasl) = (resolve(false), resolve(true));
        assert!(!plain.clone().with_acl(None, vec![]).unwrap().acl.enabled);
        assert!(plain.with_acl(Some(true), vec![]).unwrap().acl.enabled);
        let admin = vec!["User:admin".to_string()];
        let on = sasl.clone().with_acl(None, admin.clone()).unwrap();
        assert!(on.acl.enabled);
        assert_eq!(on.acl.super_users, admin);
        assert!(
            !sasl
                .clone()
                .with_acl(Some(false), vec![])
                .unwrap()
                .acl
                .enabled
        );
        assert!(sasl.with_acl(None, vec!["admin".into()]).is_err());
    }
}
