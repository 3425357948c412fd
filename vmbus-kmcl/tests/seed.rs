//! The seed flow on the emulated kernel: a user-mode VMBus handle of a worker process converted
//! into a kernel handle through the request that carried it, with the process rules, the IRQL
//! rules and the handle accounting observed.

use core::mem::size_of;
use core::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use vmbus_kmcl::irql::{APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};
use vmbus_kmcl::{
    DeferredHandle, Error, KernelHandle, NtStatus, ProcessId, ProcessRef, Request, UserHandle,
};
use vmbus_kmcl_sim::nt::{self, Irp, Object, Process, Violation};
use vmbus_kmcl_sys::HANDLE;

/// A bus id of its own for each test, so tests running in parallel never share accounting.
fn fresh_bus_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1 << 40);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The driver's view of a simulated IRP.
fn request(irp: &Irp) -> Request<'_> {
    // SAFETY: the simulated IRP stays alive as long as the borrow of `irp`.
    unsafe { Request::from_raw(NonNull::new(irp.as_ptr()).unwrap()) }
}

fn raw_id(process: &Process) -> ProcessId {
    // CAST: sim process ids are small.
    ProcessId::from_raw(core::ptr::without_provenance_mut(process.id() as usize))
}

/// Two VM worker processes numbering their handles as Windows does, so that one value names
/// A's VMBus in A and B's VMBus in B.
struct TwoVms {
    worker_a: Process,
    worker_b: Process,
    vm_a: u64,
    vm_b: u64,
    raw: HANDLE,
}

fn two_vms() -> TwoVms {
    let (vm_a, vm_b) = (fresh_bus_id(), fresh_bus_id());
    let worker_a = Process::with_windows_handle_numbering("vmwp A");
    let worker_b = Process::with_windows_handle_numbering("vmwp B");
    let raw = worker_a.open_vmbus_handle(vm_a);
    assert_eq!(raw, worker_b.open_vmbus_handle(vm_b), "the same value");
    TwoVms {
        worker_a,
        worker_b,
        vm_a,
        vm_b,
        raw,
    }
}

/// Runs `f` while this thread is attached to `process` by a raw attach the wrapper does not see:
/// what a stackful coroutine suspended inside an attach leaves behind.
fn while_attached_to<R>(process: &Process, f: impl FnOnce() -> R) -> R {
    let mut state = vmbus_kmcl_sys::nt::KAPC_STATE::zeroed();
    // SAFETY: a known process and a valid state; detached below on this thread.
    unsafe { vmbus_kmcl_sys::nt::KeStackAttachProcess(process.as_eprocess(), &mut state) };
    let result = f();
    // SAFETY: the state of the attach above, on this thread, innermost.
    unsafe { vmbus_kmcl_sys::nt::KeUnstackDetachProcess(&mut state) };
    result
}

/// Runs `f` at `irql` on this thread, then restores the level.
fn at_irql<R>(irql: u8, f: impl FnOnce() -> R) -> R {
    let previous = nt::set_current_irql(irql);
    let result = f();
    nt::set_current_irql(previous);
    result
}

