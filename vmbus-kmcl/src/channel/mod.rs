//! VMBus channels, from allocation to cleanup, for both roles.
//!
//! A KMCL channel goes through allocate → configure → enable → (open, flowing) → disable →
//! cleanup. Here each phase is a type, and ownership moves the channel from one to the next:
//!
//! * A [`ChannelSlot`] holds the driver's [`Handler`] and the [`dispatch`](crate::dispatch)
//!   backend, pinned, because KMCL's callbacks find them through the channel pointer.
//! * [`ChannelBuilder::allocate`] allocates the channel in the slot (`VmbChannelAllocate`) and
//!   registers the handler's trampolines. The builder has the init setters of both roles; a
//!   [`ServerBuilder`] also has the server-only ones (interface id, offer flags, MMIO, VTL,
//!   VMBus handle), a [`ClientBuilder`] the client-only ones (target, ring sizes). A setter of
//!   the other role does not exist on the builder, so calling it does not compile.
//! * [`ChannelBuilder::enable`] consumes the builder and returns the enabled [`Channel`]
//!   (pause, start, quota, passive processing, interface instance, MMIO space, sending).
//!   Configuring it further does not compile: the setters are the builder's.
//! * [`Channel::disable`] gives the builder back (reconfigure, enable again); dropping a
//!   `Channel` disables and cleans up; dropping a builder cleans up. A server channel owns its
//!   VMBus kernel handle and closes it after the cleanup.
//!
//! The handler's callbacks receive views that offer what KMCL allows in that callback (see
//! [`Handler`]); incoming packets arrive as [`IncomingPacket`](crate::packet::IncomingPacket)
//! tokens.
//!
//! # Examples
//!
//! A server and a client channel on the sim, the client sending one request:
//!
//! ```
//! use core::pin::pin;
//! use core::ptr::NonNull;
//! use vmbus_kmcl::channel::{
//!     Client, ChannelSlot, ClientBuilder, Handler, OpenView, Server, ServerBuilder,
//! };
//! use vmbus_kmcl::dispatch::{ChannelBackend, Linked};
//! use vmbus_kmcl::packet::IncomingPacket;
//! use vmbus_kmcl::{guid, DeviceRef, Guid};
//!
//! const TYPE: Guid = guid!("8f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b");
//! const INSTANCE: Guid = guid!("00000000-0000-0000-0000-000000000001");
//!
//! /// Answers every request with its bytes reversed.
//! struct Reverser;
//! impl<K: ChannelBackend> Handler<Server, K> for Reverser {
//!     fn process_packet(&self, _: &OpenView<'_, Server, K>, packet: IncomingPacket<'_, K>) {
//!         let mut reply = [0u8; 8];
//!         let n = packet.data().len().min(8);
//!         for (to, from) in reply[..n].iter_mut().zip(packet.data()[..n].iter().rev()) {
//!             *to = *from;
//!         }
//!         let _ = packet.complete(&reply[..n]);
//!     }
//! }
//!
//! /// Expects nothing from the server.
//! struct Quiet;
//! impl<K: ChannelBackend> Handler<Client, K> for Quiet {
//!     fn process_packet(&self, _: &OpenView<'_, Client, K>, packet: IncomingPacket<'_, K>) {
//!         packet.complete_empty();
//!     }
//! }
//!
//! let bus = vmbus_kmcl_sim::Bus::new();
//! // SAFETY: the sim's device objects live as long as the bus.
//! let root = unsafe { DeviceRef::from_raw(NonNull::new(bus.root_device()).unwrap()) };
//! // SAFETY: as above.
//! let guest = unsafe { DeviceRef::from_raw(NonNull::new(bus.guest_device()).unwrap()) };
//!
//! let mut vsp_slot = pin!(ChannelSlot::new(root, Linked, Reverser));
//! let mut vsp = ServerBuilder::allocate(vsp_slot.as_mut())?;
//! vsp.set_interface_id(TYPE, INSTANCE)?;
//! let vsp = vsp.enable()?;
//! vsp.start();
//!
//! let mut vsc_slot = pin!(ChannelSlot::new(guest, Linked, Quiet));
//! let mut vsc = ClientBuilder::allocate(vsc_slot.as_mut())?;
//! vsc.set_target(TYPE, None)?;
//! let vsc = vsc.enable()?;
//! bus.run_until_idle(); // opened, started, post-started on both sides
//!
//! let mut response = [0u8; 8];
//! let reply = vsc.request(b"abc", &mut response, None)?;
//! assert_eq!(reply, b"cba");
//! drop(vsc);
//! drop(vsp);
//! bus.assert_no_leaks();
//! # Ok::<(), vmbus_kmcl::Error>(())
//! ```

