//! What a person sees from `funnel report` and `funnel explain`: aligned tables, money in its
//! currency's minor-unit exponent, rates as percentages, explain read aloud per deal; and a
//! closed pipe ends the program quietly.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::{funnel, funnel_bin, NatsServer, RawNats, Service, TempDir};

fn event(id: &str, kind: &str, lead: &str, when: &str, data: Value) -> Value {
    json!({"id": id, "type": kind, "lead_id": lead, "occurred_at": when, "data": data})
}

fn text(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn reports_read_as_tables_with_money_in_its_currency() {
    let nats = NatsServer::start();
    let data = TempDir::new("people");
    let service = Service::start(&nats, data.path());
    let mut raw = RawNats::connect(nats.port);
    // Three won deals, one per currency, each after two touches; a fourth lead only inquires.
    let deals = [("U", "USD", 15_190_536), ("J", "JPY", 123_456), ("K", "KWD", 1_234)];
    let mut n = 0;
    for (lead, currency, amount) in deals {
        for (day, channel) in [("01", "webinar"), ("03", "email")] {
            n += 1;
            raw.publish_event(&event(
                &format!("e{n}"),
                "touch",
                lead,
                &format!("2026-03-{day}T09:00:00Z"),
                json!({"channel": channel}),
            ));
        }
        n += 1;
        raw.publish_event(&event(
            &format!("e{n}"),
            "close",
            lead,
            "2026-03-10T09:00:00Z",
            json!({"outcome": "won", "amount_minor": amount, "currency": currency}),
        ));
    }
    raw.publish_event(&event(
        "e99",
        "touch",
        "Q",
        "2026-03-02T09:00:00Z",
        json!({"channel": "email"}),
    ));
    raw.flush();
    service.wait_for_seq(10, Duration::from_secs(30));
    let url = format!("http://{}", service.http);
    let ask = |args: &[&str]| text(&funnel(&[args, &["--url", &url, "--as-of", "2026-04-01"]].concat()));

    // Linear splits each deal in two; the odd minor unit goes to the earlier touch (webinar).
    let attribution = ask(&["report", "attribution", "--model", "linear"]);
    let rows: Vec<&str> = attribution.lines().collect();
    let row = |key: &str, currency: &str| -> Vec<String> {
        rows.iter()
            .find(|l| l.starts_with(key) && l.split_whitespace().nth(1) == Some(currency))
            .unwrap_or_else(|| panic!("no {key} {currency} row in\n{attribution}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(row("webinar", "USD")[2], "75,952.68");
    assert_eq!(row("email", "USD")[2], "75,952.68");
    assert_eq!(row("webinar", "JPY")[2], "61,728");
    assert_eq!(row("webinar", "KWD")[2], "0.617");
    assert_eq!(row("email", "KWD")[2], "0.617");
    // The header and its rule line up with the columns.
    let header = rows.iter().position(|l| l.starts_with("channel")).expect("header");
    assert_eq!(
        rows[header].chars().count(),
        rows[header + 1].chars().count(),
        "{attribution}"
    );

    // Cohort: 4 inquiries, 3 won; win rate is won per SQL (none here: –), lead→won 75.0%.
    let funnel_table = ask(&["report", "funnel"]);
    let total = funnel_table
        .lines()
        .find(|l| l.starts_with("(all)"))
        .expect("total row");
    let cells: Vec<&str> = total.split_whitespace().collect();
    assert_eq!(
        &cells[..8],
        ["(all)", "4", "0", "0", "0", "0", "3", "0"],
        "{funnel_table}"
    );
    assert_eq!(cells.last(), Some(&"75.0%"), "{funnel_table}");

    // Cost: no spend recorded, so revenue in its currency and no ROI.
    let cost = ask(&["report", "cost"]);
    assert!(cost.contains("151,905.36 USD"), "{cost}");

    // Explain, read aloud: each touch with its model credit, and the total.
    let explain = text(&funnel(&[
        "explain",
        "U",
        "--url",
        &url,
        "--model",
        "linear,first_touch",
        "--as-of",
        "2026-04-01",
    ]));
    assert!(
        explain.contains("won 151,905.36 USD on 2026-03-10 09:00 UTC"),
        "{explain}"
    );
    assert!(
        explain.contains("Touch 1 of 2, 2026-03-01 09:00 UTC: webinar"),
        "{explain}"
    );
    let credit_lines: Vec<&str> = explain
        .lines()
        .filter(|l| l.trim_start().starts_with("first_touch"))
        .collect();
    assert_eq!(credit_lines.len(), 3, "two touches and the total:\n{explain}");
    assert!(
        credit_lines[0].ends_with("151,905.36 USD") && credit_lines[0].contains("100.0%"),
        "{explain}"
    );
    assert!(credit_lines[1].ends_with("0.00 USD"), "{explain}");
    assert!(credit_lines[2].contains("all of it"), "{explain}");
}

#[test]
fn a_closed_pipe_ends_the_program_quietly() {
    let nats = NatsServer::start();
    let data = TempDir::new("pipe");
    let mut service = Service::start(&nats, data.path());
    let out = funnel(&["simulate", "--leads", "300", "--seed", "4", "--nats-url", &nats.url]);
    assert!(out.status.success());
    support::wait_for(Duration::from_secs(60), "events stored", || service.head_seq() > 1_000);
    service.stop();
    // An export far larger than a pipe's buffer; the reader takes 100 bytes and goes.
    let mut child = Command::new(funnel_bin())
        .args(["export", "--data-dir"])
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("funnel export");
    let mut first = [0u8; 100];
    child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut first)
        .expect("read");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(13),
            "ended by SIGPIPE, as Unix tools do: {:?}",
            out.status
        );
    }
}
