/*
 * kmcl_base_types.h - the few Windows kernel base types that the KMCL header
 * refers to, for hosts that have no WDK.
 *
 * Written for vmbus-kmcl-sys. Every width is fixed so that the layouts equal
 * those of 64-bit Windows (LLP64) whatever the host compiler's `long` is.
 * bindgen does not emit these types: the Rust crate defines them itself in
 * its `base` module with the same names, and when a WDK is used, <wdm.h>
 * provides them instead of this file.
 */
#ifndef VMBUS_KMCL_BASE_TYPES_H
#define VMBUS_KMCL_BASE_TYPES_H

#include <stdint.h>

#if !defined(__LP64__) && !defined(_WIN64)
#error "vmbus-kmcl supports 64-bit targets only (x86_64 and aarch64)"
#endif

/* Calling-convention markers: all the same on 64-bit Windows, so empty. */
#define FASTCALL
#define NTAPI

#define VOID void
typedef int32_t NTSTATUS;
typedef uint8_t BOOLEAN;
typedef uint8_t UCHAR;
typedef uint8_t UINT8;
typedef uint16_t USHORT;
typedef uint16_t UINT16;
typedef uint16_t *PUINT16;
typedef uint32_t UINT32;
typedef uint32_t *PUINT32;
typedef uint64_t UINT64;
typedef uint32_t ULONG;
typedef uint32_t *PULONG;
typedef int32_t LONG;
typedef int64_t LONGLONG;
typedef uint64_t ULONG_PTR;
typedef void *PVOID;
typedef void *HANDLE;
typedef HANDLE *PHANDLE;
typedef uint16_t WCHAR;
typedef WCHAR *PWCH;

/* A 128-bit globally unique identifier. */
typedef struct _GUID {
    ULONG Data1;
    USHORT Data2;
    USHORT Data3;
    UCHAR Data4[8];
} GUID;
typedef GUID *LPGUID;
typedef const GUID *LPCGUID;

/* A counted UTF-16 string; lengths are in bytes. */
typedef struct _UNICODE_STRING {
    USHORT Length;
    USHORT MaximumLength;
    PWCH Buffer;
} UNICODE_STRING;
typedef UNICODE_STRING *PUNICODE_STRING;
typedef const UNICODE_STRING *PCUNICODE_STRING;

/* Kernel objects that KMCL only ever passes by pointer. */
typedef struct _MDL MDL, *PMDL;
typedef struct _DEVICE_OBJECT DEVICE_OBJECT, *PDEVICE_OBJECT;

/* A signed 64-bit value, used by KMCL as a wait timeout. */
typedef union _LARGE_INTEGER {
    struct {
        ULONG LowPart;
        LONG HighPart;
    } u;
    LONGLONG QuadPart;
} LARGE_INTEGER;
typedef LARGE_INTEGER *PLARGE_INTEGER;

/* A physical page frame number. */
typedef ULONG_PTR PFN_NUMBER;
typedef PFN_NUMBER *PPFN_NUMBER;

/* The header that every driver-defined interface (IRP_MN_QUERY_INTERFACE) starts with. */
typedef VOID (*PINTERFACE_REFERENCE)(PVOID Context);
typedef VOID (*PINTERFACE_DEREFERENCE)(PVOID Context);
typedef struct _INTERFACE {
    USHORT Size;
    USHORT Version;
    PVOID Context;
    PINTERFACE_REFERENCE InterfaceReference;
    PINTERFACE_DEREFERENCE InterfaceDereference;
} INTERFACE, *PINTERFACE;

#endif /* VMBUS_KMCL_BASE_TYPES_H */
