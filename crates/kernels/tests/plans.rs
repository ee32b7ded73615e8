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

#[test]
fn an_elementwise_chain_is_a_launch_per_op_with_one_temporary_per_stack_level_above_the_first() {
    let mut rng = Rng::new();
    let x = rng.chunk(rask_proto::DType::F32, &[64, 64]);
    let program = Value::Str("x0 mul:2 x0 x0 mul add x0 div:3 sub".into());
    let p = plan::plan("array.expr", &[program, x]).unwrap();
    let launches: Vec<(String, Buf)> = p
        .steps
        .iter()
        .map(|s| match s {
            Step::Launch(l) => match l.args[2] {
                Arg::Buf(out) => (l.entry.clone(), out),
                ref other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        })
        .collect();
    let names: Vec<&str> = launches.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        names,
        ["mul_f32", "mul_f32", "add_f32", "div_f32", "sub_f32"]
    );
    // The bottom of the stack lives in the output; the one level above in a temporary.
    let outs: Vec<Buf> = launches.iter().map(|(_, o)| *o).collect();
    assert_eq!(
        outs,
        [Buf::Out, Buf::Tmp(0), Buf::Out, Buf::Tmp(0), Buf::Out]
    );
    assert_eq!(p.temps, vec![64 * 64 * 4]);
    // A program that is one input is a copy.
    let y = rng.chunk(rask_proto::DType::F64, &[3]);
    let p = plan::plan("array.expr", &[Value::Str("x0".into()), y]).unwrap();
    assert!(matches!(p.steps[..], [Step::Copy { to: Buf::Out, .. }]));
}

#[test]
fn a_sum_of_products_accumulates_in_the_output_and_reuses_its_transpose_temporary() {
    let mut rng = Rng::new();
    let dt = rask_proto::DType::F64;
    let mut args = Vec::new();
    for _ in 0..3 {
        args.extend([rng.chunk(dt, &[8, 5]), rng.chunk(dt, &[6, 5])]);
    }
    args.push(Value::Str("nt".into()));
    let p = plan::plan("array.matmul", &args).unwrap();
    let kinds: Vec<String> = p
        .steps
        .iter()
        .map(|s| match s {
            Step::Launch(l) => format!("{} into {:?}", l.entry, l.args[1]),
            Step::Gemm { out, acc, .. } => format!("gemm into {out:?}, acc {acc}"),
            other => panic!("{other:?}"),
        })
        .collect();
    let t = "transpose_f64 into Buf(Tmp(0))";
    assert_eq!(
        kinds,
        [
            t,
            "gemm into Out, acc false",
            t,
            "gemm into Out, acc true",
            t,
            "gemm into Out, acc true"
        ]
    );
    assert_eq!(p.temps, vec![5 * 6 * 8], "one transposed operand at a time");
}

#[test]
fn summed_products_that_do_not_fit_have_no_plan_and_empty_ones_launch_nothing_empty() {
    let mut rng = Rng::new();
    let (f32s, f64s) = (rask_proto::DType::F32, rask_proto::DType::F64);
    let nt = Value::Str("nt".into());
    let a = rng.chunk(f64s, &[4, 3]);
    let b = rng.chunk(f64s, &[5, 3]);
    // A second pair of another dtype, or of another product shape: the CPU op reports it.
    let other = [rng.chunk(f32s, &[4, 3]), rng.chunk(f32s, &[5, 3])];
    let taller = [rng.chunk(f64s, &[6, 3]), rng.chunk(f64s, &[5, 3])];
    for second in [other, taller] {
        let args = [
            a.clone(),
            b.clone(),
            second[0].clone(),
            second[1].clone(),
            nt.clone(),
        ];
        assert!(plan::plan("array.matmul", &args).is_none());
    }
    // An empty inner extent transposes nothing (a launch of no blocks is refused by a
    // GPU): the product is zeros.
    let (e, f) = (rng.chunk(f64s, &[4, 0]), rng.chunk(f64s, &[5, 0]));
    let p = plan::plan("array.matmul", &[e, f, nt.clone()]).unwrap();
    assert!(
        matches!(&p.steps[..], [Step::Launch(l)] if l.entry == "fill_f64"),
        "{:?}",
        p.steps
    );
    // A transpose launch has at most 65,535 blocks of 32 rows along y.
    let rows = 65_535 * 32;
    let x = rng.chunk(f32s, &[2, 1]);
    let fits = rng.chunk(f32s, &[rows, 1]);
    assert!(plan::plan("array.matmul", &[x.clone(), fits, nt.clone()]).is_some());
    let past = rng.chunk(f32s, &[rows + 1, 1]);
    assert!(plan::plan("array.matmul", &[x, past, nt]).is_none());
}

#[test]
fn elementwise_programs_that_do_not_fit_their_inputs_have_no_plan() {
    let mut rng = Rng::new();
    let f64s = rask_proto::DType::F64;
    let s = |p: &str| Value::Str(p.into());
    let (x, y) = (rng.chunk(f64s, &[3, 2]), rng.chunk(f64s, &[2, 3]));
    let z = rng.chunk(rask_proto::DType::F32, &[3, 2]);
    let i = rng.chunk(rask_proto::DType::I32, &[3, 2]);
    for args in [
        vec![s("x0 x1 add"), x.clone(), y],
        vec![s("x0 x1 add"), x.clone(), z],
        vec![s("x0 x1 add"), x.clone()],
        vec![s("x0 div:2"), i.clone()],
    ] {
        assert!(plan::plan("array.expr", &args).is_none(), "{args:?}");
    }
    assert!(plan::plan("array.expr", &[s("x0 mul:2 x0 add"), i]).is_some());
    assert!(plan::plan("array.expr", &[s("x0 x1 add"), x.clone(), x.clone()]).is_some());
    // A product of no elements is no step at all.
    let (e, f) = (rng.chunk(f64s, &[0, 3]), rng.chunk(f64s, &[3, 4]));
    let p = plan::plan("array.matmul", &[e, f]).unwrap();
    assert!(p.steps.is_empty(), "{:?}", p.steps);
}
