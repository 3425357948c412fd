//! How the safe types reach KMCL: one trait, two backends.
//!
//! KMCL can be called two ways. Older systems export plain functions from the KMCL driver
//! (`vmbkmcl.sys` in a guest, `vmbkmclr.sys` in the root); current Windows documents function
//! tables instead, which a driver obtains from the VMBus bus driver with `IRP_MN_QUERY_INTERFACE`
//! (or `WdfFdoQueryForInterface`). Every safe item of this crate calls KMCL through the trait
//! [`Kmcl`] (the 41 functions both endpoints use, the fields of `KMCL_CLIENT_INTERFACE_V1`) or
//! its extension [`KmclServer`] (the 14 server-only functions of `KMCL_SERVER_ONLY_METHODS`),
//! so the same driver code runs on either backend:
//!
//! * [`Linked`] (zero-sized, `Copy`) calls the direct exports of `vmbus-kmcl-sys`. Each method is
//!   `#[inline]` and compiles to the import call itself. It exists only where those exports
//!   resolve: with the `vmbkmcl` or `vmbkmclr` feature of this crate (forwarded to
//!   `vmbus-kmcl-sys`), or on a non-Windows host, where the `vmbus-kmcl-sim` crate defines them.
//!   A Windows driver built with neither feature therefore has no reference to any KMCL export
//!   and links against tables alone.
//! * [`ClientInterface`] and [`ServerInterface`] own a queried table and call through its
//!   entries. They check at construction that no entry the trait needs is NULL
//!   ([`Error::MissingTableEntry`]), so a call never goes through a NULL pointer, and they release
//!   the table's reference (`InterfaceDereference`) on drop. Only [`ServerInterface`] implements
//!   [`KmclServer`]: the server-only functions cannot be reached from a client table, by type.
//!
//! Shared references to a backend are backends too (`&T` for every `T: Kmcl`), so a channel can
//! borrow a table that outlives it.
//!
//! The trait methods are the raw C functions: `unsafe`, with the raw `vmbus-kmcl-sys`
//! parameter and return types. They are the building blocks of the safe types, and the escape
//! hatch for a driver that needs a call the safe types do not offer.
//!
//! # Examples
//!
//! Querying the client table on the sim and calling through it:
//!
//! ```
//! use vmbus_kmcl::dispatch::{ClientInterface, Kmcl};
//! use vmbus_kmcl_sim::Bus;
//! use vmbus_kmcl_sys::{KMCL_CLIENT_INTERFACE_V1, KMCL_CLIENT_INTERFACE_TYPE,
//!     KMCL_CLIENT_INTERFACE_VERSION_V1};
//!
//! /// What a driver does with `IRP_MN_QUERY_INTERFACE`, here against the sim's bus.
//! fn query(bus: &Bus) -> KMCL_CLIENT_INTERFACE_V1 {
//!     let mut table = KMCL_CLIENT_INTERFACE_V1::default();
//!     // CAST: the table is 360 bytes.
//!     let size = core::mem::size_of::<KMCL_CLIENT_INTERFACE_V1>() as u16;
//!     // SAFETY: the interface type GUID (defined by the sim here) is only read.
//!     let interface_type = unsafe { &KMCL_CLIENT_INTERFACE_TYPE };
//!     // SAFETY: `table` is a writable, aligned client table of `size` bytes.
//!     let status = unsafe {
//!         bus.query_interface(
//!             interface_type,
//!             size,
//!             KMCL_CLIENT_INTERFACE_VERSION_V1,
//!             &mut table.InterfaceHeader,
//!         )
//!     };
//!     assert_eq!(status, 0);
//!     table
//! }
//!
//! let bus = Bus::new();
//! # // Miri cannot read an extern static such as the interface type GUID.
//! # let table = if cfg!(miri) { bus.client_interface() } else { query(&bus) };
//! # /*
//! let table = query(&bus);
//! # */
//! // SAFETY: a successful query of the client table, with its size and version, filled
//! // `table` and took one reference, which the `ClientInterface` now owns.
//! let kmcl = unsafe { ClientInterface::from_raw(table) }.expect("the sim fills every entry");
//!
//! let mut channel = core::ptr::null_mut();
//! // SAFETY: the guest device object of the bus outlives the channel; `channel` is writable.
//! assert_eq!(unsafe { kmcl.channel_allocate(bus.guest_device(), 0, &mut channel) }, 0);
//! // SAFETY: a live, disabled channel allocated through this table, cleaned up once.
//! unsafe { kmcl.channel_cleanup(channel) };
//! drop(kmcl); // InterfaceDereference
//! bus.assert_no_leaks();
//! ```

use core::fmt;

#[cfg(any(
    doc,
    feature = "vmbkmcl",
    feature = "vmbkmclr",
    not(target_os = "windows")
))]
use vmbus_kmcl_sys as sys;
use vmbus_kmcl_sys::{
    BOOLEAN, GUID, HANDLE, INTERFACE, KMCL_CLIENT_INTERFACE_V1, KMCL_CLIENT_INTERFACE_VERSION_V1,
    KMCL_SERVER_INTERFACE_V1, KMCL_SERVER_INTERFACE_VERSION_V1, KMCL_SERVER_ONLY_METHODS, LPCGUID,
    LPGUID, NTSTATUS, PCUNICODE_STRING, PDEVICE_OBJECT, PFN_VMB_CHANNEL_PNP_FAILURE,
    PFN_VMB_CHANNEL_PROCESSING_COMPLETE, PFN_VMB_CHANNEL_PROCESS_PACKET,
    PFN_VMB_CHANNEL_RESTORE_PACKET, PFN_VMB_CHANNEL_SAVE_PACKET, PFN_VMB_PACKET_COMPLETION_ROUTINE,
    PHANDLE, PLARGE_INTEGER, PMDL, PPFN_NUMBER, PUINT16, PUINT32, PULONG,
    PVMB_CHANNEL_STATE_CHANGE_CALLBACKS, PVOID, UINT16, UINT32, UINT64, UINT8, ULONG, VMBCHANNEL,
    VMBPACKET, VMBPACKETCOMPLETION,
};

use crate::error::{Error, Result};

/// One `unsafe impl` of [`Kmcl`] or [`KmclServer`] for one backend, from the function list of
/// [`kmcl_functions!`]: every method makes the same kind of call, `by` one of
///
/// * `export`: the direct export of the function's C name ([`Linked`]);
/// * `(entry field)`: the checked table entry of the method's name in `self.field`
///   (a [`ClientFns`] or [`ServerFns`] of [`ClientInterface`] or [`ServerInterface`]);
/// * `(referent T)`: the same method of the backend `T` a `&T` refers to.
///
/// Each kind of call carries its own SAFETY argument, in its `@call` arm.
macro_rules! kmcl_impl {
    (
        $(#[$attr:meta])*
        $trait:ident for $backend:ty $(where $t:ident: $bound:ident)?, by $by:tt;
        $( fn $m:ident = $name:ident($($a:ident: $ty:ty),*) $(-> $r:ty)?; )*
    ) => {
        #[allow(
            clippy::too_many_arguments,
            reason = "the parameters of the C function, one for one"
        )]
        $(#[$attr])*
        // SAFETY: each method calls the KMCL function of its name, as its `@call` arm argues;
        // all of them reach one KMCL instance: the one driver this build links, the one
        // queried table (`from_raw`'s contract) or the referenced backend's.
        unsafe impl $(<$t: $bound + ?Sized>)? $trait for $backend {
            $(
                #[inline]
                unsafe fn $m(&self, $($a: $ty),*) $(-> $r)? {
                    kmcl_impl!(@call $by, self, $trait, $m, $name, ($($a),*))
                }
            )*
        }
    };
    (@call export, $this:ident, $trait:ident, $m:ident, $name:ident, ($($a:ident),*)) => {
        // SAFETY: the export of this name is the KMCL function itself, and the caller upholds
        // its contract (the trait's `# Safety`), which is all the export requires.
        unsafe { sys::$name($($a),*) }
    };
    (@call (entry $field:ident), $this:ident, $trait:ident, $m:ident, $name:ident, ($($a:ident),*)) => {
        // SAFETY: the entry is the KMCL function of this name (`from_raw`'s contract),
        // non-NULL (`ClientFns::check` or `ServerFns::check` made the struct holding it), and
        // the caller upholds its contract.
        unsafe { ($this.$field.$m)($($a),*) }
    };
    (@call (referent $t:ident), $this:ident, $trait:ident, $m:ident, $name:ident, ($($a:ident),*)) => {
        // SAFETY: the caller upholds the contract, which is the same for `T`.
        unsafe { <$t as $trait>::$m(*$this, $($a),*) }
    };
}

