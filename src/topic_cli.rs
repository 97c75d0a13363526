//! `loghouse topic create|list|describe|alter|delete` (Kafka's `kafka-topics` and Redpanda's
//! `rpk topic`, with their flag names where they have them).

use std::io::Write;

use clap::Subcommand;

use loghouse::client::{PartitionInfo, Topic, TopicSettings};

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic (succeeds, saying so, when an identical one exists).
    Create(CreateArgs),
    /// List the topics with their partition counts.
    List(AddrOnly),
    /// Show a topic's settings and, per partition, its offsets and size.
    Describe(NameArgs),
    /// Raise a topic's partition count and/or change its settings.
    Alter(AlterArgs),
    /// Delete a topic and every record in it.
    Delete(NameArgs),
}

#[derive(clap::Args)]
pub struct AddrOnly {
    #[command(flatten)]
    addr: crate::AddrArgs,
}

#[derive(clap::Args)]
pub struct NameArgs {
    #[command(flatten)]
    addr: crate::AddrArgs,
    name: String,
}

/// A topic's own settings; an absent one takes the node's (`serve` flags of the same meaning).
#[derive(clap::Args)]
pub struct SettingsArgs {
    /// Kafka's retention.bytes: per partition, the oldest segments are dropped while it holds
    /// more (0: no limit).
    #[arg(long, value_name = "BYTES")]
    retention_bytes: Option<u64>,
    /// Kafka's retention.ms: segments older than this are dropped (0: no limit).
    #[arg(long, value_name = "MS")]
    retention_ms: Option<u64>,
    /// Kafka's segment.bytes: a segment's size before the next one starts.
    #[arg(long, value_name = "BYTES")]
    segment_bytes: Option<u64>,
    /// Kafka's max.message.bytes: the largest record value a producer may send.
    #[arg(long, value_name = "BYTES")]
    max_message_bytes: Option<u32>,
}

impl SettingsArgs {
    fn settings(&self) -> TopicSettings {
        TopicSettings {
            retention_bytes_max: self.retention_bytes,
            retention_ms_max: self.retention_ms,
            segment_bytes_max: self.segment_bytes,
            record_bytes_max: self.max_message_bytes,
        }
    }

    fn is_empty(&self) -> bool {
        self.settings() == TopicSettings::default()
    }
}

#[derive(clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    addr: crate::AddrArgs,
    /// 1-249 characters of [A-Za-z0-9._-].
    name: String,
    #[arg(long, short = 'p', default_value_t = 1)]
    partitions: u32,
    #[command(flatten)]
    settings: SettingsArgs,
}

#[derive(clap::Args)]
pub struct AlterArgs {
    #[command(flatten)]
    addr: crate::AddrArgs,
    name: String,
    /// The new partition count: at least the current one.
    #[arg(long, short = 'p')]
    partitions: Option<u32>,
    #[command(flatten)]
    settings: SettingsArgs,
}

pub async fn run(command: TopicCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        TopicCommand::Create(args) => {
            let client = args.addr.connect().await?;
            let response = client
                .create_topic(&args.name, args.partitions, args.settings.settings())
                .await?;
            let partitions = response.topic.map_or(args.partitions, |t| t.partitions);
            match response.created {
                true => writeln!(
                    out,
                    "created topic {} ({})",
                    args.name,
                    count(partitions, "partition")
                )?,
                false => writeln!(
                    out,
                    "topic {} already exists with these settings ({})",
                    args.name,
                    count(partitions, "partition")
                )?,
            }
        }
        TopicCommand::List(args) => {
            let topics = args.addr.connect().await?.list_topics().await?;
            write_list(&mut out, &topics)?;
        }
        TopicCommand::Describe(args) => {
            let described = args
                .addr
                .connect()
                .await?
                .describe_topic(&args.name)
                .await?;
            let topic = described.topic.unwrap_or_else(|| Topic {
                name: args.name.clone(),
                ..Topic::default()
            });
            write_description(&mut out, &topic, &described.partitions)?;
        }
        TopicCommand::Alter(args) => {
            if args.partitions.is_none() && args.settings.is_empty() {
                anyhow::bail!("nothing to alter: give --partitions or a setting");
            }
            let client = args.addr.connect().await?;
            let before = match args.partitions {
                Some(_) => client.describe_topic(&args.name).await?.topic,
                None => None,
            };
            let after = client
                .alter_topic(&args.name, args.partitions, args.settings.settings())
                .await?;
            let partitions = (after.as_ref().map(|t| t.partitions)).or(args.partitions);
            match partitions {
                Some(n) => writeln!(
                    out,
                    "altered topic {} ({})",
                    args.name,
                    count(n, "partition")
                )?,
                None => writeln!(out, "altered topic {}", args.name)?,
            }
            let (old, new) = (before.map(|t| t.partitions), partitions);
            if let (Some(old), Some(new)) = (old, new) {
                if new > old {
                    let _ = writeln!(
                        std::io::stderr(),
                        "warning: {old} to {new} partitions: records with a key now go to \
                         murmur2(key) % {new}, so most keys move to another partition (their \
                         earlier records stay where they are; order per key holds only from now)"
                    );
                }
            }
        }
        TopicCommand::Delete(args) => {
            args.addr.connect().await?.delete_topic(&args.name).await?;
            writeln!(out, "deleted topic {}", args.name)?;
        }
    }
    Ok(())
}

