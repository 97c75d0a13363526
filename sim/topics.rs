//! The named-topic workload (standalone node only): one task creates, alters and deletes topics
//! of a small pool of names, produces to them (keyed, to a named partition, or round robin; one
//! value or a batch), reads acknowledged records back, and asks DescribeTopic and ListTopics,
//! all while the faults run. It does one call at a time, so the history's order is real time's,
//! and it resolves every admin call whose outcome it does not know (error or timeout) by
//! sending it again until it is answered (create and alter are idempotent; a delete answered
//! NOT_FOUND is done) before it does anything else. After the liveness restart it lists and
//! describes every name and reads every partition of every topic whole.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use loghouse::client::{Client, TopicPartition};
use loghouse::proto;
use tokio::time::{timeout, Instant};
use tonic::Code;

use crate::history::{
    AdminOutcome, Incarnation, ReadOutcome, TopicEvent, TopicProduceOutcome, TopicRead, TopicScan,
};
use crate::rng::Rng;
use crate::value::{self, ValueId};
use crate::workload::Ctx;

/// The names the workload uses (a re-created name is a new incarnation).
const NAMES: [&str; 3] = ["orders", "clicks", "audit.log"];
/// The producer id of every named topic's value (the default topic's producers count from 0).
pub const TOPIC_PRODUCER: u32 = 3000;
const PARTITIONS_MAX: u32 = 6;
const KEYS: u64 = 16;
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const SCAN_BATCH_RECORDS: u32 = 256;
/// Value padding at most: values stay far below any `record_bytes_max` config drift draws.
const PAD_MAX: u64 = 48;

/// A topic the worker knows to exist (its creation was answered).
#[derive(Debug, Clone, Copy)]
struct Known {
    incarnation: Incarnation,
    partitions: u32,
}

/// An admin call whose outcome is unknown: sent again until answered.
#[derive(Debug, Clone)]
enum Pending {
    Create {
        name: String,
        incarnation: Incarnation,
        partitions: u32,
    },
    Delete {
        name: String,
    },
    Alter {
        name: String,
        partitions: u32,
    },
}

pub struct TopicWorker {
    ctx: Ctx,
    rng: Rng,
    client: Option<Client>,
    next_seq: u64,
    next_incarnation: Incarnation,
    topics: BTreeMap<String, Known>,
    pending: Option<Pending>,
    /// Acknowledged records (name, incarnation, partition, offset), for reads.
    acked: Vec<(String, Incarnation, u32, u64)>,
}

fn settings() -> proto::TopicSettings {
    // No retention whatever the node's (config drift may set one): a partition keeps every
    // record, so the final scan must find every acknowledged one.
    proto::TopicSettings {
        retention_bytes_max: Some(0),
        retention_ms_max: Some(0),
        ..Default::default()
    }
}

fn admin_outcome(
    result: &Result<Result<(), tonic::Status>, tokio::time::error::Elapsed>,
) -> AdminOutcome {
    match result {
        Ok(Ok(())) => AdminOutcome::Acked,
        Ok(Err(status)) => match status.code() {
            Code::InvalidArgument | Code::AlreadyExists | Code::ResourceExhausted => {
                AdminOutcome::Refused(format!("{:?}", status.code()))
            }
            code => AdminOutcome::Maybe(format!("{code:?}")),
        },
        Err(_) => AdminOutcome::Maybe("timeout".into()),
    }
}

impl TopicWorker {
    pub fn new(ctx: Ctx, rng: Rng) -> TopicWorker {
        TopicWorker {
            ctx,
            rng,
            client: None,
            next_seq: 0,
            next_incarnation: 1,
            topics: BTreeMap::new(),
            pending: None,
            acked: Vec::new(),
        }
    }

    fn record(&self, event: TopicEvent) {
        let text = match &event {
            TopicEvent::Scan(scan) => format!(
                "scan of {} partition {}: digest {:016x}",
                scan.name,
                scan.partition,
                value::fnv1a(format!("{:?}", scan.entries).as_bytes())
            ),
            other => format!("{other:?}"),
        };
        self.ctx.shared.event(format!("topics: {text}"));
        self.ctx.shared.history.lock().topics.push(event);
    }

    async fn client(&mut self) -> Option<Client> {
        if let Some(client) = &self.client {
            return Some(client.clone());
        }
        match timeout(CONNECT_TIMEOUT, Client::connect(&self.ctx.addrs[0])).await {
            Ok(Ok(client)) => {
                self.client = Some(client.clone());
                Some(client)
            }
            _ => None,
        }
    }

