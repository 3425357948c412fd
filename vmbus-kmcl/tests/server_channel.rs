//! The follow-up of the seed flow: the converted kernel handle given to a server channel being
//! initialised, on the emulated bus.

use std::ptr::NonNull;

use vmbus_kmcl::irql::{DISPATCH_LEVEL, PASSIVE_LEVEL};
use vmbus_kmcl::{DeviceRef, Error, KernelHandle, NtStatus, Request, ServerChannelInit};
use vmbus_kmcl_sim::nt;
use vmbus_kmcl_sim::nt::Process;
use vmbus_kmcl_sim::Bus;

fn root(bus: &Bus) -> DeviceRef<'_> {
    // SAFETY: the bus's device objects stay valid as long as the bus, which the returned
    // reference borrows.
    unsafe { DeviceRef::from_raw(NonNull::new(bus.root_device()).unwrap()) }
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

#[test]
fn the_kernel_handle_binds_the_channel_to_its_vm_and_both_are_released() {
    let bus = Bus::new();
    let kernel = converted(&bus);
    let value = kernel.as_raw();
    let mut channel = ServerChannelInit::allocate(root(&bus)).unwrap();
    assert!(!bus.server_vmbus_handle_set(channel.as_raw()));
    assert_eq!(channel.set_vmbus_handle(kernel), Ok(()));
    assert!(bus.server_vmbus_handle_set(channel.as_raw()));
    assert_eq!(
        channel.vmbus_handle().map(KernelHandle::as_raw),
        Some(value)
    );
    assert_eq!(
        bus.leak_report().kernel_handles,
        1,
        "the channel keeps it open"
    );
    // Dropping the channel cleans it up, then closes the handle it owns.
    drop(channel);
    assert!(!nt::is_open_kernel_handle(value));
    bus.assert_no_leaks();
}

#[test]
fn a_handle_to_another_vm_is_rejected() {
    let bus = Bus::new();
    let other_bus = Bus::new();
    let foreign = converted(&other_bus);
    let value = foreign.as_raw();
    let mut channel = ServerChannelInit::allocate(root(&bus)).unwrap();
    assert_eq!(
        channel.set_vmbus_handle(foreign),
        Err(Error::Status(NtStatus::INVALID_PARAMETER_2))
    );
    assert!(!bus.server_vmbus_handle_set(channel.as_raw()));
    assert!(channel.vmbus_handle().is_none());
    assert!(
        !nt::is_open_kernel_handle(value),
        "a refused handle is closed at once"
    );
    drop(channel);
    bus.assert_no_leaks();
    other_bus.assert_no_leaks();
}

#[test]
fn a_failed_allocation_is_an_error_and_leaks_nothing() {
    let bus = Bus::new();
    bus.fail_next_channel_allocations(1);
    assert!(matches!(
        ServerChannelInit::allocate(root(&bus)),
        Err(Error::Status(status)) if !status.is_success()
    ));
    bus.assert_no_leaks();
}

#[test]
fn allocation_above_passive_is_refused() {
    let bus = Bus::new();
    let previous = nt::set_current_irql(DISPATCH_LEVEL);
    let result = ServerChannelInit::allocate(root(&bus));
    nt::set_current_irql(previous);
    assert!(matches!(
        result,
        Err(Error::IrqlTooHigh {
            current: DISPATCH_LEVEL,
            maximum: PASSIVE_LEVEL
        })
    ));
    bus.assert_no_leaks();
}
