//! `funnel recover`: the way back from a damaged ledger. The damaged store is kept aside, its
//! verified prefix (up to the first bad seq) is copied into a new one with the same seqs and
//! hashes, and what JetStream still holds after that prefix is ingested again by the live
//! ingest itself (so each event is filed exactly as it would have been, and the ledger's id
//! index keeps every event once). Then every entry of the damaged store past the prefix is
//! accounted for: found again, or lost for good.

use std::sync::Arc;
use std::time::Duration;

use funnel_ledger::{Ledger, LedgerError};
use funnel_projector::{ingest, Metrics, Settings};
use tokio::sync::watch;

use crate::nats_auth::NatsUser;
use crate::{nats_child, CliError, Connect};

/// How often catching up is checked.
const POLL: Duration = Duration::from_millis(200);

pub async fn recover(connect: &Connect, json: bool) -> Result<(), CliError> {
    let data_dir = &connect.data.data_dir;
    let ledger_dir = data_dir.join("ledger");
    if !ledger_dir.exists() {
        return Err(CliError::Failed(format!("no ledger in {}", data_dir.display())));
    }
    // 1. Where the damage starts. A store sled cannot even open is damaged from seq 1.
    let (first_bad, why, claimed_head) = match crate::serve::open_ledger_with(data_dir, Ledger::open_unchecked) {
        Ok(ledger) => {
            let checked = tokio::task::block_in_place(|| ledger.verify(|_| {}));
            match checked.first_bad {
                None => {
                    report_intact(checked.head.seq, json);
                    return Ok(());
                }
                Some((seq, why)) => (seq, why, Some(ledger.head().seq)),
            }
        }
        Err(CliError::Failed(e)) if e.contains("in use") => return Err(CliError::Failed(e)),
        Err(e) => (1, e.to_string(), None),
    };

    // 2. Aside, untouched; the engine's checkpoint is derived from it, so it goes too.
    let stamp = funnel_projector::now_micros() / 1_000_000;
    let aside = data_dir.join(format!("ledger.damaged-{stamp}"));
    std::fs::rename(&ledger_dir, &aside)
        .map_err(|e| CliError::Failed(format!("move {} aside: {e}", ledger_dir.display())))?;
    let engine = data_dir.join("engine");
    if engine.exists() {
        std::fs::remove_dir_all(&engine).map_err(|e| CliError::Failed(format!("remove {}: {e}", engine.display())))?;
    }

    // 3. The verified prefix, same seqs and hashes.
    let ledger = Ledger::open(&ledger_dir).map_err(|e| CliError::Failed(format!("new ledger: {e}")))?;
    let damaged = Ledger::open_unchecked(&aside).ok();
    let salvaged = match &damaged {
        Some(damaged) => tokio::task::block_in_place(|| funnel_ledger::salvage(damaged, &ledger, first_bad - 1))
            .map_err(|e| CliError::Failed(format!("salvage: {e}")))?,
        None => ledger.head(),
    };
    let resume_at = last_stream_seq(&ledger)? + 1;

    // 4. What JetStream still holds after the prefix, through the live ingest.
    let child = match &connect.nats_url {
        Some(_) => None,
        None => Some(nats_child::start(data_dir).await?),
    };
    let url = connect
        .nats_url
        .clone()
        .or_else(|| child.as_ref().map(|c| c.url.clone()))
        .unwrap_or_default();
    let reingested = reingest(connect, &url, &ledger, resume_at).await;
    if let Some(child) = child {
        child.stop().await;
    }
    let (first_stream_seq, last_stream_seq) = reingested?;

    // 5. Every entry of the damaged store past the prefix: found again, or lost for good.
    // A damaged entry's id may be what the damage hit, so it counts as found again if the
    // message it came from (its stream seq) was ingested again, or its id is in the ledger.
    let mut lost: Vec<(u64, Option<String>)> = Vec::new();
    if let (Some(damaged), Some(claimed)) = (&damaged, claimed_head) {
        let mut again = std::collections::HashSet::new();
        for entry in ledger.entries(salvaged.seq + 1) {
            again.insert(entry.map_err(|e| CliError::Failed(e.to_string()))?.stream_seq);
        }
        for seq in first_bad..=claimed {
            let entry = damaged.get(seq).ok().flatten();
            let found = match &entry {
                Some(e) if e.stream_seq != 0 && again.contains(&e.stream_seq) => true,
                Some(e) => ledger
                    .seq_of(&e.event.id)
                    .map_err(|e| CliError::Failed(e.to_string()))?
                    .is_some(),
                None => false,
            };
            if !found {
                lost.push((seq, entry.map(|e| e.event.id)));
            }
        }
    }
    ledger.flush().map_err(|e| CliError::Failed(e.to_string()))?;
    let head = ledger.head();
    let summary = serde_json::json!({
        "damaged": {"first_bad_seq": first_bad, "reason": why, "head_seq": claimed_head, "kept_at": aside},
        "salvaged": {"from_seq": 1, "to_seq": salvaged.seq, "entries": salvaged.seq, "head_hash": hex(&salvaged.hash)},
        "reingested": {
            "entries": head.seq - salvaged.seq,
            "from_seq": salvaged.seq + 1,
            "to_seq": head.seq,
            "stream_seqs": [first_stream_seq, last_stream_seq],
        },
        "lost": {
            "entries": lost.len(),
            "ranges": ranges(&lost.iter().map(|(seq, _)| *seq).collect::<Vec<_>>()),
            "ids": lost.iter().filter_map(|(_, id)| id.clone()).collect::<Vec<_>>(),
            "unknown_beyond": claimed_head.is_none(),
        },
        "head": {"seq": head.seq, "hash": hex(&head.hash)},
    });
    if json {
        println!("{summary}");
    } else {
        print_summary(&summary);
    }
    Ok(())
}

