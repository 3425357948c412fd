//! Emulation of the NT kernel services a KMCL driver uses besides KMCL: simulated processes
//! with their own user-mode handle tables, the kernel handle table, `ZwClose`, the current
//! process and thread, I/O requests with their requestor and previous mode, attaching to another
//! process, object references, the current IRQL, and `VmbConvertVmbusHandleToKernelHandle`, the
//! KMCL call that bridges the two kinds of handle.
//!
//! # The model
//!
//! * A [`Process`] stands for a user-mode process such as the VM worker process. Each has a
//!   handle table; [`Process::open_vmbus_handle`] puts a user-mode VMBus handle in it, as the
//!   worker process does when it opens the VM's VMBus device.
//! * Each thread has an own process (the system process unless a test [`Process::enter`]s
//!   another one, which models a user thread of that process that entered the kernel, with
//!   previous mode `UserMode`) and a stack of attached processes (`KeStackAttachProcess`). The
//!   current process (`IoGetCurrentProcess`) is the innermost attached process, else the own
//!   process. A thread that entered no process is a system thread (previous mode `KernelMode`).
//! * An [`Irp`] is an I/O request issued by the current thread: `IoGetRequestorProcess` returns
//!   the process that thread runs in at the time of the call (its attached process, if any, as
//!   since Windows Vista). Handing the `Irp` to another thread models a driver that pends the
//!   request and handles it on a worker thread.
//! * `PsGetCurrentProcessId` is the id of the thread's own process, also while it is attached
//!   (the `IoGetCurrentProcess` reference page tells the two apart this way);
//!   `PsGetProcessId(IoGetCurrentProcess())` is the id of the process it is attached to.
//! * Driver callbacks run as the system does: in the System process, with an empty attach
//!   stack and previous mode `KernelMode`, whatever the pumping thread has entered.
//! * User handle values are unique across processes by default (the process id is in the
//!   upper 32 bits), so a handle used in the wrong process is reported as invalid;
//!   [`Process::with_windows_handle_numbering`] numbers each table from 4 as Windows does, where
//!   the same value silently names another object.
//! * Kernel handles live in one global table, each tagged with the bus it refers to so that a
//!   bus can account for the handles converted from it.
//!
//! Misuse that a real kernel would punish with a bug check (closing a kernel handle twice, an
//! unbalanced detach, a PASSIVE-only routine called above `PASSIVE_LEVEL`) is recorded as a
//! [`Violation`], printed, and answered with a failure status where the routine has one;
//! [`take_violations`] and the accounting helpers let tests assert on it. A violation that
//! concerns a bus is reported by that [`crate::Bus`]; one that names no bus is attributed to the
//! thread that committed it and reported by [`thread_report`], which
//! [`crate::Bus::assert_no_leaks`] includes, together with process references that a process
//! created on that thread still holds.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use vmbus_kmcl_sys::nt::{
    APC_LEVEL, EPROCESS, IRP, KIRQL, KPROCESSOR_MODE, LONG_PTR, PASSIVE_LEVEL, PEPROCESS, PETHREAD,
    PIRP, PRKAPC_STATE,
};
use vmbus_kmcl_sys::{BOOLEAN, HANDLE, NTSTATUS, PHANDLE};

/// `STATUS_SUCCESS`.
const STATUS_SUCCESS: NTSTATUS = 0;
/// `STATUS_INVALID_HANDLE`: the value names no open handle of the table it was looked up in.
// CAST: NTSTATUS values are written as their unsigned bit patterns.
pub const STATUS_INVALID_HANDLE: NTSTATUS = 0xC000_0008_u32 as NTSTATUS;
/// `STATUS_OBJECT_TYPE_MISMATCH`: the handle names an object of another type.
// CAST: as above.
pub const STATUS_OBJECT_TYPE_MISMATCH: NTSTATUS = 0xC000_0024_u32 as NTSTATUS;
/// `STATUS_INVALID_CID`: no process has that id.
// CAST: as above.
pub const STATUS_INVALID_CID: NTSTATUS = 0xC000_000B_u32 as NTSTATUS;
/// `STATUS_INVALID_PARAMETER`.
// CAST: as above.
pub const STATUS_INVALID_PARAMETER: NTSTATUS = 0xC000_000D_u32 as NTSTATUS;

/// Kernel handles have the top bit set, as on 64-bit Windows.
const KERNEL_HANDLE_BASE: usize = 0xFFFF_FFFF_8000_0000;
/// By default each process's user handles start at `id << USER_HANDLE_ID_SHIFT`, so values of
/// different processes never collide (see [`Process::with_windows_handle_numbering`] for the
/// other way): the index part stays below `1 << USER_HANDLE_ID_SHIFT`.
const USER_HANDLE_ID_SHIFT: u32 = 32;
/// Thread objects are distinct values from here on, one per host thread, never dereferenced.
const THREAD_OBJECT_BASE: usize = 0xFFFF_E000_0000_0000;
/// Marks a `KAPC_STATE` filled by this emulation.
const APC_STATE_MAGIC: u64 = 0x5641_5043_5349_4d21;

/// An object a handle can refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    /// The VMBus device of the VM on bus `bus` (what the worker process opens).
    Vmbus {
        /// The id of the emulated bus.
        bus: u64,
    },
    /// Any other object (a file, an event...), for type-mismatch tests.
    Other,
}

