//! Channel lifecycle: allocate, enable, start, pause, disable and clean up, in the order the
//! KMCL state model allows.
#![forbid(unsafe_code)]

use super::*;

impl BusShared {
    // ----- Channel lifecycle -----

    pub(super) fn channel<'a>(
        &self,
        st: &'a mut BusState,
        c: ObjRef,
        what: &str,
    ) -> Option<&'a mut Channel> {
        if st.channels.get(c).is_none() {
            st.violation(
                self.id,
                format!(
                    "{what}: stale VMBCHANNEL (use after VmbChannelCleanup or a forged handle)"
                ),
            );
            return None;
        }
        st.channels.get_mut(c)
    }

    pub(crate) fn channel_allocate(&self, side: Side, is_server: bool) -> Result<usize, NTSTATUS> {
        let mut st = self.lock();
        if st.faults.fail_channel_allocations > 0 {
            st.faults.fail_channel_allocations -= 1;
            return Err(STATUS_INSUFFICIENT_RESOURCES);
        }
        if is_server != (side == Side::Root) {
            return Err(STATUS_INVALID_PARAMETER_2);
        }
        let site = st.alloc_site(AllocFn::ChannelAllocate);
        let r = st
            .channels
            .insert(Channel::new(0, side, is_server, site))
            .ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
        let h = self.chan_handle(r);
        if let Some(ch) = st.channels.get_mut(r) {
            ch.handle = h;
        }
        Ok(h)
    }

    pub(crate) fn enable(&self, c: ObjRef) -> NTSTATUS {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelEnable") else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if ch.state != ChannelState::Disabled {
            return STATUS_INVALID_DEVICE_STATE;
        }
        if !ch.is_server && !ch.target_set {
            // Nothing to open: the client never named a target.
            return STATUS_INVALID_DEVICE_STATE;
        }
        // The offer is made with the VMBus handle the server recorded: it must still be open.
        // (A leaf lookup in the NT emulation, which never calls back into a bus.)
        if let Some(h) = ch.vmbus_handle.filter(|_| ch.is_server) {
            if !crate::nt::is_open_kernel_handle(crate::handle::to_ptr(h)) {
                self.violation(
                    &mut st,
                    format!(
                        "VmbChannelEnable: the VMBus handle {h:#x} given to \
                         VmbServerChannelInitSetVmbusHandle is no longer an open kernel handle \
                         (closed with ZwClose before the channel was offered)"
                    ),
                );
                return crate::nt::STATUS_INVALID_HANDLE;
            }
        }
        ch.state = ChannelState::Enabled;
        ch.rejected = false;
        // The server always comes up paused (it starts the flow itself); the client is active
        // unless a pause was armed while it was disabled.
        ch.paused = ch.is_server || ch.pause_armed;
        ch.pause_armed = false;
        st.try_connect(c);
        drop(st);
        self.notify();
        STATUS_SUCCESS
    }

    pub(crate) fn start(&self, c: ObjRef) {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelStart") else {
            return;
        };
        if ch.in_state_cb {
            self.violation(
                &mut st,
                "VmbChannelStart called from inside a state-change callback".into(),
            );
            return;
        }
        match ch.state {
            ChannelState::Disabled | ChannelState::Crashed => {
                ch.pause_armed = false;
                return;
            }
            _ => {}
        }
        if !ch.paused {
            return;
        }
        ch.paused = false;
        if ch.state == ChannelState::Open && !ch.running {
            st.events.push_back(Event {
                channel: c,
                kind: EventKind::StartFlow,
            });
        }
        drop(st);
        self.notify();
    }

    pub(crate) fn pause(&self, c: ObjRef) {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelPause") else {
            return;
        };
        if ch.in_state_cb {
            self.violation(
                &mut st,
                "VmbChannelPause called from inside a state-change callback".into(),
            );
            return;
        }
        if ch.delivering_here() {
            self.violation(
                &mut st,
                "VmbChannelPause called from inside the channel's EvtVmbChannelProcessPacket: it \
                 waits until no packet callback runs, so it would wait for itself"
                    .into(),
            );
            return;
        }
        if ch.state == ChannelState::Disabled || ch.state == ChannelState::Crashed {
            ch.pause_armed = true;
            return;
        }
        ch.paused = true;
        let handle = ch.handle;
        if !ch.running {
            st.events
                .retain(|e| !(e.channel == c && e.kind == EventKind::StartFlow));
            return;
        }
        ch.running = false;
        ch.incoming_enabled = false;
        ch.suspended = true;
        ch.in_state_cb = true;
        let f = ch.state_cbs.suspend;
        let st = self.quiesce(st, c, "VmbChannelPause");
        drop(st);
        callbacks::run(Call::State(f, handle));
        let mut st = self.lock();
        if let Some(ch) = st.channels.get_mut(c) {
            ch.in_state_cb = false;
        }
        let (mut st, ok) = self.block_until(st, |s| {
            s.channels
                .get(c)
                .is_none_or(|ch| ch.outstanding == 0 && !ch.in_delivery)
        });
        if !ok {
            self.violation(&mut st, "VmbChannelPause: incoming packets were never completed after EvtChannelSuspend (the call would block forever)".into());
        }
    }

    pub(crate) fn disable(&self, c: ObjRef) {
        let mut st = self.lock();
        // The peer went away and its report (suspend, closed) has not been delivered yet: this
        // disable delivers it, so the driver still sees the channel stop and close.
        let gone = st.events.iter().find_map(|e| match e.kind {
            EventKind::PeerGone {
                was_open,
                was_running,
            } if e.channel == c => Some((was_open, was_running)),
            _ => None,
        });
        let Some(ch) = self.channel(&mut st, c, "VmbChannelDisable") else {
            return;
        };
        if ch.in_state_cb {
            self.violation(
                &mut st,
                "VmbChannelDisable called from inside a state-change callback".into(),
            );
            return;
        }
        if ch.delivering_here() {
            self.violation(
                &mut st,
                "VmbChannelDisable called from inside the channel's EvtVmbChannelProcessPacket: \
                 it waits until no packet callback runs, so it would wait for itself"
                    .into(),
            );
            return;
        }
        if ch.state == ChannelState::Disabled && gone.is_none() {
            return;
        }
        let handle = ch.handle;
        let crashed = ch.state == ChannelState::Crashed;
        let (gone_open, gone_running) = gone.unwrap_or((false, false));
        let was_open = ch.state == ChannelState::Open || gone_open;
        let was_running = ch.running || gone_running;
        let cbs = ch.state_cbs;
        ch.running = false;
        ch.incoming_enabled = false;
        ch.suspended = true;
        st.events.retain(|e| e.channel != c);
        if crashed {
            st.disconnect(c, false, false);
            st.silence_packets(c);
            if let Some(ch) = st.channels.get_mut(c) {
                ch.state = ChannelState::Disabled;
            }
            drop(st);
            self.notify();
            return;
        }
        if was_running {
            if let Some(ch) = st.channels.get_mut(c) {
                ch.in_state_cb = true;
            }
            let quiet = self.quiesce(st, c, "VmbChannelDisable");
            drop(quiet);
            callbacks::run(Call::State(cbs.suspend, handle));
            st = self.lock();
            if let Some(ch) = st.channels.get_mut(c) {
                ch.in_state_cb = false;
            }
        }
        let (s2, ok) = self.block_until(st, |s| {
            s.channels
                .get(c)
                .is_none_or(|ch| ch.outstanding == 0 && !ch.in_delivery)
        });
        st = s2;
        if !ok {
            self.violation(&mut st, "VmbChannelDisable: incoming packets were never completed after EvtChannelSuspend (the call would block forever)".into());
        }
        st.disconnect(c, true, false);
        st.cancel_in_flight(c, STATUS_CANCELLED);
        if let Some(ch) = st.channels.get_mut(c) {
            ch.state = ChannelState::Disabled;
            ch.in_closed_cb = was_open;
            ch.in_state_cb = true;
        }
        drop(st);
        self.notify();
        // Cancelled transactions complete before the channel reports closed.
        self.drain_local();
        if was_open {
            callbacks::run(Call::State(cbs.closed, handle));
        }
        let mut st = self.lock();
        if let Some(ch) = st.channels.get_mut(c) {
            ch.in_closed_cb = false;
            ch.in_state_cb = false;
        }
        self.reclaim_gpadls(&mut st, c, "VmbChannelDisable");
        drop(st);
        self.notify();
    }

    /// Waits (up to the block limit) until no `EvtVmbChannelProcessPacket` of channel `c` runs,
    /// so that `EvtChannelSuspend` never overlaps one: KMCL guarantees that no packet callback
    /// is running or queued once suspend is called. The caller has already switched the
    /// incoming queue off.
    fn quiesce<'a>(
        &'a self,
        st: MutexGuard<'a, BusState>,
        c: ObjRef,
        what: &str,
    ) -> MutexGuard<'a, BusState> {
        let (mut st, ok) =
            self.block_until(st, |s| s.channels.get(c).is_none_or(|ch| !ch.in_delivery));
        if !ok {
            self.violation(
                &mut st,
                format!(
                    "{what}: an EvtVmbChannelProcessPacket of the channel never returned, so \
                     EvtChannelSuspend could not run"
                ),
            );
        }
        st
    }

    /// Runs every queued local completion (cancellations) on this thread.
    pub(super) fn drain_local(&self) {
        loop {
            let mut st = self.lock();
            let Some(l) = st.local.pop_front() else {
                return;
            };
            drop(st);
            self.complete_origin(l.origin, l.status, l.payload);
        }
    }

    pub(crate) fn cleanup(&self, c: ObjRef) {
        let st = self.lock();
        let Some(ch) = st.channels.get(c) else {
            drop(st);
            self.record_violation(
                "VmbChannelCleanup: stale VMBCHANNEL (double cleanup or use after cleanup)".into(),
            );
            return;
        };
        if ch.state != ChannelState::Disabled {
            drop(st);
            self.record_violation(
                "VmbChannelCleanup on a channel that is not disabled; the sim disables it first"
                    .into(),
            );
            self.disable(c);
        } else {
            drop(st);
        }
        let mut st = self.lock();
        if st.channels.get(c).is_some_and(|ch| ch.save.is_some()) {
            self.violation(
                &mut st,
                "VmbChannelCleanup with a save in progress (missing VmbChannelSaveEnd)".into(),
            );
        }
        self.reclaim_gpadls(&mut st, c, "VmbChannelCleanup");
        // Incoming packets of a channel that can no longer complete them (crashed) go away.
        let stale: Vec<ObjRef> = st
            .incoming
            .iter()
            .filter(|(_, i)| i.receiver == c)
            .map(|(r, _)| r)
            .collect();
        for r in stale {
            if let Some(i) = st.incoming.remove(r) {
                st.give_buf(i.payload);
            }
        }
        // Caller-memory packets die with their channel.
        let init: Vec<(ObjRef, usize)> = st
            .packets
            .iter()
            .filter_map(|(r, p)| {
                (p.channel == c)
                    .then_some(r)
                    .zip(p.initialized_at.map(|u| u.addr()))
            })
            .collect();
        {
            let mut map = initialized_map();
            for (r, addr) in init {
                map.remove(&addr);
                st.packets.remove(r);
            }
        }
        if let Some(ch) = st.channels.remove(c) {
            for f in ch.out.ring.into_iter().chain(ch.out.waiting) {
                st.give_buf(f.payload);
            }
        }
    }
}
