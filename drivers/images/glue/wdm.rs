//! The few WDM structures and services the echo drivers' glue touches, declared by hand from
//! the layout facts of the public WDK headers for 64-bit Windows (x64 and ARM64 share these
//! layouts), each size and field offset asserted at compile time. Only the fields the glue
//! reads or writes are named; the rest is padding of the documented size.

#![allow(
    non_snake_case,
    non_camel_case_types,
    clippy::upper_case_acronyms,
    dead_code,
    reason = "WDM names, for grep-ability against the documentation"
)]

use core::cell::UnsafeCell;
use core::mem::{offset_of, size_of};

use vmbus_kmcl_sys::{GUID, HANDLE, INTERFACE, NTSTATUS, PDEVICE_OBJECT, PVOID};

/// A counted UTF-16 string (`UNICODE_STRING`).
#[repr(C)]
pub struct UNICODE_STRING {
    /// Bytes in use.
    pub Length: u16,
    /// Bytes of the buffer.
    pub MaximumLength: u16,
    /// The characters.
    pub Buffer: *const u16,
}

const _: () = assert!(size_of::<UNICODE_STRING>() == 0x10);
const _: () = assert!(offset_of!(UNICODE_STRING, MaximumLength) == 0x02);
const _: () = assert!(offset_of!(UNICODE_STRING, Buffer) == 0x08);

impl UNICODE_STRING {
    /// A string over a `'static` UTF-16 literal.
    ///
    /// # Panics
    ///
    /// When `text` has more bytes than a `u16` counts; the glue calls it only to initialise
    /// constants, where that is a compile error.
    pub const fn of(text: &'static [u16]) -> Self {
        assert!(
            text.len() <= (u16::MAX / 2) as usize,
            "too long for a UNICODE_STRING"
        );
        // CAST: at most u16::MAX, checked above.
        let bytes = (text.len() * 2) as u16;
        Self {
            Length: bytes,
            MaximumLength: bytes,
            Buffer: text.as_ptr(),
        }
    }
}

/// A dispatch routine (`DRIVER_DISPATCH`).
pub type DriverDispatch = unsafe extern "system" fn(PDEVICE_OBJECT, *mut IRP) -> NTSTATUS;
/// The unload routine (`DRIVER_UNLOAD`).
pub type DriverUnload = unsafe extern "system" fn(*mut DRIVER_OBJECT);

/// The number of major function codes (`IRP_MJ_MAXIMUM_FUNCTION + 1`).
pub const IRP_MJ_COUNT: usize = 28;
/// `IRP_MJ_CREATE`.
pub const IRP_MJ_CREATE: usize = 0x00;
/// `IRP_MJ_CLOSE`.
pub const IRP_MJ_CLOSE: usize = 0x02;
/// `IRP_MJ_DEVICE_CONTROL`.
pub const IRP_MJ_DEVICE_CONTROL: usize = 0x0e;
/// `FILE_DEVICE_UNKNOWN`.
pub const FILE_DEVICE_UNKNOWN: u32 = 0x22;
/// `FILE_DEVICE_SECURE_OPEN`.
pub const FILE_DEVICE_SECURE_OPEN: u32 = 0x100;
/// `IO_NO_INCREMENT`.
pub const IO_NO_INCREMENT: i8 = 0;

/// The driver object (`DRIVER_OBJECT`): the glue sets the unload routine and the dispatch
/// table, and a PnP driver its AddDevice routine in the driver extension.
#[repr(C)]
pub struct DRIVER_OBJECT {
    _head: [u8; 0x30],
    /// `DriverExtension`.
    pub DriverExtension: *mut DRIVER_EXTENSION,
    _middle: [u8; 0x68 - 0x38],
    /// `DriverUnload`.
    pub DriverUnload: Option<DriverUnload>,
    /// `MajorFunction`.
    pub MajorFunction: [Option<DriverDispatch>; IRP_MJ_COUNT],
}

const _: () = assert!(size_of::<DRIVER_OBJECT>() == 0x150);
const _: () = assert!(offset_of!(DRIVER_OBJECT, DriverExtension) == 0x30);
const _: () = assert!(offset_of!(DRIVER_OBJECT, DriverUnload) == 0x68);
const _: () = assert!(offset_of!(DRIVER_OBJECT, MajorFunction) == 0x70);

