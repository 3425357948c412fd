//! Saving and restoring a server channel's state (VM save/restore, live migration).
//!
//! A VSP saves a channel in chunks: `VmbChannelSaveBegin`, then `VmbChannelSaveContinue` again
//! and again, each call filling the caller's buffer with one chunk, until it reports the last
//! one, then `VmbChannelSaveEnd`. On the other side of the save, a fresh server channel takes
//! the chunks back, whole and in order, with `VmbChannelRestoreFromBuffer` before it is
//! enabled. KMCL saves its own state of every packet object still in use; the VSP adds its own
//! per-transaction state through two callbacks, `EvtVmbChannelSavePacket` and
//! `EvtVmbChannelRestorePacket`.
//!
//! Here:
//!
//! * [`Channel::save`](super::Channel::save) begins a save and returns a [`SaveSession`]
//!   borrowing the channel exclusively (one save at a time, by the borrow). Its
//!   [`next_chunk`](SaveSession::next_chunk) answers with a [`SaveChunk`] value:
//!   [`More`](SaveChunk::More) (`STATUS_BUFFER_OVERFLOW`: a chunk, and more follows),
//!   [`Last`](SaveChunk::Last) (`STATUS_SUCCESS`) or
//!   [`BufferTooSmall`](SaveChunk::BufferTooSmall) (`STATUS_BUFFER_TOO_SMALL`, with the bytes
//!   the next call needs). None of the three is an error. Dropping the session ends the save
//!   (`VmbChannelSaveEnd`), finished or not.
//! * [`ServerBuilder::restore`](super::ChannelBuilder::restore) feeds one whole chunk to a
//!   channel that is not enabled yet and answers [`Restored::NeedMore`]
//!   (`STATUS_MORE_PROCESSING_REQUIRED`, which has error severity but means "next chunk") or
//!   [`Restored::Done`].
//! * The per-packet callbacks are the methods of [`SaveRestoreHandler`], registered by
//!   [`ServerBuilder::set_save_restore_callbacks`](super::ChannelBuilder::set_save_restore_callbacks).
//!   KMCL's two-phase save protocol (a first call with no buffer asks for the size) is split
//!   into [`saved_size`](SaveRestoreHandler::saved_size) and
//!   [`save_packet`](SaveRestoreHandler::save_packet); a restored packet arrives as a
//!   [`PacketToRestore`] whose [`restore`](PacketToRestore::restore) allocates the new packet
//!   object and hands it KMCL's state (`VmbPacketAllocate`, `VmbPacketRestore`).
//!
//! A restored packet completes through KMCL's default completion routine, which frees it; the
//! VSP's own bookkeeping for the transaction is rebuilt from the bytes it saved.
//!
//! # Examples
//!
//! Saving a server channel with a small buffer, and restoring the chunks into a fresh one:
//!
//! ```
//! use core::pin::pin;
//! use vmbus_kmcl::channel::save_restore::{
//!     InFlightPacket, PacketToRestore, Restored, SaveChunk, SaveRestoreHandler,
//! };
//! use vmbus_kmcl::channel::{ChannelSlot, Handler, OpenView, Server, ServerBuilder};
//! use vmbus_kmcl::dispatch::{ChannelBackend, KmclServer, Linked};
//! use vmbus_kmcl::packet::IncomingPacket;
//! use vmbus_kmcl::{guid, DeviceRef, Result};
//!
//! struct Vsp;
//! impl<K: ChannelBackend> Handler<Server, K> for Vsp {
//!     fn process_packet(&self, _: &OpenView<'_, Server, K>, packet: IncomingPacket<'_, K>) {
//!         packet.complete_empty();
//!     }
//! }
//! impl<K: ChannelBackend + KmclServer> SaveRestoreHandler<K> for Vsp {
//!     fn saved_size(&self, _: &InFlightPacket<'_>) -> u32 { 4 }
//!     fn save_packet(&self, _: &InFlightPacket<'_>, state: &mut [u8]) -> Result<()> {
//!         state[..4].copy_from_slice(b"mine");
//!         Ok(())
//!     }
//!     fn restore_packet(&self, packet: PacketToRestore<'_, K>, _state: &[u8]) -> Result<()> {
//!         packet.restore().map(|_| ())
//!     }
//! }
//!
//! let bus = vmbus_kmcl_sim::Bus::new();
//! // SAFETY: the sim's root device lives as long as the bus.
//! let root = unsafe { DeviceRef::from_raw(core::ptr::NonNull::new(bus.root_device()).unwrap()) };
//! let id = guid!("8f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b");
//!
//! let mut old = pin!(ChannelSlot::new(root, Linked, Vsp));
//! let mut builder = ServerBuilder::allocate(old.as_mut())?;
//! builder.set_interface_id(id, id)?.set_save_restore_callbacks()?;
//! let mut channel = builder.enable()?;
//!
//! let (mut chunks, mut buffer) = (Vec::new(), [0u8; 32]);
//! let mut save = channel.save()?;
//! loop {
//!     match save.next_chunk(&mut buffer)? {
//!         SaveChunk::More(chunk) => chunks.push(chunk.to_vec()),
//!         SaveChunk::Last(chunk) => { chunks.push(chunk.to_vec()); break; }
//!         SaveChunk::BufferTooSmall { required } => panic!("{required} bytes needed"),
//!     }
//! }
//! drop(save); // VmbChannelSaveEnd
//! drop(channel);
//!
//! let mut new = pin!(ChannelSlot::new(root, Linked, Vsp));
//! let mut builder = ServerBuilder::allocate(new.as_mut())?;
//! builder.set_interface_id(id, id)?.set_save_restore_callbacks()?;
//! for (index, chunk) in chunks.iter().enumerate() {
//!     let expected = if index + 1 == chunks.len() { Restored::Done } else { Restored::NeedMore };
//!     assert_eq!(builder.restore(chunk)?, expected);
//! }
//! let channel = builder.enable()?;
//! drop(channel);
//! bus.assert_no_leaks();
//! # Ok::<(), vmbus_kmcl::Error>(())
//! ```

