//! NATS access control, against a real nats-server running `deploy/nats-server.conf`: only
//! known users get in; producers publish events and nothing else; the service consumes, files
//! refusals in the DLQ and manages its streams; auditors only read. Every refusal is the
//! server's own `-ERR`, seen by a raw-protocol client that is not ours.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{funnel_bin, NatsServer, RawNats, Service, TempDir};

/// A user of the deploy configuration: its seed, and the variable carrying its public key.
struct User {
    seed: String,
    public: String,
}

impl User {
    fn new() -> User {
        let pair = nkeys::KeyPair::new_user();
        User {
            seed: pair.seed().expect("seed"),
            public: pair.public_key(),
        }
    }

    fn seed_file(&self, dir: &Path, name: &str) -> String {
        let path = dir.join(format!("{name}.nk"));
        std::fs::write(&path, &self.seed).expect("write seed");
        path.to_string_lossy().into_owned()
    }
}

/// The deploy configuration with three fresh users.
fn deploy_server() -> (NatsServer, User, User, User) {
    let (service, producer, auditor) = (User::new(), User::new(), User::new());
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats-server.conf");
    let env = [
        ("FUNNEL_SERVICE_NKEY".to_owned(), service.public.clone()),
        ("FUNNEL_PRODUCER_NKEY".to_owned(), producer.public.clone()),
        ("FUNNEL_AUDITOR_NKEY".to_owned(), auditor.public.clone()),
    ];
    (NatsServer::start_with(Some(&config), &env), service, producer, auditor)
}