#[test]
fn handles_are_one_pointer_wide_and_user_handles_two() {
    assert_eq!(size_of::<KernelHandle>(), size_of::<HANDLE>());
    assert_eq!(size_of::<Option<KernelHandle>>(), size_of::<HANDLE>());
    assert_eq!(size_of::<UserHandle<'_>>(), 2 * size_of::<HANDLE>());
    assert_eq!(size_of::<Request<'_>>(), size_of::<HANDLE>());
}

#[test]
fn the_seed_request_converts_in_the_worker_and_the_kernel_handle_is_closed_once() {
    let bus = fresh_bus_id();
    let worker = Process::new("vmwp");
    let raw = worker.open_vmbus_handle(bus);

    let kernel = {
        let thread = worker.enter();
        let irp = thread.issue_irp();
        request(&irp).convert_vmbus_handle(raw)
    }
    .expect("conversion in the requestor's thread succeeds");

    assert!(nt::is_open_kernel_handle(kernel.as_raw()));
    assert_eq!(nt::kernel_vmbus_handle_bus(kernel.as_raw()), Some(bus));
    assert_eq!(worker.open_kernel_handles(), 1);
    let value = kernel.as_raw();
    drop(kernel);
    assert!(!nt::is_open_kernel_handle(value));
    assert_eq!(nt::open_kernel_handles_for_bus(bus), 0);
    assert!(nt::take_violations(Some(value)).is_empty());
    assert!(nt::thread_report().is_empty());
    assert_eq!(worker.open_handles(), 1, "the user handle is untouched");
}

#[test]
fn the_request_context_wraps_and_converts_the_value_it_carried() {
    let bus = fresh_bus_id();
    let worker = Process::new("vmwp");
    let raw = worker.open_vmbus_handle(bus);
    let thread = worker.enter();
    let irp = thread.issue_irp();
    let kernel = request(&irp)
        .enter(|cx| {
            assert_eq!(cx.process(), worker.as_eprocess());
            UserHandle::new(raw, cx)?.to_kernel_handle()
        })
        .expect("the checks pass in the requestor's thread")
        .expect("the conversion succeeds");
    assert_eq!(nt::kernel_vmbus_handle_bus(kernel.as_raw()), Some(bus));
}

/// Case 1 of the seed rule: the request handled on a system worker thread, where a value chosen
/// by the sender would be looked up in the System process's table.
#[test]
fn a_request_handled_on_a_system_thread_is_refused() {
    let bus = fresh_bus_id();
    let worker = Process::new("vmwp");
    let raw = worker.open_vmbus_handle(bus);
    // The worker's thread waits in the kernel while the request is pending elsewhere.
    let thread = worker.enter();
    let irp = thread.issue_irp();
    let value = raw.addr();
    let result = std::thread::spawn(move || {
        let raw: HANDLE = core::ptr::without_provenance_mut(value);
        let request = request(&irp);
        (
            request.convert_vmbus_handle(raw).map(drop),
            request.enter(|_| ()),
            request.defer_vmbus_handle(raw).map(drop),
        )
    })
    .join()
    .unwrap();
    assert!(matches!(
        result,
        (
            Err(Error::RequestorMismatch),
            Err(Error::RequestorMismatch),
            Err(Error::RequestorMismatch)
        )
    ));
    assert_eq!(nt::open_kernel_handles_for_bus(bus), 0);
}

/// The same request handled in the requestor's thread but inside an attach to another process.
#[test]
fn a_request_handled_inside_an_attach_is_refused() {
    let worker = Process::new("vmwp");
    let other = Process::new("other");
    let raw = worker.open_vmbus_handle(fresh_bus_id());
    let thread = worker.enter();
    let irp = thread.issue_irp();
    let other_ref = ProcessRef::lookup(raw_id(&other)).unwrap();
    let irp_addr = irp.as_ptr().expose_provenance();
    let value = raw.addr();
    let result = other_ref
        .attach(move |_| {
            let raw: HANDLE = core::ptr::without_provenance_mut(value);
            let irp = core::ptr::with_exposed_provenance_mut(irp_addr);
            // SAFETY: the IRP outlives the attached region (it is dropped after it).
            let request = unsafe { Request::from_raw(NonNull::new(irp).unwrap()) };
            request.convert_vmbus_handle(raw).map(drop)
        })
        .unwrap();
    assert!(matches!(result, Err(Error::RequestorMismatch)));
    drop(irp);
}

#[test]
fn a_request_a_kernel_component_built_is_not_from_user_mode() {
    let worker = Process::new("vmwp");
    let raw = worker.open_vmbus_handle(fresh_bus_id());
    // A system thread issues the request itself: it is its own requestor, in kernel mode.
    let irp = Irp::issue();
    assert!(matches!(
        request(&irp).convert_vmbus_handle(raw),
        Err(Error::NotFromUserMode)
    ));
    assert!(matches!(
        request(&irp).enter(|_| ()),
        Err(Error::NotFromUserMode)
    ));
}

#[test]
fn values_that_are_never_user_handles_are_refused_before_kmcl() {
    let worker = Process::new("vmwp");
    let bus = fresh_bus_id();
    let raw = worker.open_vmbus_handle(bus);
    let thread = worker.enter();
    let irp = thread.issue_irp();
    let request = request(&irp);
    let kernel = request.convert_vmbus_handle(raw).unwrap();
    let not_user: [HANDLE; 3] = [
        core::ptr::null_mut(),
        kernel.as_raw(),
        core::ptr::without_provenance_mut(usize::MAX), // NtCurrentProcess()
    ];
    for value in not_user {
        assert!(matches!(
            request.convert_vmbus_handle(value),
            Err(Error::NotAUserHandle)
        ));
        assert!(matches!(
            request.enter(|cx| UserHandle::new(value, cx).map(drop)),
            Ok(Err(Error::NotAUserHandle))
        ));
        assert!(matches!(
            request.defer_vmbus_handle(value),
            Err(Error::NotAUserHandle)
        ));
    }
    assert_eq!(nt::open_kernel_handles_for_bus(bus), 1, "nothing converted");
    assert!(nt::take_violations(None).is_empty());
}

#[test]
fn invalid_and_wrong_type_handles_map_to_their_errors() {
    let worker = Process::new("vmwp");
    let file = worker.open_handle(Object::Other);
    let closed = worker.open_vmbus_handle(fresh_bus_id());
    assert!(worker.close_handle(closed));
    let thread = worker.enter();
    let irp = thread.issue_irp();
    let request = request(&irp);
    assert!(matches!(
        request.convert_vmbus_handle(closed),
        Err(Error::Status(NtStatus::INVALID_HANDLE))
    ));
    assert!(matches!(
        request.convert_vmbus_handle(file),
        Err(Error::Status(NtStatus::OBJECT_TYPE_MISMATCH))
    ));
    assert_eq!(worker.open_kernel_handles(), 0);
}

/// Cases 3 and 4: the thread is moved into another process while a scope with a user handle is
/// live (a stackful coroutine resumed inside another attach, or a generator that yielded out of
/// an attach and was forgotten, leaving the thread attached). The emulator's raw attach stands in
/// for what such a coroutine leaves behind; the conversion's process compare refuses.
#[test]
fn a_conversion_after_the_thread_moved_to_another_process_is_refused() {
    let TwoVms {
        worker_a,
        worker_b,
        vm_b,
        raw: raw_a,
        ..
    } = two_vms();
    let thread = worker_a.enter();
    let irp = thread.issue_irp();
    let result = request(&irp)
        .enter(|cx| {
            let handle = UserHandle::new(raw_a, cx)?;
            while_attached_to(&worker_b, || handle.to_kernel_handle())
        })
        .unwrap();
    assert!(matches!(result, Err(Error::WrongProcess)));
    assert_eq!(
        nt::open_kernel_handles_for_bus(vm_b),
        0,
        "B's VM not reached"
    );
}

/// Case 4 on the request path: a dispatch thread left attached to another process (by a
/// generator that yielded inside an attach and was forgotten) sees that process as the
/// requestor and as the current process; the not-attached check refuses.
#[test]
fn a_request_on_a_thread_left_attached_elsewhere_is_refused() {
    let TwoVms {
        worker_a,
        worker_b,
        vm_b,
        raw: raw_a,
        ..
    } = two_vms();
    let thread = worker_a.enter();
    let irp = thread.issue_irp();
    let (converted, entered) = while_attached_to(&worker_b, || {
        assert_eq!(irp.requestor().map(|p| p.id()), Some(worker_b.id()));
        (
            request(&irp).convert_vmbus_handle(raw_a).map(drop),
            request(&irp).enter(|_| ()),
        )
    });
    assert!(matches!(converted, Err(Error::RequestorMismatch)));
    assert!(matches!(entered, Err(Error::RequestorMismatch)));
    assert_eq!(
        nt::open_kernel_handles_for_bus(vm_b),
        0,
        "B's VM not reached"
    );
}

/// Case 5: every PASSIVE-only (or APC-only) operation refuses at DISPATCH_LEVEL.
#[test]
fn operations_above_their_irql_are_refused_with_the_level() {
    let bus = fresh_bus_id();
    let worker = Process::new("vmwp");
    let raw = worker.open_vmbus_handle(bus);
    let worker_ref = ProcessRef::lookup(raw_id(&worker)).unwrap();
    let thread = worker.enter();
    let irp = thread.issue_irp();
    let request = request(&irp);
    let too_high = |maximum| Error::IrqlTooHigh {
        current: DISPATCH_LEVEL,
        maximum,
    };
    at_irql(DISPATCH_LEVEL, || {
        assert_eq!(
            request.convert_vmbus_handle(raw).unwrap_err(),
            too_high(PASSIVE_LEVEL)
        );
        assert_eq!(request.enter(|_| ()).unwrap_err(), too_high(PASSIVE_LEVEL));
        assert_eq!(worker_ref.attach(|_| ()).unwrap_err(), too_high(APC_LEVEL));
        assert_eq!(
            ProcessRef::lookup(raw_id(&worker)).unwrap_err(),
            too_high(APC_LEVEL)
        );
    });
    // Raised inside the scope: the conversion reads the level itself.
    let inner = request
        .enter(|cx| {
            let handle = UserHandle::new(raw, cx)?;
            at_irql(DISPATCH_LEVEL, || handle.to_kernel_handle())
        })
        .unwrap();
    assert_eq!(inner.unwrap_err(), too_high(PASSIVE_LEVEL));
    // APC_LEVEL: attaching is allowed, converting is not.
    let at_apc = at_irql(APC_LEVEL, || request.convert_vmbus_handle(raw).map(drop));
    assert_eq!(
        at_apc.unwrap_err(),
        Error::IrqlTooHigh {
            current: APC_LEVEL,
            maximum: PASSIVE_LEVEL
        }
    );
    assert_eq!(nt::open_kernel_handles_for_bus(bus), 0);

    // Closing at DISPATCH_LEVEL hands the open handle back.
    let kernel = request.convert_vmbus_handle(raw).unwrap();
    let value = kernel.as_raw();
    let (error, back) = at_irql(DISPATCH_LEVEL, || kernel.close()).unwrap_err();
    assert_eq!(error, too_high(PASSIVE_LEVEL));
    assert!(nt::is_open_kernel_handle(value));
    let back = back.expect("the handle comes back");
    assert!(back.close().is_ok());
    assert!(!nt::is_open_kernel_handle(value));
    assert!(nt::thread_report()
        .iter()
        .all(|v| !matches!(v, Violation::IrqlTooHigh { .. })));
}

#[test]
#[cfg(debug_assertions)]
fn dropping_a_kernel_handle_above_passive_fails_a_debug_assertion() {
    let worker = Process::new("vmwp");
    let raw = worker.open_vmbus_handle(fresh_bus_id());
    let thread = worker.enter();
    let irp = thread.issue_irp();
    let kernel = request(&irp).convert_vmbus_handle(raw).unwrap();
    let value = kernel.as_raw();
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        at_irql(DISPATCH_LEVEL, || drop(kernel))
    }));
    nt::set_current_irql(PASSIVE_LEVEL);
    assert!(dropped.is_err(), "the debug assertion fires before ZwClose");
    assert!(nt::is_open_kernel_handle(value), "ZwClose was not called");
    // SAFETY: the handle the failed drop left open, closed once here at PASSIVE_LEVEL.
    drop(unsafe { KernelHandle::from_raw(value) });
    assert!(nt::thread_report().is_empty());
}

