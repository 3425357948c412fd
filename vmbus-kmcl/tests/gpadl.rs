//! GPADLs on the sim: created by the client's handler, mapped by the server, deleted by the
//! closed trampoline; a delete waiting for the server's unmap; read-only GPADLs; the checks a
//! cell and a mapping make before KMCL is called. Both backends.

use std::num::NonZeroU32;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vmbus_kmcl::channel::gpadl::{GpadlCell, GpadlFlags, GpadlHandle, MdlRef, SharedBuffer};
use vmbus_kmcl::channel::{Channel, Client, Handler, OpenView, Sent, Server, StoppedView};
use vmbus_kmcl::dispatch::{ChannelBackend, KmclServer};
use vmbus_kmcl::packet::IncomingPacket;
use vmbus_kmcl::{guid, Error, Guid, Result};
use vmbus_kmcl_sim::{Bus, SimMdl};

#[macro_use]
mod common;
use common::{open_pair, with_slots, CompleteAll};

const TYPE: Guid = guid!("6a1b2c3d-4e5f-4a6b-8c7d-8e9fa0b1c2d3");
const INSTANCE: Guid = guid!("6a1b2c3d-4e5f-4a6b-8c7d-000000000001");

/// What the client shares from `opened`.
enum Share<'b> {
    Buffer(&'b SharedBuffer<8192>),
    Mdl(MdlRef<'b>, u32, Option<NonZeroU32>),
}

/// A client that shares memory from `opened` and records what its calls returned.
struct Vsc<'b> {
    share: Share<'b>,
    flags: GpadlFlags,
    gpadl: GpadlCell<'b>,
    /// A cell that is not part of the handler, when set.
    outside: Option<&'b GpadlCell<'b>>,
    /// Also try a second GPADL in the same cell.
    twice: bool,
    /// Refuse the open after creating the GPADL.
    refuse: bool,
    /// Try to create a GPADL from `process_packet`.
    from_packet: bool,
    results: Mutex<Vec<Result<GpadlHandle>>>,
    log: Mutex<Vec<&'static str>>,
}

impl<'b> Vsc<'b> {
    fn new(share: Share<'b>, flags: GpadlFlags) -> Self {
        Self {
            share,
            flags,
            gpadl: GpadlCell::new(),
            outside: None,
            twice: false,
            refuse: false,
            from_packet: false,
            results: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
        }
    }

    fn create<K: ChannelBackend>(
        &self,
        cell: &GpadlCell<'b>,
        channel: &OpenView<'_, Client, K>,
    ) -> Result<GpadlHandle> {
        match &self.share {
            Share::Buffer(buffer) => cell.create(channel, *buffer, self.flags),
            Share::Mdl(mdl, offset, length) => {
                cell.create_from_mdl(channel, *mdl, *offset, *length, self.flags)
            }
        }
    }

    fn results(&self) -> Vec<Result<GpadlHandle>> {
        self.results.lock().unwrap().clone()
    }
}

impl<K: ChannelBackend> Handler<Client, K> for Vsc<'_> {
    fn opened(&self, channel: &OpenView<'_, Client, K>) -> Result<()> {
        let cell = self.outside.unwrap_or(&self.gpadl);
        let first = self.create(cell, channel);
        self.results.lock().unwrap().push(first);
        if self.twice {
            let second = self.create(&self.gpadl, channel);
            self.results.lock().unwrap().push(second);
        }
        if self.refuse {
            return Err(Error::Status(vmbus_kmcl::NtStatus::ACCESS_DENIED));
        }
        Ok(())
    }

    fn process_packet(&self, channel: &OpenView<'_, Client, K>, packet: IncomingPacket<'_, K>) {
        if self.from_packet {
            let cell = GpadlCell::new();
            let result = cell.create(channel, &EXTRA, GpadlFlags::empty());
            self.results.lock().unwrap().push(result);
        }
        packet.complete_empty();
    }

    fn closed(&self, _: &StoppedView<'_, Client, K>) {
        let held = self.gpadl.handle().is_some();
        self.log.lock().unwrap().push(if held {
            "closed, holding"
        } else {
            "closed, empty"
        });
    }
}

static EXTRA: SharedBuffer<4096> = SharedBuffer::new();

