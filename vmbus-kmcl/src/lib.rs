//! Safe, zero-cost Rust for the Hyper-V **VMBus Kernel Mode Client Library** (KMCL).
//!
//! KMCL is the Windows kernel API that virtualization service providers (VSPs, in the root
//! partition) and their guest-side clients (VSCs) use to offer and open VMBus channels, exchange
//! packets, share memory and save/restore channel state. This crate wraps the raw declarations
//! of [`vmbus_kmcl_sys`] so that the rules KMCL documents in prose become types and checks:
//!
//! * [`NtStatus`], [`Error`] and [`Result`]: every status is checked, and statuses that mean "not
//!   finished yet" are values of the functions that return them, never errors.
//! * [`KernelHandle`]: a kernel handle closed exactly once, one pointer wide.
//! * [`process`]: [`Request`], [`ProcessContext`], [`UserHandle`] and [`DeferredHandle`]: a
//!   user-mode handle converted only in the process it came from.
//! * [`irql`]: the IRQL checks of the PASSIVE-only operations.
//! * [`ServerChannelInit`]: a server channel being initialised, which owns the kernel handle
//!   naming its VM.
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
//! use vmbus_kmcl::process::Request;
//! use vmbus_kmcl::{DeviceRef, KernelHandle, Result, ServerChannelInit};
//! use vmbus_kmcl_sys::HANDLE;
//!
//! /// IRP_MJ_DEVICE_CONTROL, with the IRP it received and the value from its buffer.
//! fn on_set_vmbus_handle_ioctl(request: &Request<'_>, raw: HANDLE) -> Result<KernelHandle> {
//!     request.convert_vmbus_handle(raw)
//! }
//!
//! /// Later, in any thread at PASSIVE_LEVEL: offer a channel to that VM.
//! fn offer(device: DeviceRef<'_>, vm: KernelHandle) -> Result<ServerChannelInit<'_>> {
//!     let mut channel = ServerChannelInit::allocate(device)?;
//!     channel.set_vmbus_handle(vm)?; // the channel owns the handle from now on
//!     // ... the other init setters, then enable (see the channel builder).
//!     Ok(channel)
//! }
//! # let _ = (on_set_vmbus_handle_ioctl, offer);
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
//! The attach guard of [`ProcessRef::attach`] panics (a bug check in a driver) when it would
//! detach on another thread or out of order.
//!
//! What the compiler rejects (each case is a compile-fail test in `tests/ui`): a [`UserHandle`]
//! escaping its scope, stored outside it, or sent to another thread; a [`ProcessContext`] shared
//! with another thread; a handle of the current scope, or of any enclosing one, used inside an
//! attach; a user handle made in an attached context without `unsafe`; a request context made
//! without a request or without `unsafe`; a [`DeferredHandle`] pairing a free value with a
//! process the driver chose; a [`KernelHandle`] used after it was moved or closed,
//! or used after it moved into a channel; a channel outliving its device object.
//!
//! What remains the driver's duty: wrap in a request context only values that request carried;
//! drop kernel handles and channels at `PASSIVE_LEVEL` (debug assertions check it); do not
//! suspend a stackful coroutine inside a scope of this crate (the run-time checks above still
//! refuse what such a coroutine would otherwise make possible).
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod channel;
mod error;
mod handle;
pub mod irql;
pub mod process;
pub mod status;

pub use channel::{DeviceRef, ServerChannelInit};
pub use error::{Error, Result};
pub use handle::KernelHandle;
pub use process::{
    with_current_process, DeferredHandle, ProcessContext, ProcessId, ProcessRef, Request,
    RequestContext, UserHandle,
};
pub use status::{to_result, NtStatus, Severity};

pub use vmbus_kmcl_sys as sys;
