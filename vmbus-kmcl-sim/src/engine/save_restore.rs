//! Save and restore: the chunked blob `VmbChannelSaveContinue` hands out and
//! `VmbChannelRestoreFromBuffer` takes back, and packets restored with `VmbPacketRestore`.
#![forbid(unsafe_code)]

use super::*;

/// Save-chunk header: magic, sequence, payload length, last flag.
pub(super) const CHUNK_HEADER: usize = 16;
pub(super) const CHUNK_MAGIC: u32 = 0x4843_4D4B; // "KMCH"
pub(super) const SAVE_MAGIC: u32 = 0x5653_4D4B; // "KMSV"
pub(super) const PACKET_MAGIC: u32 = 0x4B50_4D4B; // "KMPK"

/// Largest per-packet state the sim accepts from `EvtVmbChannelSavePacket`'s `BytesNeeded`
/// (64 MiB): a larger request is refused instead of allocating it.
pub(super) const MAX_SAVED_PACKET_STATE: u32 = 64 << 20;

/// An in-progress save.
#[derive(Debug)]
pub(super) struct SaveCtx {
    /// Tells this save from a later one begun after a `VmbChannelSaveEnd`.
    pub(super) id: u64,
    /// Where `VmbChannelSaveBegin` made it.
    pub(super) site: AllocSite,
    pub(super) blob: Option<Vec<u8>>,
    /// True while a `VmbChannelSaveContinue` builds the blob (its `EvtVmbChannelSavePacket`
    /// calls run outside the lock).
    pub(super) building: bool,
    pub(super) offset: usize,
    pub(super) seq: u32,
}

/// An in-progress restore.
#[derive(Debug, Default)]
pub(super) struct RestoreCtx {
    pub(super) data: Vec<u8>,
    pub(super) seq: u32,
    /// True while `EvtVmbChannelRestorePacket` runs (the only place `VmbPacketRestore` is legal).
    pub(super) in_callback: bool,
}

/// An in-use packet found by a save: reference, caller memory, data of its send, wait flag.
pub(super) type SavedPacket = (ObjRef, Option<UserPtr>, Vec<u8>, bool);

impl BusShared {
    // ----- Save and restore -----

