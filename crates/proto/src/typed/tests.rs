//! Round trips and refusals of the typed encoding.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::*;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(x: T) -> Value {
    let v = to_value(&x).unwrap();
    let back: T = from_value(&v).unwrap();
    assert_eq!(back, x);
    v
}

#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
struct Point {
    x: f32,
    y: f64,
    label: String,
    tags: Vec<String>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
enum Shape {
    Empty,
    Circle(f64),
    Rect { w: u32, h: u32 },
    Pair(i8, u128),
}

#[test]
fn every_integer_and_float_width_keeps_its_value() {
    assert_eq!(round_trip(u64::MAX), Value::Int(-1));
    round_trip(i64::MIN);
    round_trip(u8::MAX);
    round_trip(i8::MIN);
    round_trip(u16::MAX);
    round_trip(i16::MIN);
    round_trip(u32::MAX);
    round_trip(i32::MIN);
    round_trip(u128::MAX);
    round_trip(i128::MIN);
    round_trip(-1.5f32);
    round_trip(f64::MAX);
    round_trip('λ');
    round_trip(true);
    round_trip(());
    round_trip(String::from("text"));
}

#[test]
fn structs_enums_maps_options_and_tuples_round_trip() {
    let p = Point {
        x: 1.5,
        y: -2.25,
        label: "a".into(),
        tags: vec!["x".into(), "y".into()],
    };
    let v = round_trip(p.clone());
    assert!(
        matches!(&v, Value::List(l) if l.len() == 4),
        "positional: {v:?}"
    );
    for s in [
        Shape::Empty,
        Shape::Circle(2.0),
        Shape::Rect { w: 3, h: 4 },
        Shape::Pair(-1, u128::MAX - 7),
    ] {
        round_trip(s);
    }
    round_trip(Some(p.clone()));
    round_trip(None::<Point>);
    round_trip(Some(None::<u8>));
    round_trip((1u8, "two".to_string(), 3.0f64, vec![Some(4u64)]));
    let mut m = HashMap::new();
    m.insert("word".to_string(), 3u64);
    m.insert("other".to_string(), u64::MAX);
    round_trip(m);
    let mut b = BTreeMap::new();
    b.insert(7i32, vec![Shape::Empty]);
    round_trip(b);
    round_trip(Vec::<Point>::new());
    round_trip(vec![vec![1u16, 2], vec![]]);
}

#[test]
fn long_sequences_of_numbers_go_raw_and_short_ones_inline() {
    let floats: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
    let v = round_trip(floats.clone());
    match &v {
        Value::Bytes(b) => {
            assert_eq!(b.len(), 4000);
            assert_eq!(&b[4..8], &0.5f32.to_le_bytes(), "little-endian, in order");
        }
        v => panic!("expected raw bytes, got {v:?}"),
    }
    let bytes: Vec<u8> = (0..=255).cycle().take(5000).collect();
    assert!(matches!(round_trip(bytes), Value::Bytes(b) if b.len() == 5000));
    let ints = vec![u64::MAX; 200];
    assert!(matches!(round_trip(ints), Value::Bytes(b) if b.len() == 1600));
    // Below the threshold: a list of numbers, which goes inline.
    assert_eq!(
        round_trip(vec![1u64, 2, 3]),
        Value::List(vec![1.into(), 2.into(), 3.into()])
    );
    assert!(!round_trip(vec![1.0f64; 127]).any_leaf(&|x| matches!(x, Value::Bytes(_))));
    // Raw arrays inside structures, and a raw array read back as a fixed-size one.
    round_trip((vec![3i16; 600], "x".to_string()));
    round_trip([7u32; 32]);
    let raw: Vec<u8> = [1u32, 2, 3, 4]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    assert_eq!(
        from_value::<[u32; 4]>(&Value::Bytes(raw.into())).unwrap(),
        [1, 2, 3, 4]
    );
    // Not numbers of one type: a list, whatever its size.
    let mixed: Vec<Option<u32>> = (0..600).map(|i| (i % 2 == 0).then_some(i)).collect();
    assert!(matches!(round_trip(mixed), Value::List(l) if l.len() == 600));
}

#[test]
fn a_value_of_the_wrong_shape_is_an_error_naming_what_was_expected_and_found() {
    let err = from_value::<u64>(&Value::Str("7".into()))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "expected u64, found a str");
    let err = from_value::<u8>(&Value::Int(300)).unwrap_err().to_string();
    assert_eq!(err, "300 does not fit in u8");
    let err = from_value::<Point>(&Value::List(vec![Value::Int(1)]))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "expected struct Point (4 fields), found a list of 1");
    let err = from_value::<(u8, u8)>(&Value::Int(1))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "expected a tuple of 2, found a int");
    let err = from_value::<Vec<u32>>(&Value::Bytes(vec![0u8; 7].into()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("7 bytes is not a whole number of 4-byte items"),
        "{err}"
    );
    let err = from_value::<Shape>(&Value::Int(9)).unwrap_err().to_string();
    assert!(err.contains("integer `9`, expected variant index"), "{err}");
    let err = from_value::<String>(&Value::Bytes(vec![1u8].into()))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "expected a string, found 1 raw bytes");
}

#[test]
fn typed_values_survive_the_wire() {
    let p = Shape::Rect { w: 1, h: u32::MAX };
    let v = to_value(&(p.clone(), vec![2.5f64; 400])).unwrap();
    let mut bufs = Vec::new();
    let d = v.to_datum(&mut bufs).unwrap();
    assert_eq!(bufs.len(), 1, "the raw floats travel as one buffer");
    let back = d.to_value(&bufs, &[]).unwrap();
    let (q, fs): (Shape, Vec<f64>) = from_value(&back).unwrap();
    assert_eq!((q, fs), (p, vec![2.5; 400]));
}
