//! The KMCL C ABI: every exported function under its real name, and the interface tables.
//!
//! This is the thin unsafe layer around the engine. Each function resolves its handles (pure
//! number decoding, never a dereference), reads or writes the caller's pointer arguments, and
//! forwards to the bus engine. A `const` item per function proves at compile time that its
//! signature is exactly the `PFN_` type of `vmbus-kmcl-sys`, so code written against the -sys
//! declarations links against these definitions unchanged.
//!
//! `VmbConvertVmbusHandleToKernelHandle` lives with the NT emulation in [`crate::nt`].

#![allow(
    non_snake_case,
    reason = "the exported functions carry the C names of the KMCL header"
)]

use std::ffi::c_void;
use std::sync::Arc;

use vmbus_kmcl_sys::*;

use crate::bus::{interface_dereference, interface_reference, new_interface_context};
use crate::callbacks::UserPtr;
use crate::engine::{orphan_violation, resolve, BusShared, Resolved, Side, StateCallbacks};
use crate::handle::{bus_of, to_ptr, Handle, Kind};
use crate::mdl::{segments, Described, Segment};
use crate::slab::ObjRef;
use crate::status::*;

/// Sim-chosen interface type GUID of `KMCL_CLIENT_INTERFACE_V1`. The real value is not public;
/// this is the emulator's own value, `{6b6d636c-7369-4d00-8001-636c69656e74}`.
#[no_mangle]
pub static KMCL_CLIENT_INTERFACE_TYPE: GUID = GUID {
    Data1: 0x6b6d_636c,
    Data2: 0x7369,
    Data3: 0x4d00,
    Data4: [0x80, 0x01, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74],
};

/// Sim-chosen interface type GUID of `KMCL_SERVER_INTERFACE_V1`. The real value is not public;
/// this is the emulator's own value, `{6b6d636c-7369-4d00-8002-736572766572}`.
#[no_mangle]
pub static KMCL_SERVER_INTERFACE_TYPE: GUID = GUID {
    Data1: 0x6b6d_636c,
    Data2: 0x7369,
    Data3: 0x4d00,
    Data4: [0x80, 0x02, 0x73, 0x65, 0x72, 0x76, 0x65, 0x72],
};

// ----- Handle resolution -----

/// Resolves a handle argument. A handle that does not resolve is always recorded, since a void
/// export has no status to report it with: on its bus when the value names a live bus (a
/// handle of another kind; a stale or forged handle of the right kind is reported by the
/// engine when it finds no such object), in the orphan list otherwise (NULL, garbage, a
/// dropped bus).
fn live(value: usize, kind: Kind, what: &str) -> Option<(Arc<BusShared>, ObjRef)> {
    match resolve(value, kind) {
        Resolved::Live(b, r) => Some((b, r)),
        Resolved::Null => {
            orphan_violation(&format!("{what}: NULL handle"));
            None
        }
        Resolved::Unknown => {
            match bus_of(value).and_then(crate::engine::lookup_bus) {
                Some(bus) => {
                    let name = match kind {
                        Kind::Channel => "VMBCHANNEL",
                        Kind::Packet => "VMBPACKET",
                        Kind::Incoming => "VMBPACKETCOMPLETION",
                        Kind::Device => "PDEVICE_OBJECT",
                    };
                    bus.record_violation(format!(
                        "{what}: {value:#x} is not a {name} (a handle of another kind, or forged)"
                    ));
                }
                None => orphan_violation(&format!(
                    "{what}: {value:#x} is not a handle of a live sim bus (forged, or its bus was dropped)"
                )),
            }
            None
        }
    }
}

fn chan(c: VMBCHANNEL, what: &str) -> Option<(Arc<BusShared>, ObjRef)> {
    // CAST: handle value, never dereferenced.
    live(c as usize, Kind::Channel, what)
}

fn pkt(p: VMBPACKET, what: &str) -> Option<(Arc<BusShared>, ObjRef)> {
    // CAST: handle value (or caller memory address for initialized packets), not dereferenced.
    live(p as usize, Kind::Packet, what)
}

fn inc(p: VMBPACKETCOMPLETION, what: &str) -> Option<(Arc<BusShared>, ObjRef)> {
    // CAST: handle value, never dereferenced.
    live(p as usize, Kind::Incoming, what)
}

/// Forwards a status-returning export to the engine: `f` on the bus and object the handle
/// argument resolved to, or `STATUS_INVALID_PARAMETER_1` (the handle is the first parameter)
/// when it did not resolve, which [`live`] has already recorded.
fn forward(
    target: Option<(Arc<BusShared>, ObjRef)>,
    f: impl FnOnce(&BusShared, ObjRef) -> NTSTATUS,
) -> NTSTATUS {
    match target {
        Some((b, r)) => f(&b, r),
        None => STATUS_INVALID_PARAMETER_1,
    }
}

/// Forwards a void export to the engine: `f` on the bus and object the handle argument resolved
/// to, or nothing when it did not resolve, which [`live`] has already recorded.
fn forward_void(target: Option<(Arc<BusShared>, ObjRef)>, f: impl FnOnce(&BusShared, ObjRef)) {
    if let Some((b, r)) = target {
        f(&b, r);
    }
}

/// The bytes `buf`/`len` describe, or `Err` when `buf` is NULL with a nonzero length.
///
/// # Safety
///
/// When `buf` is not NULL it must be valid for reads of `len` bytes for `'a`.
unsafe fn bytes<'a>(buf: *const c_void, len: u32) -> Result<&'a [u8], ()> {
    if len == 0 {
        return Ok(&[]);
    }
    if buf.is_null() {
        return Err(());
    }
    // SAFETY: `buf` is non-null and the caller guarantees `len` readable bytes for `'a`.
    Ok(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len as usize) })
}

/// Writes `value` through `out` when it is not NULL. C lets a caller point at a scalar at any
/// address, so the write does not assume alignment (free on x86_64 and aarch64).
///
/// # Safety
///
/// `out` is NULL or valid for a write of `size_of::<T>()` bytes (at any alignment).
unsafe fn put<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: non-null, and the caller guarantees `size_of::<T>()` writable bytes; the
        // write is unaligned, so no alignment is required.
        unsafe { out.write_unaligned(value) };
    }
}

/// Reads the `T` a caller points at, at any alignment (see [`put`]).
///
/// # Safety
///
/// `p` is non-null and valid for a read of `size_of::<T>()` bytes (at any alignment) that hold
/// a valid `T`.
unsafe fn get<T>(p: *const T) -> T {
    // SAFETY: the caller guarantees `size_of::<T>()` readable bytes holding a valid `T`; the
    // read is unaligned, so no alignment is required.
    unsafe { p.read_unaligned() }
}

fn described(mdl: PMDL, offset: usize, len: usize, first_only: bool) -> Option<Described> {
    // CAST: the MDL address is validated against the registry of live sim MDLs.
    segments(mdl as usize, offset, len, first_only)
        .ok()
        .map(Described::Segments)
}

/// Writes the value of a successful engine call through `out` (at any alignment) and returns
/// `STATUS_SUCCESS`; returns the failing status, writing nothing, otherwise.
///
/// # Safety
///
/// `out` must be non-null and valid for a write of `size_of::<T>()` bytes (at any alignment).
unsafe fn write_on_success<T>(out: *mut T, result: Result<T, NTSTATUS>) -> NTSTATUS {
    match result {
        Ok(value) => {
            // SAFETY: the caller guarantees `out` is non-null and valid for writes of
            // `size_of::<T>()` bytes; the write is unaligned, so no alignment is required.
            unsafe { out.write_unaligned(value) };
            STATUS_SUCCESS
        }
        Err(s) => s,
    }
}

/// The external data of a send: none for a NULL `mdl`, else the whole MDL chain;
/// `STATUS_INVALID_PARAMETER_4` (the MDL is the fourth parameter) when it is not a live sim MDL.
fn optional_external(mdl: PMDL) -> Result<Option<Described>, NTSTATUS> {
    if mdl.is_null() {
        return Ok(None);
    }
    described(mdl, 0, 0, false)
        .map(Some)
        .ok_or(STATUS_INVALID_PARAMETER_4)
}

/// Checks the IRQL rule of a function that may only run at `PASSIVE_LEVEL` (it blocks, waits
/// for the peer or allocates pageable state): above it, records a violation on `bus` and
/// returns true. The level is the thread's simulated IRQL ([`crate::nt::current_irql`]).
fn above_passive(bus: &BusShared, what: &str) -> bool {
    let irql = crate::nt::current_irql();
    if irql == vmbus_kmcl_sys::nt::PASSIVE_LEVEL {
        return false;
    }
    bus.record_violation(format!(
        "{what} called at IRQL {irql}: it may only be called at PASSIVE_LEVEL"
    ));
    true
}