    /// The safety-phase loop; returns the worker (the liveness phase finishes with it).
    pub async fn run(mut self) -> TopicWorker {
        while !*self.ctx.stop.borrow() {
            let ok = self.step().await;
            let pause_ms = if ok {
                self.rng.between(20, 80)
            } else {
                self.rng.between(100, 300)
            };
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        }
        self
    }

    /// One call; returns whether it was answered.
    async fn step(&mut self) -> bool {
        let Some(client) = self.client().await else {
            return false;
        };
        if self.pending.is_some() {
            return self.resolve(&client).await;
        }
        let roll = self.rng.below(100);
        let present: Vec<String> = self.topics.keys().cloned().collect();
        let absent: Vec<&str> = (NAMES.iter().copied())
            .filter(|n| !self.topics.contains_key(*n))
            .collect();
        if !absent.is_empty() && (present.is_empty() || roll < 6) {
            let name = absent[self.rng.below(absent.len() as u64) as usize].to_owned();
            let partitions = self.rng.between(1, 4) as u32;
            let incarnation = self.next_incarnation;
            self.next_incarnation += 1;
            self.pending = Some(Pending::Create {
                name,
                incarnation,
                partitions,
            });
            return self.resolve(&client).await;
        }
        if present.is_empty() {
            return self.describe(&client, NAMES[0]).await;
        }
        let name = present[self.rng.below(present.len() as u64) as usize].clone();
        match roll {
            0..=9 => {
                self.pending = Some(Pending::Delete { name });
                self.resolve(&client).await
            }
            10..=12 => {
                let current = self.topics[&name].partitions;
                if current >= PARTITIONS_MAX {
                    return self.describe(&client, &name).await;
                }
                let partitions = (current + self.rng.between(1, 2) as u32).min(PARTITIONS_MAX);
                self.pending = Some(Pending::Alter { name, partitions });
                self.resolve(&client).await
            }
            13..=16 => {
                let name = NAMES[self.rng.below(NAMES.len() as u64) as usize];
                self.describe(&client, name).await
            }
            17..=18 => self.list(&client).await.is_some(),
            19..=33 => self.read(&client).await,
            _ => self.produce(&client, &name).await,
        }
    }

    /// Sends the pending admin call once; clears it when answered.
    async fn resolve(&mut self, client: &Client) -> bool {
        let Some(pending) = self.pending.clone() else {
            return true;
        };
        let mut raw = client.raw();
        match pending {
            Pending::Create {
                name,
                incarnation,
                partitions,
            } => {
                let request = proto::CreateTopicRequest {
                    name: name.clone(),
                    partitions,
                    settings: Some(settings()),
                };
                let result = timeout(CALL_TIMEOUT, async {
                    raw.create_topic(request).await.map(|_| ())
                })
                .await;
                let outcome = admin_outcome(&result);
                self.record(TopicEvent::Create {
                    name: name.clone(),
                    incarnation,
                    partitions,
                    outcome: outcome.clone(),
                });
                match outcome {
                    AdminOutcome::Acked => {
                        let known = Known {
                            incarnation,
                            partitions,
                        };
                        self.topics.insert(name, known);
                        self.pending = None;
                        true
                    }
                    AdminOutcome::Refused(_) => {
                        self.pending = None;
                        true
                    }
                    AdminOutcome::Maybe(_) => false,
                }
            }
            Pending::Delete { name } => {
                let request = proto::DeleteTopicRequest { name: name.clone() };
                let result = timeout(CALL_TIMEOUT, async {
                    match raw.delete_topic(request).await {
                        // Gone either way (an earlier attempt deleted it).
                        Err(status) if status.code() == Code::NotFound => Ok(()),
                        other => other.map(|_| ()),
                    }
                })
                .await;
                let outcome = admin_outcome(&result);
                self.record(TopicEvent::Delete {
                    name: name.clone(),
                    outcome: outcome.clone(),
                });
                match outcome {
                    AdminOutcome::Acked => {
                        self.topics.remove(&name);
                        self.acked.retain(|(n, _, _, _)| *n != name);
                        self.pending = None;
                        true
                    }
                    AdminOutcome::Refused(_) => {
                        self.pending = None;
                        true
                    }
                    AdminOutcome::Maybe(_) => false,
                }
            }
            Pending::Alter { name, partitions } => {
                let request = proto::AlterTopicRequest {
                    name: name.clone(),
                    partitions: Some(partitions),
                    settings: Some(proto::TopicSettings::default()),
                };
                let result = timeout(CALL_TIMEOUT, async {
                    raw.alter_topic(request).await.map(|_| ())
                })
                .await;
                let outcome = admin_outcome(&result);
                self.record(TopicEvent::Alter {
                    name: name.clone(),
                    partitions,
                    outcome: outcome.clone(),
                });
                match outcome {
                    AdminOutcome::Acked => {
                        if let Some(known) = self.topics.get_mut(&name) {
                            known.partitions = partitions;
                        }
                        self.pending = None;
                        true
                    }
                    AdminOutcome::Refused(_) => {
                        self.pending = None;
                        true
                    }
                    AdminOutcome::Maybe(_) => false,
                }
            }
        }
    }