/// A rule broken by the code under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// `ZwClose` of a kernel handle that was already closed.
    DoubleClose(usize),
    /// `ZwClose` of a value that names no handle of the kernel table or the current process.
    CloseOfInvalidHandle(usize),
    /// `KeUnstackDetachProcess` with a state that is not the innermost attach of this thread.
    UnbalancedDetach,
    /// `ObfDereferenceObject` on a process with no reference taken by `PsLookupProcessByProcessId`.
    DereferenceUnderflow(u64),
    /// A required output pointer was NULL; the named routine wrote nothing.
    NullOutput(&'static str),
    /// `KeStackAttachProcess` with a pointer that is no process of the emulation.
    AttachToUnknownProcess,
    /// `KeUnstackDetachProcess` on another thread than the one whose attach filled the state.
    DetachOnAnotherThread,
    /// A routine was called above the highest IRQL it allows.
    IrqlTooHigh {
        /// The routine.
        routine: &'static str,
        /// The IRQL it was called at.
        irql: KIRQL,
    },
    /// [`Process::enter`] while the thread was attached to a process.
    EnterWhileAttached,
    /// [`Process::enter`] while another [`EnterGuard`] of the thread was live.
    EnterWhileEntered,
    /// An [`EnterGuard`] dropped before a guard entered after it (not in LIFO order).
    EnterGuardOutOfOrder,
    /// `IoGetRequestorProcess` with a pointer that is no live [`Irp`] of the emulation.
    UnknownIrp,
    /// A process created on this thread still holds references taken by
    /// `PsLookupProcessByProcessId` or `ObfReferenceObject` (its id and the count).
    LeakedProcessReferences(u64, u64),
}

struct ProcessInner {
    id: u64,
    name: String,
    /// The first user handle value is `handle_base + 4`.
    handle_base: usize,
    handles: Mutex<HashMap<usize, Object>>,
    next_handle: AtomicU64,
    /// References taken by lookups and `ObfReferenceObject`, not yet dropped.
    lookups: AtomicU64,
    /// The simulated thread that created the process, which its leaked references are
    /// reported to.
    creator: u64,
}

/// A simulated user-mode process with its own handle table. Cloning gives another reference to
/// the same process.
#[derive(Clone)]
pub struct Process(Arc<ProcessInner>);

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("id", &self.0.id)
            .field("name", &self.0.name)
            .finish()
    }
}

struct KernelHandle {
    object: Object,
    /// The process whose user handle it was converted from, if any.
    origin: Option<u64>,
}

#[derive(Default)]
struct Kernel {
    processes: HashMap<u64, Process>,
    handles: HashMap<usize, KernelHandle>,
    /// Closed kernel handles, to tell a double close and name its bus (bounded).
    closed: ClosedHandles,
    next_kernel_handle: usize,
    /// Each violation with the bus it concerns, when one is known, and the thread that
    /// committed it.
    violations: Vec<(Option<u64>, u64, Violation)>,
    /// Live IRPs: their address, and the simulated thread that issued them.
    irps: HashMap<usize, u64>,
    /// The current process of each simulated thread, published on every change, so that
    /// `IoGetRequestorProcess` can read another thread's.
    thread_processes: HashMap<u64, Process>,
}

/// Publishes the current thread's current process (see `Kernel::thread_processes`).
fn publish_current_process() {
    let current = current_process();
    kernel()
        .thread_processes
        .insert(current_thread_id(), current);
}

/// How many closed kernel handles keep the bus of their object for reports.
const CLOSED_REMEMBERED: usize = 4096;

/// The closed kernel handles, in bounded memory. Kernel handle values are handed out in
/// increasing order and never reused, so a value on the handle grid at or below the last one
/// issued that is no longer open was closed: no list is needed to tell a double close. The bus
/// of the object is remembered for the most recent [`CLOSED_REMEMBERED`] closes only (older
/// double closes are still reported, without a bus).
struct ClosedHandles {
    /// How many closes keep their bus ([`CLOSED_REMEMBERED`]; smaller in unit tests).
    limit: usize,
    bus: HashMap<usize, Option<u64>>,
    order: std::collections::VecDeque<usize>,
}

impl Default for ClosedHandles {
    fn default() -> Self {
        Self {
            limit: CLOSED_REMEMBERED,
            bus: HashMap::new(),
            order: std::collections::VecDeque::new(),
        }
    }
}

impl ClosedHandles {
    fn push(&mut self, value: usize, bus: Option<u64>) {
        if self.bus.insert(value, bus).is_none() {
            self.order.push_back(value);
        }
        while self.order.len() > self.limit {
            if let Some(old) = self.order.pop_front() {
                self.bus.remove(&old);
            }
        }
    }

    /// `Some(bus)` when `value` is a kernel handle that was issued and is not open any more
    /// (the caller checked the latter), `None` when it was never issued.
    fn find(&self, value: usize, issued: usize) -> Option<Option<u64>> {
        let n = value.checked_sub(KERNEL_HANDLE_BASE)?;
        let was_issued = n % 4 == 0 && n / 4 >= 1 && n / 4 <= issued;
        was_issued.then(|| self.bus.get(&value).copied().flatten())
    }
}

