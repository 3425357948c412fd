//! Outgoing packet objects (`VMBPACKET`): allocated or initialized in caller memory, sent,
//! completed and freed.
#![forbid(unsafe_code)]

use super::*;

/// Bytes `VmbPacketInitialize` needs besides the maximum packet size.
pub(super) const PACKET_OBJECT_OVERHEAD: u32 = 64;

/// State of an outgoing packet object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PacketState {
    Idle,
    InFlight,
    Completing,
}

/// An outgoing packet object (`VMBPACKET`).
#[derive(Debug)]
pub(super) struct Packet {
    pub(super) channel: ObjRef,
    /// Caller memory address for `VmbPacketInitialize` packets.
    pub(super) initialized_at: Option<UserPtr>,
    pub(super) state: PacketState,
    pub(super) pointer: UserPtr,
    pub(super) routine: PFN_VMB_PACKET_COMPLETION_ROUTINE,
    pub(super) custom_routine: bool,
    pub(super) txn: u64,
    /// Payload and flags of the current send, kept only for restored packets.
    pub(super) restored: Option<(Vec<u8>, bool)>,
}

impl BusShared {
    pub(super) fn packet_object_size(max: u32) -> u32 {
        // CAST: pointer size is 8 on the supported targets.
        let ptr = std::mem::size_of::<usize>() as u32;
        (max + ptr + PACKET_OBJECT_OVERHEAD).div_ceil(8) * 8
    }

    // ----- Packet objects -----

    pub(crate) fn packet_allocate(&self, c: ObjRef) -> usize {
        let mut st = self.lock();
        if self.channel(&mut st, c, "VmbPacketAllocate").is_none() {
            return 0;
        }
        if st.faults.fail_packet_allocations > 0 {
            st.faults.fail_packet_allocations -= 1;
            return 0;
        }
        let site = st.alloc_site(AllocFn::PacketAllocate);
        let p = Packet {
            channel: c,
            initialized_at: None,
            state: PacketState::Idle,
            pointer: UserPtr::default(),
            routine: None,
            custom_routine: false,
            txn: 0,
            restored: None,
        };
        match st.packets.insert(p) {
            Some(r) => {
                set_site(&mut st.packet_sites, r, site);
                st.handle_of(self.id, Kind::Packet, r)
            }
            None => 0,
        }
    }

