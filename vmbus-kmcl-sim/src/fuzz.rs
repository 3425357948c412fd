//! A hostile guest for fuzzing a VSP (feature `fuzz`).
//!
//! A VSP's packet parser faces the other partition, which may be hostile. This module plays
//! that guest against a server channel on a [`Bus`]: it decodes a sequence of [`Action`]s from
//! fuzzer bytes (with the [`arbitrary`] crate) and carries them out through a client channel
//! of its own and the bus's fault injection:
//!
//! * well-formed requests built from the driver's own message types ([`Vsp::Request`], encoded
//!   by [`Vsp::encode`]), sent with and without `WAIT_FOR_COMPLETION`, as synchronous requests,
//!   with external data in an MDL window of any offset and length (fuzzer bytes behind it) or
//!   as a list of arbitrary page frame numbers;
//! * raw frames put straight into the guest-to-host ring ([`Bus::inject_raw_guest_packet`]):
//!   arbitrary bytes, hostile header fields, frames with a valid header around an arbitrary
//!   payload, and external-data frames whose page range (byte count, offset, page list) is
//!   hostile;
//! * completions never sent: packets the VSP sends to the guest are held, and completed with
//!   arbitrary data, failed, or never answered, as the input says;
//! * GPADLs: the guest shares memory of any size and contents (read-only or not) and deletes
//!   it again, also while a request naming it is still in the ring; a request names a GPADL
//!   by a [`GpadlRef`]: one the guest shares, one it deleted, or any number
//!   ([`GuestGpadls::handle`] turns it into the handle that goes on the wire);
//! * replies checked: the reply to each synchronous request goes to [`Vsp::check_reply`] with
//!   the GPADLs' bytes, so a VSP wrapper can compare an echo with what the guest shared;
//! * a full guest ring, a crashed guest (the harness then boots a new one), the VSP paused and
//!   resumed, and the VSP saved and restored mid-stream ([`Vsp::save_restore`]).
//!
//! The guest deletes the GPADLs it still shares when its channel closes (in its closed
//! callback, or before it disables or crashes), as KMCL requires of a client.
//!
//! After every action the bus must have recorded no violation, and after the input (the guest
//! closed, the VSP dropped) nothing may be leaked: otherwise [`HostileGuest::run`] panics with
//! the report and the action that provoked it, which a fuzz target turns into a crash.
//!
//! # Example
//!
//! A VSP that echoes 8-byte requests, fuzzed with a handful of fixed bytes here (a cargo-fuzz
//! target passes the fuzzer's bytes instead):
//!
//! ```
//! use vmbus_kmcl_sim::fuzz::{GuestGpadls, HostileGuest, Vsp};
//! use vmbus_kmcl_sim::Bus;
//! use vmbus_kmcl_sys::*;
//!
//! unsafe extern "C" fn echo(_: VMBCHANNEL, pkt: VMBPACKETCOMPLETION, buf: PVOID, len: u32, _: u32) {
//!     if len == 8 {
//!         // SAFETY: KMCL passes `len` readable bytes at `buf`; the packet is answered once.
//!         unsafe { VmbChannelPacketComplete(pkt, buf, len) };
//!     } else {
//!         // SAFETY: as above.
//!         unsafe { VmbChannelPacketFail(pkt) };
//!     }
//! }
//!
//! /// The VSP under test: a raw server channel (one built with `vmbus-kmcl` works the same way).
//! struct Echo(VMBCHANNEL);
//!
//! impl Vsp for Echo {
//!     type Request = u64;
//!     fn channel(&self) -> VMBCHANNEL {
//!         self.0
//!     }
//!     fn encode(&self, request: &u64, _gpadls: &GuestGpadls<'_>, out: &mut Vec<u8>) {
//!         out.extend_from_slice(&request.to_le_bytes());
//!     }
//! }
//!
//! impl Drop for Echo {
//!     fn drop(&mut self) {
//!         // SAFETY: the channel is live; disabled before cleanup, once.
//!         unsafe { VmbChannelDisable(self.0) };
//!         // SAFETY: as above.
//!         unsafe { VmbChannelCleanup(self.0) };
//!     }
//! }
//!
//! const TYPE: GUID = GUID { Data1: 0xec40, Data2: 1, Data3: 2, Data4: [3; 8] };
//! const INSTANCE: GUID = GUID { Data1: 0xec41, Data2: 1, Data3: 2, Data4: [3; 8] };
//!
//! let bus = Bus::new();
//! let mut server = std::ptr::null_mut();
//! // SAFETY: plain KMCL calls with live arguments.
//! unsafe {
//!     assert_eq!(VmbChannelAllocate(bus.root_device(), 1, &mut server), 0);
//!     assert_eq!(VmbServerChannelInitSetTargetInterfaceId(server, TYPE, INSTANCE), 0);
//!     assert_eq!(VmbChannelInitSetProcessPacketCallbacks(server, Some(echo), None), 0);
//!     assert_eq!(VmbChannelEnable(server), 0);
//!     VmbChannelStart(server);
//! }
//! let input = [0u8, 7, 7, 7, 7, 7, 7, 7, 7, 1, 3, 9, 9, 9, 5, 0, 4, 1];
//! let stats = HostileGuest::new(TYPE).run(&bus, Echo(server), &input);
//! assert!(stats.actions > 0);
//! // `run` checked the bus after every action and once the VSP was dropped.
//! ```
//!
//! # What counts as a finding
//!
//! A violation recorded by the bus (a double completion, a call in the wrong state, a
//! completion that can never fit, a pause that waits for a packet the VSP never answers, ...),
//! an object leaked once the guest is gone and the VSP dropped, a completion for a raw frame
//! that asked for none, or a panic of the VSP itself. The harness answers every packet the VSP
//! sends it exactly once (or lets a crash discard it), so a report is about the VSP, not the
//! guest. A wrong reply is a finding when the VSP's [`Vsp::check_reply`] panics on it.