fn kernel() -> MutexGuard<'static, Kernel> {
    static KERNEL: OnceLock<Mutex<Kernel>> = OnceLock::new();
    KERNEL
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn record(k: &mut Kernel, bus: Option<u64>, violation: Violation) {
    eprintln!("vmbus-kmcl-sim: NT rule broken: {violation:?}");
    k.violations.push((bus, current_thread_id(), violation));
}

/// Records a violation when the current IRQL is above `maximum` for `routine`.
fn check_irql(bus: Option<u64>, routine: &'static str, maximum: KIRQL) {
    let irql = current_irql();
    if irql > maximum {
        record(&mut kernel(), bus, Violation::IrqlTooHigh { routine, irql });
    }
}

fn object_bus(object: Object) -> Option<u64> {
    match object {
        Object::Vmbus { bus } => Some(bus),
        Object::Other => None,
    }
}

static NEXT_PROCESS_ID: AtomicU64 = AtomicU64::new(8);
static NEXT_THREAD_ID: AtomicU64 = AtomicU64::new(1);
static NEXT_GUARD_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The live enter guards of this thread, oldest first: their id and process. The own
    /// process is the newest one's.
    static ENTERED: RefCell<Vec<(u64, Process)>> = const { RefCell::new(Vec::new()) };
    static ATTACHED: RefCell<Vec<Process>> = const { RefCell::new(Vec::new()) };
    static IRQL: Cell<KIRQL> = const { Cell::new(PASSIVE_LEVEL) };
    static THREAD_ID: u64 = NEXT_THREAD_ID.fetch_add(1, Ordering::Relaxed);
}

/// The simulated thread id of the current host thread.
fn current_thread_id() -> u64 {
    THREAD_ID.with(|id| *id)
}

/// A handle value without provenance: handles are numbers that are never dereferenced.
fn handle_value(n: usize) -> HANDLE {
    std::ptr::null_mut::<u8>().wrapping_add(n).cast()
}

impl Process {
    /// Creates a process; `name` only shows in debug output. Its handle values are unique
    /// across processes, so a value used in the wrong process names nothing there.
    pub fn new(name: &str) -> Self {
        Self::create(name, None)
    }

    /// Creates a process whose handle values start at 4, as on Windows, where every process
    /// numbers its own table: two such processes hand out the same values for different
    /// objects. Use it to show what a handle used in the wrong process does there (it may name
    /// another VM's VMBus).
    pub fn with_windows_handle_numbering(name: &str) -> Self {
        Self::create(name, Some(0))
    }

    fn create(name: &str, handle_base: Option<usize>) -> Self {
        let id = NEXT_PROCESS_ID.fetch_add(4, Ordering::Relaxed);
        // CAST: process ids stay far below 2^31, so the base stays below the kernel range.
        let handle_base = handle_base.unwrap_or((id as usize) << USER_HANDLE_ID_SHIFT);
        let process = Self(Arc::new(ProcessInner {
            id,
            name: name.to_owned(),
            handle_base,
            handles: Mutex::default(),
            next_handle: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
            creator: current_thread_id(),
        }));
        kernel().processes.insert(id, process.clone());
        process
    }

    /// The process id, as `PsGetCurrentProcessId` reports it.
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// The process object pointer, as `IoGetCurrentProcess` returns it. Never dereference it.
    pub fn as_eprocess(&self) -> PEPROCESS {
        Arc::as_ptr(&self.0).cast::<EPROCESS>().cast_mut()
    }

    /// Makes this the current thread's own process until the guard drops: the thread now
    /// models a user thread of this process that entered the kernel (e.g. to send an IOCTL),
    /// with previous mode `UserMode`.
    ///
    /// A user thread enters the kernel once: entering while the thread is attached to a
    /// process, or while another guard of the thread is live, is recorded as a
    /// [`Violation`] (the thread still enters, so the test can go on). The guard is `!Send` and
    /// guards must be dropped in the reverse order of entering.
    pub fn enter(&self) -> EnterGuard {
        if attach_depth() > 0 {
            record(&mut kernel(), None, Violation::EnterWhileAttached);
        }
        let id = NEXT_GUARD_ID.fetch_add(1, Ordering::Relaxed);
        let already = ENTERED.with(|entered| {
            let mut entered = entered.borrow_mut();
            let already = !entered.is_empty();
            entered.push((id, self.clone()));
            already
        });
        if already {
            record(&mut kernel(), None, Violation::EnterWhileEntered);
        }
        publish_current_process();
        EnterGuard {
            id,
            _not_send: std::marker::PhantomData,
        }
    }

    /// Opens a user-mode handle to `object` in this process's table.
    ///
    /// # Panics
    ///
    /// When the process has opened `2^30 - 1` handles, beyond which default-numbered values
    /// would reach those of the next process.
    pub fn open_handle(&self, object: Object) -> HANDLE {
        let index = self.0.next_handle.fetch_add(1, Ordering::Relaxed);
        // CAST: an index past the limit fails the check below whatever its width.
        let offset = usize::try_from(index)
            .ok()
            .and_then(|i| i.checked_add(1))
            .and_then(|i| i.checked_mul(4))
            .filter(|offset| *offset < 1 << USER_HANDLE_ID_SHIFT)
            .expect("vmbus-kmcl-sim: a process opened more than 2^30 - 1 handles");
        let value = self.0.handle_base + offset;
        lock(&self.0.handles).insert(value, object);
        handle_value(value)
    }

