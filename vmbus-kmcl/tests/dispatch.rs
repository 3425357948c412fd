//! The two dispatch backends, the direct exports ([`Linked`]) and the queried tables
//! ([`ClientInterface`], [`ServerInterface`]), run the same raw channel suite on the sim, and
//! the tables are checked before use and released after it.

use std::cell::RefCell;
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicUsize, Ordering};

use vmbus_kmcl::dispatch::{
    ClientInterface, Kmcl, KmclFunction, KmclServer, Linked, ServerInterface,
};
use vmbus_kmcl::Error;
use vmbus_kmcl_sim::{interface_reference_count, Bus};
use vmbus_kmcl_sys::*;

thread_local! {
    /// Incoming packets held by the test's process-packet callback, with their payloads. The
    /// sim runs callbacks on the thread that pumps it, which is the test's own thread.
    static HELD: RefCell<Vec<(VMBPACKETCOMPLETION, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
    /// Completions the sending side saw: status and payload.
    static COMPLETED: RefCell<Vec<(NTSTATUS, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
}

unsafe extern "C" fn hold_packet(
    _channel: VMBCHANNEL,
    packet: VMBPACKETCOMPLETION,
    buffer: PVOID,
    length: u32,
    _flags: u32,
) {
    // SAFETY: KMCL hands the callback `length` readable bytes at `buffer`, valid until the
    // packet is completed; they are copied out at once.
    let bytes = unsafe { std::slice::from_raw_parts(buffer as *const u8, length as usize) };
    HELD.with(|held| held.borrow_mut().push((packet, bytes.to_vec())));
}

unsafe extern "C" fn record_completion(
    _packet: VMBPACKET,
    status: NTSTATUS,
    buffer: PVOID,
    length: u32,
) {
    let bytes = if buffer.is_null() {
        Vec::new()
    } else {
        // SAFETY: KMCL passes `length` readable bytes of the peer's completion at `buffer`.
        unsafe { std::slice::from_raw_parts(buffer as *const u8, length as usize) }.to_vec()
    };
    COMPLETED.with(|done| done.borrow_mut().push((status, bytes)));
}

const TYPE: GUID = GUID {
    Data1: 0xD15A_7C40,
    Data2: 1,
    Data3: 2,
    Data4: [1, 2, 3, 4, 5, 6, 7, 8],
};
const INSTANCE: GUID = GUID {
    Data1: 0xD15A_7C41,
    Data2: 3,
    Data3: 4,
    Data4: [8, 7, 6, 5, 4, 3, 2, 1],
};

/// Offers a server channel through `server`, opens it from a client channel through `client`,
/// sends a request from the client, answers it from the server, and closes both; every step
/// goes through the backends.
fn suite(bus: &Bus, server: impl KmclServer, client: impl Kmcl) {
    HELD.with(|held| held.borrow_mut().clear());
    COMPLETED.with(|done| done.borrow_mut().clear());
    let mut vsp: VMBCHANNEL = null_mut();
    let mut vsc: VMBCHANNEL = null_mut();
    // SAFETY: the root device outlives the channel; `vsp` is writable.
    let status = unsafe { server.channel_allocate(bus.root_device(), 1, &mut vsp) };
    assert_eq!(status, 0);
    // SAFETY: a live server channel being initialised.
    let status = unsafe { server.server_channel_init_set_target_interface_id(vsp, TYPE, INSTANCE) };
    assert_eq!(status, 0);
    // SAFETY: as above.
    let status = unsafe { server.server_channel_init_set_flags(vsp, 0) };
    assert_eq!(status, 0);
    // SAFETY: as above; the callback is sound for KMCL's arguments and lives forever.
    let status =
        unsafe { server.channel_init_set_process_packet_callbacks(vsp, Some(hold_packet), None) };
    assert_eq!(status, 0);
    // SAFETY: a configured, disabled channel; its callback stays valid.
    let status = unsafe { server.channel_enable(vsp) };
    assert_eq!(status, 0);
    // SAFETY: enabled, not disabled, not from a state callback.
    unsafe { server.channel_start(vsp) };

    // SAFETY: the guest device outlives the channel; `vsc` is writable.
    let status = unsafe { client.channel_allocate(bus.guest_device(), 0, &mut vsc) };
    assert_eq!(status, 0);
    // SAFETY: a live client channel being initialised; `TYPE` is readable, the instance NULL.
    let status = unsafe { client.client_channel_init_set_target_pnp(vsc, &TYPE, null(), None) };
    assert_eq!(status, 0);
    // SAFETY: as above; the callback is sound for KMCL's arguments and lives forever.
    let status =
        unsafe { client.channel_init_set_process_packet_callbacks(vsc, Some(hold_packet), None) };
    assert_eq!(status, 0);
    // SAFETY: a configured, disabled channel.
    let status = unsafe { client.channel_enable(vsc) };
    assert_eq!(status, 0);
    bus.run_until_idle();

    let mut instance = GUID::default();
    // SAFETY: a live, open channel; `instance` is writable.
    unsafe { client.channel_get_interface_instance(vsc, &mut instance) };
    assert_eq!(instance, INSTANCE);

    // SAFETY: a live channel of this backend.
    let packet = unsafe { client.packet_allocate(vsc) };
    assert!(!packet.is_null());
    // SAFETY: a fresh packet, not in flight; the routine is sound for KMCL's arguments.
    unsafe { client.packet_set_completion_routine(packet, Some(record_completion)) };
    let request = *b"ping";
    let flags = VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION;
    let buffer = request.as_ptr() as PVOID;
    // SAFETY: the packet is not in flight; `request` is readable for 4 bytes, copied by KMCL.
    let status = unsafe { client.packet_send(packet, buffer, 4, null_mut(), flags) };
    assert_eq!(status, 0);
    bus.run_until_idle();

    let held = HELD.with(|held| std::mem::take(&mut *held.borrow_mut()));
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].1, b"ping");
    let reply = *b"pong";
    // SAFETY: a delivered, not yet completed packet, completed once with a readable reply.
    unsafe { server.channel_packet_complete(held[0].0, reply.as_ptr() as PVOID, 4) };
    bus.run_until_idle();
    let completed = COMPLETED.with(|done| std::mem::take(&mut *done.borrow_mut()));
    assert_eq!(completed, vec![(0, b"pong".to_vec())]);

    // SAFETY: the completion routine ran, so the packet is the driver's to free, once.
    unsafe { client.packet_free(packet) };
    // SAFETY: outside any callback; nothing incoming is outstanding.
    unsafe { client.channel_disable(vsc) };
    // SAFETY: disabled, cleaned up once.
    unsafe { client.channel_cleanup(vsc) };
    // SAFETY: outside any callback; the one incoming packet was completed.
    unsafe { server.channel_disable(vsp) };
    // SAFETY: disabled, cleaned up once.
    unsafe { server.channel_cleanup(vsp) };
    let report = bus.leak_report();
    assert_eq!(
        (report.channels, report.packets, report.incoming_packets),
        (0, 0, 0)
    );
}