// ----- Channel allocation and lifecycle -----

/// `VmbChannelAllocate`: creates a disabled channel on the bus side of `ParentDeviceObject`.
/// A server must be allocated on [`crate::Bus::root_device`], a client on
/// [`crate::Bus::guest_device`] (`STATUS_INVALID_PARAMETER_2` otherwise). `PASSIVE_LEVEL` only
/// (documented): above it the call is a violation and fails with
/// `STATUS_INVALID_DEVICE_STATE` (sim choice), creating nothing.
///
/// # Safety
///
/// `Channel` must be NULL or valid for a write of a `VMBCHANNEL`.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelAllocate(
    ParentDeviceObject: PDEVICE_OBJECT,
    IsServer: BOOLEAN,
    Channel: *mut VMBCHANNEL,
) -> NTSTATUS {
    if Channel.is_null() {
        return STATUS_INVALID_PARAMETER_3;
    }
    // CAST: fake device objects are numbers, never dereferenced.
    let Some(dev) = Handle::decode(ParentDeviceObject as usize, Kind::Device) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    let Some(bus) = crate::engine::lookup_bus(dev.bus) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if above_passive(&bus, "VmbChannelAllocate") {
        return STATUS_INVALID_DEVICE_STATE;
    }
    let side = if dev.index == 0 {
        Side::Root
    } else {
        Side::Guest
    };
    let result = bus.channel_allocate(side, IsServer != 0).map(to_ptr);
    // SAFETY: non-null (checked above), and the caller guarantees it is writable.
    unsafe { write_on_success(Channel, result) }
}

/// `VmbChannelCleanup`: frees a disabled channel.
///
/// # Safety
///
/// No pointer is dereferenced; the function is `unsafe` only to match the C ABI.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelCleanup(Channel: VMBCHANNEL) {
    forward_void(chan(Channel, "VmbChannelCleanup"), |b, r| b.cleanup(r));
}

/// `VmbChannelEnable`: offers (server) or opens (client) the channel. A server whose handle
/// from `VmbServerChannelInitSetVmbusHandle` was closed (`ZwClose`) in the meantime is not
/// offered: the sim records a violation and returns `STATUS_INVALID_HANDLE`.
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelEnable(Channel: VMBCHANNEL) -> NTSTATUS {
    forward(chan(Channel, "VmbChannelEnable"), |b, r| b.enable(r))
}

/// `VmbChannelDisable`: closes or rescinds the channel, running suspend and closed. It blocks
/// until the channel is torn down, so it may only run at `PASSIVE_LEVEL`: above it the call is
/// recorded as a violation (and still carried out, so that the test can tear down).
///
/// `EvtChannelSuspend` runs only once no `EvtVmbChannelProcessPacket` of the channel is running
/// (the call waits for a running one, up to the block limit); calling it from inside the
/// channel's own packet callback is a violation and does nothing. When the peer closed first and
/// its close has not been delivered yet, this call delivers it: the driver still sees
/// `EvtChannelSuspend` (if the channel was running) and `EvtChannelClosed` (if it was open)
/// before the call returns.
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelDisable(Channel: VMBCHANNEL) {
    forward_void(chan(Channel, "VmbChannelDisable"), |b, r| {
        above_passive(b, "VmbChannelDisable");
        b.disable(r)
    });
}

/// `VmbChannelPause`: returns once `EvtChannelSuspend` ran and every incoming packet was
/// completed. It blocks, so it may only run at `PASSIVE_LEVEL`: above it the call is recorded as
/// a violation (and still carried out). Like disable, it runs `EvtChannelSuspend` only once no
/// packet callback of the channel is running, and calling it from inside one is a violation
/// that does nothing.
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelPause(Channel: VMBCHANNEL) {
    forward_void(chan(Channel, "VmbChannelPause"), |b, r| {
        above_passive(b, "VmbChannelPause");
        b.pause(r)
    });
}

/// `VmbChannelStart`: on an open channel, runs `EvtChannelStarted`, switches the incoming
/// queue on, then runs `EvtChannelPostStarted`.
///
/// The documentation disagrees with itself on whether packets may be processed while
/// `EvtChannelPostStarted` runs (the callback's page says it runs before packets are
/// processed; the header's theory says packet callbacks may already be happening). The sim's
/// choice: the incoming queue is on when `EvtChannelPostStarted` starts, so packets may be
/// delivered during it when something pumps the bus meanwhile (a blocking call made from it, or
/// the background delivery thread); without that, the first packet is delivered after it
/// returns. Completions always flow, so a synchronous request made there gets its reply.
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelStart(Channel: VMBCHANNEL) {
    forward_void(chan(Channel, "VmbChannelStart"), |b, r| b.start(r));
}

// ----- Init setters -----

/// `VmbChannelInitSetClientContextSize`.
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelInitSetClientContextSize(
    Channel: VMBCHANNEL,
    ContextSize: UINT32,
) -> NTSTATUS {
    forward(
        chan(Channel, "VmbChannelInitSetClientContextSize"),
        |b, r| b.set_client_context_size(r, ContextSize),
    )
}

/// `VmbChannelInitSetFlags`.
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelInitSetFlags(Channel: VMBCHANNEL, Flags: UINT32) -> NTSTATUS {
    forward(chan(Channel, "VmbChannelInitSetFlags"), |b, r| {
        b.set_flags(r, Flags)
    })
}

/// `VmbChannelInitSetFriendlyName`: the name is copied.
///
/// # Safety
///
/// `Name` must be NULL or point to a valid `UNICODE_STRING` (at any alignment: it is read
/// unaligned) whose `Buffer`, when non-NULL and
/// 2-byte aligned, holds `Length` readable bytes. An odd `Length`, `Length > MaximumLength`,
/// or a NULL or misaligned `Buffer` with `Length > 0` gives `STATUS_INVALID_PARAMETER_2`
/// without reading the buffer.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelInitSetFriendlyName(
    Channel: VMBCHANNEL,
    Name: PCUNICODE_STRING,
) -> NTSTATUS {
    let Some((b, r)) = chan(Channel, "VmbChannelInitSetFriendlyName") else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if Name.is_null() {
        return STATUS_INVALID_PARAMETER_2;
    }
    // SAFETY: `Name` is non-null and the caller guarantees it points to a valid UNICODE_STRING
    // (at any alignment: `get` reads unaligned).
    let s = unsafe { get(Name) };
    // A UNICODE_STRING holds whole UTF-16 units in a non-NULL, 2-byte aligned buffer; anything
    // else is refused before a slice is made of it.
    if s.Length % 2 != 0 || s.Length > s.MaximumLength {
        return STATUS_INVALID_PARAMETER_2;
    }
    let units: &[u16] = if s.Length == 0 {
        &[]
    } else {
        if s.Buffer.is_null() || !s.Buffer.is_aligned() {
            return STATUS_INVALID_PARAMETER_2;
        }
        // SAFETY:
        // - `Buffer` is non-null and aligned for `u16` (both checked just above);
        // - the caller guarantees `Length` readable bytes behind it, i.e. `Length / 2` UTF-16
        //   units (`Length` is even, checked above), alive for this call.
        unsafe { std::slice::from_raw_parts(s.Buffer, usize::from(s.Length / 2)) }
    };
    b.set_friendly_name(r, String::from_utf16_lossy(units))
}

/// `VmbChannelInitSetMaximumExternalData`.
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelInitSetMaximumExternalData(
    Channel: VMBCHANNEL,
    DataSize: UINT32,
    ChainLength: UINT32,
) -> NTSTATUS {
    forward(
        chan(Channel, "VmbChannelInitSetMaximumExternalData"),
        |b, r| b.set_max_external_data(r, DataSize, ChainLength),
    )
}

/// `VmbChannelInitSetMaximumPacketSize`.
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelInitSetMaximumPacketSize(
    Channel: VMBCHANNEL,
    PacketSize: UINT32,
) -> NTSTATUS {
    forward(
        chan(Channel, "VmbChannelInitSetMaximumPacketSize"),
        |b, r| b.set_max_packet_size(r, PacketSize),
    )
}