/// The writable bytes of a sim mapping.
fn sim_address(mdl: vmbus_kmcl_sys::PMDL) -> NonNull<u8> {
    // SAFETY: the sim MDL of a live mapping; the slice is dropped at once, only its address
    // is kept.
    let bytes = unsafe { vmbus_kmcl_sim::mdl_bytes(mdl) }.expect("a writable sim MDL");
    NonNull::new(bytes.as_mut_ptr()).unwrap()
}

/// Opens a server (handler [`CompleteAll`]) and a client (handler `vsc`) on a fresh bus, runs
/// `body` with both channels (which it drops), then checks that the client's cell is empty,
/// that the sim saw no violation and that nothing leaked.
fn with_pair<'b, S, C>(
    server: S,
    client: C,
    vsc: Vsc<'b>,
    body: impl for<'s> FnOnce(
        &'s Bus,
        Channel<'s, Server, CompleteAll, S>,
        Channel<'s, Client, Vsc<'b>, C>,
    ),
) where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    let bus = Bus::new();
    with_slots(
        &bus,
        server,
        CompleteAll,
        client,
        vsc,
        |vsp_slot, mut vsc_slot| {
            let (vsp, vsc) = open_pair(&bus, vsp_slot, vsc_slot.as_mut(), TYPE, INSTANCE);
            body(&bus, vsp, vsc);
            assert_eq!(
                vsc_slot.handler().gpadl.handle(),
                None,
                "no GPADL outlives its channel"
            );
        },
    );
    assert_eq!(bus.take_violations(), Vec::<String>::new());
    bus.assert_no_leaks();
}

fn share_map_write_read_close<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    let buffer = SharedBuffer::<8192>::new();
    buffer.memory().write(0, b"from the guest").unwrap();
    let handler = Vsc::new(Share::Buffer(&buffer), GpadlFlags::empty());
    with_pair(server, client, handler, |_, vsp, vsc| {
        let handle = vsc.handler().gpadl.handle().expect("created in opened");
        assert_eq!(vsc.handler().results(), [Ok(handle)]);

        let mapping = vsp.map_gpadl(handle).unwrap();
        assert_eq!(mapping.handle(), handle);
        assert_eq!(vmbus_kmcl_sim::mdl_chain_len(mapping.as_raw()), Some(8192));
        // SAFETY: the sim's address of the mapped 8192 bytes, valid while the mapping lives.
        let memory = unsafe { mapping.memory(sim_address(mapping.as_raw()), 8192) };
        let mut seen = [0u8; 14];
        memory.read(0, &mut seen).unwrap();
        assert_eq!(&seen, b"from the guest");
        memory.write(8000, b"from the host").unwrap();
        assert!(matches!(memory.write(8190, b"abc"), Err(Error::OutOfRange)));
        assert!(matches!(
            memory.read(usize::MAX, &mut seen),
            Err(Error::OutOfRange)
        ));
        assert_eq!(
            memory.read_value::<u32>(8000).unwrap(),
            u32::from_le_bytes(*b"from")
        );
        drop(mapping);

        let mut back = [0u8; 13];
        buffer.memory().read(8000, &mut back).unwrap();
        assert_eq!(&back, b"from the host");

        // Disabling runs closed, then the trampoline deletes the GPADL.
        let vsc = vsc.disable();
        drop(vsc);
        drop(vsp);
    });
}

fn delete_waits_for_the_unmap<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    let buffer = SharedBuffer::<8192>::new();
    let handler = Vsc::new(Share::Buffer(&buffer), GpadlFlags::empty());
    with_pair(server, client, handler, |_, vsp, vsc| {
        let handle = vsc.handler().gpadl.handle().unwrap();
        let mapping = vsp.map_gpadl_read_only(handle).unwrap();

        let unmapped_at = Mutex::new(None);
        let started = Instant::now();
        let returned_at = std::thread::scope(|scope| {
            let unmapped_at = &unmapped_at;
            scope.spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                *unmapped_at.lock().unwrap() = Some(Instant::now());
                drop(mapping); // VmbChannelUnmapGpadl
            });
            // The client closes; its closed trampoline deletes the GPADL, which waits for the
            // server's unmap on the other thread.
            let builder = vsc.disable();
            let returned = Instant::now();
            drop(builder);
            returned
        });
        let unmapped_at = unmapped_at.lock().unwrap().expect("the server unmapped");
        assert!(
            returned_at >= unmapped_at,
            "the delete returned before the unmap"
        );
        assert!(returned_at - started >= Duration::from_millis(200));
        drop(vsp);
    });
}

