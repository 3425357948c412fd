//! The echo VSC as a kernel image: a WDM PnP function driver for the guest's VMBus device of
//! the echo channel, the thin glue between the PnP manager and the `echo-vsc` library.
//!
//! * `DriverEntry` reads `KMCL_CLIENT_INTERFACE_TYPE` from `<service key>\Parameters`, value
//!   `KmclClientInterfaceType` (its value is not public, so the INF writes it from the
//!   installer's copy of the WDK header), and fills the dispatch table: PnP, power and system
//!   control (passed down), AddDevice and unload.
//! * AddDevice creates the FDO and attaches it to the PDO's stack; it fails with
//!   `STATUS_DEVICE_CONFIGURATION_ERROR` while the registry value is missing or not a GUID.
//! * `IRP_MN_START_DEVICE`, once the drivers below have started the device: queries the client
//!   interface table (`IRP_MN_QUERY_INTERFACE`), opens the echo channel through it (no KMCL
//!   import: the image links only `ntoskrnl.exe`, and `hal.dll` on aarch64) and queues a work
//!   item that waits for the version negotiation and runs [`ECHOES`] checked echoes, half
//!   inline and half through the shared page, reporting to the kernel debugger. A failure to
//!   open fails the start; a failed echo is only reported (the device stays started). A start
//!   of a device that is already started keeps its session.
//! * Stop, surprise removal and removal wait for the work item, close the channel, release the
//!   interface and free the page; removal then waits for the IRPs on their way down (each holds
//!   the FDO's remove lock), detaches and deletes the FDO.
#![no_std]
#![no_main]

use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::mem::size_of;
use core::ops::ControlFlow;
use core::pin::Pin;
use core::ptr::{null, null_mut, NonNull};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use echo_vsc::config::{self, ConfigError};
use echo_vsc::{EchoVsc, Negotiation, SharedPage};
use vmbus_kmcl::channel::{Channel, ChannelSlot, Client};
use vmbus_kmcl::dispatch::ClientInterface;
use vmbus_kmcl::{DeviceRef, Guid, KernelHandle, NtStatus};
use vmbus_kmcl_sys::{
    HANDLE, KMCL_CLIENT_INTERFACE_V1, KMCL_CLIENT_INTERFACE_VERSION_V1, NTSTATUS, PDEVICE_OBJECT,
    PVOID,
};

#[path = "../../glue/rt.rs"]
mod rt;
#[path = "../../glue/wdm.rs"]
mod wdm;

use wdm::{RemoveLockGuard, DRIVER_OBJECT, IRP, UNICODE_STRING};

/// The echoes the work item runs after each start (half inline, half through the GPADL).
const ECHOES: u32 = 128;
/// How long the work item waits for the negotiation, in polls of [`POLL_100NS`].
const POLLS: u32 = 1000;
/// One poll: 10 ms, relative (negative), in 100 ns units.
const POLL_100NS: i64 = -100_000;
/// The pool tag of the shared page and of the remove lock ("EVsc" in a dump).
const TAG: u32 = u32::from_le_bytes(*b"EVsc");

/// `STATUS_DEVICE_CONFIGURATION_ERROR`.
// CAST: the NTSTATUS bit pattern.
const DEVICE_CONFIGURATION_ERROR: NtStatus = NtStatus::from_raw(0xC000_0182_u32 as i32);
/// `STATUS_NO_SUCH_DEVICE`.
// CAST: the NTSTATUS bit pattern.
const NO_SUCH_DEVICE: NtStatus = NtStatus::from_raw(0xC000_000E_u32 as i32);

const PARAMETERS: UNICODE_STRING = UNICODE_STRING::of(vmbus_kmcl::utf16!("Parameters"));
const VALUE_NAME: UNICODE_STRING =
    UNICODE_STRING::of(vmbus_kmcl::utf16!(config::INTERFACE_TYPE_VALUE));

/// A line for the kernel debugger, built with `core::fmt` and cut to fit.
struct Line {
    buf: [u8; 192],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Keep the last byte for the NUL.
        let room = self.buf.len() - 1 - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Prints `echo_vsc: <args>` to the kernel debugger.
fn log(args: fmt::Arguments<'_>) {
    let mut line = Line {
        buf: [0; 192],
        len: 0,
    };
    let _ = line.write_str("echo_vsc: ");
    let _ = line.write_fmt(args);
    // SAFETY: a NUL-terminated format whose one `%s` gets a NUL-terminated string (the
    // buffer's last byte is never written); DbgPrint with `%s` may be called at any IRQL.
    unsafe { wdm::DbgPrint(c"%s\n".as_ptr().cast(), line.buf.as_ptr()) };
}

macro_rules! log {
    ($($arg:tt)*) => { log(format_args!($($arg)*)) };
}

/// The interface type DriverEntry read, for AddDevice (atomics: no `unsafe` needed).
struct Configured {
    set: AtomicBool,
    high: AtomicU64,
    low: AtomicU64,
}

impl Configured {
    fn store(&self, kind: Guid) {
        let value = kind.to_u128();
        // CAST: the two halves of the value, on purpose.
        self.high.store((value >> 64) as u64, Ordering::Relaxed);
        self.low.store(value as u64, Ordering::Relaxed);
        self.set.store(true, Ordering::Release);
    }

