//! The peers, on the same events: PostgreSQL as the event store a team would otherwise build,
//! DuckDB over Parquet as the analyst's tool. Each is checked to compute our numbers.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use funnel_core::attribution::Model;
use funnel_core::event::{AcceptStage, Data, Outcome, Side};
use funnel_core::report::{self, By, Window};
use funnel_core::{Event, Projection};

use crate::servers::{Postgres, Scratch};
use crate::BATCH;

/// Our answers to the questions the peers are asked.
pub struct OurNumbers {
    /// inquiry, mql, sal, sql, opportunity, won, lost (all time).
    pub funnel: [u64; 7],
    /// channel → (first_touch, linear), USD minor units.
    pub attribution: BTreeMap<String, (i128, i128)>,
}

impl OurNumbers {
    pub fn of(events: &[Event], as_of: i64) -> OurNumbers {
        let projection = Projection::of_events(events);
        let f = report::funnel(&projection, &report::FunnelQuery::default(), as_of)
            .total
            .period;
        let a = report::attribution(
            &projection,
            &[Model::FirstTouch, Model::Linear],
            Window::default(),
            By::Channel,
            as_of,
        );
        OurNumbers {
            funnel: [f.inquiry, f.mql, f.sal, f.sql, f.opportunity, f.won, f.lost],
            attribution: a
                .rows
                .iter()
                .filter(|r| r.currency == "USD")
                .map(|r| {
                    (
                        r.key.clone(),
                        (r.credits_minor["first_touch"], r.credits_minor["linear"]),
                    )
                })
                .collect(),
        }
    }
}

/// One event as a flat row: seq, id, type, lead_id, occurred_at (µs), channel, campaign, score,
/// handoff_to, stage, outcome, amount_minor, currency.
fn flat(seq: usize, e: &Event) -> [Option<String>; 13] {
    let mut row: [Option<String>; 13] = Default::default();
    row[0] = Some(seq.to_string());
    row[1] = Some(e.id.clone());
    row[2] = Some(e.kind().to_owned());
    row[3] = e.lead_id.clone();
    row[4] = Some(e.occurred_at.to_string());
    match &e.data {
        Data::Touch { channel, campaign, .. } | Data::Spend { channel, campaign, .. } => {
            row[5] = Some(channel.clone());
            row[6] = campaign.clone();
        }
        Data::Score { score, .. } => row[7] = Some(score.to_string()),
        Data::Handoff { to, .. } => row[8] = Some(if *to == Side::Sales { "sales" } else { "marketing" }.into()),
        Data::Accept { stage, .. } => {
            row[9] = Some(
                if *stage == AcceptStage::Sql {
                    "sql"
                } else {
                    "opportunity"
                }
                .into(),
            )
        }
        Data::Close { outcome, amount, .. } => {
            row[10] = Some(if *outcome == Outcome::Won { "won" } else { "lost" }.into());
            if let Some(m) = amount {
                row[11] = Some(m.amount_minor.to_string());
                row[12] = Some(m.currency.clone());
            }
        }
        _ => {}
    }
    if let Data::Spend { amount, .. } = &e.data {
        row[11] = Some(amount.amount_minor.to_string());
        row[12] = Some(amount.currency.clone());
    }
    row
}

const COLUMNS: &str = "seq bigint, id text primary key, type text, lead_id text, occurred_at bigint, channel text, \
    campaign text, score double precision, handoff_to text, stage text, outcome text, amount_minor bigint, currency text";

/// The funnel's milestone counts in SQL (threshold 50, as the simulated rules say).
const FUNNEL_SQL: &str = "WITH m AS (SELECT lead_id, min(occurred_at) AS inquiry, \
    min(CASE WHEN (type = 'score' AND score >= 50) OR (type = 'handoff' AND handoff_to = 'sales') THEN occurred_at END) AS mql, \
    min(CASE WHEN type = 'handoff' AND handoff_to = 'sales' THEN occurred_at END) AS sal, \
    min(CASE WHEN type = 'accept' THEN occurred_at END) AS sql_, \
    min(CASE WHEN type = 'accept' AND stage = 'opportunity' THEN occurred_at END) AS opp, \
    min(CASE WHEN type = 'close' AND outcome = 'won' THEN occurred_at END) AS won, \
    min(CASE WHEN type = 'close' AND outcome = 'lost' THEN occurred_at END) AS lost \
    FROM events WHERE lead_id IS NOT NULL GROUP BY lead_id) \
    SELECT count(*), count(mql), count(sal), count(sql_), count(opp), count(won), count(CASE WHEN won IS NULL THEN lost END) FROM m";

