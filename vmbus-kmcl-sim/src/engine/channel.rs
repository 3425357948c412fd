//! Channel state: the channel object with its configuration and flow flags, its connection
//! state, and the snapshot tests read through [`crate::Bus::channel_info`].
#![forbid(unsafe_code)]

use super::*;

/// Which side of the bus a device (and the channels allocated on it) is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The root (host) partition: servers (VSPs).
    Root,
    /// The guest partition: clients (VSCs).
    Guest,
}

/// Connection state of a channel, as the sim reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelState {
    /// Allocated or disabled: the init setters are allowed.
    Disabled,
    /// Enabled: the server's offer is published, or the client waits for an offer.
    Enabled,
    /// Paired with a peer; `EvtChannelOpened` has not run yet.
    Connecting,
    /// Open: traffic may flow.
    Open,
    /// Cut off by [`crate::Bus::crash_peer_of`]: no callback runs any more.
    Crashed,
}

/// The five state-change callbacks, copied from the driver's table.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StateCallbacks {
    pub opened: PFN_VMB_CHANNEL_OPENED,
    pub closed: PFN_VMB_CHANNEL_CLOSED,
    pub suspend: PFN_VMB_CHANNEL_CLOSED,
    pub started: PFN_VMB_CHANNEL_CLOSED,
    pub post_started: PFN_VMB_CHANNEL_CLOSED,
}

/// A channel.
#[derive(Debug)]
pub(crate) struct Channel {
    pub(super) handle: usize,
    /// Where `VmbChannelAllocate` made it.
    pub(super) site: AllocSite,
    pub(super) side: Side,
    pub(super) is_server: bool,
    pub(super) state: ChannelState,
    pub(super) peer: Option<ObjRef>,
    /// Refused by its own `EvtChannelOpened`: not paired again until re-enabled.
    pub(super) rejected: bool,
    pub(super) paused: bool,
    pub(super) pause_armed: bool,
    pub(super) running: bool,
    pub(super) incoming_enabled: bool,
    pub(super) suspended: bool,
    pub(super) queue_failed: bool,
    pub(super) in_state_cb: bool,
    pub(super) in_closed_cb: bool,
    pub(super) in_delivery: bool,
    /// The thread running this channel's `EvtVmbChannelProcessPacket`, while `in_delivery`.
    pub(super) delivery_thread: Option<std::thread::ThreadId>,
    /// The thread running this channel's `EvtChannelStarted`, while it runs.
    pub(super) started_thread: Option<std::thread::ThreadId>,
    /// The incoming queue stalled on the transaction quota: only a completion restarts it (a
    /// new quota does not).
    pub(super) quota_stalled: bool,
    pub(super) batch: u32,
    pub(super) outstanding: u32,
    pub(super) quota: u32,
    pub(super) passive: bool,
    pub(super) pointer: UserPtr,
    pub(super) latency: u16,
    // Configuration.
    pub(super) init_flags: u32,
    pub(super) server_flags: u32,
    pub(super) friendly_name: Option<String>,
    pub(super) client_context_size: u32,
    pub(super) max_packet_size: u32,
    pub(super) max_external_data: Option<(u32, u32)>,
    pub(super) ring_pages: (u32, u32),
    pub(super) interface_type: GUID,
    pub(super) interface_instance: GUID,
    pub(super) target_any_instance: bool,
    pub(super) target_set: bool,
    pub(super) mmio_megabytes: (u16, u16),
    pub(super) mmio_space: (u64, u64),
    pub(super) target_vtl: u8,
    pub(super) vmbus_handle: Option<usize>,
    pub(super) state_cbs: StateCallbacks,
    pub(super) process_packet: PFN_VMB_CHANNEL_PROCESS_PACKET,
    pub(super) processing_complete: PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
    pub(super) save_packet: PFN_VMB_CHANNEL_SAVE_PACKET,
    pub(super) restore_packet: PFN_VMB_CHANNEL_RESTORE_PACKET,
    pub(super) pnp_failure: PFN_VMB_CHANNEL_PNP_FAILURE,
    pub(super) out: Outgoing,
    pub(super) redeliver: VecDeque<ObjRef>,
    pub(super) save: Option<SaveCtx>,
    pub(super) restore: Option<RestoreCtx>,
}

