/*
 * VmbusKernelModeClientLibApi.h - TEST STAND-IN for the WDK's KMCL header.
 *
 * Not Microsoft's header, and not for drivers: it exists so that CI, which
 * has no WDK, can prove vmbus-kmcl-sys's WDK mode (tests/wdk_mode.rs):
 *
 *   VMBUS_KMCL_WDK_INCLUDE_DIR=$PWD/vmbus-kmcl-sys/tests/wdk-standin \
 *     cargo test -p vmbus-kmcl-sys --features bindgen --test wdk_mode
 *
 * It differs from the bundled header where the WDK's does, and in one way
 * more, so that the test can tell which header the build read:
 *  - the interface tables embed INTERFACE, KMCL_CLIENT_INTERFACE_V1 and
 *    KMCL_SERVER_ONLY_METHODS as unnamed members (a Microsoft extension:
 *    clang and gcc need -fms-extensions), which bindgen cannot lay out, so
 *    the build's second pass for the tables is exercised;
 *  - the interface GUIDs are *defined* under INITGUID, through a
 *    DEFINE_GUID-style macro, instead of only declared. THE VALUES BELOW ARE
 *    MADE-UP TEST VALUES, spelling "STANDIN" in their last bytes; they are
 *    not the real interface GUIDs, which are not public;
 *  - an extra constant, VMBUS_KMCL_WDK_STANDIN_MARKER, exists only here.
 *
 * Everything else (handles, constants, function types, prototypes, the
 * state-change callback table) is the bundled header's, included below with
 * its interface tables renamed out of the way. The bundled header lives at
 * ../../include relative to this file, in the repository and in the
 * packaged crate alike.
 */
#ifndef VMBUS_KMCL_WDK_STANDIN_H
#define VMBUS_KMCL_WDK_STANDIN_H

/*
 * Rename the bundled header's three tables while it is read: its definitions
 * then declare types outside the bindings' allowlist, and the Microsoft-style
 * definitions below take the real names.
 */
#define _KMCL_CLIENT_INTERFACE_V1 vmbus_standin_bundled_client_table
#define KMCL_CLIENT_INTERFACE_V1 vmbus_standin_bundled_client_table_t
#define PKMCL_CLIENT_INTERFACE_V1 vmbus_standin_bundled_client_table_p
#define _KMCL_SERVER_ONLY_METHODS vmbus_standin_bundled_server_only
#define KMCL_SERVER_ONLY_METHODS vmbus_standin_bundled_server_only_t
#define PKMCL_SERVER_ONLY_METHODS vmbus_standin_bundled_server_only_p
#define _KMCL_SERVER_INTERFACE_V1 vmbus_standin_bundled_server_table
#define KMCL_SERVER_INTERFACE_V1 vmbus_standin_bundled_server_table_t
#define PKMCL_SERVER_INTERFACE_V1 vmbus_standin_bundled_server_table_p

#include "../../include/VmbusKernelModeClientLibApi.h"

#undef _KMCL_CLIENT_INTERFACE_V1
#undef KMCL_CLIENT_INTERFACE_V1
#undef PKMCL_CLIENT_INTERFACE_V1
#undef _KMCL_SERVER_ONLY_METHODS
#undef KMCL_SERVER_ONLY_METHODS
#undef PKMCL_SERVER_ONLY_METHODS
#undef _KMCL_SERVER_INTERFACE_V1
#undef KMCL_SERVER_INTERFACE_V1
#undef PKMCL_SERVER_INTERFACE_V1

