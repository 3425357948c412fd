//! The Windows kernel base types the KMCL declarations use.
//!
//! Every type has the name, field names and layout it has in the WDK (and in `wdk-sys`), with a
//! fixed width: `ULONG` is `u32` everywhere, never `c_ulong` (64-bit on Linux). So the layouts of
//! 64-bit Windows hold on the host too, and a driver built on wdk-sys needs at most a pointer
//! cast. With the `wdk-sys` feature (Windows targets only) the structures are wdk-sys's own,
//! re-exported for type identity.
#![allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    reason = "the C names of the Windows kernel headers"
)]

use core::ffi::c_void;

/// An NT status code: signed 32 bits, the top two bits giving the severity.
pub type NTSTATUS = i32;
/// The kernel's one-byte boolean: 0 is FALSE, 1 is TRUE.
pub type BOOLEAN = u8;
/// An unsigned 8-bit value.
pub type UCHAR = u8;
/// An unsigned 8-bit value.
pub type UINT8 = u8;
/// An unsigned 16-bit value.
pub type USHORT = u16;
/// An unsigned 16-bit value.
pub type UINT16 = u16;
/// Pointer to a [`UINT16`].
pub type PUINT16 = *mut UINT16;
/// An unsigned 32-bit value.
pub type UINT32 = u32;
/// Pointer to a [`UINT32`].
pub type PUINT32 = *mut UINT32;
/// An unsigned 64-bit value.
pub type UINT64 = u64;
/// An unsigned 32-bit value (`unsigned long` is 32 bits on Windows).
pub type ULONG = u32;
/// Pointer to a [`ULONG`].
pub type PULONG = *mut ULONG;
/// A signed 32-bit value.
pub type LONG = i32;
/// A signed 64-bit value.
pub type LONGLONG = i64;
/// An unsigned integer as wide as a pointer (64 bits on the supported targets).
pub type ULONG_PTR = u64;
/// An untyped pointer.
pub type PVOID = *mut c_void;
/// An object handle.
pub type HANDLE = *mut c_void;
/// Pointer to a [`HANDLE`].
pub type PHANDLE = *mut HANDLE;
/// A UTF-16 code unit.
pub type WCHAR = u16;
/// Pointer to UTF-16 code units.
pub type PWCH = *mut WCHAR;
/// A physical page frame number.
pub type PFN_NUMBER = ULONG_PTR;
/// Pointer to [`PFN_NUMBER`]s.
pub type PPFN_NUMBER = *mut PFN_NUMBER;
/// Pointer to a [`GUID`].
pub type LPGUID = *mut GUID;
/// Pointer to a constant [`GUID`].
pub type LPCGUID = *const GUID;
/// Pointer to a [`UNICODE_STRING`].
pub type PUNICODE_STRING = *mut UNICODE_STRING;
/// Pointer to a constant [`UNICODE_STRING`].
pub type PCUNICODE_STRING = *const UNICODE_STRING;
/// Pointer to an [`MDL`].
pub type PMDL = *mut MDL;
/// Pointer to a [`DEVICE_OBJECT`].
pub type PDEVICE_OBJECT = *mut DEVICE_OBJECT;
/// Pointer to a [`LARGE_INTEGER`].
pub type PLARGE_INTEGER = *mut LARGE_INTEGER;
/// Pointer to an [`INTERFACE`].
pub type PINTERFACE = *mut INTERFACE;
/// Takes a reference on a queried interface (`InterfaceReference` of [`INTERFACE`]).
pub type PINTERFACE_REFERENCE = Option<unsafe extern "C" fn(Context: PVOID)>;
/// Drops a reference on a queried interface (`InterfaceDereference` of [`INTERFACE`]).
pub type PINTERFACE_DEREFERENCE = Option<unsafe extern "C" fn(Context: PVOID)>;

#[cfg(not(all(windows, feature = "wdk-sys")))]
mod structs {
    use super::*;

    /// A 128-bit globally unique identifier, in the Windows field layout.
    #[repr(C)]
    #[derive(Debug, Default, Copy, Clone, PartialEq, Eq, Hash)]
    pub struct GUID {
        /// The first 32 bits.
        pub Data1: ULONG,
        /// The next 16 bits.
        pub Data2: USHORT,
        /// The next 16 bits.
        pub Data3: USHORT,
        /// The last 64 bits, as bytes.
        pub Data4: [UCHAR; 8],
    }

