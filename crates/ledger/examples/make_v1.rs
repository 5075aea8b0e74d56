//! Writes a format-1 store of N simulated events (entries only, as format 1 laid them out), for
//! measuring `funnel migrate` at sizes the fixture does not have.
//!
//! `cargo run --release -p funnel-ledger --example make_v1 -- DIR N`
use funnel_core::simulate::{funnel, Plan};
use funnel_core::Entry;
use sha2::{Digest, Sha256};
fn main() {
    let usage = "usage: make_v1 DIR N";
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect(usage));
    let n: usize = std::env::args().nth(2).and_then(|n| n.parse().ok()).expect(usage);
    let cfg = bincode::config::standard();
    let db = sled::open(&dir).unwrap();
    let log = db.open_tree("log").unwrap();
    let mut events = funnel(Plan {
        leads: (n / 4) as u64,
        seed: 1,
        start: 1_780_272_000_000_000,
        days: 120,
    });
    events.truncate(n);
    let mut prev = [0u8; 32];
    let mut batch = sled::Batch::default();
    for (i, event) in events.into_iter().enumerate() {
        let seq = i as u64 + 1;
        let mut h = Sha256::new();
        h.update(prev);
        h.update(seq.to_be_bytes());
        h.update(1i64.to_be_bytes());
        h.update(bincode::serde::encode_to_vec(&event, cfg).unwrap());
        let hash: [u8; 32] = h.finalize().into();
        let e = Entry {
            seq,
            recorded_at: 1,
            stream_seq: seq,
            prev_hash: prev,
            hash,
            event,
        };
        let mut key = vec![b'e'];
        key.extend_from_slice(&seq.to_be_bytes());
        batch.insert(key, bincode::serde::encode_to_vec(&e, cfg).unwrap());
        prev = hash;
        if seq.is_multiple_of(1000) {
            log.apply_batch(std::mem::take(&mut batch)).unwrap();
        }
    }
    log.apply_batch(batch).unwrap();
    db.flush().unwrap();
}
