//! How `funnel` proves who it is to NATS: user/password, an nkey seed, a `.creds` file, TLS with
//! a CA (and a client certificate), from flags or the environment. With none of them, the keys
//! `funnel serve` generated for its own nats-server in the data dir are used, if there are any.

use std::path::{Path, PathBuf};

use crate::CliError;

/// Directory of the data dir holding the seeds of the local nats-server's users.
const KEYS_DIR: &str = "nats-keys";

/// The three users of `deploy/nats-server.conf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsUser {
    Service,
    Producer,
    Auditor,
}

impl NatsUser {
    pub const ALL: [NatsUser; 3] = [NatsUser::Service, NatsUser::Producer, NatsUser::Auditor];

    fn name(self) -> &'static str {
        match self {
            NatsUser::Service => "service",
            NatsUser::Producer => "producer",
            NatsUser::Auditor => "auditor",
        }
    }

    /// The variable `deploy/nats-server.conf` reads this user's public nkey from.
    pub fn config_variable(self) -> String {
        format!("FUNNEL_{}_NKEY", self.name().to_uppercase())
    }

    /// Where the local nats-server's seed for this user is kept.
    pub fn seed_file(self, data_dir: &Path) -> PathBuf {
        data_dir.join(KEYS_DIR).join(format!("{}.nk", self.name()))
    }
}

/// Credentials for NATS. At most one of user/password, nkey and creds.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct NatsAuth {
    /// User name (with --nats-password).
    #[arg(long, env = "FUNNEL_NATS_USER", requires = "nats_password", conflicts_with_all = ["nats_nkey", "nats_creds"])]
    nats_user: Option<String>,
    #[arg(long, env = "FUNNEL_NATS_PASSWORD", requires = "nats_user", hide_env_values = true)]
    nats_password: Option<String>,
    /// File holding an nkey seed (`SU…`).
    #[arg(long, env = "FUNNEL_NATS_NKEY", conflicts_with = "nats_creds")]
    nats_nkey: Option<PathBuf>,
    /// A `.creds` file (user JWT and seed, decentralised auth).
    #[arg(long, env = "FUNNEL_NATS_CREDS")]
    nats_creds: Option<PathBuf>,
    /// PEM file of the CA that signed the server's certificate: TLS is then required.
    #[arg(long, env = "FUNNEL_NATS_CA")]
    nats_ca: Option<PathBuf>,
    /// Client certificate (PEM), for servers that verify clients (with --nats-key).
    #[arg(long, env = "FUNNEL_NATS_CERT", requires = "nats_key")]
    nats_cert: Option<PathBuf>,
    #[arg(long, env = "FUNNEL_NATS_KEY", requires = "nats_cert")]
    nats_key: Option<PathBuf>,
}

impl NatsAuth {
    /// Connects to `url` as `user`: with the credentials given, or else with the seed the local
    /// nats-server of `data_dir` generated for `user`, or else with none.
    pub async fn connect(
        &self,
        url: &str,
        data_dir: &Path,
        user: NatsUser,
        name: &str,
    ) -> Result<async_nats::Client, CliError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .map_err(|e| CliError::Failed(format!("read {}: {e}", path.display())))
        };
        let mut options = async_nats::ConnectOptions::new().name(name);
        if let (Some(user), Some(password)) = (&self.nats_user, &self.nats_password) {
            options = options.user_and_password(user.clone(), password.clone());
        } else if let Some(seed) = &self.nats_nkey {
            options = options.nkey(read(seed)?);
        } else if let Some(creds) = &self.nats_creds {
            options = options
                .credentials_file(creds)
                .await
                .map_err(|e| CliError::Failed(format!("--nats-creds {}: {e}", creds.display())))?;
        } else if user.seed_file(data_dir).exists() {
            options = options.nkey(read(&user.seed_file(data_dir))?);
        }
        if let Some(ca) = &self.nats_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.nats_cert, &self.nats_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        options
            .connect(url)
            .await
            .map_err(|e| CliError::Failed(format!("connect to NATS at {url} as {}: {e}", user.name())))
    }
}

/// The local nats-server's users: their public nkeys, generated (seeds written to the data dir,
/// readable by the owner only) the first time.
pub fn local_users(data_dir: &Path) -> Result<Vec<(NatsUser, String)>, CliError> {
    let dir = data_dir.join(KEYS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| CliError::Failed(format!("create {}: {e}", dir.display())))?;
    NatsUser::ALL
        .iter()
        .map(|&user| {
            let file = user.seed_file(data_dir);
            let pair = match std::fs::read_to_string(&file) {
                Ok(seed) => nkeys::KeyPair::from_seed(seed.trim())
                    .map_err(|e| CliError::Failed(format!("{}: not an nkey seed: {e}", file.display())))?,
                Err(_) => {
                    let pair = nkeys::KeyPair::new_user();
                    let seed = pair.seed().map_err(|e| CliError::Failed(format!("nkey seed: {e}")))?;
                    write_private(&file, &seed)?;
                    pair
                }
            };
            Ok((user, pair.public_key()))
        })
        .collect()
}

fn write_private(file: &Path, text: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(file)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
        .map_err(|e| CliError::Failed(format!("write {}: {e}", file.display())))
}