use std::collections::HashSet;
use std::fmt::Debug;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use vmbus_kmcl_sys::*;

use crate::{Bus, ChannelState, SimMdl};

/// The VSP under test, as the harness sees it: its server channel, how to encode its requests,
/// and how it pauses, resumes and saves.
///
/// The harness drops the value at the end of each input: its `Drop` must disable and clean up
/// the channel (a `vmbus-kmcl` `Channel` does).
pub trait Vsp {
    /// A request of the driver's protocol, built by the fuzzer.
    type Request: for<'a> Arbitrary<'a> + Debug;

    /// The VSP's server channel (enabled and started, on the bus given to
    /// [`HostileGuest::run`]).
    fn channel(&self) -> VMBCHANNEL;

    /// Appends the wire bytes of `request` to `out`; a request that names a GPADL takes its
    /// handle from `gpadls` ([`GuestGpadls::handle`] of a [`GpadlRef`] in the request).
    fn encode(&self, request: &Self::Request, gpadls: &GuestGpadls<'_>, out: &mut Vec<u8>);

    /// Checks the VSP's reply to a synchronous `request` the guest sent as the bytes `sent`:
    /// `reply` is what came back (cut to the guest's reply buffer), `gpadls` what the guest
    /// shares now, bytes included ([`GuestGpadls::contents`]). Panic on a wrong reply: that
    /// is a finding.
    /// Default: every reply is accepted. It runs with the guest's GPADL table locked, so it
    /// must not drive the bus (the guest's closed callback would wait for the table).
    fn check_reply(
        &mut self,
        request: &Self::Request,
        sent: &[u8],
        gpadls: &GuestGpadls<'_>,
        reply: &[u8],
    ) {
        let _ = (request, sent, gpadls, reply);
    }

    /// Pauses the VSP's channel. Default: `VmbChannelPause` on [`Vsp::channel`].
    fn pause(&mut self) {
        // SAFETY: `channel` is the live server channel (trait contract); the harness calls this
        // at PASSIVE_LEVEL, outside every callback.
        unsafe { VmbChannelPause(self.channel()) };
    }

    /// Resumes the VSP's channel. Default: `VmbChannelStart` on [`Vsp::channel`].
    fn resume(&mut self) {
        // SAFETY: as in `pause`.
        unsafe { VmbChannelStart(self.channel()) };
    }

    /// Saves and restores the VSP mid-stream, as a VM save and restore would. Returns false when
    /// the VSP does not support it (the default; the action is then skipped). A VSP whose state
    /// is all in KMCL can call [`save_restore_in_place`].
    fn save_restore(&mut self) -> bool {
        false
    }
}

/// Saves the server channel `channel` and restores it onto the same channel object: pause,
/// `VmbChannelSaveBegin`/`SaveContinue`/`SaveEnd`, disable, `VmbChannelRestoreFromBuffer` with
/// every chunk, enable and start. The guest sees the channel close and is offered it again.
///
/// # Errors
///
/// The first failing status of the save or restore calls; the channel is then enabled and
/// started again as far as possible.
///
/// # Safety
///
/// `channel` must be a live, enabled server channel that no other thread uses meanwhile, and
/// the call must be made at `PASSIVE_LEVEL` outside every callback of the channel.
pub unsafe fn save_restore_in_place(channel: VMBCHANNEL) -> Result<(), NTSTATUS> {
    // SAFETY: live server channel, passive, outside callbacks (caller).
    unsafe { VmbChannelPause(channel) };
    // SAFETY: as above.
    let begin = unsafe { VmbChannelSaveBegin(channel) };
    let mut chunks = Vec::new();
    let mut result = if begin == crate::status::STATUS_SUCCESS {
        let r = save_chunks(channel, &mut chunks);
        // SAFETY: as above; ends the save begun here.
        unsafe { VmbChannelSaveEnd(channel) };
        r
    } else {
        Err(begin)
    };
    // SAFETY: as above.
    unsafe { VmbChannelDisable(channel) };
    if result.is_ok() {
        for chunk in &mut chunks {
            // CAST: chunks are at most `SAVE_CHUNK` bytes.
            let len = chunk.len() as u32;
            // SAFETY: `chunk` is readable for `len` bytes; the channel is disabled.
            let s = unsafe { VmbChannelRestoreFromBuffer(channel, chunk.as_mut_ptr().cast(), len) };
            if s != crate::status::STATUS_SUCCESS
                && s != crate::status::STATUS_MORE_PROCESSING_REQUIRED
            {
                result = Err(s);
                break;
            }
        }
    }
    // SAFETY: as above.
    let enabled = unsafe { VmbChannelEnable(channel) };
    // SAFETY: as above.
    unsafe { VmbChannelStart(channel) };
    result?;
    if enabled != crate::status::STATUS_SUCCESS {
        return Err(enabled);
    }
    Ok(())
}

/// Bytes per save chunk in [`save_restore_in_place`].
const SAVE_CHUNK: usize = 4096;

fn save_chunks(channel: VMBCHANNEL, chunks: &mut Vec<Vec<u8>>) -> Result<(), NTSTATUS> {
    loop {
        let mut buf = vec![0u8; SAVE_CHUNK];
        let mut filled = 0u32;
        let mut required = 0u32;
        // SAFETY: `buf` is writable for its length; the outputs are live locals; the channel is
        // a live server channel with a save in progress (caller of `save_restore_in_place`).
        let s = unsafe {
            VmbChannelSaveContinue(
                channel,
                buf.as_mut_ptr().cast(),
                // CAST: a constant that fits.
                SAVE_CHUNK as u32,
                &mut filled,
                &mut required,
            )
        };
        if s != crate::status::STATUS_SUCCESS && s != crate::status::STATUS_BUFFER_OVERFLOW {
            return Err(s);
        }
        buf.truncate(filled as usize);
        if !buf.is_empty() {
            chunks.push(buf);
        }
        if s == crate::status::STATUS_SUCCESS {
            return Ok(());
        }
    }
}

/// How a request travels from the guest.
#[derive(Debug, Clone, Arbitrary)]
pub enum SendKind {
    /// `VmbPacketSend` without waiting for a completion.
    NoWait,
    /// `VmbPacketSend` with `WAIT_FOR_COMPLETION`.
    Wait,
    /// `VmbChannelSendSynchronousRequest` with a short timeout and a reply buffer of
    /// `8 * reply_units` bytes.
    Synchronous {
        /// Reply buffer size in 8-byte units.
        reply_units: u8,
    },
    /// `VmbPacketSendWithExternalMdl` with a window of an MDL holding `data`.
    ExternalMdl {
        /// The bytes behind the MDL.
        data: Vec<u8>,
        /// Window offset (hostile: may lie outside `data`).
        offset: u16,
        /// Window length (hostile; 0 means to the end).
        length: u16,
        /// `VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH`.
        force_length: bool,
    },
    /// `VmbPacketSendWithExternalPfns` with arbitrary page frame numbers.
    ExternalPfns {
        /// The page frame numbers.
        pfns: Vec<u64>,
    },
}

/// One step of the hostile guest.
#[derive(Debug, Clone, Arbitrary)]
pub enum Action<R> {
    /// A well-formed request of the driver's protocol.
    Request {
        /// The request.
        request: R,
        /// How it is sent.
        kind: SendKind,
    },
    /// A raw frame: a valid in-band header (completion requested or not) around `payload`.
    RawFrame {
        /// Payload bytes.
        payload: Vec<u8>,
        /// Completion-requested flag.
        completion: bool,
        /// Transaction id.
        transaction_id: u64,
    },
    /// A raw frame with external pages (type 9, "GPA direct"): one range of `byte_count`
    /// bytes at `byte_offset` in the first of `pfns` (all hostile: the count of page numbers
    /// need not match the range), then `payload`.
    RawExternal {
        /// Payload bytes.
        payload: Vec<u8>,
        /// The range's byte count.
        byte_count: u32,
        /// The range's offset into its first page.
        byte_offset: u16,
        /// The page numbers.
        pfns: Vec<u64>,
        /// Completion-requested flag.
        completion: bool,
        /// Transaction id.
        transaction_id: u64,
    },
    /// A raw frame whose header fields are all chosen by the fuzzer.
    RawHeader {
        /// Packet type.
        ty: u16,
        /// Data offset in 8-byte units.
        offset8: u16,
        /// Total length in 8-byte units.
        total8: u16,
        /// Flags.
        flags: u16,
        /// Bytes after the 16-byte descriptor.
        rest: Vec<u8>,
    },
    /// Arbitrary bytes as a raw frame.
    RawBytes(Vec<u8>),
    /// Lets the bus do up to `4 * n + 1` units of work.
    Deliver(u8),
    /// Completes a held packet from the VSP (index modulo the number held) with `data`.
    CompleteHeld {
        /// Which held packet.
        index: u8,
        /// Completion data.
        data: Vec<u8>,
    },
    /// Fails a held packet from the VSP.
    FailHeld(u8),
    /// Makes the guest's outgoing ring full (true) or not.
    RingFull(bool),
    /// The guest partition crashes; a new guest opens the channel again.
    CrashGuest,
    /// The guest closes its channel in order and a new guest opens it again.
    Reconnect,
    /// The VSP pauses its channel.
    Pause,
    /// The VSP resumes its channel.
    Resume,
    /// The VSP is saved and restored ([`Vsp::save_restore`]).
    SaveRestore,
    /// The guest shares a GPADL (`VmbChannelCreateGpadlFromMdl`) of `size` bytes (0: as many
    /// as `contents` has) holding `contents`, cut or zero-padded to that size. Skipped while
    /// the guest shares [`MAX_GPADLS`]; a share KMCL refuses (an empty one, a guest that is
    /// not open) is counted in [`RunStats::gpadls_refused`].
    ShareGpadl {
        /// The bytes shared.
        contents: Vec<u8>,
        /// The GPADL's size in bytes.
        size: u16,
        /// `VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY`: the VSP may only map it for reading.
        read_only: bool,
    },
    /// The guest deletes the GPADL it shares at this index (modulo their number; nothing when
    /// it shares none), whether or not a request in the ring still names it.
    DeleteGpadl(u8),
}

/// How many GPADLs the guest shares at most at once.
pub const MAX_GPADLS: usize = 8;

/// How a request names a GPADL; [`GuestGpadls::handle`] gives the handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum GpadlRef {
    /// The one the guest shares at this index (modulo their number); when it shares none, a
    /// handle the bus never gave out.
    Shared(u8),
    /// The one the guest deleted at this index (modulo their number, of every guest of the
    /// run); when none was deleted, a handle the bus never gave out.
    Deleted(u8),
    /// This number, whatever it names.
    Raw(u32),
}