use core::marker::PhantomData;
use core::ptr::NonNull;

use vmbus_kmcl_sys::{
    NTSTATUS, PUINT32, PVOID, UINT32, ULONG, VMBCHANNEL, VMBCHANNEL__, VMBPACKET, VMBPACKET__,
};

use super::builder::ChannelBuilder;
use super::slot::Shared;
use super::{Channel, Handler, Server};
use crate::dispatch::{ChannelBackend, KmclServer};
use crate::error::{Error, Result};
use crate::status::{to_result, NtStatus};

/// The identity of an outgoing packet object (a `VMBPACKET`), to tell a VSP's transactions
/// apart during a save; two ids are equal exactly when they name the same packet object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketId(usize);

impl PacketId {
    /// The id of the packet object `packet` (only its address is taken).
    pub fn of(packet: VMBPACKET) -> Self {
        // CAST: the address identifies the object; it is never turned back into a pointer.
        Self(packet as usize)
    }
}

/// A packet object in use while its channel is saved, as
/// [`SaveRestoreHandler::saved_size`] and [`SaveRestoreHandler::save_packet`] see it.
#[derive(Debug)]
pub struct InFlightPacket<'a> {
    packet: NonNull<VMBPACKET__>,
    _callback: PhantomData<&'a ()>,
}

impl InFlightPacket<'_> {
    /// Which packet object it is.
    pub fn id(&self) -> PacketId {
        PacketId::of(self.packet.as_ptr())
    }
}

/// One saved packet being restored, handed to [`SaveRestoreHandler::restore_packet`]: KMCL's
/// state of it, to load into a new packet object with [`restore`](Self::restore).
///
/// Dropping it without restoring leaves the saved transaction out of the restored channel.
#[must_use = "the saved packet is not restored unless `restore` is called"]
pub struct PacketToRestore<'a, K> {
    kmcl: K,
    channel: NonNull<VMBCHANNEL__>,
    library: PVOID,
    library_size: UINT32,
    _callback: PhantomData<&'a ()>,
}