    /// Opens a user-mode handle to the VMBus device of bus `bus_id` in this process's table.
    pub fn open_vmbus_handle(&self, bus_id: u64) -> HANDLE {
        self.open_handle(Object::Vmbus { bus: bus_id })
    }

    /// Closes a user-mode handle of this process, as the process itself would; false if the
    /// value names no open handle of it.
    pub fn close_handle(&self, handle: HANDLE) -> bool {
        lock(&self.0.handles).remove(&handle.addr()).is_some()
    }

    /// Number of open user-mode handles of this process.
    pub fn open_handles(&self) -> usize {
        lock(&self.0.handles).len()
    }

    /// Number of kernel handles converted from this process's handles that are still open.
    pub fn open_kernel_handles(&self) -> usize {
        let id = self.0.id;
        kernel()
            .handles
            .values()
            .filter(|h| h.origin == Some(id))
            .count()
    }

    /// References taken by `PsLookupProcessByProcessId` and not yet dropped.
    pub fn outstanding_references(&self) -> u64 {
        self.0.lookups.load(Ordering::Relaxed)
    }

    fn lookup(&self, handle: HANDLE) -> Option<Object> {
        lock(&self.0.handles).get(&handle.addr()).copied()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A user thread of a process inside the kernel (see [`Process::enter`]); leaves it when
/// dropped. `!Send`: a thread does not move.
///
/// ```compile_fail,E0277
/// use vmbus_kmcl_sim::nt::Process;
///
/// let guard = Process::new("vmwp").enter();
/// std::thread::spawn(move || drop(guard));
/// ```
#[must_use = "the process is left when the guard drops"]
pub struct EnterGuard {
    id: u64,
    _not_send: std::marker::PhantomData<*mut ()>,
}

impl EnterGuard {
    /// Issues an I/O request from this thread (for example the IOCTL that carries a VMBus
    /// handle to the driver): its requestor is the process this thread runs in now.
    pub fn issue_irp(&self) -> Irp {
        Irp::issue()
    }
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        let in_order = ENTERED.with(|entered| {
            let mut entered = entered.borrow_mut();
            let in_order = entered.last().is_some_and(|(id, _)| *id == self.id);
            entered.retain(|(id, _)| *id != self.id);
            in_order
        });
        if !in_order {
            record(&mut kernel(), None, Violation::EnterGuardOutOfOrder);
        }
        publish_current_process();
    }
}

/// A simulated I/O request packet, issued by a thread ([`Irp::issue`],
/// [`EnterGuard::issue_irp`]). Only its address is used by the services; it is `Send`, so a
/// test can hand it to a worker thread as a driver pends a request.
#[derive(Debug)]
pub struct Irp {
    /// Storage that gives the request a unique address; never read.
    storage: Box<u64>,
}

impl Irp {
    /// Issues a request from the current thread: its requestor is the process that thread runs
    /// in (its attached process, if any), read when asked. From a thread that entered no
    /// process, that is the System process, as for a request a kernel component built itself.
    pub fn issue() -> Irp {
        let irp = Irp {
            storage: Box::new(0),
        };
        publish_current_process();
        kernel().irps.insert(irp.addr(), current_thread_id());
        irp
    }

    fn addr(&self) -> usize {
        std::ptr::from_ref::<u64>(&self.storage).addr()
    }

    /// The request as drivers see it. Only its address is meaningful.
    pub fn as_ptr(&self) -> PIRP {
        std::ptr::from_ref::<u64>(&self.storage)
            .cast::<IRP>()
            .cast_mut()
    }

