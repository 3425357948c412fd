//! GPADLs: guest memory a client shares with the server of its channel.
//!
//! A GPADL (guest physical address descriptor list) describes a buffer of the guest to the
//! host. The client creates it on an open channel (`VmbChannelCreateGpadlFromBuffer` or
//! `VmbChannelCreateGpadlFromMdl`); KMCL locks the pages and returns a 32-bit
//! [`GpadlHandle`] once the server has acknowledged the description. The client sends that
//! number to the server in a message of its own protocol, and the server maps the GPADL
//! (`VmbChannelMapGpadl`) to reach the pages, unmapping it (`VmbChannelUnmapGpadl`) when done.
//! The client deletes the GPADL (`VmbChannelDeleteGpadl`), which waits while the server still
//! has it mapped. KMCL requires every GPADL of a channel to be deleted by the end of the
//! channel's closed callback.
//!
//! # Client: GPADLs live in the handler
//!
//! A channel closes when the peer says so (a rescind, a crashed host), not only when the driver
//! disables it, so a GPADL held outside the handler could outlive the closed callback. Here a
//! GPADL therefore lives in a [`GpadlCell`] that is a field of the channel's
//! [`Handler`]:
//!
//! * [`GpadlCell::create`] and [`GpadlCell::create_from_mdl`] take the [`OpenView`] of a
//!   callback, so a GPADL can only be made while the channel is open (from `opened` on), and
//!   they refuse a cell that is not inside the channel's slot ([`Error::GpadlCellOutsideSlot`]),
//!   so the cell lives exactly as long as the channel can call back.
//! * The closed trampoline deletes every GPADL still in a cell of the handler right after
//!   [`Handler::closed`] returns (and the opened trampoline does the
//!   same when the handler refuses the open, which KMCL follows with no closed callback). A
//!   handler may delete earlier with [`GpadlCell::delete`] or [`GpadlCell::release`].
//! * The cell borrows the buffer (or the MDL) for its own lifetime `'b`, so the memory stays
//!   valid and in place (a borrowed value cannot move) for as long as it may be shared;
//!   dropping the buffer first does not compile (compile-fail test `gpadl_buffer_dropped_early`).
//!
//! A [`SharedBuffer`] is the memory to share: page aligned, and accessed only through
//! [`SharedMemory`], because the server can write it at any time (even through a read-only
//! GPADL: KMCL's read-only flag is a hint for snapshots, not a protection).
//!
//! # Server: mappings borrow the channel
//!
//! [`Channel::map_gpadl`](super::Channel::map_gpadl) (and the same on the [`OpenView`] of a
//! server callback) maps a GPADL for writing, [`map_gpadl_read_only`](super::Channel::map_gpadl_read_only)
//! for reading. The [`GpadlMapping`] borrows the channel (or the callback's view), so it cannot
//! outlive it (compile-fail test `gpadl_mapping_outlives_channel`), and unmaps on drop. The
//! access is a type parameter: only a [`ReadWrite`] mapping's memory has
//! [`write`](SharedMemory::write). A write mapping of a read-only GPADL is refused with
//! [`Error::GpadlReadOnly`], and a second mapping of a GPADL already mapped on the same channel
//! with [`Error::GpadlAlreadyMapped`] before KMCL is called (KMCL allows one mapping per GPADL
//! at a time; the check is a process-wide table of at most [`MAX_MAPPINGS`] mappings).
//!
//! The mapped MDL describes physical pages only. A driver maps it into system space itself
//! (`MmGetSystemAddressForMdlSafe` on [`GpadlMapping::as_raw`]) and wraps the address with the
//! `unsafe` [`GpadlMapping::memory`] to read and write it.
//!
//! # Reading shared memory
//!
//! The other partition can change shared bytes at any moment, so no `&[u8]` ever covers them:
//! [`SharedMemory::read`] and [`SharedMemory::read_value`] copy the bytes out with volatile
//! reads, and a driver validates the copy, never the shared memory itself.
//!
//! # IRQL
//!
//! Creating and deleting a GPADL waits for the peer: PASSIVE_LEVEL, checked
//! ([`Error::IrqlTooHigh`]). The state callbacks run at PASSIVE_LEVEL; `process_packet` may not.
//!
//! # Examples
//!
//! A VSC that shares a page from `opened` and a VSP that maps it and writes into it; closing
//! the channel deletes the GPADL on its own:
//!
//! ```
//! use core::pin::pin;
//! use vmbus_kmcl::channel::gpadl::{GpadlCell, GpadlFlags, SharedBuffer};
//! use vmbus_kmcl::channel::{ChannelSlot, Client, ClientBuilder, Handler, OpenView, Server};
//! use vmbus_kmcl::dispatch::{ChannelBackend, Linked};
//! use vmbus_kmcl::packet::IncomingPacket;
//! use vmbus_kmcl::{guid, DeviceRef, Result};
//!
//! struct Vsc<'b> { page: &'b SharedBuffer<4096>, gpadl: GpadlCell<'b> }
//!
//! impl<'b, K: ChannelBackend> Handler<Client, K> for Vsc<'b> {
//!     fn opened(&self, channel: &OpenView<'_, Client, K>) -> Result<()> {
//!         let handle = self.gpadl.create(channel, self.page, GpadlFlags::empty())?;
//!         // ... send `handle.to_raw()` to the server in a message of the protocol.
//!         let _ = handle;
//!         Ok(())
//!     }
//!     fn process_packet(&self, _: &OpenView<'_, Client, K>, packet: IncomingPacket<'_, K>) {
//!         packet.complete_empty();
//!     }
//! }
//!
//! struct Vsp;
//! impl<K: ChannelBackend> Handler<Server, K> for Vsp {
//!     fn process_packet(&self, _: &OpenView<'_, Server, K>, packet: IncomingPacket<'_, K>) {
//!         packet.complete_empty();
//!     }
//! }
//!
//! let bus = vmbus_kmcl_sim::Bus::new();
//! // SAFETY: the sim's device objects live as long as the bus.
//! let root = unsafe { DeviceRef::from_raw(core::ptr::NonNull::new(bus.root_device()).unwrap()) };
//! // SAFETY: as above.
//! let guest = unsafe { DeviceRef::from_raw(core::ptr::NonNull::new(bus.guest_device()).unwrap()) };
//! let id = guid!("8f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b");
//!
//! // A `'static` buffer: `ChannelSlot::new` takes `'static` handlers (a borrowing one goes
//! // through `ChannelSlot::scope`).
//! static PAGE: SharedBuffer<4096> = SharedBuffer::new();
//! let mut vsp_slot = pin!(ChannelSlot::new(root, Linked, Vsp));
//! let mut vsp = vmbus_kmcl::channel::ServerBuilder::allocate(vsp_slot.as_mut())?;
//! vsp.set_interface_id(id, id)?;
//! let vsp = vsp.enable()?;
//! vsp.start();
//! let mut vsc_slot = pin!(ChannelSlot::new(guest, Linked, Vsc { page: &PAGE, gpadl: GpadlCell::new() }));
//! let mut vsc = ClientBuilder::allocate(vsc_slot.as_mut())?;
//! vsc.set_target(id, None)?;
//! let vsc = vsc.enable()?;
//! bus.run_until_idle(); // opened: the GPADL exists
//!
//! let handle = vsc.handler().gpadl.handle().expect("made in opened");
//! let mapping = vsp.map_gpadl(handle)?;
//! // The sim hands out MDLs whose bytes it can address; a driver maps the MDL itself.
//! // SAFETY: the sim's MDL of a live mapping; nothing else uses the slice.
//! let bytes = unsafe { vmbus_kmcl_sim::mdl_bytes(mapping.as_raw()) }.unwrap();
//! let address = core::ptr::NonNull::new(bytes.as_mut_ptr()).unwrap();
//! // SAFETY: `address` maps the GPADL's 4096 bytes while the mapping lives.
//! let memory = unsafe { mapping.memory(address, 4096) };
//! memory.write(8, b"hello")?;
//! drop(mapping); // VmbChannelUnmapGpadl
//!
//! let mut copy = [0u8; 5];
//! PAGE.memory().read(8, &mut copy)?;
//! assert_eq!(&copy, b"hello");
//! drop(vsc); // closed: the trampoline deletes the GPADL
//! assert!(vsc_slot.handler().gpadl.handle().is_none());
//! drop(vsp);
//! bus.assert_no_leaks();
//! # Ok::<(), vmbus_kmcl::Error>(())
//! ```

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::num::NonZeroU32;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use vmbus_kmcl_sys::{
    MDL, PMDL, UINT32, VMBCHANNEL, VMBCHANNEL__, VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY,
};
use zerocopy::{FromBytes, IntoBytes};

