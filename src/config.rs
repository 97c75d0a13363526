//! Node configuration: every limit in one place, validated at start-up.
//!
//! Sources, later ones winning: built-in defaults, an optional TOML file (`--config`), then
//! `LOGHOUSE_*` environment variables and command-line flags (merged by `main`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::log::{LogConfig, SyncPolicy};
use crate::security::{AclText, GossipKey, Secrets, TlsMaterial};

pub const LISTEN_DEFAULT: &str = "127.0.0.1:7400";
pub const DATA_DIR_DEFAULT: &str = "loghouse-data";

/// Everything a node needs to start. Field names are the TOML keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub node_id: String,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `always` (default), `interval:MS` or `never`.
    pub sync: String,
    pub segment_bytes_max: u64,
    pub index_bytes_max: u64,
    pub record_bytes_max: u32,
    pub retention_bytes_max: Option<u64>,
    pub retention_ms_max: Option<u64>,
    /// How often retention looks for segments (or, on a cluster member, entries) to drop.
    pub retention_check_ms: u64,
    pub limits: Limits,
    /// Replication: absent for a standalone node (no Raft, no gossip).
    pub cluster: Option<ClusterConfig>,
    /// Where the metrics endpoint (HTTP, `GET /metrics` in Prometheus text format) listens.
    /// None (the default): no endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// The log filter (`info`, `loghouse=debug,warn`, ...) when neither `--log-level` nor
    /// `RUST_LOG` says one. Default `info`.
    pub log_level: Option<String>,
    /// `human` (default) or `json` logs on stderr.
    pub log_format: Option<String>,
    /// TLS, ACL and gossip key files (read at start-up into `secrets`).
    pub security: SecurityConfig,
    /// The material `security` names, loaded by [`NodeConfig::load_security`] (or set directly,
    /// e.g. by the simulation): the node never reads these files itself.
    #[serde(skip)]
    pub secrets: Secrets,
}

/// `[security]`: where the node's TLS material, ACL and gossip key are. Nothing set (the
/// default): plaintext gRPC, every request allowed, unauthenticated gossip.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// PEM certificate (chain) of this node: TLS on the gRPC port, and the identity it presents
    /// to other members. Needs `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA: mutual TLS. Clients and members must present a certificate it signed (its CN is
    /// the ACL subject); members verify each other with it. Required on a TLS cluster member.
    pub tls_client_ca: Option<PathBuf>,
    /// Casbin model (`model.conf`); with `acl_policy`, turns authorization on.
    pub acl_model: Option<PathBuf>,
    /// Casbin policy (`policy.csv`, lines `p, SUBJECT, OBJECT, ACTION`).
    pub acl_policy: Option<PathBuf>,
    /// Shared gossip key, hex (at least 16 bytes): every gossip datagram is authenticated with
    /// it (HMAC-SHA256). Prefer `gossip_key_file`.
    pub gossip_key: Option<String>,
    /// A file holding the gossip key in hex.
    pub gossip_key_file: Option<PathBuf>,
}

/// The log formats `log_format` / `--log-format` accept (`text` is `human`'s old name).
pub const LOG_FORMATS: [&str; 3] = ["human", "text", "json"];

