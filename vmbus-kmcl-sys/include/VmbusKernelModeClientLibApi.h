/*
 * VmbusKernelModeClientLibApi.h - clean-room declarations of the Hyper-V
 * VMBus Kernel Mode Client Library (KMCL), bundled with vmbus-kmcl-sys.
 *
 * This is NOT Microsoft's header. It was written for vmbus-kmcl-sys from the
 * publicly documented facts of the API (names, types, parameter order and
 * constant values); every comment is original. It lets the Rust bindings be
 * generated on machines without the Windows Driver Kit. When a WDK is on the
 * include path ahead of this directory, <VmbusKernelModeClientLibApi.h>
 * resolves to Microsoft's header instead.
 *
 * Differences from Microsoft's header, on purpose:
 *  - the interface tables name their embedded members (InterfaceHeader,
 *    ClientMethods, ServerMethods) instead of using unnamed members, so that
 *    bindgen can lay them out; the memory layout is unchanged;
 *  - the interface GUIDs are only declared: their values are not public.
 *
 * Requires the base types (NTSTATUS, GUID, MDL, ...) to be declared first.
 */
#ifndef VMBUS_KMCL_CLEAN_ROOM_API_H
#define VMBUS_KMCL_CLEAN_ROOM_API_H

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Handles                                                                   */
/* ------------------------------------------------------------------------ */

/** Opaque handle of a VMBus channel object, server or client endpoint. */
typedef struct VMBCHANNEL__ {
    /** Never read: the handle is opaque. */
    int unused;
} *VMBCHANNEL;

/** Opaque handle of an outgoing packet object owned by the sender. */
typedef struct VMBPACKET__ {
    /** Never read: the handle is opaque. */
    int unused;
} *VMBPACKET;

/** Opaque handle naming one incoming packet from its delivery until it is completed. */
typedef struct VMBPACKETCOMPLETION__ {
    /** Never read: the handle is opaque. */
    int unused;
} *VMBPACKETCOMPLETION;

/* ------------------------------------------------------------------------ */
/* Constants                                                                 */
/* ------------------------------------------------------------------------ */

/** Send flag: keep the transaction open until the peer sends a completion packet back. */
#define VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION 0x1
/** Send flag: take `MdlLength` literally, even past the MDL's byte count up to the next page boundary; only the first MDL of a chain is used. */
#define VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH 0x2
/** Send flag: the inline buffer is pageable, so KMCL copies it before running at DISPATCH_LEVEL. */
#define VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER 0x4
/** Mask of every valid send flag. */
#define VMBUS_CHANNEL_FORMAT_FLAGS 0x7

/** GPADL flag: the memory is meant read-only for the server (a hint for snapshots and migration, not a protection). */
#define VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY 0x1
/** Mask of every valid GPADL flag. */
#define VMBUS_CHANNEL_GPADL_FLAGS 0x1

/** Channel init flag (either endpoint): run the channel as a pipe, with VMBus doing the framing. */
#define VMBUS_CHANNEL_INIT_FLAG_IS_PIPE 0x1
/** Mask of every valid channel init flag. */
#define VMBUS_CHANNEL_INIT_FLAGS 0x1

/** Server init flag: loopback offer (its meaning is not publicly described). */
#define VMBUS_SERVER_CHANNEL_INIT_FLAG_LOOPBACK_OFFER 0x1
/** Server init flag: have the guest publish a device interface named by the channel type GUID. */
#define VMBUS_SERVER_CHANNEL_INIT_FLAG_ENUMERATE_DEVICE_INTERFACE 0x2
/** Server init flag: offer the channel in pipe mode. */
#define VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE 0x4
/** Server init flag: after a VM restore, offer a fresh channel rather than reviving the old one. */
#define VMBUS_SERVER_CHANNEL_INIT_FLAG_FORCE_NEW_CHANNEL 0x8
/** Server init flag: the channel provides a socket interface. */
#define VMBUS_SERVER_CHANNEL_INIT_FLAG_TLNPI_PROVIDER_OFFER 0x10
/** Mask of every valid server init flag. */
#define VMBUS_SERVER_CHANNEL_INIT_FLAGS 0x1F

/** Process-packet flag: the delivered packet refers to external data, see `VmbChannelPacketGetExternalData`. */
#define VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA 0x1
/** Mask of every valid process-packet flag. */
#define VMBUS_CHANNEL_PROCESS_PACKET_FLAGS 0x1

/** External-data flag: map the external data read-only. */
#define VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY 0x1
/** Mask of every valid external-data flag. */
#define VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS 0x1

/** Largest number of extra bytes a channel offer can carry (no V1 function takes offer data). */
#define VMBUS_SERVER_CHANNEL_INIT_MAXIMUM_OFFER_DATA 120

/** Version of `KMCL_CLIENT_INTERFACE_V1` to pass when querying the interface (the documentation does not print it; 1 is the value the V1 suffix implies). */
#define KMCL_CLIENT_INTERFACE_VERSION_V1 1
/** Version of `KMCL_SERVER_INTERFACE_V1` to pass when querying the interface (the documentation does not print it; 1 is the value the V1 suffix implies). */
#define KMCL_SERVER_INTERFACE_VERSION_V1 1

/* ------------------------------------------------------------------------ */
/* Callback types                                                            */
/* ------------------------------------------------------------------------ */

/**
 * Called at PASSIVE_LEVEL when the channel opens: on the guest when it opens the offer, on the host when
 * the guest opens what it offered. GPADLs may be created from here on. A failure status rolls the
 * channel back to a state without traffic.
 */
typedef NTSTATUS EVT_VMB_CHANNEL_OPENED(VMBCHANNEL Channel);
/** Pointer to an `EVT_VMB_CHANNEL_OPENED` callback. */
typedef EVT_VMB_CHANNEL_OPENED *PFN_VMB_CHANNEL_OPENED;

/**
 * Called at PASSIVE_LEVEL when an open channel closes, by a local `VmbChannelDisable` or because the peer
 * closed or rescinded it. Every GPADL of the channel must be deleted before it returns.
 */
typedef VOID EVT_VMB_CHANNEL_CLOSED(VMBCHANNEL Channel);
/** Pointer to an `EVT_VMB_CHANNEL_CLOSED` callback. */
typedef EVT_VMB_CHANNEL_CLOSED *PFN_VMB_CHANNEL_CLOSED;

/**
 * Called at PASSIVE_LEVEL when a running channel stops delivering (pause, disable, or the peer going
 * away). No packet callback runs from now until the next start; the driver must complete every incoming
 * packet it still holds and stop sending.
 */
typedef VOID EVT_VMB_CHANNEL_SUSPEND(VMBCHANNEL Channel);
/** Pointer to an `EVT_VMB_CHANNEL_SUSPEND` callback. */
typedef EVT_VMB_CHANNEL_SUSPEND *PFN_VMB_CHANNEL_SUSPEND;

/**
 * Called at PASSIVE_LEVEL when flow starts on an open channel, before the incoming queue is switched on.
 * It may queue sends but must not wait for replies.
 */
typedef VOID EVT_VMB_CHANNEL_STARTED(VMBCHANNEL Channel);
/** Pointer to an `EVT_VMB_CHANNEL_STARTED` callback. */
typedef EVT_VMB_CHANNEL_STARTED *PFN_VMB_CHANNEL_STARTED;

