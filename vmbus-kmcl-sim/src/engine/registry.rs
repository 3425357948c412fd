//! The registry of live buses, and resolution of handle values (`VMBCHANNEL`, `VMBPACKET`,
//! `VMBPACKETCOMPLETION`) to a bus and an object.
#![forbid(unsafe_code)]

use super::*;

/// Every live bus by id, for resolving handles.
pub(super) static REGISTRY: LazyLock<RwLock<HashMap<u64, Weak<BusShared>>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));
pub(super) static NEXT_BUS_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static CACHE: std::cell::RefCell<Option<(u64, Weak<BusShared>)>> =
        const { std::cell::RefCell::new(None) };
}

/// The live bus with id `id`.
pub(crate) fn lookup_bus(id: u64) -> Option<Arc<BusShared>> {
    let cached = CACHE.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(cid, _)| *cid == id)
            .and_then(|(_, w)| w.upgrade())
    });
    if cached.is_some() {
        return cached;
    }
    let bus = REGISTRY
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&id)?
        .upgrade()?;
    CACHE.with(|c| *c.borrow_mut() = Some((id, Arc::downgrade(&bus))));
    Some(bus)
}

/// Resolution of a handle value.
pub(crate) enum Resolved {
    /// A handle of a live bus (the object may still be stale).
    Live(Arc<BusShared>, ObjRef),
    /// NULL.
    Null,
    /// Not a sim handle, or its bus is gone.
    Unknown,
}

/// Resolves a handle value of kind `kind`.
pub(crate) fn resolve(value: usize, kind: Kind) -> Resolved {
    if value == 0 {
        return Resolved::Null;
    }
    let Some(h) = Handle::decode(value, kind).or_else(|| {
        if kind == Kind::Packet {
            initialized_packet(value)
        } else {
            None
        }
    }) else {
        return Resolved::Unknown;
    };
    match lookup_bus(h.bus) {
        Some(bus) => Resolved::Live(
            bus,
            ObjRef {
                index: h.index,
                generation: h.generation,
            },
        ),
        None => Resolved::Unknown,
    }
}

/// Caller-memory packets (`VmbPacketInitialize`) by address.
pub(super) static INITIALIZED: LazyLock<Mutex<HashMap<usize, usize>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

pub(super) fn initialized_map() -> MutexGuard<'static, HashMap<usize, usize>> {
    INITIALIZED.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn initialized_packet(addr: usize) -> Option<Handle> {
    let v = *initialized_map().get(&addr)?;
    Handle::decode(v, Kind::Packet)
}