/// A PnP driver's AddDevice routine (`DRIVER_ADD_DEVICE`): the driver object and the PDO.
pub type DriverAddDevice =
    unsafe extern "system" fn(*mut DRIVER_OBJECT, PDEVICE_OBJECT) -> NTSTATUS;

/// The start of the driver extension (`DRIVER_EXTENSION`), which the I/O manager allocates:
/// the glue only sets `AddDevice`, so only the prefix up to it is declared.
#[repr(C)]
pub struct DRIVER_EXTENSION {
    _driver_object: *mut DRIVER_OBJECT,
    /// `AddDevice`.
    pub AddDevice: Option<DriverAddDevice>,
}

const _: () = assert!(offset_of!(DRIVER_EXTENSION, AddDevice) == 0x08);

/// The start of a device object (`DEVICE_OBJECT`), which only `IoCreateDevice` allocates: the
/// glue reads and writes `Flags` and reads `DeviceExtension`, so only the prefix up to it is
/// declared.
#[repr(C)]
pub struct DEVICE_OBJECT {
    _head: [u8; 0x30],
    /// `Flags` (`DO_*`).
    pub Flags: u32,
    _characteristics: u32,
    _vpb: PVOID,
    /// `DeviceExtension`: the driver's part, of the size given to `IoCreateDevice`.
    pub DeviceExtension: PVOID,
}

const _: () = assert!(offset_of!(DEVICE_OBJECT, Flags) == 0x30);
const _: () = assert!(offset_of!(DEVICE_OBJECT, DeviceExtension) == 0x40);

/// `DO_POWER_PAGABLE`: power IRPs arrive at PASSIVE_LEVEL.
pub const DO_POWER_PAGABLE: u32 = 0x0000_2000;
/// `DO_DEVICE_INITIALIZING`: cleared when AddDevice is done with the device.
pub const DO_DEVICE_INITIALIZING: u32 = 0x0000_0080;

/// The status block of an IRP (`IO_STATUS_BLOCK`).
#[repr(C)]
pub struct IO_STATUS_BLOCK {
    /// `Status` (a union with a pointer: 8 bytes).
    pub Status: NTSTATUS,
    _pad: u32,
    /// `Information`.
    pub Information: usize,
}

impl IO_STATUS_BLOCK {
    /// A block for an IRP to fill.
    pub const fn zeroed() -> Self {
        Self {
            Status: 0,
            _pad: 0,
            Information: 0,
        }
    }
}

const _: () = assert!(size_of::<IO_STATUS_BLOCK>() == 0x10);
const _: () = assert!(offset_of!(IO_STATUS_BLOCK, Information) == 0x08);

/// An I/O request packet (`IRP`): the system buffer, the status and the current stack location.
#[repr(C)]
pub struct IRP {
    _head: [u8; 0x18],
    /// `AssociatedIrp.SystemBuffer` (METHOD_BUFFERED).
    pub SystemBuffer: PVOID,
    _thread_list: [u8; 0x10],
    /// `IoStatus`.
    pub IoStatus: IO_STATUS_BLOCK,
    _modes: [u8; 3],
    /// `CurrentLocation`: the index of the current stack location (counts down).
    pub CurrentLocation: i8,
    _middle: [u8; 0xb8 - 0x44],
    /// `Tail.Overlay.CurrentStackLocation`.
    pub CurrentStackLocation: *mut IO_STACK_LOCATION,
    _tail: [u8; 0x10],
}

const _: () = assert!(size_of::<IRP>() == 0xd0);
const _: () = assert!(offset_of!(IRP, SystemBuffer) == 0x18);
const _: () = assert!(offset_of!(IRP, IoStatus) == 0x30);
const _: () = assert!(offset_of!(IRP, CurrentLocation) == 0x43);
const _: () = assert!(offset_of!(IRP, CurrentStackLocation) == 0xb8);

/// An I/O stack location (`IO_STACK_LOCATION`), its `Parameters` union read as `P`: one of
/// the parameter layouts below, each asserted to be the union's 32 bytes.
#[repr(C)]
pub struct IO_STACK_LOCATION<P = DeviceIoControl> {
    /// `MajorFunction`.
    pub MajorFunction: u8,
    /// `MinorFunction`.
    pub MinorFunction: u8,
    _flags_control: [u8; 2],
    _pad: u32,
    /// `Parameters`, as `P`.
    pub Parameters: P,
    _tail: [u8; 0x20],
}