use super::handler::{OpenView, StoppedView};
use super::ops::ChannelOps;
use super::{Channel, Client, Handler, Server};
use crate::dispatch::{ChannelBackend, Kmcl, KmclServer};
use crate::error::{Error, Result};
use crate::status::NtStatus;

bitflags::bitflags! {
    /// Options of a GPADL (`VMBUS_CHANNEL_GPADL_FLAG_*`), for [`GpadlCell::create`] and
    /// [`GpadlCell::create_from_mdl`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    #[repr(transparent)]
    pub struct GpadlFlags: u32 {
        /// `VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY`: the server only reads the buffer. KMCL then
        /// refuses the server's write mappings ([`Error::GpadlReadOnly`]); it is a hint for
        /// snapshots and migration, not a protection: the server can still write.
        #[doc(alias = "VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY")]
        const READ_ONLY = VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY;
    }
}

/// The number KMCL gives a GPADL: what the client sends to the server, and what the server
/// maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct GpadlHandle(u32);

impl GpadlHandle {
    /// The handle a client sent, as it appears in a message.
    pub const fn from_raw(handle: u32) -> Self {
        Self(handle)
    }

    /// The number, to put in a message.
    pub const fn to_raw(self) -> u32 {
        self.0
    }
}

// ----- Access -----

mod sealed {
    pub trait Sealed {}
}

/// How a mapping or a view may touch shared memory: [`ReadOnly`] or [`ReadWrite`]. Sealed.
pub trait Access: sealed::Sealed + 'static {
    /// Whether only reading is allowed.
    const READ_ONLY: bool;
}

/// Reads only: a [`GpadlMapping`] made with `VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY`.
#[derive(Debug)]
pub enum ReadOnly {}

/// Reads and writes.
#[derive(Debug)]
pub enum ReadWrite {}

impl sealed::Sealed for ReadOnly {}
impl sealed::Sealed for ReadWrite {}
impl Access for ReadOnly {
    const READ_ONLY: bool = true;
}
impl Access for ReadWrite {
    const READ_ONLY: bool = false;
}

// ----- Shared memory -----

