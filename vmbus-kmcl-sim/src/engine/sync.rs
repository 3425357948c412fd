//! Synchronous requests (`VmbChannelSendSynchronousRequest`): a send that blocks until its
//! completion arrives or its timeout passes.
#![forbid(unsafe_code)]

use super::*;

/// A waiting synchronous request.
#[derive(Debug)]
pub(super) struct SyncWait {
    pub(super) channel: ObjRef,
    pub(super) result: Option<(NTSTATUS, Vec<u8>)>,
}

/// Result of a synchronous request: status and completion bytes.
pub(crate) type SyncOutcome = (NTSTATUS, Vec<u8>);

impl BusShared {
    // ----- Synchronous requests -----

    /// `VmbChannelSendSynchronousRequest`. `timeout`: `None` waits forever, otherwise a
    /// KeWait-style value (negative relative, positive absolute, 0 do not queue when full).
    pub(crate) fn sync_request(
        &self,
        c: ObjRef,
        payload: &[u8],
        external: Option<Described>,
        flags: u32,
        timeout: Option<i64>,
        irql: u8,
    ) -> SyncOutcome {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelSendSynchronousRequest") else {
            return (STATUS_INVALID_PARAMETER_1, Vec::new());
        };
        if flags & !VMBUS_CHANNEL_FORMAT_FLAGS != 0 {
            return (STATUS_INVALID_PARAMETER, Vec::new());
        }
        let wait = flags & VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION != 0;
        let zero = timeout == Some(0);
        if ch.is_server && (!zero || wait) {
            return (STATUS_NOT_SUPPORTED, Vec::new());
        }
        if (!zero || wait) && irql > vmbus_kmcl_sys::nt::PASSIVE_LEVEL {
            self.violation(
                &mut st,
                "VmbChannelSendSynchronousRequest that may wait, called above PASSIVE_LEVEL".into(),
            );
            return (STATUS_INVALID_DEVICE_STATE, Vec::new());
        }
        if wait && ch.started_thread == Some(this_thread()) {
            self.violation(
                &mut st,
                "VmbChannelSendSynchronousRequest with WAIT_FOR_COMPLETION inside the channel's \
                 EvtChannelStarted: the incoming queue is not running yet, so on Windows the wait \
                 never returns (use EvtChannelPostStarted)"
                    .into(),
            );
            return (STATUS_INVALID_DEVICE_STATE, Vec::new());
        }
        if matches!(ch.state, ChannelState::Disabled | ChannelState::Crashed) {
            return (STATUS_DEVICE_REMOVED, Vec::new());
        }
        if payload.len() > ch.max_packet_size as usize {
            return (STATUS_INVALID_PARAMETER_3, Vec::new());
        }
        let size = frame_size(payload.len(), external.as_ref());
        if ch.peer.is_some() && size > ch.out.capacity {
            // The ring was sized at open; this frame could never enter it.
            return (STATUS_INVALID_PARAMETER, Vec::new());
        }
        if zero {
            let fits = ch.state == ChannelState::Open
                && ch.out.waiting.is_empty()
                && !ch.out.forced_full
                && ch.out.used + size <= ch.out.capacity;
            if !fits {
                return (STATUS_BUFFER_OVERFLOW, Vec::new());
            }
        }
        if ch.suspended && ch.state == ChannelState::Open {
            self.violation(&mut st, "VmbChannelSendSynchronousRequest after EvtChannelSuspend and before the next EvtChannelStarted".into());
        }
        let id = st.alloc_txn();
        st.syncs.insert(
            id,
            SyncWait {
                channel: c,
                result: None,
            },
        );
        let buf = st.take_buf(payload);
        let frame = Frame {
            size,
            payload: buf,
            body: FrameBody::Data {
                origin: Origin::Sync(id),
                wants_completion: wait,
                external,
            },
        };
        st.enqueue(c, frame);
        drop(st);
        self.notify();
        let deadline = match timeout {
            None | Some(0) => None,
            Some(t) if t < 0 => Some(far_deadline(Duration::from_nanos(
                t.unsigned_abs().saturating_mul(100),
            ))),
            Some(t) => Some(absolute_deadline(t)),
        };
        loop {
            let mut st = self.lock();
            if let Some(result) = st.syncs.get_mut(&id).and_then(|s| s.result.take()) {
                st.syncs.remove(&id);
                return result;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                st.syncs.remove(&id);
                return (STATUS_CANCELLED, Vec::new());
            }
            drop(st);
            // Help deliver: in deterministic tests nobody else pumps.
            if !self.pump_once() {
                let st = self.lock();
                if st.syncs.get(&id).is_some_and(|s| s.result.is_some()) {
                    continue;
                }
                let step = deadline
                    .map(|d| d.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_millis(10))
                    .min(Duration::from_millis(10));
                drop(self.wait(st, step));
            }
        }
    }
}

/// A Windows absolute time (100 ns since 1601) as an `Instant`.
pub(super) fn absolute_deadline(t: i64) -> Instant {
    const EPOCH_DIFF_100NS: u64 = 116_444_736_000_000_000;
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let target_unix_100ns = t.unsigned_abs().saturating_sub(EPOCH_DIFF_100NS);
    let target = Duration::from_nanos(target_unix_100ns.saturating_mul(100));
    far_deadline(target.saturating_sub(now_unix))
}