/// Declares, from one list of the KMCL functions: the traits, the function identifiers, the
/// checked tables and every backend's implementation.
macro_rules! kmcl_functions {
    (
        client {
            $(
                $(#[$cmeta:meta])*
                fn $cm:ident = $cname:ident ( $($ca:ident : $ct:ty),* $(,)? ) $(-> $cr:ty)?;
            )*
        }
        server {
            $(
                $(#[$smeta:meta])*
                fn $sm:ident = $sname:ident ( $($sa:ident : $st:ty),* $(,)? ) $(-> $sr:ty)?;
            )*
        }
    ) => {
        /// The KMCL functions both endpoints use: the 41 entries of `KMCL_CLIENT_INTERFACE_V1`,
        /// one method each, named after the C function without its `Vmb` prefix.
        ///
        /// # Safety
        ///
        /// For implementors: each method must behave as the KMCL function it is named after,
        /// on the KMCL instance that also serves every other method of the same value (objects
        /// made by one method are accepted by the others). [`Linked`], [`ClientInterface`],
        /// [`ServerInterface`] and shared references to implementors do.
        ///
        /// For callers, every method carries the contract of its C function:
        ///
        /// * every handle argument (`VMBCHANNEL`, `VMBPACKET`, `VMBPACKETCOMPLETION`) is a live
        ///   object that this backend's KMCL handed out and that has not been freed, cleaned up
        ///   or completed;
        /// * every pointer argument is valid for the reads and writes the function makes, for
        ///   as long as KMCL keeps using it (a pointer KMCL stores, such as a callback table or
        ///   a channel pointer, for as long as the object lives), and is NULL only where the
        ///   function documents NULL as allowed;
        /// * the call is made at the IRQL and in the object state KMCL allows for it (init
        ///   setters before `VmbChannelEnable`, `VmbChannelCleanup` after disable, nothing from
        ///   a callback that KMCL forbids there);
        /// * every callback function passed in is sound to call with the arguments KMCL
        ///   documents for it, at the IRQL it documents.
        ///
        /// Each method's own `# Safety` section lists only what it adds to these rules.
        #[allow(
            clippy::too_many_arguments,
            reason = "the parameters of the C function, one for one"
        )]
        pub unsafe trait Kmcl {
            $(
                $(#[$cmeta])*
                unsafe fn $cm(&self, $($ca: $ct),*) $(-> $cr)?;
            )*
        }

        /// The 14 server-only KMCL functions (the entries of `KMCL_SERVER_ONLY_METHODS`), on top
        /// of [`Kmcl`]. Only backends that reach the root-side KMCL implement it: [`Linked`]
        /// and [`ServerInterface`], not [`ClientInterface`].
        ///
        /// # Safety
        ///
        /// The contract of [`Kmcl`] (for implementors and callers) holds for these methods
        /// too; in addition their channel arguments are server channels (allocated with
        /// `IsServer` TRUE).
        #[allow(
            clippy::too_many_arguments,
            reason = "the parameters of the C function, one for one"
        )]
        #[diagnostic::on_unimplemented(
            message = "`{Self}` does not reach the root-side KMCL functions a server channel needs",
            note = "a server channel needs `Linked` (feature `vmbkmclr`) or a queried `ServerInterface`"
        )]
        pub unsafe trait KmclServer: Kmcl {
            $(
                $(#[$smeta])*
                unsafe fn $sm(&self, $($sa: $st),*) $(-> $sr)?;
            )*
        }

        /// One KMCL function, named by its C name: what a table lacked in
        /// [`Error::MissingTableEntry`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[allow(
            clippy::enum_variant_names,
            reason = "the variants are the C names of the functions, every one starting with Vmb"
        )]
        pub enum KmclFunction {
            $(
                #[doc = concat!("`", stringify!($cname), "`")]
                $cname,
            )*
            $(
                #[doc = concat!("`", stringify!($sname), "`")]
                $sname,
            )*
        }

        impl KmclFunction {
            /// The C name of the function.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Self::$cname => stringify!($cname), )*
                    $( Self::$sname => stringify!($sname), )*
                }
            }

            /// Whether the function is one of the server-only ones (`KMCL_SERVER_ONLY_METHODS`).
            pub const fn is_server_only(self) -> bool {
                match self {
                    $( Self::$cname => false, )*
                    $( Self::$sname => true, )*
                }
            }

            /// Every function: the 41 of the client table, then the 14 server-only ones, in
            /// table order.
            pub const ALL: &'static [KmclFunction] = &[
                $( Self::$cname, )*
                $( Self::$sname, )*
            ];
        }

        /// The client table's entries, every one checked to be non-NULL.
        #[derive(Clone, Copy)]
        struct ClientFns {
            $( $cm: unsafe extern "C" fn($($ct),*) $(-> $cr)?, )*
        }

        impl ClientFns {
            /// Takes every entry of `table`, or names the first NULL one.
            fn check(table: &KMCL_CLIENT_INTERFACE_V1) -> core::result::Result<Self, KmclFunction> {
                Ok(Self {
                    $(
                        $cm: match table.$cname {
                            Some(function) => function,
                            None => return Err(KmclFunction::$cname),
                        },
                    )*
                })
            }
        }

        /// The server-only entries, every one checked to be non-NULL.
        #[derive(Clone, Copy)]
        struct ServerFns {
            $( $sm: unsafe extern "C" fn($($st),*) $(-> $sr)?, )*
        }

        impl ServerFns {
            /// Takes every entry of `table`, or names the first NULL one.
            fn check(table: &KMCL_SERVER_ONLY_METHODS) -> core::result::Result<Self, KmclFunction> {
                Ok(Self {
                    $(
                        $sm: match table.$sname {
                            Some(function) => function,
                            None => return Err(KmclFunction::$sname),
                        },
                    )*
                })
            }
        }

        kmcl_impl! {
            #[cfg(any(doc, feature = "vmbkmcl", feature = "vmbkmclr", not(target_os = "windows")))]
            Kmcl for Linked, by export;
            $( fn $cm = $cname($($ca: $ct),*) $(-> $cr)?; )*
        }
        kmcl_impl! {
            #[cfg(any(doc, feature = "vmbkmcl", feature = "vmbkmclr", not(target_os = "windows")))]
            KmclServer for Linked, by export;
            $( fn $sm = $sname($($sa: $st),*) $(-> $sr)?; )*
        }
        kmcl_impl! {
            Kmcl for ClientInterface, by (entry fns);
            $( fn $cm = $cname($($ca: $ct),*) $(-> $cr)?; )*
        }
        kmcl_impl! {
            Kmcl for ServerInterface, by (entry client);
            $( fn $cm = $cname($($ca: $ct),*) $(-> $cr)?; )*
        }
        kmcl_impl! {
            KmclServer for ServerInterface, by (entry server);
            $( fn $sm = $sname($($sa: $st),*) $(-> $sr)?; )*
        }
        kmcl_impl! {
            Kmcl for &T where T: Kmcl, by (referent T);
            $( fn $cm = $cname($($ca: $ct),*) $(-> $cr)?; )*
        }
        kmcl_impl! {
            KmclServer for &T where T: KmclServer, by (referent T);
            $( fn $sm = $sname($($sa: $st),*) $(-> $sr)?; )*
        }
    };
}

