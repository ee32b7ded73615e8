//! What a CUDA error means for the device that returned it: most errors fail one call,
//! but some leave the context unusable for good ("sticky": an illegal address in a
//! kernel, a launch failure, an uncorrectable ECC error, …) — every later call on that
//! context fails too, and only a new process gets a working GPU again. Out of memory is
//! its own kind: spilling values off the device and trying again may succeed.
//!
//! Pure, so that the simulated GPUs raise the same errors through the same
//! classification as a real one (their tests inject codes, see `RASK_SIM_FAULT` in
//! rask-kernels).

/// What an error means for its device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The context is unusable from now on: the worker must leave so that a fresh process
    /// takes the GPU.
    Sticky,
    /// The device has no memory for what was asked: spill and retry.
    OutOfMemory,
    /// The call failed; the context works.
    Other,
}

/// Codes of the CUDA driver API (`CUresult`) this crate names.
const NAMES: &[(u32, &str)] = &[
    (1, "CUDA_ERROR_INVALID_VALUE"),
    (2, "CUDA_ERROR_OUT_OF_MEMORY"),
    (3, "CUDA_ERROR_NOT_INITIALIZED"),
    (46, "CUDA_ERROR_DEVICE_UNAVAILABLE"),
    (100, "CUDA_ERROR_NO_DEVICE"),
    (101, "CUDA_ERROR_INVALID_DEVICE"),
    (200, "CUDA_ERROR_INVALID_IMAGE"),
    (209, "CUDA_ERROR_NO_BINARY_FOR_GPU"),
    (214, "CUDA_ERROR_ECC_UNCORRECTABLE"),
    (218, "CUDA_ERROR_INVALID_PTX"),
    (220, "CUDA_ERROR_NVLINK_UNCORRECTABLE"),
    (222, "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"),
    (700, "CUDA_ERROR_ILLEGAL_ADDRESS"),
    (701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"),
    (702, "CUDA_ERROR_LAUNCH_TIMEOUT"),
    (709, "CUDA_ERROR_CONTEXT_IS_DESTROYED"),
    (710, "CUDA_ERROR_ASSERT"),
    (714, "CUDA_ERROR_HARDWARE_STACK_ERROR"),
    (715, "CUDA_ERROR_ILLEGAL_INSTRUCTION"),
    (716, "CUDA_ERROR_MISALIGNED_ADDRESS"),
    (717, "CUDA_ERROR_INVALID_ADDRESS_SPACE"),
    (718, "CUDA_ERROR_INVALID_PC"),
    (719, "CUDA_ERROR_LAUNCH_FAILED"),
    (911, "CUDA_ERROR_EXTERNAL_DEVICE"),
    (999, "CUDA_ERROR_UNKNOWN"),
];

/// What CUDA error `code` means for its context. Sticky: the codes the CUDA
/// documentation says leave "the process in an inconsistent state" that requires
/// terminating it (illegal address, launch timeout, device-side assert, hardware stack
/// error, illegal instruction, misaligned address, invalid address space, invalid PC,
/// launch failure), uncorrectable ECC and NVLink errors, an external device's failure
/// and a destroyed context; `CUDA_ERROR_UNKNOWN` too, because nothing is known to work
/// after it.
pub fn classify(code: u32) -> FaultKind {
    match code {
        2 => FaultKind::OutOfMemory,
        214 | 220 | 700 | 702 | 709 | 710 | 714..=719 | 911 | 999 => FaultKind::Sticky,
        _ => FaultKind::Other,
    }
}

/// The name of CUDA error `code` (`CUDA_ERROR_ILLEGAL_ADDRESS`), if this crate knows it.
pub fn code_name(code: u32) -> Option<&'static str> {
    NAMES.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// A CUDA error code from its number (`700`) or name (`CUDA_ERROR_ILLEGAL_ADDRESS`,
/// also without the `CUDA_ERROR_` prefix, any case).
pub fn parse_code(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Ok(n) = s.parse() {
        return Some(n);
    }
    let upper = s.to_ascii_uppercase();
    let full = if upper.starts_with("CUDA_ERROR_") {
        upper
    } else {
        format!("CUDA_ERROR_{upper}")
    };
    NAMES.iter().find(|(_, n)| *n == full).map(|(c, _)| *c)
}

/// `CUDA_ERROR_ILLEGAL_ADDRESS (700)`, or `CUDA error 12345` for a code without a name.
pub fn describe(code: u32) -> String {
    match code_name(code) {
        Some(n) => format!("{n} ({code})"),
        None => format!("CUDA error {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticky_errors_are_those_that_poison_the_context() {
        for code in [
            214, 220, 700, 702, 709, 710, 714, 715, 716, 717, 718, 719, 911, 999,
        ] {
            assert_eq!(classify(code), FaultKind::Sticky, "{}", describe(code));
        }
        assert_eq!(classify(2), FaultKind::OutOfMemory);
        // Errors of one call: bad arguments, a kernel too large for the GPU, no binary
        // for its architecture, a too-new PTX.
        for code in [1, 3, 101, 200, 209, 218, 222, 701, 713, 720, 801] {
            assert_eq!(classify(code), FaultKind::Other, "{}", describe(code));
        }
    }

    #[test]
    fn codes_parse_by_number_and_by_name() {
        assert_eq!(parse_code("700"), Some(700));
        assert_eq!(parse_code("CUDA_ERROR_ILLEGAL_ADDRESS"), Some(700));
        assert_eq!(parse_code("illegal_address"), Some(700));
        assert_eq!(parse_code(" out_of_memory "), Some(2));
        assert_eq!(parse_code("no_such_error"), None);
        assert_eq!(describe(719), "CUDA_ERROR_LAUNCH_FAILED (719)");
        assert_eq!(describe(12345), "CUDA error 12345");
        for (c, n) in NAMES {
            assert_eq!(parse_code(n), Some(*c));
            assert_eq!(code_name(*c), Some(*n));
        }
    }
}
