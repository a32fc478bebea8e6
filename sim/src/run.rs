//! One seed, start to finish: build the world, run chaos then quiet, judge.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use crate::device::{device_main, probe_main};
use crate::nemesis::{plan, Nemesis};
use crate::oracle::{check, Verdict};
use crate::redis_server::redis_main;
use crate::server_host::server_main;
use crate::world::{lock, Params, World};

/// The result of one seed.
#[derive(Debug)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Hash of the trace (I9: the same seed gives the same hash).
    pub hash: u64,
    /// Trace lines.
    pub trace_lines: usize,
    /// Violations (live and from the oracles), empty if the seed passed.
    pub violations: Vec<String>,
    /// The oracles' counters.
    pub verdict: Verdict,
    /// The rendered trace (kept only when asked for, or when the seed failed).
    pub trace: Option<String>,
    /// Presence answers the clients received.
    pub answers: usize,
    /// Connections the clients attempted.
    pub conns: usize,
}

thread_local! {
    static PANICS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = format!("{info}");
            let in_sim = PANICS.with(|p| {
                p.borrow_mut().push(msg);
                true
            });
            if !in_sim {
                default(info);
            }
        }));
    });
}

/// One run at a time per process: tokio task ids come from one process-wide counter (see
/// [`align_task_ids`]), so concurrent runs would perturb each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// tokio numbers tasks from a process-wide counter, and a runtime keeps its tasks in 4 lists
/// chosen by `id % 4`; when turmoil crashes a host it drops the runtime, and the tasks (and their
/// sockets, whose FIN/RST the peers see) go in list order. For the same seed to give the same
/// trace in any process, every run starts with the counter at the same residue mod 4.
fn align_task_ids() {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else { return };
    for _ in 0..8 {
        let id = rt.block_on(async { tokio::spawn(async { tokio::task::id() }).await.ok() });
        match id.and_then(|id| id.to_string().parse::<u64>().ok()) {
            Some(n) if n % 4 == 3 => return,
            Some(_) => {}
            None => return,
        }
    }
}

/// Runs `seed` with `params`. `keep_trace`: keep the rendered trace even if the seed passes.
pub fn run_seed(seed: u64, params: &Params, keep_trace: bool) -> Outcome {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    align_task_ids();
    install_panic_hook();
    PANICS.with(|p| p.borrow_mut().clear());
    let w = World::new(seed, params.clone());
    let witness: std::sync::Weak<dyn crate::witness::Witness> = Arc::downgrade(&w) as _;
    w.dynamo.attach(witness);
    let schedule = plan(seed, params);
    let end = params.chaos_ms + params.quiet_ms;
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_millis(end + 60_000))
        .tick_duration(params.tick)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(10))
        .build();

    {
        let w = w.clone();
        sim.host("redis", move || redis_main(w.clone()));
    }
    for s in 0..params.servers {
        let w = w.clone();
        sim.host(World::server_name(s).as_str(), move || server_main(w.clone(), s));
    }
    for (u, &n) in params.devices_per_user.iter().enumerate() {
        for d in 0..n {
            let w = w.clone();
            sim.host(format!("u{u}d{d}").as_str(), move || device_main(w.clone(), u, d));
        }
    }
    {
        let w = w.clone();
        sim.host("probe", move || probe_main(w.clone()));
    }
    {
        let w = w.clone();
        sim.host("settings", move || crate::settings::settings_main(w.clone()));
    }

    let mut nemesis = Nemesis::default();
    let mut next = 0;
    let mut failures = Vec::new();
    loop {
        let now = sim.elapsed().as_millis() as u64;
        w.outer_now.store(now, Ordering::Relaxed);
        if now >= end {
            break;
        }
        while next < schedule.len() && schedule[next].0 <= now {
            nemesis.apply(&mut sim, &w, now, &schedule[next].1);
            next += 1;
        }
        if let Err(e) = sim.step() {
            failures.push(format!("host software failed: {e}"));
            break;
        }
    }
    w.over.store(true, Ordering::Relaxed);
    w.trace("end of run");

    let verdict = check(&w, end);
    let mut violations: Vec<String> = failures;
    violations.extend(lock(&w.live_violations).iter().cloned());
    violations.extend(PANICS.with(|p| p.borrow().iter().map(|m| format!("panic: {m}")).collect::<Vec<_>>()));
    violations.extend(verdict.violations.iter().cloned());
    // Session ids carry the OS-random boot id: hide it, so reports are identical across runs.
    let violations: Vec<String> = violations.iter().map(|v| crate::trace::normalize(v)).collect();
    drop(sim);
    let (hash, trace_lines, trace) = {
        let t = lock(&w.trace);
        let keep = keep_trace || !violations.is_empty();
        (t.hash(), t.len(), keep.then(|| t.render()))
    };
    let m = lock(&w.model);
    Outcome {
        seed,
        hash,
        trace_lines,
        violations,
        answers: m.answers.len(),
        conns: m.conns.len(),
        verdict,
        trace,
    }
}

/// Where failing traces go: `$PRESENCE_SIM_TRACE_DIR`, or `target/sim-traces` in the workspace.
pub fn trace_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PRESENCE_SIM_TRACE_DIR") {
        return PathBuf::from(d);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/sim-traces")
}

/// Writes the outcome's trace (and violations) to `trace_dir()/seed-<seed>.txt`; returns the path.
pub fn write_trace(o: &Outcome) -> Option<PathBuf> {
    let dir = trace_dir();
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(format!("seed-{}.txt", o.seed));
    let mut text = format!("seed {} trace hash {:016x}\n", o.seed, o.hash);
    for v in &o.violations {
        text.push_str(&format!("VIOLATION {v}\n"));
    }
    text.push('\n');
    text.push_str(o.trace.as_deref().unwrap_or(""));
    std::fs::write(&path, text).ok()?;
    Some(path)
}

/// The line that replays a seed exactly (default parameters).
pub fn replay_line(seed: u64) -> String {
    replay_line_for(seed, &Params::default())
}

/// The line that replays a seed exactly with `params` (its planted bug and tick, if not the
/// default).
pub fn replay_line_for(seed: u64, params: &Params) -> String {
    let mut line = format!("cargo run -p presence-sim --release -- --seeds 1 --from {seed} --trace");
    if let Some(p) = params.plant {
        line.push_str(&format!(" --plant {}", p.name()));
    }
    if params.tick != Params::default().tick {
        line.push_str(&format!(" --tick-ms {}", params.tick.as_millis()));
    }
    line
}

/// Keeps `Arc` in the public API tidy for the binary.
pub type SharedWorld = Arc<World>;