/// `VmbChannelInitSetProcessPacketCallbacks`. A NULL `ProcessPacketCallback` is refused with
/// `STATUS_INVALID_PARAMETER_2` (sim choice: the parameter is not optional).
///
/// # Safety
///
/// The callbacks must be valid functions of their types for the channel's lifetime.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelInitSetProcessPacketCallbacks(
    Channel: VMBCHANNEL,
    ProcessPacketCallback: PFN_VMB_CHANNEL_PROCESS_PACKET,
    ProcessingCompleteCallback: PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
) -> NTSTATUS {
    forward(
        chan(Channel, "VmbChannelInitSetProcessPacketCallbacks"),
        |b, r| b.set_process_packet_callbacks(r, ProcessPacketCallback, ProcessingCompleteCallback),
    )
}

/// `VmbChannelInitSetStateChangeCallbacks`: the table is copied; `Version` must be 1 and `Size`
/// 48, else `STATUS_INVALID_PARAMETER_2`.
///
/// # Safety
///
/// `StateChangeCallbacks` must be NULL or point to a readable table; its callbacks must be valid
/// functions of their types for the channel's lifetime.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelInitSetStateChangeCallbacks(
    Channel: VMBCHANNEL,
    StateChangeCallbacks: PVMB_CHANNEL_STATE_CHANGE_CALLBACKS,
) -> NTSTATUS {
    let Some((b, r)) = chan(Channel, "VmbChannelInitSetStateChangeCallbacks") else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if StateChangeCallbacks.is_null() {
        return STATUS_INVALID_PARAMETER_2;
    }
    // SAFETY: non-null, and the caller guarantees a readable table (copied, at any alignment).
    let t = unsafe { get(StateChangeCallbacks) };
    // CAST: the structure is 48 bytes.
    let size = std::mem::size_of::<VMB_CHANNEL_STATE_CHANGE_CALLBACKS>() as ULONG;
    if t.Version != VMB_CHANNEL_STATE_CHANGE_CALLBACKS_VERSION || t.Size != size {
        return STATUS_INVALID_PARAMETER_2;
    }
    b.set_state_callbacks(
        r,
        StateCallbacks {
            opened: t.EvtChannelOpened,
            closed: t.EvtChannelClosed,
            suspend: t.EvtChannelSuspend,
            started: t.EvtChannelStarted,
            post_started: t.EvtChannelPostStarted,
        },
    )
}

/// `VmbClientChannelInitSetRingBufferPageCount` (client only). Zero counts are refused with
/// `STATUS_INVALID_PARAMETER_2`/`_3` (sim choice).
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbClientChannelInitSetRingBufferPageCount(
    Channel: VMBCHANNEL,
    IncomingPageCount: UINT32,
    OutgoingPageCount: UINT32,
) -> NTSTATUS {
    forward(
        chan(Channel, "VmbClientChannelInitSetRingBufferPageCount"),
        |b, r| b.set_ring_pages(r, IncomingPageCount, OutgoingPageCount),
    )
}

/// `VmbClientChannelInitSetTargetPnp` (client only). A NULL `InterfaceType` is refused with
/// `STATUS_INVALID_PARAMETER_2` (sim choice).
///
/// # Safety
///
/// `InterfaceType` and `InterfaceInstance` must be NULL or readable GUIDs; the callback must be
/// valid for the channel's lifetime.
#[no_mangle]
pub unsafe extern "C" fn VmbClientChannelInitSetTargetPnp(
    Channel: VMBCHANNEL,
    InterfaceType: LPCGUID,
    InterfaceInstance: LPCGUID,
    PnpFailureCallback: PFN_VMB_CHANNEL_PNP_FAILURE,
) -> NTSTATUS {
    let Some((b, r)) = chan(Channel, "VmbClientChannelInitSetTargetPnp") else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if InterfaceType.is_null() {
        return STATUS_INVALID_PARAMETER_2;
    }
    // SAFETY: non-null, and the caller guarantees a readable GUID (at any alignment).
    let ty = unsafe { get(InterfaceType) };
    let inst = if InterfaceInstance.is_null() {
        None
    } else {
        // SAFETY: non-null, and the caller guarantees a readable GUID (at any alignment).
        Some(unsafe { get(InterfaceInstance) })
    };
    b.set_target_pnp(r, ty, inst, PnpFailureCallback)
}

/// `VmbServerChannelInitSetFlags` (server only).
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbServerChannelInitSetFlags(
    Channel: VMBCHANNEL,
    Flags: UINT32,
) -> NTSTATUS {
    forward(chan(Channel, "VmbServerChannelInitSetFlags"), |b, r| {
        b.set_server_flags(r, Flags)
    })
}

/// `VmbServerChannelInitSetMmioMegabytes` (server only).
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbServerChannelInitSetMmioMegabytes(
    Channel: VMBCHANNEL,
    MmioMegabytes: UINT16,
    MmioMegabytesOptional: UINT16,
) -> NTSTATUS {
    forward(
        chan(Channel, "VmbServerChannelInitSetMmioMegabytes"),
        |b, r| b.set_mmio(r, MmioMegabytes, MmioMegabytesOptional),
    )
}

/// `VmbServerChannelInitSetSaveRestorePacketCallbacks` (server only). NULL callbacks are
/// refused with `STATUS_INVALID_PARAMETER_2`/`_3` (sim choice; both are required).
///
/// # Safety
///
/// The callbacks must be valid functions of their types for the channel's lifetime.
#[no_mangle]
pub unsafe extern "C" fn VmbServerChannelInitSetSaveRestorePacketCallbacks(
    Channel: VMBCHANNEL,
    SavePacketCallback: PFN_VMB_CHANNEL_SAVE_PACKET,
    RestorePacketCallback: PFN_VMB_CHANNEL_RESTORE_PACKET,
) -> NTSTATUS {
    forward(
        chan(Channel, "VmbServerChannelInitSetSaveRestorePacketCallbacks"),
        |b, r| b.set_save_restore_callbacks(r, SavePacketCallback, RestorePacketCallback),
    )
}

/// `VmbServerChannelInitSetTargetInterfaceId` (server only): the offer's GUIDs, by value.
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbServerChannelInitSetTargetInterfaceId(
    Channel: VMBCHANNEL,
    InterfaceType: GUID,
    InterfaceInstance: GUID,
) -> NTSTATUS {
    forward(
        chan(Channel, "VmbServerChannelInitSetTargetInterfaceId"),
        |b, r| b.set_target_interface_id(r, InterfaceType, InterfaceInstance),
    )
}

/// `VmbServerChannelInitSetTargetVtl` (server only): VTL 0 to 2, else
/// `STATUS_INVALID_PARAMETER_2`. The sim's guest runs at VTL 0, so another VTL hides the offer.
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbServerChannelInitSetTargetVtl(
    Channel: VMBCHANNEL,
    TargetVtl: UINT8,
) -> NTSTATUS {
    forward(chan(Channel, "VmbServerChannelInitSetTargetVtl"), |b, r| {
        b.set_target_vtl(r, TargetVtl)
    })
}

/// `VmbServerChannelInitSetVmbusHandle` (server only): `VmbusHandle` must be an open kernel
/// handle (from `VmbConvertVmbusHandleToKernelHandle`) to this channel's bus, else
/// `STATUS_INVALID_PARAMETER_2`. The sim records the value; it takes no reference, so the
/// handle must stay open until the channel is enabled (checked there).
///
/// # Safety
///
/// No pointer is dereferenced (the handle is looked up in the emulated kernel handle table).
#[no_mangle]
pub unsafe extern "C" fn VmbServerChannelInitSetVmbusHandle(
    Channel: VMBCHANNEL,
    VmbusHandle: HANDLE,
) -> NTSTATUS {
    forward(
        chan(Channel, "VmbServerChannelInitSetVmbusHandle"),
        |b, r| {
            let bus = crate::nt::kernel_vmbus_handle_bus(VmbusHandle);
            // CAST: the handle value is recorded for observability only.
            b.set_vmbus_handle(r, VmbusHandle as usize, bus)
        },
    )
}

// ----- Channel properties -----

/// `VmbChannelGetInterfaceInstance`.
///
/// # Safety
///
/// `InterfaceInstance` must be NULL or valid for a write of a `GUID`.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelGetInterfaceInstance(
    Channel: VMBCHANNEL,
    InterfaceInstance: LPGUID,
) {
    if let Some((b, r)) = chan(Channel, "VmbChannelGetInterfaceInstance") {
        if let Some(g) = b.interface_instance(r) {
            // SAFETY: the caller guarantees NULL or a writable GUID.
            unsafe { put(InterfaceInstance, g) };
        }
    }
}

