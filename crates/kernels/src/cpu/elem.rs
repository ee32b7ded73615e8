//! The kernels' element types ([`Elem`], [`Float`]) and the one audited place where element
//! slices and byte slices are reinterpreted as each other ([`as_bytes`], [`cast`] and their
//! `_mut` twins): chunk bytes, plan buffers and users' arrays all go through these.

/// The kernels' element types: i32, i64, f32, f64.
///
/// Sealed: the kernels exist for these types only (`NAME` is part of their CUDA entry
/// points), so no other crate can implement it:
///
/// ```compile_fail
/// #[derive(Clone, Copy, PartialEq, PartialOrd)]
/// struct Meters(f64);
///
/// impl rask_kernels::cpu::Elem for Meters {
///     const NAME: &'static str = "meters";
///     const LOWEST: Self = Meters(f64::NEG_INFINITY);
///     const HIGHEST: Self = Meters(f64::INFINITY);
///     fn zero() -> Self { Meters(0.0) }
///     fn from_f64(v: f64) -> Self { Meters(v) }
///     fn to_f64(self) -> f64 { self.0 }
///     fn add(self, o: Self) -> Self { Meters(self.0 + o.0) }
///     fn sub(self, o: Self) -> Self { Meters(self.0 - o.0) }
///     fn mul(self, o: Self) -> Self { Meters(self.0 * o.0) }
///     fn neg(self) -> Self { Meters(-self.0) }
/// }
/// ```
///
/// not even with `unsafe impl`:
///
/// ```compile_fail
/// #[derive(Clone, Copy, PartialEq, PartialOrd)]
/// struct Meters(f64);
///
/// // SAFETY: a transparent f64 (which this example cannot make true: the trait is sealed).
/// unsafe impl rask_kernels::cpu::Elem for Meters {
///     const NAME: &'static str = "meters";
///     const LOWEST: Self = Meters(f64::NEG_INFINITY);
///     const HIGHEST: Self = Meters(f64::INFINITY);
///     fn zero() -> Self { Meters(0.0) }
///     fn from_f64(v: f64) -> Self { Meters(v) }
///     fn to_f64(self) -> f64 { self.0 }
///     fn add(self, o: Self) -> Self { Meters(self.0 + o.0) }
///     fn sub(self, o: Self) -> Self { Meters(self.0 - o.0) }
///     fn mul(self, o: Self) -> Self { Meters(self.0 * o.0) }
///     fn neg(self) -> Self { Meters(-self.0) }
/// }
/// ```
///
/// # Safety
///
/// Kernel buffers are byte buffers viewed as slices of elements, and elements as bytes.
/// An implementing type is plain data: no padding, no pointers, every bit pattern of its
/// size a valid value, and its size and alignment those of the dtype it stands for
/// (`NAME`).
pub unsafe trait Elem: sealed::Sealed + Copy + PartialOrd + Send + Sync + 'static {
    /// The dtype's name, as in entry points (`add_f32`).
    const NAME: &'static str;
    /// The identity of max (−∞ for floats).
    const LOWEST: Self;
    /// The identity of min (+∞ for floats).
    const HIGHEST: Self;
    /// Zero.
    fn zero() -> Self;
    /// `v` converted (`as`).
    fn from_f64(v: f64) -> Self;
    /// The value as an f64 (`as`).
    fn to_f64(self) -> f64;
    /// `self + o` (wrapping for integers, as on a GPU).
    fn add(self, o: Self) -> Self;
    /// `self - o` (wrapping for integers).
    fn sub(self, o: Self) -> Self;
    /// `self * o` (wrapping for integers).
    fn mul(self, o: Self) -> Self;
    /// `-self` (wrapping for integers).
    fn neg(self) -> Self;
}

