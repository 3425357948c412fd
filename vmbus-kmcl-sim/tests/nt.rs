//! The NT emulation's rules: misuse of kernel handles, attach state, enter guards and IRQL is
//! caught, attributed to the bus it concerns (or to the thread that committed it), and fails the
//! accounting; requests, previous mode, threads and references behave as the kernel's do.

use std::mem::size_of;
use std::sync::Mutex;

use vmbus_kmcl_sim::nt::{self, Irp, Process, Violation};
use vmbus_kmcl_sim::Bus;
use vmbus_kmcl_sys::nt::{KernelMode, UserMode, DISPATCH_LEVEL};
use vmbus_kmcl_sys::{nt as sys_nt, HANDLE};

const STATUS_SUCCESS: i32 = 0;
// CAST: NTSTATUS values as bit patterns.
const STATUS_INVALID_HANDLE: i32 = 0xC000_0008_u32 as i32;
// CAST: as above.
const STATUS_INVALID_PARAMETER: i32 = 0xC000_000D_u32 as i32;

fn convert_in(process: &Process, user: HANDLE) -> (i32, HANDLE) {
    let _thread = process.enter();
    let mut kernel: HANDLE = std::ptr::null_mut();
    // SAFETY: `kernel` is a valid place for the result.
    let status = unsafe { vmbus_kmcl_sys::VmbConvertVmbusHandleToKernelHandle(user, &mut kernel) };
    (status, kernel)
}

#[test]
fn a_double_close_fails_the_bus_accounting_until_taken() {
    let bus = Bus::new();
    let worker = Process::new("vmwp");
    let (status, kernel) = convert_in(&worker, bus.open_vmbus_handle_in(&worker));
    assert_eq!(status, STATUS_SUCCESS);
    assert_eq!(bus.leak_report().kernel_handles, 1);

    // SAFETY: an open kernel handle, closed once.
    assert_eq!(unsafe { sys_nt::ZwClose(kernel) }, STATUS_SUCCESS);
    // SAFETY: the same value again: the misuse under test (the emulation never dereferences it).
    assert_eq!(unsafe { sys_nt::ZwClose(kernel) }, STATUS_INVALID_HANDLE);

    let report = bus.leak_report();
    assert_eq!(report.kernel_handles, 0);
    assert!(
        !report.is_clean(),
        "the double close must make the bus unclean"
    );
    let taken = bus.take_violations();
    assert!(taken.iter().any(|v| v.contains("DoubleClose")), "{taken:?}");
    bus.assert_no_leaks();
}

#[test]
fn conversion_into_a_null_output_is_refused_and_reported() {
    let bus = Bus::new();
    let worker = Process::new("vmwp");
    let user = bus.open_vmbus_handle_in(&worker);
    let _thread = worker.enter();
    let status =
        // SAFETY: a NULL output is the misuse under test; the emulation checks for it.
        unsafe { vmbus_kmcl_sys::VmbConvertVmbusHandleToKernelHandle(user, std::ptr::null_mut()) };
    assert_eq!(status, STATUS_INVALID_PARAMETER);
    assert_eq!(bus.leak_report().kernel_handles, 0);
    assert_eq!(
        nt::take_violations_for_bus(bus.id()),
        vec![Violation::NullOutput("VmbConvertVmbusHandleToKernelHandle")]
    );
    bus.assert_no_leaks();
}

#[test]
fn a_handle_of_another_process_is_invalid_there() {
    let bus = Bus::new();
    let worker = Process::new("vmwp");
    let other = Process::new("other");
    let user = bus.open_vmbus_handle_in(&worker);
    assert_eq!(convert_in(&other, user).0, STATUS_INVALID_HANDLE);
    assert_eq!(bus.leak_report().kernel_handles, 0);
    bus.assert_no_leaks();
}

#[test]
fn attach_changes_the_current_process_until_the_matching_detach() {
    let worker = Process::new("vmwp");
    let before = nt::current_process().id();
    let mut state = sys_nt::KAPC_STATE::zeroed();
    // SAFETY: a known process and a valid state.
    unsafe { sys_nt::KeStackAttachProcess(worker.as_eprocess(), &mut state) };
    assert_eq!(nt::current_process().id(), worker.id());
    // SAFETY: the `IoGetCurrentProcess` export has no preconditions.
    let current = unsafe { sys_nt::IoGetCurrentProcess() };
    assert_eq!(current, worker.as_eprocess());
    // SAFETY: the state filled by the attach above.
    unsafe { sys_nt::KeUnstackDetachProcess(&mut state) };
    assert_eq!(nt::current_process().id(), before);
    assert_eq!(nt::attach_depth(), 0);
}