/// First-touch and linear credits per channel: touches within 365 days of the close, ordered by
/// (occurred_at, seq); linear hands the leftover units to the earliest touches.
const ATTRIBUTION_SQL: &str = "WITH d AS (SELECT lead_id, seq AS dseq, occurred_at AS close_at, amount_minor FROM events \
    WHERE type = 'close' AND outcome = 'won' AND currency = 'USD'), \
    t AS (SELECT d.dseq, d.amount_minor, coalesce(e.channel, '(none)') AS channel, \
    row_number() OVER (PARTITION BY d.dseq ORDER BY e.occurred_at, e.seq) AS rk, count(*) OVER (PARTITION BY d.dseq) AS n \
    FROM d LEFT JOIN events e ON e.lead_id = d.lead_id AND e.type = 'touch' AND e.occurred_at <= d.close_at \
    AND e.occurred_at >= d.close_at - 31536000000000) \
    SELECT channel, sum(CASE WHEN rk = 1 THEN amount_minor ELSE 0 END), \
    sum(CAST((amount_minor - amount_minor % n) / n AS BIGINT) + CASE WHEN rk <= amount_minor % n THEN 1 ELSE 0 END) FROM t GROUP BY channel ORDER BY channel";

fn sql_value(v: &Option<String>) -> String {
    v.as_ref()
        .map_or("NULL".into(), |s| format!("'{}'", s.replace('\'', "''")))
}

fn compare(ours: &OurNumbers, funnel: [u64; 7], attribution: &BTreeMap<String, (i128, i128)>) -> String {
    let mut problems = Vec::new();
    if funnel != ours.funnel {
        problems.push(format!("funnel {funnel:?} ≠ ours {:?}", ours.funnel));
    }
    if *attribution != ours.attribution {
        problems.push("attribution differs".to_owned());
    }
    if problems.is_empty() {
        "numbers equal ours".into()
    } else {
        format!("MISMATCH: {}", problems.join("; "))
    }
}

/// Idempotent insert rate (events/s) per rep, funnel SQL seconds per rep, and the check.
pub fn postgres(events: &[Event], reps: usize, ours: &OurNumbers) -> Result<(Vec<f64>, Vec<f64>, String), String> {
    let pg = Postgres::start()?;
    let dir = Scratch::new("pg-sql");
    let insert = dir.path().join("insert.sql");
    let mut sql = String::new();
    for (c, chunk) in events.chunks(BATCH).enumerate() {
        sql.push_str("INSERT INTO events VALUES ");
        for (i, e) in chunk.iter().enumerate() {
            let row = flat(c * BATCH + i + 1, e);
            let values: Vec<String> = row.iter().map(sql_value).collect();
            let _ = write!(sql, "{}({})", if i > 0 { "," } else { "" }, values.join(","));
        }
        sql.push_str(" ON CONFLICT (id) DO NOTHING;\n");
    }
    std::fs::write(&insert, sql).map_err(|e| e.to_string())?;
    let (mut rates, mut secs) = (Vec::new(), Vec::new());
    let query_file = dir.path().join("funnel.sql");
    std::fs::write(&query_file, format!("{FUNNEL_SQL};\n")).map_err(|e| e.to_string())?;
    for _ in 0..reps {
        pg.query(&format!("DROP TABLE IF EXISTS events; CREATE TABLE events ({COLUMNS})"))?;
        let took = pg.run_file(&insert)?;
        rates.push(events.len() as f64 / took.as_secs_f64());
        secs.push(pg.run_file(&query_file)?.as_secs_f64());
    }
    let counts: Vec<u64> = pg
        .query(FUNNEL_SQL)?
        .split('|')
        .filter_map(|v| v.parse().ok())
        .collect();
    let funnel: [u64; 7] = counts.try_into().map_err(|c| format!("funnel SQL answered {c:?}"))?;
    let attribution = parse_attribution(&pg.query(ATTRIBUTION_SQL)?)?;
    Ok((rates, secs, compare(ours, funnel, &attribution)))
}

fn parse_attribution(text: &str) -> Result<BTreeMap<String, (i128, i128)>, String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let parts: Vec<&str> = l.split('|').collect();
            match parts.as_slice() {
                [c, f, lin] => Ok((
                    (*c).to_owned(),
                    (
                        f.parse().map_err(|_| l.to_owned())?,
                        lin.parse().map_err(|_| l.to_owned())?,
                    ),
                )),
                _ => Err(format!("attribution SQL answered `{l}`")),
            }
        })
        .collect()
}

