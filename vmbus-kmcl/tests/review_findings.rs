//! Soundness findings of the review, each as the test that shows it fixed.

use std::pin::pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use vmbus_kmcl::channel::gpadl::{GpadlCell, GpadlFlags, SharedBuffer};
use vmbus_kmcl::channel::{ChannelSlot, Client, ClientBuilder, Handler, OpenView, Server};
use vmbus_kmcl::dispatch::{ChannelBackend, Linked};
use vmbus_kmcl::packet::IncomingPacket;
use vmbus_kmcl::{guid, Result};
use vmbus_kmcl_sim::Bus;

mod common;
use common::{guest, offer, open_pair, root, CompleteAll};

struct Counting<'b> {
    hits: &'b AtomicU32,
}

impl<K: ChannelBackend> Handler<Server, K> for Counting<'_> {
    fn process_packet(&self, _: &OpenView<'_, Server, K>, packet: IncomingPacket<'_, K>) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        packet.complete_empty();
    }
}

struct Quiet;

impl<K: ChannelBackend> Handler<Client, K> for Quiet {
    fn process_packet(&self, _: &OpenView<'_, Client, K>, packet: IncomingPacket<'_, K>) {
        packet.complete_empty();
    }
}

/// A slot whose handler borrows lives in [`ChannelSlot::scope`] (the safe `ChannelSlot::new`
/// requires a `'static` handler: `tests/ui/leaked_slot_with_borrowing_handler.rs`). Leaking the
/// channel inside the scope does not keep it: the scope drops the slot, which tears the channel
/// down, before the counter its handler borrows is freed.
#[test]
fn a_scoped_slot_tears_its_leaked_channel_down_at_scope_end() {
    let bus = Bus::new();
    let hits = Box::new(AtomicU32::new(0));
    let mut vsc_slot = pin!(ChannelSlot::new(guest(&bus), Linked, Quiet));
    let id = guid!("0b5e7a1c-2d3f-4a5b-8c6d-7e8f9a0b1c2d");
    let handler = Counting { hits: &hits };
    let vsc = ChannelSlot::scope(root(&bus), Linked, handler, |vsp_slot| {
        let vsp = offer(vsp_slot, id, id);
        let mut vsc = ClientBuilder::allocate(vsc_slot.as_mut()).unwrap();
        vsc.set_target(id, None).unwrap();
        let vsc = vsc.enable().unwrap();
        bus.run_until_idle();
        let _ = vsc.try_send(b"ping").unwrap();
        bus.run_until_idle();
        assert_eq!(vsp.handler().hits.load(Ordering::Relaxed), 1);
        std::mem::forget(vsp);
        assert_eq!(bus.leak_report().channels, 2);
        vsc
    });
    // The server's channel is gone with the scope's slot; only the client's is left.
    assert_eq!(bus.leak_report().channels, 1);
    drop(hits);
    let _ = vsc.try_send(b"after the scope");
    bus.run_until_idle();
    drop(vsc);
    assert_eq!(bus.take_violations(), Vec::<String>::new());
    bus.assert_no_leaks();
}

/// The scope's slot is dropped when its closure unwinds too.
#[test]
fn a_scoped_slot_tears_its_channel_down_when_the_closure_panics() {
    let bus = Bus::new();
    let hits = AtomicU32::new(0);
    let id = guid!("2a3b4c5d-6e7f-4a8b-9c0d-1e2f3a4b5c6d");
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ChannelSlot::scope(root(&bus), Linked, Counting { hits: &hits }, |vsp_slot| {
            std::mem::forget(offer(vsp_slot, id, id));
            assert_eq!(bus.leak_report().channels, 1);
            panic!("the closure unwinds");
        })
    }));
    assert!(unwound.is_err());
    assert_eq!(bus.take_violations(), Vec::<String>::new());
    bus.assert_no_leaks();
}

static PAGE: SharedBuffer<4096> = SharedBuffer::new();

/// A place in the handler that holds a GPADL cell or other bytes.
enum Place {
    Cell(GpadlCell<'static>),
    Junk([usize; 8]),
}

/// A client whose GPADL cell sits behind a lock, so that safe code can overwrite it.
struct Overwritable {
    place: Mutex<Place>,
}

impl<K: ChannelBackend> Handler<Client, K> for Overwritable {
    fn opened(&self, channel: &OpenView<'_, Client, K>) -> Result<()> {
        if let Place::Cell(cell) = &*self.place.lock().unwrap() {
            cell.create(channel, &PAGE, GpadlFlags::empty())?;
        }
        Ok(())
    }
    fn process_packet(&self, _: &OpenView<'_, Client, K>, packet: IncomingPacket<'_, K>) {
        packet.complete_empty();
    }
}

/// A GPADL cell behind interior mutability can be overwritten while it holds a GPADL. The
/// channel keeps its GPADLs in a table of the crate, which the cell only names by index and
/// generation: the closed trampoline still finds and deletes the GPADL, and follows nothing
/// that lies in the overwritten bytes.
#[test]
fn an_overwritten_gpadl_cell_does_not_break_the_closed_cleanup() {
    let bus = Bus::new();
    let mut vsp_slot = pin!(ChannelSlot::new(root(&bus), Linked, CompleteAll));
    let handler = Overwritable {
        place: Mutex::new(Place::Cell(GpadlCell::new())),
    };
    let mut vsc_slot = pin!(ChannelSlot::new(guest(&bus), Linked, handler));
    let id = guid!("1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f");
    let (vsp, vsc) = open_pair(&bus, vsp_slot.as_mut(), vsc_slot.as_mut(), id, id);
    if let Place::Cell(cell) = &*vsc.handler().place.lock().unwrap() {
        assert!(cell.handle().is_some(), "the GPADL exists");
    }
    let mut place = vsc.handler().place.lock().unwrap();
    *place = Place::Junk([0; 8]);
    assert!(matches!(&*place, Place::Junk(bytes) if bytes.iter().all(|b| *b == 0)));
    drop(place);
    drop(vsc); // closed: the trampoline should delete the GPADL
    drop(vsp);
    assert_eq!(bus.take_violations(), Vec::<String>::new());
    bus.assert_no_leaks();
}
