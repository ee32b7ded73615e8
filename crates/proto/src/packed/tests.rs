use super::*;
use proptest::prelude::*;

fn datum() -> impl Strategy<Value = Datum> {
    let leaf = prop_oneof![
        Just(Datum::Null),
        any::<bool>().prop_map(Datum::Bool),
        any::<i64>().prop_map(Datum::Int),
        any::<f64>().prop_map(Datum::Float),
        ".{0,30}".prop_map(Datum::Str),
        any::<u32>().prop_map(Datum::Buf),
        any::<u32>().prop_map(Datum::Ref),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop::collection::vec(inner, 0..8).prop_map(Datum::List)
    })
}

proptest! {
    /// Packed or not, arguments are written as their packing, read back packed to
    /// the same bytes; what a scan counts is told right.
    #[test]
    fn arguments_are_written_as_their_packing(d in datum()) {
        let p = Packed::new(&d);
        let packed = rkyv::to_bytes::<rkyv::rancor::Error>(&TaskArgs::Packed(p.clone()))
            .unwrap();
        let plain = rkyv::to_bytes::<rkyv::rancor::Error>(&TaskArgs::Datum(d.clone()))
            .unwrap();
        prop_assert_eq!(packed.as_slice(), plain.as_slice());
        let back = crate::frame::decode_header::<TaskArgs>(&packed).unwrap();
        let TaskArgs::Packed(q) = &back else {
            return Err(TestCaseError::fail("read back unpacked"));
        };
        prop_assert_eq!(q.bytes(), p.bytes());
        prop_assert_eq!(format!("{:?}", back.into_datum()), format!("{d:?}"));
        let scan = p.scan();
        prop_assert_eq!(scan.max_ref, d.max_ref());
        prop_assert_eq!(scan.max_buf, d.max_buf());
        let args = TaskArgs::Packed(p.clone());
        prop_assert_eq!(args.max_buf(), d.max_buf());
        prop_assert_eq!(args.max_ref(), d.max_ref());
        prop_assert_eq!(
            crate::size::args_wire_size(&TaskArgs::Datum(d.clone())),
            crate::size::args_wire_size(&args)
        );
        prop_assert_eq!(crate::size::args_wire_size(&args), 16 + p.bytes().len());
        prop_assert_eq!(crate::size::packed_wire_size(&p), 16 + p.bytes().len());
    }

    /// A packing's value is its datum's: the same value, or the same error for a
    /// buffer or a dependency that is not there.
    #[test]
    fn packed_arguments_have_their_datums_value(
        d in datum(),
        nbufs in 0usize..3,
        ndeps in 0usize..3,
    ) {
        let d = small_indices(d);
        let bufs: Vec<Bytes> =
            (0..nbufs).map(|i| Bytes::from(vec![i as u8; i + 1])).collect();
        let dep_values: Vec<Value> = (0..ndeps).map(|i| Value::Int(100 + i as i64)).collect();
        let deps: Vec<&Value> = dep_values.iter().collect();
        let want = d.to_value(&bufs, &deps).map_err(|e| e.to_string());
        let p = Packed::new(&d);
        let got = p.to_value(&bufs, &deps).map_err(|e| e.to_string());
        prop_assert_eq!(format!("{got:?}"), format!("{want:?}"));
        let args = TaskArgs::Packed(p).to_value(&bufs, &deps).map_err(|e| e.to_string());
        prop_assert_eq!(format!("{args:?}"), format!("{want:?}"));
        let plain = TaskArgs::Datum(d).to_value(&bufs, &deps).map_err(|e| e.to_string());
        prop_assert_eq!(format!("{plain:?}"), format!("{want:?}"));
    }

    /// Whatever bytes a peer sends, the check refuses them or they read back (every
    /// reading of a packing assumes it sound, and would panic otherwise).
    #[test]
    fn any_bytes_are_refused_or_read(bytes in prop::collection::vec(0u8..12, 0..40)) {
        if let Ok(p) = Packed::from_wire(&bytes) {
            prop_assert_eq!(Packed::new(&p.unpack()).unpack(), p.unpack());
            let _ = p.scan();
            let _ = p.to_value::<Bytes>(&[], &[]);
        }
    }

    /// A value with no bytes packs as its datum does, and comes back as it was.
    #[test]
    fn a_value_packs_as_its_datum(d in datum()) {
        let d = no_indices(d);
        let v = d.to_value(&[], &[]).unwrap();
        let p = Packed::of_value(&v).unwrap();
        let as_datum = Packed::new(&v.to_datum(&mut Vec::new()).unwrap());
        prop_assert_eq!(p.bytes(), as_datum.bytes());
        let back = p.to_value::<Bytes>(&[], &[]).unwrap();
        // Floats by their bits: a NaN is not equal to itself.
        prop_assert_eq!(format!("{back:?}"), format!("{v:?}"));
    }

    /// A task's arguments pack as the list of their datums does, naming the same keys
    /// and buffers in the same order.
    #[test]
    fn arguments_pack_as_their_datums(args in prop::collection::vec(arg(), 0..5)) {
        let (mut deps, mut bufs) = (Vec::new(), Vec::new());
        let p = Packed::of_args(&args, &mut deps, &mut bufs).unwrap();
        let (mut deps2, mut bufs2) = (Vec::new(), Vec::new());
        let items: Vec<Datum> = args
            .iter()
            .map(|a| a.to_datum(&mut deps2, &mut bufs2).unwrap())
            .collect();
        let as_datums = Packed::new(&Datum::List(items));
        prop_assert_eq!(p.bytes(), as_datums.bytes());
        prop_assert_eq!(deps, deps2);
        prop_assert_eq!(bufs, bufs2);
    }

    /// Every packing made here passes the check a peer's must.
    #[test]
    fn every_packing_passes_the_check(d in datum()) {
        let p = Packed::new(&d);
        prop_assert_eq!(Packed::from_wire(p.bytes()).unwrap(), p);
    }

    #[test]
    fn every_datum_comes_back_as_it_was_packed(d in datum()) {
        let p = Packed::new(&d);
        // Floats by their bits: a NaN is not equal to itself.
        prop_assert_eq!(format!("{:?}", p.unpack()), format!("{d:?}"));
        prop_assert_eq!(matches!(p.0, Repr::Inline { .. }), p.bytes().len() <= INLINE);
    }
}

