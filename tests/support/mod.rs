//! The real-server harness: a nats-server on a free loopback port with its own store, the
//! real `funnel` binary as a child process, a raw-protocol NATS publisher (a client that is
//! not ours) and a minimal HTTP GET. Everything is killed on drop; only 127.0.0.1 is used.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("funnel-test-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nats_server_binary() -> PathBuf {
    if let Ok(path) = std::env::var("FUNNEL_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/nats-server");
    assert!(
        local.exists(),
        "no nats-server: run scripts/setup.sh (or scripts/test.sh), or set FUNNEL_NATS_SERVER"
    );
    local
}

/// A real nats-server with JetStream, on 127.0.0.1 and a free port, killed on drop.
pub struct NatsServer {
    child: Child,
    pub port: u16,
    pub url: String,
    _store: TempDir,
}

impl NatsServer {
    /// nats-server picks its own free port (`-p -1`) and reports it in a ports file: no races
    /// between tests running in parallel.
    pub fn start() -> NatsServer {
        NatsServer::start_with(None, &[])
    }

    /// With a configuration file (its address, port and store overridden as in [`start`]) and
    /// environment variables the file refers to.
    pub fn start_with(config: Option<&Path>, env: &[(String, String)]) -> NatsServer {
        let store = TempDir::new("nats");
        let mut command = Command::new(nats_server_binary());
        if let Some(config) = config {
            command.arg("-c").arg(config);
        }
        let child = command
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(["-a", "127.0.0.1", "-p", "-1", "-js", "--ports_file_dir"])
            .arg(store.path())
            .arg("-sd")
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let mut port = 0;
        wait_for(Duration::from_secs(15), "nats-server's ports file", || {
            port = ports_file_port(store.path()).unwrap_or(0);
            port != 0
        });
        let server = NatsServer {
            child,
            port,
            url: format!("nats://127.0.0.1:{port}"),
            _store: store,
        };
        wait_for(Duration::from_secs(15), "nats-server to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        server
    }
}

/// The client port from the `*.ports` file nats-server writes.
fn ports_file_port(dir: &Path) -> Option<u16> {
    let file = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".ports"))?;
    let ports: Value = serde_json::from_str(&std::fs::read_to_string(file.path()).ok()?).ok()?;
    ports["nats"][0].as_str()?.rsplit(':').next()?.parse().ok()
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn funnel_bin() -> &'static str {
    env!("CARGO_BIN_EXE_funnel")
}

/// Runs the `funnel` CLI to completion.
pub fn funnel(args: &[&str]) -> Output {
    Command::new(funnel_bin())
        .args(args)
        .env("FUNNEL_LOG", "error")
        .output()
        .expect("run funnel")
}

/// `funnel serve` against a NATS server, with its own data dir and HTTP port.
pub struct Service {
    child: Option<Child>,
    pub http: String,
    pub data_dir: PathBuf,
    pub nats_url: String,
    env: Vec<(String, String)>,
    /// Further arguments of `funnel serve` (credentials, say).
    args: Vec<String>,
}

impl Service {
    pub fn start(nats: &NatsServer, data_dir: &Path) -> Service {
        Service::start_with(nats, data_dir, &[])
    }

    pub fn start_with(nats: &NatsServer, data_dir: &Path, env: &[(&str, &str)]) -> Service {
        Service::start_as(nats, data_dir, env, &[])
    }