    /// The process the issuing thread runs in now (what `IoGetRequestorProcess` returns).
    pub fn requestor(&self) -> Option<Process> {
        requestor_of(self.addr())
    }
}

fn requestor_of(irp: usize) -> Option<Process> {
    let published = {
        let k = kernel();
        let thread = k.irps.get(&irp)?;
        k.thread_processes.get(thread).cloned()
    };
    Some(published.unwrap_or_else(system_process))
}

impl Drop for Irp {
    fn drop(&mut self) {
        kernel().irps.remove(&self.addr());
    }
}

/// Saved per-thread process state, restored when dropped (see [`enter_system_context`]).
pub(crate) struct SystemContext {
    entered: Vec<(u64, Process)>,
    attached: Vec<Process>,
}

/// Puts the current thread in the state the kernel runs driver callbacks in: the System
/// process, nothing attached, previous mode `KernelMode`. The thread's own state comes back
/// when the returned value drops.
pub(crate) fn enter_system_context() -> SystemContext {
    let saved = SystemContext {
        entered: ENTERED.with(|entered| std::mem::take(&mut *entered.borrow_mut())),
        attached: ATTACHED.with(|attached| std::mem::take(&mut *attached.borrow_mut())),
    };
    publish_current_process();
    saved
}

impl Drop for SystemContext {
    fn drop(&mut self) {
        let entered = std::mem::take(&mut self.entered);
        let attached = std::mem::take(&mut self.attached);
        ENTERED.with(|e| *e.borrow_mut() = entered);
        ATTACHED.with(|a| *a.borrow_mut() = attached);
        publish_current_process();
    }
}

/// The system process: a thread's own process when it entered no other (a system thread).
pub fn system_process() -> Process {
    static SYSTEM: OnceLock<Process> = OnceLock::new();
    SYSTEM.get_or_init(|| Process::new("System")).clone()
}

/// The process the current thread runs in: the innermost attached one, else its own.
pub fn current_process() -> Process {
    ATTACHED
        .with(|attached| attached.borrow().last().cloned())
        .or_else(|| ENTERED.with(|entered| entered.borrow().last().map(|(_, p)| p.clone())))
        .unwrap_or_else(system_process)
}

/// Depth of the current thread's attach stack.
pub fn attach_depth() -> usize {
    ATTACHED.with(|attached| attached.borrow().len())
}

/// The current thread's simulated IRQL.
pub fn current_irql() -> KIRQL {
    IRQL.with(Cell::get)
}

/// Sets the current thread's simulated IRQL and returns the previous one.
pub fn set_current_irql(irql: KIRQL) -> KIRQL {
    IRQL.with(|cell| cell.replace(irql))
}

/// The bus a kernel handle refers to, if it is an open kernel handle to a VMBus device.
pub fn kernel_vmbus_handle_bus(handle: HANDLE) -> Option<u64> {
    match kernel().handles.get(&handle.addr())?.object {
        Object::Vmbus { bus } => Some(bus),
        Object::Other => None,
    }
}

/// Number of open kernel handles that refer to the VMBus device of bus `bus_id`.
pub fn open_kernel_handles_for_bus(bus_id: u64) -> usize {
    kernel()
        .handles
        .values()
        .filter(|h| h.object == Object::Vmbus { bus: bus_id })
        .count()
}

/// Whether the kernel handle table holds `handle`.
pub fn is_open_kernel_handle(handle: HANDLE) -> bool {
    kernel().handles.contains_key(&handle.addr())
}

/// Removes and returns the violations recorded so far that involve `handle` (a kernel handle
/// value) or, with `None`, every recorded violation.
pub fn take_violations(handle: Option<HANDLE>) -> Vec<Violation> {
    take_matching(|_, _, v| match (handle, v) {
        (None, _) => true,
        (Some(h), Violation::DoubleClose(value) | Violation::CloseOfInvalidHandle(value)) => {
            h.addr() == *value
        }
        (Some(_), _) => false,
    })
}

/// Removes and returns the violations that concern the VMBus of bus `bus_id` (a double close of
/// one of its kernel handles, a conversion of one of its handles into a NULL output...). A
/// [`crate::Bus`] reports them with its own leaks and violations.
pub fn take_violations_for_bus(bus_id: u64) -> Vec<Violation> {
    take_matching(|bus, _, _| bus == Some(bus_id))
}

/// The violations that concern bus `bus_id`, left in place.
pub fn violations_for_bus(bus_id: u64) -> Vec<Violation> {
    kernel()
        .violations
        .iter()
        .filter(|(bus, _, _)| *bus == Some(bus_id))
        .map(|(_, _, v)| v.clone())
        .collect()
}

/// The NT check of the current thread, left in place: the violations that name no bus and were
/// committed on this thread (an unbalanced detach, a NULL output, a dereference underflow, a
/// close of an invalid handle, a PASSIVE-only routine above PASSIVE...), then one
/// [`Violation::LeakedProcessReferences`] for each process created on this thread that still
/// holds references. [`crate::Bus::assert_no_leaks`] includes it.
pub fn thread_report() -> Vec<Violation> {
    let thread = current_thread_id();
    let k = kernel();
    let mut report: Vec<Violation> = k
        .violations
        .iter()
        .filter(|(bus, by, _)| bus.is_none() && *by == thread)
        .map(|(_, _, v)| v.clone())
        .collect();
    let mut leaked: Vec<(u64, u64)> = k
        .processes
        .values()
        .filter(|p| p.0.creator == thread)
        .map(|p| (p.0.id, p.outstanding_references()))
        .filter(|(_, n)| *n > 0)
        .collect();
    leaked.sort_unstable();
    report.extend(
        leaked
            .into_iter()
            .map(|(id, n)| Violation::LeakedProcessReferences(id, n)),
    );
    report
}

/// Removes and returns the violations that name no bus and were committed on the current thread
/// (the first part of [`thread_report`]).
pub fn take_thread_violations() -> Vec<Violation> {
    let thread = current_thread_id();
    take_matching(|bus, by, _| bus.is_none() && by == thread)
}

fn take_matching(mut keep_out: impl FnMut(Option<u64>, u64, &Violation) -> bool) -> Vec<Violation> {
    let mut k = kernel();
    let (taken, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut k.violations)
        .into_iter()
        .partition(|(bus, by, v)| keep_out(*bus, *by, v));
    k.violations = kept;
    taken.into_iter().map(|(_, _, v)| v).collect()
}

// ---------------------------------------------------------------------------------------------
// The exported services. Each is a thin layer over the model above.
// ---------------------------------------------------------------------------------------------

/// `ZwClose`: closes a kernel handle, or a handle of the current process's table. Above
/// `PASSIVE_LEVEL` the call is recorded as a violation (of the handle's bus, if it has one) and
/// still closes, so that the accounting shows only that violation.
///
/// # Safety
///
/// None beyond the C contract: the handle is a plain value, never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn ZwClose(handle: HANDLE) -> NTSTATUS {
    let value = handle.addr();
    let bus = kernel()
        .handles
        .get(&value)
        .and_then(|h| object_bus(h.object));
    // Still closed afterwards, so that the accounting shows only the IRQL violation.
    check_irql(bus, "ZwClose", PASSIVE_LEVEL);
    let mut k = kernel();
    if let Some(closed) = k.handles.remove(&value) {
        let bus = object_bus(closed.object);
        k.closed.push(value, bus);
        drop(k);
        if let Some(bus) = bus {
            crate::engine::kernel_handle_closed(bus, value);
        }
        return STATUS_SUCCESS;
    }
    if value >= KERNEL_HANDLE_BASE {
        let earlier = k.closed.find(value, k.next_kernel_handle);
        match earlier {
            Some(bus) => record(&mut k, bus, Violation::DoubleClose(value)),
            None => record(&mut k, None, Violation::CloseOfInvalidHandle(value)),
        }
        return STATUS_INVALID_HANDLE;
    }
    drop(k);
    if current_process().close_handle(handle) {
        return STATUS_SUCCESS;
    }
    record(&mut kernel(), None, Violation::CloseOfInvalidHandle(value));
    STATUS_INVALID_HANDLE
}

