//! The wrapper's own cost on the receive path, counted with callgrind against a *null* KMCL:
//! the exports below return at once (opaque to the optimiser through `black_box`, as a real
//! import is), so the instructions counted are the callback's.
//!
//! One iteration is one `EvtVmbChannelProcessPacket` call, made through the callback pointer as
//! KMCL makes it: find the driver's context from the channel, read an 8-byte request out of
//! the payload (checked, copied once), and complete the packet with an 8-byte response (a too
//! short payload fails it). `raw` is that handler written in C style against the raw
//! declarations; `wrapper` is the same handler behind the crate's process-packet trampoline and
//! packet token.
//!
//! `cargo bench -p vmbus-kmcl --bench receive_path --no-run`, then run the binary under
//! `valgrind --tool=callgrind` with `raw N` and `wrapper N` and compare the per-iteration
//! instruction counts (`.ci/instructions` does this and fails when the wrapper costs more than
//! the raw handler).

use std::hint::black_box;
use std::pin::pin;
use std::ptr::NonNull;

use vmbus_kmcl::channel::{ChannelSlot, Handler, OpenView, Server, ServerBuilder};
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::packet::IncomingPacket;
use vmbus_kmcl::DeviceRef;
use vmbus_kmcl_sys::{
    BOOLEAN, NTSTATUS, PDEVICE_OBJECT, PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
    PFN_VMB_CHANNEL_PROCESS_PACKET, PMDL, PVMB_CHANNEL_STATE_CHANGE_CALLBACKS, PVOID, UINT32,
    VMBCHANNEL, VMBPACKETCOMPLETION,
};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

// ----- The null KMCL backend -----

/// What the null `VmbChannelGetPointer` returns: the context the channel was given.
static mut CHANNEL_POINTER: PVOID = core::ptr::null_mut();

/// The process-packet callback the channel builder registered.
static mut REGISTERED: PFN_VMB_CHANNEL_PROCESS_PACKET = None;

/// Null backend of `VmbChannelAllocate`: a fake, never dereferenced channel handle.
///
/// # Safety
///
/// `channel` must be valid for writes.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelAllocate(
    parent: PDEVICE_OBJECT,
    is_server: BOOLEAN,
    channel: *mut VMBCHANNEL,
) -> NTSTATUS {
    black_box((parent, is_server));
    // SAFETY: the caller guarantees `channel` is writable.
    unsafe { channel.write(core::ptr::dangling_mut()) };
    0
}

/// Null backend of `VmbChannelSetPointer`: keeps the pointer for `VmbChannelGetPointer`.
#[no_mangle]
pub extern "C" fn VmbChannelSetPointer(channel: VMBCHANNEL, pointer: PVOID) {
    black_box(channel);
    // SAFETY: single-threaded; set before any callback runs.
    unsafe { CHANNEL_POINTER = pointer };
}

/// Null backend of `VmbChannelInitSetStateChangeCallbacks`.
#[no_mangle]
pub extern "C" fn VmbChannelInitSetStateChangeCallbacks(
    channel: VMBCHANNEL,
    callbacks: PVMB_CHANNEL_STATE_CHANGE_CALLBACKS,
) -> NTSTATUS {
    black_box((channel, callbacks));
    0
}

/// Null backend of `VmbChannelInitSetProcessPacketCallbacks`: keeps the process-packet
/// callback, which the benchmark then calls as KMCL would.
#[no_mangle]
pub extern "C" fn VmbChannelInitSetProcessPacketCallbacks(
    channel: VMBCHANNEL,
    process_packet: PFN_VMB_CHANNEL_PROCESS_PACKET,
    processing_complete: PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
) -> NTSTATUS {
    black_box((channel, processing_complete));
    // SAFETY: single-threaded; set before any callback runs.
    unsafe { REGISTERED = process_packet };
    0
}

/// Null backend of `VmbChannelCleanup`.
#[no_mangle]
pub extern "C" fn VmbChannelCleanup(channel: VMBCHANNEL) {
    black_box(channel);
}

