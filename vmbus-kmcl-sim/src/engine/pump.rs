//! The pump: the asynchronous half of the bus. It opens channels, starts flow, moves frames
//! to the receiver, delivers completions and runs the driver callbacks that are due.
#![forbid(unsafe_code)]

use super::*;

/// State-change work queued for the pump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventKind {
    Opened,
    StartFlow,
    PeerGone { was_open: bool, was_running: bool },
    PnpFailure(NTSTATUS),
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Event {
    pub(super) channel: ObjRef,
    pub(super) kind: EventKind,
}

/// A completion routine (or sync result) to deliver.
#[derive(Debug)]
pub(super) struct LocalCompletion {
    pub(super) origin: Origin,
    pub(super) status: NTSTATUS,
    pub(super) payload: Vec<u8>,
}

/// What the pump does next, decided under the lock.
pub(super) enum Work {
    Event(Event),
    Local(LocalCompletion),
    Deliver {
        receiver: ObjRef,
        incoming: ObjRef,
    },
    Complete {
        origin: Origin,
        status: NTSTATUS,
        payload: Vec<u8>,
    },
    BatchDone {
        channel: ObjRef,
    },
}

impl BusShared {
    // ----- The pump -----

    /// Does one unit of asynchronous work. Returns false when nothing could be done.
    pub(crate) fn pump_once(&self) -> bool {
        let mut st = self.lock();
        let Some(work) = self.next_work(&mut st) else {
            return false;
        };
        st.active += 1;
        drop(st);
        self.do_work(work);
        let mut st = self.lock();
        st.active -= 1;
        drop(st);
        self.notify();
        true
    }

    /// True when no work is queued and no other thread is inside a delivery.
    pub(crate) fn idle(&self) -> bool {
        let mut st = self.lock();
        st.active == 0 && !self.has_work(&mut st)
    }

    pub(super) fn has_work(&self, st: &mut BusState) -> bool {
        // Cheap conservative check: run `next_work` logic without consuming is complex, so look
        // for any queue that could produce work.
        if !st.local.is_empty() || st.events.iter().any(|e| Self::event_ready(st, e)) {
            return true;
        }
        for i in 0..st.channels.capacity() {
            let Some((_, ch)) = st.channels.at(i) else {
                continue;
            };
            if ch.batch > 0 || (!ch.redeliver.is_empty() && ch.can_redeliver()) {
                return true;
            }
            let Some(peer) = ch.peer else { continue };
            if let Some(p) = st.channels.get(peer) {
                match p.out.ring.front().map(|f| &f.body) {
                    Some(FrameBody::Completion { .. }) => return true,
                    Some(FrameBody::Data { .. }) if ch.can_take_data() => return true,
                    _ => {}
                }
            }
        }
        false
    }

    pub(super) fn event_ready(st: &BusState, e: &Event) -> bool {
        st.channels.get(e.channel).is_none_or(|c| !c.in_state_cb)
    }

    pub(super) fn next_work(&self, st: &mut BusState) -> Option<Work> {
        if let Some(pos) = st.events.iter().position(|e| Self::event_ready(st, e)) {
            return st.events.remove(pos).map(Work::Event);
        }
        if let Some(l) = st.local.pop_front() {
            return Some(Work::Local(l));
        }
        let n = st.channels.capacity();
        for k in 0..n {
            let i = (st.rr + k) % n;
            let Some((r, ch)) = st.channels.at(i) else {
                continue;
            };
            // Redelivery first: deferred or pending packets come back before new ones.
            if ch.can_redeliver() {
                if let Some(&inc) = ch.redeliver.front() {
                    let ch = st.channels.get_mut(r)?;
                    ch.redeliver.pop_front();
                    ch.in_delivery = true;
                    ch.delivery_thread = Some(this_thread());
                    ch.batch = ch.batch.saturating_add(1);
                    st.rr = i + 1;
                    return Some(Work::Deliver {
                        receiver: r,
                        incoming: inc,
                    });
                }
            }
            let Some(peer) = ch.peer else { continue };
            let can_take = ch.can_take_data();
            let front_is_completion = match st.channels.get(peer).and_then(|p| p.out.ring.front()) {
                Some(f) => matches!(f.body, FrameBody::Completion { .. }),
                None => continue,
            };
            if !front_is_completion && !can_take {
                continue;
            }
            let p = st.channels.get_mut(peer)?;
            let frame = p.out.ring.pop_front()?;
            p.out.used = p.out.used.saturating_sub(frame.size);
            st.refill(peer);
            st.rr = i + 1;
            match frame.body {
                FrameBody::Completion { origin, status } => {
                    return Some(Work::Complete {
                        origin,
                        status,
                        payload: frame.payload,
                    });
                }
                FrameBody::Data {
                    origin,
                    wants_completion,
                    external,
                } => {
                    let site = st.alloc_site(AllocFn::Delivery);
                    let inc = st.incoming.insert(Incoming {
                        receiver: r,
                        payload: frame.payload,
                        origin,
                        wants_completion,
                        external,
                        external_mdl: None,
                        state: InState::Delivering,
                        pended_once: false,
                    });
                    let Some(inc) = inc else {
                        self.violation(st, "too many incoming packets outstanding".into());
                        return None;
                    };
                    set_site(&mut st.incoming_sites, inc, site);
                    let ch = st.channels.get_mut(r)?;
                    ch.in_delivery = true;
                    ch.delivery_thread = Some(this_thread());
                    ch.outstanding = ch.outstanding.saturating_add(1);
                    if ch.outstanding >= ch.quota {
                        // Full: the queue stalls until the next completion.
                        ch.quota_stalled = true;
                    }
                    ch.batch = ch.batch.saturating_add(1);
                    return Some(Work::Deliver {
                        receiver: r,
                        incoming: inc,
                    });
                }
            }
        }
        // Batches that ended: nothing more deliverable right now.
        for i in 0..n {
            let Some((r, ch)) = st.channels.at(i) else {
                continue;
            };
            if ch.batch > 0 && !ch.in_delivery {
                return Some(Work::BatchDone { channel: r });
            }
        }
        None
    }