/// The client table of `bus`, as an interface query returns it.
fn queried_client_table(bus: &Bus) -> KMCL_CLIENT_INTERFACE_V1 {
    let mut table = KMCL_CLIENT_INTERFACE_V1::default();
    // SAFETY: the sim defines the interface type GUID; it is only read.
    let interface_type = unsafe { &KMCL_CLIENT_INTERFACE_TYPE };
    // CAST: the table is 360 bytes.
    let size = size_of::<KMCL_CLIENT_INTERFACE_V1>() as u16;
    // SAFETY: `table` is a writable, aligned client table of `size` bytes.
    let status = unsafe {
        bus.query_interface(
            interface_type,
            size,
            KMCL_CLIENT_INTERFACE_VERSION_V1,
            &mut table.InterfaceHeader,
        )
    };
    assert_eq!(status, 0);
    table
}

/// The server table of `bus`, as an interface query returns it.
fn queried_server_table(bus: &Bus) -> KMCL_SERVER_INTERFACE_V1 {
    let mut table = KMCL_SERVER_INTERFACE_V1::default();
    // SAFETY: the sim defines the interface type GUID; it is only read.
    let interface_type = unsafe { &KMCL_SERVER_INTERFACE_TYPE };
    // CAST: the table is 472 bytes.
    let size = size_of::<KMCL_SERVER_INTERFACE_V1>() as u16;
    // SAFETY: `table` is a writable, aligned server table of `size` bytes.
    let status = unsafe {
        bus.query_interface(
            interface_type,
            size,
            KMCL_SERVER_INTERFACE_VERSION_V1,
            &mut table.ClientMethods.InterfaceHeader,
        )
    };
    assert_eq!(status, 0);
    table
}