/**
 * Called at PASSIVE_LEVEL after the incoming queue has been switched on; the place for synchronous
 * requests such as version negotiation.
 */
typedef VOID EVT_VMB_CHANNEL_POST_STARTED(VMBCHANNEL Channel);
/** Pointer to an `EVT_VMB_CHANNEL_POST_STARTED` callback. */
typedef EVT_VMB_CHANNEL_POST_STARTED *PFN_VMB_CHANNEL_POST_STARTED;

/**
 * Called at or below DISPATCH_LEVEL once per packet taken from the incoming ring. `Buffer` and
 * `BufferLength` describe the payload; `Flags` holds `VMBUS_CHANNEL_PROCESS_PACKET_FLAG_*` bits. The
 * packet must eventually be completed with `VmbChannelPacketComplete`.
 */
typedef VOID EVT_VMB_CHANNEL_PROCESS_PACKET(
    VMBCHANNEL Channel,
    VMBPACKETCOMPLETION Packet,
    PVOID Buffer,
    UINT32 BufferLength,
    UINT32 Flags);
/** Pointer to an `EVT_VMB_CHANNEL_PROCESS_PACKET` callback. */
typedef EVT_VMB_CHANNEL_PROCESS_PACKET *PFN_VMB_CHANNEL_PROCESS_PACKET;

/** Called at or below DISPATCH_LEVEL after a batch of `PacketsProcessed` packet callbacks. */
typedef VOID EVT_VMB_CHANNEL_PROCESSING_COMPLETE(VMBCHANNEL Channel, UINT32 PacketsProcessed);
/** Pointer to an `EVT_VMB_CHANNEL_PROCESSING_COMPLETE` callback. */
typedef EVT_VMB_CHANNEL_PROCESSING_COMPLETE *PFN_VMB_CHANNEL_PROCESSING_COMPLETE;

/**
 * Server, PASSIVE_LEVEL: saves the driver's own state of one in-use packet during a channel save. The
 * first call passes `SaveBufSize` 0; a driver with state fails it and reports the size it needs in
 * `*BytesNeeded`, and is then called again with a buffer that large.
 */
typedef NTSTATUS EVT_VMB_CHANNEL_SAVE_PACKET(
    VMBCHANNEL Channel,
    VMBPACKET Packet,
    PVOID SaveBuf,
    UINT32 SaveBufSize,
    PUINT32 BytesNeeded);
/** Pointer to an `EVT_VMB_CHANNEL_SAVE_PACKET` callback. */
typedef EVT_VMB_CHANNEL_SAVE_PACKET *PFN_VMB_CHANNEL_SAVE_PACKET;

/**
 * Server, PASSIVE_LEVEL: restores one saved in-flight packet. The driver allocates a packet, hands
 * `LibBuf` to `VmbPacketRestore` and rebuilds its own state from `SaveBuf`.
 */
typedef NTSTATUS EVT_VMB_CHANNEL_RESTORE_PACKET(
    VMBCHANNEL Channel,
    PVOID LibBuf,
    UINT32 LibBufSize,
    PVOID SaveBuf,
    UINT32 SaveBufSize);
/** Pointer to an `EVT_VMB_CHANNEL_RESTORE_PACKET` callback. */
typedef EVT_VMB_CHANNEL_RESTORE_PACKET *PFN_VMB_CHANNEL_RESTORE_PACKET;

/**
 * Called at or below DISPATCH_LEVEL when the transaction of a sent packet is over: the peer completed it
 * (with `Buffer`, possibly NULL, holding its completion data) or, without WAIT_FOR_COMPLETION, the
 * message reached the ring. The packet may be freed or reused afterwards.
 */
typedef VOID EVT_VMB_PACKET_COMPLETION_ROUTINE(
    VMBPACKET Packet,
    NTSTATUS Status,
    PVOID Buffer,
    UINT32 BufferLength);
/** Pointer to an `EVT_VMB_PACKET_COMPLETION_ROUTINE` callback. */
typedef EVT_VMB_PACKET_COMPLETION_ROUTINE *PFN_VMB_PACKET_COMPLETION_ROUTINE;

/** Client, PASSIVE_LEVEL: connecting to the target PnP device failed later with `FailureStatus`. */
typedef VOID EVT_VMB_CHANNEL_PNP_FAILURE(VMBCHANNEL Channel, NTSTATUS FailureStatus);
/** Pointer to an `EVT_VMB_CHANNEL_PNP_FAILURE` callback. */
typedef EVT_VMB_CHANNEL_PNP_FAILURE *PFN_VMB_CHANNEL_PNP_FAILURE;

/* ------------------------------------------------------------------------ */
/* State-change callback table                                               */
/* ------------------------------------------------------------------------ */

/**
 * The five state-change callbacks of a channel, registered with `VmbChannelInitSetStateChangeCallbacks`.
 * `Version` must be 1 and `Size` the size of this structure; every callback may be NULL.
 */
typedef struct _VMB_CHANNEL_STATE_CHANGE_CALLBACKS {
    /** Structure version; must be 1. */
    ULONG Version;
    /** Size of the structure in bytes (48 on 64-bit targets). */
    ULONG Size;
    /** The channel opened. */
    PFN_VMB_CHANNEL_OPENED EvtChannelOpened;
    /** The channel closed. */
    PFN_VMB_CHANNEL_CLOSED EvtChannelClosed;
    /** Delivery stopped. */
    PFN_VMB_CHANNEL_SUSPEND EvtChannelSuspend;
    /** Flow is starting; the incoming queue is still off. */
    PFN_VMB_CHANNEL_STARTED EvtChannelStarted;
    /** The incoming queue is on. */
    PFN_VMB_CHANNEL_POST_STARTED EvtChannelPostStarted;
} VMB_CHANNEL_STATE_CHANGE_CALLBACKS, *PVMB_CHANNEL_STATE_CHANGE_CALLBACKS;

/** Prepares a callback table: zeroes it, then sets `Version` to 1 and `Size` to its size. */
static inline VOID VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT(PVMB_CHANNEL_STATE_CHANGE_CALLBACKS Callbacks)
{
    unsigned char *Bytes = (unsigned char *)Callbacks;
    unsigned int Index;
    for (Index = 0; Index < sizeof(*Callbacks); Index += 1) {
        Bytes[Index] = 0;
    }
    Callbacks->Version = 1;
    Callbacks->Size = sizeof(*Callbacks);
}

/* ------------------------------------------------------------------------ */
/* Functions usable by both endpoints (the client interface)                 */
/* ------------------------------------------------------------------------ */

/** Function type of `VmbChannelAllocate`. */
typedef NTSTATUS FN_VMB_CHANNEL_ALLOCATE(PDEVICE_OBJECT ParentDeviceObject, BOOLEAN IsServer, VMBCHANNEL *Channel);
/** Pointer to an `FN_VMB_CHANNEL_ALLOCATE` function. */
typedef FN_VMB_CHANNEL_ALLOCATE *PFN_VMB_CHANNEL_ALLOCATE;
/**
 * Creates a disabled channel object with default settings, a server endpoint when `IsServer` is TRUE,
 * for the WDM device object `ParentDeviceObject`. Configure it with the init setters, then enable it;
 * release it with `VmbChannelCleanup`. PASSIVE_LEVEL.
 */
FN_VMB_CHANNEL_ALLOCATE VmbChannelAllocate;