/// A replicated node. Its `node_id` (the node's) must then be a nonzero integer. A node started
/// with `bootstrap` (or with an empty `join` list) starts a new cluster of itself if it has no
/// Raft state yet; the others join through gossip and are added by the leader (as learners, then
/// voters). Starting two bootstrapped nodes makes two clusters: bootstrap exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The UDP address gossip (SWIM) listens on and advertises.
    pub gossip_listen: SocketAddr,
    /// Gossip addresses of any members, to join (and, after a restart, rejoin) through.
    pub join: Vec<SocketAddr>,
    /// Start a new cluster if this node has no Raft state yet (implied by an empty `join`).
    pub bootstrap: bool,
    /// The address other members and clients use for this node's gRPC (default: `listen`).
    pub advertise_rpc: Option<String>,
    /// Voters the cluster aims for; further members are learners (replicate, serve reads).
    /// Odd (1, 3, 5 or 7): an even count tolerates no more failures than the odd one below it.
    pub voters_target: usize,
    /// Voters whose disks must hold a write's entry (fsync'd) before it is acknowledged, like
    /// Kafka's `min.insync.replicas`; learners never count. Default: a majority of
    /// `voters_target` (2 of 3); at most that majority. See [`ClusterConfig::min_replicas`].
    pub min_replicas: Option<usize>,
    /// While the cluster has fewer voters than `min_replicas` (it is forming), a write waits
    /// this long for enough of them, then fails with UNAVAILABLE saying why. 0: fail at once.
    pub min_replicas_wait_ms: u64,
    /// A voter seen down this long by gossip is demoted to learner.
    pub down_grace_ms: u64,
    /// A learner seen down this long is removed.
    pub remove_after_ms: u64,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Records merged into one Raft entry at most.
    pub entry_records_max: usize,
    /// Value bytes merged into one Raft entry at most.
    pub entry_bytes_max: usize,
    /// Raft entries proposed and not yet committed, at most.
    pub entries_in_flight_max: usize,
    /// Raft entries in one AppendEntries message, at most.
    pub payload_entries_max: u64,
    /// Bytes of entries in one AppendEntries message beyond its first entry. openraft gives an
    /// AppendEntries `heartbeat_ms` to complete (send, write, fsync), so keep this small enough
    /// for the network and disk: a catch-up that always times out never ends.
    pub replicate_bytes_max: usize,
    /// A write not committed within this long is answered UNAVAILABLE (it may still commit):
    /// bounds the wait on a leader cut off from the other voters.
    pub commit_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            gossip_listen: "127.0.0.1:7500"
                .parse()
                .expect("default gossip address parses"),
            join: Vec::new(),
            bootstrap: false,
            advertise_rpc: None,
            voters_target: 3,
            min_replicas: None,
            min_replicas_wait_ms: 10_000,
            down_grace_ms: 30_000,
            remove_after_ms: 300_000,
            // A follower elects after leader_lease (= election_timeout_max_ms) + a random
            // election timeout without heartbeats: 0.9-1.2 s after a leader dies.
            heartbeat_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            entry_records_max: 4_096,
            entry_bytes_max: 1 << 20,
            entries_in_flight_max: 4,
            payload_entries_max: 16,
            replicate_bytes_max: 2 << 20,
            commit_timeout_ms: 5_000,
        }
    }
}

impl ClusterConfig {
    /// The voters that must hold an entry before its write is acknowledged: `min_replicas`, or
    /// a majority of `voters_target`.
    pub fn min_replicas(&self) -> usize {
        self.min_replicas
            .unwrap_or_else(|| majority(self.voters_target))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        let voters = self.voters_target;
        if !(1..=7).contains(&voters) || voters % 2 == 0 {
            let why = if voters > 0 && voters % 2 == 0 {
                format!(
                    ": {voters} voters tolerate {} failure(s), no more than {} do, and need more \
                     of them up",
                    (voters - 1) / 2,
                    voters - 1
                )
            } else {
                String::new()
            };
            return invalid(format!(
                "cluster.voters_target = {voters} must be 1, 3, 5 or 7{why}"
            ));
        }
        let majority = majority(self.voters_target);
        if let Some(min_replicas) = self.min_replicas {
            if !(1..=majority).contains(&min_replicas) {
                return invalid(format!(
                    "cluster.min_replicas = {min_replicas} must be in 1..={majority} (at most a \
                     majority of voters_target = {}, or writes would stop whenever a tolerated \
                     failure happens)",
                    self.voters_target
                ));
            }
        }
        if self.min_replicas_wait_ms > MIN_REPLICAS_WAIT_MS_MAX {
            return invalid(format!(
                "cluster.min_replicas_wait_ms = {} must be in 0..={MIN_REPLICAS_WAIT_MS_MAX}",
                self.min_replicas_wait_ms
            ));
        }
        if self.heartbeat_ms == 0
            || self.election_timeout_min_ms <= self.heartbeat_ms
            || self.election_timeout_max_ms <= self.election_timeout_min_ms
        {
            return invalid(format!(
                "cluster timing must satisfy 0 < heartbeat_ms ({}) < election_timeout_min_ms ({}) \
                 < election_timeout_max_ms ({})",
                self.heartbeat_ms, self.election_timeout_min_ms, self.election_timeout_max_ms
            ));
        }
        if self.down_grace_ms < 2 * self.election_timeout_max_ms
            || self.remove_after_ms < self.down_grace_ms
        {
            return invalid(format!(
                "cluster.down_grace_ms ({}) must be at least twice election_timeout_max_ms, and \
                 remove_after_ms ({}) at least down_grace_ms",
                self.down_grace_ms, self.remove_after_ms
            ));
        }
        if self.commit_timeout_ms < self.election_timeout_max_ms {
            return invalid(format!(
                "cluster.commit_timeout_ms ({}) must be at least election_timeout_max_ms ({})",
                self.commit_timeout_ms, self.election_timeout_max_ms
            ));
        }
        let checks: [(&str, u64, u64); 5] = [
            (
                "entry_records_max",
                self.entry_records_max as u64,
                1_000_000,
            ),
            (
                "entry_bytes_max",
                self.entry_bytes_max as u64,
                ENTRY_BYTES_LIMIT as u64,
            ),
            (
                "entries_in_flight_max",
                self.entries_in_flight_max as u64,
                64,
            ),
            ("payload_entries_max", self.payload_entries_max, 1_024),
            (
                "replicate_bytes_max",
                self.replicate_bytes_max as u64,
                REPLICATE_BYTES_LIMIT as u64,
            ),
        ];
        for (name, value, max) in checks {
            if value == 0 || value > max {
                return invalid(format!("cluster.{name} = {value} must be in 1..={max}"));
            }
        }
        Ok(())
    }
}

