//! Reports as a person reads them: aligned tables, money in its currency's minor-unit exponent
//! (`151,905.36 USD`, `1,234 JPY`, `1.234 KWD`), rates as percentages, durations in days or
//! hours. Works on the report JSON (the contract), so what `--json` prints and what a table
//! shows cannot drift apart.

use serde_json::Value;

/// ISO 4217 minor-unit exponents other than 2.
fn exponent(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI" | "VND"
        | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

fn grouped(digits: &str) -> String {
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An amount in minor units as its currency writes it, without the code.
pub fn amount(minor: i128, currency: &str) -> String {
    let e = exponent(currency);
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let unit = 10u128.pow(e);
    let whole = grouped(&(abs / unit).to_string());
    if e == 0 {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{:0width$}", abs % unit, width = e as usize)
    }
}

/// An amount in minor units with its currency code: `151,905.36 USD`.
pub fn money(minor: i128, currency: &str) -> String {
    format!("{} {currency}", amount(minor, currency))
}

fn minor_of(v: &Value) -> Option<i128> {
    v.as_i64().map(i128::from).or_else(|| v.as_u64().map(i128::from))
}

/// A rate as a percentage (`–` when undefined).
pub fn percent(v: &Value) -> String {
    v.as_f64().map_or_else(|| "–".into(), |r| format!("{:.1}%", r * 100.0))
}

/// A duration given in days: days from one day on, hours below.
pub fn days(v: &Value) -> String {
    match v.as_f64() {
        None => "–".into(),
        Some(d) if d >= 1.0 => format!("{d:.1} d"),
        Some(d) => format!("{:.1} h", d * 24.0),
    }
}

/// A duration given in hours.
pub fn hours(v: &Value) -> String {
    v.as_f64().map_or_else(|| "–".into(), |h| days(&Value::from(h / 24.0)))
}

/// The strings of a JSON array (none if it is not one).
fn strings(v: &Value) -> Vec<&str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str).collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `2026-08-27T17:20:56.010804Z` → `2026-08-27 17:20 UTC`.
fn when(v: &Value) -> String {
    match v.as_str() {
        Some(t) if t.len() >= 16 => format!("{} {} UTC", &t[..10], &t[11..16]),
        _ => text(v),
    }
}

/// Columns aligned on the widest cell; numbers to the right.
pub struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(head: &[&str]) -> Table {
        Table {
            head: head.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.head.len();
        let width = |c: usize| {
            std::iter::once(&self.head)
                .chain(&self.rows)
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..columns).map(width).collect();
        let numeric = |c: usize| {
            c > 0
                && self.rows.iter().all(|r| {
                    r.get(c).is_none_or(|s| {
                        s == "–" || s.starts_with(|ch: char| ch.is_ascii_digit() || ch == '-' || ch == '+')
                    })
                })
        };
        let line = |cells: &Vec<String>| {
            let mut out = String::new();
            for (c, w) in widths.iter().enumerate() {
                let cell = cells.get(c).map_or("", String::as_str);
                let pad = w - cell.chars().count();
                if c > 0 {
                    out.push_str("  ");
                }
                if numeric(c) {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                } else {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad));
                }
            }
            out.trim_end().to_owned() + "\n"
        };
        let mut out = line(&self.head);
        out.push_str(&line(&widths.iter().map(|w| "─".repeat(*w)).collect()));
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}

/// The line every report starts with: where in the log and in business time it stands.
fn heading(title: &str, r: &Value) -> String {
    let hash = r["log"]["hash"].as_str().unwrap_or_default();
    let mut out = format!(
        "{title} · log seq {} (head {}…) · as of {}",
        r["log"]["seq"],
        &hash[..hash.len().min(12)],
        when(&r["as_of"])
    );
    if !r["from"].is_null() || !r["to"].is_null() {
        out.push_str(&format!(" · window {} to {}", when(&r["from"]), when(&r["to"])));
    }
    out + "\n\n"
}

const STAGES: [(&str, &str); 7] = [
    ("inquiry", "inquiry"),
    ("mql", "MQL"),
    ("sal", "SAL"),
    ("sql", "SQL"),
    ("opportunity", "opp"),
    ("won", "won"),
    ("lost", "lost"),
];

const RATES: [(&str, &str); 6] = [
    ("mql_per_inquiry", "MQL/inq"),
    ("sal_per_mql", "SAL/MQL"),
    ("sql_per_sal", "SQL/SAL"),
    ("opportunity_per_sql", "opp/SQL"),
    ("win_rate", "win rate"),
    ("lead_to_customer", "lead→won"),
];