#[test]
fn a_detach_with_a_foreign_state_is_reported_and_changes_nothing() {
    let worker = Process::new("vmwp");
    let mut state = sys_nt::KAPC_STATE::zeroed();
    // SAFETY: a known process and a valid state.
    unsafe { sys_nt::KeStackAttachProcess(worker.as_eprocess(), &mut state) };
    let mut forged = sys_nt::KAPC_STATE::zeroed();
    // SAFETY: a valid (zeroed) state that no attach filled: the misuse under test.
    unsafe { sys_nt::KeUnstackDetachProcess(&mut forged) };
    assert_eq!(nt::current_process().id(), worker.id(), "still attached");
    // SAFETY: the real state.
    unsafe { sys_nt::KeUnstackDetachProcess(&mut state) };
    assert_eq!(nt::attach_depth(), 0);
    assert_eq!(
        nt::take_thread_violations(),
        vec![Violation::UnbalancedDetach]
    );
}

#[test]
fn irql_is_per_thread_and_passive_by_default() {
    // SAFETY: the export has no preconditions.
    assert_eq!(unsafe { sys_nt::KeGetCurrentIrql() }, sys_nt::PASSIVE_LEVEL);
    let previous = nt::set_current_irql(sys_nt::DISPATCH_LEVEL);
    // SAFETY: as above.
    let raised = unsafe { sys_nt::KeGetCurrentIrql() };
    assert_eq!(raised, sys_nt::DISPATCH_LEVEL);
    std::thread::spawn(|| {
        // SAFETY: as above.
        assert_eq!(unsafe { sys_nt::KeGetCurrentIrql() }, sys_nt::PASSIVE_LEVEL);
    })
    .join()
    .unwrap();
    nt::set_current_irql(previous);
}

fn raw_id(process: &Process) -> HANDLE {
    // CAST: sim process ids are small.
    std::ptr::without_provenance_mut(process.id() as usize)
}

#[test]
fn the_requestor_of_an_irp_is_the_process_of_the_thread_that_issued_it() {
    let worker = Process::new("vmwp");
    // The worker's thread waits in the kernel while the request is pending elsewhere.
    let thread = worker.enter();
    let irp = thread.issue_irp();
    assert_eq!(irp.requestor().map(|p| p.id()), Some(worker.id()));
    // SAFETY: a live simulated IRP.
    let requestor = unsafe { sys_nt::IoGetRequestorProcess(irp.as_ptr()) };
    assert_eq!(requestor, worker.as_eprocess());
    // Handled on another thread (a pended request), the requestor stays the same, while the
    // current process there is the System process.
    let irp_addr = irp.as_ptr().expose_provenance();
    let (requestor, current) = std::thread::spawn(move || {
        let irp: sys_nt::PIRP = std::ptr::with_exposed_provenance_mut(irp_addr);
        // SAFETY: the IRP outlives this thread (joined below, dropped after).
        let requestor = unsafe { sys_nt::IoGetRequestorProcess(irp) }.addr();
        // SAFETY: no preconditions.
        (requestor, unsafe { sys_nt::IoGetCurrentProcess() }.addr())
    })
    .join()
    .unwrap();
    assert_eq!(requestor, worker.as_eprocess().addr());
    assert_eq!(current, nt::system_process().as_eprocess().addr());
    // Since Vista the requestor is the process the issuing thread is attached to now.
    let other = Process::new("other");
    let mut state = sys_nt::KAPC_STATE::zeroed();
    // SAFETY: a known process and a valid state; detached below.
    unsafe { sys_nt::KeStackAttachProcess(other.as_eprocess(), &mut state) };
    assert_eq!(irp.requestor().map(|p| p.id()), Some(other.id()));
    // SAFETY: the state of the attach above.
    unsafe { sys_nt::KeUnstackDetachProcess(&mut state) };
    assert_eq!(irp.requestor().map(|p| p.id()), Some(worker.id()));
    drop(irp);
    drop(thread);
    // A request a system thread built itself has the System process as requestor.
    let own = Irp::issue();
    assert_eq!(
        own.requestor().map(|p| p.id()),
        Some(nt::system_process().id())
    );
    assert!(nt::thread_report().is_empty());
}

