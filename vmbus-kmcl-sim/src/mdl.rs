//! Memory descriptor lists of the emulator.
//!
//! A Windows `MDL` describes the physical pages behind a buffer; KMCL takes MDLs for external
//! packet data and for GPADLs, and hands out MDLs when a server maps a GPADL or reads a packet's
//! external data. `vmbus_kmcl_sys::MDL` is opaque, so the sim uses its own representation behind
//! the `PMDL` pointer:
//!
//! * [`SimMdl`] is the test-side helper: it owns a zeroed or copied byte buffer and hands out a
//!   `PMDL` for it. MDLs can be chained ([`SimMdl::chain`]) like `MDL.Next` chains.
//! * MDLs the sim creates itself (a mapped GPADL, a packet's external data) *alias* the memory
//!   the peer described, the way a real mapping aliases guest pages; they may be read-only.
//!
//! Every live representation is registered, so a `PMDL` from the driver is validated before the
//! sim reads it; a pointer that is not a live sim MDL is rejected, never dereferenced. Drivers
//! and tests reach the bytes with [`mdl_address`] (read-only MDLs included), [`mdl_bytes`] (and
//! [`mdl_read`] / [`mdl_write`]).

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::{LazyLock, Mutex, MutexGuard};

use vmbus_kmcl_sys::{MDL, PMDL};

/// Marks a live [`MdlRepr`].
const MDL_MAGIC: u64 = 0x4D44_4C5F_5349_4D31;

/// The sim's layout behind a `PMDL`.
#[repr(C)]
struct MdlRepr {
    magic: u64,
    /// The next MDL of the chain (a registered address) or 0.
    next: usize,
    /// First byte described, or null for a PFN-only MDL.
    data: *mut u8,
    /// Bytes described.
    len: usize,
    /// Writes through the sim helpers are refused.
    read_only: bool,
    /// Page frame numbers, for MDLs built from a PFN list.
    pfns: Vec<u64>,
}

/// A registered representation, kept as the pointer `register` made (with its provenance), so
/// that a lookup by address never has to turn an integer back into a pointer.
struct Registered(NonNull<MdlRepr>);

// SAFETY: the pointer is only dereferenced by `with_repr` and freed by `unregister`, both under
// the registry lock; the representation itself holds no thread-bound state.
unsafe impl Send for Registered {}

/// Every live [`MdlRepr`], by address.
static LIVE: LazyLock<Mutex<HashMap<usize, Registered>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn live() -> MutexGuard<'static, HashMap<usize, Registered>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Boxes and registers a representation.
fn register(repr: MdlRepr) -> NonNull<MdlRepr> {
    let ptr = NonNull::from(Box::leak(Box::new(repr)));
    live().insert(ptr.addr().get(), Registered(ptr));
    ptr
}

/// Unregisters and frees a representation made by [`register`].
fn unregister(ptr: NonNull<MdlRepr>) {
    live().remove(&ptr.addr().get());
    // SAFETY:
    // - `ptr` came from `Box::leak` in `register` and is freed only here, once, by the single
    //   owner (`SimMdl` or `OwnedMdl`) whose `Drop` calls this;
    // - it was just removed from the registry, so no lookup can reach it any more.
    drop(unsafe { Box::from_raw(ptr.as_ptr()) });
}

/// Runs `f` on the live representation at `addr`, with the registry locked so that it cannot
/// be freed meanwhile.
fn with_repr<R>(addr: usize, f: impl FnOnce(&MdlRepr) -> R) -> Option<R> {
    let guard = live();
    // The pointer `register` stored, not `addr` cast back: it carries the allocation's
    // provenance.
    let ptr = guard.get(&addr)?.0;
    // SAFETY:
    // - `ptr` is registered, so it is a live `MdlRepr` made by `register` (from `Box::leak`);
    // - the registry lock is held, and `unregister` takes it before freeing, so it stays alive
    //   for the duration of `f`;
    // - the sim never mutates a representation after registering it except `SimMdl::chain`,
    //   which also holds the registry lock.
    let repr = unsafe { ptr.as_ref() };
    let r = f(repr);
    drop(guard);
    Some(r)
}

/// A contiguous piece of memory described by an MDL chain. The pointer keeps the provenance of
/// the memory it came from, so the helpers that later access it do so through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    /// First byte.
    pub ptr: *mut u8,
    /// Length in bytes.
    pub len: usize,
}

// SAFETY: a `Segment` is a description; the sim only accesses the memory through the unsafe
// helpers whose callers guarantee it is alive and not accessed concurrently.
unsafe impl Send for Segment {}
// SAFETY: as above; shared access only copies the description.
unsafe impl Sync for Segment {}

