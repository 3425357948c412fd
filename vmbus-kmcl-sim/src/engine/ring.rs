//! Rings and frames: each open channel's size-limited outgoing ring, the frames in it or
//! waiting for space, and the pool of payload buffers they reuse.
#![forbid(unsafe_code)]

use super::*;

/// Bytes of a ring frame header (descriptor) and trailer.
pub(super) const FRAME_OVERHEAD: usize = 16 + 8;

/// Largest number of pooled payload buffers kept for reuse.
pub(super) const POOL_LIMIT: usize = 4096;

/// Where a transaction's completion goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// A packet object, in the send numbered `txn`.
    Packet(ObjRef, u64),
    /// A waiting `VmbChannelSendSynchronousRequest`.
    Sync(u64),
    /// A packet injected by a test as a hostile guest.
    Raw(u64),
}

/// What a frame carries.
#[derive(Debug)]
pub(super) enum FrameBody {
    /// A data packet.
    Data {
        origin: Origin,
        wants_completion: bool,
        external: Option<Described>,
    },
    /// The completion of a data packet.
    Completion { origin: Origin, status: NTSTATUS },
}

/// One packet in a ring or waiting for ring space.
#[derive(Debug)]
pub(super) struct Frame {
    pub(super) size: usize,
    pub(super) payload: Vec<u8>,
    pub(super) body: FrameBody,
}

/// The outgoing direction of a channel.
#[derive(Debug, Default)]
pub(super) struct Outgoing {
    pub(super) capacity: usize,
    pub(super) used: usize,
    pub(super) ring: VecDeque<Frame>,
    pub(super) waiting: VecDeque<Frame>,
    /// Fault injection: the ring reports no free space.
    pub(super) forced_full: bool,
}

/// Whether a cancelled data frame owes its sender a completion: packet objects and synchronous
/// requests always learn the outcome; a raw guest frame only when it asked for a completion.
pub(super) fn owes_completion(origin: Origin, wants_completion: bool) -> bool {
    wants_completion || !matches!(origin, Origin::Raw(_))
}

pub(super) fn round8(n: usize) -> usize {
    n.div_ceil(8).saturating_mul(8)
}

/// Bytes of the descriptor of `bytes` of external data in a frame: a 16-byte range header and
/// one 8-byte page number per page (at least one).
pub(super) fn external_descriptor_size(bytes: usize) -> usize {
    bytes
        .div_ceil(PAGE_SIZE)
        .max(1)
        .saturating_mul(8)
        .saturating_add(16)
}

pub(super) fn frame_size(payload: usize, external: Option<&Described>) -> usize {
    let ext = external.map_or(0, |d| external_descriptor_size(d.byte_len()));
    FRAME_OVERHEAD
        .saturating_add(round8(payload))
        .saturating_add(ext)
}

/// The smallest ring a channel gets: one frame of the maximum inline size plus the descriptor of
/// the largest external data it declared (`VmbChannelInitSetMaximumExternalData`), or of one
/// page when it declared none, so that every send the configuration admits can fit.
pub(super) fn min_ring(max_packet: u32, max_external: Option<(u32, u32)>) -> usize {
    let ext = max_external.map_or(PAGE_SIZE, |(size, _)| size as usize);
    FRAME_OVERHEAD
        .saturating_add(round8(max_packet as usize))
        .saturating_add(external_descriptor_size(ext))
}

impl BusState {
    pub(super) fn take_buf(&mut self, data: &[u8]) -> Vec<u8> {
        let mut v = self.pool.pop().unwrap_or_default();
        v.extend_from_slice(data);
        v
    }

    pub(super) fn give_buf(&mut self, mut v: Vec<u8>) {
        if self.pool.len() < POOL_LIMIT && v.capacity() <= 65536 {
            v.clear();
            self.pool.push(v);
        }
    }

    /// Moves waiting frames of `c` into its ring while they fit; queues local completions for
    /// data frames that do not wait for the peer.
    pub(super) fn refill(&mut self, c: ObjRef) {
        loop {
            let Some(ch) = self.channels.get_mut(c) else {
                return;
            };
            if ch.state != ChannelState::Open || ch.peer.is_none() || ch.out.forced_full {
                return;
            }
            let Some(front) = ch.out.waiting.front() else {
                return;
            };
            if front.size > ch.out.capacity {
                // It can never fit: refuse it instead of blocking the ring for ever.
                let (size, capacity) = (front.size, ch.out.capacity);
                let Some(f) = ch.out.waiting.pop_front() else {
                    return;
                };
                let id = self.id;
                self.violation(
                    id,
                    format!(
                        "a frame of {size} bytes can never fit in the channel's {capacity}-byte \
                         ring; it is dropped and its sender completed with \
                         STATUS_INVALID_PARAMETER"
                    ),
                );
                self.cancel_frames(vec![f], STATUS_INVALID_PARAMETER);
                continue;
            }
            if ch.out.used + front.size > ch.out.capacity {
                return;
            }
            let Some(f) = ch.out.waiting.pop_front() else {
                return;
            };
            ch.out.used += f.size;
            // A packet object or synchronous request sent without WAIT_FOR_COMPLETION completes
            // once it is in the ring; a raw guest frame that asked for nothing gets nothing.
            let local = match f.body {
                FrameBody::Data {
                    origin,
                    wants_completion: false,
                    ..
                } if !matches!(origin, Origin::Raw(_)) => Some(origin),
                _ => None,
            };
            ch.out.ring.push_back(f);
            if let Some(origin) = local {
                self.local.push_back(LocalCompletion {
                    origin,
                    status: STATUS_SUCCESS,
                    payload: Vec::new(),
                });
            }
        }
    }

    /// Queues `frame` on channel `c`: into the ring when open and there is room (and nothing is
    /// waiting ahead), otherwise at the end of the waiting queue.
    pub(super) fn enqueue(&mut self, c: ObjRef, frame: Frame) {
        let Some(ch) = self.channels.get_mut(c) else {
            self.drop_frame(frame);
            return;
        };
        ch.out.waiting.push_back(frame);
        self.refill(c);
    }

    pub(super) fn drop_frame(&mut self, f: Frame) {
        self.give_buf(f.payload);
    }

    pub(super) fn alloc_txn(&mut self) -> u64 {
        self.next_txn += 1;
        self.next_txn
    }

    /// Completions owed to the senders of frames that will never be delivered.
    pub(super) fn cancel_frames(&mut self, frames: Vec<Frame>, status: NTSTATUS) {
        for f in frames {
            if let FrameBody::Data {
                origin,
                wants_completion,
                ..
            } = f.body
            {
                if !owes_completion(origin, wants_completion) {
                    self.give_buf(f.payload);
                    continue;
                }
                self.local.push_back(LocalCompletion {
                    origin,
                    status,
                    payload: Vec::new(),
                });
            }
            self.give_buf(f.payload);
        }
    }
}
