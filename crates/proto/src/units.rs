//! Sizes as people write them, read by one parser for every size flag, environment
//! variable and configuration value: `--memory-limit`, `--device-memory-limit`,
//! `--sim-gpus N:MEMORY`, the configuration file.
//!
//! Units are Dask's: decimal `kB`/`MB`/`GB`/`TB`/`PB` (and the bare `k`/`M`/`G`/`T`/`P`)
//! are powers of 1000, binary `KiB`/`MiB`/`GiB`/`TiB`/`PiB` powers of 1024; letters may
//! be of either case and a space may stand between number and unit (`4 GiB`, `4gib`).
//! A memory *limit* may also be a fraction of the memory it limits (a plain number up to
//! 1, as in Dask and dask-cuda) or `auto`.

use std::fmt;
use std::str::FromStr;

/// A size that does not read, with the value as given and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SizeError {
    /// The text as given.
    pub value: String,
    /// What is wrong with it.
    pub why: String,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.value, self.why)
    }
}

impl std::error::Error for SizeError {}

fn error(value: &str, why: impl Into<String>) -> SizeError {
    SizeError {
        value: value.to_string(),
        why: why.into(),
    }
}

/// Units and what they multiply by, longest spelling first within a letter so that
/// `kib` is not read as `k` + `ib`.
const UNITS: [(&str, u64); 16] = [
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("pib", 1 << 50),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("pb", 1_000_000_000_000_000),
    ("k", 1_000),
    ("m", 1_000_000),
    ("g", 1_000_000_000),
    ("t", 1_000_000_000_000),
    ("p", 1_000_000_000_000_000),
    ("b", 1),
];

/// Reads a byte count: `1024`, `64KiB`, `512 MiB`, `4GiB`, `1.5GB`, `2g`. A number
/// without a unit must be whole (`0.8` is not a number of bytes: as a limit it is a
/// fraction, see [`MemoryLimit`]).
pub fn parse_bytes(s: &str) -> Result<u64, SizeError> {
    let text = s.trim();
    if text.is_empty() {
        return Err(error(s, "empty; expected a size such as 4GiB or 512MB"));
    }
    let lower = text.to_ascii_lowercase();
    let (number, unit) = match UNITS.iter().find(|(u, _)| lower.ends_with(u)) {
        Some(&(u, mult)) => (lower[..lower.len() - u.len()].trim_end(), Some(mult)),
        None => (lower.as_str(), None),
    };
    if number.is_empty() {
        return Err(error(s, "no number before the unit"));
    }
    if number.starts_with(['+', '-']) {
        return Err(error(s, "a size cannot have a sign"));
    }
    match unit {
        None => number.parse::<u64>().map_err(|_| {
            if number.parse::<f64>().is_ok() {
                error(
                    s,
                    "not a whole number of bytes; give a unit (e.g. 1.5GiB) or, for a limit, a fraction up to 1",
                )
            } else {
                error(
                    s,
                    "not a size; expected bytes or a number with a unit: B, kB, MB, GB, TB, KiB, MiB, GiB, TiB",
                )
            }
        }),
        Some(mult) => {
            if let Ok(n) = number.parse::<u64>() {
                return n
                    .checked_mul(mult)
                    .ok_or_else(|| error(s, "too large for 64 bits"));
            }
            let v: f64 = number
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| error(s, format!("{number:?} is not a number")))?;
            let bytes = v * mult as f64;
            if bytes >= u64::MAX as f64 {
                return Err(error(s, "too large for 64 bits"));
            }
            Ok(bytes as u64)
        }
    }
}

/// A byte count for people: `4 GiB`, `1.50 GiB`, `512 MiB`, `900 B`.
pub fn format_bytes(n: u64) -> String {
    const NAMES: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut unit = 0;
    let mut scale = 1024u64;
    while unit + 1 < NAMES.len() && n >= scale * 1024 {
        scale *= 1024;
        unit += 1;
    }
    if n.is_multiple_of(scale) {
        format!("{} {}", n / scale, NAMES[unit])
    } else {
        format!("{:.2} {}", n as f64 / scale as f64, NAMES[unit])
    }
}

/// A memory limit as given: bytes, a fraction of the memory it limits, or `auto`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MemoryLimit {
    /// So many bytes.
    Bytes(u64),
    /// This fraction, in (0, 1], of the memory it limits.
    Fraction(f64),
    /// All of the memory it limits (for a worker: its share of what the machine, or its
    /// container, has).
    Auto,
}

impl MemoryLimit {
    /// The limit in bytes of memory of `total` bytes.
    pub fn of(self, total: u64) -> u64 {
        match self {
            MemoryLimit::Bytes(b) => b,
            MemoryLimit::Fraction(f) => (total as f64 * f) as u64,
            MemoryLimit::Auto => total,
        }
    }
}