/// External data or GPADL memory, as the sim records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Described {
    /// Byte ranges in host memory.
    Segments(Vec<Segment>),
    /// Page frame numbers (not addressable on the host).
    Pfns(Vec<u64>),
}

impl Described {
    /// Bytes described.
    pub(crate) fn byte_len(&self) -> usize {
        match self {
            Described::Segments(s) => s.iter().map(|s| s.len).sum(),
            Described::Pfns(p) => p.len().saturating_mul(4096),
        }
    }
}

/// Reasons a driver-supplied MDL is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MdlError {
    /// Not a live sim MDL (or a chain link is not).
    NotAnMdl,
    /// The window lies outside the described bytes.
    OutOfRange,
}

/// The byte ranges of the MDL chain at `pmdl`, restricted to `offset..offset+len` (`len` 0 = to
/// the end). With `first_only`, only the first MDL of the chain counts.
pub(crate) fn segments(
    pmdl: usize,
    offset: usize,
    len: usize,
    first_only: bool,
) -> Result<Vec<Segment>, MdlError> {
    let mut all = Vec::new();
    let mut cur = pmdl;
    let mut hops = 0usize;
    while cur != 0 {
        hops += 1;
        if hops > 4096 {
            return Err(MdlError::NotAnMdl);
        }
        let (seg, next) = with_repr(cur, |r| {
            (
                Segment {
                    ptr: r.data,
                    len: r.len,
                },
                r.next,
            )
        })
        .ok_or(MdlError::NotAnMdl)?;
        if !seg.ptr.is_null() {
            all.push(seg);
        }
        if first_only {
            break;
        }
        cur = next;
    }
    let total: usize = all.iter().map(|s| s.len).sum();
    let want = if len == 0 {
        total.checked_sub(offset).ok_or(MdlError::OutOfRange)?
    } else {
        len
    };
    let end = offset.checked_add(want).ok_or(MdlError::OutOfRange)?;
    if end > total {
        return Err(MdlError::OutOfRange);
    }
    let mut out = Vec::new();
    let mut skip = offset;
    let mut left = want;
    for s in all {
        if left == 0 {
            break;
        }
        if skip >= s.len {
            skip -= s.len;
            continue;
        }
        let take = (s.len - skip).min(left);
        out.push(Segment {
            ptr: s.ptr.wrapping_add(skip),
            len: take,
        });
        left -= take;
        skip = 0;
    }
    Ok(out)
}

/// An MDL the sim created (a GPADL mapping or a packet's external data). It aliases memory that
/// the describing side keeps alive; dropping it unregisters and frees the descriptor only.
#[derive(Debug)]
pub(crate) struct OwnedMdl {
    head: NonNull<MdlRepr>,
    rest: Vec<NonNull<MdlRepr>>,
}

// SAFETY: the representations are only read under the registry lock and freed by their owner;
// the raw data pointers inside are never dereferenced by `OwnedMdl` itself.
unsafe impl Send for OwnedMdl {}

impl OwnedMdl {
    /// Builds a chain describing `described`.
    pub(crate) fn new(described: &Described, read_only: bool) -> OwnedMdl {
        let reprs: Vec<MdlRepr> = match described {
            Described::Segments(segs) if !segs.is_empty() => segs
                .iter()
                .map(|s| MdlRepr {
                    magic: MDL_MAGIC,
                    next: 0,
                    data: s.ptr,
                    len: s.len,
                    read_only,
                    pfns: Vec::new(),
                })
                .collect(),
            Described::Segments(_) => vec![MdlRepr {
                magic: MDL_MAGIC,
                next: 0,
                data: std::ptr::null_mut(),
                len: 0,
                read_only,
                pfns: Vec::new(),
            }],
            Described::Pfns(p) => vec![MdlRepr {
                magic: MDL_MAGIC,
                next: 0,
                data: std::ptr::null_mut(),
                len: p.len().saturating_mul(4096),
                read_only,
                pfns: p.clone(),
            }],
        };
        // Register back to front so each link can point at its successor.
        let mut next = 0usize;
        let mut ptrs = Vec::with_capacity(reprs.len());
        for mut r in reprs.into_iter().rev() {
            r.next = next;
            let p = register(r);
            // The chain link is the registry key of its successor.
            next = p.addr().get();
            ptrs.push(p);
        }
        ptrs.reverse();
        let head = ptrs.remove(0);
        OwnedMdl { head, rest: ptrs }
    }

    /// The `PMDL` to hand to the driver.
    pub(crate) fn as_pmdl(&self) -> PMDL {
        self.head.as_ptr().cast::<MDL>()
    }
}

