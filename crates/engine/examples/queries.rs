//! Times distinct report questions against a live engine opened on a data dir, one thread,
//! no HTTP: what each report costs the engine itself.
//! `cargo run --release -p funnel-engine --example queries -- DATA_DIR [N] [funnel,attribution,at_seq,replay,ingest:LEADS]`
//!
//! `ingest:LEADS` first appends the events of LEADS new leads to the ledger (so run it on a copy of the
//! data dir) and times the writer catching up with them as the service's does (a snapshot per
//! chunk, checkpoints included); the questions after it then meet the runs that left.

use std::path::PathBuf;
use std::time::Instant;

use funnel_core::attribution::Model;
use funnel_core::report::{By, FunnelQuery, Window};
use funnel_core::time::{parse_rfc3339, MICROS_PER_DAY};
use funnel_engine::live::{replay, Live};
use funnel_engine::{funnel, reports};
use funnel_ledger::Ledger;

/// The service's allocator, so that times and memory are the service's.
#[global_allocator]
static GLOBAL: funnel_engine::heap::Allocator = funnel_engine::heap::Allocator;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    extern "C" {
        fn prctl(option: i32, ...) -> i32;
    }
    // SAFETY: PR_SET_THP_DISABLE (41), as the `funnel` binary does at start: no huge pages.
    unsafe { prctl(41, 1u64, 0u64, 0u64, 0u64) };
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: queries DATA_DIR [N]")?);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200);
    let only = args.next().unwrap_or_else(|| "funnel,attribution,at_seq,replay".into());
    let started = Instant::now();
    let ledger = Ledger::open(&dir.join("ledger"))?;
    eprintln!("RSS after ledger open {} MB", rss_kb() / 1024);
    extern "C" {
        fn mi_collect(force: bool);
        fn mi_option_get(option: i32) -> std::ffi::c_long;
        fn mi_option_set(option: i32, value: std::ffi::c_long);
    }
    /// mimalloc's purge delay (see `funnel serve`'s `PURGE_DELAY`).
    const PURGE_DELAY: i32 = 15;
    // SAFETY: as `funnel serve` does around its start (see its `releasing_freed_heap`): freed
    // memory returned at once, then whatever is still held. Options are plain integers.
    let delay = unsafe { mi_option_get(PURGE_DELAY) };
    unsafe { mi_option_set(PURGE_DELAY, 0) };
    let live = Live::open(ledger, &dir.join("engine"))?;
    eprintln!("RSS after engine open {} MB", rss_kb() / 1024);
    println!("open {:.2} s", started.elapsed().as_secs_f64());
    let ingest_leads = only.split(',').find_map(|part| part.strip_prefix("ingest:"));
    if let Some(leads) = ingest_leads {
        let leads: u64 = leads.parse()?;
        let start = parse_rfc3339("2026-06-01T00:00:00Z").map_err(|e| e.to_string())?;
        let events: Vec<_> = funnel_core::simulate::funnel(funnel_core::simulate::Plan {
            leads,
            seed: 4,
            start,
            days: 120,
        })
        .into_iter()
        .filter(|e| !matches!(e.data, funnel_core::event::Data::Rules(_)))
        .collect();
        for (i, chunk) in events.chunks(1_000).enumerate() {
            let candidates: Vec<_> = chunk.iter().map(funnel_ledger::Candidate::direct).collect();
            live.ledger().append_batch(&candidates, i as i64)?;
        }
        live.ledger().flush()?;
        let t = Instant::now();
        let applied = live.catch_up()?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "ingest: {applied} events of {leads} new leads applied in {secs:.2} s: {:.0} events/s",
            applied as f64 / secs
        );
    }
    let engine = live.snapshot();
    // SAFETY: returns free pages to the system only; the delay as it was.
    unsafe {
        mi_collect(true);
        mi_option_set(PURGE_DELAY, delay);
    }
    if std::env::var_os("MI_STATS").is_some() {
        extern "C" {
            fn mi_stats_print(out: *mut std::ffi::c_void);
        }
        // SAFETY: prints mimalloc's statistics to stderr.
        unsafe { mi_stats_print(std::ptr::null_mut()) };
    }
    let rss = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .map(|v| v.trim().trim_end_matches(" kB").parse::<u64>())
        })
        .transpose()?
        .unwrap_or(0);
    println!("RSS {} B per lead", rss * 1024 / engine.leads().len().max(1) as u64);
    for (part, bytes) in engine.footprint() {
        println!("{part}: {} B/lead", bytes / engine.leads().len().max(1));
    }
    let as_of = parse_rfc3339("2026-12-01T00:00:00Z").map_err(|e| e.to_string())?;
    let start = parse_rfc3339("2026-06-01T00:00:00Z").map_err(|e| e.to_string())?;
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: u64| {
        rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n.max(1)
    };
    let mut window = || {
        let from = start + next(150 * 24) as i64 * MICROS_PER_DAY / 24;
        let to = from + (1 + next(120 * 24) as i64) * MICROS_PER_DAY / 24;
        Window {
            from: Some(from),
            to: Some(to),
        }
    };
    let report = |name: &str, mut times: Vec<f64>| {
        if times.is_empty() {
            return;
        }
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).saturating_sub(1)];
        println!("{name}: p50 {:.3} ms, p99 {:.3} ms", at(0.5), at(0.99));
    };
    let bys = [None, Some(By::Channel), Some(By::Campaign), Some(By::Producer)];
    let mut times = Vec::new();
    for i in 0..n * usize::from(only.contains("funnel")) {
        let query = FunnelQuery {
            window: window(),
            by: bys[i % 4],
            ..FunnelQuery::default()
        };
        let t = Instant::now();
        std::hint::black_box(funnel::funnel(&engine, &query, as_of));
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    report("funnel", times);
    let mut times = Vec::new();
    for _ in 0..(n / 10).max(3) * usize::from(only.contains("attribution")) {
        let w = window();
        let t = Instant::now();
        std::hint::black_box(reports::attribution(&engine, &Model::ALL, w, By::Channel, as_of));
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    if let Some(first) = times.first() {
        let (deals, rows) = engine.derived().credit_sums(&engine, false).size();
        println!(
            "attribution all, first question (builds the credit sums): {first:.1} ms; {deals} won deals, {rows} rows"
        );
        times.remove(0);
    }
    report("attribution all, one as_of", times);
    let mut times = Vec::new();
    for _ in 0..(n / 20).max(3) * usize::from(only.contains("attribution")) {
        let w = window();
        let at = w.from.unwrap_or(as_of) + (w.to.unwrap_or(as_of) - w.from.unwrap_or(as_of)) / 2;
        let t = Instant::now();
        std::hint::black_box(reports::attribution(&engine, &Model::ALL, w, By::Channel, at));
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    report("attribution all, each as_of its own (a new Markov chain each)", times);
    let head = engine.head().seq;
    let mut pick = 0x2545_f491_4f6c_dd1d_u64;
    let mut seq_in_second_half = move || {
        pick ^= pick << 13;
        pick ^= pick >> 7;
        pick ^= pick << 17;
        head / 2 + pick % (head / 2).max(1)
    };
    println!(
        "history: latest time read {}; {} leads read later in an earlier version",
        funnel_core::time::format_rfc3339(engine.history().latest),
        engine.late().len()
    );
    // At the bench's `as_of`, and at one that a tenth of the leads settle after.
    let settled = &engine.index().settled;
    let past = settled.items().get(settled.len() * 9 / 10).map_or(as_of, |(t, _)| *t);
    for (label, as_of) in [("bench as_of", as_of), ("as_of before 10% of the leads settle", past)] {
        let mut times = Vec::new();
        let mut replays = 0;
        for i in 0..n * usize::from(only.contains("at_seq")) {
            let seq = seq_in_second_half();
            let entry = live.ledger().get(seq)?.ok_or("no entry")?;
            let at = funnel_core::LogPosition { seq, hash: entry.hash };
            let query = FunnelQuery {
                window: window(),
                by: bys[i % 4],
                ..FunnelQuery::default()
            };
            let t = Instant::now();
            match funnel::funnel_at(&engine, &query, as_of, at, live.ledger())? {
                Some(report) => {
                    std::hint::black_box(report);
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                }
                None => replays += 1,
            }
        }
        report(
            &format!("funnel at_seq, {label} (history, with the entry read; {replays} would replay)"),
            times,
        );
    }
    if only.contains("replay") {
        let t = Instant::now();
        let past = replay(live.ledger(), Some(seq_in_second_half()), |_| {})?;
        std::hint::black_box(funnel::funnel(&past, &FunnelQuery::default(), as_of));
        println!("funnel at_seq by replay: {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(())
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
            })
        })
        .unwrap_or(0)
}
