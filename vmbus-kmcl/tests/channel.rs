//! Channel life on the sim, for both roles and both dispatch backends: callback order,
//! refused opens, pause/start, re-enable, validation before KMCL is called, the VMBus handle
//! the server channel owns, and teardown of a leaked channel.

use std::pin::pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use vmbus_kmcl::channel::{
    ChannelFlags, ChannelSlot, Client, ClientBuilder, Handler, OpenView, PostStartedView, Role,
    Sent, Server, ServerBuilder, ServerFlags, StoppedView, Utf16Buf,
};
use vmbus_kmcl::dispatch::{ChannelBackend, ClientInterface, KmclServer, Linked, ServerInterface};
use vmbus_kmcl::packet::IncomingPacket;
use vmbus_kmcl::{guid, Error, Guid, KernelHandle, NtStatus, Request};
use vmbus_kmcl_sim::nt::{current_irql, Process};
use vmbus_kmcl_sim::{Bus, ChannelState};

#[macro_use]
mod common;
use common::{guest, offer, open_pair, root, with_slots};
use vmbus_kmcl_sys::nt::PASSIVE_LEVEL;

const TYPE: Guid = guid!("5c3e2a10-7b4d-4e8f-9a01-23456789abcd");
const INSTANCE: Guid = guid!("5c3e2a10-7b4d-4e8f-9a01-000000000001");

/// A handler that logs every callback (with the IRQL when it is not PASSIVE_LEVEL) and answers
/// each packet with its own bytes.
#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<String>>,
    refuse_open: AtomicBool,
    latency_seen: Mutex<Option<Result<u16, Error>>>,
    mmio_seen: Mutex<Option<(u64, u64)>>,
    instance_seen: Mutex<Option<Guid>>,
    post_started_reply: Mutex<Option<Vec<u8>>>,
    batches: AtomicU32,
}

