//! The host runner: a plan run launch by launch with the kernels' CPU twins, as a GPU
//! would run it.

use rask_proto::DType;

use super::sim::SimBytes;
use super::*;
use crate::chunk::Chunk;
use crate::cpu::{self, Binary, Elem, Float, Reduce};
use crate::{LaunchError, PlanError};

/// A buffer of the plan runner: memory of its own, an input read in place, or the
/// output written in place (the last two when 8-byte aligned, copied otherwise).
enum HostBuf<'a> {
    /// 8-byte words, of which the first `len` bytes are the buffer.
    Owned {
        words: Vec<i64>,
        len: usize,
    },
    Input(&'a [u8]),
    Out(&'a mut [u8]),
}

/// What a buffer's bytes start as where no step has written them yet.
const POISON: u8 = 0xA5;

impl<'a> HostBuf<'a> {
    fn new(len: u64) -> HostBuf<'a> {
        HostBuf::Owned {
            words: vec![0; (len as usize).div_ceil(8)],
            len: len as usize,
        }
    }

    /// Memory of its own filled with 0xA5, so that what no step writes shows.
    fn poisoned(len: u64) -> HostBuf<'a> {
        HostBuf::Owned {
            words: vec![i64::from_ne_bytes([POISON; 8]); (len as usize).div_ceil(8)],
            len: len as usize,
        }
    }

    fn input(b: &'a [u8]) -> HostBuf<'a> {
        if b.as_ptr().align_offset(8) == 0 {
            return HostBuf::Input(b);
        }
        Self::copy_of(b)
    }

    fn copy_of(b: &[u8]) -> HostBuf<'a> {
        let mut h = HostBuf::new(b.len() as u64);
        h.bytes_mut().expect("owned").copy_from_slice(b);
        h
    }

    /// A plan's input: read in place from host memory and from a simulated GPU's,
    /// brought to the host from any other device.
    fn of_input(i: &'a Input) -> Result<HostBuf<'a>, PlanError> {
        match i {
            Input::Host(b) => Ok(Self::input(b)),
            Input::Device(d) => match d.downcast::<SimBytes>() {
                Some(s) => Ok(Self::input(s.bytes())),
                None => Ok(Self::copy_of(
                    &d.data().to_host().map_err(PlanError::Input)?,
                )),
            },
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            HostBuf::Owned { words, len } => &cpu::as_bytes(words)[..*len],
            HostBuf::Input(b) => b,
            HostBuf::Out(b) => b,
        }
    }

    /// Writable bytes; `None` for an input (kernels never write their inputs).
    fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        match self {
            HostBuf::Owned { words, len } => Some(&mut cpu::as_bytes_mut(words)[..*len]),
            HostBuf::Input(_) => None,
            HostBuf::Out(b) => Some(b),
        }
    }

    fn elems<T: Elem>(&self) -> &[T] {
        cpu::cast(self.bytes()).expect("invariant: plan buffers are 8-byte aligned")
    }

    fn elems_mut<T: Elem>(&mut self) -> Option<&mut [T]> {
        let b = self.bytes_mut()?;
        Some(cpu::cast_mut(b).expect("invariant: plan buffers are 8-byte aligned"))
    }
}

/// Runs a plan on the host with the kernels' CPU twins, as a GPU would run it: every launch
/// checks its arguments (count and types) and reads and writes only the buffers it is
/// given, with the launch shape's effect on partial results reproduced. Outputs start
/// poisoned, so an element no step writes is caught. Inputs are read in place and the
/// output is written where the op's output goes ([`crate::output_bytes`]).
pub fn run_on_host(plan: &Plan) -> Result<Chunk, PlanError> {
    let mut result = Ok(());
    let bytes = crate::output_bytes(plan.out_len() as usize, |out| {
        result = run_into(plan, out);
    });
    result?;
    Ok(Chunk {
        dtype: plan.dtype,
        shape: plan.shape.clone(),
        bytes,
    })
}