/// `Parameters.DeviceIoControl` of an I/O stack location.
#[repr(C)]
pub struct DeviceIoControl {
    /// `OutputBufferLength`.
    pub OutputBufferLength: u32,
    _pad0: u32,
    /// `InputBufferLength` (pointer aligned).
    pub InputBufferLength: u32,
    _pad1: u32,
    /// `IoControlCode` (pointer aligned).
    pub IoControlCode: u32,
    _pad2: u32,
    _type3_input: PVOID,
}

/// `Parameters.QueryInterface` of an I/O stack location (`IRP_MN_QUERY_INTERFACE`).
#[repr(C)]
pub struct QueryInterface {
    /// `InterfaceType`.
    pub InterfaceType: *const GUID,
    /// `Size` of the interface structure.
    pub Size: u16,
    /// `Version` asked for.
    pub Version: u16,
    /// `Interface`: the structure the exporter fills.
    pub Interface: *mut INTERFACE,
    /// `InterfaceSpecificData`.
    pub InterfaceSpecificData: PVOID,
}

const _: () = assert!(size_of::<IO_STACK_LOCATION>() == 0x48);
const _: () = assert!(size_of::<IO_STACK_LOCATION<QueryInterface>>() == 0x48);
const _: () = assert!(offset_of!(IO_STACK_LOCATION, MinorFunction) == 0x01);
const _: () = assert!(offset_of!(IO_STACK_LOCATION, Parameters) == 0x08);
const _: () = assert!(size_of::<DeviceIoControl>() == 0x20);
const _: () = assert!(offset_of!(DeviceIoControl, InputBufferLength) == 0x08);
const _: () = assert!(offset_of!(DeviceIoControl, IoControlCode) == 0x10);
const _: () = assert!(size_of::<QueryInterface>() == 0x20);
const _: () = assert!(offset_of!(QueryInterface, Size) == 0x08);
const _: () = assert!(offset_of!(QueryInterface, Version) == 0x0a);
const _: () = assert!(offset_of!(QueryInterface, Interface) == 0x10);
const _: () = assert!(offset_of!(QueryInterface, InterfaceSpecificData) == 0x18);

/// A memory descriptor list (`MDL`): the fields `MmGetSystemAddressForMdlSafe` reads.
#[repr(C)]
pub struct MDL {
    _next: PVOID,
    _size: i16,
    /// `MdlFlags`.
    pub MdlFlags: i16,
    _processor_reserved: u32,
    _process: PVOID,
    /// `MappedSystemVa`.
    pub MappedSystemVa: PVOID,
    _start_va: PVOID,
    /// `ByteCount`.
    pub ByteCount: u32,
    _byte_offset: u32,
}

const _: () = assert!(size_of::<MDL>() == 0x30);
const _: () = assert!(offset_of!(MDL, MdlFlags) == 0x0a);
const _: () = assert!(offset_of!(MDL, MappedSystemVa) == 0x18);
const _: () = assert!(offset_of!(MDL, ByteCount) == 0x28);

/// `MDL_MAPPED_TO_SYSTEM_VA`.
pub const MDL_MAPPED_TO_SYSTEM_VA: i16 = 0x0001;
/// `MDL_SOURCE_IS_NONPAGED_POOL`.
pub const MDL_SOURCE_IS_NONPAGED_POOL: i16 = 0x0004;
/// `MmCached`.
pub const MM_CACHED: u32 = 1;
/// `NormalPagePriority | MdlMappingNoExecute`.
pub const NORMAL_PAGE_PRIORITY_NO_EXECUTE: u32 = 16 | 0x4000_0000;

#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "system" {
    /// Creates a device object.
    pub fn IoCreateDevice(
        driver: *mut DRIVER_OBJECT,
        extension_size: u32,
        name: *const UNICODE_STRING,
        device_type: u32,
        characteristics: u32,
        exclusive: u8,
        device: *mut PDEVICE_OBJECT,
    ) -> NTSTATUS;
    /// Deletes a device object.
    pub fn IoDeleteDevice(device: PDEVICE_OBJECT);
    /// Creates a symbolic link in the object manager's namespace.
    pub fn IoCreateSymbolicLink(
        link: *const UNICODE_STRING,
        target: *const UNICODE_STRING,
    ) -> NTSTATUS;
    /// Deletes a symbolic link.
    pub fn IoDeleteSymbolicLink(link: *const UNICODE_STRING) -> NTSTATUS;
    /// Completes an IRP (what the `IoCompleteRequest` macro calls).
    pub fn IofCompleteRequest(irp: *mut IRP, boost: i8);
    /// Maps the pages of a locked MDL into system space.
    pub fn MmMapLockedPagesSpecifyCache(
        mdl: *mut MDL,
        mode: i8,
        cache: u32,
        address: PVOID,
        bug_check_on_failure: u32,
        priority: u32,
    ) -> PVOID;
}

