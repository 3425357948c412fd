//! Sending: outgoing packet objects and synchronous requests.
//!
//! KMCL sends a message in two ways:
//!
//! * Through a **packet object** (`VMBPACKET`): the driver obtains one, either from KMCL
//!   (`VmbPacketAllocate`, every resource of a transaction reserved) or by formatting its own
//!   memory (`VmbChannelSizeofPacket` bytes, `VmbPacketInitialize`), sends it
//!   (`VmbPacketSend`, `VmbPacketSendWithExternalMdl`, `VmbPacketSendWithExternalPfns`), and gets
//!   it back in the packet's completion routine: when the message is in the ring, or, with
//!   [`SendFlags::WAIT_FOR_COMPLETION`], when the peer completed the transaction (its completion
//!   bytes come with it). A full ring queues the packet; sending does not fail for lack of room.
//! * Through a **synchronous request** (`VmbChannelSendSynchronousRequest`): one call that sends
//!   and, when asked, waits for the peer's completion bytes.
//!
//! Here an outgoing packet is an [`OutgoingPacket`], owned, not `Clone`. Sending consumes it;
//! KMCL's completion routine is a trampoline of this crate that gives it back, as a new
//! `OutgoingPacket`, to the handler's [`SendCompletion::packet_completed`] together with a
//! [`Completion`] (status and the peer's bytes, borrowed for the call). There the handler sends
//! it again or drops it. Dropping a packet from `VmbPacketAllocate` frees it (`VmbPacketFree`);
//! dropping one in caller storage ([`PacketStorage`]) makes the storage idle, ready to be taken
//! again without a new `VmbPacketInitialize`. A packet in flight has no value in Rust code, so
//! it cannot be freed, reused or sent again (compile-fail tests). The packet's context pointer
//! (`VmbPacketSetPointer`) names the channel's slot and is never exposed; the completion routine
//! of an allocated packet reads it back (`VmbPacketGetPointer`), that of a packet in caller
//! storage finds the same pointer in the storage's header, next to the packet, without a call.
//!
//! What keeps the memory KMCL holds alive:
//!
//! * the completion routine reaches the handler through the channel's
//!   [`ChannelSlot`](crate::channel::ChannelSlot), which is pinned and outlives the channel.
//!   This relies on KMCL completing every packet in flight, cancelled if need be, by the time
//!   `VmbChannelDisable` returns (a disabled channel transmits nothing, and a packet object
//!   cannot be freed while in flight); the sim does so, and a test checks it;
//! * caller storage is named by a function from the handler (`for<'h> fn(&'h H) ->
//!   &'h PacketStorage<N>`), so it lives in the handler (or is `'static`) and outlives the
//!   channel the same way;
//! * a packet value borrows the enabled channel (or, in the completion routine, the call), so
//!   it cannot outlive it.
//!
//! The inline message is copied by KMCL during the send call (the packet object reserves room
//! for a message of the channel's maximum size: `VmbChannelSizeofPacket` exceeds it), so it is
//! borrowed only for the call. External data (an MDL or page frame numbers) is referenced until
//! the completion: those sends are `unsafe`, with that duty.
//!
//! Synchronous requests are methods of the channel and of the views whose callbacks may make
//! them (see [`Timeout`] and [`Outcome`]): [`Channel::send_request`](crate::channel::Channel::send_request)
//! waits for the completion (client only, PASSIVE_LEVEL, checked);
//! [`Channel::post`](crate::channel::Channel::post) sends without asking for a completion
//! (client; PASSIVE_LEVEL unless the timeout is [`Timeout::NoQueue`]);
//! [`Channel::post_nowait`](crate::channel::Channel::post_nowait) never waits (both roles, up to
//! DISPATCH_LEVEL, checked; the only form KMCL allows in the root). The started callback's view
//! ([`OpenView`]) offers only `post_nowait`: a request that waits would never return there.
//!
//! # Examples
//!
//! A client sends three numbered packets from caller storage, waiting for the server's
//! completions; the handler counts them and drops each packet, which makes its storage idle:
//!
//! ```
//! use core::pin::pin;
//! use core::ptr::NonNull;
//! use core::sync::atomic::{AtomicU32, Ordering};
//! use vmbus_kmcl::channel::{Client, ChannelSlot, ClientBuilder, Handler, OpenView, Server,
//!     ServerBuilder};
//! use vmbus_kmcl::dispatch::{ChannelBackend, Linked};
//! use vmbus_kmcl::packet::IncomingPacket;
//! use vmbus_kmcl::send::{Completion, OutgoingPacket, PacketStorage, SendCompletion, SendFlags};
//! use vmbus_kmcl::{guid, DeviceRef, Guid};
//!
//! const TYPE: Guid = guid!("6b1f0e2a-3c4d-4e5f-8a9b-0c1d2e3f4a5b");
//!
//! /// Completes every request with its first byte doubled.
//! struct Doubler;
//! impl<K: ChannelBackend> Handler<Server, K> for Doubler {
//!     fn process_packet(&self, _: &OpenView<'_, Server, K>, packet: IncomingPacket<'_, K>) {
//!         let reply = [packet.data().first().copied().unwrap_or(0).wrapping_mul(2)];
//!         let _ = packet.complete(&reply);
//!     }
//! }
//!
//! /// Keeps the packet storage and adds up the replies.
//! struct Vsc {
//!     storage: PacketStorage<512>,
//!     sum: AtomicU32,
//! }
//! impl<K: ChannelBackend> Handler<Client, K> for Vsc {
//!     fn process_packet(&self, _: &OpenView<'_, Client, K>, packet: IncomingPacket<'_, K>) {
//!         packet.complete_empty();
//!     }
//! }
//! impl<K: ChannelBackend> SendCompletion<K> for Vsc {
//!     fn packet_completed(&self, packet: OutgoingPacket<'_, Self, K>, done: Completion<'_>) {
//!         assert!(done.status().is_success());
//!         let reply = u32::from(done.data().first().copied().unwrap_or(0));
//!         self.sum.fetch_add(reply, Ordering::Relaxed);
//!         drop(packet); // the storage is idle again
//!     }
//! }
//!
//! let bus = vmbus_kmcl_sim::Bus::new();
//! // SAFETY: the sim's device objects live as long as the bus.
//! let root = unsafe { DeviceRef::from_raw(NonNull::new(bus.root_device()).unwrap()) };
//! // SAFETY: as above.
//! let guest = unsafe { DeviceRef::from_raw(NonNull::new(bus.guest_device()).unwrap()) };
//! let mut vsp_slot = pin!(ChannelSlot::new(root, Linked, Doubler));
//! let mut vsp = ServerBuilder::allocate(vsp_slot.as_mut())?;
//! vsp.set_interface_id(TYPE, TYPE)?;
//! let vsp = vsp.enable()?;
//! vsp.start();
//!
//! let vsc = Vsc { storage: PacketStorage::new(), sum: AtomicU32::new(0) };
//! let mut vsc_slot = pin!(ChannelSlot::new(guest, Linked, vsc));
//! let mut vsc = ClientBuilder::allocate(vsc_slot.as_mut())?;
//! vsc.set_target(TYPE, None)?.set_maximum_packet_size(256)?;
//! let vsc = vsc.enable()?;
//! bus.run_until_idle();
//!
//! for n in 1..=3u8 {
//!     let packet = vsc.storage_packet(|vsc: &Vsc| &vsc.storage)?;
//!     packet.send(&[n], SendFlags::WAIT_FOR_COMPLETION).map_err(|refused| refused.error)?;
//!     bus.run_until_idle(); // the server completes; the handler drops the packet
//! }
//! assert_eq!(vsc.handler().sum.load(Ordering::Relaxed), 2 + 4 + 6);
//! drop(vsc);
//! drop(vsp);
//! bus.assert_no_leaks();
//! # Ok::<(), vmbus_kmcl::Error>(())
//! ```
//!
//! A client negotiating a version with a synchronous request in its post-started callback,
//! then sending an allocated packet without waiting for the server:
//!
//! ```
//! use core::pin::pin;
//! use core::ptr::NonNull;
//! use core::sync::atomic::{AtomicU32, Ordering};
//! use vmbus_kmcl::channel::{Client, ChannelSlot, ClientBuilder, Handler, OpenView,
//!     PostStartedView, Server, ServerBuilder};
//! use vmbus_kmcl::dispatch::{ChannelBackend, Linked};
//! use vmbus_kmcl::packet::IncomingPacket;
//! use vmbus_kmcl::send::{Completion, InlineFlags, Outcome, OutgoingPacket, SendCompletion,
//!     SendFlags, Timeout};
//! use vmbus_kmcl::{guid, DeviceRef, Guid};
//! use core::time::Duration;
//!
//! const TYPE: Guid = guid!("6b1f0e2a-3c4d-4e5f-8a9b-0c1d2e3f4a5c");
//!
//! /// Answers every message with version 3.
//! struct Vsp;
//! impl<K: ChannelBackend> Handler<Server, K> for Vsp {
//!     fn process_packet(&self, _: &OpenView<'_, Server, K>, packet: IncomingPacket<'_, K>) {
//!         let _ = packet.complete(&3u32.to_le_bytes());
//!     }
//! }
//!
//! #[derive(Default)]
//! struct Vsc {
//!     version: AtomicU32,
//!     sent: AtomicU32,
//! }
//! impl<K: ChannelBackend> Handler<Client, K> for Vsc {
//!     fn post_started(&self, channel: &PostStartedView<'_, Client, K>) {
//!         let mut reply = [0u8; 8]; // a multiple of 8, as KMCL requires
//!         let timeout = Timeout::Relative(Duration::from_secs(5));
//!         if let Ok(Outcome::Completed(4)) =
//!             channel.send_request(b"version?", InlineFlags::empty(), &mut reply, timeout)
//!         {
//!             let version = u32::from_le_bytes([reply[0], reply[1], reply[2], reply[3]]);
//!             self.version.store(version, Ordering::Relaxed);
//!         }
//!     }
//!     fn process_packet(&self, _: &OpenView<'_, Client, K>, packet: IncomingPacket<'_, K>) {
//!         packet.complete_empty();
//!     }
//! }
//! impl<K: ChannelBackend> SendCompletion<K> for Vsc {
//!     fn packet_completed(&self, packet: OutgoingPacket<'_, Self, K>, done: Completion<'_>) {
//!         if done.result().is_ok() {
//!             self.sent.fetch_add(1, Ordering::Relaxed);
//!         }
//!         drop(packet); // VmbPacketFree
//!     }
//! }
//!
//! let bus = vmbus_kmcl_sim::Bus::new();
//! // SAFETY: the sim's device objects live as long as the bus.
//! let root = unsafe { DeviceRef::from_raw(NonNull::new(bus.root_device()).unwrap()) };
//! // SAFETY: as above.
//! let guest = unsafe { DeviceRef::from_raw(NonNull::new(bus.guest_device()).unwrap()) };
//! let mut vsp_slot = pin!(ChannelSlot::new(root, Linked, Vsp));
//! let mut vsp = ServerBuilder::allocate(vsp_slot.as_mut())?;
//! vsp.set_interface_id(TYPE, TYPE)?;
//! let vsp = vsp.enable()?;
//! vsp.start();
//! let mut vsc_slot = pin!(ChannelSlot::new(guest, Linked, Vsc::default()));
//! let mut vsc = ClientBuilder::allocate(vsc_slot.as_mut())?;
//! vsc.set_target(TYPE, None)?;
//! let vsc = vsc.enable()?;
//! bus.run_until_idle(); // opened, started, post-started (the request)
//! assert_eq!(vsc.handler().version.load(Ordering::Relaxed), 3);
//!
//! let packet = vsc.allocate_packet()?;
//! packet.send(b"data", SendFlags::empty()).map_err(|refused| refused.error)?;
//! bus.run_until_idle(); // in the ring: completed
//! assert_eq!(vsc.handler().sent.load(Ordering::Relaxed), 1);
//! drop(vsc);
//! drop(vsp);
//! bus.assert_no_leaks();
//! # Ok::<(), vmbus_kmcl::Error>(())
//! ```

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::mem::{offset_of, MaybeUninit};
use core::ptr::{null_mut, NonNull};
use core::sync::atomic::{AtomicPtr, Ordering};
use core::time::Duration;