/// The events as CSV, one row per event in log order (seq from 1).
fn write_csv(events: &[Event], path: &std::path::Path) -> Result<(), String> {
    let mut text = String::from(
        "seq,id,type,lead_id,occurred_at,channel,campaign,score,handoff_to,stage,outcome,amount_minor,currency\n",
    );
    for (i, e) in events.iter().enumerate() {
        let row = flat(i + 1, e);
        let cells: Vec<&str> = row.iter().map(|v| v.as_deref().unwrap_or("")).collect();
        text.push_str(&cells.join(","));
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| e.to_string())
}

/// Period counts per milestone of the leads whose milestone falls in `[{from}, {to})`, as of
/// `{as_of}` (events after it are not seen), computed from the raw events (the milestones of
/// [`FUNNEL_SQL`]; lost only if never won).
const PERIOD_SQL: &str = "WITH m AS (SELECT lead_id, min(occurred_at) AS inquiry, \
    min(CASE WHEN (type = 'score' AND score >= 50) OR (type = 'handoff' AND handoff_to = 'sales') THEN occurred_at END) AS mql, \
    min(CASE WHEN type = 'handoff' AND handoff_to = 'sales' THEN occurred_at END) AS sal, \
    min(CASE WHEN type = 'accept' THEN occurred_at END) AS sql_, \
    min(CASE WHEN type = 'accept' AND stage = 'opportunity' THEN occurred_at END) AS opp, \
    min(CASE WHEN type = 'close' AND outcome = 'won' THEN occurred_at END) AS won, \
    min(CASE WHEN type = 'close' AND outcome = 'lost' THEN occurred_at END) AS lost \
    FROM events WHERE lead_id IS NOT NULL AND occurred_at <= {as_of} GROUP BY lead_id) \
    SELECT countIf(inquiry >= {from} AND inquiry < {to}), countIf(mql >= {from} AND mql < {to}), \
    countIf(sal >= {from} AND sal < {to}), countIf(sql_ >= {from} AND sql_ < {to}), \
    countIf(opp >= {from} AND opp < {to}), countIf(won >= {from} AND won < {to}), \
    countIf(won IS NULL AND lost >= {from} AND lost < {to}) FROM m";

/// chDB (ClickHouse in process, from PyPI) answering period-count questions over the raw
/// events in Parquet: per window `[from, to)` as of `as_of`, its seconds and its seven counts.
pub fn chdb(events: &[Event], windows: &[(i64, i64)], as_of: i64) -> Result<Vec<(f64, [u64; 7])>, String> {
    let python =
        std::env::var("FUNNEL_PYTHON").unwrap_or_else(|_| crate::tool(".tools/venv/bin/python").display().to_string());
    let dir = Scratch::new("chdb");
    let csv = dir.path().join("events.csv");
    write_csv(events, &csv)?;
    let windows_file = dir.path().join("windows.json");
    std::fs::write(&windows_file, serde_json::to_vec(windows).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let out = std::process::Command::new(&python)
        .arg(crate::tool("scripts/bench_chdb.py"))
        .arg(&csv)
        .arg(dir.path().join("events.parquet"))
        .arg(&windows_file)
        .arg(PERIOD_SQL.replace("{as_of}", &as_of.to_string()))
        .output()
        .map_err(|e| format!("{python}: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("chdb failed")
            .to_owned());
    }
    let answer: Vec<(f64, [u64; 7])> = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(answer)
}

/// Seconds per rep for DuckDB's funnel + first-touch + linear over Parquet, and the check.
pub fn duckdb(events: &[Event], reps: usize, ours: &OurNumbers) -> Result<(Vec<f64>, String), String> {
    let python =
        std::env::var("FUNNEL_PYTHON").unwrap_or_else(|_| crate::tool(".tools/venv/bin/python").display().to_string());
    let dir = Scratch::new("duckdb");
    let csv = dir.path().join("events.csv");
    write_csv(events, &csv)?;
    let script = crate::tool("scripts/bench_duckdb.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(&csv)
        .arg(dir.path().join("events.parquet"))
        .arg(reps.to_string())
        .arg(FUNNEL_SQL)
        .arg(ATTRIBUTION_SQL)
        .output()
        .map_err(|e| format!("{python}: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("duckdb failed")
            .to_owned());
    }
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let secs: Vec<f64> = answer["secs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_f64())
        .collect();
    let funnel: Vec<u64> = answer["funnel"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_u64())
        .collect();
    let funnel: [u64; 7] = funnel.try_into().map_err(|f| format!("duckdb funnel {f:?}"))?;
    let attribution: BTreeMap<String, (i128, i128)> = answer["attribution"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some((
                r[0].as_str()?.to_owned(),
                (r[1].as_i64()?.into(), r[2].as_i64()?.into()),
            ))
        })
        .collect();
    Ok((secs, compare(ours, funnel, &attribution)))
}
