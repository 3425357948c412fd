//! Incoming packets: the token KMCL's process-packet callback hands a driver, and the checked
//! readers for the bytes inside it.
//!
//! KMCL calls a channel's `EvtVmbChannelProcessPacket` once for every packet it takes from the
//! incoming ring, with a `VMBPACKETCOMPLETION` naming that delivery, the payload (VMBus and KMCL
//! headers already stripped) and `VMBUS_CHANNEL_PROCESS_PACKET_FLAG_*` flags. The driver owes
//! KMCL exactly one answer per delivery:
//!
//! * `VmbChannelPacketComplete`, inline or later, with an optional response that goes back to
//!   the sender when it waits for a completion;
//! * `VmbChannelPacketFail`, for a packet that cannot be processed (KMCL then stops the
//!   channel's incoming queue);
//! * `VmbChannelPacketDeferToPassive`, only inline in the callback: KMCL delivers the packet
//!   again at `PASSIVE_LEVEL`, and that second delivery owes its own answer.
//!
//! This module turns those rules into types:
//!
//! * [`IncomingPacket`] is the token of one delivery while the callback runs. It is neither
//!   `Clone` nor `Send`, and [`complete`](IncomingPacket::complete),
//!   [`complete_with`](IncomingPacket::complete_with),
//!   [`complete_empty`](IncomingPacket::complete_empty), [`fail`](IncomingPacket::fail),
//!   [`defer_to_passive`](IncomingPacket::defer_to_passive) and
//!   [`detach`](IncomingPacket::detach) each take it by value, so the compiler rejects a second
//!   answer or any use after the first (compile-fail tests `packet_completed_twice`,
//!   `packet_used_after_completion`). Its lifetime `'cb` is the callback's own and invariant,
//!   and it is not `Send`: the token cannot be kept past the callback or handed to another
//!   thread, only detached (compile-fail tests `inline_packet_kept_past_callback`,
//!   `inline_packet_sent_to_thread`).
//! * [`DeferredPacket`] is the token detached for completion later, from any thread (it is
//!   `Send` when the backend is: `Linked`, or `&T` for a table `T: Sync`). It has no
//!   `defer_to_passive`, because KMCL allows deferral only inline (compile-fail test
//!   `deferred_packet_cannot_defer`).
//! * [`IncomingPacket::data`] is the payload as `&[u8]`, exactly `BufferLength` bytes long.
//!   [`IncomingPacket::read`], [`IncomingPacket::read_exact`] and the free functions
//!   [`read_prefix`] and [`read_exact`] copy a driver's message struct out of it, for any type
//!   with `zerocopy`'s `FromBytes + KnownLayout + Immutable`: the length is checked before a
//!   value exists, the one copy has no alignment requirement, and a short payload is a
//!   [`PayloadError`] carrying both lengths, never a panic.
//! * [`IncomingPacket::external_data`] asks for the packet's external data
//!   (`VmbChannelPacketGetExternalData`) and answers with a value, [`ExternalData::Ready`] or
//!   [`ExternalData::Pending`]. The [`ExternalDataView`] in `Ready` borrows the token, so it
//!   cannot be used after the completion that unpins the guest pages behind it (compile-fail
//!   test `external_view_used_after_completion`).
//!
//! # The bytes are hostile
//!
//! The payload comes from the other partition, possibly a hostile guest. Read each field once,
//! by copying the message out ([`IncomingPacket::read`] does), and validate the copy: never
//! read the same offset twice expecting the same value. The readers require
//! `FromBytes + KnownLayout + Immutable`, so every bit pattern is a valid value of the target
//! type and no padding or interior mutability is involved.
//!
//! [`IncomingPacket::data`] is a plain `&[u8]`, which is sound only if nothing writes the
//! bytes while the callback runs. This crate assumes that KMCL hands the callback a buffer the
//! other partition cannot write meanwhile (a copy of the ring data, or ring pages the peer no
//! longer owns); KMCL's documentation does not state the buffer's ownership or lifetime, and
//! no check here can see it. Copying each message out once costs nothing extra and keeps a
//! driver correct if that assumption ever fails.
//!
//! # Dropping a token without answering
//!
//! A token dropped without an answer **fails the packet** (`VmbChannelPacketFail`): the sender
//! sees its transaction fail and KMCL stops the channel's incoming queue, which is loud and
//! observable (the sim reports the queue as failed) rather than a hang at the next pause or
//! disable. The one exception is a token whose external data came back
//! [`ExternalData::Pending`]: that delivery is over, KMCL delivers the packet again, and the
//! token makes no call at all. A token leaked with `mem::forget` is never answered: nothing
//! unsafe happens, but KMCL waits for it forever when the channel pauses or closes.
//!
//! # IRQL
//!
//! The callback runs at `DISPATCH_LEVEL` or below, or at `PASSIVE_LEVEL` on a channel set for
//! incoming processing at passive level and for a packet redelivered after a deferral or
//! pending external data. The types cannot see the IRQL: a handler must not block while it
//! runs at `DISPATCH_LEVEL`, and the completion calls are made at whatever IRQL the caller has
//! (KMCL allows `<= DISPATCH_LEVEL`).
//!
//! # Client context
//!
//! `VmbChannelInitSetClientContextSize` reserves driver bytes with every incoming packet, but
//! the version 1 client interface and the exports have no function that returns them, so the
//! token offers no accessor; a driver keeps per-packet state of its own next to the
//! [`DeferredPacket`] it stores.
//!
//! # Examples
//!
//! A VSP whose handler reads a request, answers with a typed response and fails what it cannot
//! parse, run on the sim with a client that sends it two requests. The message types derive
//! `zerocopy`'s traits (add `zerocopy` with its `derive` feature to the driver's
//! dependencies).
//!
//! ```
//! use std::pin::pin;
//! use std::ptr::NonNull;
//!
//! use vmbus_kmcl::channel::{ChannelSlot, Client, ClientBuilder, Handler, OpenView, Server};
//! use vmbus_kmcl::channel::ServerBuilder;
//! use vmbus_kmcl::dispatch::{ChannelBackend, Linked};
//! use vmbus_kmcl::packet::IncomingPacket;
//! use vmbus_kmcl::{guid, DeviceRef, Error, Guid, NtStatus};
//! use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
//!
//! #[derive(FromBytes, KnownLayout, Immutable, IntoBytes)]
//! #[repr(C)]
//! struct Request {
//!     id: u32,
//!     value: u32,
//! }
//!
//! #[derive(IntoBytes, Immutable)]
//! #[repr(C)]
//! struct Response {
//!     id: u32,
//!     doubled: u32,
//! }
//!
//! struct Doubler;
//!
//! impl<K: ChannelBackend> Handler<Server, K> for Doubler {
//!     fn process_packet(&self, _: &OpenView<'_, Server, K>, packet: IncomingPacket<'_, K>) {
//!         match packet.read::<Request>() {
//!             Ok((request, _rest)) => packet.complete_with(&Response {
//!                 id: request.id,
//!                 doubled: request.value.wrapping_mul(2),
//!             }),
//!             Err(_too_short) => packet.fail(),
//!         }
//!     }
//! }
//!
//! struct Vsc;
//!
//! impl<K: ChannelBackend> Handler<Client, K> for Vsc {
//!     fn process_packet(&self, _: &OpenView<'_, Client, K>, packet: IncomingPacket<'_, K>) {
//!         packet.complete_empty();
//!     }
//! }
//!
//! const TYPE: Guid = guid!("8a0f6c52-3b1e-4d7a-9c2b-5e4f3a2b1c0d");
//! const INSTANCE: Guid = guid!("8a0f6c52-3b1e-4d7a-9c2b-000000000001");
//!
//! let bus = vmbus_kmcl_sim::Bus::new();
//! // SAFETY: the sim's device objects live as long as the bus.
//! let root = unsafe { DeviceRef::from_raw(NonNull::new(bus.root_device()).unwrap()) };
//! // SAFETY: as above.
//! let guest = unsafe { DeviceRef::from_raw(NonNull::new(bus.guest_device()).unwrap()) };
//!
//! let mut vsp_slot = pin!(ChannelSlot::new(root, Linked, Doubler));
//! let mut vsp = ServerBuilder::allocate(vsp_slot.as_mut())?;
//! vsp.set_interface_id(TYPE, INSTANCE)?;
//! let vsp = vsp.enable()?;
//! vsp.start();
//! let mut vsc_slot = pin!(ChannelSlot::new(guest, Linked, Vsc));
//! let mut vsc = ClientBuilder::allocate(vsc_slot.as_mut())?;
//! vsc.set_target(TYPE, Some(INSTANCE))?;
//! let vsc = vsc.enable()?;
//! bus.run_until_idle();
//!
//! let mut response = [0u8; 8];
//! let reply = vsc.request(Request { id: 1, value: 21 }.as_bytes(), &mut response, None)?;
//! assert_eq!(reply, Response { id: 1, doubled: 42 }.as_bytes());
//! // Too short for a `Request`: the handler fails it, and the sender sees the failure.
//! let short = vsc.request(b"hi", &mut response, None);
//! assert_eq!(short, Err(Error::Status(NtStatus::UNSUCCESSFUL)));
//!
//! drop((vsc, vsp));
//! bus.assert_no_leaks();
//! # Ok::<(), Error>(())
//! ```