use core::marker::PhantomData;
use core::ptr::NonNull;

use vmbus_kmcl_sys::{
    DEVICE_OBJECT, VMBUS_CHANNEL_INIT_FLAG_IS_PIPE,
    VMBUS_SERVER_CHANNEL_INIT_FLAG_ENUMERATE_DEVICE_INTERFACE,
    VMBUS_SERVER_CHANNEL_INIT_FLAG_FORCE_NEW_CHANNEL,
    VMBUS_SERVER_CHANNEL_INIT_FLAG_LOOPBACK_OFFER, VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE,
    VMBUS_SERVER_CHANNEL_INIT_FLAG_TLNPI_PROVIDER_OFFER,
};

/// Declares the methods that an enabled [`Channel`] and its callback views share, each
/// forwarding to the value's `ops` (the live channel, an [`ops::ChannelOps`]): `properties` on
/// all of them, `flow` on the channel and the views of an open channel.
macro_rules! shared_channel_methods {
    (properties) => {
        /// The channel's interface instance GUID (`VmbChannelGetInterfaceInstance`).
        #[doc(alias = "VmbChannelGetInterfaceInstance")]
        pub fn interface_instance(&self) -> crate::Guid {
            self.ops.interface_instance()
        }

        /// Caps the incoming packets delivered but not completed
        /// (`VmbChannelSetTransactionQuota`). Lowering it below the packets outstanding only
        /// holds deliveries back until enough are completed.
        ///
        /// # Errors
        ///
        /// [`Error::BelowMinimum`](crate::Error::BelowMinimum) for 0, before any call.
        #[doc(alias = "VmbChannelSetTransactionQuota")]
        pub fn set_transaction_quota(&self, quota: u32) -> crate::Result<()> {
            self.ops.set_transaction_quota(quota)
        }
    };
    (flow) => {
        /// Chooses PASSIVE_LEVEL (true) or any level up to DISPATCH_LEVEL (false) for incoming
        /// processing (`VmbChannelSetIncomingProcessingAtPassive`).
        #[doc(alias = "VmbChannelSetIncomingProcessingAtPassive")]
        pub fn set_incoming_processing_at_passive(&self, passive: bool) {
            self.ops.set_incoming_processing_at_passive(passive);
        }

        /// Sends `message` without waiting (`VmbChannelSendSynchronousRequest` with a zero
        /// timeout and no completion requested):
        /// [`Sent::RingFull`](crate::channel::Sent::RingFull) when the ring has no room, which
        /// queued nothing. Any IRQL up to DISPATCH_LEVEL.
        ///
        /// # Errors
        ///
        /// [`Error::LengthTooLarge`](crate::Error::LengthTooLarge) for a message longer than
        /// `u32::MAX` bytes; the failing status of the call.
        #[doc(alias = "VmbChannelSendSynchronousRequest")]
        pub fn try_send(&self, message: &[u8]) -> crate::Result<crate::channel::Sent> {
            self.ops.try_send(message)
        }
    };
}

mod builder;
mod enabled;
pub mod gpadl;
mod handler;
mod name;
pub(crate) mod ops;
pub mod save_restore;
pub(crate) mod slot;

pub use builder::{ChannelBuilder, ClientBuilder, EnableError, ServerBuilder};
pub use enabled::Channel;
pub use handler::{Handler, OpenView, PostStartedView, StoppedView};
pub use name::{utf16_len, Utf16Buf};
pub use slot::ChannelSlot;

/// A borrowed WDM device object: the parent of the channels a driver allocates.
///
/// # Invariants
///
/// Points to a device object that stays valid for `'dev`.
#[derive(Clone, Copy, Debug)]
pub struct DeviceRef<'dev> {
    device: NonNull<DEVICE_OBJECT>,
    _lifetime: PhantomData<&'dev DEVICE_OBJECT>,
}

impl DeviceRef<'_> {
    /// Borrows a device object.
    ///
    /// # Safety
    ///
    /// `device` must point to a device object that stays valid for the chosen lifetime (for a
    /// driver, until the device is deleted), and in any case until every channel allocated on
    /// it is cleaned up: a [`ChannelSlot`] that is leaked keeps its channel after the lifetime
    /// has ended.
    pub unsafe fn from_raw(device: NonNull<DEVICE_OBJECT>) -> Self {
        // INVARIANT: the caller guarantees validity for the lifetime.
        Self {
            device,
            _lifetime: PhantomData,
        }
    }

    /// The device object pointer.
    pub fn as_raw(&self) -> *mut DEVICE_OBJECT {
        self.device.as_ptr()
    }
}