/// `VmbChannelGetMmioSpace`: zeros (and a violation) before the channel opened.
///
/// # Safety
///
/// Both outputs must be NULL or valid for a write of a `UINT64`.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelGetMmioSpace(
    Channel: VMBCHANNEL,
    MmioAddress: *mut UINT64,
    MmioSize: *mut UINT64,
) {
    let (a, s) = match chan(Channel, "VmbChannelGetMmioSpace") {
        Some((b, r)) => b.mmio_space(r),
        None => (0, 0),
    };
    // SAFETY: the caller guarantees NULL or writable outputs.
    unsafe { put(MmioAddress, a) };
    // SAFETY: as above.
    unsafe { put(MmioSize, s) };
}

/// `VmbChannelGetPointer`.
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelGetPointer(Channel: VMBCHANNEL) -> PVOID {
    match chan(Channel, "VmbChannelGetPointer") {
        Some((b, r)) => b.get_pointer(r).0,
        None => std::ptr::null_mut(),
    }
}

/// `VmbChannelSetPointer`.
///
/// # Safety
///
/// No pointer is dereferenced (the value is only stored).
#[no_mangle]
pub unsafe extern "C" fn VmbChannelSetPointer(Channel: VMBCHANNEL, Pointer: PVOID) {
    forward_void(chan(Channel, "VmbChannelSetPointer"), |b, r| {
        b.set_pointer(r, UserPtr(Pointer))
    });
}

/// `VmbChannelSetIncomingProcessingAtPassive`.
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelSetIncomingProcessingAtPassive(
    Channel: VMBCHANNEL,
    RequirePassive: BOOLEAN,
) {
    forward_void(
        chan(Channel, "VmbChannelSetIncomingProcessingAtPassive"),
        |b, r| b.set_passive(r, RequirePassive != 0),
    );
}

/// `VmbChannelSetInterruptLatency`: valid from `EvtChannelOpened` through `EvtChannelClosed`
/// (`STATUS_INVALID_DEVICE_STATE` otherwise, sim choice).
///
/// # Safety
///
/// `OriginalLatency` must be NULL or valid for a write of a `UINT16`.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelSetInterruptLatency(
    Channel: VMBCHANNEL,
    Latency: UINT16,
    OriginalLatency: PUINT16,
) -> NTSTATUS {
    let Some((b, r)) = chan(Channel, "VmbChannelSetInterruptLatency") else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if OriginalLatency.is_null() {
        return STATUS_INVALID_PARAMETER_3;
    }
    let result = b.set_latency(r, Latency);
    // SAFETY: non-null (checked above), and the caller guarantees it is writable.
    unsafe { write_on_success(OriginalLatency, result) }
}

/// `VmbChannelSetTransactionQuota`: caps the delivered, not yet completed incoming packets. A
/// quota at or below the outstanding count stalls the queue; as documented, a queue stalled on
/// the quota is restarted only by a completion, never by this call (also when the new quota has
/// room). Redeliveries (deferred or pended packets) already count and are not held back.
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelSetTransactionQuota(Channel: VMBCHANNEL, Quota: UINT32) {
    forward_void(chan(Channel, "VmbChannelSetTransactionQuota"), |b, r| {
        b.set_quota(r, Quota)
    });
}

/// `VmbChannelSizeofPacket`: bytes `VmbPacketInitialize` needs on this channel.
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelSizeofPacket(Channel: VMBCHANNEL) -> UINT32 {
    match chan(Channel, "VmbChannelSizeofPacket") {
        Some((b, r)) => b.sizeof_packet(r),
        None => 0,
    }
}

// ----- Outgoing packets -----

/// `VmbPacketAllocate`: NULL on (injected) allocation failure.
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbPacketAllocate(Channel: VMBCHANNEL) -> VMBPACKET {
    match chan(Channel, "VmbPacketAllocate") {
        Some((b, r)) => to_ptr(b.packet_allocate(r)),
        None => std::ptr::null_mut(),
    }
}

/// `VmbPacketFree`.
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbPacketFree(VmbPacket: VMBPACKET) {
    forward_void(pkt(VmbPacket, "VmbPacketFree"), |b, r| b.packet_free(r));
}

/// `VmbPacketGetChannel`.
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbPacketGetChannel(PacketObject: VMBPACKET) -> VMBCHANNEL {
    match pkt(PacketObject, "VmbPacketGetChannel") {
        Some((b, r)) => to_ptr(b.packet_channel(r)),
        None => std::ptr::null_mut(),
    }
}

/// `VmbPacketGetPointer`.
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbPacketGetPointer(PacketObject: VMBPACKET) -> PVOID {
    match pkt(PacketObject, "VmbPacketGetPointer") {
        Some((b, r)) => b.packet_get_pointer(r).0,
        None => std::ptr::null_mut(),
    }
}

/// `VmbPacketSetPointer`.
///
/// # Safety
///
/// No pointer is dereferenced (the value is only stored).
#[no_mangle]
pub unsafe extern "C" fn VmbPacketSetPointer(PacketObject: VMBPACKET, Pointer: PVOID) {
    forward_void(pkt(PacketObject, "VmbPacketSetPointer"), |b, r| {
        b.packet_set_pointer(r, UserPtr(Pointer))
    });
}

/// `VmbPacketSetCompletionRoutine`.
///
/// # Safety
///
/// `CompletionRoutine` must be a valid function of its type while the packet lives.
#[no_mangle]
pub unsafe extern "C" fn VmbPacketSetCompletionRoutine(
    PacketObject: VMBPACKET,
    CompletionRoutine: PFN_VMB_PACKET_COMPLETION_ROUTINE,
) {
    forward_void(
        pkt(PacketObject, "VmbPacketSetCompletionRoutine"),
        |b, r| b.packet_set_routine(r, CompletionRoutine),
    );
}

/// `VmbPacketInitialize`: makes caller memory a packet object. The sim never writes that
/// memory; it only remembers the address.
///
/// # Safety
///
/// `VmbPacket` must point to `ByteCount` bytes the caller keeps reserved for the packet while
/// it is in use (the sim does not access them).
#[no_mangle]
pub unsafe extern "C" fn VmbPacketInitialize(
    Channel: VMBCHANNEL,
    VmbPacket: VMBPACKET,
    ByteCount: UINT32,
) -> NTSTATUS {
    forward(chan(Channel, "VmbPacketInitialize"), |b, r| {
        b.packet_initialize(r, UserPtr(VmbPacket.cast()), ByteCount)
    })
}

/// `VmbPacketSend`. The inline buffer is copied at once; the external MDL (a [`crate::SimMdl`]
/// chain) is described by reference and must stay alive until the packet completes.
///
/// Ring sizes follow the channel's configuration: the smallest ring holds one frame of the
/// maximum inline size plus the descriptor of the declared maximum external data (one page
/// when none was declared). A frame larger than the ring can never be delivered, so on an
/// open channel it is refused with `STATUS_INVALID_PARAMETER` (sim choice); one queued before
/// the ring was sized is dropped when the channel opens, recorded as a violation, and its
/// packet completed with `STATUS_INVALID_PARAMETER`. The same holds for the other send
/// functions and `VmbChannelSendSynchronousRequest`.
///
/// # Safety
///
/// `Buffer` must be valid for reads of `BufferLength` bytes; `ExternalDataMdl` must be NULL or
/// a sim MDL whose memory stays alive until completion.
#[no_mangle]
pub unsafe extern "C" fn VmbPacketSend(
    PacketObject: VMBPACKET,
    Buffer: PVOID,
    BufferLength: UINT32,
    ExternalDataMdl: PMDL,
    Flags: UINT32,
) -> NTSTATUS {
    let Some((b, r)) = pkt(PacketObject, "VmbPacketSend") else {
        return STATUS_INVALID_PARAMETER_1;
    };
    // SAFETY: the caller guarantees `Buffer` is readable for `BufferLength` bytes.
    let Ok(data) = (unsafe { bytes(Buffer, BufferLength) }) else {
        return STATUS_INVALID_PARAMETER_2;
    };
    let ext = match optional_external(ExternalDataMdl) {
        Ok(ext) => ext,
        Err(s) => return s,
    };
    b.packet_send(r, data, ext, Flags, false)
}

