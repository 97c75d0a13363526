//! A node started in-process on a temporary directory, for benchmarks and examples.

use std::sync::Arc;

use anyhow::Context;

use crate::config::NodeConfig;
use crate::io::{StdDisk, SystemClock};
use crate::server::Node;

pub struct EmbeddedNode {
    pub addr: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl EmbeddedNode {
    /// Starts a node with `sync` policy on 127.0.0.1 (a free port) in a fresh temporary directory
    /// under the current directory (so it measures the same disk as the project).
    pub async fn start(sync: &str) -> anyhow::Result<EmbeddedNode> {
        let dir = tempfile::Builder::new()
            .prefix(".loghouse-bench-")
            .tempdir_in(".")
            .context("creating a temporary data dir")?;
        let config = NodeConfig {
            data_dir: dir.path().to_owned(),
            sync: sync.to_owned(),
            ..NodeConfig::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let node = Node::open(
            config,
            Arc::new(StdDisk),
            Arc::new(SystemClock),
            addr.clone(),
        )?;
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let stopped = async {
                let _ = stop.await;
            };
            // madsim-tonic serves on an address, not a listener.
            #[cfg(madsim)]
            let listener = match listener.local_addr() {
                Ok(addr) => addr,
                Err(error) => return eprintln!("embedded node failed: {error}"),
            };
            if let Err(error) = crate::server::serve(node, listener, stopped).await {
                eprintln!("embedded node failed: {error}");
            }
        });
        Ok(EmbeddedNode {
            addr,
            shutdown: Some(shutdown),
            _dir: dir,
        })
    }
}

impl Drop for EmbeddedNode {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
