//! Incoming packets (`VMBPACKETCOMPLETION`): the receiver's handle on a delivered packet,
//! completed, failed, deferred to passive level or asked for its external data.
#![forbid(unsafe_code)]

use super::*;

/// State of a delivered incoming packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InState {
    /// Inside `EvtVmbChannelProcessPacket`.
    Delivering,
    /// Returned from the callback, not completed yet.
    Held,
    /// `VmbChannelPacketDeferToPassive` was called during delivery.
    Deferred,
    /// `VmbChannelPacketGetExternalData` returned `STATUS_PENDING` during delivery.
    PendingExternal,
    /// Waiting in the channel's redelivery queue.
    Redeliver,
}

/// A delivered packet (`VMBPACKETCOMPLETION`).
#[derive(Debug)]
pub(super) struct Incoming {
    pub(super) receiver: ObjRef,
    pub(super) payload: Vec<u8>,
    pub(super) origin: Origin,
    pub(super) wants_completion: bool,
    pub(super) external: Option<Described>,
    pub(super) external_mdl: Option<OwnedMdl>,
    pub(super) state: InState,
    pub(super) pended_once: bool,
}

impl BusShared {
    // ----- Incoming packets -----

    pub(super) fn incoming<'a>(
        &self,
        st: &'a mut BusState,
        r: ObjRef,
        what: &str,
    ) -> Option<&'a mut Incoming> {
        if st.incoming.get(r).is_none() {
            st.violation(self.id, format!("{what}: stale VMBPACKETCOMPLETION (double completion, or use after the packet was completed)"));
            return None;
        }
        st.incoming.get_mut(r)
    }

    /// Completes an incoming packet with `data`. Returns the packet's payload buffer when
    /// `data` lies inside it (an echo completing with the delivered buffer itself): the buffer
    /// may not be reused while `data` is borrowed, so the caller hands it to
    /// [`BusShared::recycle`] once it no longer uses `data`.
    #[must_use = "an aliased payload buffer must be recycled after the call"]
    pub(crate) fn packet_complete(&self, r: ObjRef, data: &[u8]) -> Option<Vec<u8>> {
        self.finish_incoming(r, data, STATUS_SUCCESS, "VmbChannelPacketComplete")
    }

    /// Returns a payload buffer to the pool.
    pub(crate) fn recycle(&self, buffer: Vec<u8>) {
        self.lock().give_buf(buffer);
    }

    pub(crate) fn packet_fail(&self, r: ObjRef) {
        let mut st = self.lock();
        let Some(i) = self.incoming(&mut st, r, "VmbChannelPacketFail") else {
            return;
        };
        let recv = i.receiver;
        if let Some(ch) = st.channels.get_mut(recv) {
            ch.queue_failed = true;
        }
        drop(st);
        // No data, so nothing can alias the payload buffer.
        if let Some(buffer) =
            self.finish_incoming(r, &[], STATUS_UNSUCCESSFUL, "VmbChannelPacketFail")
        {
            self.recycle(buffer);
        }
    }

    /// Finishes an incoming packet; returns its payload buffer instead of recycling it when
    /// `data` points into it (see [`BusShared::packet_complete`]).
    pub(super) fn finish_incoming(
        &self,
        r: ObjRef,
        data: &[u8],
        status: NTSTATUS,
        what: &str,
    ) -> Option<Vec<u8>> {
        let mut st = self.lock();
        let i = self.incoming(&mut st, r, what)?;
        match i.state {
            InState::Deferred => {
                self.violation(
                    &mut st,
                    format!("{what} after VmbChannelPacketDeferToPassive in the same delivery"),
                );
                return None;
            }
            InState::PendingExternal => {
                self.violation(&mut st, format!("{what} after VmbChannelPacketGetExternalData returned STATUS_PENDING; return and wait for the redelivery"));
                return None;
            }
            InState::Redeliver => {
                self.violation(&mut st, format!("{what} on a packet queued for redelivery"));
                return None;
            }
            InState::Delivering | InState::Held => {}
        }
        let i = st.incoming.remove(r)?;
        if let Some(ch) = st.channels.get_mut(i.receiver) {
            ch.outstanding = ch.outstanding.saturating_sub(1);
            // A completion (and only a completion) restarts a queue stalled on the quota.
            ch.quota_stalled = false;
        }
        drop(i.external_mdl);
        if i.wants_completion {
            let connected = st
                .channels
                .get(i.receiver)
                .is_some_and(|c| c.peer.is_some());
            if connected {
                let capacity = st.channels.get(i.receiver).map_or(0, |c| c.out.capacity);
                let (data, status) = if frame_size(data.len(), None) > capacity {
                    // A completion that can never enter the ring would block it for ever.
                    self.violation(
                        &mut st,
                        format!(
                            "{what} with {} bytes of completion data: the frame can never fit in \
                             the {capacity}-byte ring; the sender gets STATUS_BUFFER_OVERFLOW \
                             and no data",
                            data.len()
                        ),
                    );
                    (&[][..], STATUS_BUFFER_OVERFLOW)
                } else {
                    (data, status)
                };
                let payload = st.take_buf(data);
                let frame = Frame {
                    size: frame_size(data.len(), None),
                    payload,
                    body: FrameBody::Completion {
                        origin: i.origin,
                        status,
                    },
                };
                st.enqueue(i.receiver, frame);
            }
        }
        // The driver may complete with the delivered buffer itself as the response: then `data`
        // still borrows the payload, which must not be cleared or reused before the caller is
        // done with `data`.
        let payload = i.payload.as_ptr_range();
        let aliased = !data.is_empty()
            && data.as_ptr() < payload.end
            && payload.start < data.as_ptr_range().end;
        let retired = if aliased {
            Some(i.payload)
        } else {
            st.give_buf(i.payload);
            None
        };
        drop(st);
        self.notify();
        retired
    }

    pub(crate) fn defer_to_passive(&self, r: ObjRef) {
        let mut st = self.lock();
        let Some(i) = self.incoming(&mut st, r, "VmbChannelPacketDeferToPassive") else {
            return;
        };
        if i.state != InState::Delivering {
            self.violation(
                &mut st,
                "VmbChannelPacketDeferToPassive outside the packet's EvtVmbChannelProcessPacket"
                    .into(),
            );
            return;
        }
        i.state = InState::Deferred;
    }

    pub(crate) fn external_data(
        &self,
        r: ObjRef,
        flags: u32,
    ) -> Result<vmbus_kmcl_sys::PMDL, NTSTATUS> {
        let mut st = self.lock();
        let pending = st.faults.external_data_pending > 0;
        let Some(i) = self.incoming(&mut st, r, "VmbChannelPacketGetExternalData") else {
            return Err(STATUS_INVALID_PARAMETER_1);
        };
        if flags & !VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS != 0 {
            return Err(STATUS_INVALID_PARAMETER_2);
        }
        let Some(ext) = &i.external else {
            return Err(STATUS_INVALID_PARAMETER_1);
        };
        if pending && !i.pended_once && i.state == InState::Delivering {
            i.pended_once = true;
            i.state = InState::PendingExternal;
            st.faults.external_data_pending -= 1;
            return Err(STATUS_PENDING);
        }
        let ro = flags & VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY != 0;
        if i.external_mdl.is_none() {
            i.external_mdl = Some(OwnedMdl::new(ext, ro));
        }
        Ok(i.external_mdl
            .as_ref()
            .map(|m| m.as_pmdl())
            .unwrap_or(std::ptr::null_mut()))
    }
}