impl Channel {
    pub(super) fn new(handle: usize, side: Side, is_server: bool, site: AllocSite) -> Channel {
        Channel {
            handle,
            site,
            side,
            is_server,
            state: ChannelState::Disabled,
            peer: None,
            rejected: false,
            paused: false,
            pause_armed: false,
            running: false,
            incoming_enabled: false,
            suspended: false,
            queue_failed: false,
            in_state_cb: false,
            in_closed_cb: false,
            in_delivery: false,
            delivery_thread: None,
            started_thread: None,
            quota_stalled: false,
            batch: 0,
            outstanding: 0,
            quota: u32::MAX,
            passive: false,
            pointer: UserPtr::default(),
            latency: 0,
            init_flags: 0,
            server_flags: 0,
            friendly_name: None,
            client_context_size: 0,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            max_external_data: None,
            ring_pages: (DEFAULT_RING_PAGES, DEFAULT_RING_PAGES),
            interface_type: GUID::default(),
            interface_instance: GUID::default(),
            target_any_instance: true,
            target_set: false,
            mmio_megabytes: (0, 0),
            mmio_space: (0, 0),
            target_vtl: 0,
            vmbus_handle: None,
            state_cbs: StateCallbacks::default(),
            process_packet: None,
            processing_complete: None,
            save_packet: None,
            restore_packet: None,
            pnp_failure: None,
            out: Outgoing::default(),
            redeliver: VecDeque::new(),
            save: None,
            restore: None,
        }
    }

    /// Whether the receiver may take one more data packet now: the incoming queue runs and the
    /// transaction quota has room (and did not stall; see `quota_stalled`).
    pub(super) fn can_take_data(&self) -> bool {
        self.can_redeliver() && !self.quota_stalled && self.outstanding < self.quota
    }

    /// Whether a packet already delivered (deferred, or pended on its external data) may be
    /// delivered again now. It already counts against the quota, so the quota does not hold
    /// it back.
    pub(super) fn can_redeliver(&self) -> bool {
        self.state == ChannelState::Open
            && self.incoming_enabled
            && !self.in_delivery
            && !self.queue_failed
            && self.process_packet.is_some()
    }

    /// Whether the current thread is inside this channel's `EvtVmbChannelProcessPacket`.
    pub(super) fn delivering_here(&self) -> bool {
        self.in_delivery && self.delivery_thread == Some(this_thread())
    }
}

/// A snapshot of one channel for tests.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelInfo {
    /// Bus side the channel was allocated on.
    pub side: Side,
    /// Server endpoint (`IsServer` was TRUE).
    pub is_server: bool,
    /// Connection state.
    pub state: ChannelState,
    /// Flow is paused.
    pub paused: bool,
    /// Flow is started (after `EvtChannelStarted`, before `EvtChannelSuspend`).
    pub running: bool,
    /// The incoming queue was stopped by `VmbChannelPacketFail`.
    pub incoming_queue_failed: bool,
    /// Name set with `VmbChannelInitSetFriendlyName`.
    pub friendly_name: Option<String>,
    /// Bytes set with `VmbChannelInitSetClientContextSize`.
    pub client_context_size: u32,
    /// `VMBUS_CHANNEL_INIT_FLAG_*` bits.
    pub init_flags: u32,
    /// `VMBUS_SERVER_CHANNEL_INIT_FLAG_*` bits.
    pub server_flags: u32,
    /// Maximum inline packet size.
    pub max_packet_size: u32,
    /// `(DataSize, ChainLength)` from `VmbChannelInitSetMaximumExternalData`.
    pub max_external_data: Option<(u32, u32)>,
    /// `(incoming, outgoing)` ring page counts (client setting; defaults otherwise).
    pub ring_page_counts: (u32, u32),
    /// Byte capacity of the outgoing ring (0 until connected).
    pub outgoing_ring_capacity: usize,
    /// Bytes currently used in the outgoing ring.
    pub outgoing_ring_used: usize,
    /// Frames in the outgoing ring.
    pub outgoing_in_ring: usize,
    /// Frames waiting for outgoing ring space (or for the channel to open).
    pub outgoing_waiting: usize,
    /// Incoming packets delivered and not completed yet.
    pub outstanding_incoming: u32,
    /// Transaction quota (`u32::MAX` = unlimited).
    pub transaction_quota: u32,
    /// `VmbChannelSetIncomingProcessingAtPassive(TRUE)` is in force.
    pub incoming_at_passive: bool,
    /// Current interrupt latency (100 ns units).
    pub interrupt_latency: u16,
    /// `(required, optional)` MiB from `VmbServerChannelInitSetMmioMegabytes`.
    pub mmio_megabytes: (u16, u16),
    /// `(address, size)` of the MMIO space assigned at open (client side).
    pub mmio_space: (u64, u64),
    /// Target VTL of the offer.
    pub target_vtl: u8,
    /// Kernel handle value recorded by `VmbServerChannelInitSetVmbusHandle`.
    pub vmbus_handle: Option<usize>,
    /// Interface type GUID (offer or target).
    pub interface_type: GUID,
    /// Interface instance GUID.
    pub interface_instance: GUID,
    /// The channel's pointer (`VmbChannelSetPointer`).
    pub pointer: usize,
}