impl<K: KmclServer + Copy> PacketToRestore<'_, K> {
    /// Allocates a packet object on the channel (`VmbPacketAllocate`) and loads KMCL's saved
    /// state into it (`VmbPacketRestore`): the transaction resumes, and the packet is freed by
    /// KMCL's default completion routine when it completes. Returns the new packet's id.
    /// PASSIVE_LEVEL (the restore callback's).
    ///
    /// # Errors
    ///
    /// [`Error::AllocationFailed`] when `VmbPacketAllocate` returns NULL; the failing
    /// status of `VmbPacketRestore` (the packet is freed again then).
    #[doc(alias = "VmbPacketAllocate")]
    #[doc(alias = "VmbPacketRestore")]
    pub fn restore(self) -> Result<PacketId> {
        // SAFETY: the live server channel whose restore callback runs.
        let packet = unsafe { self.kmcl.packet_allocate(self.channel.as_ptr()) };
        if packet.is_null() {
            return Err(Error::AllocationFailed);
        }
        // SAFETY:
        // - `packet` is freshly allocated and not in flight; on success KMCL keeps it and its
        //   default completion routine frees it;
        // - `library` is readable for `library_size` bytes: the state KMCL passed to the
        //   restore callback that is still running (this value borrows it).
        let status = unsafe {
            self.kmcl
                .packet_restore(packet, self.library, self.library_size)
        };
        if status != NtStatus::SUCCESS.to_raw() {
            // SAFETY: the restore failed, so the packet was never in flight; freed once.
            unsafe { self.kmcl.packet_free(packet) };
            return Err(Error::from_failed_call(status));
        }
        Ok(PacketId::of(packet))
    }
}

impl<K> core::fmt::Debug for PacketToRestore<'_, K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PacketToRestore")
            .field("library_size", &self.library_size)
            .finish_non_exhaustive()
    }
}

