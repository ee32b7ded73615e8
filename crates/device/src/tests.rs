//! Tests of memory accounting, names and specs, and the CUDA backend without a driver.

use super::sim::{parse_bytes, SimGpus, Topology};
use super::*;

#[test]
fn device_memory_is_limited_and_given_back() {
    let sim = SimGpus::new(1, 1 << 20, Topology::none());
    let host = MemoryPool::new(DeviceLoc::HOST, 1 << 20);
    for pool in [&host, sim.gpu(0).unwrap().pool()] {
        let dev = pool.device();
        let a = pool.reserve(600 << 10).unwrap();
        assert_eq!(pool.used(), 600 << 10);
        match pool.reserve(600 << 10) {
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
        assert_eq!(pool.used(), 0);
        let b = pool.reserve(1 << 20).unwrap();
        assert_eq!(pool.used(), 1 << 20);
        drop(b);
    }
    assert_eq!(sim.gpu(0).unwrap().pool().device(), DeviceLoc::sim(0));
    assert!(sim.gpu(1).is_none());
}

#[test]
fn names_specs_and_topologies_parse() {
    for d in [DeviceLoc::HOST, DeviceLoc::sim(3), DeviceLoc::cuda(1)] {
        assert_eq!(d.to_string().parse::<DeviceLoc>().unwrap(), d);
    }
    assert!("gpu:1".parse::<DeviceLoc>().is_err());
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
    match discover::gpus() {
        Err(DeviceError::NoGpus(reason)) => assert!(reason.contains("NVML"), "{reason}"),
        other => panic!("expected no GPUs, got {other:?}"),
    }
}

#[cfg(feature = "cuda")]
#[test]
fn the_default_device_limit_is_80_percent_of_what_is_free() {
    use crate::cuda::default_limit;
    const GIB: u64 = 1 << 30;
    // Another process holds 60 of 80 GiB: 16 of the 20 free, not 64.
    assert_eq!(default_limit(20 * GIB, 80 * GIB), 16 * GIB);
    assert_eq!(default_limit(80 * GIB, 80 * GIB), 64 * GIB);
    // A driver reporting more free than total is held to the total.
    assert_eq!(default_limit(90 * GIB, 80 * GIB), 64 * GIB);
    assert_eq!(default_limit(0, 80 * GIB), 0);
}
