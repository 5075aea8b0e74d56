//! Auditor commands that work on a data directory or an export file, with no service running.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use funnel_core::report;
use funnel_ledger::Ledger;

use crate::progress::{clear, Progress};
use crate::serve::{open_ledger, open_ledger_with};
use crate::{CliError, DataDir};

/// Progress of a walk over `total` entries (see [`Progress`]); nothing with `--json`.
fn progress(json: bool, what: &'static str, total: u64) -> impl FnMut(u64) {
    let mut bar = Progress::new(what, Some(total), json);
    move |n| bar.update(n)
}

pub fn verify(data_dir: &Path, json: bool) -> Result<(), CliError> {
    let ledger = open_ledger_with(data_dir, Ledger::open_unchecked)?;
    let v = ledger.verify(progress(json, "verified", ledger.head().seq));
    if json {
        println!("{}", funnel_query::verification_json(&v));
    }
    match &v.first_bad {
        None => {
            if !json {
                eprintln!("{}chain ok: {} entries, head {}", clear(), v.checked, v.head.hash_hex());
            }
            Ok(())
        }
        Some((seq, reason)) => Err(CliError::Damaged(format!(
            "chain broken at seq {seq}: {reason} ({} entries before it check out)",
            v.checked
        ))),
    }
}

pub fn migrate(data_dir: &Path, json: bool) -> Result<(), CliError> {
    let m = funnel_ledger::migrate(&data_dir.join("ledger"), progress(json, "migrated", 0))
        .map_err(|e| CliError::Failed(format!("migrate: {e}")))?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "migrated": m.entries,
                "v1_log": report::Log::from(m.v1_head),
                "log": report::Log::from(m.head),
                "kept": m.kept.display().to_string(),
            })
        );
    } else {
        eprintln!("{}migrated {} entries to chain format {}\n  format-1 head {} (recorded in the new chain's genesis)\n  format-2 head {}\n  old store kept in {}",
            clear(),
            m.entries,
            funnel_ledger::CHAIN_FORMAT,
            m.v1_head.hash_hex(),
            m.head.hash_hex(),
            m.kept.display()
        );
    }
    Ok(())
}

pub fn export(data_dir: &Path, out: Option<PathBuf>, at_seq: Option<u64>, json: bool) -> Result<(), CliError> {
    let ledger = open_ledger(data_dir)?;
    let mut writer: Box<dyn Write> = match &out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| CliError::Failed(format!("create {}: {e}", path.display())))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let quiet = json || out.is_none();
    let head = funnel_ledger::export(
        &ledger,
        &mut writer,
        at_seq,
        progress(quiet, "exported", at_seq.unwrap_or(u64::MAX).min(ledger.head().seq)),
    )
    .map_err(|e| CliError::Failed(format!("export: {e}")))?;
    drop(writer);
    if json && out.is_some() {
        println!(
            "{}",
            serde_json::json!({"exported": head.seq, "log": report::Log::from(head)})
        );
    } else if !quiet {
        eprintln!("{}exported {} entries, head {}", clear(), head.seq, head.hash_hex());
    }
    Ok(())
}

/// Imports an export into an empty data dir, all or nothing: an entry that live ingest would
/// refuse (or that breaks the chain) refuses the whole file, naming its line and reason, and
/// leaves the data dir as it was. (An export is one hash chain: skipping an entry would break
/// every link after it.)
pub fn import(data_dir: &Path, file: Option<PathBuf>, json: bool) -> Result<(), CliError> {
    let ledger = open_ledger(data_dir)?;
    let was_empty = ledger.head().seq == 0;
    let head = match import_into(&ledger, file.as_deref(), json) {
        Ok(head) => head,
        Err(e) => {
            drop(ledger);
            if was_empty {
                // What was staged before the refused line goes: the ledger was empty before.
                let partial = data_dir.join("ledger");
                std::fs::remove_dir_all(&partial).map_err(|r| {
                    CliError::Failed(format!(
                        "{e}; and removing the partial import {}: {r}",
                        partial.display()
                    ))
                })?;
                return Err(CliError::Failed(format!("{e}; nothing was imported")));
            }
            return Err(e);
        }
    };
    if json {
        println!(
            "{}",
            serde_json::json!({"imported": head.seq, "log": report::Log::from(head)})
        );
    } else {
        eprintln!("{}imported {} entries, head {}", clear(), head.seq, head.hash_hex());
    }
    Ok(())
}

