//! `funnel serve`: ledger, ingest, projector and HTTP in one process.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use funnel_engine::Live;
use funnel_ledger::{Ledger, LedgerError};
use funnel_projector::{ingest, live, Metrics, Settings};
use funnel_query::{Role, Tokens};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::nats_auth::{NatsAuth, NatsUser};
use crate::{nats_child, query_service, CliError};

/// Opens the ledger of a data dir, re-checking its tail; a damaged ledger is [`CliError::Damaged`].
pub fn open_ledger(data_dir: &Path) -> Result<Ledger, CliError> {
    open_ledger_with(data_dir, Ledger::open)
}

/// Opens with `open` (checked or not), translating failures for people.
pub fn open_ledger_with(data_dir: &Path, open: fn(&Path) -> Result<Ledger, LedgerError>) -> Result<Ledger, CliError> {
    std::fs::create_dir_all(data_dir).map_err(|e| CliError::Failed(format!("create {}: {e}", data_dir.display())))?;
    match open(&data_dir.join("ledger")) {
        Ok(ledger) => Ok(ledger),
        Err(LedgerError::NeedsMigration(_)) => Err(CliError::Failed(format!(
            "the ledger in {dir} is format 1, which this version only migrates: run \
             `funnel migrate --data-dir {dir}` (it re-chains every entry under format 2, records the \
             old head hash in the new chain and keeps the old store as ledger.v1)",
            dir = data_dir.display()
        ))),
        Err(e @ LedgerError::Damaged { .. }) => Err(CliError::Damaged(format!(
            "LEDGER DAMAGED in {}: {e}. Refusing to serve wrong numbers. Restore from an export \
             (`funnel import`) or rebuild the data dir from what JetStream still retains.",
            data_dir.display()
        ))),
        Err(LedgerError::Store(e)) if e.to_string().contains("lock") || e.to_string().contains("WouldBlock") => {
            Err(CliError::Failed(format!(
                "the ledger in {} is in use by a running `funnel serve`; ask it over HTTP instead ({e})",
                data_dir.display()
            )))
        }
        Err(e) => Err(CliError::Failed(format!("open ledger in {}: {e}", data_dir.display()))),
    }
}

/// Who may use the HTTP API.
#[derive(clap::Args, Clone)]
pub struct Access {
    /// Bearer tokens with roles (`funnel token` adds them); every route but `/` and `/health`
    /// then needs one. Without it `serve` listens on loopback only.
    #[arg(long, env = "FUNNEL_TOKENS")]
    tokens: Option<PathBuf>,
    /// Serve a non-loopback address without tokens: anyone who reaches it reads every lead.
    #[arg(long)]
    insecure_no_auth: bool,
}

/// The tokens `serve` requires, or `None` to answer everyone: only on loopback, or when told
/// `--insecure-no-auth` (logged loudly).
fn http_access(http: &str, access: &Access) -> Result<Option<Tokens>, CliError> {
    if let Some(path) = &access.tokens {
        let tokens = Tokens::load(path).map_err(|e| CliError::Failed(format!("token file: {e}")))?;
        info!(tokens = tokens.len(), file = %path.display(), "HTTP API requires bearer tokens");
        return Ok(Some(tokens));
    }
    let addrs: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(http)
        .map_err(|e| CliError::Failed(format!("--http {http}: {e}")))?
        .collect();
    if !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()) {
        return Ok(None);
    }
    if access.insecure_no_auth {
        warn!(
            http,
            "INSECURE: serving {http} with no tokens (--insecure-no-auth): anyone who reaches it reads every lead"
        );
        return Ok(None);
    }
    Err(CliError::Failed(format!(
        "refusing to serve {http} without a token file: it is not a loopback address, so anyone on the network \
         could read every lead. Give --tokens FILE (add tokens with `funnel token`), listen on 127.0.0.1, \
         or pass --insecure-no-auth"
    )))
}

