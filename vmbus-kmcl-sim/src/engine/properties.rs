//! Channel properties a driver reads or changes at any time: its pointer, interface instance,
//! MMIO space, passive-level processing, transaction quota, latency and packet object size.
#![forbid(unsafe_code)]

use super::*;

impl BusShared {
    // ----- Channel properties -----

    pub(crate) fn get_pointer(&self, c: ObjRef) -> UserPtr {
        let mut st = self.lock();
        self.channel(&mut st, c, "VmbChannelGetPointer")
            .map(|ch| ch.pointer)
            .unwrap_or_default()
    }

    pub(crate) fn set_pointer(&self, c: ObjRef, p: UserPtr) {
        let mut st = self.lock();
        if let Some(ch) = self.channel(&mut st, c, "VmbChannelSetPointer") {
            ch.pointer = p;
        }
    }

    pub(crate) fn interface_instance(&self, c: ObjRef) -> Option<GUID> {
        let mut st = self.lock();
        self.channel(&mut st, c, "VmbChannelGetInterfaceInstance")
            .map(|ch| ch.interface_instance)
    }

    pub(crate) fn mmio_space(&self, c: ObjRef) -> (u64, u64) {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelGetMmioSpace") else {
            return (0, 0);
        };
        if ch.state != ChannelState::Open {
            self.violation(
                &mut st,
                "VmbChannelGetMmioSpace before EvtChannelOpened".into(),
            );
            return (0, 0);
        }
        ch.mmio_space
    }

    pub(crate) fn set_passive(&self, c: ObjRef, on: bool) {
        let mut st = self.lock();
        if let Some(ch) = self.channel(&mut st, c, "VmbChannelSetIncomingProcessingAtPassive") {
            ch.passive = on;
        }
    }

    pub(crate) fn set_quota(&self, c: ObjRef, q: u32) {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelSetTransactionQuota") else {
            return;
        };
        if q == 0 {
            self.violation(
                &mut st,
                "VmbChannelSetTransactionQuota with a quota of 0".into(),
            );
            return;
        }
        ch.quota = q;
        if ch.outstanding >= q {
            // Below the outstanding count: no packet is pulled until completions make room.
            // (A queue already stalled stays stalled even when the new quota has room: the
            // documentation has only a completion restart it.)
            ch.quota_stalled = true;
        }
    }

    pub(crate) fn set_latency(&self, c: ObjRef, latency: u16) -> Result<u16, NTSTATUS> {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelSetInterruptLatency") else {
            return Err(STATUS_INVALID_PARAMETER_1);
        };
        if ch.state != ChannelState::Open && !ch.in_closed_cb {
            return Err(STATUS_INVALID_DEVICE_STATE);
        }
        Ok(std::mem::replace(&mut ch.latency, latency))
    }

    pub(crate) fn sizeof_packet(&self, c: ObjRef) -> u32 {
        let mut st = self.lock();
        self.channel(&mut st, c, "VmbChannelSizeofPacket")
            .map(|ch| Self::packet_object_size(ch.max_packet_size))
            .unwrap_or(0)
    }
}
