//! The NT emulation's rules: misuse of kernel handles and attach state is caught, attributed to
//! the bus it concerns, and fails that bus's accounting.

use vmbus_kmcl_sim::nt::{self, Process, Violation};
use vmbus_kmcl_sim::Bus;
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