/// Bytes that another partition can read and write at any time: a view of a [`SharedBuffer`]
/// or of a [`GpadlMapping`]'s pages, with access `A`.
///
/// No reference to the bytes is ever made. Reads copy them out with volatile reads (the other
/// side may change them meanwhile, so validate the copy), writes store them with volatile
/// writes.
///
/// # Invariants
///
/// `base` is valid for reads (and, for [`ReadWrite`], writes) of `len` bytes for `'m`, and is
/// only accessed through volatile operations of this type.
pub struct SharedMemory<'m, A: Access> {
    base: NonNull<u8>,
    len: usize,
    _memory: PhantomData<(&'m UnsafeCell<[u8]>, A)>,
}

impl<A: Access> SharedMemory<'_, A> {
    /// The number of bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The range `offset..offset + count`, if it is inside the memory.
    fn range(&self, offset: usize, count: usize) -> Result<()> {
        match offset.checked_add(count) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::OutOfRange),
        }
    }

    /// Copies `out.len()` bytes from `offset` into `out`, one volatile read per byte.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] when the range does not fit in the memory; nothing is read then.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.range(offset, out.len())?;
        for (index, byte) in out.iter_mut().enumerate() {
            let at = self.base.as_ptr().wrapping_add(offset + index);
            // SAFETY: `offset + index < len` (checked above), so `at` is inside the memory the
            // invariant makes readable; a volatile read of a `u8` has no alignment need and
            // never assumes the value is stable.
            *byte = unsafe { at.read_volatile() };
        }
        Ok(())
    }

    /// Copies a `T` out of the bytes at `offset` (any alignment), for a driver's message or
    /// descriptor type: every bit pattern is a valid `T` (`FromBytes`), so the copy needs no
    /// check before it is a value. Validate its fields afterwards.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] when `size_of::<T>()` bytes at `offset` do not fit.
    pub fn read_value<T: FromBytes + IntoBytes>(&self, offset: usize) -> Result<T> {
        let mut value = T::new_zeroed();
        self.read(offset, value.as_mut_bytes())?;
        Ok(value)
    }
}

impl SharedMemory<'_, ReadWrite> {
    /// Stores `data` at `offset`, one volatile write per byte.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] when the range does not fit; nothing is written then.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.range(offset, data.len())?;
        for (index, byte) in data.iter().enumerate() {
            let at = self.base.as_ptr().wrapping_add(offset + index);
            // SAFETY: `at` is inside the memory (checked above), which the invariant makes
            // writable for a `ReadWrite` view; a volatile `u8` store has no alignment need.
            unsafe { at.write_volatile(*byte) };
        }
        Ok(())
    }
}

impl<A: Access> core::fmt::Debug for SharedMemory<'_, A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SharedMemory")
            .field("len", &self.len)
            .field("read_only", &A::READ_ONLY)
            .finish()
    }
}

// SAFETY: the view only makes volatile accesses through its pointer, which any thread may do
// (the other partition does so concurrently anyway).
unsafe impl<A: Access> Send for SharedMemory<'_, A> {}
// SAFETY: as above; shared use makes the same volatile accesses.
unsafe impl<A: Access> Sync for SharedMemory<'_, A> {}

/// `N` bytes of memory to share through a GPADL: page aligned (4096 bytes), zeroed at first,
/// read and written only through [`SharedBuffer::memory`].
///
/// It holds its bytes in an `UnsafeCell`, so the server writing them while the driver holds
/// `&SharedBuffer` is no breach of Rust's aliasing rules. Keep it in nonpaged memory (a static,
/// the device extension, a nonpaged pool allocation): KMCL locks the pages of a buffer GPADL,
/// but the kernel stack of a thread that waits can be paged out.
///
/// # Examples
///
/// ```
/// use vmbus_kmcl::channel::gpadl::SharedBuffer;
///
/// static RING: SharedBuffer<8192> = SharedBuffer::new();
/// RING.memory().write(0, &7u32.to_le_bytes())?;
/// assert_eq!(RING.memory().read_value::<u32>(0)?, 7);
/// assert!(RING.memory().read_value::<u32>(8190).is_err());
/// # Ok::<(), vmbus_kmcl::Error>(())
/// ```
#[repr(C, align(4096))]
pub struct SharedBuffer<const N: usize> {
    bytes: UnsafeCell<[u8; N]>,
}

impl<const N: usize> SharedBuffer<N> {
    /// A zeroed buffer.
    pub const fn new() -> Self {
        Self {
            bytes: UnsafeCell::new([0; N]),
        }
    }

    /// The buffer's bytes, readable and writable.
    pub fn memory(&self) -> SharedMemory<'_, ReadWrite> {
        // INVARIANT: the cell's `N` bytes live as long as `&self`, and this crate touches them
        // only through `SharedMemory`'s volatile accesses.
        SharedMemory {
            // SAFETY: a pointer into `self` is never NULL.
            base: unsafe { NonNull::new_unchecked(self.bytes.get().cast::<u8>()) },
            len: N,
            _memory: PhantomData,
        }
    }
}

impl<const N: usize> Default for SharedBuffer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::fmt::Debug for SharedBuffer<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SharedBuffer").field("len", &N).finish()
    }
}

// SAFETY: the bytes are only reached through `SharedMemory`'s volatile accesses, which may
// happen from any thread (the other partition accesses them concurrently anyway).
unsafe impl<const N: usize> Sync for SharedBuffer<N> {}