/// Null backend of `KeGetCurrentIrql`: PASSIVE_LEVEL (the debug-build IRQL checks of
/// channel teardown read it).
#[no_mangle]
pub extern "C" fn KeGetCurrentIrql() -> vmbus_kmcl_sys::nt::KIRQL {
    black_box(vmbus_kmcl_sys::nt::PASSIVE_LEVEL)
}

/// Null backend of `ZwClose` (the slot closes the VMBus handle it may own).
#[no_mangle]
pub extern "C" fn ZwClose(handle: vmbus_kmcl_sys::HANDLE) -> NTSTATUS {
    black_box(handle);
    0
}

/// Null backend of `VmbChannelDisable`.
#[no_mangle]
pub extern "C" fn VmbChannelDisable(channel: VMBCHANNEL) {
    black_box(channel);
}

/// Null `VmbChannelDeleteGpadl`: the closed trampoline references it (it deletes the GPADLs a
/// handler still holds); the bench never makes one.
#[no_mangle]
pub extern "C" fn VmbChannelDeleteGpadl(channel: VMBCHANNEL, gpadl: u32) {
    black_box((channel, gpadl));
}

/// Null backend of `VmbChannelGetPointer`.
#[no_mangle]
#[inline(never)]
pub extern "C" fn VmbChannelGetPointer(channel: VMBCHANNEL) -> PVOID {
    black_box(channel);
    // SAFETY: written once before any callback runs, on this thread.
    black_box(unsafe { CHANNEL_POINTER })
}

/// Null backend of `VmbChannelPacketComplete`.
#[no_mangle]
#[inline(never)]
pub extern "C" fn VmbChannelPacketComplete(
    packet: VMBPACKETCOMPLETION,
    buffer: PVOID,
    length: UINT32,
) {
    black_box((packet, buffer, length));
}

/// Null backend of `VmbChannelPacketFail`.
#[no_mangle]
#[inline(never)]
pub extern "C" fn VmbChannelPacketFail(packet: VMBPACKETCOMPLETION) {
    black_box(packet);
}

/// Null backend of `VmbChannelPacketDeferToPassive`.
#[no_mangle]
#[inline(never)]
pub extern "C" fn VmbChannelPacketDeferToPassive(packet: VMBPACKETCOMPLETION) {
    black_box(packet);
}

/// Null backend of `VmbChannelPacketGetExternalData`.
#[no_mangle]
#[inline(never)]
pub extern "C" fn VmbChannelPacketGetExternalData(
    packet: VMBPACKETCOMPLETION,
    flags: UINT32,
    mdl: *mut PMDL,
) -> NTSTATUS {
    black_box((packet, flags, mdl));
    black_box(0)
}

// ----- The raw C-style handler -----

/// The driver's per-channel state, as a C driver keeps it behind the channel pointer.
struct RawContext {
    multiplier: u32,
}

/// The request both handlers read: two little-endian `u32`s.
#[derive(FromBytes, KnownLayout, Immutable)]
#[repr(C)]
struct Request {
    id: u32,
    value: u32,
}

/// The response both handlers send.
#[derive(IntoBytes, Immutable)]
#[repr(C)]
struct Response {
    id: u32,
    value: u32,
}

