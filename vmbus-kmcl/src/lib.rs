//! Safe, zero-cost Rust for the Hyper-V **VMBus Kernel Mode Client Library** (KMCL).
//!
//! KMCL is the Windows kernel API that virtualization service providers (VSPs, in the root
//! partition) and their guest-side clients (VSCs) use to offer and open VMBus channels, exchange
//! packets, share memory and save/restore channel state. This crate wraps the raw declarations
//! of [`vmbus_kmcl_sys`] so that the rules KMCL documents in prose become types:
//!
//! * [`dispatch`]: every call reaches KMCL through one trait, either through the direct
//!   exports (`dispatch::Linked`, with the `vmbkmcl`/`vmbkmclr` feature or on a host with the
//!   sim) or through a queried interface table ([`dispatch::ClientInterface`],
//!   [`dispatch::ServerInterface`]), which needs no link dependency at all.
//! * [`packet`]: an incoming packet is a token answered exactly once (complete, fail, or defer
//!   while still inline), with its payload bounded by the KMCL length and read through
//!   `zerocopy` message types, checked and copied once.
//! * [`NtStatus`], [`Error`] and [`Result`]: every status is checked, and statuses that mean "not
//!   finished yet" are values of the functions that return them, never errors.
//! * [`KernelHandle`]: a kernel handle closed exactly once, one pointer wide.
//! * [`ProcessContext`] and [`UserHandle`]: a user-mode handle usable only while the thread runs
//!   in the process that owns it, enforced at compile time.
//! * [`channel`]: typestate channels for both roles (builder → enabled channel → builder
//!   again), a [`Handler`](channel::Handler) trait with one method per KMCL callback, and
//!   views that offer each callback what KMCL allows there; [`Guid`] for interface ids.
//!
//! The crate is `#![no_std]` and needs no allocator. On a host, the `vmbus-kmcl-sim` crate
//! emulates KMCL and the kernel, so the same code runs in `cargo test`.
//!
//! # The seed flow
//!
//! A VSP learns which VM to serve from the VM worker process: the worker opens the VM's VMBus
//! device and sends the user-mode handle in an IOCTL. The driver's dispatch routine runs in the
//! worker's thread, so it can convert the handle into a kernel handle there; the kernel handle
//! is valid everywhere and goes to the server channel it sets up.
//!
//! ```
//! use core::pin::Pin;
//! use vmbus_kmcl::channel::{ChannelSlot, Handler, Server, ServerBuilder};
//! use vmbus_kmcl::dispatch::{ChannelBackend, KmclServer};
//! use vmbus_kmcl::{with_current_process, Guid, KernelHandle, Result, UserHandle};
//! use vmbus_kmcl_sys::HANDLE;
//!
//! /// IRP_MJ_DEVICE_CONTROL, running in the worker process's thread (IRQL PASSIVE_LEVEL).
//! fn on_set_vmbus_handle_ioctl(raw: HANDLE) -> Result<KernelHandle> {
//!     with_current_process(|cx| UserHandle::new(raw, cx).to_kernel_handle())
//! }
//!
//! /// Later, in any thread: offer a channel to that VM. The channel takes the kernel handle
//! /// and closes it after its cleanup.
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
//! What the compiler rejects (each case is a compile-fail test in `tests/ui`): a [`UserHandle`]
//! escaping its scope, stored outside it, or sent to another thread; a [`ProcessContext`] shared
//! with another thread; a handle of the current scope, or of any enclosing one, used inside an
//! attach to another process; a [`KernelHandle`] used after it was moved or closed, or closed
//! after a channel took it; a channel outliving its device object; converting a raw
//! handle without a [`ProcessContext`]; an incoming packet answered twice, used after its
//! answer, kept past its callback or sent to another thread while inline, an external-data view
//! used after the packet's completion, and a detached packet deferred to passive level.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod channel;
pub mod dispatch;
mod error;
mod guid;
mod handle;
pub mod packet;
mod process;
mod status;

pub use channel::DeviceRef;
pub use error::{Error, Result};
pub use guid::{Guid, GuidParseError};
pub use handle::KernelHandle;
pub use process::{
    with_current_process, HandleValue, ProcessContext, ProcessId, ProcessRef, UserHandle,
};
pub use status::{to_result, NtStatus, Severity};

pub use vmbus_kmcl_sys as sys;