/// A borrowed MDL chain (linked through `MDL.Next`) whose pages a GPADL may describe.
///
/// # Invariants
///
/// `mdl` is a valid MDL chain, and it and the pages it describes stay valid, locked and
/// unchanged in layout for `'b`.
#[derive(Debug, Clone, Copy)]
pub struct MdlRef<'b> {
    mdl: NonNull<MDL>,
    _memory: PhantomData<&'b MDL>,
}

impl MdlRef<'_> {
    /// Borrows an MDL chain.
    ///
    /// # Safety
    ///
    /// `mdl` is a valid MDL chain describing locked (or nonpaged) pages, and the MDLs and their
    /// pages stay valid, locked and unchanged for the chosen lifetime, and in any case until
    /// every GPADL made from them is deleted (a leaked [`ChannelSlot`](super::ChannelSlot)
    /// keeps its GPADLs after the lifetime has ended). The pages may be written
    /// by the other partition while a GPADL shares them: access them only as shared memory.
    pub unsafe fn from_raw(mdl: NonNull<MDL>) -> Self {
        // INVARIANT: the caller's guarantee.
        Self {
            mdl,
            _memory: PhantomData,
        }
    }

    /// The MDL pointer.
    pub fn as_raw(&self) -> PMDL {
        self.mdl.as_ptr()
    }
}

// SAFETY: the value is a description of memory that KMCL reaches by itself; this crate only
// passes the pointer on, from whichever thread.
unsafe impl Send for MdlRef<'_> {}
// SAFETY: as above; shared use only copies the pointer.
unsafe impl Sync for MdlRef<'_> {}

// ----- Client: cells and the GPADL table -----

/// The most GPADLs that client channels may hold at once in the driver (all channels
/// together).
pub const MAX_GPADLS: usize = 256;

const FREE: u8 = 0;
const BUSY: u8 = 1;
const LIVE: u8 = 2;

/// A cell's reference while a creation through it runs.
const CELL_BUSY: u64 = u64::MAX;

/// One GPADL a client channel holds: the table's own memory, which no safe code outside this
/// module reaches, so the closed trampoline never follows anything a driver can overwrite.
struct GpadlEntry {
    state: AtomicU8,
    /// The ticket of the entry's GPADL: drawn from [`NEXT_TICKET`] when it is made, 0 from the
    /// moment the entry is freed, so that a cell naming an earlier GPADL of the entry no
    /// longer matches.
    ticket: AtomicU64,
    /// The address of the channel the GPADL was made on.
    channel: AtomicUsize,
    handle: AtomicU32,
}

/// Every GPADL that client channels hold. A [`GpadlCell`] names its GPADL by ticket, a number
/// that is looked up in the table, never followed as a pointer.
static GPADLS: [GpadlEntry; MAX_GPADLS] = {
    #[allow(
        clippy::declare_interior_mutable_const,
        reason = "the constant only initialises the table's entries"
    )]
    const UNUSED: GpadlEntry = GpadlEntry {
        state: AtomicU8::new(FREE),
        ticket: AtomicU64::new(0),
        channel: AtomicUsize::new(0),
        handle: AtomicU32::new(0),
    };
    [UNUSED; MAX_GPADLS]
};

/// The ticket of the next GPADL made: one number per GPADL for the life of the driver, so a
/// cell can only ever name the GPADL it made. A ticket repeats (or becomes 0 or [`CELL_BUSY`])
/// only after the counter wraps, 2^64 − 1 GPADL creations after the driver loaded; a stale
/// cell could then name a newer GPADL (of its own channel only: deletion also compares the
/// channel), or look empty or busy. It is a plain counter, lock-free on the 64-bit targets
/// the crate builds for.
static NEXT_TICKET: AtomicU64 = AtomicU64::new(1);

/// The entry whose GPADL has ticket `ticket`, if one has (0 and [`CELL_BUSY`] name none).
fn entry_of(ticket: u64) -> Option<&'static GpadlEntry> {
    if ticket == 0 || ticket == CELL_BUSY {
        return None;
    }
    GPADLS
        .iter()
        .find(|entry| entry.ticket.load(Ordering::Relaxed) == ticket)
}

