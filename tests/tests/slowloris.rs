//! Slowloris at the edge: with `--max-handshakes 8`, an attacker opens 40 TCP sockets that never
//! finish their HTTP request. The server holds 8 of them (until the handshake timeout) and closes
//! the other 32 as soon as it accepts them, so its open file descriptors stay bounded; a client
//! that connected before keeps working, the admin listener keeps answering, and once the held
//! sockets time out a real client connects while the attacker still holds all 40 open on its side.

use std::time::Duration;

use presence_tests::{eventually, Stack};
use tokio::io::AsyncReadExt;

const HANDSHAKES: usize = 8;
const ATTACK: usize = 40;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc/<pid>/fd").count()
}

#[tokio::test]
#[ignore = "needs the presence-server binary: run scripts/test"]
async fn slowloris() {
    let stack = Stack::embedded("slowloris");
    let server = stack
        .server("ws-a")
        .arg("--max-handshakes", &HANDSHAKES.to_string())
        .arg("--handshake-timeout", "3s")
        .arg("--admin-listen", "127.0.0.1:0")
        .start()
        .await;
    let mut before = server.connect("alice").await;
    let fds_before = open_fds(server.pid());

    // The attack: sockets that send nothing. The kernel queues them in order and the server
    // accepts them in that order: the first 8 get a permit, the other 32 are closed.
    let mut attack = Vec::new();
    for _ in 0..ATTACK {
        attack.push(tokio::net::TcpStream::connect(server.addr()).await.expect("connect"));
    }
    eventually("every attacking socket to be accepted", Duration::from_secs(2), || async {
        let held = server.metric("presence_handshakes").await;
        let refused = server.metric("presence_handshakes_refused_total").await;
        if (held, refused) == (HANDSHAKES as u64, (ATTACK - HANDSHAKES) as u64) {
            Ok(())
        } else {
            Err(format!("{held} held, {refused} refused"))
        }
    })
    .await;
    // The 32 beyond the limit were closed by the server (EOF or a reset); the 8 are still open.
    let mut closed = Vec::new();
    for (i, s) in attack.iter_mut().enumerate() {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await;
        match read {
            Ok(Ok(0) | Err(_)) => closed.push(i),
            Err(_) => {}
            Ok(Ok(n)) => panic!("socket {i}: the server sent {n} bytes to a socket that sent nothing"),
        }
    }
    assert_eq!(closed, (HANDSHAKES..ATTACK).collect::<Vec<_>>(), "sockets closed at once");
    // Descriptors: the 8 held sockets, not 40 (a little slack for the runtime's own).
    let fds = open_fds(server.pid());
    assert!(fds <= fds_before + HANDSHAKES + 4, "{fds} descriptors open, {fds_before} before the attack");

    // Meanwhile: the open session works, the admin listener answers, the server is ready.
    before.ping().await;
    let (status, body) = server.readyz().await;
    assert_eq!(status, 200, "{body}");

    // The held ones are dropped at the handshake timeout; then a real client gets in, while the
    // attacker still holds every socket open on its side.
    eventually("the held sockets to time out", Duration::from_secs(5), || async {
        match server.metric("presence_handshake_timeouts_total").await {
            n if n == HANDSHAKES as u64 => Ok(()),
            n => Err(format!("{n} timed out")),
        }
    })
    .await;
    assert_eq!(server.metric("presence_handshakes").await, 0);
    let mut late = server.connect("bob").await;
    late.ping().await;
    assert!(late.entry("alice").await.online);
    assert_eq!(server.metric("presence_handshakes_refused_total").await, (ATTACK - HANDSHAKES) as u64);
    drop(attack);
}