    pub(super) fn do_work(&self, work: Work) {
        match work {
            Work::Event(e) => self.run_event(e),
            Work::Local(l) => self.complete_origin(l.origin, l.status, l.payload),
            Work::Complete {
                origin,
                status,
                payload,
            } => self.complete_origin(origin, status, payload),
            Work::Deliver { receiver, incoming } => self.deliver(receiver, incoming),
            Work::BatchDone { channel } => {
                let mut st = self.lock();
                let Some(ch) = st.channels.get_mut(channel) else {
                    return;
                };
                let count = std::mem::take(&mut ch.batch);
                let call = Call::ProcessingComplete {
                    f: ch.processing_complete,
                    channel: ch.handle,
                    count,
                    passive: ch.passive,
                };
                let skip = ch.state == ChannelState::Crashed;
                drop(st);
                if !skip {
                    callbacks::run(call);
                }
            }
        }
    }

    pub(super) fn deliver(&self, r: ObjRef, inc: ObjRef) {
        let mut st = self.lock();
        let ext_flag;
        let (buf, len, redelivery) = match st.incoming.get_mut(inc) {
            Some(i) => {
                let redelivery = i.state == InState::Redeliver;
                i.state = InState::Delivering;
                ext_flag = i.external.is_some();
                (i.payload.as_mut_ptr(), i.payload.len(), redelivery)
            }
            None => {
                if let Some(ch) = st.channels.get_mut(r) {
                    ch.in_delivery = false;
                }
                return;
            }
        };
        let Some(ch) = st.channels.get(r) else { return };
        let call = Call::ProcessPacket {
            f: ch.process_packet,
            channel: ch.handle,
            packet: st.handle_of(self.id, Kind::Incoming, inc),
            buf,
            // CAST: payloads are bounded by the maximum packet size, a u32.
            len: len as u32,
            flags: if ext_flag {
                VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA
            } else {
                0
            },
            passive: ch.passive || redelivery,
        };
        let crashed = ch.state == ChannelState::Crashed;
        st.delivered += 1;
        drop(st);
        if !crashed {
            callbacks::run(call);
        }
        let mut st = self.lock();
        if let Some(ch) = st.channels.get_mut(r) {
            ch.in_delivery = false;
            ch.delivery_thread = None;
        }
        let requeue = match st.incoming.get_mut(inc) {
            Some(i) => match i.state {
                InState::Deferred | InState::PendingExternal => {
                    i.state = InState::Redeliver;
                    true
                }
                InState::Delivering => {
                    i.state = InState::Held;
                    false
                }
                _ => false,
            },
            None => false,
        };
        if requeue {
            if let Some(ch) = st.channels.get_mut(r) {
                ch.redeliver.push_back(inc);
            }
        }
    }