// SAFETY: the device object is a kernel object usable from any thread; this type only hands
// out its address.
unsafe impl Send for DeviceRef<'_> {}
// SAFETY: as above; shared use only reads the address.
unsafe impl Sync for DeviceRef<'_> {}

mod sealed {
    pub trait Sealed {}
}

/// The role of a channel's endpoint: [`Server`] or [`Client`]. Sealed.
pub trait Role: sealed::Sealed + Send + Sync + 'static {
    /// The `IsServer` argument of `VmbChannelAllocate`.
    const IS_SERVER: bool;
}

/// The server endpoint (a VSP in the root partition): offers the channel.
#[derive(Debug)]
pub enum Server {}

/// The client endpoint (a VSC in a guest): opens an offer.
#[derive(Debug)]
pub enum Client {}

impl sealed::Sealed for Server {}
impl sealed::Sealed for Client {}

impl Role for Server {
    const IS_SERVER: bool = true;
}

impl Role for Client {
    const IS_SERVER: bool = false;
}

bitflags::bitflags! {
    /// Options of either endpoint (`VMBUS_CHANNEL_INIT_FLAG_*`), for
    /// [`ChannelBuilder::set_flags`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    #[repr(transparent)]
    pub struct ChannelFlags: u32 {
        /// `VMBUS_CHANNEL_INIT_FLAG_IS_PIPE`: pipe mode (VMBus frames the data; no transactions
        /// or memory descriptors).
        #[doc(alias = "VMBUS_CHANNEL_INIT_FLAG_IS_PIPE")]
        const IS_PIPE = VMBUS_CHANNEL_INIT_FLAG_IS_PIPE;
    }
}

bitflags::bitflags! {
    /// Offer options of a server (`VMBUS_SERVER_CHANNEL_INIT_FLAG_*`), for
    /// [`ChannelBuilder::set_server_flags`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    #[repr(transparent)]
    pub struct ServerFlags: u32 {
        /// `VMBUS_SERVER_CHANNEL_INIT_FLAG_LOOPBACK_OFFER` (KMCL does not describe it).
        #[doc(alias = "VMBUS_SERVER_CHANNEL_INIT_FLAG_LOOPBACK_OFFER")]
        const LOOPBACK_OFFER = VMBUS_SERVER_CHANNEL_INIT_FLAG_LOOPBACK_OFFER;
        /// `VMBUS_SERVER_CHANNEL_INIT_FLAG_ENUMERATE_DEVICE_INTERFACE`: the guest publishes a
        /// device interface named by the channel type.
        #[doc(alias = "VMBUS_SERVER_CHANNEL_INIT_FLAG_ENUMERATE_DEVICE_INTERFACE")]
        const ENUMERATE_DEVICE_INTERFACE = VMBUS_SERVER_CHANNEL_INIT_FLAG_ENUMERATE_DEVICE_INTERFACE;
        /// `VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE`: offer the channel in pipe mode.
        #[doc(alias = "VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE")]
        const OFFER_AS_PIPE = VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE;
        /// `VMBUS_SERVER_CHANNEL_INIT_FLAG_FORCE_NEW_CHANNEL`: after a restore, offer a fresh
        /// channel.
        #[doc(alias = "VMBUS_SERVER_CHANNEL_INIT_FLAG_FORCE_NEW_CHANNEL")]
        const FORCE_NEW_CHANNEL = VMBUS_SERVER_CHANNEL_INIT_FLAG_FORCE_NEW_CHANNEL;
        /// `VMBUS_SERVER_CHANNEL_INIT_FLAG_TLNPI_PROVIDER_OFFER`.
        #[doc(alias = "VMBUS_SERVER_CHANNEL_INIT_FLAG_TLNPI_PROVIDER_OFFER")]
        const TLNPI_PROVIDER_OFFER = VMBUS_SERVER_CHANNEL_INIT_FLAG_TLNPI_PROVIDER_OFFER;
    }
}

/// Where the MMIO range reserved for a device lies (`VmbChannelGetMmioSpace`). KMCL's
/// documentation calls the address both a virtual and a physical one; it is passed on as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioSpace {
    /// Start of the range.
    pub address: u64,
    /// Size of the range in bytes.
    pub size: u64,
}

/// What a non-blocking send did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Sent {
    /// The message is in the ring.
    Queued,
    /// The ring had no room (`STATUS_BUFFER_OVERFLOW`); nothing was queued. Retry later.
    RingFull,
}