/// Runs a plan with the CPU twins into `out` (the output's length).
pub fn run_into(plan: &Plan, out: &mut [u8]) -> Result<(), PlanError> {
    if out.len() as u64 != plan.out_len() {
        return Err(PlanError::OutputLength {
            got: out.len(),
            want: plan.out_len(),
        });
    }
    if out.as_ptr().align_offset(8) == 0 {
        return run_steps(plan, out);
    }
    let mut own = HostBuf::new(out.len() as u64);
    let bytes = own.bytes_mut().expect("owned");
    run_steps(plan, bytes)?;
    out.copy_from_slice(bytes);
    Ok(())
}

/// Runs the steps with `out` (8-byte aligned) as the output.
fn run_steps(plan: &Plan, out: &mut [u8]) -> Result<(), PlanError> {
    let mut bufs: Vec<HostBuf> = plan
        .inputs
        .iter()
        .map(HostBuf::of_input)
        .collect::<Result<_, _>>()?;
    let temps = bufs.len();
    bufs.extend(plan.temps.iter().map(|&t| HostBuf::poisoned(t)));
    out.fill(POISON);
    bufs.push(HostBuf::Out(out));
    let index = |b: Buf| -> Result<usize, PlanError> {
        let i = match b {
            Buf::In(i) if i < plan.inputs.len() => i,
            Buf::Tmp(i) if i < plan.temps.len() => temps + i,
            Buf::Out => plan.inputs.len() + plan.temps.len(),
            b => return Err(PlanError::NoBuffer(b)),
        };
        Ok(i)
    };
    for step in &plan.steps {
        match step {
            Step::Copy { from, to, len } => {
                let (from, to, len) = (index(*from)?, index(*to)?, *len as usize);
                with_output(&mut bufs, to, &[from], |bufs, dst| {
                    let src = &bufs[from].bytes()[..len];
                    let dst = dst
                        .bytes_mut()
                        .ok_or(PlanError::Step("a copy into an input"))?;
                    dst[..len].copy_from_slice(src);
                    Ok::<_, PlanError>(())
                })?;
            }
            Step::Gemm {
                dtype,
                m,
                k,
                n,
                a,
                b,
                out,
                acc,
            } => {
                let (m, k, n) = (*m as usize, *k as usize, *n as usize);
                let (ia, ib, io) = (index(*a)?, index(*b)?, index(*out)?);
                match dtype {
                    DType::F32 => host_gemm::<f32>(&mut bufs, (ia, ib, io), (m, k, n), *acc)?,
                    DType::F64 => host_gemm::<f64>(&mut bufs, (ia, ib, io), (m, k, n), *acc)?,
                    d => return Err(PlanError::NoGemm(*d)),
                }
            }
            Step::Launch(l) => {
                let Module::Builtin(_) = l.module else {
                    return Err(PlanError::launch(
                        &l.entry,
                        LaunchError::Refused("a custom kernel has no twin here"),
                    ));
                };
                let resolved = l
                    .args
                    .iter()
                    .map(|a| match a {
                        Arg::Buf(b) => index(*b).map(Resolved::Buf),
                        Arg::Null => Ok(Resolved::Null),
                        other => Ok(Resolved::Value(*other)),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                host_launch(l, &resolved, &mut bufs)?;
            }
        }
    }
    Ok(())
}

fn host_gemm<T: crate::chunk::Pod + Elem>(
    bufs: &mut [HostBuf],
    (a, b, out): (usize, usize, usize),
    (m, k, n): (usize, usize, usize),
    acc: bool,
) -> Result<(), PlanError> {
    if out == a || out == b {
        return Err(PlanError::Step("a GEMM's output is one of its inputs"));
    }
    with_output(bufs, out, &[a, b], |bufs, o| {
        let (x, y) = (bufs[a].elems::<T>(), bufs[b].elems::<T>());
        match o.elems_mut::<T>() {
            Some(dst) if x.len() >= m * k && y.len() >= k * n && dst.len() >= m * n => {
                T::gemm(m, k, n, &x[..m * k], &y[..k * n], &mut dst[..m * n], acc);
                Ok(())
            }
            Some(_) => Err(PlanError::Step("GEMM operands too small")),
            None => Err(PlanError::Step("a GEMM into an input")),
        }
    })
}

/// Runs `f` with buffer `out` taken out of the list, to be written, while the others are
/// read in place. A buffer `f` reads (`reads`) that is `out` itself (a combine plan's
/// `out = out op c`) is read from a copy left in its place: the elementwise kernels that
/// do this read each element before they write it, so the copy holds what they read.
fn with_output<'b, R>(
    bufs: &mut [HostBuf<'b>],
    out: usize,
    reads: &[usize],
    f: impl FnOnce(&[HostBuf<'b>], &mut HostBuf<'b>) -> R,
) -> R {
    let stand_in = if reads.contains(&out) {
        HostBuf::copy_of(bufs[out].bytes())
    } else {
        HostBuf::new(0)
    };
    let mut o = std::mem::replace(&mut bufs[out], stand_in);
    let r = f(bufs, &mut o);
    bufs[out] = o;
    r
}

#[derive(Clone, Copy)]
enum Resolved {
    Buf(usize),
    Null,
    Value(Arg),
}

fn host_launch(l: &Launch, args: &[Resolved], bufs: &mut [HostBuf]) -> Result<(), PlanError> {
    let (op, dt) = l
        .entry
        .rsplit_once('_')
        .ok_or_else(|| PlanError::EntryName(l.entry.clone()))?;
    match dt {
        "f32" => launch_typed::<f32>(op, l, args, bufs),
        "f64" => launch_typed::<f64>(op, l, args, bufs),
        "i32" => launch_elem::<i32>(op, l, args, bufs),
        "i64" => launch_elem::<i64>(op, l, args, bufs),
        _ => Err(PlanError::EntryDType(l.entry.clone())),
    }
}

/// Reads a launch's arguments, checking each one's kind as the kernel declares it.
struct Args<'a> {
    entry: &'a str,
    args: &'a [Resolved],
}

impl Args<'_> {
    /// Argument `i` is not of the kind the kernel takes (`kind`, with its article).
    fn not_a(&self, i: usize, kind: &str) -> PlanError {
        let kind = kind.to_string();
        PlanError::launch(self.entry, LaunchError::ArgKind { index: i, kind })
    }

    fn check_count(&self, n: usize) -> Result<(), PlanError> {
        if self.args.len() == n {
            Ok(())
        } else {
            Err(PlanError::launch(
                self.entry,
                LaunchError::ArgCount {
                    passed: self.args.len(),
                    takes: n,
                },
            ))
        }
    }

    fn buf(&self, i: usize) -> Result<usize, PlanError> {
        match self.args.get(i) {
            Some(Resolved::Buf(b)) => Ok(*b),
            _ => Err(self.not_a(i, "a buffer")),
        }
    }

    fn opt_buf(&self, i: usize) -> Result<Option<usize>, PlanError> {
        match self.args.get(i) {
            Some(Resolved::Null) => Ok(None),
            _ => self.buf(i).map(Some),
        }
    }

    fn u64(&self, i: usize) -> Result<u64, PlanError> {
        match self.args.get(i) {
            Some(Resolved::Value(Arg::U64(v))) => Ok(*v),
            _ => Err(self.not_a(i, "a u64")),
        }
    }

    fn flag(&self, i: usize) -> Result<bool, PlanError> {
        match self.args.get(i) {
            Some(Resolved::Value(Arg::I32(v))) => Ok(*v != 0),
            _ => Err(self.not_a(i, "an int")),
        }
    }

    fn elem<T: Elem>(&self, i: usize) -> Result<T, PlanError> {
        let v = match (T::NAME, self.args.get(i)) {
            ("f32", Some(Resolved::Value(Arg::F32(v)))) => *v as f64,
            ("f64", Some(Resolved::Value(Arg::F64(v)))) => *v,
            ("i32", Some(Resolved::Value(Arg::I32(v)))) => *v as f64,
            ("i64", Some(Resolved::Value(Arg::I64(v)))) => *v as f64,
            _ => return Err(self.not_a(i, &format!("a {}", T::NAME))),
        };
        Ok(T::from_f64(v))
    }
}

/// `n` elements of buffer `b`, read in place, or an error naming the entry point when it
/// is too short.
fn input<'a, T: Elem>(
    bufs: &'a [HostBuf],
    b: usize,
    n: usize,
    entry: &str,
) -> Result<&'a [T], PlanError> {
    let e = bufs[b].elems::<T>();
    e.get(..n).ok_or_else(|| {
        let (len, verb) = (e.len(), "read");
        PlanError::launch(entry, LaunchError::Short { len, n, verb })
    })
}