/// The largest Raft message (both ends' gRPC limit): the replicated bytes plus one entry,
/// which is at most `entry_bytes_max` or one request of `message_bytes_max` that travels alone,
/// plus framing. Judged by the hard limits of those settings, not by their values on this
/// member: the entries a member sends or receives may have been made under other limits (its
/// own before a restart, or another leader's), and a replica that cannot take one never catches
/// up. Replicated appends are bounded by the hard limits only.
pub const RAFT_MESSAGE_BYTES_MAX: usize = REPLICATE_BYTES_LIMIT + MESSAGE_BYTES_LIMIT + (1 << 20);

/// The largest `limits.message_bytes_max` accepted.
pub const MESSAGE_BYTES_LIMIT: usize = 256 << 20;
/// The largest `cluster.entry_bytes_max` accepted.
pub const ENTRY_BYTES_LIMIT: usize = 64 << 20;
/// The largest `cluster.replicate_bytes_max` accepted.
pub const REPLICATE_BYTES_LIMIT: usize = 64 << 20;

/// The longest `cluster.min_replicas_wait_ms` accepted (10 minutes).
pub const MIN_REPLICAS_WAIT_MS_MAX: u64 = 600_000;

/// The smallest majority of `voters`.
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// Server-side limits. Requests beyond them get INVALID_ARGUMENT or RESOURCE_EXHAUSTED.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest gRPC message accepted or sent, in bytes.
    pub message_bytes_max: usize,
    /// Most records in one ProduceBatch request.
    pub batch_records_max: usize,
    /// Most records returned by one ConsumeBatch (and the default when a request says 0).
    pub consume_records_max: u32,
    /// Most bytes returned by one ConsumeBatch (and the default when a request says 0).
    pub consume_bytes_max: u64,
    /// Concurrent ConsumeStream/ConsumeBatchStream/ProduceStream calls per node.
    pub streams_max: usize,
    /// Produce requests queued for the group-commit writer before producers wait.
    pub append_queue_depth_max: usize,
    /// Records read but not yet acknowledged per ProduceStream before the server stops reading
    /// that stream. A durable produce waits on its fsync, so the window sets its throughput.
    pub stream_appends_in_flight_max: usize,
    /// Value bytes read but not yet acknowledged per ProduceStream before the server stops
    /// reading that stream (bounds a stream's memory whatever the record size).
    pub stream_appends_in_flight_bytes_max: u64,
    /// Responses buffered per consuming stream before the server waits for the client.
    pub stream_buffer_messages_max: usize,
    /// Bytes of responses buffered per consuming stream (bounds memory with large batches):
    /// a stream buffers at most this much, and at least one message.
    pub stream_buffer_bytes_max: u64,
    /// Value bytes of produce requests the node holds at once, all of them together: every
    /// ProduceStream's window, and each ProduceBatch and Produce call from the moment it is
    /// decoded until it is acknowledged. Over it, a ProduceStream stops being read (as when its
    /// own window is full; a batch larger than the whole bound waits for it to empty, then takes
    /// all of it), and a unary produce waits up to `admission_wait_ms` for room, then gets
    /// RESOURCE_EXHAUSTED (at once if it is larger than the whole bound). Accepted:
    /// `record_bytes_max..=1 TiB` (any one record fits); default 512 MiB.
    pub requests_in_flight_bytes_max: u64,
    /// log.v1 calls the node handles at once: a unary call from its arrival until its answer
    /// has been sent, a stream while it is being set up (open streams are bounded by
    /// `streams_max`). A call over the cap waits up to `admission_wait_ms` for a slot, with at
    /// most this many others, then gets RESOURCE_EXHAUSTED. Requests are decoded only once they
    /// have a slot, so this times `message_bytes_max` bounds the memory of requests being
    /// decoded. Accepted: 1..=65536; default 1024.
    pub calls_in_flight_max: usize,
    /// How long a call may wait for a slot (`calls_in_flight_max`), and a unary produce for
    /// room (`requests_in_flight_bytes_max`), before RESOURCE_EXHAUSTED. Accepted: 0..=60000
    /// (0: refuse at once); default 1000.
    pub admission_wait_ms: u64,
    /// How often the server sends an HTTP/2 PING on each connection (clients answer them
    /// without the application's help). Accepted: 100..=7200000; default 30000.
    pub http2_keepalive_interval_ms: u64,
    /// A connection whose PING is not answered within this long is closed, ending its calls
    /// and streams (and freeing their slots): a client that vanished without closing its
    /// connection, or a paused one, is reaped after about interval + timeout. Accepted:
    /// 100..=600000; default 10000.
    pub http2_keepalive_timeout_ms: u64,
    /// TCP keepalive on accepted connections: idle time before the first probe. Accepted:
    /// 1000..=7200000; default 60000.
    pub tcp_keepalive_ms: u64,
    /// Topics a node holds, the default topic included; creating one more is
    /// RESOURCE_EXHAUSTED. Accepted: 1..=10000; default 1000.
    pub topics_max: u32,
    /// Partitions a node holds, over all topics; creating or raising past it is
    /// RESOURCE_EXHAUSTED. It also bounds the label cardinality of the per-partition metrics.
    /// Accepted: 1..=100000; default 10000.
    pub partitions_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            message_bytes_max: 8 * 1024 * 1024,
            batch_records_max: 10_000,
            consume_records_max: 10_000,
            consume_bytes_max: 4 * 1024 * 1024,
            streams_max: 1024,
            append_queue_depth_max: 4096,
            stream_appends_in_flight_max: 1024,
            stream_appends_in_flight_bytes_max: 16 * 1024 * 1024,
            stream_buffer_messages_max: 64,
            stream_buffer_bytes_max: 8 * 1024 * 1024,
            requests_in_flight_bytes_max: 512 * 1024 * 1024,
            calls_in_flight_max: 1024,
            admission_wait_ms: 1_000,
            http2_keepalive_interval_ms: 30_000,
            http2_keepalive_timeout_ms: 10_000,
            tcp_keepalive_ms: 60_000,
            topics_max: 1_000,
            partitions_max: 10_000,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        let log = LogConfig::new(DATA_DIR_DEFAULT);
        NodeConfig {
            node_id: "node-0".into(),
            data_dir: PathBuf::from(DATA_DIR_DEFAULT),
            listen: LISTEN_DEFAULT
                .parse()
                .expect("default listen address parses"),
            sync: log.sync.to_string(),
            segment_bytes_max: log.segment_bytes_max,
            index_bytes_max: log.index_bytes_max,
            record_bytes_max: log.record_bytes_max,
            retention_bytes_max: None,
            retention_ms_max: None,
            retention_check_ms: 10_000,
            limits: Limits::default(),
            cluster: None,
            security: SecurityConfig::default(),
            secrets: Secrets::default(),
            metrics_listen: None,
            log_level: None,
            log_format: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("cannot read {setting} file {}: {source}", path.display())]
    ReadSecurityFile {
        setting: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid {setting}: {reason}")]
    Security {
        setting: &'static str,
        reason: String,
    },
}