    /// Delivers a completion to whoever waits for it.
    pub(super) fn complete_origin(&self, origin: Origin, status: NTSTATUS, payload: Vec<u8>) {
        let mut st = self.lock();
        match origin {
            Origin::Sync(id) => {
                if let Some(s) = st.syncs.get_mut(&id) {
                    if s.result.is_none() {
                        s.result = Some((status, payload));
                        drop(st);
                        self.notify();
                        return;
                    }
                }
                st.give_buf(payload);
            }
            Origin::Raw(txid) => {
                st.raw_completions.push(RawCompletion {
                    transaction_id: txid,
                    status,
                    data: payload.clone(),
                });
                st.give_buf(payload);
            }
            Origin::Packet(p, txn) => {
                let Some(pk) = st.packets.get_mut(p) else {
                    st.give_buf(payload);
                    return;
                };
                if pk.txn != txn || pk.state != PacketState::InFlight {
                    // A late completion of a cancelled transaction.
                    st.give_buf(payload);
                    return;
                }
                pk.restored = None;
                if pk.routine.is_none() {
                    // The default completion routine frees the packet.
                    st.packets.remove(p);
                    st.give_buf(payload);
                    return;
                }
                pk.state = PacketState::Completing;
                let pk_ptr = pk.initialized_at.unwrap_or(UserPtr(crate::handle::to_ptr(
                    Handle {
                        kind: Kind::Packet,
                        bus: self.id,
                        index: p.index,
                        generation: p.generation,
                    }
                    .encode(),
                )));
                let mut payload = payload;
                let (buf, len) = if payload.is_empty() {
                    (std::ptr::null_mut(), 0)
                } else {
                    // CAST: completion data is bounded by the maximum packet size.
                    (payload.as_mut_ptr(), payload.len() as u32)
                };
                let call = Call::Completion {
                    f: pk.routine,
                    packet: pk_ptr,
                    status,
                    buf,
                    len,
                };
                drop(st);
                callbacks::run(call);
                let mut st = self.lock();
                if let Some(pk) = st.packets.get_mut(p) {
                    if pk.state == PacketState::Completing {
                        pk.state = PacketState::Idle;
                    }
                }
                st.give_buf(payload);
            }
        }
    }

    pub(super) fn run_event(&self, e: Event) {
        let mut st = self.lock();
        let Some(ch) = st.channels.get_mut(e.channel) else {
            return;
        };
        if ch.state == ChannelState::Crashed {
            return;
        }
        let handle = ch.handle;
        match e.kind {
            EventKind::Opened => {
                if ch.state != ChannelState::Connecting {
                    return;
                }
                ch.state = ChannelState::Open;
                ch.in_state_cb = true;
                let f = ch.state_cbs.opened;
                drop(st);
                let (status, _) = callbacks::run(Call::Opened(f, handle));
                let mut st = self.lock();
                let Some(ch) = st.channels.get_mut(e.channel) else {
                    return;
                };
                ch.in_state_cb = false;
                if ch.state != ChannelState::Open {
                    return;
                }
                if !nt_success(status) {
                    // Roll back: no traffic on this pairing.
                    ch.state = ChannelState::Enabled;
                    ch.rejected = true;
                    st.disconnect(e.channel, true, false);
                    st.cancel_in_flight(e.channel, STATUS_CANCELLED);
                    drop(st);
                    self.notify();
                    return;
                }
                let start = !ch.paused;
                st.refill(e.channel);
                if start {
                    st.events.push_back(Event {
                        channel: e.channel,
                        kind: EventKind::StartFlow,
                    });
                }
            }
            EventKind::StartFlow => {
                if ch.state != ChannelState::Open || ch.paused || ch.running {
                    return;
                }
                ch.running = true;
                ch.suspended = false;
                ch.queue_failed = false;
                ch.quota_stalled = false;
                ch.in_state_cb = true;
                ch.started_thread = Some(this_thread());
                let f = ch.state_cbs.started;
                drop(st);
                callbacks::run(Call::State(f, handle));
                let mut st = self.lock();
                let Some(ch) = st.channels.get_mut(e.channel) else {
                    return;
                };
                ch.started_thread = None;
                if ch.running {
                    ch.incoming_enabled = true;
                }
                let f = ch.state_cbs.post_started;
                let go = ch.running;
                drop(st);
                self.notify();
                if go {
                    callbacks::run(Call::State(f, handle));
                }
                let mut st = self.lock();
                if let Some(ch) = st.channels.get_mut(e.channel) {
                    ch.in_state_cb = false;
                }
            }
            EventKind::PeerGone {
                was_open,
                was_running,
            } => {
                ch.in_state_cb = true;
                let cbs = ch.state_cbs;
                drop(st);
                if was_running {
                    callbacks::run(Call::State(cbs.suspend, handle));
                }
                if was_open {
                    let mut st = self.lock();
                    if let Some(ch) = st.channels.get_mut(e.channel) {
                        ch.in_closed_cb = true;
                    }
                    drop(st);
                    callbacks::run(Call::State(cbs.closed, handle));
                }
                let mut st = self.lock();
                if let Some(ch) = st.channels.get_mut(e.channel) {
                    ch.in_state_cb = false;
                    ch.in_closed_cb = false;
                }
                self.reclaim_gpadls(&mut st, e.channel, "EvtChannelClosed returned");
                let reconnect = st.channels.get(e.channel).is_some_and(|c| c.is_server);
                if reconnect {
                    st.try_connect(e.channel);
                }
            }
            EventKind::PnpFailure(status) => {
                let f = ch.pnp_failure;
                drop(st);
                callbacks::run(Call::PnpFailure(f, handle, status));
            }
        }
    }
}
