//! Cost of one full cycle on the sim: create a bus, open a server/client channel pair, send one
//! packet that the server completes inline, tear both channels down, check the bus for leaks
//! and drop it. Prints microseconds per cycle, the median of several timed batches. Run with
//! `cargo bench -p vmbus-kmcl-sim --bench cycle` (optional arguments: cycles per batch, batches).

mod common;

use std::hint::black_box;
use std::time::Instant;

use vmbus_kmcl_sim::Bus;

fn cycle(payload: &[u8]) {
    let bus = Bus::new();
    let pair = common::open_pair(&bus);
    assert_eq!(common::send_one(pair.1, payload), 0);
    bus.run_until_idle();
    assert_eq!(bus.packets_delivered(), 1);
    common::close_pair(pair);
    bus.assert_no_leaks();
    black_box(&bus);
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let per_batch: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let batches: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(7);
    assert!(
        per_batch > 0 && batches > 0,
        "cycles per batch and batches must be positive"
    );
    let payload = [0x5Au8; 32];
    // Warm up the allocator and the sim's process-wide tables, then time the batches.
    for _ in 0..per_batch / 10 + 1 {
        cycle(&payload);
    }
    let mut micros: Vec<f64> = (0..batches)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_batch {
                cycle(&payload);
            }
            t.elapsed().as_secs_f64() * 1e6 / f64::from(per_batch)
        })
        .collect();
    micros.sort_by(f64::total_cmp);
    println!(
        "vmbus-kmcl-sim full cycle (bus, channel pair, one packet, teardown): median {:.2} us per cycle \
         over {batches} batches of {per_batch} (min {:.2}, max {:.2})",
        micros[batches / 2],
        micros[0],
        micros[batches - 1]
    );
}