impl Drop for OwnedMdl {
    fn drop(&mut self) {
        unregister(self.head);
        for p in self.rest.drain(..) {
            unregister(p);
        }
    }
}

/// A test-owned MDL: a byte buffer plus the descriptor KMCL functions take.
///
/// Hand [`SimMdl::as_pmdl`] to `VmbPacketSend`, `VmbChannelCreateGpadlFromMdl` and friends. The
/// buffer lives as long as the `SimMdl`; keep it alive while the sim may use it (until the
/// packet completes or the GPADL is deleted).
///
/// # Invariants
///
/// `repr` is registered and points at a representation whose `data`/`len` describe `buf`.
#[derive(Debug)]
pub struct SimMdl {
    repr: NonNull<MdlRepr>,
    buf: NonNull<[u8]>,
}

// SAFETY: the buffer is exclusively owned; all access goes through `&self`/`&mut self` methods or
// the unsafe `mdl_bytes`, whose caller takes over the aliasing obligations.
unsafe impl Send for SimMdl {}
// SAFETY: shared methods only read the buffer through raw pointers without creating references
// that outlive the call; concurrent writes through the unsafe accessors are the caller's duty.
unsafe impl Sync for SimMdl {}

impl SimMdl {
    /// A zeroed buffer of `len` bytes.
    pub fn new(len: usize) -> SimMdl {
        SimMdl::from_bytes(&vec![0; len])
    }

    /// A buffer holding a copy of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> SimMdl {
        let buf = NonNull::from(Box::leak(bytes.to_vec().into_boxed_slice()));
        let repr = register(MdlRepr {
            magic: MDL_MAGIC,
            next: 0,
            data: buf.as_ptr().cast::<u8>(),
            len: bytes.len(),
            read_only: false,
            pfns: Vec::new(),
        });
        SimMdl { repr, buf }
    }

    /// The descriptor pointer for KMCL calls.
    pub fn as_pmdl(&self) -> PMDL {
        self.repr.as_ptr().cast::<MDL>()
    }

    /// Bytes described by this MDL (not counting chained ones).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True for an empty buffer.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// A copy of the buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        // SAFETY:
        // - `buf` is the live allocation this `SimMdl` owns (invariant);
        // - the reference lives only for the copy, while no sim code writes the buffer (the sim
        //   writes only on behalf of a driver call made by the same test).
        unsafe { self.buf.as_ref() }.to_vec()
    }

    /// Copies `data` into the buffer at `offset`.
    ///
    /// # Panics
    ///
    /// If the range does not fit in the buffer.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        // SAFETY: `&mut self` gives exclusive access to the owned, live buffer (invariant).
        let buf = unsafe { self.buf.as_mut() };
        buf[offset..offset + data.len()].copy_from_slice(data);
    }

    /// Links `next` behind this MDL, like setting `MDL.Next`. `next` must outlive every use of
    /// the chain; a dropped link makes the chain invalid (the sim then rejects it).
    pub fn chain(&mut self, next: &SimMdl) {
        let guard = live();
        // SAFETY:
        // - `repr` is live and owned by `self` (invariant); `&mut self` excludes other writers;
        // - readers only access it under the registry lock, which is held here.
        unsafe { (*self.repr.as_ptr()).next = next.repr.addr().get() };
        drop(guard);
    }
}

impl Drop for SimMdl {
    fn drop(&mut self) {
        unregister(self.repr);
        // SAFETY: `buf` came from `Box::leak` in `from_bytes` and is freed only here.
        drop(unsafe { Box::from_raw(self.buf.as_ptr()) });
    }
}

/// True when `pmdl` is a live sim MDL.
pub fn is_sim_mdl(pmdl: PMDL) -> bool {
    // An address lookup only: the registry supplies the pointer.
    with_repr(pmdl.addr(), |r| r.magic == MDL_MAGIC).unwrap_or(false)
}

/// Whether the live sim MDL `pmdl` is read-only (`None` if it is not a sim MDL).
pub fn mdl_is_read_only(pmdl: PMDL) -> Option<bool> {
    // An address lookup only: the registry supplies the pointer.
    with_repr(pmdl.addr(), |r| r.read_only)
}

/// The page frame numbers of a PFN-built sim MDL (empty for byte MDLs).
pub fn mdl_pfns(pmdl: PMDL) -> Option<Vec<u64>> {
    // An address lookup only: the registry supplies the pointer.
    with_repr(pmdl.addr(), |r| r.pfns.clone())
}

/// Total bytes described by the sim MDL chain at `pmdl`.
pub fn mdl_chain_len(pmdl: PMDL) -> Option<usize> {
    // An address lookup only: the registry supplies the pointer.
    segments(pmdl.addr(), 0, 0, false)
        .ok()
        .map(|s| s.iter().map(|s| s.len).sum())
}