fn read_only_gpadl_refuses_a_write_mapping<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    let buffer = SharedBuffer::<8192>::new();
    let handler = Vsc::new(Share::Buffer(&buffer), GpadlFlags::READ_ONLY);
    with_pair(server, client, handler, |_, vsp, vsc| {
        let handle = vsc.handler().gpadl.handle().unwrap();
        assert!(matches!(vsp.map_gpadl(handle), Err(Error::GpadlReadOnly)));
        let mapping = vsp.map_gpadl_read_only(handle).unwrap();
        assert_eq!(
            vmbus_kmcl_sim::mdl_is_read_only(mapping.as_raw()),
            Some(true)
        );
        // One mapping at a time: refused before KMCL is called.
        assert!(matches!(
            vsp.map_gpadl_read_only(handle),
            Err(Error::GpadlAlreadyMapped)
        ));
        drop(mapping);
        let again = vsp.map_gpadl_read_only(handle).unwrap();
        drop(again);
        // A handle the client never made.
        let unknown = GpadlHandle::from_raw(handle.to_raw().wrapping_add(1000));
        assert!(matches!(
            vsp.map_gpadl_read_only(unknown),
            Err(Error::Status(_))
        ));
        drop(vsc);
        drop(vsp);
    });
}

fn mdl_gpadl_to_the_end_and_a_window<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    let mdl = SimMdl::from_bytes(&[7u8; 12288]);
    for (offset, length, expected) in [(4096, None, 8192), (100, NonZeroU32::new(200), 200)] {
        // SAFETY: the sim MDL and its bytes outlive the channels below.
        let window = unsafe { MdlRef::from_raw(NonNull::new(mdl.as_pmdl()).unwrap()) };
        let handler = Vsc::new(Share::Mdl(window, offset, length), GpadlFlags::empty());
        with_pair(server, client, handler, |_, vsp, vsc| {
            let handle = vsc.handler().gpadl.handle().unwrap();
            let mapping = vsp.map_gpadl(handle).unwrap();
            assert_eq!(
                vmbus_kmcl_sim::mdl_chain_len(mapping.as_raw()),
                Some(expected)
            );
            drop(mapping);
            drop(vsc);
            drop(vsp);
        });
    }
}

fn rescind_deletes_the_clients_gpadl<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    let buffer = SharedBuffer::<8192>::new();
    let handler = Vsc::new(Share::Buffer(&buffer), GpadlFlags::empty());
    with_pair(server, client, handler, |bus, vsp, vsc| {
        assert!(vsc.handler().gpadl.handle().is_some());
        drop(vsp); // rescind: the client's closed callback runs, its GPADL goes with it
        bus.run_until_idle();
        assert!(!vsc.is_open());
        assert_eq!(*vsc.handler().log.lock().unwrap(), ["closed, holding"]);
        assert_eq!(vsc.handler().gpadl.handle(), None);
        drop(vsc);
    });
}

fn cells_are_checked_before_kmcl<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    let buffer = SharedBuffer::<8192>::new();
    let outside = GpadlCell::new();
    // A cell outside the handler, then the handler's own cell used twice.
    let mut handler = Vsc::new(Share::Buffer(&buffer), GpadlFlags::empty());
    handler.outside = Some(&outside);
    handler.twice = true;
    handler.from_packet = true;
    with_pair(server, client, handler, |bus, vsp, vsc| {
        let results = vsc.handler().results();
        assert!(matches!(results[0], Err(Error::GpadlCellOutsideSlot)));
        let handle = results[1].expect("the handler's own cell works");
        assert_eq!(vsc.handler().gpadl.handle(), Some(handle));
        assert_eq!(outside.handle(), None);

        // From process_packet (DISPATCH_LEVEL on the sim): refused before KMCL.
        assert_eq!(vsp.try_send(b"ping"), Ok(Sent::Queued));
        bus.run_until_idle();
        let results = vsc.handler().results();
        assert_eq!(results.len(), 3);
        assert!(
            matches!(results[2], Err(Error::IrqlTooHigh { .. })),
            "{:?}",
            results[2]
        );
        drop(vsc);
        drop(vsp);
    });

    // A cell that holds a GPADL refuses a second one.
    let mut handler = Vsc::new(Share::Buffer(&buffer), GpadlFlags::empty());
    handler.twice = true;
    with_pair(server, client, handler, |_, vsp, vsc| {
        let results = vsc.handler().results();
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(Error::GpadlCellInUse)));
        drop(vsc);
        drop(vsp);
    });
}