fn count(n: u32, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

/// `NAME  PARTITIONS` per topic, by name.
fn write_list(out: &mut impl Write, topics: &[Topic]) -> std::io::Result<()> {
    let mut topics: Vec<&Topic> = topics.iter().collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let width = topics
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    writeln!(out, "{:<width$}  PARTITIONS", "NAME")?;
    for topic in topics {
        writeln!(out, "{:<width$}  {}", topic.name, topic.partitions)?;
    }
    Ok(())
}

/// The settings in force (`(topic)` when the topic sets them, else the node's), then a table of
/// partitions; LEADER and REPLICAS columns only on a cluster (when the node reports them).
fn write_description(
    out: &mut impl Write,
    topic: &Topic,
    partitions: &[PartitionInfo],
) -> std::io::Result<()> {
    let own = topic.settings.unwrap_or_default();
    let effective = topic.effective.unwrap_or_default();
    writeln!(out, "topic              {}", topic.name)?;
    writeln!(out, "partitions         {}", topic.partitions)?;
    let setting = |name: &str, own: Option<u64>, effective: Option<u64>, zero_is_none: bool| {
        let value = match effective.or(own) {
            None => "-".to_string(),
            Some(0) if zero_is_none => "none".to_string(),
            Some(v) => v.to_string(),
        };
        let source = if own.is_some() { "topic" } else { "node" };
        format!("{name:<18} {value} ({source})")
    };
    let to64 = |v: Option<u32>| v.map(u64::from);
    for line in [
        setting(
            "retention.bytes",
            own.retention_bytes_max,
            effective.retention_bytes_max,
            true,
        ),
        setting(
            "retention.ms",
            own.retention_ms_max,
            effective.retention_ms_max,
            true,
        ),
        setting(
            "segment.bytes",
            own.segment_bytes_max,
            effective.segment_bytes_max,
            false,
        ),
        setting(
            "max.message.bytes",
            to64(own.record_bytes_max),
            to64(effective.record_bytes_max),
            false,
        ),
    ] {
        writeln!(out, "{line}")?;
    }
    let cluster = partitions
        .iter()
        .any(|p| !p.replicas.is_empty() || !p.leader.is_empty());
    let mut rows = vec![{
        let mut header = vec!["PARTITION", "LOWEST", "NEXT", "BYTES", "SEGMENTS"];
        if cluster {
            header.extend(["LEADER", "REPLICAS"]);
        }
        header.into_iter().map(str::to_owned).collect::<Vec<_>>()
    }];
    for p in partitions {
        let mut row = vec![
            p.partition.to_string(),
            p.lowest_offset.to_string(),
            p.next_offset.to_string(),
            p.size_bytes.to_string(),
            p.segment_count.to_string(),
        ];
        if cluster {
            let leader = if p.leader.is_empty() { "-" } else { &p.leader };
            row.push(leader.to_owned());
            row.push(p.replicas.join(","));
        }
        rows.push(row);
    }
    write_table(out, &rows)?;
    for p in partitions.iter().filter(|p| !p.writes_stopped.is_empty()) {
        writeln!(
            out,
            "partition {}: writes STOPPED after a failed write or fsync: {}; restart the node",
            p.partition, p.writes_stopped
        )?;
    }
    Ok(())
}

/// Left-aligned columns two spaces apart (the last column unpadded).
fn write_table(out: &mut impl Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
        let mut out = Vec::new();
        write(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_description_shows_settings_by_source_and_a_partition_table() {
        let topic = Topic {
            name: "orders".into(),
            partitions: 2,
            settings: Some(TopicSettings {
                retention_bytes_max: Some(1_000_000),
                ..Default::default()
            }),
            effective: Some(TopicSettings {
                retention_bytes_max: Some(1_000_000),
                retention_ms_max: Some(0),
                segment_bytes_max: Some(67_108_864),
                record_bytes_max: Some(1_048_576),
            }),
        };
        let partitions = [
            PartitionInfo {
                partition: 0,
                next_offset: 12,
                size_bytes: 480,
                segment_count: 1,
                ..Default::default()
            },
            PartitionInfo {
                partition: 1,
                lowest_offset: 3,
                next_offset: 1000,
                size_bytes: 40_000,
                segment_count: 2,
                writes_stopped: "fsync failed".into(),
                ..Default::default()
            },
        ];
        let shown = text(|out| write_description(out, &topic, &partitions));
        assert_eq!(
            shown,
            "topic              orders\n\
             partitions         2\n\
             retention.bytes    1000000 (topic)\n\
             retention.ms       none (node)\n\
             segment.bytes      67108864 (node)\n\
             max.message.bytes  1048576 (node)\n\
             PARTITION  LOWEST  NEXT  BYTES  SEGMENTS\n\
             0          0       12    480    1\n\
             1          3       1000  40000  2\n\
             partition 1: writes STOPPED after a failed write or fsync: fsync failed; restart \
             the node\n"
        );
        let mut clustered = partitions.to_vec();
        clustered[0].leader = "1".into();
        clustered[0].replicas = vec!["1".into(), "2".into(), "3".into()];
        let shown = text(|out| write_description(out, &topic, &clustered[..1]));
        assert!(
            shown.ends_with(
                "PARTITION  LOWEST  NEXT  BYTES  SEGMENTS  LEADER  REPLICAS\n\
                             0          0       12    480    1         1       1,2,3\n"
            ),
            "{shown}"
        );
    }

    #[test]
    fn topics_list_by_name() {
        let topic = |name: &str, partitions| Topic {
            name: name.into(),
            partitions,
            ..Default::default()
        };
        let shown = text(|out| write_list(out, &[topic("orders", 3), topic("default", 1)]));
        assert_eq!(shown, "NAME     PARTITIONS\ndefault  1\norders   3\n");
    }
}
