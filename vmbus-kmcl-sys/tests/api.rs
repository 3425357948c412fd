//! The generated declarations against the documented KMCL API: every function,
//! callback type, structure and constant, with the C signature spelled out here independently of
//! the header (parameter order and widths, GUIDs by value where documented).

use core::mem::{offset_of, size_of};
use vmbus_kmcl_sys::*;

/// Checks, at compile time, that the direct declaration `$name`, its `FN_` alias and its `PFN_`
/// alias all have exactly the signature written here, and that the interface table `$table` has a
/// field `$name` of type `PFN_`; evaluates to the function's name and the field's offset in the
/// table.
macro_rules! functions {
    ($( $table:ident . $name:ident : $fn_ty:ident, $pfn_ty:ident = fn($($arg:ty),*) $(-> $ret:ty)?; )*) => {{
        // Never instantiated: only type-checked, so no symbol is referenced at link time.
        #[allow(
            dead_code,
            clippy::extra_unused_type_parameters,
            reason = "a compile-time check: generic so that it is never instantiated"
        )]
        fn signatures<T>() {
            $(
                let expected: unsafe extern "C" fn($($arg),*) $(-> $ret)? = $name;
                let _: $fn_ty = Some(expected);
                let _: $pfn_ty = Some(expected);
                let table: table_type!($table) = Default::default();
                let _: $pfn_ty = table.$name;
            )*
        }
        [$( (stringify!($name), stringify!($table), offset_of!(table_type!($table), $name)) ),*]
    }};
}

/// The interface table a slot lives in.
macro_rules! table_type {
    (client) => {
        KMCL_CLIENT_INTERFACE_V1
    };
    (server) => {
        KMCL_SERVER_ONLY_METHODS
    };
}

