//! Save and restore of a server channel on the sim: a save through a tiny buffer that needs
//! many continues, the per-packet callbacks of the handler, a restore into a fresh channel,
//! and traffic resuming there (the restored packets reach the new client, requests work).
//! Both backends.

use std::sync::Mutex;

use vmbus_kmcl::channel::save_restore::{
    InFlightPacket, PacketId, PacketToRestore, Restored, SaveChunk, SaveRestoreHandler,
};
use vmbus_kmcl::channel::ServerBuilder;
use vmbus_kmcl::channel::{ChannelSlot, Client, ClientBuilder, Handler, OpenView, Server};
use vmbus_kmcl::dispatch::{ChannelBackend, KmclServer};
use vmbus_kmcl::packet::IncomingPacket;
use vmbus_kmcl::{guid, Error, Guid, NtStatus, Result};
use vmbus_kmcl_sim::Bus;

#[macro_use]
mod common;
use common::with_slots;

const TYPE: Guid = guid!("7b2c3d4e-5f60-4b7c-8d9e-0f1a2b3c4d5e");
const INSTANCE: Guid = guid!("7b2c3d4e-5f60-4b7c-8d9e-000000000001");

/// A VSP that saves a tag per in-flight packet and restores every saved packet.
#[derive(Default)]
struct Vsp {
    sizes_asked: Mutex<Vec<PacketId>>,
    saved: Mutex<Vec<PacketId>>,
    restored: Mutex<Vec<(PacketId, Vec<u8>)>>,
}

impl<K: ChannelBackend> Handler<Server, K> for Vsp {
    fn process_packet(&self, _: &OpenView<'_, Server, K>, packet: IncomingPacket<'_, K>) {
        let mut reply = [0u8; 8];
        let n = packet.data().len().min(8);
        reply[..n].copy_from_slice(&packet.data()[..n]);
        reply[..n].reverse();
        let _ = packet.complete(&reply[..n]);
    }
}

impl<K: ChannelBackend + KmclServer> SaveRestoreHandler<K> for Vsp {
    fn saved_size(&self, packet: &InFlightPacket<'_>) -> u32 {
        self.sizes_asked.lock().unwrap().push(packet.id());
        6
    }

    fn save_packet(&self, packet: &InFlightPacket<'_>, state: &mut [u8]) -> Result<()> {
        let mut saved = self.saved.lock().unwrap();
        assert!(state.len() >= 6, "at least the size asked for");
        assert!(state.iter().all(|&b| b == 0), "zeroed before the call");
        // CAST: a handful of packets.
        state[..6].copy_from_slice(&[b't', b'a', b'g', b'-', b'0' + saved.len() as u8, 0]);
        saved.push(packet.id());
        Ok(())
    }

    fn restore_packet(&self, packet: PacketToRestore<'_, K>, state: &[u8]) -> Result<()> {
        let id = packet.restore()?;
        self.restored.lock().unwrap().push((id, state.to_vec()));
        Ok(())
    }
}

/// A client that records what it receives and completes it.
#[derive(Default)]
struct Vsc {
    received: Mutex<Vec<Vec<u8>>>,
}

impl<K: ChannelBackend> Handler<Client, K> for Vsc {
    fn process_packet(&self, _: &OpenView<'_, Client, K>, packet: IncomingPacket<'_, K>) {
        self.received.lock().unwrap().push(packet.data().to_vec());
        packet.complete_empty();
    }
}

/// Sends `message` on the server channel as a raw packet waiting for its completion; the
/// default completion routine frees it.
fn send_waiting<S: KmclServer>(server: S, channel: vmbus_kmcl_sys::VMBCHANNEL, message: &[u8]) {
    // SAFETY: a live, open server channel of this backend.
    let packet = unsafe { server.packet_allocate(channel) };
    assert!(!packet.is_null());
    // SAFETY: a fresh packet, freed by the default completion routine; KMCL copies the
    // message before the call returns.
    let status = unsafe {
        server.packet_send(
            packet,
            message.as_ptr().cast_mut().cast(),
            u32::try_from(message.len()).unwrap(),
            core::ptr::null_mut(),
            vmbus_kmcl_sys::VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
        )
    };
    assert_eq!(status, 0);
}

