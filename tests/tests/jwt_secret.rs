//! Secrets that cannot be guessed: a server refuses to start with an HS256 secret shorter than
//! 32 bytes (RFC 7518, 3.2), an empty one included, from the flag, the variable or the file (exit
//! code 2, a message naming the flag and the minimum); an empty `PRESENCE_JWT_SECRET` counts as
//! set (no dev mode); `--jwt-secret-file` works (trailing newline stripped) and is refused
//! together with `--jwt-secret` or when unreadable; a token signed with the empty key, what the
//! old server accepted with `PRESENCE_JWT_SECRET=`, gets 401; the `token` subcommand refuses a
//! short secret too.

use presence_tests::client::{ConnectError, ConnectOptions};
use presence_tests::stack::SECRET;
use presence_tests::{cli, http, token, Stack};

const FLAG_MSG: &str = "presence-server: --jwt-secret (PRESENCE_JWT_SECRET) is {len} bytes; an HS256 secret \
                        must be at least 32 bytes (256 bits, RFC 7518 section 3.2). Generate one with: \
                        openssl rand -hex 32\n";

fn too_short(flag: &str, len: usize) -> String {
    FLAG_MSG.replace("--jwt-secret (PRESENCE_JWT_SECRET)", flag).replace("{len}", &len.to_string())
}

/// The last line of stderr (the first lines are the log).
fn last_line(stderr: &str) -> String {
    stderr.lines().last().map(|l| format!("{l}\n")).unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs the presence-server binary: run scripts/test"]
async fn jwt_secret() {
    let stack = Stack::embedded("jwt_secret");
    let data = stack.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let serve = |extra: &[&str]| {
        let mut args = vec!["--listen", "127.0.0.1:0", "--data-dir", data];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let flag = "--jwt-secret (PRESENCE_JWT_SECRET)";

    // Too short or empty on the command line: exit 2, with the flag and the minimum.
    for secret in ["", "s", "0123456789abcdef0123456789abcde"] {
        let args = serve(&["--jwt-secret", secret]);
        let out = cli::run(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        assert_eq!(
            (out.code, last_line(&out.stderr)),
            (Some(2), too_short(flag, secret.len())),
            "--jwt-secret of {} bytes: {out:?}",
            secret.len()
        );
    }
    // The same from the environment; an empty variable is set, not absent: no dev mode.
    let args = serve(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for secret in ["", "short"] {
        let out = cli::run_with_env(&args, &[("PRESENCE_JWT_SECRET", secret)]).await;
        assert_eq!((out.code, last_line(&out.stderr)), (Some(2), too_short(flag, secret.len())), "{out:?}");
        assert!(!out.stdout.contains("demo page"), "no dev mode: {out:?}");
    }

    // A file: too short (after the newline is stripped), unreadable, or together with the flag.
    let file = |name: &str, body: &str| {
        let p = stack.path().join(name);
        std::fs::write(&p, body).expect("write the secret file");
        p.to_str().expect("utf-8 path").to_owned()
    };
    let short = file("short", "0123456789abcdef0123456789abcde\n");
    let out = cli::run(&args.iter().copied().chain(["--jwt-secret-file", &short]).collect::<Vec<_>>()).await;
    assert_eq!(
        (out.code, last_line(&out.stderr)),
        (Some(2), too_short("--jwt-secret-file (PRESENCE_JWT_SECRET_FILE)", 31)),
        "{out:?}"
    );
    let missing = stack.path().join("missing");
    let missing = missing.to_str().expect("utf-8 path");
    let out = cli::run(&args.iter().copied().chain(["--jwt-secret-file", missing]).collect::<Vec<_>>()).await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(
        last_line(&out.stderr),
        format!("presence-server: --jwt-secret-file {missing}: cannot read it: No such file or directory (os error 2)\n")
    );
    let good = file("secret", &format!("{SECRET}\n"));
    let both: Vec<&str> =
        args.iter().copied().chain(["--jwt-secret", SECRET, "--jwt-secret-file", &good]).collect();
    let out = cli::run(&both).await;
    assert_eq!(
        (out.code, last_line(&out.stderr)),
        (
            Some(2),
            "presence-server: both --jwt-secret (PRESENCE_JWT_SECRET) and --jwt-secret-file \
             (PRESENCE_JWT_SECRET_FILE) are set; give one\n"
                .to_owned()
        ),
        "{out:?}"
    );

    // The `token` subcommand refuses what no server can use.
    let out = cli::run(&["token", "--user", "bob", "--jwt-secret", "s"]).await;
    assert_eq!((out.code, last_line(&out.stderr)), (Some(2), too_short(flag, 1)), "{out:?}");
    let out = cli::run(&["token", "--user", "bob", "--jwt-secret-file", &good]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let from_file = out.stdout.trim().to_owned();

    // A server with the secret from the file (newline stripped): the harness's tokens (signed
    // with the same bytes, without a newline) and the subcommand's work; empty-key ones do not.
    let server = stack.server("ws-a").without("--jwt-secret").arg("--jwt-secret-file", &good).start().await;
    server.connect("alice").await.ping().await;
    let options = ConnectOptions { token: Some(from_file), ..ConnectOptions::default() };
    server.connect_with("bob", &options).await.expect("token from the subcommand").ping().await;
    let options = ConnectOptions { token: Some(token::empty_key("mallory")), ..ConnectOptions::default() };
    match server.connect_with("mallory", &options).await {
        Err(ConnectError::Http(status, body)) => {
            assert_eq!(status, 401, "{body}");
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&body).expect("JSON error")["message"],
                "invalid token: bad signature"
            );
        }
        Err(ConnectError::Other(e)) => panic!("expected 401, got {e}"),
        Ok(_) => panic!("a token signed with the empty key was accepted"),
    }
    let auth = format!("Bearer {}", token::empty_key("mallory"));
    let r = http::request(server.addr(), "GET", "/v1/presence?users=alice", &[("Authorization", &auth)])
        .await
        .expect("http");
    assert_eq!(r.status, 401, "{}", r.body);
}