fn funnel(r: &Value) -> String {
    let mut out = heading("Funnel", r);
    let by = r["by"].as_str().unwrap_or("cohort");
    let head: Vec<&str> = std::iter::once(by)
        .chain(STAGES.iter().map(|s| s.1))
        .chain(RATES.iter().map(|s| s.1))
        .collect();
    let mut table = Table::new(&head);
    let groups = r["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(std::iter::once(&r["total"]));
    for g in groups {
        let mut row = vec![text(&g["key"])];
        row.extend(STAGES.iter().map(|(k, _)| text(&g["cohort"][k])));
        row.extend(RATES.iter().map(|(k, _)| percent(&g["rates"][k])));
        table.row(row);
    }
    out.push_str("Cohort: leads by when they arrived, and how far each got\n");
    out.push_str(&table.render());
    if let Some(series) = r["series"].as_array() {
        let head: Vec<&str> = ["period"].into_iter().chain(STAGES.iter().map(|s| s.1)).collect();
        let mut table = Table::new(&head);
        for b in series {
            let mut row = vec![format!("{} – {}", when(&b["from"]), when(&b["to"]))];
            row.extend(STAGES.iter().map(|(k, _)| text(&b["period"][k])));
            table.row(row);
        }
        out.push_str("\nTrend: milestones reached in each period\n");
        out.push_str(&table.render());
    }
    out
}

fn velocity(r: &Value) -> String {
    let mut out = heading("Velocity", r);
    let mut table = Table::new(&["from", "to", "leads", "mean", "median", "p90"]);
    let mut stat = |from: String, to: String, d: &Value| {
        table.row(vec![
            from,
            to,
            text(&d["count"]),
            days(&d["mean"]),
            days(&d["median"]),
            days(&d["p90"]),
        ]);
    };
    for s in r["stages"].as_array().into_iter().flatten() {
        stat(text(&s["from"]), text(&s["to"]), &s["days"]);
    }
    stat("inquiry".into(), "won (cycle)".into(), &r["cycle_days"]);
    out.push_str(&table.render());
    out
}

fn sla(r: &Value) -> String {
    let mut out = heading("Handoff SLA", r);
    let mut table = Table::new(&["handoffs", "count"]);
    for (k, label) in [
        ("handoffs", "handed to sales"),
        ("answered_in_sla", "answered in SLA"),
        ("answered_late", "answered late"),
        ("open_overdue", "open, overdue"),
        ("open_in_sla", "open, within SLA"),
        ("breached", "breached (late + overdue)"),
    ] {
        table.row(vec![label.into(), text(&r[k])]);
    }
    table.row(vec!["response time, median".into(), hours(&r["response_hours_p50"])]);
    table.row(vec!["response time, p90".into(), hours(&r["response_hours_p90"])]);
    out.push_str(&table.render());
    if let Some(overdue) = r["overdue"].as_array().filter(|o| !o.is_empty()) {
        let mut table = Table::new(&["lead", "handed off", "deadline", "overdue by"]);
        for o in overdue {
            table.row(vec![
                text(&o["lead_id"]),
                when(&o["handed_off_at"]),
                when(&o["deadline"]),
                hours(&o["overdue_hours"]),
            ]);
        }
        out.push_str(&format!(
            "\nOverdue handoffs, most overdue first ({} listed)\n",
            overdue.len()
        ));
        out.push_str(&table.render());
    }
    out
}

fn rejections(r: &Value) -> String {
    let mut out = heading("Rejections", r);
    let reasons: Vec<String> = r["total"]["by_reason"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let by = r["by"].as_str().unwrap_or("all");
    let head: Vec<&str> = [by, "rejected"]
        .into_iter()
        .chain(reasons.iter().map(String::as_str))
        .collect();
    let mut table = Table::new(&head);
    for g in r["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(std::iter::once(&r["total"]))
    {
        let mut row = vec![text(&g["key"]), text(&g["count"])];
        row.extend(reasons.iter().map(|k| text(&g["by_reason"][k])));
        table.row(row);
    }
    out.push_str(&table.render());
    if let Some(credits) = r["lead_guarantee"].as_array().filter(|c| !c.is_empty()) {
        let mut table = Table::new(&["channel", "campaign", "credits"]);
        for c in credits {
            table.row(vec![text(&c["channel"]), text(&c["campaign"]), text(&c["credits"])]);
        }
        out.push_str("\nLead-guarantee credits owed\n");
        out.push_str(&table.render());
    }
    out
}

fn cost(r: &Value) -> String {
    let mut out = heading("Cost per customer", r);
    let by = r["by"].as_str().unwrap_or("channel");
    let mut table = Table::new(&[by, "spend", "customers", "cost/customer", "revenue", "ROI"]);
    for row in r["rows"].as_array().into_iter().flatten() {
        let currency = row["currency"].as_str().unwrap_or_default();
        let m = |v: &Value| minor_of(v).map_or_else(|| "–".into(), |x| money(x, currency));
        table.row(vec![
            text(&row["key"]),
            m(&row["spend_minor"]),
            text(&row["customers"]),
            m(&row["cost_per_customer_minor"]),
            m(&row["revenue_minor"]),
            percent(&row["roi"]),
        ]);
    }
    out.push_str(&table.render());
    out
}

fn plan(r: &Value) -> String {
    let mut out = heading("Plan", r);
    let currency = r["currency"].as_str().unwrap_or_default();
    let m = |v: &Value| minor_of(v).map_or_else(|| "–".into(), |x| money(x, currency));
    out.push_str(&format!(
        "Target {} · in the window: {} won deals, {} revenue, {} average deal\n\n",
        m(&r["revenue_target_minor"]),
        text(&r["won_deals"]),
        m(&r["won_revenue_minor"]),
        m(&r["average_deal_minor"])
    ));
    let mut table = Table::new(&["step", "rate in the window", "needed"]);
    let rate_of = |k: &str| {
        RATES
            .iter()
            .find(|(key, _)| *key == k)
            .map(|(key, _)| percent(&r["rates"][*key]))
    };
    for (k, label) in [
        ("inquiry", "inquiries"),
        ("mql", "MQLs"),
        ("sal", "SALs"),
        ("sql", "SQLs"),
        ("opportunity", "opportunities"),
        ("won", "won deals"),
    ] {
        let rate = match k {
            "mql" => rate_of("mql_per_inquiry"),
            "sal" => rate_of("sal_per_mql"),
            "sql" => rate_of("sql_per_sal"),
            "opportunity" => rate_of("opportunity_per_sql"),
            "won" => rate_of("win_rate"),
            _ => None,
        };
        let needed = r["needed"].get(k).map_or_else(|| "–".into(), text);
        table.row(vec![label.into(), rate.unwrap_or_default(), needed]);
    }
    out.push_str(&table.render());
    for why in r["insufficient"].as_array().into_iter().flatten() {
        out.push_str(&format!("\nNot enough history: {}\n", text(why)));
    }
    out
}

fn attribution(r: &Value) -> String {
    let mut out = heading("Attribution", r);
    let models = strings(&r["models"]);
    let by = r["by"].as_str().unwrap_or("channel");
    let head: Vec<&str> = [by, "currency"].into_iter().chain(models.iter().copied()).collect();
    let mut table = Table::new(&head);
    for row in r["rows"].as_array().into_iter().flatten() {
        let currency = row["currency"].as_str().unwrap_or_default();
        let mut cells = vec![text(&row["key"]), currency.to_owned()];
        cells.extend(
            models
                .iter()
                .map(|m| minor_of(&row["credits_minor"][m]).map_or_else(|| "–".into(), |x| amount(x, currency))),
        );
        table.row(cells);
    }
    for total in r["totals"].as_array().into_iter().flatten() {
        let currency = total["currency"].as_str().unwrap_or_default();
        let whole = minor_of(&total["amount_minor"]).map_or_else(|| "–".into(), |x| amount(x, currency));
        let mut cells = vec![format!("total ({} deals)", text(&total["deals"])), currency.to_owned()];
        cells.extend(models.iter().map(|_| whole.clone()));
        table.row(cells);
    }
    out.push_str(&table.render());
    out
}

fn lead(r: &Value) -> String {
    let mut out = heading(&format!("Lead {}", text(&r["lead_id"])), r);
    let source = &r["source"];
    out.push_str(&format!(
        "stage {} · score {} · owner {} · source {} / {} ({})\n\n",
        text(&r["stage"]),
        text(&r["score"]),
        text(&r["owner"]),
        text(&source["channel"]),
        text(&source["campaign"]),
        when(&source["at"])
    ));
    let mut milestones = Table::new(&["milestone", "reached"]);
    for (k, label) in STAGES {
        milestones.row(vec![label.into(), when(&r["milestones"][k])]);
    }
    out.push_str(&milestones.render());
    let mut timeline = Table::new(&["seq", "occurred", "event", "what", "retracted by"]);
    for e in r["timeline"].as_array().into_iter().flatten() {
        let event = &e["event"];
        let data = &event["data"];
        let what: Vec<String> = data
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "currency" | "team"))
                    .map(|(k, v)| match k.as_str() {
                        "amount_minor" => money(minor_of(v).unwrap_or(0), data["currency"].as_str().unwrap_or("")),
                        _ => format!("{k} {}", text(v)),
                    })
                    .collect()
            })
            .unwrap_or_default();
        timeline.row(vec![
            text(&e["seq"]),
            when(&event["occurred_at"]),
            text(&event["type"]),
            what.join(", "),
            text(&e["retracted_by"]),
        ]);
    }
    out.push('\n');
    out.push_str(&timeline.render());
    out
}

