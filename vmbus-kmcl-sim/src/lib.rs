//! A host emulation of the Hyper-V **VMBus Kernel Mode Client Library** (KMCL), so that VMBus
//! drivers written against [`vmbus_kmcl_sys`] (directly or through the safe `vmbus-kmcl`
//! wrapper) link and run unchanged in ordinary `cargo test` runs, on any 64-bit host.
//!
//! The crate exports every KMCL function under its real C name with the exact signature of
//! `vmbus-kmcl-sys` (see [`exports`]), the interface tables ([`client_interface`],
//! [`server_interface`], [`Bus::query_interface`]), and the NT services a KMCL driver needs
//! ([`nt`]). A test creates a [`Bus`], allocates a server channel on its root device and a
//! client channel on its guest device, and lets the sim pair them by interface GUIDs, open
//! them, run the state callbacks in the documented order, move packets through size-limited
//! rings and deliver completions. The sim accounts for every object it hands out:
//! [`Bus::assert_no_leaks`] (and dropping the bus) fails on anything leaked and on every misuse
//! detected along the way (double free, double completion, use after cleanup, calls in the
//! wrong state), which is also printed at once.
//!
//! # Example: pairing a server and a client channel
//!
//! ```
//! use vmbus_kmcl_sim::Bus;
//! use vmbus_kmcl_sys::*;
//!
//! unsafe extern "C" fn on_packet(
//!     _ch: VMBCHANNEL,
//!     pkt: VMBPACKETCOMPLETION,
//!     _buf: PVOID,
//!     _len: u32,
//!     _flags: u32,
//! ) {
//!     // Complete every packet at once, with a 4-byte reply.
//!     let reply = 0u32.to_le_bytes();
//!     unsafe { VmbChannelPacketComplete(pkt, reply.as_ptr() as PVOID, 4) };
//! }
//!
//! let bus = Bus::new();
//! let ty = GUID { Data1: 0x1234, ..GUID::default() };
//! let inst = GUID { Data1: 0x5678, ..GUID::default() };
//! unsafe {
//!     // The VSP offers the channel from the root side.
//!     let mut server = std::ptr::null_mut();
//!     assert_eq!(VmbChannelAllocate(bus.root_device(), 1, &mut server), 0);
//!     assert_eq!(VmbServerChannelInitSetTargetInterfaceId(server, ty, inst), 0);
//!     assert_eq!(VmbChannelInitSetProcessPacketCallbacks(server, Some(on_packet), None), 0);
//!     assert_eq!(VmbChannelEnable(server), 0);
//!     VmbChannelStart(server);
//!
//!     // The VSC opens it from the guest.
//!     let mut client = std::ptr::null_mut();
//!     assert_eq!(VmbChannelAllocate(bus.guest_device(), 0, &mut client), 0);
//!     assert_eq!(VmbClientChannelInitSetTargetPnp(client, &ty, std::ptr::null(), None), 0);
//!     assert_eq!(VmbChannelInitSetProcessPacketCallbacks(client, Some(on_packet), None), 0);
//!     assert_eq!(VmbChannelEnable(client), 0);
//!     bus.run_until_idle(); // opened, started, post-started on both sides
//!
//!     // A packet with the default completion routine frees itself once completed.
//!     let packet = VmbPacketAllocate(client);
//!     let msg = *b"hello";
//!     let flags = VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION;
//!     assert_eq!(VmbPacketSend(packet, msg.as_ptr() as PVOID, 5, std::ptr::null_mut(), flags), 0);
//!     bus.run_until_idle();
//!
//!     VmbChannelDisable(client);
//!     VmbChannelCleanup(client);
//!     VmbChannelDisable(server);
//!     VmbChannelCleanup(server);
//! }
//! bus.assert_no_leaks();
//! ```
//!
//! # Running
//!
//! Delivery is deterministic by default: nothing asynchronous happens until the test calls
//! [`Bus::run_until_idle`] (or [`Bus::pump_one`]); blocking calls such as
//! `VmbChannelSendSynchronousRequest` deliver on the calling thread while they wait.
//! [`Bus::start_background_delivery`] adds a thread that delivers continuously, like the real
//! KMCL. Callbacks run with the simulated IRQL ([`nt::current_irql`]) the KMCL documents, and
//! never while the sim holds its own locks, so they may call back into it.
//!
//! # Faults
//!
//! [`Bus::fail_next_packet_allocations`], [`Bus::fail_next_channel_allocations`],
//! [`Bus::fail_next_open`], [`Bus::set_ring_full`], [`Bus::pend_next_external_data`],
//! [`Bus::crash_peer_of`] and [`Bus::inject_raw_guest_packet`] (a hostile guest).
//!
//! # Fuzzing a VSP
//!
//! With the `fuzz` feature, the `fuzz` module plays a hostile guest against a VSP: a sequence
//! of well-formed requests of the driver's own protocol, raw malformed frames, external data
//! with hostile windows and page lists, completions withheld, GPADLs shared and deleted in
//! hostile orders, guest crashes, pause and resume, save and restore, decoded from fuzzer
//! bytes, with the bus's violation and leak accounting
//! checked after every action and every input (a cargo-fuzz target is a few lines).
//!
//! # Choices where the KMCL documentation is silent
//!
//! The sim documents each status it picks where KMCL only promises "an error status" (see
//! [`status`]) and each behaviour it had to choose on the function's export in [`exports`]:
//! e.g. in-flight packets are completed with `STATUS_CANCELLED` when their channel closes, a
//! failed packet's sender sees `STATUS_UNSUCCESSFUL`, and restored in-flight packets are sent
//! again when the channel next opens.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod nt;

#[cfg(feature = "fuzz")]
#[cfg_attr(docsrs, doc(cfg(feature = "fuzz")))]
pub mod fuzz;

mod bus;
mod callbacks;
mod engine;
pub mod exports;
mod handle;
mod mdl;
mod slab;
pub mod status;

pub use bus::{interface_reference_count, Bus};
pub use engine::take_orphan_violations;
pub use engine::{ChannelInfo, ChannelState, LeakReport, RawCompletion, RawPacketError, Side};
pub use exports::{client_interface, server_interface};
pub use mdl::{
    is_sim_mdl, mdl_address, mdl_bytes, mdl_chain_len, mdl_is_read_only, mdl_pfns, mdl_read,
    mdl_write, MdlAddress, SimMdl,
};