/// Deletes the GPADL of `entry` if it is live on `channel` (and, given `ticket`, still the
/// GPADL of that ticket); returns whether it did.
fn delete_entry<K: Kmcl>(
    entry: &GpadlEntry,
    ticket: Option<u64>,
    kmcl: K,
    channel: VMBCHANNEL,
) -> bool {
    // CAST: addresses only, compared.
    let ours = |entry: &GpadlEntry| {
        entry.channel.load(Ordering::Relaxed) == channel as usize
            && ticket.is_none_or(|t| entry.ticket.load(Ordering::Relaxed) == t)
    };
    if !ours(entry)
        || entry
            .state
            .compare_exchange(LIVE, BUSY, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
    {
        return false;
    }
    // Checked again now that the entry is ours: it may have been freed and reused between.
    if !ours(entry) {
        entry.state.store(LIVE, Ordering::Release);
        return false;
    }
    let handle = entry.handle.load(Ordering::Relaxed);
    // SAFETY: a live entry of `channel` holds a GPADL made on it, and `channel` is live (the
    // caller holds a view of it); the LIVE to BUSY exchange above makes this the only delete.
    unsafe { kmcl.channel_delete_gpadl(channel, handle) };
    entry.ticket.store(0, Ordering::Relaxed);
    entry.state.store(FREE, Ordering::Release);
    true
}

/// What a channel's slot keeps for its GPADLs: the size of its shared part, which a cell must
/// lie in (checked by [`GpadlCell::create`]). The GPADLs themselves are in a table of this
/// module, never in memory a handler can overwrite.
pub(crate) struct GpadlList {
    size: usize,
}

impl GpadlList {
    /// The part at the start of a shared part of `size` bytes.
    pub(crate) const fn new(size: usize) -> Self {
        Self { size }
    }

    /// Deletes every GPADL the channel still holds. PASSIVE_LEVEL, from the callback that ends
    /// the channel's open period (closed, or a refused opened).
    pub(crate) fn release_all<R, K: Kmcl + Copy>(&self, channel: &ChannelOps<R, K>) {
        for entry in &GPADLS {
            delete_entry(entry, None, channel.kmcl(), channel.raw());
        }
    }
}

/// One GPADL of a client channel, kept in the channel's [`Handler`]: empty, or holding a GPADL
/// of memory borrowed for `'b`.
///
/// Put it in the handler (directly, not behind a pointer: a cell outside the channel's slot is
/// refused); create the GPADL from a callback's [`OpenView`]; it is deleted by
/// [`delete`](Self::delete), [`release`](Self::release), or at the latest by the closed
/// trampoline after [`Handler::closed`] returns. See the [module docs](self).
///
/// A cell holds one GPADL at a time; it can hold another after the first is deleted, also on
/// a later channel of the same slot. The GPADL is recorded in a table of at most
/// [`MAX_GPADLS`] entries that the closed trampoline walks; the cell only holds the GPADL's
/// ticket, a number unique to it among the first 2^64 − 1 GPADLs the driver makes, so a cell
/// that is dropped or overwritten while it holds a GPADL leaves the cleanup intact, and a cell
/// whose GPADL was deleted without it (by the closed trampoline) never names the GPADL that
/// reuses the entry.
/// `'b` is invariant, so a cell cannot be reborrowed with a shorter-lived buffer.
pub struct GpadlCell<'b> {
    /// The ticket of the GPADL (see `NEXT_TICKET`), 0 for none, `CELL_BUSY` during a creation.
    entry: AtomicU64,
    _memory: PhantomData<fn(&'b ()) -> &'b ()>,
}

impl<'b> GpadlCell<'b> {
    /// An empty cell.
    pub const fn new() -> Self {
        Self {
            entry: AtomicU64::new(0),
            _memory: PhantomData,
        }
    }

    /// The live entry the cell names.
    fn live(&self) -> Option<&'static GpadlEntry> {
        let ticket = self.entry.load(Ordering::Acquire);
        let entry = entry_of(ticket)?;
        (entry.state.load(Ordering::Acquire) == LIVE
            && entry.ticket.load(Ordering::Relaxed) == ticket)
            .then_some(entry)
    }

    /// The GPADL the cell holds, if any.
    pub fn handle(&self) -> Option<GpadlHandle> {
        self.live()
            .map(|entry| GpadlHandle(entry.handle.load(Ordering::Relaxed)))
    }

    /// Checks that this cell lies inside the slot of `channel`.
    fn check_inside<K: ChannelBackend>(&self, channel: VMBCHANNEL) -> Result<()> {
        // SAFETY: the live channel of a callback view, allocated through a `K` after
        // `prepare` (the builder's order).
        let shared = unsafe { <K as crate::dispatch::sealed::Sealed>::pointer_of(channel) };
        // CAST: the channel pointer is the slot's `Shared`, which is `repr(C)` with its
        // `GpadlList` first.
        let list = shared.cast::<GpadlList>().cast_const();
        // SAFETY: the list lives at the start of the slot's shared part, pinned for as long as
        // the channel, whose callback is running.
        let list = unsafe { &*list };
        // CAST: addresses only, compared and never turned back into pointers.
        let start = list as *const GpadlList as usize;
        // CAST: as above.
        let here = self as *const Self as usize;
        let inside = here >= start
            && here
                .checked_add(core::mem::size_of::<Self>())
                .is_some_and(|end| end <= start.saturating_add(list.size));
        if inside {
            Ok(())
        } else {
            Err(Error::GpadlCellOutsideSlot)
        }
    }

    /// Claims the empty cell, and a free entry of the table, for a creation on `channel`.
    fn claim<K: ChannelBackend>(&self, channel: VMBCHANNEL) -> Result<usize> {
        crate::irql::require_at_most(crate::irql::PASSIVE_LEVEL)?;
        self.check_inside::<K>(channel)?;
        let before = self.entry.load(Ordering::Acquire);
        if before == CELL_BUSY || self.live().is_some() {
            return Err(Error::GpadlCellInUse);
        }
        self.entry
            .compare_exchange(before, CELL_BUSY, Ordering::Acquire, Ordering::Relaxed)
            .map_err(|_| Error::GpadlCellInUse)?;
        let free = GPADLS.iter().position(|entry| {
            entry
                .state
                .compare_exchange(FREE, BUSY, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        });
        let Some(index) = free else {
            self.entry.store(0, Ordering::Release);
            return Err(Error::TooManyGpadls);
        };
        Ok(index)
    }

    /// Records the outcome of a creation on `channel` the cell and entry `index` were claimed
    /// for.
    fn finish(
        &self,
        index: usize,
        channel: VMBCHANNEL,
        status: vmbus_kmcl_sys::NTSTATUS,
        handle: UINT32,
    ) -> Result<GpadlHandle> {
        let entry = &GPADLS[index];
        if status != NtStatus::SUCCESS.to_raw() {
            entry.state.store(FREE, Ordering::Release);
            self.entry.store(0, Ordering::Release);
            return Err(Error::from_failed_call(status));
        }
        entry.handle.store(handle, Ordering::Relaxed);
        // CAST: the address only, compared by `delete_entry`.
        entry.channel.store(channel as usize, Ordering::Relaxed);
        let ticket = NEXT_TICKET.fetch_add(1, Ordering::Relaxed);
        entry.ticket.store(ticket, Ordering::Relaxed);
        entry.state.store(LIVE, Ordering::Release);
        self.entry.store(ticket, Ordering::Release);
        Ok(GpadlHandle(handle))
    }

    /// Shares `buffer` with the server (`VmbChannelCreateGpadlFromBuffer`) and keeps the GPADL
    /// in this cell; returns its handle, for the server. Waits for the server's
    /// acknowledgement. PASSIVE_LEVEL (checked).
    ///
    /// # Errors
    ///
    /// [`Error::IrqlTooHigh`] above PASSIVE_LEVEL, [`Error::GpadlCellOutsideSlot`] for a cell
    /// that is not inside the channel's slot, [`Error::GpadlCellInUse`] when the cell holds a
    /// GPADL, [`Error::TooManyGpadls`] when [`MAX_GPADLS`] exist, [`Error::LengthTooLarge`] for a buffer past `u32::MAX` bytes, all before any
    /// call; the failing status of the call.
    #[doc(alias = "VmbChannelCreateGpadlFromBuffer")]
    pub fn create<const N: usize, K: ChannelBackend>(
        &self,
        channel: &OpenView<'_, Client, K>,
        buffer: &'b SharedBuffer<N>,
        flags: GpadlFlags,
    ) -> Result<GpadlHandle> {
        let length = u32::try_from(N).map_err(|_| Error::LengthTooLarge)?;
        let ops = &channel.ops;
        let index = self.claim::<K>(ops.raw())?;
        let mut handle: UINT32 = 0;
        // SAFETY:
        // - a live client channel, open (a callback with an open view runs), PASSIVE_LEVEL
        //   (checked by `claim`);
        // - the buffer is `length` bytes behind an `UnsafeCell`, borrowed for `'b`, which
        //   outlives the cell; the cell lies inside the channel's slot (checked by `claim`),
        //   and the GPADL is deleted no later than the closed callback, before the slot goes;
        // - `handle` is writable.
        let status = unsafe {
            ops.kmcl().channel_create_gpadl_from_buffer(
                ops.raw(),
                flags.bits(),
                buffer.bytes.get().cast(),
                length,
                &mut handle,
            )
        };
        self.finish(index, ops.raw(), status, handle)
    }

    /// Shares the pages of `mdl` from byte `offset` on, `length` bytes of them or (`None`) up
    /// to the end of the chain (`VmbChannelCreateGpadlFromMdl`), and keeps the GPADL in this
    /// cell. PASSIVE_LEVEL (checked).
    ///
    /// # Errors
    ///
    /// As for [`create`](Self::create) (without the length check); the failing status of the
    /// call.
    #[doc(alias = "VmbChannelCreateGpadlFromMdl")]
    pub fn create_from_mdl<K: ChannelBackend>(
        &self,
        channel: &OpenView<'_, Client, K>,
        mdl: MdlRef<'b>,
        offset: u32,
        length: Option<NonZeroU32>,
        flags: GpadlFlags,
    ) -> Result<GpadlHandle> {
        let ops = &channel.ops;
        let index = self.claim::<K>(ops.raw())?;
        let mut handle: UINT32 = 0;
        // SAFETY: as in `create`, with the MDL chain and its pages valid for `'b` (`MdlRef`'s
        // invariant); a length of 0 asks for the rest of the chain.
        let status = unsafe {
            ops.kmcl().channel_create_gpadl_from_mdl(
                ops.raw(),
                flags.bits(),
                mdl.as_raw(),
                offset,
                length.map_or(0, NonZeroU32::get),
                &mut handle,
            )
        };
        self.finish(index, ops.raw(), status, handle)
    }

    /// Deletes the cell's GPADL (`VmbChannelDeleteGpadl`), waiting while the server has it
    /// mapped; returns whether the cell held one. PASSIVE_LEVEL (checked).
    ///
    /// # Errors
    ///
    /// [`Error::IrqlTooHigh`] above PASSIVE_LEVEL (nothing is deleted then).
    #[doc(alias = "VmbChannelDeleteGpadl")]
    pub fn delete<K: ChannelBackend>(&self, channel: &OpenView<'_, Client, K>) -> Result<bool> {
        crate::irql::require_at_most(crate::irql::PASSIVE_LEVEL)?;
        Ok(self.delete_on(&channel.ops))
    }

    /// Deletes the cell's GPADL from the suspend or closed callback (`VmbChannelDeleteGpadl`;
    /// both run at PASSIVE_LEVEL); returns whether the cell held one. The closed trampoline
    /// does this for every cell after [`Handler::closed`] returns.
    #[doc(alias = "VmbChannelDeleteGpadl")]
    pub fn release<K: ChannelBackend>(&self, channel: &StoppedView<'_, Client, K>) -> bool {
        self.delete_on(&channel.ops)
    }

    fn delete_on<K: ChannelBackend>(&self, ops: &ChannelOps<Client, K>) -> bool {
        // Only the channel the GPADL was made on deletes it (`delete_entry` compares).
        let ticket = self.entry.load(Ordering::Acquire);
        let Some(entry) = entry_of(ticket) else {
            return false;
        };
        let deleted = delete_entry(entry, Some(ticket), ops.kmcl(), ops.raw());
        if deleted {
            // The cell is empty again, unless a creation through it has begun meanwhile.
            let _ = self
                .entry
                .compare_exchange(ticket, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
        deleted
    }
}

impl Default for GpadlCell<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for GpadlCell<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GpadlCell")
            .field("handle", &self.handle())
            .finish()
    }
}

// ----- Server: mappings -----

/// The most GPADL mappings that may exist at once in the driver (all channels together).
pub const MAX_MAPPINGS: usize = 256;

const SLOT_FREE: u8 = 0;
const SLOT_WRITING: u8 = 1;
const SLOT_PUBLISHED: u8 = 2;

/// One mapped (channel, GPADL) pair.
struct MappedSlot {
    state: AtomicU8,
    channel: AtomicUsize,
    handle: AtomicU32,
}

/// Every mapping that exists, so that a GPADL is never mapped twice on one channel.
static MAPPED: [MappedSlot; MAX_MAPPINGS] = {
    #[allow(
        clippy::declare_interior_mutable_const,
        reason = "the constant only initialises the table's entries"
    )]
    const FREE: MappedSlot = MappedSlot {
        state: AtomicU8::new(SLOT_FREE),
        channel: AtomicUsize::new(0),
        handle: AtomicU32::new(0),
    };
    [FREE; MAX_MAPPINGS]
};