    pub(crate) fn save_begin(&self, c: ObjRef) -> NTSTATUS {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelSaveBegin") else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if !ch.is_server {
            return STATUS_INVALID_PARAMETER_1;
        }
        if ch.save.is_some() {
            return STATUS_INVALID_DEVICE_STATE;
        }
        let id = st.alloc_txn();
        let site = st.alloc_site(AllocFn::SaveBegin);
        if let Some(ch) = st.channels.get_mut(c) {
            ch.save = Some(SaveCtx {
                id,
                site,
                blob: None,
                building: false,
                offset: 0,
                seq: 0,
            });
        }
        STATUS_SUCCESS
    }

    pub(crate) fn save_end(&self, c: ObjRef) {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelSaveEnd") else {
            return;
        };
        match ch.save.take() {
            None => self.violation(
                &mut st,
                "VmbChannelSaveEnd without VmbChannelSaveBegin".into(),
            ),
            Some(ctx) if ctx.building => self.violation(
                &mut st,
                "VmbChannelSaveEnd while a VmbChannelSaveContinue of the same save is still \
                 running"
                    .into(),
            ),
            Some(_) => {}
        }
    }

    /// Builds the save blob: channel identity plus every in-use packet with KMCL's and the
    /// driver's state (C8 runs here, outside the lock).
    pub(super) fn build_blob(&self, c: ObjRef) -> Result<Vec<u8>, NTSTATUS> {
        let st = self.lock();
        let Some(ch) = st.channels.get(c) else {
            return Err(STATUS_INVALID_PARAMETER_1);
        };
        let (handle, save_cb, ty, inst) = (
            ch.handle,
            ch.save_packet,
            ch.interface_type,
            ch.interface_instance,
        );
        // In-use packets and the data of their current send, wherever that data is now.
        let mut list: Vec<SavedPacket> = Vec::new();
        for (r, p) in st.packets.iter() {
            if p.channel != c || p.state != PacketState::InFlight {
                continue;
            }
            let origin = Origin::Packet(r, p.txn);
            let mut found = p.restored.clone();
            let all = ch.out.ring.iter().chain(ch.out.waiting.iter());
            for f in all {
                if let FrameBody::Data {
                    origin: o,
                    wants_completion,
                    ..
                } = f.body
                {
                    if o == origin {
                        found = Some((f.payload.clone(), wants_completion));
                    }
                }
            }
            for (_, i) in st.incoming.iter() {
                if i.origin == origin {
                    found = Some((i.payload.clone(), i.wants_completion));
                }
            }
            let (payload, wants) = found.unwrap_or_default();
            list.push((r, p.initialized_at, payload, wants));
        }
        drop(st);
        let mut blob = Vec::new();
        put_u32(&mut blob, SAVE_MAGIC);
        put_u32(&mut blob, 1);
        blob.extend_from_slice(&guid_bytes(&ty));
        blob.extend_from_slice(&guid_bytes(&inst));
        // CAST: the packet count is bounded by the slab size (2^20).
        put_u32(&mut blob, list.len() as u32);
        for (r, initialized_at, payload, wants) in list {
            let packet = initialized_at.unwrap_or(UserPtr(crate::handle::to_ptr(
                Handle {
                    kind: Kind::Packet,
                    bus: self.id,
                    index: r.index,
                    generation: r.generation,
                }
                .encode(),
            )));
            let mut vsp = Vec::new();
            if save_cb.is_some() {
                let (s, needed) = callbacks::run(Call::SavePacket {
                    f: save_cb,
                    channel: handle,
                    packet,
                    buf: std::ptr::null_mut(),
                    size: 0,
                });
                if !nt_success(s) {
                    if needed == 0 {
                        return Err(s);
                    }
                    if needed > MAX_SAVED_PACKET_STATE {
                        self.record_violation(format!(
                            "EvtVmbChannelSavePacket asked for {needed} bytes of packet state \
                             (the sim allows at most {MAX_SAVED_PACKET_STATE})"
                        ));
                        return Err(STATUS_INSUFFICIENT_RESOURCES);
                    }
                    // CAST: at most 64 MiB (checked above).
                    vsp = vec![0u8; needed as usize];
                    let (s2, _) = callbacks::run(Call::SavePacket {
                        f: save_cb,
                        channel: handle,
                        packet,
                        buf: vsp.as_mut_ptr(),
                        size: needed,
                    });
                    if !nt_success(s2) {
                        return Err(s2);
                    }
                }
            }
            let mut lib = Vec::new();
            put_u32(&mut lib, PACKET_MAGIC);
            put_u32(&mut lib, u32::from(wants));
            // CAST: payloads are bounded by the maximum packet size (at most 16 MiB).
            put_u32(&mut lib, payload.len() as u32);
            lib.extend_from_slice(&payload);
            // CAST: bounded as above.
            put_u32(&mut blob, lib.len() as u32);
            blob.extend_from_slice(&lib);
            // CAST: the driver's size is a u32 to begin with.
            put_u32(&mut blob, vsp.len() as u32);
            blob.extend_from_slice(&vsp);
        }
        Ok(blob)
    }

    /// `VmbChannelSaveContinue`: `(status, bytes filled, bytes required)`.
    ///
    /// Only one call per save runs at a time: a second one made while the first still builds
    /// the blob (from its `EvtVmbChannelSavePacket`, or from another thread) is a violation
    /// answered with `STATUS_INVALID_DEVICE_STATE`, and the first call is not disturbed.
    pub(crate) fn save_continue(&self, c: ObjRef, out: &mut [u8]) -> (NTSTATUS, u32, u32) {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelSaveContinue") else {
            return (STATUS_INVALID_PARAMETER_1, 0, 0);
        };
        let Some(ctx) = &mut ch.save else {
            return (STATUS_INVALID_DEVICE_STATE, 0, 0);
        };
        if ctx.building {
            self.violation(
                &mut st,
                "VmbChannelSaveContinue while another VmbChannelSaveContinue of the same save is \
                 still running (saves of one channel must be serialised)"
                    .into(),
            );
            return (STATUS_INVALID_DEVICE_STATE, 0, 0);
        }
        if ctx.blob.is_none() {
            ctx.building = true;
            let id = ctx.id;
            drop(st);
            let built = self.build_blob(c);
            st = self.lock();
            let ctx = st
                .channels
                .get_mut(c)
                .and_then(|ch| ch.save.as_mut())
                .filter(|ctx| ctx.id == id);
            let Some(ctx) = ctx else {
                // The save was ended (and maybe begun anew) while its blob was built.
                return (STATUS_INVALID_DEVICE_STATE, 0, 0);
            };
            ctx.building = false;
            match built {
                Ok(b) => ctx.blob = Some(b),
                Err(s) => return (s, 0, 0),
            }
        }
        let Some(ctx) = st.channels.get_mut(c).and_then(|ch| ch.save.as_mut()) else {
            return (STATUS_INVALID_DEVICE_STATE, 0, 0);
        };
        let blob = ctx.blob.as_deref().unwrap_or_default();
        let Some(rest) = blob.get(ctx.offset..) else {
            return (STATUS_INVALID_DEVICE_STATE, 0, 0);
        };
        if rest.is_empty() {
            return (STATUS_SUCCESS, 0, 0);
        }
        let min = CHUNK_HEADER + rest.len().min(8);
        let Some(room) = out
            .len()
            .checked_sub(CHUNK_HEADER)
            .filter(|_| out.len() >= min)
        else {
            // CAST: at most 24 bytes.
            return (STATUS_BUFFER_TOO_SMALL, 0, min as u32);
        };
        let n = rest.len().min(room);
        let last = n == rest.len();
        let (hdr, body) = out.split_at_mut(CHUNK_HEADER);
        hdr[..4].copy_from_slice(&CHUNK_MAGIC.to_le_bytes());
        hdr[4..8].copy_from_slice(&ctx.seq.to_le_bytes());
        // CAST: n is bounded by the caller's ULONG buffer size.
        hdr[8..12].copy_from_slice(&(n as u32).to_le_bytes());
        hdr[12..].copy_from_slice(&u32::from(last).to_le_bytes());
        body[..n].copy_from_slice(&rest[..n]);
        ctx.offset += n;
        ctx.seq = ctx.seq.wrapping_add(1);
        // CAST: bounded by the caller's ULONG buffer size.
        let filled = (CHUNK_HEADER + n) as u32;
        (
            if last {
                STATUS_SUCCESS
            } else {
                STATUS_BUFFER_OVERFLOW
            },
            filled,
            0,
        )
    }

    /// `VmbChannelRestoreFromBuffer` with one whole chunk.
    pub(crate) fn restore_chunk(&self, c: ObjRef, chunk: &[u8]) -> NTSTATUS {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelRestoreFromBuffer") else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if !ch.is_server || ch.state != ChannelState::Disabled {
            return STATUS_INVALID_PARAMETER_1;
        }
        let mut r = Reader(chunk);
        let (Some(magic), Some(seq), Some(len), Some(last)) = (r.u32(), r.u32(), r.u32(), r.u32())
        else {
            return STATUS_INVALID_PARAMETER;
        };
        if ch.restore.as_ref().is_some_and(|r| r.in_callback) {
            self.violation(
                &mut st,
                "VmbChannelRestoreFromBuffer while a restore of the same channel is still running \
                 its EvtVmbChannelRestorePacket callbacks"
                    .into(),
            );
            return STATUS_INVALID_DEVICE_STATE;
        }
        let Some(ch) = st.channels.get_mut(c) else {
            return STATUS_INVALID_PARAMETER_1;
        };
        let ctx = ch.restore.get_or_insert_with(RestoreCtx::default);
        if magic != CHUNK_MAGIC || seq != ctx.seq || last > 1 || r.0.len() != len as usize {
            ch.restore = None;
            return STATUS_INVALID_PARAMETER;
        }
        ctx.data.extend_from_slice(r.0);
        ctx.seq = ctx.seq.wrapping_add(1);
        if last == 0 {
            return STATUS_MORE_PROCESSING_REQUIRED;
        }
        let data = std::mem::take(&mut ctx.data);
        let (handle, restore_cb, ty) = (ch.handle, ch.restore_packet, ch.interface_type);
        ctx.in_callback = true;
        drop(st);
        let status = self.apply_blob(c, handle, restore_cb, ty, &data);
        let mut st = self.lock();
        if let Some(ch) = st.channels.get_mut(c) {
            ch.restore = None;
        }
        status
    }

    pub(super) fn apply_blob(
        &self,
        _c: ObjRef,
        handle: usize,
        restore_cb: PFN_VMB_CHANNEL_RESTORE_PACKET,
        ty: GUID,
        data: &[u8],
    ) -> NTSTATUS {
        let mut r = Reader(data);
        if r.u32() != Some(SAVE_MAGIC) || r.u32() != Some(1) {
            return STATUS_INVALID_PARAMETER;
        }
        let (Some(t), Some(_inst), Some(count)) = (r.bytes(16), r.bytes(16), r.u32()) else {
            return STATUS_INVALID_PARAMETER;
        };
        if ty != GUID::default() && t != guid_bytes(&ty) {
            return STATUS_INVALID_PARAMETER;
        }
        let mut entries = Vec::new();
        for _ in 0..count {
            let Some(lib_len) = r.u32() else {
                return STATUS_INVALID_PARAMETER;
            };
            let Some(lib) = r.bytes(lib_len as usize) else {
                return STATUS_INVALID_PARAMETER;
            };
            let Some(vsp_len) = r.u32() else {
                return STATUS_INVALID_PARAMETER;
            };
            let Some(vsp) = r.bytes(vsp_len as usize) else {
                return STATUS_INVALID_PARAMETER;
            };
            entries.push((lib.to_vec(), vsp.to_vec()));
        }
        if !r.0.is_empty() {
            return STATUS_INVALID_PARAMETER;
        }
        if !entries.is_empty() && restore_cb.is_none() {
            return STATUS_INVALID_DEVICE_STATE;
        }
        for (mut lib, mut vsp) in entries {
            let (s, _) = callbacks::run(Call::RestorePacket {
                f: restore_cb,
                channel: handle,
                lib: lib.as_mut_ptr(),
                // CAST: lengths were read as u32.
                lib_len: lib.len() as u32,
                save: if vsp.is_empty() {
                    std::ptr::null_mut()
                } else {
                    vsp.as_mut_ptr()
                },
                // CAST: as above.
                save_len: vsp.len() as u32,
            });
            if !nt_success(s) {
                return s;
            }
        }
        STATUS_SUCCESS
    }

    /// `VmbPacketRestore`: the packet resumes its saved transaction; the data is sent again
    /// once the channel is open.
    pub(crate) fn packet_restore(&self, p: ObjRef, lib: &[u8]) -> NTSTATUS {
        let mut st = self.lock();
        let Some(pk) = self.packet(&mut st, p, "VmbPacketRestore") else {
            return STATUS_INVALID_PARAMETER_1;
        };
        let c = pk.channel;
        if pk.state != PacketState::Idle {
            return STATUS_INVALID_DEVICE_STATE;
        }
        let in_restore = st
            .channels
            .get(c)
            .and_then(|ch| ch.restore.as_ref())
            .is_some_and(|r| r.in_callback);
        if !in_restore {
            self.violation(
                &mut st,
                "VmbPacketRestore outside EvtVmbChannelRestorePacket of the packet's channel"
                    .into(),
            );
            return STATUS_INVALID_DEVICE_STATE;
        }
        let mut r = Reader(lib);
        let (Some(magic), Some(wants), Some(len)) = (r.u32(), r.u32(), r.u32()) else {
            return STATUS_INVALID_PARAMETER_2;
        };
        if magic != PACKET_MAGIC || wants > 1 || r.0.len() != len as usize {
            return STATUS_INVALID_PARAMETER_2;
        }
        let payload_copy = r.0.to_vec();
        let txn = st.alloc_txn();
        let Some(pk) = st.packets.get_mut(p) else {
            return STATUS_INVALID_PARAMETER_1;
        };
        pk.state = PacketState::InFlight;
        pk.txn = txn;
        pk.restored = Some((payload_copy.clone(), wants == 1));
        let payload = st.take_buf(&payload_copy);
        let frame = Frame {
            size: frame_size(payload.len(), None),
            payload,
            body: FrameBody::Data {
                origin: Origin::Packet(p, txn),
                wants_completion: wants == 1,
                external: None,
            },
        };
        st.enqueue(c, frame);
        STATUS_SUCCESS
    }
}

pub(super) fn put_u32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

pub(super) fn guid_bytes(g: &GUID) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&g.Data1.to_le_bytes());
    b[4..6].copy_from_slice(&g.Data2.to_le_bytes());
    b[6..8].copy_from_slice(&g.Data3.to_le_bytes());
    b[8..].copy_from_slice(&g.Data4);
    b
}

/// Checked little-endian reads from untrusted bytes.
pub(super) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        let b = self.bytes(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}
