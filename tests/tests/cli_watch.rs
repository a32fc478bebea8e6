//! `presence-server watch`: an operator streams a user's changes from the shell.
//!
//! Alice watches Bob through server B while Bob comes and goes on server A: the snapshot, then
//! Bob online, then Bob offline with the last_seen DynamoDB holds, as exact JSON lines. The watch
//! is a real session (Alice is online while it runs); Ctrl-C ends it gracefully (exit 0, Alice
//! offline with a recorded last_seen). A watch whose server shuts down exits 4 with the close code;
//! one whose server goes silent (SIGSTOP: no FIN, no answers) exits 4 within two `--timeout`s.

use std::time::Duration;

use presence_tests::stack::SECRET;
use presence_tests::{cli, rfc3339, Stack};

const LINE: Duration = Duration::from_secs(5);

#[tokio::test]
#[ignore = "needs redis-server and dynalite: run scripts/test"]
async fn cli_watch() {
    let stack = Stack::new("cli_watch").await;
    let (mut a, mut b) = tokio::join!(stack.server("ws-a").start(), stack.server("ws-b").start());
    let url = format!("ws://{}", b.addr());
    let args = ["--url", &url, "--jwt-secret", SECRET, "--as", "alice", "--json", "bob"];

    let mut watch = cli::Watch::start(&args);
    assert_eq!(
        watch.next_line(LINE).await,
        r#"{"event":"snapshot","user":"bob","online":false,"last_seen":null}"#
    );
    let alice = a.presence_http("ops", &["alice"]).await;
    assert!(alice[0].online, "the watch is alice's session: {alice:?}");

    let bob = a.connect("bob").await;
    assert_eq!(
        watch.next_line(LINE).await,
        r#"{"event":"change","user":"bob","online":true,"last_seen":null}"#
    );
    bob.close().await;
    let line = watch.next_line(LINE).await;
    let at = a.presence_http("ops", &["bob"]).await[0].last_seen.expect("bob's last_seen");
    stack.dynamo_probe().wait_last_seen("bob", at, LINE).await;
    assert_eq!(
        line,
        format!(r#"{{"event":"change","user":"bob","online":false,"last_seen":"{}"}}"#, rfc3339(at))
    );

    // Ctrl-C: a graceful end of alice's session.
    watch.interrupt();
    let out = watch.wait(LINE).await;
    assert_eq!((out.code, out.stdout.as_str(), out.stderr.as_str()), (Some(0), "", ""));
    let alice = presence_tests::eventually("alice offline", LINE, || async {
        let e = a.presence_http("ops", &["alice"]).await.remove(0);
        if e.online {
            Err(format!("{e:?}"))
        } else {
            Ok(e)
        }
    })
    .await;
    assert!(alice.last_seen.is_some(), "{alice:?}");

    // The server goes away: exit 4 with the close code and reason.
    let mut watch = cli::Watch::start(&args);
    let snapshot =
        format!(r#"{{"event":"snapshot","user":"bob","online":false,"last_seen":"{}"}}"#, rfc3339(at));
    assert_eq!(watch.next_line(LINE).await, snapshot);
    // The other server goes silent: the watch's probe goes unanswered.
    let url_a = format!("ws://{}", a.addr());
    let silent_args =
        ["--url", &url_a, "--jwt-secret", SECRET, "--as", "ops", "--json", "--timeout", "500ms", "bob"];
    let mut silent = cli::Watch::start(&silent_args);
    assert_eq!(silent.next_line(LINE).await, snapshot);
    a.signal(libc::SIGSTOP);
    let stopped = std::time::Instant::now();
    let out = silent.wait(LINE).await;
    let waited = stopped.elapsed();
    a.signal(libc::SIGCONT);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (Some(4), "{\"error\":\"no answer from the server within 500ms\",\"exit_code\":4}\n")
    );
    assert!(waited < Duration::from_millis(1500), "noticed after {waited:?}, bound 2 x 500 ms + slack");

    b.terminate(Duration::from_secs(10)).await;
    let out = watch.wait(LINE).await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert_eq!(
        out.stderr,
        "{\"error\":\"the server closed the connection (1001: server shutting down)\",\"exit_code\":4}\n"
    );
}
