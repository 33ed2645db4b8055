//! `streamhouse user add|list|remove`: SASL/SCRAM users, over the Kafka protocol
//! (AlterUserScramCredentials and DescribeUserScramCredentials, as Kafka's `kafka-configs.sh`).
//!
//! As with Kafka's tools, the salted password `Hi(password, salt, iterations)` is computed here:
//! the password itself never leaves this process.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
};
use kafka_protocol::protocol::StrBytes;
use streamhouse_kafka::security::{
    random_salt, CredentialInfo, Mechanism, ScramAlgorithm, UserDescription, DEFAULT_ITERATIONS,
};

use super::kafka_security::read_password_stdin;
use super::output::print_rows;
use super::{Endpoints, Format};
use crate::client::{check, Connection};

/// User administration.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user or change its password.
    Add(AddArgs),
    /// List users with their mechanisms and iteration counts.
    List(ListArgs),
    /// Delete a user, or some of its mechanisms.
    Remove(RemoveArgs),
}

/// Flags of `user add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// User name.
    pub name: String,
    /// The password; prefer --password-stdin or the environment variable, as other local
    /// users can see flags.
    #[arg(
        long,
        env = "STREAMHOUSE_USER_PASSWORD",
        hide_env_values = true,
        conflicts_with = "password_stdin"
    )]
    pub password: Option<String>,
    /// Read the password from stdin (one trailing newline is dropped).
    #[arg(long)]
    pub password_stdin: bool,
    /// SCRAM-SHA-256 or SCRAM-SHA-512 (repeatable) [default: both].
    #[arg(long = "mechanism", value_parser = parse_scram)]
    pub mechanisms: Vec<ScramAlgorithm>,
    /// PBKDF2 iterations, 4096 to 16384.
    #[arg(long, default_value_t = DEFAULT_ITERATIONS)]
    pub iterations: u32,
}

/// Flags of `user list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Flags of `user remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// User name.
    pub name: String,
    /// Remove only this mechanism's credential (repeatable) [default: all of them].
    #[arg(long = "mechanism", value_parser = parse_scram)]
    pub mechanisms: Vec<ScramAlgorithm>,
}

/// Parses a SCRAM mechanism name.
fn parse_scram(s: &str) -> anyhow::Result<ScramAlgorithm> {
    match s.parse::<Mechanism>()?.scram() {
        Some(alg) => Ok(alg),
        None => {
            bail!("{s} logins use the SCRAM credentials: choose SCRAM-SHA-256 or SCRAM-SHA-512")
        }
    }
}

/// Runs a user command.
pub async fn run(cmd: UserCommand, endpoints: &Endpoints) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add(args) => add(args, endpoints).await,
        UserCommand::List(args) => {
            let conn = endpoints.admin_connection().await?;
            let users = describe(&conn).await?;
            print_users(&users, args.format)
        }
        UserCommand::Remove(args) => remove(args, endpoints).await,
    }
}

