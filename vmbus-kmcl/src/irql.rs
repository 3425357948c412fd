//! Interrupt request levels: which operations are refused above which level, and why this crate
//! checks the level at run time instead of encoding it in types.
//!
//! Most of what a VSP does with handles and processes is only allowed at `PASSIVE_LEVEL`
//! (converting a user handle, closing a handle with `ZwClose`, allocating and cleaning up a
//! channel) or at most `APC_LEVEL` (attaching to a process, looking a process up by id). Called
//! at `DISPATCH_LEVEL` they touch pageable memory or wait, which bug-checks the system, or worse,
//! works until the page is out.
//!
//! # Run-time checks, not level tokens
//!
//! A zero-sized "passive level" token would have to be handed to every callback and taken by
//! every PASSIVE-only call. But the level a callback runs at is decided at run time (KMCL runs
//! packet callbacks at `DISPATCH_LEVEL` unless the channel asked for passive processing), and
//! safe code elsewhere can raise the level while a token is alive (taking a spin lock through
//! another crate's safe guard does). A token would therefore prove nothing after the first line
//! of the callback. One read of the current level costs one instruction on x86_64 (`mov` from
//! CR8, the WDK's own inline version) and one call into the HAL on aarch64; the measured cost of
//! the checked seed path is reported by the project's instruction-count gate. So every
//! operation listed below reads the level once and refuses with [`Error::IrqlTooHigh`] before
//! calling the kernel:
//!
//! | operation | highest level |
//! |---|---|
//! | [`Request::enter`](crate::process::Request::enter), [`Request::convert_vmbus_handle`](crate::process::Request::convert_vmbus_handle) | `PASSIVE_LEVEL` |
//! | [`UserHandle::to_kernel_handle`](crate::process::UserHandle::to_kernel_handle), [`DeferredHandle::to_kernel_handle`](crate::process::DeferredHandle::to_kernel_handle) | `PASSIVE_LEVEL` |
//! | [`KernelHandle::close`](crate::KernelHandle::close) | `PASSIVE_LEVEL` |
//! | [`ChannelBuilder::allocate`](crate::channel::ChannelBuilder::allocate), [`ChannelBuilder::enable`](crate::channel::ChannelBuilder::enable), [`Channel::pause`](crate::channel::Channel::pause), [`Channel::request`](crate::channel::Channel::request) | `PASSIVE_LEVEL` |
//! | [`ProcessRef::attach`](crate::process::ProcessRef::attach), [`ProcessRef::lookup`](crate::process::ProcessRef::lookup) | `APC_LEVEL` |
//!
//! Two operations cannot return an error because they run in `Drop`:
//!
//! * dropping a [`KernelHandle`](crate::KernelHandle) closes it with `ZwClose`, and
//! * dropping a [`ChannelBuilder`](crate::channel::ChannelBuilder), a
//!   [`Channel`](crate::channel::Channel) or a [`ChannelSlot`](crate::channel::ChannelSlot)
//!   still holding a channel calls `VmbChannelCleanup` (after `VmbChannelDisable` for an
//!   enabled one), and [`Channel::disable`](crate::channel::Channel::disable) returns no error.
//!
//! Both are `PASSIVE_LEVEL` only. They carry a debug assertion (a bug check in a driver built
//! with debug assertions, a failed test on the emulator, whose `ZwClose` also records a call
//! above `PASSIVE_LEVEL` as a violation) and the documented rule: drop them at `PASSIVE_LEVEL`, or call
//! [`KernelHandle::close`](crate::KernelHandle::close), which refuses above it and hands the
//! handle back. A release build does not check in `Drop`: skipping the close would leak the
//! handle silently, and deferring it to a work item needs an allocation this crate does not make.

use vmbus_kmcl_sys::nt;

pub use vmbus_kmcl_sys::nt::{APC_LEVEL, DISPATCH_LEVEL, KIRQL, PASSIVE_LEVEL};

use crate::error::{Error, Result};

/// The current processor's IRQL (`KeGetCurrentIrql`). Any IRQL.
#[doc(alias = "KeGetCurrentIrql")]
#[inline]
pub fn current() -> KIRQL {
    // SAFETY: this crate runs in kernel mode (or on the emulator), where reading the IRQL has
    // no precondition.
    unsafe { nt::KeGetCurrentIrql() }
}

/// `Ok` when the current IRQL is at most `maximum`, else [`Error::IrqlTooHigh`].
///
/// # Errors
///
/// [`Error::IrqlTooHigh`] with the current level.
#[inline]
pub fn require_at_most(maximum: KIRQL) -> Result<()> {
    let current = current();
    if current > maximum {
        return Err(Error::IrqlTooHigh { current, maximum });
    }
    Ok(())
}
