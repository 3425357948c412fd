//! Test control and fault injection: block limits, allocation and open failures, a full
//! ring, a crashed peer, and raw packets injected as a hostile guest.
#![forbid(unsafe_code)]

use super::*;

/// Why a packet injected with [`crate::Bus::inject_raw_guest_packet`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawPacketError {
    /// The channel is not a connected server channel of this bus.
    NotConnected,
    /// Shorter than a descriptor, or the descriptor's offsets or lengths are inconsistent.
    Malformed,
    /// The packet type or flags are not a guest data packet.
    UnsupportedType,
    /// The payload exceeds the server's maximum packet size or the ring.
    Oversized,
    /// The guest-to-host ring has no room for the packet now (the server has not drained it, or
    /// [`crate::Bus::set_ring_full`] is in force on the client): a guest finds the ring full
    /// and cannot write.
    RingFull,
}

/// A completion the server sent for a raw injected packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCompletion {
    /// Transaction id from the injected descriptor.
    pub transaction_id: u64,
    /// Completion status.
    pub status: NTSTATUS,
    /// Completion data.
    pub data: Vec<u8>,
}

/// Fault-injection settings.
#[derive(Debug, Default)]
pub(super) struct Faults {
    pub(super) fail_packet_allocations: u32,
    pub(super) fail_channel_allocations: u32,
    pub(super) external_data_pending: u32,
    pub(super) pnp_failures: VecDeque<NTSTATUS>,
}

impl BusShared {
    // ----- Test control -----

    pub(crate) fn set_block_limit(&self, d: Duration) {
        self.lock().block_limit = Some(d);
    }

    pub(crate) fn fail_packet_allocations(&self, n: u32) {
        self.lock().faults.fail_packet_allocations = n;
    }

    pub(crate) fn fail_channel_allocations(&self, n: u32) {
        self.lock().faults.fail_channel_allocations = n;
    }

    pub(crate) fn external_data_pending(&self, n: u32) {
        self.lock().faults.external_data_pending = n;
    }

    pub(crate) fn fail_next_open(&self, status: NTSTATUS) {
        self.lock().faults.pnp_failures.push_back(status);
    }

    pub(crate) fn set_ring_full(&self, c: ObjRef, full: bool) -> bool {
        let mut st = self.lock();
        let Some(ch) = st.channels.get_mut(c) else {
            return false;
        };
        ch.out.forced_full = full;
        if !full {
            st.refill(c);
        }
        drop(st);
        self.notify();
        true
    }

    pub(crate) fn crash_peer_of(&self, c: ObjRef) -> bool {
        let mut st = self.lock();
        let Some(ch) = st.channels.get(c) else {
            return false;
        };
        if ch.peer.is_none() {
            return false;
        }
        let (was_open, was_running) = (ch.state == ChannelState::Open, ch.running);
        st.disconnect(c, false, true);
        if let Some(ch) = st.channels.get_mut(c) {
            ch.running = false;
            ch.incoming_enabled = false;
            ch.state = if ch.is_server {
                ChannelState::Enabled
            } else {
                ChannelState::Disabled
            };
        }
        st.cancel_in_flight(c, STATUS_CANCELLED);
        st.events.retain(|e| e.channel != c);
        st.events.push_back(Event {
            channel: c,
            kind: EventKind::PeerGone {
                was_open,
                was_running,
            },
        });
        drop(st);
        self.notify();
        true
    }

    pub(crate) fn channel_info(&self, c: ObjRef) -> Option<ChannelInfo> {
        let st = self.lock();
        let ch = st.channels.get(c)?;
        Some(ChannelInfo {
            side: ch.side,
            is_server: ch.is_server,
            state: ch.state,
            paused: ch.paused,
            running: ch.running,
            incoming_queue_failed: ch.queue_failed,
            friendly_name: ch.friendly_name.clone(),
            client_context_size: ch.client_context_size,
            init_flags: ch.init_flags,
            server_flags: ch.server_flags,
            max_packet_size: ch.max_packet_size,
            max_external_data: ch.max_external_data,
            ring_page_counts: ch.ring_pages,
            outgoing_ring_capacity: ch.out.capacity,
            outgoing_ring_used: ch.out.used,
            outgoing_in_ring: ch.out.ring.len(),
            outgoing_waiting: ch.out.waiting.len(),
            outstanding_incoming: ch.outstanding,
            transaction_quota: ch.quota,
            incoming_at_passive: ch.passive,
            interrupt_latency: ch.latency,
            mmio_megabytes: ch.mmio_megabytes,
            mmio_space: ch.mmio_space,
            target_vtl: ch.target_vtl,
            vmbus_handle: ch.vmbus_handle,
            interface_type: ch.interface_type,
            interface_instance: ch.interface_instance,
            pointer: ch.pointer.addr(),
        })
    }

    pub(crate) fn raw_completions(&self) -> Vec<RawCompletion> {
        std::mem::take(&mut self.lock().raw_completions)
    }

    pub(crate) fn packets_delivered(&self) -> u64 {
        self.lock().delivered
    }

