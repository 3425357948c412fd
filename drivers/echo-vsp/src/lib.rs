//! The echo VSP (root, server side): everything the driver does, as a library with no
//! `unsafe` (`#![forbid(unsafe_code)]`), so it runs unchanged on the sim and in the kernel
//! image (`drivers/images/echo-vsp-sys`, whose thin glue supplies the device, the IRP and the
//! system-space mapping of a GPADL).
//!
//! 1. [`vm_from_ioctl`]: the control device's `IRP_MJ_DEVICE_CONTROL` handler hands it the
//!    IRP's [`Request`] and input buffer ([`echo_protocol::SetVm`]); the worker's VMBus handle is
//!    converted through the request context, which checks that the call runs in the process
//!    that sent the IRP (the seed flow).
//! 2. [`offer`]: a server channel bound to that VM, offered and started.
//! 3. [`EchoVsp`]: the channel handler: answers the version negotiation, echoes inline requests
//!    and requests whose payload is in a GPADL of the client, refuses (with an error response)
//!    an echo before a version is agreed or of an unreadable GPADL range, and fails every
//!    malformed packet (KMCL then stops the channel's incoming queue: a peer that sends
//!    malformed bytes is not served further).
//! 4. [`save`] and [`offer_restored`]: the channel state through KMCL's save protocol into
//!    caller storage, and a fresh channel restored from it.
//!
//! With the feature `sim`, `sim::SimMapper` is the emulator's [`MapSystem`] (the one
//! `unsafe` block of the crate, in that module only; without the feature the crate forbids
//! `unsafe`).
#![no_std]
#![cfg_attr(not(feature = "sim"), forbid(unsafe_code))]
#![cfg_attr(feature = "sim", deny(unsafe_code))]

use core::fmt;
use core::pin::Pin;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use echo_protocol::{
    Kind, ProtocolError, Refusal, Request as EchoRequest, Version, MAX_MESSAGE, MAX_PAYLOAD,
};
use vmbus_kmcl::channel::gpadl::{Access, GpadlHandle, GpadlMapping, SharedMemory};
use vmbus_kmcl::channel::save_restore::{
    InFlightPacket, PacketToRestore, Restored, SaveChunk, SaveRestoreHandler,
};
use vmbus_kmcl::channel::{Channel, ChannelSlot, Handler, OpenView, Server, ServerBuilder};
use vmbus_kmcl::dispatch::{ChannelBackend, KmclServer};
use vmbus_kmcl::packet::IncomingPacket;
use vmbus_kmcl::{Error, Guid, KernelHandle, Request};
use zerocopy::IntoBytes;

pub use echo_protocol::IOCTL_ECHO_SET_VM;

#[cfg(feature = "sim")]
pub mod sim;

/// The channel's interface type.
pub const INTERFACE_TYPE: Guid = Guid::from_u128(echo_protocol::INTERFACE_TYPE);
/// The channel's interface instance.
pub const INTERFACE_INSTANCE: Guid = Guid::from_u128(echo_protocol::INTERFACE_INSTANCE);

/// How the VSP reaches the pages of a mapped GPADL: the mapping is an MDL of physical pages,
/// and only the kernel glue (`MmGetSystemAddressForMdlSafe`) or the sim (its MDL bytes) can
/// turn it into an address. The implementation wraps that address with the `unsafe`
/// [`GpadlMapping::memory`], which keeps the `unsafe` out of this library.
pub trait MapSystem: Sync {
    /// The mapped memory of `mapping`, or `None` when it cannot be mapped into system space.
    fn memory<'m, A: Access, K: KmclServer + Copy>(
        &self,
        mapping: &'m GpadlMapping<'_, A, K>,
    ) -> Option<SharedMemory<'m, A>>;
}

/// What the VSP did, counted as it happened.
#[derive(Debug, Default)]
pub struct Counters {
    /// Version requests answered.
    pub versions: AtomicU64,
    /// Echo requests answered.
    pub echoes: AtomicU64,
    /// Payload bytes echoed from inline requests.
    pub inline_bytes: AtomicU64,
    /// Payload bytes read through a GPADL and echoed.
    pub gpadl_bytes: AtomicU64,
    /// Well-formed requests refused with an error response: an echo before a version, or an
    /// unreadable GPADL range.
    pub refused: AtomicU64,
    /// Malformed packets failed (which stops the channel's incoming queue).
    pub failed: AtomicU64,
}

