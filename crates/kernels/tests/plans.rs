//! Device plans run with the kernels' CPU twins (as a GPU runs them, launch shapes and
//! partial results included) agree with the CPU ops, over awkward sizes and fresh random
//! inputs; a plan with a mistyped argument or a short buffer is caught.

mod common;

use common::{assert_matches, cases, Rng};
use rask_kernels::chunk::Chunk;
use rask_kernels::plan::{self, Arg, Buf, Step};
use rask_kernels::Registry;
use rask_proto::Value;

#[test]
fn every_plan_computes_what_the_cpu_op_computes() {
    let registry = Registry::builtin();
    let mut rng = Rng::new();
    let cases = cases(&mut rng);
    assert!(cases.len() > 200, "{} cases", cases.len());
    for (op, args) in &cases {
        let p = plan::plan(op, args).unwrap_or_else(|| panic!("{op}: no plan for {args:?}"));
        let got = plan::run_on_host(&p).unwrap_or_else(|e| panic!("{op}: {e}"));
        let want = registry.call(op, &Value::List(args.clone())).unwrap();
        assert_matches(op, args, &got, &Chunk::from_value(&want).unwrap());
    }
}

#[test]
fn whole_chunk_reductions_chain_partials_and_a_small_one_is_one_launch() {
    let mut rng = Rng::new();
    let big = rng.chunk(rask_proto::DType::F32, &[300_000]);
    let p = plan::plan(
        "array.reduce",
        &[Value::Str("sum".into()), Value::Int(-1), big],
    )
    .unwrap();
    assert_eq!(p.steps.len(), 2);
    assert_eq!(p.temps, vec![1024 * 4]);
    let small = rng.chunk(rask_proto::DType::F32, &[200]);
    let p = plan::plan(
        "array.reduce",
        &[Value::Str("max".into()), Value::Int(-1), small],
    )
    .unwrap();
    assert_eq!(p.steps.len(), 1);
    assert!(p.temps.is_empty());
}

#[test]
fn ops_without_a_plan_say_so() {
    let mut rng = Rng::new();
    let x = rng.chunk(rask_proto::DType::F64, &[4, 4]);
    let assemble = [Value::List(vec![Value::Int(4), Value::Int(4)]), x.clone()];
    assert!(plan::plan("array.assemble", &assemble).is_none());
    assert!(plan::plan("add", &[Value::Int(1), Value::Int(2)]).is_none());
    // Random chunks of rank 3 run on the CPU.
    let l = |v: &[i64]| Value::List(v.iter().map(|&x| Value::Int(x)).collect());
    let r3 = [
        Value::Str("f32".into()),
        Value::Int(1),
        l(&[2, 2, 2]),
        l(&[0, 0, 0]),
        l(&[2, 2, 2]),
        Value::Float(0.0),
        Value::Float(1.0),
    ];
    assert!(plan::plan("array.random_uniform", &r3).is_none());
    // Shapes that do not fit are left to the CPU op to report.
    let y = rng.chunk(rask_proto::DType::F64, &[3, 4]);
    assert!(plan::plan("array.matmul", &[y.clone(), y]).is_none());
}

#[test]
fn the_host_runner_catches_mistyped_arguments_and_short_buffers() {
    let mut rng = Rng::new();
    let x = rng.chunk(rask_proto::DType::F32, &[1000]);
    let good = plan::plan(
        "array.binary",
        &[Value::Str("add".into()), x, Value::Float(2.0)],
    )
    .unwrap();
    plan::run_on_host(&good).unwrap();

    let mut p = good.clone();
    let Step::Launch(l) = &mut p.steps[0] else {
        panic!()
    };
    l.args[5] = Arg::U64(1);
    assert!(plan::run_on_host(&p)
        .unwrap_err()
        .to_string()
        .contains("not an int"));

    let mut p = good.clone();
    let Step::Launch(l) = &mut p.steps[0] else {
        panic!()
    };
    l.args[3] = Arg::U64(2000);
    assert!(plan::run_on_host(&p)
        .unwrap_err()
        .to_string()
        .contains("read"));

    let mut p = good.clone();
    let Step::Launch(l) = &mut p.steps[0] else {
        panic!()
    };
    l.args.pop();
    assert!(plan::run_on_host(&p)
        .unwrap_err()
        .to_string()
        .contains("arguments"));

    let mut p = good;
    let Step::Launch(l) = &mut p.steps[0] else {
        panic!()
    };
    l.args[0] = Arg::Buf(Buf::Tmp(3));
    assert!(plan::run_on_host(&p)
        .unwrap_err()
        .to_string()
        .contains("no buffer"));
}

#[test]
fn a_step_that_writes_nothing_leaves_the_poison_visible() {
    let mut rng = Rng::new();
    let x = rng.chunk(rask_proto::DType::F64, &[64]);
    let mut p = plan::plan(
        "array.binary",
        &[Value::Str("mul".into()), x, Value::Float(3.0)],
    )
    .unwrap();
    p.steps.clear();
    let c = plan::run_on_host(&p).unwrap();
    assert!(c.bytes.iter().all(|&b| b == 0xA5));
}