/// `d` with every buffer and reference index taken modulo 4, so that some are there
/// and some are not.
fn small_indices(d: Datum) -> Datum {
    match d {
        Datum::Buf(i) => Datum::Buf(i % 4),
        Datum::Ref(i) => Datum::Ref(i % 4),
        Datum::List(l) => Datum::List(l.into_iter().map(small_indices).collect()),
        d => d,
    }
}

fn scratch_room() -> usize {
    SCRATCH.with(|s| s.borrow().capacity())
}

/// The buffer packings are written into is kept for the next, unless one grew it past
/// its bound (a huge packing's room is not held on to), whichever way it is packed.
#[test]
fn the_buffer_is_kept_unless_huge() {
    let huge = "x".repeat(SCRATCH_KEPT + 1);
    let ways: [&dyn Fn(&str) -> Packed; 3] = [
        &|s| Packed::new(&Datum::Str(s.into())),
        &|s| Packed::of_value(&Value::Str(s.into())).unwrap(),
        &|s| Packed::of_args(&[Arg::from(s)], &mut Vec::new(), &mut Vec::new()).unwrap(),
    ];
    for (i, pack) in ways.iter().enumerate() {
        SCRATCH.with(|s| *s.borrow_mut() = Vec::new());
        pack("small");
        let room = scratch_room();
        assert!(room > 0, "way {i}: room kept");
        pack(&huge);
        assert_eq!(scratch_room(), 0, "way {i}: a huge packing's room let go");
        let exactly = "x".repeat(SCRATCH_KEPT - 8);
        SCRATCH.with(|s| *s.borrow_mut() = Vec::with_capacity(SCRATCH_KEPT));
        pack(&exactly);
        assert_eq!(
            scratch_room(),
            SCRATCH_KEPT,
            "way {i}: room at the bound kept"
        );
    }
}

/// Arguments naming no buffer stay packed when the frame's buffers move.
#[test]
fn arguments_without_buffers_stay_packed_when_buffers_move() {
    let d = Datum::List(vec![Datum::Int(6), Datum::Ref(6)]);
    let mut a = TaskArgs::Packed(Packed::new(&d));
    a.shift_buffers(3);
    assert!(
        matches!(a, TaskArgs::Packed(_)),
        "nothing to move: kept packed"
    );
    assert_eq!(a.into_datum(), d);
}