#[test]
fn the_current_process_id_is_the_own_process_also_while_attached() {
    let worker = Process::new("vmwp");
    let other = Process::new("other");
    let _thread = worker.enter();
    let mut state = sys_nt::KAPC_STATE::zeroed();
    // SAFETY: a known process and a valid state; detached below.
    unsafe { sys_nt::KeStackAttachProcess(other.as_eprocess(), &mut state) };
    // SAFETY: no preconditions.
    let own = unsafe { sys_nt::PsGetCurrentProcessId() };
    // SAFETY: no preconditions.
    let current = unsafe { sys_nt::IoGetCurrentProcess() };
    // SAFETY: the current process is a live process of the emulation.
    let attached = unsafe { sys_nt::PsGetProcessId(current) };
    // SAFETY: the state of the attach above.
    unsafe { sys_nt::KeUnstackDetachProcess(&mut state) };
    assert_eq!(own, raw_id(&worker));
    assert_eq!(attached, raw_id(&other));
    // SAFETY: the emulation only compares the pointer.
    assert!(unsafe { sys_nt::PsGetProcessId(std::ptr::null_mut()) }.is_null());
}

#[test]
fn an_unknown_irp_has_no_requestor_and_is_reported_to_the_thread() {
    let irp = Irp::issue();
    let stale = irp.as_ptr();
    drop(irp);
    // SAFETY: the emulation only compares the address; a stale one is the misuse under test.
    assert!(unsafe { sys_nt::IoGetRequestorProcess(stale) }.is_null());
    assert_eq!(nt::thread_report(), vec![Violation::UnknownIrp]);
    assert_eq!(nt::take_thread_violations(), vec![Violation::UnknownIrp]);
}

#[test]
fn the_previous_mode_is_user_mode_only_in_an_entered_thread() {
    // SAFETY: no preconditions.
    assert_eq!(unsafe { sys_nt::ExGetPreviousMode() }, KernelMode);
    let worker = Process::new("vmwp");
    let thread = worker.enter();
    // SAFETY: as above.
    assert_eq!(unsafe { sys_nt::ExGetPreviousMode() }, UserMode);
    drop(thread);
    // SAFETY: as above.
    assert_eq!(unsafe { sys_nt::ExGetPreviousMode() }, KernelMode);
}

#[test]
fn each_thread_has_its_own_thread_object() {
    // SAFETY: no preconditions.
    let here = unsafe { sys_nt::PsGetCurrentThread() }.addr();
    // SAFETY: as above.
    assert_eq!(unsafe { sys_nt::PsGetCurrentThread() }.addr(), here);
    // SAFETY: as above.
    let there = std::thread::spawn(|| unsafe { sys_nt::PsGetCurrentThread() }.addr())
        .join()
        .unwrap();
    assert_ne!(here, there);
}

#[test]
fn references_are_counted_and_a_leaked_one_fails_the_bus_of_the_thread() {
    let bus = Bus::new();
    let worker = Process::new("vmwp");
    let mut found: sys_nt::PEPROCESS = std::ptr::null_mut();
    // SAFETY: a valid place for the result.
    let status = unsafe { sys_nt::PsLookupProcessByProcessId(raw_id(&worker), &mut found) };
    assert_eq!(status, STATUS_SUCCESS);
    // SAFETY: the pointer is only compared by the emulation.
    let _ = unsafe { sys_nt::ObfReferenceObject(found.cast()) };
    assert_eq!(worker.outstanding_references(), 2);
    // SAFETY: as above.
    let _ = unsafe { sys_nt::ObfDereferenceObject(found.cast()) };
    assert_eq!(
        nt::thread_report(),
        vec![Violation::LeakedProcessReferences(worker.id(), 1)]
    );
    assert!(
        !bus.leak_report().is_clean(),
        "the leak reaches the bus check"
    );
    // SAFETY: as above; drops the last reference.
    let _ = unsafe { sys_nt::ObfDereferenceObject(found.cast()) };
    assert_eq!(worker.outstanding_references(), 0);
    bus.assert_no_leaks();
}