/** Function type of `VmbChannelCleanup`. */
typedef VOID FN_VMB_CHANNEL_CLEANUP(VMBCHANNEL Channel);
/** Pointer to an `FN_VMB_CHANNEL_CLEANUP` function. */
typedef FN_VMB_CHANNEL_CLEANUP *PFN_VMB_CHANNEL_CLEANUP;
/** Destroys a disabled channel and frees its memory; the handle is dead afterwards. */
FN_VMB_CHANNEL_CLEANUP VmbChannelCleanup;

/** Function type of `VmbChannelCreateGpadlFromBuffer`. */
typedef NTSTATUS FN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER(
    VMBCHANNEL Channel,
    UINT32 Flags,
    PVOID Buffer,
    UINT32 ByteCount,
    PUINT32 GpadlHandle);
/** Pointer to an `FN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER` function. */
typedef FN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER *PFN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER;
/**
 * Client: describes `ByteCount` bytes at `Buffer` to the peer as a GPADL, locking the pages until the
 * GPADL is deleted, and returns its number in `*GpadlHandle` once the server acknowledged it. `Flags`
 * is 0 or `VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY`.
 */
FN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER VmbChannelCreateGpadlFromBuffer;

/** Function type of `VmbChannelCreateGpadlFromMdl`. */
typedef NTSTATUS FN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL(
    VMBCHANNEL Channel,
    UINT32 Flags,
    PMDL Mdl,
    UINT32 StartOffsetWithinMdl,
    UINT32 DataLengthWithinMdl,
    PUINT32 GpadlHandle);
/** Pointer to an `FN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL` function. */
typedef FN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL *PFN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL;
/**
 * Client: like `VmbChannelCreateGpadlFromBuffer` for memory described by an MDL chain, starting
 * `StartOffsetWithinMdl` bytes in, `DataLengthWithinMdl` bytes long (0 means to the end).
 */
FN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL VmbChannelCreateGpadlFromMdl;

/** Function type of `VmbChannelDeleteGpadl`. */
typedef VOID FN_VMB_CHANNEL_DELETE_GPADL(VMBCHANNEL Channel, UINT32 GpadlHandle);
/** Pointer to an `FN_VMB_CHANNEL_DELETE_GPADL` function. */
typedef FN_VMB_CHANNEL_DELETE_GPADL *PFN_VMB_CHANNEL_DELETE_GPADL;
/** Client: destroys a GPADL, waiting while the server still has it mapped. */
FN_VMB_CHANNEL_DELETE_GPADL VmbChannelDeleteGpadl;

/** Function type of `VmbChannelDisable`. */
typedef VOID FN_VMB_CHANNEL_DISABLE(VMBCHANNEL Channel);
/** Pointer to an `FN_VMB_CHANNEL_DISABLE` function. */
typedef FN_VMB_CHANNEL_DISABLE *PFN_VMB_CHANNEL_DISABLE;
/**
 * Closes (client) or rescinds (server) the channel and waits until it is suspended and closed; it is
 * disabled afterwards.
 */
FN_VMB_CHANNEL_DISABLE VmbChannelDisable;

/** Function type of `VmbChannelEnable`. */
typedef NTSTATUS FN_VMB_CHANNEL_ENABLE(VMBCHANNEL Channel);
/** Pointer to an `FN_VMB_CHANNEL_ENABLE` function. */
typedef FN_VMB_CHANNEL_ENABLE *PFN_VMB_CHANNEL_ENABLE;
/**
 * Connects a configured channel to VMBus: the server offers it, the client opens a matching offer or
 * waits for one. Returns without waiting for the peer. The result must be checked.
 */
FN_VMB_CHANNEL_ENABLE VmbChannelEnable;

/** Function type of `VmbChannelGetInterfaceInstance`. */
typedef VOID FN_VMB_CHANNEL_GET_INTERFACE_INSTANCE(VMBCHANNEL Channel, LPGUID InterfaceInstance);
/** Pointer to an `FN_VMB_CHANNEL_GET_INTERFACE_INSTANCE` function. */
typedef FN_VMB_CHANNEL_GET_INTERFACE_INSTANCE *PFN_VMB_CHANNEL_GET_INTERFACE_INSTANCE;
/** Writes the channel's interface instance GUID to `*InterfaceInstance`. */
FN_VMB_CHANNEL_GET_INTERFACE_INSTANCE VmbChannelGetInterfaceInstance;

/** Function type of `VmbChannelGetMmioSpace`. */
typedef VOID FN_VMB_CHANNEL_GET_MMIO_SPACE(VMBCHANNEL Channel, UINT64 *MmioAddress, UINT64 *MmioSize);
/** Pointer to an `FN_VMB_CHANNEL_GET_MMIO_SPACE` function. */
typedef FN_VMB_CHANNEL_GET_MMIO_SPACE *PFN_VMB_CHANNEL_GET_MMIO_SPACE;
/**
 * Reports the address and size of the MMIO range the server reserved for the device. Valid once the
 * channel has opened.
 */
FN_VMB_CHANNEL_GET_MMIO_SPACE VmbChannelGetMmioSpace;

/** Function type of `VmbChannelGetPointer`. */
typedef PVOID FASTCALL FN_VMB_CHANNEL_GET_POINTER(VMBCHANNEL Channel);
/** Pointer to an `FN_VMB_CHANNEL_GET_POINTER` function. */
typedef FN_VMB_CHANNEL_GET_POINTER *PFN_VMB_CHANNEL_GET_POINTER;
/** Returns the driver pointer stored with `VmbChannelSetPointer`. */
FN_VMB_CHANNEL_GET_POINTER VmbChannelGetPointer;

/** Function type of `VmbChannelInitSetClientContextSize`. */
typedef NTSTATUS FN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE(VMBCHANNEL Channel, UINT32 ContextSize);
/** Pointer to an `FN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE` function. */
typedef FN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE *PFN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE;
/** Init setter: reserves `ContextSize` bytes of driver context with each incoming packet. */
FN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE VmbChannelInitSetClientContextSize;

/** Function type of `VmbChannelInitSetFlags`. */
typedef NTSTATUS FN_VMB_CHANNEL_INIT_SET_FLAGS(VMBCHANNEL Channel, UINT32 Flags);
/** Pointer to an `FN_VMB_CHANNEL_INIT_SET_FLAGS` function. */
typedef FN_VMB_CHANNEL_INIT_SET_FLAGS *PFN_VMB_CHANNEL_INIT_SET_FLAGS;
/**
 * Init setter: sets `VMBUS_CHANNEL_INIT_FLAG_*` options. Fails with STATUS_INVALID_PARAMETER_1 for a bad
 * channel or state and STATUS_INVALID_PARAMETER_2 for unknown bits.
 */
FN_VMB_CHANNEL_INIT_SET_FLAGS VmbChannelInitSetFlags;

/** Function type of `VmbChannelInitSetFriendlyName`. */
typedef NTSTATUS FN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME(VMBCHANNEL Channel, PCUNICODE_STRING Name);
/** Pointer to an `FN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME` function. */
typedef FN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME *PFN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME;
/** Init setter: a short name for debugging output and performance counters. */
FN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME VmbChannelInitSetFriendlyName;