/// A client channel opening the offer of [`TYPE`], open once the bus ran.
fn open_client<'s, C: ChannelBackend>(
    bus: &Bus,
    slot: std::pin::Pin<&'s mut ChannelSlot<'_, Vsc, C>>,
) -> vmbus_kmcl::channel::Channel<'s, Client, Vsc, C> {
    let mut vsc = ClientBuilder::allocate(slot).unwrap();
    vsc.set_target(TYPE, None).unwrap();
    let vsc = vsc.enable().unwrap();
    bus.run_until_idle();
    vsc
}

/// A server builder with the interface id and the save/restore callbacks set.
fn server_builder<'s, H: SaveRestoreHandler<S>, S: ChannelBackend + KmclServer>(
    slot: std::pin::Pin<&'s mut ChannelSlot<'_, H, S>>,
) -> ServerBuilder<'s, H, S> {
    let mut builder = ServerBuilder::allocate(slot).unwrap();
    builder
        .set_interface_id(TYPE, INSTANCE)
        .unwrap()
        .set_save_restore_callbacks()
        .unwrap();
    builder
}

fn save_in_tiny_chunks_restore_and_resume<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    let bus = Bus::new();
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let (vsp, vsc) = (Vsp::default(), Vsc::default());
    with_slots(&bus, server, vsp, client, vsc, |vsp_slot, vsc_slot| {
        let mut vsp = server_builder(vsp_slot).enable().unwrap();
        vsp.start();
        let vsc = open_client(&bus, vsc_slot);

        // Three packets in flight: the ring is full, so they wait on the channel's queue.
        assert!(bus.set_ring_full(vsp.as_raw(), true));
        for message in [&b"p0"[..], b"p1", b"p2"] {
            send_waiting(server, vsp.as_raw(), message);
        }
        bus.run_until_idle();
        assert!(vsc.handler().received.lock().unwrap().is_empty());

        let mut save = vsp.save().unwrap();
        // A buffer of nothing: the size of the next chunk comes back as a value.
        let required = match save.next_chunk(&mut []).unwrap() {
            SaveChunk::BufferTooSmall { required } => required,
            other => panic!("{other:?}"),
        };
        assert!(required > 0);
        let mut buffer = vec![0u8; 32];
        assert!(buffer.len() >= required as usize);
        loop {
            match save.next_chunk(&mut buffer).unwrap() {
                SaveChunk::More(chunk) => chunks.push(chunk.to_vec()),
                SaveChunk::Last(chunk) => {
                    chunks.push(chunk.to_vec());
                    break;
                }
                SaveChunk::BufferTooSmall { required } => panic!("{required} bytes needed"),
            }
        }
        drop(save); // VmbChannelSaveEnd
        assert!(
            chunks.len() >= 5,
            "a tiny buffer forces many continues: {}",
            chunks.len()
        );
        assert!(chunks.iter().all(|chunk| chunk.len() <= 32));
        let handler = vsp.handler();
        assert_eq!(handler.sizes_asked.lock().unwrap().len(), 3);
        assert_eq!(
            *handler.saved.lock().unwrap(),
            *handler.sizes_asked.lock().unwrap()
        );

        // A second save of the same channel starts afresh.
        let mut again = vsp.save().unwrap();
        assert!(matches!(
            again.next_chunk(&mut buffer),
            Ok(SaveChunk::More(_))
        ));
        drop(again);

        drop(vsc);
        drop(vsp); // the queued packets are cancelled and freed
    });
    assert_eq!(bus.take_violations(), Vec::<String>::new());

    let (vsp, vsc) = (Vsp::default(), Vsc::default());
    with_slots(&bus, server, vsp, client, vsc, |mut vsp_slot, vsc_slot| {
        let mut builder = server_builder(vsp_slot.as_mut());
        // Chunks out of order are refused.
        assert!(matches!(builder.restore(&chunks[1]), Err(Error::Status(_))));
        drop(builder);
        let mut builder = server_builder(vsp_slot.as_mut());
        for (index, chunk) in chunks.iter().enumerate() {
            let expected = if index + 1 == chunks.len() {
                Restored::Done
            } else {
                Restored::NeedMore
            };
            assert_eq!(builder.restore(chunk), Ok(expected));
        }
        let vsp = builder.enable().unwrap();
        vsp.start();
        let vsc = open_client(&bus, vsc_slot);
        // The restored transactions resume on the new channel, in order.
        assert_eq!(
            *vsc.handler().received.lock().unwrap(),
            [b"p0".to_vec(), b"p1".to_vec(), b"p2".to_vec()]
        );
        // And new traffic flows.
        let mut response = [0u8; 8];
        assert_eq!(vsc.request(b"abc", &mut response, None).unwrap(), b"cba");
        drop(vsc);
        drop(vsp);
        let states: Vec<Vec<u8>> = vsp_slot
            .handler()
            .restored
            .lock()
            .unwrap()
            .iter()
            .map(|(_, state)| state.clone())
            .collect();
        assert_eq!(
            states,
            [
                b"tag-0\0".to_vec(),
                b"tag-1\0".to_vec(),
                b"tag-2\0".to_vec()
            ]
        );
    });
    assert_eq!(bus.take_violations(), Vec::<String>::new());
    bus.assert_no_leaks();
}