/// `IRP_MJ_POWER`.
pub const IRP_MJ_POWER: usize = 0x16;
/// `IRP_MJ_SYSTEM_CONTROL`.
pub const IRP_MJ_SYSTEM_CONTROL: usize = 0x17;
/// `IRP_MJ_PNP`.
pub const IRP_MJ_PNP: usize = 0x1b;
/// `IRP_MN_START_DEVICE`.
pub const IRP_MN_START_DEVICE: u8 = 0x00;
/// `IRP_MN_QUERY_REMOVE_DEVICE`.
pub const IRP_MN_QUERY_REMOVE_DEVICE: u8 = 0x01;
/// `IRP_MN_REMOVE_DEVICE`.
pub const IRP_MN_REMOVE_DEVICE: u8 = 0x02;
/// `IRP_MN_CANCEL_REMOVE_DEVICE`.
pub const IRP_MN_CANCEL_REMOVE_DEVICE: u8 = 0x03;
/// `IRP_MN_STOP_DEVICE`.
pub const IRP_MN_STOP_DEVICE: u8 = 0x04;
/// `IRP_MN_QUERY_STOP_DEVICE`.
pub const IRP_MN_QUERY_STOP_DEVICE: u8 = 0x05;
/// `IRP_MN_CANCEL_STOP_DEVICE`.
pub const IRP_MN_CANCEL_STOP_DEVICE: u8 = 0x06;
/// `IRP_MN_QUERY_INTERFACE`.
pub const IRP_MN_QUERY_INTERFACE: u8 = 0x08;
/// `IRP_MN_SURPRISE_REMOVAL`.
pub const IRP_MN_SURPRISE_REMOVAL: u8 = 0x17;

/// Completes `irp` with `status` and no information (`IoCompleteRequest`, a macro); returns
/// `status`, for the dispatch routine to return.
///
/// # Safety
///
/// `irp` is an IRP this driver owns and has not completed; it is not touched after.
pub unsafe fn complete(irp: *mut IRP, status: NTSTATUS) -> NTSTATUS {
    // SAFETY: the caller's IRP, owned and not yet completed.
    let block = unsafe { &mut (*irp).IoStatus };
    block.Status = status;
    block.Information = 0;
    // SAFETY: as above; completed exactly once, here.
    unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
    status
}

/// `IoSkipCurrentIrpStackLocation` (a macro): the next driver gets this driver's stack
/// location unchanged.
///
/// # Safety
///
/// `irp` is an IRP this driver owns, about to be passed down with `IofCallDriver` or
/// `PoCallDriver` and not touched after.
pub unsafe fn IoSkipCurrentIrpStackLocation(irp: *mut IRP) {
    // SAFETY: an IRP the caller owns; the macro's two updates, undone by the call down.
    let irp = unsafe { &mut *irp };
    irp.CurrentLocation = irp.CurrentLocation.wrapping_add(1);
    irp.CurrentStackLocation = irp.CurrentStackLocation.wrapping_add(1);
}

/// `IoGetNextIrpStackLocation` (a macro): the stack location of the driver below, read as
/// parameters `P`.
///
/// # Safety
///
/// `irp` is a live IRP this driver owns with a stack location below the current one.
pub unsafe fn IoGetNextIrpStackLocation<P>(irp: *mut IRP) -> *mut IO_STACK_LOCATION<P> {
    // SAFETY: an IRP the caller owns.
    unsafe { (*irp).CurrentStackLocation }
        .wrapping_sub(1)
        .cast()
}

/// A kernel event (`KEVENT`): its dispatcher header, opaque, in nonpaged memory.
#[repr(C, align(8))]
pub struct KEVENT {
    _header: [u8; 0x18],
}

impl KEVENT {
    /// Storage for `KeInitializeEvent` to set up.
    pub const fn zeroed() -> Self {
        Self { _header: [0; 0x18] }
    }
}