use vmbus_kmcl_sys::{
    LARGE_INTEGER, MDL, NTSTATUS, PFN_NUMBER, PVOID, UINT32, VMBCHANNEL, VMBPACKET, VMBPACKET__,
    VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH, VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER,
    VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
};

use crate::channel::ops::ChannelOps;
use crate::channel::slot::Shared;
use crate::channel::{Channel, Client, Handler, OpenView, PostStartedView, Role};
use crate::dispatch::ChannelBackend;
use crate::error::{Error, Result};
use crate::irql::{self, APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};
use crate::status::NtStatus;

bitflags::bitflags! {
    /// Flags of [`OutgoingPacket::send`] and of [`Channel::post`] (`VMBUS_CHANNEL_FORMAT_FLAG_*`).
    /// `FORCE_MDL_LENGTH` belongs to the MDL form only ([`MdlFlags`]), so it is not here.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    #[repr(transparent)]
    pub struct SendFlags: u32 {
        /// `VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION`: the transaction stays open until the
        /// peer completes it; the completion then carries the peer's bytes. Without it, the
        /// packet completes once the message is in the ring.
        #[doc(alias = "VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION")]
        const WAIT_FOR_COMPLETION = VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION;
        /// `VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER`: the message may be pageable, so KMCL copies
        /// it before any work at DISPATCH_LEVEL. Pageable memory is touched only below
        /// DISPATCH_LEVEL: a send with this flag is refused above APC_LEVEL
        /// ([`Error::IrqlTooHigh`]). Probing a user buffer stays the caller's duty.
        #[doc(alias = "VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER")]
        const PAGED_BUFFER = VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER;
    }
}

