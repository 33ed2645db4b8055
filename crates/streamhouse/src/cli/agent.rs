//! `streamhouse agent list`: the agents registered in the cluster and the leases they hold,
//! from the HTTP admin API.

use clap::{Args, Subcommand};
use serde_json::Value;

use super::http::Http;
use super::output::print_rows;
use super::{Endpoints, Format};

/// Agent administration.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// List agents: id, Kafka address, leases held, last heartbeat.
    List(ListArgs),
    /// List partition leases: owner agent, epoch, expiry.
    Leases(ListArgs),
}

/// Flags of the listing commands.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Runs an agent command.
pub async fn run(cmd: AgentCommand, endpoints: &Endpoints) -> anyhow::Result<()> {
    let http = Http::new(endpoints)?;
    let (path, format) = match cmd {
        AgentCommand::List(a) => ("/api/v1/agents", a.format),
        AgentCommand::Leases(a) => ("/api/v1/leases", a.format),
    };
    let rows: Vec<Value> = http.get(path).await?;
    print_rows(&rows, format)
}