async fn add(args: AddArgs, endpoints: &Endpoints) -> anyhow::Result<()> {
    let password = match (args.password, args.password_stdin) {
        (Some(p), _) => p,
        (None, true) => {
            endpoints.security.leave_stdin_to("--password-stdin")?;
            read_password_stdin()?
        }
        (None, false) => bail!("a password is needed: --password-stdin or --password"),
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    let algorithms = or_all(args.mechanisms);
    let conn = endpoints.admin_connection().await?;
    // One request per mechanism: Kafka refuses two changes of one user in one request.
    for alg in &algorithms {
        let salt = random_salt();
        let salted = alg.salted_password(&password, &salt, args.iterations);
        let upsertion = ScramCredentialUpsertion::default()
            .with_name(StrBytes::from_string(args.name.clone()))
            .with_mechanism(alg.kafka_type())
            .with_iterations(i32::try_from(args.iterations).unwrap_or(i32::MAX))
            .with_salt(salt.into())
            .with_salted_password(salted.into());
        let request = AlterUserScramCredentialsRequest::default().with_upsertions(vec![upsertion]);
        alter(&conn, &args.name, *alg, request).await?;
    }
    let names: Vec<&str> = algorithms.iter().map(|a| a.mechanism_name()).collect();
    println!(
        "user '{}': {} set ({} iterations)",
        args.name,
        names.join(", "),
        args.iterations
    );
    Ok(())
}

async fn remove(args: RemoveArgs, endpoints: &Endpoints) -> anyhow::Result<()> {
    let conn = endpoints.admin_connection().await?;
    let algorithms = if args.mechanisms.is_empty() {
        // Every mechanism the user has: deleting one it lacks would be an error.
        let users = describe(&conn).await?;
        let Some(user) = users.into_iter().find(|u| u.name == args.name) else {
            bail!("unknown user '{}'", args.name);
        };
        user.credentials.iter().map(|c| c.mechanism).collect()
    } else {
        or_all(args.mechanisms)
    };
    for alg in &algorithms {
        let deletion = ScramCredentialDeletion::default()
            .with_name(StrBytes::from_string(args.name.clone()))
            .with_mechanism(alg.kafka_type());
        let request = AlterUserScramCredentialsRequest::default().with_deletions(vec![deletion]);
        alter(&conn, &args.name, *alg, request).await?;
    }
    let names: Vec<&str> = algorithms.iter().map(|a| a.mechanism_name()).collect();
    println!("user '{}': {} removed", args.name, names.join(", "));
    Ok(())
}

/// `algorithms` without repeats, or both when none were named.
fn or_all(algorithms: Vec<ScramAlgorithm>) -> Vec<ScramAlgorithm> {
    if algorithms.is_empty() {
        return ScramAlgorithm::ALL.to_vec();
    }
    ScramAlgorithm::ALL
        .into_iter()
        .filter(|a| algorithms.contains(a))
        .collect()
}

/// Sends one AlterUserScramCredentials request changing `name`; its error, if any, as one line.
async fn alter(
    conn: &Connection,
    name: &str,
    alg: ScramAlgorithm,
    request: AlterUserScramCredentialsRequest,
) -> anyhow::Result<()> {
    let r = conn.call_newest((0, 0), &request).await?;
    let Some(result) = r.results.iter().find(|u| u.user.as_str() == name) else {
        bail!("the server did not answer for user '{name}'");
    };
    check(result.error_code, result.error_message.as_ref())
        .with_context(|| format!("user '{name}' ({})", alg.mechanism_name()))
}

/// Every user with its credentials, ordered by name.
async fn describe(conn: &Connection) -> anyhow::Result<Vec<UserDescription>> {
    let request = DescribeUserScramCredentialsRequest::default().with_users(None::<Vec<UserName>>);
    let r = conn.call_newest((0, 0), &request).await?;
    check(r.error_code, r.error_message.as_ref()).context("listing users")?;
    let mut users: Vec<UserDescription> = r
        .results
        .iter()
        .filter(|u| u.error_code == 0)
        .map(|u| UserDescription {
            name: u.user.to_string(),
            credentials: u
                .credential_infos
                .iter()
                .filter_map(|c| {
                    Some(CredentialInfo {
                        mechanism: ScramAlgorithm::from_kafka_type(c.mechanism)?,
                        iterations: u32::try_from(c.iterations).ok()?,
                    })
                })
                .collect(),
        })
        .collect();
    users.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(users)
}

fn print_users(users: &[UserDescription], format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(users)?);
        return Ok(());
    }
    // One row per credential, so mechanisms and iterations line up.
    let rows: Vec<serde_json::Value> = users
        .iter()
        .flat_map(|u| {
            u.credentials.iter().map(|c| {
                serde_json::json!({
                    "name": u.name,
                    "mechanism": c.mechanism,
                    "iterations": c.iterations,
                })
            })
        })
        .collect();
    print_rows(&rows, format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanisms_parse_and_default_to_both() {
        assert_eq!(
            parse_scram("scram-sha-512").unwrap(),
            ScramAlgorithm::Sha512
        );
        assert!(parse_scram("PLAIN").is_err());
        assert!(parse_scram("MD5").is_err());
        assert_eq!(or_all(vec![]), ScramAlgorithm::ALL.to_vec());
        let repeated = vec![
            ScramAlgorithm::Sha512,
            ScramAlgorithm::Sha256,
            ScramAlgorithm::Sha512,
        ];
        assert_eq!(or_all(repeated), ScramAlgorithm::ALL);
    }
}
