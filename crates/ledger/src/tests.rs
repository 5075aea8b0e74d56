use super::*;
use funnel_core::event::{Data, Team};

fn touch(id: &str, lead: &str, t: Micros) -> Event {
    Event {
        id: id.into(),
        lead_id: Some(lead.into()),
        account_id: None,
        occurred_at: t,
        producer: None,
        data: Data::Touch {
            channel: "web".into(),
            campaign: None,
            content: None,
            team: Team::Marketing,
        },
    }
}

fn offer(ledger: &Ledger, events: &[Event], now: Micros) -> Vec<Appended> {
    let candidates: Vec<Candidate> = events.iter().map(Candidate::direct).collect();
    ledger.append_batch(&candidates, now).unwrap()
}

fn temp() -> (std::path::PathBuf, Ledger) {
    let dir = std::env::temp_dir().join(format!(
        "ledger-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let ledger = Ledger::open(&dir).unwrap();
    (dir, ledger)
}

#[test]
fn dedups_within_and_across_batches_and_flags_conflicts() {
    let (dir, ledger) = temp();
    let a = touch("a", "L1", 10);
    let b = touch("b", "L1", 20);
    let mut a_changed = a.clone();
    a_changed.occurred_at = 11;
    assert_eq!(
        offer(&ledger, &[a.clone(), b.clone(), a.clone()], 100),
        [Appended::Stored(1), Appended::Stored(2), Appended::Duplicate(1)]
    );
    assert_eq!(
        offer(&ledger, &[b, a_changed], 50),
        [Appended::Duplicate(2), Appended::Conflict(1)]
    );
    assert_eq!(ledger.head().seq, 2);
    assert_eq!(ledger.lead_entries("L1").unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn chain_links_and_recorded_at_never_goes_back() {
    let (dir, ledger) = temp();
    offer(&ledger, &[touch("a", "L1", 1)], 500);
    offer(&ledger, &[touch("b", "L2", 2)], 400);
    let e1 = ledger.get(1).unwrap().unwrap();
    let e2 = ledger.get(2).unwrap().unwrap();
    assert_eq!(e1.prev_hash, [0; 32]);
    assert_eq!(e2.prev_hash, e1.hash);
    assert_eq!(e2.recorded_at, 500);
    assert_eq!(e1.hash, entry_hash(&[0; 32], 1, 500, &e1.event));
    let v = ledger.verify(|_| {});
    assert_eq!((v.checked, v.first_bad), (2, None));
    drop(ledger);
    let reopened = Ledger::open(&dir).unwrap();
    assert_eq!(reopened.head(), LogPosition { seq: 2, hash: e2.hash });
    let _ = std::fs::remove_dir_all(dir);
}