kmcl_functions! {
    client {
        /// `VmbChannelAllocate`: allocates a disabled channel with default settings, a server
        /// channel when `is_server` is TRUE, and stores it in `*channel`. PASSIVE_LEVEL.
        ///
        /// # Safety
        ///
        /// `parent` is the caller's WDM device object and outlives the channel; `channel` is
        /// writable. On `STATUS_SUCCESS` the caller owns the channel and must clean it up.
        fn channel_allocate = VmbChannelAllocate(
            parent: PDEVICE_OBJECT,
            is_server: BOOLEAN,
            channel: *mut VMBCHANNEL,
        ) -> NTSTATUS;
        /// `VmbChannelCleanup`: frees a channel; the handle is dead afterwards.
        ///
        /// # Safety
        ///
        /// The channel is disabled (never enabled, or `VmbChannelDisable` returned), and is not
        /// used again.
        fn channel_cleanup = VmbChannelCleanup(channel: VMBCHANNEL);
        /// `VmbChannelCreateGpadlFromBuffer`: describes `byte_count` bytes at `buffer` to the
        /// peer as a GPADL and writes its handle. PASSIVE_LEVEL (waits for the peer).
        ///
        /// # Safety
        ///
        /// From the opened callback on; `buffer` stays valid and locked in place until the
        /// GPADL is deleted, which happens no later than in the closed callback.
        fn channel_create_gpadl_from_buffer = VmbChannelCreateGpadlFromBuffer(
            channel: VMBCHANNEL,
            flags: UINT32,
            buffer: PVOID,
            byte_count: UINT32,
            gpadl_handle: PUINT32,
        ) -> NTSTATUS;
        /// `VmbChannelCreateGpadlFromMdl`: like
        /// [`channel_create_gpadl_from_buffer`](Kmcl::channel_create_gpadl_from_buffer), for a
        /// window of an MDL chain (`length` 0: to the end).
        ///
        /// # Safety
        ///
        /// As for the buffer form; the MDL chain and its pages stay valid until the GPADL is
        /// deleted.
        fn channel_create_gpadl_from_mdl = VmbChannelCreateGpadlFromMdl(
            channel: VMBCHANNEL,
            flags: UINT32,
            mdl: PMDL,
            start_offset: UINT32,
            length: UINT32,
            gpadl_handle: PUINT32,
        ) -> NTSTATUS;
        /// `VmbChannelDeleteGpadl`: destroys a GPADL, waiting while the server has it mapped.
        /// PASSIVE_LEVEL.
        ///
        /// # Safety
        ///
        /// `gpadl_handle` names a live GPADL of this channel, deleted once.
        fn channel_delete_gpadl = VmbChannelDeleteGpadl(channel: VMBCHANNEL, gpadl_handle: UINT32);
        /// `VmbChannelDisable`: closes (client) or rescinds (server) the channel and waits until
        /// it is paused and closed, running the suspend and closed callbacks. PASSIVE_LEVEL.
        ///
        /// # Safety
        ///
        /// Not from a state callback of this channel; every incoming packet the driver holds
        /// gets completed meanwhile (the call waits for them).
        fn channel_disable = VmbChannelDisable(channel: VMBCHANNEL);
        /// `VmbChannelEnable`: connects a configured, disabled channel (server: offers it;
        /// client: opens the matching offer or waits for one). Returns without waiting for the
        /// peer.
        ///
        /// # Safety
        ///
        /// Every callback and pointer registered during configuration stays valid until the
        /// channel is disabled.
        fn channel_enable = VmbChannelEnable(channel: VMBCHANNEL) -> NTSTATUS;
        /// `VmbChannelGetInterfaceInstance`: writes the channel's interface instance GUID.
        ///
        /// # Safety
        ///
        /// `instance` is writable for one `GUID`.
        fn channel_get_interface_instance = VmbChannelGetInterfaceInstance(
            channel: VMBCHANNEL,
            instance: LPGUID,
        );
        /// `VmbChannelGetMmioSpace`: writes the address and size of the MMIO range the server
        /// reserved for the device.
        ///
        /// # Safety
        ///
        /// After the opened callback; both pointers are writable.
        fn channel_get_mmio_space = VmbChannelGetMmioSpace(
            channel: VMBCHANNEL,
            address: *mut UINT64,
            size: *mut UINT64,
        );
        /// `VmbChannelGetPointer`: the pointer last stored with
        /// [`channel_set_pointer`](Kmcl::channel_set_pointer).
        ///
        /// # Safety
        ///
        /// Only the trait's rules.
        fn channel_get_pointer = VmbChannelGetPointer(channel: VMBCHANNEL) -> PVOID;
        /// `VmbChannelInitSetClientContextSize`: reserves `size` bytes of driver context with
        /// every incoming packet. Init setter.
        ///
        /// # Safety
        ///
        /// Only the trait's rules (before enable).
        fn channel_init_set_client_context_size = VmbChannelInitSetClientContextSize(
            channel: VMBCHANNEL,
            size: UINT32,
        ) -> NTSTATUS;
        /// `VmbChannelInitSetFlags`: the `VMBUS_CHANNEL_INIT_FLAG_*` options. Init setter;
        /// `STATUS_INVALID_PARAMETER_2` for unknown bits.
        ///
        /// # Safety
        ///
        /// Only the trait's rules (before enable).
        fn channel_init_set_flags = VmbChannelInitSetFlags(channel: VMBCHANNEL, flags: UINT32)
            -> NTSTATUS;
        /// `VmbChannelInitSetFriendlyName`: the channel's name in debugger output and
        /// performance counters. Init setter.
        ///
        /// # Safety
        ///
        /// `name` and its buffer stay valid for the channel's life (KMCL does not document
        /// whether it copies them).
        fn channel_init_set_friendly_name = VmbChannelInitSetFriendlyName(
            channel: VMBCHANNEL,
            name: PCUNICODE_STRING,
        ) -> NTSTATUS;
        /// `VmbChannelInitSetMaximumExternalData`: the largest external data of a packet and
        /// its longest MDL chain. Init setter; `STATUS_INVALID_PARAMETER_2`/`_3` for zeros.
        ///
        /// # Safety
        ///
        /// Only the trait's rules (before enable).
        fn channel_init_set_maximum_external_data = VmbChannelInitSetMaximumExternalData(
            channel: VMBCHANNEL,
            size: UINT32,
            chain_length: UINT32,
        ) -> NTSTATUS;
        /// `VmbChannelInitSetMaximumPacketSize`: the largest inline packet ever sent. Init
        /// setter; `STATUS_INVALID_PARAMETER_2` for zero.
        ///
        /// # Safety
        ///
        /// Only the trait's rules (before enable).
        fn channel_init_set_maximum_packet_size = VmbChannelInitSetMaximumPacketSize(
            channel: VMBCHANNEL,
            size: UINT32,
        ) -> NTSTATUS;
        /// `VmbChannelInitSetProcessPacketCallbacks`: the per-packet callback and the optional
        /// end-of-batch callback. Init setter.
        ///
        /// # Safety
        ///
        /// `process_packet` is not `None`; both callbacks stay callable until the channel is
        /// disabled.
        fn channel_init_set_process_packet_callbacks = VmbChannelInitSetProcessPacketCallbacks(
            channel: VMBCHANNEL,
            process_packet: PFN_VMB_CHANNEL_PROCESS_PACKET,
            processing_complete: PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
        ) -> NTSTATUS;
        /// `VmbChannelInitSetStateChangeCallbacks`: the opened, closed, suspend, started and
        /// post-started callbacks. Init setter; `STATUS_INVALID_PARAMETER_2` for a wrong
        /// `Version` or `Size`.
        ///
        /// # Safety
        ///
        /// `callbacks` points to a filled structure that stays valid for the channel's life
        /// (KMCL does not document whether it copies it).
        fn channel_init_set_state_change_callbacks = VmbChannelInitSetStateChangeCallbacks(
            channel: VMBCHANNEL,
            callbacks: PVMB_CHANNEL_STATE_CHANGE_CALLBACKS,
        ) -> NTSTATUS;
        /// `VmbChannelPacketComplete`: finishes an incoming packet, sending `size` bytes at
        /// `response` back if the sender waits for a completion. At most DISPATCH_LEVEL.
        ///
        /// # Safety
        ///
        /// Once per delivered packet; the packet, its data and its external-data MDL are dead
        /// afterwards. `response` is readable for `size` bytes or NULL with `size` 0.
        fn channel_packet_complete = VmbChannelPacketComplete(
            packet: VMBPACKETCOMPLETION,
            response: PVOID,
            size: UINT32,
        );
        /// `VmbChannelPacketDeferToPassive`: hands the packet back to be delivered again at
        /// PASSIVE_LEVEL.
        ///
        /// # Safety
        ///
        /// Only inline, from the process-packet callback that delivered `packet`; the packet is
        /// not touched again until it is delivered anew.
        fn channel_packet_defer_to_passive = VmbChannelPacketDeferToPassive(
            packet: VMBPACKETCOMPLETION,
        );
        /// `VmbChannelPacketFail`: rejects a packet as unprocessable; stops the channel's
        /// incoming queue.
        ///
        /// # Safety
        ///
        /// While the packet is being processed (not yet completed).
        fn channel_packet_fail = VmbChannelPacketFail(packet: VMBPACKETCOMPLETION);
        /// `VmbChannelPacketGetExternalData`: the packet's external data as a locked MDL without
        /// a virtual address. `STATUS_PENDING` means: return from the callback without
        /// completing; KMCL delivers the packet again when the data is ready.
        ///
        /// # Safety
        ///
        /// While the packet is being processed; `mdl` is writable. The MDL is KMCL's: never
        /// freed by the caller and dead once the packet is completed.
        fn channel_packet_get_external_data = VmbChannelPacketGetExternalData(
            packet: VMBPACKETCOMPLETION,
            flags: UINT32,
            mdl: *mut PMDL,
        ) -> NTSTATUS;
        /// `VmbChannelPause`: stops the flow and waits until the suspend callback ran and no
        /// incoming packet is outstanding; on a disabled channel, makes it come up paused.
        /// PASSIVE_LEVEL.
        ///
        /// # Safety
        ///
        /// Not from inside a state callback of this channel.
        fn channel_pause = VmbChannelPause(channel: VMBCHANNEL);
        /// `VmbChannelSendSynchronousRequest`: sends one packet and waits for its completion
        /// (`STATUS_BUFFER_OVERFLOW`: a zero timeout found the ring full and queued nothing).
        ///
        /// # Safety
        ///
        /// `buffer` is readable for `size` bytes; `response` is writable for
        /// `*response_size` bytes, a multiple of 8, and `response_size` is read and written;
        /// `timeout` is NULL or readable. PASSIVE_LEVEL unless `*timeout` is 0 and the
        /// wait-for-completion flag is clear; never from the started callback; in the root only
        /// with `*timeout` 0 and without that flag.
        fn channel_send_synchronous_request = VmbChannelSendSynchronousRequest(
            channel: VMBCHANNEL,
            buffer: PVOID,
            size: UINT32,
            external_data: PMDL,
            flags: UINT32,
            response: PVOID,
            response_size: PUINT32,
            timeout: PLARGE_INTEGER,
        ) -> NTSTATUS;
        /// `VmbChannelSetIncomingProcessingAtPassive`: TRUE runs the process-packet and
        /// processing-complete callbacks at PASSIVE_LEVEL only.
        ///
        /// # Safety
        ///
        /// Only the trait's rules.
        fn channel_set_incoming_processing_at_passive = VmbChannelSetIncomingProcessingAtPassive(
            channel: VMBCHANNEL,
            require_passive: BOOLEAN,
        );
        /// `VmbChannelSetInterruptLatency`: sets the latency of outgoing interrupts, in 100 ns
        /// units, and writes the previous value.
        ///
        /// # Safety
        ///
        /// From the opened callback through the closed callback; `original` is writable.
        fn channel_set_interrupt_latency = VmbChannelSetInterruptLatency(
            channel: VMBCHANNEL,
            latency: UINT16,
            original: PUINT16,
        ) -> NTSTATUS;
        /// `VmbChannelSetPointer`: stores one opaque pointer in the channel (KMCL never
        /// dereferences it).
        ///
        /// # Safety
        ///
        /// Only the trait's rules; what the pointer may be used for is the storer's business.
        fn channel_set_pointer = VmbChannelSetPointer(channel: VMBCHANNEL, pointer: PVOID);
        /// `VmbChannelSetTransactionQuota`: caps the incoming packets delivered but not yet
        /// completed.
        ///
        /// # Safety
        ///
        /// `quota` is greater than 0.
        fn channel_set_transaction_quota = VmbChannelSetTransactionQuota(
            channel: VMBCHANNEL,
            quota: UINT32,
        );
        /// `VmbChannelSizeofPacket`: the bytes a caller-supplied packet object needs on this
        /// channel (for [`packet_initialize`](Kmcl::packet_initialize)).
        ///
        /// # Safety
        ///
        /// Only the trait's rules.
        fn channel_sizeof_packet = VmbChannelSizeofPacket(channel: VMBCHANNEL) -> UINT32;
        /// `VmbChannelStart`: takes the channel out of the paused state (a server must call it
        /// after enable); an open channel then runs started, the incoming queue, post-started.
        ///
        /// # Safety
        ///
        /// Between enable and disable, and not from inside a state callback of this channel.
        fn channel_start = VmbChannelStart(channel: VMBCHANNEL);
        /// `VmbClientChannelInitSetRingBufferPageCount`: the page counts of the incoming and
        /// outgoing rings. Client init setter.
        ///
        /// # Safety
        ///
        /// A client channel, before enable.
        fn client_channel_init_set_ring_buffer_page_count =
            VmbClientChannelInitSetRingBufferPageCount(
                channel: VMBCHANNEL,
                incoming_pages: UINT32,
                outgoing_pages: UINT32,
            ) -> NTSTATUS;
        /// `VmbClientChannelInitSetTargetPnp`: the interface type (and instance, or NULL for
        /// any) of the offer to open, and the callback for a failed connection. Client init
        /// setter.
        ///
        /// # Safety
        ///
        /// A client channel, before enable; `interface_type` is readable; `instance` is NULL
        /// or readable; the callback stays callable until the channel is disabled.
        fn client_channel_init_set_target_pnp = VmbClientChannelInitSetTargetPnp(
            channel: VMBCHANNEL,
            interface_type: LPCGUID,
            instance: LPCGUID,
            pnp_failure: PFN_VMB_CHANNEL_PNP_FAILURE,
        ) -> NTSTATUS;
        /// `VmbPacketAllocate`: a packet object with everything a send needs reserved, or NULL.
        ///
        /// # Safety
        ///
        /// Only the trait's rules; a non-NULL result is the caller's to send or free.
        fn packet_allocate = VmbPacketAllocate(channel: VMBCHANNEL) -> VMBPACKET;
        /// `VmbPacketFree`: returns a packet object from [`packet_allocate`](Kmcl::packet_allocate).
        ///
        /// # Safety
        ///
        /// The packet is not in flight (never sent, or its completion routine ran) and is not
        /// used again.
        fn packet_free = VmbPacketFree(packet: VMBPACKET);
        /// `VmbPacketGetChannel`: the channel a packet object belongs to.
        ///
        /// # Safety
        ///
        /// Only the trait's rules.
        fn packet_get_channel = VmbPacketGetChannel(packet: VMBPACKET) -> VMBCHANNEL;
        /// `VmbPacketGetPointer`: the pointer last stored with
        /// [`packet_set_pointer`](Kmcl::packet_set_pointer).
        ///
        /// # Safety
        ///
        /// Only the trait's rules.
        fn packet_get_pointer = VmbPacketGetPointer(packet: VMBPACKET) -> PVOID;
        /// `VmbPacketInitialize`: formats `size` bytes at `packet` as a packet object of
        /// `channel` (`STATUS_INVALID_PARAMETER_3` when too small).
        ///
        /// # Safety
        ///
        /// `packet` is writable for `size` bytes, suitably aligned, and stays valid (and
        /// unused otherwise) until the packet's last completion; a completion routine is set
        /// before it is sent.
        fn packet_initialize = VmbPacketInitialize(
            channel: VMBCHANNEL,
            packet: VMBPACKET,
            size: UINT32,
        ) -> NTSTATUS;
        /// `VmbPacketSend`: sends `size` bytes inline plus optional external data, queueing
        /// when the ring is full.
        ///
        /// # Safety
        ///
        /// The packet is not in flight; KMCL keeps it until its completion routine runs.
        /// `buffer` is readable for `size` bytes (KMCL copies it, pageable only with the
        /// paged-buffer flag); `external_data` is NULL or an MDL that stays valid until the
        /// completion.
        fn packet_send = VmbPacketSend(
            packet: VMBPACKET,
            buffer: PVOID,
            size: UINT32,
            external_data: PMDL,
            flags: UINT32,
        ) -> NTSTATUS;
        /// `VmbPacketSendWithExternalMdl`: like [`packet_send`](Kmcl::packet_send), with a
        /// window of a required MDL as external data.
        ///
        /// # Safety
        ///
        /// As for `packet_send`; `mdl` is not NULL and the wait-for-completion flag is set.
        fn packet_send_with_external_mdl = VmbPacketSendWithExternalMdl(
            packet: VMBPACKET,
            buffer: PVOID,
            size: UINT32,
            mdl: PMDL,
            mdl_offset: UINT32,
            mdl_length: UINT32,
            flags: UINT32,
        ) -> NTSTATUS;
        /// `VmbPacketSendWithExternalPfns`: like [`packet_send`](Kmcl::packet_send), with the
        /// external data given as page frame numbers.
        ///
        /// # Safety
        ///
        /// As for `packet_send`; `pfns` is readable for `pfn_count` entries naming pages that
        /// stay valid until the completion; the wait-for-completion flag is set.
        fn packet_send_with_external_pfns = VmbPacketSendWithExternalPfns(
            packet: VMBPACKET,
            buffer: PVOID,
            size: UINT32,
            pfns: PPFN_NUMBER,
            pfn_count: UINT32,
            flags: UINT32,
        ) -> NTSTATUS;
        /// `VmbPacketSetCompletionRoutine`: the routine run when the packet's transaction is
        /// over; the driver then frees or reuses the packet itself.
        ///
        /// # Safety
        ///
        /// The packet is not in flight; the routine stays callable until it ran.
        fn packet_set_completion_routine = VmbPacketSetCompletionRoutine(
            packet: VMBPACKET,
            routine: PFN_VMB_PACKET_COMPLETION_ROUTINE,
        );
        /// `VmbPacketSetPointer`: stores one opaque pointer in the packet object.
        ///
        /// # Safety
        ///
        /// Only the trait's rules.
        fn packet_set_pointer = VmbPacketSetPointer(packet: VMBPACKET, pointer: PVOID);
    }
    server {
        /// `VmbChannelMapGpadl`: maps the guest GPADL `gpadl_handle` and writes a
        /// physical-only MDL of it.
        ///
        /// # Safety
        ///
        /// `mdl` is writable; the GPADL is not mapped already; the mapping is undone with
        /// [`channel_unmap_gpadl`](KmclServer::channel_unmap_gpadl). The MDL is KMCL's.
        fn channel_map_gpadl = VmbChannelMapGpadl(
            channel: VMBCHANNEL,
            flags: UINT32,
            gpadl_handle: UINT32,
            mdl: *mut PMDL,
        ) -> NTSTATUS;
        /// `VmbChannelRestoreFromBuffer`: restores one saved chunk
        /// (`STATUS_MORE_PROCESSING_REQUIRED`: taken, send the next).
        ///
        /// # Safety
        ///
        /// `buffer` is readable for `size` bytes and holds one whole chunk from
        /// [`channel_save_continue`](KmclServer::channel_save_continue).
        fn channel_restore_from_buffer = VmbChannelRestoreFromBuffer(
            channel: VMBCHANNEL,
            buffer: PVOID,
            size: ULONG,
        ) -> NTSTATUS;
        /// `VmbChannelSaveBegin`: starts saving the channel's state.
        ///
        /// # Safety
        ///
        /// Only the trait's rules; a success is closed with
        /// [`channel_save_end`](KmclServer::channel_save_end).
        fn channel_save_begin = VmbChannelSaveBegin(channel: VMBCHANNEL) -> NTSTATUS;
        /// `VmbChannelSaveContinue`: writes the next chunk of state (`STATUS_BUFFER_OVERFLOW`:
        /// written, more follows; `STATUS_BUFFER_TOO_SMALL`: see `*required`).
        ///
        /// # Safety
        ///
        /// Between a successful save begin and its end; `buffer` is writable for `size` bytes;
        /// `filled` and `required` are writable.
        fn channel_save_continue = VmbChannelSaveContinue(
            channel: VMBCHANNEL,
            buffer: PVOID,
            size: ULONG,
            filled: PULONG,
            required: PULONG,
        ) -> NTSTATUS;
        /// `VmbChannelSaveEnd`: releases what the save allocated.
        ///
        /// # Safety
        ///
        /// Once after each successful save begin.
        fn channel_save_end = VmbChannelSaveEnd(channel: VMBCHANNEL);
        /// `VmbChannelUnmapGpadl`: undoes [`channel_map_gpadl`](KmclServer::channel_map_gpadl).
        ///
        /// # Safety
        ///
        /// The GPADL is mapped and nothing uses its MDL or pages any more.
        fn channel_unmap_gpadl = VmbChannelUnmapGpadl(channel: VMBCHANNEL, gpadl_handle: UINT32);
        /// `VmbConvertVmbusHandleToKernelHandle`: a kernel handle, owned by the caller (closed
        /// with `ZwClose`), for the VM worker's user-mode VMBus handle.
        ///
        /// # Safety
        ///
        /// The thread runs in the context of the process that owns `user_handle`;
        /// `kernel_handle` is writable.
        fn convert_vmbus_handle_to_kernel_handle = VmbConvertVmbusHandleToKernelHandle(
            user_handle: HANDLE,
            kernel_handle: PHANDLE,
        ) -> NTSTATUS;
        /// `VmbPacketRestore`: loads KMCL's saved state of an in-flight packet into a fresh one.
        /// PASSIVE_LEVEL, from the restore-packet callback.
        ///
        /// # Safety
        ///
        /// `packet` is freshly allocated and not in flight; KMCL keeps it. `buffer` is readable
        /// for `size` bytes and is the library state the restore-packet callback received.
        fn packet_restore = VmbPacketRestore(packet: VMBPACKET, buffer: PVOID, size: ULONG)
            -> NTSTATUS;
        /// `VmbServerChannelInitSetFlags`: the `VMBUS_SERVER_CHANNEL_INIT_FLAG_*` offer options.
        /// Server init setter; `STATUS_INVALID_PARAMETER_2` for unknown bits.
        ///
        /// # Safety
        ///
        /// Before enable.
        fn server_channel_init_set_flags = VmbServerChannelInitSetFlags(
            channel: VMBCHANNEL,
            flags: UINT32,
        ) -> NTSTATUS;
        /// `VmbServerChannelInitSetMmioMegabytes`: guest MMIO space to reserve, required and
        /// optional MiB. Server init setter; `STATUS_INVALID_PARAMETER` when both are 0.
        ///
        /// # Safety
        ///
        /// Before enable.
        fn server_channel_init_set_mmio_megabytes = VmbServerChannelInitSetMmioMegabytes(
            channel: VMBCHANNEL,
            megabytes: UINT16,
            optional_megabytes: UINT16,
        ) -> NTSTATUS;
        /// `VmbServerChannelInitSetSaveRestorePacketCallbacks`: the per-packet save and restore
        /// callbacks. Server init setter.
        ///
        /// # Safety
        ///
        /// Before enable; neither callback is `None`; both stay callable for the channel's life.
        fn server_channel_init_set_save_restore_packet_callbacks =
            VmbServerChannelInitSetSaveRestorePacketCallbacks(
                channel: VMBCHANNEL,
                save_packet: PFN_VMB_CHANNEL_SAVE_PACKET,
                restore_packet: PFN_VMB_CHANNEL_RESTORE_PACKET,
            ) -> NTSTATUS;
        /// `VmbServerChannelInitSetTargetInterfaceId`: the offer's interface type and instance
        /// GUIDs, by value. Server init setter.
        ///
        /// # Safety
        ///
        /// Before enable.
        fn server_channel_init_set_target_interface_id = VmbServerChannelInitSetTargetInterfaceId(
            channel: VMBCHANNEL,
            interface_type: GUID,
            instance: GUID,
        ) -> NTSTATUS;
        /// `VmbServerChannelInitSetTargetVtl`: only clients at this Virtual Trust Level see the
        /// offer. Server init setter; `STATUS_INVALID_PARAMETER_2` for an invalid level.
        ///
        /// # Safety
        ///
        /// Before enable.
        fn server_channel_init_set_target_vtl = VmbServerChannelInitSetTargetVtl(
            channel: VMBCHANNEL,
            vtl: UINT8,
        ) -> NTSTATUS;
        /// `VmbServerChannelInitSetVmbusHandle`: the VM that will see the offer, by a kernel
        /// handle of its VMBus. Server init setter; any thread context.
        ///
        /// # Safety
        ///
        /// Before enable; `handle` is an open kernel handle that stays open for the channel's
        /// life (KMCL does not document whether it takes its own reference).
        fn server_channel_init_set_vmbus_handle = VmbServerChannelInitSetVmbusHandle(
            channel: VMBCHANNEL,
            handle: HANDLE,
        ) -> NTSTATUS;
    }
}

