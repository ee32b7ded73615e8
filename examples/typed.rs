//! Typed ops with the types programs use: structs and enums, maps, vectors, every number
//! width, futures standing for arguments, errors. Each check prints a `name = value` line.
//!
//! ```text
//! cargo run --example typed                      # on the embedded cluster (threads)
//! cargo run --example typed -- --processes       # on worker processes of this program
//! RASK_SCHEDULER_ADDRESS=tcp://host:8786 \
//!     cargo run --example typed                  # on a running cluster, which receives
//!                                                # this program
//! cargo run --example typed -- --hold            # then keep the client until stdin closes
//! ```

use std::collections::{BTreeMap, HashMap};

use rask::{Arg, Client, LocalCluster};
use serde::{Deserialize, Serialize};

/// What [`flavour`] returns: a build with other text here is another program with the
/// same ops.
const FLAVOUR: &str = "flavour-original-0001";

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Kind {
    Regular,
    Irregular { spread: f64 },
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Shape {
    name: String,
    sides: Vec<f32>,
    tags: BTreeMap<String, u64>,
    kind: Kind,
    id: Option<u128>,
    small: (i8, u16, i32),
}

/// The perimeter and a description of a shape.
#[rask::op]
fn perimeter(s: Shape) -> (f32, String) {
    let kind = match s.kind {
        Kind::Regular => "regular".to_string(),
        Kind::Irregular { spread } => format!("irregular({spread})"),
    };
    (
        s.sides.iter().sum(),
        format!("{} {kind} {:?} {:?} {:?}", s.name, s.tags, s.id, s.small),
    )
}

/// Word counts of a text.
#[rask::op]
fn histogram(text: String) -> HashMap<String, u64> {
    let mut h = HashMap::new();
    for w in text.split_whitespace() {
        *h.entry(w.to_string()).or_insert(0) += 1;
    }
    h
}

/// Word counts of several texts, merged.
#[rask::op]
fn merge(parts: Vec<HashMap<String, u64>>) -> BTreeMap<String, u64> {
    let mut all = BTreeMap::new();
    for p in parts {
        for (w, n) in p {
            *all.entry(w).or_insert(0) += n;
        }
    }
    all
}

/// Every element times `by` (a vector this long travels as a raw buffer).
#[rask::op]
fn scale(xs: Vec<f32>, by: f32) -> Vec<f32> {
    xs.iter().map(|x| x * by).collect()
}

/// A square root, or why not.
#[rask::op]
fn checked_sqrt(x: f64) -> Result<f64, String> {
    if x < 0.0 {
        return Err(format!("no real square root of {x}"));
    }
    Ok(x.sqrt())
}

/// The process the op ran in.
#[rask::op]
fn pid() -> u32 {
    std::process::id()
}

/// Which build this is.
#[rask::op]
fn flavour() -> String {
    std::hint::black_box(FLAVOUR).to_string()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    rask::worker_entry();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let client = if args.iter().any(|a| a == "--processes") {
        let cluster = LocalCluster::builder()
            .n_workers(2)
            .processes(true)
            .build()?;
        Client::for_cluster(cluster)?
    } else {
        Client::new()?
    };

    let shape = Shape {
        name: "kite".into(),
        sides: vec![3.0, 3.0, 5.0, 5.0],
        tags: BTreeMap::from([("corners".to_string(), 4), ("colour".to_string(), 7)]),
        kind: Kind::Irregular { spread: 0.25 },
        id: Some(u128::MAX - 1),
        small: (-8, 65535, -70000),
    };
    let (p, description) = client.submit(perimeter, (shape,))?.result()?;
    println!("perimeter = {p}");
    println!("description = {description}");

    let texts = ["a rose is a rose", "is a rose", "a b c"];
    let parts = client.map(histogram, texts.map(|t| (t.to_string(),)))?;
    // A Vec of futures stands for the Vec<HashMap<…>> the op takes.
    let merged = client.submit(merge, (parts,))?.result()?;
    println!("merged = {merged:?}");

    let xs: Vec<f32> = (0..4096).map(|i| i as f32).collect();
    let first = client.submit(scale, (xs, 0.5f32))?;
    // A future of the first result stands for the second's argument.
    let twice = client.submit(scale, (&first, 4.0f32))?.result()?;
    println!("scaled sum = {}", twice.iter().sum::<f32>());

    println!("sqrt = {}", client.submit(checked_sqrt, (2.25,))?.result()?);
    match client.submit(checked_sqrt, (-1.0,))?.result() {
        Ok(v) => println!("sqrt error = none ({v})"),
        Err(e) => println!("sqrt error = {e}"),
    }
    // Called by name, with an argument of the wrong type: only the worker can tell.
    let wrong = client.submit(perimeter.name(), [Arg::from("not a shape")])?;
    match wrong.result() {
        Ok(v) => println!("mismatch = none ({v:?})"),
        Err(e) => println!("mismatch = {e}"),
    }

    let theirs = client.submit(pid, ())?.result()?;
    println!("ran elsewhere = {}", theirs != std::process::id());
    println!("flavour = {}", client.submit(flavour, ())?.result()?);
    // Still a plain function here.
    println!("local flavour = {}", flavour());

    if args.iter().any(|a| a == "--hold") {
        println!("holding");
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink)? > 0 {}
        // The program's workers still answer.
        println!("flavour after = {}", client.submit(flavour, ())?.result()?);
    }
    Ok(())
}
