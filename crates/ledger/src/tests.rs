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

/// Every block's first seq and place, in order.
fn places(ledger: &Ledger) -> Vec<(u64, Place)> {
    (ledger.log.scan_prefix(b"p"))
        .map(|kv| {
            let (key, value) = kv.unwrap();
            placed(&key, &value).unwrap()
        })
        .collect()
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
    // sled releases its file lock when its flusher thread has stopped, a moment after the drop.
    let mut reopened = Ledger::open(&dir);
    for _ in 0..100 {
        if reopened.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        reopened = Ledger::open(&dir);
    }
    let reopened = reopened.unwrap();
    assert_eq!(reopened.head(), LogPosition { seq: 2, hash: e2.hash });
    let _ = std::fs::remove_dir_all(dir);
}

/// Enough events that one batch fills several blocks.
fn many(n: usize, leads: usize) -> Vec<Event> {
    (0..n)
        .map(|i| touch(&format!("evt-{i:06}"), &format!("L{}", i % leads), i as Micros))
        .collect()
}

#[test]
fn a_batch_larger_than_a_block_reads_back_whole() {
    let (dir, ledger) = temp();
    let events = many(5_000, 37);
    offer(&ledger, &events[..10], 1);
    offer(&ledger, &events[10..], 2);
    let blocks = ledger.log.scan_prefix(b"p").count();
    assert!(
        blocks >= 3,
        "5,000 entries of ~70 bytes should span several blocks, got {blocks}"
    );
    let all: Vec<Entry> = ledger.entries(1).map(|e| e.unwrap()).collect();
    assert_eq!(all.len(), 5_000);
    for (i, entry) in all.iter().enumerate() {
        assert_eq!(entry.seq, i as u64 + 1);
        assert_eq!(entry.event, events[i]);
        let prev = if i == 0 { [0; 32] } else { all[i - 1].hash };
        assert_eq!(entry.prev_hash, prev);
        assert_eq!(
            entry.hash,
            entry_hash(&prev, entry.seq, entry.recorded_at, &entry.event)
        );
    }
    let tail: Vec<u64> = ledger.entries(4_321).map(|e| e.unwrap().seq).collect();
    assert_eq!(tail, (4_321..=5_000).collect::<Vec<_>>());
    for seq in [1, 10, 11, 2_500, 5_000] {
        assert_eq!(ledger.get(seq).unwrap().as_ref(), Some(&all[seq as usize - 1]));
    }
    assert_eq!(ledger.get(5_001).unwrap(), None);
    // A lead's timeline: entries spread over many blocks, each block read once.
    let expected: Vec<&Entry> = all
        .iter()
        .filter(|e| e.event.lead_id.as_deref() == Some("L5"))
        .collect();
    let seqs: Vec<u64> = expected.iter().map(|e| e.seq).collect();
    let lead = ledger.entries_at(&seqs).unwrap();
    assert_eq!(lead.iter().collect::<Vec<_>>(), expected);
    assert!(matches!(
        ledger.entries_at(&[5_001]),
        Err(LedgerError::Damaged { seq: 5_001, .. })
    ));
    assert_eq!(ledger.find("evt-004999").unwrap().map(|e| e.seq), Some(5_000));
    let v = ledger.verify(|_| {});
    assert_eq!((v.checked, v.first_bad, v.head), (5_000, None, ledger.head()));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_flipped_byte_in_any_block_is_found_and_located() {
    let (dir, ledger) = temp();
    offer(&ledger, &many(3_000, 11), 1);
    let places = places(&ledger);
    let (first, place) = places[1];
    let value = ledger.blocks.read(first, place).unwrap();
    let block = Block::parse(first, &value).unwrap();
    // Flip a byte in the event part of the block's 8th entry, in the file: its hash no longer matches.
    let eighth = block.entry(7).unwrap();
    let needle = eighth.event.id.as_bytes();
    let at = value.windows(needle.len()).position(|w| w == needle).unwrap();
    let flipped = [value[at + needle.len() - 1] ^ 0x01];
    ledger
        .blocks
        .write_at(place.offset + (at + needle.len() - 1) as u64, &flipped)
        .unwrap();
    let v = ledger.verify(|_| {});
    assert_eq!(v.first_bad.as_ref().map(|b| b.0), Some(first + 7));
    assert_eq!(v.checked, first + 6);
    assert_eq!(v.head.hash, block.entry(6).unwrap().hash);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_block_whose_header_is_damaged_hides_none_of_the_blocks_after_it() {
    let (dir, ledger) = temp();
    offer(&ledger, &many(3_000, 11), 1);
    let places = places(&ledger);
    let stored: Vec<u64> = places.iter().map(|(first, _)| *first).collect();
    assert!(stored.len() >= 4, "3,000 entries span several blocks");
    // Block 1 cut to two bytes: how many entries it holds cannot be read.
    let cut = Place { len: 2, ..places[1].1 };
    ledger.log.insert(place_key(stored[1]), &cut.encode()).unwrap();
    let read: Vec<u64> = ledger.blocks(1).map(|b| b.unwrap().first_seq()).collect();
    assert_eq!(read, stored);
    let from_third: Vec<u64> = ledger.blocks(stored[2] + 1).map(|b| b.unwrap().first_seq()).collect();
    assert_eq!(from_third, stored[2..]);
    let v = ledger.verify(|_| {});
    assert_eq!(v.checked, stored[1] - 1);
    assert_eq!(v.first_bad.map(|b| b.0), Some(stored[1]));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ids_sharing_an_index_prefix_are_told_apart() {
    let (dir, ledger) = temp();
    // Ids of this prefix share one hash in tests (`ids::id_hash`).
    let (a, b) = (touch("same-hash-a", "L1", 1), touch("same-hash-b", "L1", 2));
    offer(&ledger, std::slice::from_ref(&a), 1);
    offer(&ledger, std::slice::from_ref(&b), 2);
    assert_eq!(ids::id_hash("same-hash-a"), ids::id_hash("same-hash-b"));
    assert_eq!(ledger.seq_of("same-hash-a").unwrap(), Some(1));
    assert_eq!(ledger.seq_of("same-hash-b").unwrap(), Some(2));
    assert_eq!(ledger.seq_of("same-hash-c").unwrap(), None);
    assert_eq!(
        offer(&ledger, &[b, a, touch("same-hash-c", "L1", 3)], 3),
        [Appended::Duplicate(2), Appended::Duplicate(1), Appended::Stored(3)]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_id_index_survives_a_reopen_and_refuses_the_same_ids_after_it() {
    let (dir, ledger) = temp();
    let events = many(2_500, 7);
    for part in events.chunks(1_000) {
        offer(&ledger, part, 1);
    }
    ledger.flush().unwrap();
    drop(ledger);
    let ledger = Ledger::open(&dir).unwrap();
    assert_eq!(ledger.indexed_ids().unwrap(), 2_500);
    let again = offer(&ledger, &events[995..1_005], 2);
    assert_eq!(again, (996..=1_005).map(Appended::Duplicate).collect::<Vec<_>>());
    assert_eq!(ledger.seq_of("evt-002499").unwrap(), Some(2_500));
    assert_eq!(ledger.head().seq, 2_500);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_places_store_keeps_the_segment_size_it_was_made_with() {
    let (dir, ledger) = temp();
    drop(ledger);
    let places = dir.join(PLACES_DIR);
    assert_eq!(persisted_segment_size(&places), Some(STORE_SEGMENT_BYTES));
    // One made with 8 MiB segments, as before: it opens, takes events and reads them back.
    std::fs::remove_dir_all(&dir).unwrap();
    drop(store_config(&places).segment_size(SEGMENT_BYTES).open().unwrap());
    let ledger = Ledger::open(&dir).unwrap();
    let events = many(300, 3);
    offer(&ledger, &events, 1);
    ledger.flush().unwrap();
    drop(ledger);
    let ledger = Ledger::open(&dir).unwrap();
    assert_eq!(persisted_segment_size(&places), Some(SEGMENT_BYTES));
    assert_eq!(
        entries(&ledger).iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        events
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_ids_file_is_rebuilt_from_the_blocks_where_it_is_missing_or_short() {
    let (dir, ledger) = temp();
    let events = many(3_000, 5);
    for part in events.chunks(700) {
        offer(&ledger, part, 1);
    }
    let ids_file = dir.join(IDS_FILE);
    let written = std::fs::read(&ids_file).unwrap();
    let expected: Vec<u8> = events.iter().flat_map(|e| ids::id_hash(&e.id).to_be_bytes()).collect();
    assert_eq!(written, expected, "seq s's id hash at (s - 1) * 8");
    drop(ledger);
    std::fs::remove_file(&ids_file).unwrap();
    let refuses_what_it_holds = |ledger: &Ledger| {
        assert_eq!(ledger.indexed_ids().unwrap(), 3_000);
        assert_eq!(
            offer(ledger, &events[..2], 2),
            [Appended::Duplicate(1), Appended::Duplicate(2)]
        );
        let mut changed = events[2_999].clone();
        changed.occurred_at += 1;
        assert_eq!(offer(ledger, &[changed], 2), [Appended::Conflict(3_000)]);
    };
    let ledger = Ledger::open(&dir).unwrap();
    refuses_what_it_holds(&ledger);
    assert_eq!(std::fs::read(&ids_file).unwrap(), expected);
    drop(ledger);

    // Cut short in the middle of a hash (a last write that did not reach the disk), then
    // bytes past the last stored seq (an append that did not commit).
    for (len, tail) in [(1_001 * 8 + 3, &[][..]), (3_000 * 8, &[0xffu8; 20][..])] {
        let file = std::fs::OpenOptions::new().write(true).open(&ids_file).unwrap();
        file.set_len(len).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, tail, len).unwrap();
        drop(file);
        let ledger = Ledger::open(&dir).unwrap();
        refuses_what_it_holds(&ledger);
        assert_eq!(std::fs::read(&ids_file).unwrap()[..expected.len()], expected[..]);
        drop(ledger);
    }
    let ledger = Ledger::open(&dir).unwrap();
    assert_eq!(offer(&ledger, &[touch("fresh", "L1", 4)], 3), [Appended::Stored(3_001)]);
    let written = std::fs::read(&ids_file).unwrap();
    assert_eq!(written[3_000 * 8..3_001 * 8], ids::id_hash("fresh").to_be_bytes());
    assert_eq!(ledger.seq_of("fresh").unwrap(), Some(3_001));
    let v = ledger.verify(|_| {});
    assert_eq!((v.checked, v.first_bad), (3_001, None));
    let _ = std::fs::remove_dir_all(dir);
}

/// Simulated events and, after them, the chain vectors' events (every event type with its
/// optional fields), their ids prefixed so none repeats a simulated one.
fn simulated_and_vectors(leads: u64, seed: u64) -> Vec<Event> {
    let mut events = funnel_core::simulate::funnel(funnel_core::simulate::Plan {
        leads,
        seed,
        start: 1_780_272_000_000_000,
        days: 60,
    });
    let vectors: serde_json::Value = serde_json::from_str(include_str!("../../../schemas/chain-vectors.json")).unwrap();
    for v in vectors["entries"].as_array().unwrap() {
        let mut event = Event::from_value(&v["event"]).unwrap();
        event.id = format!("vector-{}", event.id);
        events.push(event);
    }
    events
}

#[test]
fn direct_writer_equals_jcs_of_the_contract_json() {
    let events = simulated_and_vectors(400, 5);
    let kinds: std::collections::HashSet<&str> = events.iter().map(|e| e.kind()).collect();
    assert_eq!(kinds.len(), 9, "every event type is covered");
    for event in &events {
        let mut generic = Vec::new();
        canonical::write_value(&mut generic, &event.to_json());
        assert_eq!(
            String::from_utf8(canonical_bytes(event)).unwrap(),
            String::from_utf8(generic).unwrap()
        );
    }
}

#[test]
fn a_borrowed_read_of_every_block_equals_the_owned_read() {
    let (dir, ledger) = temp();
    let events = simulated_and_vectors(300, 9);
    for batch in events.chunks(700) {
        offer(&ledger, batch, 1);
    }
    let owned: Vec<Entry> = ledger.entries(1).map(|e| e.unwrap()).collect();
    for from in [1, 2, 450, owned.len() as u64] {
        let mut borrowed = Vec::new();
        for block in ledger.blocks(from) {
            let block = block.unwrap();
            let mut read = Vec::new();
            block.read_into(from, u64::MAX, &mut read).unwrap();
            for e in read {
                borrowed.push((e.seq, e.recorded_at, e.stream_seq, e.hash, e.event.to_event()));
            }
        }
        let expected: Vec<_> = owned[from as usize - 1..]
            .iter()
            .map(|e| (e.seq, e.recorded_at, e.stream_seq, e.hash, e.event.clone()))
            .collect();
        assert_eq!(borrowed, expected, "from seq {from}");
        // A bounded read stops at its last seq, whichever block it falls in.
        let upto = from + 100;
        let mut bounded = Vec::new();
        let blocks: Vec<RawBlock> = ledger.blocks(from).map(|b| b.unwrap()).collect();
        for block in &blocks {
            block.read_into(from, upto, &mut bounded).unwrap();
        }
        let seqs: Vec<u64> = bounded.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (from..=upto.min(owned.len() as u64)).collect::<Vec<_>>());
    }
    for e in &owned {
        assert_eq!(e.event.as_ref().to_event(), e.event);
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Turns the store in `dir` into one an earlier version wrote: sled's files in `dir` itself,
/// holding the metadata, the places of the first `keep` blocks, the rest of the blocks as sled
/// values under `b` keys (as a store written before the blocks file, or one whose move stopped
/// part way, has them) and what else earlier layouts kept there: id index keys (`i`, `j`),
/// lead index keys (`l`), the engine checkpoint's tree. The blocks file is cut after the
/// blocks kept and `tail` written past them.
fn make_old_store(dir: &std::path::Path, keep: usize, tail: &[u8]) {
    let ledger = Ledger::open(dir).unwrap();
    let places = places(&ledger);
    let meta = ledger.log.get(META_KEY).unwrap().unwrap();
    let blocks: Vec<Vec<u8>> = places[keep..]
        .iter()
        .map(|&(first, place)| ledger.blocks.read(first, place).unwrap())
        .collect();
    drop(ledger);
    std::fs::remove_dir_all(dir.join(PLACES_DIR)).unwrap();
    let old = store_config(dir).segment_size(crate::SEGMENT_BYTES).open().unwrap();
    let log = old.open_tree(LOG_TREE).unwrap();
    let mut batch = sled::Batch::default();
    batch.insert(META_KEY, meta);
    for &(first, place) in &places[..keep] {
        batch.insert(&place_key(first), &place.encode());
    }
    for (&(first, _), bytes) in places[keep..].iter().zip(blocks) {
        batch.insert(&seq_key(b'b', first), bytes);
    }
    batch.insert(b"i\x01\x02", &[0u8; 8][..]);
    batch.insert(&seq_key(b'j', 1), &[0u8; 16][..]);
    batch.insert(b"lL1\x00\x00\x00\x00\x00\x00\x00\x00\x01", &[][..]);
    log.apply_batch(batch).unwrap();
    old.open_tree("engine-checkpoint").unwrap().insert(b"h", b"x").unwrap();
    old.flush().unwrap();
    drop((log, old));
    let end = places[..keep].last().map_or(0, |(_, place)| place.end());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(BLOCKS_FILE))
        .unwrap();
    file.set_len(end).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, tail, end).unwrap();
}

/// An (empty) directory is created, a file copied.
fn copy_file_or_dir(from: &std::path::Path, to: &std::path::Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
    } else {
        std::fs::copy(from, to).unwrap();
    }
}

/// sled's files at the top of `dir` (an old store's), by name.
fn old_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n == "conf" || n == "db" || n == "blobs" || n.starts_with("snap."))
        .collect();
    names.sort();
    names
}

fn entries(ledger: &Ledger) -> Vec<Entry> {
    ledger.entries(1).map(|e| e.unwrap()).collect()
}

#[test]
fn a_store_an_earlier_version_wrote_is_brought_to_this_layout_on_open() {
    let (dir, ledger) = temp();
    drop(ledger);
    let events = many(4_000, 13);
    // All blocks in sled, as before the blocks file; then a move that stopped after two
    // blocks, with half a step's bytes written past them; then every block moved already.
    for (keep, tail) in [(0, &[][..]), (2, &[7u8; 999][..]), (usize::MAX, &[][..])] {
        let dir = dir.join(format!("keep-{keep}"));
        let ledger = Ledger::open(&dir).unwrap();
        offer(&ledger, &events[..1_500], 1);
        offer(&ledger, &events[1_500..], 2);
        let (head, before) = (ledger.head(), entries(&ledger));
        let blocks = places(&ledger).len();
        assert!(blocks >= 4, "4,000 entries span several blocks");
        drop(ledger);
        make_old_store(&dir, keep.min(blocks), tail);
        assert!(old_files(&dir).starts_with(&["blobs".into(), "conf".into(), "db".into()]));

        let ledger = Ledger::open(&dir).unwrap();
        assert_eq!(old_files(&dir), Vec::<String>::new());
        let keys: Vec<u8> = ledger.log.iter().keys().map(|k| k.unwrap()[0]).collect();
        assert_eq!(keys.iter().filter(|k| **k != b'p').collect::<Vec<_>>(), [&b'm']);
        assert_eq!(ledger.db.tree_names().len(), 2, "sled's default tree and `ledger`");
        assert_eq!(places(&ledger).len(), blocks);
        assert_eq!(ledger.head(), head);
        assert_eq!(entries(&ledger), before);
        let v = ledger.verify(|_| {});
        assert_eq!((v.checked, v.first_bad, v.head), (4_000, None, head));
        // It appends where the moved blocks end, and refuses the ids it holds.
        let more = touch("after-the-move", "L1", 9);
        assert_eq!(
            offer(&ledger, &[events[17].clone(), more], 3),
            [Appended::Duplicate(18), Appended::Stored(4_001)]
        );
        assert_eq!(
            ledger.get(4_001).unwrap().map(|e| e.event.id),
            Some("after-the-move".into())
        );
        let v = ledger.verify(|_| {});
        assert_eq!((v.checked, v.first_bad), (4_001, None));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_upgrade_that_stopped_part_way_is_finished_by_the_next_open() {
    let (dir, ledger) = temp();
    offer(&ledger, &many(2_500, 7), 1);
    let (head, before) = (ledger.head(), entries(&ledger));
    drop(ledger);
    make_old_store(&dir, 1, &[]);
    let saved = dir.with_extension("old-files");
    std::fs::create_dir_all(&saved).unwrap();
    for name in old_files(&dir) {
        copy_file_or_dir(&dir.join(&name), &saved.join(&name));
    }
    // Stopped while copying: a partial new store, which is built again.
    std::fs::create_dir_all(dir.join("places.partial")).unwrap();
    std::fs::write(dir.join("places.partial").join("db"), b"half a store").unwrap();
    let ledger = Ledger::open(&dir).unwrap();
    assert!(!dir.join("places.partial").exists());
    assert_eq!((ledger.head(), entries(&ledger)), (head, before.clone()));
    drop(ledger);
    // Stopped after the rename, before the old files went: they are removed, the new store kept.
    for name in old_files(&saved) {
        copy_file_or_dir(&saved.join(&name), &dir.join(&name));
    }
    assert_eq!(old_files(&dir), old_files(&saved));
    let ledger = Ledger::open(&dir).unwrap();
    assert_eq!(old_files(&dir), Vec::<String>::new());
    assert_eq!((ledger.head(), entries(&ledger)), (head, before));
    let v = ledger.verify(|_| {});
    assert_eq!((v.checked, v.first_bad), (2_500, None));
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(saved);
}

#[test]
fn bytes_past_the_last_indexed_block_are_cut_off_and_a_missing_indexed_block_is_damage() {
    let (dir, ledger) = temp();
    offer(&ledger, &many(2_000, 7), 1);
    let head = ledger.head();
    let end = places(&ledger).last().unwrap().1.end();
    // An append that wrote its blocks and stopped before its places landed in sled.
    ledger.blocks.write_at(end, &[9u8; 5_000]).unwrap();
    ledger.flush().unwrap();
    drop(ledger);
    let ledger = Ledger::open(&dir).unwrap();
    assert_eq!((ledger.head(), ledger.blocks.len().unwrap()), (head, end));
    offer(&ledger, &[touch("next", "L1", 5)], 2);
    let v = ledger.verify(|_| {});
    assert_eq!((v.checked, v.first_bad), (2_001, None));

    // A placed block the file no longer holds (a disk that lost its last write): refused on
    // open, located by verify.
    let places = places(&ledger);
    let (last_first, last) = *places.last().unwrap();
    ledger.blocks.truncate(last.offset + 10).unwrap();
    drop(ledger);
    assert!(matches!(
        Ledger::open(&dir),
        Err(LedgerError::Damaged { seq, .. }) if seq == last_first
    ));
    let audited = Ledger::open_unchecked(&dir).unwrap();
    assert_eq!(audited.head().seq, last_first - 1);
    let v = audited.verify(|_| {});
    assert_eq!(
        (v.checked, v.first_bad.map(|b| b.0)),
        (last_first - 1, Some(last_first))
    );
    let _ = std::fs::remove_dir_all(dir);
}
