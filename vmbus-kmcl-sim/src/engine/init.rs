//! Channel init setters: the `VmbChannelInitSet*`, `VmbClientChannelInitSet*` and
//! `VmbServerChannelInitSet*` configuration allowed while a channel is disabled.
#![forbid(unsafe_code)]

use super::*;

impl BusShared {
    /// Runs `f` on a channel that is in the configurable (disabled) state; otherwise
    /// `STATUS_INVALID_PARAMETER_1`. `server` restricts the setter to one endpoint kind.
    pub(crate) fn init_set(
        &self,
        c: ObjRef,
        server: Option<bool>,
        f: impl FnOnce(&mut Channel) -> NTSTATUS,
    ) -> NTSTATUS {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "init setter") else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if ch.state != ChannelState::Disabled || server.is_some_and(|s| s != ch.is_server) {
            return STATUS_INVALID_PARAMETER_1;
        }
        f(ch)
    }

    pub(crate) fn set_flags(&self, c: ObjRef, flags: u32) -> NTSTATUS {
        self.init_set(c, None, |ch| {
            if flags & !VMBUS_CHANNEL_INIT_FLAGS != 0 {
                return STATUS_INVALID_PARAMETER_2;
            }
            ch.init_flags = flags;
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_server_flags(&self, c: ObjRef, flags: u32) -> NTSTATUS {
        self.init_set(c, Some(true), |ch| {
            if flags & !VMBUS_SERVER_CHANNEL_INIT_FLAGS != 0 {
                return STATUS_INVALID_PARAMETER_2;
            }
            ch.server_flags = flags;
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_friendly_name(&self, c: ObjRef, name: String) -> NTSTATUS {
        self.init_set(c, None, |ch| {
            ch.friendly_name = Some(name);
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_client_context_size(&self, c: ObjRef, size: u32) -> NTSTATUS {
        self.init_set(c, None, |ch| {
            ch.client_context_size = size;
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_max_external_data(&self, c: ObjRef, size: u32, chain: u32) -> NTSTATUS {
        self.init_set(c, None, |ch| {
            if size == 0 {
                return STATUS_INVALID_PARAMETER_2;
            }
            if chain == 0 {
                return STATUS_INVALID_PARAMETER_3;
            }
            ch.max_external_data = Some((size, chain));
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_max_packet_size(&self, c: ObjRef, size: u32) -> NTSTATUS {
        self.init_set(c, None, |ch| {
            // The sim bounds the size so that frames and packet objects stay within u32.
            if size == 0 || size > 0x0100_0000 {
                return STATUS_INVALID_PARAMETER_2;
            }
            ch.max_packet_size = size;
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_process_packet_callbacks(
        &self,
        c: ObjRef,
        pp: PFN_VMB_CHANNEL_PROCESS_PACKET,
        pc: PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
    ) -> NTSTATUS {
        self.init_set(c, None, |ch| {
            if pp.is_none() {
                return STATUS_INVALID_PARAMETER_2;
            }
            ch.process_packet = pp;
            ch.processing_complete = pc;
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_state_callbacks(&self, c: ObjRef, cbs: StateCallbacks) -> NTSTATUS {
        self.init_set(c, None, |ch| {
            ch.state_cbs = cbs;
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_ring_pages(&self, c: ObjRef, incoming: u32, outgoing: u32) -> NTSTATUS {
        self.init_set(c, Some(false), |ch| {
            // Bounded so that ring sizes stay far from overflow.
            if incoming == 0 || incoming > 0x10000 {
                return STATUS_INVALID_PARAMETER_2;
            }
            if outgoing == 0 || outgoing > 0x10000 {
                return STATUS_INVALID_PARAMETER_3;
            }
            ch.ring_pages = (incoming, outgoing);
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_target_pnp(
        &self,
        c: ObjRef,
        ty: GUID,
        instance: Option<GUID>,
        pnp: PFN_VMB_CHANNEL_PNP_FAILURE,
    ) -> NTSTATUS {
        self.init_set(c, Some(false), |ch| {
            ch.interface_type = ty;
            ch.target_any_instance = instance.is_none();
            ch.interface_instance = instance.unwrap_or_default();
            ch.pnp_failure = pnp;
            ch.target_set = true;
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_target_interface_id(&self, c: ObjRef, ty: GUID, inst: GUID) -> NTSTATUS {
        self.init_set(c, Some(true), |ch| {
            ch.interface_type = ty;
            ch.interface_instance = inst;
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_mmio(&self, c: ObjRef, mb: u16, opt: u16) -> NTSTATUS {
        self.init_set(c, Some(true), |ch| {
            if mb == 0 && opt == 0 {
                return STATUS_INVALID_PARAMETER;
            }
            ch.mmio_megabytes = (mb, opt);
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_save_restore_callbacks(
        &self,
        c: ObjRef,
        save: PFN_VMB_CHANNEL_SAVE_PACKET,
        restore: PFN_VMB_CHANNEL_RESTORE_PACKET,
    ) -> NTSTATUS {
        self.init_set(c, Some(true), |ch| {
            if save.is_none() {
                return STATUS_INVALID_PARAMETER_2;
            }
            if restore.is_none() {
                return STATUS_INVALID_PARAMETER_3;
            }
            ch.save_packet = save;
            ch.restore_packet = restore;
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_target_vtl(&self, c: ObjRef, vtl: u8) -> NTSTATUS {
        self.init_set(c, Some(true), |ch| {
            // Hyper-V defines VTL 0 to 2.
            if vtl > 2 {
                return STATUS_INVALID_PARAMETER_2;
            }
            ch.target_vtl = vtl;
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_vmbus_handle(
        &self,
        c: ObjRef,
        h: usize,
        handle_bus: Option<u64>,
    ) -> NTSTATUS {
        let bus = self.id;
        self.init_set(c, Some(true), |ch| {
            if handle_bus != Some(bus) {
                return STATUS_INVALID_PARAMETER_2;
            }
            ch.vmbus_handle = Some(h);
            STATUS_SUCCESS
        })
    }
}
