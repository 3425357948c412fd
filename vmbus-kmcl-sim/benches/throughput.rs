//! Throughput of the sim's send/complete loop, single-threaded: a client sends small packets
//! that wait for a completion, the server completes each inline, the default completion
//! routine frees it. Run with `cargo bench -p vmbus-kmcl-sim --bench throughput`.
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "tests drive sequences of raw KMCL calls whose preconditions are the same: live \
              channels and buffers owned by the test, stated once per block"
)]

use std::hint::black_box;
use std::time::Instant;

use vmbus_kmcl_sim::Bus;
use vmbus_kmcl_sys::*;

unsafe extern "C" fn complete_inline(
    _ch: VMBCHANNEL,
    pkt: VMBPACKETCOMPLETION,
    _buf: PVOID,
    _len: u32,
    _flags: u32,
) {
    let reply = [0u8; 8];
    // SAFETY: completing the delivered packet once with a live buffer.
    unsafe { VmbChannelPacketComplete(pkt, reply.as_ptr() as PVOID, 8) };
}

fn main() {
    let bus = Bus::new();
    let ty = GUID {
        Data1: 0xBE4C,
        ..GUID::default()
    };
    let (mut server, mut client) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: plain KMCL calls with live arguments.
    unsafe {
        assert_eq!(VmbChannelAllocate(bus.root_device(), 1, &mut server), 0);
        assert_eq!(VmbServerChannelInitSetTargetInterfaceId(server, ty, ty), 0);
        assert_eq!(
            VmbChannelInitSetProcessPacketCallbacks(server, Some(complete_inline), None),
            0
        );
        assert_eq!(VmbChannelEnable(server), 0);
        VmbChannelStart(server);
        assert_eq!(VmbChannelAllocate(bus.guest_device(), 0, &mut client), 0);
        assert_eq!(
            VmbClientChannelInitSetTargetPnp(client, &ty, std::ptr::null(), None),
            0
        );
        assert_eq!(
            VmbChannelInitSetProcessPacketCallbacks(client, Some(complete_inline), None),
            0
        );
        assert_eq!(VmbChannelEnable(client), 0);
    }
    bus.run_until_idle();

    let payload = [0x5Au8; 32];
    let batch = 256;
    let run = |packets: u64| {
        let t = Instant::now();
        let mut sent = 0;
        while sent < packets {
            for _ in 0..batch {
                // SAFETY: live channel and payload; the default routine frees the packet.
                unsafe {
                    let p = VmbPacketAllocate(client);
                    let st = VmbPacketSend(
                        p,
                        payload.as_ptr() as PVOID,
                        payload.len() as u32,
                        std::ptr::null_mut(),
                        VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
                    );
                    black_box(st);
                }
            }
            sent += batch;
            bus.run_until_idle();
        }
        (sent, t.elapsed())
    };
    // Warm up the pools, then measure.
    let (warm, _) = run(100_000);
    let (packets, elapsed) = run(2_000_000);
    let rate = packets as f64 / elapsed.as_secs_f64();
    println!(
        "vmbus-kmcl-sim send/complete loop: {packets} packets of {} bytes in {:.3} s = {:.0} packets/s",
        payload.len(),
        elapsed.as_secs_f64(),
        rate
    );
    assert_eq!(bus.packets_delivered(), warm + packets);
    // SAFETY: live channels, disabled before cleanup.
    unsafe {
        VmbChannelDisable(client);
        VmbChannelCleanup(client);
        VmbChannelDisable(server);
        VmbChannelCleanup(server);
    }
    bus.assert_no_leaks();
}