/// One GPADL the guest shares: its handle and the MDL of its bytes, which outlives it.
#[derive(Debug)]
struct SharedGpadl {
    handle: u32,
    read_only: bool,
    mdl: SimMdl,
}

/// The guest's GPADLs: those it shares and the handles of those it deleted.
#[derive(Debug, Default)]
struct GpadlTable {
    shared: Vec<SharedGpadl>,
    deleted: Vec<u32>,
}

/// The GPADLs of the hostile guest, as [`Vsp::encode`] and [`Vsp::check_reply`] see them.
#[derive(Debug, Clone, Copy)]
pub struct GuestGpadls<'a> {
    shared: &'a [SharedGpadl],
    deleted: &'a [u32],
}

impl GuestGpadls<'_> {
    /// A guest that shares no GPADL and deleted none (for encoding requests outside a run).
    pub const fn none() -> GuestGpadls<'static> {
        GuestGpadls {
            shared: &[],
            deleted: &[],
        }
    }

    /// The handle `r` names. A handle the bus never gave out is taken from the top of the
    /// `u32` range (the sim numbers GPADLs upward from 1).
    pub fn handle(&self, r: GpadlRef) -> u32 {
        let never = |n: u8| u32::MAX - u32::from(n);
        match r {
            GpadlRef::Shared(n) => match self.shared.len() {
                0 => never(n),
                len => self.shared[usize::from(n) % len].handle,
            },
            GpadlRef::Deleted(n) => match self.deleted.len() {
                0 => never(n),
                len => self.deleted[usize::from(n) % len],
            },
            GpadlRef::Raw(raw) => raw,
        }
    }

    /// The handles of the GPADLs the guest shares, oldest first.
    pub fn shared(&self) -> impl Iterator<Item = u32> + '_ {
        self.shared.iter().map(|g| g.handle)
    }

    /// The handles of the GPADLs the guest deleted, oldest first.
    pub fn deleted(&self) -> &[u32] {
        self.deleted
    }

    /// A copy of the bytes of the shared GPADL `handle`, or `None` when the guest does not
    /// share it (any more).
    pub fn contents(&self, handle: u32) -> Option<Vec<u8>> {
        Some(self.find(handle)?.mdl.to_vec())
    }

    /// Whether the shared GPADL `handle` was shared read-only, or `None` when the guest does
    /// not share it (any more).
    pub fn is_read_only(&self, handle: u32) -> Option<bool> {
        Some(self.find(handle)?.read_only)
    }

    fn find(&self, handle: u32) -> Option<&SharedGpadl> {
        self.shared.iter().find(|g| g.handle == handle)
    }
}

