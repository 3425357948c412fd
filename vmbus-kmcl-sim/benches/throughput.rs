//! Throughput of the sim's send/complete loop, single-threaded: a client sends small packets
//! that wait for a completion, the server completes each inline, the default completion
//! routine frees it. Run with `cargo bench -p vmbus-kmcl-sim --bench throughput`.

mod common;

use std::hint::black_box;
use std::time::Instant;

use vmbus_kmcl_sim::Bus;

fn main() {
    let bus = Bus::new();
    let pair = common::open_pair(&bus);
    let client = pair.1;

    let payload = [0x5Au8; 32];
    let batch = 256;
    let run = |packets: u64| {
        let t = Instant::now();
        let mut sent = 0;
        while sent < packets {
            for _ in 0..batch {
                black_box(common::send_one(client, &payload));
            }
            sent += batch;
            bus.run_until_idle();
        }
        (sent, t.elapsed())
    };
    // Warm up the pools, then measure.
    let (warm, _) = run(100_000);
    let (packets, elapsed) = run(2_000_000);
    let rate = packets as f64 / elapsed.as_secs_f64();
    println!(
        "vmbus-kmcl-sim send/complete loop: {packets} packets of {} bytes in {:.3} s = {:.0} packets/s",
        payload.len(),
        elapsed.as_secs_f64(),
        rate
    );
    assert_eq!(bus.packets_delivered(), warm + packets);
    common::close_pair(pair);
    bus.assert_no_leaks();
}