/** Function type of `VmbChannelInitSetMaximumExternalData`. */
typedef NTSTATUS FN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA(VMBCHANNEL Channel, UINT32 DataSize, UINT32 ChainLength);
/** Pointer to an `FN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA` function. */
typedef FN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA *PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA;
/**
 * Init setter: the largest external data (bytes) and longest MDL chain a packet will carry. Fails with
 * STATUS_INVALID_PARAMETER_2 when `DataSize` is 0 and STATUS_INVALID_PARAMETER_3 when `ChainLength` is 0.
 */
FN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA VmbChannelInitSetMaximumExternalData;

/** Function type of `VmbChannelInitSetMaximumPacketSize`. */
typedef NTSTATUS FN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE(VMBCHANNEL Channel, UINT32 PacketSize);
/** Pointer to an `FN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE` function. */
typedef FN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE *PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE;
/** Init setter: the largest inline payload ever sent. Fails with STATUS_INVALID_PARAMETER_2 for 0. */
FN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE VmbChannelInitSetMaximumPacketSize;

/** Function type of `VmbChannelInitSetProcessPacketCallbacks`. */
typedef NTSTATUS FN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS(
    VMBCHANNEL Channel,
    PFN_VMB_CHANNEL_PROCESS_PACKET ProcessPacketCallback,
    PFN_VMB_CHANNEL_PROCESSING_COMPLETE ProcessingCompleteCallback);
/** Pointer to an `FN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS` function. */
typedef FN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS *PFN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS;
/** Init setter: the per-packet callback and the optional (NULL) end-of-batch callback. */
FN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS VmbChannelInitSetProcessPacketCallbacks;

/** Function type of `VmbChannelInitSetStateChangeCallbacks`. */
typedef NTSTATUS FN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS(
    VMBCHANNEL Channel,
    PVMB_CHANNEL_STATE_CHANGE_CALLBACKS StateChangeCallbacks);
/** Pointer to an `FN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS` function. */
typedef FN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS *PFN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS;
/**
 * Init setter: registers the state-change callbacks. Fails with STATUS_INVALID_PARAMETER_2 when the
 * table's `Version` or `Size` is wrong.
 */
FN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS VmbChannelInitSetStateChangeCallbacks;

/** Function type of `VmbChannelPacketComplete`. */
typedef VOID FN_VMB_CHANNEL_PACKET_COMPLETE(
    VMBPACKETCOMPLETION PacketCompletionContext,
    PVOID PacketCompletionBuffer,
    UINT32 BufSize);
/** Pointer to an `FN_VMB_CHANNEL_PACKET_COMPLETE` function. */
typedef FN_VMB_CHANNEL_PACKET_COMPLETE *PFN_VMB_CHANNEL_PACKET_COMPLETE;
/**
 * Finishes an incoming packet, once per delivery; sends `PacketCompletionBuffer` (may be NULL) back when
 * the sender waits for a completion. The handle is dead afterwards.
 */
FN_VMB_CHANNEL_PACKET_COMPLETE VmbChannelPacketComplete;

/** Function type of `VmbChannelPacketDeferToPassive`. */
typedef VOID FASTCALL FN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE(VMBPACKETCOMPLETION PacketCompletionContext);
/** Pointer to an `FN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE` function. */
typedef FN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE *PFN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE;
/** From inside the packet callback only: redeliver this packet later at PASSIVE_LEVEL. */
FN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE VmbChannelPacketDeferToPassive;

/** Function type of `VmbChannelPacketFail`. */
typedef VOID FASTCALL FN_VMB_CHANNEL_PACKET_FAIL(VMBPACKETCOMPLETION PacketCompletionContext);
/** Pointer to an `FN_VMB_CHANNEL_PACKET_FAIL` function. */
typedef FN_VMB_CHANNEL_PACKET_FAIL *PFN_VMB_CHANNEL_PACKET_FAIL;
/** Rejects a malformed packet during processing; this stops the channel's incoming queue. */
FN_VMB_CHANNEL_PACKET_FAIL VmbChannelPacketFail;

/** Function type of `VmbChannelPacketGetExternalData`. */
typedef NTSTATUS FN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA(
    VMBPACKETCOMPLETION PacketCompletionContext,
    UINT32 Flags,
    PMDL *Mdl);
/** Pointer to an `FN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA` function. */
typedef FN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA *PFN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA;
/**
 * Returns a locked MDL (no virtual mapping) of the packet's external data, valid until the packet is
 * completed. STATUS_PENDING means not ready: return without completing; the packet is delivered again.
 */
FN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA VmbChannelPacketGetExternalData;

/** Function type of `VmbChannelPause`. */
typedef VOID FN_VMB_CHANNEL_PAUSE(VMBCHANNEL Channel);
/** Pointer to an `FN_VMB_CHANNEL_PAUSE` function. */
typedef FN_VMB_CHANNEL_PAUSE *PFN_VMB_CHANNEL_PAUSE;
/**
 * Stops the flow and waits until the suspend callback ran and every incoming packet was completed. On a
 * disabled channel it makes the next enable come up paused. Not from a state-change callback.
 */
FN_VMB_CHANNEL_PAUSE VmbChannelPause;

/** Function type of `VmbChannelSendSynchronousRequest`. */
typedef NTSTATUS FN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST(
    VMBCHANNEL Channel,
    PVOID Buffer,
    UINT32 BufferSize,
    PMDL ExternalDataMdl,
    UINT32 Flags,
    PVOID CompletionBuffer,
    PUINT32 CompletionBufferSize,
    PLARGE_INTEGER Timeout);
/** Pointer to an `FN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST` function. */
typedef FN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST *PFN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST;
/**
 * Sends one packet and waits for its completion. `*CompletionBufferSize` must be a multiple of 8 and
 * receives the bytes written. `Timeout` is in 100 ns units (negative relative, NULL forever, 0 do not
 * queue when the ring is full: STATUS_BUFFER_OVERFLOW). Other results: STATUS_CANCELLED when the timeout
 * expired, STATUS_DEVICE_REMOVED when the channel shuts down.
 */
FN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST VmbChannelSendSynchronousRequest;

/** Function type of `VmbChannelSetIncomingProcessingAtPassive`. */
typedef VOID FN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE(VMBCHANNEL Channel, BOOLEAN RequirePassive);
/** Pointer to an `FN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE` function. */
typedef FN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE *PFN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE;
/** TRUE makes the packet callbacks always run at PASSIVE_LEVEL. */
FN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE VmbChannelSetIncomingProcessingAtPassive;

/** Function type of `VmbChannelSetInterruptLatency`. */
typedef NTSTATUS FN_VMB_CHANNEL_SET_INTERRUPT_LATENCY(VMBCHANNEL Channel, UINT16 Latency, PUINT16 OriginalLatency);
/** Pointer to an `FN_VMB_CHANNEL_SET_INTERRUPT_LATENCY` function. */
typedef FN_VMB_CHANNEL_SET_INTERRUPT_LATENCY *PFN_VMB_CHANNEL_SET_INTERRUPT_LATENCY;
/**
 * Guest: sets the outgoing interrupt latency in 100 ns units and returns the previous value. Valid from
 * the opened callback through the closed callback.
 */
FN_VMB_CHANNEL_SET_INTERRUPT_LATENCY VmbChannelSetInterruptLatency;