/// `VmbPacketSendWithExternalMdl`: a window of the MDL; `WAIT_FOR_COMPLETION` is required
/// (`STATUS_INVALID_PARAMETER` otherwise). With `FORCE_MDL_LENGTH` only the first MDL counts and
/// `MdlLength` may exceed its bytes up to the next page boundary (the sim describes the bytes
/// that exist).
///
/// # Safety
///
/// As for [`VmbPacketSend`]; `ExternalDataMdl` is required.
#[no_mangle]
pub unsafe extern "C" fn VmbPacketSendWithExternalMdl(
    PacketObject: VMBPACKET,
    Buffer: PVOID,
    BufferLength: UINT32,
    ExternalDataMdl: PMDL,
    MdlOffset: UINT32,
    MdlLength: UINT32,
    Flags: UINT32,
) -> NTSTATUS {
    let Some((b, r)) = pkt(PacketObject, "VmbPacketSendWithExternalMdl") else {
        return STATUS_INVALID_PARAMETER_1;
    };
    // SAFETY: the caller guarantees `Buffer` is readable for `BufferLength` bytes.
    let Ok(data) = (unsafe { bytes(Buffer, BufferLength) }) else {
        return STATUS_INVALID_PARAMETER_2;
    };
    if ExternalDataMdl.is_null() {
        return STATUS_INVALID_PARAMETER_4;
    }
    let force = Flags & VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH != 0;
    let (off, len) = (MdlOffset as usize, MdlLength as usize);
    let ext = if force {
        let Some(Described::Segments(first)) = described(ExternalDataMdl, 0, 0, true) else {
            return STATUS_INVALID_PARAMETER_4;
        };
        let have: usize = first.iter().map(|s| s.len).sum();
        let limit = have.div_ceil(4096) * 4096;
        if off.saturating_add(len) > limit || off > have {
            return STATUS_INVALID_PARAMETER;
        }
        let take = if len == 0 {
            have - off
        } else {
            len.min(have - off)
        };
        match described(ExternalDataMdl, off, take.max(1).min(have - off), true) {
            Some(d) if take > 0 => d,
            _ => Described::Segments(Vec::<Segment>::new()),
        }
    } else {
        match described(ExternalDataMdl, off, len, false) {
            Some(d) => d,
            None => return STATUS_INVALID_PARAMETER,
        }
    };
    b.packet_send(
        r,
        data,
        Some(ext),
        Flags & !VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH,
        true,
    )
}

/// `VmbPacketSendWithExternalPfns`: external data as page frame numbers (the receiver's MDL
/// reports them through [`crate::mdl_pfns`]); `WAIT_FOR_COMPLETION` is required.
///
/// # Safety
///
/// `Buffer` must be readable for `BufferLength` bytes and `ExternalDataPfns` for `PfnLength`
/// elements.
#[no_mangle]
pub unsafe extern "C" fn VmbPacketSendWithExternalPfns(
    PacketObject: VMBPACKET,
    Buffer: PVOID,
    BufferLength: UINT32,
    ExternalDataPfns: PPFN_NUMBER,
    PfnLength: UINT32,
    Flags: UINT32,
) -> NTSTATUS {
    let Some((b, r)) = pkt(PacketObject, "VmbPacketSendWithExternalPfns") else {
        return STATUS_INVALID_PARAMETER_1;
    };
    // SAFETY: the caller guarantees `Buffer` is readable for `BufferLength` bytes.
    let Ok(data) = (unsafe { bytes(Buffer, BufferLength) }) else {
        return STATUS_INVALID_PARAMETER_2;
    };
    if PfnLength == 0 || ExternalDataPfns.is_null() {
        return STATUS_INVALID_PARAMETER_4;
    }
    const PFN: usize = std::mem::size_of::<PFN_NUMBER>();
    // The array may sit at any address: it is read as bytes.
    let len = PfnLength as usize * PFN;
    // SAFETY: non-null, and the caller guarantees `PfnLength` readable PFNs, i.e. `len`
    // readable bytes; `u8` needs no alignment.
    let raw = unsafe { std::slice::from_raw_parts(ExternalDataPfns.cast::<u8>(), len) };
    let pfns = raw
        .chunks_exact(PFN)
        .map(|c| {
            let mut b = [0u8; PFN];
            b.copy_from_slice(c);
            PFN_NUMBER::from_ne_bytes(b)
        })
        .collect();
    b.packet_send(r, data, Some(Described::Pfns(pfns)), Flags, true)
}

// ----- Incoming packets -----

/// `VmbChannelPacketComplete`: finishes an incoming packet, sending the completion data back
/// when the sender waits for it. A second completion is a violation. Completion data whose frame
/// is larger than the ring back to the sender could never be sent (it would block the ring for
/// ever): that is a violation too, and the sender's transaction completes with
/// `STATUS_BUFFER_OVERFLOW` and no data (sim choice).
///
/// # Safety
///
/// `PacketCompletionBuffer` must be NULL or readable for `BufSize` bytes.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelPacketComplete(
    PacketCompletionContext: VMBPACKETCOMPLETION,
    PacketCompletionBuffer: PVOID,
    BufSize: UINT32,
) {
    let Some((b, r)) = inc(PacketCompletionContext, "VmbChannelPacketComplete") else {
        return;
    };
    // SAFETY: the caller guarantees NULL or `BufSize` readable bytes.
    let data = unsafe { bytes(PacketCompletionBuffer, BufSize) }.unwrap_or(&[]);
    // A response that is the delivered payload itself keeps that buffer out of the pool until
    // `data` is no longer used (here, after the call).
    if let Some(buffer) = b.packet_complete(r, data) {
        b.recycle(buffer);
    }
}

/// `VmbChannelPacketDeferToPassive`: only inside the packet's own delivery.
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelPacketDeferToPassive(
    PacketCompletionContext: VMBPACKETCOMPLETION,
) {
    forward_void(
        inc(PacketCompletionContext, "VmbChannelPacketDeferToPassive"),
        |b, r| b.defer_to_passive(r),
    );
}

/// `VmbChannelPacketFail`: finishes the packet (the sender's transaction completes with
/// `STATUS_UNSUCCESSFUL`, sim choice) and stops the channel's incoming queue until the flow is
/// restarted.
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelPacketFail(PacketCompletionContext: VMBPACKETCOMPLETION) {
    forward_void(
        inc(PacketCompletionContext, "VmbChannelPacketFail"),
        |b, r| b.packet_fail(r),
    );
}

/// `VmbChannelPacketGetExternalData`: an MDL aliasing the sender's external data, valid until
/// the packet is completed; read-only with `VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY`.
///
/// # Safety
///
/// `Mdl` must be NULL or valid for a write of a `PMDL`.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelPacketGetExternalData(
    PacketCompletionContext: VMBPACKETCOMPLETION,
    Flags: UINT32,
    Mdl: *mut PMDL,
) -> NTSTATUS {
    let Some((b, r)) = inc(PacketCompletionContext, "VmbChannelPacketGetExternalData") else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if Mdl.is_null() {
        return STATUS_INVALID_PARAMETER_3;
    }
    let result = b.external_data(r, Flags);
    // SAFETY: non-null (checked above), and the caller guarantees it is writable.
    unsafe { write_on_success(Mdl, result) }
}

/// `VmbChannelSendSynchronousRequest`. `*CompletionBufferSize` must be a multiple of 8
/// (`STATUS_INVALID_PARAMETER` otherwise); a reply longer than the buffer is truncated. A
/// server may only use a zero timeout without `WAIT_FOR_COMPLETION` (`STATUS_NOT_SUPPORTED`
/// otherwise, sim choice). A request with `WAIT_FOR_COMPLETION` made inside the channel's own
/// `EvtChannelStarted` would never return on Windows (packets do not flow yet): the sim records a
/// violation and fails it with `STATUS_INVALID_DEVICE_STATE` without sending it. A frame larger
/// than the ring is refused with `STATUS_INVALID_PARAMETER` (see [`VmbPacketSend`]).
///
/// # Safety
///
/// `Buffer` must be readable for `BufferSize` bytes; `ExternalDataMdl` NULL or a live sim MDL;
/// `CompletionBufferSize` NULL or a valid `UINT32`; `CompletionBuffer` NULL or writable for
/// `*CompletionBufferSize` bytes; `Timeout` NULL or a readable `LARGE_INTEGER`.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelSendSynchronousRequest(
    Channel: VMBCHANNEL,
    Buffer: PVOID,
    BufferSize: UINT32,
    ExternalDataMdl: PMDL,
    Flags: UINT32,
    CompletionBuffer: PVOID,
    CompletionBufferSize: PUINT32,
    Timeout: PLARGE_INTEGER,
) -> NTSTATUS {
    let Some((b, r)) = chan(Channel, "VmbChannelSendSynchronousRequest") else {
        return STATUS_INVALID_PARAMETER_1;
    };
    // SAFETY: the caller guarantees `Buffer` is readable for `BufferSize` bytes.
    let Ok(data) = (unsafe { bytes(Buffer, BufferSize) }) else {
        return STATUS_INVALID_PARAMETER_2;
    };
    let ext = match optional_external(ExternalDataMdl) {
        Ok(ext) => ext,
        Err(s) => return s,
    };
    let capacity = if CompletionBufferSize.is_null() {
        0
    } else {
        // SAFETY: non-null, and the caller guarantees a readable UINT32 (at any alignment).
        unsafe { get(CompletionBufferSize) }
    };
    if capacity % 8 != 0 {
        return STATUS_INVALID_PARAMETER;
    }
    if capacity > 0 && CompletionBuffer.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let timeout = if Timeout.is_null() {
        None
    } else {
        // SAFETY: non-null and readable (caller's guarantee), at any alignment.
        let t = unsafe { get(Timeout) };
        // SAFETY: both union members are plain integers covering all 8 bytes, so reading
        // `QuadPart` is valid for any bit pattern.
        Some(unsafe { t.QuadPart })
    };
    let (status, reply) = b.sync_request(r, data, ext, Flags, timeout, crate::nt::current_irql());
    if status == STATUS_SUCCESS && !CompletionBufferSize.is_null() {
        let n = reply.len().min(capacity as usize);
        if n > 0 {
            // SAFETY: `CompletionBuffer` is non-null (checked with capacity > 0) and writable for
            // `capacity >= n` bytes (caller's guarantee); `reply` is a distinct allocation.
            unsafe { std::ptr::copy_nonoverlapping(reply.as_ptr(), CompletionBuffer.cast(), n) };
        }
        // SAFETY: non-null and writable (caller's guarantee), at any alignment.
        // CAST: n <= capacity, a u32.
        unsafe { put(CompletionBufferSize, n as u32) };
    }
    status
}

