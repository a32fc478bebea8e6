//! Child processes that never outlive their test, and free loopback ports.
//!
//! [`Proc`] owns one child. Its output goes to a log file in the test's directory. Dropping it
//! sends SIGKILL and reaps the child, also while a failing test unwinds (it then prints the
//! log's tail first). As a second line of defence each child is started with
//! `PR_SET_PDEATHSIG = SIGKILL`, so even a test binary that is itself killed leaves nothing behind.
//! Tests start processes from the test's own thread (the default current-thread tokio runtime),
//! which lives until the test ends.
//!
//! Waiting is asynchronous (`try_wait` polled with a tokio sleep): a blocking wait would stall
//! the test's WebSocket clients, which must keep answering the servers' pings.

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A running child process, killed and reaped on drop.
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdin closed and stdout and stderr appended to `log`.
    /// Panics (naming the program) if it cannot be started.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{name}: cannot open log {}: {e}", log.display()));
        let err = out.try_clone().expect("dup log file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child =
            cmd.spawn().unwrap_or_else(|e| panic!("{name}: cannot start {:?}: {e}", cmd.get_program()));
        Proc { name: name.to_owned(), child: Some(child), log: log.to_owned() }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The log file (stdout and stderr).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The process's name in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `Some(status)` once the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().unwrap_or_else(|e| panic!("{}: wait: {e}", self.name))
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) unless the process already exited.
    pub fn signal(&mut self, signal: i32) {
        if self.try_exit().is_some() {
            return;
        }
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: plain syscall on our own, not yet reaped, child.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "{}: kill({pid}, {signal}) failed", self.name);
    }

    /// Waits up to `limit` for the process to exit. Panics with the log's tail if it does not.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("{} did not exit within {limit:?}; log tail:\n{}", self.name, self.log_tail(40));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILL, then waits for the exit.
    pub async fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let status = self.wait_exit(Duration::from_secs(10)).await;
        assert!(
            status.signal() == Some(libc::SIGKILL) || status.code().is_some(),
            "{}: unexpected status {status:?}",
            self.name
        );
    }

    /// SIGTERM, then waits up to `limit` for the exit and returns its status.
    pub async fn terminate(&mut self, limit: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(limit).await
    }

    /// Panics with the log's tail if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_exit() {
            panic!("{} exited unexpectedly ({status:?}); log tail:\n{}", self.name, self.log_tail(40));
        }
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if std::thread::panicking() {
            eprintln!(
                "---- {} (pid {}, log {}) last lines:\n{}",
                self.name,
                child.id(),
                self.log.display(),
                log_tail(&self.log, 30)
            );
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The last `lines` lines of a file (empty if unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A free TCP port on 127.0.0.1, below the kernel's ephemeral range (32768 and up on Linux), so
/// no outgoing connection can take it between this call and the server's bind. Ports are drawn
/// pseudo-randomly per process and checked by binding.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(2_654_435_761) ^ (crate::time::now_ms() as u32);
    for _ in 0..2_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(7_919)) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            // The second bind checks the port of a cluster node's bus (port + 10000) as well.
            return port;
        }
    }
    panic!("no free port found in 20000..32000");
}

/// Waits until something accepts TCP connections on `addr`; panics after `limit`, naming `what`
/// and the log tail of `proc` (if it exited meanwhile, at once).
pub async fn wait_listening(addr: SocketAddr, limit: Duration, proc: &mut Proc) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        proc.assert_running();
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "{} did not listen on {addr} within {limit:?}; log tail:\n{}",
                proc.name(),
                proc.log_tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