/** Function type of `VmbChannelSetPointer`. */
typedef VOID FASTCALL FN_VMB_CHANNEL_SET_POINTER(VMBCHANNEL Channel, PVOID Pointer);
/** Pointer to an `FN_VMB_CHANNEL_SET_POINTER` function. */
typedef FN_VMB_CHANNEL_SET_POINTER *PFN_VMB_CHANNEL_SET_POINTER;
/** Stores one opaque driver pointer in the channel. */
FN_VMB_CHANNEL_SET_POINTER VmbChannelSetPointer;

/** Function type of `VmbChannelSetTransactionQuota`. */
typedef VOID FN_VMB_CHANNEL_SET_TRANSACTION_QUOTA(VMBCHANNEL Channel, UINT32 Quota);
/** Pointer to an `FN_VMB_CHANNEL_SET_TRANSACTION_QUOTA` function. */
typedef FN_VMB_CHANNEL_SET_TRANSACTION_QUOTA *PFN_VMB_CHANNEL_SET_TRANSACTION_QUOTA;
/** Caps the number of delivered but not yet completed incoming packets (must be greater than 0). */
FN_VMB_CHANNEL_SET_TRANSACTION_QUOTA VmbChannelSetTransactionQuota;

/** Function type of `VmbChannelSizeofPacket`. */
typedef UINT32 FN_VMB_CHANNEL_SIZEOF_PACKET(VMBCHANNEL Channel);
/** Pointer to an `FN_VMB_CHANNEL_SIZEOF_PACKET` function. */
typedef FN_VMB_CHANNEL_SIZEOF_PACKET *PFN_VMB_CHANNEL_SIZEOF_PACKET;
/** Bytes of caller memory that `VmbPacketInitialize` needs on this channel. */
FN_VMB_CHANNEL_SIZEOF_PACKET VmbChannelSizeofPacket;

/** Function type of `VmbChannelStart`. */
typedef VOID FN_VMB_CHANNEL_START(VMBCHANNEL Channel);
/** Pointer to an `FN_VMB_CHANNEL_START` function. */
typedef FN_VMB_CHANNEL_START *PFN_VMB_CHANNEL_START;
/** Takes the channel out of the paused state; the server calls it after enabling. */
FN_VMB_CHANNEL_START VmbChannelStart;

/** Function type of `VmbClientChannelInitSetRingBufferPageCount`. */
typedef NTSTATUS FN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT(
    VMBCHANNEL Channel,
    UINT32 IncomingPageCount,
    UINT32 OutgoingPageCount);
/** Pointer to an `FN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT` function. */
typedef FN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT *PFN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT;
/** Client init setter: the page counts of the incoming and outgoing rings. */
FN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT VmbClientChannelInitSetRingBufferPageCount;

/** Function type of `VmbClientChannelInitSetTargetPnp`. */
typedef NTSTATUS FN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP(
    VMBCHANNEL Channel,
    LPCGUID InterfaceType,
    LPCGUID InterfaceInstance,
    PFN_VMB_CHANNEL_PNP_FAILURE PnpFailureCallback);
/** Pointer to an `FN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP` function. */
typedef FN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP *PFN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP;
/**
 * Client init setter: the offer to open, by type GUID and optional instance GUID (NULL: any), with an
 * optional callback for a later connection failure.
 */
FN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP VmbClientChannelInitSetTargetPnp;

/** Function type of `VmbPacketAllocate`. */
typedef VMBPACKET FN_VMB_PACKET_ALLOCATE(VMBCHANNEL Channel);
/** Pointer to an `FN_VMB_PACKET_ALLOCATE` function. */
typedef FN_VMB_PACKET_ALLOCATE *PFN_VMB_PACKET_ALLOCATE;
/**
 * Takes a packet object with every resource for one transaction reserved, or NULL. Its default
 * completion routine frees it after the send.
 */
FN_VMB_PACKET_ALLOCATE VmbPacketAllocate;

/** Function type of `VmbPacketFree`. */
typedef VOID FN_VMB_PACKET_FREE(VMBPACKET VmbPacket);
/** Pointer to an `FN_VMB_PACKET_FREE` function. */
typedef FN_VMB_PACKET_FREE *PFN_VMB_PACKET_FREE;
/** Returns a packet object from `VmbPacketAllocate`. */
FN_VMB_PACKET_FREE VmbPacketFree;

/** Function type of `VmbPacketGetChannel`. */
typedef VMBCHANNEL FASTCALL FN_VMB_PACKET_GET_CHANNEL(VMBPACKET PacketObject);
/** Pointer to an `FN_VMB_PACKET_GET_CHANNEL` function. */
typedef FN_VMB_PACKET_GET_CHANNEL *PFN_VMB_PACKET_GET_CHANNEL;
/** The channel a packet object belongs to. */
FN_VMB_PACKET_GET_CHANNEL VmbPacketGetChannel;

/** Function type of `VmbPacketGetPointer`. */
typedef PVOID FASTCALL FN_VMB_PACKET_GET_POINTER(VMBPACKET PacketObject);
/** Pointer to an `FN_VMB_PACKET_GET_POINTER` function. */
typedef FN_VMB_PACKET_GET_POINTER *PFN_VMB_PACKET_GET_POINTER;
/** Returns the driver pointer stored with `VmbPacketSetPointer`. */
FN_VMB_PACKET_GET_POINTER VmbPacketGetPointer;

/** Function type of `VmbPacketInitialize`. */
typedef NTSTATUS FN_VMB_PACKET_INITIALIZE(VMBCHANNEL Channel, VMBPACKET VmbPacket, UINT32 ByteCount);
/** Pointer to an `FN_VMB_PACKET_INITIALIZE` function. */
typedef FN_VMB_PACKET_INITIALIZE *PFN_VMB_PACKET_INITIALIZE;
/**
 * Formats `ByteCount` bytes of caller memory as a packet object (at least `VmbChannelSizeofPacket`
 * bytes; STATUS_INVALID_PARAMETER_3 when too small). Set a completion routine before sending it.
 */
FN_VMB_PACKET_INITIALIZE VmbPacketInitialize;

/** Function type of `VmbPacketSend`. */
typedef NTSTATUS FN_VMB_PACKET_SEND(
    VMBPACKET PacketObject,
    PVOID Buffer,
    UINT32 BufferLength,
    PMDL ExternalDataMdl,
    UINT32 Flags);
/** Pointer to an `FN_VMB_PACKET_SEND` function. */
typedef FN_VMB_PACKET_SEND *PFN_VMB_PACKET_SEND;
/**
 * Sends `Buffer` inline plus optional external data (`ExternalDataMdl`, may be NULL), queueing when the
 * ring is full. KMCL keeps the packet object until its completion routine runs.
 */
FN_VMB_PACKET_SEND VmbPacketSend;

/** Function type of `VmbPacketSendWithExternalMdl`. */
typedef NTSTATUS FN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL(
    VMBPACKET PacketObject,
    PVOID Buffer,
    UINT32 BufferLength,
    PMDL ExternalDataMdl,
    UINT32 MdlOffset,
    UINT32 MdlLength,
    UINT32 Flags);
/** Pointer to an `FN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL` function. */
typedef FN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL *PFN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL;
/**
 * Like `VmbPacketSend`, with a window (`MdlOffset`, `MdlLength`, 0 meaning all) of a required MDL;
 * WAIT_FOR_COMPLETION must be set.
 */
FN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL VmbPacketSendWithExternalMdl;

