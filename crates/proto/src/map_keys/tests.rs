use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};

use super::*;

/// A block's span: its first number and its slots, past which it holds nothing; none
/// for a prefix with no block.
#[test]
fn a_blocks_span_is_its_first_number_and_its_slots() {
    let mut b = MapKeys::default();
    assert_eq!(b.span("a"), None);
    b.open("a", 7);
    assert_eq!(b.span("a"), Some((7, 0)));
    b.insert("a", 7, 1).unwrap();
    b.insert("a", 9, 2).unwrap();
    assert_eq!(b.span("a"), Some((7, 3)));
    assert_eq!(b.span("b"), None);
    // The front taken: the block starts at the next value held.
    assert_eq!(b.remove("a", 7), Some(1));
    assert_eq!(b.span("a"), Some((9, 1)));
}

/// Keys held and taken at random, in blocks opened, emptied and closed for sparseness,
/// answer as a plain map does (keys out of reach stay in the plain map, as a caller's
/// table would keep them).
#[test]
fn map_keys_answer_as_a_plain_map_with_a_table_beside() {
    let mut blocks = MapKeys::default();
    let mut table: std::collections::HashMap<(String, u64), u64> = Default::default();
    let mut model: std::collections::HashMap<(String, u64), u64> = Default::default();
    let mut rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut rand = move |n: u64| rng.random_range(0..n);
    let prefixes = ["a", "b", "c-1", ""];
    for step in 0..50_000u64 {
        let p = prefixes[rand(4) as usize];
        let n = match rand(3) {
            0 => rand(3000),
            _ => 100 + rand(400),
        };
        let key = (p.to_string(), n);
        match rand(5) {
            0 => {
                blocks.open(p, n);
                if !model.contains_key(&key) && blocks.insert(p, n, step).is_ok() {
                    model.insert(key, step);
                }
                blocks.close_if_empty(p);
            }
            1 | 2 if !model.contains_key(&key) => {
                if let Err(v) = blocks.insert(p, n, step) {
                    assert!(!blocks.reaches(p, n), "{p}-{n} refused within reach");
                    table.insert(key.clone(), v);
                }
                model.insert(key, step);
            }
            3 => {
                // Taken only if it is the value the model holds (always, when held).
                let want = model.get(&key).copied();
                let got = match blocks.take_if(p, n, |v| Some(*v) == want) {
                    None => table.remove(&key),
                    Some(Taken::Kept) => panic!("{p}-{n} kept at step {step}"),
                    Some(Taken::Taken { value, spilled }) => {
                        for (m, v) in spilled {
                            assert!(m != n, "{p}-{n} spilled after it was taken");
                            table.insert((p.to_string(), m), v);
                        }
                        Some(value)
                    }
                };
                assert_eq!(got, model.remove(&key), "{p}-{n} at step {step}");
            }
            _ => {
                // Looked at, not taken: everything stays.
                let seen = blocks.take_if(p, n, |v| {
                    assert_eq!(Some(&*v), model.get(&key), "{p}-{n} at step {step}");
                    false
                });
                match seen {
                    None => assert_eq!(table.get(&key), model.get(&key)),
                    Some(t) => assert_eq!(t, Taken::Kept),
                }
            }
        }
        blocks.check();
        assert_eq!(blocks.len() + table.len(), model.len(), "step {step}");
        assert_eq!(blocks.is_empty(), model.len() == table.len());
    }
    for ((p, n), v) in &model {
        let got = blocks.get(p, *n).or_else(|| table.get(&(p.clone(), *n)));
        assert_eq!(got, Some(v), "{p}-{n}");
    }
    let mut listed: Vec<(String, u64, u64)> = blocks
        .iter()
        .map(|(p, n, v)| (p.to_string(), n, *v))
        .chain(table.iter().map(|((p, n), v)| (p.clone(), *n, *v)))
        .collect();
    listed.sort();
    let mut want: Vec<(String, u64, u64)> = model
        .iter()
        .map(|((p, n), v)| (p.clone(), *n, *v))
        .collect();
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(blocks.values_mut().count(), blocks.len());
}

/// A map whose last key is numbered `u64::MAX`: taken in order, in any order, or
/// looked at and kept, no count passes the largest number.
#[test]
fn keys_up_to_the_largest_number_are_taken_without_overflow() {
    let first = u64::MAX - 9;
    for order in [
        (first..=u64::MAX).collect::<Vec<_>>(),
        (first..=u64::MAX).rev().collect(),
        vec![
            u64::MAX,
            first,
            u64::MAX - 1,
            first + 1,
            first + 5,
            first + 2,
            first + 3,
        ]
        .into_iter()
        .chain([first + 4, first + 6, first + 7])
        .collect(),
    ] {
        let mut b = MapKeys::default();
        b.open("p", first);
        for n in first..=u64::MAX {
            b.insert("p", n, n).unwrap();
        }
        for (i, &n) in order.iter().enumerate() {
            assert_eq!(b.take_if("p", n, |_| false), Some(Taken::Kept));
            let taken = if i % 2 == 0 {
                b.remove("p", n)
            } else {
                match b.take_if("p", n, |v| *v == n) {
                    Some(Taken::Taken { value, spilled }) => {
                        assert!(spilled.is_empty());
                        Some(value)
                    }
                    other => panic!("{n}: {other:?}"),
                }
            };
            assert_eq!(taken, Some(n));
            b.check();
        }
        assert!(b.no_blocks() && b.is_empty(), "{order:?}");
    }
}

