//! `funnel-bench`: how close funnel-ledger gets to what the hardware and NATS allow, and how it
//! compares with what a team would otherwise build, measured side by side in one run.
//!
//! Run it with `scripts/bench.sh` (which installs PostgreSQL and DuckDB and builds in release).
//! Every figure is a median of `--reps` runs with min–max, and ratios are between figures of
//! the same run: this machine is shared and noisy.

/// The same allocator as the `funnel` binary, so the replay child measures what `funnel replay` does.
#[global_allocator]
static GLOBAL: funnel_engine::heap::Allocator = funnel_engine::heap::Allocator;

mod http;
mod peers;
mod servers;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use clap::Parser;
use funnel_core::attribution::Model;
use funnel_core::report::{self, By, Window};
use funnel_core::simulate::{funnel as simulate, Plan};
use funnel_core::time::parse_rfc3339;
use funnel_core::Event;
use funnel_engine::reports;
use funnel_ledger::{Candidate, Ledger};
use futures::StreamExt;
use servers::{disk_bytes, nats_server, rss, Scratch};

/// Business time the benchmark reports are computed as of (after all simulated events).
const AS_OF: &str = "2026-12-01T00:00:00Z";
/// Events per ingest batch, ledger append and PostgreSQL statement.
const BATCH: usize = 1_000;

#[derive(Parser)]
#[command(about = "Benchmarks against the limits and the peers; prints one markdown table.")]
struct Args {
    /// Events for the JetStream, sled, ingest, PostgreSQL and DuckDB runs.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Replay sizes in events, comma-separated (e.g. 1000000,10000000).
    #[arg(long, default_value = "1000000", value_delimiter = ',')]
    replay: Vec<usize>,
    /// Leads loaded for the query benchmark.
    #[arg(long, default_value_t = 1_000_000)]
    query_leads: u64,
    /// Seconds of load per endpoint.
    #[arg(long, default_value_t = 8)]
    query_seconds: u64,
    /// Concurrent query clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Events published before the service that ingests them while 32 clients ask funnel
    /// questions starts (0: skip that measurement): enough that the backlog lasts the 60 s of
    /// spans at 100 k events/s.
    #[arg(long, default_value_t = 6_000_000)]
    ingest_events: usize,
    /// Load only the query endpoints whose name contains one of these (e.g. `funnel,attribution`).
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Reuse this data dir (holding `ledger/` of `--query-leads` simulated leads, seed 3) for
    /// the query benchmark instead of building one: saves minutes while iterating. Built there
    /// (seed 3, `--query-leads` leads) if it holds no ledger yet.
    #[arg(long)]
    query_data: Option<PathBuf>,
    /// Internal: replay the ledger in this directory and print figures as JSON.
    #[arg(long, hide = true)]
    replay_child: Option<PathBuf>,
    /// Only build a data dir of `--query-leads` simulated leads (seed 3) here, for
    /// `--query-data` or the engine's `queries` example, and stop.
    #[arg(long)]
    build_data: Option<PathBuf>,
}

/// One line of the table.
struct Row {
    name: String,
    samples: Vec<f64>,
    unit: &'static str,
    note: String,
}

