//! Dense storage for tasks: a vector of slots with a free list. A [`TaskId`] is
//! `generation << 32 | slot`, so an id from a forgotten task (a late report from a
//! worker) never aliases the task that reuses its slot.

use rask_proto::TaskId;

/// Tasks by id.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<Option<T>>,
    /// Generation of each slot; bumped when the slot is freed.
    gens: Vec<u32>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

fn split(id: TaskId) -> (u32, usize) {
    ((id.0 >> 32) as u32, (id.0 & 0xffff_ffff) as usize)
}

impl<T> Slab<T> {
    /// Reserves a slot and returns the id the next [`Slab::insert`] must use.
    pub(crate) fn next_id(&mut self) -> TaskId {
        let slot = match self.free.last() {
            Some(&s) => s as usize,
            None => {
                self.slots.push(None);
                self.gens.push(0);
                self.free.push((self.slots.len() - 1) as u32);
                self.slots.len() - 1
            }
        };
        TaskId(((self.gens[slot] as u64) << 32) | slot as u64)
    }

    /// Fills the slot of an id from [`Slab::next_id`].
    pub(crate) fn insert(&mut self, id: TaskId, value: T) {
        let (gen, slot) = split(id);
        assert_eq!(
            self.free.pop(),
            Some(slot as u32),
            "invariant: insert follows next_id"
        );
        debug_assert_eq!(self.gens[slot], gen);
        self.slots[slot] = Some(value);
        self.len += 1;
    }

    pub(crate) fn get(&self, id: &TaskId) -> Option<&T> {
        let (gen, slot) = split(*id);
        match self.gens.get(slot) {
            Some(&g) if g == gen => self.slots[slot].as_ref(),
            _ => None,
        }
    }

    pub(crate) fn get_mut(&mut self, id: &TaskId) -> Option<&mut T> {
        let (gen, slot) = split(*id);
        match self.gens.get(slot) {
            Some(&g) if g == gen => self.slots[slot].as_mut(),
            _ => None,
        }
    }

    pub(crate) fn remove(&mut self, id: &TaskId) -> Option<T> {
        let (gen, slot) = split(*id);
        if self.gens.get(slot) != Some(&gen) {
            return None;
        }
        let value = self.slots[slot].take()?;
        self.gens[slot] = self.gens[slot].wrapping_add(1);
        self.free.push(slot as u32);
        self.len -= 1;
        Some(value)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (TaskId, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.as_ref()
                .map(|t| (TaskId(((self.gens[i] as u64) << 32) | i as u64), t))
        })
    }
}

impl<T> std::ops::Index<&TaskId> for Slab<T> {
    type Output = T;

    fn index(&self, id: &TaskId) -> &T {
        self.get(id).expect("invariant: task exists")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_slots_get_new_generations() {
        let mut s = Slab::default();
        let a = s.next_id();
        s.insert(a, "a");
        let b = s.next_id();
        s.insert(b, "b");
        assert_eq!(s.remove(&a), Some("a"));
        let c = s.next_id();
        s.insert(c, "c");
        assert_ne!(a, c, "a reused slot has a new id");
        assert_eq!(s.get(&a), None, "the old id no longer resolves");
        assert_eq!(s.get_mut(&a), None, "not even to change it");
        assert_eq!(s.remove(&a), None);
        assert_eq!(s[&c], "c");
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
            vec!["c", "b"]
        );
    }
}