/// What one input did (for the fuzz target's statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Actions carried out.
    pub actions: usize,
    /// Requests the guest sent that KMCL accepted.
    pub sent: usize,
    /// Raw frames the bus accepted.
    pub raw_accepted: usize,
    /// Raw frames the bus refused.
    pub raw_refused: usize,
    /// Packets from the VSP the guest answered (completed or failed) by an action.
    pub answered: usize,
    /// Replies to synchronous requests handed to [`Vsp::check_reply`].
    pub replies: usize,
    /// GPADLs the guest shared.
    pub gpadls_shared: usize,
    /// GPADL shares KMCL refused.
    pub gpadls_refused: usize,
    /// GPADLs the guest deleted by an action (those deleted when a guest closed not counted).
    pub gpadls_deleted: usize,
}

/// The guest's side of the harness: packets from the VSP waiting for an answer, and the
/// guest's GPADLs.
#[derive(Debug, Default)]
struct GuestCtx {
    held: Mutex<Vec<usize>>,
    gpadls: Mutex<GpadlTable>,
}

impl GuestCtx {
    fn held(&self) -> std::sync::MutexGuard<'_, Vec<usize>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn gpadls(&self) -> std::sync::MutexGuard<'_, GpadlTable> {
        self.gpadls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the guest's GPADLs as the VSP's hooks see them.
    fn with_gpadls<R>(&self, f: impl FnOnce(&GuestGpadls<'_>) -> R) -> R {
        let table = self.gpadls();
        f(&GuestGpadls {
            shared: &table.shared,
            deleted: &table.deleted,
        })
    }

    /// Deletes every GPADL the guest shares on `channel`, each once, and keeps their handles
    /// as deleted. The table is not locked during the calls (a delete may run callbacks).
    fn delete_gpadls(&self, channel: VMBCHANNEL) {
        let shared = std::mem::take(&mut self.gpadls().shared);
        for g in &shared {
            // SAFETY: a GPADL this guest created on `channel` and has not deleted (it was just
            // taken out of the table); the callers run at PASSIVE_LEVEL (the harness between
            // actions, or the guest's closed callback).
            unsafe { VmbChannelDeleteGpadl(channel, g.handle) };
        }
        self.gpadls()
            .deleted
            .extend(shared.iter().map(|g| g.handle));
        // The MDLs go only now, after their GPADLs.
        drop(shared);
    }
}

/// The guest's closed callback: KMCL wants every GPADL of the channel deleted by its end.
unsafe extern "C" fn guest_closed(channel: VMBCHANNEL) {
    // SAFETY: as in `guest_packet`: the channel pointer is the guest's live `GuestCtx`.
    let ctx = unsafe { VmbChannelGetPointer(channel) }.cast::<GuestCtx>();
    // SAFETY: as above; only shared access.
    let ctx = unsafe { &*ctx };
    ctx.delete_gpadls(channel);
}

/// The guest's packet callback: holds every packet for an [`Action`] to answer.
unsafe extern "C" fn guest_packet(
    channel: VMBCHANNEL,
    packet: VMBPACKETCOMPLETION,
    _buffer: PVOID,
    _length: u32,
    _flags: u32,
) {
    // SAFETY: the harness set the channel pointer to its live `GuestCtx`, which outlives the
    // channel (it is cleaned up before the context is dropped).
    let ctx = unsafe { VmbChannelGetPointer(channel) }.cast::<GuestCtx>();
    // SAFETY: as above; only shared access.
    let ctx = unsafe { &*ctx };
    // CAST: a handle value, kept as an integer.
    ctx.held().push(packet as usize);
}

/// A hostile guest for one interface type; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct HostileGuest {
    interface_type: GUID,
    max_actions: usize,
    block_limit: Duration,
    work_limit: usize,
}

/// One guest channel and what it holds.
///
/// # Invariants
///
/// `ctx` comes from `Box::into_raw`, is only reached through shared references, and is freed
/// by `Drop` alone, after the channel (whose pointer is `ctx`) is cleaned up. A raw pointer and
/// not a `Box`, so that moving the `Guest` leaves the channel's copy of the pointer valid.
struct Guest {
    channel: VMBCHANNEL,
    ctx: NonNull<GuestCtx>,
    /// MDLs of sent packets; they must outlive the packets, so they live as long as the guest.
    mdls: Vec<SimMdl>,
}

impl Guest {
    fn ctx(&self) -> &GuestCtx {
        // SAFETY: live until `Drop` frees it, and only shared references are made (invariant).
        unsafe { self.ctx.as_ref() }
    }