/// A handler whose per-packet callbacks fail: the failure reaches the save and the restore.
#[derive(Default)]
struct Refuser;

impl<K: ChannelBackend> Handler<Server, K> for Refuser {
    fn process_packet(&self, _: &OpenView<'_, Server, K>, packet: IncomingPacket<'_, K>) {
        packet.complete_empty();
    }
}

impl<K: ChannelBackend + KmclServer> SaveRestoreHandler<K> for Refuser {
    fn saved_size(&self, _: &InFlightPacket<'_>) -> u32 {
        4
    }

    fn save_packet(&self, _: &InFlightPacket<'_>, _: &mut [u8]) -> Result<()> {
        Err(Error::Status(NtStatus::ACCESS_DENIED))
    }

    fn restore_packet(&self, _: PacketToRestore<'_, K>, _: &[u8]) -> Result<()> {
        Err(Error::Status(NtStatus::ACCESS_DENIED))
    }
}

fn failing_save_packet_fails_the_save<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    let bus = Bus::new();
    let vsc = Vsc::default();
    with_slots(&bus, server, Refuser, client, vsc, |vsp_slot, vsc_slot| {
        let mut vsp = server_builder(vsp_slot).enable().unwrap();
        vsp.start();
        let vsc = open_client(&bus, vsc_slot);
        assert!(bus.set_ring_full(vsp.as_raw(), true));
        send_waiting(server, vsp.as_raw(), b"x");
        let mut save = vsp.save().unwrap();
        let mut buffer = [0u8; 256];
        assert_eq!(
            save.next_chunk(&mut buffer),
            Err(Error::Status(NtStatus::ACCESS_DENIED))
        );
        drop(save);
        drop(vsc);
        drop(vsp);
    });
    assert_eq!(bus.take_violations(), Vec::<String>::new());
    bus.assert_no_leaks();
}

both_backends!(
    save_restore_resume_linked,
    save_restore_resume_tables,
    save_in_tiny_chunks_restore_and_resume
);
both_backends!(
    failing_save_linked,
    failing_save_tables,
    failing_save_packet_fails_the_save
);
