//! The nemesis: a fault schedule drawn from the seed, and its execution against the turmoil world.
//!
//! Faults: one-way and two-way partitions between any two hosts (devices, servers, Redis),
//! swizzle-clogging (FoundationDB: cut a random subset of hosts off one by one, heal them in
//! another random order), Redis crash (data lost) and restart, WS server crash and restart,
//! DynamoDB outage / hang / throttling / slowness windows, and per-server wall-clock offsets within
//! ±5 s that are stepped during the run. Every fault is healed before the quiet phase.

use std::collections::BTreeMap;

use crate::dynamo::DynFault;
use crate::model::FaultKind;
use crate::rng::{mix3, Rng};
use crate::world::{bounds, lock, Params, World};

/// One thing the nemesis does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop delivering messages from `.0` to `.1` (reference-counted).
    LinkDown(String, String),
    /// Undo one `LinkDown`.
    LinkUp(String, String),
    /// Crash the Redis host (its data is gone).
    RedisCrash,
    /// Start it again (empty).
    RedisRestart,
    /// Crash server `.0`.
    ServerCrash(usize),
    /// Start it again.
    ServerRestart(usize),
    /// Start a DynamoDB fault window.
    DynamoFault(DynFault),
    /// End it.
    DynamoHeal,
    /// Set server `.0`'s clock offset to `.1` ms (a step when it was running).
    Clock(usize, i64),
    /// Faults are over: the quiet phase begins.
    Quiet,
}

/// The schedule of a seed: `(virtual ms, action)`, sorted by time (stable).
pub fn plan(seed: u64, p: &Params) -> Vec<(u64, Action)> {
    let mut rng = Rng::new(mix3(seed, 0x4E3E, 0));
    let mut out: Vec<(u64, Action)> = Vec::new();
    let (devices, servers, hosts) = host_names(p);
    let last = p.chaos_ms.saturating_sub(500);

    for s in 0..p.servers {
        out.push((0, Action::Clock(s, rng.range_i(-bounds::MAX_SKEW_MS, bounds::MAX_SKEW_MS))));
    }
    // Per target, when its current crash/outage window ends (no overlapping windows).
    let mut busy: BTreeMap<String, u64> = BTreeMap::new();
    let free = |what: &str, t: u64, until: u64, busy: &mut BTreeMap<String, u64>| {
        if busy.get(what).is_some_and(|&b| b + 200 > t) {
            return false;
        }
        busy.insert(what.to_owned(), until);
        true
    };
    let events = rng.range(3, 13);
    for _ in 0..events {
        let t = rng.range(1_000, p.chaos_ms.saturating_sub(3_000));
        let kind = rng.range(0, 100);
        match kind {
            // two-way partition device <-> server
            0..=19 => {
                let d = devices[rng.pick(devices.len())].clone();
                let s = servers[rng.pick(servers.len())].clone();
                let until = (t + rng.range(500, 8_000)).min(last);
                for (a, b) in [(d.clone(), s.clone()), (s, d)] {
                    out.push((t, Action::LinkDown(a.clone(), b.clone())));
                    out.push((until, Action::LinkUp(a, b)));
                }
            }
            // one-way partition between any two hosts
            20..=34 => {
                let a = hosts[rng.pick(hosts.len())].clone();
                let mut b = hosts[rng.pick(hosts.len())].clone();
                if a == b {
                    b = "redis".into();
                    if a == b {
                        continue;
                    }
                }
                let until = (t + rng.range(500, 6_000)).min(last);
                out.push((t, Action::LinkDown(a.clone(), b.clone())));
                out.push((until, Action::LinkUp(a, b)));
            }
            // server <-> redis partition
            35..=46 => {
                let s = servers[rng.pick(servers.len())].clone();
                let until = (t + rng.range(500, 5_000)).min(last);
                for (a, b) in [(s.clone(), "redis".to_owned()), ("redis".to_owned(), s)] {
                    out.push((t, Action::LinkDown(a.clone(), b.clone())));
                    out.push((until, Action::LinkUp(a, b)));
                }
            }
            // swizzle-clog a random subset
            47..=54 => swizzle(&mut rng, t, last, &hosts, &mut out),
            // Redis crash (or instant bounce) and restart
            55..=66 => {
                let until = (t + rng.range(0, 3_000)).min(last);
                if free("redis", t, until, &mut busy) {
                    out.push((t, Action::RedisCrash));
                    out.push((until, Action::RedisRestart));
                }
            }
            // server crash and restart
            67..=74 => {
                let s = rng.pick(p.servers);
                let until = (t + rng.range(300, 5_000)).min(last);
                if free(&servers[s], t, until, &mut busy) {
                    out.push((t, Action::ServerCrash(s)));
                    out.push((until, Action::ServerRestart(s)));
                }
            }
            // DynamoDB fault window
            75..=89 => {
                let until = (t + rng.range(500, 8_000)).min(last);
                let f = match rng.range(0, 4) {
                    0 => DynFault::Outage,
                    1 => DynFault::Hang,
                    2 => DynFault::Throttle(rng.range(20, 100) as u8),
                    _ => DynFault::Slow(rng.range(200, 2_000)),
                };
                if free("dynamo", t, until, &mut busy) {
                    out.push((t, Action::DynamoFault(f)));
                    out.push((until, Action::DynamoHeal));
                }
            }
            // clock step
            _ => {
                let s = rng.pick(p.servers);
                out.push((t, Action::Clock(s, rng.range_i(-bounds::MAX_SKEW_MS, bounds::MAX_SKEW_MS))));
            }
        }
    }
    out.push((p.chaos_ms, Action::Quiet));
    out.sort_by_key(|(t, _)| *t);
    out
}