fn arg() -> impl Strategy<Value = Arg> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|i| Arg::Value(Value::Int(i))),
        ".{0,10}".prop_map(|s| Arg::Value(Value::Str(s))),
        prop::collection::vec(any::<u8>(), 0..4)
            .prop_map(|b| Arg::Value(Value::List(vec![Value::Null, Value::Bytes(b.into())]))),
        "[a-c]".prop_map(Arg::Key),
        any::<bool>().prop_map(|b| Arg::Value(Value::List(vec![Value::Bool(b)]))),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(Arg::List)
    })
}

/// Arguments nested past the limit are refused, as their datums are.
#[test]
fn arguments_too_deep_are_refused() {
    let mut a = Arg::from(1i64);
    for _ in 0..=MAX_DEPTH {
        a = Arg::List(vec![a]);
    }
    let err = Packed::of_args(std::slice::from_ref(&a), &mut Vec::new(), &mut Vec::new());
    let want = a.to_datum(&mut Vec::new(), &mut Vec::new()).unwrap_err();
    assert_eq!(err.unwrap_err().to_string(), want.to_string());
    // One level less is kept, as its datum is.
    let Arg::List(inner) = a else { unreachable!() };
    let kept = Packed::of_args(&inner, &mut Vec::new(), &mut Vec::new()).unwrap();
    let datum = inner[0].to_datum(&mut Vec::new(), &mut Vec::new()).unwrap();
    assert_eq!(kept.unpack(), Datum::List(vec![datum]));
    // A value too deep inside an argument: its datum is refused too.
    let mut v = Value::Int(1);
    for _ in 0..=MAX_DEPTH {
        v = Value::List(vec![v]);
    }
    let err = Packed::of_args(&[Arg::Value(v)], &mut Vec::new(), &mut Vec::new());
    assert!(matches!(err, Err(ProtoError::TooDeep(MAX_DEPTH))));
}

/// `d` with every buffer and reference made an integer: a datum whose value needs no
/// frame and no inputs.
fn no_indices(d: Datum) -> Datum {
    match d {
        Datum::Buf(i) | Datum::Ref(i) => Datum::Int(i64::from(i)),
        Datum::List(l) => Datum::List(l.into_iter().map(no_indices).collect()),
        d => d,
    }
}

/// A value holding bytes, or nested past the limit, does not pack; one at the limit
/// does.
#[test]
fn values_with_bytes_or_too_deep_do_not_pack() {
    let bytes = Value::List(vec![Value::Int(1), Value::Bytes(Bytes::from_static(b"b"))]);
    assert_eq!(Packed::of_value(&bytes), None);
    let nested = |levels: usize| {
        let mut v = Value::Int(1);
        for _ in 0..levels {
            v = Value::List(vec![v]);
        }
        v
    };
    assert!(Packed::of_value(&nested(MAX_DEPTH)).is_some());
    assert_eq!(Packed::of_value(&nested(MAX_DEPTH + 1)), None);
    assert!(nested(MAX_DEPTH + 1).to_datum(&mut Vec::new()).is_err());
    // Nothing of a refused value is kept for the next.
    assert_eq!(
        Packed::of_value(&Value::Int(-2)).unwrap().bytes(),
        Packed::new(&Datum::Int(-2)).bytes()
    );
}