linked_only! {
    /// The direct exports of the KMCL driver this build links: the backend with no table.
    ///
    /// Zero-sized; each method is `#[inline]` and compiles to the import call. It exists with the
    /// `vmbkmcl` feature (guest side, `vmbkmcl.sys`) or the `vmbkmclr` feature (root side,
    /// `vmbkmclr.sys`), and on non-Windows hosts, where the `vmbus-kmcl-sim` crate defines the
    /// exports (a test binary links it by naming the crate, e.g. `use vmbus_kmcl_sim as _;`).
    /// Without those, a Windows build has no `Linked` and so no reference to an export: drivers use
    /// [`ClientInterface`] or [`ServerInterface`].
    ///
    /// # Examples
    ///
    /// ```
    /// use vmbus_kmcl::dispatch::{Kmcl, Linked};
    /// use vmbus_kmcl_sim::Bus;
    ///
    /// let bus = Bus::new();
    /// let mut channel = core::ptr::null_mut();
    /// // SAFETY: the bus's root device outlives the channel; `channel` is writable.
    /// assert_eq!(unsafe { Linked.channel_allocate(bus.root_device(), 1, &mut channel) }, 0);
    /// // SAFETY: a live, never enabled channel, cleaned up once.
    /// unsafe { Linked.channel_cleanup(channel) };
    /// assert_eq!(core::mem::size_of::<Linked>(), 0);
    /// ```
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Linked;
}