#ifdef __cplusplus
extern "C" {
#endif

/** Present only in the WDK-mode stand-in header: proves that the build read it. */
#define VMBUS_KMCL_WDK_STANDIN_MARKER 0x57D1u

/*
 * GUIDs the way the WDK's guiddef.h does them: a declaration normally, a
 * definition in the one translation unit that defines INITGUID first.
 */
#ifndef DEFINE_GUID
#ifdef INITGUID
#define DEFINE_GUID(name, l, w1, w2, b1, b2, b3, b4, b5, b6, b7, b8) \
    const GUID name = { l, w1, w2, { b1, b2, b3, b4, b5, b6, b7, b8 } }
#else
#define DEFINE_GUID(name, l, w1, w2, b1, b2, b3, b4, b5, b6, b7, b8) \
    extern const GUID name
#endif
#endif

/* TEST VALUES ONLY ("STANDIN" + 1 or 2), not the real interface GUIDs. */
DEFINE_GUID(KMCL_CLIENT_INTERFACE_TYPE, 0x7e577e57, 0x0001, 0x57d1,
            0x53, 0x54, 0x41, 0x4e, 0x44, 0x49, 0x4e, 0x01);
DEFINE_GUID(KMCL_SERVER_INTERFACE_TYPE, 0x7e577e57, 0x0002, 0x57d1,
            0x53, 0x54, 0x41, 0x4e, 0x44, 0x49, 0x4e, 0x02);

/* Client table: the interface header is an unnamed member, as in the WDK. */
typedef struct _KMCL_CLIENT_INTERFACE_V1 {
    INTERFACE;
    PFN_VMB_CHANNEL_ALLOCATE VmbChannelAllocate;
    PFN_VMB_CHANNEL_CLEANUP VmbChannelCleanup;
    PFN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER VmbChannelCreateGpadlFromBuffer;
    PFN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL VmbChannelCreateGpadlFromMdl;
    PFN_VMB_CHANNEL_DELETE_GPADL VmbChannelDeleteGpadl;
    PFN_VMB_CHANNEL_DISABLE VmbChannelDisable;
    PFN_VMB_CHANNEL_ENABLE VmbChannelEnable;
    PFN_VMB_CHANNEL_GET_INTERFACE_INSTANCE VmbChannelGetInterfaceInstance;
    PFN_VMB_CHANNEL_GET_MMIO_SPACE VmbChannelGetMmioSpace;
    PFN_VMB_CHANNEL_GET_POINTER VmbChannelGetPointer;
    PFN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE VmbChannelInitSetClientContextSize;
    PFN_VMB_CHANNEL_INIT_SET_FLAGS VmbChannelInitSetFlags;
    PFN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME VmbChannelInitSetFriendlyName;
    PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA VmbChannelInitSetMaximumExternalData;
    PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE VmbChannelInitSetMaximumPacketSize;
    PFN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS VmbChannelInitSetProcessPacketCallbacks;
    PFN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS VmbChannelInitSetStateChangeCallbacks;
    PFN_VMB_CHANNEL_PACKET_COMPLETE VmbChannelPacketComplete;
    PFN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE VmbChannelPacketDeferToPassive;
    PFN_VMB_CHANNEL_PACKET_FAIL VmbChannelPacketFail;
    PFN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA VmbChannelPacketGetExternalData;
    PFN_VMB_CHANNEL_PAUSE VmbChannelPause;
    PFN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST VmbChannelSendSynchronousRequest;
    PFN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE VmbChannelSetIncomingProcessingAtPassive;
    PFN_VMB_CHANNEL_SET_INTERRUPT_LATENCY VmbChannelSetInterruptLatency;
    PFN_VMB_CHANNEL_SET_POINTER VmbChannelSetPointer;
    PFN_VMB_CHANNEL_SET_TRANSACTION_QUOTA VmbChannelSetTransactionQuota;
    PFN_VMB_CHANNEL_SIZEOF_PACKET VmbChannelSizeofPacket;
    PFN_VMB_CHANNEL_START VmbChannelStart;
    PFN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT VmbClientChannelInitSetRingBufferPageCount;
    PFN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP VmbClientChannelInitSetTargetPnp;
    PFN_VMB_PACKET_ALLOCATE VmbPacketAllocate;
    PFN_VMB_PACKET_FREE VmbPacketFree;
    PFN_VMB_PACKET_GET_CHANNEL VmbPacketGetChannel;
    PFN_VMB_PACKET_GET_POINTER VmbPacketGetPointer;
    PFN_VMB_PACKET_INITIALIZE VmbPacketInitialize;
    PFN_VMB_PACKET_SEND VmbPacketSend;
    PFN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL VmbPacketSendWithExternalMdl;
    PFN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS VmbPacketSendWithExternalPfns;
    PFN_VMB_PACKET_SET_COMPLETION_ROUTINE VmbPacketSetCompletionRoutine;
    PFN_VMB_PACKET_SET_POINTER VmbPacketSetPointer;
} KMCL_CLIENT_INTERFACE_V1, *PKMCL_CLIENT_INTERFACE_V1;

/* The server-only functions. */
typedef struct _KMCL_SERVER_ONLY_METHODS {
    PFN_VMB_CHANNEL_MAP_GPADL VmbChannelMapGpadl;
    PFN_VMB_CHANNEL_RESTORE_FROM_BUFFER VmbChannelRestoreFromBuffer;
    PFN_VMB_CHANNEL_SAVE_BEGIN VmbChannelSaveBegin;
    PFN_VMB_CHANNEL_SAVE_CONTINUE VmbChannelSaveContinue;
    PFN_VMB_CHANNEL_SAVE_END VmbChannelSaveEnd;
    PFN_VMB_CHANNEL_UNMAP_GPADL VmbChannelUnmapGpadl;
    PFN_VMB_CONVERT_VMBUS_HANDLE_TO_KERNEL_HANDLE VmbConvertVmbusHandleToKernelHandle;
    PFN_VMB_PACKET_RESTORE VmbPacketRestore;
    PFN_VMB_SERVER_CHANNEL_INIT_SET_FLAGS VmbServerChannelInitSetFlags;
    PFN_VMB_SERVER_CHANNEL_INIT_SET_MMIO_MEGABYTES VmbServerChannelInitSetMmioMegabytes;
    PFN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS VmbServerChannelInitSetSaveRestorePacketCallbacks;
    PFN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_INTERFACE_ID VmbServerChannelInitSetTargetInterfaceId;
    PFN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_VTL VmbServerChannelInitSetTargetVtl;
    PFN_VMB_SERVER_CHANNEL_INIT_SET_VMBUS_HANDLE VmbServerChannelInitSetVmbusHandle;
} KMCL_SERVER_ONLY_METHODS, *PKMCL_SERVER_ONLY_METHODS;

/* Server table: both halves are unnamed members, as in the WDK. */
typedef struct _KMCL_SERVER_INTERFACE_V1 {
    KMCL_CLIENT_INTERFACE_V1;
    KMCL_SERVER_ONLY_METHODS;
} KMCL_SERVER_INTERFACE_V1, *PKMCL_SERVER_INTERFACE_V1;

#ifdef __cplusplus
}
#endif

#endif /* VMBUS_KMCL_WDK_STANDIN_H */