/// What keeps [`Elem`] (and so [`crate::chunk::Pod`]) from being implemented elsewhere.
mod sealed {
    /// Implemented for the kernels' element types only.
    pub trait Sealed {}
    impl Sealed for i32 {}
    impl Sealed for i64 {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

macro_rules! elem_int {
    ($t:ty, $n:literal) => {
        // SAFETY: a primitive integer: no padding, every bit pattern a value, the size and
        // alignment of its dtype.
        unsafe impl Elem for $t {
            const NAME: &'static str = $n;
            const LOWEST: Self = <$t>::MIN;
            const HIGHEST: Self = <$t>::MAX;
            fn zero() -> Self {
                0
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            // Wrapping, as the GPU's integer arithmetic.
            fn add(self, o: Self) -> Self {
                self.wrapping_add(o)
            }
            fn sub(self, o: Self) -> Self {
                self.wrapping_sub(o)
            }
            fn mul(self, o: Self) -> Self {
                self.wrapping_mul(o)
            }
            fn neg(self) -> Self {
                self.wrapping_neg()
            }
        }
    };
}

macro_rules! elem_float {
    ($t:ty, $n:literal) => {
        // SAFETY: a primitive IEEE float: no padding, every bit pattern a value (NaNs
        // included), the size and alignment of its dtype.
        unsafe impl Elem for $t {
            const NAME: &'static str = $n;
            const LOWEST: Self = <$t>::NEG_INFINITY;
            const HIGHEST: Self = <$t>::INFINITY;
            fn zero() -> Self {
                0.0
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn add(self, o: Self) -> Self {
                self + o
            }
            fn sub(self, o: Self) -> Self {
                self - o
            }
            fn mul(self, o: Self) -> Self {
                self * o
            }
            fn neg(self) -> Self {
                -self
            }
        }
    };
}

elem_int!(i32, "i32");
elem_int!(i64, "i64");
elem_float!(f32, "f32");
elem_float!(f64, "f64");

/// Floating-point element types (the transcendental ops).
pub trait Float: Elem {
    /// `f(self)`, computed in f64.
    fn map(self, f: fn(f64) -> f64) -> Self;
    /// `self` to the power `o`.
    fn powf(self, o: Self) -> Self;
    /// `self / o`.
    fn div(self, o: Self) -> Self;
}

impl Float for f32 {
    fn map(self, f: fn(f64) -> f64) -> Self {
        // Computed in f64 and rounded once: at least as accurate as the GPU's f32 math.
        f(self as f64) as f32
    }
    fn powf(self, o: Self) -> Self {
        (self as f64).powf(o as f64) as f32
    }
    fn div(self, o: Self) -> Self {
        self / o
    }
}

impl Float for f64 {
    fn map(self, f: fn(f64) -> f64) -> Self {
        f(self)
    }
    fn powf(self, o: Self) -> Self {
        f64::powf(self, o)
    }
    fn div(self, o: Self) -> Self {
        self / o
    }
}

/// The bytes of `elems`, in place.
pub fn as_bytes<T: Elem>(elems: &[T]) -> &[u8] {
    // SAFETY: `T` is plain data without padding (`Elem`'s contract), so every byte of the
    // slice is initialized; the view covers exactly the elements and borrows them.
    unsafe { std::slice::from_raw_parts(elems.as_ptr().cast(), std::mem::size_of_val(elems)) }
}

/// The bytes of `elems`, writable in place.
pub fn as_bytes_mut<T: Elem>(elems: &mut [T]) -> &mut [u8] {
    let len = std::mem::size_of_val(elems);
    // SAFETY: as in `as_bytes`, and every byte pattern written is a valid `T` (`Elem`'s
    // contract); the borrow is exclusive.
    unsafe { std::slice::from_raw_parts_mut(elems.as_mut_ptr().cast(), len) }
}

/// `bytes` as whole elements of `T` (a trailing part of an element is left out), in
/// place; `None` when `bytes` is not aligned for `T`.
pub fn cast<T: Elem>(bytes: &[u8]) -> Option<&[T]> {
    if bytes.as_ptr().align_offset(std::mem::align_of::<T>()) != 0 {
        return None;
    }
    let n = bytes.len() / std::mem::size_of::<T>();
    // SAFETY: aligned (checked), in bounds, and every bit pattern is a valid `T`
    // (`Elem`'s contract); the view borrows the bytes.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), n) })
}

/// `bytes` as whole elements of `T`, writable in place; `None` when not aligned for `T`.
pub fn cast_mut<T: Elem>(bytes: &mut [u8]) -> Option<&mut [T]> {
    if bytes.as_ptr().align_offset(std::mem::align_of::<T>()) != 0 {
        return None;
    }
    let n = bytes.len() / std::mem::size_of::<T>();
    // SAFETY: as in `cast`; the borrow is exclusive.
    Some(unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast(), n) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_and_byte_views_agree() {
        let mut v = [1.5f64, -2.0, 3.25];
        assert_eq!(as_bytes(&v).len(), 24);
        assert_eq!(&as_bytes(&v)[..8], &1.5f64.to_ne_bytes());
        as_bytes_mut(&mut v)[8..16].copy_from_slice(&7.0f64.to_ne_bytes());
        assert_eq!(v, [1.5, 7.0, 3.25]);
        let words = [0x0102_0304_0506_0708i64, -1];
        let bytes = as_bytes(&words);
        assert_eq!(cast::<i64>(bytes), Some(&words[..]));
        assert_eq!(cast::<i32>(bytes).map(<[i32]>::len), Some(4));
        // A trailing part of an element is left out; a misaligned start is refused.
        assert_eq!(cast::<i64>(&bytes[..12]).map(<[i64]>::len), Some(1));
        assert_eq!(cast::<i64>(&bytes[1..9]), None);
        let mut owned = words;
        let b = as_bytes_mut(&mut owned);
        cast_mut::<i32>(b).unwrap()[3] = 0;
        assert_eq!(owned[1], 0x0000_0000_ffff_ffff);
        assert!(cast_mut::<f32>(&mut as_bytes_mut(&mut owned)[2..10]).is_none());
    }
}
