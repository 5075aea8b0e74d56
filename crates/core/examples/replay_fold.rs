//! Folds the same simulated log one entry at a time and in chunks, in one process, and prints
//! both rates: `cargo run --release -p funnel-core --example replay_fold [events] [one|chunks|none]`.
//! With a mode, folds only that way (for instruction counts under `valgrind --tool=callgrind`).

use std::time::Instant;

use funnel_core::simulate::{funnel, Plan};
use funnel_core::{Entry, Projection};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let start = funnel_core::time::parse_rfc3339("2026-06-01T00:00:00Z").unwrap_or_default();
    let mut events = funnel(Plan {
        leads: n as u64 / 4,
        seed: 2,
        start,
        days: 120,
    });
    events.truncate(n);
    let entries = Entry::numbered(events);
    match std::env::args().nth(2).as_deref() {
        Some("one") => {
            let mut p = Projection::default();
            entries.iter().for_each(|e| p.apply(e).expect("contiguous"));
            return;
        }
        Some("chunks") => {
            let mut p = Projection::default();
            let mut entries = entries;
            while !entries.is_empty() {
                let rest = entries.split_off(entries.len().min(10_000));
                p.apply_owned(std::mem::replace(&mut entries, rest))
                    .expect("contiguous");
            }
            return;
        }
        Some(_) => return,
        None => {}
    }
    for round in 0..2 {
        let t = Instant::now();
        let mut one = Projection::default();
        for e in &entries {
            one.apply(e).expect("contiguous");
        }
        let single = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut chunked = Projection::default();
        for chunk in entries.chunks(10_000) {
            chunked.apply_all(chunk).expect("contiguous");
        }
        let chunks = t.elapsed().as_secs_f64();
        println!(
            "round {round}: one by one {:.0} events/s, chunks of 10k {:.0} events/s, same state: {}",
            n as f64 / single,
            n as f64 / chunks,
            one == chunked
        );
    }
}
