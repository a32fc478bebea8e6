//! `presence-server query`: an operator asks a running deployment about users from the shell.
//!
//! Bob is on server A; the CLI asks server B (exact JSON lines, then the human form after Bob
//! leaves, with the instant DynamoDB holds). The lookup opens no session: the CLI's own identity
//! is never online and never gets a last_seen. Refused tokens, a server without dev tokens, a port
//! nobody listens on and a bad user id each give their documented message and exit code.

use std::time::Duration;

use presence_tests::process::free_port;
use presence_tests::stack::SECRET;
use presence_tests::{cli, rfc3339, Stack};

#[tokio::test]
#[ignore = "needs redis-server and dynalite: run scripts/test"]
async fn cli_query() {
    let stack = Stack::new("cli_query").await;
    let (a, b) = tokio::join!(stack.server("ws-a").start(), stack.server("ws-b").start());
    let url = format!("ws://{}", b.addr());
    let bob = a.connect("bob").await;
    let mut probe = b.connect("probe").await;
    probe.wait_online("bob").await;

    let out = cli::run(&["query", "--url", &url, "--jwt-secret", SECRET, "--json", "bob", "carol"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        out.stdout,
        "{\"user\":\"bob\",\"online\":true,\"last_seen\":null}\n\
         {\"user\":\"carol\",\"online\":false,\"last_seen\":null}\n"
    );
    let out = cli::run(&["query", "--url", &url, "--jwt-secret", SECRET, "bob", "carol"]).await;
    assert_eq!(out.stdout, "bob    online\ncarol  offline, never seen\n", "{out:?}");
    // Every character a user id may hold survives the query string (`+` is not a space).
    let odd = "d.o_e+work@x.example:2-";
    let out = cli::run(&["query", "--url", &url, "--jwt-secret", SECRET, "--json", odd]).await;
    assert_eq!(
        out.stdout,
        format!("{{\"user\":\"{odd}\",\"online\":false,\"last_seen\":null}}\n"),
        "{out:?}"
    );

    // Bob leaves: the CLI shows the instant the source of truth holds.
    bob.close().await;
    let gone = probe.wait_entry("bob", "offline", Duration::from_secs(5), |e| !e.online).await.0;
    let at = gone.last_seen.expect("bob's last_seen");
    stack.dynamo_probe().wait_last_seen("bob", at, Duration::from_secs(5)).await;
    let out = cli::run(&["query", "--url", &url, "--jwt-secret", SECRET, "--json", "bob"]).await;
    assert_eq!(
        out.stdout,
        format!("{{\"user\":\"bob\",\"online\":false,\"last_seen\":\"{}\"}}\n", rfc3339(at))
    );
    let out =
        cli::run(&["query", "--url", &format!("http://{}/v1/ws", b.addr()), "--jwt-secret", SECRET, "bob"])
            .await;
    let iso = rfc3339(at);
    let prefix = format!("bob  offline, last seen {} {} UTC (", &iso[..10], &iso[11..19]);
    assert!(out.stdout.starts_with(&prefix), "{:?} does not start with {prefix:?}", out.stdout);

    // The lookups opened no session for the CLI's identity.
    let cli_user = b.presence_http("probe", &["presence-cli"]).await;
    assert_eq!((cli_user[0].online, cli_user[0].last_seen), (false, None), "{cli_user:?}");

    // Failures: message and exit code.
    let out =
        cli::run(&["query", "--url", &url, "--jwt-secret", "not-the-secret-of-this-deployment", "bob"]).await;
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (Some(3), "presence-server: the server refused the token: invalid token: bad signature\n")
    );
    let out = cli::run(&["query", "--url", &url, "bob"]).await;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(
        out.stderr.starts_with("presence-server: no token: the server does not issue dev tokens"),
        "{out:?}"
    );
    let port = free_port();
    let out = cli::run(&["query", "--url", &format!("ws://127.0.0.1:{port}"), "--json", "bob"]).await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(
        out.stderr.starts_with(&format!("{{\"error\":\"cannot reach 127.0.0.1:{port}: Connection refused")),
        "{out:?}"
    );
    let out = cli::run(&["query", "--url", &url, "--jwt-secret", SECRET, "bob smith"]).await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.starts_with("presence-server: invalid user \"bob smith\": "), "{out:?}");
    assert_eq!(out.stdout, "");
}
