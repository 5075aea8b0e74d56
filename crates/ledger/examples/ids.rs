//! What the id index costs a ledger that already holds events: the time to load it (the
//! first id lookup does) and the memory it then holds, and the time of lookups that miss.
//!
//! `cargo run --release -p funnel-ledger --example ids -- LEDGER_DIR`

use std::time::Instant;

use funnel_ledger::Ledger;

fn rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok());
    kb.unwrap_or(0) / 1024
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: ids LEDGER_DIR");
    let ledger = Ledger::open(std::path::Path::new(&dir)).expect("open the ledger");
    let before = rss_mb();
    let started = Instant::now();
    let ids = ledger.indexed_ids().expect("load the id index");
    println!(
        "{ids} ids loaded in {:.2} s; RSS {before} → {} MB",
        started.elapsed().as_secs_f64(),
        rss_mb()
    );
    let started = Instant::now();
    let misses = 200_000;
    let found = (0..misses)
        .filter(|i| ledger.find(&format!("absent-{i}")).ok().flatten().is_some())
        .count();
    println!(
        "{misses} lookups of absent ids: {:.2} µs each ({found} found)",
        started.elapsed().as_secs_f64() * 1e6 / misses as f64
    );
}
