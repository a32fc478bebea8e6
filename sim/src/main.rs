//! The seed runner: `cargo run -p presence-sim --release -- --seeds N [--from S] [--jobs J]
//! [--tick-ms T] [--trace] [--plant NAME] [--check-determinism]`.
//!
//! Prints one line per seed (seed, trace hash, verdict), a replay line and a trace file for every
//! failing seed, and a summary; the output is the same for the same seeds, whatever `--jobs`, apart
//! from the timing line on stderr. Exits 1 if any seed violated an invariant.
//!
//! `--jobs J` (default: the machine's cores) runs the seeds in J worker processes (this binary
//! with `--worker`), each one seed at a time, and prints their reports in seed order. Processes,
//! not threads: tokio numbers tasks from one process-wide counter, and the order a crashed host's
//! tasks are dropped in depends on it (`run::align_task_ids`), so two seeds running at once in one
//! process would perturb each other's traces.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use presence_sim::run::replay_line_for;
use presence_sim::{run_seed, write_trace, Params, Plant};

/// Ends a worker's report of one seed (never the start of a report line).
const END: &str = "@@end";

/// What each seed is run with.
#[derive(Clone)]
struct Opts {
    keep_trace: bool,
    twice: bool,
    params: Params,
}

fn usage() -> String {
    let plants: Vec<&str> = Plant::ALL.iter().map(|p| p.name()).collect();
    format!(
        "usage: presence-sim [--seeds N] [--from S] [--jobs J] [--tick-ms T] [--trace] [--check-determinism] [--plant {}]",
        plants.join("|")
    )
}

fn main() -> ExitCode {
    let mut seeds: u64 = 10;
    let mut from: u64 = 1;
    let mut jobs: usize = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut worker = false;
    let mut opts = Opts { keep_trace: false, twice: false, params: Params::default() };
    // What the workers are started with: the options that change how a seed runs.
    let mut pass_on: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().unwrap_or_else(|| panic!("{name} needs a value\n{}", usage()));
        match a.as_str() {
            "--seeds" => seeds = val("--seeds").parse().expect("--seeds N"),
            "--from" => from = val("--from").parse().expect("--from S"),
            "--jobs" => jobs = val("--jobs").parse::<usize>().expect("--jobs J").max(1),
            "--worker" => worker = true,
            "--trace" => {
                opts.keep_trace = true;
                pass_on.push(a);
            }
            "--check-determinism" => {
                opts.twice = true;
                pass_on.push(a);
            }
            "--tick-ms" => {
                let t = val("--tick-ms");
                let ms: u64 = t.parse().expect("--tick-ms T");
                assert!(ms >= 1, "--tick-ms must be at least 1");
                opts.params.tick = Duration::from_millis(ms);
                pass_on.extend([a, t]);
            }
            "--plant" => {
                let p = val("--plant");
                let plant = Plant::parse(&p).unwrap_or_else(|| panic!("unknown plant {p}\n{}", usage()));
                opts.params.plant = Some(plant);
                pass_on.extend([a, p]);
            }
            "-h" | "--help" => {
                println!("{}", usage());
                return ExitCode::SUCCESS;
            }
            other => panic!("unknown argument {other}\n{}", usage()),
        }
    }
    if worker {
        return worker_main(&opts);
    }
    let started = Instant::now();
    let end = from.saturating_add(seeds);
    let jobs = jobs.min(seeds.max(1) as usize);
    let mut failed = Vec::new();
    let mut out = std::io::stdout().lock();
    let mut print = |seed: u64, block: &str, fail: bool| {
        let _ = out.write_all(block.as_bytes());
        let _ = out.flush();
        if fail {
            failed.push(seed);
        }
    };
    if jobs <= 1 {
        for seed in from..end {
            let (block, fail) = report(seed, &opts);
            print(seed, &block, fail);
        }
    } else {
        run_workers(from, end, jobs, &opts, &pass_on, &mut print);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} seeds, {} failed{}",
        seeds,
        failed.len(),
        if failed.is_empty() { String::new() } else { format!(": {failed:?}") }
    );
    eprintln!(
        "timing: {secs:.1}s, {:.2} seeds/s ({jobs} job{}, tick {} ms)",
        seeds as f64 / secs.max(1e-9),
        if jobs == 1 { "" } else { "s" },
        opts.params.tick.as_millis()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs `seed` and renders its report: the seed line, and for a failing seed (or with `--trace`)
/// its violations, trace file and replay line. Also whether it failed.
fn report(seed: u64, opts: &Opts) -> (String, bool) {
    let mut text = String::new();
    let mut failed = false;
    let o = run_seed(seed, &opts.params, opts.keep_trace || opts.twice);
    let mut status =
        if o.violations.is_empty() { "ok".to_owned() } else { format!("FAIL ({})", o.violations.len()) };
    if opts.twice {
        let again = run_seed(seed, &opts.params, true);
        if again.hash != o.hash {
            let _ = write!(status, " NONDETERMINISTIC ({:016x} vs {:016x})", o.hash, again.hash);
            failed = true;
            let dir = presence_sim::run::trace_dir();
            let _ = std::fs::create_dir_all(&dir);
            let _ =
                std::fs::write(dir.join(format!("seed-{seed}.first.txt")), o.trace.as_deref().unwrap_or(""));
            let _ = std::fs::write(
                dir.join(format!("seed-{seed}.rerun.txt")),
                again.trace.as_deref().unwrap_or(""),
            );
        }
    }
    let count = |k: &str| o.verdict.counts.get(k).copied().unwrap_or(0);
    let (reaped, watched) = (count("I2 checks (reaped session)"), count("W1 checks"));
    let _ = writeln!(
        text,
        "seed {seed} hash {:016x} lines {} conns {} answers {} reaped {reaped} watched {watched} {status}",
        o.hash, o.trace_lines, o.conns, o.answers
    );
    if !o.violations.is_empty() || opts.keep_trace {
        for v in &o.violations {
            let _ = writeln!(text, "  {v}");
        }
        if let Some(path) = write_trace(&o) {
            let _ = writeln!(text, "  trace: {}", path.display());
        }
    }
    if !o.violations.is_empty() {
        let _ = writeln!(text, "  replay: {}", replay_line_for(seed, &opts.params));
        failed = true;
    }
    (text, failed)
}

/// `--worker`: reads seeds from stdin, one a line; answers each with its report and an end line.
fn worker_main(opts: &Opts) -> ExitCode {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let Ok(seed) = line.trim().parse::<u64>() else { continue };
        let (block, failed) = report(seed, opts);
        let ok = out.write_all(block.as_bytes()).is_ok()
            && writeln!(out, "{END} {seed} {}", u8::from(failed)).is_ok()
            && out.flush().is_ok();
        if !ok {
            break;
        }
    }
    ExitCode::SUCCESS
}