const _: () = assert!(size_of::<KEVENT>() == 0x18);
const _: () = assert!(core::mem::align_of::<KEVENT>() == 8);

/// `NotificationEvent`: stays signalled until reset.
pub const NOTIFICATION_EVENT: u32 = 0;
/// `Executive`, the wait reason of a driver's waits.
pub const EXECUTIVE: u32 = 0;
/// `KernelMode`.
pub const KERNEL_MODE: i8 = 0;
/// `DelayedWorkQueue`.
pub const DELAYED_WORK_QUEUE: u32 = 1;
/// `NonPagedPoolNx`.
pub const NON_PAGED_POOL_NX: u32 = 512;

/// A remove lock (`IO_REMOVE_LOCK`) as a free build lays it out: only its common block (the
/// `Removed` flag, the count of holders and the event the last one signals); opaque. The
/// kernel routines take its size and use the debug block only when given the larger size of a
/// checked build.
#[repr(C, align(8))]
pub struct IO_REMOVE_LOCK {
    _common: [u8; 0x20],
}

const _: () = assert!(size_of::<IO_REMOVE_LOCK>() == 0x20);

/// `sizeof(IO_REMOVE_LOCK)` of a free build, the last argument of every remove-lock routine
/// (the `IoAcquireRemoveLock` family of macros passes it).
// CAST: 32 bytes.
const REMOVE_LOCK_SIZE: u32 = size_of::<IO_REMOVE_LOCK>() as u32;

/// The remove lock of a device object, in its device extension: I/O that reaches the driver
/// below holds it, and the removal waits until nothing does before it detaches and deletes
/// the device.
pub struct RemoveLock(UnsafeCell<IO_REMOVE_LOCK>);

impl RemoveLock {
    /// Storage for [`RemoveLock::initialize`] to set up.
    pub const fn new() -> Self {
        Self(UnsafeCell::new(IO_REMOVE_LOCK { _common: [0; 0x20] }))
    }

    /// Sets the lock up (`IoInitializeRemoveLock`): not removed, nobody holding it.
    ///
    /// # Safety
    ///
    /// The lock is at the address it keeps for its whole life (it holds a kernel event) and
    /// nothing has acquired it or can yet: call it once, before the device can receive I/O.
    pub unsafe fn initialize(&self, tag: u32) {
        // SAFETY: storage of the size given, at its final address, used by nothing yet (the
        // caller's promise); the tag and limits matter to checked kernels only.
        unsafe { IoInitializeRemoveLockEx(self.0.get(), tag, 0, 0, REMOVE_LOCK_SIZE) };
    }

    /// Holds the lock for `irp` (`IoAcquireRemoveLock`); `STATUS_DELETE_PENDING` once the
    /// removal has waited for it. Any IRQL up to DISPATCH_LEVEL.
    ///
    /// # Safety
    ///
    /// [`RemoveLock::initialize`] set the lock up, and the device object holding it is not
    /// freed (an IRP being dispatched to it keeps it allocated).
    pub unsafe fn acquire(&self, irp: *mut IRP) -> Result<RemoveLockGuard<'_>, NTSTATUS> {
        // SAFETY: an initialised lock (the caller's promise); the IRP only tags the hold (for
        // checked kernels); the file and line are those the free-build macro passes.
        let status = unsafe {
            IoAcquireRemoveLockEx(
                self.0.get(),
                irp.cast(),
                c"".as_ptr().cast(),
                1,
                REMOVE_LOCK_SIZE,
            )
        };
        if status < 0 {
            Err(status)
        } else {
            Ok(RemoveLockGuard { lock: self, irp })
        }
    }
}

/// A hold on a [`RemoveLock`], released when dropped (`IoReleaseRemoveLock`), or by
/// [`RemoveLockGuard::release_and_wait`] in the removal.
#[must_use = "dropping the guard releases the lock at once"]
pub struct RemoveLockGuard<'a> {
    lock: &'a RemoveLock,
    irp: *mut IRP,
}

