//! The built-in scalar ops: arithmetic (`add`, `sub`, `mul`, `div`, `neg`, `inc`, `sum`),
//! and the ops tests and drills use (`identity`, `sleep`, `fail`, `bytes`, `len`,
//! `checksum`, `abort`, `list`). The `array.*` ops are in [`crate::chunk`].

use std::time::Duration;

use rask_proto::Value;

use crate::{fnv1a, output_bytes, OpError, Registry};

/// Registers the built-in scalar ops.
pub(crate) fn register(r: &mut Registry) {
    r.register_typed("add", 1, |a| {
        fold_numeric("add", a, |x, y| x.checked_add(y), |x, y| x + y)
    });
    r.register_typed("mul", 1, |a| {
        fold_numeric("mul", a, |x, y| x.checked_mul(y), |x, y| x * y)
    });
    r.register_typed("sub", 1, |a| {
        let [x, y] = two("sub", a)?;
        fold_numeric(
            "sub",
            &[x.clone(), y.clone()],
            |x, y| x.checked_sub(y),
            |x, y| x - y,
        )
    });
    r.register_typed("div", 1, |a| {
        let [x, y] = two("div", a)?;
        let d = as_f64(y)?;
        if d == 0.0 {
            return Err(OpError::DivisionByZero);
        }
        Ok(Value::Float(as_f64(x)? / d))
    });
    r.register_typed("neg", 1, |a| match one("neg", a)? {
        Value::Int(i) => i.checked_neg().map(Value::Int).ok_or(OpError::Overflow),
        v => Ok(Value::Float(-as_f64(v)?)),
    });
    r.register_typed("inc", 1, |a| match one("inc", a)? {
        Value::Int(i) => i.checked_add(1).map(Value::Int).ok_or(OpError::Overflow),
        v => Ok(Value::Float(as_f64(v)? + 1.0)),
    });
    r.register_typed("sum", 1, |a| match a {
        [Value::List(items)] => fold_numeric("sum", items, |x, y| x.checked_add(y), |x, y| x + y),
        _ => fold_numeric("sum", a, |x, y| x.checked_add(y), |x, y| x + y),
    });
    r.register_typed("identity", 1, |a| Ok(one("identity", a)?.clone()));
    r.register_typed("sleep", 1, |a| {
        let secs = as_f64(
            a.first()
                .ok_or(OpError::Args("sleep needs a duration in seconds"))?,
        )?;
        if !(0.0..=3600.0).contains(&secs) {
            return Err(OpError::Range(format!(
                "sleep duration {secs} s out of range 0..=3600"
            )));
        }
        std::thread::sleep(Duration::from_secs_f64(secs));
        Ok(a.get(1).cloned().unwrap_or(Value::Null))
    });
    r.register_typed("fail", 1, |a| {
        Err(OpError::Message(match a.first() {
            Some(Value::Str(s)) => s.clone(),
            Some(v) => format!("{v:?}"),
            None => "fail".into(),
        }))
    });
    r.register_typed("bytes", 1, |a| {
        // bytes(n, fill=0): a payload of n bytes, for data-movement tests.
        let n = as_i64(a.first().ok_or(OpError::Args("bytes needs a length"))?)?;
        let fill = a.get(1).map(as_i64).transpose()?.unwrap_or(0) as u8;
        if !(0..=(1 << 36)).contains(&n) {
            return Err(OpError::Range(format!("length {n} out of range")));
        }
        Ok(Value::Bytes(output_bytes(n as usize, |b| b.fill(fill))))
    });
    r.register_typed("len", 1, |a| match one("len", a)? {
        Value::Bytes(b) => Ok(Value::Int(b.len() as i64)),
        Value::List(l) => Ok(Value::Int(l.len() as i64)),
        Value::Str(s) => Ok(Value::Int(s.len() as i64)),
        v => Err(OpError::NotFor {
            op: "len",
            got: v.type_name(),
        }),
    });
    r.register_typed("checksum", 1, |a| match one("checksum", a)? {
        // FNV-1a of a byte payload: lets tests check data integrity without moving it.
        Value::Bytes(b) => Ok(Value::Int(fnv1a(b) as i64)),
        v => Err(OpError::NotFor {
            op: "checksum",
            got: v.type_name(),
        }),
    });
    r.register_typed("abort", 1, |_| {
        // Kills the worker process: for fault-tolerance tests and drills.
        std::process::abort()
    });
    r.register_typed("list", 1, |a| Ok(Value::List(a.to_vec())));
}

