//! Servers the benchmarks need, on 127.0.0.1 only, stopped by PID on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

pub fn wait_port(port: u16, what: &str) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("funnel-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Bytes under a directory.
pub fn disk_bytes(dir: &Path) -> u64 {
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

/// A child process killed (by PID) on drop.
pub struct Process {
    pub child: Child,
    pub port: u16,
    _dir: Option<Scratch>,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn nats_server(binary: &Path) -> Process {
    let dir = Scratch::new(&format!("nats-{}", free_port()));
    let port = free_port();
    let child = Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server");
    wait_port(port, "nats-server");
    Process {
        child,
        port,
        _dir: Some(dir),
    }
}

/// `funnel serve` on an existing data dir against a NATS URL.
pub fn funnel_serve(binary: &Path, nats_url: &str, data_dir: &Path) -> Process {
    let port = free_port();
    let child = Command::new(binary)
        .args([
            "serve",
            "--nats-url",
            nats_url,
            "--http",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data_dir)
        .env("FUNNEL_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start funnel serve");
    wait_port(port, "funnel serve");
    Process {
        child,
        port,
        _dir: None,
    }
}

/// Resident memory of a process now and at its peak, in bytes (from /proc).
pub fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A PostgreSQL server from Debian's packages, in a scratch cluster owned by `postgres`.
pub struct Postgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl Postgres {
    pub fn start() -> Result<Postgres, String> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| format!("no PostgreSQL under /usr/lib/postgresql ({e}); scripts/bench.sh installs it"))?
            .flatten()
            .map(|e| e.path().join("bin"))
            .max()
            .ok_or("no PostgreSQL version installed")?;
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("funnel-bench-pg-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let as_postgres = |program: &str, args: &[&str]| -> Result<(), String> {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"])
                .arg(bin.join(program))
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            cmd.status()
                .map_err(|e| e.to_string())?
                .success()
                .then_some(())
                .ok_or(format!("{program} failed"))
        };
        Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .map_err(|e| e.to_string())?;
        let data = dir.join("data");
        let d = data.to_string_lossy().into_owned();
        as_postgres("initdb", &["-D", &d, "-A", "trust", "-U", "bench"])?;
        let options = format!("-p {port} -k {} -c listen_addresses=127.0.0.1", dir.display());
        let log = dir.join("log").to_string_lossy().into_owned();
        as_postgres("pg_ctl", &["-D", &d, "-o", &options, "-l", &log, "-w", "start"])?;
        Ok(Postgres { port, dir, bin })
    }

    /// psql against this server with `args`; its stdout, or its stderr as the error.
    fn psql(&self, args: &[&std::ffi::OsStr]) -> Result<String, String> {
        let port = self.port.to_string();
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "bench",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs SQL from a file; the wall time of the whole run.
    pub fn run_file(&self, file: &Path) -> Result<Duration, String> {
        let started = Instant::now();
        self.psql(&["-q".as_ref(), "-f".as_ref(), file.as_os_str()])?;
        Ok(started.elapsed())
    }

    /// Runs one query and returns its unaligned output.
    pub fn query(&self, sql: &str) -> Result<String, String> {
        self.psql(&["-At".as_ref(), "-c".as_ref(), sql.as_ref()])
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Stopped by the PID in its pid file.
        if let Ok(text) = std::fs::read_to_string(self.dir.join("data/postmaster.pid")) {
            if let Some(pid) = text.lines().next() {
                let _ = Command::new("kill").args(["-INT", pid]).status();
                for _ in 0..100 {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