/// The one reference that a successful interface query took on its table, released
/// (`InterfaceDereference(Context)`, nothing when the exporter gave no dereference routine)
/// when this value is dropped.
///
/// # Invariants
///
/// `0` is the header of a table a successful interface query filled, whose one reference this
/// value owns.
struct TableReference(INTERFACE);

impl TableReference {
    /// Takes over the reference of a queried table, checks its header against `size` and
    /// `version`, then its entries with `entries`, and returns the reference with what
    /// `entries` made of them. On either failure the reference is released (dropped) before
    /// the error is returned.
    ///
    /// # Safety
    ///
    /// `header` is the header of a table a successful interface query filled, whose one
    /// reference the caller hands over.
    unsafe fn check<T>(
        header: INTERFACE,
        size: usize,
        version: u16,
        entries: impl FnOnce() -> core::result::Result<T, KmclFunction>,
    ) -> Result<(Self, T)> {
        // INVARIANT: the caller hands the reference over.
        let reference = Self(header);
        if usize::from(header.Size) < size || header.Version != version {
            return Err(Error::InterfaceTableMismatch {
                size: header.Size,
                version: header.Version,
            });
        }
        let entries = entries().map_err(Error::MissingTableEntry)?;
        Ok((reference, entries))
    }

    /// The exporter's context of the table.
    fn context(&self) -> PVOID {
        self.0.Context
    }
}

