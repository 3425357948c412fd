//! The follow-up of the seed flow: the converted kernel handle given to a server channel being
//! initialised, on the emulated bus.

use std::ptr::NonNull;

use vmbus_kmcl::{
    with_current_process, DeviceRef, Error, KernelHandle, NtStatus, ServerChannelInit, UserHandle,
};
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
    let _thread = worker.enter();
    with_current_process(|cx| UserHandle::new(raw, cx).to_kernel_handle()).unwrap()
}

#[test]
fn the_kernel_handle_binds_the_channel_to_its_vm_and_both_are_released() {
    let bus = Bus::new();
    let kernel = converted(&bus);
    let mut channel = ServerChannelInit::allocate(root(&bus)).unwrap();
    assert!(!bus.server_vmbus_handle_set(channel.as_raw()));
    assert_eq!(channel.set_vmbus_handle(&kernel), Ok(()));
    assert!(bus.server_vmbus_handle_set(channel.as_raw()));
    drop(channel);
    drop(kernel);
    bus.assert_no_leaks();
}

#[test]
fn a_handle_to_another_vm_is_rejected() {
    let bus = Bus::new();
    let other_bus = Bus::new();
    let foreign = converted(&other_bus);
    let mut channel = ServerChannelInit::allocate(root(&bus)).unwrap();
    assert_eq!(
        channel.set_vmbus_handle(&foreign),
        Err(Error::Status(NtStatus::INVALID_PARAMETER_2))
    );
    assert!(!bus.server_vmbus_handle_set(channel.as_raw()));
    drop(channel);
    drop(foreign);
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