impl RemoveLockGuard<'_> {
    /// Releases this hold and waits until nobody else holds the lock, which from then on
    /// refuses every acquire (`IoReleaseRemoveLockAndWait`). PASSIVE_LEVEL: the removal,
    /// after it passed `IRP_MN_REMOVE_DEVICE` down and before it detaches and deletes the
    /// device.
    pub fn release_and_wait(self) {
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: a hold this guard owns, released here instead of by `drop` (the guard is
        // not dropped); the lock is initialised (`acquire` succeeded on it).
        unsafe {
            IoReleaseRemoveLockAndWaitEx(this.lock.0.get(), this.irp.cast(), REMOVE_LOCK_SIZE)
        };
    }
}

impl Drop for RemoveLockGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the hold this guard owns, released once; the lock is initialised (`acquire`
        // succeeded on it).
        unsafe { IoReleaseRemoveLockEx(self.lock.0.get(), self.irp.cast(), REMOVE_LOCK_SIZE) };
    }
}

#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "system" {
    /// Sets a remove lock up; `size` says free or checked layout.
    fn IoInitializeRemoveLockEx(
        lock: *mut IO_REMOVE_LOCK,
        tag: u32,
        max_locked_minutes: u32,
        high_watermark: u32,
        size: u32,
    );
    /// Takes a hold on a remove lock: STATUS_SUCCESS, or STATUS_DELETE_PENDING after the
    /// removal. The file and line are for checked kernels.
    fn IoAcquireRemoveLockEx(
        lock: *mut IO_REMOVE_LOCK,
        tag: PVOID,
        file: *const u8,
        line: u32,
        size: u32,
    ) -> NTSTATUS;
    /// Drops a hold.
    fn IoReleaseRemoveLockEx(lock: *mut IO_REMOVE_LOCK, tag: PVOID, size: u32);
    /// Drops a hold, marks the lock removed and waits until no hold is left. PASSIVE_LEVEL.
    fn IoReleaseRemoveLockAndWaitEx(lock: *mut IO_REMOVE_LOCK, tag: PVOID, size: u32);
}

/// The attributes of an object to open (`OBJECT_ATTRIBUTES`).
#[repr(C)]
pub struct OBJECT_ATTRIBUTES {
    /// `Length`: the size of this structure.
    pub Length: u32,
    /// `RootDirectory`: the handle `ObjectName` is relative to, or NULL.
    pub RootDirectory: HANDLE,
    /// `ObjectName`.
    pub ObjectName: *const UNICODE_STRING,
    /// `Attributes` (`OBJ_*`).
    pub Attributes: u32,
    /// `SecurityDescriptor`.
    pub SecurityDescriptor: PVOID,
    /// `SecurityQualityOfService`.
    pub SecurityQualityOfService: PVOID,
}

const _: () = assert!(size_of::<OBJECT_ATTRIBUTES>() == 0x30);
const _: () = assert!(offset_of!(OBJECT_ATTRIBUTES, RootDirectory) == 0x08);
const _: () = assert!(offset_of!(OBJECT_ATTRIBUTES, ObjectName) == 0x10);
const _: () = assert!(offset_of!(OBJECT_ATTRIBUTES, Attributes) == 0x18);
const _: () = assert!(offset_of!(OBJECT_ATTRIBUTES, SecurityDescriptor) == 0x20);

/// `OBJ_CASE_INSENSITIVE`.
pub const OBJ_CASE_INSENSITIVE: u32 = 0x40;
/// `OBJ_KERNEL_HANDLE`.
pub const OBJ_KERNEL_HANDLE: u32 = 0x200;
/// `KEY_READ`.
pub const KEY_READ: u32 = 0x0002_0019;
/// `KeyValuePartialInformation`.
pub const KEY_VALUE_PARTIAL_INFORMATION_CLASS: u32 = 2;

/// `KEY_VALUE_PARTIAL_INFORMATION` with room for `N` bytes of data.
#[repr(C)]
pub struct KEY_VALUE_PARTIAL_INFORMATION<const N: usize> {
    /// `TitleIndex`.
    pub TitleIndex: u32,
    /// `Type` (`REG_*`).
    pub Type: u32,
    /// `DataLength`.
    pub DataLength: u32,
    /// `Data`.
    pub Data: [u8; N],
}

const _: () = assert!(offset_of!(KEY_VALUE_PARTIAL_INFORMATION<1>, Type) == 0x04);
const _: () = assert!(offset_of!(KEY_VALUE_PARTIAL_INFORMATION<1>, DataLength) == 0x08);
const _: () = assert!(offset_of!(KEY_VALUE_PARTIAL_INFORMATION<1>, Data) == 0x0c);