#[test]
fn a_violation_that_names_no_bus_fails_the_bus_checked_on_that_thread() {
    let bus = Bus::new();
    let mut state = sys_nt::KAPC_STATE::zeroed();
    // SAFETY: a valid state that no attach filled: the misuse under test.
    unsafe { sys_nt::KeUnstackDetachProcess(&mut state) };
    assert!(!bus.leak_report().is_clean());
    let taken = bus.take_violations();
    assert!(
        taken.iter().any(|v| v.contains("UnbalancedDetach")),
        "{taken:?}"
    );
    bus.assert_no_leaks();
    // Another thread's bus check does not see this thread's violations.
    let worker = Process::new("vmwp");
    let mut forged = sys_nt::KAPC_STATE::zeroed();
    // SAFETY: as above.
    unsafe { sys_nt::KeUnstackDetachProcess(&mut forged) };
    std::thread::spawn(|| Bus::new().assert_no_leaks())
        .join()
        .unwrap();
    assert_eq!(
        nt::take_thread_violations(),
        vec![Violation::UnbalancedDetach]
    );
    drop(worker);
}

#[test]
fn a_detach_on_another_thread_is_reported_and_changes_nothing() {
    let worker = Process::new("vmwp");
    let mut state = sys_nt::KAPC_STATE::zeroed();
    // SAFETY: a known process and a valid state.
    unsafe { sys_nt::KeStackAttachProcess(worker.as_eprocess(), &mut state) };
    let copy = state;
    let violations = std::thread::spawn(move || {
        let mut copy = copy;
        // SAFETY: a valid state, filled on another thread: the misuse under test.
        unsafe { sys_nt::KeUnstackDetachProcess(&mut copy) };
        nt::take_thread_violations()
    })
    .join()
    .unwrap();
    assert_eq!(violations, vec![Violation::DetachOnAnotherThread]);
    assert_eq!(
        nt::current_process().id(),
        worker.id(),
        "still attached here"
    );
    // SAFETY: the real state, on its own thread.
    unsafe { sys_nt::KeUnstackDetachProcess(&mut state) };
    assert_eq!(nt::attach_depth(), 0);
    assert!(nt::thread_report().is_empty());
}

#[test]
fn entering_twice_while_attached_or_out_of_order_is_reported() {
    let worker = Process::new("vmwp");
    let other = Process::new("other");
    let first = worker.enter();
    let second = other.enter();
    assert_eq!(nt::current_process().id(), other.id());
    drop(first);
    assert_eq!(
        nt::current_process().id(),
        other.id(),
        "the live guard stays"
    );
    drop(second);
    assert_eq!(nt::current_process().id(), nt::system_process().id());
    assert_eq!(
        nt::take_thread_violations(),
        vec![
            Violation::EnterWhileEntered,
            Violation::EnterGuardOutOfOrder
        ]
    );

    let mut state = sys_nt::KAPC_STATE::zeroed();
    // SAFETY: a known process and a valid state.
    unsafe { sys_nt::KeStackAttachProcess(worker.as_eprocess(), &mut state) };
    let inside = other.enter();
    drop(inside);
    // SAFETY: the state of the attach above.
    unsafe { sys_nt::KeUnstackDetachProcess(&mut state) };
    assert_eq!(
        nt::take_thread_violations(),
        vec![Violation::EnterWhileAttached]
    );
}

#[test]
fn passive_only_routines_above_passive_are_violations() {
    let bus = Bus::new();
    let worker = Process::new("vmwp");
    let user = bus.open_vmbus_handle_in(&worker);
    let (status, kernel) = {
        let _thread = worker.enter();
        let previous = nt::set_current_irql(DISPATCH_LEVEL);
        let mut kernel: HANDLE = std::ptr::null_mut();
        // SAFETY: `kernel` is a valid place for the result.
        let status =
            unsafe { vmbus_kmcl_sys::VmbConvertVmbusHandleToKernelHandle(user, &mut kernel) };
        nt::set_current_irql(previous);
        (status, kernel)
    };
    assert_eq!(status, STATUS_SUCCESS, "still converted, and reported");
    let previous = nt::set_current_irql(DISPATCH_LEVEL);
    // SAFETY: an open kernel handle, closed once.
    assert_eq!(unsafe { sys_nt::ZwClose(kernel) }, STATUS_SUCCESS);
    let mut state = sys_nt::KAPC_STATE::zeroed();
    // SAFETY: a known process and a valid state.
    unsafe { sys_nt::KeStackAttachProcess(worker.as_eprocess(), &mut state) };
    // SAFETY: the state of the attach above.
    unsafe { sys_nt::KeUnstackDetachProcess(&mut state) };
    let mut found: sys_nt::PEPROCESS = std::ptr::null_mut();
    // SAFETY: a valid place for the result.
    let _ = unsafe { sys_nt::PsLookupProcessByProcessId(raw_id(&worker), &mut found) };
    nt::set_current_irql(previous);
    // SAFETY: drops the lookup's reference.
    let _ = unsafe { sys_nt::ObfDereferenceObject(found.cast()) };

    let irql = DISPATCH_LEVEL;
    assert_eq!(
        nt::take_violations_for_bus(bus.id()),
        vec![
            Violation::IrqlTooHigh {
                routine: "VmbConvertVmbusHandleToKernelHandle",
                irql
            },
            Violation::IrqlTooHigh {
                routine: "ZwClose",
                irql
            },
        ]
    );
    assert_eq!(
        nt::take_thread_violations(),
        vec![
            Violation::IrqlTooHigh {
                routine: "KeStackAttachProcess",
                irql
            },
            Violation::IrqlTooHigh {
                routine: "PsLookupProcessByProcessId",
                irql
            },
        ]
    );
    bus.assert_no_leaks();
}

