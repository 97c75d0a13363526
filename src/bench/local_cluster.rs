//! A cluster of `loghouse serve` child processes on 127.0.0.1, for `loghouse cluster up`, the
//! cluster benchmark and the real-process tests. Member i (from 1) serves gRPC on
//! `base_port + i` and gossip on `gossip_base_port + i`; member 1 bootstraps; every member joins
//! through all the others, so any of them can be killed and restarted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;

#[derive(Clone, Debug)]
pub struct LocalClusterSpec {
    /// The `loghouse` binary.
    pub exe: PathBuf,
    pub nodes: u16,
    /// Parent of the members' data directories and logs.
    pub dir: PathBuf,
    pub base_port: u16,
    pub gossip_base_port: u16,
    /// Extra `serve` arguments for every member; `{id}` in them becomes the member's id (e.g.
    /// `--tls-cert certs/node-{id}.pem`).
    pub extra_args: Vec<String>,
    /// Member i serves metrics on 127.0.0.1:(this + i) when set.
    pub metrics_base_port: Option<u16>,
}

pub struct LocalCluster {
    pub spec: LocalClusterSpec,
    /// Index i holds member i + 1 (None while it is down).
    children: Vec<Option<Child>>,
}

impl LocalCluster {
    /// Starts every member (member 1 first: it bootstraps).
    pub fn start(spec: LocalClusterSpec) -> anyhow::Result<LocalCluster> {
        anyhow::ensure!((1..=9).contains(&spec.nodes), "nodes must be in 1..=9");
        std::fs::create_dir_all(&spec.dir)
            .with_context(|| format!("cannot create {}", spec.dir.display()))?;
        let mut cluster = LocalCluster {
            children: (0..spec.nodes).map(|_| None).collect(),
            spec,
        };
        for id in 1..=cluster.spec.nodes {
            cluster.restart(id)?;
        }
        Ok(cluster)
    }

    pub fn rpc_addr(&self, id: u16) -> String {
        format!("127.0.0.1:{}", self.spec.base_port + id)
    }

    pub fn gossip_addr(&self, id: u16) -> String {
        format!("127.0.0.1:{}", self.spec.gossip_base_port + id)
    }

    pub fn data_dir(&self, id: u16) -> PathBuf {
        self.spec.dir.join(format!("node-{id}"))
    }

    pub fn log_path(&self, id: u16) -> PathBuf {
        self.spec.dir.join(format!("node-{id}.log"))
    }

    /// Where member `id` serves metrics, if the spec asks for it.
    pub fn metrics_addr(&self, id: u16) -> Option<String> {
        let base = self.spec.metrics_base_port?;
        Some(format!("127.0.0.1:{}", base + id))
    }

    pub fn pid(&self, id: u16) -> Option<u32> {
        self.children[usize::from(id - 1)].as_ref().map(Child::id)
    }

    /// Starts member `id` (again), appending to its log file.
    pub fn restart(&mut self, id: u16) -> anyhow::Result<()> {
        anyhow::ensure!(self.pid(id).is_none(), "node {id} is running");
        let others: Vec<String> = (1..=self.spec.nodes)
            .filter(|j| *j != id)
            .map(|j| self.gossip_addr(j))
            .collect();
        let log = open_append(&self.log_path(id))?;
        let mut command = Command::new(&self.spec.exe);
        command
            .arg("serve")
            .args(["--node-id", &id.to_string()])
            .args(["--listen", &self.rpc_addr(id)])
            .args(["--gossip-listen", &self.gossip_addr(id)])
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .args((self.spec.extra_args.iter()).map(|arg| arg.replace("{id}", &id.to_string())))
            .args(
                self.metrics_addr(id)
                    .map(|addr| format!("--metrics-listen={addr}")),
            )
            .stdout(Stdio::null())
            .stderr(log);
        if id == 1 {
            command.arg("--bootstrap");
        }
        if self.spec.nodes == 1 {
            // One member: one voter, which acknowledges alone (voters_target 3, the default,
            // would make it wait for voters that never come: min_replicas 2).
            command.args(["--voters-target", "1"]);
        }
        if !others.is_empty() {
            command.args(["--join", &others.join(",")]);
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", self.spec.exe.display()))?;
        self.children[usize::from(id - 1)] = Some(child);
        Ok(())
    }

    /// SIGKILL member `id` and reap it.
    pub fn kill(&mut self, id: u16) -> anyhow::Result<()> {
        if let Some(mut child) = self.children[usize::from(id - 1)].take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// The first member that exited by itself, with its status.
    pub fn exited(&mut self) -> anyhow::Result<Option<(u16, std::process::ExitStatus)>> {
        for (i, child) in self.children.iter_mut().enumerate() {
            if let Some(child) = child {
                if let Some(status) = child.try_wait()? {
                    return Ok(Some((i as u16 + 1, status)));
                }
            }
        }
        Ok(None)
    }

    /// SIGTERM every member (a graceful stop), then wait for each.
    pub fn stop(&mut self) {
        for child in self.children.iter().flatten() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for child in self.children.iter_mut() {
            if let Some(mut child) = child.take() {
                let _ = child.wait();
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn open_append(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}