    fn load(&self) -> Option<Guid> {
        if !self.set.load(Ordering::Acquire) {
            return None;
        }
        let high = u128::from(self.high.load(Ordering::Relaxed));
        let low = u128::from(self.low.load(Ordering::Relaxed));
        Some(Guid::from_u128(high << 64 | low))
    }
}

static CONFIGURED: Configured = Configured {
    set: AtomicBool::new(false),
    high: AtomicU64::new(0),
    low: AtomicU64::new(0),
};

/// Why the registry did not give an interface type.
enum ReadError {
    /// Opening the service key or its `Parameters` subkey failed.
    Open(NtStatus),
    /// Reading the value failed (`STATUS_OBJECT_NAME_NOT_FOUND`: it is not there).
    Query(NtStatus),
    /// The value is longer than any GUID text.
    TooLong,
    /// The value is there but is not a GUID.
    Value(ConfigError),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open(status) => write!(f, "cannot open the key: {status}"),
            Self::Query(status) => write!(f, "cannot read the value: {status}"),
            Self::TooLong => f.write_str("the value is too long for a GUID"),
            Self::Value(error) => write!(f, "not an interface type: {error}"),
        }
    }
}

/// Opens the key `name` (relative to `root` when it is not NULL) for reading.
fn open_key(root: HANDLE, name: &UNICODE_STRING) -> Result<KernelHandle, ReadError> {
    let attributes = wdm::OBJECT_ATTRIBUTES {
        // CAST: 48 bytes.
        Length: size_of::<wdm::OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: root,
        ObjectName: name,
        Attributes: wdm::OBJ_CASE_INSENSITIVE | wdm::OBJ_KERNEL_HANDLE,
        SecurityDescriptor: null_mut(),
        SecurityQualityOfService: null_mut(),
    };
    let mut handle: HANDLE = null_mut();
    // SAFETY: PASSIVE_LEVEL (DriverEntry); valid attributes and name; `handle` is writable.
    let status = unsafe { wdm::ZwOpenKey(&mut handle, wdm::KEY_READ, &attributes) };
    if status < 0 {
        return Err(ReadError::Open(NtStatus::from_raw(status)));
    }
    // SAFETY: a kernel handle (OBJ_KERNEL_HANDLE) just opened, owned by the returned value.
    unsafe { KernelHandle::from_raw(handle) }.ok_or(ReadError::Open(NtStatus::UNSUCCESSFUL))
}

/// `KMCL_CLIENT_INTERFACE_TYPE` from `<registry>\Parameters\KmclClientInterfaceType`.
fn read_interface_type(registry: &UNICODE_STRING) -> Result<Guid, ReadError> {
    let service = open_key(null_mut(), registry)?;
    let parameters = open_key(service.as_raw(), &PARAMETERS)?;
    // A GUID in braces and a NUL, with room to spare.
    let mut info = wdm::KEY_VALUE_PARTIAL_INFORMATION::<128> {
        TitleIndex: 0,
        Type: 0,
        DataLength: 0,
        Data: [0; 128],
    };
    let mut length = 0u32;
    // SAFETY: PASSIVE_LEVEL; an open key; `info` is writable for the length given.
    let status = unsafe {
        wdm::ZwQueryValueKey(
            parameters.as_raw(),
            &VALUE_NAME,
            wdm::KEY_VALUE_PARTIAL_INFORMATION_CLASS,
            (&raw mut info).cast(),
            // CAST: 140 bytes.
            size_of::<wdm::KEY_VALUE_PARTIAL_INFORMATION<128>>() as u32,
            &mut length,
        )
    };
    let status = NtStatus::from_raw(status);
    if status == NtStatus::BUFFER_OVERFLOW || status == NtStatus::BUFFER_TOO_SMALL {
        return Err(ReadError::TooLong);
    }
    if status.to_raw() < 0 {
        return Err(ReadError::Query(status));
    }
    // CAST: u32 to usize, lossless on 64-bit targets.
    let data = info
        .Data
        .get(..info.DataLength as usize)
        .ok_or(ReadError::TooLong)?;
    config::interface_type_from_registry(info.Type, data).map_err(ReadError::Value)
}