    /// Answers each held packet once, disables and cleans up the channel (once).
    fn close(&mut self) {
        if self.channel.is_null() {
            return;
        }
        let held = std::mem::take(&mut *self.ctx().held());
        for p in held {
            // SAFETY: a packet the guest was delivered and has not answered; each held value
            // is answered once (it was just taken out of the list).
            unsafe { VmbChannelPacketComplete(crate::handle::to_ptr(p), std::ptr::null_mut(), 0) };
        }
        self.ctx().delete_gpadls(self.channel);
        // SAFETY: the guest's live channel, passive, outside callbacks.
        unsafe { VmbChannelDisable(self.channel) };
        // SAFETY: as above, disabled just before; not used again (the field is cleared).
        unsafe { VmbChannelCleanup(self.channel) };
        self.channel = std::ptr::null_mut();
    }
}

impl Drop for Guest {
    /// Also on a finding's panic, so that the bus is left with the VSP's objects only.
    fn drop(&mut self) {
        self.close();
        // SAFETY: from `Box::into_raw` (`Box::leak`), freed only here, once, after the channel
        // that pointed at it was cleaned up (invariant); no reference to it is left.
        drop(unsafe { Box::from_raw(self.ctx.as_ptr()) });
    }
}

impl HostileGuest {
    /// A guest that opens the VSP's channel by `interface_type` (any instance).
    pub fn new(interface_type: GUID) -> HostileGuest {
        HostileGuest {
            interface_type,
            max_actions: 64,
            block_limit: Duration::from_millis(100),
            work_limit: 100_000,
        }
    }

    /// At most `n` actions per input (default 64).
    pub fn max_actions(mut self, n: usize) -> HostileGuest {
        self.max_actions = n;
        self
    }

    /// The bus's block limit during a run (default 100 ms): how long a pause or disable waits
    /// for the VSP to answer its packets before the bus reports a violation.
    pub fn block_limit(mut self, limit: Duration) -> HostileGuest {
        self.block_limit = limit;
        self
    }

    /// Runs the actions decoded from `data` against `vsp` on `bus`, then closes the guest,
    /// drops `vsp` and checks the bus.
    ///
    /// # Panics
    ///
    /// On a finding (see the [module docs](self#what-counts-as-a-finding)), with the bus's
    /// report and the action that provoked it; also when `bus` already holds violations when
    /// the run starts, or the guest channel cannot be set up.
    #[track_caller]
    pub fn run<V: Vsp>(&self, bus: &Bus, mut vsp: V, data: &[u8]) -> RunStats {
        bus.set_block_limit(self.block_limit);
        check(bus, "before the first action", &"no action yet");
        let mut u = Unstructured::new(data);
        let mut stats = RunStats::default();
        let mut done: Vec<Action<V::Request>> = Vec::new();
        let mut raw_wants: HashSet<u64> = HashSet::new();
        let mut guest = self.open_guest(bus);
        self.work(bus);
        while done.len() < self.max_actions && !u.is_empty() {
            let Ok(action) = Action::<V::Request>::arbitrary(&mut u) else {
                break;
            };
            self.act(
                bus,
                &mut vsp,
                &mut guest,
                &action,
                &mut stats,
                &mut raw_wants,
            );
            done.push(action);
            stats.actions += 1;
            for c in bus.take_raw_guest_completions() {
                if !raw_wants.contains(&c.transaction_id) {
                    panic!(
                        "vmbus-kmcl-sim fuzz: a completion {c:?} for a raw frame that asked for \
                         none; actions: {done:#?}"
                    );
                }
            }
            check(bus, "after the last action", &done);
        }
        self.close_guest(bus, &mut guest, false);
        self.work(bus);
        let _ = bus.take_raw_guest_completions();
        check(bus, "after the guest closed", &done);
        drop(vsp);
        self.work(bus);
        let report = bus.leak_report();
        if !report.is_clean() {
            panic!(
                "vmbus-kmcl-sim fuzz: bus {} is not clean after the VSP was dropped: {report:#?}\n\
                 actions: {done:#?}",
                bus.id()
            );
        }
        stats
    }