/// The per-packet part of a server channel's save and restore: what a VSP keeps of each
/// transaction in flight. Registered by
/// [`ServerBuilder::set_save_restore_callbacks`](super::ChannelBuilder::set_save_restore_callbacks).
///
/// All three run at PASSIVE_LEVEL, inside [`SaveSession::next_chunk`] or
/// [`ServerBuilder::restore`](super::ChannelBuilder::restore). Like every handler method,
/// a panic aborts (see [`Handler`]).
pub trait SaveRestoreHandler<K: ChannelBackend + KmclServer>: Handler<Server, K> {
    /// The number of bytes of the VSP's own state for `packet`, 0 for none
    /// (`EvtVmbChannelSavePacket` called with no buffer). KMCL then calls
    /// [`save_packet`](Self::save_packet) with at least that many bytes.
    fn saved_size(&self, packet: &InFlightPacket<'_>) -> u32;

    /// Writes the VSP's state for `packet` into `state` (`EvtVmbChannelSavePacket` with the
    /// buffer KMCL allocated, zeroed before the call; at least
    /// [`saved_size`](Self::saved_size) bytes long).
    ///
    /// # Errors
    ///
    /// An error fails the save (its status goes to KMCL; a success-class status becomes
    /// `STATUS_UNSUCCESSFUL`).
    fn save_packet(&self, packet: &InFlightPacket<'_>, state: &mut [u8]) -> Result<()>;

    /// Restores one saved packet (`EvtVmbChannelRestorePacket`): `state` is what
    /// [`save_packet`](Self::save_packet) wrote (empty when nothing was saved) and comes from
    /// a saved VM image, so validate it; `packet` brings KMCL's state back with
    /// [`PacketToRestore::restore`].
    ///
    /// # Errors
    ///
    /// An error fails the restore (as for [`save_packet`](Self::save_packet)).
    fn restore_packet(&self, packet: PacketToRestore<'_, K>, state: &[u8]) -> Result<()>;
}

/// The status a per-packet callback returns for `error` (a success-class status would report
/// success).
fn failure(error: Error) -> NTSTATUS {
    let status = error.status();
    if status.is_success() {
        NtStatus::UNSUCCESSFUL.to_raw()
    } else {
        status.to_raw()
    }
}

/// The save and restore trampolines of handler `H`.
struct Trampolines<H, K>(PhantomData<(H, K)>);

impl<H: SaveRestoreHandler<K>, K: ChannelBackend + KmclServer> Trampolines<H, K> {
    /// The slot's shared part of `channel`.
    ///
    /// # Safety
    ///
    /// `channel` is the live channel a callback registered by
    /// `set_save_restore_callbacks` of a `ChannelBuilder<Server, H, K>` runs for.
    unsafe fn shared<'c>(channel: VMBCHANNEL) -> &'c Shared<H, K> {
        // SAFETY: a live channel of backend `K`, allocated after `prepare` (the builder's
        // order).
        let pointer = unsafe { <K as crate::dispatch::sealed::Sealed>::pointer_of(channel) };
        // SAFETY: the builder pointed the channel at its slot's `Shared<H, K>` before any
        // callback was registered; the slot is pinned and outlives the channel, and callbacks
        // only read it.
        unsafe { &*pointer.cast::<Shared<H, K>>() }
    }

    /// `EvtVmbChannelSavePacket`.
    unsafe extern "C" fn save_packet(
        channel: VMBCHANNEL,
        packet: VMBPACKET,
        buffer: PVOID,
        size: UINT32,
        needed: PUINT32,
    ) -> NTSTATUS {
        // SAFETY: KMCL calls this for the live channel it was registered on.
        let shared = unsafe { Self::shared(channel) };
        let Some(packet) = NonNull::new(packet) else {
            return NtStatus::INVALID_PARAMETER_2.to_raw();
        };
        let in_flight = InFlightPacket {
            packet,
            _callback: PhantomData,
        };
        if size == 0 || buffer.is_null() {
            let bytes = shared.handler.saved_size(&in_flight);
            if !needed.is_null() {
                // SAFETY: KMCL's output for the size, writable (non-NULL checked).
                unsafe { needed.write_unaligned(bytes) };
            }
            // KMCL's protocol: fail the probe to ask for a buffer of `bytes`.
            return if bytes == 0 {
                NtStatus::SUCCESS.to_raw()
            } else {
                NtStatus::BUFFER_TOO_SMALL.to_raw()
            };
        }
        // CAST: u32 to usize, lossless on the 64-bit targets this crate builds for.
        let length = size as usize;
        // SAFETY: KMCL's output buffer, writable for `size` bytes (non-NULL checked); zeroed
        // first so the slice below covers initialised bytes.
        unsafe { core::ptr::write_bytes(buffer.cast::<u8>(), 0, length) };
        // SAFETY: the same buffer, now initialised, used only through this slice until the
        // callback returns (KMCL does not touch it meanwhile).
        let state = unsafe { core::slice::from_raw_parts_mut(buffer.cast::<u8>(), length) };
        match shared.handler.save_packet(&in_flight, state) {
            Ok(()) => NtStatus::SUCCESS.to_raw(),
            Err(error) => failure(error),
        }
    }

    /// `EvtVmbChannelRestorePacket`.
    unsafe extern "C" fn restore_packet(
        channel: VMBCHANNEL,
        library: PVOID,
        library_size: UINT32,
        state: PVOID,
        state_size: UINT32,
    ) -> NTSTATUS {
        // SAFETY: KMCL calls this for the live channel it was registered on.
        let shared = unsafe { Self::shared(channel) };
        // SAFETY: KMCL never calls a callback with a NULL channel.
        let raw = unsafe { NonNull::new_unchecked(channel) };
        let state: &[u8] = if state.is_null() || state_size == 0 {
            &[]
        } else {
            // CAST: u32 to usize, lossless on the 64-bit targets this crate builds for.
            let length = state_size as usize;
            // SAFETY: KMCL's input, readable for `state_size` bytes while the callback runs;
            // it is KMCL's copy of a saved image, not memory the guest shares.
            unsafe { core::slice::from_raw_parts(state.cast::<u8>().cast_const(), length) }
        };
        let packet = PacketToRestore {
            kmcl: shared.kmcl,
            channel: raw,
            library,
            library_size,
            _callback: PhantomData,
        };
        match shared.handler.restore_packet(packet, state) {
            Ok(()) => NtStatus::SUCCESS.to_raw(),
            Err(error) => failure(error),
        }
    }
}

/// What [`ServerBuilder::restore`](super::ChannelBuilder::restore) did with a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Restored {
    /// `STATUS_MORE_PROCESSING_REQUIRED`: the chunk was taken; pass the next one.
    NeedMore,
    /// `STATUS_SUCCESS`: the channel's state is restored.
    Done,
}

impl<'s, H: Handler<Server, K>, K: ChannelBackend + KmclServer> ChannelBuilder<'s, Server, H, K> {
    /// Registers the handler's [`SaveRestoreHandler`] methods as the per-packet save and
    /// restore callbacks (`VmbServerChannelInitSetSaveRestorePacketCallbacks`). Needed before
    /// [`restore`](Self::restore) of a save that had packets in flight, and for the VSP's own
    /// state to be part of a save.
    ///
    /// # Errors
    ///
    /// The failing status of the call.
    #[doc(alias = "VmbServerChannelInitSetSaveRestorePacketCallbacks")]
    pub fn set_save_restore_callbacks(&mut self) -> Result<&mut Self>
    where
        H: SaveRestoreHandler<K>,
    {
        // SAFETY: a live server channel in its init phase (the builder's invariant); both
        // trampolines are present and are sound for any channel whose pointer is a
        // `Shared<H, K>`, which the builder set; they are functions, callable for ever.
        to_result(unsafe {
            self.slot
                .kmcl()
                .server_channel_init_set_save_restore_packet_callbacks(
                    self.channel.as_ptr(),
                    Some(Trampolines::<H, K>::save_packet),
                    Some(Trampolines::<H, K>::restore_packet),
                )
        })?;
        Ok(self)
    }

    /// Restores one chunk of a saved channel state (`VmbChannelRestoreFromBuffer`), exactly as
    /// [`SaveSession::next_chunk`] produced it, in order. The handler's
    /// [`restore_packet`](SaveRestoreHandler::restore_packet) runs for the saved packets when
    /// the last chunk arrives.
    ///
    /// # Errors
    ///
    /// [`Error::LengthTooLarge`] for a chunk past `u32::MAX` bytes, before any call; the
    /// failing status of the call (a chunk out of order, a state of another channel type).
    #[doc(alias = "VmbChannelRestoreFromBuffer")]
    pub fn restore(&mut self, chunk: &[u8]) -> Result<Restored> {
        let length: ULONG = u32::try_from(chunk.len()).map_err(|_| Error::LengthTooLarge)?;
        // SAFETY: a live, disabled server channel (the builder's invariant); `chunk` is
        // readable for `length` bytes during the call.
        let status = unsafe {
            self.slot.kmcl().channel_restore_from_buffer(
                self.channel.as_ptr(),
                chunk.as_ptr().cast_mut().cast(),
                length,
            )
        };
        match NtStatus::from_raw(status) {
            NtStatus::SUCCESS => Ok(Restored::Done),
            NtStatus::MORE_PROCESSING_REQUIRED => Ok(Restored::NeedMore),
            _ => Err(Error::from_failed_call(status)),
        }
    }
}

/// One step of a save, from [`SaveSession::next_chunk`]. None of them is a failure.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum SaveChunk<'a> {
    /// `STATUS_BUFFER_OVERFLOW`: a chunk (the filled start of the buffer); more follows.
    More(&'a [u8]),
    /// `STATUS_SUCCESS`: the last chunk; the state is saved completely.
    Last(&'a [u8]),
    /// `STATUS_BUFFER_TOO_SMALL`: nothing was written; the next call needs a buffer of
    /// `required` bytes.
    BufferTooSmall {
        /// The bytes the next call needs.
        required: u32,
    },
}

/// A save of a server channel in progress, from [`Channel::save`](super::Channel::save); the
/// save ends (`VmbChannelSaveEnd`) when it is dropped.
///
/// # Invariants
///
/// A save was begun on the live server channel `channel` of backend `kmcl` and not ended; the
/// channel is borrowed exclusively for `'c`.
#[doc(alias = "VmbChannelSaveContinue")]
#[doc(alias = "VmbChannelSaveEnd")]
pub struct SaveSession<'c, K: KmclServer + Copy> {
    kmcl: K,
    channel: NonNull<VMBCHANNEL__>,
    _channel: PhantomData<&'c mut ()>,
}

impl<K: KmclServer + Copy> SaveSession<'_, K> {
    /// Writes the next chunk into `buffer` (`VmbChannelSaveContinue`). Keep every chunk
    /// separately, as [`restore`](super::ChannelBuilder::restore) needs them whole. The
    /// handler's [`SaveRestoreHandler`] methods run inside the first call. PASSIVE_LEVEL.
    ///
    /// # Errors
    ///
    /// The failing status of the call; [`SaveChunk::BufferTooSmall`] is not one.
    #[doc(alias = "VmbChannelSaveContinue")]
    pub fn next_chunk<'a>(&mut self, buffer: &'a mut [u8]) -> Result<SaveChunk<'a>> {
        // A buffer past 4 GiB is offered in part.
        let size: ULONG = u32::try_from(buffer.len()).unwrap_or(u32::MAX);
        let mut filled: ULONG = 0;
        let mut required: ULONG = 0;
        // SAFETY: a save in progress on the live channel (invariant); `buffer` is writable
        // for `size` bytes; both outputs are writable.
        let status = unsafe {
            self.kmcl.channel_save_continue(
                self.channel.as_ptr(),
                buffer.as_mut_ptr().cast(),
                size,
                &mut filled,
                &mut required,
            )
        };
        // Never trust the count past the buffer.
        // CAST: u32 to usize, lossless on the 64-bit targets this crate builds for.
        let filled = (filled as usize).min(buffer.len());
        match NtStatus::from_raw(status) {
            NtStatus::SUCCESS => Ok(SaveChunk::Last(&buffer[..filled])),
            NtStatus::BUFFER_OVERFLOW => Ok(SaveChunk::More(&buffer[..filled])),
            NtStatus::BUFFER_TOO_SMALL => Ok(SaveChunk::BufferTooSmall { required }),
            _ => Err(Error::from_failed_call(status)),
        }
    }
}

