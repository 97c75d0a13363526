//! `loghouse cluster up|status`: a local cluster in one command, and a view of any cluster.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;

use loghouse::bench::local_cluster::{LocalCluster, LocalClusterSpec};
use loghouse::client::Client;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Start N members on 127.0.0.1 (child processes of this one) and stop them on Ctrl-C.
    /// Node i serves gRPC on BASE_PORT+i and gossip on GOSSIP_BASE_PORT+i; node 1 bootstraps.
    /// Each member joins through all the others.
    Up(UpArgs),
    /// Show the members, the leader, terms and each member's committed offset.
    Status(StatusArgs),
}

#[derive(clap::Args)]
pub struct UpArgs {
    /// Members to start.
    #[arg(short = 'n', long, default_value_t = 3)]
    nodes: u16,
    /// Parent of the members' data directories (node-1, node-2, ...).
    #[arg(long, default_value = "loghouse-cluster")]
    dir: PathBuf,
    #[arg(long, default_value_t = 7400)]
    base_port: u16,
    #[arg(long, default_value_t = 7500)]
    gossip_base_port: u16,
    /// Secure cluster: mutual TLS, the ACL and the gossip key from DIR (made by `loghouse certs
    /// --dir DIR` with at least N nodes; made here if DIR has no ca.pem).
    #[arg(long, value_name = "DIR")]
    secure: Option<PathBuf>,
    /// Node i serves metrics (HTTP, `/metrics`) on 127.0.0.1:METRICS_BASE_PORT+i [default: off]
    #[arg(long)]
    metrics_base_port: Option<u16>,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Any member's gRPC address.
    #[arg(long, env = "LOGHOUSE_ADDR", default_value = loghouse::config::LISTEN_DEFAULT)]
    addr: String,
    #[command(flatten)]
    tls: loghouse::client::TlsOptions,
}

pub async fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Up(args) => up(args).await,
        ClusterCommand::Status(args) => status(args).await,
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let spec = LocalClusterSpec {
        exe: std::env::current_exe().context("cannot find the loghouse binary")?,
        nodes: args.nodes,
        dir: args.dir.clone(),
        base_port: args.base_port,
        gossip_base_port: args.gossip_base_port,
        extra_args: match &args.secure {
            Some(dir) => secure_args(dir, args.nodes)?,
            None => Vec::new(),
        },
        metrics_base_port: args.metrics_base_port,
    };
    let mut cluster = LocalCluster::start(spec)?;
    let mut out = std::io::stdout().lock();
    for id in 1..=cluster.spec.nodes {
        writeln!(
            out,
            "node {id}: gRPC {}  gossip {}  data {}  log {}",
            cluster.rpc_addr(id),
            cluster.gossip_addr(id),
            cluster.data_dir(id).display(),
            cluster.log_path(id).display()
        )?;
        if let Some(addr) = cluster.metrics_addr(id) {
            writeln!(out, "        metrics http://{addr}/metrics")?;
        }
    }
    let tls = match &args.secure {
        Some(dir) => {
            let dir = dir.display();
            format!(" --ca-cert {dir}/ca.pem --cert {dir}/root.pem --key {dir}/root-key.pem")
        }
        None => String::new(),
    };
    writeln!(
        out,
        "cluster starting; `loghouse cluster status --addr {}{tls}`; Ctrl-C stops it",
        cluster.rpc_addr(1)
    )?;
    drop(out);
    let outcome = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        exited = watch_members(&mut cluster) => exited,
    };
    cluster.stop();
    outcome
}

/// The `serve` flags of a secure member (`{id}` is the member's id), making the certificates
/// first if `dir` has none.
#[cfg_attr(madsim, allow(unused_variables))]
fn secure_args(dir: &std::path::Path, nodes: u16) -> anyhow::Result<Vec<String>> {
    #[cfg(not(madsim))]
    if !dir.join("ca.pem").exists() {
        let spec = loghouse::security::certs::CertsSpec {
            dir: dir.to_owned(),
            nodes,
            clients: vec!["root".into(), "nobody".into()],
            hosts: vec!["localhost".into(), "127.0.0.1".into()],
        };
        loghouse::security::certs::write_cluster_certs(&spec)?;
        writeln!(
            std::io::stdout(),
            "made certificates, a gossip key and an ACL in {}",
            dir.display()
        )?;
    }
    let dir = std::path::absolute(dir).context("cannot resolve the certificate directory")?;
    let path = |name: &str| dir.join(name).display().to_string();
    Ok([
        ("--tls-cert", path("node-{id}.pem")),
        ("--tls-key", path("node-{id}-key.pem")),
        ("--tls-client-ca", path("ca.pem")),
        ("--acl-model", path("acl/model.conf")),
        ("--acl-policy", path("acl/policy.csv")),
        ("--gossip-key-file", path("gossip.key")),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect())
}

/// Returns an error as soon as a member exits by itself.
async fn watch_members(cluster: &mut LocalCluster) -> anyhow::Result<()> {
    loop {
        if let Some((id, status)) = cluster.exited()? {
            anyhow::bail!(
                "node {id} exited ({status}); see {}",
                cluster.log_path(id).display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let tls = args.tls.load()?;
    let client = Client::connect_with(&args.addr, tls.as_ref()).await?;
    let servers = client.servers().await?;
    let mut out = std::io::stdout().lock();
    // The leader reports how far behind its last entry each member's log is.
    let mut lag_by_id = std::collections::BTreeMap::new();
    if let Some(leader) = servers.iter().find(|s| s.is_leader) {
        if let Ok(leader) = Client::connect_with(&leader.rpc_addr, tls.as_ref()).await {
            for server in leader.servers().await.unwrap_or_default() {
                if let Some(lag) = server.replication_lag {
                    lag_by_id.insert(server.id, lag);
                }
            }
        }
    }
    writeln!(
        out,
        "{:<6} {:<22} {:<8} {:<6} {:>6} {:>12} {:>10} {:>10} {:>8}",
        "ID", "ADDRESS", "ROLE", "GOSSIP", "TERM", "COMMITTED", "COMMIT_IDX", "APPLIED", "LAG"
    )?;
    for server in servers {
        // Each member reports its own term, committed offset and Raft indexes.
        let own = match Client::connect_with(&server.rpc_addr, tls.as_ref()).await {
            Ok(member) => member
                .servers()
                .await
                .ok()
                .and_then(|list| list.into_iter().find(|s| s.id == server.id)),
            Err(_) => None,
        };
        let role = if server.is_leader {
            "leader"
        } else if server.is_voter {
            "voter"
        } else {
            "learner"
        };
        let (term, committed, commit_index, applied) = match &own {
            Some(own) => (
                own.term.to_string(),
                own.committed_offset.to_string(),
                own.commit_index.to_string(),
                own.applied_index.to_string(),
            ),
            None => ("-".into(), "unreachable".into(), "-".into(), "-".into()),
        };
        let gossip = match (server.alive, server.suspect) {
            (true, false) => "up",
            (true, true) => "suspect",
            (false, _) => "down",
        };
        let lag = lag_by_id
            .get(&server.id)
            .map_or_else(|| "-".to_string(), u64::to_string);
        writeln!(
            out,
            "{:<6} {:<22} {:<8} {:<6} {:>6} {:>12} {:>10} {:>10} {:>8}",
            server.id, server.rpc_addr, role, gossip, term, committed, commit_index, applied, lag
        )?;
    }
    writeln!(
        out,
        "COMMITTED is a client offset (records); COMMIT_IDX, APPLIED and LAG (behind the \
         leader's last entry) count Raft entries."
    )?;
    Ok(())
}