    pub(crate) fn packet_initialize(&self, c: ObjRef, mem: UserPtr, size: u32) -> NTSTATUS {
        let addr = mem.addr();
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbPacketInitialize") else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if addr == 0 {
            return STATUS_INVALID_PARAMETER_2;
        }
        let ptr = std::mem::size_of::<usize>() as u32;
        if size <= ch.max_packet_size + ptr || size < Self::packet_object_size(ch.max_packet_size) {
            return STATUS_INVALID_PARAMETER_3;
        }
        let existing = initialized_map().get(&addr).copied();
        if let Some(h) = existing.and_then(|v| Handle::decode(v, Kind::Packet)) {
            let r = ObjRef {
                index: h.index,
                generation: h.generation,
            };
            if h.bus == self.id {
                if st
                    .packets
                    .get(r)
                    .is_some_and(|p| p.state != PacketState::Idle)
                {
                    self.violation(
                        &mut st,
                        "VmbPacketInitialize on memory of a packet still in flight".into(),
                    );
                    return STATUS_INVALID_DEVICE_STATE;
                }
                st.packets.remove(r);
            }
        }
        let site = st.alloc_site(AllocFn::PacketInitialize);
        let p = Packet {
            channel: c,
            initialized_at: Some(mem),
            state: PacketState::Idle,
            pointer: UserPtr::default(),
            routine: None,
            custom_routine: false,
            txn: 0,
            restored: None,
        };
        let Some(r) = st.packets.insert(p) else {
            return STATUS_INSUFFICIENT_RESOURCES;
        };
        set_site(&mut st.packet_sites, r, site);
        let h = st.handle_of(self.id, Kind::Packet, r);
        initialized_map().insert(addr, h);
        STATUS_SUCCESS
    }

    pub(super) fn packet<'a>(
        &self,
        st: &'a mut BusState,
        p: ObjRef,
        what: &str,
    ) -> Option<&'a mut Packet> {
        if st.packets.get(p).is_none() {
            st.violation(self.id, format!("{what}: stale VMBPACKET (double free, or use after VmbPacketFree or after the default completion routine freed it)"));
            return None;
        }
        st.packets.get_mut(p)
    }

    pub(crate) fn packet_free(&self, p: ObjRef) {
        let mut st = self.lock();
        let Some(pk) = self.packet(&mut st, p, "VmbPacketFree") else {
            return;
        };
        if pk.initialized_at.is_some() {
            self.violation(
                &mut st,
                "VmbPacketFree on a packet from VmbPacketInitialize (caller memory)".into(),
            );
            return;
        }
        if pk.state == PacketState::InFlight {
            self.violation(
                &mut st,
                "VmbPacketFree on a packet still in flight (before its completion routine ran)"
                    .into(),
            );
            return;
        }
        st.packets.remove(p);
    }

    pub(crate) fn packet_set_routine(&self, p: ObjRef, f: PFN_VMB_PACKET_COMPLETION_ROUTINE) {
        let mut st = self.lock();
        if let Some(pk) = self.packet(&mut st, p, "VmbPacketSetCompletionRoutine") {
            pk.routine = f;
            pk.custom_routine = f.is_some();
        }
    }

    pub(crate) fn packet_set_pointer(&self, p: ObjRef, v: UserPtr) {
        let mut st = self.lock();
        if let Some(pk) = self.packet(&mut st, p, "VmbPacketSetPointer") {
            pk.pointer = v;
        }
    }

    pub(crate) fn packet_get_pointer(&self, p: ObjRef) -> UserPtr {
        let mut st = self.lock();
        self.packet(&mut st, p, "VmbPacketGetPointer")
            .map(|pk| pk.pointer)
            .unwrap_or_default()
    }

    pub(crate) fn packet_channel(&self, p: ObjRef) -> usize {
        let mut st = self.lock();
        match self.packet(&mut st, p, "VmbPacketGetChannel") {
            Some(pk) => {
                let c = pk.channel;
                self.chan_handle(c)
            }
            None => 0,
        }
    }

    /// `VmbPacketSend*`. `require_wait`: the external-MDL and PFN variants demand the flag.
    pub(crate) fn packet_send(
        &self,
        p: ObjRef,
        payload: &[u8],
        external: Option<Described>,
        flags: u32,
        require_wait: bool,
    ) -> NTSTATUS {
        let mut st = self.lock();
        let Some(pk) = self.packet(&mut st, p, "VmbPacketSend") else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if flags & !VMBUS_CHANNEL_FORMAT_FLAGS != 0 {
            return STATUS_INVALID_PARAMETER;
        }
        let wait = flags & VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION != 0;
        if require_wait && !wait {
            return STATUS_INVALID_PARAMETER;
        }
        if pk.state == PacketState::InFlight {
            self.violation(
                &mut st,
                "VmbPacketSend on a packet that is already in flight".into(),
            );
            return STATUS_INVALID_DEVICE_STATE;
        }
        if pk.initialized_at.is_some() && pk.routine.is_none() {
            self.violation(
                &mut st,
                "VmbPacketSend of a VmbPacketInitialize packet without a completion routine".into(),
            );
            return STATUS_INVALID_DEVICE_STATE;
        }
        let c = pk.channel;
        let Some(ch) = st.channels.get(c) else {
            self.violation(
                &mut st,
                "VmbPacketSend on a packet whose channel was cleaned up".into(),
            );
            return STATUS_DEVICE_REMOVED;
        };
        if ch.state == ChannelState::Crashed {
            return STATUS_DEVICE_REMOVED;
        }
        if payload.len() > ch.max_packet_size as usize {
            return STATUS_INVALID_PARAMETER_3;
        }
        if let (Some(ext), Some((max, _))) = (&external, ch.max_external_data) {
            if ext.byte_len() > max as usize {
                return STATUS_INVALID_PARAMETER;
            }
        }
        let size = frame_size(payload.len(), external.as_ref());
        if ch.peer.is_some() && size > ch.out.capacity {
            // The ring was sized at open; this frame could never enter it.
            return STATUS_INVALID_PARAMETER;
        }
        let suspended = ch.suspended;
        if suspended {
            self.violation(
                &mut st,
                "VmbPacketSend after EvtChannelSuspend and before the next EvtChannelStarted"
                    .into(),
            );
        }
        let txn = st.alloc_txn();
        if let Some(pk) = st.packets.get_mut(p) {
            pk.state = PacketState::InFlight;
            pk.txn = txn;
        }
        let payload = st.take_buf(payload);
        let frame = Frame {
            size,
            payload,
            body: FrameBody::Data {
                origin: Origin::Packet(p, txn),
                wants_completion: wait,
                external,
            },
        };
        st.enqueue(c, frame);
        drop(st);
        self.notify();
        STATUS_SUCCESS
    }
}
