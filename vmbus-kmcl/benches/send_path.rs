//! The wrapper's own cost on the send path, counted with callgrind against a *null* KMCL: the
//! exports below return at once (opaque to the optimiser through `black_box`, as a real import
//! is), so the instructions counted are the driver's and the wrapper's.
//!
//! Two measurements, each as `raw` (C style, against the raw declarations) and `wrapper` (the
//! crate's safe API):
//!
//! * `send`: one round trip of a packet object in caller storage: reuse it (an atomic "in use"
//!   flag), send an 8-byte message waiting for the completion (`VmbPacketSend`), then the
//!   completion routine as KMCL calls it: find the context (`VmbPacketGetPointer`), check the
//!   status and read the peer's 8 completion bytes, and release the packet for the next round.
//! * `request`: one synchronous request (`VmbChannelSendSynchronousRequest`) waiting for an
//!   8-byte completion with a relative timeout of one second: the IRQL check (PASSIVE_LEVEL),
//!   the 8-byte rule, the call, and the outcome (completed, not queued, timed out, removed).
//!
//! `cargo bench -p vmbus-kmcl --bench send_path --no-run`, then run the binary under
//! `valgrind --tool=callgrind` with `raw-send N`, `wrapper-send N`, `raw-request N` and
//! `wrapper-request N` and compare the per-iteration instruction counts (`.ci/instructions`
//! does this and fails when the wrapper costs more than the raw calls).

use std::hint::black_box;
use std::pin::pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use vmbus_kmcl::channel::{ChannelSlot, Client, ClientBuilder, Handler, OpenView};
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::packet::IncomingPacket;
use vmbus_kmcl::send::{
    Completion, InlineFlags, Outcome, OutgoingPacket, PacketStorage, SendCompletion, SendFlags,
    Timeout,
};
use vmbus_kmcl::DeviceRef;
use vmbus_kmcl_sys::{
    BOOLEAN, LARGE_INTEGER, NTSTATUS, PDEVICE_OBJECT, PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
    PFN_VMB_CHANNEL_PROCESS_PACKET, PFN_VMB_PACKET_COMPLETION_ROUTINE, PLARGE_INTEGER, PMDL,
    PUINT32, PVMB_CHANNEL_STATE_CHANGE_CALLBACKS, PVOID, UINT32, VMBCHANNEL, VMBPACKET,
    VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
};

// ----- The null KMCL backend -----

/// What the null `VmbChannelGetPointer` returns.
static mut CHANNEL_POINTER: PVOID = core::ptr::null_mut();
/// What the null `VmbPacketGetPointer` returns: the pointer last set on a packet.
static mut PACKET_POINTER: PVOID = core::ptr::null_mut();
/// The completion routine last set on a packet.
static mut ROUTINE: PFN_VMB_PACKET_COMPLETION_ROUTINE = None;
/// The packet last sent (the null KMCL completes it in the benchmark loop).
static mut SENT: VMBPACKET = core::ptr::null_mut();

/// Null `VmbChannelAllocate`: a fake, never dereferenced channel handle.
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

/// Null `VmbChannelSetPointer`.
#[no_mangle]
pub extern "C" fn VmbChannelSetPointer(channel: VMBCHANNEL, pointer: PVOID) {
    black_box(channel);
    // SAFETY: single-threaded.
    unsafe { CHANNEL_POINTER = pointer };
}

/// Null `VmbChannelGetPointer`.
#[no_mangle]
#[inline(never)]
pub extern "C" fn VmbChannelGetPointer(channel: VMBCHANNEL) -> PVOID {
    black_box(channel);
    // SAFETY: single-threaded.
    black_box(unsafe { CHANNEL_POINTER })
}

/// Null `VmbChannelInitSetStateChangeCallbacks`.
#[no_mangle]
pub extern "C" fn VmbChannelInitSetStateChangeCallbacks(
    channel: VMBCHANNEL,
    callbacks: PVMB_CHANNEL_STATE_CHANGE_CALLBACKS,
) -> NTSTATUS {
    black_box((channel, callbacks));
    0
}

/// Null `VmbChannelInitSetProcessPacketCallbacks`.
#[no_mangle]
pub extern "C" fn VmbChannelInitSetProcessPacketCallbacks(
    channel: VMBCHANNEL,
    process_packet: PFN_VMB_CHANNEL_PROCESS_PACKET,
    processing_complete: PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
) -> NTSTATUS {
    black_box((channel, process_packet, processing_complete));
    0
}

/// Null `VmbChannelEnable`.
#[no_mangle]
pub extern "C" fn VmbChannelEnable(channel: VMBCHANNEL) -> NTSTATUS {
    black_box(channel);
    0
}

