//! The journal's file: records read back as written, a torn or damaged tail cut, a file
//! that is not a journal refused, compaction replacing the file whole.

use super::*;

fn task(key: &str) -> JournalTask {
    JournalTask {
        key: key.into(),
        op: "inc".into(),
        args: Datum::List(vec![Datum::Int(7), Datum::Buf(0)]),
        bufs: vec![Bytes::from_static(&[1, 2, 3])],
        deps: vec!["x".into()],
        resources: vec![Resource {
            name: "gpu".into(),
            amount: 1.0,
        }],
        code: Some(9),
    }
}

fn records() -> Vec<Record> {
    vec![
        Record::ClientJoined {
            id: 1,
            name: "c".into(),
        },
        Record::Graph(vec![task("a"), task("b")]),
        Record::Created(vec![(1, 2), (0, 4 << 32 | 1)]),
        Record::Wants {
            client: 1,
            keys: vec!["b".into()],
        },
        Record::Forgotten(vec![3]),
        Record::WorkerJoined {
            id: 0,
            name: "w".into(),
        },
        Record::Floor(1 << 20),
        Record::Erred(vec![(2, "boom".into())]),
    ]
}

/// A new directory for a journal.
pub(crate) fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "rask-journal-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn records_read_back_as_written_and_a_torn_tail_is_cut() {
    let d = dir();
    let path = d.join("j");
    assert_eq!(
        read(&path).unwrap(),
        (vec![], 0),
        "no file: nothing to restore"
    );
    let mut w = JournalWriter::open(&path, 0, Fsync::Always).unwrap();
    for r in records() {
        w.append(&r).unwrap();
    }
    w.flush().unwrap();
    let full = w.len();
    drop(w);
    let (got, valid) = read(&path).unwrap();
    assert_eq!((got, valid), (records(), full));
    // A crash in the middle of the last record: the journal ends before it.
    let bytes = std::fs::read(&path).unwrap();
    for cut in [full - 1, full - 5, full - 13] {
        std::fs::write(&path, &bytes[..cut as usize]).unwrap();
        let (got, valid) = read(&path).unwrap();
        assert_eq!(
            got,
            records()[..records().len() - 1].to_vec(),
            "cut at {cut}"
        );
        assert!(valid < cut);
        // Appending after restore cuts the torn bytes first.
        let mut w = JournalWriter::open(&path, valid, Fsync::Never).unwrap();
        w.append(&Record::ClientLeft(1)).unwrap();
        w.flush().unwrap();
        let (again, _) = read(&path).unwrap();
        let n = records().len();
        assert_eq!(again.len(), n);
        assert_eq!(again[n - 1], Record::ClientLeft(1));
    }
    // A flipped byte in a payload: the checksum ends the journal there.
    let mut bad = bytes.clone();
    let at = MAGIC.len() + 12 + 3;
    bad[at] ^= 0x40;
    std::fs::write(&path, &bad).unwrap();
    assert_eq!(read(&path).unwrap(), (vec![], MAGIC.len() as u64));
    // A huge announced length is damage, not an allocation.
    let mut huge = bytes[..MAGIC.len()].to_vec();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    huge.extend_from_slice(&[0; 8]);
    std::fs::write(&path, &huge).unwrap();
    assert_eq!(read(&path).unwrap(), (vec![], MAGIC.len() as u64));
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn a_file_that_is_not_a_journal_is_refused_by_name() {
    let d = dir();
    let path = d.join("notes.txt");
    std::fs::write(&path, b"hello, world").unwrap();
    let e = read(&path).unwrap_err();
    assert!(
        e.contains("notes.txt") && e.contains("not a Rask journal"),
        "{e}"
    );
    std::fs::remove_dir_all(d).unwrap();
}

/// Version 2's records are version 3's but one: its journals are read as they are;
/// version 1's are refused.
#[test]
fn a_version_2_journal_is_read_and_a_version_1_journal_refused() {
    let d = dir();
    let path = d.join("journal");
    let mut w = JournalWriter::open(&path, 0, Fsync::Never).unwrap();
    let old: Vec<Record> = records()
        .into_iter()
        .filter(|r| !matches!(r, Record::Erred(_)))
        .collect();
    for r in &old {
        w.append(r).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[7] = 2;
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(read(&path).unwrap(), (old, bytes.len() as u64));
    bytes[7] = 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(read(&path).unwrap_err().contains("not a Rask journal"));
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn compaction_replaces_the_journal_whole_and_appending_goes_on() {
    let d = dir();
    let path = d.join("j");
    let mut w = JournalWriter::open(&path, 0, Fsync::Never).unwrap();
    for _ in 0..100 {
        for r in records() {
            w.append(&r).unwrap();
        }
    }
    w.flush().unwrap();
    let before = w.len();
    assert!(!w.wants_compaction(), "under the minimum size");
    w.rewrite(&records()[..2]).unwrap();
    assert!(w.len() < before / 50);
    w.append(&Record::ClientLeft(1)).unwrap();
    w.flush().unwrap();
    let (got, valid) = read(&path).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[..2], records()[..2]);
    assert_eq!(valid, w.len());
    assert!(!path.with_extension("compacting").exists());
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn fsync_policies_parse_and_bad_ones_are_named() {
    assert_eq!("always".parse::<Fsync>(), Ok(Fsync::Always));
    assert_eq!("never".parse::<Fsync>(), Ok(Fsync::Never));
    assert_eq!(
        "0.5".parse::<Fsync>(),
        Ok(Fsync::Every(Duration::from_millis(500)))
    );
    for bad in ["sometimes", "-1", "0", "nan"] {
        let e = bad.parse::<Fsync>().unwrap_err();
        assert!(e.contains(bad), "{e}");
    }
}

#[test]
fn the_checksum_sees_every_flipped_bit_and_pair_of_nearby_bits() {
    let data: Vec<u8> = (0..203u32).map(|i| (i * 37 % 251) as u8).collect();
    let sum = checksum(&data);
    let bits = data.len() * 8;
    let mut seen = std::collections::HashSet::from([sum]);
    for a in 0..bits {
        let mut d = data.clone();
        d[a / 8] ^= 1 << (a % 8);
        assert!(seen.insert(checksum(&d)), "bit {a}");
        // Multiplying moves bits only upwards: unfolded, a word's top bit flipped would
        // be cancelled by a bit flipped in the next word.
        for b in a + 1..bits.min(a + 130) {
            let mut e = d.clone();
            e[b / 8] ^= 1 << (b % 8);
            assert_ne!(checksum(&e), sum, "bits {a} and {b}");
        }
    }
    assert_ne!(checksum(&data[..202]), sum, "a cut tail");
}