bitflags::bitflags! {
    /// Flags of the sends that wait for the peer in any case: synchronous requests with a
    /// completion ([`Channel::send_request`]) and [`OutgoingPacket::send_with_external_pfns`].
    /// `WAIT_FOR_COMPLETION` is always set by the wrapper (KMCL requires it there).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    #[repr(transparent)]
    pub struct InlineFlags: u32 {
        /// `VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER`, as in [`SendFlags::PAGED_BUFFER`]
        /// (refused above APC_LEVEL).
        #[doc(alias = "VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER")]
        const PAGED_BUFFER = VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER;
    }
}

bitflags::bitflags! {
    /// Flags of [`OutgoingPacket::send_with_external_mdl`]. `WAIT_FOR_COMPLETION` is always set
    /// by the wrapper (KMCL requires it for this form).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    #[repr(transparent)]
    pub struct MdlFlags: u32 {
        /// `VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH`: take the length literally, even past
        /// the MDL's byte count up to the next page boundary; only the first MDL of a chain is
        /// then used. Requires a length other than 0 ([`Error::BelowMinimum`]); KMCL checks the
        /// page-boundary limit.
        #[doc(alias = "VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH")]
        const FORCE_MDL_LENGTH = VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH;
        /// `VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER`, as in [`SendFlags::PAGED_BUFFER`]
        /// (refused above APC_LEVEL).
        #[doc(alias = "VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER")]
        const PAGED_BUFFER = VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER;
    }
}

/// The completion hook of a handler that sends packet objects: KMCL's completion routine for
/// the channel's packets (`EvtVmbPacketCompletionRoutine`), typed. Runs at IRQL <=
/// DISPATCH_LEVEL. [`Channel::allocate_packet`] and [`Channel::storage_packet`] exist for
/// channels whose handler implements it.
#[doc(alias = "EvtVmbPacketCompletionRoutine")]
#[doc(alias = "VmbPacketGetPointer")]
pub trait SendCompletion<K: ChannelBackend>: Sync + Sized {
    /// A packet's transaction is over: the message is in the ring, or (with
    /// [`SendFlags::WAIT_FOR_COMPLETION`]) the peer completed it, or the channel went away
    /// (then the status fails, for instance `STATUS_CANCELLED`). `packet` is the packet, back
    /// in the driver's hands: send it again, or drop it (freed, or its storage made idle).
    fn packet_completed(&self, packet: OutgoingPacket<'_, Self, K>, completion: Completion<'_>);
}

/// How a packet's transaction ended, as its completion routine reports it.
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    status: NtStatus,
    data: &'a [u8],
}

impl<'a> Completion<'a> {
    /// The status KMCL reports.
    pub fn status(&self) -> NtStatus {
        self.status
    }

    /// The peer's completion bytes (empty without [`SendFlags::WAIT_FOR_COMPLETION`], or when
    /// the peer sent none), valid for the completion call.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The bytes when the status is `STATUS_SUCCESS`.
    ///
    /// # Errors
    ///
    /// The failing status as [`Error::Status`] (a success-class status other than
    /// `STATUS_SUCCESS` as [`Error::Unexpected`]).
    pub fn result(&self) -> Result<&'a [u8]> {
        if self.status == NtStatus::SUCCESS {
            Ok(self.data)
        } else {
            Err(Error::from_failed_call(self.status.to_raw()))
        }
    }
}

/// A refused send: the error and the packet, which KMCL did not take.
#[derive(Debug)]
pub struct Refused<P> {
    /// Why the send was refused.
    pub error: Error,
    /// The packet, unchanged; send it again or drop it.
    pub packet: P,
}

/// The storage's states.
/// The state of a storage whose packet value exists or is in flight: an address no slot has.
const TAKEN: *mut () = core::ptr::dangling_mut::<u8>().cast();

/// The bookkeeping of a [`PacketStorage`], before the packet bytes.
#[repr(C, align(16))]
struct StorageHeader {
    /// NULL (never formatted), [`TAKEN`] (a packet value exists, or the packet is in flight),
    /// or, when idle, the slot part (`Shared<H, K>`) whose channel the bytes were formatted
    /// for, with this crate's routine and pointer.
    state: AtomicPtr<()>,
    /// The channel the bytes were formatted for.
    channel: AtomicPtr<vmbus_kmcl_sys::VMBCHANNEL__>,
    /// The slot part (`Shared<H, K>`) the bytes were formatted for: the packet's pointer
    /// (`VmbPacketSetPointer`), kept here too so that the completion routine finds it from the
    /// packet's address without a call.
    owner: AtomicPtr<()>,
}

/// Caller memory for one packet object (`VmbPacketInitialize`): `N` bytes, 16-byte aligned,
/// plus a small header that tracks whether a packet value exists.
///
/// `N` must be at least `VmbChannelSizeofPacket` of the channel (it depends on the maximum
/// packet size; the sim asks for that size plus 72 bytes, rounded up to 8), checked when the
/// storage is first formatted ([`Error::StorageTooSmall`]). Put it in the handler and name it
/// with [`Channel::storage_packet`]; once formatted, taking it again formats nothing: no
/// allocation and no KMCL call.
///
/// # Invariants
///
/// While `header.state` is `TAKEN`, KMCL's packet object in `bytes` belongs to one
/// [`OutgoingPacket`] value or is in flight, and nothing else touches the bytes.
#[repr(C)]
pub struct PacketStorage<const N: usize> {
    header: StorageHeader,
    bytes: UnsafeCell<MaybeUninit<[u8; N]>>,
}

