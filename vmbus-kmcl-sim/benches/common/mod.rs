//! Shared by the sim benches: an open server/client channel pair on one bus, both completing
//! every packet inline with an 8-byte reply, and its teardown.
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "the pair is set up and torn down by sequences of raw KMCL calls whose \
              preconditions are the same: the bus's live devices and the pair's live channels, \
              stated once per block"
)]

use vmbus_kmcl_sim::Bus;
use vmbus_kmcl_sys::*;

/// The interface type and instance both channels of the pair use.
const PAIR_TYPE: GUID = GUID {
    Data1: 0xBE4C,
    Data2: 0,
    Data3: 0,
    Data4: [0; 8],
};

unsafe extern "C" fn complete_inline(
    _ch: VMBCHANNEL,
    pkt: VMBPACKETCOMPLETION,
    _buf: PVOID,
    _len: u32,
    _flags: u32,
) {
    let reply = [0u8; 8];
    // SAFETY: completing the delivered packet once, with a buffer live for the call.
    unsafe { VmbChannelPacketComplete(pkt, reply.as_ptr() as PVOID, 8) };
}

/// Allocates, initializes and enables a server channel on the bus's root device and a client
/// channel on its guest device, then delivers the offer and the open. Returns (server, client).
pub fn open_pair(bus: &Bus) -> (VMBCHANNEL, VMBCHANNEL) {
    let (mut server, mut client) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: plain KMCL calls with the bus's live devices, channels just allocated by the
    // same block, and a callback that matches the KMCL signature.
    unsafe {
        assert_eq!(VmbChannelAllocate(bus.root_device(), 1, &mut server), 0);
        assert_eq!(
            VmbServerChannelInitSetTargetInterfaceId(server, PAIR_TYPE, PAIR_TYPE),
            0
        );
        assert_eq!(
            VmbChannelInitSetProcessPacketCallbacks(server, Some(complete_inline), None),
            0
        );
        assert_eq!(VmbChannelEnable(server), 0);
        VmbChannelStart(server);
        assert_eq!(VmbChannelAllocate(bus.guest_device(), 0, &mut client), 0);
        assert_eq!(
            VmbClientChannelInitSetTargetPnp(client, &PAIR_TYPE, std::ptr::null(), None),
            0
        );
        assert_eq!(
            VmbChannelInitSetProcessPacketCallbacks(client, Some(complete_inline), None),
            0
        );
        assert_eq!(VmbChannelEnable(client), 0);
    }
    bus.run_until_idle();
    (server, client)
}

/// Sends one packet from `client` that waits for its completion; the default completion
/// routine frees it once the server has completed it.
pub fn send_one(client: VMBCHANNEL, payload: &[u8]) -> NTSTATUS {
    // SAFETY: `client` is an open channel from `open_pair`; the payload outlives the call
    // (KMCL copies it into the ring); a packet allocated from the channel is sent at once.
    unsafe {
        let packet = VmbPacketAllocate(client);
        VmbPacketSend(
            packet,
            payload.as_ptr() as PVOID,
            payload.len() as u32,
            std::ptr::null_mut(),
            VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
        )
    }
}

/// Disables and cleans up both channels of a pair from `open_pair`, client first.
pub fn close_pair((server, client): (VMBCHANNEL, VMBCHANNEL)) {
    // SAFETY: live channels from `open_pair`, each disabled before its cleanup and not used
    // afterwards.
    unsafe {
        VmbChannelDisable(client);
        VmbChannelCleanup(client);
        VmbChannelDisable(server);
        VmbChannelCleanup(server);
    }
}
