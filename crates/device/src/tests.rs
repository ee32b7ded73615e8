use super::sim::{parse_bytes, SimGpus, Topology};
use super::*;

fn random_bytes(len: usize, mut x: u64) -> Vec<u8> {
    x |= 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn seed() -> u64 {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {s}");
    s
}

fn four_sim_gpus() -> Devices {
    Devices::host(1 << 34).with_sim(SimGpus::new(4, 64 << 20, Topology::pairs(4)))
}

#[test]
fn copies_between_every_pair_of_devices_are_exact_and_counted() {
    let d = four_sim_gpus();
    let s = seed();
    let devices = d.list();
    assert_eq!(devices.len(), 5);
    let mut expected = [0u64; 3];
    for (k, &n) in [0usize, 1, 4097, (1 << 20) + 3].iter().enumerate() {
        for &from in &devices {
            for &to in &devices {
                let data = random_bytes(n, s ^ (k as u64) << 8);
                let src = d.from_host(from, DType::U8, &data).unwrap();
                let mut dst = d.alloc(to, DType::U8, n as u64).unwrap();
                // Poison: a copy that writes nothing is caught.
                d.write(&mut dst, &vec![0xA5; n]).unwrap();
                let class = d.copy(&src, &mut dst).unwrap();
                assert_eq!(d.read(&dst).unwrap(), data, "{from} -> {to}, {n} bytes");
                let want = match (from, to) {
                    (a, b) if a == b => LinkClass::Local,
                    (Device::Sim(a), Device::Sim(b)) if a / 2 == b / 2 => LinkClass::NvLink,
                    _ => LinkClass::Pcie,
                };
                assert_eq!(class, want, "{from} -> {to}");
                // from_host, the poison write, the copy and the read.
                for (c, bytes) in [
                    (d.class(Device::Host, from), n),
                    (d.class(Device::Host, to), n),
                    (class, n),
                    (d.class(to, Device::Host), n),
                ] {
                    expected[LinkClass::ALL.iter().position(|x| *x == c).unwrap()] += bytes as u64;
                }
            }
        }
    }
    let moved: Vec<u64> = d.moved().into_iter().map(|(_, n)| n).collect();
    assert_eq!(moved, expected);
}

#[test]
fn device_memory_is_limited_and_given_back() {
    let d = Devices::host(1 << 20).with_sim(SimGpus::new(1, 1 << 20, Topology::none()));
    for dev in [Device::Host, Device::Sim(0)] {
        let a = d.alloc(dev, DType::F32, 600 << 10).unwrap();
        assert_eq!(d.pool(dev).unwrap().used(), 600 << 10);
        match d.alloc(dev, DType::F32, 600 << 10) {
            Err(DeviceError::OutOfMemory {
                device,
                requested,
                available,
                limit,
            }) => {
                assert_eq!(device, dev);
                assert_eq!(requested, 600 << 10);
                assert_eq!(available, 424 << 10);
                assert_eq!(limit, 1 << 20);
            }
            other => panic!("expected out of memory, got {other:?}"),
        }
        drop(a);
        assert_eq!(d.pool(dev).unwrap().used(), 0);
        let b = d.alloc(dev, DType::F32, 1 << 20).unwrap();
        assert_eq!(b.len(), 1 << 20);
        assert_eq!(b.dtype(), DType::F32);
        assert_eq!(b.device(), dev);
    }
    assert!(matches!(
        d.alloc(Device::Sim(1), DType::U8, 1),
        Err(DeviceError::UnknownDevice(Device::Sim(1)))
    ));
    assert!(matches!(
        d.copy(
            &d.alloc(Device::Host, DType::U8, 3).unwrap(),
            &mut d.alloc(Device::Host, DType::U8, 4).unwrap()
        ),
        Err(DeviceError::LengthMismatch { src: 3, dst: 4 })
    ));
}

#[test]
fn names_specs_and_topologies_parse() {
    for d in [Device::Host, Device::Sim(3), Device::Cuda(1)] {
        assert_eq!(d.to_string().parse::<Device>().unwrap(), d);
    }
    assert!("gpu:1".parse::<Device>().is_err());
    assert_eq!(SimGpus::parse_spec("4").unwrap(), (4, 1 << 30));
    assert_eq!(SimGpus::parse_spec("2:512MiB").unwrap(), (2, 512 << 20));
    assert!(SimGpus::parse_spec("0").is_err());
    assert_eq!(parse_bytes("1.5GB").unwrap(), 1_500_000_000);
    assert!(parse_bytes("lots").is_err());
    let t = Topology::parse("0-1, 2-3", 4).unwrap();
    assert_eq!(t, Topology::pairs(4));
    assert!(t.nvlink(1, 0) && !t.nvlink(1, 2));
    assert_eq!(Topology::all(3).describe(), "0-1,0-2,1-2");
    assert_eq!(Topology::all(3).label(), "0-1,0-2,1-2");
    assert_eq!(Topology::none().label(), "none");
    assert!(Topology::parse("0-4", 4).is_err());
}

/// Without a CUDA driver, every CUDA entry point returns an error (and none panics).
#[cfg(feature = "cuda")]
#[test]
fn without_a_driver_cuda_entry_points_return_errors() {
    if cuda::driver().is_ok() {
        println!("SKIPPED: a CUDA driver is present; the no-driver path cannot be checked here");
        return;
    }
    assert!(matches!(cuda::driver(), Err(DeviceError::NoDriver(_))));
    assert!(matches!(
        cuda::device_count(),
        Err(DeviceError::NoDriver(_))
    ));
    assert!(matches!(
        cuda::CudaDevice::open(0, None),
        Err(DeviceError::NoDriver(_))
    ));
    let d = Devices::host(1 << 20);
    assert!(matches!(
        d.alloc(Device::Cuda(0), DType::U8, 1),
        Err(DeviceError::UnknownDevice(_))
    ));
    match discover::gpus() {
        Err(DeviceError::NoGpus(reason)) => assert!(reason.contains("NVML"), "{reason}"),
        other => panic!("expected no GPUs, got {other:?}"),
    }
}

/// The same conformance on a real GPU; skipped here without one, failing instead under
/// `RASK_REQUIRE_GPU=1`.
#[cfg(feature = "cuda")]
#[test]
fn copies_on_a_cuda_gpu_are_exact() {
    let gpu = match cuda::CudaDevice::open(0, None) {
        Ok(g) => g,
        Err(e) => {
            assert!(
                std::env::var("RASK_REQUIRE_GPU").as_deref() != Ok("1"),
                "RASK_REQUIRE_GPU=1 but no GPU: {e}"
            );
            println!("SKIPPED: needs a CUDA GPU ({e})");
            return;
        }
    };
    let d = Devices::host(1 << 34).with_cuda(vec![gpu]);
    let data = random_bytes((3 << 20) + 1, seed());
    let a = d.from_host(Device::Cuda(0), DType::U8, &data).unwrap();
    let mut b = d
        .alloc(Device::Cuda(0), DType::U8, data.len() as u64)
        .unwrap();
    assert_eq!(d.copy(&a, &mut b).unwrap(), LinkClass::Local);
    assert_eq!(d.read(&b).unwrap(), data);
    let mut h = d.alloc(Device::Host, DType::U8, data.len() as u64).unwrap();
    assert_eq!(d.copy(&b, &mut h).unwrap(), LinkClass::Pcie);
    assert_eq!(h.host_bytes().unwrap(), &data[..]);
}