// SAFETY: the bytes are KMCL's packet object, touched only by KMCL; the header is atomics.
// Which value may use the packet is decided by the atomic state (invariant).
unsafe impl<const N: usize> Sync for PacketStorage<N> {}

impl<const N: usize> PacketStorage<N> {
    /// Empty storage, not yet formatted.
    pub const fn new() -> Self {
        Self {
            header: StorageHeader {
                state: AtomicPtr::new(null_mut()),
                channel: AtomicPtr::new(null_mut()),
                owner: AtomicPtr::new(null_mut()),
            },
            bytes: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Whether a packet of this storage exists (taken, or in flight).
    pub fn in_use(&self) -> bool {
        self.header.state.load(Ordering::Acquire) == TAKEN
    }

    /// The packet object's address: the bytes, with the provenance of the whole storage (the
    /// completion routine finds the header from it).
    fn packet_ptr(&self) -> NonNull<VMBPACKET__> {
        let base: *const Self = self;
        // SAFETY: `bytes` lies inside `Self`, at its field offset.
        let bytes = unsafe { base.cast::<u8>().add(offset_of!(Self, bytes)) };
        // CAST: a pointer into the storage, never NULL, used as KMCL's packet handle.
        let packet = bytes.cast_mut().cast::<VMBPACKET__>();
        // SAFETY: derived from a reference, so not NULL.
        unsafe { NonNull::new_unchecked(packet) }
    }

    /// The storage whose bytes `packet` is.
    ///
    /// # Safety
    ///
    /// `packet` came from [`PacketStorage::packet_ptr`] of a storage of this `N` that is
    /// still alive for `'a`.
    unsafe fn from_packet<'a>(packet: VMBPACKET) -> &'a Self {
        // SAFETY: `packet` is `offset_of!(Self, bytes)` bytes into a live storage (caller).
        let base = unsafe { packet.cast::<u8>().sub(offset_of!(Self, bytes)) };
        // SAFETY: the start of a live storage (caller), shared only.
        unsafe { &*base.cast::<Self>() }
    }
}

impl<const N: usize> Default for PacketStorage<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::fmt::Debug for PacketStorage<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PacketStorage")
            .field("size", &N)
            .field("in_use", &self.in_use())
            .finish()
    }
}

/// Where an outgoing packet object lives.
#[derive(Clone, Copy)]
enum Home {
    /// From `VmbPacketAllocate`: freed on drop.
    Allocated,
    /// In caller storage: the header, made idle on drop.
    Storage(NonNull<StorageHeader>),
}

/// An outgoing packet object (`VMBPACKET`) of a channel whose handler is `H`, owned.
///
/// Made by [`Channel::allocate_packet`] (`VmbPacketAllocate`) or
/// [`Channel::storage_packet`] (caller storage, `VmbPacketInitialize`), and given back to
/// [`SendCompletion::packet_completed`] after each send. Sending consumes it. Dropping it
/// frees an allocated packet (`VmbPacketFree`) and makes caller storage idle. It borrows the
/// channel (or the completion call), so it cannot outlive it.
///
/// # Invariants
///
/// `raw` is a live packet object of a channel allocated through `shared.kmcl`, not in flight,
/// with its completion routine set to this crate's trampoline for `(H, K)` and `home`, and its
/// pointer set to `shared`; this value is its only owner. `home` is `Storage` exactly when
/// `raw` lies in a [`PacketStorage`] whose state is `TAKEN`.
pub struct OutgoingPacket<'c, H, K: ChannelBackend> {
    raw: NonNull<VMBPACKET__>,
    shared: &'c Shared<H, K>,
    home: Home,
}

impl<'c, H: SendCompletion<K>, K: ChannelBackend> OutgoingPacket<'c, H, K> {
    /// Sends `message` inline (`VmbPacketSend`), queued when the ring is full. The message is
    /// copied during the call. The packet comes back to [`SendCompletion::packet_completed`].
    /// Any IRQL up to DISPATCH_LEVEL (APC_LEVEL with [`SendFlags::PAGED_BUFFER`]).
    ///
    /// # Errors
    ///
    /// With the packet back ([`Refused`]): [`Error::LengthTooLarge`] past `u32::MAX`,
    /// [`Error::IrqlTooHigh`] for a paged buffer above APC_LEVEL, before any call; the failing
    /// status of `VmbPacketSend` (for instance a message longer than the channel's maximum
    /// packet size, or `STATUS_DEVICE_REMOVED`).
    #[doc(alias = "VmbPacketSend")]
    #[inline]
    pub fn send(self, message: &[u8], flags: SendFlags) -> Result<(), Refused<Self>> {
        let length = match checked_length(message, flags.bits()) {
            Ok(length) => length,
            Err(error) => return self.refuse(error),
        };
        // SAFETY:
        // - a live packet of this backend, not in flight, with its routine set (invariant);
        // - `message` is readable for `length` bytes, copied by KMCL during the call;
        // - no external data; the flags are KMCL's (the type has no other bits).
        let status = unsafe {
            self.shared.kmcl.packet_send(
                self.raw.as_ptr(),
                message.as_ptr().cast_mut().cast(),
                length,
                null_mut(),
                flags.bits(),
            )
        };
        self.sent(status)
    }

    /// Sends `message` with a window of `mdl` as external data (`VmbPacketSendWithExternalMdl`),
    /// always waiting for the peer's completion (KMCL requires
    /// `VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION`: the wrapper sets it). `length` 0 means
    /// the whole MDL from `offset`.
    ///
    /// # Errors
    ///
    /// As for [`send`](Self::send), and [`Error::BelowMinimum`] for
    /// [`MdlFlags::FORCE_MDL_LENGTH`] with a length of 0, before any call.
    ///
    /// # Safety
    ///
    /// `mdl` describes locked memory that stays valid, and is not reused for another purpose,
    /// until the packet's completion routine ran.
    #[doc(alias = "VmbPacketSendWithExternalMdl")]
    pub unsafe fn send_with_external_mdl(
        self,
        message: &[u8],
        mdl: NonNull<MDL>,
        offset: u32,
        length: u32,
        flags: MdlFlags,
    ) -> Result<(), Refused<Self>> {
        if flags.contains(MdlFlags::FORCE_MDL_LENGTH) && length == 0 {
            return self.refuse(Error::BelowMinimum { minimum: 1 });
        }
        let size = match checked_length(message, flags.bits()) {
            Ok(size) => size,
            Err(error) => return self.refuse(error),
        };
        // SAFETY:
        // - a live packet of this backend, not in flight, with its routine set (invariant);
        // - `message` is readable for `size` bytes, copied during the call;
        // - `mdl` is not NULL and stays valid until the completion (caller);
        // - the wait flag is set, as this form requires.
        let status = unsafe {
            self.shared.kmcl.packet_send_with_external_mdl(
                self.raw.as_ptr(),
                message.as_ptr().cast_mut().cast(),
                size,
                mdl.as_ptr(),
                offset,
                length,
                flags.bits() | VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
            )
        };
        self.sent(status)
    }