/// The run's host names: the devices, the servers, and every host (servers, `redis`, devices).
fn host_names(p: &Params) -> (Vec<String>, Vec<String>, Vec<String>) {
    let devices: Vec<String> = p
        .devices_per_user
        .iter()
        .enumerate()
        .flat_map(|(u, &n)| (0..n).map(move |d| format!("u{u}d{d}")))
        .collect();
    let servers: Vec<String> = (0..p.servers).map(World::server_name).collect();
    let mut hosts: Vec<String> = servers.clone();
    hosts.push("redis".into());
    hosts.extend(devices.iter().cloned());
    (devices, servers, hosts)
}

/// Swizzle-clog from `t`: the links of a random subset of hosts go down one by one, `step` apart,
/// and come back in a random order, never after `last`.
fn swizzle(rng: &mut Rng, t: u64, last: u64, hosts: &[String], out: &mut Vec<(u64, Action)>) {
    let n = rng.range(2, 5) as usize;
    let mut subset: Vec<String> = Vec::new();
    while subset.len() < n {
        let h = hosts[rng.pick(hosts.len())].clone();
        if !subset.contains(&h) {
            subset.push(h);
        }
    }
    let step = rng.range(100, 800);
    let heal_at = t + step * n as u64 + rng.range(500, 3_000);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.pick(i + 1));
    }
    for (i, h) in subset.iter().enumerate() {
        let down = t + step * i as u64;
        let up = (heal_at + step * order[i] as u64).min(last);
        for other in hosts.iter().filter(|o| *o != h) {
            for (a, b) in [(h.clone(), other.clone()), (other.clone(), h.clone())] {
                out.push((down.min(up), Action::LinkDown(a.clone(), b.clone())));
                out.push((up, Action::LinkUp(a, b)));
            }
        }
    }
}

/// Executes actions against the simulation, keeping link reference counts and the fault log.
#[derive(Default)]
pub struct Nemesis {
    links: BTreeMap<(String, String), u32>,
}

impl Nemesis {
    /// Applies one action at virtual time `t`.
    pub fn apply(&mut self, sim: &mut turmoil::Sim<'_>, w: &World, t: u64, a: &Action) {
        w.trace(format!("nemesis {a:?}"));
        match a {
            Action::LinkDown(x, y) => {
                let n = self.links.entry((x.clone(), y.clone())).or_default();
                *n += 1;
                if *n == 1 {
                    sim.partition_oneway(x.as_str(), y.as_str());
                    lock(&w.model).fault_start(FaultKind::LinkDown { from: x.clone(), to: y.clone() }, t);
                }
            }
            Action::LinkUp(x, y) => {
                let n = self.links.entry((x.clone(), y.clone())).or_default();
                *n = n.saturating_sub(1);
                if *n == 0 {
                    sim.repair_oneway(x.as_str(), y.as_str());
                    lock(&w.model).fault_end(&FaultKind::LinkDown { from: x.clone(), to: y.clone() }, t);
                }
            }
            Action::RedisCrash => {
                sim.crash("redis");
                lock(&w.redis).crash();
                lock(&w.model).fault_start(FaultKind::RedisDown, t);
            }
            Action::RedisRestart => {
                sim.bounce("redis");
                lock(&w.model).fault_end(&FaultKind::RedisDown, t);
            }
            Action::ServerCrash(s) => {
                sim.crash(World::server_name(*s).as_str());
                let mut servers = lock(&w.servers);
                servers[*s].crashes.push(t);
                servers[*s].up = false;
                drop(servers);
                lock(&w.model).fault_start(FaultKind::ServerDown(*s), t);
            }
            Action::ServerRestart(s) => {
                sim.bounce(World::server_name(*s).as_str());
                lock(&w.model).fault_end(&FaultKind::ServerDown(*s), t);
            }
            Action::DynamoFault(f) => {
                w.dynamo.set_fault(Some(*f));
                lock(&w.model).fault_start(FaultKind::Dynamo(format!("{f:?}")), t);
            }
            Action::DynamoHeal => {
                w.dynamo.set_fault(None);
                let mut m = lock(&w.model);
                if let Some(f) = m
                    .faults
                    .iter_mut()
                    .rev()
                    .find(|f| matches!(f.kind, FaultKind::Dynamo(_)) && f.end == u64::MAX)
                {
                    f.end = t;
                }
            }
            Action::Clock(s, off) => {
                w.clocks[*s].set_offset(*off);
                lock(&w.model).fault_instant(FaultKind::ClockStep(*s), t);
            }
            Action::Quiet => w.quiet.store(true, std::sync::atomic::Ordering::Relaxed),
        }
    }
}