/// What a peer may not send as arguments is refused, naming what is wrong.
#[test]
fn malformed_packings_are_refused() {
    let refused = |bytes: &[u8], what: &str| {
        let err = Packed::from_wire(bytes).unwrap_err().to_string();
        assert!(err.contains(what), "{bytes:?}: {err} should say {what}");
    };
    refused(&[], "no nodes");
    refused(&[LIST, 2, INT, 2], "more items than follow");
    refused(&[LIST, 3, NULL], "more items than follow");
    refused(&[LIST, 1, LIST, 2, NULL], "more items than follow");
    refused(&[NULL, NULL], "after the end");
    refused(&[LIST, 0, NULL], "after the end");
    refused(&[9], "unknown tag 9");
    refused(&[LIST, 1, 200], "unknown tag 200");
    refused(&[INT], "cut short");
    refused(&[INT, 0x80], "cut short");
    refused(&[FLOAT, 0, 0, 0, 0, 0, 0, 0], "float cut short");
    refused(
        &[STR, 3, b'a', b'b'],
        "a string of 3 bytes where 2 are left",
    );
    refused(&[STR, 2, 0xc3, 0x28], "not UTF-8");
    refused(&[BUF, 0x80, 0x80, 0x80, 0x80, 0x10], "past 32 bits");
    refused(&[REF, 0x80, 0x80, 0x80, 0x80, 0x10], "past 32 bits");
    refused(&[LIST, 0x80, 0x80, 0x80, 0x80, 0x10], "past 32 bits");
    let mut past_64 = vec![INT];
    past_64.extend([0xff; 9]);
    past_64.push(2);
    refused(&past_64, "past 64 bits");
    let mut at_64 = vec![INT];
    at_64.extend([0xff; 9]);
    at_64.push(1);
    assert_eq!(
        Packed::from_wire(&at_64).unwrap().unpack(),
        Datum::Int(i64::MIN)
    );
    // Sound edges pass: the largest index, an empty list, an empty string.
    for ok in [
        vec![BUF, 0xff, 0xff, 0xff, 0xff, 0x0f],
        vec![LIST, 0],
        vec![STR, 0],
        vec![LIST, 2, LIST, 0, TRUE],
    ] {
        assert!(Packed::from_wire(&ok).is_ok(), "{ok:?}");
    }
}

/// Lists nest up to the limit and no further, refused as a datum's nodes would be,
/// without recursion however deep the bytes claim to go.
#[test]
fn depth_up_to_the_limit_is_kept_and_beyond_it_refused() {
    let nested = |levels: usize| {
        let mut bytes = [LIST, 1].repeat(levels);
        bytes.extend([INT, 14]);
        bytes
    };
    let kept = Packed::from_wire(&nested(MAX_DEPTH)).unwrap();
    assert_eq!(Packed::new(&kept.unpack()), kept);
    assert!(matches!(
        Packed::from_wire(&nested(MAX_DEPTH + 1)),
        Err(ProtoError::TooDeep(MAX_DEPTH))
    ));
    assert!(matches!(
        Packed::from_wire(&nested(200_000)),
        Err(ProtoError::TooDeep(MAX_DEPTH))
    ));
    // Through a frame, as a compute message's arguments arrive.
    let frame = rkyv::to_bytes::<rkyv::rancor::Error>(&TaskArgs::Packed(Packed::of(&nested(
        MAX_DEPTH + 1,
    ))))
    .unwrap();
    let err = crate::frame::decode_header::<TaskArgs>(&frame).unwrap_err();
    assert!(err.to_string().contains("deeper than 64"), "{err}");
}

/// Arguments read from a frame keep no buffer when they name none, and stay packed;
/// naming some, they take theirs from the frame, renumbered, as a datum does.
#[test]
fn arguments_take_their_buffers_from_the_frame() {
    let frame: Vec<Bytes> = (0..4u8).map(|i| Bytes::from(vec![i; 2])).collect();
    // A byte of the buffer tag's value that is not a buffer's.
    let plain = Datum::List(vec![Datum::Int(3), Datum::Ref(6), Datum::Str("s".into())]);
    let mut a = TaskArgs::Packed(Packed::new(&plain));
    assert_eq!(a.localize(&frame).unwrap(), Vec::<Bytes>::new());
    assert!(
        matches!(a, TaskArgs::Packed(_)),
        "nothing taken: kept packed"
    );
    assert_eq!(a.max_buf(), 0);
    assert_eq!(a.into_datum(), plain);
    let with_bufs = Datum::List(vec![Datum::Buf(3), Datum::List(vec![Datum::Buf(1)])]);
    let mut a = TaskArgs::Packed(Packed::new(&with_bufs));
    assert_eq!(a.max_buf(), 4);
    let own = a.localize(&frame).unwrap();
    assert_eq!(own, vec![frame[3].clone(), frame[1].clone()]);
    assert_eq!(
        a.to_value(&own, &[]).unwrap(),
        Value::List(vec![
            Value::Bytes(frame[3].clone()),
            Value::List(vec![Value::Bytes(frame[1].clone())])
        ])
    );
    let mut missing = TaskArgs::Packed(Packed::new(&Datum::Buf(9)));
    assert!(missing.localize(&frame).is_err());
}