impl Drop for TableReference {
    fn drop(&mut self) {
        if let Some(dereference) = self.0.InterfaceDereference {
            // SAFETY: the exporter's dereference routine, called once, as the value goes, with
            // its own context for the reference this value owns (invariant).
            unsafe { dereference(self.0.Context) };
        }
    }
}

// SAFETY: the context is only passed to the exporter's dereference routine, from whichever
// thread drops the value (the `INTERFACE` contract does not tie it to a thread).
unsafe impl Send for TableReference {}
// SAFETY: `&TableReference` only reads the context pointer's value.
unsafe impl Sync for TableReference {}

/// A queried `KMCL_CLIENT_INTERFACE_V1`: the KMCL functions both endpoints use, reached through
/// the bus driver's table instead of the exports.
///
/// Dropping it releases the table's reference (`InterfaceDereference`); channels borrow it
/// (`&ClientInterface` is a [`Kmcl`] backend), so it outlives them.
///
/// # Invariants
///
/// Every entry of `fns` is the non-NULL function of that name of one KMCL instance, callable
/// from any thread; `header` owns the table's reference.
///
/// # Examples
///
/// See the [module documentation](self).
pub struct ClientInterface {
    header: TableReference,
    fns: ClientFns,
}

impl ClientInterface {
    /// Takes over a client table that an interface query filled.
    ///
    /// # Errors
    ///
    /// [`Error::InterfaceTableMismatch`] when the header's `Size` is smaller than the table or
    /// its `Version` is not `KMCL_CLIENT_INTERFACE_VERSION_V1`; [`Error::MissingTableEntry`]
    /// naming the first NULL function entry. Either way the reference is released first
    /// (`InterfaceDereference` is called when the header has one).
    ///
    /// # Safety
    ///
    /// `table` was filled by a successful `IRP_MN_QUERY_INTERFACE` (or
    /// `WdfFdoQueryForInterface` / `WdfIoTargetQueryForInterface`) for
    /// `KMCL_CLIENT_INTERFACE_TYPE` with `sizeof(KMCL_CLIENT_INTERFACE_V1)` and
    /// `KMCL_CLIENT_INTERFACE_VERSION_V1` (or is the client part of a server table so
    /// obtained), so that its non-NULL entries are the KMCL functions their fields name and its
    /// header's dereference routine and context belong together; the table comes from the same
    /// KMCL as every other table the driver wraps (the KMCL of its partition); and the one
    /// reference the query took is handed over to the returned value (the caller does not
    /// dereference it).
    #[doc(alias = "IRP_MN_QUERY_INTERFACE")]
    #[doc(alias = "WdfFdoQueryForInterface")]
    pub unsafe fn from_raw(table: KMCL_CLIENT_INTERFACE_V1) -> Result<Self> {
        let size = core::mem::size_of::<KMCL_CLIENT_INTERFACE_V1>();
        let version = KMCL_CLIENT_INTERFACE_VERSION_V1;
        // SAFETY: a successfully queried table whose reference the caller hands over.
        let (header, fns) = unsafe {
            TableReference::check(table.InterfaceHeader, size, version, || {
                ClientFns::check(&table)
            })
        }?;
        // INVARIANT: the entries are non-NULL (checked) KMCL functions (the caller's contract),
        // of the table whose reference `header` owns.
        Ok(Self { header, fns })
    }
}