fn import_into(ledger: &Ledger, file: Option<&Path>, json: bool) -> Result<funnel_core::LogPosition, CliError> {
    let reader: Box<dyn BufRead> = match file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).map_err(|e| CliError::Failed(format!("open {}: {e}", path.display())))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    // A file's entries are counted first (one line each, after the header), so progress can
    // say how long is left; from stdin only the count and rate are known.
    let total = match file {
        Some(path) if !json => std::fs::File::open(path)
            .map(|f| {
                std::io::BufReader::new(f)
                    .split(b'\n')
                    .filter(|l| l.as_ref().is_ok_and(|l| !l.trim_ascii().is_empty()))
                    .count()
                    .saturating_sub(1) as u64
            })
            .unwrap_or(0),
        _ => 0,
    };
    funnel_ledger::import(ledger, reader, progress(json, "imported", total))
        .map_err(|e| CliError::Failed(format!("import: {e}")))
}

/// A report and its parameters, for `replay` (offline) and `report` (live).
#[derive(clap::Args)]
pub struct ReportArgs {
    /// funnel, velocity, sla, rejections, cost, plan, lead, attribution or explain.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(funnel_query::REPORTS))]
    report: String,
    /// The lead, for `lead` and `explain`.
    #[arg(long)]
    lead: Option<String>,
    #[command(flatten)]
    params: ReportParams,
}

/// The parameters every report command takes; each report accepts the ones it names.
#[derive(clap::Args)]
pub struct ReportParams {
    /// For `attribution` and `explain`: `all`, a model, or a comma-separated list.
    #[arg(long)]
    model: Option<String>,
    /// Business time: only events that occurred by then (RFC 3339 or YYYY-MM-DD; default now).
    #[arg(long)]
    as_of: Option<String>,
    /// Recording time: only entries recorded by then.
    #[arg(long)]
    known_at: Option<String>,
    /// Log position: only entries up to this seq.
    #[arg(long)]
    at_seq: Option<u64>,
    /// Window start (inclusive).
    #[arg(long)]
    from: Option<String>,
    /// Window end (exclusive).
    #[arg(long)]
    to: Option<String>,
    /// Breakdown: channel, campaign (or producer, for funnel).
    #[arg(long)]
    by: Option<String>,
    /// For `plan`: the revenue target in integer minor units.
    #[arg(long)]
    revenue_target_minor: Option<i64>,
    /// For `plan`: the target's currency.
    #[arg(long)]
    currency: Option<String>,
    /// Print the JSON the HTTP API answers.
    #[arg(long)]
    json: bool,
}

impl ReportArgs {
    /// The query string the HTTP API takes for these arguments.
    pub fn query(&self) -> String {
        serde_urlencoded::to_string(self.pairs()).unwrap_or_default()
    }