/// A block of at least [`CLOSE_SPARSE_FROM`] slots is sparse with fewer than a
/// quarter of them live, not with a quarter exactly; a smaller one never is.
/// A block closed empty leaves its room, cleared, to the next block opened, unless it
/// is larger than [`SPARE_SLOTS`].
#[test]
fn a_block_closed_empty_leaves_its_room_to_the_next() {
    let mut b = MapKeys::default();
    for (p, n) in [
        ("a", 1000),
        ("b", 10),
        ("c", SPARE_SLOTS as u64 + 1),
        ("d", 1),
    ] {
        b.open(p, 0);
        let room = b.blocks[0].slots.capacity();
        (0..n).for_each(|i| b.insert(p, i, i).unwrap());
        match p {
            "a" => assert_eq!(room, 0, "nothing closed before"),
            "b" | "c" => assert!(room >= 1000, "{p}: room left by a: {room}"),
            _ => assert_eq!(room, 0, "c's room is not kept, and took a's"),
        }
        b.check();
        assert_eq!(b.get(p, n - 1), Some(&(n - 1)));
        assert_eq!(b.get(p, n), None, "{p}: a slot past those put in");
        (0..n).for_each(|i| assert_eq!(b.remove(p, i), Some(i)));
        assert!(b.no_blocks());
    }
}

#[test]
fn a_block_is_sparse_below_a_quarter_of_its_slots() {
    let block = |slots: usize, live: usize| Block {
        prefix: "p".into(),
        first: 0,
        slots: (0..slots).map(|i| (i < live).then_some(i)).collect(),
        live,
    };
    let n = CLOSE_SPARSE_FROM;
    assert!(!block(n, n / 4).sparse());
    assert!(block(n, n / 4 - 1).sparse());
    assert!(block(4 * n, n - 1).sparse() && !block(4 * n, n).sparse());
    assert!(!block(n - 1, 0).sparse());
    assert!(!block(n, n).sparse());
}

#[test]
fn a_block_loses_its_front_and_closes_when_sparse_or_empty() {
    let mut b = MapKeys::default();
    assert!(b.no_blocks());
    b.open("p", 10);
    assert!(!b.no_blocks());
    assert!(b.reaches("p", 10) && b.reaches("p", 10 + MAX_GAP));
    assert!(!b.reaches("p", 9) && !b.reaches("p", 11 + MAX_GAP) && !b.reaches("q", 10));
    for n in 10..1010 {
        b.insert("p", n, n).unwrap();
    }
    assert_eq!(b.insert("p", 9, 9), Err(9));
    assert_eq!(b.insert("q", 10, 10), Err(10));
    // Taken in order: the front goes.
    for n in 10..510 {
        let taken = b.take_if("p", n, |v| *v == n);
        assert_eq!(
            taken,
            Some(Taken::Taken {
                value: n,
                spilled: vec![]
            })
        );
    }
    assert_eq!((b.blocks[0].first, b.blocks[0].slots.len()), (510, 500));
    assert_eq!(b.remove("p", 300), None);
    // All but every eighth: closed once fewer than a quarter of its slots are live,
    // its keys given back (and taken from there after).
    let mut moved = std::collections::BTreeMap::new();
    for n in (510..1010).filter(|n| n % 8 != 0) {
        let got = match b.take_if("p", n, |_| true) {
            Some(Taken::Taken { value, spilled }) => {
                if !spilled.is_empty() {
                    // Closed once, giving back every key still held.
                    assert!(moved.is_empty(), "closed twice");
                    let held = |m: u64| m.is_multiple_of(8) || m > n;
                    assert!(spilled.iter().all(|(m, v)| m == v && held(*m)));
                    assert_eq!(spilled.len(), (510..1010).filter(|m| held(*m)).count());
                }
                moved.extend(spilled);
                Some(value)
            }
            Some(Taken::Kept) => unreachable!(),
            None => moved.remove(&n),
        };
        assert_eq!(got, Some(n));
    }
    assert!(b.no_blocks());
    assert_eq!(b.len(), 0);
    let want: Vec<u64> = (510..1010).filter(|n| n % 8 == 0).collect();
    assert_eq!(moved.keys().copied().collect::<Vec<_>>(), want);
    // Opened and left empty, or emptied: closed.
    b.open("r", 0);
    b.close_if_empty("r");
    assert!(b.no_blocks());
    b.open("r", 0);
    b.insert("r", 0, 0).unwrap();
    assert_eq!(b.remove("r", 0), Some(0));
    assert!(b.no_blocks());
    // The last block found is compared first; a block moved by another's closing is
    // still found.
    for p in ["x", "y", "z"] {
        b.open(p, 0);
        b.insert(p, 0, 1).unwrap();
    }
    assert_eq!(b.remove("x", 0), Some(1));
    assert_eq!(b.get("z", 0), Some(&1));
    assert_eq!(b.get("y", 0), Some(&1));
    *b.get_mut("z", 0).unwrap() = 2;
    assert_eq!(b.get("z", 0), Some(&2));
    b.check();
}

/// A block found once answers and holds its keys as the map does key by key.
#[test]
fn a_block_found_once_answers_as_its_map() {
    let mut b = MapKeys::default();
    assert!(b.block_mut("p").is_none());
    b.open("p", 10);
    let mut block = b.block_mut("p").unwrap();
    assert_eq!(block.insert(10, 1), Ok(()));
    // Past a gap; before the block; out of its reach.
    assert_eq!(block.insert(13, 4), Ok(()));
    assert_eq!(block.insert(9, 0), Err(0));
    assert_eq!(block.insert(15 + MAX_GAP, 0), Err(0));
    *block.get_mut(13).unwrap() += 1;
    assert_eq!(block.get_mut(11), None);
    assert_eq!(block.get_mut(9), None);
    assert_eq!(block.get_mut(15 + MAX_GAP), None);
    b.check();
    assert_eq!(b.len(), 2);
    assert_eq!((b.get("p", 10), b.get("p", 13)), (Some(&1), Some(&5)));
}