    /// A counted UTF-16 string. `Length` and `MaximumLength` count bytes; no terminator is needed.
    #[repr(C)]
    #[derive(Debug, Copy, Clone)]
    pub struct UNICODE_STRING {
        /// Bytes of text in `Buffer`.
        pub Length: USHORT,
        /// Bytes of storage at `Buffer`.
        pub MaximumLength: USHORT,
        /// The text.
        pub Buffer: PWCH,
    }

    /// A memory descriptor list. KMCL only passes pointers to it, so it is opaque here.
    #[repr(C)]
    pub struct MDL {
        _opaque: [u8; 0],
        _not_send_sync_unpin: core::marker::PhantomData<(*mut u8, core::marker::PhantomPinned)>,
    }

    /// A WDM device object, only ever used through a pointer here.
    #[repr(C)]
    pub struct DEVICE_OBJECT {
        _opaque: [u8; 0],
        _not_send_sync_unpin: core::marker::PhantomData<(*mut u8, core::marker::PhantomPinned)>,
    }

    /// The two halves of a [`LARGE_INTEGER`].
    #[repr(C)]
    #[derive(Debug, Default, Copy, Clone)]
    pub struct LARGE_INTEGER_0 {
        /// The low 32 bits.
        pub LowPart: ULONG,
        /// The high 32 bits, signed.
        pub HighPart: LONG,
    }

    /// A signed 64-bit integer that C can also see as two halves. KMCL uses it for timeouts.
    #[repr(C)]
    #[derive(Copy, Clone)]
    pub union LARGE_INTEGER {
        /// The value as two halves.
        pub u: LARGE_INTEGER_0,
        /// The value.
        pub QuadPart: LONGLONG,
    }

    impl core::fmt::Debug for LARGE_INTEGER {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            // SAFETY: both members are plain integers covering all 8 bytes, so every bit pattern
            // is a valid `LONGLONG`.
            let value = unsafe { self.QuadPart };
            f.debug_struct("LARGE_INTEGER")
                .field("QuadPart", &value)
                .finish()
        }
    }

    /// The header every driver-defined interface (`IRP_MN_QUERY_INTERFACE`) starts with.
    #[repr(C)]
    #[derive(Debug, Copy, Clone)]
    pub struct INTERFACE {
        /// Size of the whole interface structure in bytes.
        pub Size: USHORT,
        /// Version of the interface.
        pub Version: USHORT,
        /// The exporter's context, passed to the two routines below.
        pub Context: PVOID,
        /// Takes a reference on the interface.
        pub InterfaceReference: PINTERFACE_REFERENCE,
        /// Drops a reference; the importer calls it once it stops using the interface.
        pub InterfaceDereference: PINTERFACE_DEREFERENCE,
    }

    impl Default for INTERFACE {
        fn default() -> Self {
            Self {
                Size: 0,
                Version: 0,
                Context: core::ptr::null_mut(),
                InterfaceReference: None,
                InterfaceDereference: None,
            }
        }
    }
}

#[cfg(all(windows, feature = "wdk-sys"))]
mod structs {
    pub use wdk_sys::{DEVICE_OBJECT, GUID, INTERFACE, LARGE_INTEGER, MDL, UNICODE_STRING};
}

pub use structs::*;

// Layout truth: the sizes and offsets of 64-bit Windows, on every target this crate builds for.
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<GUID>() == 16 && align_of::<GUID>() == 4);
    assert!(offset_of!(GUID, Data1) == 0);
    assert!(offset_of!(GUID, Data2) == 4);
    assert!(offset_of!(GUID, Data3) == 6);
    assert!(offset_of!(GUID, Data4) == 8);
    assert!(size_of::<UNICODE_STRING>() == 16 && align_of::<UNICODE_STRING>() == 8);
    assert!(offset_of!(UNICODE_STRING, Length) == 0);
    assert!(offset_of!(UNICODE_STRING, MaximumLength) == 2);
    assert!(offset_of!(UNICODE_STRING, Buffer) == 8);
    assert!(size_of::<LARGE_INTEGER>() == 8 && align_of::<LARGE_INTEGER>() == 8);
    assert!(size_of::<INTERFACE>() == 32 && align_of::<INTERFACE>() == 8);
    assert!(offset_of!(INTERFACE, Size) == 0);
    assert!(offset_of!(INTERFACE, Version) == 2);
    assert!(offset_of!(INTERFACE, Context) == 8);
    assert!(offset_of!(INTERFACE, InterfaceReference) == 16);
    assert!(offset_of!(INTERFACE, InterfaceDereference) == 24);
    assert!(size_of::<PFN_NUMBER>() == 8);
    assert!(size_of::<HANDLE>() == 8);
};