impl Row {
    fn new(name: impl Into<String>, samples: Vec<f64>, unit: &'static str) -> Row {
        Row {
            name: name.into(),
            samples,
            unit,
            note: String::new(),
        }
    }
    fn median(&self) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        if s.is_empty() {
            f64::NAN
        } else {
            s[s.len() / 2]
        }
    }
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v.abs() >= 100.0 {
        format!("{:.0}", v)
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

fn print_table(rows: &[Row]) {
    println!("| measure | median | min–max | unit | ratio / target |");
    println!("|---|---|---|---|---|");
    for r in rows {
        let (lo, hi) = r
            .samples
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
        println!(
            "| {} | {} | {}–{} | {} | {} |",
            r.name,
            fmt(r.median()),
            fmt(lo),
            fmt(hi),
            r.unit,
            r.note
        );
    }
}

fn events_for(n: usize, seed: u64) -> Vec<Event> {
    let start = parse_rfc3339("2026-06-01T00:00:00Z").unwrap_or_default();
    let mut events = simulate(Plan {
        leads: (n as u64 / 4).max(1),
        seed,
        start,
        days: 120,
    });
    events.truncate(n);
    events
}

fn leads_for(leads: u64, seed: u64) -> Vec<Event> {
    let start = parse_rfc3339("2026-06-01T00:00:00Z").unwrap_or_default();
    simulate(Plan {
        leads,
        seed,
        start,
        days: 120,
    })
}

fn tool(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn main() {
    // As the `funnel` binary does (see its `no_transparent_huge_pages`).
    #[cfg(target_os = "linux")]
    // SAFETY: sets one flag of this process's memory map; no pointer is passed.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    let args = Args::parse();
    if let Some(dir) = &args.replay_child {
        replay_child(dir);
        return;
    }
    if let Some(dir) = &args.build_data {
        let events = leads_for(args.query_leads, 3);
        let rate = build_ledger(&dir.join("ledger"), &events);
        eprintln!(
            "built {} events into {} at {rate:.0} events/s",
            events.len(),
            dir.display()
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let nats_bin = std::env::var("FUNNEL_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|_| tool(".tools/venv/bin/nats-server"));
    let funnel_bin = tool("target/release/funnel");
    assert!(
        funnel_bin.exists(),
        "build the service first: cargo build --release --bin funnel (scripts/bench.sh does)"
    );
    let events = events_for(args.events, 1);
    let n = events.len();
    eprintln!("bench: {n} events, {} reps", args.reps);
    let mut rows = Vec::new();

    // 1. Raw JetStream.
    let (mut publish, mut consume, mut consume_all) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.reps {
        let (p, c, a) = raw_jetstream(&nats_bin, &events).await;
        publish.push(p);
        consume.push(c);
        consume_all.push(a);
    }
    rows.push(Row::new(
        "1. JetStream publish, pipelined, Nats-Msg-Id",
        publish,
        "events/s",
    ));
    rows.push(Row::new("1. JetStream pull consume, ack each", consume, "events/s"));
    let consume_rate = rows[1].median();
    let mut row = Row::new(
        format!("1. JetStream pull consume, ack all per {BATCH}"),
        consume_all,
        "events/s",
    );
    row.note = format!("{:.2}× ack each", row.median() / consume_rate);
    rows.push(row);

    // 2. Raw sled.
    let (mut append, mut scan) = (Vec::new(), Vec::new());
    for _ in 0..args.reps {
        let (a, s) = raw_sled(&events);
        append.push(a);
        scan.push(s);
    }
    rows.push(Row::new(
        format!("2. sled: one key per event, batch {BATCH}, flush per batch"),
        append,
        "events/s",
    ));
    rows.push(Row::new("2. sled: scan + bincode decode", scan, "events/s"));

    // 3. Ours, end to end, draining the same kind of backlog as row 1.
    let (mut durable, mut projected) = (Vec::new(), Vec::new());
    for _ in 0..args.reps {
        let (d, p) = ingest_end_to_end(&nats_bin, &funnel_bin, &events).await;
        durable.push(d);
        projected.push(p);
    }
    let mut row = Row::new(
        "3. ingest end to end: backlog → ledger, durable, acked",
        durable,
        "events/s",
    );
    let ratio = row.median() / consume_rate;
    row.note = format!("{:.2}× raw consume (target ≥ 0.5)", ratio);
    let ingest_rate = row.median();
    rows.push(row);
    let mut row = Row::new("3. … and projected (the engine caught up)", projected, "events/s");
    row.note = format!("{:.2}× raw consume", row.median() / consume_rate);
    rows.push(row);

    // 4. Replay.
    let mut sizes = vec![n];
    sizes.extend(args.replay.iter().copied().filter(|s| *s != n));
    let mut replay_at_n = f64::NAN;
    let mut ledger_append_rate = f64::NAN;
    for size in sizes {
        let events = if size == n { events.clone() } else { events_for(size, 2) };
        let dir = Scratch::new(&format!("replay-{size}"));
        let ledger = dir.path().join("ledger");
        let append = build_ledger(&ledger, &events);
        if size == n {
            ledger_append_rate = append;
        }
        let count = events.len() as f64;
        // The generated events (5 GB at 10 M) are freed before the replays: held, they left
        // the replay child only memory the VM's host had taken back, which costs 4× more to
        // touch first (README, "Where replay's time goes at 10 M events"), a cost of this
        // bench, not of a replay.
        drop(events);
        funnel_engine::heap::return_free_memory();
        let bytes = disk_bytes(&ledger) as f64 / count;
        let verify: Vec<f64> = (0..args.reps)
            .map(|_| count / funnel_verify(&funnel_bin, dir.path()))
            .collect();
        let (mut fold, mut full, mut peak) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.reps {
            let figures = run_replay_child(&ledger);
            fold.push(figures["events"].as_f64().unwrap_or(0.0) / figures["fold_secs"].as_f64().unwrap_or(f64::NAN));
            full.push(figures["fold_secs"].as_f64().unwrap_or(0.0) + figures["reports_secs"].as_f64().unwrap_or(0.0));
            peak.push(figures["peak_rss_bytes"].as_f64().unwrap_or(0.0) / 1e6);
        }
        let label = if size >= 1_000_000 {
            format!("{:.0}M", size as f64 / 1e6)
        } else {
            format!("{}k", size / 1_000)
        };
        let mut fold_row = Row::new(format!("4. replay {label}: fold every projection"), fold, "events/s");
        fold_row.note = "target ≥ 2 M/s".into();
        rows.push(fold_row);
        let mut full_row = Row::new(
            format!("4. replay {label}: fold + all reports (attribution all models)"),
            full,
            "s",
        );
        if size >= 10_000_000 {
            full_row.note = "target < 20 s".into();
        }
        if size == n {
            replay_at_n = full_row.median();
        }
        rows.push(full_row);
        rows.push(Row::new(format!("4. replay {label}: peak RSS"), peak, "MB"));
        rows.push(Row::new(
            format!("4. ledger {label}: bytes on disk per event"),
            vec![bytes],
            "B",
        ));
        let mut verify_row = Row::new(format!("4. `funnel verify` {label}"), verify, "events/s");
        verify_row.note = "target ≥ 1 M/s".into();
        rows.push(verify_row);
        if size != n {
            rows.push(Row::new(
                format!("4. ledger {label}: direct append, flush per batch"),
                vec![append],
                "events/s",
            ));
        }
    }
    rows.push(Row::new(
        format!("4. ledger: direct append of the {n} events"),
        vec![ledger_append_rate],
        "events/s",
    ));

    // 6, 7. Peers, on the same events.
    let ours = peers::OurNumbers::of(&events, parse_rfc3339(AS_OF).unwrap_or_default());
    match peers::postgres(&events, args.reps, &ours) {
        Ok((insert, sql, equal)) => {
            let mut r = Row::new(
                "6. PostgreSQL INSERT … ON CONFLICT DO NOTHING, 1000 rows/statement",
                insert,
                "events/s",
            );
            let pg = r.median();
            r.note = format!(
                "ledger append {:.1}× (target ≥ 3×); ingest end to end {:.1}×",
                ledger_append_rate / pg,
                ingest_rate / pg
            );
            rows.push(r);
            let mut r = Row::new("6. PostgreSQL funnel counts in SQL", sql, "s");
            r.note = equal;
            rows.push(r);
        }
        Err(e) => rows.push(Row {
            name: "6. PostgreSQL".into(),
            samples: vec![],
            unit: "",
            note: format!("unavailable: {e}"),
        }),
    }
    match peers::duckdb(&events, args.reps, &ours) {
        Ok((secs, equal)) => {
            let mut r = Row::new("7. DuckDB on Parquet: funnel counts + first-touch + linear", secs, "s");
            r.note = format!(
                "{equal}; DuckDB time ÷ our full report replay = {:.2} (target > 1)",
                r.median() / replay_at_n
            );
            rows.push(r);
        }
        Err(e) => rows.push(Row {
            name: "7. DuckDB".into(),
            samples: vec![],
            unit: "",
            note: format!("unavailable: {e}"),
        }),
    }

    // 5. Query under load, and memory per lead.
    query_load(&nats_bin, &funnel_bin, &args, &mut rows).await;

    println!(
        "\nMachine: {} cores, {}; events of ~{} bytes as JSON.\n",
        num_cores(),
        mem_total(),
        avg_json_bytes(&events)
    );
    print_table(&rows);
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn mem_total() -> String {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb: u64 = info
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0)
}

fn avg_json_bytes(events: &[Event]) -> usize {
    let sample = events.iter().take(10_000);
    let (count, bytes) = sample.fold((0, 0), |(c, b), e| (c + 1, b + e.to_json().to_string().len()));
    bytes / count.max(1)
}

async fn raw_jetstream(nats_bin: &Path, events: &[Event]) -> (f64, f64, f64) {
    let server = nats_server(nats_bin);
    let client = async_nats::connect(format!("127.0.0.1:{}", server.port))
        .await
        .expect("connect");
    let js = jetstream::new(client);
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: "BENCH".into(),
            subjects: vec!["bench.>".into()],
            storage: jetstream::stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .expect("stream");
    let payloads: Vec<(String, bytes::Bytes)> = events
        .iter()
        .map(|e| (e.id.clone(), bytes::Bytes::from(e.to_json().to_string())))
        .collect();
    let started = Instant::now();
    let mut in_flight = std::collections::VecDeque::new();
    for (i, (id, payload)) in payloads.into_iter().enumerate() {
        if in_flight.len() == funnel_producer::PUBLISHES_IN_FLIGHT_MAX {
            let ack: jetstream::context::PublishAckFuture = in_flight.pop_front().expect("non-empty");
            ack.await.expect("publish ack");
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        in_flight.push_back(
            js.publish_with_headers(format!("bench.{}", i % 16), headers, payload)
                .await
                .expect("publish"),
        );
    }
    for ack in in_flight {
        ack.await.expect("publish ack");
    }
    let publish = events.len() as f64 / started.elapsed().as_secs_f64();
    let each = consume(&stream, jetstream::consumer::AckPolicy::Explicit, events.len()).await;
    let all = consume(&stream, jetstream::consumer::AckPolicy::All, events.len()).await;
    (publish, each, all)
}

/// Pulls `n` messages with a fresh durable consumer, events/s. With `AckPolicy::Explicit`
/// every message is acked; with `AckPolicy::All` only the last of every `BATCH` (and the very
/// last), which acknowledges all before it: the two strategies ingest can choose between.
async fn consume(stream: &jetstream::stream::Stream, policy: jetstream::consumer::AckPolicy, n: usize) -> f64 {
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some(format!("bench-{policy:?}").to_lowercase()),
            ack_policy: policy,
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let started = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(BATCH)
        .messages()
        .await
        .expect("pull");
    let mut seen = 0;
    while seen < n {
        let message = messages.next().await.expect("message").expect("message ok");
        seen += 1;
        if policy == jetstream::consumer::AckPolicy::Explicit || seen % BATCH == 0 || seen == n {
            message.ack().await.expect("ack");
        }
    }
    seen as f64 / started.elapsed().as_secs_f64()
}

fn raw_sled(events: &[Event]) -> (f64, f64) {
    let dir = Scratch::new("sled");
    let db = sled::open(dir.path()).expect("sled");
    let tree = db.open_tree("raw").expect("tree");
    let config = bincode::config::standard();
    let started = Instant::now();
    for (c, chunk) in events.chunks(BATCH).enumerate() {
        let mut batch = sled::Batch::default();
        for (i, e) in chunk.iter().enumerate() {
            let key = ((c * BATCH + i) as u64).to_be_bytes();
            batch.insert(&key, bincode::serde::encode_to_vec(e, config).expect("encode"));
        }
        tree.apply_batch(batch).expect("batch");
        db.flush().expect("flush");
    }
    let append = events.len() as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut decoded = 0usize;
    for item in tree.iter() {
        let (_, v) = item.expect("scan");
        let (e, _): (Event, usize) = bincode::serde::decode_from_slice(&v, config).expect("decode");
        decoded += usize::from(!e.id.is_empty());
    }
    (append, decoded as f64 / started.elapsed().as_secs_f64())
}

/// Drains a backlog the way row 1 does: the events are in the stream before the service
/// starts (a first start creates the streams), and the clock runs from the service's spawn
/// until `/health` shows every event in the ledger (durable and acked) and then projected.
/// Returns both rates, events/s.
async fn ingest_end_to_end(nats_bin: &Path, funnel_bin: &Path, events: &[Event]) -> (f64, f64) {
    let server = nats_server(nats_bin);
    let data = Scratch::new("ingest");
    let url = format!("nats://127.0.0.1:{}", server.port);
    drop(servers::funnel_serve(funnel_bin, &url, data.path()));
    let client = async_nats::connect(&url).await.expect("connect");
    let producer = funnel_producer::Producer::new(client, funnel_producer::Encoding::Json);
    producer.publish_all(events, |_| {}).await.expect("publish");
    let started = Instant::now();
    let service = servers::funnel_serve(funnel_bin, &url, data.path());
    let addr = format!("127.0.0.1:{}", service.port);
    let target = events.len() as u64;
    while health(&addr).await.0 < target {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ledger_secs = started.elapsed().as_secs_f64();
    while health(&addr).await.1 < target {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let projected_secs = started.elapsed().as_secs_f64();
    let n = events.len() as f64;
    (n / ledger_secs, n / projected_secs)
}

/// (ledger seq, projected seq) from /health.
async fn health(addr: &str) -> (u64, u64) {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return (0, 0);
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream
        .write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await;
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    (
        v["log"]["seq"].as_u64().unwrap_or(0),
        v["projected_seq"].as_u64().unwrap_or(0),
    )
}

/// Appends events straight into a ledger (no NATS), batch by batch with a flush each; events/s.
fn build_ledger(dir: &Path, events: &[Event]) -> f64 {
    let ledger = Ledger::open(dir).expect("ledger");
    let started = Instant::now();
    for (i, chunk) in events.chunks(BATCH).enumerate() {
        let candidates: Vec<Candidate> = chunk.iter().map(Candidate::direct).collect();
        ledger.append_batch(&candidates, i as i64).expect("append");
        ledger.flush().expect("flush");
    }
    events.len() as f64 / started.elapsed().as_secs_f64()
}

/// Runs `funnel verify` on a data dir; seconds. Panics unless the chain checks out.
fn funnel_verify(funnel_bin: &Path, data_dir: &Path) -> f64 {
    let started = Instant::now();
    let out = std::process::Command::new(funnel_bin)
        .args(["verify", "--json", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("funnel verify");
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "funnel verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    secs
}

fn run_replay_child(dir: &Path) -> serde_json::Value {
    let me = std::env::current_exe().expect("exe");
    let out = std::process::Command::new(me)
        .arg("--replay-child")
        .arg(dir)
        .output()
        .expect("replay child");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("replay child: {}", String::from_utf8_lossy(&out.stderr)))
}

/// In a child process, so its peak RSS is the replay's own.
fn replay_child(dir: &Path) {
    let ledger = Ledger::open(dir).expect("ledger");
    let started = Instant::now();
    let engine = funnel_engine::replay(&ledger, None, |_| {}).expect("replay");
    let fold = started.elapsed().as_secs_f64();
    let as_of = parse_rfc3339(AS_OF).unwrap_or_default();
    let started = Instant::now();
    let all = Window::default();
    let by_channel = report::FunnelQuery {
        by: Some(By::Channel),
        ..Default::default()
    };
    let sizes = [
        serde_json::to_vec(&funnel_engine::funnel::funnel(&engine, &by_channel, as_of)).map(|v| v.len()),
        serde_json::to_vec(&reports::velocity(&engine, all, as_of)).map(|v| v.len()),
        serde_json::to_vec(&reports::sla(&engine, all, as_of)).map(|v| v.len()),
        serde_json::to_vec(&reports::rejections(&engine, all, Some(By::Channel), as_of)).map(|v| v.len()),
        serde_json::to_vec(&reports::cost(&engine, all, By::Channel, as_of)).map(|v| v.len()),
        serde_json::to_vec(&reports::attribution(&engine, &Model::ALL, all, By::Channel, as_of)).map(|v| v.len()),
    ];
    let reports = started.elapsed().as_secs_f64();
    let (_, peak) = rss(std::process::id());
    let figures = serde_json::json!({
        "events": engine.head().seq,
        "fold_secs": fold,
        "reports_secs": reports,
        "report_bytes": sizes.iter().map(|s| *s.as_ref().unwrap_or(&0)).sum::<usize>(),
        "peak_rss_bytes": peak,
    });
    println!("{figures}");
}

async fn query_load(nats_bin: &Path, funnel_bin: &Path, args: &Args, rows: &mut Vec<Row>) {
    let scratch = Scratch::new("query");
    let data = match &args.query_data {
        // A copy: the ingest measurement below appends to it. Built there first if it holds
        // no ledger yet, so that later runs reuse it.
        Some(dir) => {
            if !dir.join("ledger").exists() {
                let events = leads_for(args.query_leads, 3);
                build_ledger(&dir.join("ledger"), &events);
            }
            let copied = std::process::Command::new("cp")
                .arg("-a")
                .arg(dir.join("."))
                .arg(scratch.path())
                .status();
            assert!(copied.is_ok_and(|s| s.success()), "copy {}", dir.display());
            scratch.path().to_owned()
        }
        None => {
            let events = leads_for(args.query_leads, 3);
            build_ledger(&scratch.path().join("ledger"), &events);
            scratch.path().to_owned()
        }
    };
    let server = nats_server(nats_bin);
    let url = format!("nats://127.0.0.1:{}", server.port);
    let had_engine = data.join("engine").exists();
    let started = Instant::now();
    let service = servers::funnel_serve(funnel_bin, &url, &data);
    let mut restart = Row::new(
        format!("5. start on {} leads: process start → HTTP answering", args.query_leads),
        vec![started.elapsed().as_secs_f64()],
        "s",
    );
    restart.note = if had_engine {
        "the reused data dir already held an engine store: a restart".into()
    } else {
        "a first start: the engine built from the log".into()
    };
    rows.push(restart);
    let (built_rss, _) = rss(service.pid());
    // The first start wrote a checkpoint; a restart (after SIGKILL) loads it.
    drop(service);
    let started = Instant::now();
    let service = servers::funnel_serve(funnel_bin, &url, &data);
    let mut restart = Row::new(
        format!(
            "5. restart on {} leads from the checkpoint → HTTP answering",
            args.query_leads
        ),
        vec![started.elapsed().as_secs_f64()],
        "s",
    );
    restart.note = "target ≤ 5 s (on 10 M events)".into();
    rows.push(restart);
    let addr = format!("127.0.0.1:{}", service.port);
    let (live_rss, _) = rss(service.pid());
    for (how, bytes) in [
        ("built from the log", built_rss),
        ("restarted from the checkpoint", live_rss),
    ] {
        let mut memory = Row::new(
            format!("5. live service RSS per lead, {how} ({} leads)", args.query_leads),
            vec![bytes as f64 / args.query_leads as f64],
            "B",
        );
        memory.note = "target ≤ 300".into();
        rows.push(memory);
    }
    // Distinct questions: every path has its own random window, breakdown or log prefix, and
    // the service keeps no memo, so each request is computed.
    let head = health(&addr).await.0;
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: u64| {
        rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n.max(1)
    };
    let start = parse_rfc3339("2026-06-01T00:00:00Z").unwrap_or_default();
    let day = 86_400_000_000i64;
    let mut window = || {
        let from = start + (next(150 * 24) as i64) * day / 24 - next(3_600_000_000) as i64;
        let to = from + (1 + next(120 * 24) as i64) * day / 24 + next(1_000_000) as i64;
        format!(
            "from={}&to={}",
            funnel_core::time::format_rfc3339(from),
            funnel_core::time::format_rfc3339(to)
        )
    };
    const DISTINCT: usize = 20_000;
    let bys = ["", "&by=channel", "&by=campaign", "&by=producer"];
    let funnel_paths: Vec<String> = (0..DISTINCT)
        .map(|i| format!("/v1/funnel?as_of={AS_OF}&{}{}", window(), bys[i % 4]))
        .collect();
    let attribution_paths: Vec<String> = (0..DISTINCT)
        .map(|_| format!("/v1/attribution?model=all&as_of={AS_OF}&{}", window()))
        .collect();
    let markov_paths: Vec<String> = (0..DISTINCT)
        .map(|_| format!("/v1/attribution?model=markov&as_of={AS_OF}&{}", window()))
        .collect();
    let at_seq_paths: Vec<String> = (0..DISTINCT)
        .map(|_| format!("/v1/funnel?as_of={AS_OF}&at_seq={}", head / 2 + next(head / 2)))
        .collect();
    let lead_paths: Vec<String> = (0..DISTINCT)
        .map(|_| format!("/v1/leads/sim3-L{:06}?as_of={AS_OF}", next(args.query_leads)))
        .collect();
    let funnel_paths_again = funnel_paths.clone();
    for (name, paths) in [
        ("/v1/funnel", funnel_paths),
        ("/v1/leads/{id}", lead_paths.clone()),
        ("/v1/attribution", attribution_paths),
        ("/v1/funnel?at_seq", at_seq_paths),
        ("/v1/leads/{id} after at_seq", lead_paths),
    ] {
        if !args.endpoints.is_empty() && !args.endpoints.iter().any(|e| name.contains(e.as_str())) {
            continue;
        }
        let (mut latencies, secs) = http::load(&addr, paths, args.clients, args.query_seconds).await;
        latencies.sort_unstable();
        let pick = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0) as f64
                / 1000.0
        };
        let mut p99 = Row::new(
            format!("5. {name}: p50 / p99 latency, {} clients", args.clients),
            vec![pick(0.5), pick(0.99)],
            "ms",
        );
        p99.note = format!(
            "p50 {:.2} ms, p99 {:.2} ms{}",
            pick(0.5),
            pick(0.99),
            match name {
                "/v1/funnel" => " (target p99 ≤ 5 ms)",
                "/v1/attribution" | "/v1/funnel?at_seq" => " (target p99 ≤ 50 ms)",
                _ => " (target p99 ≤ 10 ms)",
            }
        );
        rows.push(p99);
        rows.push(Row::new(
            format!("5. {name}: throughput"),
            vec![latencies.len() as f64 / secs],
            "requests/s",
        ));
    }
    if args.endpoints.iter().any(|e| e == "flood") {
        let replays: Vec<String> = (0..DISTINCT)
            .map(|_| format!("/v1/attribution?model=all&as_of={AS_OF}&at_seq={}", 1 + next(head - 1)))
            .collect();
        let markov = markov_paths;
        let mut expensive = Vec::new();
        for i in 0..DISTINCT {
            expensive.push(replays[i].clone());
            expensive.push(markov[i].clone());
            if i % 8 == 0 {
                expensive.push("/v1/audit/verify".to_owned());
            }
        }
        let lead_paths: Vec<String> = (0..DISTINCT)
            .map(|_| format!("/v1/leads/sim3-L{:06}?as_of={AS_OF}", next(args.query_leads)))
            .collect();
        flood(
            &addr,
            service.pid(),
            expensive,
            lead_paths,
            args.query_seconds.max(30),
            rows,
        )
        .await;
    }
    if args.endpoints.is_empty() {
        versus_chdb(&addr, args.query_leads, rows).await;
    }
    rows.push(rss_at_work(&addr, &url, service.pid(), args.query_leads).await);
    if args.ingest_events > 0 {
        drop(service);
        ingest_while_queried(funnel_bin, &url, &data, args, head, funnel_paths_again, rows).await;
    }
}

/// The service's RSS per lead once it has taken in an event, after the questions (the new
/// event would change their counts).
async fn rss_at_work(addr: &str, url: &str, pid: u32, leads: u64) -> Row {
    // A service taking in events also holds the ledger's id index (it refuses duplicates),
    // loaded with the first event: one event of a new lead, then the RSS again (the figure of
    // a service at work).
    let probe: Vec<Event> = (leads_for(1, 5).into_iter())
        .filter(|e| e.lead_id.is_some())
        .take(1)
        .collect();
    let before = health(addr).await.0;
    let client = async_nats::connect(url).await.expect("connect");
    (funnel_producer::Producer::new(client, funnel_producer::Encoding::Json))
        .publish_all(&probe, |_| {})
        .await
        .expect("publish");
    let waiting = Instant::now();
    while health(addr).await.0 <= before {
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "the probe event was not stored within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Taken once the load's temporaries are returned (mimalloc purges freed pages a second
    // later): the service's memory while it runs, not the moment of loading.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (taking_rss, _) = rss(pid);
    let mut row = Row::new(
        format!("5. live service RSS per lead, restarted, after the questions and one new event ({leads} leads)"),
        vec![taking_rss as f64 / leads as f64],
        "B",
    );
    row.note = "target ≤ 300; the ledger's id index loaded".into();
    row
}

/// Clients sending expensive questions at once (log-prefix replays, Markov attribution, chain
/// verification), far more than the workers: the service must stay up, answer the excess
/// `503 busy` or `timeout` at once, keep its memory bounded, and keep answering health checks
/// and lead lookups meanwhile.
const FLOOD_CLIENTS: usize = 256;

async fn flood(addr: &str, pid: u32, expensive: Vec<String>, leads: Vec<String>, seconds: u64, rows: &mut Vec<Row>) {
    let (rss_before, _) = rss(pid);
    let flood = http::flood(addr, expensive, FLOOD_CLIENTS, seconds);
    let health = http::load(addr, vec!["/health".to_owned()], 1, seconds);
    let lookups = http::load(addr, leads, 4, seconds);
    let (flooded, (mut health, _), (mut lookups, _)) = tokio::join!(flood, health, lookups);
    health.sort_unstable();
    lookups.sort_unstable();
    let (rss_after, peak) = rss(pid);
    let alive = http::Client::connect(addr).await.is_ok();
    let answers: Vec<String> = flooded.answers.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    let mut row = Row::new(
        format!("6. flood, {FLOOD_CLIENTS} clients of replays/Markov/verify for {seconds} s: answers"),
        vec![flooded.answers.values().sum::<usize>() as f64],
        "answers",
    );
    row.note = format!(
        "{}; no answer {}; p50 {:.1} ms, p99 {:.1} ms; still up after: {alive}",
        answers.join(", "),
        flooded.failed,
        percentile(&flooded.latencies, 0.5),
        percentile(&flooded.latencies, 0.99)
    );
    rows.push(row);
    rows.push(Row::new(
        "6. flood: /health p50 / p99 meanwhile, one client",
        vec![percentile(&health, 0.5), percentile(&health, 0.99)],
        "ms",
    ));
    rows.push(Row::new(
        "6. flood: /v1/leads/{id} p50 / p99 meanwhile, 4 clients",
        vec![percentile(&lookups, 0.5), percentile(&lookups, 0.99)],
        "ms",
    ));
    rows.push(Row::new(
        "6. flood: service RSS before / after / peak",
        vec![rss_before as f64 / 1e6, rss_after as f64 / 1e6, peak as f64 / 1e6],
        "MB",
    ));
}

/// Percentile `q` of sorted latencies in µs, in ms.
fn percentile(sorted: &[u64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0) as f64
        / 1000.0
}

/// One client asking by-less funnel questions, each with its own random window: our HTTP
/// answer against chDB (ClickHouse in process) computing the same period counts from the raw
/// events of the same leads. Our p50 over 200 windows, chDB's over the first 20 of them, whose
/// counts must equal ours.
async fn versus_chdb(addr: &str, leads: u64, rows: &mut Vec<Row>) {
    let start = parse_rfc3339("2026-06-01T00:00:00Z").unwrap_or_default();
    let day = 86_400_000_000i64;
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let windows: Vec<(i64, i64)> = (0..200)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let from = start + (rng % (150 * 24)) as i64 * day / 24 - (rng >> 40) as i64 % 3_600_000_000;
            (from, from + (1 + (rng >> 20) % (120 * 24)) as i64 * day / 24)
        })
        .collect();
    let Ok(mut client) = http::Client::connect(addr).await else {
        return;
    };
    let mut ours = Vec::new();
    let mut latencies = Vec::new();
    for (from, to) in &windows {
        let path = format!(
            "/v1/funnel?as_of={AS_OF}&from={}&to={}",
            funnel_core::time::format_rfc3339(*from),
            funnel_core::time::format_rfc3339(*to)
        );
        let t = Instant::now();
        let Ok((200, body)) = client.get(&path).await else {
            return;
        };
        latencies.push(t.elapsed().as_micros() as u64);
        let report: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let p = &report["total"]["period"];
        let counts: [u64; 7] =
            ["inquiry", "mql", "sal", "sql", "opportunity", "won", "lost"].map(|m| p[m].as_u64().unwrap_or(u64::MAX));
        ours.push(counts);
    }
    latencies.sort_unstable();
    let our_p50 = percentile(&latencies, 0.5);
    let mut row = Row::new(
        "5. one client, /v1/funnel with a random window: p50".to_owned(),
        vec![our_p50],
        "ms",
    );
    let events = leads_for(leads, 3);
    let as_of = parse_rfc3339(AS_OF).unwrap_or_default();
    row.note = match peers::chdb(&events, &windows[..20], as_of) {
        Ok(answers) => {
            let mut secs: Vec<f64> = answers.iter().map(|(s, _)| *s).collect();
            secs.sort_by(f64::total_cmp);
            let chdb_p50 = secs[secs.len() / 2] * 1000.0;
            let same = answers.iter().zip(&ours).all(|((_, c), o)| c == o);
            format!(
                "chDB p50 {chdb_p50:.1} ms: ours {:.0}× faster (target ≥ 100×); {}",
                chdb_p50 / our_p50.max(1e-9),
                if same {
                    "counts equal ours"
                } else {
                    "MISMATCH with chDB's counts"
                }
            )
        }
        Err(e) => format!("chDB failed: {e}"),
    };
    rows.push(row);
}

/// Spans of ingest without and with clients asking, alternated (each kind 30 s in all with
/// the default `--query-seconds`). Between runs of one binary the ratio moved ±0.1 with four
/// rounds: the writer works in chunks and checkpoints, and which span each lands in varies.
const INGEST_ROUNDS: u32 = 6;

/// What a service did over the spans of one kind (quiet or loaded): events appended to its
/// ledger, events projected, seconds.
#[derive(Default)]
struct Spans {
    appended: u64,
    projected: u64,
    secs: f64,
    /// The most the projection trailed the ledger at the end of a span, in entries.
    lag_max: u64,
}

impl Spans {
    /// Adds the span since `last` (the service's ledger head and projected seq, and when they
    /// were read) up to `now`, which becomes `last`.
    fn add(&mut self, last: &mut ((u64, u64), Instant), now: (u64, u64)) {
        let ((head, projected), since) = *last;
        self.appended += now.0.saturating_sub(head);
        self.projected += now.1.saturating_sub(projected);
        self.secs += since.elapsed().as_secs_f64();
        self.lag_max = self.lag_max.max(now.0.saturating_sub(now.1));
        *last = (now, Instant::now());
    }

    fn rate(&self, events: u64) -> f64 {
        events as f64 / self.secs
    }
}

/// Ingest with and without 32 clients asking random funnel questions: the service is
/// stopped, the events of new leads are published, and the restarted service works through
/// that backlog; its ledger head and projected seq are sampled over equal spans, quiet and
/// loaded in turn. The target is on the ledger's appends (what ingest makes durable and acks);
/// the projection's rate per span is shown beside it, with how far it trailed: the writer works
/// in chunks and checkpoints, and catches up in one span on what it trailed in the one before,
/// so its rate per span measures when it worked as much as how fast.
async fn ingest_while_queried(
    funnel_bin: &Path,
    url: &str,
    data: &Path,
    args: &Args,
    head: u64,
    funnel_paths: Vec<String>,
    rows: &mut Vec<Row>,
) {
    // New leads only, and no rules change (that would re-derive every existing lead).
    let events: Vec<Event> = leads_for((args.ingest_events as u64 * 2 / 9).max(1), 4)
        .into_iter()
        .filter(|e| !matches!(e.data, funnel_core::event::Data::Rules(_)))
        .take(args.ingest_events)
        .collect();
    let client = async_nats::connect(url).await.expect("connect");
    let producer = funnel_producer::Producer::new(client, funnel_producer::Encoding::Json);
    producer.publish_all(&events, |_| {}).await.expect("publish");
    let service = servers::funnel_serve(funnel_bin, url, data);
    let addr = format!("127.0.0.1:{}", service.port);
    // Quiet and loaded spans alternate, so that both sample the same stretches of the backlog
    // (what an event costs changes along it) and the ratio measures only the sharing.
    // Each span a quarter of an endpoint's load, and at least 5 s.
    let span = Duration::from_secs(args.query_seconds.max(20)) / 4;
    // The ledger's head beside the projected seq: the writer may trail the appends under load
    // and catch up on them in the quiet span after.
    let (mut quiet, mut loaded) = (Spans::default(), Spans::default());
    let mut last = (health(&addr).await, Instant::now());
    let mut latencies = Vec::new();
    for _ in 0..INGEST_ROUNDS {
        eprintln!("ingest while queried: quiet span, service pid {}", service.pid());
        tokio::time::sleep(span).await;
        quiet.add(&mut last, health(&addr).await);
        eprintln!("ingest while queried: loaded span, service pid {}", service.pid());
        let (mut answered, _) = http::load(&addr, funnel_paths.clone(), args.clients, span.as_secs()).await;
        latencies.append(&mut answered);
        loaded.add(&mut last, health(&addr).await);
    }
    let ((_, loaded_to), _) = last;
    let (quiet_projected, loaded_projected) = (quiet.rate(quiet.projected), loaded.rate(loaded.projected));
    let lag_max = loaded.lag_max;
    let loaded_secs = loaded.secs;
    let (quiet, loaded) = (quiet.rate(quiet.appended), loaded.rate(loaded.appended));
    latencies.sort_unstable();
    let mut row = Row::new(
        format!("5. ingest while {} clients ask random funnel questions", args.clients),
        vec![loaded],
        "events/s",
    );
    row.note = format!(
        "appended to the ledger (durable, acked): {:.2}× the quiet rate of {quiet:.0}/s (target ≥ 0.8; {INGEST_ROUNDS} quiet and {INGEST_ROUNDS} loaded spans in turn); projected: {:.2}× ({quiet_projected:.0} → {loaded_projected:.0}/s), trailing the ledger by at most {lag_max} entries at the end of a loaded span; funnel p50 {:.2} ms, p99 {:.2} ms (target ≤ 50 ms), {:.0} answers/s{}",
        loaded / quiet.max(1e-9),
        loaded_projected / quiet_projected.max(1e-9),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.len() as f64 / loaded_secs.max(1e-9),
        if loaded_to >= head + events.len() as u64 {
            " — backlog ran out: rate is a lower bound"
        } else {
            ""
        }
    );
    rows.push(row);
}