#[test]
fn the_linked_backend_runs_the_suite() {
    let bus = Bus::new();
    suite(&bus, Linked, Linked);
    assert_eq!(size_of::<Linked>(), 0);
    bus.assert_no_leaks();
}

#[test]
fn the_table_backends_run_the_same_suite_and_are_released() {
    let bus = Bus::new();
    // Miri cannot read the extern statics holding the interface type GUIDs: it takes the tables
    // the sim's query would fill.
    let (server_table, client_table) = if cfg!(miri) {
        (bus.server_interface(), bus.client_interface())
    } else {
        (queried_server_table(&bus), queried_client_table(&bus))
    };
    let server_context = server_table.ClientMethods.InterfaceHeader.Context;
    let client_context = client_table.InterfaceHeader.Context;
    // SAFETY: both tables come from successful queries; their references are handed over.
    let server = unsafe { ServerInterface::from_raw(server_table) }.unwrap();
    // SAFETY: as above.
    let client = unsafe { ClientInterface::from_raw(client_table) }.unwrap();
    suite(&bus, &server, &client);
    assert_eq!(interface_reference_count(server_context), Some(1));
    assert_eq!(interface_reference_count(client_context), Some(1));
    drop(server);
    drop(client);
    assert_eq!(interface_reference_count(server_context), Some(0));
    assert_eq!(interface_reference_count(client_context), Some(0));
    bus.assert_no_leaks();
}

#[test]
fn the_client_part_of_a_server_table_serves_a_client() {
    let bus = Bus::new();
    // SAFETY: the sim's tables stand for successful queries; the references are handed over.
    let server = unsafe { ServerInterface::from_raw(bus.server_interface()) }.unwrap();
    // SAFETY: as above (the client part of a queried server table).
    let client =
        unsafe { ClientInterface::from_raw(bus.server_interface().ClientMethods) }.unwrap();
    suite(&bus, server, client);
    bus.assert_no_leaks();
}

static SIZEOF_CALLS: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn counting_sizeof_packet(channel: VMBCHANNEL) -> u32 {
    SIZEOF_CALLS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: forwards the caller's live channel to the sim's function.
    unsafe { VmbChannelSizeofPacket(channel) }
}

#[test]
fn a_table_backend_calls_through_its_table_and_linked_does_not() {
    let bus = Bus::new();
    let mut table = bus.client_interface();
    table.VmbChannelSizeofPacket = Some(counting_sizeof_packet);
    // SAFETY: a sim table (one reference, handed over) whose replaced entry forwards to the
    // function of its name.
    let client = unsafe { ClientInterface::from_raw(table) }.unwrap();
    let mut channel = null_mut();
    // SAFETY: the guest device outlives the channel; `channel` is writable.
    let status = unsafe { client.channel_allocate(bus.guest_device(), 0, &mut channel) };
    assert_eq!(status, 0);
    let before = SIZEOF_CALLS.load(Ordering::SeqCst);
    // SAFETY: a live channel of this table.
    let through_table = unsafe { client.channel_sizeof_packet(channel) };
    assert_eq!(SIZEOF_CALLS.load(Ordering::SeqCst), before + 1);
    // SAFETY: the same channel; on the sim the exports and the table share one KMCL.
    let linked = unsafe { Linked.channel_sizeof_packet(channel) };
    assert_eq!(SIZEOF_CALLS.load(Ordering::SeqCst), before + 1);
    assert_eq!(through_table, linked);
    assert!(linked > 0);
    // SAFETY: never enabled, cleaned up once.
    unsafe { client.channel_cleanup(channel) };
    drop(client);
    bus.assert_no_leaks();
}

#[test]
fn a_null_client_entry_is_a_typed_error_and_the_reference_is_released() {
    let bus = Bus::new();
    let mut table = bus.client_interface();
    table.VmbPacketSend = None;
    table.VmbPacketSetPointer = None;
    let context = table.InterfaceHeader.Context;
    // SAFETY: a sim table whose reference is handed over; NULL entries are what is tested.
    let result = unsafe { ClientInterface::from_raw(table) };
    assert!(matches!(
        result,
        Err(Error::MissingTableEntry(KmclFunction::VmbPacketSend))
    ));
    assert_eq!(interface_reference_count(context), Some(0));
    bus.assert_no_leaks();
}

