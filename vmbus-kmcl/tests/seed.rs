//! The seed flow on the emulated kernel: a user-mode VMBus handle of a worker process converted
//! into a kernel handle, with the process rules and the handle accounting observed.

use core::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};

use vmbus_kmcl::{
    with_current_process, Error, HandleValue, KernelHandle, NtStatus, ProcessId, ProcessRef,
    UserHandle,
};
use vmbus_kmcl_sim::nt::{self, Object, Process, Violation};
use vmbus_kmcl_sys::HANDLE;

/// A bus id of its own for each test, so tests running in parallel never share accounting.
fn fresh_bus_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1 << 40);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn handles_are_one_pointer_wide() {
    assert_eq!(size_of::<KernelHandle>(), size_of::<HANDLE>());
    assert_eq!(size_of::<Option<KernelHandle>>(), size_of::<HANDLE>());
    assert_eq!(size_of::<UserHandle<'_>>(), size_of::<HANDLE>());
}

#[test]
fn conversion_in_the_owning_process_yields_a_kernel_handle_closed_once_on_drop() {
    let bus = fresh_bus_id();
    let worker = Process::new("vmwp");
    let raw = worker.open_vmbus_handle(bus);

    let kernel = {
        let _in_worker = worker.enter();
        with_current_process(|cx| UserHandle::new(raw, cx).to_kernel_handle())
    }
    .expect("conversion in the owning process succeeds");

    assert!(nt::is_open_kernel_handle(kernel.as_raw()));
    assert_eq!(nt::kernel_vmbus_handle_bus(kernel.as_raw()), Some(bus));
    assert_eq!(worker.open_kernel_handles(), 1);
    // The kernel handle outlives the scope and works from any process.
    let value = kernel.as_raw();
    drop(kernel);
    assert!(!nt::is_open_kernel_handle(value));
    assert_eq!(worker.open_kernel_handles(), 0);
    assert_eq!(nt::open_kernel_handles_for_bus(bus), 0);
    assert!(
        nt::take_violations(Some(value)).is_empty(),
        "closed exactly once"
    );
    // The user handle is untouched: it still belongs to the worker.
    assert_eq!(worker.open_handles(), 1);
}

#[test]
fn conversion_from_another_process_fails_with_invalid_handle_and_opens_nothing() {
    let bus = fresh_bus_id();
    let worker = Process::new("vmwp");
    let other = Process::new("other");
    let raw = worker.open_vmbus_handle(bus);

    let result = {
        let _in_other = other.enter();
        with_current_process(|cx| UserHandle::new(raw, cx).to_kernel_handle())
    };

    assert_eq!(result.unwrap_err(), Error::Status(NtStatus::INVALID_HANDLE));
    assert_eq!(nt::open_kernel_handles_for_bus(bus), 0);
    assert_eq!(
        worker.open_kernel_handles() + other.open_kernel_handles(),
        0
    );
    assert_eq!(worker.open_handles(), 1);
}

#[test]
fn invalid_and_wrong_type_handles_map_to_their_errors() {
    let worker = Process::new("vmwp");
    let file = worker.open_handle(Object::Other);
    let _in_worker = worker.enter();
    let closed = worker.open_vmbus_handle(fresh_bus_id());
    assert!(worker.close_handle(closed));

    let results = with_current_process(|cx| {
        [
            UserHandle::new(core::ptr::null_mut(), cx).to_kernel_handle(),
            UserHandle::new(closed, cx).to_kernel_handle(),
            UserHandle::new(file, cx).to_kernel_handle(),
        ]
        .map(|r| r.map(|_| ()))
    });
    assert_eq!(
        results,
        [
            Err(Error::Status(NtStatus::INVALID_HANDLE)),
            Err(Error::Status(NtStatus::INVALID_HANDLE)),
            Err(Error::Status(NtStatus::OBJECT_TYPE_MISMATCH)),
        ]
    );
    assert_eq!(worker.open_kernel_handles(), 0);
}

#[test]
fn close_reports_the_status_and_hands_the_handle_back_once() {
    let bus = fresh_bus_id();
    let worker = Process::new("vmwp");
    let raw = worker.open_vmbus_handle(bus);
    let _in_worker = worker.enter();
    let kernel = with_current_process(|cx| UserHandle::new(raw, cx).to_kernel_handle()).unwrap();
    let value = kernel.as_raw();

    assert_eq!(kernel.close(), Ok(()));
    assert!(!nt::is_open_kernel_handle(value));

    // into_raw gives up ownership: nothing is closed until the caller does it.
    let kernel = with_current_process(|cx| UserHandle::new(raw, cx).to_kernel_handle()).unwrap();
    let raw_kernel = kernel.into_raw();
    assert!(nt::is_open_kernel_handle(raw_kernel));
    // SAFETY: `raw_kernel` is an open kernel handle this test owns, handed back once.
    let again = unsafe { KernelHandle::from_raw(raw_kernel) }.expect("not NULL");
    drop(again);
    assert_eq!(nt::open_kernel_handles_for_bus(bus), 0);
    assert!(nt::take_violations(Some(raw_kernel)).is_empty());
}

#[test]
fn the_emulator_reports_a_double_close() {
    let worker = Process::new("vmwp");
    let raw = worker.open_vmbus_handle(fresh_bus_id());
    let _in_worker = worker.enter();
    let kernel = with_current_process(|cx| UserHandle::new(raw, cx).to_kernel_handle()).unwrap();
    let value = kernel.into_raw();
    // SAFETY: each `from_raw` claims ownership of the same handle: this is the misuse the
    // emulator must catch; the handle is a plain value, so only the second close can fail.
    let first = unsafe { KernelHandle::from_raw(value) }.unwrap();
    // SAFETY: as above, deliberately the same handle a second time.
    let second = unsafe { KernelHandle::from_raw(value) }.unwrap();
    assert_eq!(first.close(), Ok(()));
    assert_eq!(second.close(), Err(Error::Status(NtStatus::INVALID_HANDLE)));
    assert_eq!(
        nt::take_violations(Some(value)),
        vec![Violation::DoubleClose(value.addr())]
    );
}

#[test]
fn attach_runs_in_the_target_process_and_restores_the_previous_one() {
    let bus = fresh_bus_id();
    let worker = Process::new("vmwp");
    let raw = worker.open_vmbus_handle(bus);
    let worker_ref = ProcessRef::lookup(raw_id(&worker)).expect("the worker exists");
    assert_eq!(worker_ref.as_raw(), worker.as_eprocess());

    // A system thread (not in the worker) attaches to it and converts there.
    let kernel = with_current_process(|cx| {
        assert_eq!(cx.process(), nt::system_process().as_eprocess());
        // The raw value crosses into the attached region as plain data.
        let value = HandleValue::new(raw);
        let kernel = cx.attach(&worker_ref, |attached| {
            assert_eq!(attached.process(), worker.as_eprocess());
            UserHandle::from_value(value, attached).to_kernel_handle()
        });
        assert_eq!(nt::current_process().id(), nt::system_process().id());
        assert_eq!(nt::attach_depth(), 0);
        kernel
    })
    .expect("converted while attached");
    assert_eq!(nt::kernel_vmbus_handle_bus(kernel.as_raw()), Some(bus));
    drop(kernel);
    drop(worker_ref);
    assert_eq!(
        worker.outstanding_references(),
        0,
        "the lookup reference was dropped"
    );
}

#[test]
fn attach_detaches_when_the_closure_panics() {
    let worker = Process::new("vmwp");
    let worker_ref = ProcessRef::lookup(raw_id(&worker)).unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        with_current_process(|cx| {
            cx.attach(&worker_ref, |_| {
                assert_eq!(nt::current_process().id(), worker.id());
                panic!("driver bug inside the attached region");
            })
        })
    }));
    assert!(result.is_err());
    assert_eq!(nt::attach_depth(), 0);
    // An unbalanced or missing detach would leave the worker attached.
    assert_eq!(nt::current_process().id(), nt::system_process().id());
}

