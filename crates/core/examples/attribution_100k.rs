//! Times attribution over many won deals: `cargo run --release -p funnel-core --example attribution_100k [deals]`.
//!
//! Builds a projection of `deals` won leads (4 touches, score, handoff, opportunity, won) plus as
//! many leads that never convert, then times `model=all` and each model alone (median of 3 runs).

use std::time::Instant;

use funnel_core::attribution::Model;
use funnel_core::event::{AcceptStage, Data, Money, Outcome, Side, Team};
use funnel_core::report::{self, By, Window};
use funnel_core::time::MICROS_PER_HOUR;
use funnel_core::{Event, Projection};

fn main() {
    let deals: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let start = 1_767_225_600_000_000; // 2026-01-01
    let channels = [
        "webinar",
        "paid_search",
        "email",
        "direct",
        "referral",
        "social",
        "events",
        "organic",
    ];
    let mut log = Vec::new();
    let built = Instant::now();
    for i in 0..deals * 2 {
        let lead = format!("L{i}");
        let t0 = start + (i as i64 % 300) * 24 * MICROS_PER_HOUR;
        let mut n = 0;
        let mut ev = |at: i64, data: Data| {
            n += 1;
            Event {
                id: format!("{lead}-{n}"),
                lead_id: Some(lead.clone()),
                account_id: None,
                occurred_at: at,
                producer: None,
                data,
            }
        };
        let mut events = Vec::new();
        for k in 0..4 {
            let channel = channels[((i * 7 + k * 3) % 8) as usize].to_owned();
            let data = Data::Touch {
                channel,
                campaign: Some(format!("c{}", (i + k) % 20)),
                content: None,
                team: Team::Marketing,
            };
            events.push(ev(t0 + k as i64 * 30 * MICROS_PER_HOUR, data));
        }
        if i < deals {
            events.push(ev(
                t0 + 40 * MICROS_PER_HOUR,
                Data::Score {
                    score: 70.0,
                    model: None,
                    reason: None,
                },
            ));
            events.push(ev(
                t0 + 50 * MICROS_PER_HOUR,
                Data::Handoff {
                    to: Side::Sales,
                    owner: None,
                },
            ));
            let accept = Data::Accept {
                stage: AcceptStage::Opportunity,
                owner: None,
                opportunity_id: None,
                pipeline: None,
            };
            events.push(ev(t0 + 60 * MICROS_PER_HOUR, accept));
            let amount = Some(Money {
                amount_minor: 10_000 + (i as i64 % 977) * 113,
                currency: "USD".into(),
            });
            events.push(ev(
                t0 + 200 * MICROS_PER_HOUR,
                Data::Close {
                    outcome: Outcome::Won,
                    amount,
                    reason: None,
                    opportunity_id: None,
                },
            ));
        }
        log.extend(events);
    }
    let projection = Projection::of_events(&log);
    let seq = log.len();
    drop(log);
    let as_of = start + 400 * 24 * MICROS_PER_HOUR;
    println!(
        "projected {} leads ({} won deals), {seq} events, in {:.2?}",
        deals * 2,
        deals,
        built.elapsed()
    );
    let time = |models: &[Model]| {
        let mut runs: Vec<f64> = (0..3)
            .map(|_| {
                let t = Instant::now();
                let r = report::attribution(&projection, models, Window::default(), By::Channel, as_of);
                std::hint::black_box(r);
                t.elapsed().as_secs_f64()
            })
            .collect();
        runs.sort_by(f64::total_cmp);
        runs[1]
    };
    println!("| models | median of 3 (s) |\n|---|---|");
    println!("| all (12) | {:.3} |", time(&Model::ALL));
    for model in Model::ALL {
        println!("| {} | {:.3} |", model.as_str(), time(&[model]));
    }
}