#[test]
fn a_deferred_handle_converts_in_its_process_on_any_thread_and_releases_the_reference() {
    let TwoVms {
        worker_a,
        worker_b,
        vm_a,
        raw,
        ..
    } = two_vms();
    let deferred: DeferredHandle = {
        let thread = worker_a.enter();
        let irp = thread.issue_irp();
        request(&irp).defer_vmbus_handle(raw).unwrap()
    };
    assert_eq!(deferred.process().as_raw(), worker_a.as_eprocess());
    assert_eq!(worker_a.outstanding_references(), 1);
    // Case 2: a worker thread converts it, even from inside an attach to B.
    let b_ref = ProcessRef::lookup(raw_id(&worker_b)).unwrap();
    let kernel = std::thread::spawn(move || {
        let kernel = b_ref
            .attach(move |_| deferred.to_kernel_handle())
            .unwrap()
            .unwrap();
        assert_eq!(nt::current_process().id(), nt::system_process().id());
        assert_eq!(nt::attach_depth(), 0);
        kernel
    })
    .join()
    .unwrap();
    assert_eq!(nt::kernel_vmbus_handle_bus(kernel.as_raw()), Some(vm_a));
    assert_eq!(worker_a.outstanding_references(), 0);
    assert_eq!(worker_b.outstanding_references(), 0);
}

