//! A table of objects addressed by index and generation.
//!
//! Every KMCL object the sim hands out (channels, packet objects, delivered packets) lives in a
//! slab. Removing an object bumps the generation of its slot, so a handle kept after the object
//! is gone no longer matches and the sim reports a use after free instead of touching a reused
//! slot. Freed slots are reused, so a long run does not grow the table.
//!
//! A handle carries only 16 bits of generation, so a slot must never pass through the same
//! generation twice: a slot whose generation reached `u16::MAX` is retired when its object is
//! removed (never reused), instead of wrapping around to a generation that stale handles may
//! still carry. A retired slot costs a few bytes per 65,535 reuses of one index.
#![forbid(unsafe_code)]

use crate::handle::MAX_INDEX;

/// Index and generation of a live object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ObjRef {
    /// Slot index.
    pub index: u32,
    /// Generation of the slot when the object was inserted.
    pub generation: u16,
}

#[derive(Debug)]
struct Slot<T> {
    generation: u16,
    value: Option<T>,
}

/// The table.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    live: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Inserts `value`; `None` when the table is full (more objects than a handle can index).
    pub(crate) fn insert(&mut self, value: T) -> Option<ObjRef> {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|i| *i <= MAX_INDEX)?;
                self.slots.push(Slot {
                    generation: 1,
                    value: None,
                });
                i
            }
        };
        let slot = self.slots.get_mut(index as usize)?;
        slot.value = Some(value);
        self.live += 1;
        Some(ObjRef {
            index,
            generation: slot.generation,
        })
    }

    /// The object `r` names, if it is still alive.
    pub(crate) fn get(&self, r: ObjRef) -> Option<&T> {
        let slot = self.slots.get(r.index as usize)?;
        if slot.generation == r.generation {
            slot.value.as_ref()
        } else {
            None
        }
    }

    /// The object `r` names, mutably, if it is still alive.
    pub(crate) fn get_mut(&mut self, r: ObjRef) -> Option<&mut T> {
        let slot = self.slots.get_mut(r.index as usize)?;
        if slot.generation == r.generation {
            slot.value.as_mut()
        } else {
            None
        }
    }

    /// Removes the object `r` names; its handle is dead afterwards.
    pub(crate) fn remove(&mut self, r: ObjRef) -> Option<T> {
        let slot = self.slots.get_mut(r.index as usize)?;
        if slot.generation != r.generation {
            return None;
        }
        let value = slot.value.take()?;
        self.live -= 1;
        // Generations count up from 1 (0 is never used, so a zeroed handle can never match) and
        // never wrap: a slot that used its last generation is retired, left empty and off the
        // free list, so no stale handle can ever match a live object in it again.
        if let Some(next) = slot.generation.checked_add(1) {
            slot.generation = next;
            self.free.push(r.index);
        }
        Some(value)
    }

    /// Number of live objects.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Every live object with its reference.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (ObjRef, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            let index = u32::try_from(i).ok()?;
            s.value.as_ref().map(|v| {
                (
                    ObjRef {
                        index,
                        generation: s.generation,
                    },
                    v,
                )
            })
        })
    }

    /// Number of slots, live or free (the bound of slot indexes).
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The live object in slot `index`, whatever its generation.
    pub(crate) fn at(&self, index: usize) -> Option<(ObjRef, &T)> {
        let s = self.slots.get(index)?;
        let i = u32::try_from(index).ok()?;
        s.value.as_ref().map(|v| {
            (
                ObjRef {
                    index: i,
                    generation: s.generation,
                },
                v,
            )
        })
    }
}

#[cfg(test)]
impl<T> Slab<T> {
    /// Moves the live object `r` to generation `generation` of its slot, as if the slot had
    /// been reused that often (the full walk is slow under Miri).
    fn fast_forward(&mut self, r: ObjRef, generation: u16) -> ObjRef {
        let slot = &mut self.slots[r.index as usize];
        assert!(slot.generation == r.generation && slot.value.is_some());
        slot.generation = generation;
        ObjRef {
            index: r.index,
            generation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_reference_does_not_match_reused_slot() {
        let mut s = Slab::default();
        let a = s.insert(1).unwrap();
        assert_eq!(s.remove(a), Some(1));
        let b = s.insert(2).unwrap();
        assert_eq!(a.index, b.index);
        assert_ne!(a.generation, b.generation);
        assert_eq!(s.get(a), None);
        assert_eq!(s.remove(a), None);
        assert_eq!(s.get(b), Some(&2));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_slot_is_retired_instead_of_wrapping_its_generation() {
        let mut s = Slab::default();
        let first = s.insert(0u32).unwrap();
        assert_eq!(first.generation, 1);
        let mut cur = first;
        // Natively, walk every generation; Miri starts near the end (a full walk takes over a
        // minute there).
        if cfg!(miri) {
            cur = s.fast_forward(first, u16::MAX - 1000);
        }
        let mut last_of_slot = cur;
        // Reuse one slot (LIFO free list) well past the 16-bit generation limit.
        for i in 1..=70_000u32 {
            if cfg!(miri) && i > 2000 {
                break;
            }
            assert_eq!(s.remove(cur), Some(i - 1));
            cur = s.insert(i).unwrap();
            if cur.index == first.index {
                assert!(
                    cur.generation > last_of_slot.generation,
                    "generation wrapped"
                );
                last_of_slot = cur;
            }
        }
        // The slot went through every generation once, then was retired for a new one.
        assert_eq!(last_of_slot.generation, u16::MAX);
        assert_ne!(cur.index, first.index);
        assert_eq!(s.capacity(), 2);
        // Neither the first handle nor the last one of the retired slot resolves any more,
        // even though the live object's generation could otherwise have cycled back.
        assert_eq!(s.get(first), None);
        assert_eq!(s.get(last_of_slot), None);
        assert_eq!(s.remove(last_of_slot), None);
        assert_eq!(s.get(cur), Some(if cfg!(miri) { &2000 } else { &70_000 }));
        assert_eq!(s.len(), 1);
        // A handle of generation 1 for the retired slot matches nothing after 65,536+ reuses.
        let wrapped = ObjRef {
            index: first.index,
            generation: 1,
        };
        assert_eq!(s.get(wrapped), None);
        assert!(s.at(first.index as usize).is_none());
    }
}