#[test]
fn every_function_has_its_documented_signature_and_table_slot() {
    let table = functions! {
        client.VmbChannelAllocate: FN_VMB_CHANNEL_ALLOCATE, PFN_VMB_CHANNEL_ALLOCATE = fn(*mut DEVICE_OBJECT, u8, *mut VMBCHANNEL) -> i32;
        client.VmbChannelCleanup: FN_VMB_CHANNEL_CLEANUP, PFN_VMB_CHANNEL_CLEANUP = fn(VMBCHANNEL);
        client.VmbChannelCreateGpadlFromBuffer: FN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER, PFN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER = fn(VMBCHANNEL, u32, *mut core::ffi::c_void, u32, *mut u32) -> i32;
        client.VmbChannelCreateGpadlFromMdl: FN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL, PFN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL = fn(VMBCHANNEL, u32, *mut MDL, u32, u32, *mut u32) -> i32;
        client.VmbChannelDeleteGpadl: FN_VMB_CHANNEL_DELETE_GPADL, PFN_VMB_CHANNEL_DELETE_GPADL = fn(VMBCHANNEL, u32);
        client.VmbChannelDisable: FN_VMB_CHANNEL_DISABLE, PFN_VMB_CHANNEL_DISABLE = fn(VMBCHANNEL);
        client.VmbChannelEnable: FN_VMB_CHANNEL_ENABLE, PFN_VMB_CHANNEL_ENABLE = fn(VMBCHANNEL) -> i32;
        client.VmbChannelGetInterfaceInstance: FN_VMB_CHANNEL_GET_INTERFACE_INSTANCE, PFN_VMB_CHANNEL_GET_INTERFACE_INSTANCE = fn(VMBCHANNEL, *mut GUID);
        client.VmbChannelGetMmioSpace: FN_VMB_CHANNEL_GET_MMIO_SPACE, PFN_VMB_CHANNEL_GET_MMIO_SPACE = fn(VMBCHANNEL, *mut u64, *mut u64);
        client.VmbChannelGetPointer: FN_VMB_CHANNEL_GET_POINTER, PFN_VMB_CHANNEL_GET_POINTER = fn(VMBCHANNEL) -> *mut core::ffi::c_void;
        client.VmbChannelInitSetClientContextSize: FN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE, PFN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE = fn(VMBCHANNEL, u32) -> i32;
        client.VmbChannelInitSetFlags: FN_VMB_CHANNEL_INIT_SET_FLAGS, PFN_VMB_CHANNEL_INIT_SET_FLAGS = fn(VMBCHANNEL, u32) -> i32;
        client.VmbChannelInitSetFriendlyName: FN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME, PFN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME = fn(VMBCHANNEL, *const UNICODE_STRING) -> i32;
        client.VmbChannelInitSetMaximumExternalData: FN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA, PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA = fn(VMBCHANNEL, u32, u32) -> i32;
        client.VmbChannelInitSetMaximumPacketSize: FN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE, PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE = fn(VMBCHANNEL, u32) -> i32;
        client.VmbChannelInitSetProcessPacketCallbacks: FN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS, PFN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS = fn(VMBCHANNEL, PFN_VMB_CHANNEL_PROCESS_PACKET, PFN_VMB_CHANNEL_PROCESSING_COMPLETE) -> i32;
        client.VmbChannelInitSetStateChangeCallbacks: FN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS, PFN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS = fn(VMBCHANNEL, *mut VMB_CHANNEL_STATE_CHANGE_CALLBACKS) -> i32;
        client.VmbChannelPacketComplete: FN_VMB_CHANNEL_PACKET_COMPLETE, PFN_VMB_CHANNEL_PACKET_COMPLETE = fn(VMBPACKETCOMPLETION, *mut core::ffi::c_void, u32);
        client.VmbChannelPacketDeferToPassive: FN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE, PFN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE = fn(VMBPACKETCOMPLETION);
        client.VmbChannelPacketFail: FN_VMB_CHANNEL_PACKET_FAIL, PFN_VMB_CHANNEL_PACKET_FAIL = fn(VMBPACKETCOMPLETION);
        client.VmbChannelPacketGetExternalData: FN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA, PFN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA = fn(VMBPACKETCOMPLETION, u32, *mut *mut MDL) -> i32;
        client.VmbChannelPause: FN_VMB_CHANNEL_PAUSE, PFN_VMB_CHANNEL_PAUSE = fn(VMBCHANNEL);
        client.VmbChannelSendSynchronousRequest: FN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST, PFN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST = fn(VMBCHANNEL, *mut core::ffi::c_void, u32, *mut MDL, u32, *mut core::ffi::c_void, *mut u32, *mut LARGE_INTEGER) -> i32;
        client.VmbChannelSetIncomingProcessingAtPassive: FN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE, PFN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE = fn(VMBCHANNEL, u8);
        client.VmbChannelSetInterruptLatency: FN_VMB_CHANNEL_SET_INTERRUPT_LATENCY, PFN_VMB_CHANNEL_SET_INTERRUPT_LATENCY = fn(VMBCHANNEL, u16, *mut u16) -> i32;
        client.VmbChannelSetPointer: FN_VMB_CHANNEL_SET_POINTER, PFN_VMB_CHANNEL_SET_POINTER = fn(VMBCHANNEL, *mut core::ffi::c_void);
        client.VmbChannelSetTransactionQuota: FN_VMB_CHANNEL_SET_TRANSACTION_QUOTA, PFN_VMB_CHANNEL_SET_TRANSACTION_QUOTA = fn(VMBCHANNEL, u32);
        client.VmbChannelSizeofPacket: FN_VMB_CHANNEL_SIZEOF_PACKET, PFN_VMB_CHANNEL_SIZEOF_PACKET = fn(VMBCHANNEL) -> u32;
        client.VmbChannelStart: FN_VMB_CHANNEL_START, PFN_VMB_CHANNEL_START = fn(VMBCHANNEL);
        client.VmbClientChannelInitSetRingBufferPageCount: FN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT, PFN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT = fn(VMBCHANNEL, u32, u32) -> i32;
        client.VmbClientChannelInitSetTargetPnp: FN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP, PFN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP = fn(VMBCHANNEL, *const GUID, *const GUID, PFN_VMB_CHANNEL_PNP_FAILURE) -> i32;
        client.VmbPacketAllocate: FN_VMB_PACKET_ALLOCATE, PFN_VMB_PACKET_ALLOCATE = fn(VMBCHANNEL) -> VMBPACKET;
        client.VmbPacketFree: FN_VMB_PACKET_FREE, PFN_VMB_PACKET_FREE = fn(VMBPACKET);
        client.VmbPacketGetChannel: FN_VMB_PACKET_GET_CHANNEL, PFN_VMB_PACKET_GET_CHANNEL = fn(VMBPACKET) -> VMBCHANNEL;
        client.VmbPacketGetPointer: FN_VMB_PACKET_GET_POINTER, PFN_VMB_PACKET_GET_POINTER = fn(VMBPACKET) -> *mut core::ffi::c_void;
        client.VmbPacketInitialize: FN_VMB_PACKET_INITIALIZE, PFN_VMB_PACKET_INITIALIZE = fn(VMBCHANNEL, VMBPACKET, u32) -> i32;
        client.VmbPacketSend: FN_VMB_PACKET_SEND, PFN_VMB_PACKET_SEND = fn(VMBPACKET, *mut core::ffi::c_void, u32, *mut MDL, u32) -> i32;
        client.VmbPacketSendWithExternalMdl: FN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL, PFN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL = fn(VMBPACKET, *mut core::ffi::c_void, u32, *mut MDL, u32, u32, u32) -> i32;
        client.VmbPacketSendWithExternalPfns: FN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS, PFN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS = fn(VMBPACKET, *mut core::ffi::c_void, u32, *mut u64, u32, u32) -> i32;
        client.VmbPacketSetCompletionRoutine: FN_VMB_PACKET_SET_COMPLETION_ROUTINE, PFN_VMB_PACKET_SET_COMPLETION_ROUTINE = fn(VMBPACKET, PFN_VMB_PACKET_COMPLETION_ROUTINE);
        client.VmbPacketSetPointer: FN_VMB_PACKET_SET_POINTER, PFN_VMB_PACKET_SET_POINTER = fn(VMBPACKET, *mut core::ffi::c_void);
        server.VmbChannelMapGpadl: FN_VMB_CHANNEL_MAP_GPADL, PFN_VMB_CHANNEL_MAP_GPADL = fn(VMBCHANNEL, u32, u32, *mut *mut MDL) -> i32;
        server.VmbChannelRestoreFromBuffer: FN_VMB_CHANNEL_RESTORE_FROM_BUFFER, PFN_VMB_CHANNEL_RESTORE_FROM_BUFFER = fn(VMBCHANNEL, *mut core::ffi::c_void, u32) -> i32;
        server.VmbChannelSaveBegin: FN_VMB_CHANNEL_SAVE_BEGIN, PFN_VMB_CHANNEL_SAVE_BEGIN = fn(VMBCHANNEL) -> i32;
        server.VmbChannelSaveContinue: FN_VMB_CHANNEL_SAVE_CONTINUE, PFN_VMB_CHANNEL_SAVE_CONTINUE = fn(VMBCHANNEL, *mut core::ffi::c_void, u32, *mut u32, *mut u32) -> i32;
        server.VmbChannelSaveEnd: FN_VMB_CHANNEL_SAVE_END, PFN_VMB_CHANNEL_SAVE_END = fn(VMBCHANNEL);
        server.VmbChannelUnmapGpadl: FN_VMB_CHANNEL_UNMAP_GPADL, PFN_VMB_CHANNEL_UNMAP_GPADL = fn(VMBCHANNEL, u32);
        server.VmbConvertVmbusHandleToKernelHandle: FN_VMB_CONVERT_VMBUS_HANDLE_TO_KERNEL_HANDLE, PFN_VMB_CONVERT_VMBUS_HANDLE_TO_KERNEL_HANDLE = fn(*mut core::ffi::c_void, *mut *mut core::ffi::c_void) -> i32;
        server.VmbPacketRestore: FN_VMB_PACKET_RESTORE, PFN_VMB_PACKET_RESTORE = fn(VMBPACKET, *mut core::ffi::c_void, u32) -> i32;
        server.VmbServerChannelInitSetFlags: FN_VMB_SERVER_CHANNEL_INIT_SET_FLAGS, PFN_VMB_SERVER_CHANNEL_INIT_SET_FLAGS = fn(VMBCHANNEL, u32) -> i32;
        server.VmbServerChannelInitSetMmioMegabytes: FN_VMB_SERVER_CHANNEL_INIT_SET_MMIO_MEGABYTES, PFN_VMB_SERVER_CHANNEL_INIT_SET_MMIO_MEGABYTES = fn(VMBCHANNEL, u16, u16) -> i32;
        server.VmbServerChannelInitSetSaveRestorePacketCallbacks: FN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS, PFN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS = fn(VMBCHANNEL, PFN_VMB_CHANNEL_SAVE_PACKET, PFN_VMB_CHANNEL_RESTORE_PACKET) -> i32;
        server.VmbServerChannelInitSetTargetInterfaceId: FN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_INTERFACE_ID, PFN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_INTERFACE_ID = fn(VMBCHANNEL, GUID, GUID) -> i32;
        server.VmbServerChannelInitSetTargetVtl: FN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_VTL, PFN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_VTL = fn(VMBCHANNEL, u8) -> i32;
        server.VmbServerChannelInitSetVmbusHandle: FN_VMB_SERVER_CHANNEL_INIT_SET_VMBUS_HANDLE, PFN_VMB_SERVER_CHANNEL_INIT_SET_VMBUS_HANDLE = fn(VMBCHANNEL, *mut core::ffi::c_void) -> i32;
    };
    assert_eq!(table.len(), 55, "55 documented functions");
    let client: Vec<_> = table.iter().filter(|(_, t, _)| *t == "client").collect();
    let server: Vec<_> = table.iter().filter(|(_, t, _)| *t == "server").collect();
    assert_eq!((client.len(), server.len()), (41, 14));
    // The documented slots: 41 client pointers after the 32-byte header, in this order; 14
    // server-only pointers from offset 0 of their table.
    for (index, (name, _, offset)) in client.iter().enumerate() {
        assert_eq!(*offset, 32 + 8 * index, "client slot of {name}");
    }
    for (index, (name, _, offset)) in server.iter().enumerate() {
        assert_eq!(*offset, 8 * index, "server-only slot of {name}");
    }
    // The tables are sorted by name, as documented.
    let is_sorted = |rows: &[&(&str, &str, usize)]| rows.windows(2).all(|w| w[0].0 < w[1].0);
    assert!(is_sorted(&client) && is_sorted(&server));
}