/// The first `n` elements of `buf`, to be written.
fn output<'a, T: Elem>(
    buf: &'a mut HostBuf<'_>,
    n: usize,
    entry: &str,
) -> Result<&'a mut [T], PlanError> {
    let e = buf
        .elems_mut::<T>()
        .ok_or_else(|| PlanError::launch(entry, LaunchError::WritesInput))?;
    let len = e.len();
    e.get_mut(..n).ok_or_else(|| {
        let verb = "written";
        PlanError::launch(entry, LaunchError::Short { len, n, verb })
    })
}

/// A binary kernel `(a, b, out, n, a_scalar, b_scalar)`: `f` gets the operands (a scalar
/// one is one element), the `n` elements of the output and the scalar flags.
fn binary_launch<T: Elem>(
    a: &Args<'_>,
    bufs: &mut [HostBuf],
    f: impl FnOnce(&[T], &[T], &mut [T], bool, bool),
) -> Result<(), PlanError> {
    a.check_count(6)?;
    let n = a.u64(3)? as usize;
    let (sa, sb) = (a.flag(4)?, a.flag(5)?);
    let (ia, ib, io) = (a.buf(0)?, a.buf(1)?, a.buf(2)?);
    with_output(bufs, io, &[ia, ib], |bufs, o| {
        let x = input::<T>(bufs, ia, if sa { 1 } else { n }, a.entry)?;
        let y = input::<T>(bufs, ib, if sb { 1 } else { n }, a.entry)?;
        f(x, y, output::<T>(o, n, a.entry)?, sa, sb);
        Ok(())
    })
}