/// `IoGetCurrentProcess`.
#[no_mangle]
pub extern "C" fn IoGetCurrentProcess() -> PEPROCESS {
    current_process().as_eprocess()
}

/// The thread's own process: the newest entered one, else the System process; attaches do not
/// change it.
fn own_process() -> Process {
    ENTERED
        .with(|entered| entered.borrow().last().map(|(_, p)| p.clone()))
        .unwrap_or_else(system_process)
}

/// `PsGetCurrentProcessId`: the id of the thread's own process, also while it is attached to
/// another one.
#[no_mangle]
pub extern "C" fn PsGetCurrentProcessId() -> HANDLE {
    // CAST: process ids are small.
    handle_value(own_process().id() as usize)
}

/// `PsGetProcessId`: the id of the process object `process`; NULL for a pointer that is no
/// process of the emulation.
#[no_mangle]
pub extern "C" fn PsGetProcessId(process: PEPROCESS) -> HANDLE {
    // CAST: process ids are small.
    process_by_pointer(process).map_or(std::ptr::null_mut(), |p| handle_value(p.id() as usize))
}

fn process_by_pointer(process: PEPROCESS) -> Option<Process> {
    kernel()
        .processes
        .values()
        .find(|p| p.as_eprocess() == process)
        .cloned()
}

/// `KeStackAttachProcess`: makes `process` the current process of this thread until the
/// matching detach. An unknown process pointer is a bug check in a real kernel; here it is
/// reported and the thread stays where it was (the state is still filled, so the detach
/// balances). Above `APC_LEVEL` it is reported and still attaches. The state records this
/// thread and the attach depth, which the detach checks.
///
/// # Safety
///
/// `apc_state` must be valid for writes of a `KAPC_STATE`.
#[no_mangle]
pub unsafe extern "C" fn KeStackAttachProcess(process: PEPROCESS, apc_state: PRKAPC_STATE) {
    if apc_state.is_null() {
        record(
            &mut kernel(),
            None,
            Violation::NullOutput("KeStackAttachProcess"),
        );
        return;
    }
    check_irql(None, "KeStackAttachProcess", APC_LEVEL);
    let target = process_by_pointer(process).unwrap_or_else(|| {
        record(&mut kernel(), None, Violation::AttachToUnknownProcess);
        current_process()
    });
    let depth = ATTACHED.with(|attached| {
        let mut attached = attached.borrow_mut();
        attached.push(target);
        attached.len() as u64
    });
    publish_current_process();
    let mut state = vmbus_kmcl_sys::nt::KAPC_STATE::zeroed();
    state.Opaque[..8].copy_from_slice(&APC_STATE_MAGIC.to_ne_bytes());
    state.Opaque[8..16].copy_from_slice(&depth.to_ne_bytes());
    state.Opaque[16..24].copy_from_slice(&current_thread_id().to_ne_bytes());
    // SAFETY: the caller guarantees `apc_state` is valid for writes of a `KAPC_STATE`; the write
    // is unaligned, so a misaligned caller pointer is not undefined behaviour here.
    unsafe { apc_state.write_unaligned(state) };
}

/// `KeUnstackDetachProcess`: undoes the innermost attach, which must be the one that filled
/// `apc_state`, on the thread that made it; anything else is reported and changes nothing.
///
/// # Safety
///
/// `apc_state` must be valid for reads of a `KAPC_STATE`.
#[no_mangle]
pub unsafe extern "C" fn KeUnstackDetachProcess(apc_state: PRKAPC_STATE) {
    if apc_state.is_null() {
        record(&mut kernel(), None, Violation::UnbalancedDetach);
        return;
    }
    // SAFETY: the caller guarantees `apc_state` is valid for reads of a `KAPC_STATE`, and it is
    // not NULL (checked above); the read is unaligned, so alignment is not required.
    let state = unsafe { apc_state.read_unaligned() };
    let magic = u64::from_ne_bytes(state.Opaque[..8].try_into().unwrap_or_default());
    let depth = u64::from_ne_bytes(state.Opaque[8..16].try_into().unwrap_or_default());
    let thread = u64::from_ne_bytes(state.Opaque[16..24].try_into().unwrap_or_default());
    if magic == APC_STATE_MAGIC && thread != current_thread_id() {
        record(&mut kernel(), None, Violation::DetachOnAnotherThread);
        return;
    }
    let balanced = ATTACHED.with(|attached| {
        let mut attached = attached.borrow_mut();
        let ok = magic == APC_STATE_MAGIC && depth == attached.len() as u64 && depth > 0;
        if ok {
            attached.pop();
        }
        ok
    });
    if !balanced {
        record(&mut kernel(), None, Violation::UnbalancedDetach);
    }
    publish_current_process();
}