// ----- GPADLs -----

/// `VmbChannelCreateGpadlFromBuffer` (client, open channel). The buffer is described by
/// reference and must stay alive until the GPADL is deleted. `PASSIVE_LEVEL` only (it waits for
/// the peer's acknowledgement): above it the call is a violation and fails with
/// `STATUS_INVALID_DEVICE_STATE` (sim choice).
///
/// # Safety
///
/// `Buffer` must be valid for `ByteCount` bytes until `VmbChannelDeleteGpadl`; `GpadlHandle`
/// must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelCreateGpadlFromBuffer(
    Channel: VMBCHANNEL,
    Flags: UINT32,
    Buffer: PVOID,
    ByteCount: UINT32,
    GpadlHandle: PUINT32,
) -> NTSTATUS {
    let Some((b, r)) = chan(Channel, "VmbChannelCreateGpadlFromBuffer") else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if above_passive(&b, "VmbChannelCreateGpadlFromBuffer") {
        return STATUS_INVALID_DEVICE_STATE;
    }
    if Buffer.is_null() {
        return STATUS_INVALID_PARAMETER_3;
    }
    if ByteCount == 0 {
        return STATUS_INVALID_PARAMETER_4;
    }
    if GpadlHandle.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // The memory is reached later only through the MDL helpers.
    let seg = Segment {
        ptr: Buffer.cast::<u8>(),
        len: ByteCount as usize,
    };
    let result = b.gpadl_create(
        r,
        Flags,
        Described::Segments(vec![seg]),
        crate::engine::AllocFn::GpadlFromBuffer,
    );
    // SAFETY: non-null (checked above), and the caller guarantees it is writable.
    unsafe { write_on_success(GpadlHandle, result) }
}

/// `VmbChannelCreateGpadlFromMdl` (client, open channel): a window of a sim MDL chain
/// (`DataLengthWithinMdl` 0 = to the end). `PASSIVE_LEVEL` only, as for
/// [`VmbChannelCreateGpadlFromBuffer`].
///
/// # Safety
///
/// The MDL's memory must stay alive until the GPADL is deleted; `GpadlHandle` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelCreateGpadlFromMdl(
    Channel: VMBCHANNEL,
    Flags: UINT32,
    Mdl: PMDL,
    StartOffsetWithinMdl: UINT32,
    DataLengthWithinMdl: UINT32,
    GpadlHandle: PUINT32,
) -> NTSTATUS {
    let Some((b, r)) = chan(Channel, "VmbChannelCreateGpadlFromMdl") else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if above_passive(&b, "VmbChannelCreateGpadlFromMdl") {
        return STATUS_INVALID_DEVICE_STATE;
    }
    if GpadlHandle.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let Some(d) = described(
        Mdl,
        StartOffsetWithinMdl as usize,
        DataLengthWithinMdl as usize,
        false,
    ) else {
        return STATUS_INVALID_PARAMETER_3;
    };
    if d.byte_len() == 0 {
        return STATUS_INVALID_PARAMETER_5;
    }
    let result = b.gpadl_create(r, Flags, d, crate::engine::AllocFn::GpadlFromMdl);
    // SAFETY: non-null (checked above), and the caller guarantees it is writable.
    unsafe { write_on_success(GpadlHandle, result) }
}

/// `VmbChannelDeleteGpadl`: blocks while the server has the GPADL mapped (up to the bus's
/// block limit, then a violation). `PASSIVE_LEVEL` only: above it the call is recorded as a
/// violation (and still carried out).
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelDeleteGpadl(Channel: VMBCHANNEL, GpadlHandle: UINT32) {
    forward_void(chan(Channel, "VmbChannelDeleteGpadl"), |b, r| {
        above_passive(b, "VmbChannelDeleteGpadl");
        b.gpadl_delete(r, GpadlHandle)
    });
}

/// `VmbChannelMapGpadl` (server): an MDL aliasing the client's GPADL memory. Unknown GPADL:
/// `STATUS_INVALID_PARAMETER_3`; already mapped: `STATUS_INVALID_DEVICE_STATE`; write access to a
/// read-only GPADL: `STATUS_ACCESS_DENIED` (sim choices).
///
/// # Safety
///
/// `Mdl` must be NULL or valid for a write of a `PMDL`.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelMapGpadl(
    Channel: VMBCHANNEL,
    Flags: UINT32,
    GpadlHandle: UINT32,
    Mdl: *mut PMDL,
) -> NTSTATUS {
    let Some((b, r)) = chan(Channel, "VmbChannelMapGpadl") else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if Mdl.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let result = b.gpadl_map(r, Flags, GpadlHandle);
    // SAFETY: non-null (checked above), and the caller guarantees it is writable.
    unsafe { write_on_success(Mdl, result) }
}

/// `VmbChannelUnmapGpadl` (server).
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelUnmapGpadl(Channel: VMBCHANNEL, GpadlHandle: UINT32) {
    forward_void(chan(Channel, "VmbChannelUnmapGpadl"), |b, r| {
        b.gpadl_unmap(r, GpadlHandle)
    });
}

// ----- Save and restore -----

/// `VmbChannelSaveBegin` (server).
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelSaveBegin(Channel: VMBCHANNEL) -> NTSTATUS {
    forward(chan(Channel, "VmbChannelSaveBegin"), |b, r| b.save_begin(r))
}

/// `VmbChannelSaveContinue` (server): one self-describing chunk per call.
///
/// # Safety
///
/// `SaveBuffer` must be writable for `SaveBufferSize` bytes; `BytesFilled` and `BytesRequired`
/// must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelSaveContinue(
    Channel: VMBCHANNEL,
    SaveBuffer: PVOID,
    SaveBufferSize: ULONG,
    BytesFilled: PULONG,
    BytesRequired: PULONG,
) -> NTSTATUS {
    let Some((b, r)) = chan(Channel, "VmbChannelSaveContinue") else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if SaveBuffer.is_null() && SaveBufferSize > 0 {
        return STATUS_INVALID_PARAMETER_2;
    }
    let out: &mut [u8] = if SaveBufferSize == 0 {
        &mut []
    } else {
        // SAFETY: non-null (checked above) and writable for `SaveBufferSize` bytes (caller's
        // guarantee); no other reference to it exists during the call.
        unsafe { std::slice::from_raw_parts_mut(SaveBuffer.cast::<u8>(), SaveBufferSize as usize) }
    };
    let (status, filled, required) = b.save_continue(r, out);
    // SAFETY: the caller guarantees NULL or writable outputs.
    unsafe { put(BytesFilled, filled) };
    // SAFETY: as above.
    unsafe { put(BytesRequired, required) };
    status
}

/// `VmbChannelSaveEnd` (server).
///
/// # Safety
///
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelSaveEnd(Channel: VMBCHANNEL) {
    forward_void(chan(Channel, "VmbChannelSaveEnd"), |b, r| b.save_end(r));
}

