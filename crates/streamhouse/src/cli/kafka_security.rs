//! How the operator commands reach a Kafka listener that requires TLS and/or SASL: the global
//! flags, and [`KafkaSecurityArgs::resolve`], the one place they become the TLS configuration
//! and SASL login of the binary's one Kafka client (`crate::client`).

use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{bail, Context};
use clap::Args;
use streamhouse_kafka::security::{client_config, Mechanism};

pub use crate::client::{KafkaSecurity, Login};

/// How to reach a Kafka listener that requires TLS and/or SASL (flags of every command).
#[derive(Clone, Default, Args)]
pub struct KafkaSecurityArgs {
    /// Connect to the Kafka listener with TLS, trusting the CA certificate(s) of this PEM file.
    #[arg(long, global = true, env = "STREAMHOUSE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Log in with SASL: SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN (PLAIN only over TLS).
    #[arg(long, global = true, env = "STREAMHOUSE_SASL_MECHANISM")]
    pub sasl_mechanism: Option<String>,
    /// SASL user name.
    #[arg(long, global = true, env = "STREAMHOUSE_SASL_USERNAME")]
    pub sasl_username: Option<String>,
    /// SASL password; prefer the environment variable or --sasl-password-stdin, as other local
    /// users can see flags.
    #[arg(
        long,
        global = true,
        env = "STREAMHOUSE_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub sasl_password: Option<String>,
    /// Read the SASL password from stdin (one trailing newline is dropped); wins over
    /// --sasl-password.
    #[arg(long, global = true)]
    pub sasl_password_stdin: bool,
    /// The password once read from stdin: a command that connects twice cannot read it again.
    #[arg(skip)]
    stdin_password: OnceLock<String>,
}

impl std::fmt::Debug for KafkaSecurityArgs {
    // The password stays out of any debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSecurityArgs")
            .field("tls_ca", &self.tls_ca)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .finish_non_exhaustive()
    }
}

impl KafkaSecurityArgs {
    /// The TLS configuration and SASL login the flags ask for; an error when they are
    /// incomplete, or would send a PLAIN password in clear.
    pub fn resolve(&self) -> anyhow::Result<KafkaSecurity> {
        let tls = match &self.tls_ca {
            Some(ca) => Some(client_config(ca)?),
            None => None,
        };
        let login = match &self.sasl_mechanism {
            Some(name) => Some(self.login(name.parse()?, tls.is_some())?),
            // Without a mechanism a user name alone logs nobody in, as with Kafka clients.
            None => None,
        };
        Ok(KafkaSecurity { tls, login })
    }

    fn login(&self, mechanism: Mechanism, tls: bool) -> anyhow::Result<Login> {
        if mechanism == Mechanism::Plain && !tls {
            bail!("SASL PLAIN sends the password in clear: use it over TLS (--tls-ca)");
        }
        let Some(username) = self.sasl_username.clone() else {
            bail!(
                "SASL {} needs a user name (--sasl-username)",
                mechanism.name()
            );
        };
        let password = self.password(&format!("SASL {}", mechanism.name()))?;
        Ok(Login {
            mechanism,
            username,
            password,
        })
    }

    fn stdin_password(&self) -> anyhow::Result<String> {
        if let Some(password) = self.stdin_password.get() {
            return Ok(password.clone());
        }
        let password = read_password_stdin()?;
        Ok(self.stdin_password.get_or_init(|| password).clone())
    }

    /// The HTTP Basic credentials of the admin API: the SASL user name and password, sent
    /// whenever both are given (the HTTP listener checks them against the same SCRAM
    /// credentials as the Kafka listener; no mechanism is needed). `None` without a user name.
    pub fn http_credentials(&self) -> anyhow::Result<Option<(String, String)>> {
        let Some(username) = self.sasl_username.clone() else {
            return Ok(None);
        };
        let password = self.password(&format!("the HTTP API login as '{username}'"))?;
        Ok(Some((username, password)))
    }

    /// The password from stdin or the flag; an error naming `login` when there is none.
    fn password(&self, login: &str) -> anyhow::Result<String> {
        if self.sasl_password_stdin {
            return self.stdin_password();
        }
        match &self.sasl_password {
            Some(p) => Ok(p.clone()),
            None => bail!(
                "{login} needs a password (--sasl-password-stdin, STREAMHOUSE_SASL_PASSWORD or \
                 --sasl-password)"
            ),
        }
    }

    /// An error when --sasl-password-stdin would take the stdin that `what` is read from.
    pub fn leave_stdin_to(&self, what: &str) -> anyhow::Result<()> {
        if self.sasl_password_stdin {
            bail!(
                "--sasl-password-stdin and {what} both read stdin: pass the SASL password in \
                 STREAMHOUSE_SASL_PASSWORD instead"
            );
        }
        Ok(())
    }
}

/// A password read from stdin, without its trailing newline.
pub fn read_password_stdin() -> anyhow::Result<String> {
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("reading the password from stdin")?;
    let trimmed = password
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p));
    Ok(trimmed.unwrap_or(&password).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(mechanism: &str, tls_ca: Option<&str>) -> KafkaSecurityArgs {
        KafkaSecurityArgs {
            tls_ca: tls_ca.map(PathBuf::from),
            sasl_mechanism: Some(mechanism.into()),
            sasl_username: Some("alice".into()),
            sasl_password: Some("secret".into()),
            ..KafkaSecurityArgs::default()
        }
    }

    fn error(args: &KafkaSecurityArgs) -> String {
        format!("{:#}", args.resolve().expect_err("an error"))
    }

    #[test]
    fn logins_need_a_known_mechanism_a_name_and_a_password() {
        let login = args("scram_sha_512", None)
            .resolve()
            .unwrap()
            .login
            .unwrap();
        assert_eq!(login.mechanism, Mechanism::ScramSha512);
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("alice", "secret")
        );

        assert!(error(&args("MD5", None)).contains("unknown SASL mechanism"));
        let nameless = KafkaSecurityArgs {
            sasl_username: None,
            ..args("SCRAM-SHA-256", None)
        };
        assert!(error(&nameless).contains("needs a user name"));
        let passwordless = KafkaSecurityArgs {
            sasl_password: None,
            ..args("SCRAM-SHA-256", None)
        };
        assert!(error(&passwordless).contains("needs a password"));
    }

    #[test]
    fn plain_is_refused_without_tls() {
        let line = error(&args("PLAIN", None));
        assert!(
            line.contains("SASL PLAIN sends the password in clear"),
            "{line}"
        );
        // With TLS asked for, the CA file is what fails here.
        let line = error(&args("PLAIN", Some("/nonexistent/ca.pem")));
        assert!(line.contains("cannot read TLS certificates"), "{line}");
    }

    #[test]
    fn no_mechanism_means_no_login_and_the_password_stays_out_of_debug() {
        let anonymous = KafkaSecurityArgs {
            sasl_mechanism: None,
            ..args("PLAIN", None)
        };
        let security = anonymous.resolve().unwrap();
        assert!(security.login.is_none() && security.tls.is_none());
        assert!(!format!("{anonymous:?}").contains("secret"));
    }
}