/// `funnel token`: a new random token for `role`, its hash appended to the file; the token is
/// printed once, on stdout.
pub fn add_token(file: &Path, role: Role, name: &str) -> Result<(), CliError> {
    let token =
        funnel_query::access::add_token(file, role, name).map_err(|e| CliError::Failed(format!("token file {e}")))?;
    println!("{token}");
    Ok(())
}

pub async fn serve(
    nats_url: Option<String>,
    auth: &NatsAuth,
    data_dir: &Path,
    http: &str,
    access: &Access,
) -> Result<(), CliError> {
    let tokens = http_access(http, access)?;
    let mut ledger = open_ledger(data_dir)?;
    let engine_dir = data_dir.join("engine");
    // A first start: no engine store yet. (A store without a usable checkpoint, from a build
    // that stopped part way or an older format, is rebuilt by `Live::open` in the service.)
    if !engine_dir.exists() {
        // The child opens the ledger itself.
        drop(ledger);
        tokio::task::block_in_place(|| build_engine_in_a_child(data_dir))?;
        ledger = open_ledger(data_dir)?;
    }
    let child = match nats_url {
        Some(_) => None,
        None => Some(nats_child::start(data_dir).await?),
    };
    let url = nats_url
        .or_else(|| child.as_ref().map(|c| c.url.clone()))
        .unwrap_or_default();
    let client = auth.connect(&url, data_dir, NatsUser::Service, "funnel-serve").await?;
    let js = async_nats::jetstream::new(client.clone());
    let settings = Settings::from_env().map_err(CliError::Failed)?;
    // Streams exist before /health answers, so producers never publish into the void.
    ingest::ensure_streams(&js, &settings)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let metrics = Arc::new(Metrics::default());
    let live = Arc::new(
        tokio::task::block_in_place(|| releasing_freed_heap(|| Live::open(ledger.clone(), &engine_dir)))
            .map_err(|e| CliError::Failed(format!("engine: {e}")))?,
    );
    let listener = std::net::TcpListener::bind(http)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| CliError::Failed(format!("listen on {http}: {e}")))?;
    let listener_addr = listener
        .local_addr()
        .map_or_else(|_| http.to_owned(), |a| a.to_string());
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (head_tx, head_rx) = watch::channel(ledger.head().seq);

    let mut ingest = tokio::spawn(ingest::run(
        js,
        ledger.clone(),
        settings.clone(),
        metrics.clone(),
        head_tx,
        shutdown.clone(),
    ));
    let mut projector = tokio::spawn(live::run(live.clone(), head_rx, shutdown.clone()));
    let mut state = funnel_query::AppState::new(live.clone(), metrics);
    if let Some(tokens) = tokens {
        state = state.with_tokens(tokens);
    }
    let app = funnel_query::router(state.clone());
    let mut http_shutdown = shutdown.clone();
    let queries = query_runtime()?;
    let mut nats_queries = queries.spawn(query_service::run(client, state, shutdown.clone()));
    let mut server = queries.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_shutdown.changed().await;
            })
            .await
    });
    let bound = listener_addr;
    // The first line on stdout names the bound address (so `--http 127.0.0.1:0` is usable).
    println!(
        "funnel: serving http://{bound}/ (ledger head {}, NATS {url})",
        ledger.head().seq
    );

    let outcome = tokio::select! {
        _ = stop_signal() => Ok(()),
        r = &mut ingest => Err(format!("ingest stopped: {}", describe(r))),
        r = &mut projector => Err(format!("projector stopped: {}", describe(r))),
        r = &mut server => Err(format!("http stopped: {r:?}")),
        r = &mut nats_queries => Err(format!("NATS query service stopped: {}", describe(r))),
    };
    info!("shutting down");
    shutdown_tx.send_replace(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let _ = projector.await;
        let _ = ingest.await;
        let _ = server.await;
        let _ = nats_queries.await;
    })
    .await;
    queries.shutdown_background();
    if let Some(child) = child {
        child.stop().await;
    }
    outcome.map_err(|e| {
        error!(%e);
        CliError::Failed(e)
    })
}

