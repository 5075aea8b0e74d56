//! Auditor commands that work on a data directory or an export file, with no service running.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use funnel_core::report::{self, Counts};
use funnel_ledger::Ledger;
use funnel_query::Params;

use crate::serve::{open_ledger, open_ledger_with};
use crate::{CliError, DataDir};

fn progress(json: bool, what: &'static str) -> impl FnMut(u64) {
    move |n| {
        if !json {
            eprint!("\r{what} {n} entries");
        }
    }
}

pub fn verify(data_dir: &Path, json: bool) -> Result<(), CliError> {
    let ledger = open_ledger_with(data_dir, Ledger::open_unchecked)?;
    let v = ledger.verify(progress(json, "verified"));
    if json {
        println!("{}", funnel_query::verification_json(&v));
    }
    match &v.first_bad {
        None => {
            if !json {
                eprintln!("\rchain ok: {} entries, head {}", v.checked, v.head.hash_hex());
            }
            Ok(())
        }
        Some((seq, reason)) => Err(CliError::Damaged(format!(
            "chain broken at seq {seq}: {reason} ({} entries before it check out)",
            v.checked
        ))),
    }
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
    let head = funnel_ledger::export(&ledger, &mut writer, at_seq, progress(quiet, "exported"))
        .map_err(|e| CliError::Failed(format!("export: {e}")))?;
    drop(writer);
    if json && out.is_some() {
        println!(
            "{}",
            serde_json::json!({"exported": head.seq, "log": report::Log::from(head)})
        );
    } else if !quiet {
        eprintln!("\rexported {} entries, head {}", head.seq, head.hash_hex());
    }
    Ok(())
}

pub fn import(data_dir: &Path, file: Option<PathBuf>, json: bool) -> Result<(), CliError> {
    let ledger = open_ledger(data_dir)?;
    let head = import_into(&ledger, file.as_deref(), json)?;
    if json {
        println!(
            "{}",
            serde_json::json!({"imported": head.seq, "log": report::Log::from(head)})
        );
    } else {
        eprintln!("\rimported {} entries, head {}", head.seq, head.hash_hex());
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
    funnel_ledger::import(ledger, reader, progress(json, "imported"))
        .map_err(|e| CliError::Failed(format!("import: {e}")))
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ReplayReport {
    Funnel,
    Lead,
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// Which report.
    #[arg(value_enum)]
    report: ReplayReport,
    /// The lead, for `replay lead`.
    #[arg(long)]
    lead: Option<String>,
    #[command(flatten)]
    data: DataDir,
    /// Replay this export file instead of --data-dir (it is imported into a scratch ledger).
    #[arg(long)]
    export: Option<PathBuf>,
    /// Business time: only events that occurred by then (RFC 3339 or YYYY-MM-DD; default now).
    #[arg(long)]
    as_of: Option<String>,
    /// Recording time: only entries recorded by then.
    #[arg(long)]
    known_at: Option<String>,
    /// Log position: only entries up to this seq.
    #[arg(long)]
    at_seq: Option<u64>,
    #[arg(long)]
    from: Option<String>,
    #[arg(long)]
    to: Option<String>,
    /// channel, campaign or producer.
    #[arg(long)]
    by: Option<String>,
    /// Print the JSON the HTTP API would answer.
    #[arg(long)]
    json: bool,
}

/// Removes a scratch directory when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn replay(args: ReplayArgs) -> Result<(), CliError> {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    for (key, value) in [
        ("as_of", &args.as_of),
        ("known_at", &args.known_at),
        ("from", &args.from),
        ("to", &args.to),
        ("by", &args.by),
    ] {
        if let Some(v) = value {
            pairs.push((key, v.clone()));
        }
    }
    if let Some(seq) = args.at_seq {
        pairs.push(("at_seq", seq.to_string()));
    }
    let query = Some(form(&pairs));
    let allowed: &[&str] = match args.report {
        ReplayReport::Funnel => &["from", "to", "by"],
        ReplayReport::Lead => &[],
    };
    let bad = |e: funnel_query::ApiError| CliError::Failed(e.message);
    let params = Params::parse(query.as_deref(), allowed).map_err(bad)?;
    let travel = params.time_travel().map_err(bad)?;

    let (_scratch, ledger) = match &args.export {
        Some(file) => {
            let dir = std::env::temp_dir().join(format!("funnel-replay-{}", std::process::id()));
            let scratch = Scratch(dir.clone());
            let ledger = Ledger::open(&dir).map_err(|e| CliError::Failed(format!("scratch ledger: {e}")))?;
            import_into(&ledger, Some(file), args.json)?;
            (Some(scratch), ledger)
        }
        None => (None, open_ledger(&args.data.data_dir)?),
    };
    let seq = funnel_query::resolve_seq(&ledger, &travel).map_err(bad)?;
    let projection = funnel_projector::replay(&ledger, seq, progress(args.json, "replayed"))
        .map_err(|e| CliError::Failed(format!("replay: {e}")))?;
    let out = match args.report {
        ReplayReport::Funnel => {
            let report = report::funnel(
                &projection,
                params.window().map_err(bad)?,
                params.by(&["channel", "campaign", "producer"]).map_err(bad)?,
                travel.as_of,
            );
            if args.json {
                serde_json::to_string(&report)
            } else {
                Ok(funnel_table(&report))
            }
        }
        ReplayReport::Lead => {
            let lead = args
                .lead
                .as_deref()
                .ok_or_else(|| CliError::Failed("replay lead needs --lead ID".into()))?;
            let upto = projection.head().seq;
            let timeline: Vec<_> = ledger
                .lead_entries(lead)
                .map_err(|e| CliError::Failed(e.to_string()))?
                .into_iter()
                .filter(|e| e.seq <= upto)
                .collect();
            let view = report::lead(&projection, lead, &timeline, travel.as_of)
                .ok_or_else(|| CliError::Failed(format!("no lead `{lead}` at seq {upto}")))?;
            if args.json {
                serde_json::to_string(&view)
            } else {
                serde_json::to_string_pretty(&view)
            }
        }
    }
    .map_err(|e| CliError::Failed(e.to_string()))?;
    println!("{out}");
    Ok(())
}

fn form(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.replace('%', "%25")
                    .replace('+', "%2B")
                    .replace('&', "%26")
                    .replace(' ', "%20")
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn funnel_table(r: &report::FunnelReport) -> String {
    let mut out = format!(
        "log seq {} · head {} · as of {}\n{:<24}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>10}\n",
        r.log.seq,
        r.log.hash,
        r.as_of,
        r.by.unwrap_or("cohort"),
        "inquiry",
        "mql",
        "sal",
        "sql",
        "opp",
        "won",
        "lost",
        "win rate"
    );
    let row = |key: &str, c: &Counts, win: Option<f64>| {
        format!(
            "{key:<24}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>10}\n",
            c.inquiry,
            c.mql,
            c.sal,
            c.sql,
            c.opportunity,
            c.won,
            c.lost,
            win.map_or("–".to_owned(), |w| format!("{:.1}%", w * 100.0))
        )
    };
    for g in &r.groups {
        out.push_str(&row(&g.key, &g.cohort, g.rates.win_rate));
    }
    out.push_str(&row(&r.total.key, &r.total.cohort, r.total.rates.win_rate));
    out
}