/// `VmbChannelRestoreFromBuffer` (server, disabled channel): one whole chunk per call. A chunk
/// that is not the next one of a save is refused with `STATUS_INVALID_PARAMETER`.
///
/// # Safety
///
/// `Buffer` must be readable for `BufferSize` bytes.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelRestoreFromBuffer(
    Channel: VMBCHANNEL,
    Buffer: PVOID,
    BufferSize: ULONG,
) -> NTSTATUS {
    let Some((b, r)) = chan(Channel, "VmbChannelRestoreFromBuffer") else {
        return STATUS_INVALID_PARAMETER_1;
    };
    // SAFETY: the caller guarantees `Buffer` is readable for `BufferSize` bytes.
    let Ok(data) = (unsafe { bytes(Buffer, BufferSize) }) else {
        return STATUS_INVALID_PARAMETER_2;
    };
    b.restore_chunk(r, data)
}

/// `VmbPacketRestore` (server, inside `EvtVmbChannelRestorePacket`): the packet resumes its
/// saved transaction and is sent again when the channel next opens. `PASSIVE_LEVEL` only (the
/// level of that callback): above it the call is a violation and fails with
/// `STATUS_INVALID_DEVICE_STATE` (sim choice).
///
/// # Safety
///
/// `Buffer` must be readable for `BufferSize` bytes.
#[no_mangle]
pub unsafe extern "C" fn VmbPacketRestore(
    PacketObject: VMBPACKET,
    Buffer: PVOID,
    BufferSize: ULONG,
) -> NTSTATUS {
    let Some((b, r)) = pkt(PacketObject, "VmbPacketRestore") else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if above_passive(&b, "VmbPacketRestore") {
        return STATUS_INVALID_DEVICE_STATE;
    }
    // SAFETY: the caller guarantees `Buffer` is readable for `BufferSize` bytes.
    let Ok(data) = (unsafe { bytes(Buffer, BufferSize) }) else {
        return STATUS_INVALID_PARAMETER_2;
    };
    b.packet_restore(r, data)
}

// ----- Signature proofs -----

const _: PFN_VMB_CHANNEL_ALLOCATE = Some(VmbChannelAllocate);
const _: PFN_VMB_CHANNEL_CLEANUP = Some(VmbChannelCleanup);
const _: PFN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER = Some(VmbChannelCreateGpadlFromBuffer);
const _: PFN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL = Some(VmbChannelCreateGpadlFromMdl);
const _: PFN_VMB_CHANNEL_DELETE_GPADL = Some(VmbChannelDeleteGpadl);
const _: PFN_VMB_CHANNEL_DISABLE = Some(VmbChannelDisable);
const _: PFN_VMB_CHANNEL_ENABLE = Some(VmbChannelEnable);
const _: PFN_VMB_CHANNEL_GET_INTERFACE_INSTANCE = Some(VmbChannelGetInterfaceInstance);
const _: PFN_VMB_CHANNEL_GET_MMIO_SPACE = Some(VmbChannelGetMmioSpace);
const _: PFN_VMB_CHANNEL_GET_POINTER = Some(VmbChannelGetPointer);
const _: PFN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE = Some(VmbChannelInitSetClientContextSize);
const _: PFN_VMB_CHANNEL_INIT_SET_FLAGS = Some(VmbChannelInitSetFlags);
const _: PFN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME = Some(VmbChannelInitSetFriendlyName);
const _: PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA =
    Some(VmbChannelInitSetMaximumExternalData);
const _: PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE = Some(VmbChannelInitSetMaximumPacketSize);
const _: PFN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS =
    Some(VmbChannelInitSetProcessPacketCallbacks);
const _: PFN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS =
    Some(VmbChannelInitSetStateChangeCallbacks);
const _: PFN_VMB_CHANNEL_PACKET_COMPLETE = Some(VmbChannelPacketComplete);
const _: PFN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE = Some(VmbChannelPacketDeferToPassive);
const _: PFN_VMB_CHANNEL_PACKET_FAIL = Some(VmbChannelPacketFail);
const _: PFN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA = Some(VmbChannelPacketGetExternalData);
const _: PFN_VMB_CHANNEL_PAUSE = Some(VmbChannelPause);
const _: PFN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST = Some(VmbChannelSendSynchronousRequest);
const _: PFN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE =
    Some(VmbChannelSetIncomingProcessingAtPassive);
const _: PFN_VMB_CHANNEL_SET_INTERRUPT_LATENCY = Some(VmbChannelSetInterruptLatency);
const _: PFN_VMB_CHANNEL_SET_POINTER = Some(VmbChannelSetPointer);
const _: PFN_VMB_CHANNEL_SET_TRANSACTION_QUOTA = Some(VmbChannelSetTransactionQuota);
const _: PFN_VMB_CHANNEL_SIZEOF_PACKET = Some(VmbChannelSizeofPacket);
const _: PFN_VMB_CHANNEL_START = Some(VmbChannelStart);
const _: PFN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT =
    Some(VmbClientChannelInitSetRingBufferPageCount);
const _: PFN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP = Some(VmbClientChannelInitSetTargetPnp);
const _: PFN_VMB_PACKET_ALLOCATE = Some(VmbPacketAllocate);
const _: PFN_VMB_PACKET_FREE = Some(VmbPacketFree);
const _: PFN_VMB_PACKET_GET_CHANNEL = Some(VmbPacketGetChannel);
const _: PFN_VMB_PACKET_GET_POINTER = Some(VmbPacketGetPointer);
const _: PFN_VMB_PACKET_INITIALIZE = Some(VmbPacketInitialize);
const _: PFN_VMB_PACKET_SEND = Some(VmbPacketSend);
const _: PFN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL = Some(VmbPacketSendWithExternalMdl);
const _: PFN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS = Some(VmbPacketSendWithExternalPfns);
const _: PFN_VMB_PACKET_SET_COMPLETION_ROUTINE = Some(VmbPacketSetCompletionRoutine);
const _: PFN_VMB_PACKET_SET_POINTER = Some(VmbPacketSetPointer);
const _: PFN_VMB_CHANNEL_MAP_GPADL = Some(VmbChannelMapGpadl);
const _: PFN_VMB_CHANNEL_RESTORE_FROM_BUFFER = Some(VmbChannelRestoreFromBuffer);
const _: PFN_VMB_CHANNEL_SAVE_BEGIN = Some(VmbChannelSaveBegin);
const _: PFN_VMB_CHANNEL_SAVE_CONTINUE = Some(VmbChannelSaveContinue);
const _: PFN_VMB_CHANNEL_SAVE_END = Some(VmbChannelSaveEnd);
const _: PFN_VMB_CHANNEL_UNMAP_GPADL = Some(VmbChannelUnmapGpadl);
const _: PFN_VMB_PACKET_RESTORE = Some(VmbPacketRestore);
const _: PFN_VMB_SERVER_CHANNEL_INIT_SET_FLAGS = Some(VmbServerChannelInitSetFlags);
const _: PFN_VMB_SERVER_CHANNEL_INIT_SET_MMIO_MEGABYTES =
    Some(VmbServerChannelInitSetMmioMegabytes);
const _: PFN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS =
    Some(VmbServerChannelInitSetSaveRestorePacketCallbacks);
const _: PFN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_INTERFACE_ID =
    Some(VmbServerChannelInitSetTargetInterfaceId);
const _: PFN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_VTL = Some(VmbServerChannelInitSetTargetVtl);
const _: PFN_VMB_SERVER_CHANNEL_INIT_SET_VMBUS_HANDLE = Some(VmbServerChannelInitSetVmbusHandle);

// ----- Interface tables -----

