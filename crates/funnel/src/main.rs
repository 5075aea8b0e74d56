//! `funnel`: one binary for the service (`serve`), producers (`emit`, `simulate`) and auditors
//! (`verify`, `export`, `import`, `replay`, `report`). Thin glue over the library crates; the only place
//! that installs a tracing subscriber and maps failures to exit codes.
//!
//! Exit codes: 0 ok · 1 failure (message on stderr) · 2 usage · 3 damaged ledger or failed verification.

/// mimalloc rather than glibc malloc, large zeroed blocks mapped directly: see ARCHITECTURE.md, "Allocator".
#[global_allocator]
static GLOBAL: funnel_engine::heap::Allocator = funnel_engine::heap::Allocator;

mod human;
mod live_report;
mod nats_auth;
mod nats_child;
mod offline;
mod progress;
mod publish;
mod query_service;
mod recover;
mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit code for a damaged ledger or a failed verification.
const EXIT_DAMAGED: i32 = 3;

#[derive(Parser)]
#[command(
    name = "funnel",
    version,
    about = "The lead-funnel ledger: record every lead event once, replay any report."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct DataDir {
    /// Where the ledger (and, with no --nats-url, the local nats-server's store) lives.
    #[arg(long, default_value = ".data", env = "FUNNEL_DATA_DIR")]
    data_dir: PathBuf,
}

#[derive(clap::Args, Clone)]
struct Connect {
    /// NATS server to publish to. Default: the one `funnel serve` started for --data-dir.
    #[arg(long, env = "FUNNEL_NATS_URL")]
    nats_url: Option<String>,
    #[command(flatten)]
    auth: nats_auth::NatsAuth,
    #[command(flatten)]
    data: DataDir,
}

// Parsed once per process: the size of its largest variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run ingest, projector and the HTTP query service (starting a local nats-server with no --nats-url).
    Serve {
        /// Connect to this NATS server instead of starting one.
        #[arg(long, env = "FUNNEL_NATS_URL")]
        nats_url: Option<String>,
        #[command(flatten)]
        auth: nats_auth::NatsAuth,
        #[command(flatten)]
        data: DataDir,
        /// Address for the HTTP API and dashboard.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: String,
        #[command(flatten)]
        access: serve::Access,
    },
    /// Internal: build the engine from the log and checkpoint it, then exit (`serve` runs this
    /// in a child process on a first start, when the data dir has no engine store yet).
    #[command(hide = true)]
    BuildEngine {
        #[command(flatten)]
        data: DataDir,
    },
    /// Add a bearer token for the HTTP API to a token file: prints the token once; the file
    /// keeps only its SHA-256.
    Token {
        /// The token file (created if absent).
        #[arg(long, env = "FUNNEL_TOKENS")]
        tokens: PathBuf,
        /// viewer (aggregate reports), auditor (adds timelines, explain, verify) or admin (adds /metrics).
        #[arg(long, value_parser = funnel_query::Role::parse_arg)]
        role: funnel_query::Role,
        /// Who holds it (shown in refusals and logs).
        #[arg(long)]
        name: String,
    },
    /// Publish events from NDJSON (a file or stdin); invalid lines are reported and not sent.
    Emit {
        /// NDJSON file; stdin when absent.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Publish as bincode instead of JSON (Rust producer encoding).
        #[arg(long)]
        bincode: bool,
        #[command(flatten)]
        connect: Connect,
        /// Machine-readable summary.
        #[arg(long)]
        json: bool,
    },
    /// Publish a seeded, realistic synthetic funnel (touches, scores, handoffs, rejections, deals, spend).
    Simulate {
        #[arg(long, default_value_t = 2_000)]
        leads: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Business time of the first lead (RFC 3339 or YYYY-MM-DD).
        #[arg(long, default_value = "2026-06-01")]
        start: String,
        /// Days over which leads arrive.
        #[arg(long, default_value_t = 120)]
        days: u32,
        /// Write the events as NDJSON to this file instead of publishing them.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        connect: Connect,
        #[arg(long)]
        json: bool,
    },
    /// Walk the whole hash chain of a ledger (offline); names the first bad seq.
    Verify {
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        json: bool,
    },
    /// Write the ledger as NDJSON (seqs, recorded_at and hashes preserved).
    Export {
        #[command(flatten)]
        data: DataDir,
        /// Output file; stdout when absent.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Export only entries up to this seq.
        #[arg(long)]
        at_seq: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Load an NDJSON export into an empty ledger, checking every link.
    Import {
        #[command(flatten)]
        data: DataDir,
        /// Input file; stdin when absent.
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a damaged ledger: keep it aside, salvage its verified prefix, ingest again what
    /// JetStream still holds after it, and say exactly what was salvaged, re-ingested and lost.
    Recover {
        #[command(flatten)]
        connect: Connect,
        #[arg(long)]
        json: bool,
    },
    /// Upgrade a format-1 ledger to format 2 (schemas/chain.md), keeping the old store as ledger.v1.
    Migrate {
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        json: bool,
    },
    /// Compute a report offline from a data directory or an export file, at any log prefix.
    Replay(offline::ReplayArgs),
    /// Revenue credited per channel or campaign under one or every attribution model
    /// (offline from --data-dir or --export; live with --url).
    Attribution(offline::AuditArgs),
    /// One lead's deals explained to the cent: every touch, role, weight and credit per model.
    Explain {
        /// The lead.
        lead: String,
        #[command(flatten)]
        audit: offline::AuditArgs,
    },
    /// Ask a running service for a report.
    Report {
        #[command(flatten)]
        report: offline::ReportArgs,
        /// The service's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8080", env = "FUNNEL_URL")]
        url: String,
        /// Ask over HTTP (`--url`) or over NATS request/reply (`funnel.query.<report>`, as the
        /// auditor user of `--data-dir`'s server unless credentials are given).
        #[arg(long, default_value = "http", value_parser = ["http", "nats"])]
        via: String,
        #[command(flatten)]
        connect: Connect,
    },
}

/// A failure of one command, with the context a person needs.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Damaged(String),
}