#[test]
#[cfg_attr(miri, ignore = "opens 2^20 + 1 handles")]
fn default_numbered_handle_values_never_overlap_between_processes() {
    let first = Process::new("first");
    let second = Process::new("second");
    // Past 2^20 handles, where a per-process stride of 2^20 bytes ran into the next process.
    let mut last = std::ptr::null_mut();
    for _ in 0..=(1 << 20) {
        last = first.open_handle(nt::Object::Other);
    }
    let other = second.open_handle(nt::Object::Other);
    // CAST: sim process ids are small.
    assert_eq!(
        last.addr() >> 32,
        first.id() as usize,
        "still in the first's range"
    );
    // CAST: as above.
    assert_eq!(other.addr() >> 32, second.id() as usize);
    assert!(
        !first.close_handle(other),
        "the second's value names nothing in the first"
    );
}

/// What the packet callback saw: its process, previous mode and attach depth.
static SEEN_IN_CALLBACK: Mutex<Vec<(usize, i8, usize)>> = Mutex::new(Vec::new());

unsafe extern "C" fn record_and_complete(
    _channel: vmbus_kmcl_sys::VMBCHANNEL,
    packet: vmbus_kmcl_sys::VMBPACKETCOMPLETION,
    _buffer: vmbus_kmcl_sys::PVOID,
    _length: u32,
    _flags: u32,
) {
    // SAFETY: no preconditions.
    let process = unsafe { sys_nt::IoGetCurrentProcess() }.addr();
    // SAFETY: no preconditions.
    let mode = unsafe { sys_nt::ExGetPreviousMode() };
    SEEN_IN_CALLBACK
        .lock()
        .unwrap()
        .push((process, mode, nt::attach_depth()));
    // SAFETY: the packet being delivered, completed once with no data.
    unsafe { vmbus_kmcl_sys::VmbChannelPacketComplete(packet, std::ptr::null_mut(), 0) };
}

/// Pairs a server and a client whose packet callback is `record_and_complete`, sends one
/// packet from the client, delivers it on this thread, and tears both down.
#[allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "one sequence of raw KMCL calls whose preconditions are the same: live channels of \
              this bus and buffers owned by the function"
)]
fn deliver_one_packet(bus: &Bus) {
    use vmbus_kmcl_sys::*;
    let ty = GUID {
        Data1: 0x5eed_0012,
        ..GUID::default()
    };
    let instance = GUID {
        Data1: 0x5eed_0013,
        ..GUID::default()
    };
    // SAFETY: the channels are allocated on the bus's devices, configured, enabled, used and
    // cleaned up in the documented order; the callback completes every packet.
    unsafe {
        let mut server = std::ptr::null_mut();
        assert_eq!(VmbChannelAllocate(bus.root_device(), 1, &mut server), 0);
        assert_eq!(
            VmbServerChannelInitSetTargetInterfaceId(server, ty, instance),
            0
        );
        assert_eq!(
            VmbChannelInitSetProcessPacketCallbacks(server, Some(record_and_complete), None),
            0
        );
        assert_eq!(VmbChannelEnable(server), 0);
        VmbChannelStart(server);
        let mut client = std::ptr::null_mut();
        assert_eq!(VmbChannelAllocate(bus.guest_device(), 0, &mut client), 0);
        assert_eq!(
            VmbClientChannelInitSetTargetPnp(client, &ty, std::ptr::null(), None),
            0
        );
        assert_eq!(
            VmbChannelInitSetProcessPacketCallbacks(client, Some(record_and_complete), None),
            0
        );
        assert_eq!(VmbChannelEnable(client), 0);
        bus.run_until_idle();
        let packet = VmbPacketAllocate(client);
        let message = *b"12345678";
        let flags = VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION;
        assert_eq!(
            VmbPacketSend(
                packet,
                message.as_ptr() as PVOID,
                8,
                std::ptr::null_mut(),
                flags
            ),
            0
        );
        bus.run_until_idle();
        VmbChannelDisable(client);
        VmbChannelCleanup(client);
        VmbChannelDisable(server);
        VmbChannelCleanup(server);
    }
}

