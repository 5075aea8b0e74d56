//! The projection checkpoint on a real sled store: resume from it, rebuild when it is stale
//! or from another format, and always equal a fresh replay.

use funnel_core::event::{Data, Team};
use funnel_core::Event;
use funnel_ledger::{Candidate, Ledger};
use funnel_projector::{replay, Live, Origin};

fn touch(i: u64) -> Event {
    Event {
        id: format!("t{i}"),
        lead_id: Some(format!("L{}", i % 7)),
        account_id: None,
        occurred_at: 1_772_323_200_000_000 + i as i64 * 1_000_000,
        producer: None,
        data: Data::Touch {
            channel: ["web", "ads"][(i % 2) as usize].into(),
            campaign: None,
            content: None,
            team: Team::Marketing,
        },
    }
}

fn append(ledger: &Ledger, range: std::ops::Range<u64>) {
    let events: Vec<Event> = range.map(touch).collect();
    let candidates: Vec<Candidate> = events.iter().map(Candidate::direct).collect();
    ledger.append_batch(&candidates, 1).unwrap();
    ledger.flush().unwrap();
}

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("funnel-checkpoint-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn restart_resumes_from_the_checkpoint_and_catches_up() {
    let path = dir("resume");
    {
        let ledger = Ledger::open(&path).unwrap();
        append(&ledger, 0..10);
        let live = Live::open(ledger.clone()).unwrap();
        assert!(matches!(live.origin(), Origin::Rebuilt(_)));
        assert_eq!(live.checkpoint().unwrap(), 10);
        append(&ledger, 10..15);
    }
    let ledger = Ledger::open(&path).unwrap();
    let live = Live::open(ledger.clone()).unwrap();
    assert_eq!(live.origin(), &Origin::Checkpoint(10));
    assert_eq!(live.read().head().seq, 15);
    assert_eq!(*live.read(), replay(&ledger, None, |_| {}).unwrap());
    drop((live, ledger));
    let _ = std::fs::remove_dir_all(path);
}

#[test]
fn a_checkpoint_of_another_format_version_is_rebuilt_from_the_log() {
    let path = dir("version");
    {
        let ledger = Ledger::open(&path).unwrap();
        append(&ledger, 0..8);
        Live::open(ledger.clone()).unwrap().checkpoint().unwrap();
        // The checkpoint starts with its format version (a one-byte varint): pretend it is another.
        let tree = ledger.derived_tree("projection").unwrap();
        let mut bytes = tree.get(b"checkpoint").unwrap().unwrap().to_vec();
        assert_eq!(u32::from(bytes[0]), funnel_core::projection::PROJECTION_FORMAT_VERSION);
        bytes[0] += 1;
        tree.insert(b"checkpoint", bytes).unwrap();
        tree.flush().unwrap();
    }
    let ledger = Ledger::open(&path).unwrap();
    let live = Live::open(ledger.clone()).unwrap();
    match live.origin() {
        Origin::Rebuilt(why) => assert!(why.contains("format"), "{why}"),
        other => panic!("expected a rebuild, got {other:?}"),
    }
    assert_eq!(*live.read(), replay(&ledger, None, |_| {}).unwrap());
    drop((live, ledger));
    let _ = std::fs::remove_dir_all(path);
}

#[test]
fn a_checkpoint_that_disagrees_with_the_ledger_is_rebuilt() {
    let path = dir("foreign");
    let other = dir("foreign-other");
    let checkpoint = {
        let ledger = Ledger::open(&other).unwrap();
        append(&ledger, 100..106);
        Live::open(ledger.clone()).unwrap().checkpoint().unwrap();
        ledger
            .derived_tree("projection")
            .unwrap()
            .get(b"checkpoint")
            .unwrap()
            .unwrap()
    };
    {
        let ledger = Ledger::open(&path).unwrap();
        append(&ledger, 0..9);
        ledger
            .derived_tree("projection")
            .unwrap()
            .insert(b"checkpoint", checkpoint)
            .unwrap();
    }
    let ledger = Ledger::open(&path).unwrap();
    let live = Live::open(ledger.clone()).unwrap();
    assert!(
        matches!(live.origin(), Origin::Rebuilt(why) if why.contains("does not match")),
        "{:?}",
        live.origin()
    );
    assert_eq!(live.read().head().seq, 9);
    drop((live, ledger));
    let _ = std::fs::remove_dir_all(path);
    let _ = std::fs::remove_dir_all(other);
}
