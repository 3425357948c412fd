//! The crate's process-wide GPADL tables at their limits: a client's GPADL table
//! ([`MAX_GPADLS`]) and a server's mapping table ([`MAX_MAPPINGS`]) refuse one entry too many
//! with their typed errors, a freed entry is taken again, and a cell whose GPADL went with its
//! channel never names the GPADL that reuses the entry. A test binary of its own: the tables
//! are statics shared by every channel of the process, so the other tests must not run beside
//! this one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use vmbus_kmcl::channel::gpadl::{
    GpadlCell, GpadlFlags, GpadlHandle, SharedBuffer, MAX_GPADLS, MAX_MAPPINGS,
};
use vmbus_kmcl::channel::{Client, Handler, OpenView};
use vmbus_kmcl::dispatch::{ChannelBackend, Linked};
use vmbus_kmcl::packet::IncomingPacket;
use vmbus_kmcl::{guid, Error, Guid, Result};
use vmbus_kmcl_sim::Bus;

mod common;
use common::{open_pair, with_slots, CompleteAll};

const TYPE: Guid = guid!("3e4f5a6b-7c8d-4e9f-a0b1-c2d3e4f5a6b7");
const INSTANCE: Guid = guid!("3e4f5a6b-7c8d-4e9f-a0b1-000000000001");

/// The memory every GPADL of the test describes.
static BUFFER: SharedBuffer<4096> = SharedBuffer::new();

/// A client that fills the GPADL table from its first `opened` and makes one GPADL in `late`
/// from every later one.
struct Filler {
    cells: [GpadlCell<'static>; MAX_GPADLS + 1],
    late: GpadlCell<'static>,
    reopened: AtomicBool,
    /// What the first `opened` saw: every creation of `cells[..MAX_GPADLS]`.
    filled: Mutex<Vec<Result<GpadlHandle>>>,
    /// What the first `opened` did at the limit.
    at_the_limit: Mutex<Option<AtTheLimit>>,
    /// The creation of a later `opened`.
    late_result: Mutex<Option<Result<GpadlHandle>>>,
}

/// The creation one past the limit, the delete that frees an entry, and the creation that
/// takes it.
type AtTheLimit = (Result<GpadlHandle>, Result<bool>, Result<GpadlHandle>);

impl Filler {
    fn new() -> Self {
        Self {
            cells: [const { GpadlCell::new() }; MAX_GPADLS + 1],
            late: GpadlCell::new(),
            reopened: AtomicBool::new(false),
            filled: Mutex::new(Vec::new()),
            at_the_limit: Mutex::new(None),
            late_result: Mutex::new(None),
        }
    }
}

impl<K: ChannelBackend> Handler<Client, K> for Filler {
    fn opened(&self, channel: &OpenView<'_, Client, K>) -> Result<()> {
        let flags = GpadlFlags::empty();
        if self.reopened.swap(true, Ordering::Relaxed) {
            *self.late_result.lock().unwrap() = Some(self.late.create(channel, &BUFFER, flags));
            return Ok(());
        }
        let (last, full) = self.cells.split_last().unwrap();
        let filled = full
            .iter()
            .map(|cell| cell.create(channel, &BUFFER, flags))
            .collect();
        *self.filled.lock().unwrap() = filled;
        let refused = last.create(channel, &BUFFER, flags);
        let freed = self.cells[0].delete(channel);
        let taken = last.create(channel, &BUFFER, flags);
        *self.at_the_limit.lock().unwrap() = Some((refused, freed, taken));
        Ok(())
    }

    fn process_packet(&self, _: &OpenView<'_, Client, K>, packet: IncomingPacket<'_, K>) {
        packet.complete_empty();
    }
}

#[test]
fn full_tables_refuse_with_typed_errors_and_freed_entries_are_reused() {
    // Both tables have room for the client's GPADLs, all mapped at once.
    assert_eq!(MAX_GPADLS, MAX_MAPPINGS);
    let bus = Bus::new();
    let (vsp, vsc) = (CompleteAll, Filler::new());
    with_slots(&bus, Linked, vsp, Linked, vsc, |vsp_slot, vsc_slot| {
        let (vsp, vsc) = open_pair(&bus, vsp_slot, vsc_slot, TYPE, INSTANCE);
        let filler = vsc.handler();

        // The GPADL table: MAX_GPADLS creations succeed, one more is refused before KMCL,
        // and the entry a delete frees is taken by the next creation.
        let filled = filler.filled.lock().unwrap().clone();
        assert_eq!(filled.len(), MAX_GPADLS);
        assert!(filled.iter().all(Result::is_ok), "{filled:?}");
        let (refused, freed, taken) = filler.at_the_limit.lock().unwrap().take().unwrap();
        assert_eq!(refused, Err(Error::TooManyGpadls));
        assert_eq!(freed, Ok(true));
        let taken = taken.unwrap();
        assert_eq!(filler.cells[0].handle(), None);
        assert_eq!(filler.cells[MAX_GPADLS].handle(), Some(taken));
        let held: Vec<GpadlHandle> = filler.cells[1..]
            .iter()
            .map(|cell| cell.handle().unwrap())
            .collect();
        assert_eq!(held.len(), MAX_GPADLS);

        // The mapping table: every held GPADL mapped at once, one more mapping refused before
        // KMCL (even of a GPADL mapped already: the table is checked first), and a freed
        // entry taken again.
        let mut mappings: Vec<_> = held.iter().map(|&h| vsp.map_gpadl(h).unwrap()).collect();
        assert_eq!(mappings.len(), MAX_MAPPINGS);
        assert!(matches!(
            vsp.map_gpadl_read_only(held[0]),
            Err(Error::TooManyMappings)
        ));
        assert!(matches!(
            vsp.map_gpadl(GpadlHandle::from_raw(0xdead)),
            Err(Error::TooManyMappings)
        ));
        drop(mappings.pop());
        let again = vsp.map_gpadl(held[MAX_GPADLS - 1]).unwrap();
        assert_eq!(again.handle(), held[MAX_GPADLS - 1]);
        drop(again);
        drop(mappings);

        // Closing deletes every GPADL without the cells; a later open makes one GPADL, in a
        // table entry one of these cells named before: no old cell names it.
        let vsc = vsc.disable();
        let filler = vsc.handler();
        assert!(filler.cells.iter().all(|cell| cell.handle().is_none()));
        let vsc = vsc.enable().unwrap();
        bus.run_until_idle();
        assert!(vsc.is_open());
        let filler = vsc.handler();
        let late = filler.late_result.lock().unwrap().take().unwrap().unwrap();
        assert_eq!(filler.late.handle(), Some(late));
        assert!(filler.cells.iter().all(|cell| cell.handle().is_none()));
        drop(vsc);
        drop(vsp);
    });
    assert_eq!(bus.take_violations(), Vec::<String>::new());
    bus.assert_no_leaks();
}
