//! Encoding of the opaque KMCL handles the emulator hands out.
//!
//! `VMBCHANNEL`, `VMBPACKET` and `VMBPACKETCOMPLETION` are opaque pointers that a driver never
//! dereferences, and the fake `PDEVICE_OBJECT`s of a bus are never dereferenced either. The sim
//! therefore gives out *numbers* shaped like pointers: a tag in the top nibble (non-canonical on
//! x86_64 and aarch64, so no real allocation ever has that address), the object kind, the id of
//! the owning bus, a slot index and a generation. Decoding never touches memory, so a stale or
//! forged handle is detected (generation mismatch, unknown bus) instead of being dereferenced.
#![forbid(unsafe_code)]

/// The top nibble of every sim handle.
const TAG: u64 = 0xA;
/// Bits for the bus id.
const BUS_BITS: u32 = 20;
/// Bits for the slot index.
const INDEX_BITS: u32 = 20;
/// Largest bus id a handle can carry.
pub(crate) const MAX_BUS_ID: u64 = (1 << BUS_BITS) - 1;
/// Largest slot index a handle can carry.
pub(crate) const MAX_INDEX: u32 = (1 << INDEX_BITS) - 1;

/// What a handle refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A fake device object (index 0 = root side, 1 = guest side).
    Device = 1,
    /// A channel (`VMBCHANNEL`).
    Channel = 2,
    /// An outgoing packet object (`VMBPACKET`).
    Packet = 3,
    /// A delivered incoming packet (`VMBPACKETCOMPLETION`).
    Incoming = 4,
}

/// A decoded handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handle {
    /// The object kind.
    pub kind: Kind,
    /// Id of the bus the object lives on.
    pub bus: u64,
    /// Slot index in the bus's table of that kind.
    pub index: u32,
    /// Generation of the slot when the handle was made.
    pub generation: u16,
}

impl Handle {
    /// The pointer-shaped value of the handle.
    pub(crate) fn encode(self) -> usize {
        debug_assert!(self.bus <= MAX_BUS_ID && self.index <= MAX_INDEX);
        let v = (TAG << 60)
            | ((self.kind as u64) << 56)
            | ((self.bus & MAX_BUS_ID) << 36)
            | (u64::from(self.index & MAX_INDEX) << 16)
            | u64::from(self.generation);
        // CAST: the sim only builds for 64-bit targets, so usize holds all 64 bits.
        v as usize
    }

    /// Decodes a pointer-shaped value; `None` when it is not a sim handle of kind `kind`.
    pub(crate) fn decode(value: usize, kind: Kind) -> Option<Handle> {
        // CAST: usize is 64 bits wide on every supported target.
        let v = value as u64;
        if v >> 60 != TAG || (v >> 56) & 0xF != kind as u64 {
            return None;
        }
        Some(Handle {
            kind,
            bus: (v >> 36) & MAX_BUS_ID,
            // CAST: masked to 20 bits.
            index: ((v >> 16) & u64::from(MAX_INDEX)) as u32,
            // CAST: masked to 16 bits.
            generation: (v & 0xFFFF) as u16,
        })
    }
}

/// The bus id carried by `value` if it is a sim handle of any kind (`None` otherwise), to
/// charge a handle of the wrong kind to its bus.
pub(crate) fn bus_of(value: usize) -> Option<u64> {
    // CAST: usize is 64 bits wide on every supported target.
    let v = value as u64;
    (v >> 60 == TAG).then_some((v >> 36) & MAX_BUS_ID)
}

/// The pointer-shaped value `v` as a pointer without provenance: it is never dereferenced,
/// only compared and decoded again (no integer-to-pointer cast involved).
pub(crate) fn to_ptr<T>(v: usize) -> *mut T {
    std::ptr::null_mut::<u8>().wrapping_add(v).cast()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_kind_check() {
        let h = Handle {
            kind: Kind::Packet,
            bus: 77,
            index: 12345,
            generation: 9,
        };
        let v = h.encode();
        assert_eq!(Handle::decode(v, Kind::Packet), Some(h));
        assert_eq!(Handle::decode(v, Kind::Channel), None);
        assert_eq!(Handle::decode(0x1000, Kind::Packet), None);
        assert_eq!(Handle::decode(0, Kind::Channel), None);
        assert_eq!(bus_of(v), Some(77));
        assert_eq!(bus_of(0x1000), None);
        assert_eq!(bus_of(0), None);
    }
}