    /// Sends `message` with the pages `pfns` as external data
    /// (`VmbPacketSendWithExternalPfns`), always waiting for the peer's completion (the wrapper
    /// sets the flag KMCL requires).
    ///
    /// # Errors
    ///
    /// As for [`send`](Self::send), and [`Error::BelowMinimum`] for an empty `pfns`, before
    /// any call.
    ///
    /// # Safety
    ///
    /// The pages `pfns` names stay allocated, locked and not reused for another purpose until
    /// the packet's completion routine ran.
    #[doc(alias = "VmbPacketSendWithExternalPfns")]
    pub unsafe fn send_with_external_pfns(
        self,
        message: &[u8],
        pfns: &[PFN_NUMBER],
        flags: InlineFlags,
    ) -> Result<(), Refused<Self>> {
        let checked = match u32::try_from(pfns.len()) {
            Ok(0) => Err(Error::BelowMinimum { minimum: 1 }),
            Ok(count) => checked_length(message, flags.bits()).map(|size| (size, count)),
            Err(_) => Err(Error::LengthTooLarge),
        };
        let (size, count) = match checked {
            Ok(pair) => pair,
            Err(error) => return self.refuse(error),
        };
        // SAFETY:
        // - a live packet of this backend, not in flight, with its routine set (invariant);
        // - `message` is readable for `size` bytes and `pfns` for `count` entries, both read
        //   during the call; the pages stay valid until the completion (caller);
        // - the wait flag is set, as this form requires.
        let status = unsafe {
            self.shared.kmcl.packet_send_with_external_pfns(
                self.raw.as_ptr(),
                message.as_ptr().cast_mut().cast(),
                size,
                pfns.as_ptr().cast_mut(),
                count,
                flags.bits() | VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
            )
        };
        self.sent(status)
    }

    /// A send refused before any call: the packet back, with `error`.
    #[cold]
    fn refuse(self, error: Error) -> Result<(), Refused<Self>> {
        Err(Refused {
            error,
            packet: self,
        })
    }

    /// After a send call: on success KMCL owns the packet until its completion routine (this
    /// value is forgotten); on failure the packet is handed back.
    #[inline(always)]
    fn sent(self, status: NTSTATUS) -> Result<(), Refused<Self>> {
        if status == NtStatus::SUCCESS.to_raw() {
            // The packet is in flight: its completion routine makes the next value.
            core::mem::forget(self);
            Ok(())
        } else {
            Err(Refused {
                error: Error::from_failed_call(status),
                packet: self,
            })
        }
    }

    /// The channel the packet belongs to (`VmbPacketGetChannel`).
    #[doc(alias = "VmbPacketGetChannel")]
    pub fn channel(&self) -> VMBCHANNEL {
        // SAFETY: a live packet object of this backend (invariant).
        unsafe { self.shared.kmcl.packet_get_channel(self.raw.as_ptr()) }
    }

    /// Whether the packet lives in caller storage ([`PacketStorage`]).
    pub fn is_in_storage(&self) -> bool {
        matches!(self.home, Home::Storage(_))
    }
}

/// The length of `message` for KMCL, and the paged-buffer IRQL rule.
#[inline(always)]
fn checked_length(message: &[u8], flags: u32) -> Result<u32> {
    if flags & VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER != 0 {
        irql::require_at_most(APC_LEVEL)?;
    }
    u32::try_from(message.len()).map_err(|_| Error::LengthTooLarge)
}

impl<H, K: ChannelBackend> Drop for OutgoingPacket<'_, H, K> {
    /// Frees an allocated packet (`VmbPacketFree`) or makes its storage idle.
    #[doc(alias = "VmbPacketFree")]
    fn drop(&mut self) {
        match self.home {
            Home::Allocated => {
                // SAFETY: a live allocated packet, not in flight, owned by this value only
                // (invariant), never used again.
                unsafe { self.shared.kmcl.packet_free(self.raw.as_ptr()) }
            }
            Home::Storage(header) => {
                // SAFETY: the header of a storage that outlives the channel, hence this value
                // (it lives in the handler or is `'static`).
                let header = unsafe { header.as_ref() };
                // INVARIANT: the value goes; the storage may be taken again.
                let idle: *const Shared<H, K> = self.shared;
                header
                    .state
                    .store(idle.cast_mut().cast(), Ordering::Release);
            }
        }
    }
}

impl<H, K: ChannelBackend> core::fmt::Debug for OutgoingPacket<'_, H, K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OutgoingPacket")
            .field("packet", &self.raw)
            .field("in_storage", &matches!(self.home, Home::Storage(_)))
            .finish()
    }
}

/// The completion routines KMCL calls for the packets of handler `H` on backend `K`.
struct Routines<H, K>(PhantomData<(H, K)>);

impl<H: SendCompletion<K>, K: ChannelBackend> Routines<H, K> {
    /// The slot part a packet's pointer names.
    ///
    /// # Safety
    ///
    /// `packet` is a live packet object whose pointer this crate set to a `Shared<H, K>`,
    /// alive for `'a`.
    #[inline(always)]
    unsafe fn shared<'a>(packet: VMBPACKET) -> &'a Shared<H, K> {
        // SAFETY: a live packet of a channel of backend `K`, prepared (caller).
        let pointer = unsafe { <K as crate::dispatch::sealed::Sealed>::packet_pointer_of(packet) };
        // SAFETY: the pointer names the pinned slot's `Shared<H, K>`, which outlives the
        // channel and so every completion of its packets (caller); shared use only.
        unsafe { &*pointer.cast::<Shared<H, K>>() }
    }

