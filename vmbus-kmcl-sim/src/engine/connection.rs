//! Pairing and disconnecting channels: a server's offer meets a client's target, and an open
//! pair comes apart again (disable, cleanup or a crash), cancelling what was in flight.
#![forbid(unsafe_code)]

use super::*;

impl BusState {
    /// Cancels every transaction of channel `c` that is still in flight: queued frames are
    /// dropped, and packet objects waiting for a completion are completed with `status`.
    pub(super) fn cancel_in_flight(&mut self, c: ObjRef, status: NTSTATUS) {
        let mut frames = Vec::new();
        if let Some(ch) = self.channels.get_mut(c) {
            frames.extend(ch.out.ring.drain(..));
            frames.extend(ch.out.waiting.drain(..));
            ch.out.used = 0;
        }
        // Frames cancelled here complete their packets; data frames already delivered are
        // covered by the scan below.
        let mut cancelled: Vec<Origin> = Vec::new();
        for f in frames {
            match f.body {
                FrameBody::Data {
                    origin,
                    wants_completion,
                    ..
                } if owes_completion(origin, wants_completion) => cancelled.push(origin),
                FrameBody::Data { .. } | FrameBody::Completion { .. } => {}
            }
            self.give_buf(f.payload);
        }
        let pending: Vec<(ObjRef, u64)> = self
            .packets
            .iter()
            .filter(|(_, p)| p.channel == c && p.state == PacketState::InFlight)
            .map(|(r, p)| (r, p.txn))
            .collect();
        for (r, txn) in pending {
            let o = Origin::Packet(r, txn);
            if !cancelled.contains(&o) {
                cancelled.push(o);
            }
        }
        for s in self.syncs.values_mut() {
            if s.channel == c && s.result.is_none() {
                s.result = Some((STATUS_DEVICE_REMOVED, Vec::new()));
            }
        }
        for origin in cancelled {
            self.local.push_back(LocalCompletion {
                origin,
                status,
                payload: Vec::new(),
            });
        }
    }

    /// Separates `a` from its peer. The peer gets a `PeerGone` event when `notify_peer`.
    pub(super) fn disconnect(&mut self, a: ObjRef, notify_peer: bool, crash_peer: bool) {
        let Some(peer) = self.channels.get_mut(a).and_then(|c| c.peer.take()) else {
            return;
        };
        // Drop completions travelling toward either side; the data frames are cancelled.
        let mut frames = Vec::new();
        if let Some(ch) = self.channels.get_mut(a) {
            frames.extend(ch.out.ring.drain(..));
            ch.out.used = 0;
        }
        let mut peer_frames = Vec::new();
        let mut peer_info = None;
        if let Some(p) = self.channels.get_mut(peer) {
            p.peer = None;
            peer_frames.extend(p.out.ring.drain(..));
            p.out.used = 0;
            let was_open = p.state == ChannelState::Open;
            let was_running = p.running;
            p.running = false;
            p.incoming_enabled = false;
            if crash_peer {
                p.state = ChannelState::Crashed;
            } else if p.state != ChannelState::Disabled && p.state != ChannelState::Crashed {
                p.state = if p.is_server {
                    ChannelState::Enabled
                } else {
                    ChannelState::Disabled
                };
            }
            peer_info = Some((was_open, was_running));
        }
        // Frames of `a` in flight in its ring go back to `a`'s waiting queue owners as
        // cancellations (handled by the caller's cancel_in_flight); frames of the peer likewise.
        self.cancel_frames(frames, STATUS_CANCELLED);
        self.cancel_frames(peer_frames, STATUS_CANCELLED);
        if let Some((was_open, was_running)) = peer_info {
            if crash_peer {
                self.silence_packets(peer);
            } else {
                self.cancel_in_flight(peer, STATUS_CANCELLED);
                if notify_peer {
                    self.events.retain(|e| e.channel != peer);
                    self.events.push_back(Event {
                        channel: peer,
                        kind: EventKind::PeerGone {
                            was_open,
                            was_running,
                        },
                    });
                }
            }
        }
    }

