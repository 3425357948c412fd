//! Invocation of the driver's callbacks.
//!
//! The bus engine decides *which* callback runs next and with which arguments, as a [`Call`];
//! this module is the only place that actually calls a driver's function pointer. It sets the
//! simulated IRQL the callback documents (`DISPATCH_LEVEL` for packet processing and completion
//! routines unless the channel asked for passive processing, `PASSIVE_LEVEL` for state changes)
//! and restores the caller's IRQL afterwards. Every callback runs as the kernel runs it, in the
//! System process with nothing attached and previous mode `KernelMode`, whatever process the
//! pumping thread entered or is attached to; that state is restored afterwards too. The engine never holds its lock while a `Call`
//! runs, so callbacks may re-enter the sim freely.

use std::ffi::c_void;

use vmbus_kmcl_sys::nt::{DISPATCH_LEVEL, KIRQL, PASSIVE_LEVEL};
use vmbus_kmcl_sys::{
    NTSTATUS, PFN_VMB_CHANNEL_CLOSED, PFN_VMB_CHANNEL_OPENED, PFN_VMB_CHANNEL_PNP_FAILURE,
    PFN_VMB_CHANNEL_PROCESSING_COMPLETE, PFN_VMB_CHANNEL_PROCESS_PACKET,
    PFN_VMB_CHANNEL_RESTORE_PACKET, PFN_VMB_CHANNEL_SAVE_PACKET, PFN_VMB_PACKET_COMPLETION_ROUTINE,
    VMBCHANNEL,
};

use crate::status::STATUS_SUCCESS;

/// A pointer the driver gave the sim (a context pointer, or the memory of a
/// `VmbPacketInitialize` packet). The sim stores it and hands it back unchanged, provenance
/// included, so the driver can dereference what it gets back; the sim itself never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UserPtr(pub *mut c_void);

// SAFETY: the sim never dereferences a `UserPtr`; it only stores it and returns it to the
// driver, so moving the value between threads cannot by itself cause a data race.
unsafe impl Send for UserPtr {}
// SAFETY: as above; shared access only copies the pointer value.
unsafe impl Sync for UserPtr {}

impl Default for UserPtr {
    fn default() -> Self {
        UserPtr(std::ptr::null_mut())
    }
}

impl UserPtr {
    /// The address, for lookups and reports.
    pub(crate) fn addr(self) -> usize {
        // CAST: pointer to address; the pointer itself is kept for handing back.
        self.0 as usize
    }
}

/// One callback to run, with its arguments. Handles are the pointer-shaped values the driver
/// knows; buffers point into memory the engine keeps alive until the call returns.
#[derive(Debug)]
pub(crate) enum Call {
    /// `EvtChannelOpened`.
    Opened(PFN_VMB_CHANNEL_OPENED, usize),
    /// `EvtChannelClosed`, `EvtChannelSuspend`, `EvtChannelStarted`, `EvtChannelPostStarted`:
    /// all take only the channel.
    State(PFN_VMB_CHANNEL_CLOSED, usize),
    /// `EvtVmbChannelProcessPacket`.
    ProcessPacket {
        /// The callback.
        f: PFN_VMB_CHANNEL_PROCESS_PACKET,
        /// Channel handle.
        channel: usize,
        /// Incoming packet handle.
        packet: usize,
        /// Payload (owned by the engine until the packet is completed).
        buf: *mut u8,
        /// Payload length.
        len: u32,
        /// `VMBUS_CHANNEL_PROCESS_PACKET_FLAG_*`.
        flags: u32,
        /// Run at PASSIVE_LEVEL instead of DISPATCH_LEVEL.
        passive: bool,
    },
    /// `EvtVmbChannelProcessingComplete`.
    ProcessingComplete {
        /// The callback.
        f: PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
        /// Channel handle.
        channel: usize,
        /// Packets in the batch.
        count: u32,
        /// Run at PASSIVE_LEVEL.
        passive: bool,
    },
    /// `EvtVmbPacketCompletionRoutine`.
    Completion {
        /// The routine.
        f: PFN_VMB_PACKET_COMPLETION_ROUTINE,
        /// The packet as the driver knows it.
        packet: UserPtr,
        /// Completion status.
        status: NTSTATUS,
        /// Completion data (null when there is none).
        buf: *mut u8,
        /// Its length.
        len: u32,
    },
    /// `EvtVmbChannelSavePacket`.
    SavePacket {
        /// The callback.
        f: PFN_VMB_CHANNEL_SAVE_PACKET,
        /// Channel handle.
        channel: usize,
        /// The packet as the driver knows it.
        packet: UserPtr,
        /// Buffer to fill (null with size 0 for the size probe).
        buf: *mut u8,
        /// Its size.
        size: u32,
    },
    /// `EvtVmbChannelRestorePacket`.
    RestorePacket {
        /// The callback.
        f: PFN_VMB_CHANNEL_RESTORE_PACKET,
        /// Channel handle.
        channel: usize,
        /// KMCL's saved state of the packet.
        lib: *mut u8,
        /// Its length.
        lib_len: u32,
        /// The driver's saved state.
        save: *mut u8,
        /// Its length.
        save_len: u32,
    },
    /// `EvtChannelPnpFailure`.
    PnpFailure(PFN_VMB_CHANNEL_PNP_FAILURE, usize, NTSTATUS),
}

