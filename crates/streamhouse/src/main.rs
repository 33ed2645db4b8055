//! `streamhouse`: the StreamHouse agent and its operator commands.

mod bench;
mod cli;
mod client;
mod config;
mod security;
mod serve;

use clap::{Parser, Subcommand};

/// StreamHouse: Kafka-compatible event streaming on object storage.
#[derive(Debug, Parser)]
#[command(name = "streamhouse", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    endpoints: cli::Endpoints,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an agent: Kafka listener, HTTP admin API, storage.
    Serve(Box<config::ServeArgs>),
    /// Create, list, describe, delete and alter topics.
    #[command(subcommand)]
    Topic(cli::topic::TopicCommand),
    /// Write records read from stdin or a file, one per line.
    Produce(cli::produce::ProduceArgs),
    /// Print records of a topic.
    Consume(cli::consume::ConsumeArgs),
    /// Consumer groups: list, describe, lag, reset offsets (HTTP API).
    #[command(subcommand)]
    Group(cli::group::GroupCommand),
    /// Access control lists: add, list, remove (Kafka ACL APIs; needs a super user).
    Acl(cli::acl::AclArgs),
    /// Agents and partition leases (HTTP API).
    #[command(subcommand)]
    Agent(cli::agent::AgentCommand),
    /// SASL/SCRAM users: add, list, remove (Kafka protocol).
    #[command(subcommand)]
    User(cli::user::UserCommand),
    /// Inspect segment objects (read-only, no server needed).
    #[command(subcommand)]
    Segment(cli::segment::SegmentCommand),
    /// Load generator over the Kafka protocol.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> std::process::ExitCode {
    tune_malloc();
    // Our rustls configurations all name aws-lc-rs; making it the process default too keeps
    // any library that asks rustls for the default (object_store's HTTP client) on the same
    // provider, whatever rustls features the dependency graph turns on.
    let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    // Operator commands print their own one-line errors; library logs would only add noise.
    let default_log = match cli.command {
        Command::Serve(_) => "info",
        _ => {
            restore_sigpipe();
            "off"
        }
    };
    init_logging(default_log);
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole cause chain: operators read this, not a backtrace.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Tunes glibc's malloc for the agent, each setting unless its `MALLOC_*` variable says
/// otherwise:
/// - one arena for every thread (`M_ARENA_MAX`). By default glibc grows an arena per thread (up
///   to 8 per core); request buffers then leave freed memory stranded in several arenas, and
///   under a produce flood RSS grew ~1.4x faster than the memory budget
///   (`queued.max.request.bytes`). With one arena it grows 1:1, so RSS stays at the budget plus
///   a fixed overhead (`tests/e2e/test_hostile.py`, docs/reliability.md). Small allocations
///   still take glibc's per-thread cache, without the arena lock. jemalloc and mimalloc were
///   measured too and held more.
/// - buffers up to 32 MiB from the heap (`M_MMAP_THRESHOLD`) and up to 128 MiB of free heap
///   top kept (`M_TRIM_THRESHOLD`). Fetch responses and produce frames are megabytes each and
///   live for one request; glibc's defaults served them from fresh mappings, or trimmed the heap
///   after each, so every byte fetched was first page-faulted and zeroed by the kernel: 35,000
///   page faults per 200 MB consumed, a third of the agent's CPU in Fetch (BENCHMARKS.md).
///   Peak memory is unchanged; what a burst freed stays reserved for the next one.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (variable, option, value) in [
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 1),
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 32 << 20),
        ("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, 128 << 20),
    ] {
        if std::env::var_os(variable).is_none() {
            // SAFETY: mallopt is thread-safe and only changes allocator tuning.
            unsafe {
                libc::mallopt(option, value);
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let endpoints = &cli.endpoints;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Topic(cmd) => cli::topic::run(cmd, endpoints).await,
            Command::Produce(args) => cli::produce::run(args, endpoints).await,
            Command::Consume(args) => cli::consume::run(args, endpoints).await,
            Command::Group(cmd) => cli::group::run(cmd, endpoints).await,
            Command::Acl(args) => cli::acl::run(args, endpoints).await,
            Command::Agent(cmd) => cli::agent::run(cmd, endpoints).await,
            Command::User(cmd) => cli::user::run(cmd, endpoints).await,
            Command::Segment(cmd) => cli::segment::run(cmd).await,
            Command::Bench(cmd) => bench::run(cmd, endpoints).await,
        }
    })
}

fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("STREAMHOUSE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Operator commands end quietly when their output's reader goes away (`... | head`), as
/// Unix tools do, instead of panicking on a failed print. Rust ignores SIGPIPE by default,
/// which the server keeps: a client hanging up must not end it.
fn restore_sigpipe() {
    // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