/// Checks that each callback's `EVT_` and `PFN_` types have the signature written here.
macro_rules! callbacks {
    ($( $evt:ident, $pfn:ident = fn($($arg:ty),*) $(-> $ret:ty)?; )*) => {{
        $(
            let _: $evt = None::<unsafe extern "C" fn($($arg),*) $(-> $ret)?>;
            let _: $pfn = None::<unsafe extern "C" fn($($arg),*) $(-> $ret)?>;
        )*
        [$(stringify!($evt)),*]
    }};
}

#[test]
fn every_callback_type_has_its_documented_signature() {
    let names = callbacks! {
        EVT_VMB_CHANNEL_OPENED, PFN_VMB_CHANNEL_OPENED = fn(VMBCHANNEL) -> i32;
        EVT_VMB_CHANNEL_CLOSED, PFN_VMB_CHANNEL_CLOSED = fn(VMBCHANNEL);
        EVT_VMB_CHANNEL_SUSPEND, PFN_VMB_CHANNEL_SUSPEND = fn(VMBCHANNEL);
        EVT_VMB_CHANNEL_STARTED, PFN_VMB_CHANNEL_STARTED = fn(VMBCHANNEL);
        EVT_VMB_CHANNEL_POST_STARTED, PFN_VMB_CHANNEL_POST_STARTED = fn(VMBCHANNEL);
        EVT_VMB_CHANNEL_PROCESS_PACKET, PFN_VMB_CHANNEL_PROCESS_PACKET = fn(VMBCHANNEL, VMBPACKETCOMPLETION, *mut core::ffi::c_void, u32, u32);
        EVT_VMB_CHANNEL_PROCESSING_COMPLETE, PFN_VMB_CHANNEL_PROCESSING_COMPLETE = fn(VMBCHANNEL, u32);
        EVT_VMB_CHANNEL_SAVE_PACKET, PFN_VMB_CHANNEL_SAVE_PACKET = fn(VMBCHANNEL, VMBPACKET, *mut core::ffi::c_void, u32, *mut u32) -> i32;
        EVT_VMB_CHANNEL_RESTORE_PACKET, PFN_VMB_CHANNEL_RESTORE_PACKET = fn(VMBCHANNEL, *mut core::ffi::c_void, u32, *mut core::ffi::c_void, u32) -> i32;
        EVT_VMB_PACKET_COMPLETION_ROUTINE, PFN_VMB_PACKET_COMPLETION_ROUTINE = fn(VMBPACKET, i32, *mut core::ffi::c_void, u32);
        EVT_VMB_CHANNEL_PNP_FAILURE, PFN_VMB_CHANNEL_PNP_FAILURE = fn(VMBCHANNEL, i32);
    };
    assert_eq!(names.len(), 11);
}