fn one<'a>(op: &'static str, a: &'a [Value]) -> Result<&'a Value, OpError> {
    match a {
        [v] => Ok(v),
        _ => Err(OpError::Arity {
            op,
            want: 1,
            got: a.len(),
        }),
    }
}

fn two<'a>(op: &'static str, a: &'a [Value]) -> Result<[&'a Value; 2], OpError> {
    match a {
        [x, y] => Ok([x, y]),
        _ => Err(OpError::Arity {
            op,
            want: 2,
            got: a.len(),
        }),
    }
}

fn as_f64(v: &Value) -> Result<f64, OpError> {
    match v {
        Value::Int(i) => Ok(*i as f64),
        Value::Float(f) => Ok(*f),
        Value::Bool(b) => Ok(*b as i64 as f64),
        v => Err(OpError::Type {
            expected: "a number",
            got: v.type_name(),
        }),
    }
}

fn as_i64(v: &Value) -> Result<i64, OpError> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Bool(b) => Ok(*b as i64),
        v => Err(OpError::Type {
            expected: "an integer",
            got: v.type_name(),
        }),
    }
}

/// Folds numbers: integers while all are integers (overflow is an error), floats otherwise.
fn fold_numeric(
    op: &'static str,
    a: &[Value],
    int: impl Fn(i64, i64) -> Option<i64>,
    float: impl Fn(f64, f64) -> f64,
) -> Result<Value, OpError> {
    let (first, rest) = a.split_first().ok_or(OpError::NoArgs { op })?;
    let mut acc = match first {
        Value::Int(i) => Value::Int(*i),
        v => Value::Float(as_f64(v)?),
    };
    for v in rest {
        acc = match (&acc, v) {
            (Value::Int(x), Value::Int(y)) => {
                Value::Int(int(*x, *y).ok_or(OpError::IntegerOverflow { op })?)
            }
            (x, y) => Value::Float(float(as_f64(x)?, as_f64(y)?)),
        };
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KernelError;

    fn call(op: &str, args: Vec<Value>) -> Result<Value, KernelError> {
        Registry::builtin().call(op, &Value::List(args))
    }

    #[test]
    fn arithmetic() {
        assert_eq!(
            call("add", vec![1.into(), 2.into(), 3.into()]),
            Ok(Value::Int(6))
        );
        assert_eq!(
            call("add", vec![1.into(), 0.5.into()]),
            Ok(Value::Float(1.5))
        );
        assert_eq!(call("sub", vec![1.into(), 3.into()]), Ok(Value::Int(-2)));
        assert_eq!(call("mul", vec![4.into(), 3.into()]), Ok(Value::Int(12)));
        assert_eq!(call("div", vec![3.into(), 2.into()]), Ok(Value::Float(1.5)));
        assert_eq!(call("inc", vec![41.into()]), Ok(Value::Int(42)));
        assert_eq!(call("neg", vec![2.5.into()]), Ok(Value::Float(-2.5)));
        assert_eq!(
            call("sum", vec![Value::List(vec![1.into(), 2.into(), 3.into()])]),
            Ok(Value::Int(6))
        );
        assert!(matches!(
            call("div", vec![1.into(), 0.into()]),
            Err(KernelError::Failed { .. })
        ));
        assert!(matches!(
            call("add", vec![i64::MAX.into(), 1.into()]),
            Err(KernelError::Failed { .. })
        ));
        assert!(matches!(
            call("add", vec!["x".into()]),
            Err(KernelError::Failed { .. })
        ));
    }

    #[test]
    fn fail_unknown_and_panics_are_errors() {
        assert_eq!(
            call("fail", vec!["boom".into()]),
            Err(KernelError::Failed {
                op: "fail".into(),
                message: "boom".into()
            })
        );
        assert_eq!(
            call("nope", vec![]),
            Err(KernelError::UnknownOp("nope".into()))
        );
        let mut r = Registry::builtin();
        r.register("explode", 1, |_| panic!("kaboom"));
        let e = r.call("explode", &Value::Null).unwrap_err();
        assert!(e.to_string().contains("kaboom"), "{e}");
    }

    #[test]
    fn bytes_and_checksum() {
        let v = call("bytes", vec![1000.into(), 7.into()]).unwrap();
        assert_eq!(call("len", vec![v.clone()]), Ok(Value::Int(1000)));
        assert_eq!(v, Value::Bytes(vec![7u8; 1000].into()));
        // FNV-1a 64 of 1000 bytes of 7, computed independently of `fnv1a`.
        let expect = 0xd55b_06ce_89fd_a1ed_u64 as i64;
        assert_eq!(call("checksum", vec![v]), Ok(Value::Int(expect)));
    }
}