use core::cell::Cell;
use core::marker::PhantomData;
use core::mem::{size_of, ManuallyDrop};
use core::ptr::NonNull;

use vmbus_kmcl_sys::{
    MDL, PMDL, PVOID, VMBPACKETCOMPLETION, VMBPACKETCOMPLETION__,
    VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY,
    VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA,
};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::dispatch::Kmcl;
use crate::error::{Error, Result};
use crate::status::NtStatus;

bitflags::bitflags! {
    /// The flags KMCL passes with a delivered packet (`VMBUS_CHANNEL_PROCESS_PACKET_FLAG_*`).
    ///
    /// Bits KMCL sets that this version does not name are kept, not dropped.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    #[repr(transparent)]
    #[doc(alias = "VMBUS_CHANNEL_PROCESS_PACKET_FLAGS")]
    pub struct PacketFlags: u32 {
        /// `VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA`: the packet references external
        /// data; fetch it with [`IncomingPacket::external_data`].
        #[doc(alias = "VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA")]
        const EXTERNAL_DATA = VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA;
    }
}

bitflags::bitflags! {
    /// How to map a packet's external data (`VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_*`), for
    /// [`IncomingPacket::external_data`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    #[repr(transparent)]
    #[doc(alias = "VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS")]
    pub struct ExternalDataFlags: u32 {
        /// `VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY`: map the guest pages read-only.
        #[doc(alias = "VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY")]
        const READ_ONLY = VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY;
    }
}