#[test]
fn every_constant_has_its_documented_value() {
    let constants: [(&str, u32, u32); 19] = [
        (
            "WAIT_FOR_COMPLETION",
            VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
            0x1,
        ),
        (
            "FORCE_MDL_LENGTH",
            VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH,
            0x2,
        ),
        ("PAGED_BUFFER", VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER, 0x4),
        ("FORMAT_FLAGS", VMBUS_CHANNEL_FORMAT_FLAGS, 0x7),
        (
            "GPADL_FLAG_READ_ONLY",
            VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY,
            0x1,
        ),
        ("GPADL_FLAGS", VMBUS_CHANNEL_GPADL_FLAGS, 0x1),
        ("INIT_FLAG_IS_PIPE", VMBUS_CHANNEL_INIT_FLAG_IS_PIPE, 0x1),
        ("INIT_FLAGS", VMBUS_CHANNEL_INIT_FLAGS, 0x1),
        (
            "LOOPBACK_OFFER",
            VMBUS_SERVER_CHANNEL_INIT_FLAG_LOOPBACK_OFFER,
            0x1,
        ),
        (
            "ENUMERATE_DEVICE_INTERFACE",
            VMBUS_SERVER_CHANNEL_INIT_FLAG_ENUMERATE_DEVICE_INTERFACE,
            0x2,
        ),
        (
            "OFFER_AS_PIPE",
            VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE,
            0x4,
        ),
        (
            "FORCE_NEW_CHANNEL",
            VMBUS_SERVER_CHANNEL_INIT_FLAG_FORCE_NEW_CHANNEL,
            0x8,
        ),
        (
            "TLNPI_PROVIDER_OFFER",
            VMBUS_SERVER_CHANNEL_INIT_FLAG_TLNPI_PROVIDER_OFFER,
            0x10,
        ),
        ("SERVER_INIT_FLAGS", VMBUS_SERVER_CHANNEL_INIT_FLAGS, 0x1F),
        (
            "EXTERNAL_DATA",
            VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA,
            0x1,
        ),
        (
            "PROCESS_PACKET_FLAGS",
            VMBUS_CHANNEL_PROCESS_PACKET_FLAGS,
            0x1,
        ),
        (
            "EXTERNAL_DATA_FLAG_READ_ONLY",
            VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY,
            0x1,
        ),
        (
            "EXTERNAL_DATA_FLAGS",
            VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS,
            0x1,
        ),
        (
            "MAXIMUM_OFFER_DATA",
            VMBUS_SERVER_CHANNEL_INIT_MAXIMUM_OFFER_DATA,
            120,
        ),
    ];
    for (name, actual, documented) in constants {
        assert_eq!(actual, documented, "{name}");
    }
    // Each mask is exactly the union of its flag bits.
    assert_eq!(VMBUS_CHANNEL_FORMAT_FLAGS, 0x1 | 0x2 | 0x4);
    assert_eq!(
        VMBUS_SERVER_CHANNEL_INIT_FLAGS,
        0x1 | 0x2 | 0x4 | 0x8 | 0x10
    );
    let _: u16 = KMCL_CLIENT_INTERFACE_VERSION_V1;
    let _: u16 = KMCL_SERVER_INTERFACE_VERSION_V1;
}

