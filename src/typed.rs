//! Typed ops: a program's own Rust functions, run on the cluster with their own types.
//!
//! ```no_run
//! #[rask::op]
//! fn hits(seed: u64, n: u64) -> u64 {
//!     // … count the samples that fall inside the quarter circle …
//! #   seed + n
//! }
//!
//! #[rask::op]
//! fn total(counts: Vec<u64>) -> u64 {
//!     counts.iter().sum()
//! }
//!
//! fn main() -> Result<(), rask::Error> {
//!     rask::worker_entry(); // lets processes started from this program serve its ops
//!     let client = rask::Client::new()?;
//!     let counts = client.map(hits, (0..1000u64).map(|seed| (seed, 1_000_000u64)))?;
//!     let sum = client.submit(total, (counts,))?; // futures stand for their values
//!     let pi = 4.0 * sum.result()? as f64 / 1e9;
//!     println!("pi = {pi}");
//!     Ok(())
//! }
//! ```
//!
//! `#[rask::op]` keeps the function callable and registers it where the program is
//! linked: [`Client::new`](crate::Client::new), the local clusters and the program's own
//! workers know every op it defines, without a hand-built registry. Arguments and
//! results are any serde types; sequences of numbers and byte strings of a KiB or more
//! travel as raw buffers beside the message. An op is named by its module path and
//! function name; a worker serves it only if it runs the very same program (its code
//! identity), so two builds with different code for one name never mix.
//!
//! A future stands for an argument of its own type only:
//!
//! ```no_run
//! # #[rask::op] fn double(x: u64) -> u64 { x * 2 }
//! # #[rask::op] fn count(s: String) -> u64 { s.len() as u64 }
//! # fn main() -> Result<(), rask::Error> {
//! let client = rask::Client::new()?;
//! let n = client.submit(count, ("four".to_string(),))?; // a Future<u64>
//! let twice = client.submit(double, (&n,))?;              // stands for the u64
//! # Ok(()) }
//! ```
//!
//! and the same with a future of another type does not compile:
//!
//! ```compile_fail
//! # #[rask::op] fn double(x: u64) -> u64 { x * 2 }
//! # #[rask::op] fn name() -> String { "four".into() }
//! # fn main() -> Result<(), rask::Error> {
//! let client = rask::Client::new()?;
//! let s = client.submit(name, ())?;                 // a Future<String>
//! let twice = client.submit(double, (&s,))?;        // not a u64: refused
//! # Ok(()) }
//! ```
//!
//! A type mismatch between a future and the argument it stands for is a compile error;
//! where the types are not known (a future of a dynamic op, `Future<Value>`), the task
//! fails with a message naming the op, the types it takes and the value it was given.

pub use rask_proto::typed::*;