/// Where the bytes of one sim MDL are: the emulator's answer to `MmGetSystemAddressForMdlSafe`.
///
/// Returned by [`mdl_address`] for read-only and writable MDLs alike. Only the address is
/// handed out, never a reference, so holding it asserts nothing about the memory; reading or
/// writing through it is the holder's `unsafe` step, under the rules of [`mdl_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MdlAddress {
    /// The first byte the MDL describes, with the provenance of the memory behind it.
    pub address: NonNull<u8>,
    /// Bytes described by this MDL (not counting chained ones).
    pub len: usize,
    /// The MDL was made read-only (a read-only GPADL mapping, external data mapped for
    /// reading): the holder may read through `address` but must not write.
    pub read_only: bool,
}

/// The address and length of the single sim MDL `pmdl` (not its chain), read-only MDLs
/// included: a server that mapped a GPADL with `VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY` reads the
/// guest's bytes through it, as a driver reads through the system address of the mapping's MDL.
///
/// Returns `None` when `pmdl` is not a live sim MDL or describes no addressable bytes (a page
/// frame number MDL, an empty one).
///
/// The memory stays valid as long as [`mdl_bytes`] says; reading it through `address` needs
/// that (and no concurrent writer for a plain read), writing needs `read_only` to be false.
pub fn mdl_address(pmdl: PMDL) -> Option<MdlAddress> {
    // An address lookup only: the registry supplies the pointer.
    let (data, len, read_only) = with_repr(pmdl.addr(), |r| (r.data, r.len, r.read_only))?;
    if len == 0 {
        return None;
    }
    Some(MdlAddress {
        address: NonNull::new(data)?,
        len,
        read_only,
    })
}

/// The bytes of the single sim MDL `pmdl` (not its chain), writable.
///
/// Returns `None` when `pmdl` is not a live sim MDL, when it is read-only (a read-only GPADL
/// mapping or external data mapped read-only: [`mdl_address`] serves those for reading) or
/// when it has no addressable bytes.
///
/// # Safety
///
/// * The memory the MDL describes must still be alive: for an MDL from `VmbChannelMapGpadl`
///   until `VmbChannelUnmapGpadl` and while the client keeps the GPADL buffer; for external
///   data until the packet is completed; for a [`SimMdl`] while it lives.
/// * No other reference to those bytes may be used while the returned slice is alive.
pub unsafe fn mdl_bytes<'a>(pmdl: PMDL) -> Option<&'a mut [u8]> {
    // An address lookup only: the registry supplies the pointer.
    let (data, len, ro) = with_repr(pmdl.addr(), |r| (r.data, r.len, r.read_only))?;
    if ro || data.is_null() {
        return None;
    }
    // SAFETY:
    // - `data`/`len` describe memory that the caller guarantees is alive;
    // - the caller guarantees exclusive access for the slice's lifetime.
    Some(unsafe { std::slice::from_raw_parts_mut(data, len) })
}

/// A copy of every byte the sim MDL chain at `pmdl` describes (read-only MDLs included).
///
/// # Safety
///
/// The described memory must be alive and not written concurrently (see [`mdl_bytes`]).
pub unsafe fn mdl_read(pmdl: PMDL) -> Option<Vec<u8>> {
    // An address lookup only: the registry supplies the pointer.
    let segs = segments(pmdl.addr(), 0, 0, false).ok()?;
    let mut out = Vec::new();
    for s in segs {
        let p = s.ptr.cast_const();
        // SAFETY: the caller guarantees the segment is alive and not written concurrently.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(p, s.len) });
    }
    Some(out)
}

/// Writes `data` at `offset` into the sim MDL chain at `pmdl`. Returns false when `pmdl` is not
/// a sim MDL, is read-only, or the range does not fit.
///
/// # Safety
///
/// The described memory must be alive and not accessed concurrently (see [`mdl_bytes`]).
pub unsafe fn mdl_write(pmdl: PMDL, offset: usize, data: &[u8]) -> bool {
    if mdl_is_read_only(pmdl) != Some(false) {
        return false;
    }
    // An address lookup only: the registry supplies the pointer.
    let Ok(segs) = segments(pmdl.addr(), offset, data.len(), false) else {
        return false;
    };
    let mut src = data;
    for s in segs {
        let (head, tail) = src.split_at(s.len);
        let p = s.ptr;
        // SAFETY: the caller guarantees the segment is alive and exclusively accessible.
        unsafe { std::ptr::copy_nonoverlapping(head.as_ptr(), p, head.len()) };
        src = tail;
    }
    true
}
