//! Criterion benchmarks of the core: heartbeat inputs with many live sessions, and session churn.
//! Run with `cargo bench -p presence-core` (or `scripts/bench`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_main, Criterion, Throughput};
use presence_core::store::StoreOutput;
use presence_core::time::{MonoTime, Now, UnixMillis};
use presence_core::user::{SessionId, UserId};
use presence_core::{Config, ConnId, Effect, Input, Presence};

const SESSIONS: u64 = 100_000;

fn at(ns: u64) -> Now {
    Now { mono: MonoTime::from_nanos(ns), wall: UnixMillis(1_700_000_000_000 + (ns / 1_000_000) as i64) }
}

/// Drains effects, acknowledging every store operation as successful.
fn ack_all(p: &mut Presence, now: Now) {
    let mut acks = Vec::new();
    while let Some(e) = p.poll_effect() {
        if let Effect::Store { id, .. } = e {
            acks.push(id);
        }
    }
    for id in acks {
        p.handle(now, Input::StoreDone { id, result: Ok(StoreOutput::Done) });
        while p.poll_effect().is_some() {}
    }
}

fn with_sessions(n: u64) -> Presence {
    let mut p = Presence::new(Config::default(), 1);
    let users: Vec<UserId> = (0..n).map(|i| UserId::new(&format!("user{i}")).unwrap()).collect();
    for (i, user) in users.into_iter().enumerate() {
        let session = SessionId::new(format!("s-{i}"));
        p.handle(
            at(1),
            Input::Open { conn: ConnId(i as u64), user, session, expires: None, scopes: Default::default() },
        );
    }
    ack_all(&mut p, at(1));
    p
}

fn heartbeat(c: &mut Criterion) {
    let mut p = with_sessions(SESSIONS);
    let mut group = c.benchmark_group("heartbeat");
    group.throughput(Throughput::Elements(SESSIONS));
    let mut t = 2u64;
    group.bench_function("alive_100k_sessions", |b| {
        b.iter(|| {
            // Within one ping interval: proof of life for every session, no effects expected.
            t += 1;
            for i in 0..SESSIONS {
                p.handle(at(t), Input::Alive { conn: ConnId(black_box(i)), at: at(t).mono });
            }
            debug_assert!(p.poll_effect().is_none());
        })
    });
    // The baseline (scripts/bench reports the core's figure as a ratio to it): the least any
    // implementation must do per proof of life, one hash-map lookup and store of the time.
    let mut bare: rustc_hash::FxHashMap<u64, u64> = (0..SESSIONS).map(|i| (i, 1)).collect();
    group.bench_function("bare_map_100k_sessions", |b| {
        b.iter(|| {
            t += 1;
            for i in 0..SESSIONS {
                if let Some(last) = bare.get_mut(&black_box(i)) {
                    *last = t;
                }
            }
        })
    });
    group.finish();
}

fn churn(c: &mut Criterion) {
    let mut p = with_sessions(10_000);
    let users: Vec<UserId> = (0..1_000).map(|i| UserId::new(&format!("churn{i}")).unwrap()).collect();
    let mut next = 1_000_000u64;
    let mut t = Duration::from_secs(1).as_nanos() as u64;
    let mut group = c.benchmark_group("churn");
    group.throughput(Throughput::Elements(1));
    group.bench_function("open_close_with_writes_acked", |b| {
        b.iter(|| {
            next += 1;
            t += 1_000;
            let conn = ConnId(next);
            let user = users[(next % 1_000) as usize].clone();
            p.handle(
                at(t),
                Input::Open {
                    conn,
                    user,
                    session: SessionId::new(format!("c-{next}")),
                    expires: None,
                    scopes: Default::default(),
                },
            );
            ack_all(&mut p, at(t));
            p.handle(at(t), Input::Closed { conn, graceful: true });
            ack_all(&mut p, at(t));
        })
    });
    group.finish();
}

// The group function criterion's macro generates is public and undocumented; it is no API.
#[allow(missing_docs)]
mod group {
    use super::{churn, heartbeat};
    criterion::criterion_group!(benches, heartbeat, churn);
}
criterion_main!(group::benches);