    /// A crashed side's packets: default-routine packets are freed, others become idle; nothing
    /// is reported to the crashed driver.
    pub(super) fn silence_packets(&mut self, c: ObjRef) {
        let list: Vec<(ObjRef, bool)> = self
            .packets
            .iter()
            .filter(|(_, p)| p.channel == c && p.state == PacketState::InFlight)
            .map(|(r, p)| (r, p.routine.is_none() && p.initialized_at.is_none()))
            .collect();
        for (r, free) in list {
            if free {
                self.packets.remove(r);
            } else if let Some(p) = self.packets.get_mut(r) {
                p.state = PacketState::Idle;
            }
        }
        if let Some(ch) = self.channels.get_mut(c) {
            let frames: Vec<Frame> = ch.out.waiting.drain(..).collect();
            for f in frames {
                self.give_buf(f.payload);
            }
        }
        let syncs: Vec<u64> = self
            .syncs
            .iter()
            .filter(|(_, s)| s.channel == c)
            .map(|(k, _)| *k)
            .collect();
        for k in syncs {
            if let Some(s) = self.syncs.get_mut(&k) {
                s.result = Some((STATUS_DEVICE_REMOVED, Vec::new()));
            }
        }
    }

    pub(super) fn try_connect(&mut self, c: ObjRef) {
        let Some(ch) = self.channels.get(c) else {
            return;
        };
        if ch.state != ChannelState::Enabled || ch.peer.is_some() || ch.rejected {
            return;
        }
        let is_server = ch.is_server;
        let candidate = self
            .channels
            .iter()
            .filter(|(r, o)| {
                *r != c
                    && o.is_server != is_server
                    && o.state == ChannelState::Enabled
                    && o.peer.is_none()
                    && !o.rejected
            })
            .find(|(_, o)| {
                let (server, client) = if is_server { (ch, *o) } else { (*o, ch) };
                server.target_vtl == 0
                    && client.target_set
                    && client.interface_type == server.interface_type
                    && (client.target_any_instance
                        || client.interface_instance == server.interface_instance)
            })
            .map(|(r, _)| r);
        let Some(other) = candidate else { return };
        let (s, cl) = if is_server { (c, other) } else { (other, c) };
        if let Some(status) = self.faults.pnp_failures.pop_front() {
            if let Some(client) = self.channels.get_mut(cl) {
                client.rejected = true;
            }
            self.events.push_back(Event {
                channel: cl,
                kind: EventKind::PnpFailure(status),
            });
            return;
        }
        let (client_pages, client_min) = match self.channels.get(cl) {
            Some(x) => (
                x.ring_pages,
                min_ring(x.max_packet_size, x.max_external_data),
            ),
            None => return,
        };
        let (server_min, mmio, server_instance) = match self.channels.get(s) {
            Some(x) => (
                min_ring(x.max_packet_size, x.max_external_data),
                x.mmio_megabytes,
                x.interface_instance,
            ),
            None => return,
        };
        let mmio_size = (u64::from(mmio.0) + u64::from(mmio.1)) << 20;
        let mmio_base = if mmio_size > 0 {
            let base = 0xF_0000_0000_u64.saturating_add(self.next_mmio);
            self.next_mmio = self.next_mmio.saturating_add(mmio_size);
            base
        } else {
            0
        };
        if let Some(x) = self.channels.get_mut(s) {
            x.peer = Some(cl);
            x.state = ChannelState::Connecting;
            x.out.capacity = (client_pages.0 as usize * PAGE_SIZE).max(server_min);
        }
        if let Some(x) = self.channels.get_mut(cl) {
            x.peer = Some(s);
            x.state = ChannelState::Connecting;
            x.out.capacity = (client_pages.1 as usize * PAGE_SIZE).max(client_min);
            x.mmio_space = (mmio_base, mmio_size);
            x.interface_instance = server_instance;
        }
        self.events.push_back(Event {
            channel: s,
            kind: EventKind::Opened,
        });
        self.events.push_back(Event {
            channel: cl,
            kind: EventKind::Opened,
        });
    }
}
