//! `funnel emit` and the publishing half of `funnel simulate`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use funnel_core::Event;
use funnel_producer::{Encoding, Producer};

use crate::nats_auth::NatsUser;
use crate::{CliError, Connect};

/// The NATS URL: --nats-url, else the one `funnel serve` wrote for --data-dir, else the default port.
pub fn nats_url(connect: &Connect) -> String {
    connect
        .nats_url
        .clone()
        .or_else(|| {
            std::fs::read_to_string(connect.data.data_dir.join("nats.url"))
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned())
}

pub async fn publish(connect: &Connect, events: &[Event], bincode: bool, json: bool) -> Result<(), CliError> {
    let url = nats_url(connect);
    let client = connect
        .auth
        .connect(&url, &connect.data.data_dir, NatsUser::Producer, "funnel-producer")
        .await?;
    let producer = Producer::new(client.clone(), if bincode { Encoding::Bincode } else { Encoding::Json });
    let total = events.len();
    let mut bar = crate::progress::Progress::new("published", Some(total as u64), json);
    let sent = producer
        .publish_all(events, |n| bar.update(n))
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    client
        .flush()
        .await
        .map_err(|e| CliError::Failed(format!("flush: {e}")))?;
    if json {
        println!("{}", serde_json::json!({"published": sent, "nats_url": url}));
    } else {
        bar.finish(&format!("published {sent} events to {url}"));
    }
    Ok(())
}

pub async fn emit(file: Option<PathBuf>, bincode: bool, connect: &Connect, json: bool) -> Result<(), CliError> {
    let reader: Box<dyn BufRead> = match &file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).map_err(|e| CliError::Failed(format!("open {}: {e}", path.display())))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut events = Vec::new();
    let mut refused = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| CliError::Failed(format!("read line {}: {e}", n + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        match Event::from_json(line.as_bytes()) {
            Ok(event) => events.push(event),
            Err(rejection) => {
                if !json {
                    eprintln!("line {}: {rejection}", n + 1);
                }
                refused.push(serde_json::json!({"line": n + 1, "reason": rejection.reason.as_str(), "message": rejection.message}));
            }
        }
    }
    publish(connect, &events, bincode, json).await?;
    if json && !refused.is_empty() {
        println!("{}", serde_json::json!({"refused": refused}));
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "{} line(s) refused and not published",
            refused.len()
        )))
    }
}

pub fn write_ndjson(path: &Path, events: &[Event], json: bool) -> Result<(), CliError> {
    let fail = |e: std::io::Error| CliError::Failed(format!("write {}: {e}", path.display()));
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(fail)?);
    for event in events {
        writeln!(out, "{}", event.to_json()).map_err(fail)?;
    }
    out.flush().map_err(fail)?;
    if json {
        println!(
            "{}",
            serde_json::json!({"written": events.len(), "file": path.display().to_string()})
        );
    } else {
        eprintln!("wrote {} events to {}", events.len(), path.display());
    }
    Ok(())
}