/// Records that `handle` is being mapped on `channel`: the index of its entry, or an error if
/// it is mapped already (or being mapped by another thread at the same moment) or the table is
/// full. Lock-free: an entry is claimed, filled, published, then the others are checked.
fn record_mapping(channel: usize, handle: u32) -> Result<usize> {
    let index = MAPPED
        .iter()
        .position(|slot| {
            slot.state
                .compare_exchange(
                    SLOT_FREE,
                    SLOT_WRITING,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
        })
        .ok_or(Error::TooManyMappings)?;
    let mine = &MAPPED[index];
    mine.channel.store(channel, Ordering::Relaxed);
    mine.handle.store(handle, Ordering::Relaxed);
    // Publish, then look (both sequentially consistent): of two threads recording the same
    // pair at once, at least one sees the other.
    mine.state.store(SLOT_PUBLISHED, Ordering::SeqCst);
    let taken = MAPPED.iter().enumerate().any(|(other, slot)| {
        other != index
            && slot.state.load(Ordering::SeqCst) == SLOT_PUBLISHED
            && slot.channel.load(Ordering::Relaxed) == channel
            && slot.handle.load(Ordering::Relaxed) == handle
    });
    if taken {
        mine.state.store(SLOT_FREE, Ordering::Release);
        return Err(Error::GpadlAlreadyMapped);
    }
    Ok(index)
}

/// Frees the entry `record_mapping` returned.
fn forget_mapping(index: usize) {
    if let Some(slot) = MAPPED.get(index) {
        slot.state.store(SLOT_FREE, Ordering::Release);
    }
}

/// A GPADL mapped by the server (`VmbChannelMapGpadl`), unmapped on drop
/// (`VmbChannelUnmapGpadl`). `'c` borrows the channel (or the callback view) it was mapped on;
/// `A` is its access, [`ReadOnly`] or [`ReadWrite`].
///
/// # Invariants
///
/// `handle` is mapped on the live server channel `channel` of backend `kmcl` for `'c`, by this
/// value alone (its entry `entry` of the mapping table), and `mdl` is the MDL KMCL returned for
/// it.
#[doc(alias = "VmbChannelMapGpadl")]
#[doc(alias = "VmbChannelUnmapGpadl")]
pub struct GpadlMapping<'c, A: Access, K: KmclServer + Copy> {
    kmcl: K,
    channel: NonNull<VMBCHANNEL__>,
    handle: GpadlHandle,
    mdl: NonNull<MDL>,
    entry: usize,
    _channel: PhantomData<(&'c (), A)>,
}

impl<A: Access, K: KmclServer + Copy> GpadlMapping<'_, A, K> {
    /// The GPADL mapped.
    pub fn handle(&self) -> GpadlHandle {
        self.handle
    }

    /// The MDL of the guest's pages, physical only: map it to system space
    /// (`MmGetSystemAddressForMdlSafe`) to reach the bytes, or hand it to DMA. KMCL owns it: do
    /// not free it, and do not use it after the mapping is dropped.
    pub fn as_raw(&self) -> PMDL {
        self.mdl.as_ptr()
    }

    /// The mapped bytes, given the system address a driver mapped the MDL to.
    ///
    /// # Safety
    ///
    /// `address` maps the first `len` bytes the MDL describes into system space (for a
    /// [`ReadWrite`] mapping: writable), and stays mapped while the returned view lives.
    pub unsafe fn memory(&self, address: NonNull<u8>, len: usize) -> SharedMemory<'_, A> {
        // INVARIANT: the caller's guarantee, for no longer than this mapping (the borrow).
        SharedMemory {
            base: address,
            len,
            _memory: PhantomData,
        }
    }
}