/// One nonpaged, page-aligned pool page holding the VSC's shared page; freed on drop.
struct PoolPage(NonNull<SharedPage>);

impl PoolPage {
    /// A zeroed page; `None` without memory.
    fn allocate() -> Option<Self> {
        // SAFETY: PASSIVE_LEVEL (PnP); a nonpaged allocation.
        let memory = unsafe {
            wdm::ExAllocatePoolWithTag(wdm::NON_PAGED_POOL_NX, size_of::<SharedPage>(), TAG)
        };
        let page = NonNull::new(memory.cast::<SharedPage>())?;
        if !page.as_ptr().is_aligned() {
            // Allocations of a page or more are page aligned; if not, do not use it.
            // SAFETY: the allocation just made, with its tag, unused.
            unsafe { wdm::ExFreePoolWithTag(memory, TAG) };
            return None;
        }
        // SAFETY: a fresh allocation of the size of `SharedPage`, aligned (checked).
        unsafe { page.as_ptr().write(SharedPage::new()) };
        Some(Self(page))
    }

    fn get(&self) -> &SharedPage {
        // SAFETY: initialised by `allocate` and freed only by `drop`.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for PoolPage {
    fn drop(&mut self) {
        // SAFETY: the allocation of `allocate`, with its tag; no GPADL uses it any more (the
        // channel that shared it is closed before the page is dropped, see `close`).
        unsafe { wdm::ExFreePoolWithTag(self.0.as_ptr().cast(), TAG) };
    }
}

type Kmcl = &'static ClientInterface;
type Vsc = EchoVsc<'static>;
type Slot = ChannelSlot<'static, Vsc, Kmcl>;
type Open = Channel<'static, Client, Vsc, Kmcl>;

/// The FDO's device extension.
///
/// `fdo`, `lower`, `work`, `kind` and `remove_lock` are set up by AddDevice before the PnP
/// manager sends the device any IRP; the first four never change. Every IRP this driver
/// passes down to `lower` holds `remove_lock`, and the removal waits for those holds before it
/// detaches from `lower` and deletes the device: power and WMI IRPs are not serialised with
/// the PnP ones.
///
/// The four session cells are touched by PnP IRPs (which the PnP manager sends one at a time
/// per device), and by the self-test work item between `started` being set and `idle` being
/// signalled, during which PnP code leaves them alone: [`close`] waits for `idle` before it
/// touches them, [`start`] queues the work item only after writing them and does not write
/// them again while `started` is set. The session borrows itself (the slot borrows
/// `interface` and `page`, the channel the slot), so the cells are emptied in that order:
/// channel, slot, interface, page.
struct Fdo {
    fdo: PDEVICE_OBJECT,
    lower: PDEVICE_OBJECT,
    work: *mut wdm::IO_WORKITEM,
    kind: Guid,
    /// Held by every IRP on its way to `lower`.
    remove_lock: wdm::RemoveLock,
    /// Set from a successful [`start`] (which queued the work item) until [`close`]: the
    /// session is open, and `idle` is signalled once the work item is done with it.
    started: AtomicBool,
    /// Asks the work item to stop early.
    stop: AtomicBool,
    /// Signalled when the work item is done.
    idle: UnsafeCell<wdm::KEVENT>,
    page: UnsafeCell<Option<PoolPage>>,
    interface: UnsafeCell<Option<ClientInterface>>,
    slot: UnsafeCell<Option<Slot>>,
    channel: UnsafeCell<Option<Open>>,
}

// IoCreateDevice's extension follows the device object at pointer alignment.
const _: () = assert!(core::mem::align_of::<Fdo>() <= 8);

/// The extension of `device`.
///
/// # Safety
///
/// `device` is an FDO this driver's AddDevice set up and has not deleted; the reference is not
/// used after the device is deleted.
unsafe fn extension(device: PDEVICE_OBJECT) -> &'static Fdo {
    // SAFETY: a device object of this driver (the caller's promise).
    let extension = unsafe { (*device.cast::<wdm::DEVICE_OBJECT>()).DeviceExtension };
    // SAFETY: AddDevice wrote an `Fdo` there and set up its remove lock before it returned;
    // no IRP reaches a device before its AddDevice returned (the PnP manager sends the new
    // stack nothing before, the assumption every WDM function driver makes).
    unsafe { &*extension.cast::<Fdo>() }
}