    /// The completion of an allocated packet.
    unsafe extern "C" fn allocated(
        packet: VMBPACKET,
        status: NTSTATUS,
        buffer: PVOID,
        length: UINT32,
    ) {
        // SAFETY: KMCL calls this routine for a packet this crate allocated and pointed at its
        // slot's `Shared<H, K>`, and the slot outlives the channel.
        let shared = unsafe { Self::shared(packet) };
        // SAFETY: KMCL passes its own live, non-NULL packet.
        let raw = unsafe { NonNull::new_unchecked(packet) };
        // INVARIANT: the transaction is over, so the packet is not in flight; its routine and
        // pointer stay set; this is its one value.
        let packet = OutgoingPacket {
            raw,
            shared,
            home: Home::Allocated,
        };
        // SAFETY: `buffer` is NULL or readable for `length` bytes during the call.
        unsafe { deliver(packet, status, buffer, length) };
    }

    /// The completion of a packet in a `PacketStorage<N>`.
    unsafe extern "C" fn stored<const N: usize>(
        packet: VMBPACKET,
        status: NTSTATUS,
        buffer: PVOID,
        length: UINT32,
    ) {
        // SAFETY: the routine was registered only on packets in a `PacketStorage<N>`, which
        // outlives the channel (it lives in the handler or is `'static`).
        let storage = unsafe { PacketStorage::<N>::from_packet(packet) };
        let owner = storage.header.owner.load(Ordering::Acquire);
        // SAFETY: the storage was formatted for this packet's channel with `owner`, the slot's
        // `Shared<H, K>` (also the packet's pointer), set before the send; the pinned slot
        // outlives the channel and so every completion of its packets; shared use only.
        let shared = unsafe { &*owner.cast_const().cast::<Shared<H, K>>() };
        // INVARIANT: the transaction is over; the storage stays `TAKEN` for the new value.
        let packet = OutgoingPacket {
            raw: storage.packet_ptr(),
            shared,
            home: Home::Storage(NonNull::from(&storage.header)),
        };
        // SAFETY: `buffer` is NULL or readable for `length` bytes during the call.
        unsafe { deliver(packet, status, buffer, length) };
    }
}

/// Hands `packet` back to its handler with KMCL's status and completion bytes.
///
/// # Safety
///
/// `buffer` is NULL or readable for `length` bytes during the call.
#[inline(always)]
unsafe fn deliver<H: SendCompletion<K>, K: ChannelBackend>(
    packet: OutgoingPacket<'_, H, K>,
    status: NTSTATUS,
    buffer: PVOID,
    length: UINT32,
) {
    let data: &[u8] = if buffer.is_null() {
        &[]
    } else {
        // CAST: u32 to usize, lossless on the 64-bit targets.
        // SAFETY: non-NULL and readable for `length` bytes for this call (caller); `u8` has
        // no alignment.
        unsafe { core::slice::from_raw_parts(buffer.cast::<u8>(), length as usize) }
    };
    let shared = packet.shared;
    shared.handler.packet_completed(
        packet,
        Completion {
            status: NtStatus::from_raw(status),
            data,
        },
    );
}

impl<'s, R: Role, H: Handler<R, K> + SendCompletion<K>, K: ChannelBackend> Channel<'s, R, H, K> {
    /// A packet object from KMCL (`VmbPacketAllocate`), with everything a send needs reserved,
    /// its completion routine (`VmbPacketSetCompletionRoutine`) and pointer
    /// (`VmbPacketSetPointer`) set to this crate's. Dropping it unsent frees it.
    ///
    /// # Errors
    ///
    /// [`Error::AllocationFailed`] when KMCL returns NULL.
    #[doc(alias = "VmbPacketAllocate")]
    #[doc(alias = "VmbPacketSetCompletionRoutine")]
    #[doc(alias = "VmbPacketSetPointer")]
    #[inline]
    pub fn allocate_packet(&self) -> Result<OutgoingPacket<'_, H, K>> {
        let shared = self.slot().shared();
        let kmcl = shared.kmcl;
        // SAFETY: a live, enabled channel of this backend (the channel's invariant).
        let raw = unsafe { kmcl.packet_allocate(self.ops().raw()) };
        let raw = NonNull::new(raw).ok_or(Error::AllocationFailed)?;
        // SAFETY: a fresh packet, not in flight; the routine is a `'static` function.
        unsafe {
            kmcl.packet_set_completion_routine(raw.as_ptr(), Some(Routines::<H, K>::allocated))
        };
        // CAST: the slot's shared part, read back by the routine as `Shared<H, K>`.
        let pointer: PVOID = core::ptr::from_ref(shared).cast_mut().cast();
        // SAFETY: a fresh packet; KMCL only stores the pointer.
        unsafe { kmcl.packet_set_pointer(raw.as_ptr(), pointer) };
        // INVARIANT: live, not in flight, routine and pointer set, one owner.
        Ok(OutgoingPacket {
            raw,
            shared,
            home: Home::Allocated,
        })
    }

    /// The packet in the caller storage `select` names in the handler: formatted on first use
    /// (`VmbChannelSizeofPacket`, `VmbPacketInitialize`, `VmbPacketSetCompletionRoutine`,
    /// `VmbPacketSetPointer`), taken as it is afterwards (no KMCL call, no allocation).
    /// `select` borrows the storage from the handler (`|h| &h.storage`), so it outlives every
    /// packet in flight (or returns a `'static` one).
    ///
    /// # Errors
    ///
    /// [`Error::StorageInUse`] when a packet of the storage exists or is in flight;
    /// [`Error::StorageTooSmall`] when `N` is below `VmbChannelSizeofPacket`; the failing
    /// status of `VmbPacketInitialize`.
    #[doc(alias = "VmbPacketInitialize")]
    #[doc(alias = "VmbChannelSizeofPacket")]
    #[inline]
    pub fn storage_packet<const N: usize>(
        &self,
        select: for<'h> fn(&'h H) -> &'h PacketStorage<N>,
    ) -> Result<OutgoingPacket<'_, H, K>> {
        let shared = self.slot().shared();
        let storage = select(&shared.handler);
        let header = &storage.header;
        // CAST: the slot's shared part, as the packet's pointer and the idle state.
        let pointer: *mut () = core::ptr::from_ref(shared).cast_mut().cast();
        let channel = self.ops().raw();
        let previous = header.state.swap(TAKEN, Ordering::AcqRel);
        if previous != pointer || header.channel.load(Ordering::Relaxed) != channel {
            take_slow::<H, K, N>(self.ops(), storage, previous, pointer)?;
        }
        let raw = storage.packet_ptr();
        // INVARIANT: the state is `TAKEN` (swapped above) for this one value; the packet is
        // formatted for this channel with this crate's routine and pointer.
        Ok(OutgoingPacket {
            raw,
            shared,
            home: Home::Storage(NonNull::from(header)),
        })
    }
}