fn refused_open_deletes_the_gpadl<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    let buffer = SharedBuffer::<8192>::new();
    let mut handler = Vsc::new(Share::Buffer(&buffer), GpadlFlags::empty());
    handler.refuse = true;
    with_pair(server, client, handler, |_, vsp, vsc| {
        assert!(vsc.handler().results()[0].is_ok());
        assert!(!vsc.is_open());
        assert_eq!(
            vsc.handler().gpadl.handle(),
            None,
            "deleted with the refusal"
        );
        drop(vsc);
        drop(vsp);
    });
}

/// A server that maps the GPADL named in each request (its handle, little endian) from the
/// callback, answers with the first 8 bytes it finds there, and unmaps before returning.
struct Mapper;

impl<K: ChannelBackend + KmclServer> Handler<Server, K> for Mapper {
    fn process_packet(&self, channel: &OpenView<'_, Server, K>, packet: IncomingPacket<'_, K>) {
        let Ok(bytes) = <[u8; 4]>::try_from(packet.data()) else {
            return packet.fail();
        };
        let handle = GpadlHandle::from_raw(u32::from_le_bytes(bytes));
        let mut reply = [0u8; 8];
        match channel.map_gpadl(handle) {
            Ok(mapping) => {
                // SAFETY: the sim's address of the mapped bytes, valid while the mapping lives.
                let memory = unsafe { mapping.memory(sim_address(mapping.as_raw()), 8) };
                memory.read(0, &mut reply).unwrap();
            }
            Err(_) => reply = *b"unmapped",
        }
        let _ = packet.complete(&reply);
    }
}

fn server_maps_from_its_callback<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    let bus = Bus::new();
    let buffer = SharedBuffer::<8192>::new();
    buffer.memory().write(0, b"guestmem").unwrap();
    let vsc = Vsc::new(Share::Buffer(&buffer), GpadlFlags::empty());
    with_slots(&bus, server, Mapper, client, vsc, |vsp_slot, vsc_slot| {
        let (vsp, vsc) = open_pair(&bus, vsp_slot, vsc_slot, TYPE, INSTANCE);
        let handle = vsc.handler().gpadl.handle().unwrap();
        let mut response = [0u8; 8];
        let request = handle.to_raw().to_le_bytes();
        assert_eq!(
            vsc.request(&request, &mut response, None).unwrap(),
            b"guestmem"
        );
        // The callback's mapping is gone: the server can map the GPADL again.
        let request = handle.to_raw().wrapping_add(77).to_le_bytes();
        assert_eq!(
            vsc.request(&request, &mut response, None).unwrap(),
            b"unmapped"
        );
        drop(vsp.map_gpadl(handle).unwrap());
        drop(vsc);
        drop(vsp);
    });
    assert_eq!(bus.take_violations(), Vec::<String>::new());
    bus.assert_no_leaks();
}

both_backends!(share_linked, share_tables, share_map_write_read_close);
both_backends!(
    delete_waits_linked,
    delete_waits_tables,
    delete_waits_for_the_unmap
);
both_backends!(
    read_only_linked,
    read_only_tables,
    read_only_gpadl_refuses_a_write_mapping
);
both_backends!(mdl_linked, mdl_tables, mdl_gpadl_to_the_end_and_a_window);
both_backends!(
    rescind_linked,
    rescind_tables,
    rescind_deletes_the_clients_gpadl
);
both_backends!(cells_linked, cells_tables, cells_are_checked_before_kmcl);
both_backends!(
    refused_open_linked,
    refused_open_tables,
    refused_open_deletes_the_gpadl
);
both_backends!(
    callback_mapping_linked,
    callback_mapping_tables,
    server_maps_from_its_callback
);