/// An I/O work item (`IO_WORKITEM`), opaque.
#[repr(C)]
pub struct IO_WORKITEM {
    _opaque: [u8; 0],
}

/// A work item routine (`IO_WORKITEM_ROUTINE`).
pub type WorkItemRoutine = unsafe extern "system" fn(PDEVICE_OBJECT, PVOID);

#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "system" {
    /// Attaches `source` on top of the stack `target` is in; the device it attached to, or
    /// NULL.
    pub fn IoAttachDeviceToDeviceStack(
        source: PDEVICE_OBJECT,
        target: PDEVICE_OBJECT,
    ) -> PDEVICE_OBJECT;
    /// Detaches this driver's device from `target`, the device it attached to.
    pub fn IoDetachDevice(target: PDEVICE_OBJECT);
    /// Sends an IRP to the next driver (what the `IoCallDriver` macro calls).
    pub fn IofCallDriver(device: PDEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS;
    /// Sends a power IRP to the next driver.
    pub fn PoCallDriver(device: PDEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS;
    /// Copies the current stack location down, sends the IRP to `device` and waits for the
    /// drivers below to complete it; FALSE when it could not be sent. PASSIVE_LEVEL.
    pub fn IoForwardIrpSynchronously(device: PDEVICE_OBJECT, irp: *mut IRP) -> u8;
    /// The top of the stack `device` is in, referenced (release with `ObfDereferenceObject`).
    pub fn IoGetAttachedDeviceReference(device: PDEVICE_OBJECT) -> PDEVICE_OBJECT;
    /// An IRP of `major` for `device`, which signals `event` and fills `status` when
    /// completed; NULL without memory. PASSIVE_LEVEL.
    pub fn IoBuildSynchronousFsdRequest(
        major: u32,
        device: PDEVICE_OBJECT,
        buffer: PVOID,
        length: u32,
        offset: *const i64,
        event: *mut KEVENT,
        status: *mut IO_STATUS_BLOCK,
    ) -> *mut IRP;
    /// Sets up an event.
    pub fn KeInitializeEvent(event: *mut KEVENT, kind: u32, signalled: u8);
    /// Signals an event.
    pub fn KeSetEvent(event: *mut KEVENT, increment: i32, wait: u8) -> i32;
    /// Waits for an object (an event here), without a timeout when `timeout` is NULL.
    pub fn KeWaitForSingleObject(
        object: PVOID,
        reason: u32,
        mode: i8,
        alertable: u8,
        timeout: *const i64,
    ) -> NTSTATUS;
    /// Sleeps for `interval` (negative: relative, in 100 ns units). PASSIVE_LEVEL here.
    pub fn KeDelayExecutionThread(mode: i8, alertable: u8, interval: *const i64) -> NTSTATUS;
    /// A work item for `device` (which it keeps referenced while queued), or NULL.
    pub fn IoAllocateWorkItem(device: PDEVICE_OBJECT) -> *mut IO_WORKITEM;
    /// Queues `item` to run `routine(device, context)` in a system thread.
    pub fn IoQueueWorkItem(
        item: *mut IO_WORKITEM,
        routine: WorkItemRoutine,
        queue: u32,
        context: PVOID,
    );
    /// Frees a work item that is not queued.
    pub fn IoFreeWorkItem(item: *mut IO_WORKITEM);
    /// Opens a registry key. PASSIVE_LEVEL.
    pub fn ZwOpenKey(
        key: *mut HANDLE,
        access: u32,
        attributes: *const OBJECT_ATTRIBUTES,
    ) -> NTSTATUS;
    /// Reads a value of an open key. PASSIVE_LEVEL.
    pub fn ZwQueryValueKey(
        key: HANDLE,
        name: *const UNICODE_STRING,
        class: u32,
        information: PVOID,
        length: u32,
        result_length: *mut u32,
    ) -> NTSTATUS;
    /// Allocates pool memory (page aligned from a page up), or NULL.
    pub fn ExAllocatePoolWithTag(pool: u32, bytes: usize, tag: u32) -> PVOID;
    /// Frees what `ExAllocatePoolWithTag` returned with the same tag.
    pub fn ExFreePoolWithTag(memory: PVOID, tag: u32);
}

#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    /// Prints to the kernel debugger, `printf`-style.
    pub fn DbgPrint(format: *const u8, ...) -> u32;
}
