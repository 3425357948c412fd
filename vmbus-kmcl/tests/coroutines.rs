//! Cases 3 and 4 of the seed rule with real stackful coroutines (`corosensei`, `generator`),
//! which the compile-time brand cannot see: a scope suspended and resumed in another process,
//! and an attach left in effect by a generator that yielded inside it. The run-time process
//! compare of every conversion, the not-attached check of the request path and the attach
//! guard's own checks refuse what they would otherwise allow. Coroutines switch stacks, which
//! Miri does not run.
#![cfg(not(miri))]

use core::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use corosensei::{Coroutine, CoroutineResult};
use generator::Gn;
use vmbus_kmcl::{Error, KernelHandle, ProcessId, ProcessRef, Request, UserHandle};
use vmbus_kmcl_sim::nt::{self, Process, Violation};
use vmbus_kmcl_sys::HANDLE;

fn fresh_bus_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1 << 41);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn raw_id(process: &Process) -> ProcessId {
    // CAST: sim process ids are small.
    ProcessId::from_raw(core::ptr::without_provenance_mut(process.id() as usize))
}

/// The driver's view of a simulated IRP, from its address.
fn request_at(irp: usize) -> Request<'static> {
    // SAFETY: each test keeps the simulated IRP alive until every coroutine using it is done.
    unsafe { Request::from_raw(NonNull::new(core::ptr::with_exposed_provenance_mut(irp)).unwrap()) }
}

/// Two VM worker processes whose handle tables hand out the same value for their own VMs.
struct TwoVms {
    worker_a: Process,
    worker_b: Process,
    vm_b: u64,
    /// The value naming A's VMBus in A, and B's VMBus in B.
    raw: usize,
}

fn two_vms() -> TwoVms {
    let worker_a = Process::with_windows_handle_numbering("vmwp A");
    let worker_b = Process::with_windows_handle_numbering("vmwp B");
    let vm_b = fresh_bus_id();
    let raw = worker_a.open_vmbus_handle(fresh_bus_id());
    assert_eq!(raw, worker_b.open_vmbus_handle(vm_b));
    TwoVms {
        worker_a,
        worker_b,
        vm_b,
        raw: raw.addr(),
    }
}

fn handle(raw: usize) -> HANDLE {
    core::ptr::without_provenance_mut(raw)
}

/// What a generator body reports: suspended, or finished with a conversion result.
enum Step {
    Suspended,
    Converted(vmbus_kmcl::Result<KernelHandle>),
}

/// Case 3 with `generator`, whose generators are `Send`: the body suspends inside a request
/// scope holding A's user handle, and is resumed inside an attach to B.
#[test]
fn a_generator_resumed_inside_another_attach_cannot_convert_there() {
    let vms = two_vms();
    let thread = vms.worker_a.enter();
    let irp = thread.issue_irp();
    let (irp_addr, raw) = (irp.as_ptr().expose_provenance(), vms.raw);
    let mut body = Gn::<()>::new_scoped(move |mut scope| {
        let converted = request_at(irp_addr).enter(|cx| {
            let user = UserHandle::new(handle(raw), cx)?;
            scope.yield_with(Step::Suspended);
            user.to_kernel_handle()
        });
        Step::Converted(converted.and_then(|inner| inner))
    });
    assert!(matches!(body.resume(), Some(Step::Suspended)));
    let b_ref = ProcessRef::lookup(raw_id(&vms.worker_b)).unwrap();
    let resumed = b_ref.attach(move |_| body.resume()).unwrap();
    assert!(matches!(
        resumed,
        Some(Step::Converted(Err(Error::WrongProcess)))
    ));
    assert_eq!(nt::open_kernel_handles_for_bus(vms.vm_b), 0);
    assert_eq!(nt::attach_depth(), 0);
    drop(b_ref);
    assert!(nt::thread_report().is_empty(), "{:?}", nt::thread_report());
}

/// Case 3 with `corosensei`: the coroutine suspends inside a request scope holding A's user
/// handle; the thread is then left attached to B (by a generator suspended inside an attach),
/// and the coroutine resumed there.
#[test]
fn a_corosensei_coroutine_resumed_in_another_process_cannot_convert_there() {
    let vms = two_vms();
    let thread = vms.worker_a.enter();
    let irp = thread.issue_irp();
    let (irp_addr, raw) = (irp.as_ptr().expose_provenance(), vms.raw);
    let mut coroutine = Coroutine::new(move |yielder, ()| {
        request_at(irp_addr)
            .enter(|cx| {
                let user = UserHandle::new(handle(raw), cx)?;
                yielder.suspend(());
                user.to_kernel_handle()
            })
            .and_then(|inner| inner)
    });
    assert!(matches!(coroutine.resume(()), CoroutineResult::Yield(())));

    let b_ref = ProcessRef::lookup(raw_id(&vms.worker_b)).unwrap();
    let mut leave_attached = Gn::<()>::new_scoped(move |mut scope| {
        b_ref.attach(|_| scope.yield_with(())).unwrap();
    });
    assert_eq!(leave_attached.resume(), Some(()));
    assert_eq!(
        nt::current_process().id(),
        vms.worker_b.id(),
        "left attached"
    );

    let CoroutineResult::Return(converted) = coroutine.resume(()) else {
        panic!("the coroutine returns");
    };
    assert!(matches!(converted, Err(Error::WrongProcess)));
    assert_eq!(nt::open_kernel_handles_for_bus(vms.vm_b), 0);

    // The generator finishes its attach on the same thread, innermost first: a clean detach.
    assert_eq!(leave_attached.resume(), Some(()), "the body's return value");
    assert!(leave_attached.is_done());
    assert_eq!(nt::attach_depth(), 0);
    assert!(nt::thread_report().is_empty(), "{:?}", nt::thread_report());
}