    fn work(&self, bus: &Bus) {
        bus.run_at_most(self.work_limit);
    }

    fn open_guest(&self, bus: &Bus) -> Guest {
        let ctx = NonNull::from(Box::leak(Box::<GuestCtx>::default()));
        let mut channel = std::ptr::null_mut();
        // SAFETY: a live out-pointer; the guest device of `bus`; passive, outside callbacks.
        let s = unsafe { VmbChannelAllocate(bus.guest_device(), 0, &mut channel) };
        assert_eq!(
            s, 0,
            "vmbus-kmcl-sim fuzz: the guest channel cannot be allocated"
        );
        // SAFETY: `channel` is live and in its init phase; the GUID is a live local.
        let s = unsafe {
            VmbClientChannelInitSetTargetPnp(channel, &self.interface_type, std::ptr::null(), None)
        };
        assert_eq!(s, 0, "vmbus-kmcl-sim fuzz: guest target");
        // SAFETY: as above; the callback is an `extern "C"` function of the right type.
        let s =
            unsafe { VmbChannelInitSetProcessPacketCallbacks(channel, Some(guest_packet), None) };
        assert_eq!(s, 0, "vmbus-kmcl-sim fuzz: guest callbacks");
        let mut states = VMB_CHANNEL_STATE_CHANGE_CALLBACKS {
            Version: 1,
            // CAST: the table's size, 48 bytes.
            Size: std::mem::size_of::<VMB_CHANNEL_STATE_CHANGE_CALLBACKS>() as u32,
            EvtChannelOpened: None,
            EvtChannelClosed: Some(guest_closed),
            EvtChannelSuspend: None,
            EvtChannelStarted: None,
            EvtChannelPostStarted: None,
        };
        // SAFETY: as above; the table is a live local (KMCL copies it).
        let s = unsafe { VmbChannelInitSetStateChangeCallbacks(channel, &mut states) };
        assert_eq!(s, 0, "vmbus-kmcl-sim fuzz: guest state callbacks");
        // SAFETY: `channel` is live; the pointer stays valid until the channel is cleaned up
        // (the `Guest` frees it only after its `close`).
        unsafe { VmbChannelSetPointer(channel, ctx.as_ptr().cast()) };
        // SAFETY: `channel` is live and configured.
        let s = unsafe { VmbChannelEnable(channel) };
        assert_eq!(s, 0, "vmbus-kmcl-sim fuzz: guest enable");
        Guest {
            channel,
            ctx,
            mdls: Vec::new(),
        }
    }

    /// Disables and cleans up the guest's channel; a crashed guest answers nothing it holds
    /// (the cleanup discards it), any other answers each held packet once first.
    fn close_guest(&self, bus: &Bus, guest: &mut Guest, crashed: bool) {
        let _ = bus.set_ring_full(guest.channel, false);
        if crashed {
            guest.ctx().held().clear();
        }
        guest.close();
    }

    /// Closes the guest (answering what it holds unless it crashed) and boots a new one, which
    /// remembers the GPADLs deleted so far. The old guest's MDLs and context are dropped only
    /// after its channel is cleaned up.
    fn replace_guest(&self, bus: &Bus, guest: &mut Guest, crashed: bool) {
        self.close_guest(bus, guest, crashed);
        let deleted = std::mem::take(&mut guest.ctx().gpadls().deleted);
        *guest = self.open_guest(bus);
        guest.ctx().gpadls().deleted = deleted;
        self.work(bus);
    }

