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

use core::mem::{offset_of, size_of};

use vmbus_kmcl_sys::{NTSTATUS, PDEVICE_OBJECT, PVOID};

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

impl UNICODE_STRING {
    /// A string over a `'static` UTF-16 literal.
    pub const fn of(text: &'static [u16]) -> Self {
        // CAST: driver names are a few dozen characters.
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
/// table.
#[repr(C)]
pub struct DRIVER_OBJECT {
    _head: [u8; 0x68],
    /// `DriverUnload`.
    pub DriverUnload: Option<DriverUnload>,
    /// `MajorFunction`.
    pub MajorFunction: [Option<DriverDispatch>; IRP_MJ_COUNT],
}

const _: () = assert!(size_of::<DRIVER_OBJECT>() == 0x150);
const _: () = assert!(offset_of!(DRIVER_OBJECT, DriverUnload) == 0x68);
const _: () = assert!(offset_of!(DRIVER_OBJECT, MajorFunction) == 0x70);

/// The status block of an IRP (`IO_STATUS_BLOCK`).
#[repr(C)]
pub struct IO_STATUS_BLOCK {
    /// `Status` (a union with a pointer: 8 bytes).
    pub Status: NTSTATUS,
    _pad: u32,
    /// `Information`.
    pub Information: usize,
}

/// An I/O request packet (`IRP`): the system buffer, the status and the current stack location.
#[repr(C)]
pub struct IRP {
    _head: [u8; 0x18],
    /// `AssociatedIrp.SystemBuffer` (METHOD_BUFFERED).
    pub SystemBuffer: PVOID,
    _thread_list: [u8; 0x10],
    /// `IoStatus`.
    pub IoStatus: IO_STATUS_BLOCK,
    _middle: [u8; 0xb8 - 0x40],
    /// `Tail.Overlay.CurrentStackLocation`.
    pub CurrentStackLocation: *mut IO_STACK_LOCATION,
    _tail: [u8; 0x10],
}

const _: () = assert!(size_of::<IRP>() == 0xd0);
const _: () = assert!(offset_of!(IRP, SystemBuffer) == 0x18);
const _: () = assert!(offset_of!(IRP, IoStatus) == 0x30);
const _: () = assert!(offset_of!(IRP, CurrentStackLocation) == 0xb8);

/// An I/O stack location (`IO_STACK_LOCATION`), with the `DeviceIoControl` parameters.
#[repr(C)]
pub struct IO_STACK_LOCATION {
    /// `MajorFunction`.
    pub MajorFunction: u8,
    _minor_flags_control: [u8; 7],
    /// `Parameters.DeviceIoControl.OutputBufferLength`.
    pub OutputBufferLength: u32,
    _pad0: u32,
    /// `Parameters.DeviceIoControl.InputBufferLength` (pointer aligned).
    pub InputBufferLength: u32,
    _pad1: u32,
    /// `Parameters.DeviceIoControl.IoControlCode` (pointer aligned).
    pub IoControlCode: u32,
    _pad2: u32,
    _type3_input: PVOID,
    _tail: [u8; 0x20],
}

const _: () = assert!(size_of::<IO_STACK_LOCATION>() == 0x48);
const _: () = assert!(offset_of!(IO_STACK_LOCATION, OutputBufferLength) == 0x08);
const _: () = assert!(offset_of!(IO_STACK_LOCATION, InputBufferLength) == 0x10);
const _: () = assert!(offset_of!(IO_STACK_LOCATION, IoControlCode) == 0x18);

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
