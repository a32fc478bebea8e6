//! The seed runner: `cargo run -p presence-sim --release -- --seeds N [--from S] [--trace]
//! [--plant unconditional-delete|plain-overwrite] [--check-determinism]`.
//!
//! Prints one line per seed (seed, trace hash, verdict), a replay line and a trace file for every
//! failing seed, and a summary; the output is the same for the same seeds apart from the timing
//! line. Exits 1 if any seed violated an invariant.

use std::process::ExitCode;
use std::time::Instant;

use presence_sim::{replay_line, run_seed, write_trace, Params, Plant};

fn main() -> ExitCode {
    let mut seeds: u64 = 10;
    let mut from: u64 = 1;
    let mut keep_trace = false;
    let mut twice = false;
    let mut params = Params::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match a.as_str() {
            "--seeds" => seeds = val("--seeds").parse().expect("--seeds N"),
            "--from" => from = val("--from").parse().expect("--from S"),
            "--trace" => keep_trace = true,
            "--check-determinism" => twice = true,
            "--plant" => {
                let p = val("--plant");
                params.plant = Some(Plant::parse(&p).unwrap_or_else(|| panic!("unknown plant {p}")));
            }
            "-h" | "--help" => {
                println!("usage: presence-sim [--seeds N] [--from S] [--trace] [--check-determinism] [--plant unconditional-delete|plain-overwrite]");
                return ExitCode::SUCCESS;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let started = Instant::now();
    let mut failed = Vec::new();
    for seed in from..from.saturating_add(seeds) {
        let o = run_seed(seed, &params, keep_trace || twice);
        let mut status =
            if o.violations.is_empty() { "ok".to_owned() } else { format!("FAIL ({})", o.violations.len()) };
        if twice {
            let again = run_seed(seed, &params, true);
            if again.hash != o.hash {
                status.push_str(&format!(" NONDETERMINISTIC ({:016x} vs {:016x})", o.hash, again.hash));
                failed.push(seed);
                let dir = presence_sim::run::trace_dir();
                let _ = std::fs::create_dir_all(&dir);
                let _ = std::fs::write(
                    dir.join(format!("seed-{seed}.first.txt")),
                    o.trace.as_deref().unwrap_or(""),
                );
                let _ = std::fs::write(
                    dir.join(format!("seed-{seed}.rerun.txt")),
                    again.trace.as_deref().unwrap_or(""),
                );
            }
        }
        let count = |k: &str| o.verdict.counts.get(k).copied().unwrap_or(0);
        let (reaped, watched) = (count("I2 checks (reaped session)"), count("W1 checks"));
        println!(
            "seed {seed} hash {:016x} lines {} conns {} answers {} reaped {reaped} watched {watched} {status}",
            o.hash, o.trace_lines, o.conns, o.answers
        );
        if !o.violations.is_empty() || keep_trace {
            for v in &o.violations {
                println!("  {v}");
            }
            if let Some(path) = write_trace(&o) {
                println!("  trace: {}", path.display());
            }
        }
        if !o.violations.is_empty() {
            println!("  replay: {}", replay_line(seed));
            failed.push(seed);
        }
    }
    failed.dedup();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} seeds, {} failed{}",
        seeds,
        failed.len(),
        if failed.is_empty() { String::new() } else { format!(": {failed:?}") }
    );
    eprintln!("timing: {secs:.1}s, {:.2} seeds/s", seeds as f64 / secs.max(1e-9));
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