impl NodeConfig {
    /// Reads a TOML file; keys it does not set keep their defaults.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// The storage engine's configuration (validated).
    pub fn log_config(&self) -> Result<LogConfig, ConfigError> {
        let sync: SyncPolicy = self.sync.parse().map_err(ConfigError::Invalid)?;
        let config = LogConfig {
            dir: self.data_dir.join("log"),
            segment_bytes_max: self.segment_bytes_max,
            index_bytes_max: self.index_bytes_max,
            record_bytes_max: self.record_bytes_max,
            initial_offset: 0,
            sync,
            retention_bytes_max: self.retention_bytes_max,
            retention_ms_max: self.retention_ms_max,
            metrics: None,
            corrupt_tail: Default::default(),
        };
        config
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(config)
    }

    /// The numeric node id a replicated node needs.
    pub fn raft_node_id(&self) -> Result<u64, ConfigError> {
        match self.node_id.parse::<u64>() {
            Ok(id) if id > 0 => Ok(id),
            _ => Err(ConfigError::Invalid(format!(
                "node_id = {:?}: a cluster member needs a nonzero integer id",
                self.node_id
            ))),
        }
    }

    /// Checks every setting; the error names the setting and what it accepts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.log_config()?;
        self.limits.validate(self.record_bytes_max)?;
        if self.retention_check_ms == 0 {
            return Err(ConfigError::Invalid(
                "retention_check_ms must be positive".into(),
            ));
        }
        if self.node_id.is_empty() {
            return Err(ConfigError::Invalid("node_id must not be empty".into()));
        }
        if let Some(format) = &self.log_format {
            if !LOG_FORMATS.contains(&format.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "log_format = {format:?} must be \"human\" or \"json\""
                )));
            }
        }
        if self.metrics_listen.is_some() && self.metrics_listen == Some(self.listen) {
            return Err(ConfigError::Invalid(format!(
                "metrics_listen = {} is the gRPC listen address; give the metrics endpoint its own",
                self.listen
            )));
        }
        self.validate_security()?;
        if let Some(cluster) = &self.cluster {
            self.raft_node_id()?;
            if self.sync != "always" {
                return Err(ConfigError::Invalid(format!(
                    "sync = {:?}: cluster members always fsync before acknowledging (sync = \"always\")",
                    self.sync
                )));
            }
            cluster.validate()?;
        }
        Ok(())
    }
}