fn client_table(context: PVOID, size: usize) -> KMCL_CLIENT_INTERFACE_V1 {
    KMCL_CLIENT_INTERFACE_V1 {
        InterfaceHeader: INTERFACE {
            // CAST: the tables are 360 and 472 bytes.
            Size: size as USHORT,
            Version: KMCL_CLIENT_INTERFACE_VERSION_V1,
            Context: context,
            InterfaceReference: Some(interface_reference),
            InterfaceDereference: Some(interface_dereference),
        },
        VmbChannelAllocate: Some(VmbChannelAllocate),
        VmbChannelCleanup: Some(VmbChannelCleanup),
        VmbChannelCreateGpadlFromBuffer: Some(VmbChannelCreateGpadlFromBuffer),
        VmbChannelCreateGpadlFromMdl: Some(VmbChannelCreateGpadlFromMdl),
        VmbChannelDeleteGpadl: Some(VmbChannelDeleteGpadl),
        VmbChannelDisable: Some(VmbChannelDisable),
        VmbChannelEnable: Some(VmbChannelEnable),
        VmbChannelGetInterfaceInstance: Some(VmbChannelGetInterfaceInstance),
        VmbChannelGetMmioSpace: Some(VmbChannelGetMmioSpace),
        VmbChannelGetPointer: Some(VmbChannelGetPointer),
        VmbChannelInitSetClientContextSize: Some(VmbChannelInitSetClientContextSize),
        VmbChannelInitSetFlags: Some(VmbChannelInitSetFlags),
        VmbChannelInitSetFriendlyName: Some(VmbChannelInitSetFriendlyName),
        VmbChannelInitSetMaximumExternalData: Some(VmbChannelInitSetMaximumExternalData),
        VmbChannelInitSetMaximumPacketSize: Some(VmbChannelInitSetMaximumPacketSize),
        VmbChannelInitSetProcessPacketCallbacks: Some(VmbChannelInitSetProcessPacketCallbacks),
        VmbChannelInitSetStateChangeCallbacks: Some(VmbChannelInitSetStateChangeCallbacks),
        VmbChannelPacketComplete: Some(VmbChannelPacketComplete),
        VmbChannelPacketDeferToPassive: Some(VmbChannelPacketDeferToPassive),
        VmbChannelPacketFail: Some(VmbChannelPacketFail),
        VmbChannelPacketGetExternalData: Some(VmbChannelPacketGetExternalData),
        VmbChannelPause: Some(VmbChannelPause),
        VmbChannelSendSynchronousRequest: Some(VmbChannelSendSynchronousRequest),
        VmbChannelSetIncomingProcessingAtPassive: Some(VmbChannelSetIncomingProcessingAtPassive),
        VmbChannelSetInterruptLatency: Some(VmbChannelSetInterruptLatency),
        VmbChannelSetPointer: Some(VmbChannelSetPointer),
        VmbChannelSetTransactionQuota: Some(VmbChannelSetTransactionQuota),
        VmbChannelSizeofPacket: Some(VmbChannelSizeofPacket),
        VmbChannelStart: Some(VmbChannelStart),
        VmbClientChannelInitSetRingBufferPageCount: Some(
            VmbClientChannelInitSetRingBufferPageCount,
        ),
        VmbClientChannelInitSetTargetPnp: Some(VmbClientChannelInitSetTargetPnp),
        VmbPacketAllocate: Some(VmbPacketAllocate),
        VmbPacketFree: Some(VmbPacketFree),
        VmbPacketGetChannel: Some(VmbPacketGetChannel),
        VmbPacketGetPointer: Some(VmbPacketGetPointer),
        VmbPacketInitialize: Some(VmbPacketInitialize),
        VmbPacketSend: Some(VmbPacketSend),
        VmbPacketSendWithExternalMdl: Some(VmbPacketSendWithExternalMdl),
        VmbPacketSendWithExternalPfns: Some(VmbPacketSendWithExternalPfns),
        VmbPacketSetCompletionRoutine: Some(VmbPacketSetCompletionRoutine),
        VmbPacketSetPointer: Some(VmbPacketSetPointer),
    }
}

fn server_table(context: PVOID) -> KMCL_SERVER_INTERFACE_V1 {
    let size = std::mem::size_of::<KMCL_SERVER_INTERFACE_V1>();
    let mut client = client_table(context, size);
    client.InterfaceHeader.Version = KMCL_SERVER_INTERFACE_VERSION_V1;
    KMCL_SERVER_INTERFACE_V1 {
        ClientMethods: client,
        ServerMethods: KMCL_SERVER_ONLY_METHODS {
            VmbChannelMapGpadl: Some(VmbChannelMapGpadl),
            VmbChannelRestoreFromBuffer: Some(VmbChannelRestoreFromBuffer),
            VmbChannelSaveBegin: Some(VmbChannelSaveBegin),
            VmbChannelSaveContinue: Some(VmbChannelSaveContinue),
            VmbChannelSaveEnd: Some(VmbChannelSaveEnd),
            VmbChannelUnmapGpadl: Some(VmbChannelUnmapGpadl),
            VmbConvertVmbusHandleToKernelHandle: Some(
                crate::nt::VmbConvertVmbusHandleToKernelHandle,
            ),
            VmbPacketRestore: Some(VmbPacketRestore),
            VmbServerChannelInitSetFlags: Some(VmbServerChannelInitSetFlags),
            VmbServerChannelInitSetMmioMegabytes: Some(VmbServerChannelInitSetMmioMegabytes),
            VmbServerChannelInitSetSaveRestorePacketCallbacks: Some(
                VmbServerChannelInitSetSaveRestorePacketCallbacks,
            ),
            VmbServerChannelInitSetTargetInterfaceId: Some(
                VmbServerChannelInitSetTargetInterfaceId,
            ),
            VmbServerChannelInitSetTargetVtl: Some(VmbServerChannelInitSetTargetVtl),
            VmbServerChannelInitSetVmbusHandle: Some(VmbServerChannelInitSetVmbusHandle),
        },
    }
}

/// A filled `KMCL_CLIENT_INTERFACE_V1`, as a bus driver returns it from an interface query: it
/// holds one reference, which the importer releases with `InterfaceDereference(Context)`
/// ([`crate::interface_reference_count`] observes it). Not tied to a bus.
pub fn client_interface() -> KMCL_CLIENT_INTERFACE_V1 {
    client_table(
        new_interface_context(None),
        std::mem::size_of::<KMCL_CLIENT_INTERFACE_V1>(),
    )
}

/// A filled `KMCL_SERVER_INTERFACE_V1` (the client table followed by the server-only methods),
/// holding one reference like [`client_interface`].
pub fn server_interface() -> KMCL_SERVER_INTERFACE_V1 {
    server_table(new_interface_context(None))
}

impl crate::Bus {
    /// Like [`client_interface`], with the reference accounted to this bus: a reference still
    /// held makes [`crate::Bus::assert_no_leaks`] fail.
    pub fn client_interface(&self) -> KMCL_CLIENT_INTERFACE_V1 {
        client_table(
            new_interface_context(Some(self.id())),
            std::mem::size_of::<KMCL_CLIENT_INTERFACE_V1>(),
        )
    }

    /// Like [`server_interface`], with the reference accounted to this bus.
    pub fn server_interface(&self) -> KMCL_SERVER_INTERFACE_V1 {
        server_table(new_interface_context(Some(self.id())))
    }

    /// Emulates `IRP_MN_QUERY_INTERFACE` on this bus's device: fills `interface` with the client
    /// or server table when `interface_type`, `size` and `version` match, taking one reference.
    /// Returns `STATUS_INVALID_PARAMETER` for an unknown type or version and
    /// `STATUS_BUFFER_TOO_SMALL` when `size` is smaller than the table.
    ///
    /// # Safety
    ///
    /// `interface` must be valid for writes of `size` bytes and aligned for the table.
    pub unsafe fn query_interface(
        &self,
        interface_type: &GUID,
        size: u16,
        version: u16,
        interface: PINTERFACE,
    ) -> NTSTATUS {
        if interface.is_null() {
            return STATUS_INVALID_PARAMETER;
        }
        if *interface_type == KMCL_CLIENT_INTERFACE_TYPE {
            if version != KMCL_CLIENT_INTERFACE_VERSION_V1 {
                return STATUS_INVALID_PARAMETER;
            }
            if usize::from(size) < std::mem::size_of::<KMCL_CLIENT_INTERFACE_V1>() {
                return STATUS_BUFFER_TOO_SMALL;
            }
            // SAFETY: `interface` is valid for writes of `size` bytes, at least the table's size,
            // and suitably aligned (caller's guarantee).
            unsafe {
                interface
                    .cast::<KMCL_CLIENT_INTERFACE_V1>()
                    .write(self.client_interface())
            };
            STATUS_SUCCESS
        } else if *interface_type == KMCL_SERVER_INTERFACE_TYPE {
            if version != KMCL_SERVER_INTERFACE_VERSION_V1 {
                return STATUS_INVALID_PARAMETER;
            }
            if usize::from(size) < std::mem::size_of::<KMCL_SERVER_INTERFACE_V1>() {
                return STATUS_BUFFER_TOO_SMALL;
            }
            // SAFETY: as above, for the server table.
            unsafe {
                interface
                    .cast::<KMCL_SERVER_INTERFACE_V1>()
                    .write(self.server_interface())
            };
            STATUS_SUCCESS
        } else {
            STATUS_INVALID_PARAMETER
        }
    }
}