/** Function type of `VmbPacketSendWithExternalPfns`. */
typedef NTSTATUS FN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS(
    VMBPACKET PacketObject,
    PVOID Buffer,
    UINT32 BufferLength,
    PPFN_NUMBER ExternalDataPfns,
    UINT32 PfnLength,
    UINT32 Flags);
/** Pointer to an `FN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS` function. */
typedef FN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS *PFN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS;
/**
 * Like `VmbPacketSend`, with the external data given as `PfnLength` page frame numbers;
 * WAIT_FOR_COMPLETION must be set.
 */
FN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS VmbPacketSendWithExternalPfns;

/** Function type of `VmbPacketSetCompletionRoutine`. */
typedef VOID FN_VMB_PACKET_SET_COMPLETION_ROUTINE(
    VMBPACKET PacketObject,
    PFN_VMB_PACKET_COMPLETION_ROUTINE CompletionRoutine);
/** Pointer to an `FN_VMB_PACKET_SET_COMPLETION_ROUTINE` function. */
typedef FN_VMB_PACKET_SET_COMPLETION_ROUTINE *PFN_VMB_PACKET_SET_COMPLETION_ROUTINE;
/** Installs the packet's completion routine; the driver then frees or reuses the packet itself. */
FN_VMB_PACKET_SET_COMPLETION_ROUTINE VmbPacketSetCompletionRoutine;

/** Function type of `VmbPacketSetPointer`. */
typedef VOID FASTCALL FN_VMB_PACKET_SET_POINTER(VMBPACKET PacketObject, PVOID Pointer);
/** Pointer to an `FN_VMB_PACKET_SET_POINTER` function. */
typedef FN_VMB_PACKET_SET_POINTER *PFN_VMB_PACKET_SET_POINTER;
/** Stores one opaque driver pointer in the packet object. */
FN_VMB_PACKET_SET_POINTER VmbPacketSetPointer;

/* ------------------------------------------------------------------------ */
/* Server-only functions                                                     */
/* ------------------------------------------------------------------------ */

/** Function type of `VmbChannelMapGpadl`. */
typedef NTSTATUS FN_VMB_CHANNEL_MAP_GPADL(VMBCHANNEL Channel, UINT32 Flags, UINT32 GpadlHandle, PMDL *Mdl);
/** Pointer to an `FN_VMB_CHANNEL_MAP_GPADL` function. */
typedef FN_VMB_CHANNEL_MAP_GPADL *PFN_VMB_CHANNEL_MAP_GPADL;
/**
 * Server: maps the guest GPADL `GpadlHandle` and returns a physical-only MDL. Without the read-only flag
 * it fails for a read-only GPADL. One mapping per GPADL; undo with `VmbChannelUnmapGpadl`.
 */
FN_VMB_CHANNEL_MAP_GPADL VmbChannelMapGpadl;

/** Function type of `VmbChannelRestoreFromBuffer`. */
typedef NTSTATUS FN_VMB_CHANNEL_RESTORE_FROM_BUFFER(VMBCHANNEL Channel, PVOID Buffer, ULONG BufferSize);
/** Pointer to an `FN_VMB_CHANNEL_RESTORE_FROM_BUFFER` function. */
typedef FN_VMB_CHANNEL_RESTORE_FROM_BUFFER *PFN_VMB_CHANNEL_RESTORE_FROM_BUFFER;
/**
 * Server: restores channel state from one whole saved chunk. STATUS_MORE_PROCESSING_REQUIRED asks for
 * the next chunk and is not a failure.
 */
FN_VMB_CHANNEL_RESTORE_FROM_BUFFER VmbChannelRestoreFromBuffer;

/** Function type of `VmbChannelSaveBegin`. */
typedef NTSTATUS FN_VMB_CHANNEL_SAVE_BEGIN(VMBCHANNEL Channel);
/** Pointer to an `FN_VMB_CHANNEL_SAVE_BEGIN` function. */
typedef FN_VMB_CHANNEL_SAVE_BEGIN *PFN_VMB_CHANNEL_SAVE_BEGIN;
/** Server: starts a save; follow with `VmbChannelSaveContinue` calls and `VmbChannelSaveEnd`. */
FN_VMB_CHANNEL_SAVE_BEGIN VmbChannelSaveBegin;

/** Function type of `VmbChannelSaveContinue`. */
typedef NTSTATUS FN_VMB_CHANNEL_SAVE_CONTINUE(
    VMBCHANNEL Channel,
    PVOID SaveBuffer,
    ULONG SaveBufferSize,
    PULONG BytesFilled,
    PULONG BytesRequired);
/** Pointer to an `FN_VMB_CHANNEL_SAVE_CONTINUE` function. */
typedef FN_VMB_CHANNEL_SAVE_CONTINUE *PFN_VMB_CHANNEL_SAVE_CONTINUE;
/**
 * Server: writes the next chunk of channel state. STATUS_SUCCESS: last chunk; STATUS_BUFFER_OVERFLOW:
 * `*BytesFilled` bytes written, call again; STATUS_BUFFER_TOO_SMALL: `*BytesRequired` bytes needed.
 */
FN_VMB_CHANNEL_SAVE_CONTINUE VmbChannelSaveContinue;

/** Function type of `VmbChannelSaveEnd`. */
typedef VOID FN_VMB_CHANNEL_SAVE_END(VMBCHANNEL Channel);
/** Pointer to an `FN_VMB_CHANNEL_SAVE_END` function. */
typedef FN_VMB_CHANNEL_SAVE_END *PFN_VMB_CHANNEL_SAVE_END;
/** Server: releases what the save allocated; closes every successful `VmbChannelSaveBegin`. */
FN_VMB_CHANNEL_SAVE_END VmbChannelSaveEnd;

/** Function type of `VmbChannelUnmapGpadl`. */
typedef VOID FN_VMB_CHANNEL_UNMAP_GPADL(VMBCHANNEL Channel, UINT32 GpadlHandle);
/** Pointer to an `FN_VMB_CHANNEL_UNMAP_GPADL` function. */
typedef FN_VMB_CHANNEL_UNMAP_GPADL *PFN_VMB_CHANNEL_UNMAP_GPADL;
/** Server: undoes `VmbChannelMapGpadl`, releasing a client waiting to delete the GPADL. */
FN_VMB_CHANNEL_UNMAP_GPADL VmbChannelUnmapGpadl;

/** Function type of `VmbConvertVmbusHandleToKernelHandle`. */
typedef NTSTATUS FN_VMB_CONVERT_VMBUS_HANDLE_TO_KERNEL_HANDLE(HANDLE VmbusHandle, PHANDLE KernelHandle);
/** Pointer to an `FN_VMB_CONVERT_VMBUS_HANDLE_TO_KERNEL_HANDLE` function. */
typedef FN_VMB_CONVERT_VMBUS_HANDLE_TO_KERNEL_HANDLE *PFN_VMB_CONVERT_VMBUS_HANDLE_TO_KERNEL_HANDLE;
/**
 * Server: turns a user-mode VMBus handle of the VM worker process into a kernel handle the caller owns
 * and closes with ZwClose. Must run in the context of the process that opened the user handle.
 */
FN_VMB_CONVERT_VMBUS_HANDLE_TO_KERNEL_HANDLE VmbConvertVmbusHandleToKernelHandle;