fn main() {
    no_transparent_huge_pages();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FUNNEL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. }) {
        quiet_on_closed_pipe();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("funnel: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(run(cli.command));
    if let Err(e) = result {
        eprintln!("funnel: {e}");
        std::process::exit(match e {
            CliError::Damaged(_) => EXIT_DAMAGED,
            CliError::Failed(_) => 1,
        });
    }
}

/// mimalloc backs its arenas with transparent huge pages where the kernel allows them (here
/// `madvise`), and the kernel zeroes a whole 2 MiB page at the first touch of any byte of it:
/// a 1 M-event replay spent 55% of its time in `clear_page_erms`, 0.8–5.2 s of system time
/// from run to run, and a restart held 75 B a lead more (ARCHITECTURE.md, "Allocator").
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: sets one flag of this process's memory map; no pointer is passed.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// `funnel replay explain … | head` ends quietly when `head` has read enough, as Unix tools
/// do: the default action of SIGPIPE (Rust ignores it, which turns the closed pipe into a panic
/// in `println!`). Not for `serve`, whose sockets must outlive a client that hangs up.
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal before any thread is started;
    // no handler runs in this process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve {
            nats_url,
            auth,
            data,
            http,
            access,
        } => serve::serve(nats_url, &auth, &data.data_dir, &http, &access).await,
        Command::BuildEngine { data } => serve::build_engine(&data.data_dir),
        Command::Token { tokens, role, name } => serve::add_token(&tokens, role, &name),
        Command::Emit {
            file,
            bincode,
            connect,
            json,
        } => publish::emit(file, bincode, &connect, json).await,
        Command::Simulate {
            leads,
            seed,
            start,
            days,
            out,
            connect,
            json,
        } => {
            let start =
                funnel_core::time::parse_bound(&start).map_err(|e| CliError::Failed(format!("--start: {e}")))?;
            let events = funnel_core::simulate::funnel(funnel_core::simulate::Plan {
                leads,
                seed,
                start,
                days,
            });
            match out {
                Some(path) => publish::write_ndjson(&path, &events, json),
                None => publish::publish(&connect, &events, false, json).await,
            }
        }
        Command::Verify { data, json } => offline::verify(&data.data_dir, json),
        Command::Export {
            data,
            out,
            at_seq,
            json,
        } => offline::export(&data.data_dir, out, at_seq, json),
        Command::Import { data, file, json } => offline::import(&data.data_dir, file, json),
        Command::Migrate { data, json } => offline::migrate(&data.data_dir, json),
        Command::Recover { connect, json } => recover::recover(&connect, json).await,
        Command::Replay(args) => offline::replay(args),
        Command::Attribution(audit) => audit.run("attribution", None).await,
        Command::Explain { lead, audit } => audit.run("explain", Some(lead)).await,
        Command::Report {
            report,
            url,
            via,
            connect,
        } => match via.as_str() {
            "nats" => live_report::report_nats(&connect, &report).await,
            _ => live_report::report(&url, &report).await,
        },
    }
}
