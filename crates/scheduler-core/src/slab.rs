//! Dense storage for tasks: a vector of slots with a free list. A [`TaskId`] is
//! `generation << 32 | slot`, so an id from a forgotten task (a late report from a
//! worker) never aliases the task that reuses its slot.
//!
//! A scheduler restored from its journal puts tasks back at their old ids
//! ([`Slab::insert_at`]) and raises every generation to a floor above any it could have
//! issued before ([`Slab::set_floor`]): ids issued from then on never equal one issued
//! before the restart, even one whose record was lost with the journal's unwritten tail.

use rask_proto::TaskId;

/// Tasks by id.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<Option<T>>,
    /// Generation of each slot; bumped when the slot is freed.
    gens: Vec<u32>,
    /// Slots to reuse, last first. May also name slots filled since by
    /// [`Slab::insert_at`]: those are skipped when reached.
    free: Vec<u32>,
    len: usize,
    /// No generation issued from now on is below this.
    floor: u32,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            len: 0,
            floor: 0,
        }
    }
}

fn split(id: TaskId) -> (u32, usize) {
    ((id.0 >> 32) as u32, (id.0 & 0xffff_ffff) as usize)
}

impl<T> Slab<T> {
    /// Reserves a slot and returns the id the next [`Slab::insert`] must use.
    pub(crate) fn next_id(&mut self) -> TaskId {
        // Slots filled by `insert_at` since they were freed are not free.
        while let Some(&s) = self.free.last() {
            if self.slots[s as usize].is_none() {
                break;
            }
            self.free.pop();
        }
        let slot = match self.free.last() {
            Some(&s) => s as usize,
            None => {
                self.slots.push(None);
                self.gens.push(self.floor);
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

    /// Fills the slot of `id`, an id issued before (a task restored from the journal).
    /// `false`, and nothing changes, when its slot is taken.
    pub(crate) fn insert_at(&mut self, id: TaskId, value: T) -> bool {
        let (gen, slot) = split(id);
        while self.slots.len() <= slot {
            self.slots.push(None);
            self.gens.push(self.floor);
            self.free.push((self.slots.len() - 1) as u32);
        }
        if self.slots[slot].is_some() {
            return false;
        }
        // Its entry in the free list stays, skipped when reached.
        self.gens[slot] = gen;
        self.slots[slot] = Some(value);
        self.len += 1;
        true
    }

    /// Whether the slot of `id` is empty (whatever its generation).
    pub(crate) fn slot_free(&self, id: TaskId) -> bool {
        let (_, slot) = split(id);
        self.slots.get(slot).is_none_or(|s| s.is_none())
    }

    /// The largest generation of any slot.
    pub(crate) fn max_generation(&self) -> u32 {
        self.gens.iter().copied().max().unwrap_or(0)
    }

    /// From now on no id is issued with a generation below `floor`: free slots move up
    /// to it now, filled ones when they are freed.
    pub(crate) fn set_floor(&mut self, floor: u32) {
        self.floor = self.floor.max(floor);
        for (g, s) in self.gens.iter_mut().zip(&self.slots) {
            if s.is_none() && *g < self.floor {
                *g = self.floor;
            }
        }
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
        self.gens[slot] = self.gens[slot].wrapping_add(1).max(self.floor);
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

    fn id(gen: u64, slot: u64) -> TaskId {
        TaskId(gen << 32 | slot)
    }

    #[test]
    fn restored_tasks_keep_their_ids_and_new_ones_never_equal_an_old_one() {
        let mut s = Slab::default();
        // Restored at their old ids, slots out of order, gaps between them.
        assert!(s.insert_at(id(7, 5), "five"));
        assert!(s.insert_at(id(3, 1), "one"));
        assert!(
            !s.insert_at(id(9, 1), "taken"),
            "a filled slot stays as it is"
        );
        assert_eq!((s[&id(7, 5)], s[&id(3, 1)], s.len()), ("five", "one", 2));
        assert!(!s.slot_free(id(9, 1)), "filled, whatever the generation");
        assert!(
            s.slot_free(id(7, 2)) && s.slot_free(id(0, 6)),
            "a gap, and beyond"
        );
        assert_eq!(s.max_generation(), 7);
        s.set_floor(100);
        // New ids fill the gaps and beyond, never below the floor, never a filled slot.
        let mut issued = Vec::new();
        for i in 0..6 {
            let t = s.next_id();
            s.insert(t, "new");
            issued.push(t);
            assert!(t.0 >> 32 >= 100, "id {i}: {t:?} under the floor");
        }
        let mut slots: Vec<u64> = issued.iter().map(|t| t.0 & 0xffff_ffff).collect();
        slots.sort();
        assert_eq!(slots, vec![0, 2, 3, 4, 6, 7], "gaps first, then new slots");
        assert_eq!(s.len(), 8);
        // A restored task freed: its slot comes back at the floor, not at gen + 1.
        assert_eq!(s.remove(&id(3, 1)), Some("one"));
        let t = s.next_id();
        assert_eq!(t, id(100, 1));
        s.insert(t, "again");
        assert_eq!(
            s.get(&id(4, 1)),
            None,
            "what the old id's successor would have been"
        );
    }
}
