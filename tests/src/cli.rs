//! The `presence-server` command-line client (`query`, `watch`), run as operators run it.
//!
//! [`run`] runs one command to completion and returns its exit code and output; [`Watch`] keeps a
//! `watch` running and reads its stdout line by line with a deadline. Neither inherits the test's
//! `PRESENCE_*` variables, so only the flags a test passes count. A running watch is killed on drop.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::env;

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
}

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env::server_bin());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("PRESENCE_") {
            cmd.env_remove(&*k);
        }
    }
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

/// Runs `presence-server <args>` and waits (at most 20 s) for it to exit.
pub async fn run(args: &[&str]) -> Output {
    run_with_env(args, &[]).await
}

/// [`run`] with these `PRESENCE_*` (or other) variables set.
pub async fn run_with_env(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = command(args);
    cmd.envs(vars.iter().copied());
    let child = cmd.output();
    let out = tokio::time::timeout(Duration::from_secs(20), child)
        .await
        .unwrap_or_else(|_| panic!("presence-server {args:?} did not exit within 20 s"))
        .unwrap_or_else(|e| panic!("cannot run presence-server {args:?}: {e}"));
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A running `presence-server watch ...`.
pub struct Watch {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Watch {
    /// Starts `presence-server watch <args>`.
    pub fn start(args: &[&str]) -> Watch {
        let mut cmd = command(&[&["watch"], args].concat());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start presence-server watch: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        Watch { child, lines: BufReader::new(stdout).lines() }
    }

    /// The next line on stdout; panics if none comes within `limit`.
    pub async fn next_line(&mut self, limit: Duration) -> String {
        match tokio::time::timeout(limit, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => panic!("watch ended its output (exit {:?})", self.child.try_wait()),
            Ok(Err(e)) => panic!("reading watch's output: {e}"),
            Err(_) => panic!("watch printed nothing within {limit:?}"),
        }
    }

    /// Sends SIGINT (Ctrl-C).
    pub fn interrupt(&mut self) {
        let pid = self.child.id().expect("watch is running") as i32;
        // SAFETY: a plain kill(2) of our own child.
        unsafe { libc::kill(pid, libc::SIGINT) };
    }

    /// Waits (at most `limit`) for the exit; the exit code and what is left on stdout and stderr.
    pub async fn wait(mut self, limit: Duration) -> Output {
        let mut rest = String::new();
        let read_rest = async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                rest.push_str(&line);
                rest.push('\n');
            }
        };
        tokio::time::timeout(limit, read_rest).await.expect("watch's stdout did not end");
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("watch did not exit")
            .expect("wait for watch");
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = err.read_to_string(&mut stderr).await;
        }
        Output { code: status.code(), stdout: rest, stderr }
    }
}
