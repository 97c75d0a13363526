//! Real processes for the integration tests: free local ports, and one standalone
//! `loghouse serve` child (the built binary) that can be killed with SIGKILL, stopped with
//! SIGTERM and started again on the same data directory.

#![allow(dead_code)] // each test file uses a part of it

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use loghouse::client::Client;

/// A bound on every wait (an event that does not come by then is a failure, not a slow run).
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn free_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

pub fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// The `loghouse` binary cargo built for this test run.
pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_loghouse"))
}

/// Runs `loghouse ARGS` to completion (stdin closed, RUST_LOG and backtraces off).
pub fn run(args: &[&str]) -> Output {
    Command::new(exe())
        .args(args)
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .expect("the loghouse binary runs")
}

/// One standalone `loghouse serve` process; killed (SIGKILL) when dropped.
pub struct Standalone {
    pub addr: String,
    pub dir: PathBuf,
    /// Its stderr, appended to across restarts.
    pub log: PathBuf,
    child: Option<Child>,
}

impl Standalone {
    /// A node on a free port with its data in `root/data` (not started).
    pub fn new(root: &Path) -> Standalone {
        Standalone {
            addr: format!("127.0.0.1:{}", free_tcp_port()),
            dir: root.join("data"),
            log: root.join("node.log"),
            child: None,
        }
    }

    /// Starts `loghouse serve` with `extra` arguments.
    pub fn start(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "the node is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(exe())
            .arg("serve")
            .args(["--listen", &self.addr])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(extra)
            .env_remove("RUST_LOG")
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the loghouse binary starts");
        self.child = Some(child);
    }

    /// Waits until the node answers (panics with its log if it exits or never does).
    pub async fn client(&mut self) -> Client {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(client) = Client::connect(&self.addr).await {
                if client.info().await.is_ok() {
                    return client;
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("the node exited ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "the node never answered:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM (a graceful stop), then wait for the exit; returns its status. Async, so the
    /// test's runtime keeps driving its client connections meanwhile: the server's graceful
    /// stop waits for them to close (a blocked runtime would hold them open until the server's
    /// keepalive gives up).
    pub async fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the node is running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
        wait_exit(&mut child).await
    }

    /// Waits for the process to exit by itself (a node that refuses to start).
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the node was started");
        wait_exit(&mut child).await
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

async fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the node did not exit");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        self.kill9();
    }
}
