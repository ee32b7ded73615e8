//! Element types of device buffers and arrays.

/// The element type of a buffer.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub enum DType {
    /// Unsigned bytes (`u8`); used for raw buffers, not for array arithmetic.
    U8,
    /// 32-bit signed integers (`i32`).
    I32,
    /// 64-bit signed integers (`i64`).
    I64,
    /// IEEE 754 single precision (`f32`).
    F32,
    /// IEEE 754 double precision (`f64`).
    F64,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> u64 {
        match self {
            DType::U8 => 1,
            DType::I32 | DType::F32 => 4,
            DType::I64 | DType::F64 => 8,
        }
    }

    /// The name used in kernel entry points (`add_f32`).
    pub const fn name(self) -> &'static str {
        match self {
            DType::U8 => "u8",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "u8" => DType::U8,
            "i32" => DType::I32,
            "i64" => DType::I64,
            "f32" => DType::F32,
            "f64" => DType::F64,
            _ => return Err(format!("unknown dtype {s:?}: u8, i32, i64, f32 or f64")),
        })
    }
}