/// Null `VmbChannelDisable`.
#[no_mangle]
pub extern "C" fn VmbChannelDisable(channel: VMBCHANNEL) {
    black_box(channel);
}

/// Null `VmbChannelCleanup`.
#[no_mangle]
pub extern "C" fn VmbChannelCleanup(channel: VMBCHANNEL) {
    black_box(channel);
}

/// Null `VmbChannelDeleteGpadl`: the closed trampoline references it (it deletes the GPADLs a
/// handler still holds); the bench never makes one.
#[no_mangle]
pub extern "C" fn VmbChannelDeleteGpadl(channel: VMBCHANNEL, gpadl: u32) {
    black_box((channel, gpadl));
}

/// Null `KeGetCurrentIrql`: PASSIVE_LEVEL.
#[no_mangle]
#[inline(never)]
pub extern "C" fn KeGetCurrentIrql() -> vmbus_kmcl_sys::nt::KIRQL {
    black_box(vmbus_kmcl_sys::nt::PASSIVE_LEVEL)
}

/// Null `ZwClose`.
#[no_mangle]
pub extern "C" fn ZwClose(handle: vmbus_kmcl_sys::HANDLE) -> NTSTATUS {
    black_box(handle);
    0
}

/// Null `VmbChannelSizeofPacket`.
#[no_mangle]
pub extern "C" fn VmbChannelSizeofPacket(channel: VMBCHANNEL) -> UINT32 {
    black_box(channel);
    black_box(128)
}

/// Null `VmbPacketInitialize`.
#[no_mangle]
pub extern "C" fn VmbPacketInitialize(
    channel: VMBCHANNEL,
    packet: VMBPACKET,
    size: u32,
) -> NTSTATUS {
    black_box((channel, packet, size));
    0
}

/// Null `VmbPacketAllocate` (not used by the loop).
#[no_mangle]
pub extern "C" fn VmbPacketAllocate(channel: VMBCHANNEL) -> VMBPACKET {
    black_box(channel);
    core::ptr::null_mut()
}

/// Null `VmbPacketFree` (not used by the loop).
#[no_mangle]
pub extern "C" fn VmbPacketFree(packet: VMBPACKET) {
    black_box(packet);
}

/// Null `VmbPacketSetCompletionRoutine`: keeps the routine for the loop.
#[no_mangle]
pub extern "C" fn VmbPacketSetCompletionRoutine(
    packet: VMBPACKET,
    routine: PFN_VMB_PACKET_COMPLETION_ROUTINE,
) {
    black_box(packet);
    // SAFETY: single-threaded.
    unsafe { ROUTINE = routine };
}

/// Null `VmbPacketSetPointer`.
#[no_mangle]
pub extern "C" fn VmbPacketSetPointer(packet: VMBPACKET, pointer: PVOID) {
    black_box(packet);
    // SAFETY: single-threaded.
    unsafe { PACKET_POINTER = pointer };
}

/// Null `VmbPacketGetPointer`.
#[no_mangle]
#[inline(never)]
pub extern "C" fn VmbPacketGetPointer(packet: VMBPACKET) -> PVOID {
    black_box(packet);
    // SAFETY: single-threaded.
    black_box(unsafe { PACKET_POINTER })
}

/// Null `VmbPacketSend`: accepts the packet (completed by the loop).
#[no_mangle]
#[inline(never)]
pub extern "C" fn VmbPacketSend(
    packet: VMBPACKET,
    buffer: PVOID,
    length: UINT32,
    mdl: PMDL,
    flags: UINT32,
) -> NTSTATUS {
    black_box((buffer, length, mdl, flags));
    // SAFETY: single-threaded.
    unsafe { SENT = packet };
    black_box(0)
}

/// Null `VmbChannelSendSynchronousRequest`: "completes" with 8 bytes.
///
/// # Safety
///
/// `size` NULL or writable; `completion` writable for `*size` bytes.
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn VmbChannelSendSynchronousRequest(
    channel: VMBCHANNEL,
    buffer: PVOID,
    length: UINT32,
    mdl: PMDL,
    flags: UINT32,
    completion: PVOID,
    size: PUINT32,
    timeout: PLARGE_INTEGER,
) -> NTSTATUS {
    black_box((channel, buffer, length, mdl, flags, completion, timeout));
    if !size.is_null() {
        // SAFETY: the caller's guarantee.
        unsafe { size.write(black_box(8)) };
    }
    black_box(0)
}

/// Null `VmbChannelPacketComplete` (the handler's receive side, not used by the loop).
#[no_mangle]
pub extern "C" fn VmbChannelPacketComplete(
    packet: vmbus_kmcl_sys::VMBPACKETCOMPLETION,
    buffer: PVOID,
    length: UINT32,
) {
    black_box((packet, buffer, length));
}