/// Runs `funnel` with `args` to its end: exit code and stderr.
fn run_funnel(args: &[&str]) -> (Option<i32>, String) {
    let out = support::funnel(args);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn refused(result: Result<impl std::fmt::Debug, String>, what: &str, refusals: &mut u32) {
    match result {
        Err(e) => {
            assert!(
                e.contains("Permissions Violation") || e.contains("Authorization Violation"),
                "{what}: refused for another reason: {e}"
            );
            *refusals += 1;
        }
        Ok(v) => panic!("{what}: allowed ({v:?})"),
    }
}

#[test]
fn only_known_users_get_in() {
    let (nats, _service, _producer, _auditor) = deploy_server();
    let dir = TempDir::new("nats-login");
    let mut refusals = 0;

    refused(RawNats::connect(nats.port).check(), "anonymous login", &mut refusals);
    let stranger = User::new();
    refused(
        RawNats::connect_as(nats.port, Some(&stranger.seed)).check(),
        "a key the server does not know",
        &mut refusals,
    );

    // Our own binaries without credentials: a clear failure, at once.
    let data = dir.path().join("data");
    let data = data.to_string_lossy();
    let (code, stderr) = run_funnel(&[
        "serve",
        "--nats-url",
        &nats.url,
        "--http",
        "127.0.0.1:0",
        "--data-dir",
        &data,
    ]);
    assert_eq!(code, Some(1), "serve without credentials: {stderr}");
    assert!(stderr.to_lowercase().contains("authorization"), "{stderr}");
    let stranger_seed = stranger.seed_file(dir.path(), "stranger");
    let (code, stderr) = run_funnel(&[
        "simulate",
        "--leads",
        "3",
        "--nats-url",
        &nats.url,
        "--nats-nkey",
        &stranger_seed,
        "--data-dir",
        &data,
    ]);
    assert_eq!(code, Some(1), "simulate with an unknown key: {stderr}");
    assert!(stderr.to_lowercase().contains("authorization"), "{stderr}");
    refusals += 2;
    eprintln!("refused {refusals} unauthorised logins");
}

#[test]
fn a_producer_publishes_events_and_nothing_else_an_auditor_only_reads() {
    let (nats, service_user, producer, auditor) = deploy_server();
    let dir = TempDir::new("nats-roles");
    let service_seed = service_user.seed_file(dir.path(), "service");
    let producer_seed = producer.seed_file(dir.path(), "producer");
    let service = Service::start_as(&nats, &dir.path().join("data"), &[], &["--nats-nkey", &service_seed]);

    // The producer's way in: `funnel emit` with its seed. One valid event and one the
    // service refuses, which it must be allowed to file in the DLQ.
    let events = dir.path().join("events.ndjson");
    let touch = json!({"id": "a-1", "type": "touch", "lead_id": "L1",
        "occurred_at": "2026-03-01T09:00:00Z", "data": {"channel": "webinar"}});
    std::fs::write(&events, format!("{touch}\n")).expect("write events");
    let data = service.data_dir.to_string_lossy().into_owned();
    let (code, stderr) = run_funnel(&[
        "emit",
        "--file",
        &events.to_string_lossy(),
        "--nats-url",
        &nats.url,
        "--nats-nkey",
        &producer_seed,
        "--data-dir",
        &data,
    ]);
    assert_eq!(code, Some(0), "emit as the producer: {stderr}");
    let mut as_producer = RawNats::connect_as(nats.port, Some(&producer.seed));
    as_producer.check().expect("the producer logs in");
    as_producer
        .try_publish("funnel.events.touch.L2", b"{not json")
        .expect("a producer may publish any bytes on funnel.events.>");
    service.wait_for_seq(1, Duration::from_secs(30));
    let mut as_auditor = RawNats::connect_as(nats.port, Some(&auditor.seed));
    let dlq = || {
        let mut auditor = RawNats::connect_as(nats.port, Some(&auditor.seed));
        auditor
            .try_request("$JS.API.STREAM.INFO.FUNNEL_DLQ", b"")
            .expect("an auditor reads stream state")["state"]["messages"]
            .as_u64()
    };
    support::wait_for(Duration::from_secs(30), "the refusal in the DLQ", || dlq() == Some(1));

    let mut refusals = 0;
    // A producer cannot write the DLQ, manage streams or consumers, or read what others publish.
    refused(
        as_producer.try_publish("funnel.dlq.malformed", b"{}"),
        "producer publishes to the DLQ",
        &mut refusals,
    );
    for api in [
        "$JS.API.STREAM.DELETE.FUNNEL",
        "$JS.API.STREAM.PURGE.FUNNEL",
        "$JS.API.STREAM.UPDATE.FUNNEL",
        "$JS.API.STREAM.DELETE.FUNNEL_DLQ",
        "$JS.API.CONSUMER.DELETE.FUNNEL.funnel-ingest",
        "$JS.API.CONSUMER.INFO.FUNNEL.funnel-ingest",
        "$JS.API.CONSUMER.MSG.NEXT.FUNNEL.funnel-ingest",
        "$JS.API.CONSUMER.CREATE.FUNNEL",
        "$JS.API.STREAM.MSG.GET.FUNNEL",
        "$JS.ACK.FUNNEL.funnel-ingest.1.1.1.0.0",
    ] {
        refused(
            as_producer.try_request(api, b"{}"),
            &format!("producer: {api}"),
            &mut refusals,
        );
    }
    for subject in ["funnel.events.>", "funnel.dlq.>", ">"] {
        refused(
            as_producer.try_subscribe(subject),
            &format!("producer subscribes to {subject}"),
            &mut refusals,
        );
    }

    // An auditor reads stream state and stored messages, and writes nothing.
    let first = as_auditor
        .try_request("$JS.API.STREAM.MSG.GET.FUNNEL", br#"{"seq":1}"#)
        .expect("an auditor reads a stored event");
    assert_eq!(first["message"]["seq"], 1, "{first}");
    refused(
        as_auditor.try_publish("funnel.events.touch.L3", touch.to_string().as_bytes()),
        "auditor publishes an event",
        &mut refusals,
    );
    refused(
        as_auditor.try_publish("funnel.dlq.invalid", b"{}"),
        "auditor publishes to the DLQ",
        &mut refusals,
    );
    for api in [
        "$JS.API.STREAM.DELETE.FUNNEL",
        "$JS.API.STREAM.PURGE.FUNNEL",
        "$JS.API.CONSUMER.MSG.NEXT.FUNNEL.funnel-ingest",
        "$JS.API.CONSUMER.DELETE.FUNNEL.funnel-ingest",
    ] {
        refused(
            as_auditor.try_request(api, b"{}"),
            &format!("auditor: {api}"),
            &mut refusals,
        );
    }
    refused(
        as_auditor.try_subscribe("funnel.events.>"),
        "auditor subscribes to live events",
        &mut refusals,
    );

    // Nothing was lost or touched: both events still in the stream, the valid one in the
    // ledger once, the refusal in the DLQ once, the service up.
    let stream = as_auditor
        .try_request("$JS.API.STREAM.INFO.FUNNEL", b"")
        .expect("stream info");
    assert_eq!(stream["state"]["messages"], 2, "{stream}");
    assert_eq!(dlq(), Some(1));
    assert_eq!(service.head_seq(), 1);
    assert_eq!(service.get("/health").0, 200);
    eprintln!("refused {refusals} unauthorised attempts by a producer and an auditor");
}

/// Creates a CA and a server certificate for 127.0.0.1 with the openssl CLI.
fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=funnel test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
    ]
    .concat());
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