/// `text` with each line indented by four spaces, as explain nests a table under a touch.
fn indented(out: &mut String, text: &str) {
    for line in text.lines() {
        out.push_str(&format!("    {line}\n"));
    }
}

fn explain(r: &Value) -> String {
    let mut out = heading(&format!("How lead {}'s revenue is credited", text(&r["lead_id"])), r);
    let models = strings(&r["models"]);
    let deals = r["deals"].as_array().cloned().unwrap_or_default();
    if deals.is_empty() {
        out.push_str("No won deal: nothing to credit.\n");
    }
    for deal in &deals {
        let currency = deal["currency"].as_str().unwrap_or_default();
        let amount_minor = minor_of(&deal["amount_minor"]).unwrap_or(0);
        out.push_str(&format!(
            "Deal {} (seq {}): won {} on {}\n",
            text(&deal["event_id"]),
            text(&deal["seq"]),
            money(amount_minor, currency),
            when(&deal["close_at"])
        ));
        let rules = &deal["rules_in_force"];
        out.push_str(&format!(
            "Rules in force: touches counted from {} (lookback {}), time-decay half-life {}\n",
            when(&deal["touches_from"]),
            days(&rules["attribution_lookback_days"]),
            days(&rules["time_decay_half_life_days"])
        ));
        let touches = deal["touches"].as_array().cloned().unwrap_or_default();
        for (i, touch) in touches.iter().enumerate() {
            let roles: Vec<String> = touch["roles"].as_array().into_iter().flatten().map(text).collect();
            out.push_str(&format!(
                "\n  Touch {} of {}, {}: {} / {}{}\n",
                i + 1,
                touches.len(),
                when(&touch["occurred_at"]),
                text(&touch["channel"]),
                text(&touch["campaign"]),
                if roles.is_empty() {
                    String::new()
                } else {
                    format!(", roles: {}", roles.join(", "))
                }
            ));
            let mut table = Table::new(&["model", "weight", "share", "credit"]);
            for m in &models {
                let share = &touch["models"][m];
                table.row(vec![
                    (*m).to_owned(),
                    text(&share["weight"]),
                    percent(&share["weight_decimal"]),
                    minor_of(&share["credit_minor"]).map_or_else(|| "–".into(), |x| money(x, currency)),
                ]);
            }
            indented(&mut out, &table.render());
        }
        let mut totals = Table::new(&["model", "credited", "of the deal"]);
        for m in &models {
            let credited: i128 = touches
                .iter()
                .filter_map(|t| minor_of(&t["models"][m]["credit_minor"]))
                .sum();
            totals.row(vec![
                (*m).to_owned(),
                money(credited, currency),
                if credited == amount_minor {
                    "all of it".into()
                } else {
                    format!("{} unattributed", money(amount_minor - credited, currency))
                },
            ]);
        }
        out.push_str("\n  Total per model\n");
        indented(&mut out, &totals.render());
        out.push('\n');
    }
    out
}