    /// With further `serve` arguments.
    pub fn start_as(nats: &NatsServer, data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Service {
        let mut service = Service {
            child: None,
            http: String::new(),
            data_dir: data_dir.to_owned(),
            nats_url: nats.url.clone(),
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        service.spawn();
        service
    }

    /// Starts the process (again) on a port it picks itself, and waits until /health answers.
    pub fn spawn(&mut self) {
        let mut child = Command::new(funnel_bin())
            .args([
                "serve",
                "--nats-url",
                &self.nats_url,
                "--http",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(&self.data_dir)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("FUNNEL_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start funnel serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("funnel: serving http://") {
                    let _ = tx.send(rest.split('/').next().unwrap_or_default().to_owned());
                }
            }
        });
        self.child = Some(child);
        self.http = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("funnel serve should print its address");
        let http = self.http.clone();
        wait_for(Duration::from_secs(30), "funnel serve /health", || {
            try_get(&http, "/health").is_some_and(|(s, _)| s == 200)
        });
    }

    /// Replaces the environment used by the next [`Service::spawn`].
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        try_get(&self.http, path).unwrap_or_else(|| panic!("GET {path}: no answer"))
    }

    /// The body exactly as the service sent it.
    pub fn get_text(&self, path: &str) -> (u16, String) {
        try_get_text(&self.http, path).unwrap_or_else(|| panic!("GET {path}: no answer"))
    }

    pub fn head_seq(&self) -> u64 {
        self.get("/health").1["log"]["seq"]
            .as_u64()
            .expect("health has log.seq")
    }

    /// Waits until the ledger holds `seq` entries and the projection has caught up.
    pub fn wait_for_seq(&self, seq: u64, limit: Duration) {
        wait_for(limit, &format!("ledger and projection at seq {seq}"), || {
            try_get(&self.http, "/health")
                .is_some_and(|(_, h)| h["log"]["seq"].as_u64() == Some(seq) && h["projected_seq"].as_u64() == Some(seq))
        });
    }

    /// Waits until a publish of unknown length has landed: the ledger holds more than
    /// `more_than` entries, the projection has caught up, and the head stays put for 300 ms.
    pub fn wait_settled(&self, more_than: u64, limit: Duration) {
        wait_for(limit, "ingest to settle", || {
            let (_, h) = self.get("/health");
            h["log"]["seq"].as_u64().unwrap_or(0) > more_than && h["log"]["seq"] == h["projected_seq"] && {
                std::thread::sleep(Duration::from_millis(300));
                self.get("/health").1["log"] == h["log"]
            }
        });
    }