impl fmt::Debug for ClientInterface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientInterface")
            .field("context", &self.header.context())
            .finish_non_exhaustive()
    }
}

/// A queried `KMCL_SERVER_INTERFACE_V1`: the client table followed by the server-only methods,
/// for a VSP in the root.
///
/// It implements [`Kmcl`] and [`KmclServer`]; dropping it releases the table's reference
/// (`InterfaceDereference`).
///
/// # Invariants
///
/// Every entry of `client` and `server` is the non-NULL function of that name of one KMCL
/// instance, callable from any thread; `header` owns the table's reference.
///
/// # Examples
///
/// ```
/// use vmbus_kmcl::dispatch::{Kmcl, KmclServer, ServerInterface};
/// use vmbus_kmcl_sim::Bus;
///
/// let bus = Bus::new();
/// // SAFETY: the sim's table stands for a successful query whose reference is handed over.
/// let kmcl = unsafe { ServerInterface::from_raw(bus.server_interface()) }.unwrap();
/// let mut channel = core::ptr::null_mut();
/// // SAFETY: the root device outlives the channel; `channel` is writable.
/// assert_eq!(unsafe { kmcl.channel_allocate(bus.root_device(), 1, &mut channel) }, 0);
/// // SAFETY: a live server channel being initialised; VTL 0 is valid.
/// assert_eq!(unsafe { kmcl.server_channel_init_set_target_vtl(channel, 0) }, 0);
/// // SAFETY: never enabled, cleaned up once.
/// unsafe { kmcl.channel_cleanup(channel) };
/// drop(kmcl);
/// bus.assert_no_leaks();
/// ```
pub struct ServerInterface {
    header: TableReference,
    client: ClientFns,
    server: ServerFns,
}

impl ServerInterface {
    /// Takes over a server table that an interface query filled.
    ///
    /// # Errors
    ///
    /// [`Error::InterfaceTableMismatch`] when the header's `Size` is smaller than the whole
    /// server table or its `Version` is not `KMCL_SERVER_INTERFACE_VERSION_V1`;
    /// [`Error::MissingTableEntry`] naming the first NULL entry (client part first). Either
    /// way the reference is released first (`InterfaceDereference` is called when the header
    /// has one).
    ///
    /// # Safety
    ///
    /// `table` was filled by a successful `IRP_MN_QUERY_INTERFACE` (or
    /// `WdfFdoQueryForInterface`) for `KMCL_SERVER_INTERFACE_TYPE` with
    /// `sizeof(KMCL_SERVER_INTERFACE_V1)` and `KMCL_SERVER_INTERFACE_VERSION_V1`, so that its
    /// non-NULL entries are the KMCL functions their fields name and its header's dereference
    /// routine and context belong together; the table comes from the same KMCL as every other
    /// table the driver wraps (the KMCL of its partition); and the one reference the query took
    /// is handed over to the returned value.
    #[doc(alias = "IRP_MN_QUERY_INTERFACE")]
    #[doc(alias = "WdfFdoQueryForInterface")]
    pub unsafe fn from_raw(table: KMCL_SERVER_INTERFACE_V1) -> Result<Self> {
        let size = core::mem::size_of::<KMCL_SERVER_INTERFACE_V1>();
        let version = KMCL_SERVER_INTERFACE_VERSION_V1;
        // SAFETY: a successfully queried table whose reference the caller hands over.
        let (header, (client, server)) = unsafe {
            TableReference::check(table.ClientMethods.InterfaceHeader, size, version, || {
                let client = ClientFns::check(&table.ClientMethods)?;
                Ok((client, ServerFns::check(&table.ServerMethods)?))
            })
        }?;
        // INVARIANT: the entries are non-NULL (checked) KMCL functions (the caller's contract),
        // of the table whose reference `header` owns.
        Ok(Self {
            header,
            client,
            server,
        })
    }
}