/// The runtime that serves HTTP and computes answers, apart from ingest's, so that a question
/// never queues behind ingest's decoding on the same workers. How much of the cores questions
/// take while ingest has a backlog is the query service's budget (`funnel_query::share`), not
/// the threads' priority.
fn query_runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("query")
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("query runtime: {e}")))
}

fn describe<E: std::fmt::Display>(r: Result<Result<(), E>, tokio::task::JoinError>) -> String {
    match r {
        Ok(Ok(())) => "finished".into(),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    }
}

async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Builds the engine from the whole log and checkpoints it, in a child process (`funnel
/// build-engine`), before the service opens the ledger. A bulk load's temporaries (hundreds of
/// megabytes at 1 M leads) leave pages partly used among the ones a restore then fills: built
/// in the service itself and restored there, a 1 M-lead service held 288–299 MB where a
/// restarted one held 266–275. Built in a child, they go when it exits, and the service
/// restores from the checkpoint as on any restart. The service has opened the ledger before
/// (so that a damaged one is reported as such) and let go of it.
fn build_engine_in_a_child(data_dir: &Path) -> Result<(), CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError::Failed(format!("find the funnel binary: {e}")))?;
    tracing::info!("no engine checkpoint yet: building the engine from the log in a child process");
    let status = std::process::Command::new(exe)
        .arg("build-engine")
        .arg("--data-dir")
        .arg(data_dir)
        .status()
        .map_err(|e| CliError::Failed(format!("start the engine build: {e}")))?;
    if !status.success() {
        return Err(CliError::Failed(format!(
            "building the engine from the log failed ({status})"
        )));
    }
    Ok(())
}

/// `funnel build-engine`: see [`build_engine_in_a_child`].
pub fn build_engine(data_dir: &Path) -> Result<(), CliError> {
    let ledger = open_ledger(data_dir)?;
    releasing_freed_heap(|| Live::checkpoint_the_log(ledger, &data_dir.join("engine")))
        .map_err(|e| CliError::Failed(format!("engine: {e}")))
}

extern "C" {
    // mimalloc's own (linked in by the `mimalloc` crate, the global allocator).
    fn mi_option_get(option: i32) -> std::ffi::c_long;
    fn mi_option_set(option: i32, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (mimalloc 3.x, as libmimalloc-sys
/// 0.1.49 bundles it; its Rust bindings lack the name): milliseconds before freed memory is
/// returned to the system, 1,000 by default.
const PURGE_DELAY: i32 = 15;

/// Runs `open` (the engine's restore or bulk load) with freed memory returned to the system
/// at once, then returns whatever is still held: the allocator otherwise keeps freed pages for
/// a while to reuse them, and a start frees hundreds of megabytes of temporaries (decoded
/// events, every lead's index entries before they are packed) between the allocations that
/// stay. Measured at 1 M leads restarted (`target/release/examples/queries DIR 1 none`, which
/// does the same): 383 B of RSS a lead with mimalloc's default delay, 368 B with this.
fn releasing_freed_heap<T>(open: impl FnOnce() -> T) -> T {
    // SAFETY: options are plain integers mimalloc reads on its next purge; no live
    // allocation is touched.
    let delay = unsafe { mi_option_get(PURGE_DELAY) };
    unsafe { mi_option_set(PURGE_DELAY, 0) };
    let opened = open();
    funnel_engine::heap::return_free_memory();
    // SAFETY: as above.
    unsafe { mi_option_set(PURGE_DELAY, delay) };
    opened
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_is_the_one_named() {
        // mimalloc's documented default for `purge_delay` (no other option defaults to 1,000):
        // fails if a mimalloc upgrade moves the option's index.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reads an option; no memory is touched.
            assert_eq!(unsafe { super::mi_option_get(super::PURGE_DELAY) }, 1_000);
        }
    }
}