/// `PsLookupProcessByProcessId`: returns the process referenced. Above `APC_LEVEL` the call is
/// recorded as a violation of the calling thread and still looks up.
///
/// # Safety
///
/// `process_out`  must be valid for writes of a pointer.
#[no_mangle]
pub unsafe extern "C" fn PsLookupProcessByProcessId(
    process_id: HANDLE,
    process_out: *mut PEPROCESS,
) -> NTSTATUS {
    check_irql(None, "PsLookupProcessByProcessId", APC_LEVEL);
    // CAST: ids are small; a larger value simply matches no process.
    let found = kernel().processes.get(&(process_id.addr() as u64)).cloned();
    let Some(found) = found else {
        return STATUS_INVALID_CID;
    };
    if process_out.is_null() {
        record(
            &mut kernel(),
            None,
            Violation::NullOutput("PsLookupProcessByProcessId"),
        );
        return STATUS_INVALID_PARAMETER;
    }
    found.0.lookups.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the caller guarantees `process_out` is valid for writes (alignment not required:
    // the write is unaligned).
    unsafe { process_out.write_unaligned(found.as_eprocess()) };
    STATUS_SUCCESS
}

/// `ObfDereferenceObject`, for the process objects of this emulation.
///
/// # Safety
///
/// None beyond the C contract: the pointer is only compared, never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn ObfDereferenceObject(object: *mut c_void) -> LONG_PTR {
    if let Some(process) = process_by_pointer(object.cast()) {
        let mut current = process.0.lookups.load(Ordering::Relaxed);
        let underflow = loop {
            let Some(next) = current.checked_sub(1) else {
                break true;
            };
            match process.0.lookups.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break false,
                Err(seen) => current = seen,
            }
        };
        if underflow {
            record(
                &mut kernel(),
                None,
                Violation::DereferenceUnderflow(process.id()),
            );
        }
    }
    0
}

/// `ObfReferenceObject`, for the process objects of this emulation: one more reference, which
/// `ObfDereferenceObject` drops. Other pointers are ignored.
///
/// # Safety
///
/// None beyond the C contract: the pointer is only compared, never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn ObfReferenceObject(object: *mut c_void) -> LONG_PTR {
    if let Some(process) = process_by_pointer(object.cast()) {
        process.0.lookups.fetch_add(1, Ordering::Relaxed);
    }
    0
}

/// `IoGetRequestorProcess`: the process that issued the simulated [`Irp`] at `irp`. A pointer
/// that is no live `Irp` is reported and answered with NULL.
#[no_mangle]
pub extern "C" fn IoGetRequestorProcess(irp: PIRP) -> PEPROCESS {
    match requestor_of(irp.addr()) {
        Some(process) => process.as_eprocess(),
        None => {
            record(&mut kernel(), None, Violation::UnknownIrp);
            std::ptr::null_mut()
        }
    }
}

/// `ExGetPreviousMode`: `UserMode` on a thread that entered a process ([`Process::enter`]) and is
/// not running a driver callback, else `KernelMode`.
#[no_mangle]
pub extern "C" fn ExGetPreviousMode() -> KPROCESSOR_MODE {
    if ENTERED.with(|entered| entered.borrow().is_empty()) {
        vmbus_kmcl_sys::nt::KernelMode
    } else {
        vmbus_kmcl_sys::nt::UserMode
    }
}

/// `PsGetCurrentThread`: a distinct value for each host thread, never dereferenced.
#[no_mangle]
pub extern "C" fn PsGetCurrentThread() -> PETHREAD {
    // CAST: thread ids are small.
    handle_value(THREAD_OBJECT_BASE + 16 * current_thread_id() as usize).cast()
}

/// `ObIsKernelHandle`: TRUE for values in the kernel handle range.
#[no_mangle]
pub extern "C" fn ObIsKernelHandle(handle: HANDLE) -> BOOLEAN {
    BOOLEAN::from(handle.addr() >= KERNEL_HANDLE_BASE)
}

/// `KeGetCurrentIrql`: the thread's simulated IRQL.
#[no_mangle]
pub extern "C" fn KeGetCurrentIrql() -> KIRQL {
    current_irql()
}