impl fmt::Debug for ServerInterface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerInterface")
            .field("context", &self.header.context())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for KmclFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A backend a channel can keep: a [`Kmcl`] that is `Copy` (the channel, its callbacks and its
/// packets each hold a copy), shareable with callbacks that run on other threads, and able to
/// find the channel's context from the bare `VMBCHANNEL`, which is all a KMCL callback
/// receives.
///
/// Implemented by [`Linked`] and by `&ClientInterface` and `&ServerInterface` (a channel
/// borrows its table); sealed.
///
/// A table backend finds the context through a `VmbChannelGetPointer` entry recorded,
/// process-wide, by the first channel allocated through a table: every table a driver wraps
/// comes from the one KMCL of its partition (the contract of
/// [`ClientInterface::from_raw`] and [`ServerInterface::from_raw`]), whose
/// `VmbChannelGetPointer` serves all its channels. (Function addresses cannot tell two tables
/// apart: the same function may have several.)
pub trait ChannelBackend: Kmcl + Copy + Send + Sync + sealed::Sealed {}

pub(crate) mod sealed {
    use vmbus_kmcl_sys::{PVOID, VMBCHANNEL, VMBPACKET};

    /// What a channel backend does besides the KMCL calls; private to the crate.
    pub trait Sealed {
        /// Makes [`Sealed::pointer_of`] work for channels of this backend.
        fn prepare(self) -> crate::Result<()>;

        /// `VmbChannelGetPointer(channel)`, without a backend value.
        ///
        /// # Safety
        ///
        /// `channel` is a live channel allocated through a backend of this type after
        /// [`Sealed::prepare`] succeeded for it.
        unsafe fn pointer_of(channel: VMBCHANNEL) -> PVOID;

        /// `VmbPacketGetPointer(packet)`, without a backend value (for the completion
        /// routines of outgoing packets).
        ///
        /// # Safety
        ///
        /// `packet` is a live packet object of a channel allocated through a backend of this
        /// type after [`Sealed::prepare`] succeeded for it.
        unsafe fn packet_pointer_of(packet: VMBPACKET) -> PVOID;
    }
}

/// The `VmbChannelGetPointer` entry of the tables that channels were allocated through (NULL
/// before the first).
static TABLE_GET_POINTER: core::sync::atomic::AtomicPtr<()> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

/// The function type of `VmbChannelGetPointer`.
type GetPointerFn = unsafe extern "C" fn(VMBCHANNEL) -> PVOID;

/// Records `entry` as the tables' `VmbChannelGetPointer`, unless one is recorded already (the
/// same KMCL function, as every table comes from the partition's one KMCL).
fn record_table_get_pointer(entry: GetPointerFn) -> Result<()> {
    use core::sync::atomic::Ordering;
    // CAST: a function pointer kept as a data pointer, turned back by `table_pointer_of`.
    let entry = entry as *mut ();
    // A failed exchange means a table recorded its entry first, which serves as well.
    let _ = TABLE_GET_POINTER.compare_exchange(
        core::ptr::null_mut(),
        entry,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    Ok(())
}

/// `VmbChannelGetPointer(channel)` through the recorded table entry (NULL if none was recorded).
///
/// # Safety
///
/// `channel` is a live channel allocated through a table whose entry was recorded.
unsafe fn table_pointer_of(channel: VMBCHANNEL) -> PVOID {
    let entry = TABLE_GET_POINTER.load(core::sync::atomic::Ordering::Acquire);
    if entry.is_null() {
        return core::ptr::null_mut();
    }
    // SAFETY: a non-NULL value of the slot is a `GetPointerFn` stored by
    // `record_table_get_pointer`, cast back to its own type.
    let get_pointer = unsafe { core::mem::transmute::<*mut (), GetPointerFn>(entry) };
    // SAFETY: the recorded entry is `VmbChannelGetPointer` of the KMCL that allocated
    // `channel`, which is live (caller), so the call has all it needs.
    unsafe { get_pointer(channel) }
}

/// The `VmbPacketGetPointer` entry of the tables that channels were allocated through (NULL
/// before the first), recorded like [`TABLE_GET_POINTER`].
static TABLE_PACKET_GET_POINTER: core::sync::atomic::AtomicPtr<()> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

/// The function type of `VmbPacketGetPointer`.
type PacketGetPointerFn = unsafe extern "C" fn(VMBPACKET) -> PVOID;

/// Records both pointer getters of a table (see [`record_table_get_pointer`]).
fn record_table_getters(channel: GetPointerFn, packet: PacketGetPointerFn) -> Result<()> {
    use core::sync::atomic::Ordering;
    // CAST: a function pointer kept as a data pointer, turned back by `table_packet_pointer_of`.
    let entry = packet as *mut ();
    // A failed exchange means a table recorded its entry first, which serves as well.
    let _ = TABLE_PACKET_GET_POINTER.compare_exchange(
        core::ptr::null_mut(),
        entry,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    record_table_get_pointer(channel)
}

/// `VmbPacketGetPointer(packet)` through the recorded table entry (NULL if none was recorded).
///
/// # Safety
///
/// `packet` is a live packet object of a channel allocated through a table whose entry was
/// recorded.
unsafe fn table_packet_pointer_of(packet: VMBPACKET) -> PVOID {
    let entry = TABLE_PACKET_GET_POINTER.load(core::sync::atomic::Ordering::Acquire);
    if entry.is_null() {
        return core::ptr::null_mut();
    }
    // SAFETY: a non-NULL value of the slot is a `PacketGetPointerFn` stored by
    // `record_table_getters`, cast back to its own type.
    let get_pointer = unsafe { core::mem::transmute::<*mut (), PacketGetPointerFn>(entry) };
    // SAFETY: the recorded entry is `VmbPacketGetPointer` of the KMCL that made `packet`,
    // which is live (caller).
    unsafe { get_pointer(packet) }
}

#[cfg(any(
    doc,
    feature = "vmbkmcl",
    feature = "vmbkmclr",
    not(target_os = "windows")
))]
impl sealed::Sealed for Linked {
    #[inline]
    fn prepare(self) -> Result<()> {
        Ok(())
    }

    #[inline]
    unsafe fn pointer_of(channel: VMBCHANNEL) -> PVOID {
        // SAFETY: a live channel of the linked KMCL (caller).
        unsafe { sys::VmbChannelGetPointer(channel) }
    }

    #[inline]
    unsafe fn packet_pointer_of(packet: VMBPACKET) -> PVOID {
        // SAFETY: a live packet object of the linked KMCL (caller).
        unsafe { sys::VmbPacketGetPointer(packet) }
    }
}

linked_only! {
    impl ChannelBackend for Linked {}
}

impl sealed::Sealed for &ClientInterface {
    #[inline]
    fn prepare(self) -> Result<()> {
        record_table_getters(self.fns.channel_get_pointer, self.fns.packet_get_pointer)
    }

    #[inline]
    unsafe fn pointer_of(channel: VMBCHANNEL) -> PVOID {
        // SAFETY: `prepare` recorded this backend's entry before the channel was allocated
        // (caller).
        unsafe { table_pointer_of(channel) }
    }

    #[inline]
    unsafe fn packet_pointer_of(packet: VMBPACKET) -> PVOID {
        // SAFETY: `prepare` recorded this backend's entry before the packet's channel was
        // allocated (caller).
        unsafe { table_packet_pointer_of(packet) }
    }
}

impl ChannelBackend for &ClientInterface {}

impl sealed::Sealed for &ServerInterface {
    #[inline]
    fn prepare(self) -> Result<()> {
        record_table_getters(
            self.client.channel_get_pointer,
            self.client.packet_get_pointer,
        )
    }

    #[inline]
    unsafe fn pointer_of(channel: VMBCHANNEL) -> PVOID {
        // SAFETY: `prepare` recorded this backend's entry before the channel was allocated
        // (caller).
        unsafe { table_pointer_of(channel) }
    }

    #[inline]
    unsafe fn packet_pointer_of(packet: VMBPACKET) -> PVOID {
        // SAFETY: `prepare` recorded this backend's entry before the packet's channel was
        // allocated (caller).
        unsafe { table_packet_pointer_of(packet) }
    }
}

impl ChannelBackend for &ServerInterface {}