/// Sets the simulated IRQL for the duration of a callback.
struct IrqlGuard(KIRQL);

impl IrqlGuard {
    fn raise(irql: KIRQL) -> IrqlGuard {
        IrqlGuard(crate::nt::set_current_irql(irql))
    }
}

impl Drop for IrqlGuard {
    fn drop(&mut self) {
        crate::nt::set_current_irql(self.0);
    }
}

fn ch(v: usize) -> VMBCHANNEL {
    crate::handle::to_ptr(v)
}

/// Runs `call`. Returns the callback's status (`STATUS_SUCCESS` for `VOID` callbacks) and, for
/// `SavePacket`, the `BytesNeeded` it reported.
pub(crate) fn run(call: Call) -> (NTSTATUS, u32) {
    let _system = crate::nt::enter_system_context();
    match call {
        Call::Opened(Some(f), c) => {
            let _irql = IrqlGuard::raise(PASSIVE_LEVEL);
            // SAFETY:
            // - `f` was registered through `VmbChannelInitSetStateChangeCallbacks`, whose caller
            //   promised a valid `EVT_VMB_CHANNEL_OPENED`;
            // - the argument is the channel's own handle.
            (unsafe { f(ch(c)) }, 0)
        }
        Call::State(Some(f), c) => {
            let _irql = IrqlGuard::raise(PASSIVE_LEVEL);
            // SAFETY: `f` came from the driver's state-change table (validity promised by the
            // caller of the setter); the argument is the channel's own handle.
            unsafe { f(ch(c)) };
            (STATUS_SUCCESS, 0)
        }
        Call::ProcessPacket {
            f: Some(f),
            channel,
            packet,
            buf,
            len,
            flags,
            passive,
        } => {
            let _irql = IrqlGuard::raise(if passive {
                PASSIVE_LEVEL
            } else {
                DISPATCH_LEVEL
            });
            // SAFETY:
            // - `f` was registered with `VmbChannelInitSetProcessPacketCallbacks`, whose caller
            //   promised a valid `EVT_VMB_CHANNEL_PROCESS_PACKET`;
            // - `buf`/`len` point at the packet's payload, which the engine keeps alive and
            //   untouched until the packet is completed;
            // - the handles are live sim handles.
            unsafe {
                f(
                    ch(channel),
                    crate::handle::to_ptr::<vmbus_kmcl_sys::VMBPACKETCOMPLETION__>(packet),
                    buf.cast::<c_void>(),
                    len,
                    flags,
                )
            };
            (STATUS_SUCCESS, 0)
        }
        Call::ProcessingComplete {
            f: Some(f),
            channel,
            count,
            passive,
        } => {
            let _irql = IrqlGuard::raise(if passive {
                PASSIVE_LEVEL
            } else {
                DISPATCH_LEVEL
            });
            // SAFETY: `f` was registered with `VmbChannelInitSetProcessPacketCallbacks`
            // (validity promised by its caller); the channel handle is live.
            unsafe { f(ch(channel), count) };
            (STATUS_SUCCESS, 0)
        }
        Call::Completion {
            f: Some(f),
            packet,
            status,
            buf,
            len,
        } => {
            let _irql = IrqlGuard::raise(DISPATCH_LEVEL);
            // SAFETY:
            // - `f` was installed with `VmbPacketSetCompletionRoutine`, whose caller promised a
            //   valid `EVT_VMB_PACKET_COMPLETION_ROUTINE`;
            // - `buf`/`len` is null/0 or the completion data the engine owns for this call.
            unsafe { f(packet.0.cast(), status, buf.cast::<c_void>(), len) };
            (STATUS_SUCCESS, 0)
        }
        Call::SavePacket {
            f: Some(f),
            channel,
            packet,
            buf,
            size,
        } => {
            let _irql = IrqlGuard::raise(PASSIVE_LEVEL);
            let mut needed: u32 = 0;
            // SAFETY:
            // - `f` was registered with `VmbServerChannelInitSetSaveRestorePacketCallbacks`
            //   (validity promised by its caller);
            // - `buf` is null with `size` 0, or an engine-owned buffer of `size` bytes;
            // - `needed` is a live local.
            let s = unsafe {
                f(
                    ch(channel),
                    packet.0.cast::<vmbus_kmcl_sys::VMBPACKET__>(),
                    buf.cast(),
                    size,
                    &mut needed,
                )
            };
            (s, needed)
        }
        Call::RestorePacket {
            f: Some(f),
            channel,
            lib,
            lib_len,
            save,
            save_len,
        } => {
            let _irql = IrqlGuard::raise(PASSIVE_LEVEL);
            // SAFETY:
            // - `f` was registered with `VmbServerChannelInitSetSaveRestorePacketCallbacks`
            //   (validity promised by its caller);
            // - both buffers are engine-owned and alive for the call.
            let status = unsafe { f(ch(channel), lib.cast(), lib_len, save.cast(), save_len) };
            (status, 0)
        }
        Call::PnpFailure(Some(f), c, status) => {
            let _irql = IrqlGuard::raise(PASSIVE_LEVEL);
            // SAFETY: `f` was registered with `VmbClientChannelInitSetTargetPnp` (validity
            // promised by its caller); the channel handle is live.
            unsafe { f(ch(c), status) };
            (STATUS_SUCCESS, 0)
        }
        // An absent optional callback: nothing to run.
        _ => (STATUS_SUCCESS, 0),
    }
}