fn launch_typed<T: Float>(
    op: &str,
    l: &Launch,
    args: &[Resolved],
    bufs: &mut [HostBuf],
) -> Result<(), PlanError> {
    let a = Args {
        entry: &l.entry,
        args,
    };
    match op {
        "random_uniform" | "random_normal" => {
            a.check_count(8)?;
            let n = a.u64(1)? as usize;
            let (cols, seed, offset, stride) = (a.u64(2)?, a.u64(3)?, a.u64(4)?, a.u64(5)?);
            let (p0, p1) = (a.elem::<T>(6)?.to_f64(), a.elem::<T>(7)?.to_f64());
            let out = output::<T>(&mut bufs[a.buf(0)?], n, &l.entry)?;
            let normal = op == "random_normal";
            cpu::random_rows(normal, out, cols as usize, seed, offset, stride, p0, p1);
            Ok(())
        }
        "div" | "pow" => binary_launch::<T>(&a, bufs, |x, y, out, sa, sb| {
            cpu::binary_float(op == "pow", x, y, out, sa, sb)
        }),
        _ => launch_elem::<T>(op, l, args, bufs),
    }
}

/// Launches of the entry points every element type has (the float-only ones are in
/// `launch_typed`).
fn launch_elem<T: Elem>(
    op: &str,
    l: &Launch,
    args: &[Resolved],
    bufs: &mut [HostBuf],
) -> Result<(), PlanError> {
    let a = Args {
        entry: &l.entry,
        args,
    };
    let e = &l.entry;
    if let Some(op) = Binary::parse(op) {
        return binary_launch::<T>(&a, bufs, |x, y, out, sa, sb| {
            cpu::binary(op, x, y, out, sa, sb)
        });
    }
    match op {
        "fill" => {
            a.check_count(3)?;
            let n = a.u64(1)? as usize;
            let v = a.elem::<T>(2)?;
            cpu::fill(output::<T>(&mut bufs[a.buf(0)?], n, e)?, v);
        }
        "arange" => {
            a.check_count(4)?;
            let n = a.u64(1)? as usize;
            let (start, step) = (a.elem::<T>(2)?, a.elem::<T>(3)?);
            cpu::arange(output::<T>(&mut bufs[a.buf(0)?], n, e)?, start, step);
        }
        "sum" | "amax" | "amin" => {
            // Block b of a grid-stride launch reduces the elements i with
            // (i / threads) % blocks == b and writes partial b: run j of `threads`
            // elements goes to block j % blocks.
            a.check_count(3)?;
            if l.block != (THREADS, 1, 1) {
                return Err(PlanError::launch(e, LaunchError::BlockSize(THREADS)));
            }
            let n = a.u64(2)? as usize;
            let blocks = l.grid.0 as usize;
            let x = input::<T>(bufs, a.buf(0)?, n, e)?;
            let r = Reduce::parse(op).expect("a reduction");
            let mut partials = vec![r.init::<T>(); blocks];
            for (j, run) in x.chunks(THREADS as usize).enumerate() {
                let p = &mut partials[j % blocks];
                for &v in run {
                    *p = r.combine(*p, v);
                }
            }
            output::<T>(&mut bufs[a.buf(1)?], blocks, e)?.copy_from_slice(&partials);
        }
        "sum_axis" | "amax_axis" | "amin_axis" => {
            a.check_count(5)?;
            let (outer, len, inner) = (a.u64(2)? as usize, a.u64(3)? as usize, a.u64(4)? as usize);
            let (ix, io) = (a.buf(0)?, a.buf(1)?);
            let r = Reduce::parse(op.trim_end_matches("_axis")).expect("a reduction");
            with_output(bufs, io, &[ix], |bufs, o| {
                let x = input::<T>(bufs, ix, outer * len * inner, e)?;
                cpu::reduce_axis(r, x, output::<T>(o, outer * inner, e)?, len, inner);
                Ok::<_, PlanError>(())
            })?;
        }
        "sum_rows" | "amax_rows" | "amin_rows" => {
            a.check_count(4)?;
            if l.block != (THREADS, 1, 1) {
                return Err(PlanError::launch(e, LaunchError::BlockSize(THREADS)));
            }
            let (rows, len) = (a.u64(2)? as usize, a.u64(3)? as usize);
            let (ix, io) = (a.buf(0)?, a.buf(1)?);
            let r = Reduce::parse(op.trim_end_matches("_rows")).expect("a reduction");
            with_output(bufs, io, &[ix], |bufs, o| {
                let x = input::<T>(bufs, ix, rows * len, e)?;
                let out = output::<T>(o, rows, e)?;
                cpu::reduce_rows(r, x, out, len, THREADS as usize);
                Ok::<_, PlanError>(())
            })?;
        }
        "argmax" => {
            a.check_count(5)?;
            if l.grid != (1, 1, 1) {
                let problem = LaunchError::Refused("the twin covers one-block launches");
                return Err(PlanError::launch(e, problem));
            }
            let n = a.u64(4)? as usize;
            let x = input::<T>(bufs, a.buf(0)?, n, e)?;
            let idx = match a.opt_buf(1)? {
                Some(b) => Some(input::<i64>(bufs, b, n, e)?),
                None => None,
            };
            let i = cpu::argmax(x)
                .ok_or_else(|| PlanError::launch(e, LaunchError::Refused("argmax of nothing")))?;
            let (v, at) = (x[i], idx.map_or(i as i64, |idx| idx[i]));
            output::<T>(&mut bufs[a.buf(2)?], 1, e)?[0] = v;
            output::<i64>(&mut bufs[a.buf(3)?], 1, e)?[0] = at;
        }
        "transpose" => {
            a.check_count(4)?;
            let (rows, cols) = (a.u64(2)? as usize, a.u64(3)? as usize);
            let tiles = |d: usize| d.div_ceil(TILE as usize) as u32;
            if l.block != (TILE, TILE_ROWS, 1) || l.grid != (tiles(cols), tiles(rows), 1) {
                let problem = LaunchError::Refused("launch shape does not cover the tiles");
                return Err(PlanError::launch(e, problem));
            }
            let (ix, io) = (a.buf(0)?, a.buf(1)?);
            with_output(bufs, io, &[ix], |bufs, o| {
                let x = input::<T>(bufs, ix, rows * cols, e)?;
                cpu::transpose(x, output::<T>(o, rows * cols, e)?, rows, cols);
                Ok::<_, PlanError>(())
            })?;
        }
        _ => {
            let problem = LaunchError::Refused("no CPU twin for this entry point");
            return Err(PlanError::launch(e, problem));
        }
    }
    Ok(())
}