#[test]
fn structures_have_the_documented_layout() {
    assert_eq!(size_of::<INTERFACE>(), 32);
    assert_eq!(size_of::<VMB_CHANNEL_STATE_CHANGE_CALLBACKS>(), 48);
    assert_eq!(size_of::<KMCL_CLIENT_INTERFACE_V1>(), 360);
    assert_eq!(size_of::<KMCL_SERVER_ONLY_METHODS>(), 112);
    assert_eq!(size_of::<KMCL_SERVER_INTERFACE_V1>(), 472);
    assert_eq!(offset_of!(KMCL_SERVER_INTERFACE_V1, ServerMethods), 360);
    assert_eq!(offset_of!(KMCL_CLIENT_INTERFACE_V1, InterfaceHeader), 0);
    let callbacks = [
        offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS, Version),
        offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS, Size),
        offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS, EvtChannelOpened),
        offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS, EvtChannelClosed),
        offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS, EvtChannelSuspend),
        offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS, EvtChannelStarted),
        offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS, EvtChannelPostStarted),
    ];
    assert_eq!(callbacks, [0, 4, 8, 16, 24, 32, 40]);
    // Handles are one pointer each.
    assert_eq!(size_of::<VMBCHANNEL>(), 8);
    assert_eq!(size_of::<VMBPACKET>(), 8);
    assert_eq!(size_of::<VMBPACKETCOMPLETION>(), 8);
}

#[test]
fn rust_twin_of_the_init_helper_stamps_version_and_size() {
    let mut table = core::mem::MaybeUninit::<VMB_CHANNEL_STATE_CHANGE_CALLBACKS>::uninit();
    // SAFETY: `table` is valid, aligned storage for one structure.
    unsafe { VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT(table.as_mut_ptr()) };
    // SAFETY: the helper initialised every field.
    let table = unsafe { table.assume_init() };
    assert_eq!((table.Version, table.Size), (1, 48));
    assert!(table.EvtChannelOpened.is_none() && table.EvtChannelPostStarted.is_none());
}
