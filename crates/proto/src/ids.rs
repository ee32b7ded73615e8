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

/// Hashes ids so that tables keyed by them keep neighbours together.
///
/// A [`TaskId`] is the scheduler's slot with a generation above it, and a worker is given
/// runs of nearby slots (a map's tasks, numbered in order) which it stores, finishes and
/// frees in about that order. Fx hashing scatters them over the whole table, one cache
/// miss per look-up once the table outgrows the caches. This hash keeps an id's low four
/// bits as the low bits of its bucket, so sixteen neighbouring slots share a group of
/// control bytes and neighbouring entries, and mixes the rest (slot and generation) into
/// the bits above and into the top bits the table's tags come from. Strided ids (every
/// 16th slot, say) still spread: only their group index is mixed, and a group holds any
/// of its sixteen positions.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }

    #[inline]
    fn write_u32(&mut self, x: u32) {
        self.0 = x as u64;
    }

    #[inline]
    fn finish(&self) -> u64 {
        let x = self.0;
        let m = (x >> 4).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        ((m ^ (m >> 29)) << 4) | (x & 15)
    }
}

/// Builds [`IdHasher`]s.
pub type IdBuildHasher = std::hash::BuildHasherDefault<IdHasher>;
/// A table keyed by ids, neighbours kept together ([`IdHasher`]).
pub type IdMap<K, V> = std::collections::HashMap<K, V, IdBuildHasher>;
/// A set of ids, neighbours kept together ([`IdHasher`]).
pub type IdSet<K> = std::collections::HashSet<K, IdBuildHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hasher};

    fn h(x: u64) -> u64 {
        IdBuildHasher::default().hash_one(TaskId(x))
    }

    /// Distinct groups of sixteen buckets, in a table of `groups` groups, that `ids` fall in.
    fn groups(ids: impl Iterator<Item = u64>, groups: u64) -> usize {
        let mut seen: Vec<u64> = ids.map(|x| (h(x) >> 4) % groups).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    }

    #[test]
    fn neighbouring_slots_share_a_group_in_order() {
        for base in [0u64, 16, 4096, (7 << 32) | 160] {
            let first = h(base);
            for i in 0..16 {
                assert_eq!(h(base + i), (first & !15) | i, "id {}", base + i);
            }
            assert_ne!(h(base + 16) & !15, first & !15, "the next sixteen move on");
        }
    }

    #[test]
    fn strided_and_generational_ids_spread() {
        // 4,096 ids into 4,096 groups: hashing at random leaves about 2,589 distinct.
        for stride in [16u64, 32, 1024, 1 << 16] {
            let n = groups((0..4096).map(|i| i * stride), 4096);
            assert!(n > 2300, "stride {stride}: {n} groups");
        }
        let n = groups((0..4096u64).map(|g| (g << 32) | 5), 4096);
        assert!(n > 2300, "one slot's generations: {n} groups");
        // The tags a table compares first (the top seven bits) vary too.
        let mut tags: Vec<u64> = (0..4096u64).map(|i| h(i * 16) >> 57).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), 128);
    }

    #[test]
    fn bytes_hash_by_content() {
        let of = |b: &[u8]| {
            let mut s = IdHasher::default();
            s.write(b);
            s.finish()
        };
        assert_eq!(of(b"abc"), of(b"abc"));
        assert_ne!(of(b"abc"), of(b"abd"));
        assert_ne!(of(b"ab"), of(b"ba"));
        // Every pair of bytes hashes apart.
        let mut all: Vec<u64> = (0..=u16::MAX).map(|v| of(&v.to_le_bytes())).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 1 << 16);
    }

    #[test]
    fn worker_ids_hash_apart_and_keep_their_neighbours() {
        let of = |w: u32| IdBuildHasher::default().hash_one(WorkerId(w));
        assert_eq!(of(5) & 15, 5);
        assert_eq!(of(5) & !15, of(6) & !15);
        let mut all: Vec<u64> = (0..4096).map(of).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 4096);
    }

    #[test]
    fn tables_keyed_by_ids_work() {
        let mut m: IdMap<TaskId, u64> = IdMap::default();
        for i in 0..10_000u64 {
            m.insert(TaskId(i * 3), i);
        }
        assert!((0..10_000u64).all(|i| m[&TaskId(i * 3)] == i));
        let s: IdSet<WorkerId> = (0..100).map(WorkerId).collect();
        assert!(s.contains(&WorkerId(99)) && !s.contains(&WorkerId(100)));
    }
}