    /// Waits for the process to exit on its own (e.g. an injected crash); returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(started.elapsed() < limit, "funnel serve did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no shutdown, no checkpoint.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: the graceful path.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal HTTP/1.1 GET; `None` if nothing answers.
pub fn try_get(addr: &str, path: &str) -> Option<(u16, Value)> {
    let (status, body) = try_get_text(addr, path)?;
    Some((status, serde_json::from_str(&body).unwrap_or(Value::String(body))))
}

/// A minimal HTTP/1.1 GET returning the body as sent.
pub fn try_get_text(addr: &str, path: &str) -> Option<(u16, String)> {
    try_get_with(addr, path, &[]).map(|(status, _, body)| (status, body))
}

/// A GET with extra request headers: status, response head (lower case) and body.
pub fn try_get_with(addr: &str, path: &str, headers: &[(&str, &str)]) -> Option<(u16, String, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some((status, head, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Raw NATS protocol over TCP, written here from the protocol docs: the "client that is not
/// ours". Publishes with or without headers; `flush` waits for the server's PONG.
pub struct RawNats {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RawNats {
    pub fn connect(port: u16) -> RawNats {
        RawNats::connect_as(port, None)
    }

    /// Connects as the user of `seed` (an nkey seed): the CONNECT carries its public key and
    /// its signature of the server's nonce, as the protocol docs describe.
    pub fn connect_as(port: u16, seed: Option<&str>) -> RawNats {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect nats");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut info = String::new();
        reader.read_line(&mut info).expect("INFO");
        let info: Value = serde_json::from_str(info.strip_prefix("INFO ").unwrap_or_else(|| panic!("greeting {info}")))
            .expect("INFO json");
        let mut connect = serde_json::json!({"verbose": false, "pedantic": false, "headers": true, "protocol": 1});
        if let Some(seed) = seed {
            let pair = nkeys::KeyPair::from_seed(seed).expect("seed");
            let nonce = info["nonce"]
                .as_str()
                .expect("the server sends a nonce when it wants nkeys");
            let signature = pair.sign(nonce.as_bytes()).expect("sign");
            connect["nkey"] = pair.public_key().into();
            connect["sig"] = base64_url(&signature).into();
        }
        let mut writer = stream;
        writer
            .write_all(format!("CONNECT {connect}\r\n").as_bytes())
            .expect("CONNECT");
        RawNats { reader, writer }
    }

    /// Sends PING and reads until PONG: `Err` with the server's `-ERR` line if one comes
    /// first (a refused login or a permissions violation), or if the server hangs up.
    pub fn check(&mut self) -> Result<(), String> {
        if self.writer.write_all(b"PING\r\n").is_err() {
            return Err("connection closed".into());
        }
        // Up to the PONG (or the server hanging up), so the next call starts clean.
        let mut refusal = None;
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return Err(refusal.unwrap_or_else(|| "connection closed".into())),
                Ok(_) if line.starts_with("-ERR") => refusal = Some(line.trim().to_owned()),
                Ok(_) if line.starts_with("PONG") => return refusal.map_or(Ok(()), Err),
                Ok(_) => {}
            }
        }
    }

    /// Subscribes to `subject`; `Err` with the server's refusal.
    pub fn try_subscribe(&mut self, subject: &str) -> Result<(), String> {
        write!(self.writer, "SUB {subject} 9\r\n").expect("SUB");
        let checked = self.check();
        write!(self.writer, "UNSUB 9\r\n").expect("UNSUB");
        checked
    }

    /// Publishes `payload`; `Err` with the server's refusal.
    pub fn try_publish(&mut self, subject: &str, payload: &[u8]) -> Result<(), String> {
        self.publish(subject, &[], payload);
        self.check()
    }

    /// A request (a JetStream API call, say): the first reply, or `Err` with the server's
    /// refusal to let this user publish on `subject`.
    pub fn try_request(&mut self, subject: &str, payload: &[u8]) -> Result<Value, String> {
        let inbox = format!("_INBOX.test.{}", std::process::id());
        write!(self.writer, "SUB {inbox} 8\r\n").expect("SUB");
        write!(self.writer, "PUB {subject} {inbox} {}\r\n", payload.len()).expect("PUB");
        self.writer.write_all(payload).expect("payload");
        self.writer.write_all(b"\r\nPING\r\n").expect("CRLF");
        let (mut reply, mut pong) = (None, false);
        // Until both the answer (or refusal) and the PONG of this request's PING are in, so the
        // next call starts clean.
        while reply.is_none() || !pong {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("read");
            assert!(!line.is_empty(), "nats closed the connection");
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.first().copied() {
                Some("-ERR") => reply = Some(Err(line.trim().to_owned())),
                Some("PONG") => pong = true,
                Some("MSG") => {
                    let mut body = vec![0; words[words.len() - 1].parse::<usize>().expect("bytes") + 2];
                    self.reader.read_exact(&mut body).expect("body");
                    body.truncate(body.len() - 2);
                    reply = Some(Ok(serde_json::from_slice(&body).unwrap_or(Value::Null)));
                }
                _ => {}
            }
        }
        write!(self.writer, "UNSUB 8\r\n").expect("UNSUB");
        reply.unwrap_or(Err("no reply".into()))
    }

    /// PUB or HPUB of `payload` on `subject` with the given headers.
    pub fn publish(&mut self, subject: &str, headers: &[(&str, &str)], payload: &[u8]) {
        if headers.is_empty() {
            write!(self.writer, "PUB {subject} {}\r\n", payload.len()).expect("PUB");
        } else {
            let mut head = String::from("NATS/1.0\r\n");
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            write!(
                self.writer,
                "HPUB {subject} {} {}\r\n{head}",
                head.len(),
                head.len() + payload.len()
            )
            .expect("HPUB");
        }
        self.writer.write_all(payload).expect("payload");
        self.writer.write_all(b"\r\n").expect("CRLF");
    }

    /// Publishes a contract event on its subject with `Nats-Msg-Id` = its id.
    pub fn publish_event(&mut self, event: &Value) {
        let subject = subject_of(event);
        let id = event["id"].as_str().expect("event id");
        self.publish(&subject, &[("Nats-Msg-Id", id)], event.to_string().as_bytes());
    }

    /// Sends `payload` to `subject` with a reply inbox and returns the `want` replies that
    /// come back (a JetStream API answer, or the messages of a pull request), as
    /// (reply subject, payload). Headers, if any, are dropped.
    pub fn request(&mut self, subject: &str, payload: &[u8], want: usize) -> Vec<(String, Vec<u8>)> {
        let inbox = format!("_INBOX.test.{}", std::process::id());
        write!(self.writer, "SUB {inbox} 1\r\n").expect("SUB");
        write!(self.writer, "PUB {subject} {inbox} {}\r\n", payload.len()).expect("PUB");
        self.writer.write_all(payload).expect("payload");
        self.writer.write_all(b"\r\n").expect("CRLF");
        let mut replies = Vec::new();
        while replies.len() < want {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("read");
            assert!(!line.is_empty(), "nats closed the connection");
            assert!(!line.starts_with("-ERR"), "nats error: {line}");
            let words: Vec<&str> = line.split_whitespace().collect();
            // MSG <subject> <sid> [reply] <bytes> | HMSG <subject> <sid> [reply] <hdr> <total>
            let (header_len, total, reply) = match words.first().copied() {
                Some("MSG") => (0, words[words.len() - 1], words.get(3).filter(|_| words.len() == 5)),
                Some("HMSG") => (
                    words[words.len() - 2].parse::<usize>().expect("header bytes"),
                    words[words.len() - 1],
                    words.get(3).filter(|_| words.len() == 6),
                ),
                _ => continue,
            };
            let mut body = vec![0; total.parse::<usize>().expect("bytes") + 2];
            std::io::Read::read_exact(&mut self.reader, &mut body).expect("message body");
            body.truncate(body.len() - 2);
            replies.push((
                reply.map(|r| r.to_string()).unwrap_or_default(),
                body.split_off(header_len),
            ));
        }
        write!(self.writer, "UNSUB 1\r\n").expect("UNSUB");
        replies
    }

    /// Waits until the server has processed everything sent so far.
    pub fn flush(&mut self) {
        self.writer.write_all(b"PING\r\n").expect("PING");
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("read");
            assert!(!line.is_empty(), "nats closed the connection");
            if line.starts_with("PONG") {
                return;
            }
            assert!(!line.starts_with("-ERR"), "nats error: {line}");
        }
    }
}

/// RFC 4648 base64url without padding (the encoding of an nkey signature in CONNECT).
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The subject DESIGN.md §3 assigns to a contract event (computed here, not by our code).
pub fn subject_of(event: &Value) -> String {
    let kind = event["type"].as_str().expect("type");
    let last = match kind {
        "spend" => event["data"]["channel"].as_str().expect("channel").to_owned(),
        "rules" => "global".to_owned(),
        _ => event["lead_id"].as_str().unwrap_or("global").to_owned(),
    };
    format!("funnel.events.{kind}.{last}")
}

/// Runs `scripts/verify_export.py` (the independent verifier) on an export: (ok, its stdout line).
pub fn independent_verify(export: &Path) -> (bool, String) {
    let python = std::env::var("FUNNEL_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/verify_export.py");
    let out = Command::new(python)
        .arg(script)
        .arg(export)
        .output()
        .expect("run scripts/verify_export.py");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}