/** Function type of `VmbPacketRestore`. */
typedef NTSTATUS FN_VMB_PACKET_RESTORE(VMBPACKET PacketObject, PVOID Buffer, ULONG BufferSize);
/** Pointer to an `FN_VMB_PACKET_RESTORE` function. */
typedef FN_VMB_PACKET_RESTORE *PFN_VMB_PACKET_RESTORE;
/** Server, from the restore-packet callback: loads KMCL's saved packet state into a fresh packet. */
FN_VMB_PACKET_RESTORE VmbPacketRestore;

/** Function type of `VmbServerChannelInitSetFlags`. */
typedef NTSTATUS FN_VMB_SERVER_CHANNEL_INIT_SET_FLAGS(VMBCHANNEL Channel, UINT32 Flags);
/** Pointer to an `FN_VMB_SERVER_CHANNEL_INIT_SET_FLAGS` function. */
typedef FN_VMB_SERVER_CHANNEL_INIT_SET_FLAGS *PFN_VMB_SERVER_CHANNEL_INIT_SET_FLAGS;
/**
 * Server init setter: `VMBUS_SERVER_CHANNEL_INIT_FLAG_*` options; STATUS_INVALID_PARAMETER_2 for unknown
 * bits.
 */
FN_VMB_SERVER_CHANNEL_INIT_SET_FLAGS VmbServerChannelInitSetFlags;

/** Function type of `VmbServerChannelInitSetMmioMegabytes`. */
typedef NTSTATUS FN_VMB_SERVER_CHANNEL_INIT_SET_MMIO_MEGABYTES(
    VMBCHANNEL Channel,
    UINT16 MmioMegabytes,
    UINT16 MmioMegabytesOptional);
/** Pointer to an `FN_VMB_SERVER_CHANNEL_INIT_SET_MMIO_MEGABYTES` function. */
typedef FN_VMB_SERVER_CHANNEL_INIT_SET_MMIO_MEGABYTES *PFN_VMB_SERVER_CHANNEL_INIT_SET_MMIO_MEGABYTES;
/**
 * Server init setter: guest MMIO space to reserve for the device, required plus optional MiB;
 * STATUS_INVALID_PARAMETER when both are 0.
 */
FN_VMB_SERVER_CHANNEL_INIT_SET_MMIO_MEGABYTES VmbServerChannelInitSetMmioMegabytes;

/** Function type of `VmbServerChannelInitSetSaveRestorePacketCallbacks`. */
typedef NTSTATUS FN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS(
    VMBCHANNEL Channel,
    PFN_VMB_CHANNEL_SAVE_PACKET SavePacketCallback,
    PFN_VMB_CHANNEL_RESTORE_PACKET RestorePacketCallback);
/** Pointer to an `FN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS` function. */
typedef FN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS *PFN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS;
/** Server init setter: the per-packet save and restore callbacks, both required. */
FN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS VmbServerChannelInitSetSaveRestorePacketCallbacks;

/** Function type of `VmbServerChannelInitSetTargetInterfaceId`. */
typedef NTSTATUS FN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_INTERFACE_ID(
    VMBCHANNEL Channel,
    GUID InterfaceType,
    GUID InterfaceInstance);
/** Pointer to an `FN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_INTERFACE_ID` function. */
typedef FN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_INTERFACE_ID *PFN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_INTERFACE_ID;
/** Server init setter: the offer's type and instance GUIDs, both passed by value. */
FN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_INTERFACE_ID VmbServerChannelInitSetTargetInterfaceId;

/** Function type of `VmbServerChannelInitSetTargetVtl`. */
typedef NTSTATUS FN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_VTL(VMBCHANNEL Channel, UINT8 TargetVtl);
/** Pointer to an `FN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_VTL` function. */
typedef FN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_VTL *PFN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_VTL;
/** Server init setter: only clients at Virtual Trust Level `TargetVtl` see the offer. */
FN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_VTL VmbServerChannelInitSetTargetVtl;

/** Function type of `VmbServerChannelInitSetVmbusHandle`. */
typedef NTSTATUS FN_VMB_SERVER_CHANNEL_INIT_SET_VMBUS_HANDLE(VMBCHANNEL Channel, HANDLE VmbusHandle);
/** Pointer to an `FN_VMB_SERVER_CHANNEL_INIT_SET_VMBUS_HANDLE` function. */
typedef FN_VMB_SERVER_CHANNEL_INIT_SET_VMBUS_HANDLE *PFN_VMB_SERVER_CHANNEL_INIT_SET_VMBUS_HANDLE;
/**
 * Server init setter: the kernel handle (from `VmbConvertVmbusHandleToKernelHandle`) of the VMBus
 * instance of the VM that receives the offer. Any thread context.
 */
FN_VMB_SERVER_CHANNEL_INIT_SET_VMBUS_HANDLE VmbServerChannelInitSetVmbusHandle;

/* ------------------------------------------------------------------------ */
/* Interface tables (IRP_MN_QUERY_INTERFACE)                                  */
/* ------------------------------------------------------------------------ */

/** Interface type GUID of `KMCL_CLIENT_INTERFACE_V1`; its value is not public (defined by the WDK). */
extern const GUID KMCL_CLIENT_INTERFACE_TYPE;
/** Interface type GUID of `KMCL_SERVER_INTERFACE_V1`; its value is not public (defined by the WDK). */
extern const GUID KMCL_SERVER_INTERFACE_TYPE;