    /// DescribeTopic `name`; returns whether it was answered (and records it then).
    async fn describe(&mut self, client: &Client, name: &str) -> bool {
        self.describe_infos(client, name).await.is_some()
    }

    /// DescribeTopic: Some(None) for NOT_FOUND, Some(Some(partition infos)) when found.
    async fn describe_infos(
        &mut self,
        client: &Client,
        name: &str,
    ) -> Option<Option<Vec<proto::PartitionInfo>>> {
        let answer = timeout(CALL_TIMEOUT, client.describe_topic(name)).await;
        let found = match answer {
            Ok(Ok(response)) => {
                let count = response.topic.as_ref().map_or(0, |t| t.partitions);
                Some((count, response.partitions))
            }
            Ok(Err(error)) if error.code() == Some(Code::NotFound) => None,
            _ => return None,
        };
        self.record(TopicEvent::Describe {
            name: name.to_owned(),
            found: (found.as_ref()).map(|(count, infos)| (*count, infos.len() as u32)),
        });
        Some(found.map(|(_, infos)| infos))
    }

    async fn list(&mut self, client: &Client) -> Option<BTreeMap<String, u32>> {
        let Ok(Ok(listed)) = timeout(CALL_TIMEOUT, client.list_topics()).await else {
            return None;
        };
        let topics: BTreeMap<String, u32> =
            listed.into_iter().map(|t| (t.name, t.partitions)).collect();
        self.record(TopicEvent::List {
            topics: topics.clone(),
        });
        Some(topics)
    }

    /// Reads one acknowledged record of a topic that still exists.
    async fn read(&mut self, client: &Client) -> bool {
        if self.acked.is_empty() {
            return true;
        }
        let pick = self.rng.below(self.acked.len() as u64) as usize;
        let (name, incarnation, partition, offset) = self.acked[pick].clone();
        let at = TopicPartition::new(name.clone(), partition);
        let answer = timeout(CALL_TIMEOUT, client.consume_at(&at, offset)).await;
        let outcome = match answer {
            Ok(Ok(record)) if record.offset != offset => ReadOutcome::Value(Err(format!(
                "asked for offset {offset}, got a record saying offset {}",
                record.offset
            ))),
            Ok(Ok(record)) => ReadOutcome::Value(value::decode(&record.value)),
            Ok(Err(error)) if error.code() == Some(Code::DataLoss) => ReadOutcome::DataLoss,
            Ok(Err(error)) => ReadOutcome::Error(format!("{:?}", error.code())),
            Err(_) => ReadOutcome::Error("timeout".into()),
        };
        let answered = !matches!(outcome, ReadOutcome::Error(_));
        self.record(TopicEvent::Read(TopicRead {
            name,
            incarnation,
            partition,
            offset,
            outcome,
        }));
        answered
    }

    /// One Produce or ProduceBatch to `name`: keyed, to a named partition, or neither.
    async fn produce(&mut self, client: &Client, name: &str) -> bool {
        let known = self.topics[name];
        let (key, partition) = match self.rng.below(100) {
            0..=44 => {
                let key = format!("user-{}", self.rng.below(KEYS));
                (key.into_bytes(), None)
            }
            45..=59 => (
                Vec::new(),
                Some(self.rng.below(u64::from(known.partitions)) as u32),
            ),
            _ => (Vec::new(), None),
        };
        let count = if self.rng.percent(70) {
            1
        } else {
            self.rng.between(2, 4)
        };
        let mut ids = Vec::new();
        let mut records = Vec::new();
        for _ in 0..count {
            let id = ValueId {
                producer: TOPIC_PRODUCER,
                seq: self.next_seq,
            };
            self.next_seq += 1;
            let pad = self.rng.below(PAD_MAX + 1) as u16;
            ids.push(id);
            records.push(proto::Record {
                value: Bytes::from(value::encode(id, pad)),
                ..Default::default()
            });
        }
        let mut raw = client.raw();
        let (topic, key_bytes) = (name.to_owned(), Bytes::from(key.clone()));
        let call = async {
            if count == 1 {
                let request = proto::ProduceRequest {
                    record: records.pop(),
                    topic,
                    partition,
                    key: key_bytes,
                };
                let response = raw.produce(request).await?.into_inner();
                Ok::<_, tonic::Status>((response.partition, response.offset))
            } else {
                let request = proto::ProduceBatchRequest {
                    records,
                    topic,
                    partition,
                    key: key_bytes,
                };
                let response = raw.produce_batch(request).await?.into_inner();
                Ok((response.partition, response.first_offset))
            }
        };
        let outcome = match timeout(CALL_TIMEOUT, call).await {
            Ok(Ok((partition, first))) => TopicProduceOutcome::Acked { partition, first },
            Ok(Err(status)) if status.code() == Code::InvalidArgument => {
                TopicProduceOutcome::Refused("InvalidArgument".into())
            }
            Ok(Err(status)) => TopicProduceOutcome::Maybe(format!("{:?}", status.code())),
            Err(_) => TopicProduceOutcome::Maybe("timeout".into()),
        };
        let acked = matches!(outcome, TopicProduceOutcome::Acked { .. });
        if let TopicProduceOutcome::Acked { partition, first } = outcome {
            for i in 0..count {
                let at = (name.to_owned(), known.incarnation, partition, first + i);
                self.acked.push(at);
            }
        }
        self.record(TopicEvent::Produce {
            name: name.to_owned(),
            incarnation: known.incarnation,
            key,
            partition,
            values: ids,
            outcome,
        });
        acked
    }