/// A packing nested past the limit (made from a datum, never read from a peer) is
/// refused a value, as its datum is.
#[test]
fn a_packing_too_deep_has_no_value() {
    let mut d = Datum::Int(1);
    for _ in 0..=MAX_DEPTH {
        d = Datum::List(vec![d]);
    }
    let err = Packed::new(&d).to_value::<Bytes>(&[], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        d.to_value(&[], &[]).unwrap_err().to_string()
    );
    let mut ok = Datum::Int(1);
    for _ in 0..MAX_DEPTH {
        ok = Datum::List(vec![ok]);
    }
    assert!(Packed::new(&ok).to_value::<Bytes>(&[], &[]).is_ok());
}

/// Packed arguments give their datum to read and to change, shift their buffers'
/// indices as the datum's would be, and equal the datum they pack.
#[test]
fn packed_arguments_read_change_and_compare_as_their_datum() {
    let d = Datum::List(vec![Datum::Buf(1), Datum::Int(-3), Datum::Str("s".into())]);
    let mut a = TaskArgs::Packed(Packed::new(&d));
    assert_eq!(a, TaskArgs::Datum(d.clone()));
    assert_eq!(*a.datum(), d);
    a.shift_buffers(0);
    assert!(
        matches!(a, TaskArgs::Packed(_)),
        "nothing to move: kept packed"
    );
    a.shift_buffers(2);
    let moved = Datum::List(vec![Datum::Buf(3), Datum::Int(-3), Datum::Str("s".into())]);
    assert_eq!(a.clone().into_datum(), moved);
    *a.datum_mut() = Datum::Null;
    assert_eq!(a, TaskArgs::from(Datum::Null));
    assert_ne!(a, TaskArgs::Packed(Packed::new(&d)));
}

#[test]
fn the_usual_arguments_are_kept_inline_in_few_bytes() {
    let d = Datum::List(vec![Datum::Int(9_999_999), Datum::Ref(1)]);
    let p = Packed::new(&d);
    assert_eq!(p.bytes(), &[LIST, 2, INT, 0xfe, 0xd9, 0xc4, 0x09, REF, 1]);
    assert!(matches!(p.0, Repr::Inline { len: 9, .. }));
    assert_eq!(p.unpack(), d);
}

#[test]
fn extremes_and_long_encodings_round_trip() {
    for i in [0, 1, -1, 63, -64, 64, i64::MAX, i64::MIN] {
        assert_eq!(Packed::new(&Datum::Int(i)).unpack(), Datum::Int(i));
    }
    assert_eq!(Packed::new(&Datum::Int(-1)).bytes(), &[INT, 1]);
    assert_eq!(Packed::new(&Datum::Int(i64::MIN)).bytes().len(), 11);
    for i in [0, 127, 128, u32::MAX] {
        assert_eq!(Packed::new(&Datum::Buf(i)).unpack(), Datum::Buf(i));
        assert_eq!(Packed::new(&Datum::Ref(i)).unpack(), Datum::Ref(i));
    }
    let long = Datum::Str("x".repeat(22));
    let p = Packed::new(&long);
    assert!(matches!(p.0, Repr::Heap(_)));
    assert_eq!(p.bytes().len(), 24);
    assert_eq!(p.unpack(), long);
    let exact = Datum::Str("y".repeat(20));
    assert!(matches!(
        Packed::new(&exact).0,
        Repr::Inline { len: 22, .. }
    ));
    assert_eq!(Packed::new(&exact).unpack(), exact);
    let f = Datum::Float(-0.0);
    assert_eq!(Packed::new(&f).bytes(), &[FLOAT, 0, 0, 0, 0, 0, 0, 0, 0x80]);
    assert_eq!(
        Packed::new(&Datum::List(vec![
            Datum::Bool(true),
            Datum::Bool(false),
            Datum::Null
        ]))
        .bytes(),
        &[LIST, 3, TRUE, FALSE, NULL]
    );
}