impl<A: Access, K: KmclServer + Copy> Drop for GpadlMapping<'_, A, K> {
    /// Unmaps the GPADL (`VmbChannelUnmapGpadl`), which lets a client's pending delete finish.
    #[doc(alias = "VmbChannelUnmapGpadl")]
    fn drop(&mut self) {
        // SAFETY: the GPADL is mapped on the live channel by this value alone (invariant), and
        // the borrow of `memory` views has ended.
        unsafe {
            self.kmcl
                .channel_unmap_gpadl(self.channel.as_ptr(), self.handle.0)
        };
        forget_mapping(self.entry);
    }
}

impl<A: Access, K: KmclServer + Copy> core::fmt::Debug for GpadlMapping<'_, A, K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GpadlMapping")
            .field("handle", &self.handle)
            .field("read_only", &A::READ_ONLY)
            .finish_non_exhaustive()
    }
}

// SAFETY: unmapping may happen on any thread (KMCL ties neither call to one); the backend is
// `Send`, and the MDL is only handed out as a pointer.
unsafe impl<A: Access, K: KmclServer + Copy + Send> Send for GpadlMapping<'_, A, K> {}
// SAFETY: shared use only reads plain fields.
unsafe impl<A: Access, K: KmclServer + Copy + Sync> Sync for GpadlMapping<'_, A, K> {}