    /// After the liveness restart: resolves the pending admin call, lists the topics, describes
    /// every name and reads every partition of every topic the worker knows whole, before
    /// `deadline`. Returns the bounds missed.
    pub async fn finish(mut self, deadline: Instant) -> Vec<String> {
        let poll = Duration::from_millis(100);
        let client = loop {
            if let Some(client) = self.client().await {
                break client;
            }
            if Instant::now() >= deadline {
                return vec!["topics: cannot connect to the node within the liveness bound".into()];
            }
            tokio::time::sleep(poll).await;
        };
        while self.pending.is_some() {
            if Instant::now() >= deadline {
                return vec![format!(
                    "topics: {:?} got no answer within the liveness bound",
                    self.pending
                )];
            }
            if !self.resolve(&client).await {
                tokio::time::sleep(poll).await;
            }
        }
        while self.list(&client).await.is_none() {
            if Instant::now() >= deadline {
                return vec!["topics: ListTopics got no answer within the liveness bound".into()];
            }
            tokio::time::sleep(poll).await;
        }
        let mut failures = Vec::new();
        for name in NAMES {
            let infos = loop {
                if let Some(found) = self.describe_infos(&client, name).await {
                    break found;
                }
                if Instant::now() >= deadline {
                    return vec![format!(
                        "topics: DescribeTopic {name} got no answer within the liveness bound"
                    )];
                }
                tokio::time::sleep(poll).await;
            };
            let (Some(known), Some(infos)) = (self.topics.get(name).copied(), infos) else {
                continue;
            };
            for info in infos {
                let at = TopicPartition::new(name, info.partition);
                let mut scan = TopicScan {
                    name: name.to_owned(),
                    incarnation: known.incarnation,
                    partition: info.partition,
                    lowest_offset: info.lowest_offset,
                    next_offset: info.next_offset,
                    entries: BTreeMap::new(),
                };
                let mut offset = info.lowest_offset;
                while offset < info.next_offset {
                    if Instant::now() >= deadline {
                        failures.push(format!(
                            "topics: the scan of {name} partition {} read only up to offset {offset} of {}",
                            info.partition, info.next_offset
                        ));
                        break;
                    }
                    let answer = timeout(
                        CALL_TIMEOUT,
                        client.consume_batch_at(&at, offset, SCAN_BATCH_RECORDS),
                    )
                    .await;
                    match answer {
                        Ok(Ok(response)) if !response.records.is_empty() => {
                            for record in response.records {
                                if record.offset >= info.next_offset {
                                    break;
                                }
                                offset = offset.max(record.offset + 1);
                                let decoded = value::decode(&record.value);
                                scan.entries
                                    .insert(record.offset, ReadOutcome::Value(decoded));
                            }
                        }
                        Ok(Err(error)) if error.code() == Some(Code::DataLoss) => {
                            scan.entries.insert(offset, ReadOutcome::DataLoss);
                            offset += 1;
                        }
                        _ => tokio::time::sleep(poll).await,
                    }
                }
                self.ctx.shared.event(format!(
                    "topics: scan of {name} partition {}: {} entries in [{}, {})",
                    info.partition,
                    scan.entries.len(),
                    info.lowest_offset,
                    info.next_offset
                ));
                self.record(TopicEvent::Scan(scan));
            }
        }
        failures
    }
}