#[test]
fn a_deferred_handle_the_process_closed_meanwhile_fails_to_convert() {
    let worker = Process::new("vmwp");
    let raw = worker.open_vmbus_handle(fresh_bus_id());
    let deferred = {
        let thread = worker.enter();
        let irp = thread.issue_irp();
        request(&irp).defer_vmbus_handle(raw).unwrap()
    };
    assert!(worker.close_handle(raw));
    assert!(matches!(
        deferred.to_kernel_handle(),
        Err(Error::Status(NtStatus::INVALID_HANDLE))
    ));
    assert_eq!(worker.outstanding_references(), 0);
    assert!(nt::thread_report().is_empty());
}

#[test]
fn close_reports_the_status_and_hands_the_handle_back_once() {
    let bus = fresh_bus_id();
    let worker = Process::new("vmwp");
    let raw = worker.open_vmbus_handle(bus);
    let thread = worker.enter();
    let irp = thread.issue_irp();
    let kernel = request(&irp).convert_vmbus_handle(raw).unwrap();
    let value = kernel.as_raw();
    assert!(kernel.close().is_ok());
    assert!(!nt::is_open_kernel_handle(value));

    // into_raw gives up ownership: nothing is closed until the caller does it.
    let kernel = request(&irp).convert_vmbus_handle(raw).unwrap();
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
    let thread = worker.enter();
    let irp = thread.issue_irp();
    let value = request(&irp).convert_vmbus_handle(raw).unwrap().into_raw();
    // SAFETY: each `from_raw` claims ownership of the same handle: this is the misuse the
    // emulator must catch; the handle is a plain value, so only the second close can fail.
    let first = unsafe { KernelHandle::from_raw(value) }.unwrap();
    // SAFETY: as above, deliberately the same handle a second time.
    let second = unsafe { KernelHandle::from_raw(value) }.unwrap();
    assert!(first.close().is_ok());
    assert!(matches!(
        second.close(),
        Err((Error::Status(NtStatus::INVALID_HANDLE), None))
    ));
    assert_eq!(
        nt::take_violations(Some(value)),
        vec![Violation::DoubleClose(value.addr())]
    );
}