/// `EvtVmbChannelProcessPacket` written against the raw declarations.
///
/// # Safety
///
/// Called by KMCL with a live packet and `length` readable bytes at `buffer`.
unsafe extern "C" fn raw_process_packet(
    channel: VMBCHANNEL,
    packet: VMBPACKETCOMPLETION,
    buffer: PVOID,
    length: u32,
    _flags: u32,
) {
    // SAFETY: a live channel.
    let context = unsafe { vmbus_kmcl_sys::VmbChannelGetPointer(channel) };
    // SAFETY: the channel pointer was set to a `RawContext` that outlives the channel.
    let context = unsafe { &*context.cast::<RawContext>() };
    if buffer.is_null() || (length as usize) < core::mem::size_of::<Request>() {
        // SAFETY: the delivery's one answer.
        unsafe { vmbus_kmcl_sys::VmbChannelPacketFail(packet) };
        return;
    }
    // Copied once into a local, as `RtlCopyMemory(&request, Buffer, sizeof(request))` does.
    // SAFETY: `buffer` holds at least `size_of::<Request>()` readable bytes (checked above).
    let request = unsafe { buffer.cast::<Request>().read_unaligned() };
    let response = Response {
        id: request.id,
        value: request.value.wrapping_mul(context.multiplier),
    };
    let size = core::mem::size_of::<Response>() as u32;
    let response: *const Response = &response;
    // SAFETY: the delivery's one answer, with `size` readable response bytes.
    unsafe { vmbus_kmcl_sys::VmbChannelPacketComplete(packet, response.cast_mut().cast(), size) };
}

// ----- The same handler through the wrapper -----

/// The handler a driver writes with the crate: no `unsafe`.
struct Echo {
    multiplier: u32,
}

impl Handler<Server, Linked> for Echo {
    fn process_packet(&self, _: &OpenView<'_, Server, Linked>, packet: IncomingPacket<'_, Linked>) {
        match packet.read::<Request>() {
            Ok((request, _rest)) => packet.complete_with(&Response {
                id: request.id,
                value: request.value.wrapping_mul(self.multiplier),
            }),
            Err(_too_short) => packet.fail(),
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let iterations: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);

    let raw_context = RawContext { multiplier: 3 };
    let raw: (PFN_VMB_CHANNEL_PROCESS_PACKET, PVOID) = (
        Some(raw_process_packet),
        (&raw const raw_context).cast_mut().cast(),
    );

    // The crate's side: a server channel allocated through the builder, which sets the
    // channel pointer to its slot and registers its process-packet trampoline.
    // SAFETY: the null KMCL never dereferences the device object.
    let device = unsafe { DeviceRef::from_raw(NonNull::dangling()) };
    let mut slot = pin!(ChannelSlot::new(device, Linked, Echo { multiplier: 3 }));
    let builder = ServerBuilder::allocate(slot.as_mut()).expect("the null KMCL allocates");
    // SAFETY: single-threaded; set by the builder just now.
    let trampoline = unsafe { REGISTERED };
    // SAFETY: as above.
    let wrapper: (PFN_VMB_CHANNEL_PROCESS_PACKET, PVOID) = (trampoline, unsafe { CHANNEL_POINTER });

    match mode.as_str() {
        "raw" => run(raw, iterations),
        "wrapper" => run(wrapper, iterations),
        // `cargo bench` passes `--bench`: run both once as a smoke test.
        _ => {
            run(raw, 1);
            run(wrapper, 1);
        }
    }
    drop(builder);
}

/// Delivers `iterations` packets to `callback` as KMCL would.
fn run((callback, context): (PFN_VMB_CHANNEL_PROCESS_PACKET, PVOID), iterations: u64) {
    // SAFETY: single-threaded; set before any callback runs.
    unsafe { CHANNEL_POINTER = context };
    let callback = black_box(callback).expect("a callback");
    let channel: VMBCHANNEL = black_box(core::ptr::dangling_mut());
    let mut payload = [0u8; 16];
    for i in 0..iterations {
        payload[..4].copy_from_slice(&(i as u32).to_le_bytes());
        payload[4..8].copy_from_slice(&7u32.to_le_bytes());
        let packet: VMBPACKETCOMPLETION = black_box(core::ptr::dangling_mut());
        let buffer: PVOID = black_box(payload.as_mut_ptr().cast());
        // SAFETY: the null KMCL's "delivery": a fake packet handle the null exports ignore,
        // and 8 readable payload bytes.
        unsafe { callback(channel, packet, buffer, black_box(8), 0) };
    }
}