/// The rest of [`Channel::storage_packet`] when the storage was not idle and formatted for
/// this channel and slot: refuses a storage in use, else formats it (restoring the previous
/// state when that fails).
#[cold]
#[inline(never)]
fn take_slow<H: SendCompletion<K>, K: ChannelBackend, const N: usize>(
    ops: &ChannelOps<impl Sized, K>,
    storage: &PacketStorage<N>,
    previous: *mut (),
    pointer: *mut (),
) -> Result<()> {
    let header = &storage.header;
    if previous == TAKEN {
        return Err(Error::StorageInUse);
    }
    match format::<H, K, N>(ops, storage.packet_ptr(), pointer) {
        Ok(()) => {
            header.channel.store(ops.raw(), Ordering::Relaxed);
            header.owner.store(pointer, Ordering::Release);
            Ok(())
        }
        Err(error) => {
            header.state.store(previous, Ordering::Release);
            Err(error)
        }
    }
}

/// Formats the bytes at `raw` as a packet object of `ops`' channel, pointing at `pointer`.
fn format<H: SendCompletion<K>, K: ChannelBackend, const N: usize>(
    ops: &ChannelOps<impl Sized, K>,
    raw: NonNull<VMBPACKET__>,
    pointer: *mut (),
) -> Result<()> {
    let kmcl = ops.kmcl();
    // SAFETY: a live channel of this backend (the channel's invariant).
    let required = unsafe { kmcl.channel_sizeof_packet(ops.raw()) };
    // CAST: u32 to usize, lossless on the 64-bit targets.
    if N < required as usize {
        return Err(Error::StorageTooSmall { required });
    }
    // KMCL takes a 32-bit size: a larger storage offers it the first 4 GiB.
    let size = u32::try_from(N).unwrap_or(u32::MAX);
    // SAFETY:
    // - `raw` is `size` (at most `N`) writable bytes of a storage, 16-byte aligned, used by
    //   nothing else (the caller set its state to `TAKEN`), and the storage outlives the
    //   channel (it lives in the handler or is `'static`);
    // - a completion routine is set below, before any send.
    let status = unsafe { kmcl.packet_initialize(ops.raw(), raw.as_ptr(), size) };
    if status != NtStatus::SUCCESS.to_raw() {
        return Err(Error::from_failed_call(status));
    }
    // SAFETY: a formatted packet, not in flight; the routine is a `'static` function.
    unsafe {
        kmcl.packet_set_completion_routine(raw.as_ptr(), Some(Routines::<H, K>::stored::<N>))
    };
    // SAFETY: a formatted packet; KMCL only stores the pointer.
    unsafe { kmcl.packet_set_pointer(raw.as_ptr(), pointer.cast()) };
    Ok(())
}

// ----- Synchronous requests -----

/// How long a synchronous request may wait for room in the ring (and, when it asks for one,
/// for the completion): the `Timeout` of `VmbChannelSendSynchronousRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// Wait as long as it takes (a NULL timeout).
    Infinite,
    /// Do not queue: when the ring is full, return [`Outcome::NotQueued`] at once (a timeout
    /// of 0). The only form allowed above PASSIVE_LEVEL and in the root.
    NoQueue,
    /// Give up after this long ([`Outcome::TimedOut`]); a relative timeout in 100 ns units,
    /// rounded down, at least one unit, capped at the largest KMCL takes.
    Relative(Duration),
}

impl Timeout {
    /// KMCL's value: NULL for infinite, else 0 or a negative (relative) count of 100 ns.
    #[inline(always)]
    fn to_raw(self) -> Option<i64> {
        match self {
            Self::Infinite => None,
            Self::NoQueue => Some(0),
            Self::Relative(duration) => {
                // 100 ns units, without 128-bit arithmetic.
                let ticks = duration
                    .as_secs()
                    .checked_mul(10_000_000)
                    .and_then(|t| t.checked_add(u64::from(duration.subsec_nanos() / 100)))
                    .and_then(|t| i64::try_from(t).ok())
                    .unwrap_or(i64::MAX)
                    .max(1);
                Some(-ticks)
            }
        }
    }
}

/// What a synchronous request did. The statuses KMCL documents for it are values here, not
/// errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Outcome {
    /// Sent (and, when asked, completed by the peer): the number of completion bytes written
    /// to the response buffer (0 without a response).
    Completed(usize),
    /// `STATUS_BUFFER_OVERFLOW`: the ring was full and the timeout was [`Timeout::NoQueue`];
    /// nothing was queued. Retry later.
    NotQueued,
    /// `STATUS_CANCELLED`: the timeout expired and the request was cancelled.
    TimedOut,
    /// `STATUS_DEVICE_REMOVED`: the channel is going away.
    DeviceRemoved,
}

/// `VmbChannelSendSynchronousRequest`, after the wrapper's checks.
///
/// # Safety
///
/// A live channel of this backend; when `wait` or a timeout other than `NoQueue`: a client
/// channel, outside its started callback (the IRQL is checked here).
#[inline(always)]
pub(crate) unsafe fn request<R, K: crate::dispatch::Kmcl + Copy>(
    ops: &ChannelOps<R, K>,
    message: &[u8],
    flags: u32,
    response: Option<&mut [u8]>,
    timeout: Timeout,
) -> Result<Outcome> {
    let maximum = if flags & VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER != 0 {
        APC_LEVEL
    } else if matches!(timeout, Timeout::NoQueue)
        && flags & VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION == 0
    {
        DISPATCH_LEVEL
    } else {
        PASSIVE_LEVEL
    };
    irql::require_at_most(maximum)?;
    let length = u32::try_from(message.len()).map_err(|_| Error::LengthTooLarge)?;
    let (buffer, mut filled): (PVOID, u32) = match response {
        Some(response) => {
            let capacity = u32::try_from(response.len()).map_err(|_| Error::LengthTooLarge)?;
            if capacity % 8 != 0 {
                return Err(Error::LengthNotMultipleOf8 { length: capacity });
            }
            (response.as_mut_ptr().cast(), capacity)
        }
        None => (null_mut(), 0),
    };
    let capacity = filled;
    let relative = timeout.to_raw();
    let mut raw_timeout = LARGE_INTEGER {
        QuadPart: relative.unwrap_or(0),
    };
    let timeout_ptr: *mut LARGE_INTEGER = match relative {
        Some(_) => &mut raw_timeout,
        None => null_mut(),
    };
    let filled_ptr = if buffer.is_null() {
        null_mut()
    } else {
        &mut filled as *mut u32
    };
    // SAFETY:
    // - a live channel of this backend, a client one where the call may wait, outside its
    //   started callback (caller); the IRQL is at most what the call allows (checked);
    // - `message` is readable for `length` bytes during the call;
    // - `buffer` is NULL or writable for `filled` bytes, a multiple of 8 (checked), and
    //   `filled_ptr` is NULL exactly when `buffer` is;
    // - `timeout_ptr` is NULL or a readable timeout; no external data.
    let status = unsafe {
        ops.kmcl().channel_send_synchronous_request(
            ops.raw(),
            message.as_ptr().cast_mut().cast(),
            length,
            null_mut(),
            flags,
            buffer,
            filled_ptr,
            timeout_ptr,
        )
    };
    match NtStatus::from_raw(status) {
        // KMCL reports the bytes it wrote; never more than the buffer.
        // CAST: u32 to usize, lossless on the 64-bit targets.
        NtStatus::SUCCESS => Ok(Outcome::Completed(filled.min(capacity) as usize)),
        NtStatus::BUFFER_OVERFLOW => Ok(Outcome::NotQueued),
        NtStatus::CANCELLED => Ok(Outcome::TimedOut),
        NtStatus::DEVICE_REMOVED => Ok(Outcome::DeviceRemoved),
        _ => Err(Error::from_failed_call(status)),
    }
}