impl Recorder {
    fn push(&self, entry: impl Into<String>) {
        let mut entry = entry.into();
        if current_irql() != PASSIVE_LEVEL {
            entry = format!("{entry}@irql{}", current_irql());
        }
        self.log.lock().unwrap().push(entry);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

/// The parts shared by both roles.
fn record_packet<R, K: ChannelBackend>(
    recorder: &Recorder,
    channel: &OpenView<'_, R, K>,
    packet: IncomingPacket<'_, K>,
) {
    let _ = channel;
    let data = packet.data();
    recorder.push(format!("packet:{}", String::from_utf8_lossy(data)));
    let mut echo = [0u8; 64];
    let n = data.len().min(echo.len());
    echo[..n].copy_from_slice(&data[..n]);
    assert_eq!(packet.complete(&echo[..n]), Ok(()));
}

impl<K: ChannelBackend> Handler<Server, K> for Recorder {
    fn opened(&self, channel: &OpenView<'_, Server, K>) -> vmbus_kmcl::Result<()> {
        self.push("opened");
        *self.instance_seen.lock().unwrap() = Some(channel.interface_instance());
        if self.refuse_open.load(Ordering::SeqCst) {
            return Err(Error::Status(NtStatus::ACCESS_DENIED));
        }
        Ok(())
    }
    fn started(&self, _: &OpenView<'_, Server, K>) {
        self.push("started");
    }
    fn post_started(&self, _: &PostStartedView<'_, Server, K>) {
        self.push("post_started");
    }
    fn process_packet(&self, channel: &OpenView<'_, Server, K>, packet: IncomingPacket<'_, K>) {
        record_packet(self, channel, packet);
    }
    fn suspend(&self, _: &StoppedView<'_, Server, K>) {
        self.push("suspend");
    }
    fn closed(&self, _: &StoppedView<'_, Server, K>) {
        self.push("closed");
    }
}

impl<K: ChannelBackend> Handler<Client, K> for Recorder {
    const PROCESSING_COMPLETE: bool = true;

    fn opened(&self, channel: &OpenView<'_, Client, K>) -> vmbus_kmcl::Result<()> {
        self.push("opened");
        *self.latency_seen.lock().unwrap() = Some(channel.set_interrupt_latency(50));
        let mmio = channel.mmio_space();
        *self.mmio_seen.lock().unwrap() = Some((mmio.address, mmio.size));
        *self.instance_seen.lock().unwrap() = Some(channel.interface_instance());
        Ok(())
    }
    fn started(&self, _: &OpenView<'_, Client, K>) {
        self.push("started");
    }
    fn post_started(&self, channel: &PostStartedView<'_, Client, K>) {
        self.push("post_started");
        // The place for a blocking request, e.g. version negotiation.
        let mut response = [0u8; 8];
        let reply = channel
            .request(b"hello", &mut response, None)
            .map(<[u8]>::to_vec);
        *self.post_started_reply.lock().unwrap() = reply.ok();
    }
    fn process_packet(&self, channel: &OpenView<'_, Client, K>, packet: IncomingPacket<'_, K>) {
        record_packet(self, channel, packet);
    }
    fn processing_complete(&self, _: &OpenView<'_, Client, K>, packets: u32) {
        self.batches.fetch_add(packets, Ordering::SeqCst);
    }
    fn suspend(&self, _: &StoppedView<'_, Client, K>) {
        self.push("suspend");
    }
    fn closed(&self, _: &StoppedView<'_, Client, K>) {
        self.push("closed");
    }
    fn pnp_failure(&self, status: NtStatus) {
        self.push(format!("pnp_failure:{status}"));
    }
}

fn converted(bus: &Bus) -> KernelHandle {
    let worker = Process::new("vmwp");
    let raw = bus.open_vmbus_handle_in(&worker);
    let thread = worker.enter();
    let irp = thread.issue_irp();
    // SAFETY: the simulated IRP outlives the request.
    let request = unsafe { Request::from_raw(NonNull::new(irp.as_ptr()).unwrap()) };
    request.convert_vmbus_handle(raw).unwrap()
}

fn strings(entries: &[&str]) -> Vec<String> {
    entries.iter().map(|s| (*s).to_string()).collect()
}

/// Open, one request from the client's post-started callback, one from the test, close: the
/// callback order on both sides, for any pair of backends.
fn open_request_close<S, C>(bus: &Bus, server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    let (vsp, vsc) = (Recorder::default(), Recorder::default());
    with_slots(bus, server, vsp, client, vsc, |mut vsp_slot, vsc_slot| {
        let mut vsp = ServerBuilder::allocate(vsp_slot.as_mut()).unwrap();
        vsp.set_interface_id(TYPE, INSTANCE)
            .unwrap()
            .set_mmio_megabytes(2, 1)
            .unwrap()
            .set_friendly_name(vmbus_kmcl::utf16!("Recorder"))
            .unwrap();
        let vsp = vsp.enable().unwrap();
        vsp.start();
        assert_eq!(
            bus.channel_info(vsp.as_raw())
                .unwrap()
                .friendly_name
                .as_deref(),
            Some("Recorder")
        );

        let mut vsc = ClientBuilder::allocate(vsc_slot).unwrap();
        vsc.set_target(TYPE, Some(INSTANCE)).unwrap();
        let vsc = vsc.enable().unwrap();
        bus.run_until_idle();
        assert!(vsc.is_open());
        assert!(vsp.is_open());

        let opened = strings(&["opened", "started", "post_started"]);
        assert_eq!(
            vsp.handler().take(),
            strings(&["opened", "started", "post_started", "packet:hello@irql2"])
        );
        assert_eq!(vsc.handler().take(), opened);
        assert_eq!(
            vsc.handler().post_started_reply.lock().unwrap().as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(*vsc.handler().latency_seen.lock().unwrap(), Some(Ok(0)));
        assert!(vsc.handler().mmio_seen.lock().unwrap().is_some());
        assert_eq!(
            vsc.mmio_space().map(|m| m.size),
            vsc.handler().mmio_seen.lock().unwrap().map(|m| m.1)
        );
        assert_eq!(*vsp.handler().instance_seen.lock().unwrap(), Some(INSTANCE));
        assert_eq!(vsc.interface_instance(), INSTANCE);

        let mut response = [0u8; 16];
        assert_eq!(vsc.request(b"ping", &mut response, None), Ok(&b"ping"[..]));
        assert_eq!(vsp.handler().take(), strings(&["packet:ping@irql2"]));

        // The server answers through a non-blocking send; the client echoes it back.
        assert_eq!(vsp.try_send(b"note"), Ok(Sent::Queued));
        bus.run_until_idle();
        assert_eq!(vsc.handler().take(), strings(&["packet:note@irql2"]));
        assert!(vsc.handler().batches.load(Ordering::SeqCst) >= 1);

        let vsc = vsc.disable();
        assert_eq!(vsc.handler().take(), strings(&["suspend", "closed"]));
        bus.run_until_idle();
        assert_eq!(vsp.handler().take(), strings(&["suspend", "closed"]));
        drop(vsc);
        drop(vsp);
        assert!(vsp_slot.handler().take().is_empty());
    });
}

#[test]
fn open_request_close_in_both_roles_with_linked_exports() {
    let bus = Bus::new();
    open_request_close(&bus, Linked, Linked);
    bus.assert_no_leaks();
}

#[test]
fn open_request_close_in_both_roles_with_interface_tables() {
    let bus = Bus::new();
    // SAFETY: the sim's tables stand for successful queries whose references are handed over.
    let server = unsafe { ServerInterface::from_raw(bus.server_interface()) }.unwrap();
    // SAFETY: as above.
    let client = unsafe { ClientInterface::from_raw(bus.client_interface()) }.unwrap();
    open_request_close(&bus, &server, &client);
    drop((server, client));
    bus.assert_no_leaks();
}

#[test]
fn a_refused_open_rolls_the_channel_back() {
    let bus = Bus::new();
    let refusing = Recorder::default();
    refusing.refuse_open.store(true, Ordering::SeqCst);
    let mut vsp_slot = pin!(ChannelSlot::new(root(&bus), Linked, refusing));
    let mut vsc_slot = pin!(ChannelSlot::new(guest(&bus), Linked, Recorder::default()));
    let (vsp, vsc) = open_pair(&bus, vsp_slot.as_mut(), vsc_slot.as_mut(), TYPE, INSTANCE);
    assert_eq!(vsp.handler().take(), strings(&["opened"]));
    assert!(!vsp.is_open());
    assert_eq!(vsp.mmio_space(), None);
    assert_eq!(
        bus.channel_info(vsp.as_raw()).unwrap().state,
        ChannelState::Enabled
    );
    // Nothing reaches the refusing server.
    let mut response = [0u8; 8];
    assert!(vsc
        .request(b"x", &mut response, Some(std::time::Duration::ZERO))
        .is_err());
    drop(vsc);
    drop(vsp);
    bus.assert_no_leaks();
}

#[test]
fn pause_and_start_run_suspend_then_started_and_post_started() {
    let bus = Bus::new();
    let mut vsp_slot = pin!(ChannelSlot::new(root(&bus), Linked, Recorder::default()));
    let mut vsc_slot = pin!(ChannelSlot::new(guest(&bus), Linked, Recorder::default()));
    let (vsp, vsc) = open_pair(&bus, vsp_slot.as_mut(), vsc_slot.as_mut(), TYPE, INSTANCE);
    vsp.handler().take();
    vsc.handler().take();

    vsp.pause().unwrap();
    assert_eq!(vsp.handler().take(), strings(&["suspend"]));
    assert!(bus.channel_info(vsp.as_raw()).unwrap().paused);
    vsp.start();
    bus.run_until_idle();
    assert_eq!(vsp.handler().take(), strings(&["started", "post_started"]));
    assert!(bus.channel_info(vsp.as_raw()).unwrap().running);
    assert!(bus.take_violations().is_empty());
    drop(vsc);
    drop(vsp);
    bus.assert_no_leaks();
}

#[test]
fn a_disabled_client_is_reconfigured_and_enabled_again() {
    let bus = Bus::new();
    let mut vsp_slot = pin!(ChannelSlot::new(root(&bus), Linked, Recorder::default()));
    let mut vsc_slot = pin!(ChannelSlot::new(guest(&bus), Linked, Recorder::default()));
    let (vsp, vsc) = open_pair(&bus, vsp_slot.as_mut(), vsc_slot.as_mut(), TYPE, INSTANCE);

    // The server rescinds: the client sees the close and is disabled by KMCL.
    let vsp = vsp.disable();
    bus.run_until_idle();
    assert!(!vsc.is_open());
    assert_eq!(
        bus.channel_info(vsc.as_raw()).unwrap().state,
        ChannelState::Disabled
    );
    // Offer again; the client re-enables through disable → builder → enable.
    let vsp = vsp.enable().unwrap();
    vsp.start();
    let mut vsc = vsc.disable();
    vsc.set_ring_buffer_pages(4, 4).unwrap();
    let vsc = vsc.enable().unwrap();
    bus.run_until_idle();
    assert!(vsc.is_open());
    assert_eq!(
        vsc.handler().take(),
        strings(&[
            "opened",
            "started",
            "post_started",
            "suspend",
            "closed",
            "opened",
            "started",
            "post_started"
        ])
    );
    let mut response = [0u8; 8];
    assert_eq!(
        vsc.request(b"again", &mut response, None),
        Ok(&b"again"[..])
    );
    drop(vsc);
    drop(vsp);
    bus.assert_no_leaks();
}

#[test]
fn setters_validate_before_calling_kmcl() {
    let bus = Bus::new();
    let mut slot = pin!(ChannelSlot::new(root(&bus), Linked, Recorder::default()));
    let mut vsp = ServerBuilder::allocate(slot.as_mut()).unwrap();
    assert!(matches!(
        vsp.set_mmio_megabytes(0, 0),
        Err(Error::MmioBothZero)
    ));
    assert!(vsp.set_mmio_megabytes(0, 4).is_ok());
    assert!(matches!(
        vsp.set_target_vtl(3),
        Err(Error::InvalidVtl { vtl: 3 })
    ));
    assert!(vsp.set_target_vtl(2).is_ok());
    assert!(matches!(
        vsp.set_maximum_packet_size(0),
        Err(Error::BelowMinimum { minimum: 1 })
    ));
    assert!(matches!(
        vsp.set_maximum_external_data(4096, 0),
        Err(Error::BelowMinimum { minimum: 1 })
    ));
    assert!(matches!(
        vsp.set_maximum_external_data(0, 1),
        Err(Error::BelowMinimum { minimum: 1 })
    ));
    assert!(matches!(
        vsp.set_server_flags(ServerFlags::from_bits_retain(0x40)),
        Err(Error::UndefinedFlags { bits: 0x40 })
    ));
    assert!(matches!(
        vsp.set_flags(ChannelFlags::from_bits_retain(0x3)),
        Err(Error::UndefinedFlags { bits: 0x2 })
    ));
    let long = [0x41u16; 40000];
    assert!(matches!(
        vsp.set_friendly_name(&long),
        Err(Error::LengthTooLarge)
    ));
    vsp.set_flags(ChannelFlags::IS_PIPE)
        .unwrap()
        .set_server_flags(ServerFlags::ENUMERATE_DEVICE_INTERFACE | ServerFlags::OFFER_AS_PIPE)
        .unwrap()
        .set_maximum_packet_size(2048)
        .unwrap()
        .set_maximum_external_data(65536, 16)
        .unwrap()
        .set_client_context_size(32)
        .unwrap()
        .set_incoming_processing_at_passive(true);
    let info = bus.channel_info(vsp.as_raw()).unwrap();
    assert_eq!(info.init_flags, ChannelFlags::IS_PIPE.bits());
    assert_eq!(info.server_flags, 0x2 | 0x4);
    assert_eq!(info.max_packet_size, 2048);
    assert_eq!(info.max_external_data, Some((65536, 16)));
    assert_eq!(info.client_context_size, 32);
    assert!(info.incoming_at_passive);
    drop(vsp);

    // A run-time name, encoded without allocation; it outlives the slot (KMCL may keep it).
    let name: Utf16Buf<16> = Utf16Buf::from_str("Client é").unwrap();
    let mut slot = pin!(ChannelSlot::new(guest(&bus), Linked, Recorder::default()));
    let mut vsc = ClientBuilder::allocate(slot.as_mut()).unwrap();
    assert!(matches!(
        vsc.set_ring_buffer_pages(0, 4),
        Err(Error::BelowMinimum { minimum: 1 })
    ));
    vsc.set_ring_buffer_pages(8, 2).unwrap();
    assert_eq!(
        bus.channel_info(vsc.as_raw()).unwrap().ring_page_counts,
        (8, 2)
    );
    vsc.set_friendly_name(name.as_slice()).unwrap();
    assert_eq!(
        bus.channel_info(vsc.as_raw())
            .unwrap()
            .friendly_name
            .as_deref(),
        Some("Client é")
    );
    drop(vsc);
    bus.assert_no_leaks();
}

#[test]
fn the_server_channel_owns_its_vmbus_handle_and_closes_it_after_cleanup() {
    let bus = Bus::new();
    let kernel = converted(&bus);
    let value = kernel.as_raw();
    let mut slot = pin!(ChannelSlot::new(root(&bus), Linked, Recorder::default()));
    let mut vsp = ServerBuilder::allocate(slot.as_mut()).unwrap();
    assert!(!bus.server_vmbus_handle_set(vsp.as_raw()));
    vsp.set_vmbus_handle(kernel).unwrap();
    assert!(bus.server_vmbus_handle_set(vsp.as_raw()));
    assert_eq!(vsp.vmbus_handle().map(KernelHandle::as_raw), Some(value));
    assert_eq!(vmbus_kmcl_sim::nt::open_kernel_handles_for_bus(bus.id()), 1);
    vsp.set_interface_id(TYPE, INSTANCE).unwrap();
    let vsp = vsp.enable().unwrap();
    assert_eq!(vsp.vmbus_handle().map(KernelHandle::as_raw), Some(value));
    drop(vsp);
    assert!(!vmbus_kmcl_sim::nt::is_open_kernel_handle(value));
    assert_eq!(vmbus_kmcl_sim::nt::open_kernel_handles_for_bus(bus.id()), 0);
    bus.assert_no_leaks();
}

#[test]
fn a_handle_to_another_vm_is_rejected_and_closed() {
    let bus = Bus::new();
    let other = Bus::new();
    let foreign = converted(&other);
    let mut slot = pin!(ChannelSlot::new(root(&bus), Linked, Recorder::default()));
    let mut vsp = ServerBuilder::allocate(slot.as_mut()).unwrap();
    assert!(matches!(
        vsp.set_vmbus_handle(foreign),
        Err(Error::Status(NtStatus::INVALID_PARAMETER_2))
    ));
    drop(vsp);
    assert_eq!(
        vmbus_kmcl_sim::nt::open_kernel_handles_for_bus(other.id()),
        0
    );
    bus.assert_no_leaks();
    other.assert_no_leaks();
}

#[test]
fn a_leaked_channel_is_torn_down_by_its_slot() {
    let bus = Bus::new();
    let kernel = converted(&bus);
    {
        let mut slot = pin!(ChannelSlot::new(root(&bus), Linked, Recorder::default()));
        let mut vsp = ServerBuilder::allocate(slot.as_mut()).unwrap();
        vsp.set_vmbus_handle(kernel).unwrap();
        vsp.set_interface_id(TYPE, INSTANCE).unwrap();
        let vsp = vsp.enable().unwrap();
        vsp.start();
        std::mem::forget(vsp);
        assert_eq!(bus.leak_report().channels, 1);
    }
    assert_eq!(bus.leak_report().channels, 0);
    assert_eq!(vmbus_kmcl_sim::nt::open_kernel_handles_for_bus(bus.id()), 0);
    bus.assert_no_leaks();
}

#[test]
fn a_slot_takes_a_new_channel_after_the_old_one_was_leaked() {
    let bus = Bus::new();
    let mut slot = pin!(ChannelSlot::new(guest(&bus), Linked, Recorder::default()));
    std::mem::forget(ClientBuilder::allocate(slot.as_mut()).unwrap());
    assert_eq!(bus.leak_report().channels, 1);
    let vsc = ClientBuilder::allocate(slot.as_mut()).unwrap();
    assert_eq!(bus.leak_report().channels, 1);
    drop(vsc);
    assert_eq!(bus.leak_report().channels, 0);
    bus.assert_no_leaks();
}

#[test]
fn a_failed_allocation_is_an_error_and_leaks_nothing() {
    let bus = Bus::new();
    bus.fail_next_channel_allocations(1);
    let mut slot = pin!(ChannelSlot::new(root(&bus), Linked, Recorder::default()));
    assert!(matches!(
        ServerBuilder::allocate(slot.as_mut()),
        Err(Error::Status(NtStatus::INSUFFICIENT_RESOURCES))
    ));
    bus.assert_no_leaks();
}

#[test]
fn a_failed_connection_reaches_the_pnp_failure_callback() {
    let bus = Bus::new();
    let mut vsp_slot = pin!(ChannelSlot::new(root(&bus), Linked, Recorder::default()));
    let mut vsc_slot = pin!(ChannelSlot::new(guest(&bus), Linked, Recorder::default()));
    let vsp = offer(vsp_slot.as_mut(), TYPE, INSTANCE);
    bus.fail_next_open(NtStatus::INSUFFICIENT_RESOURCES.to_raw());
    let mut vsc = ClientBuilder::allocate(vsc_slot.as_mut()).unwrap();
    vsc.set_target(TYPE, None).unwrap();
    let vsc = vsc.enable().unwrap();
    bus.run_until_idle();
    assert_eq!(
        vsc.handler().take(),
        strings(&["pnp_failure:STATUS_INSUFFICIENT_RESOURCES (0xC000009A)"])
    );
    assert!(!vsc.is_open());
    drop(vsc);
    drop(vsp);
    bus.assert_no_leaks();
}

#[test]
fn a_full_ring_is_a_value_of_try_send() {
    let bus = Bus::new();
    let mut vsp_slot = pin!(ChannelSlot::new(root(&bus), Linked, Recorder::default()));
    let mut vsc_slot = pin!(ChannelSlot::new(guest(&bus), Linked, Recorder::default()));
    let (vsp, vsc) = open_pair(&bus, vsp_slot.as_mut(), vsc_slot.as_mut(), TYPE, INSTANCE);
    assert!(bus.set_ring_full(vsp.as_raw(), true));
    assert_eq!(vsp.try_send(b"x"), Ok(Sent::RingFull));
    assert!(bus.set_ring_full(vsp.as_raw(), false));
    assert_eq!(vsp.try_send(b"x"), Ok(Sent::Queued));
    bus.run_until_idle();
    let mut response = [0u8; 12];
    assert!(matches!(
        vsc.request(b"x", &mut response, None),
        Err(Error::LengthNotMultipleOf8 { length: 12 })
    ));
    assert!(matches!(
        vsc.set_transaction_quota(0),
        Err(Error::BelowMinimum { minimum: 1 })
    ));
    vsc.set_transaction_quota(3).unwrap();
    assert_eq!(bus.channel_info(vsc.as_raw()).unwrap().transaction_quota, 3);
    drop(vsc);
    drop(vsp);
    bus.assert_no_leaks();
}

/// Keeps the generic helpers honest: a role-generic function works with both roles.
fn role_name<R: Role>() -> &'static str {
    if R::IS_SERVER {
        "server"
    } else {
        "client"
    }
}

#[test]
fn roles_are_types() {
    assert_eq!(role_name::<Server>(), "server");
    assert_eq!(role_name::<Client>(), "client");
}

#[test]
fn passive_only_calls_are_refused_above_passive() {
    use vmbus_kmcl_sys::nt::DISPATCH_LEVEL;
    let bus = Bus::new();
    let mut slot = pin!(ChannelSlot::new(root(&bus), Linked, Recorder::default()));
    let previous = vmbus_kmcl_sim::nt::set_current_irql(DISPATCH_LEVEL);
    let result = ServerBuilder::allocate(slot.as_mut());
    vmbus_kmcl_sim::nt::set_current_irql(previous);
    assert!(matches!(
        result,
        Err(Error::IrqlTooHigh {
            current: DISPATCH_LEVEL,
            maximum: PASSIVE_LEVEL
        })
    ));
    drop(result);
    assert_eq!(bus.leak_report().channels, 0);

    let mut vsp = ServerBuilder::allocate(slot.as_mut()).unwrap();
    vsp.set_interface_id(TYPE, INSTANCE).unwrap();
    let previous = vmbus_kmcl_sim::nt::set_current_irql(DISPATCH_LEVEL);
    let failed = vsp.enable().unwrap_err();
    vmbus_kmcl_sim::nt::set_current_irql(previous);
    assert!(matches!(failed.error(), Error::IrqlTooHigh { .. }));
    // The builder came back: enabling at PASSIVE_LEVEL works.
    let vsp = failed.into_builder().enable().unwrap();
    drop(vsp);
    assert_eq!(bus.leak_report().channels, 0);

    let mut vsp = ServerBuilder::allocate(slot.as_mut()).unwrap();
    vsp.set_interface_id(TYPE, INSTANCE).unwrap();
    let vsp = vsp.enable().unwrap();
    let previous = vmbus_kmcl_sim::nt::set_current_irql(DISPATCH_LEVEL);
    let paused = vsp.pause();
    vmbus_kmcl_sim::nt::set_current_irql(previous);
    assert!(matches!(paused, Err(Error::IrqlTooHigh { .. })));
    drop(vsp);
    assert!(bus.take_violations().is_empty());
    bus.assert_no_leaks();
}

#[test]
fn a_client_armed_to_start_paused_opens_without_flowing_until_started() {
    let bus = Bus::new();
    let mut vsp_slot = pin!(ChannelSlot::new(root(&bus), Linked, Recorder::default()));
    let mut vsc_slot = pin!(ChannelSlot::new(guest(&bus), Linked, Recorder::default()));
    let vsp = offer(vsp_slot.as_mut(), TYPE, INSTANCE);
    let mut vsc = ClientBuilder::allocate(vsc_slot.as_mut()).unwrap();
    vsc.set_target(TYPE, None).unwrap().start_paused();
    let vsc = vsc.enable().unwrap();
    bus.run_until_idle();
    assert_eq!(vsc.handler().take(), strings(&["opened"]));
    assert!(bus.channel_info(vsc.as_raw()).unwrap().paused);
    vsc.start();
    bus.run_until_idle();
    assert_eq!(vsc.handler().take(), strings(&["started", "post_started"]));
    drop(vsc);
    drop(vsp);
    bus.assert_no_leaks();
}

#[test]
fn builders_and_channels_move_to_other_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<ServerBuilder<'static, Recorder, Linked>>();
    assert_send::<vmbus_kmcl::channel::Channel<'static, Client, Recorder, &'static ClientInterface>>(
    );

    // Enabled on this thread, disabled and dropped on another (e.g. a PnP remove).
    let bus = Bus::new();
    let mut vsp_slot = pin!(ChannelSlot::new(root(&bus), Linked, Recorder::default()));
    let vsp = offer(vsp_slot.as_mut(), TYPE, INSTANCE);
    std::thread::scope(|s| {
        s.spawn(move || drop(vsp.disable()));
    });
    bus.assert_no_leaks();
}
