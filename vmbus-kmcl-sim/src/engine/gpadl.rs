//! GPADLs: guest buffers a client describes to the server (`VmbChannelCreateGpadlFromMdl`
//! and friends), their server-side mappings, and reclaiming those left behind at close.
#![forbid(unsafe_code)]

use super::*;

/// A GPADL created by a client.
#[derive(Debug)]
pub(super) struct Gpadl {
    pub(super) owner: ObjRef,
    /// Where `VmbChannelCreateGpadlFrom*` made it.
    pub(super) site: AllocSite,
    pub(super) described: Described,
    pub(super) read_only: bool,
    /// The server channel that mapped it, the MDL, and where `VmbChannelMapGpadl` ran.
    pub(super) mapping: Option<(ObjRef, OwnedMdl, AllocSite)>,
}

impl BusShared {
    /// GPADLs still owned by `c` when they must be gone: reported and reclaimed.
    pub(super) fn reclaim_gpadls(&self, st: &mut BusState, c: ObjRef, when: &str) {
        let left: Vec<u32> = st
            .gpadls
            .iter()
            .filter(|(_, g)| g.owner == c)
            .map(|(k, _)| *k)
            .collect();
        for id in left {
            self.violation(st, format!("GPADL {id} still exists after {when}; the driver must delete every GPADL by the end of EvtChannelClosed"));
            st.gpadls.remove(&id);
        }
    }

    // ----- GPADLs -----

    /// `VmbChannelCreateGpadlFromBuffer` and `...FromMdl` (`what` names the one called).
    pub(crate) fn gpadl_create(
        &self,
        c: ObjRef,
        flags: u32,
        described: Described,
        what: AllocFn,
    ) -> Result<u32, NTSTATUS> {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, what.name()) else {
            return Err(STATUS_INVALID_PARAMETER_1);
        };
        if ch.is_server {
            return Err(STATUS_INVALID_PARAMETER_1);
        }
        if ch.state != ChannelState::Open {
            return Err(STATUS_INVALID_DEVICE_STATE);
        }
        if flags & !VMBUS_CHANNEL_GPADL_FLAGS != 0 {
            return Err(STATUS_INVALID_PARAMETER_2);
        }
        let id = st.next_gpadl;
        st.next_gpadl = st
            .next_gpadl
            .checked_add(1)
            .ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
        let site = st.alloc_site(what);
        st.gpadls.insert(
            id,
            Gpadl {
                owner: c,
                site,
                described,
                read_only: flags & VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY != 0,
                mapping: None,
            },
        );
        Ok(id)
    }

    pub(crate) fn gpadl_delete(&self, c: ObjRef, id: u32) {
        let mut st = self.lock();
        if self.channel(&mut st, c, "VmbChannelDeleteGpadl").is_none() {
            return;
        }
        match st.gpadls.get(&id) {
            Some(g) if g.owner == c => {}
            _ => {
                self.violation(
                    &mut st,
                    format!("VmbChannelDeleteGpadl of unknown GPADL {id} (double delete?)"),
                );
                return;
            }
        }
        let (mut st, ok) = self.block_until(st, |s| {
            s.gpadls.get(&id).is_none_or(|g| g.mapping.is_none())
        });
        if !ok {
            self.violation(
                &mut st,
                format!(
                    "VmbChannelDeleteGpadl of GPADL {id} blocked: the server never unmapped it"
                ),
            );
        }
        st.gpadls.remove(&id);
        drop(st);
        self.notify();
    }

    pub(crate) fn gpadl_map(
        &self,
        c: ObjRef,
        flags: u32,
        id: u32,
    ) -> Result<vmbus_kmcl_sys::PMDL, NTSTATUS> {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelMapGpadl") else {
            return Err(STATUS_INVALID_PARAMETER_1);
        };
        if !ch.is_server {
            return Err(STATUS_INVALID_PARAMETER_1);
        }
        if flags & !VMBUS_CHANNEL_GPADL_FLAGS != 0 {
            return Err(STATUS_INVALID_PARAMETER_2);
        }
        let peer = ch.peer;
        let site = st.alloc_site(AllocFn::MapGpadl);
        let Some(g) = st.gpadls.get_mut(&id) else {
            return Err(STATUS_INVALID_PARAMETER_3);
        };
        if Some(g.owner) != peer {
            return Err(STATUS_INVALID_PARAMETER_3);
        }
        if g.mapping.is_some() {
            return Err(STATUS_INVALID_DEVICE_STATE);
        }
        let ro = flags & VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY != 0;
        if g.read_only && !ro {
            return Err(STATUS_ACCESS_DENIED);
        }
        let mdl = OwnedMdl::new(&g.described, ro);
        let p = mdl.as_pmdl();
        g.mapping = Some((c, mdl, site));
        Ok(p)
    }

    pub(crate) fn gpadl_unmap(&self, c: ObjRef, id: u32) {
        let mut st = self.lock();
        if self.channel(&mut st, c, "VmbChannelUnmapGpadl").is_none() {
            return;
        }
        match st.gpadls.get_mut(&id) {
            Some(g) if g.mapping.as_ref().is_some_and(|(s, _, _)| *s == c) => {
                g.mapping = None;
            }
            _ => {
                self.violation(&mut st, format!("VmbChannelUnmapGpadl of GPADL {id}, which this channel has not mapped (double unmap?)"));
                return;
            }
        }
        drop(st);
        self.notify();
    }
}