#[test]
fn serve_and_emit_log_in_with_a_password_over_tls_checked_against_a_ca() {
    let dir = TempDir::new("nats-tls");
    certificates(dir.path());
    let config = dir.path().join("tls.conf");
    std::fs::write(
        &config,
        format!(
            "tls {{ cert_file: \"{0}/server.pem\", key_file: \"{0}/server.key\" }}\n\
             authorization {{ users: [ {{ user: funnel, password: \"s3cret pass\" }} ] }}\n",
            dir.path().display()
        ),
    )
    .expect("config");
    let nats = NatsServer::start_with(Some(&config), &[]);
    let ca = dir.path().join("ca.pem").to_string_lossy().into_owned();
    let data = dir.path().join("data").to_string_lossy().into_owned();
    let login = [
        "--nats-user",
        "funnel",
        "--nats-password",
        "s3cret pass",
        "--nats-ca",
        &ca,
    ];

    // Without the CA the server's certificate is not trusted; with a wrong password, no login.
    let serve = |login: &[&str]| {
        let args = [
            "serve",
            "--nats-url",
            &nats.url,
            "--http",
            "127.0.0.1:0",
            "--data-dir",
            &data,
        ];
        run_funnel(&[&args[..], login].concat())
    };
    let (code, stderr) = serve(&["--nats-user", "funnel", "--nats-password", "s3cret pass"]);
    assert_eq!(code, Some(1), "serve without the CA: {stderr}");
    let (code, stderr) = serve(&["--nats-user", "funnel", "--nats-password", "wrong", "--nats-ca", &ca]);
    assert_eq!(code, Some(1), "serve with a wrong password: {stderr}");
    assert!(stderr.to_lowercase().contains("authorization"), "{stderr}");

    let service = Service::start_as(&nats, &dir.path().join("data"), &[], &login);
    let events = dir.path().join("events.ndjson");
    let touch = json!({"id": "t-1", "type": "touch", "lead_id": "L1",
        "occurred_at": "2026-03-01T09:00:00Z", "data": {"channel": "webinar"}});
    std::fs::write(&events, format!("{touch}\n")).expect("events");
    let (code, stderr) = run_funnel(
        &[
            &[
                "emit",
                "--file",
                &events.to_string_lossy(),
                "--nats-url",
                &nats.url,
                "--data-dir",
                &data,
            ][..],
            &login,
        ]
        .concat(),
    );
    assert_eq!(code, Some(0), "emit over TLS: {stderr}");
    service.wait_for_seq(1, Duration::from_secs(30));
}

#[test]
fn the_nats_server_serve_starts_itself_lets_in_only_the_keys_it_generated() {
    use std::io::BufRead;
    let dir = TempDir::new("nats-own");
    let data = dir.path().join("data");
    let mut serve = Command::new(funnel_bin())
        .args(["serve", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("FUNNEL_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("funnel serve");
    let stdout = serve.stdout.take().expect("stdout");
    let http = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            Some(
                line.strip_prefix("funnel: serving http://")?
                    .split('/')
                    .next()?
                    .to_owned(),
            )
        })
        .expect("serve prints its address");
    let url = std::fs::read_to_string(data.join("nats.url")).expect("nats.url");
    let port: u16 = url
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let seed = |name: &str| std::fs::read_to_string(data.join(format!("nats-keys/{name}.nk"))).expect("seed");

    let mut refusals = 0;
    refused(
        RawNats::connect(port).check(),
        "anonymous login to serve's server",
        &mut refusals,
    );
    for name in ["service", "producer", "auditor"] {
        assert!(seed(name).starts_with("SU"), "{name}: an nkey user seed");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let file = data.join(format!("nats-keys/{name}.nk"));
            let mode = std::fs::metadata(file).expect("seed file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}.nk is readable by its owner only");
        }
    }
    refused(
        RawNats::connect_as(port, Some(&seed("producer"))).try_publish("funnel.dlq.invalid", b"{}"),
        "producer to the DLQ",
        &mut refusals,
    );
    // `simulate` with the same data dir logs in as the producer, and the service ingests it.
    let (code, stderr) = run_funnel(&["simulate", "--leads", "5", "--data-dir", &data.to_string_lossy()]);
    assert_eq!(code, Some(0), "{stderr}");
    let stream = RawNats::connect_as(port, Some(&seed("auditor")))
        .try_request("$JS.API.STREAM.INFO.FUNNEL", b"")
        .expect("an auditor reads stream state");
    let published = stream["state"]["messages"].as_u64().expect("messages");
    assert!(published > 0, "{stream}");
    support::wait_for(Duration::from_secs(30), "the simulated events stored", || {
        support::try_get(&http, "/health").is_some_and(|(_, h)| h["log"]["seq"].as_u64() == Some(published))
    });
    // SIGTERM: serve stops its nats-server on the way out (a SIGKILL would leave it running).
    let _ = Command::new("kill").args(["-TERM", &serve.id().to_string()]).status();
    let started = Instant::now();
    while serve.try_wait().expect("wait").is_none() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = serve.kill();
    let _ = serve.wait();
    if let Ok(pid) = std::fs::read_to_string(data.join("nats-server.pid")) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
    eprintln!("refused {refusals} unauthorised attempts on serve's own nats-server");
}