    /// The request `funnel.query.<report>` takes over NATS: the same parameters as a JSON
    /// object, with `lead_id` for `lead` and `explain`.
    pub fn nats_request(&self) -> (String, Vec<u8>) {
        let mut request: serde_json::Map<String, serde_json::Value> = self
            .pairs()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into()))
            .collect();
        if let Some(lead) = &self.lead {
            request.insert("lead_id".into(), lead.clone().into());
        }
        (
            format!("{}.{}", crate::query_service::PREFIX, self.report),
            serde_json::Value::Object(request).to_string().into_bytes(),
        )
    }

    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs: Vec<(&'static str, String)> = Vec::new();
        for (key, value) in [
            ("as_of", &self.params.as_of),
            ("known_at", &self.params.known_at),
            ("from", &self.params.from),
            ("to", &self.params.to),
            ("by", &self.params.by),
            ("currency", &self.params.currency),
            ("model", &self.params.model),
        ] {
            if let Some(v) = value {
                pairs.push((key, v.clone()));
            }
        }
        if let Some(seq) = self.params.at_seq {
            pairs.push(("at_seq", seq.to_string()));
        }
        if let Some(target) = self.params.revenue_target_minor {
            pairs.push(("revenue_target_minor", target.to_string()));
        }
        pairs
    }

    /// The HTTP path of this report.
    pub fn path(&self) -> String {
        match self.report.as_str() {
            "lead" => format!(
                "/v1/leads/{}?{}",
                self.lead.as_deref().unwrap_or_default(),
                self.query()
            ),
            "explain" => {
                format!(
                    "/v1/attribution/explain/{}?{}",
                    self.lead.as_deref().unwrap_or_default(),
                    self.query()
                )
            }
            name => format!("/v1/{name}?{}", self.query()),
        }
    }

    /// Prints a report's JSON: as is with --json, as a table or `key  value` lines otherwise.
    pub fn print(&self, body: &[u8]) -> Result<(), CliError> {
        if self.params.json {
            println!("{}", String::from_utf8_lossy(body));
            return Ok(());
        }
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| CliError::Failed(e.to_string()))?;
        let text = crate::human::render(&self.report, &value).unwrap_or_else(|| format!("{value:#}\n"));
        print!("{text}");
        Ok(())
    }
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    report: ReportArgs,
    #[command(flatten)]
    data: DataDir,
    /// Replay this export file instead of --data-dir (it is imported into a scratch ledger).
    #[arg(long)]
    export: Option<PathBuf>,
}

/// Removes a scratch directory when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn replay(args: ReplayArgs) -> Result<(), CliError> {
    let report = &args.report;
    let bad = |e: funnel_query::ApiError| CliError::Failed(e.message);
    let query = report.query();
    let request = funnel_query::Request::parse(&report.report, report.lead.as_deref(), Some(&query)).map_err(bad)?;
    let (_scratch, ledger) = match &args.export {
        Some(file) => {
            let dir = std::env::temp_dir().join(format!("funnel-replay-{}", std::process::id()));
            let scratch = Scratch(dir.clone());
            let ledger = Ledger::open(&dir).map_err(|e| CliError::Failed(format!("scratch ledger: {e}")))?;
            import_into(&ledger, Some(file), report.params.json)?;
            (Some(scratch), ledger)
        }
        None => (None, open_ledger(&args.data.data_dir)?),
    };
    let seq = funnel_query::resolve_seq(&ledger, &request.travel).map_err(bad)?;
    let engine = funnel_engine::replay(
        &ledger,
        seq,
        progress(report.params.json, "replayed", seq.unwrap_or(ledger.head().seq)),
    )
    .map_err(|e| CliError::Failed(format!("replay: {e}")))?;
    if !report.params.json {
        eprint!("{}", clear());
    }
    report.print(&request.answer(&engine, &ledger).map_err(bad)?)
}

/// `funnel attribution` and `funnel explain`: offline by default, live with --url.
#[derive(clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    params: ReportParams,
    /// Ask this running service instead of replaying offline.
    #[arg(long)]
    url: Option<String>,
    #[command(flatten)]
    data: DataDir,
    /// Replay this export file instead of --data-dir.
    #[arg(long)]
    export: Option<PathBuf>,
}

impl AuditArgs {
    /// Runs `report` ("attribution" or "explain") live or offline.
    pub async fn run(self, report: &str, lead: Option<String>) -> Result<(), CliError> {
        let args = ReportArgs {
            report: report.to_owned(),
            lead,
            params: self.params,
        };
        match self.url {
            Some(url) => crate::live_report::report(&url, &args).await,
            None => replay(ReplayArgs {
                report: args,
                data: self.data,
                export: self.export,
            }),
        }
    }
}
