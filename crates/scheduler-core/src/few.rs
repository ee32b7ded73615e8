//! [`Few`]: a set of ids that is almost always empty or a single id — who holds a task's
//! data, which clients want it, which tasks read it — kept inline so that a million tasks need no million
//! small heap allocations.

/// Zero or one id inline; more on the heap. Insertion order is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Few<T> {
    #[default]
    Zero,
    One(T),
    /// Two or more (boxed: rare, and it keeps the type 16 bytes for 4-byte ids).
    #[allow(clippy::box_collection)]
    Many(Box<Vec<T>>),
}

impl<T: Copy + PartialEq> Few<T> {
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Few::Zero)
    }

    pub(crate) fn contains(&self, x: &T) -> bool {
        self.as_slice().contains(x)
    }

    pub(crate) fn push(&mut self, x: T) {
        *self = match std::mem::take(self) {
            Few::Zero => Few::One(x),
            Few::One(a) => Few::Many(Box::new(vec![a, x])),
            Few::Many(mut v) => {
                v.push(x);
                Few::Many(v)
            }
        };
    }

    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        *self = match std::mem::take(self) {
            Few::Zero => Few::Zero,
            Few::One(a) if keep(&a) => Few::One(a),
            Few::One(_) => Few::Zero,
            Few::Many(mut v) => {
                v.retain(|x| keep(x));
                match v.len() {
                    0 => Few::Zero,
                    1 => Few::One(v[0]),
                    _ => Few::Many(v),
                }
            }
        };
    }

    pub(crate) fn as_slice(&self) -> &[T] {
        match self {
            Few::Zero => &[],
            Few::One(a) => std::slice::from_ref(a),
            Few::Many(v) => v,
        }
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.as_slice().iter()
    }

    pub(crate) fn to_vec(&self) -> Vec<T> {
        self.as_slice().to_vec()
    }
}

impl<'a, T: Copy + PartialEq> IntoIterator for &'a Few<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_shrinks() {
        let mut f = Few::default();
        assert!(f.is_empty());
        f.push(1u32);
        assert_eq!(f, Few::One(1));
        f.push(2);
        f.push(3);
        assert_eq!(f.to_vec(), vec![1, 2, 3]);
        f.retain(|x| *x != 2);
        assert_eq!(f.to_vec(), vec![1, 3]);
        f.retain(|x| *x == 3);
        assert_eq!(f, Few::One(3));
        assert!(f.contains(&3) && !f.contains(&1));
        f.retain(|_| false);
        assert!(f.is_empty());
    }

    #[test]
    fn retain_keeps_a_single_kept_id_and_empties_a_list_of_dropped_ones() {
        let mut f = Few::default();
        f.push(7u32);
        f.retain(|x| *x == 7);
        assert_eq!(f, Few::One(7));
        f.push(8);
        f.retain(|_| false);
        assert!(f.is_empty());
        assert_eq!(f.as_slice(), &[] as &[u32]);
    }
}
