//! The first thing to run: the echo VSP and VSC on the simulator.
//!
//! `cargo run --release -p echo-demo [-- --packets N]`
//!
//! A simulated VM worker process sends the VSP the IOCTL that carries its VMBus handle; the
//! VSP converts it through the request context and offers the echo channel bound to that VM;
//! the VSC opens it through the client interface table, negotiates the version in
//! post-started, and sends N requests, inline and through a shared GPADL, checking every
//! reply; the VSP's channel is saved and restored into a fresh channel and traffic resumes;
//! everything closes and the simulator's accounting shows what leaked.

use std::io::Write;
use std::ops::ControlFlow;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::time::Instant;

use echo_protocol::SetVm;
use echo_vsc::{EchoVsc, Negotiation, Path, SharedPage};
use echo_vsp::{EchoVsp, SavedState};
use vmbus_kmcl::channel::{Channel, ChannelSlot, Client};
use vmbus_kmcl::dispatch::{ChannelBackend, Linked};
use vmbus_kmcl::KernelHandle;
use vmbus_kmcl_sim::nt::Process;
use vmbus_kmcl_sim::Bus;
use zerocopy::IntoBytes;

mod sim;
use echo_vsp::sim::SimMapper;

/// The demo's options.
struct Options {
    packets: u32,
    trace: u32,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        packets: 5000,
        trace: 4,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<u32, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--packets" | "-n" => options.packets = value("--packets")?,
            "--trace" => options.trace = value("--trace")?,
            "--help" | "-h" => {
                return Err("usage: echo-demo [--packets N] [--trace N]".to_owned());
            }
            other => return Err(format!("unknown argument {other} (try --help)")),
        }
    }
    Ok(options)
}

/// The IOCTL of a VM worker process: the worker opens its VMBus handle and sends it; the
/// VSP's dispatch routine runs in the worker's thread and converts it.
fn worker_ioctl(bus: &Bus, worker: &Process, trace: bool) -> Result<KernelHandle, String> {
    let raw = bus.open_vmbus_handle_in(worker);
    let input = SetVm {
        vmbus_handle: zerocopy::little_endian::U64::new(raw.addr() as u64),
    };
    let entered = worker.enter();
    let irp = entered.issue_irp();
    let vm = echo_vsp::vm_from_ioctl(&Linked, &sim::request(&irp), input.as_bytes())
        .map_err(|e| format!("IOCTL_ECHO_SET_VM failed: {e}"))?;
    drop(entered);
    // The worker's own handle stays the worker's; the kernel handle is the driver's.
    worker.close_handle(raw);
    if trace {
        println!(
            "  worker {:?} (pid {}) sent IOCTL {:#x} with its VMBus handle {:#x}",
            "vmwp.exe",
            worker.id(),
            echo_protocol::IOCTL_ECHO_SET_VM,
            raw.addr()
        );
        println!(
            "  seed conversion in the worker's thread: user handle {:#x} -> kernel handle {:#x}",
            raw.addr(),
            vm.as_raw().addr()
        );
    }
    Ok(vm)
}

/// Sends requests `range` (odd: through the GPADL, even: inline), printing the first
/// `trace` and a progress line for long runs.
fn traffic<K: ChannelBackend>(
    vsc: &Channel<'_, Client, EchoVsc<'_>, K>,
    range: std::ops::Range<u32>,
    trace: u32,
    progress: bool,
) -> Result<u64, String> {
    let total = range.end - range.start;
    let step = (total / 20).max(1);
    let first = range.start;
    let summary = echo_vsc::run(vsc, range, |exchange| {
        let data = exchange.payload;
        let done = exchange.sequence - first + 1;
        if done <= trace {
            println!(
                "  #{:<4} VSC -> VSP  {:<6} {:>3} bytes  {:02x?}..  echoed, checked",
                exchange.sequence,
                match exchange.path {
                    Path::Gpadl => "GPADL",
                    Path::Inline => "inline",
                },
                data.len(),
                &data[..data.len().min(4)]
            );
        }
        if progress && (done % step == 0 || done == total) {
            print!(
                "\r  progress: {done}/{total} requests ({}%)",
                done * 100 / total
            );
            let _ = std::io::stdout().flush();
        }
        ControlFlow::Continue(())
    })
    .map_err(|e| format!("request {}: {}", e.sequence, e.error))?;
    if progress {
        println!();
    }
    Ok(summary.bytes)
}

fn row(name: &str, value: impl std::fmt::Display) {
    println!("  | {name:<28} | {value:>16} |");
}