#[test]
fn attach_runs_in_the_target_process_and_restores_the_previous_one() {
    let worker = Process::new("vmwp");
    let worker_ref = ProcessRef::lookup(raw_id(&worker)).expect("the worker exists");
    assert_eq!(worker_ref.as_raw(), worker.as_eprocess());
    let seen = worker_ref
        .attach(|attached| {
            assert_eq!(attached.check_current(), Ok(()));
            attached.process()
        })
        .unwrap();
    assert_eq!(seen, worker.as_eprocess());
    assert_eq!(nt::current_process().id(), nt::system_process().id());
    assert_eq!(nt::attach_depth(), 0);
    drop(worker_ref);
    assert_eq!(worker.outstanding_references(), 0);
}

#[test]
fn attach_detaches_when_the_closure_panics() {
    let worker = Process::new("vmwp");
    let worker_ref = ProcessRef::lookup(raw_id(&worker)).unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        worker_ref.attach(|_| {
            assert_eq!(nt::current_process().id(), worker.id());
            panic!("driver bug inside the attached region");
        })
    }));
    assert!(result.is_err());
    assert_eq!(nt::attach_depth(), 0);
    assert_eq!(nt::current_process().id(), nt::system_process().id());
}

/// The attach guard checks itself: undone while an inner attach it does not know is still in
/// effect (what coroutines resumed in the wrong order leave), it panics instead of detaching.
#[test]
fn an_attach_undone_out_of_order_panics() {
    let worker = Process::new("vmwp");
    let other = Process::new("other");
    let worker_ref = ProcessRef::lookup(raw_id(&worker)).unwrap();
    let mut state = vmbus_kmcl_sys::nt::KAPC_STATE::zeroed();
    let state_addr = std::ptr::from_mut(&mut state).expose_provenance();
    let other_process = other.as_eprocess().addr();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        worker_ref.attach(move |_| {
            let state = core::ptr::with_exposed_provenance_mut(state_addr);
            let other = core::ptr::without_provenance_mut(other_process);
            // SAFETY: a known process and the test's state, which outlives this call.
            unsafe { vmbus_kmcl_sys::nt::KeStackAttachProcess(other, state) };
        })
    }));
    assert!(result.is_err(), "the guard refused to detach");
    assert_eq!(nt::current_process().id(), other.id());
    // SAFETY: the state of the inner attach, undone on this thread, innermost first.
    unsafe { vmbus_kmcl_sys::nt::KeUnstackDetachProcess(&mut state) };
    assert_eq!(
        nt::current_process().id(),
        worker.id(),
        "the outer attach is left"
    );
}

#[test]
fn lookup_of_an_unknown_process_fails() {
    let missing = ProcessId::from_raw(core::ptr::without_provenance_mut(3));
    assert_eq!(
        ProcessRef::lookup(missing).unwrap_err(),
        Error::Status(NtStatus::INVALID_CID)
    );
}