/// A payload too short (or too long) for the message read from it.
///
/// Returned by the readers of this module before any value of the message type exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The payload holds fewer bytes than the message type.
    #[error("payload too short: the message needs {needed} bytes, {available} are present")]
    TooShort {
        /// Size of the message type in bytes.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// [`read_exact`] found bytes after the message.
    #[error("payload has {actual} bytes, the message is exactly {expected}")]
    TrailingBytes {
        /// Size of the message type in bytes.
        expected: usize,
        /// Bytes present.
        actual: usize,
    },
}

/// Copies a `T` out of the start of `bytes` and returns it with the bytes after it.
///
/// The copy has no alignment requirement and reads each byte once.
///
/// # Errors
///
/// [`PayloadError::TooShort`] when `bytes` is shorter than `T`.
///
/// # Examples
///
/// ```
/// use vmbus_kmcl::packet::{read_prefix, PayloadError};
///
/// let (first, rest) = read_prefix::<[u8; 2]>(&[1, 2, 3]).unwrap();
/// assert_eq!((first, rest), ([1, 2], &[3u8][..]));
/// assert!(matches!(
///     read_prefix::<u32>(&[1, 2]),
///     Err(PayloadError::TooShort { needed: 4, available: 2 })
/// ));
/// ```
#[inline]
pub fn read_prefix<T>(bytes: &[u8]) -> core::result::Result<(T, &[u8]), PayloadError>
where
    T: FromBytes + KnownLayout + Immutable,
{
    let Some((head, rest)) = bytes.split_at_checked(size_of::<T>()) else {
        return Err(PayloadError::TooShort {
            needed: size_of::<T>(),
            available: bytes.len(),
        });
    };
    // One unaligned copy of exactly `size_of::<T>()` bytes, as zerocopy's `read_from_prefix`
    // makes, spelled as a typed read so that the compiler loads `T` field by field, as a C
    // driver's `RtlCopyMemory` into a local does (one instruction less on the receive gate).
    // SAFETY: `head` is `size_of::<T>()` initialised bytes, readable and without alignment
    // requirement for `read_unaligned`, and `T: FromBytes` makes every such byte pattern a
    // valid `T`.
    let value = unsafe { head.as_ptr().cast::<T>().read_unaligned() };
    Ok((value, rest))
}