/// The echo VSP's channel handler.
pub struct EchoVsp<M> {
    mapper: M,
    version: AtomicU32,
    counters: Counters,
}

impl<M: MapSystem> EchoVsp<M> {
    /// A VSP that has agreed no version yet.
    pub const fn new(mapper: M) -> Self {
        Self {
            mapper,
            version: AtomicU32::new(0),
            counters: Counters {
                versions: AtomicU64::new(0),
                echoes: AtomicU64::new(0),
                inline_bytes: AtomicU64::new(0),
                gpadl_bytes: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            },
        }
    }

    /// A VSP whose channel is restored with `saved` (the version it had agreed).
    pub fn restored(mapper: M, saved: &SavedState) -> Self {
        let vsp = Self::new(mapper);
        if let Some(version) = saved.version {
            vsp.version.store(version.to_wire(), Ordering::Relaxed);
        }
        vsp
    }

    /// The version agreed with the client, if any.
    pub fn version(&self) -> Option<Version> {
        match self.version.load(Ordering::Relaxed) {
            0 => None,
            raw => Some(Version::from_wire(raw)),
        }
    }

    /// What the VSP did so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Builds the response to one request into `out`; `None` for a malformed packet.
    fn answer<K: ChannelBackend + KmclServer + Copy>(
        &self,
        channel: &OpenView<'_, Server, K>,
        data: &[u8],
        out: &mut [u8; MAX_MESSAGE],
    ) -> Option<usize> {
        let request = EchoRequest::parse(data).ok()?;
        let refuse = |out: &mut [u8; MAX_MESSAGE], sequence, refusal| {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            copy(
                out,
                echo_protocol::error_response(sequence, refusal).as_bytes(),
            )
        };
        match request {
            EchoRequest::Version { sequence, offered } => {
                let agreed = Version::CURRENT.negotiate(offered);
                self.version
                    .store(agreed.map_or(0, Version::to_wire), Ordering::Relaxed);
                self.counters.versions.fetch_add(1, Ordering::Relaxed);
                let response = echo_protocol::version_response(sequence, agreed, Version::CURRENT);
                copy(out, response.as_bytes())
            }
            // Echoes only after a version is agreed.
            EchoRequest::Inline { sequence, .. } | EchoRequest::Gpadl { sequence, .. }
                if self.version().is_none() =>
            {
                refuse(out, sequence, Refusal::NotNegotiated)
            }
            EchoRequest::Inline { sequence, payload } => {
                let n =
                    echo_protocol::encode_echo_response(out, Kind::EchoInline, sequence, payload)
                        .ok()?;
                self.counters
                    .inline_bytes
                    .fetch_add(payload.len() as u64, Ordering::Relaxed);
                self.counters.echoes.fetch_add(1, Ordering::Relaxed);
                Some(n)
            }
            EchoRequest::Gpadl {
                sequence,
                gpadl,
                offset,
                length,
            } => {
                let mut payload = [0u8; MAX_PAYLOAD];
                // CAST: at most MAX_PAYLOAD (checked by the parser).
                let payload = &mut payload[..length as usize];
                if self
                    .read_gpadl(channel, GpadlHandle::from_raw(gpadl), offset, payload)
                    .is_none()
                {
                    return refuse(out, sequence, Refusal::GpadlUnavailable);
                }
                let n =
                    echo_protocol::encode_echo_response(out, Kind::EchoGpadl, sequence, payload)
                        .ok()?;
                self.counters
                    .gpadl_bytes
                    .fetch_add(u64::from(length), Ordering::Relaxed);
                self.counters.echoes.fetch_add(1, Ordering::Relaxed);
                Some(n)
            }
        }
    }

    /// Copies `out.len()` bytes at `offset` of the client's GPADL, mapped for the copy;
    /// `None` when the GPADL is unknown or the range is outside it. The mapping is read-only
    /// (the VSP never writes the client's memory), so a GPADL shared with or without the
    /// read-only flag is served.
    fn read_gpadl<K: ChannelBackend + KmclServer + Copy>(
        &self,
        channel: &OpenView<'_, Server, K>,
        gpadl: GpadlHandle,
        offset: u32,
        out: &mut [u8],
    ) -> Option<()> {
        let mapping = channel.map_gpadl_read_only(gpadl).ok()?;
        let memory = self.mapper.memory(&mapping)?;
        // CAST: u32 to usize, lossless on the driver targets.
        memory.read(offset as usize, out).ok()
    }
}

