//! The echo VSP as a kernel image: the thin glue between the I/O manager and the `echo-vsp`
//! library. `DriverEntry` creates the control device `\Device\EchoVsp` and its symbolic link
//! `\DosDevices\EchoVsp`, and fills the dispatch table; `IRP_MJ_DEVICE_CONTROL` runs the seed
//! flow of `IOCTL_ECHO_SET_VM` (in the worker's thread, checked by the request context) and
//! offers the echo channel; unload closes the channel and deletes the link and the device.
//! KMCL is linked directly (`vmbkmclr.sys`).
#![no_std]
#![no_main]

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::pin::Pin;
use core::ptr::{null_mut, NonNull};
use core::sync::atomic::{AtomicU8, Ordering};

use echo_vsp::{EchoVsp, MapSystem};
use vmbus_kmcl::channel::gpadl::{Access, GpadlMapping, SharedMemory};
use vmbus_kmcl::channel::{Channel, ChannelSlot, Server};
use vmbus_kmcl::dispatch::{KmclServer, Linked};
use vmbus_kmcl::{DeviceRef, NtStatus, Request};
use vmbus_kmcl_sys::{NTSTATUS, PDEVICE_OBJECT, PVOID};

#[path = "../../glue/rt.rs"]
mod rt;
#[path = "../../glue/wdm.rs"]
mod wdm;

use wdm::{DRIVER_OBJECT, IRP, UNICODE_STRING};

const DEVICE_NAME: UNICODE_STRING = UNICODE_STRING::of(vmbus_kmcl::utf16!("\\Device\\EchoVsp"));
const LINK_NAME: UNICODE_STRING = UNICODE_STRING::of(vmbus_kmcl::utf16!("\\DosDevices\\EchoVsp"));

/// `MmGetSystemAddressForMdlSafe` for the MDL of a GPADL mapping.
struct KernelMapper;

impl MapSystem for KernelMapper {
    fn memory<'m, A: Access, K: KmclServer + Copy>(
        &self,
        mapping: &'m GpadlMapping<'_, A, K>,
    ) -> Option<SharedMemory<'m, A>> {
        let mdl = mapping.as_raw().cast::<wdm::MDL>();
        // SAFETY: the MDL KMCL returned for a live mapping (the borrow of `mapping`); the
        // fields read are the MDL's own.
        let (flags, mapped, len) =
            unsafe { ((*mdl).MdlFlags, (*mdl).MappedSystemVa, (*mdl).ByteCount) };
        let address =
            if flags & (wdm::MDL_MAPPED_TO_SYSTEM_VA | wdm::MDL_SOURCE_IS_NONPAGED_POOL) != 0 {
                mapped
            } else {
                // SAFETY: a locked MDL (KMCL's mapping), kernel mode, no bug check on failure; the
                // system mapping lives until KMCL unmaps the GPADL and frees the MDL.
                unsafe {
                    wdm::MmMapLockedPagesSpecifyCache(
                        mdl,
                        0,
                        wdm::MM_CACHED,
                        null_mut(),
                        0,
                        wdm::NORMAL_PAGE_PRIORITY_NO_EXECUTE,
                    )
                }
            };
        let address = NonNull::new(address.cast::<u8>())?;
        // SAFETY: `address` maps the MDL's `len` bytes while the mapping lives.
        // CAST: u32 to usize, lossless on 64-bit targets.
        Some(unsafe { mapping.memory(address, len as usize) })
    }
}

type Vsp = EchoVsp<KernelMapper>;

const EMPTY: u8 = 0;
const BUSY: u8 = 1;
const OFFERED: u8 = 2;

/// The driver's one channel: its slot and the enabled channel, in static storage so that they
/// never move; `state` says which are initialised and serialises IOCTLs against each other.
struct Global {
    state: AtomicU8,
    device: UnsafeCell<PDEVICE_OBJECT>,
    slot: UnsafeCell<MaybeUninit<ChannelSlot<'static, Vsp, Linked>>>,
    channel: UnsafeCell<MaybeUninit<Channel<'static, Server, Vsp, Linked>>>,
}

// SAFETY: `slot` and `channel` are written only by the IOCTL that moved `state` from EMPTY to
// BUSY and dropped only by unload, which the I/O manager runs after every IRP has completed;
// `device` is written by DriverEntry before any IRP can arrive.
unsafe impl Sync for Global {}

static GLOBAL: Global = Global {
    state: AtomicU8::new(EMPTY),
    device: UnsafeCell::new(null_mut()),
    slot: UnsafeCell::new(MaybeUninit::uninit()),
    channel: UnsafeCell::new(MaybeUninit::uninit()),
};

/// `IRP_MJ_CREATE` and `IRP_MJ_CLOSE`: anyone the device's ACL admits may open it.
unsafe extern "system" fn create_close(_device: PDEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the I/O manager hands over an IRP this driver now owns.
    unsafe { wdm::complete(irp, NtStatus::SUCCESS.into()) }
}