/// Case 4: the generator yields from inside the attach closure, so `attach` has not returned
/// while the caller goes on attached to B. A conversion with the caller's request context, and a
/// new request check, both refuse; forgetting the generator leaves the thread attached and the
/// reference it holds leaked, which the emulator's thread check reports.
#[test]
fn a_generator_that_yields_inside_an_attach_leaves_nothing_to_convert_with() {
    let vms = two_vms();
    let thread = vms.worker_a.enter();
    let irp = thread.issue_irp();
    let irp_addr = irp.as_ptr().expose_provenance();
    let b_ref = ProcessRef::lookup(raw_id(&vms.worker_b)).unwrap();
    let mut escape = Gn::<()>::new_scoped(move |mut scope| {
        b_ref.attach(|_| scope.yield_with(())).unwrap();
    });
    let converted = request_at(irp_addr)
        .enter(|cx| {
            let user = UserHandle::new(handle(vms.raw), cx)?;
            assert_eq!(escape.resume(), Some(()), "yielded inside the attach");
            user.to_kernel_handle()
        })
        .unwrap();
    assert!(matches!(converted, Err(Error::WrongProcess)));
    assert!(matches!(
        request_at(irp_addr).convert_vmbus_handle(handle(vms.raw)),
        Err(Error::RequestorMismatch)
    ));
    assert_eq!(nt::open_kernel_handles_for_bus(vms.vm_b), 0);

    std::mem::forget(escape);
    assert_eq!(nt::attach_depth(), 1, "still attached");
    assert_eq!(nt::current_process().id(), vms.worker_b.id());
    assert_eq!(
        nt::thread_report(),
        vec![Violation::LeakedProcessReferences(vms.worker_b.id(), 1)]
    );
}

/// The attach guard checks itself: two generators suspended inside attaches (to A, then B) and
/// finished in the wrong order. The first one's guard finds B still attached and panics instead
/// of undoing B's attach with A's state.
#[test]
fn attaches_finished_out_of_order_by_generators_panic() {
    let vms = two_vms();
    let a_ref = ProcessRef::lookup(raw_id(&vms.worker_a)).unwrap();
    let b_ref = ProcessRef::lookup(raw_id(&vms.worker_b)).unwrap();
    let mut into_a = Gn::<()>::new_scoped(move |mut scope| {
        a_ref.attach(|_| scope.yield_with(())).unwrap();
    });
    let mut into_b = Gn::<()>::new_scoped(move |mut scope| {
        b_ref.attach(|_| scope.yield_with(())).unwrap();
    });
    assert_eq!(into_a.resume(), Some(()));
    assert_eq!(into_b.resume(), Some(()));
    assert_eq!(nt::attach_depth(), 2);
    let finished_a = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| into_a.resume()));
    assert!(finished_a.is_err(), "the guard of A refused to detach");
    assert_eq!(nt::attach_depth(), 2, "nothing was undone");
    // B's attach is innermost: it is undone cleanly.
    assert_eq!(into_b.resume(), Some(()), "the body's return value");
    assert!(into_b.is_done());
    assert_eq!(nt::attach_depth(), 1);
    assert_eq!(nt::current_process().id(), vms.worker_a.id());
}

/// A `Send` generator suspended inside an attach and finished on another thread: the guard
/// sees the other thread and panics instead of detaching there.
#[test]
fn an_attach_finished_on_another_thread_by_a_generator_panics() {
    let worker = Process::new("vmwp");
    let worker_ref = ProcessRef::lookup(raw_id(&worker)).unwrap();
    let mut inside = Gn::<()>::new_scoped(move |mut scope| {
        worker_ref.attach(|_| scope.yield_with(())).unwrap();
    });
    assert_eq!(inside.resume(), Some(()));
    assert_eq!(nt::current_process().id(), worker.id());
    let finished = std::thread::spawn(move || {
        let finished = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inside.resume()));
        (finished.is_err(), nt::attach_depth())
    })
    .join()
    .unwrap();
    assert_eq!(
        finished,
        (true, 0),
        "refused on the other thread, nothing undone there"
    );
    assert_eq!(nt::attach_depth(), 1, "this thread is still attached");
}