fn run(options: &Options) -> Result<(), String> {
    let bus = Bus::new();
    let (root, guest) = sim::devices(&bus);
    // The VSC reaches KMCL only through the queried table, as in its kernel image.
    let table = sim::client_table(&bus).map_err(|e| format!("client interface: {e}"))?;
    let worker = Process::with_windows_handle_numbering("vmwp.exe");
    let err = |what: &'static str| move |e: vmbus_kmcl::Error| format!("{what}: {e}");

    println!("echo VSP (root, linked KMCL exports) and echo VSC (guest, interface table) on the vmbus-kmcl simulator");
    println!();
    println!("1. seed flow: the VM worker process hands its VMBus handle to the VSP");
    let vm = worker_ioctl(&bus, &worker, true)?;

    let page = SharedPage::new();
    let (sent, gpadl_bytes, save_time, chunks, saved_len, summary);
    let started = Instant::now();
    let first_bytes;
    let more = options.packets.min(100);
    {
        let mut vsp_slot = pin!(ChannelSlot::new(root, Linked, EchoVsp::new(SimMapper)));
        let mut vsp = echo_vsp::offer(vsp_slot.as_mut(), Some(vm)).map_err(err("offer"))?;
        println!(
            "2. the VSP offers the echo channel bound to that VM: {}",
            echo_vsp::INTERFACE_TYPE
        );

        // The VSC's table and page are borrowed: its slot lives in a scope.
        let mut storage = vec![0u8; 64 * 1024];
        let (bytes, saved, save_started) = ChannelSlot::scope(
            guest,
            &table,
            EchoVsc::new(&page),
            |vsc_slot| {
                let vsc = echo_vsc::open(vsc_slot).map_err(err("open"))?;
                bus.run_until_idle();
                let version = match vsc.handler().negotiation() {
                    Negotiation::Agreed(version) => version,
                    other => return Err(format!("version negotiation: {other:?}")),
                };
                println!(
            "3. channel open; the VSC shared a page (GPADL {:#x}) and negotiated version {version} in post-started (VSP agreed {})",
            vsc.handler().gpadl().map_or(0, |g| g.to_raw()),
            vsp.handler().version().map_or("none".to_owned(), |v| v.to_string()),
        );
                println!(
                    "4. {} echo requests, each reply checked byte for byte; the first {}:",
                    options.packets,
                    options.trace.min(options.packets)
                );
                let first_bytes = traffic(
                    &vsc,
                    1..options.packets + 1,
                    options.trace,
                    options.packets >= 10_000,
                )?;

                // Save the VSP's channel, close both sides, restore into a fresh channel.
                let save_started = Instant::now();
                let saved: SavedState =
                    echo_vsp::save(&mut vsp, &mut storage).map_err(|e| format!("save: {e:?}"))?;
                drop(vsc);
                Ok::<_, String>((first_bytes, saved, save_started))
            },
        )?;
        first_bytes = bytes;
        chunks = saved.chunks;
        saved_len = saved.len;
        let counters = vsp.handler().counters();
        gpadl_bytes = counters.gpadl_bytes.load(Ordering::Relaxed);
        sent = counters.echoes.load(Ordering::Relaxed);
        let failed_before = counters.failed.load(Ordering::Relaxed);
        drop(vsp);

        let vm = worker_ioctl(&bus, &worker, false)?;
        let mut vsp_slot = pin!(ChannelSlot::new(
            root,
            Linked,
            EchoVsp::restored(SimMapper, &saved)
        ));
        let vsp = echo_vsp::offer_restored(vsp_slot.as_mut(), Some(vm), &saved, &storage)
            .map_err(|e| format!("restore: {e:?}"))?;
        save_time = save_started.elapsed();
        println!(
            "5. VSP saved (chunks: {}, {} bytes, version {}) and restored into a fresh channel in {:.1?}",
            chunks,
            saved_len,
            saved.version.map_or("none".to_owned(), |v| v.to_string()),
            save_time
        );
        let (resumed, resent, more_gpadl) =
            ChannelSlot::scope(guest, &table, EchoVsc::new(&page), |vsc_slot| {
                let vsc = echo_vsc::open(vsc_slot).map_err(err("reopen"))?;
                bus.run_until_idle();
                let resumed = traffic(
                    &vsc,
                    options.packets + 1..options.packets + 1 + more,
                    0,
                    false,
                )?;
                println!(
            "   traffic resumed on the restored channel: {more} more requests echoed and checked"
        );
                let after = vsp.handler().counters();
                let (resent, more_gpadl, failed) = (
                    after.echoes.load(Ordering::Relaxed),
                    after.gpadl_bytes.load(Ordering::Relaxed),
                    after.failed.load(Ordering::Relaxed) + failed_before,
                );
                if failed != 0 {
                    return Err(format!("{failed} packets failed"));
                }
                drop(vsc);
                Ok::<_, String>((resumed, resent, more_gpadl))
            })?;
        drop(vsp);
        summary = (
            sent + resent,
            first_bytes + resumed,
            gpadl_bytes + more_gpadl,
            started.elapsed(),
        );
    }
    // The VSC's interface reference goes back last, as a driver's does at remove.
    drop(table);
    let (echoed, total_bytes, gpadl_total, wall) = summary;
    let report = bus.leak_report();
    {
        println!("6. both channels closed, the interface table released");
        println!();
        println!("  +------------------------------+------------------+");
        row("echo requests (checked)", echoed);
        row("packets delivered (sim)", bus.packets_delivered());
        row("payload bytes, both ways", 2 * total_bytes);
        row("  of which read via GPADL", gpadl_total);
        row("wall time", format!("{:.1?}", wall));
        row(
            "requests/s",
            format!(
                "{:.0}",
                echoed as f64 / wall.as_secs_f64().max(f64::EPSILON)
            ),
        );
        row("save/restore round trip", format!("{save_time:.1?}"));
        row("leaked kernel handles", report.kernel_handles);
        row(
            "leaked packets",
            report.packets + report.initialized_packets_in_flight + report.incoming_packets,
        );
        row(
            "leaked GPADLs (+ mappings)",
            report.gpadls + report.gpadl_mappings,
        );
        row("leaked channels", report.channels);
        row("KMCL/NT rule violations", report.violations.len());
        println!("  +------------------------------+------------------+");
        if !report.is_clean() {
            return Err(format!("the simulator is not clean: {report:#?}"));
        }
    }
    Ok(())
}

fn main() {
    let outcome = options().and_then(|options| run(&options));
    if let Err(message) = outcome {
        eprintln!("echo-demo: {message}");
        std::process::exit(1);
    }
}
