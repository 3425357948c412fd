//! Safe, zero-cost Rust for the Hyper-V **VMBus Kernel Mode Client Library** (KMCL).
//!
//! KMCL is the Windows kernel API that virtualization service providers (VSPs, in the root
//! partition) and their guest-side clients (VSCs) use to offer and open VMBus channels, exchange
//! packets, share memory and save/restore channel state. This crate wraps the raw declarations
//! of [`vmbus_kmcl_sys`] so that the rules KMCL documents in prose become types and checks:
//!
//! * [`dispatch`]: every call reaches KMCL through one trait, either through the direct
//!   exports ([`dispatch::Linked`], with the `vmbkmcl`/`vmbkmclr` feature or on a host with the
//!   sim) or through a queried interface table ([`dispatch::ClientInterface`],
//!   [`dispatch::ServerInterface`]), which needs no link dependency at all.
//! * [`NtStatus`], [`Error`] and [`Result`]: every status is checked, and statuses that mean "not
//!   finished yet" are values of the functions that return them, never errors.
//! * [`KernelHandle`]: a kernel handle closed exactly once, one pointer wide.
//! * [`process`]: [`Request`], [`ProcessContext`], [`UserHandle`] and [`DeferredHandle`]: a
//!   user-mode handle converted only in the process it came from.
//! * [`irql`]: the IRQL checks of the PASSIVE-only operations.
//! * [`channel`]: typestate channels for both roles (builder → enabled channel → builder
//!   again), a [`Handler`](channel::Handler) trait with one method per KMCL callback, and
//!   views that offer each callback what KMCL allows there; [`Guid`] for interface ids. A
//!   server channel owns the kernel handle naming its VM.
//! * [`gpadl`]: memory a client shares with its server, held in the handler and deleted by
//!   the end of the closed callback; server mappings that borrow the channel.
//! * [`save_restore`]: a server channel saved in chunks and restored into a fresh one, with
//!   the handler's per-packet state.
//! * [`send`]: outgoing packet objects ([`OutgoingPacket`](send::OutgoingPacket), allocated by
//!   KMCL or in caller [`PacketStorage`](send::PacketStorage)) that sending consumes and the
//!   typed completion hands back, and synchronous requests with a typed [`Timeout`](send::Timeout)
//!   and [`Outcome`](send::Outcome).
//! * [`packet`]: an incoming packet is a token answered exactly once (complete, fail, or defer
//!   while still inline), with its payload bounded by the KMCL length and read through
//!   `zerocopy` message types, checked and copied once.
//!
//! The crate is `#![no_std]` and needs no allocator. On a host, the `vmbus-kmcl-sim` crate
//! emulates KMCL and the kernel, so the same code runs in `cargo test`.
//!
//! # The seed flow
//!
//! A VSP learns which VM to serve from the VM worker process: the worker opens the VM's VMBus
//! device and sends the user-mode handle in an IOCTL. The driver's dispatch routine runs in the
//! worker's thread, so it converts the handle into a kernel handle there; the kernel handle is
//! valid everywhere and goes to the server channel it sets up.
//!
//! ```
//! use core::pin::Pin;
//! use vmbus_kmcl::channel::{ChannelSlot, Handler, Server, ServerBuilder};
//! use vmbus_kmcl::dispatch::{ChannelBackend, KmclServer};
//! use vmbus_kmcl::process::Request;
//! use vmbus_kmcl::{Guid, KernelHandle, Result};
//! use vmbus_kmcl_sys::HANDLE;
//!
//! /// IRP_MJ_DEVICE_CONTROL, with the IRP it received and the value from its buffer.
//! fn on_set_vmbus_handle_ioctl(request: &Request<'_>, raw: HANDLE) -> Result<KernelHandle> {
//!     request.convert_vmbus_handle(raw)
//! }
//!
//! /// Later, in any thread at PASSIVE_LEVEL: offer a channel to that VM. The channel takes the
//! /// kernel handle and closes it after its cleanup.
//! fn offer<H, K>(slot: Pin<&mut ChannelSlot<'_, H, K>>, vm: KernelHandle, id: Guid) -> Result<()>
//! where
//!     H: Handler<Server, K>,
//!     K: ChannelBackend + KmclServer,
//! {
//!     let mut builder = ServerBuilder::allocate(slot)?;
//!     builder.set_vmbus_handle(vm)?.set_interface_id(id, id)?;
//!     let channel = builder.enable()?;
//!     channel.start();
//!     // ... keep `channel` while the VM runs; dropping it rescinds the offer.
//!     Ok(())
//! }
//! # struct Vsp;
//! # let _ = (on_set_vmbus_handle_ioctl, offer::<Vsp, vmbus_kmcl::dispatch::Linked>);
//! # impl<K: ChannelBackend> Handler<Server, K> for Vsp {
//! #     fn process_packet(&self, _: &vmbus_kmcl::channel::OpenView<'_, Server, K>,
//! #                       p: vmbus_kmcl::packet::IncomingPacket<'_, K>) { p.complete_empty() }
//! # }
//! ```
//!
//! # What is guaranteed, and by what
//!
//! Checked at run time, each by one read and one compare before the kernel or KMCL is called
//! (the seed path's cost is measured by the project's instruction-count gate, against a raw
//! driver doing the same checks):
//!
//! | check | refusal |
//! |---|---|
//! | the requestor process (`IoGetRequestorProcess`) is the current process ([`Request`]) | [`Error::RequestorMismatch`] |
//! | the thread is not attached: `PsGetProcessId` of the current process is `PsGetCurrentProcessId` ([`Request`]) | [`Error::RequestorMismatch`] |
//! | the previous mode is `UserMode` (`ExGetPreviousMode`, [`Request`]) | [`Error::NotFromUserMode`] |
//! | the current process is the context's (`IoGetCurrentProcess`, every conversion) | [`Error::WrongProcess`] |
//! | the value is not NULL and has no kernel-handle bit ([`UserHandle::new`]) | [`Error::NotAUserHandle`] |
//! | the IRQL is at most the operation's level (`KeGetCurrentIrql`, see [`irql`]) | [`Error::IrqlTooHigh`] |
//!
//! The send path checks, before KMCL is called and with a typed error: caller storage is at
//! least `VmbChannelSizeofPacket` bytes ([`Error::StorageTooSmall`]) and has no packet in use
//! ([`Error::StorageInUse`]); a synchronous request's response buffer is a multiple of 8 bytes
//! ([`Error::LengthNotMultipleOf8`]); a request that may wait runs at PASSIVE_LEVEL, one that
//! does not at DISPATCH_LEVEL at most, and a pageable message below DISPATCH_LEVEL
//! ([`Error::IrqlTooHigh`], see [`send`]). The instruction-count gate measures a packet round
//! trip and a synchronous request too, against C-style raw calls.
//!
//! The attach guard of [`ProcessRef::attach`] panics (a bug check in a driver) when it would
//! detach on another thread or out of order.
//!
//! What the compiler rejects (each case is a compile-fail test in `tests/ui`): a [`UserHandle`]
//! escaping its scope, stored outside it, or sent to another thread; a [`ProcessContext`] shared
//! with another thread; a handle of the current scope, or of any enclosing one, used inside an
//! attach; a user handle made in an attached context without `unsafe`; a request context made
//! without a request or without `unsafe`; a [`DeferredHandle`] pairing a free value with a
//! process the driver chose; a [`KernelHandle`] used after it was moved or closed, or used
//! after it moved into a channel; a channel outliving its device object; a server-only setter
//! on a client builder; configuring a channel after enabling it; pausing or starting a
//! channel, or making a blocking request, from a callback that KMCL forbids it in; a server
//! channel through a client table; an incoming packet answered twice, used after its answer,
//! kept past its callback or sent to another thread while inline, an external-data view used
//! after the packet's completion, and a detached packet deferred to passive level; a GPADL
//! mapping outliving its channel or kept past the callback that made it, a GPADL's memory
//! dropped while the channel's slot exists, a GPADL made outside a callback of the open
//! channel, a write through a read-only mapping, and two saves of one channel at once; an outgoing
//! packet sent or freed again while in flight, kept past its channel or past its completion
//! call, caller packet storage that does not live in the handler, and a waiting synchronous
//! request from the started callback or from the root.
//!
//! What remains the driver's duty: wrap in a request context only values that request carried;
//! drop kernel handles and channels at `PASSIVE_LEVEL` (debug assertions check it); do not
//! suspend a stackful coroutine inside a scope of this crate (the run-time checks above still
//! refuse what such a coroutine would otherwise make possible); keep the promise of
//! [`ChannelSlot::new_borrowing`](channel::ChannelSlot::new_borrowing) (drop the slot) if it
//! uses that `unsafe` constructor. A slot whose handler or backend borrows cannot be leaked
//! through the safe API: [`ChannelSlot::new`](channel::ChannelSlot::new) requires `'static`
//! ones and [`ChannelSlot::scope`](channel::ChannelSlot::scope) drops its slot itself (see
//! [its docs](channel::ChannelSlot#a-slot-that-borrows)).
//! A handler's callbacks cannot reach its own channel through the types (the channel borrows
//! the slot that owns the handler); a driver that publishes the channel in a global and calls
//! `pause` or `start` from a callback steps outside them. A handler that processes packets at
//! `DISPATCH_LEVEL` must not block there: the types cannot see the IRQL of a callback.
//!
//! # Every KMCL function and its safe item
//!
//! One row per function of `vmbus-kmcl-sys` (the 41 of the client table, then the 14
//! server-only ones); the crate's `function_table` test checks that the rows name exactly those
//! 55 functions. Every one of them is reached by a safe item; "internal" marks a function the
//! wrapper calls on the driver's behalf. The `unsafe` methods of the [`dispatch`] traits stay
//! available for what the safe items do not cover.
//!
//! | KMCL function | safe item |
//! |---|---|
//! | `VmbChannelAllocate` | [`ServerBuilder::allocate`](channel::ChannelBuilder::allocate), [`ClientBuilder::allocate`](channel::ChannelBuilder::allocate) |
//! | `VmbChannelCleanup` | dropping a [`ChannelBuilder`](channel::ChannelBuilder), a [`Channel`](channel::Channel), or a [`ChannelSlot`](channel::ChannelSlot) still holding a channel |
//! | `VmbChannelCreateGpadlFromBuffer` | [`GpadlCell::create`](channel::gpadl::GpadlCell::create) with a [`SharedBuffer`](channel::gpadl::SharedBuffer) |
//! | `VmbChannelCreateGpadlFromMdl` | [`GpadlCell::create_from_mdl`](channel::gpadl::GpadlCell::create_from_mdl) with an [`MdlRef`](channel::gpadl::MdlRef) |
//! | `VmbChannelDeleteGpadl` | [`GpadlCell::delete`](channel::gpadl::GpadlCell::delete), [`GpadlCell::release`](channel::gpadl::GpadlCell::release); at the latest the closed trampoline, after [`Handler::closed`](channel::Handler::closed) |
//! | `VmbChannelDisable` | [`Channel::disable`](channel::Channel::disable); dropping a [`Channel`](channel::Channel) |
//! | `VmbChannelEnable` | [`ChannelBuilder::enable`](channel::ChannelBuilder::enable) |
//! | `VmbChannelGetInterfaceInstance` | [`Channel::interface_instance`](channel::Channel::interface_instance), and on the views |
//! | `VmbChannelGetMmioSpace` | [`Channel::mmio_space`](channel::Channel::mmio_space) (`None` unless open), [`OpenView::mmio_space`](channel::OpenView::mmio_space) |
//! | `VmbChannelGetPointer` | internal: the trampolines find the [`ChannelSlot`](channel::ChannelSlot) with it |
//! | `VmbChannelInitSetClientContextSize` | [`ChannelBuilder::set_client_context_size`](channel::ChannelBuilder::set_client_context_size) |
//! | `VmbChannelInitSetFlags` | [`ChannelBuilder::set_flags`](channel::ChannelBuilder::set_flags) |
//! | `VmbChannelInitSetFriendlyName` | [`ChannelBuilder::set_friendly_name`](channel::ChannelBuilder::set_friendly_name), with [`utf16!`] or [`Utf16Buf`](channel::Utf16Buf) |
//! | `VmbChannelInitSetMaximumExternalData` | [`ChannelBuilder::set_maximum_external_data`](channel::ChannelBuilder::set_maximum_external_data) |
//! | `VmbChannelInitSetMaximumPacketSize` | [`ChannelBuilder::set_maximum_packet_size`](channel::ChannelBuilder::set_maximum_packet_size) |
//! | `VmbChannelInitSetProcessPacketCallbacks` | registered by `allocate`: [`Handler::process_packet`](channel::Handler::process_packet), [`processing_complete`](channel::Handler::processing_complete) (with [`PROCESSING_COMPLETE`](channel::Handler::PROCESSING_COMPLETE)) |
//! | `VmbChannelInitSetStateChangeCallbacks` | registered by `allocate`: [`Handler::opened`](channel::Handler::opened), [`closed`](channel::Handler::closed), [`suspend`](channel::Handler::suspend), [`started`](channel::Handler::started), [`post_started`](channel::Handler::post_started) |
//! | `VmbChannelPacketComplete` | [`IncomingPacket::complete`](packet::IncomingPacket::complete), [`complete_with`](packet::IncomingPacket::complete_with), [`complete_empty`](packet::IncomingPacket::complete_empty); the same on [`DeferredPacket`](packet::DeferredPacket) |
//! | `VmbChannelPacketDeferToPassive` | [`IncomingPacket::defer_to_passive`](packet::IncomingPacket::defer_to_passive) |
//! | `VmbChannelPacketFail` | [`IncomingPacket::fail`](packet::IncomingPacket::fail), [`DeferredPacket::fail`](packet::DeferredPacket::fail); dropping an unanswered token |
//! | `VmbChannelPacketGetExternalData` | [`IncomingPacket::external_data`](packet::IncomingPacket::external_data) |
//! | `VmbChannelPause` | [`Channel::pause`](channel::Channel::pause), [`ChannelBuilder::start_paused`](channel::ChannelBuilder::start_paused) |
//! | `VmbChannelSendSynchronousRequest` | [`Channel::send_request`](channel::Channel::send_request), [`Channel::post`](channel::Channel::post) and the same on [`PostStartedView`](channel::PostStartedView) (client); [`Channel::post_nowait`](channel::Channel::post_nowait), [`OpenView::post_nowait`](channel::OpenView::post_nowait) (both roles, not waiting); the older forms [`Channel::request`](channel::Channel::request), [`PostStartedView::request`](channel::PostStartedView::request), [`Channel::try_send`](channel::Channel::try_send), [`OpenView::try_send`](channel::OpenView::try_send) use them |
//! | `VmbChannelSetIncomingProcessingAtPassive` | [`Channel::set_incoming_processing_at_passive`](channel::Channel::set_incoming_processing_at_passive), on the builder and the open view |
//! | `VmbChannelSetInterruptLatency` | [`OpenView::set_interrupt_latency`](channel::OpenView::set_interrupt_latency) (client callbacks while open) |
//! | `VmbChannelSetPointer` | internal: the builder points the channel at its [`ChannelSlot`](channel::ChannelSlot) |
//! | `VmbChannelSetTransactionQuota` | [`Channel::set_transaction_quota`](channel::Channel::set_transaction_quota), and on the views |
//! | `VmbChannelSizeofPacket` | [`Channel::storage_packet`](channel::Channel::storage_packet), in a [`PacketStorage`](send::PacketStorage) (size checked: [`Error::StorageTooSmall`]) |
//! | `VmbChannelStart` | [`Channel::start`](channel::Channel::start) |
//! | `VmbClientChannelInitSetRingBufferPageCount` | [`ClientBuilder::set_ring_buffer_pages`](channel::ChannelBuilder::set_ring_buffer_pages) |
//! | `VmbClientChannelInitSetTargetPnp` | [`ClientBuilder::set_target`](channel::ChannelBuilder::set_target), with [`Handler::pnp_failure`](channel::Handler::pnp_failure) |
//! | `VmbPacketAllocate` | [`Channel::allocate_packet`](channel::Channel::allocate_packet); a restored packet: [`PacketToRestore::restore`](channel::save_restore::PacketToRestore::restore) |
//! | `VmbPacketFree` | dropping an allocated [`OutgoingPacket`](send::OutgoingPacket) (never sent, or back from its completion); a restored packet whose restore failed: [`PacketToRestore::restore`](channel::save_restore::PacketToRestore::restore) |
//! | `VmbPacketGetChannel` | [`OutgoingPacket::channel`](send::OutgoingPacket::channel) |
//! | `VmbPacketGetPointer` | internal: a packet points at its channel's [`ChannelSlot`](channel::ChannelSlot); the completion routine behind [`SendCompletion::packet_completed`](send::SendCompletion::packet_completed) reads it |
//! | `VmbPacketInitialize` | [`Channel::storage_packet`](channel::Channel::storage_packet), in a [`PacketStorage`](send::PacketStorage) (size checked: [`Error::StorageTooSmall`]) |
//! | `VmbPacketSend` | [`OutgoingPacket::send`](send::OutgoingPacket::send), with [`SendFlags`](send::SendFlags) |
//! | `VmbPacketSendWithExternalMdl` | [`OutgoingPacket::send_with_external_mdl`](send::OutgoingPacket::send_with_external_mdl) (`unsafe`: the MDL outlives the transaction), with [`MdlFlags`](send::MdlFlags) |
//! | `VmbPacketSendWithExternalPfns` | [`OutgoingPacket::send_with_external_pfns`](send::OutgoingPacket::send_with_external_pfns) (`unsafe`: the pages outlive the transaction), with [`InlineFlags`](send::InlineFlags) |
//! | `VmbPacketSetCompletionRoutine` | set by `allocate_packet` and `storage_packet`: [`SendCompletion::packet_completed`](send::SendCompletion::packet_completed), with a [`Completion`](send::Completion) |
//! | `VmbPacketSetPointer` | internal: a packet points at its channel's [`ChannelSlot`](channel::ChannelSlot); the completion routine behind [`SendCompletion::packet_completed`](send::SendCompletion::packet_completed) reads it |
//! | `VmbChannelMapGpadl` | [`Channel::map_gpadl`](channel::Channel::map_gpadl), [`Channel::map_gpadl_read_only`](channel::Channel::map_gpadl_read_only), and the same on a server's [`OpenView`](channel::OpenView::map_gpadl) |
//! | `VmbChannelRestoreFromBuffer` | [`ServerBuilder::restore`](channel::ChannelBuilder::restore) |
//! | `VmbChannelSaveBegin` | [`Channel::save`](channel::Channel::save) |
//! | `VmbChannelSaveContinue` | [`SaveSession::next_chunk`](channel::save_restore::SaveSession::next_chunk) |
//! | `VmbChannelSaveEnd` | dropping a [`SaveSession`](channel::save_restore::SaveSession) |
//! | `VmbChannelUnmapGpadl` | dropping a [`GpadlMapping`](channel::gpadl::GpadlMapping) |
//! | `VmbConvertVmbusHandleToKernelHandle` | [`Request::convert_vmbus_handle`], [`UserHandle::to_kernel_handle`], [`DeferredHandle::to_kernel_handle`] (and their `_with` forms for a table backend) |
//! | `VmbPacketRestore` | [`PacketToRestore::restore`](channel::save_restore::PacketToRestore::restore), from [`SaveRestoreHandler::restore_packet`](channel::save_restore::SaveRestoreHandler::restore_packet) |
//! | `VmbServerChannelInitSetFlags` | [`ServerBuilder::set_server_flags`](channel::ChannelBuilder::set_server_flags) |
//! | `VmbServerChannelInitSetMmioMegabytes` | [`ServerBuilder::set_mmio_megabytes`](channel::ChannelBuilder::set_mmio_megabytes) |
//! | `VmbServerChannelInitSetSaveRestorePacketCallbacks` | [`ServerBuilder::set_save_restore_callbacks`](channel::ChannelBuilder::set_save_restore_callbacks), with a [`SaveRestoreHandler`](channel::save_restore::SaveRestoreHandler) |
//! | `VmbServerChannelInitSetTargetInterfaceId` | [`ServerBuilder::set_interface_id`](channel::ChannelBuilder::set_interface_id) |
//! | `VmbServerChannelInitSetTargetVtl` | [`ServerBuilder::set_target_vtl`](channel::ChannelBuilder::set_target_vtl) |
//! | `VmbServerChannelInitSetVmbusHandle` | [`ServerBuilder::set_vmbus_handle`](channel::ChannelBuilder::set_vmbus_handle) |
//!
//! # Linking: exports or tables
//!
//! Without a feature, the crate references no KMCL export: a driver queries
//! `KMCL_CLIENT_INTERFACE_V1` or `KMCL_SERVER_INTERFACE_V1` from the bus and wraps it in a
//! [`dispatch::ClientInterface`] or [`dispatch::ServerInterface`]; its image imports nothing
//! from a KMCL driver. The `vmbkmcl` feature (guest, `vmbkmcl.sys`) or `vmbkmclr` feature
//! (root, `vmbkmclr.sys`) links the exports instead and adds [`dispatch::Linked`], the
//! zero-sized backend, with the conveniences that default to it.
//!
//! # Unit tests of a driver, on the host
//!
//! On a non-Windows host the KMCL and kernel functions this crate calls are defined by the
//! `vmbus-kmcl-sim` crate, which emulates them. Add it as a dev-dependency; a test binary that
//! does not otherwise name it must still link it, with one line in the test crate (otherwise the
//! link fails with `undefined symbol: ZwClose` or a KMCL function):
//!
//! ```
//! use vmbus_kmcl_sim as _;
//! ```
//!
//! A test that uses the sim's `Bus` (to get device objects, pump deliveries and check for leaks)
//! names the crate anyway and needs nothing more.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// Marks one item as existing only where the KMCL exports resolve, like
/// [`dispatch::Linked`]: with the `vmbkmcl` or `vmbkmclr` feature, on a non-Windows host (where
/// the sim defines them), and for rustdoc (labelled on docs.rs).
macro_rules! linked_only {
    ($($item:tt)*) => {
        #[cfg(any(doc, feature = "vmbkmcl", feature = "vmbkmclr", not(target_os = "windows")))]
        #[cfg_attr(
            docsrs,
            doc(cfg(any(feature = "vmbkmcl", feature = "vmbkmclr", not(target_os = "windows"))))
        )]
        $($item)*
    };
}

pub mod channel;
pub mod dispatch;
mod error;
mod guid;
mod handle;
pub mod irql;
pub mod packet;
pub mod process;
pub mod send;
pub mod status;

pub use channel::{gpadl, save_restore, DeviceRef};
pub use error::{Error, Result};
pub use guid::{Guid, GuidParseError};
pub use handle::KernelHandle;
pub use process::{
    with_current_process, DeferredHandle, ProcessContext, ProcessId, ProcessRef, Request,
    RequestContext, UserHandle,
};
pub use status::{to_result, NtStatus, Severity};

pub use vmbus_kmcl_sys as sys;