impl NodeConfig {
    /// Reads the files `[security]` names into `secrets` (at start-up, synchronously) and checks
    /// them: missing files, unreadable PEM, a key that does not match its certificate, an ACL
    /// that does not parse, a bad gossip key.
    pub fn load_security(&mut self) -> Result<(), ConfigError> {
        let sec = &self.security;
        let tls = match (&sec.tls_cert, &sec.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsMaterial {
                cert_pem: read_file("security.tls_cert", cert)?,
                key_pem: read_file("security.tls_key", key)?,
                client_ca_pem: sec
                    .tls_client_ca
                    .as_deref()
                    .map(|p| read_file("security.tls_client_ca", p))
                    .transpose()?,
            }),
            _ => {
                return Err(security(
                    "security.tls_cert",
                    "tls_cert and tls_key go together",
                ))
            }
        };
        let acl = match (&sec.acl_model, &sec.acl_policy) {
            (None, None) => None,
            (Some(model), Some(policy)) => Some(AclText {
                model: read_text("security.acl_model", model)?,
                policy: read_text("security.acl_policy", policy)?,
            }),
            _ => {
                return Err(security(
                    "security.acl_model",
                    "acl_model and acl_policy go together",
                ))
            }
        };
        let gossip_key = match (&sec.gossip_key, &sec.gossip_key_file) {
            (None, None) => None,
            (Some(hex), None) => Some(hex.clone()),
            (None, Some(path)) => Some(read_text("security.gossip_key_file", path)?),
            _ => {
                return Err(security(
                    "security.gossip_key",
                    "set gossip_key or gossip_key_file, not both",
                ))
            }
        };
        let gossip_key = gossip_key
            .map(|hex| GossipKey::from_hex(&hex))
            .transpose()
            .map_err(|e| security("security.gossip_key", &e.to_string()))?;
        self.secrets = Secrets {
            tls,
            acl,
            gossip_key,
        };
        self.validate_security()
    }

    /// Checks the loaded `secrets` (and that what `[security]` names was loaded).
    fn validate_security(&self) -> Result<(), ConfigError> {
        let sec = &self.security;
        let named = sec.tls_cert.is_some()
            || sec.tls_key.is_some()
            || sec.acl_model.is_some()
            || sec.acl_policy.is_some()
            || sec.gossip_key.is_some()
            || sec.gossip_key_file.is_some();
        if named && self.secrets == Secrets::default() {
            return Err(security(
                "security",
                "its files were not loaded (NodeConfig::load_security)",
            ));
        }
        if sec.tls_client_ca.is_some() && sec.tls_cert.is_none() {
            return Err(security(
                "security.tls_client_ca",
                "mutual TLS needs tls_cert and tls_key",
            ));
        }
        if let Some(acl) = &self.secrets.acl {
            let acl = acl
                .authorizer()
                .map_err(|e| security("security.acl_model/acl_policy", &e.to_string()))?;
            if self.cluster.is_some() {
                self.check_raft_allowed(&acl)?;
            }
        }
        if let Some(tls) = &self.secrets.tls {
            if self.cluster.is_some() && tls.client_ca_pem.is_none() {
                return Err(security(
                    "security.tls_client_ca",
                    "a TLS cluster member needs it: members present their certificates to each \
                     other and verify them with this CA",
                ));
            }
            #[cfg(not(madsim))]
            tls.check()
                .map_err(|e| security("security.tls_*", &e.to_string()))?;
        }
        Ok(())
    }
}