/// Copies a `T` out of `bytes`, which must be exactly as long as `T`.
///
/// # Errors
///
/// [`PayloadError::TooShort`] when `bytes` is shorter than `T`, [`PayloadError::TrailingBytes`]
/// when it is longer.
///
/// # Examples
///
/// ```
/// use vmbus_kmcl::packet::{read_exact, PayloadError};
///
/// assert_eq!(read_exact::<u16>(&[1, 0]), Ok(1));
/// assert!(matches!(
///     read_exact::<u16>(&[1, 0, 0]),
///     Err(PayloadError::TrailingBytes { expected: 2, actual: 3 })
/// ));
/// ```
#[inline]
pub fn read_exact<T>(bytes: &[u8]) -> core::result::Result<T, PayloadError>
where
    T: FromBytes + KnownLayout + Immutable,
{
    let (value, rest) = read_prefix::<T>(bytes)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(PayloadError::TrailingBytes {
            expected: size_of::<T>(),
            actual: bytes.len(),
        })
    }
}

/// What [`IncomingPacket::external_data`] found.
#[derive(Debug, Clone, Copy)]
#[must_use = "a pending answer means: return from the callback without completing the packet"]
pub enum ExternalData<'t> {
    /// The external data is pinned and described by the view, valid until the packet is
    /// completed or failed.
    Ready(ExternalDataView<'t>),
    /// KMCL is still paging the data in (`STATUS_PENDING`). This delivery is over: return from
    /// the callback. KMCL delivers the packet again (possibly at another IRQL), and then the
    /// data is ready. The token of this delivery makes no further call: completing, failing,
    /// deferring or dropping it does nothing, and a [`DeferredPacket`] detached from it does
    /// nothing either.
    Pending,
}

/// The external data of an incoming packet: a locked MDL that KMCL owns.
///
/// The MDL has no system virtual address; a driver that needs one maps it itself
/// (`MmGetSystemAddressForMdlSafe`) and unmaps it before completing the packet, or passes the
/// MDL down for DMA. The driver must not free it.
///
/// # Invariants
///
/// `mdl` is the MDL `VmbChannelPacketGetExternalData` returned with `STATUS_SUCCESS` for the
/// token `'t` borrows, valid until that token completes or fails the packet.
#[derive(Debug, Clone, Copy)]
pub struct ExternalDataView<'t> {
    mdl: NonNull<MDL>,
    _token: PhantomData<&'t ()>,
}

impl ExternalDataView<'_> {
    /// The MDL describing the external data, valid while this view is (until the packet is
    /// completed). KMCL frees it; the caller must not.
    #[inline]
    pub fn as_raw(&self) -> PMDL {
        self.mdl.as_ptr()
    }
}

/// Where a token stands with its external data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum External {
    /// Not asked for (or the request failed).
    NotAsked,
    /// `STATUS_SUCCESS` with this MDL.
    Ready(NonNull<MDL>),
    /// `STATUS_PENDING`: KMCL redelivers the packet; the token must make no call.
    Pending,
}

/// The parts both tokens share: the backend and the delivery.
///
/// # Invariants
///
/// `backend` is the KMCL that delivered `packet` and stays valid until the packet is answered;
/// `data`/`len` are the callback's payload (`data` dangling when `len` is 0).
struct Delivery<B: Kmcl> {
    backend: B,
    packet: NonNull<VMBPACKETCOMPLETION__>,
    data: NonNull<u8>,
    len: u32,
    flags: PacketFlags,
}

/// A delivery taken out of its token to be answered, and whether it still may be.
///
/// # Invariants
///
/// Unless `external` is [`External::Pending`], `delivery` is unanswered. A value exists only
/// inside a token, or inside a consuming method of a token that took it out (moving it, so
/// the token's `Drop` does not run), and each of those makes exactly one answering call on it.
struct Answer<B: Kmcl> {
    delivery: Delivery<B>,
    external: External,
}

impl<B: Kmcl> Answer<B> {
    /// `VmbChannelPacketComplete` with `response`, or a fail when it is too long.
    #[inline(always)]
    fn complete(&self, response: &[u8]) -> Result<()> {
        let Ok(len) = u32::try_from(response.len()) else {
            self.fail();
            return Err(Error::LengthTooLarge);
        };
        // SAFETY: `response` is readable for `len` bytes.
        unsafe { self.complete_raw(response.as_ptr().cast_mut().cast(), len) };
        Ok(())
    }