#[test]
fn callbacks_run_in_the_system_process_whatever_the_pumping_thread_entered() {
    let bus = Bus::new();
    let worker = Process::new("vmwp");
    let other = Process::new("other");
    let thread = worker.enter();
    let mut state = sys_nt::KAPC_STATE::zeroed();
    // SAFETY: a known process and a valid state; detached below.
    unsafe { sys_nt::KeStackAttachProcess(other.as_eprocess(), &mut state) };
    deliver_one_packet(&bus);
    // The pumping thread's own state is back.
    assert_eq!(nt::current_process().id(), other.id());
    assert_eq!(nt::attach_depth(), 1);
    // SAFETY: the state of the attach above.
    unsafe { sys_nt::KeUnstackDetachProcess(&mut state) };
    drop(thread);
    let seen = SEEN_IN_CALLBACK.lock().unwrap().clone();
    let system = nt::system_process().as_eprocess().addr();
    assert_eq!(seen, vec![(system, KernelMode, 0)]);
    bus.assert_no_leaks();
}

/// Outputs and the attach state may sit at any address: the emulation reads and writes them
/// unaligned, so a misaligned caller pointer is a test failure at worst, never undefined
/// behaviour (Miri runs this test).
#[test]
fn nt_outputs_and_attach_state_are_accessed_unaligned() {
    let bus = Bus::new();
    let worker = Process::new("vmwp");
    let user = bus.open_vmbus_handle_in(&worker);
    // One spare byte in front of each buffer, so `+ 1` is misaligned for every type used.
    let mut handle_bytes = [0u8; size_of::<HANDLE>() + 1];
    let mut process_bytes = [0u8; size_of::<sys_nt::PEPROCESS>() + 1];
    let mut state_bytes = [0u8; size_of::<sys_nt::KAPC_STATE>() + 1];
    let kernel_out: *mut HANDLE = handle_bytes[1..].as_mut_ptr().cast();
    let process_out: *mut sys_nt::PEPROCESS = process_bytes[1..].as_mut_ptr().cast();
    let state: *mut sys_nt::KAPC_STATE = state_bytes[1..].as_mut_ptr().cast();
    {
        let _thread = worker.enter();
        // SAFETY: `kernel_out` has room for a HANDLE (alignment is what this test varies).
        let status =
            unsafe { vmbus_kmcl_sys::VmbConvertVmbusHandleToKernelHandle(user, kernel_out) };
        assert_eq!(status, STATUS_SUCCESS);
    }
    // SAFETY: the conversion wrote a handle there.
    let kernel = unsafe { kernel_out.read_unaligned() };
    assert!(nt::is_open_kernel_handle(kernel));
    // SAFETY: `process_out` has room for a PEPROCESS; the id is the worker's.
    let status = unsafe { sys_nt::PsLookupProcessByProcessId(raw_id(&worker), process_out) };
    assert_eq!(status, STATUS_SUCCESS);
    // SAFETY: the lookup wrote the referenced process there.
    let process = unsafe { process_out.read_unaligned() };
    assert_eq!(process, worker.as_eprocess());
    // SAFETY: a known process; `state` has room for a KAPC_STATE.
    unsafe { sys_nt::KeStackAttachProcess(process, state) };
    assert_eq!(nt::current_process().id(), worker.id());
    // SAFETY: the state filled by the attach above, on this thread.
    unsafe { sys_nt::KeUnstackDetachProcess(state) };
    assert_eq!(nt::attach_depth(), 0);
    // SAFETY: the reference taken by the lookup, released once.
    unsafe { sys_nt::ObfDereferenceObject(process.cast()) };
    // SAFETY: the kernel handle converted above, closed once.
    assert_eq!(unsafe { sys_nt::ZwClose(kernel) }, STATUS_SUCCESS);
    bus.assert_no_leaks();
}