// ----- The raw C-style driver -----

/// The driver's context of its one reusable packet, as a C driver keeps it.
struct RawContext {
    busy: AtomicBool,
    sum: AtomicU64,
}

/// `EvtVmbPacketCompletionRoutine` against the raw declarations.
///
/// # Safety
///
/// Called by KMCL with a packet whose pointer is a `RawContext`, and `length` readable bytes.
unsafe extern "C" fn raw_completion(
    packet: VMBPACKET,
    status: NTSTATUS,
    buffer: PVOID,
    length: u32,
) {
    // SAFETY: a live packet.
    let context = unsafe { vmbus_kmcl_sys::VmbPacketGetPointer(packet) };
    // SAFETY: the pointer was set to the driver's `RawContext`, which outlives the channel.
    let context = unsafe { &*context.cast::<RawContext>() };
    if status == 0 && !buffer.is_null() && length >= 8 {
        // SAFETY: 8 readable bytes (checked).
        let reply = unsafe { buffer.cast::<u64>().read_unaligned() };
        context.sum.fetch_add(reply, Ordering::Relaxed);
    }
    context.busy.store(false, Ordering::Release);
}

/// One raw round trip: reuse, send, the null KMCL's completion.
#[inline(never)]
fn raw_send(context: &RawContext, packet: VMBPACKET, message: &[u8; 8], reply: &[u8; 8]) {
    if context.busy.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: an initialized packet not in flight; 8 readable bytes, copied by KMCL.
    let status = unsafe {
        vmbus_kmcl_sys::VmbPacketSend(
            packet,
            message.as_ptr().cast_mut().cast(),
            8,
            core::ptr::null_mut(),
            VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
        )
    };
    if status != 0 {
        context.busy.store(false, Ordering::Release);
        return;
    }
    complete(reply);
}

/// One raw synchronous request.
#[inline(never)]
fn raw_request(channel: VMBCHANNEL, request: &[u8; 8], counts: &[AtomicU64; 4]) {
    // SAFETY: reading the IRQL has no precondition.
    if unsafe { vmbus_kmcl_sys::nt::KeGetCurrentIrql() } > vmbus_kmcl_sys::nt::PASSIVE_LEVEL {
        return;
    }
    let mut response = [0u8; 8];
    let mut size: u32 = 8;
    let mut timeout = LARGE_INTEGER {
        QuadPart: -10_000_000,
    };
    // SAFETY: a live client channel at PASSIVE_LEVEL; 8 readable request bytes; 8 writable
    // response bytes (a multiple of 8); a readable timeout.
    let status = unsafe {
        vmbus_kmcl_sys::VmbChannelSendSynchronousRequest(
            channel,
            request.as_ptr().cast_mut().cast(),
            8,
            core::ptr::null_mut(),
            VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
            response.as_mut_ptr().cast(),
            &mut size,
            &mut timeout,
        )
    };
    let index = match status {
        0 => {
            counts[0].fetch_add(u64::from(size.min(8)), Ordering::Relaxed);
            return;
        }
        s if s == 0x8000_0005_u32 as i32 => 1,
        s if s == 0xC000_0120_u32 as i32 => 2,
        s if s == 0xC000_02B6_u32 as i32 => 3,
        _ => return,
    };
    counts[index].fetch_add(1, Ordering::Relaxed);
}

// ----- The same driver through the wrapper -----

/// The handler a driver writes with the crate: no `unsafe`.
struct Vsc {
    storage: PacketStorage<128>,
    sum: AtomicU64,
}

impl Handler<Client, Linked> for Vsc {
    fn process_packet(&self, _: &OpenView<'_, Client, Linked>, packet: IncomingPacket<'_, Linked>) {
        packet.complete_empty();
    }
}

impl SendCompletion<Linked> for Vsc {
    #[inline]
    fn packet_completed(&self, packet: OutgoingPacket<'_, Self, Linked>, done: Completion<'_>) {
        if done.status().is_success() {
            if let Some(reply) = done.data().first_chunk::<8>() {
                self.sum
                    .fetch_add(u64::from_ne_bytes(*reply), Ordering::Relaxed);
            }
        }
        drop(packet);
    }
}

type VscChannel<'s> = vmbus_kmcl::channel::Channel<'s, Client, Vsc, Linked>;

/// One wrapper round trip: reuse, send, the null KMCL's completion.
#[inline(never)]
fn wrapper_send(channel: &VscChannel<'_>, message: &[u8; 8], reply: &[u8; 8]) {
    let Ok(packet) = channel.storage_packet(|vsc: &Vsc| &vsc.storage) else {
        return;
    };
    if packet
        .send(message, SendFlags::WAIT_FOR_COMPLETION)
        .is_err()
    {
        return;
    }
    complete(reply);
}

