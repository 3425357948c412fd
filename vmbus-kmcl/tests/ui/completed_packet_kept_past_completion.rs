// The packet handed to the completion routine lives for that call: it cannot be stored for
// later (send it again there, or drop it).
use std::cell::RefCell;
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::send::{Completion, OutgoingPacket, SendCompletion};

struct Vsc;

thread_local! {
    static KEPT: RefCell<Option<OutgoingPacket<'static, Vsc, Linked>>> = const { RefCell::new(None) };
}

impl SendCompletion<Linked> for Vsc {
    fn packet_completed(&self, packet: OutgoingPacket<'_, Self, Linked>, _: Completion<'_>) {
        KEPT.with(|kept| *kept.borrow_mut() = Some(packet));
    }
}

fn main() {}