    /// `VmbChannelPacketComplete` with the bytes of `response`.
    #[inline(always)]
    fn complete_with<T: IntoBytes + Immutable>(&self, response: &T) {
        let len = const { response_len::<T>() };
        // SAFETY: `as_bytes` is `size_of::<T>()` readable bytes, which is `len`.
        unsafe { self.complete_raw(response.as_bytes().as_ptr().cast_mut().cast(), len) };
    }

    /// `VmbChannelPacketComplete` without a response.
    #[inline(always)]
    fn complete_empty(&self) {
        // SAFETY: NULL and 0: no response.
        unsafe { self.complete_raw(core::ptr::null_mut(), 0) };
    }

    /// `VmbChannelPacketComplete`, unless KMCL redelivers the packet.
    ///
    /// # Safety
    ///
    /// `response` is NULL or readable for `len` bytes.
    #[inline(always)]
    unsafe fn complete_raw(&self, response: PVOID, len: u32) {
        if self.external != External::Pending {
            let packet = self.delivery.packet.as_ptr();
            // SAFETY:
            // - the delivery is unanswered (invariant, not pending) and this is its one answer
            //   (invariant), made through the backend that delivered it;
            // - `response`/`len` are NULL or readable (caller).
            unsafe {
                self.delivery
                    .backend
                    .channel_packet_complete(packet, response, len)
            };
        }
    }

    /// `VmbChannelPacketFail`, unless KMCL redelivers the packet.
    #[inline(always)]
    fn fail(&self) {
        if self.external != External::Pending {
            let packet = self.delivery.packet.as_ptr();
            // SAFETY: the delivery is unanswered (invariant, not pending) and this is its one
            // answer (invariant), made through the backend that delivered it.
            unsafe { self.delivery.backend.channel_packet_fail(packet) };
        }
    }
}

/// The four answers both tokens offer, each taking the token by value.
macro_rules! answers {
    () => {
        /// Completes the packet with `response` (`VmbChannelPacketComplete`); KMCL sends the
        /// bytes back when the sender waits for a completion. `<= DISPATCH_LEVEL`.
        ///
        /// # Errors
        ///
        /// [`Error::LengthTooLarge`] when `response` is longer than `u32::MAX` bytes; the
        /// packet is then failed instead (`VmbChannelPacketFail`), so it is still answered
        /// once.
        #[doc(alias = "VmbChannelPacketComplete")]
        #[inline]
        pub fn complete(self, response: &[u8]) -> Result<()> {
            self.into_answer().complete(response)
        }

        /// Completes the packet with the bytes of `response` (`VmbChannelPacketComplete`).
        /// `<= DISPATCH_LEVEL`. A response type longer than `u32::MAX` bytes fails to build.
        #[doc(alias = "VmbChannelPacketComplete")]
        #[inline]
        pub fn complete_with<T: IntoBytes + Immutable>(self, response: &T) {
            self.into_answer().complete_with(response);
        }

        /// Completes the packet without a response (`VmbChannelPacketComplete` with NULL, 0).
        /// `<= DISPATCH_LEVEL`.
        #[doc(alias = "VmbChannelPacketComplete")]
        #[inline]
        pub fn complete_empty(self) {
            self.into_answer().complete_empty();
        }

        /// Fails the packet (`VmbChannelPacketFail`): for a packet that cannot be processed,
        /// such as a malformed one. KMCL stops the channel's incoming queue.
        #[doc(alias = "VmbChannelPacketFail")]
        #[inline]
        pub fn fail(self) {
            self.into_answer().fail();
        }
    };
}

/// Marks a type as bound to the running callback `'cb`: invariant in `'cb`, and neither `Send`
/// nor `Sync`.
type Inline<'cb> = PhantomData<(*mut (), fn(&'cb ()) -> &'cb ())>;