/// Holds `fdo`'s remove lock for `irp`. Once the removal has waited for the lock, completes
/// `irp` with `STATUS_DELETE_PENDING` instead and returns that, for the dispatch routine to
/// return.
///
/// # Safety
///
/// `irp` is an IRP dispatched to `fdo`'s device, which this driver owns and has not completed;
/// after `Err` it is completed and must not be touched.
unsafe fn hold(fdo: &'static Fdo, irp: *mut IRP) -> Result<RemoveLockGuard<'static>, NTSTATUS> {
    // SAFETY: AddDevice set the lock up (see `extension`). The device object, and the lock in
    // its extension, stay allocated while an IRP is dispatched to it even after the removal
    // deleted it: the PnP manager, the power manager and WMI send their IRPs to the top of
    // the stack through a reference (`IoGetAttachedDeviceReference`) they drop only after.
    match unsafe { fdo.remove_lock.acquire(irp) } {
        Ok(held) => Ok(held),
        // SAFETY: the caller's IRP, not completed yet; completed here and not touched after.
        Err(status) => Err(unsafe { wdm::complete(irp, status) }),
    }
}

/// Asks the bus driver for the KMCL client interface table: an `IRP_MN_QUERY_INTERFACE` to
/// the top of the FDO's stack for `kind`, `sizeof(KMCL_CLIENT_INTERFACE_V1)` and version 1.
fn query_client_interface(
    fdo: PDEVICE_OBJECT,
    kind: Guid,
) -> Result<KMCL_CLIENT_INTERFACE_V1, NtStatus> {
    let mut table = KMCL_CLIENT_INTERFACE_V1::default();
    let kind = kind.to_raw();
    let mut event = wdm::KEVENT::zeroed();
    let mut block = wdm::IO_STATUS_BLOCK::zeroed();
    // SAFETY: storage on this stack, which stays resident while the kernel-mode wait below
    // runs.
    unsafe { wdm::KeInitializeEvent(&mut event, wdm::NOTIFICATION_EVENT, 0) };
    // SAFETY: the FDO is attached to its stack; the returned device is referenced.
    let top = unsafe { wdm::IoGetAttachedDeviceReference(fdo) };
    // SAFETY: PASSIVE_LEVEL; `top` is referenced until the dereference below; `event` and
    // `block` outlive the IRP (waited for below).
    let irp = unsafe {
        wdm::IoBuildSynchronousFsdRequest(
            // CAST: a major function code.
            wdm::IRP_MJ_PNP as u32,
            top,
            null_mut(),
            0,
            null(),
            &mut event,
            &mut block,
        )
    };
    let result = if irp.is_null() {
        Err(NtStatus::INSUFFICIENT_RESOURCES)
    } else {
        // SAFETY: a fresh IRP, this function's until it is sent; a PnP IRP starts out
        // STATUS_NOT_SUPPORTED (the PnP rule for drivers that do not handle it).
        unsafe { (*irp).IoStatus.Status = NtStatus::NOT_SUPPORTED.into() };
        // SAFETY: as above; a built IRP has a next stack location, the first driver's.
        let stack = unsafe { wdm::IoGetNextIrpStackLocation::<wdm::QueryInterface>(irp) };
        // SAFETY: that stack location, ours to fill until the IRP is sent.
        let stack = unsafe { &mut *stack };
        stack.MinorFunction = wdm::IRP_MN_QUERY_INTERFACE;
        stack.Parameters = wdm::QueryInterface {
            InterfaceType: &kind,
            // CAST: 360 bytes.
            Size: size_of::<KMCL_CLIENT_INTERFACE_V1>() as u16,
            Version: KMCL_CLIENT_INTERFACE_VERSION_V1,
            Interface: (&raw mut table).cast(),
            InterfaceSpecificData: null_mut(),
        };
        // SAFETY: the IRP goes to the stack it was built for; the I/O manager frees it after
        // completion, having filled `block` and signalled `event`.
        let status = unsafe { wdm::IofCallDriver(top, irp) };
        let status = if NtStatus::from_raw(status) == NtStatus::PENDING {
            // SAFETY: the event initialised above, at PASSIVE_LEVEL, no timeout.
            unsafe {
                wdm::KeWaitForSingleObject(
                    (&raw mut event).cast(),
                    wdm::EXECUTIVE,
                    wdm::KERNEL_MODE,
                    0,
                    null(),
                )
            };
            block.Status
        } else {
            status
        };
        if status < 0 {
            Err(NtStatus::from_raw(status))
        } else {
            Ok(())
        }
    };
    // SAFETY: the reference IoGetAttachedDeviceReference took, released once.
    unsafe { vmbus_kmcl_sys::nt::ObfDereferenceObject(top.cast()) };
    result.map(|()| table)
}

/// Opens the session of a start: the page, the interface, the slot and the channel, each
/// stored in the extension; on failure the caller runs [`close`], which drops what exists.
fn open_session(fdo: &'static Fdo) -> Result<(), (NtStatus, &'static str)> {
    let page = PoolPage::allocate().ok_or((NtStatus::INSUFFICIENT_RESOURCES, "shared page"))?;
    // SAFETY: PnP code while `started` is clear, so no work item uses the cells (see `Fdo`);
    // the page stays there until `close`, after the channel that shares it.
    let page: &'static SharedPage = unsafe { (*fdo.page.get()).insert(page) }.get();
    let table =
        query_client_interface(fdo.fdo, fdo.kind).map_err(|s| (s, "IRP_MN_QUERY_INTERFACE"))?;
    // SAFETY: a table the bus driver filled for KMCL_CLIENT_INTERFACE_TYPE with the size and
    // version of KMCL_CLIENT_INTERFACE_V1, from the guest's one KMCL; its reference is handed
    // over (released by the value's drop, or by `from_raw` on failure).
    let interface = unsafe { ClientInterface::from_raw(table) }
        .map_err(|e| (e.status(), "the client interface table"))?;
    // SAFETY: as for the page; the interface stays there until `close`, after the slot.
    let interface: Kmcl = unsafe { (*fdo.interface.get()).insert(interface) };
    let device = NonNull::new(fdo.fdo.cast()).ok_or((NtStatus::UNSUCCESSFUL, "the FDO"))?;
    // SAFETY: the FDO is deleted only by the removal, after `close` dropped the slot.
    let device = unsafe { DeviceRef::from_raw(device) };
    // SAFETY: the slot is dropped by `close` (never leaked) before the interface and the page
    // it borrows, and `close` runs on every path that ends the device (stop, surprise
    // removal, removal, a failed start).
    let slot = unsafe { ChannelSlot::new_borrowing(device, interface, EchoVsc::new(page)) };
    // SAFETY: as for the page.
    let slot = unsafe { (*fdo.slot.get()).insert(slot) };
    // SAFETY: the extension never moves, and `close` drops the slot in place.
    let slot = unsafe { Pin::new_unchecked(slot) };
    let channel = echo_vsc::open(slot).map_err(|e| (e.status(), "opening the channel"))?;
    // SAFETY: as for the page.
    unsafe { *fdo.channel.get() = Some(channel) };
    Ok(())
}

/// After the lower drivers started the device: open the session and queue the self-test.
fn start(fdo: &'static Fdo) -> NtStatus {
    if fdo.started.load(Ordering::Acquire) {
        // A start of a started device: the PnP manager sends one after a driver of the stack
        // reported changed resource requirements. The session uses no hardware resources, so
        // it stays; opening another would free the page under the open channel and the
        // running work item.
        log!("started again; the open session is kept");
        return NtStatus::SUCCESS;
    }
    if let Err((status, step)) = open_session(fdo) {
        log!("start failed at {step}: {status}");
        close(fdo);
        return status;
    }
    fdo.stop.store(false, Ordering::Relaxed);
    fdo.started.store(true, Ordering::Release);
    // SAFETY: the extension's event, not waited on while no work item is queued.
    unsafe { wdm::KeInitializeEvent(fdo.idle.get(), wdm::NOTIFICATION_EVENT, 0) };
    // SAFETY: the work item AddDevice allocated, not queued (`close` waited for the last
    // one); the context is the extension, which the queued item keeps alive by referencing
    // the device.
    unsafe {
        wdm::IoQueueWorkItem(
            fdo.work,
            self_test,
            wdm::DELAYED_WORK_QUEUE,
            core::ptr::from_ref(fdo).cast_mut().cast(),
        )
    };
    NtStatus::SUCCESS
}

/// Waits for the version negotiation, then runs the echoes and reports.
fn exercise(fdo: &Fdo, channel: &Open) {
    let mut polls = 0;
    let negotiation = loop {
        match channel.handler().negotiation() {
            Negotiation::Pending if polls < POLLS && !fdo.stop.load(Ordering::Acquire) => {
                polls += 1;
                // SAFETY: PASSIVE_LEVEL (a work item), a relative interval on this stack.
                unsafe { wdm::KeDelayExecutionThread(wdm::KERNEL_MODE, 0, &POLL_100NS) };
            }
            other => break other,
        }
    };
    match negotiation {
        Negotiation::Agreed(version) => log!("protocol version {version} agreed"),
        Negotiation::Refused(version) => {
            return log!("the server refused our version; it speaks {version}");
        }
        Negotiation::Failed => return log!("the version negotiation failed"),
        Negotiation::Pending => return log!("no version negotiated; no echoes sent"),
    }
    let outcome = echo_vsc::run(channel, 1..ECHOES + 1, |_| {
        if fdo.stop.load(Ordering::Acquire) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    match outcome {
        Ok(done) => log!(
            "{} of {ECHOES} echoes checked ({} inline, {} through GPADL {:#x}), {} payload bytes",
            done.requests,
            done.requests - done.gpadl_requests,
            done.gpadl_requests,
            channel.handler().gpadl().map_or(0, |g| g.to_raw()),
            done.bytes
        ),
        Err(error) => log!("echo failed: {error}"),
    }
}

/// The self-test work item.
///
/// # Safety
///
/// Queued by [`start`] with the extension of a live FDO as `context`.
unsafe extern "system" fn self_test(_device: PDEVICE_OBJECT, context: PVOID) {
    // SAFETY: the extension `start` queued this item with; the queued item keeps the device,
    // and so its extension, alive until this routine returns.
    let fdo = unsafe { &*context.cast::<Fdo>() };
    // SAFETY: between queueing and `idle`, this routine alone uses the channel (see `Fdo`),
    // which is `Send`.
    if let Some(channel) = unsafe { (*fdo.channel.get()).as_ref() } {
        exercise(fdo, channel);
    }
    // SAFETY: the event `start` initialised; the PnP code waits for it before touching the
    // session again.
    unsafe { wdm::KeSetEvent(fdo.idle.get(), 0, 0) };
}

/// Ends the session: stops and waits for the self-test, then empties the cells in order
/// (channel, slot, interface, page). Nothing happens for what does not exist.
fn close(fdo: &Fdo) {
    if fdo.started.swap(false, Ordering::AcqRel) {
        fdo.stop.store(true, Ordering::Release);
        // SAFETY: the event of the queued work item, at PASSIVE_LEVEL, no timeout.
        unsafe {
            wdm::KeWaitForSingleObject(
                fdo.idle.get().cast(),
                wdm::EXECUTIVE,
                wdm::KERNEL_MODE,
                0,
                null(),
            )
        };
    }
    // SAFETY: PnP code with the work item done (see `Fdo`): dropping the channel closes it and
    // ends its borrow of the slot.
    unsafe { *fdo.channel.get() = None };
    // SAFETY: as above; the slot's drop tears down anything left of its channel.
    unsafe { *fdo.slot.get() = None };
    // SAFETY: as above; nothing borrows the interface any more (InterfaceDereference).
    unsafe { *fdo.interface.get() = None };
    // SAFETY: as above; the GPADL over the page went with the channel.
    unsafe { *fdo.page.get() = None };
}

/// Passes `irp` down unchanged, with `status` set first when given; `_held` is the hold on the
/// remove lock that keeps `fdo.lower` attached during the call (released by the caller after).
///
/// # Safety
///
/// `irp` is an IRP dispatched to `fdo`'s device, which this driver owns, has not completed and
/// does not touch after.
unsafe fn pass_down(
    fdo: &Fdo,
    irp: *mut IRP,
    status: Option<NtStatus>,
    _held: &RemoveLockGuard<'_>,
) -> NTSTATUS {
    if let Some(status) = status {
        // SAFETY: the caller's IRP, still its own (not completed, not sent).
        unsafe { (*irp).IoStatus.Status = status.into() };
    }
    // SAFETY: as above; the call below sends it down at once, and this driver set no
    // completion routine that would need its own stack location.
    unsafe { wdm::IoSkipCurrentIrpStackLocation(irp) };
    // SAFETY: `lower` is the device AddDevice attached to, still attached while the remove lock
    // is held; the IRP is skipped, so the driver below gets this driver's stack location.
    unsafe { wdm::IofCallDriver(fdo.lower, irp) }
}

/// `IRP_MJ_PNP`.
unsafe extern "system" fn dispatch_pnp(device: PDEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the I/O manager sends this driver's IRPs only to its FDOs, each set up by
    // AddDevice; a deleted one stays allocated while an IRP is dispatched to it.
    let fdo = unsafe { extension(device) };
    // SAFETY: the IRP the I/O manager hands over, not completed.
    let held = match unsafe { hold(fdo, irp) } {
        Ok(held) => held,
        Err(status) => return status,
    };
    // SAFETY: the IRP the I/O manager hands over, its current stack location this driver's.
    let stack = unsafe { (*irp).CurrentStackLocation };
    // SAFETY: as above.
    let minor = unsafe { (*stack).MinorFunction };
    match minor {
        wdm::IRP_MN_START_DEVICE => {
            // SAFETY: PASSIVE_LEVEL (PnP); the IRP is this driver's and goes to the attached
            // device (the lock is held); the routine returns once the drivers below completed
            // it, and the IRP is this driver's again.
            let forwarded = unsafe { wdm::IoForwardIrpSynchronously(fdo.lower, irp) };
            let status = if forwarded == 0 {
                NtStatus::UNSUCCESSFUL
            } else {
                // SAFETY: the IRP is ours again, completed below.
                NtStatus::from_raw(unsafe { (*irp).IoStatus.Status })
            };
            let status = if status.to_raw() < 0 {
                status
            } else {
                start(fdo)
            };
            // SAFETY: the IRP came back completed by the drivers below, so it is this driver's
            // to complete, once, here (the hold is released after, by `held`'s drop; it only
            // uses the IRP's address as a tag).
            unsafe { wdm::complete(irp, status.into()) }
        }
        wdm::IRP_MN_STOP_DEVICE | wdm::IRP_MN_SURPRISE_REMOVAL => {
            close(fdo);
            // SAFETY: the dispatched IRP, neither completed nor sent yet.
            unsafe { pass_down(fdo, irp, Some(NtStatus::SUCCESS), &held) }
        }
        wdm::IRP_MN_REMOVE_DEVICE => {
            close(fdo);
            let (me, lower, work) = (fdo.fdo, fdo.lower, fdo.work);
            // SAFETY: the dispatched IRP, neither completed nor sent yet.
            let status = unsafe { pass_down(fdo, irp, Some(NtStatus::SUCCESS), &held) };
            // Every power or WMI IRP still on its way down holds the lock: wait for them; any
            // later one is completed with STATUS_DELETE_PENDING and never reaches `lower`.
            held.release_and_wait();
            // SAFETY: the device AddDevice attached to, which no IRP of this driver is being
            // sent to any more (the lock is removed).
            unsafe { wdm::IoDetachDevice(lower) };
            // SAFETY: the work item of this device, not queued: `close` waited for the routine
            // to signal `idle`, its last access to the item's context, and a routine may free
            // its own item, so the I/O manager no longer uses it once the routine runs.
            unsafe { wdm::IoFreeWorkItem(work) };
            // SAFETY: this FDO, detached and with nothing left that uses its extension (`fdo`
            // is not used after); memory a late IRP's sender still references stays until
            // that reference goes.
            unsafe { wdm::IoDeleteDevice(me) };
            status
        }
        wdm::IRP_MN_QUERY_STOP_DEVICE
        | wdm::IRP_MN_CANCEL_STOP_DEVICE
        | wdm::IRP_MN_QUERY_REMOVE_DEVICE
        | wdm::IRP_MN_CANCEL_REMOVE_DEVICE => {
            // SAFETY: the dispatched IRP, neither completed nor sent yet.
            unsafe { pass_down(fdo, irp, Some(NtStatus::SUCCESS), &held) }
        }
        // SAFETY: the dispatched IRP, neither completed nor sent yet; its status is left as
        // the PnP manager or a driver above set it.
        _ => unsafe { pass_down(fdo, irp, None, &held) },
    }
}

/// `IRP_MJ_POWER`: this driver has no power policy; the bus driver handles it.
unsafe extern "system" fn dispatch_power(device: PDEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: as in `dispatch_pnp`.
    let fdo = unsafe { extension(device) };
    // SAFETY: the IRP the power manager hands over, not completed. Since Windows Vista a
    // power IRP completed without being passed down needs no PoStartNextPowerIrp.
    let held = match unsafe { hold(fdo, irp) } {
        Ok(held) => held,
        Err(status) => return status,
    };
    // SAFETY: the dispatched IRP, neither completed nor sent yet; sent down at once below,
    // without a completion routine.
    unsafe { wdm::IoSkipCurrentIrpStackLocation(irp) };
    // SAFETY: the device AddDevice attached to, still attached while `held` lives (until this
    // routine returns); the IRP is skipped, so the driver below gets this driver's location.
    let status = unsafe { wdm::PoCallDriver(fdo.lower, irp) };
    drop(held);
    status
}

/// `IRP_MJ_SYSTEM_CONTROL` (WMI): not this driver's; passed down.
unsafe extern "system" fn dispatch_system_control(
    device: PDEVICE_OBJECT,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: as in `dispatch_pnp`.
    let fdo = unsafe { extension(device) };
    // SAFETY: the IRP WMI hands over, not completed.
    let held = match unsafe { hold(fdo, irp) } {
        Ok(held) => held,
        Err(status) => return status,
    };
    // SAFETY: the dispatched IRP, neither completed nor sent yet; its status is left as is.
    unsafe { pass_down(fdo, irp, None, &held) }
}

/// AddDevice: the FDO, attached on top of `pdo`.
unsafe extern "system" fn add_device(driver: *mut DRIVER_OBJECT, pdo: PDEVICE_OBJECT) -> NTSTATUS {
    let Some(kind) = CONFIGURED.load() else {
        log!(
            "AddDevice refused: no valid {} in the service key's Parameters (see echo_vsc.inf)",
            config::INTERFACE_TYPE_VALUE
        );
        return DEVICE_CONFIGURATION_ERROR.into();
    };
    let mut device: PDEVICE_OBJECT = null_mut();
    // SAFETY: the driver object the PnP manager passes; an unnamed device with room for the
    // extension; `device` is writable.
    let status = unsafe {
        wdm::IoCreateDevice(
            driver,
            // CAST: a few hundred bytes.
            size_of::<Fdo>() as u32,
            null(),
            wdm::FILE_DEVICE_UNKNOWN,
            wdm::FILE_DEVICE_SECURE_OPEN,
            0,
            &mut device,
        )
    };
    if status < 0 {
        return status;
    }
    // SAFETY: the device just created.
    let work = unsafe { wdm::IoAllocateWorkItem(device) };
    if work.is_null() {
        // SAFETY: the device just created, unused.
        unsafe { wdm::IoDeleteDevice(device) };
        return NtStatus::INSUFFICIENT_RESOURCES.into();
    }
    // SAFETY: our new device and the PDO the PnP manager passes.
    let lower = unsafe { wdm::IoAttachDeviceToDeviceStack(device, pdo) };
    if lower.is_null() {
        // SAFETY: the work item just allocated, never queued.
        unsafe { wdm::IoFreeWorkItem(work) };
        // SAFETY: the device just created, unused.
        unsafe { wdm::IoDeleteDevice(device) };
        return NO_SUCH_DEVICE.into();
    }
    let object = device.cast::<wdm::DEVICE_OBJECT>();
    let fdo = Fdo {
        fdo: device,
        lower,
        work,
        kind,
        remove_lock: wdm::RemoveLock::new(),
        started: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        idle: UnsafeCell::new(wdm::KEVENT::zeroed()),
        page: UnsafeCell::new(None),
        interface: UnsafeCell::new(None),
        slot: UnsafeCell::new(None),
        channel: UnsafeCell::new(None),
    };
    // SAFETY: the device object IoCreateDevice returned; its `DeviceExtension` field is read
    // alone (no reference to the rest of the kernel's object).
    let extension = unsafe { (*object).DeviceExtension }.cast::<Fdo>();
    // SAFETY: the extension IoCreateDevice allocated with the size of `Fdo` (its memory is
    // pointer aligned, and `Fdo` needs no more), unused until AddDevice returns.
    unsafe { extension.write(fdo) };
    // SAFETY: the lock in the extension, which stays at that address until the device is
    // deleted; set up once, here, before AddDevice returns and any IRP can hold it.
    unsafe { (*extension).remove_lock.initialize(TAG) };
    // SAFETY: the device object's `Flags`, which only this driver writes while the device is
    // initialising; the field alone is accessed.
    unsafe { (*object).Flags |= wdm::DO_POWER_PAGABLE };
    // SAFETY: as above; from here the I/O manager may send the device IRPs.
    unsafe { (*object).Flags &= !wdm::DO_DEVICE_INITIALIZING };
    NtStatus::SUCCESS.into()
}

/// Unload: every device was removed (and its session closed) before the I/O manager unloads a
/// PnP driver, so nothing is left.
extern "system" fn unload(_driver: *mut DRIVER_OBJECT) {}

/// The driver's entry point.
///
/// # Safety
///
/// Called once by the I/O manager with a valid driver object and the driver's service key.
#[no_mangle]
pub unsafe extern "system" fn DriverEntry(
    driver: *mut DRIVER_OBJECT,
    registry: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: the service key's name, valid during DriverEntry.
    let registry = unsafe { &*registry };
    match read_interface_type(registry) {
        Ok(kind) => {
            CONFIGURED.store(kind);
            log!("KMCL client interface type {kind}");
        }
        Err(error) => log!(
            "Parameters\\{}: {error}; every AddDevice fails with \
             STATUS_DEVICE_CONFIGURATION_ERROR",
            config::INTERFACE_TYPE_VALUE
        ),
    }
    // SAFETY: DriverEntry owns the driver object (and its extension) until it returns.
    let driver = unsafe { &mut *driver };
    // SAFETY: the driver extension the I/O manager allocated with the driver object.
    unsafe { (*driver.DriverExtension).AddDevice = Some(add_device) };
    driver.MajorFunction[wdm::IRP_MJ_PNP] = Some(dispatch_pnp);
    driver.MajorFunction[wdm::IRP_MJ_POWER] = Some(dispatch_power);
    driver.MajorFunction[wdm::IRP_MJ_SYSTEM_CONTROL] = Some(dispatch_system_control);
    driver.DriverUnload = Some(unload);
    NtStatus::SUCCESS.into()
}