    /// Injects raw bytes as a packet the guest put in the ring of the server channel `s`.
    pub(crate) fn inject_raw(&self, s: ObjRef, bytes: &[u8]) -> Result<(), RawPacketError> {
        let mut st = self.lock();
        let result = self.inject_raw_locked(&mut st, s, bytes);
        if result.is_err() {
            st.rejected_raw += 1;
        }
        drop(st);
        self.notify();
        result
    }

    pub(super) fn inject_raw_locked(
        &self,
        st: &mut BusState,
        s: ObjRef,
        bytes: &[u8],
    ) -> Result<(), RawPacketError> {
        let server = st.channels.get(s).ok_or(RawPacketError::NotConnected)?;
        if !server.is_server {
            return Err(RawPacketError::NotConnected);
        }
        let guest = server.peer.ok_or(RawPacketError::NotConnected)?;
        let max = server.max_packet_size as usize;
        // Copy the descriptor out before looking at it.
        let mut hdr = [0u8; 16];
        hdr.copy_from_slice(bytes.get(..16).ok_or(RawPacketError::Malformed)?);
        let ty = u16::from_le_bytes([hdr[0], hdr[1]]);
        let offset = usize::from(u16::from_le_bytes([hdr[2], hdr[3]])) * 8;
        let total = usize::from(u16::from_le_bytes([hdr[4], hdr[5]])) * 8;
        let flags = u16::from_le_bytes([hdr[6], hdr[7]]);
        let mut txid = [0u8; 8];
        txid.copy_from_slice(&hdr[8..16]);
        let txid = u64::from_le_bytes(txid);
        if offset < 16 || total < offset || total > bytes.len() {
            return Err(RawPacketError::Malformed);
        }
        // 0x6: in-band data; 0x9: data with external pages (GPA direct); flag bit 0: completion
        // requested.
        if (ty != 0x6 && ty != 0x9) || flags & !1 != 0 {
            return Err(RawPacketError::UnsupportedType);
        }
        let external = if ty == 0x9 {
            // The server's declared maximum, or one page when it declared none.
            let limit = server
                .max_external_data
                .map_or(PAGE_SIZE, |(size, _)| size as usize);
            Some(gpa_direct_range(bytes, offset, limit)?)
        } else {
            None
        };
        let payload = bytes.get(offset..total).ok_or(RawPacketError::Malformed)?;
        let size = frame_size(payload.len(), external.as_ref());
        let cap = st.channels.get(guest).map(|g| g.out.capacity).unwrap_or(0);
        if payload.len() > max || size > cap {
            return Err(RawPacketError::Oversized);
        }
        let payload = st.take_buf(payload);
        let frame = Frame {
            size,
            payload,
            body: FrameBody::Data {
                origin: Origin::Raw(txid),
                wants_completion: flags & 1 != 0,
                external,
            },
        };
        // Straight into the guest's ring: the ring has a fixed size, and a guest that finds it
        // full cannot write (there is no queue in front of it for raw writes).
        let Some(g) = st.channels.get_mut(guest) else {
            st.drop_frame(frame);
            return Err(RawPacketError::NotConnected);
        };
        let fits = !g.out.forced_full
            && g.out
                .used
                .checked_add(size)
                .is_some_and(|end| end <= g.out.capacity);
        if !fits {
            st.drop_frame(frame);
            return Err(RawPacketError::RingFull);
        }
        g.out.used += size;
        g.out.ring.push_back(frame);
        Ok(())
    }

    pub(crate) fn rejected_raw(&self) -> usize {
        self.lock().rejected_raw
    }
}

/// The external range of a raw GPA-direct frame (type 9), checked before any driver sees it:
/// after the 16-byte descriptor, a reserved `u32`, the range count `u32` (exactly 1: KMCL hands
/// the driver one MDL), then the range: byte count `u32`, byte offset into the first page `u32`
/// and one `u64` page number per page the range touches, all before the data offset. The byte
/// count must be non-zero and at most `limit`, the offset inside the first page. The receiver's
/// MDL lists the pages (`mdl_pfns`); like any page-number external data in the sim, the pages
/// are not addressable host memory.
fn gpa_direct_range(
    bytes: &[u8],
    data_offset: usize,
    limit: usize,
) -> Result<Described, RawPacketError> {
    let word = |at: usize| -> Result<u32, RawPacketError> {
        let b = bytes.get(at..at + 4).ok_or(RawPacketError::Malformed)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if word(20)? != 1 {
        return Err(RawPacketError::UnsupportedType);
    }
    let (count, first) = (word(24)? as usize, word(28)? as usize);
    if count == 0 || first >= PAGE_SIZE {
        return Err(RawPacketError::Malformed);
    }
    let pages = first
        .checked_add(count)
        .ok_or(RawPacketError::Malformed)?
        .div_ceil(PAGE_SIZE);
    let end = pages
        .checked_mul(8)
        .and_then(|n| n.checked_add(32))
        .ok_or(RawPacketError::Malformed)?;
    if end > data_offset {
        return Err(RawPacketError::Malformed);
    }
    if count > limit {
        return Err(RawPacketError::Oversized);
    }
    let pfns = bytes
        .get(32..end)
        .ok_or(RawPacketError::Malformed)?
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    Ok(Described::Pfns(pfns))
}