impl<K: KmclServer + Copy> Drop for SaveSession<'_, K> {
    /// Ends the save (`VmbChannelSaveEnd`), releasing what it allocated.
    #[doc(alias = "VmbChannelSaveEnd")]
    fn drop(&mut self) {
        // SAFETY: a save begun and not ended on the live channel (invariant), ended once.
        unsafe { self.kmcl.channel_save_end(self.channel.as_ptr()) };
    }
}

impl<K: KmclServer + Copy> core::fmt::Debug for SaveSession<'_, K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SaveSession").finish_non_exhaustive()
    }
}

impl<'s, H: Handler<Server, K>, K: ChannelBackend + KmclServer> Channel<'s, Server, H, K> {
    /// Begins saving the channel's state (`VmbChannelSaveBegin`); the session borrows the
    /// channel exclusively, so only one save runs at a time. PASSIVE_LEVEL (checked).
    ///
    /// # Errors
    ///
    /// [`Error::IrqlTooHigh`] above PASSIVE_LEVEL, before any call; the failing status of the
    /// call.
    #[doc(alias = "VmbChannelSaveBegin")]
    pub fn save(&mut self) -> Result<SaveSession<'_, K>> {
        crate::irql::require_at_most(crate::irql::PASSIVE_LEVEL)?;
        let kmcl = self.ops.kmcl();
        let channel = self.ops.non_null();
        // SAFETY: the live, enabled server channel (the channel's invariant).
        to_result(unsafe { kmcl.channel_save_begin(channel.as_ptr()) })?;
        // INVARIANT: begun on the live channel, which `&mut self` borrows for the session.
        Ok(SaveSession {
            kmcl,
            channel,
            _channel: PhantomData,
        })
    }
}
