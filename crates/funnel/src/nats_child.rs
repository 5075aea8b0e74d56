//! The local nats-server `funnel serve` starts when no --nats-url is given: `deploy/nats-server.conf`
//! with users whose keys are generated into the data dir (see [`crate::nats_auth`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::nats_auth::local_users;
use crate::CliError;

/// Where the binary is looked for, in order, after `$FUNNEL_NATS_SERVER`.
const SEARCH: [&str; 2] = [".tools/venv/bin/nats-server", "nats-server"];
/// How long the server gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);

pub struct NatsChild {
    child: tokio::process::Child,
    pub url: String,
    pid_file: PathBuf,
}

fn binary() -> Result<PathBuf, CliError> {
    if let Ok(path) = std::env::var("FUNNEL_NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    for candidate in SEARCH {
        let path = PathBuf::from(candidate);
        if path.components().count() > 1 && path.exists() {
            return Ok(path);
        }
        if path.components().count() == 1 {
            if let Some(found) = std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(candidate))
                    .find(|f| f.exists())
            }) {
                return Ok(found);
            }
        }
    }
    Err(CliError::Failed(
        "no nats-server found: run scripts/setup.sh, set FUNNEL_NATS_SERVER, or pass --nats-url".into(),
    ))
}

/// Stops a nats-server left behind by a `funnel serve` that was killed.
fn stop_stale(pid_file: &Path) {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<u32>() else { return };
    let is_nats = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("nats-server"))
        .unwrap_or(false);
    if is_nats {
        tracing::warn!(pid, "stopping a nats-server left behind by an earlier run");
        let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
        for _ in 0..50 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = std::fs::remove_file(pid_file);
}

fn free_port() -> Result<u16, CliError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| CliError::Failed(format!("no free port: {e}")))?;
    Ok(listener
        .local_addr()
        .map_err(|e| CliError::Failed(e.to_string()))?
        .port())
}

pub async fn start(data_dir: &Path) -> Result<NatsChild, CliError> {
    let binary = binary()?;
    let pid_file = data_dir.join("nats-server.pid");
    stop_stale(&pid_file);
    let store = data_dir.join("nats");
    let config = data_dir.join("nats-server.conf");
    std::fs::write(&config, include_str!("../../../deploy/nats-server.conf"))
        .map_err(|e| CliError::Failed(format!("write {}: {e}", config.display())))?;
    let users = local_users(data_dir)?;
    let port = free_port()?;
    let child = tokio::process::Command::new(&binary)
        .envs(users.iter().map(|(user, key)| (user.config_variable(), key)))
        .arg("-c")
        .arg(&config)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(&store)
        .arg("-P")
        .arg(&pid_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CliError::Failed(format!("start {}: {e}", binary.display())))?;
    let url = format!("nats://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if tokio::time::Instant::now() > deadline {
            return Err(CliError::Failed(format!(
                "nats-server did not listen on {url} within {START_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(data_dir.join("nats.url"), &url).map_err(|e| CliError::Failed(format!("write nats.url: {e}")))?;
    tracing::info!(%url, binary = %binary.display(), "started nats-server");
    Ok(NatsChild { child, url, pid_file })
}

impl NatsChild {
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_file(&self.pid_file);
    }
}