/// An incoming packet while KMCL's process-packet callback runs
/// (`EvtVmbChannelProcessPacket`).
///
/// `'cb` is the callback's own lifetime, invariant, so the token cannot be kept past the
/// callback; `B` is the KMCL backend that delivered the packet, zero-sized (`Linked`) or a
/// shared reference to a queried table (see [`dispatch`](crate::dispatch)), which a
/// [`DeferredPacket`] detached from this token keeps. The token is not `Clone` and not `Send`.
///
/// Answer it with exactly one of [`complete`](Self::complete),
/// [`complete_with`](Self::complete_with), [`complete_empty`](Self::complete_empty),
/// [`fail`](Self::fail), [`defer_to_passive`](Self::defer_to_passive), or hand it over with
/// [`detach`](Self::detach). Dropping it unanswered fails the packet (see the
/// [module docs](self#dropping-a-token-without-answering)).
///
/// # Invariants
///
/// `delivery` is unanswered and `external` records what `VmbChannelPacketGetExternalData`
/// returned for it; the payload stays readable and the callback keeps running for `'cb`.
#[doc(alias = "VMBPACKETCOMPLETION")]
#[doc(alias = "EvtVmbChannelProcessPacket")]
#[must_use = "an incoming packet must be completed, failed, deferred or detached; dropping it fails it"]
pub struct IncomingPacket<'cb, B: Kmcl> {
    delivery: Delivery<B>,
    external: Cell<External>,
    _callback: Inline<'cb>,
}

impl<'cb, B: Kmcl> IncomingPacket<'cb, B> {
    /// The token of one delivery, made by the process-packet trampoline.
    ///
    /// # Safety
    ///
    /// The trampoline vouches that:
    /// - `packet` is the non-NULL `VMBPACKETCOMPLETION` KMCL passed to the running
    ///   `EvtVmbChannelProcessPacket` of its channel (whose `VMBCHANNEL` the trampoline used to
    ///   find the handler), and no other token for this delivery exists;
    /// - `buffer` is readable for `length` bytes until the callback returns, or NULL (then no
    ///   byte is read, whatever `length` says);
    /// - `flags` is the `Flags` argument KMCL passed;
    /// - `backend` is the KMCL that delivered the packet (the one the channel was allocated
    ///   through) and stays valid until the packet is answered, which a borrowed backend's
    ///   lifetime must cover;
    /// - `'cb` ends no later than the callback.
    #[inline(always)]
    pub(crate) unsafe fn from_raw(
        backend: B,
        packet: VMBPACKETCOMPLETION,
        buffer: PVOID,
        length: u32,
        flags: u32,
    ) -> Self {
        // SAFETY: KMCL passes a non-NULL packet (the caller vouches).
        let packet = unsafe { NonNull::new_unchecked(packet) };
        let (data, len) = match NonNull::new(buffer.cast::<u8>()) {
            Some(data) => (data, length),
            // A NULL buffer carries no bytes, whatever the length says.
            None => (NonNull::dangling(), 0),
        };
        // INVARIANT: a fresh, unanswered delivery with its payload and backend (caller).
        Self {
            delivery: Delivery {
                backend,
                packet,
                data,
                len,
                flags: PacketFlags::from_bits_retain(flags),
            },
            external: Cell::new(External::NotAsked),
            _callback: PhantomData,
        }
    }

    /// The payload: exactly the `BufferLength` bytes KMCL delivered, VMBus and KMCL headers
    /// stripped. Untrusted; read it with [`read`](Self::read) or [`read_prefix`].
    #[inline]
    pub fn data(&self) -> &[u8] {
        // CAST: u32 to usize, lossless on the 64-bit targets this crate builds for.
        let len = self.delivery.len as usize;
        // SAFETY: `data` is readable for `len` bytes while the callback runs, which outlasts
        // `&self` (type invariant); for a NULL buffer it is dangling with `len` 0.
        unsafe { core::slice::from_raw_parts(self.delivery.data.as_ptr(), len) }
    }

    /// The payload's length in bytes (`BufferLength`).
    #[inline]
    pub fn len(&self) -> usize {
        // CAST: u32 to usize, lossless on the 64-bit targets this crate builds for.
        self.delivery.len as usize
    }