/** The functions usable by both endpoints, as returned by the KMCL bus interface query. */
typedef struct _KMCL_CLIENT_INTERFACE_V1 {
    /** The standard interface header (size, version, context, reference and dereference). */
    INTERFACE InterfaceHeader;
    /** See `VmbChannelAllocate`. */
    PFN_VMB_CHANNEL_ALLOCATE VmbChannelAllocate;
    /** See `VmbChannelCleanup`. */
    PFN_VMB_CHANNEL_CLEANUP VmbChannelCleanup;
    /** See `VmbChannelCreateGpadlFromBuffer`. */
    PFN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER VmbChannelCreateGpadlFromBuffer;
    /** See `VmbChannelCreateGpadlFromMdl`. */
    PFN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL VmbChannelCreateGpadlFromMdl;
    /** See `VmbChannelDeleteGpadl`. */
    PFN_VMB_CHANNEL_DELETE_GPADL VmbChannelDeleteGpadl;
    /** See `VmbChannelDisable`. */
    PFN_VMB_CHANNEL_DISABLE VmbChannelDisable;
    /** See `VmbChannelEnable`. */
    PFN_VMB_CHANNEL_ENABLE VmbChannelEnable;
    /** See `VmbChannelGetInterfaceInstance`. */
    PFN_VMB_CHANNEL_GET_INTERFACE_INSTANCE VmbChannelGetInterfaceInstance;
    /** See `VmbChannelGetMmioSpace`. */
    PFN_VMB_CHANNEL_GET_MMIO_SPACE VmbChannelGetMmioSpace;
    /** See `VmbChannelGetPointer`. */
    PFN_VMB_CHANNEL_GET_POINTER VmbChannelGetPointer;
    /** See `VmbChannelInitSetClientContextSize`. */
    PFN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE VmbChannelInitSetClientContextSize;
    /** See `VmbChannelInitSetFlags`. */
    PFN_VMB_CHANNEL_INIT_SET_FLAGS VmbChannelInitSetFlags;
    /** See `VmbChannelInitSetFriendlyName`. */
    PFN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME VmbChannelInitSetFriendlyName;
    /** See `VmbChannelInitSetMaximumExternalData`. */
    PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA VmbChannelInitSetMaximumExternalData;
    /** See `VmbChannelInitSetMaximumPacketSize`. */
    PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE VmbChannelInitSetMaximumPacketSize;
    /** See `VmbChannelInitSetProcessPacketCallbacks`. */
    PFN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS VmbChannelInitSetProcessPacketCallbacks;
    /** See `VmbChannelInitSetStateChangeCallbacks`. */
    PFN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS VmbChannelInitSetStateChangeCallbacks;
    /** See `VmbChannelPacketComplete`. */
    PFN_VMB_CHANNEL_PACKET_COMPLETE VmbChannelPacketComplete;
    /** See `VmbChannelPacketDeferToPassive`. */
    PFN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE VmbChannelPacketDeferToPassive;
    /** See `VmbChannelPacketFail`. */
    PFN_VMB_CHANNEL_PACKET_FAIL VmbChannelPacketFail;
    /** See `VmbChannelPacketGetExternalData`. */
    PFN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA VmbChannelPacketGetExternalData;
    /** See `VmbChannelPause`. */
    PFN_VMB_CHANNEL_PAUSE VmbChannelPause;
    /** See `VmbChannelSendSynchronousRequest`. */
    PFN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST VmbChannelSendSynchronousRequest;
    /** See `VmbChannelSetIncomingProcessingAtPassive`. */
    PFN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE VmbChannelSetIncomingProcessingAtPassive;
    /** See `VmbChannelSetInterruptLatency`. */
    PFN_VMB_CHANNEL_SET_INTERRUPT_LATENCY VmbChannelSetInterruptLatency;
    /** See `VmbChannelSetPointer`. */
    PFN_VMB_CHANNEL_SET_POINTER VmbChannelSetPointer;
    /** See `VmbChannelSetTransactionQuota`. */
    PFN_VMB_CHANNEL_SET_TRANSACTION_QUOTA VmbChannelSetTransactionQuota;
    /** See `VmbChannelSizeofPacket`. */
    PFN_VMB_CHANNEL_SIZEOF_PACKET VmbChannelSizeofPacket;
    /** See `VmbChannelStart`. */
    PFN_VMB_CHANNEL_START VmbChannelStart;
    /** See `VmbClientChannelInitSetRingBufferPageCount`. */
    PFN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT VmbClientChannelInitSetRingBufferPageCount;
    /** See `VmbClientChannelInitSetTargetPnp`. */
    PFN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP VmbClientChannelInitSetTargetPnp;
    /** See `VmbPacketAllocate`. */
    PFN_VMB_PACKET_ALLOCATE VmbPacketAllocate;
    /** See `VmbPacketFree`. */
    PFN_VMB_PACKET_FREE VmbPacketFree;
    /** See `VmbPacketGetChannel`. */
    PFN_VMB_PACKET_GET_CHANNEL VmbPacketGetChannel;
    /** See `VmbPacketGetPointer`. */
    PFN_VMB_PACKET_GET_POINTER VmbPacketGetPointer;
    /** See `VmbPacketInitialize`. */
    PFN_VMB_PACKET_INITIALIZE VmbPacketInitialize;
    /** See `VmbPacketSend`. */
    PFN_VMB_PACKET_SEND VmbPacketSend;
    /** See `VmbPacketSendWithExternalMdl`. */
    PFN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL VmbPacketSendWithExternalMdl;
    /** See `VmbPacketSendWithExternalPfns`. */
    PFN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS VmbPacketSendWithExternalPfns;
    /** See `VmbPacketSetCompletionRoutine`. */
    PFN_VMB_PACKET_SET_COMPLETION_ROUTINE VmbPacketSetCompletionRoutine;
    /** See `VmbPacketSetPointer`. */
    PFN_VMB_PACKET_SET_POINTER VmbPacketSetPointer;
} KMCL_CLIENT_INTERFACE_V1, *PKMCL_CLIENT_INTERFACE_V1;

/** The server-only functions, in their documented order. */
typedef struct _KMCL_SERVER_ONLY_METHODS {
    /** See `VmbChannelMapGpadl`. */
    PFN_VMB_CHANNEL_MAP_GPADL VmbChannelMapGpadl;
    /** See `VmbChannelRestoreFromBuffer`. */
    PFN_VMB_CHANNEL_RESTORE_FROM_BUFFER VmbChannelRestoreFromBuffer;
    /** See `VmbChannelSaveBegin`. */
    PFN_VMB_CHANNEL_SAVE_BEGIN VmbChannelSaveBegin;
    /** See `VmbChannelSaveContinue`. */
    PFN_VMB_CHANNEL_SAVE_CONTINUE VmbChannelSaveContinue;
    /** See `VmbChannelSaveEnd`. */
    PFN_VMB_CHANNEL_SAVE_END VmbChannelSaveEnd;
    /** See `VmbChannelUnmapGpadl`. */
    PFN_VMB_CHANNEL_UNMAP_GPADL VmbChannelUnmapGpadl;
    /** See `VmbConvertVmbusHandleToKernelHandle`. */
    PFN_VMB_CONVERT_VMBUS_HANDLE_TO_KERNEL_HANDLE VmbConvertVmbusHandleToKernelHandle;
    /** See `VmbPacketRestore`. */
    PFN_VMB_PACKET_RESTORE VmbPacketRestore;
    /** See `VmbServerChannelInitSetFlags`. */
    PFN_VMB_SERVER_CHANNEL_INIT_SET_FLAGS VmbServerChannelInitSetFlags;
    /** See `VmbServerChannelInitSetMmioMegabytes`. */
    PFN_VMB_SERVER_CHANNEL_INIT_SET_MMIO_MEGABYTES VmbServerChannelInitSetMmioMegabytes;
    /** See `VmbServerChannelInitSetSaveRestorePacketCallbacks`. */
    PFN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS VmbServerChannelInitSetSaveRestorePacketCallbacks;
    /** See `VmbServerChannelInitSetTargetInterfaceId`. */
    PFN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_INTERFACE_ID VmbServerChannelInitSetTargetInterfaceId;
    /** See `VmbServerChannelInitSetTargetVtl`. */
    PFN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_VTL VmbServerChannelInitSetTargetVtl;
    /** See `VmbServerChannelInitSetVmbusHandle`. */
    PFN_VMB_SERVER_CHANNEL_INIT_SET_VMBUS_HANDLE VmbServerChannelInitSetVmbusHandle;
} KMCL_SERVER_ONLY_METHODS, *PKMCL_SERVER_ONLY_METHODS;

/** The whole root-side table: the client functions followed by the server-only ones. */
typedef struct _KMCL_SERVER_INTERFACE_V1 {
    /** The functions both endpoints use, starting with the interface header. */
    KMCL_CLIENT_INTERFACE_V1 ClientMethods;
    /** The functions only the server uses. */
    KMCL_SERVER_ONLY_METHODS ServerMethods;
} KMCL_SERVER_INTERFACE_V1, *PKMCL_SERVER_INTERFACE_V1;

#ifdef __cplusplus
}
#endif

#endif /* VMBUS_KMCL_CLEAN_ROOM_API_H */
