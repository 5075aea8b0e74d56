//! A keep-alive HTTP/1.1 GET client for load: one connection per client task.

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub struct Client {
    addr: String,
    stream: BufReader<TcpStream>,
}

impl Client {
    pub async fn connect(addr: &str) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Client {
            addr: addr.to_owned(),
            stream: BufReader::new(stream),
        })
    }

    /// GET `path`; the status and the body.
    pub async fn get(&mut self, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr);
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let mut status = 0u16;
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(std::io::Error::other("connection closed"));
            }
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if status == 0 {
                status = trimmed
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            } else if let Some((name, value)) = trimmed.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).await?;
        Ok((status, body))
    }
}

/// How long past the end of a load phase an unanswered request may still take.
const UNANSWERED_GRACE: Duration = Duration::from_secs(2);

/// Latencies (µs) and request count of `clients` tasks hitting `paths` (round robin) for `seconds`.
pub async fn load(addr: &str, paths: Vec<String>, clients: usize, seconds: u64) -> (Vec<u64>, f64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let paths = std::sync::Arc::new(paths);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (addr, paths) = (addr.to_owned(), paths.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let Ok(mut client) = Client::connect(&addr).await else {
                return latencies;
            };
            let mut i = c;
            while Instant::now() < deadline {
                let t = Instant::now();
                // A request still unanswered past the deadline (plus grace) counts with the time
                // it has waited so far (a lower bound) and is abandoned: the server sees the
                // hang-up and stops computing it, so one phase cannot spill into the next.
                let limit = deadline.saturating_duration_since(t) + UNANSWERED_GRACE;
                match tokio::time::timeout(limit, client.get(&paths[i % paths.len()])).await {
                    Ok(Ok((200, _))) => latencies.push(t.elapsed().as_micros() as u64),
                    Err(_) => {
                        latencies.push(t.elapsed().as_micros() as u64);
                        break;
                    }
                    _ => break,
                }
                i += clients;
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap_or_default());
    }
    (all, started.elapsed().as_secs_f64())
}

/// What a flood of requests got: answers by status and `error.code`, and latencies (µs) of
/// every answer.
#[derive(Debug, Default)]
pub struct Flooded {
    pub answers: std::collections::BTreeMap<String, usize>,
    pub latencies: Vec<u64>,
    /// Requests with no answer at all (connection refused or closed): the process gave way.
    pub failed: usize,
}

/// `clients` tasks sending `paths` round robin for `seconds`, counting every answer (not only
/// 200s) and reconnecting after a failure.
pub async fn flood(addr: &str, paths: Vec<String>, clients: usize, seconds: u64) -> Flooded {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let paths = std::sync::Arc::new(paths);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (addr, paths) = (addr.to_owned(), paths.clone());
        tasks.push(tokio::spawn(async move {
            let mut got = Flooded::default();
            let mut i = c;
            let mut client = None;
            while Instant::now() < deadline {
                if client.is_none() {
                    client = Client::connect(&addr).await.ok();
                }
                let Some(connection) = client.as_mut() else {
                    got.failed += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let t = Instant::now();
                let limit = deadline.saturating_duration_since(t) + UNANSWERED_GRACE;
                match tokio::time::timeout(limit, connection.get(&paths[i % paths.len()])).await {
                    Ok(Ok((status, body))) => {
                        got.latencies.push(t.elapsed().as_micros() as u64);
                        let code = serde_json::from_slice::<serde_json::Value>(&body)
                            .ok()
                            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                            .unwrap_or_default();
                        *got.answers
                            .entry(format!("{status} {code}").trim().to_owned())
                            .or_default() += 1;
                    }
                    Ok(Err(_)) => {
                        got.failed += 1;
                        client = None;
                    }
                    // Still computing at the end: abandoned (the server sees the hang-up).
                    Err(_) => break,
                }
                i += clients;
            }
            got
        }));
    }
    let mut all = Flooded::default();
    for task in tasks {
        let got = task.await.unwrap_or_default();
        for (k, n) in got.answers {
            *all.answers.entry(k).or_default() += n;
        }
        all.latencies.extend(got.latencies);
        all.failed += got.failed;
    }
    all.latencies.sort_unstable();
    all
}
