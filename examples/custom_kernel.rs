//! A user's own kernel: CUDA source for GPU workers plus a Rust CPU twin, registered by
//! name and applied to every chunk of an array (`map_blocks`). The registry, with the
//! kernel's source, is compiled into this program and its workers; the handshake refuses
//! workers whose registry (source included) differs.
//!
//!     cargo run --example custom_kernel
//!
//! With NVRTC on the library path (see ci/setup-nvrtc.sh) the kernel is compile-checked
//! first, and a kernel that does not compile is reported with NVRTC's log.

use rask::array::{Array, Chunk, DType};
use rask::Arg;
use rask::{Client, CudaKernel, LocalCluster, Registry, Value};

const SCALE_SHIFT: &str = r#"
extern "C" __global__ void scale_shift_f32(const float* x, float* y, unsigned long long n,
                                           float a, float b) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         i < n; i += (unsigned long long)blockDim.x * gridDim.x)
        y[i] = a * x[i] + b;
}
"#;

/// y = a * x + b on the CPU: the twin of `scale_shift_f32`.
fn scale_shift(args: &[Value]) -> Result<Value, String> {
    let [x, Value::Float(a), Value::Float(b)] = args else {
        return Err("scale_shift(chunk, a, b)".into());
    };
    let x = Chunk::from_value(x)?;
    let (a, b) = (*a as f32, *b as f32);
    let y: Vec<f32> = x.elems::<f32>()?.iter().map(|v| a * v + b).collect();
    Ok(Chunk::from_elems(x.shape.clone(), &y)?.to_value())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut registry = Registry::builtin();
    registry.register_kernel(
        "scale_shift",
        1,
        CudaKernel {
            source: SCALE_SHIFT.into(),
            entry: "scale_shift_f32".into(),
        },
        scale_shift,
    );
    match registry.check_kernels("compute_80")? {
        true => println!("scale_shift compiles with NVRTC (compute_80)"),
        false => println!("NVRTC is not available here: the CUDA source was not compile-checked"),
    }

    // A broken kernel is refused with NVRTC's log (when NVRTC is here to say so).
    let mut broken = Registry::builtin();
    broken.register_kernel(
        "broken",
        1,
        CudaKernel {
            source: "extern \"C\" __global__ void broken(float* y) { y[0] = nope; }".into(),
            entry: "broken".into(),
        },
        |_| Err("never runs".into()),
    );
    if let Err(e) = broken.check_kernels("compute_80") {
        println!("a broken kernel is reported:\n{e}");
    }

    let cluster = LocalCluster::builder().registry(registry).build()?;
    let client = Client::for_cluster(cluster)?;
    let x = Array::arange(12, 5, DType::F32, 0.0, 1.0)?;
    let y = x.map_blocks("scale_shift", vec![Arg::from(2.0), Arg::from(0.5)]);
    let v = client.compute_array::<f32>(&y)?;
    println!("scale_shift(arange(12), 2, 0.5) = {v}");
    Ok(())
}