/// Maps `handle` on `channel` with access `A`.
fn map<'c, A: Access, K: KmclServer + Copy>(
    kmcl: K,
    channel: NonNull<VMBCHANNEL__>,
    handle: GpadlHandle,
) -> Result<GpadlMapping<'c, A, K>> {
    let entry = record_mapping(channel.as_ptr() as usize, handle.0)?;
    let flags = if A::READ_ONLY {
        VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY
    } else {
        0
    };
    let mut mdl: PMDL = core::ptr::null_mut();
    // SAFETY: a live server channel (the caller's borrow); `mdl` is writable; the GPADL is not
    // mapped on this channel (the table entry claimed above).
    let status = unsafe { kmcl.channel_map_gpadl(channel.as_ptr(), flags, handle.0, &mut mdl) };
    let mapped = match NonNull::new(mdl) {
        Some(mdl) if status == NtStatus::SUCCESS.to_raw() => mdl,
        _ => {
            let error = if status == NtStatus::SUCCESS.to_raw() {
                // A success without an MDL: nothing to use, but mapped; undo it.
                // SAFETY: the call succeeded, so the GPADL is mapped on this channel.
                unsafe { kmcl.channel_unmap_gpadl(channel.as_ptr(), handle.0) };
                Error::Unexpected(NtStatus::SUCCESS)
            } else if !A::READ_ONLY && is_read_only(kmcl, channel, handle) {
                Error::GpadlReadOnly
            } else {
                Error::from_failed_call(status)
            };
            forget_mapping(entry);
            return Err(error);
        }
    };
    // INVARIANT: mapped on the live channel by this value alone, with its table entry.
    Ok(GpadlMapping {
        kmcl,
        channel,
        handle,
        mdl: mapped,
        entry,
        _channel: PhantomData,
    })
}

/// Whether a GPADL whose write mapping failed can be mapped for reading: then it is read-only.
/// The probe mapping is undone at once.
fn is_read_only<K: KmclServer>(
    kmcl: K,
    channel: NonNull<VMBCHANNEL__>,
    handle: GpadlHandle,
) -> bool {
    let mut mdl: PMDL = core::ptr::null_mut();
    // SAFETY: as in `map`: a live server channel, a writable output, and the GPADL not mapped
    // (its table entry is still held by the caller).
    let status = unsafe {
        kmcl.channel_map_gpadl(
            channel.as_ptr(),
            VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY,
            handle.0,
            &mut mdl,
        )
    };
    if status != NtStatus::SUCCESS.to_raw() {
        return false;
    }
    // SAFETY: the probe mapping just succeeded and nothing uses its MDL.
    unsafe { kmcl.channel_unmap_gpadl(channel.as_ptr(), handle.0) };
    true
}

/// The two mapping methods, on the enabled server channel and on a server callback's view
/// (`$what` says what the mapping borrows).
macro_rules! map_methods {
    ($what:literal) => {
        /// Maps the client's GPADL `handle` for reading and writing (`VmbChannelMapGpadl`);
        #[doc = concat!("the mapping borrows ", $what, " and unmaps on drop.")]
        ///
        /// # Errors
        ///
        /// [`Error::GpadlAlreadyMapped`] when this channel has it mapped already and
        /// [`Error::TooManyMappings`] past [`MAX_MAPPINGS`], before any call;
        /// [`Error::GpadlReadOnly`] when the client created it read-only; the failing status of
        /// the call otherwise.
        #[doc(alias = "VmbChannelMapGpadl")]
        pub fn map_gpadl(&self, handle: GpadlHandle) -> Result<GpadlMapping<'_, ReadWrite, K>> {
            map(self.ops.kmcl(), self.ops.non_null(), handle)
        }

        /// Maps the client's GPADL `handle` for reading (`VmbChannelMapGpadl` with
        #[doc = concat!("`VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY`); the mapping borrows ", $what, ".")]
        ///
        /// # Errors
        ///
        /// As for [`map_gpadl`](Self::map_gpadl), without [`Error::GpadlReadOnly`].
        #[doc(alias = "VmbChannelMapGpadl")]
        pub fn map_gpadl_read_only(
            &self,
            handle: GpadlHandle,
        ) -> Result<GpadlMapping<'_, ReadOnly, K>> {
            map(self.ops.kmcl(), self.ops.non_null(), handle)
        }
    };
}

impl<'s, H: Handler<Server, K>, K: ChannelBackend + KmclServer> Channel<'s, Server, H, K> {
    map_methods!("the channel");
}

impl<K: ChannelBackend + KmclServer> OpenView<'_, Server, K> {
    map_methods!("this callback's view (it ends with the callback)");
}