impl NodeConfig {
    /// A member calls the others with its own identity (its certificate's CN, or "anonymous"
    /// without TLS): an ACL that does not grant it `raft` would stop replication, so say so now.
    fn check_raft_allowed(&self, acl: &crate::security::Authorizer) -> Result<(), ConfigError> {
        let subject = self.own_subject()?;
        let object = crate::security::acl::OBJECT_LOG;
        acl.check(&subject, object, crate::security::Action::Raft)
            .map_err(|denied| {
                security(
                    "security.acl_policy",
                    &format!(
                        "{denied}: members call each other as {subject:?}; add `p, {subject}, *, raft`"
                    ),
                )
            })
    }

    /// The subject this node has when it calls other members.
    fn own_subject(&self) -> Result<String, ConfigError> {
        #[cfg(not(madsim))]
        if let Some(tls) = &self.secrets.tls {
            let certs = crate::security::tls::certificates(&tls.cert_pem, "security.tls_cert")
                .map_err(|e| security("security.tls_cert", &e.to_string()))?;
            return crate::security::tls::common_name(&certs[0]).ok_or_else(|| {
                security(
                    "security.tls_cert",
                    "the certificate has no common name (CN)",
                )
            });
        }
        Ok(crate::security::ANONYMOUS.to_owned())
    }
}

fn security(setting: &'static str, reason: &str) -> ConfigError {
    ConfigError::Security {
        setting,
        reason: reason.to_owned(),
    }
}

fn read_file(setting: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::ReadSecurityFile {
        setting,
        path: path.to_owned(),
        source,
    })
}

fn read_text(setting: &'static str, path: &std::path::Path) -> Result<String, ConfigError> {
    let bytes = read_file(setting, path)?;
    String::from_utf8(bytes)
        .map_err(|_| security(setting, &format!("{} is not UTF-8 text", path.display())))
}

impl Limits {
    /// The largest response the node sends (the server's gRPC encoding limit):
    /// `message_bytes_max`, or one stored record whatever its size. A response carries at
    /// least one record, and a record written under a higher `record_bytes_max` must stay
    /// readable after the limits are lowered.
    pub fn response_bytes_max(&self) -> usize {
        let one_record = crate::log::RECORD_BYTES_LIMIT as usize + 64 * 1024;
        self.message_bytes_max.max(one_record)
    }