    fn act<V: Vsp>(
        &self,
        bus: &Bus,
        vsp: &mut V,
        guest: &mut Guest,
        action: &Action<V::Request>,
        stats: &mut RunStats,
        raw_wants: &mut HashSet<u64>,
    ) {
        let server = vsp.channel();
        match action {
            Action::Request { request, kind } => {
                let mut bytes = Vec::new();
                guest
                    .ctx()
                    .with_gpadls(|gpadls| vsp.encode(request, gpadls, &mut bytes));
                match send(guest, &bytes, kind) {
                    Sent::Refused => {}
                    Sent::Accepted => stats.sent += 1,
                    Sent::Replied(reply) => {
                        stats.sent += 1;
                        stats.replies += 1;
                        guest
                            .ctx()
                            .with_gpadls(|gpadls| vsp.check_reply(request, &bytes, gpadls, &reply));
                    }
                }
            }
            Action::ShareGpadl {
                contents,
                size,
                read_only,
            } => match share_gpadl(guest, contents, *size, *read_only) {
                Some(true) => stats.gpadls_shared += 1,
                Some(false) => stats.gpadls_refused += 1,
                None => {}
            },
            Action::DeleteGpadl(index) => {
                let taken = {
                    let mut table = guest.ctx().gpadls();
                    match table.shared.len() {
                        0 => None,
                        len => Some(table.shared.remove(usize::from(*index) % len)),
                    }
                };
                if let Some(g) = taken {
                    // SAFETY: a GPADL of the guest's live channel, deleted once (taken out of
                    // the table); passive, outside callbacks. Its MDL is dropped after.
                    unsafe { VmbChannelDeleteGpadl(guest.channel, g.handle) };
                    guest.ctx().gpadls().deleted.push(g.handle);
                    stats.gpadls_deleted += 1;
                }
            }
            Action::RawFrame {
                payload,
                completion,
                transaction_id,
            } => {
                let total = (16 + payload.len()).div_ceil(8);
                let mut frame = header(6, 2, total, u16::from(*completion), *transaction_id);
                frame.extend_from_slice(payload);
                frame.resize(total * 8, 0);
                self.inject(
                    bus,
                    server,
                    &frame,
                    *completion,
                    *transaction_id,
                    stats,
                    raw_wants,
                );
            }
            Action::RawExternal {
                payload,
                byte_count,
                byte_offset,
                pfns,
                completion,
                transaction_id,
            } => {
                let pfns = &pfns[..pfns.len().min(64)];
                let offset8 = 4 + pfns.len();
                let total = offset8 + payload.len().div_ceil(8);
                // CAST: at most 68 units.
                let mut frame = header(
                    9,
                    offset8 as u16,
                    total,
                    u16::from(*completion),
                    *transaction_id,
                );
                frame.extend_from_slice(&0u32.to_le_bytes());
                frame.extend_from_slice(&1u32.to_le_bytes());
                frame.extend_from_slice(&byte_count.to_le_bytes());
                frame.extend_from_slice(&u32::from(*byte_offset).to_le_bytes());
                for p in pfns {
                    frame.extend_from_slice(&p.to_le_bytes());
                }
                frame.extend_from_slice(payload);
                frame.resize(total * 8, 0);
                self.inject(
                    bus,
                    server,
                    &frame,
                    *completion,
                    *transaction_id,
                    stats,
                    raw_wants,
                );
            }
            Action::RawHeader {
                ty,
                offset8,
                total8,
                flags,
                rest,
            } => {
                let mut frame = header(*ty, *offset8, usize::from(*total8), *flags, 0);
                frame.extend_from_slice(rest);
                self.inject(bus, server, &frame, flags & 1 != 0, 0, stats, raw_wants);
            }
            Action::RawBytes(bytes) => {
                let (wants, txid) = match bytes.get(..16) {
                    Some(h) => (
                        h[6] & 1 != 0,
                        u64::from_le_bytes(h[8..16].try_into().unwrap_or([0; 8])),
                    ),
                    None => (false, 0),
                };
                self.inject(bus, server, bytes, wants, txid, stats, raw_wants);
            }
            Action::Deliver(n) => {
                bus.run_at_most(usize::from(*n) * 4 + 1);
            }
            Action::CompleteHeld { index, data } => {
                if let Some(p) = take_held(guest, *index) {
                    let len = u32::try_from(data.len()).unwrap_or(0);
                    // SAFETY: a held, unanswered delivery of the guest, answered once (taken
                    // out of the list); `data` is readable for `len` bytes.
                    unsafe {
                        VmbChannelPacketComplete(
                            crate::handle::to_ptr(p),
                            data.as_ptr().cast_mut().cast(),
                            len,
                        )
                    };
                    stats.answered += 1;
                }
            }
            Action::FailHeld(index) => {
                if let Some(p) = take_held(guest, *index) {
                    // SAFETY: as above.
                    unsafe { VmbChannelPacketFail(crate::handle::to_ptr(p)) };
                    stats.answered += 1;
                }
            }
            Action::RingFull(full) => {
                let _ = bus.set_ring_full(guest.channel, *full);
            }
            Action::CrashGuest => {
                self.work(bus);
                if bus.crash_peer_of(server) {
                    self.work(bus);
                    self.replace_guest(bus, guest, true);
                }
            }
            Action::Reconnect => self.replace_guest(bus, guest, false),
            Action::Pause => vsp.pause(),
            Action::Resume => vsp.resume(),
            Action::SaveRestore => {
                self.work(bus);
                let _ = vsp.save_restore();
            }
        }
        self.ensure_guest(bus, guest);
    }

    /// A guest whose channel was closed by the VSP (a disable or save/restore) opens it again.
    fn ensure_guest(&self, bus: &Bus, guest: &mut Guest) {
        let state = bus.channel_info(guest.channel).map(|i| i.state);
        if state == Some(ChannelState::Disabled) {
            self.replace_guest(bus, guest, false);
        }
    }