/// `VmbConvertVmbusHandleToKernelHandle`: looks `vmbus_handle` up in the current process's
/// table and opens a kernel handle to the same VMBus device.
///
/// Fails with `STATUS_INVALID_HANDLE` when the current process has no such handle (the wrong
/// process, or a closed or kernel handle) and `STATUS_OBJECT_TYPE_MISMATCH` when it names
/// something other than a VMBus device; nothing is opened then. Above `PASSIVE_LEVEL` the call
/// is recorded as a violation of the handle's bus and still converts.
///
/// # Safety
///
/// `kernel_handle` must be valid for writes of a `HANDLE`.
#[no_mangle]
pub unsafe extern "C" fn VmbConvertVmbusHandleToKernelHandle(
    vmbus_handle: HANDLE,
    kernel_handle: PHANDLE,
) -> NTSTATUS {
    let process = current_process();
    let object = process.lookup(vmbus_handle);
    let routine = "VmbConvertVmbusHandleToKernelHandle";
    check_irql(object.and_then(object_bus), routine, PASSIVE_LEVEL);
    let object = match object {
        None => return STATUS_INVALID_HANDLE,
        Some(Object::Other) => return STATUS_OBJECT_TYPE_MISMATCH,
        Some(object) => object,
    };
    if kernel_handle.is_null() {
        let violation = Violation::NullOutput("VmbConvertVmbusHandleToKernelHandle");
        record(&mut kernel(), object_bus(object), violation);
        return STATUS_INVALID_PARAMETER;
    }
    let value = {
        let mut k = kernel();
        k.next_kernel_handle += 1;
        let value = KERNEL_HANDLE_BASE + 4 * k.next_kernel_handle;
        let origin = Some(process.id());
        k.handles.insert(value, KernelHandle { object, origin });
        value
    };
    // SAFETY: the caller guarantees `kernel_handle` is valid for writes (alignment not required:
    // the write is unaligned).
    unsafe { kernel_handle.write_unaligned(handle_value(value)) };
    STATUS_SUCCESS
}

// Compile-time proof that the exports have the signatures vmbus-kmcl-sys declares.
const _: () = {
    let _: vmbus_kmcl_sys::PFN_VMB_CONVERT_VMBUS_HANDLE_TO_KERNEL_HANDLE =
        Some(VmbConvertVmbusHandleToKernelHandle);
};

// Compile-time proof that the NT exports have the signatures vmbus-kmcl-sys declares: each
// array element must coerce to the element type, for the declaration and the definition alike.
const _: () = {
    use vmbus_kmcl_sys::nt as decl;
    let _: [unsafe extern "C" fn(HANDLE) -> NTSTATUS; 2] = [decl::ZwClose, ZwClose];
    let _: [unsafe extern "C" fn() -> PEPROCESS; 2] =
        [decl::IoGetCurrentProcess, IoGetCurrentProcess];
    let _: [unsafe extern "C" fn() -> HANDLE; 2] =
        [decl::PsGetCurrentProcessId, PsGetCurrentProcessId];
    let _: [unsafe extern "C" fn(PEPROCESS, PRKAPC_STATE); 2] =
        [decl::KeStackAttachProcess, KeStackAttachProcess];
    let _: [unsafe extern "C" fn(PRKAPC_STATE); 2] =
        [decl::KeUnstackDetachProcess, KeUnstackDetachProcess];
    let _: [unsafe extern "C" fn(HANDLE, *mut PEPROCESS) -> NTSTATUS; 2] =
        [decl::PsLookupProcessByProcessId, PsLookupProcessByProcessId];
    let _: [unsafe extern "C" fn(*mut c_void) -> LONG_PTR; 2] =
        [decl::ObfDereferenceObject, ObfDereferenceObject];
    let _: [unsafe extern "C" fn(HANDLE) -> BOOLEAN; 2] =
        [decl::ObIsKernelHandle, ObIsKernelHandle];
    let _: [unsafe extern "C" fn() -> KIRQL; 2] = [decl::KeGetCurrentIrql, KeGetCurrentIrql];
    let _: [unsafe extern "C" fn(*mut c_void) -> LONG_PTR; 2] =
        [decl::ObfReferenceObject, ObfReferenceObject];
    let _: [unsafe extern "C" fn(PIRP) -> PEPROCESS; 2] =
        [decl::IoGetRequestorProcess, IoGetRequestorProcess];
    let _: [unsafe extern "C" fn() -> KPROCESSOR_MODE; 2] =
        [decl::ExGetPreviousMode, ExGetPreviousMode];
    let _: [unsafe extern "C" fn() -> PETHREAD; 2] = [decl::PsGetCurrentThread, PsGetCurrentThread];
    let _: [unsafe extern "C" fn(PEPROCESS) -> HANDLE; 2] = [decl::PsGetProcessId, PsGetProcessId];
};

#[cfg(test)]
mod closed_handle_tests {
    use super::*;

    #[test]
    fn closed_kernel_handles_are_remembered_in_bounded_memory() {
        assert_eq!(ClosedHandles::default().limit, CLOSED_REMEMBERED);
        let limit = 64;
        let mut closed = ClosedHandles {
            limit,
            ..ClosedHandles::default()
        };
        let n = limit + 1000;
        for i in 1..=n {
            closed.push(KERNEL_HANDLE_BASE + 4 * i, Some(7));
        }
        assert_eq!(closed.bus.len(), limit);
        assert_eq!(closed.order.len(), limit);
        // The oldest close is still known as a close, without its bus; the newest keeps it.
        assert_eq!(closed.find(KERNEL_HANDLE_BASE + 4, n), Some(None));
        assert_eq!(closed.find(KERNEL_HANDLE_BASE + 4 * n, n), Some(Some(7)));
        // Values never issued (beyond the last, off the grid, below the base) are not closes.
        assert_eq!(closed.find(KERNEL_HANDLE_BASE + 4 * (n + 1), n), None);
        assert_eq!(closed.find(KERNEL_HANDLE_BASE + 6, n), None);
        assert_eq!(closed.find(KERNEL_HANDLE_BASE, n), None);
        assert_eq!(closed.find(4, n), None);
    }
}
