//! The hostile seeds, answered as they must be: an error naming what is wrong, before
//! anything is allocated for what the input announced (each runs under the allocation
//! bound, which aborts the test otherwise).

use rask_fuzz::alloc::guarded;
use rask_fuzz::input::{split_frame, welcomed_limits, SplitError};
use rask_fuzz::net::block_on;
use rask_proto::frame::FrameLimits;
use rask_proto::msg::{ToScheduler, WireMessage};
use rask_proto::{Datum, ProtoError};
use rask_transport::{ConnConfig, FrameReader, TransportError};

fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The transport's reader on `stream`, as a welcomed peer's: its first frame's outcome.
fn read_welcomed(stream: &[u8]) -> Result<(), TransportError> {
    block_on(async {
        let mut r = FrameReader::new(stream, ConnConfig::default());
        r.welcome();
        r.read_frame().await.map(|_| ())
    })
}

#[test]
fn huge_announced_lengths_are_refused_before_allocating() {
    for name in [
        "huge-header-len",
        "huge-buffer-count",
        "buffer-lengths-overflow",
        "max-header-and-buffers",
    ] {
        let data = seed("frame_header", name);
        let (outcome, peak) = guarded(data.len(), || read_welcomed(&data));
        assert!(outcome.is_err(), "{name} was read as a frame");
        assert!(
            peak < 1 << 20,
            "{name}: {peak} bytes live while refusing it"
        );
        let (split, _) = guarded(data.len(), || split_frame(&data, &welcomed_limits()).err());
        assert!(split.is_some(), "{name} was split as a frame");
    }
    // A length within the limits but beyond the bytes sent: the reader fails at the end
    // of the stream, having held no more than what arrived.
    let data = seed("frame_header", "one-15-GiB-buffer");
    let (outcome, peak) = guarded(data.len(), || read_welcomed(&data));
    assert!(matches!(outcome, Err(TransportError::Io(_))), "{outcome:?}");
    assert!(
        peak < 1 << 20,
        "{peak} bytes live for a 15 GiB announcement"
    );
    assert!(matches!(
        split_frame(&data, &welcomed_limits()),
        Err(SplitError::Truncated)
    ));
}

#[test]
fn handshake_frames_are_held_to_the_handshake_limits() {
    // A frame a welcomed peer may send is too large before the handshake.
    let data = seed("to_scheduler", "graph-submission");
    let err = split_frame(&data, &rask_transport::HANDSHAKE_LIMITS).err();
    assert!(
        matches!(
            err,
            Some(SplitError::Proto(ProtoError::TooLarge {
                what: "buffer count",
                ..
            }))
        ),
        "{err:?}"
    );
}

#[test]
fn wrong_versions_and_magic_are_named() {
    let data = seed("to_scheduler", "wrong-protocol-version");
    assert!(matches!(
        split_frame(&data, &welcomed_limits()),
        Err(SplitError::Proto(ProtoError::Version { peer: 2, .. }))
    ));
    let data = seed("to_scheduler", "wrong-magic");
    assert!(matches!(
        split_frame(&data, &welcomed_limits()),
        Err(SplitError::Proto(ProtoError::BadMagic(_)))
    ));
}

/// The datum of a value seed (a frame whose header is an archived datum).
fn datum(name: &str) -> Result<Datum, ProtoError> {
    let data = seed("value", name);
    let (f, _) = split_frame(&data, &FrameLimits::default()).expect("a frame");
    rask_proto::frame::decode_header::<Datum>(&f.header)
}

#[test]
fn values_nested_too_deep_or_announcing_too_much_are_errors() {
    assert!(datum("nested-max-depth").is_ok());
    for name in ["nested-beyond-max-depth", "nested-100000-levels"] {
        let data = seed("value", name);
        let (err, _) = guarded(data.len(), || datum(name).unwrap_err().to_string());
        assert!(err.contains("deeper than 64"), "{name}: {err}");
    }
    let err = datum("list-announces-4-billion-items")
        .unwrap_err()
        .to_string();
    assert!(err.contains("more items than follow"), "{err}");
    let err = datum("nodes-after-the-end").unwrap_err().to_string();
    assert!(err.contains("after the end"), "{err}");
    // Lists that each claim every node left are held to what follows, and to a bounded
    // capacity before the count is proven.
    let data = seed("value", "nested-lists-each-claiming-all");
    let (r, peak) = guarded(data.len(), || {
        datum("nested-lists-each-claiming-all").map(|_| ())
    });
    assert!(r.is_err());
    assert!(peak < 16 << 20, "{peak} bytes live");
}

#[test]
fn a_graph_nested_beyond_max_depth_is_refused_as_a_batch() {
    let data = seed("to_scheduler", "graph-nested-beyond-max-depth");
    let (f, _) = split_frame(&data, &welcomed_limits()).expect("a frame");
    let err = ToScheduler::decode_batch(&f.header)
        .unwrap_err()
        .to_string();
    assert!(err.contains("deeper than 64"), "{err}");
}

#[test]
fn shared_memory_replies_are_imported_or_refused_with_the_reason() {
    // Lent by the transport's exporter: both replies' values read, every byte of the
    // holder's segment among them.
    let outcomes = rask_fuzz::net::shm_replies(&seed("shm_reply", "shm-replies"));
    assert_eq!(outcomes[0], Ok(2), "{outcomes:?}");
    // Each hostile reply is refused by the importer with its reason, never mapped or
    // read past its segment's end (which would fault).
    for (name, why) in [
        ("range-overflows", "outside segment"),
        ("range-past-segment", "outside segment"),
        ("unknown-segment", "unknown segment"),
        ("segment-longer-than-its-file", "announced as"),
        ("third-descriptor-is-not-a-segment", "segment is 0 bytes"),
        ("more-segments-than-descriptors", "without a descriptor"),
        ("shared-buffer-outside-a-loan", "outside a loan"),
        ("inline-index-missing", "missing"),
    ] {
        let data = seed("shm_reply", name);
        let (outcomes, _) = guarded(data.len(), || rask_fuzz::net::shm_replies(&data));
        match outcomes.last() {
            Some(Err(e)) => assert!(e.contains(why), "{name}: {e}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}