/// Copies `message` to the start of `out`; returns its length.
fn copy(out: &mut [u8; MAX_MESSAGE], message: &[u8]) -> Option<usize> {
    out.get_mut(..message.len())?.copy_from_slice(message);
    Some(message.len())
}

impl<M: MapSystem, K: ChannelBackend + KmclServer + Copy> Handler<Server, K> for EchoVsp<M> {
    fn process_packet(&self, channel: &OpenView<'_, Server, K>, packet: IncomingPacket<'_, K>) {
        let mut out = [0u8; MAX_MESSAGE];
        match self.answer(channel, packet.data(), &mut out) {
            Some(n) => {
                if packet.complete(&out[..n]).is_err() {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                packet.fail();
            }
        }
    }
}

/// The echo VSP sends no packets of its own, so a packet in flight at save time is one KMCL
/// restores by itself: the VSP keeps no per-packet state (size 0) and re-creates each packet
/// on restore.
impl<M: MapSystem, K: ChannelBackend + KmclServer + Copy> SaveRestoreHandler<K> for EchoVsp<M> {
    fn saved_size(&self, _packet: &InFlightPacket<'_>) -> u32 {
        0
    }

    fn save_packet(
        &self,
        _packet: &InFlightPacket<'_>,
        _state: &mut [u8],
    ) -> vmbus_kmcl::Result<()> {
        Ok(())
    }

    fn restore_packet(
        &self,
        packet: PacketToRestore<'_, K>,
        _state: &[u8],
    ) -> vmbus_kmcl::Result<()> {
        packet.restore().map(|_| ())
    }
}

/// Why the IOCTL that names the VM failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoctlError {
    /// The input buffer is not one [`echo_protocol::SetVm`].
    Malformed(ProtocolError),
    /// The request context refused the handle, or the conversion failed.
    Kmcl(Error),
}

impl fmt::Display for IoctlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(error) => write!(f, "malformed IOCTL input: {error}"),
            Self::Kmcl(error) => write!(f, "VMBus handle refused: {error}"),
        }
    }
}

impl IoctlError {
    /// The `NTSTATUS` the dispatch routine completes the IRP with.
    pub fn status(self) -> vmbus_kmcl::NtStatus {
        match self {
            Self::Malformed(_) => vmbus_kmcl::NtStatus::INVALID_PARAMETER,
            Self::Kmcl(error) => error.status(),
        }
    }
}

/// The seed flow of [`echo_protocol::IOCTL_ECHO_SET_VM`]: parses the input buffer and converts
/// the worker's VMBus handle through `request`, which checks that this runs in the thread of
/// the process that sent the IRP, at PASSIVE_LEVEL
/// ([`Request::convert_vmbus_handle_with`]).
///
/// # Errors
///
/// [`IoctlError::Malformed`] for an input that is not one `SetVm`; [`IoctlError::Kmcl`] with
/// the request context's or KMCL's error.
pub fn vm_from_ioctl<K: KmclServer + ?Sized>(
    kmcl: &K,
    request: &Request<'_>,
    input: &[u8],
) -> Result<KernelHandle, IoctlError> {
    let value = echo_protocol::SetVm::parse(input).map_err(IoctlError::Malformed)?;
    // CAST: a handle value the worker widened to 64 bits; the driver targets are 64-bit.
    let raw = core::ptr::without_provenance_mut(value as usize);
    request
        .convert_vmbus_handle_with(kmcl, raw)
        .map_err(IoctlError::Kmcl)
}

/// The UTF-16 friendly name of the channel.
const NAME: &[u16] = vmbus_kmcl::utf16!("Echo");

fn configure<'s, M: MapSystem, K: ChannelBackend + KmclServer + Copy>(
    slot: Pin<&'s mut ChannelSlot<'_, EchoVsp<M>, K>>,
    vm: Option<KernelHandle>,
) -> vmbus_kmcl::Result<ServerBuilder<'s, EchoVsp<M>, K>> {
    let mut builder = ServerBuilder::allocate(slot)?;
    if let Some(vm) = vm {
        builder.set_vmbus_handle(vm)?;
    }
    builder
        .set_interface_id(INTERFACE_TYPE, INTERFACE_INSTANCE)?
        // CAST: MAX_MESSAGE is a few hundred bytes.
        .set_maximum_packet_size(MAX_MESSAGE as u32)?
        .set_friendly_name(NAME)?
        .set_save_restore_callbacks()?
        // GPADL mappings are made while processing a packet: PASSIVE_LEVEL.
        .set_incoming_processing_at_passive(true);
    Ok(builder)
}

