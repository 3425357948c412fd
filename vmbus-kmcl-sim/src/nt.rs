//! Emulation of the NT kernel services a KMCL driver uses besides KMCL: simulated processes
//! with their own user-mode handle tables, the kernel handle table, `ZwClose`, the current
//! process and attaching to another one, the current IRQL, and
//! `VmbConvertVmbusHandleToKernelHandle`, the KMCL call that bridges the two kinds of handle.
//!
//! # The model
//!
//! * A [`Process`] stands for a user-mode process such as the VM worker process. Each has a
//!   handle table; [`Process::open_vmbus_handle`] puts a user-mode VMBus handle in it, as the
//!   worker process does when it opens the VM's VMBus device.
//! * Each thread has an own process (the system process unless a test [`Process::enter`]s
//!   another one, which models a dispatch routine running in the requesting process's thread)
//!   and a stack of attached processes (`KeStackAttachProcess`). The current process
//!   (`IoGetCurrentProcess`) is the innermost attached process, else the own process.
//! * User handle values are unique across processes by default, so a handle used in the wrong
//!   process is reported as invalid; [`Process::with_windows_handle_numbering`] numbers each
//!   table from 4 as Windows does, where the same value silently names another object.
//! * Kernel handles live in one global table, each tagged with the bus it refers to so that a
//!   bus can account for the handles converted from it.
//!
//! Misuse that a real kernel would punish with a bug check (closing a kernel handle twice, an
//! unbalanced detach) is recorded as a [`Violation`], printed, and answered with a failure
//! status; [`take_violations`] and the accounting helpers let tests assert on it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use vmbus_kmcl_sys::nt::{EPROCESS, KIRQL, LONG_PTR, PASSIVE_LEVEL, PEPROCESS, PRKAPC_STATE};
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
/// By default each process's user handles start at `id * USER_HANDLE_STRIDE`, so values never
/// collide (see [`Process::with_windows_handle_numbering`] for the other way).
const USER_HANDLE_STRIDE: usize = 0x10_0000;
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
}

struct ProcessInner {
    id: u64,
    name: String,
    /// The first user handle value is `handle_base + 4`.
    handle_base: usize,
    handles: Mutex<HashMap<usize, Object>>,
    next_handle: AtomicU64,
    lookups: AtomicU64,
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
    /// Each violation with the bus it concerns, when one is known.
    violations: Vec<(Option<u64>, Violation)>,
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
    k.violations.push((bus, violation));
}

fn object_bus(object: Object) -> Option<u64> {
    match object {
        Object::Vmbus { bus } => Some(bus),
        Object::Other => None,
    }
}

static NEXT_PROCESS_ID: AtomicU64 = AtomicU64::new(8);

thread_local! {
    static OWN_PROCESS: RefCell<Option<Process>> = const { RefCell::new(None) };
    static ATTACHED: RefCell<Vec<Process>> = const { RefCell::new(Vec::new()) };
    static IRQL: Cell<KIRQL> = const { Cell::new(PASSIVE_LEVEL) };
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
        // CAST: process ids are small.
        let handle_base = handle_base.unwrap_or(id as usize * USER_HANDLE_STRIDE);
        let process = Self(Arc::new(ProcessInner {
            id,
            name: name.to_owned(),
            handle_base,
            handles: Mutex::default(),
            next_handle: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
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
    /// models a user thread of this process that entered the kernel (e.g. to send an IOCTL).
    pub fn enter(&self) -> EnterGuard {
        let previous = OWN_PROCESS.with(|own| own.replace(Some(self.clone())));
        EnterGuard { previous }
    }

    /// Opens a user-mode handle to `object` in this process's table.
    pub fn open_handle(&self, object: Object) -> HANDLE {
        let index = self.0.next_handle.fetch_add(1, Ordering::Relaxed);
        // CAST: a process opens far fewer than 2^18 handles in a test.
        let value = self.0.handle_base + 4 * (index as usize + 1);
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

/// Restores the thread's previous own process when dropped (see [`Process::enter`]).
#[must_use = "the process is left when the guard drops"]
pub struct EnterGuard {
    previous: Option<Process>,
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        OWN_PROCESS.with(|own| *own.borrow_mut() = previous);
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
        .or_else(|| OWN_PROCESS.with(|own| own.borrow().clone()))
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
    take_matching(|_, v| match (handle, v) {
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
    take_matching(|bus, _| bus == Some(bus_id))
}

/// The violations that concern bus `bus_id`, left in place.
pub fn violations_for_bus(bus_id: u64) -> Vec<Violation> {
    kernel()
        .violations
        .iter()
        .filter(|(bus, _)| *bus == Some(bus_id))
        .map(|(_, v)| v.clone())
        .collect()
}

fn take_matching(mut keep_out: impl FnMut(Option<u64>, &Violation) -> bool) -> Vec<Violation> {
    let mut k = kernel();
    let (taken, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut k.violations)
        .into_iter()
        .partition(|(bus, v)| keep_out(*bus, v));
    k.violations = kept;
    taken.into_iter().map(|(_, v)| v).collect()
}

// ---------------------------------------------------------------------------------------------
// The exported services. Each is a thin layer over the model above.
// ---------------------------------------------------------------------------------------------

/// `ZwClose`: closes a kernel handle, or a handle of the current process's table.
///
/// # Safety
///
/// None beyond the C contract: the handle is a plain value, never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn ZwClose(handle: HANDLE) -> NTSTATUS {
    let value = handle.addr();
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

/// `PsGetCurrentProcessId`: the id of the current process (attached one included).
#[no_mangle]
pub extern "C" fn PsGetCurrentProcessId() -> HANDLE {
    // CAST: process ids are small.
    handle_value(current_process().id() as usize)
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
/// balances).
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
    let target = process_by_pointer(process).unwrap_or_else(|| {
        record(&mut kernel(), None, Violation::AttachToUnknownProcess);
        current_process()
    });
    let depth = ATTACHED.with(|attached| {
        let mut attached = attached.borrow_mut();
        attached.push(target);
        attached.len() as u64
    });
    let mut state = vmbus_kmcl_sys::nt::KAPC_STATE::zeroed();
    state.Opaque[..8].copy_from_slice(&APC_STATE_MAGIC.to_ne_bytes());
    state.Opaque[8..16].copy_from_slice(&depth.to_ne_bytes());
    // SAFETY: the caller guarantees `apc_state` is valid for writes of a `KAPC_STATE`.
    unsafe { apc_state.write(state) };
}

/// `KeUnstackDetachProcess`: undoes the innermost attach, which must be the one that filled
/// `apc_state`.
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
    // not NULL (checked above).
    let state = unsafe { apc_state.read() };
    let magic = u64::from_ne_bytes(state.Opaque[..8].try_into().unwrap_or_default());
    let depth = u64::from_ne_bytes(state.Opaque[8..16].try_into().unwrap_or_default());
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
}

/// `PsLookupProcessByProcessId`: returns the process referenced.
///
/// # Safety
///
/// `process_out`  must be valid for writes of a pointer.
#[no_mangle]
pub unsafe extern "C" fn PsLookupProcessByProcessId(
    process_id: HANDLE,
    process_out: *mut PEPROCESS,
) -> NTSTATUS {
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
    // SAFETY: the caller guarantees `process_out` is valid for writes.
    unsafe { process_out.write(found.as_eprocess()) };
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
/// something other than a VMBus device; nothing is opened then.
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
    let object = match process.lookup(vmbus_handle) {
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
    // SAFETY: the caller guarantees `kernel_handle` is valid for writes.
    unsafe { kernel_handle.write(handle_value(value)) };
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