    /// Whether the payload is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.delivery.len == 0
    }

    /// The flags KMCL passed with the packet.
    #[inline]
    pub fn flags(&self) -> PacketFlags {
        self.delivery.flags
    }

    /// Copies a `T` out of the start of the payload; returns it with the bytes after it.
    ///
    /// # Errors
    ///
    /// [`PayloadError::TooShort`] when the payload is shorter than `T`.
    #[inline]
    pub fn read<T>(&self) -> core::result::Result<(T, &[u8]), PayloadError>
    where
        T: FromBytes + KnownLayout + Immutable,
    {
        read_prefix(self.data())
    }

    /// Copies a `T` out of the payload, which must be exactly as long as `T`.
    ///
    /// # Errors
    ///
    /// [`PayloadError::TooShort`] or [`PayloadError::TrailingBytes`].
    #[inline]
    pub fn read_exact<T>(&self) -> core::result::Result<T, PayloadError>
    where
        T: FromBytes + KnownLayout + Immutable,
    {
        read_exact(self.data())
    }

    /// Asks KMCL for the packet's external data (`VmbChannelPacketGetExternalData`).
    ///
    /// `STATUS_PENDING` is the value [`ExternalData::Pending`], not an error: return from the
    /// callback then, and the packet comes again. Once the data is ready, later calls return
    /// the same view without calling KMCL again (with the flags of the first call).
    ///
    /// # Errors
    ///
    /// - [`Error::NoExternalData`] when the packet's flags lack
    ///   [`PacketFlags::EXTERNAL_DATA`] (KMCL is not called);
    /// - the failing status of `VmbChannelPacketGetExternalData`
    ///   ([`Error::Unexpected`] for an undocumented success status, or `STATUS_SUCCESS`
    ///   without an MDL).
    #[doc(alias = "VmbChannelPacketGetExternalData")]
    pub fn external_data(&self, flags: ExternalDataFlags) -> Result<ExternalData<'_>> {
        if !self.delivery.flags.contains(PacketFlags::EXTERNAL_DATA) {
            return Err(Error::NoExternalData);
        }
        match self.external.get() {
            External::Ready(mdl) => return Ok(ExternalData::Ready(view(mdl))),
            External::Pending => return Ok(ExternalData::Pending),
            External::NotAsked => {}
        }
        let mut mdl: PMDL = core::ptr::null_mut();
        let packet = self.delivery.packet.as_ptr();
        // SAFETY: the delivery is unanswered and its callback is running (type invariant);
        // `mdl` is a valid place for the result.
        let status = unsafe {
            self.delivery
                .backend
                .channel_packet_get_external_data(packet, flags.bits(), &mut mdl)
        };
        if status == NtStatus::PENDING.to_raw() {
            self.external.set(External::Pending);
            return Ok(ExternalData::Pending);
        }
        if status != NtStatus::SUCCESS.to_raw() {
            return Err(Error::from_failed_call(status));
        }
        let Some(mdl) = NonNull::new(mdl) else {
            return Err(Error::Unexpected(NtStatus::SUCCESS));
        };
        self.external.set(External::Ready(mdl));
        Ok(ExternalData::Ready(view(mdl)))
    }

    /// Takes the delivery out without running `Drop`.
    #[inline(always)]
    fn into_answer(self) -> Answer<B> {
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped or used again, so the delivery is moved out once.
        let delivery = unsafe { core::ptr::read(&this.delivery) };
        Answer {
            delivery,
            external: this.external.get(),
        }
    }

    answers!();

    /// Hands the packet back to KMCL for delivery again at `PASSIVE_LEVEL`
    /// (`VmbChannelPacketDeferToPassive`). Only the inline token has this method: a
    /// [`DeferredPacket`] cannot defer.
    #[doc(alias = "VmbChannelPacketDeferToPassive")]
    #[inline]
    pub fn defer_to_passive(self) {
        let answer = self.into_answer();
        if answer.external != External::Pending {
            let packet = answer.delivery.packet.as_ptr();
            // SAFETY: the token was consumed, so this is its one answer, and it is made inline:
            // the token exists only while its callback runs (`'cb`, type invariant).
            unsafe {
                answer
                    .delivery
                    .backend
                    .channel_packet_defer_to_passive(packet)
            };
        }
    }

    /// Detaches the packet for completion after the callback returns, from any thread.
    ///
    /// The payload is not carried over (KMCL documents its lifetime only for the callback):
    /// copy what the answer needs first. External data fetched with
    /// [`external_data`](Self::external_data) stays available through
    /// [`DeferredPacket::external_data`], as KMCL keeps it pinned until completion.
    #[inline]
    pub fn detach(self) -> DeferredPacket<B> {
        // INVARIANT: the delivery is unanswered (the inline token was consumed unanswered) and
        // `external` is what KMCL returned for it.
        DeferredPacket {
            answer: self.into_answer(),
        }
    }
}