/// Offers the echo channel in `slot`, bound to the VM `vm` when given (the root's channels are
/// bound to the worker's VM; `None` offers it to the partition KMCL picks by default), and
/// starts it.
///
/// # Errors
///
/// The first failing step of allocate, configure and enable.
pub fn offer<'s, M: MapSystem, K: ChannelBackend + KmclServer + Copy>(
    slot: Pin<&'s mut ChannelSlot<'_, EchoVsp<M>, K>>,
    vm: Option<KernelHandle>,
) -> vmbus_kmcl::Result<Channel<'s, Server, EchoVsp<M>, K>> {
    let channel = configure(slot, vm)?.enable().map_err(|e| e.error())?;
    channel.start();
    Ok(channel)
}

/// The VSP's saved channel: what [`save`] wrote into caller storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedState {
    /// The version the VSP had agreed.
    pub version: Option<Version>,
    /// The bytes of the saved state in the storage (chunks, each after its u32 length).
    pub len: usize,
    /// The chunks KMCL's save produced.
    pub chunks: u32,
}

/// Why a save or a restore failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveError {
    /// KMCL's error.
    Kmcl(Error),
    /// The storage is too small for the saved state.
    StorageTooSmall,
    /// The saved bytes are not what [`save`] writes.
    Corrupt,
}

impl From<Error> for SaveError {
    fn from(error: Error) -> Self {
        Self::Kmcl(error)
    }
}

/// The size of one chunk of KMCL's save: small, so a save needs several continues.
const CHUNK: usize = 64;

/// Saves `channel` (KMCL's save protocol, chunk by chunk) into `storage`.
///
/// # Errors
///
/// [`SaveError::StorageTooSmall`], or KMCL's error of a chunk.
pub fn save<M: MapSystem, K: ChannelBackend + KmclServer + Copy>(
    channel: &mut Channel<'_, Server, EchoVsp<M>, K>,
    storage: &mut [u8],
) -> Result<SavedState, SaveError> {
    let version = channel.handler().version();
    let mut session = channel.save()?;
    let mut buffer = [0u8; CHUNK];
    let (mut len, mut chunks) = (0usize, 0u32);
    loop {
        let (chunk, last) = match session.next_chunk(&mut buffer)? {
            SaveChunk::More(chunk) => (chunk, false),
            SaveChunk::Last(chunk) => (chunk, true),
            SaveChunk::BufferTooSmall { .. } => return Err(SaveError::StorageTooSmall),
        };
        // CAST: at most CHUNK bytes.
        let header = (chunk.len() as u32).to_le_bytes();
        let end = len + header.len() + chunk.len();
        let out = storage
            .get_mut(len..end)
            .ok_or(SaveError::StorageTooSmall)?;
        out[..4].copy_from_slice(&header);
        out[4..].copy_from_slice(chunk);
        len = end;
        chunks += 1;
        if last {
            return Ok(SavedState {
                version,
                len,
                chunks,
            });
        }
    }
}

/// Offers a fresh echo channel restored from `storage` (the bytes [`save`] wrote), and starts
/// it. The slot's VSP should be [`EchoVsp::restored`] from the same state.
///
/// # Errors
///
/// [`SaveError::Corrupt`] for bytes that are not a whole save; KMCL's error of a step.
pub fn offer_restored<'s, M: MapSystem, K: ChannelBackend + KmclServer + Copy>(
    slot: Pin<&'s mut ChannelSlot<'_, EchoVsp<M>, K>>,
    vm: Option<KernelHandle>,
    saved: &SavedState,
    storage: &[u8],
) -> Result<Channel<'s, Server, EchoVsp<M>, K>, SaveError> {
    let mut builder = configure(slot, vm)?;
    let mut rest = storage.get(..saved.len).ok_or(SaveError::Corrupt)?;
    loop {
        let (header, tail) = rest.split_first_chunk::<4>().ok_or(SaveError::Corrupt)?;
        // CAST: u32 to usize, lossless on the driver targets.
        let n = u32::from_le_bytes(*header) as usize;
        let (chunk, tail) = tail.split_at_checked(n).ok_or(SaveError::Corrupt)?;
        rest = tail;
        match (builder.restore(chunk)?, rest.is_empty()) {
            (Restored::Done, true) => break,
            (Restored::NeedMore, false) => {}
            _ => return Err(SaveError::Corrupt),
        }
    }
    let channel = builder.enable().map_err(|e| e.error())?;
    channel.start();
    Ok(channel)
}