/// One synchronous request through the wrapper.
#[inline(never)]
fn wrapper_request(channel: &VscChannel<'_>, request: &[u8; 8], counts: &[AtomicU64; 4]) {
    let mut response = [0u8; 8];
    let timeout = Timeout::Relative(Duration::from_secs(1));
    let index = match channel.send_request(request, InlineFlags::empty(), &mut response, timeout) {
        Ok(Outcome::Completed(n)) => {
            counts[0].fetch_add(n as u64, Ordering::Relaxed);
            return;
        }
        Ok(Outcome::NotQueued) => 1,
        Ok(Outcome::TimedOut) => 2,
        Ok(Outcome::DeviceRemoved) => 3,
        Err(_) => return,
    };
    counts[index].fetch_add(1, Ordering::Relaxed);
}

/// The null KMCL completes the packet just sent with `reply`, through its routine.
#[inline(always)]
fn complete(reply: &[u8; 8]) {
    // SAFETY: single-threaded; the routine was set before the loop.
    let routine = unsafe { ROUTINE };
    // SAFETY: single-threaded; the packet was just sent.
    let packet = unsafe { SENT };
    let routine = black_box(routine).expect("a routine");
    // SAFETY: KMCL's completion of the packet in flight, with 8 readable bytes.
    unsafe {
        routine(
            black_box(packet),
            0,
            reply.as_ptr().cast_mut().cast(),
            black_box(8),
        )
    };
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let iterations: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let message = black_box(7u64.to_le_bytes());
    let reply = black_box(3u64.to_le_bytes());
    let counts: [AtomicU64; 4] = Default::default();

    // The raw driver's packet, in its own storage, initialized once.
    #[repr(C, align(16))]
    struct RawStorage([u8; 128]);
    let mut raw_storage = RawStorage([0; 128]);
    let raw_packet: VMBPACKET = raw_storage.0.as_mut_ptr().cast();
    let raw_context = RawContext {
        busy: AtomicBool::new(false),
        sum: AtomicU64::new(0),
    };
    let raw_channel: VMBCHANNEL = black_box(core::ptr::dangling_mut());

    // The crate's side: a client channel, enabled, and its storage packet formatted once.
    // SAFETY: the null KMCL never dereferences the device object.
    let device = unsafe { DeviceRef::from_raw(NonNull::dangling()) };
    let vsc = Vsc {
        storage: PacketStorage::new(),
        sum: AtomicU64::new(0),
    };
    let mut slot = pin!(ChannelSlot::new(device, Linked, vsc));
    let builder = ClientBuilder::allocate(slot.as_mut()).expect("the null KMCL allocates");
    let channel = builder.enable().expect("the null KMCL enables");
    drop(
        channel
            .storage_packet(|vsc: &Vsc| &vsc.storage)
            .expect("formatted"),
    );

    let raw_setup = || {
        // SAFETY: 128 writable, aligned bytes that outlive the loop; the routine and context
        // outlive it too.
        unsafe {
            assert_eq!(
                vmbus_kmcl_sys::VmbPacketInitialize(raw_channel, raw_packet, 128),
                0
            )
        };
        // SAFETY: an initialized packet, not in flight.
        unsafe { vmbus_kmcl_sys::VmbPacketSetCompletionRoutine(raw_packet, Some(raw_completion)) };
        // SAFETY: as above.
        unsafe {
            vmbus_kmcl_sys::VmbPacketSetPointer(
                raw_packet,
                (&raw const raw_context).cast_mut().cast(),
            )
        };
    };

    match mode.as_str() {
        "raw-send" => {
            raw_setup();
            for _ in 0..iterations {
                raw_send(&raw_context, raw_packet, &message, &reply);
            }
        }
        "wrapper-send" => {
            for _ in 0..iterations {
                wrapper_send(&channel, &message, &reply);
            }
        }
        "raw-request" => {
            for _ in 0..iterations {
                raw_request(raw_channel, &message, &counts);
            }
        }
        "wrapper-request" => {
            for _ in 0..iterations {
                wrapper_request(&channel, &message, &counts);
            }
        }
        // `cargo bench` passes `--bench`: run each once as a smoke test.
        _ => {
            wrapper_send(&channel, &message, &reply);
            raw_setup();
            raw_send(&raw_context, raw_packet, &message, &reply);
            raw_request(raw_channel, &message, &counts);
            wrapper_request(&channel, &message, &counts);
            assert_eq!(raw_context.sum.load(Ordering::Relaxed), 3);
            assert_eq!(channel.handler().sum.load(Ordering::Relaxed), 3);
            assert_eq!(counts[0].load(Ordering::Relaxed), 16);
        }
    }
    black_box((&raw_context, &counts, &raw_storage));
    drop(channel);
}