    fn validate(&self, record_bytes_max: u32) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        // A produce request carries one record plus a few bytes of framing.
        let record_message_bytes = record_bytes_max as usize + 1024;
        if self.message_bytes_max < record_message_bytes
            || self.message_bytes_max > MESSAGE_BYTES_LIMIT
        {
            return invalid(format!(
                "limits.message_bytes_max = {} must be at least record_bytes_max + 1 KiB ({record_message_bytes}) \
                 and at most 256 MiB",
                self.message_bytes_max
            ));
        }
        let checks: [(&str, u64, u64); 9] = [
            (
                "batch_records_max",
                self.batch_records_max as u64,
                1_000_000,
            ),
            (
                "consume_records_max",
                self.consume_records_max as u64,
                1_000_000,
            ),
            (
                "consume_bytes_max",
                self.consume_bytes_max,
                self.message_bytes_max as u64,
            ),
            ("streams_max", self.streams_max as u64, 1_000_000),
            (
                "append_queue_depth_max",
                self.append_queue_depth_max as u64,
                1_000_000,
            ),
            (
                "stream_appends_in_flight_max",
                self.stream_appends_in_flight_max as u64,
                65_536,
            ),
            (
                "stream_appends_in_flight_bytes_max",
                self.stream_appends_in_flight_bytes_max,
                1 << 30,
            ),
            (
                "stream_buffer_messages_max",
                self.stream_buffer_messages_max as u64,
                65_536,
            ),
            (
                "stream_buffer_bytes_max",
                self.stream_buffer_bytes_max,
                1 << 30,
            ),
        ];
        for (name, value, max) in checks {
            if value == 0 || value > max {
                return invalid(format!("limits.{name} = {value} must be in 1..={max}"));
            }
        }
        let ranges: [(&str, u64, u64, u64); 8] = [
            ("topics_max", self.topics_max.into(), 1, 10_000),
            ("partitions_max", self.partitions_max.into(), 1, 100_000),
            (
                "requests_in_flight_bytes_max",
                self.requests_in_flight_bytes_max,
                u64::from(record_bytes_max).max(1),
                1 << 40,
            ),
            (
                "calls_in_flight_max",
                self.calls_in_flight_max as u64,
                1,
                65_536,
            ),
            ("admission_wait_ms", self.admission_wait_ms, 0, 60_000),
            (
                "http2_keepalive_interval_ms",
                self.http2_keepalive_interval_ms,
                100,
                7_200_000,
            ),
            (
                "http2_keepalive_timeout_ms",
                self.http2_keepalive_timeout_ms,
                100,
                600_000,
            ),
            ("tcp_keepalive_ms", self.tcp_keepalive_ms, 1_000, 7_200_000),
        ];
        for (name, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                let why = match name {
                    "requests_in_flight_bytes_max" => {
                        " (at least record_bytes_max: any one record must fit)"
                    }
                    _ => "",
                };
                return invalid(format!(
                    "limits.{name} = {value} must be in {min}..={max}{why}"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        NodeConfig::default().validate().unwrap();
    }

    #[test]
    fn toml_overrides_only_what_it_names() {
        let config: NodeConfig =
            toml::from_str("listen = \"127.0.0.1:9000\"\n[limits]\nstreams_max = 7\n").unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.limits.streams_max, 7);
        assert_eq!(
            config.limits.batch_records_max,
            Limits::default().batch_records_max
        );
        assert_eq!(config.data_dir, PathBuf::from(DATA_DIR_DEFAULT));
        assert_eq!(
            config.metrics_listen, None,
            "the metrics endpoint is off by default"
        );
        let config: NodeConfig = toml::from_str(
            "metrics_listen = \"127.0.0.1:9464\"\nlog_level = \"debug\"\nlog_format = \"json\"\n",
        )
        .unwrap();
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(config.log_level.as_deref(), Some("debug"));
        config.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_key_named() {
        assert!(toml::from_str::<NodeConfig>("listn = \"x\"").is_err());
        let mut config = NodeConfig::default();
        config.limits.streams_max = 0;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("limits.streams_max"), "{err}");
        let config = NodeConfig {
            sync: "sometimes".into(),
            ..NodeConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("sometimes"), "{err}");
        let config = NodeConfig {
            log_format: Some("xml".into()),
            ..NodeConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("log_format"), "{err}");
        let mut config = NodeConfig::default();
        config.limits.stream_appends_in_flight_bytes_max = 2 << 30;
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("limits.stream_appends_in_flight_bytes_max = 2147483648"),
            "{err}"
        );
        let mut config = NodeConfig::default();
        config.limits.message_bytes_max = 1000;
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("message_bytes_max"));
    }

    fn member(cluster: ClusterConfig) -> NodeConfig {
        NodeConfig {
            node_id: "1".into(),
            cluster: Some(cluster),
            ..NodeConfig::default()
        }
    }

    #[test]
    fn min_replicas_defaults_to_a_majority_of_the_voters_target() {
        let toml = "node_id = \"1\"\n[cluster]\ngossip_listen = \"127.0.0.1:7500\"\n";
        let config: NodeConfig = toml::from_str(toml).unwrap();
        config.validate().unwrap();
        let cluster = config.cluster.unwrap();
        assert_eq!(cluster.min_replicas, None);
        assert_eq!(cluster.min_replicas(), 2);
        assert_eq!(cluster.min_replicas_wait_ms, 10_000);
        for (voters_target, min_replicas) in [(1, 1), (3, 2), (5, 3), (7, 4)] {
            let cluster = ClusterConfig {
                voters_target,
                ..ClusterConfig::default()
            };
            assert_eq!(cluster.min_replicas(), min_replicas);
            member(cluster).validate().unwrap();
        }
        let toml = "node_id = \"1\"\n[cluster]\nvoters_target = 5\nmin_replicas = 2\n\
                    min_replicas_wait_ms = 0\n";
        let config: NodeConfig = toml::from_str(toml).unwrap();
        config.validate().unwrap();
        assert_eq!(config.cluster.unwrap().min_replicas(), 2);
    }

    #[test]
    fn an_even_voters_target_and_a_min_replicas_above_the_majority_are_refused() {
        for voters_target in [0, 2, 4, 6, 8] {
            let error = member(ClusterConfig {
                voters_target,
                ..ClusterConfig::default()
            })
            .validate()
            .unwrap_err()
            .to_string();
            assert!(
                error.contains(&format!("cluster.voters_target = {voters_target}"))
                    && error.contains("1, 3, 5 or 7"),
                "{error}"
            );
        }
        for (voters_target, min_replicas) in [(3, 0), (3, 3), (1, 2), (5, 4)] {
            let error = member(ClusterConfig {
                voters_target,
                min_replicas: Some(min_replicas),
                ..ClusterConfig::default()
            })
            .validate()
            .unwrap_err()
            .to_string();
            assert!(
                error.contains(&format!("cluster.min_replicas = {min_replicas}")),
                "{error}"
            );
        }
        let error = member(ClusterConfig {
            min_replicas_wait_ms: MIN_REPLICAS_WAIT_MS_MAX + 1,
            ..ClusterConfig::default()
        })
        .validate()
        .unwrap_err()
        .to_string();
        assert!(error.contains("cluster.min_replicas_wait_ms"), "{error}");
    }

    /// Each node-wide bound and keepalive setting is refused outside its range, with the
    /// setting and the range named; the edges of each range are accepted.
    #[test]
    fn node_wide_bounds_and_keepalive_are_checked_with_their_ranges_named() {
        let defaults = Limits::default();
        assert_eq!(defaults.requests_in_flight_bytes_max, 512 << 20);
        type Set = fn(&mut Limits, u64);
        let cases: [(&str, Set, u64, u64); 6] = [
            (
                "requests_in_flight_bytes_max",
                |l, v| l.requests_in_flight_bytes_max = v,
                1024,
                1 << 40,
            ),
            (
                "calls_in_flight_max",
                |l, v| l.calls_in_flight_max = v as usize,
                1,
                65_536,
            ),
            (
                "admission_wait_ms",
                |l, v| l.admission_wait_ms = v,
                0,
                60_000,
            ),
            (
                "http2_keepalive_interval_ms",
                |l, v| l.http2_keepalive_interval_ms = v,
                100,
                7_200_000,
            ),
            (
                "http2_keepalive_timeout_ms",
                |l, v| l.http2_keepalive_timeout_ms = v,
                100,
                600_000,
            ),
            (
                "tcp_keepalive_ms",
                |l, v| l.tcp_keepalive_ms = v,
                1_000,
                7_200_000,
            ),
        ];
        for (name, set, min, max) in cases {
            let with = |value: u64| {
                let mut config = NodeConfig {
                    record_bytes_max: 1024,
                    ..NodeConfig::default()
                };
                set(&mut config.limits, value);
                config.validate()
            };
            with(min).unwrap_or_else(|e| panic!("{name} = {min} is accepted: {e}"));
            with(max).unwrap_or_else(|e| panic!("{name} = {max} is accepted: {e}"));
            let mut refused = vec![max + 1];
            if min > 0 {
                refused.push(min - 1);
            }
            for value in refused {
                let err = with(value).expect_err(name).to_string();
                assert!(
                    err.contains(&format!("limits.{name} = {value} must be in {min}..={max}")),
                    "{err}"
                );
            }
        }
        // The byte bound's floor follows record_bytes_max: one record must always fit.
        let mut config = NodeConfig::default();
        config.limits.requests_in_flight_bytes_max = u64::from(config.record_bytes_max) - 1;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("at least record_bytes_max"), "{err}");
        let config: NodeConfig = toml::from_str(
            "[limits]\nrequests_in_flight_bytes_max = 2097152\ncalls_in_flight_max = 8\n\
             admission_wait_ms = 0\nhttp2_keepalive_interval_ms = 500\n\
             http2_keepalive_timeout_ms = 250\ntcp_keepalive_ms = 5000\n",
        )
        .unwrap();
        assert_eq!(
            (
                config.limits.requests_in_flight_bytes_max,
                config.limits.calls_in_flight_max,
                config.limits.admission_wait_ms,
                config.limits.http2_keepalive_interval_ms,
                config.limits.http2_keepalive_timeout_ms,
                config.limits.tcp_keepalive_ms
            ),
            (2 << 20, 8, 0, 500, 250, 5_000)
        );
        config.validate().unwrap();
    }
}
