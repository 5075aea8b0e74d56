//! Ledger append, verify and scan rates on simulated events, without NATS: the quick loop for
//! profiling the ledger (`scripts/bench.sh` has the figures that count).
//!
//! `cargo run --release -p funnel-ledger --example append -- EVENTS [BATCH]`

use std::time::Instant;

use funnel_core::simulate::{funnel, Plan};
use funnel_ledger::{Candidate, Ledger};

fn disk_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let batch: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let mut events = funnel(Plan {
        leads: (n as u64 / 4).max(1),
        seed: 1,
        start: 1_780_272_000_000_000,
        days: 120,
    });
    events.truncate(n);
    let dir = std::env::temp_dir().join(format!("ledger-append-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ledger = Ledger::open(&dir).expect("open");
    let started = Instant::now();
    for (i, chunk) in events.chunks(batch).enumerate() {
        let candidates: Vec<Candidate> = chunk.iter().map(Candidate::direct).collect();
        ledger.append_batch(&candidates, i as i64).expect("append");
        ledger.flush().expect("flush");
    }
    let append = started.elapsed().as_secs_f64();
    drop(ledger);
    let ledger = Ledger::open(&dir).expect("reopen");
    let started = Instant::now();
    let v = ledger.verify(|_| {});
    let verify = started.elapsed().as_secs_f64();
    assert_eq!(v.first_bad, None);
    let started = Instant::now();
    let scanned = ledger.entries(1).filter(|e| e.is_ok()).count();
    let scan = started.elapsed().as_secs_f64();
    println!(
        "{n} events, batch {batch}: append {:.0}/s, verify {:.0}/s, scan+decode {:.0}/s, {:.0} bytes/event on disk",
        n as f64 / append,
        n as f64 / verify,
        scanned as f64 / scan,
        disk_bytes(&dir) as f64 / n as f64
    );
    drop(ledger);
    let _ = std::fs::remove_dir_all(&dir);
}