impl<B: Kmcl> Drop for IncomingPacket<'_, B> {
    /// Fails the unanswered packet (`VmbChannelPacketFail`), or does nothing when its external
    /// data is pending (KMCL delivers it again).
    fn drop(&mut self) {
        if self.external.get() != External::Pending {
            let packet = self.delivery.packet.as_ptr();
            // SAFETY: the token is dropped unanswered (every answer consumes it without
            // running `Drop`): this is its one answer, through the backend that delivered it.
            unsafe { self.delivery.backend.channel_packet_fail(packet) };
        }
    }
}

impl<B: Kmcl> core::fmt::Debug for IncomingPacket<'_, B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IncomingPacket")
            .field("packet", &self.delivery.packet)
            .field("len", &self.delivery.len)
            .field("flags", &self.delivery.flags)
            .finish_non_exhaustive()
    }
}

/// An incoming packet detached from its callback with [`IncomingPacket::detach`], to be
/// completed later, from any thread.
///
/// Answer it with exactly one of [`complete`](Self::complete),
/// [`complete_with`](Self::complete_with), [`complete_empty`](Self::complete_empty) or
/// [`fail`](Self::fail); there is no `defer_to_passive` (KMCL allows deferral only inline).
/// Dropping it unanswered fails the packet. KMCL waits for it before the channel pauses or
/// closes, so answer it promptly. It is `Send` when the backend is (`Linked`, or `&T` for a
/// `Sync` table).
///
/// # Invariants
///
/// `answer` is unanswered, unless its `external` is `External::Pending` (then KMCL
/// redelivers the packet and the token makes no call).
#[must_use = "a deferred packet must be completed or failed; dropping it fails it"]
pub struct DeferredPacket<B: Kmcl> {
    answer: Answer<B>,
}

// SAFETY: a detached token holds the delivery's handle, which KMCL lets any thread complete or
// fail (completion is allowed "inline or later"), an MDL KMCL keeps pinned until then, and the
// backend, which may cross threads because `B: Send`. It never reads the callback's payload.
unsafe impl<B: Kmcl + Send> Send for DeferredPacket<B> {}

// SAFETY: `&DeferredPacket` only reads plain fields and hands out MDL views; every call to KMCL
// needs the token by value.
unsafe impl<B: Kmcl + Sync> Sync for DeferredPacket<B> {}

impl<B: Kmcl> DeferredPacket<B> {
    /// Takes the delivery out without running `Drop`.
    #[inline(always)]
    fn into_answer(self) -> Answer<B> {
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped or used again, so the answer is moved out once.
        unsafe { core::ptr::read(&this.answer) }
    }

    /// The flags KMCL passed with the packet.
    #[inline]
    pub fn flags(&self) -> PacketFlags {
        self.answer.delivery.flags
    }

    /// The external data fetched while the packet was inline, if it was ready then. The view
    /// borrows this token, so it cannot outlive the completion.
    #[doc(alias = "VmbChannelPacketGetExternalData")]
    #[inline]
    pub fn external_data(&self) -> Option<ExternalDataView<'_>> {
        match self.answer.external {
            External::Ready(mdl) => Some(view(mdl)),
            External::NotAsked | External::Pending => None,
        }
    }

    answers!();
}

impl<B: Kmcl> Drop for DeferredPacket<B> {
    /// Fails the unanswered packet (`VmbChannelPacketFail`).
    fn drop(&mut self) {
        // The token is dropped unanswered (every answer consumes it without running `Drop`):
        // this is its one answer.
        self.answer.fail();
    }
}

impl<B: Kmcl> core::fmt::Debug for DeferredPacket<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DeferredPacket")
            .field("packet", &self.answer.delivery.packet)
            .field("flags", &self.answer.delivery.flags)
            .finish_non_exhaustive()
    }
}

/// A view of `mdl` for the lifetime of the token it came from.
#[inline]
fn view<'t>(mdl: NonNull<MDL>) -> ExternalDataView<'t> {
    // INVARIANT: callers pass the MDL KMCL returned with STATUS_SUCCESS for the token they
    // borrow.
    ExternalDataView {
        mdl,
        _token: PhantomData,
    }
}

/// `size_of::<T>()` as the `u32` KMCL takes; a response type larger than that fails to build.
const fn response_len<T>() -> u32 {
    assert!(
        size_of::<T>() <= u32::MAX as usize,
        "a response type must fit KMCL's 32-bit length"
    );
    // CAST: checked just above.
    size_of::<T>() as u32
}

#[cfg(test)]
mod tests;
