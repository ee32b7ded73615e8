//! Your own ops: register Rust functions in a `Registry` and compile them into both the
//! client program and the worker binary. This example is both: run without arguments it
//! starts a local cluster whose worker processes are this same program (`worker`
//! subcommand), submits tasks using its own ops and prints the results.
//!
//! ```sh
//! cargo run --release --example custom_op
//! # or against a running scheduler, with this program as the worker binary:
//! target/release/examples/custom_op worker tcp://127.0.0.1:8786 --nthreads 2
//! ```

use rask::{Arg, Client, LocalCluster, Registry, Value};

/// The ops of this program: the built-ins plus two of our own.
fn registry() -> Registry {
    let mut r = Registry::builtin();
    r.register("collatz_steps", 1, |args| {
        let mut n = match args {
            [Value::Int(n)] if *n > 0 => *n,
            _ => return Err("collatz_steps takes one positive integer".into()),
        };
        let mut steps = 0i64;
        while n != 1 {
            n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
            steps += 1;
        }
        Ok(Value::Int(steps))
    });
    r.register("max", 1, |args| {
        let items = match args {
            [Value::List(l)] => l.as_slice(),
            l => l,
        };
        items
            .iter()
            .map(|v| match v {
                Value::Int(i) => Ok(*i),
                v => Err(format!("max of {}", v.type_name())),
            })
            .try_fold(i64::MIN, |m, x| x.map(|x| m.max(x)))
            .map(Value::Int)
    });
    r
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("worker") {
        return rask::cli::worker_main(registry());
    }
    let cluster = LocalCluster::builder()
        .n_workers(2)
        .processes(true)
        .registry(registry())
        .worker_binary(std::env::current_exe()?)
        .build()?;
    let client = Client::for_cluster(cluster)?;
    let steps = client.map("collatz_steps", (1..=10_000).map(|n| [Arg::from(n)]))?;
    let longest = client.submit("max", [Arg::List(steps.iter().map(Arg::from).collect())])?;
    let longest: i64 = longest.result_as()?;
    println!("longest Collatz sequence below 10,000 takes {longest} steps");
    assert_eq!(longest, 261);
    Ok(())
}