#[test]
fn lookup_of_an_unknown_process_fails() {
    let missing = std::ptr::null_mut::<u8>().wrapping_add(3).cast();
    assert_eq!(
        ProcessRef::lookup(ProcessId::from_raw(missing)).unwrap_err(),
        Error::Status(NtStatus::INVALID_CID)
    );
}

fn raw_id(process: &Process) -> ProcessId {
    // CAST: sim process ids are small.
    ProcessId::from_raw(
        std::ptr::null_mut::<u8>()
            .wrapping_add(process.id() as usize)
            .cast(),
    )
}

/// Why the process context matters: with Windows' per-process numbering, the worker's handle
/// value exists in another VM's worker too, and converting it there yields a kernel handle to
/// the OTHER VM's VMBus. KMCL cannot tell; only running in the right process can. The types make
/// the right process the only one safe code can convert in (given `with_current_process` is
/// called from the requestor's thread).
#[test]
fn the_same_value_in_another_process_names_another_vm() {
    let vm_a = fresh_bus_id();
    let vm_b = fresh_bus_id();
    let worker_a = Process::with_windows_handle_numbering("vmwp A");
    let worker_b = Process::with_windows_handle_numbering("vmwp B");
    let raw_a = worker_a.open_vmbus_handle(vm_a);
    let raw_b = worker_b.open_vmbus_handle(vm_b);
    assert_eq!(raw_a, raw_b, "both tables start at the same value");

    let convert_in = |process: &Process| {
        let _thread = process.enter();
        with_current_process(|cx| UserHandle::new(raw_a, cx).to_kernel_handle()).unwrap()
    };
    let right = convert_in(&worker_a);
    let wrong = convert_in(&worker_b);
    assert_eq!(nt::kernel_vmbus_handle_bus(right.as_raw()), Some(vm_a));
    assert_eq!(nt::kernel_vmbus_handle_bus(wrong.as_raw()), Some(vm_b));
}