/// The highest JetStream stream seq among the ledger's entries (0 with none, or when they
/// were imported rather than ingested).
fn last_stream_seq(ledger: &Ledger) -> Result<u64, CliError> {
    let mut last = 0;
    for entry in ledger.entries(1) {
        let entry = entry.map_err(|e: LedgerError| CliError::Failed(e.to_string()))?;
        last = last.max(entry.stream_seq);
    }
    Ok(last)
}

/// Rewinds the durable consumer to `resume_at` and runs ingest until it has been handed and
/// has acked everything the stream holds. The first and last stream seq it covered.
async fn reingest(connect: &Connect, url: &str, ledger: &Ledger, resume_at: u64) -> Result<(u64, u64), CliError> {
    let fail = |e: funnel_projector::ProjectorError| CliError::Failed(e.to_string());
    let client = connect
        .auth
        .connect(url, &connect.data.data_dir, NatsUser::Service, "funnel-recover")
        .await?;
    let js = async_nats::jetstream::new(client);
    let settings = Settings::from_env().map_err(CliError::Failed)?;
    ingest::rewind(&js, &settings, resume_at).await.map_err(fail)?;
    let mut stream = js
        .get_stream(&settings.stream)
        .await
        .map_err(|e| CliError::Failed(format!("stream {}: {e}", settings.stream)))?;
    let state = stream
        .info()
        .await
        .map_err(|e| CliError::Failed(format!("stream {}: {e}", settings.stream)))?
        .state
        .clone();
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (head_tx, _head) = watch::channel(ledger.head().seq);
    let mut running = tokio::spawn(ingest::run(
        js.clone(),
        ledger.clone(),
        settings.clone(),
        Arc::new(Metrics::default()),
        head_tx,
        shutdown,
    ));
    loop {
        tokio::select! {
            ended = &mut running => {
                return Err(CliError::Failed(match ended {
                    Ok(Err(e)) => format!("ingest stopped: {e}"),
                    _ => "ingest stopped before catching up".into(),
                }));
            }
            () = tokio::time::sleep(POLL) => {}
        }
        if ingest::caught_up(&js, &settings).await.map_err(fail)? {
            break;
        }
    }
    let _ = shutdown_tx.send(true);
    running
        .await
        .map_err(|e| CliError::Failed(format!("ingest: {e}")))?
        .map_err(fail)?;
    Ok((resume_at.max(state.first_sequence), state.last_sequence))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Consecutive seqs as `[first, last]` pairs.
fn ranges(seqs: &[u64]) -> Vec<[u64; 2]> {
    let mut out: Vec<[u64; 2]> = Vec::new();
    for &seq in seqs {
        match out.last_mut() {
            Some(range) if range[1] + 1 == seq => range[1] = seq,
            _ => out.push([seq, seq]),
        }
    }
    out
}

fn report_intact(head: u64, json: bool) {
    if json {
        println!("{}", serde_json::json!({"intact": true, "head_seq": head}));
    } else {
        println!("The ledger checks out to seq {head}: nothing to recover.");
    }
}

fn print_summary(s: &serde_json::Value) {
    let d = &s["damaged"];
    println!(
        "Ledger damaged at seq {} ({}); the damaged store is kept at {}",
        d["first_bad_seq"], d["reason"], d["kept_at"]
    );
    let v = &s["salvaged"];
    println!(
        "Salvaged:    seqs 1..={} ({} entries, verified), head hash {}",
        v["to_seq"], v["entries"], v["head_hash"]
    );
    let r = &s["reingested"];
    println!(
        "Re-ingested: {} events from JetStream (stream seqs {}..={}) as seqs {}..={}",
        r["entries"], r["stream_seqs"][0], r["stream_seqs"][1], r["from_seq"], r["to_seq"]
    );
    let l = &s["lost"];
    if l["entries"] == 0 && l["unknown_beyond"] == false {
        println!("Lost:        nothing: every entry of the damaged store is in the new ledger");
    } else if l["unknown_beyond"] == true {
        println!(
            "Lost:        unknown: the damaged store could not be read; entries JetStream no longer holds are gone"
        );
    } else {
        println!(
            "LOST FOR GOOD: {} entries of the damaged store, seqs {}, ids {}: JetStream no longer holds them; \
             republish them from their source",
            l["entries"], l["ranges"], l["ids"]
        );
    }
    println!("New head:    seq {} hash {}", s["head"]["seq"], s["head"]["hash"]);
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges_join_consecutive_seqs() {
        assert_eq!(super::ranges(&[3, 4, 5, 9, 11, 12]), vec![[3, 5], [9, 9], [11, 12]]);
        assert!(super::ranges(&[]).is_empty());
    }
}