/// The errors of every synchronous request form, for the docs.
macro_rules! request_errors {
    () => {
        "[`Error::IrqlTooHigh`] above the level the form allows (APC_LEVEL with \
         [`InlineFlags::PAGED_BUFFER`]), [`Error::LengthTooLarge`] past `u32::MAX`, \
         [`Error::LengthNotMultipleOf8`] for a response buffer whose length is not a multiple \
         of 8, all before any call; any other failing status of the call."
    };
}

/// Declares `post_nowait` on a type whose `ops()` is a live channel (both roles).
macro_rules! nowait_request {
    ($place:literal) => {
        /// Sends `message` without waiting and without asking for a completion
        /// (`VmbChannelSendSynchronousRequest` with a zero timeout): [`Outcome::NotQueued`]
        /// when the ring is full. Both roles (the only form KMCL allows in the root); any IRQL
        /// up to DISPATCH_LEVEL (checked).
        #[doc = $place]
        ///
        /// # Errors
        ///
        #[doc = request_errors!()]
        #[doc(alias = "VmbChannelSendSynchronousRequest")]
        pub fn post_nowait(&self, message: &[u8], flags: InlineFlags) -> Result<Outcome> {
            // SAFETY: a live channel (the type's invariant); the call does not wait.
            unsafe { request(self.ops(), message, flags.bits(), None, Timeout::NoQueue) }
        }
    };
}

/// Declares `send_request` and `post` on a client type whose `ops()` is a live client channel
/// used outside its started callback.
macro_rules! waiting_requests {
    ($place:literal) => {
        /// Sends `request` and waits for the server's completion, written to `response`
        /// (`VmbChannelSendSynchronousRequest` with `WAIT_FOR_COMPLETION`); `timeout` bounds
        /// the whole wait. Client channels only (KMCL forbids waiting requests in the root);
        /// PASSIVE_LEVEL (checked). The response length must be a multiple of 8 (KMCL's rule,
        /// checked); a longer reply is cut to it.
        #[doc = $place]
        ///
        /// # Errors
        ///
        #[doc = request_errors!()]
        #[doc(alias = "VmbChannelSendSynchronousRequest")]
        pub fn send_request(
            &self,
            request: &[u8],
            flags: InlineFlags,
            response: &mut [u8],
            timeout: Timeout,
        ) -> Result<Outcome> {
            let flags = flags.bits() | VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION;
            // SAFETY: a live client channel (the type's invariant), outside its started
            // callback (neither the channel nor the post-started view is reachable there).
            unsafe { self::request(self.ops(), request, flags, Some(response), timeout) }
        }

        /// Sends `message` without asking for a completion, waiting up to `timeout` for room
        /// in the ring (`VmbChannelSendSynchronousRequest`). Client channels only;
        /// PASSIVE_LEVEL unless `timeout` is [`Timeout::NoQueue`] (checked).
        #[doc = $place]
        ///
        /// # Errors
        ///
        #[doc = request_errors!()]
        #[doc(alias = "VmbChannelSendSynchronousRequest")]
        pub fn post(
            &self,
            message: &[u8],
            flags: InlineFlags,
            timeout: Timeout,
        ) -> Result<Outcome> {
            // SAFETY: as for `send_request`.
            unsafe { request(self.ops(), message, flags.bits(), None, timeout) }
        }
    };
}

impl<R: Role, H: Handler<R, K>, K: ChannelBackend> Channel<'_, R, H, K> {
    nowait_request!("");
}

impl<H: Handler<Client, K>, K: ChannelBackend> Channel<'_, Client, H, K> {
    waiting_requests!("");
}

impl<R: Role, K: ChannelBackend> OpenView<'_, R, K> {
    nowait_request!(
        "From any callback with this view, including `started`, where only this form may be \
         used: a request that waits would never return there."
    );
}

impl<K: ChannelBackend> PostStartedView<'_, Client, K> {
    waiting_requests!(
        "From the post-started callback (PASSIVE_LEVEL, the incoming queue running: the place \
         for a version negotiation)."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_become_kmcl_values() {
        assert_eq!(Timeout::Infinite.to_raw(), None);
        assert_eq!(Timeout::NoQueue.to_raw(), Some(0));
        assert_eq!(
            Timeout::Relative(Duration::from_millis(5)).to_raw(),
            Some(-50_000)
        );
        assert_eq!(Timeout::Relative(Duration::ZERO).to_raw(), Some(-1));
        assert_eq!(Timeout::Relative(Duration::MAX).to_raw(), Some(-i64::MAX));
    }

    #[test]
    fn storage_puts_the_packet_at_a_fixed_aligned_offset() {
        let storage = PacketStorage::<64>::new();
        let packet = storage.packet_ptr();
        assert_eq!(packet.as_ptr() as usize % 16, 0);
        // SAFETY: the packet pointer of this live storage.
        let back = unsafe { PacketStorage::<64>::from_packet(packet.as_ptr()) };
        assert!(core::ptr::eq(back, &storage));
        assert!(!storage.in_use());
    }
}