/// A worker process.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    fn spawn(pass_on: &[String]) -> std::io::Result<Worker> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("--worker")
            .args(pass_on)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().ok_or_else(|| std::io::Error::other("no stdin"))?;
        let stdout = BufReader::new(child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?);
        Ok(Worker { child, stdin, stdout })
    }

    /// Runs one seed: its report and whether it failed, or `None` if the worker died.
    fn run(&mut self, seed: u64) -> Option<(String, bool)> {
        writeln!(self.stdin, "{seed}").ok()?;
        self.stdin.flush().ok()?;
        let mut block = String::new();
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if let Some(rest) = line.strip_prefix(END) {
                let failed = rest.trim().rsplit(' ').next() == Some("1");
                return Some((block, failed));
            }
            block.push_str(&line);
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs seeds `from..end` on `jobs` worker processes, calling `print` in seed order.
fn run_workers(
    from: u64,
    end: u64,
    jobs: usize,
    opts: &Opts,
    pass_on: &[String],
    print: &mut impl FnMut(u64, &str, bool),
) {
    let next = Arc::new(Mutex::new(from));
    let (tx, rx) = mpsc::channel::<(u64, String, bool)>();
    let mut threads = Vec::new();
    for _ in 0..jobs {
        let (next, tx, pass_on) = (next.clone(), tx.clone(), pass_on.to_vec());
        let replay_params = opts.params.clone();
        threads.push(std::thread::spawn(move || {
            let mut worker: Option<Worker> = None;
            loop {
                let seed = {
                    let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                    if *n >= end {
                        return;
                    }
                    *n += 1;
                    *n - 1
                };
                let result = match worker.as_mut() {
                    Some(w) => w.run(seed),
                    None => match Worker::spawn(&pass_on) {
                        Ok(w) => worker.insert(w).run(seed),
                        Err(e) => Some((format!("seed {seed} could not start a worker: {e}\n"), true)),
                    },
                };
                let (block, failed) = result.unwrap_or_else(|| {
                    // The worker process died (an abort, a stack overflow): report the seed, and
                    // start a fresh worker for the next one.
                    worker = None;
                    (
                        format!(
                            "seed {seed} FAIL (the worker process died)\n  replay: {}\n",
                            replay_line_for(seed, &replay_params)
                        ),
                        true,
                    )
                });
                if tx.send((seed, block, failed)).is_err() {
                    return;
                }
            }
        }));
    }
    drop(tx);
    // Print in seed order as results arrive.
    let mut done: BTreeMap<u64, (String, bool)> = BTreeMap::new();
    let mut want = from;
    for (seed, block, failed) in rx {
        done.insert(seed, (block, failed));
        while let Some((block, failed)) = done.remove(&want) {
            print(want, &block, failed);
            want += 1;
        }
    }
    for t in threads {
        let _ = t.join();
    }
}
