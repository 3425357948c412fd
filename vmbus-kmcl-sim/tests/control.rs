//! Init setters and their documented statuses, channel properties, interface tables, kernel
//! VMBus handles, fault injection (hostile guest, crash) and background delivery.
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "tests drive sequences of raw KMCL calls whose preconditions are the same: live \
              channels and buffers owned by the test, stated once per block"
)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::*;
use vmbus_kmcl_sim::status::*;
use vmbus_kmcl_sim::{interface_reference_count, nt, Bus, ChannelState, RawPacketError};
use vmbus_kmcl_sys::*;

fn alloc(bus: &Bus, is_server: bool) -> VMBCHANNEL {
    let mut ch = std::ptr::null_mut();
    let dev = if is_server {
        bus.root_device()
    } else {
        bus.guest_device()
    };
    // SAFETY: writable output.
    let st = unsafe { VmbChannelAllocate(dev, u8::from(is_server), &mut ch) };
    assert_eq!(st, 0);
    ch
}

fn cleanup(ch: VMBCHANNEL) {
    // SAFETY: live channel.
    unsafe {
        VmbChannelDisable(ch);
        VmbChannelCleanup(ch);
    }
}

#[test]
fn allocate_checks_device_side_and_output() {
    let bus = Bus::new();
    let mut ch = std::ptr::null_mut();
    // SAFETY: fake device pointers are decoded, never dereferenced.
    unsafe {
        assert_eq!(
            VmbChannelAllocate(bus.guest_device(), 1, &mut ch),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(
            VmbChannelAllocate(bus.root_device(), 0, &mut ch),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(
            VmbChannelAllocate(std::ptr::without_provenance_mut(0x1000), 0, &mut ch),
            STATUS_INVALID_PARAMETER_1
        );
        assert_eq!(
            VmbChannelAllocate(bus.guest_device(), 0, std::ptr::null_mut()),
            STATUS_INVALID_PARAMETER_3
        );
    }
    assert_ne!(bus.root_device(), bus.guest_device());
    bus.assert_no_leaks();
}

#[test]
fn common_init_setters_statuses() {
    let bus = Bus::new();
    let ch = alloc(&bus, false);
    // SAFETY: live channel; every pointer argument is valid or NULL as tested.
    unsafe {
        assert_eq!(
            VmbChannelInitSetFlags(ch, VMBUS_CHANNEL_INIT_FLAG_IS_PIPE),
            0
        );
        assert_eq!(VmbChannelInitSetFlags(ch, 0x2), STATUS_INVALID_PARAMETER_2);
        assert_eq!(
            VmbChannelInitSetMaximumExternalData(ch, 0, 1),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(
            VmbChannelInitSetMaximumExternalData(ch, 1, 0),
            STATUS_INVALID_PARAMETER_3
        );
        assert_eq!(VmbChannelInitSetMaximumExternalData(ch, 65536, 4), 0);
        assert_eq!(
            VmbChannelInitSetMaximumPacketSize(ch, 0),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(VmbChannelInitSetMaximumPacketSize(ch, 512), 0);
        assert_eq!(VmbChannelInitSetClientContextSize(ch, 24), 0);
        assert_eq!(
            VmbChannelInitSetProcessPacketCallbacks(ch, None, None),
            STATUS_INVALID_PARAMETER_2
        );
        let mut cbs = VMB_CHANNEL_STATE_CHANGE_CALLBACKS::new();
        cbs.Version = 2;
        assert_eq!(
            VmbChannelInitSetStateChangeCallbacks(ch, &mut cbs),
            STATUS_INVALID_PARAMETER_2
        );
        cbs.Version = 1;
        cbs.Size = 40;
        assert_eq!(
            VmbChannelInitSetStateChangeCallbacks(ch, &mut cbs),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(
            VmbChannelInitSetStateChangeCallbacks(ch, std::ptr::null_mut()),
            STATUS_INVALID_PARAMETER_2
        );
        let mut cbs = VMB_CHANNEL_STATE_CHANGE_CALLBACKS::new();
        assert_eq!(VmbChannelInitSetStateChangeCallbacks(ch, &mut cbs), 0);
        // Friendly name: copied, validated.
        let mut text: Vec<u16> = "SynthTest".encode_utf16().collect();
        let mut name = UNICODE_STRING {
            Length: 18,
            MaximumLength: 18,
            Buffer: text.as_mut_ptr(),
        };
        assert_eq!(VmbChannelInitSetFriendlyName(ch, &name), 0);
        name.Length = 3;
        assert_eq!(
            VmbChannelInitSetFriendlyName(ch, &name),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(
            VmbChannelInitSetFriendlyName(ch, std::ptr::null()),
            STATUS_INVALID_PARAMETER_2
        );
        drop(text);
        // Client-only setters.
        assert_eq!(
            VmbClientChannelInitSetRingBufferPageCount(ch, 0, 1),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(
            VmbClientChannelInitSetRingBufferPageCount(ch, 1, 0),
            STATUS_INVALID_PARAMETER_3
        );
        assert_eq!(VmbClientChannelInitSetRingBufferPageCount(ch, 4, 8), 0);
        assert_eq!(
            VmbClientChannelInitSetTargetPnp(ch, std::ptr::null(), std::ptr::null(), None),
            STATUS_INVALID_PARAMETER_2
        );
        // Server-only setters refuse a client channel.
        assert_eq!(
            VmbServerChannelInitSetFlags(ch, 0),
            STATUS_INVALID_PARAMETER_1
        );
        assert_eq!(
            VmbServerChannelInitSetMmioMegabytes(ch, 1, 0),
            STATUS_INVALID_PARAMETER_1
        );
        assert_eq!(
            VmbServerChannelInitSetTargetVtl(ch, 0),
            STATUS_INVALID_PARAMETER_1
        );
        assert_eq!(
            VmbServerChannelInitSetTargetInterfaceId(ch, guid(1), guid(2)),
            STATUS_INVALID_PARAMETER_1
        );
        assert_eq!(
            VmbServerChannelInitSetSaveRestorePacketCallbacks(ch, None, None),
            STATUS_INVALID_PARAMETER_1
        );
        assert_eq!(
            VmbServerChannelInitSetVmbusHandle(ch, std::ptr::null_mut()),
            STATUS_INVALID_PARAMETER_1
        );
    }
    let info = bus.channel_info(ch).unwrap();
    assert_eq!(info.friendly_name.as_deref(), Some("SynthTest"));
    assert_eq!(info.client_context_size, 24);
    assert_eq!(info.max_packet_size, 512);
    assert_eq!(info.max_external_data, Some((65536, 4)));
    assert_eq!(info.ring_page_counts, (4, 8));
    assert_eq!(info.init_flags, VMBUS_CHANNEL_INIT_FLAG_IS_PIPE);
    cleanup(ch);
    bus.assert_no_leaks();
}

#[test]
fn friendly_name_buffer_is_checked_before_it_is_read() {
    let bus = Bus::new();
    let ch = alloc(&bus, false);
    // Backing store with a u16-aligned base, so `base + 1` is certainly misaligned for u16.
    let mut store = [0u16; 8];
    let base = store.as_mut_ptr();
    // SAFETY: every call gets a valid UNICODE_STRING; the sim must refuse the bad buffers
    // without reading through them (a misaligned pointer is never dereferenced, the aligned
    // one points to 16 readable bytes).
    unsafe {
        // Misaligned buffer (odd address) with a nonzero, even length.
        let misaligned = UNICODE_STRING {
            Length: 4,
            MaximumLength: 4,
            Buffer: base.cast::<u8>().wrapping_add(1).cast::<u16>(),
        };
        assert_eq!(
            VmbChannelInitSetFriendlyName(ch, &misaligned),
            STATUS_INVALID_PARAMETER_2
        );
        // NULL buffer with a nonzero length.
        let null = UNICODE_STRING {
            Length: 4,
            MaximumLength: 4,
            Buffer: std::ptr::null_mut(),
        };
        assert_eq!(
            VmbChannelInitSetFriendlyName(ch, &null),
            STATUS_INVALID_PARAMETER_2
        );
        // Odd length on an otherwise valid buffer.
        let odd = UNICODE_STRING {
            Length: 5,
            MaximumLength: 16,
            Buffer: base,
        };
        assert_eq!(
            VmbChannelInitSetFriendlyName(ch, &odd),
            STATUS_INVALID_PARAMETER_2
        );
        // Length beyond MaximumLength.
        let over = UNICODE_STRING {
            Length: 8,
            MaximumLength: 4,
            Buffer: base,
        };
        assert_eq!(
            VmbChannelInitSetFriendlyName(ch, &over),
            STATUS_INVALID_PARAMETER_2
        );
        // An empty name needs no buffer at all, aligned or not.
        let empty_null = UNICODE_STRING {
            Length: 0,
            MaximumLength: 0,
            Buffer: std::ptr::null_mut(),
        };
        assert_eq!(VmbChannelInitSetFriendlyName(ch, &empty_null), 0);
        let empty_misaligned = UNICODE_STRING {
            Length: 0,
            MaximumLength: 0,
            Buffer: misaligned.Buffer,
        };
        assert_eq!(VmbChannelInitSetFriendlyName(ch, &empty_misaligned), 0);
        // The aligned buffer is accepted.
        for (i, u) in "ok".encode_utf16().enumerate() {
            store[i] = u;
        }
        let good = UNICODE_STRING {
            Length: 4,
            MaximumLength: 16,
            Buffer: store.as_mut_ptr(),
        };
        assert_eq!(VmbChannelInitSetFriendlyName(ch, &good), 0);
    }
    assert!(bus.take_violations().is_empty());
    cleanup(ch);
    bus.assert_no_leaks();
}

#[test]
fn server_init_setters_statuses() {
    let bus = Bus::new();
    let ch = alloc(&bus, true);
    // SAFETY: live channel.
    unsafe {
        assert_eq!(
            VmbServerChannelInitSetFlags(ch, 0x20),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(
            VmbServerChannelInitSetFlags(ch, VMBUS_SERVER_CHANNEL_INIT_FLAGS),
            0
        );
        assert_eq!(
            VmbServerChannelInitSetMmioMegabytes(ch, 0, 0),
            STATUS_INVALID_PARAMETER
        );
        assert_eq!(VmbServerChannelInitSetMmioMegabytes(ch, 0, 4), 0);
        assert_eq!(
            VmbServerChannelInitSetTargetVtl(ch, 3),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(VmbServerChannelInitSetTargetVtl(ch, 0), 0);
        assert_eq!(
            VmbServerChannelInitSetSaveRestorePacketCallbacks(ch, None, None),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(
            VmbServerChannelInitSetVmbusHandle(ch, std::ptr::without_provenance_mut(0x44)),
            STATUS_INVALID_PARAMETER_2
        );
        // Client-only setters refuse a server channel.
        assert_eq!(
            VmbClientChannelInitSetRingBufferPageCount(ch, 1, 1),
            STATUS_INVALID_PARAMETER_1
        );
        let ty = guid(1);
        assert_eq!(
            VmbClientChannelInitSetTargetPnp(ch, &ty, std::ptr::null(), None),
            STATUS_INVALID_PARAMETER_1
        );
    }
    assert_eq!(
        bus.channel_info(ch).unwrap().server_flags,
        VMBUS_SERVER_CHANNEL_INIT_FLAGS
    );
    assert_eq!(bus.channel_info(ch).unwrap().mmio_megabytes, (0, 4));
    cleanup(ch);
    bus.assert_no_leaks();
}

#[test]
fn init_setters_refuse_after_enable() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    // SAFETY: live channels.
    unsafe {
        assert_eq!(VmbChannelInitSetFlags(c.ch, 0), STATUS_INVALID_PARAMETER_1);
        assert_eq!(
            VmbChannelInitSetMaximumPacketSize(s.ch, 10),
            STATUS_INVALID_PARAMETER_1
        );
        assert_eq!(
            VmbChannelInitSetClientContextSize(c.ch, 1),
            STATUS_INVALID_PARAMETER_1
        );
        assert_eq!(
            VmbChannelInitSetMaximumExternalData(c.ch, 1, 1),
            STATUS_INVALID_PARAMETER_1
        );
        assert_eq!(
            VmbChannelInitSetProcessPacketCallbacks(c.ch, Some(process_packet), None),
            STATUS_INVALID_PARAMETER_1
        );
        assert_eq!(
            VmbServerChannelInitSetFlags(s.ch, 0),
            STATUS_INVALID_PARAMETER_1
        );
        assert_eq!(
            VmbServerChannelInitSetTargetVtl(s.ch, 0),
            STATUS_INVALID_PARAMETER_1
        );
        assert_eq!(
            VmbClientChannelInitSetRingBufferPageCount(c.ch, 1, 1),
            STATUS_INVALID_PARAMETER_1
        );
        assert_eq!(VmbChannelEnable(c.ch), STATUS_INVALID_DEVICE_STATE);
    }
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn interrupt_latency_only_while_open() {
    let bus = Bus::new();
    let s = server(&bus);
    let c = client(&bus);
    let mut old = 0u16;
    // SAFETY: live channel, writable output.
    unsafe {
        assert_eq!(
            VmbChannelSetInterruptLatency(c.ch, 10, &mut old),
            STATUS_INVALID_DEVICE_STATE
        )
    };
    open(&bus, &s, &c);
    // SAFETY: as above.
    unsafe {
        assert_eq!(VmbChannelSetInterruptLatency(c.ch, 10, &mut old), 0);
        assert_eq!(old, 0);
        assert_eq!(VmbChannelSetInterruptLatency(c.ch, 20, &mut old), 0);
        assert_eq!(old, 10);
    }
    assert_eq!(bus.channel_info(c.ch).unwrap().interrupt_latency, 20);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn mmio_space_assigned_at_open() {
    let bus = Bus::new();
    let s = server(&bus);
    // SAFETY: live channel.
    unsafe { assert_eq!(VmbServerChannelInitSetMmioMegabytes(s.ch, 2, 1), 0) };
    let c = client(&bus);
    let (mut a, mut n) = (1u64, 1u64);
    // SAFETY: writable outputs; before open this is a reported misuse returning zeros.
    unsafe { VmbChannelGetMmioSpace(c.ch, &mut a, &mut n) };
    assert_eq!((a, n), (0, 0));
    assert_eq!(bus.take_violations().len(), 1);
    open(&bus, &s, &c);
    // SAFETY: as above.
    unsafe { VmbChannelGetMmioSpace(c.ch, &mut a, &mut n) };
    assert_ne!(a, 0);
    assert_eq!(n, 3 << 20);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn vmbus_handle_from_the_worker_process() {
    let bus = Bus::new();
    let other = Bus::new();
    let worker = nt::Process::new("vmwp");
    let user = bus.open_vmbus_handle_in(&worker);
    let other_user = other.open_vmbus_handle_in(&worker);
    let mut kernel = std::ptr::null_mut();
    let mut other_kernel = std::ptr::null_mut();
    {
        let _in = worker.enter();
        // SAFETY: writable outputs; running in the worker's context.
        unsafe {
            assert_eq!(
                nt::VmbConvertVmbusHandleToKernelHandle(user, &mut kernel),
                0
            );
            assert_eq!(
                nt::VmbConvertVmbusHandleToKernelHandle(other_user, &mut other_kernel),
                0
            );
        }
    }
    let s = server(&bus);
    // SAFETY: live channel; handles are looked up, not dereferenced.
    unsafe {
        assert_eq!(
            VmbServerChannelInitSetVmbusHandle(s.ch, other_kernel),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(
            VmbServerChannelInitSetVmbusHandle(s.ch, user),
            STATUS_INVALID_PARAMETER_2
        );
        assert!(!bus.server_vmbus_handle_set(s.ch));
        assert_eq!(VmbServerChannelInitSetVmbusHandle(s.ch, kernel), 0);
    }
    assert!(bus.server_vmbus_handle_set(s.ch));
    assert_eq!(bus.leak_report().kernel_handles, 1);
    teardown(&[&s]);
    // A kernel handle left open is a leak of this bus.
    assert!(!bus.leak_report().is_clean());
    // SAFETY: closing kernel handles we own.
    unsafe {
        assert_eq!(nt::ZwClose(kernel), 0);
        assert_eq!(nt::ZwClose(other_kernel), 0);
    }
    assert!(worker.close_handle(user));
    assert!(worker.close_handle(other_user));
    bus.assert_no_leaks();
    other.assert_no_leaks();
}

#[test]
fn vmbus_handle_closed_before_enable_fails_the_offer() {
    let bus = Bus::new();
    let worker = nt::Process::new("vmwp");
    let user = bus.open_vmbus_handle_in(&worker);
    let mut kernel = std::ptr::null_mut();
    let mut fresh = std::ptr::null_mut();
    {
        let _in = worker.enter();
        // SAFETY: writable outputs; running in the worker's context.
        unsafe {
            assert_eq!(
                nt::VmbConvertVmbusHandleToKernelHandle(user, &mut kernel),
                0
            );
            assert_eq!(nt::VmbConvertVmbusHandleToKernelHandle(user, &mut fresh), 0);
        }
    }
    let s = server(&bus);
    // SAFETY: live channel; handles are looked up in the emulated table, not dereferenced.
    unsafe {
        assert_eq!(VmbServerChannelInitSetVmbusHandle(s.ch, kernel), 0);
        // The driver closes the handle it gave the channel before offering it.
        assert_eq!(nt::ZwClose(kernel), 0);
        assert!(!nt::is_open_kernel_handle(kernel));
        // STATUS_INVALID_HANDLE.
        assert_eq!(VmbChannelEnable(s.ch), 0xC000_0008_u32 as NTSTATUS);
    }
    assert_eq!(
        bus.channel_info(s.ch).unwrap().state,
        ChannelState::Disabled
    );
    let v = bus.take_violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].contains("VmbChannelEnable") && v[0].contains("no longer an open kernel handle"),
        "{v:?}"
    );
    // With an open handle recorded instead, the same channel is offered and opens.
    // SAFETY: live channel; open kernel handle.
    unsafe {
        assert_eq!(VmbServerChannelInitSetVmbusHandle(s.ch, fresh), 0);
    }
    let c = client(&bus);
    open(&bus, &s, &c);
    assert_eq!(bus.channel_info(c.ch).unwrap().state, ChannelState::Open);
    teardown(&[&c, &s]);
    // SAFETY: closing the kernel handle we still own.
    unsafe {
        assert_eq!(nt::ZwClose(fresh), 0);
    }
    assert!(worker.close_handle(user));
    bus.assert_no_leaks();
}

#[test]
fn interface_tables_are_complete_and_reference_counted() {
    let t = vmbus_kmcl_sim::client_interface();
    assert_eq!(
        t.InterfaceHeader.Size as usize,
        std::mem::size_of::<KMCL_CLIENT_INTERFACE_V1>()
    );
    assert_eq!(t.InterfaceHeader.Version, KMCL_CLIENT_INTERFACE_VERSION_V1);
    let ctx = t.InterfaceHeader.Context;
    assert_eq!(interface_reference_count(ctx), Some(1));
    // SAFETY: the table's own reference routines with its own context.
    unsafe {
        (t.InterfaceHeader.InterfaceReference.unwrap())(ctx);
        assert_eq!(interface_reference_count(ctx), Some(2));
        (t.InterfaceHeader.InterfaceDereference.unwrap())(ctx);
        (t.InterfaceHeader.InterfaceDereference.unwrap())(ctx);
    }
    assert_eq!(interface_reference_count(ctx), Some(0));
    // Every slot is filled: the table is 41 non-null pointers after the header.
    let words: &[usize; 45] =
        // SAFETY: reading the table's bytes as pointer-sized words; it is plain data.
        unsafe { &*(&t as *const KMCL_CLIENT_INTERFACE_V1 as *const [usize; 45]) };
    assert!(words[4..].iter().all(|w| *w != 0));
    let s = vmbus_kmcl_sim::server_interface();
    assert_eq!(s.ClientMethods.InterfaceHeader.Size as usize, 472);
    let words: &[usize; 59] =
        // SAFETY: as above, 59 words.
        unsafe { &*(&s as *const KMCL_SERVER_INTERFACE_V1 as *const [usize; 59]) };
    assert!(words[4..].iter().all(|w| *w != 0));
    // SAFETY: releasing the table's reference.
    unsafe {
        (s.ClientMethods
            .InterfaceHeader
            .InterfaceDereference
            .unwrap())(s.ClientMethods.InterfaceHeader.Context)
    };
}

#[test]
fn interface_through_the_table_and_bus_accounting() {
    let bus = Bus::new();
    let mut iface = std::mem::MaybeUninit::<KMCL_SERVER_INTERFACE_V1>::uninit();
    // SAFETY: writable, aligned storage of the table's size.
    let st = unsafe {
        bus.query_interface(
            &vmbus_kmcl_sim::exports::KMCL_SERVER_INTERFACE_TYPE,
            std::mem::size_of::<KMCL_SERVER_INTERFACE_V1>() as u16,
            KMCL_SERVER_INTERFACE_VERSION_V1,
            iface.as_mut_ptr().cast(),
        )
    };
    assert_eq!(st, 0);
    // SAFETY: filled by the successful query.
    let t = unsafe { iface.assume_init() };
    // SAFETY: as above, with the wrong type and a short size.
    unsafe {
        let mut other = std::mem::MaybeUninit::<KMCL_SERVER_INTERFACE_V1>::uninit();
        assert_eq!(
            bus.query_interface(&guid(9), 472, 1, other.as_mut_ptr().cast()),
            STATUS_INVALID_PARAMETER
        );
        assert_eq!(
            bus.query_interface(
                &vmbus_kmcl_sim::exports::KMCL_SERVER_INTERFACE_TYPE,
                100,
                1,
                other.as_mut_ptr().cast()
            ),
            STATUS_BUFFER_TOO_SMALL
        );
    }
    // Drive a channel through the table only.
    let c = &t.ClientMethods;
    let mut ch = std::ptr::null_mut();
    // SAFETY: the table's functions with valid arguments.
    unsafe {
        assert_eq!(
            (c.VmbChannelAllocate.unwrap())(bus.root_device(), 1, &mut ch),
            0
        );
        assert_eq!(
            (t.ServerMethods
                .VmbServerChannelInitSetMmioMegabytes
                .unwrap())(ch, 1, 0),
            0
        );
        (c.VmbChannelDisable.unwrap())(ch);
        (c.VmbChannelCleanup.unwrap())(ch);
    }
    // The reference taken by the query is still held: that is a leak of this bus.
    assert_eq!(bus.leak_report().interface_references, 1);
    // SAFETY: releasing the query's reference once.
    unsafe { (c.InterfaceHeader.InterfaceDereference.unwrap())(c.InterfaceHeader.Context) };
    bus.assert_no_leaks();
    // One dereference too many is a violation of this bus.
    // SAFETY: deliberate misuse; the context is an opaque id.
    unsafe { (c.InterfaceHeader.InterfaceDereference.unwrap())(c.InterfaceHeader.Context) };
    assert_eq!(bus.take_violations().len(), 1);
}

#[test]
fn interface_type_symbols_resolve_to_the_sim_values() {
    #[cfg(not(miri))]
    {
        // SAFETY: the extern statics are defined by the sim.
        let (c, s) = unsafe { (KMCL_CLIENT_INTERFACE_TYPE, KMCL_SERVER_INTERFACE_TYPE) };
        assert_eq!(c, vmbus_kmcl_sim::exports::KMCL_CLIENT_INTERFACE_TYPE);
        assert_ne!(c, s);
    }
    assert_ne!(
        vmbus_kmcl_sim::exports::KMCL_CLIENT_INTERFACE_TYPE,
        vmbus_kmcl_sim::exports::KMCL_SERVER_INTERFACE_TYPE
    );
}

#[test]
fn hostile_guest_packets_are_validated_before_the_driver_sees_them() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    // A well-formed in-band packet asking for a completion.
    let good = raw(6, 2, 3, 1, 77, b"evil-ok\0");
    assert_eq!(bus.inject_raw_guest_packet(s.ch, &good), Ok(()));
    bus.run_until_idle();
    assert_eq!(*s.ctx.payloads.lock().unwrap(), [b"evil-ok\0".to_vec()]);
    let done = bus.take_raw_guest_completions();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].transaction_id, 77);
    assert_eq!(done[0].data, b"\0ko-live");
    // The client driver never saw the completion.
    assert!(c.ctx.completions.lock().unwrap().is_empty());
    // Malformed and oversized ones are refused.
    assert_eq!(
        bus.inject_raw_guest_packet(s.ch, &good[..10]),
        Err(RawPacketError::Malformed)
    );
    assert_eq!(
        bus.inject_raw_guest_packet(s.ch, &raw(6, 1, 3, 0, 1, b"12345678")),
        Err(RawPacketError::Malformed)
    );
    assert_eq!(
        bus.inject_raw_guest_packet(s.ch, &raw(6, 2, 9, 0, 1, b"12345678")),
        Err(RawPacketError::Malformed)
    );
    assert_eq!(
        bus.inject_raw_guest_packet(s.ch, &raw(0xb, 2, 3, 0, 1, b"12345678")),
        Err(RawPacketError::UnsupportedType)
    );
    assert_eq!(
        bus.inject_raw_guest_packet(s.ch, &raw(6, 2, 3, 0x80, 1, b"12345678")),
        Err(RawPacketError::UnsupportedType)
    );
    let big = vec![0u8; 4104];
    let n8 = ((16 + big.len()) / 8) as u16;
    assert_eq!(
        bus.inject_raw_guest_packet(s.ch, &raw(6, 2, n8, 0, 1, &big)),
        Err(RawPacketError::Oversized)
    );
    assert_eq!(
        bus.inject_raw_guest_packet(c.ch, &good),
        Err(RawPacketError::NotConnected)
    );
    assert_eq!(bus.rejected_raw_guest_packets(), 7);
    // Random garbage never panics and never reaches the driver unvalidated.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let rounds = if cfg!(miri) { 20 } else { 2000 };
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 64) as usize;
        let bytes: Vec<u8> = (0..len).map(|i| (x >> (i % 8 * 8)) as u8).collect();
        let _ = bus.inject_raw_guest_packet(s.ch, &bytes);
    }
    bus.run_until_idle();
    let _ = bus.take_raw_guest_completions();
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn crashed_guest_mid_transaction() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    c.ctx.mode.store(HOLD, Ordering::SeqCst);
    let (p, _) = send(&s, b"req", WAIT);
    bus.run_until_idle();
    assert_eq!(c.ctx.held.lock().unwrap().len(), 1);
    assert!(bus.crash_peer_of(s.ch));
    bus.run_until_idle();
    // The server sees the guest go away and its transaction cancelled, in order.
    assert_eq!(s.ctx.log()[3..], ["suspend", "closed"]);
    assert_eq!(
        *s.ctx.completions.lock().unwrap(),
        [(STATUS_CANCELLED, vec![])]
    );
    assert_eq!(bus.channel_info(c.ch).unwrap().state, ChannelState::Crashed);
    // The crashed driver gets nothing more.
    assert_eq!(c.ctx.log().len(), 3);
    let _ = c.ctx.take_held();
    free(&[p]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn background_delivery_thread() {
    let bus = Bus::new();
    bus.start_background_delivery();
    let s = server(&bus);
    let c = client(&bus);
    // SAFETY: live channels.
    unsafe {
        assert_eq!(VmbChannelEnable(s.ch), 0);
        VmbChannelStart(s.ch);
        assert_eq!(VmbChannelEnable(c.ch), 0);
    }
    wait_for("both channels started", || {
        c.ctx.log().len() >= 3 && s.ctx.log().len() >= 3
    });
    let n = if cfg!(miri) { 20 } else { 2000 };
    for i in 0..n {
        assert_eq!(send_default(&c, &(i as u32).to_le_bytes(), WAIT), 0);
    }
    // A synchronous request while the background thread delivers.
    let mut reply = [0u8; 8];
    let mut size = 8u32;
    let data = *b"sync";
    // SAFETY: live buffers.
    let st = unsafe {
        VmbChannelSendSynchronousRequest(
            c.ch,
            data.as_ptr() as PVOID,
            4,
            std::ptr::null_mut(),
            WAIT,
            reply.as_mut_ptr() as PVOID,
            &mut size,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(st, 0);
    assert_eq!(&reply[..size as usize], b"cnys");
    wait_for("all packets completed", || bus.leak_report().packets == 0);
    assert_eq!(s.ctx.payloads.lock().unwrap().len(), n + 1);
    bus.stop_background_delivery();
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
    drop(Arc::clone(&s.ctx));
}