impl FromStr for MemoryLimit {
    type Err = SizeError;

    /// `auto`; a plain number in (0, 1] is a fraction (`0.8`, `1`); anything else bytes
    /// (`4GiB`, `4000000000`), never 0.
    fn from_str(s: &str) -> Result<MemoryLimit, SizeError> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("auto") {
            return Ok(MemoryLimit::Auto);
        }
        if let Ok(v) = t.parse::<f64>() {
            if v > 0.0 && v <= 1.0 {
                return Ok(MemoryLimit::Fraction(v));
            }
        }
        match parse_bytes(s)? {
            0 => Err(error(
                s,
                "a limit of 0 bytes leaves nothing to use (auto gives all of it)",
            )),
            b => Ok(MemoryLimit::Bytes(b)),
        }
    }
}

impl fmt::Display for MemoryLimit {
    /// A form [`MemoryLimit::from_str`] reads back as the same limit.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryLimit::Bytes(b) => write!(f, "{b}"),
            MemoryLimit::Fraction(x) => write!(f, "{x}"),
            MemoryLimit::Auto => f.write_str("auto"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_dasks_units_whatever_the_case_or_spacing() {
        let cases: [(&str, u64); 16] = [
            ("1024", 1024),
            ("0", 0),
            ("64KiB", 65_536),
            ("512 MiB", 512 << 20),
            ("4GiB", 4 << 30),
            ("4gib", 4 << 30),
            ("4GB", 4_000_000_000),
            ("4G", 4_000_000_000),
            ("4g", 4_000_000_000),
            ("1.5GB", 1_500_000_000),
            ("1.5 GiB", 3 << 29),
            ("2kB", 2_000),
            ("3B", 3),
            ("1TiB", 1 << 40),
            ("1PB", 1_000_000_000_000_000),
            (" 7 MB ", 7_000_000),
        ];
        for (s, want) in cases {
            assert_eq!(parse_bytes(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn sizes_that_do_not_read_say_why_and_name_the_value() {
        for (s, why) in [
            ("", "empty"),
            ("lots", "not a size"),
            ("0.8", "not a whole number"),
            ("GiB", "no number"),
            ("-1GiB", "sign"),
            ("+1GiB", "sign"),
            ("16777216TiB", "too large"),
            ("1e30GB", "too large"),
            ("nanGB", "not a number"),
            ("infGiB", "not a number"),
            ("4 XB", "not a number"),
        ] {
            let e = parse_bytes(s).unwrap_err();
            assert!(e.why.contains(why), "{s}: {e}");
            assert_eq!(e.value, s);
            assert!(e.to_string().starts_with(&format!("{s:?}")), "{e}");
        }
    }

    #[test]
    fn limits_are_auto_a_fraction_up_to_one_or_bytes_and_never_zero() {
        let ok: [(&str, MemoryLimit); 8] = [
            ("auto", MemoryLimit::Auto),
            ("AUTO", MemoryLimit::Auto),
            ("0.8", MemoryLimit::Fraction(0.8)),
            ("1", MemoryLimit::Fraction(1.0)),
            ("1.0", MemoryLimit::Fraction(1.0)),
            ("2", MemoryLimit::Bytes(2)),
            ("4GiB", MemoryLimit::Bytes(4 << 30)),
            ("4GB", MemoryLimit::Bytes(4_000_000_000)),
        ];
        for (s, want) in ok {
            assert_eq!(s.parse::<MemoryLimit>(), Ok(want), "{s}");
        }
        for s in ["0", "0GiB", "1.5", "-0.5", "half"] {
            assert!(s.parse::<MemoryLimit>().is_err(), "{s}");
        }
        assert!("0".parse::<MemoryLimit>().unwrap_err().why.contains("auto"));
    }

    #[test]
    fn a_limit_resolves_against_the_memory_it_limits_and_prints_back_the_same() {
        let total = 10 << 30;
        assert_eq!(MemoryLimit::Auto.of(total), total);
        assert_eq!(MemoryLimit::Fraction(0.5).of(total), 5 << 30);
        assert_eq!(MemoryLimit::Bytes(123).of(total), 123);
        for l in [
            MemoryLimit::Auto,
            MemoryLimit::Fraction(0.25),
            MemoryLimit::Fraction(1.0),
            MemoryLimit::Bytes(4 << 30),
        ] {
            assert_eq!(l.to_string().parse::<MemoryLimit>(), Ok(l), "{l}");
        }
    }

    #[test]
    fn byte_counts_print_in_binary_units() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1 KiB");
        assert_eq!(format_bytes(4 << 30), "4 GiB");
        assert_eq!(format_bytes(3 << 29), "1.50 GiB");
        assert_eq!(format_bytes(1 << 50), "1 PiB");
        assert_eq!(format_bytes(1 << 60), "1024 PiB");
    }
}