/// `IRP_MJ_DEVICE_CONTROL`: `IOCTL_ECHO_SET_VM` converts the worker's handle and offers the
/// channel; any other code is refused.
unsafe extern "system" fn device_control(_device: PDEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the I/O manager hands over an IRP whose current stack location is ours.
    let stack = unsafe { (*irp).CurrentStackLocation };
    // SAFETY: as above.
    let (code, length) = unsafe {
        (
            (*stack).Parameters.IoControlCode,
            (*stack).Parameters.InputBufferLength,
        )
    };
    // SAFETY: METHOD_BUFFERED: the system buffer holds `length` bytes of input.
    let buffer = unsafe { (*irp).SystemBuffer }.cast::<u8>();
    let status = if code != echo_protocol_ioctl() {
        NtStatus::INVALID_DEVICE_REQUEST
    } else if buffer.is_null() {
        NtStatus::INVALID_PARAMETER
    } else {
        // SAFETY: `buffer` holds `length` readable bytes for the IRP's lifetime.
        // CAST: u32 to usize, lossless on 64-bit targets.
        let input = unsafe { core::slice::from_raw_parts(buffer, length as usize) };
        // SAFETY: a live IRP, the one this dispatch routine runs for, outliving `request`.
        let request = unsafe { Request::from_raw(NonNull::new_unchecked(irp.cast())) };
        set_vm(&request, input)
    };
    // SAFETY: the IRP is still ours.
    unsafe { wdm::complete(irp, status.into()) }
}

/// The code of `IOCTL_ECHO_SET_VM`.
fn echo_protocol_ioctl() -> u32 {
    echo_vsp::IOCTL_ECHO_SET_VM
}

/// The seed flow and the offer, once per driver load.
fn set_vm(request: &Request<'_>, input: &[u8]) -> NtStatus {
    if GLOBAL
        .state
        .compare_exchange(EMPTY, BUSY, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return NtStatus::INVALID_DEVICE_STATE;
    }
    let vm = match echo_vsp::vm_from_ioctl(&Linked, request, input) {
        Ok(vm) => vm,
        Err(error) => {
            GLOBAL.state.store(EMPTY, Ordering::Release);
            return error.status();
        }
    };
    // SAFETY: written by DriverEntry before any IRP; the device lives until unload.
    let device = unsafe { *GLOBAL.device.get() };
    // SAFETY: the device object of this driver, deleted only by unload after the channel.
    let device = unsafe { DeviceRef::from_raw(NonNull::new_unchecked(device.cast())) };
    // SAFETY: BUSY: this call alone touches the slot (see `Global`).
    let slot = unsafe { &mut *GLOBAL.slot.get() };
    let slot = slot.write(ChannelSlot::new(device, Linked, EchoVsp::new(KernelMapper)));
    // SAFETY: static storage never moves; the slot is dropped in place by unload.
    let slot = unsafe { Pin::new_unchecked(slot) };
    match echo_vsp::offer(slot, Some(vm)) {
        Ok(channel) => {
            // SAFETY: BUSY: this call alone touches the channel storage.
            unsafe { (*GLOBAL.channel.get()).write(channel) };
            GLOBAL.state.store(OFFERED, Ordering::Release);
            NtStatus::SUCCESS
        }
        Err(error) => {
            // SAFETY: the slot written above, no channel borrows it any more.
            unsafe { (*GLOBAL.slot.get()).assume_init_drop() };
            GLOBAL.state.store(EMPTY, Ordering::Release);
            error.status()
        }
    }
}

/// Unload: the channel closes (disable, cleanup), then the link and the device go.
unsafe extern "system" fn unload(_driver: *mut DRIVER_OBJECT) {
    if GLOBAL.state.load(Ordering::Acquire) == OFFERED {
        // SAFETY: OFFERED: both are initialised; no IRP is in progress at unload.
        unsafe { (*GLOBAL.channel.get()).assume_init_drop() };
        // SAFETY: as above; the channel that borrowed the slot is gone.
        unsafe { (*GLOBAL.slot.get()).assume_init_drop() };
    }
    // SAFETY: the link DriverEntry created.
    unsafe { wdm::IoDeleteSymbolicLink(&LINK_NAME) };
    // SAFETY: the device DriverEntry created; nothing uses it any more.
    unsafe { wdm::IoDeleteDevice(*GLOBAL.device.get()) };
}

/// The driver's entry point.
///
/// # Safety
///
/// Called once by the I/O manager with a valid driver object and registry path.
#[no_mangle]
pub unsafe extern "system" fn DriverEntry(
    driver: *mut DRIVER_OBJECT,
    _registry: PVOID,
) -> NTSTATUS {
    let mut device: PDEVICE_OBJECT = null_mut();
    // SAFETY: a valid driver object and name; `device` is writable.
    let status = unsafe {
        wdm::IoCreateDevice(
            driver,
            0,
            &DEVICE_NAME,
            wdm::FILE_DEVICE_UNKNOWN,
            wdm::FILE_DEVICE_SECURE_OPEN,
            0,
            &mut device,
        )
    };
    if status < 0 {
        return status;
    }
    // SAFETY: no IRP can arrive before DriverEntry returns: nothing else reads it yet.
    unsafe { *GLOBAL.device.get() = device };
    // SAFETY: both names are valid counted strings.
    let status = unsafe { wdm::IoCreateSymbolicLink(&LINK_NAME, &DEVICE_NAME) };
    if status < 0 {
        // SAFETY: the device just created, unused.
        unsafe { wdm::IoDeleteDevice(device) };
        return status;
    }
    // SAFETY: DriverEntry owns the driver object's dispatch table until it returns.
    let driver = unsafe { &mut *driver };
    driver.MajorFunction[wdm::IRP_MJ_CREATE] = Some(create_close);
    driver.MajorFunction[wdm::IRP_MJ_CLOSE] = Some(create_close);
    driver.MajorFunction[wdm::IRP_MJ_DEVICE_CONTROL] = Some(device_control);
    driver.DriverUnload = Some(unload);
    NtStatus::SUCCESS.into()
}