#[test]
fn a_null_server_only_entry_is_a_typed_error_and_the_reference_is_released() {
    let bus = Bus::new();
    let mut table = bus.server_interface();
    table.ServerMethods.VmbServerChannelInitSetVmbusHandle = None;
    let context = table.ClientMethods.InterfaceHeader.Context;
    // SAFETY: a sim table whose reference is handed over; the NULL entry is what is tested.
    let result = unsafe { ServerInterface::from_raw(table) };
    assert!(matches!(
        result,
        Err(Error::MissingTableEntry(
            KmclFunction::VmbServerChannelInitSetVmbusHandle
        ))
    ));
    assert_eq!(interface_reference_count(context), Some(0));
    bus.assert_no_leaks();
}

#[test]
fn a_table_of_another_version_or_a_smaller_size_is_rejected() {
    let bus = Bus::new();
    let mut table = bus.client_interface();
    table.InterfaceHeader.Version = 2;
    let context = table.InterfaceHeader.Context;
    // SAFETY: a sim table whose reference is handed over; the version is what is tested.
    let result = unsafe { ClientInterface::from_raw(table) };
    assert!(matches!(
        result,
        Err(Error::InterfaceTableMismatch {
            size: 360,
            version: 2
        })
    ));
    assert_eq!(interface_reference_count(context), Some(0));

    // The client part of a server table is large enough for a client table, not the reverse.
    let mut table = bus.server_interface();
    table.ClientMethods.InterfaceHeader.Size = 360;
    // SAFETY: as above; the size is what is tested.
    let result = unsafe { ServerInterface::from_raw(table) };
    assert!(matches!(
        result,
        Err(Error::InterfaceTableMismatch {
            size: 360,
            version: 1
        })
    ));
    assert!(matches!(
        Error::InterfaceTableMismatch {
            size: 0,
            version: 0
        }
        .status(),
        vmbus_kmcl::NtStatus::NOT_SUPPORTED
    ));
    bus.assert_no_leaks();
}

#[test]
fn the_function_list_matches_the_tables() {
    let all = KmclFunction::ALL;
    assert_eq!(all.len(), 55);
    assert_eq!(all.iter().filter(|f| f.is_server_only()).count(), 14);
    assert_eq!(all[0].name(), "VmbChannelAllocate");
    assert_eq!(
        KmclFunction::VmbConvertVmbusHandleToKernelHandle.to_string(),
        "VmbConvertVmbusHandleToKernelHandle"
    );
    // 41 client entries after the 32-byte header, 14 server-only ones.
    assert_eq!(size_of::<KMCL_CLIENT_INTERFACE_V1>(), 32 + 41 * 8);
    assert_eq!(size_of::<KMCL_SERVER_ONLY_METHODS>(), 14 * 8);
}

static CONVERSIONS: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn counting_conversion(user: HANDLE, kernel: PHANDLE) -> NTSTATUS {
    CONVERSIONS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: forwards the caller's arguments to the sim's function of the same name.
    unsafe { vmbus_kmcl_sim::nt::VmbConvertVmbusHandleToKernelHandle(user, kernel) }
}

#[test]
fn the_seed_conversion_goes_through_the_server_table() {
    let bus = Bus::new();
    let mut table = bus.server_interface();
    table.ServerMethods.VmbConvertVmbusHandleToKernelHandle = Some(counting_conversion);
    // SAFETY: a sim table (one reference, handed over) whose replaced entry forwards to the
    // function of its name.
    let server = unsafe { ServerInterface::from_raw(table) }.unwrap();
    let worker = vmbus_kmcl_sim::nt::Process::new("vmwp");
    let raw = bus.open_vmbus_handle_in(&worker);
    let thread = worker.enter();
    let irp = thread.issue_irp();
    // SAFETY: the simulated IRP outlives the request.
    let request =
        unsafe { vmbus_kmcl::Request::from_raw(std::ptr::NonNull::new(irp.as_ptr()).unwrap()) };
    let before = CONVERSIONS.load(Ordering::SeqCst);
    let kernel = request.convert_vmbus_handle_with(&server, raw).unwrap();
    assert_eq!(CONVERSIONS.load(Ordering::SeqCst), before + 1);
    // The linked default takes the direct export, not the table.
    let again = request.convert_vmbus_handle(raw).unwrap();
    assert_eq!(CONVERSIONS.load(Ordering::SeqCst), before + 1);
    drop((kernel, again));
    drop(irp);
    drop(thread);
    drop(server);
    bus.assert_no_leaks();
}
