//! Dense integer ids. They index slab/vec storage in the cores; human names live elsewhere.

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash,
            rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
        )]
        #[rkyv(derive(Debug, PartialEq, Eq, Hash))]
        pub struct $name(pub $inner);

        impl $name {
            /// The id as an index into dense storage.
            #[inline]
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                $name(v)
            }
        }
    };
}

define_id!(
    /// A task, numbered by the scheduler in submission order.
    TaskId(u64)
);
define_id!(
    /// A worker, numbered by the scheduler as it joins (never reused).
    WorkerId(u32)
);
define_id!(
    /// A client connection, numbered by the scheduler as it joins (never reused).
    ClientId(u32)
);
define_id!(
    /// Names the external input that caused a change, for `story()` and logs.
    StimulusId(u64)
);