    #[allow(clippy::too_many_arguments, reason = "one call site, all plain values")]
    fn inject(
        &self,
        bus: &Bus,
        server: VMBCHANNEL,
        frame: &[u8],
        wants: bool,
        txid: u64,
        stats: &mut RunStats,
        raw_wants: &mut HashSet<u64>,
    ) {
        match bus.inject_raw_guest_packet(server, frame) {
            Ok(()) => {
                stats.raw_accepted += 1;
                if wants {
                    raw_wants.insert(txid);
                }
            }
            Err(_) => stats.raw_refused += 1,
        }
    }
}

/// A 16-byte raw frame descriptor.
fn header(ty: u16, offset8: u16, total8: usize, flags: u16, txid: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(16 + total8 * 8);
    h.extend_from_slice(&ty.to_le_bytes());
    h.extend_from_slice(&offset8.to_le_bytes());
    h.extend_from_slice(&u16::try_from(total8).unwrap_or(u16::MAX).to_le_bytes());
    h.extend_from_slice(&flags.to_le_bytes());
    h.extend_from_slice(&txid.to_le_bytes());
    h
}

fn take_held(guest: &Guest, index: u8) -> Option<usize> {
    let mut held = guest.ctx().held();
    if held.is_empty() {
        return None;
    }
    let i = usize::from(index) % held.len();
    Some(held.swap_remove(i))
}

/// Shares a GPADL of `size` bytes (0: `contents.len()`) holding `contents` from the guest:
/// `Some(true)` when KMCL made it, `Some(false)` when it refused, `None` when the guest shares
/// [`MAX_GPADLS`] already.
fn share_gpadl(guest: &mut Guest, contents: &[u8], size: u16, read_only: bool) -> Option<bool> {
    if guest.ctx().gpadls().shared.len() >= MAX_GPADLS {
        return None;
    }
    let len = match size {
        0 => contents.len(),
        n => usize::from(n),
    };
    let mut bytes = contents[..contents.len().min(len)].to_vec();
    bytes.resize(len, 0);
    let mdl = SimMdl::from_bytes(&bytes);
    let flags = if read_only {
        VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY
    } else {
        0
    };
    let mut handle = 0u32;
    // SAFETY: the guest's live channel; the MDL goes into the table and lives until after the
    // GPADL is deleted; `handle` is a live local; passive, outside callbacks.
    let s = unsafe {
        VmbChannelCreateGpadlFromMdl(guest.channel, flags, mdl.as_pmdl(), 0, 0, &mut handle)
    };
    if s != crate::status::STATUS_SUCCESS {
        return Some(false);
    }
    guest.ctx().gpadls().shared.push(SharedGpadl {
        handle,
        read_only,
        mdl,
    });
    Some(true)
}

/// What became of a request the guest sent.
enum Sent {
    /// KMCL refused it.
    Refused,
    /// KMCL accepted it (its completion, if any, goes to the default completion routine).
    Accepted,
    /// A synchronous request, answered with these bytes.
    Replied(Vec<u8>),
}

/// Sends `bytes` from the guest as `kind` says.
fn send(guest: &mut Guest, bytes: &[u8], kind: &SendKind) -> Sent {
    let Ok(len) = u32::try_from(bytes.len()) else {
        return Sent::Refused;
    };
    let buffer: PVOID = bytes.as_ptr().cast_mut().cast();
    let ch = guest.channel;
    let wait = VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION;
    if let SendKind::Synchronous { reply_units } = kind {
        let mut reply = vec![0u8; usize::from(*reply_units) * 8];
        let mut size = u32::from(*reply_units) * 8;
        // Relative 1 ms (negative, in 100 ns units).
        let mut timeout = LARGE_INTEGER { QuadPart: -10_000 };
        // SAFETY: `bytes` is readable for `len`; `reply` writable for `size`; the outputs are
        // live locals; the guest channel is live; passive, outside callbacks.
        let s = unsafe {
            VmbChannelSendSynchronousRequest(
                ch,
                buffer,
                len,
                std::ptr::null_mut(),
                wait,
                reply.as_mut_ptr().cast(),
                &mut size,
                &mut timeout,
            )
        };
        if s != crate::status::STATUS_SUCCESS {
            return Sent::Refused;
        }
        // CAST: u32 to usize, lossless on the sim's 64-bit hosts.
        reply.truncate(size as usize);
        return Sent::Replied(reply);
    }
    // SAFETY: the guest channel is live.
    let packet = unsafe { VmbPacketAllocate(ch) };
    if packet.is_null() {
        return Sent::Refused;
    }
    // The default completion routine frees the packet once it completes; a packet KMCL refused
    // is freed here.
    let s = match kind {
        SendKind::NoWait | SendKind::Wait => {
            let flags = if matches!(kind, SendKind::Wait) {
                wait
            } else {
                0
            };
            // SAFETY: a fresh packet of the guest; `bytes` readable for `len`.
            unsafe { VmbPacketSend(packet, buffer, len, std::ptr::null_mut(), flags) }
        }
        SendKind::ExternalMdl {
            data,
            offset,
            length,
            force_length,
        } => {
            let mdl = SimMdl::from_bytes(data);
            let mut flags = wait;
            if *force_length {
                flags |= VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH;
            }
            // SAFETY: as above; the MDL lives as long as the guest, past the packet's
            // completion.
            let s = unsafe {
                VmbPacketSendWithExternalMdl(
                    packet,
                    buffer,
                    len,
                    mdl.as_pmdl(),
                    u32::from(*offset),
                    u32::from(*length),
                    flags,
                )
            };
            guest.mdls.push(mdl);
            s
        }
        SendKind::ExternalPfns { pfns } => {
            let mut pfns: Vec<PFN_NUMBER> = pfns.iter().map(|&p| p as PFN_NUMBER).collect();
            let n = u32::try_from(pfns.len()).unwrap_or(0);
            // SAFETY: as above; `pfns` is readable for `n` elements during the call (the sim
            // copies them).
            unsafe {
                VmbPacketSendWithExternalPfns(packet, buffer, len, pfns.as_mut_ptr(), n, wait)
            }
        }
        SendKind::Synchronous { .. } => crate::status::STATUS_INVALID_PARAMETER,
    };
    if s != crate::status::STATUS_SUCCESS {
        // SAFETY: the send was refused, so the packet is idle and still the guest's.
        unsafe { VmbPacketFree(packet) };
        return Sent::Refused;
    }
    Sent::Accepted
}

/// Panics with the bus's violations, if any.
#[track_caller]
fn check(bus: &Bus, when: &str, done: &dyn Debug) {
    let violations = bus.take_violations();
    if !violations.is_empty() {
        panic!(
            "vmbus-kmcl-sim fuzz: bus {} recorded violations {when}: {violations:#?}\n\
             actions: {done:#?}",
            bus.id()
        );
    }
}