/// A report's JSON as text for people; `None` for a report this module does not know.
pub fn render(report: &str, r: &Value) -> Option<String> {
    Some(match report {
        "funnel" => funnel(r),
        "velocity" => velocity(r),
        "sla" => sla(r),
        "rejections" => rejections(r),
        "cost" => cost(r),
        "plan" => plan(r),
        "attribution" => attribution(r),
        "lead" => lead(r),
        "explain" => explain(r),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::{money, Table};

    #[test]
    fn money_uses_the_currency_exponent() {
        assert_eq!(money(15_190_536, "USD"), "151,905.36 USD");
        assert_eq!(money(1_234, "JPY"), "1,234 JPY");
        assert_eq!(money(1_234, "KWD"), "1.234 KWD");
        assert_eq!(money(-5, "EUR"), "-0.05 EUR");
        assert_eq!(money(100_000_000_000_000_000, "USD"), "1,000,000,000,000,000.00 USD");
    }

    #[test]
    fn tables_align_text_left_and_numbers_right() {
        let mut t = Table::new(&["channel", "won"]);
        t.row(vec!["email".into(), "5".into()]);
        t.row(vec!["paid_search".into(), "12".into()]);
        assert_eq!(
            t.render(),
            "channel      won\n───────────  ───\nemail          5\npaid_search   12\n"
        );
    }
}
