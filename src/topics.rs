//! The topics a configuration needs, as an operator meets them: `flagtally topics
//! check` lists which exist and which are missing, `flagtally topics create` makes the
//! missing ones (idempotent; `--dry-run` prints the plan), `validate --broker` and `run`
//! name the missing ones in one line. Most production clusters (and the project's own
//! test broker) do not create topics on demand.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::Config;
use crate::kafka::acl::{self, Access, Operation};
use crate::kafka::producer::block_on;

const TIMEOUT: Duration = Duration::from_secs(15);

/// One topic the configuration names, and how `create` would make it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub name: String,
    /// What flagtally uses it for (`input`, `summary`, `dead-letter`, `checkpoint`, …).
    pub role: String,
    pub partitions: i32,
    /// −1: the broker's default.
    pub replication: i32,
    pub settings: Vec<(String, String)>,
}

/// How `create` makes topics.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Partitions of input and output topics (the checkpoint topic has one).
    pub partitions: i32,
    /// −1: the broker's `default.replication.factor`.
    pub replication: i32,
    /// `retention.ms` of output, dead-letter and late topics (their records carry event
    /// time as their timestamp, so a short retention deletes replayed old windows at
    /// once); `None`: the broker's default.
    pub output_retention: Option<Duration>,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            partitions: 6,
            replication: -1,
            output_retention: Some(Duration::from_secs(7 * 24 * 3600)),
        }
    }
}

/// Every topic `config` reads or writes. Input topics given as patterns (`^…`) are
/// left out: they name no topic.
pub fn plan(config: &Config, layout: &Layout) -> Vec<Planned> {
    let mut roles: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for t in config
        .kafka
        .input_topics
        .iter()
        .filter(|t| !t.starts_with('^'))
    {
        roles.entry(t.clone()).or_default().push("input");
    }
    for kind in crate::emit::OutputKind::ALL {
        if let Some(t) = config.output.topics.topic(kind) {
            roles.entry(t.to_owned()).or_default().push(kind.name());
        }
    }
    if let Some(t) = &config.output.dead_letter_topic {
        roles.entry(t.clone()).or_default().push("dead-letter");
    }
    // A sink writes what its destination refuses to its own dead-letter topic when it
    // names one (the topics it reads are outputs, planned above).
    for sink in &config.sinks {
        if let Some(t) = &sink.delivery.dead_letter_topic {
            let roles = roles.entry(t.clone()).or_default();
            if !roles.contains(&"sink dead-letter") {
                roles.push("sink dead-letter");
            }
        }
    }
    roles
        .entry(config.processing.checkpoint_topic.clone())
        .or_default()
        .push("checkpoint");
    roles
        .into_iter()
        .map(|(name, roles)| {
            let checkpoint = roles.contains(&"checkpoint");
            let input = roles.contains(&"input");
            let mut settings = Vec::new();
            if checkpoint {
                settings.push(("cleanup.policy".to_owned(), "compact".to_owned()));
            } else if !input && let Some(r) = layout.output_retention {
                settings.push(("retention.ms".to_owned(), r.as_millis().to_string()));
            }
            Planned {
                role: roles.join(", "),
                partitions: if checkpoint { 1 } else { layout.partitions },
                replication: layout.replication,
                settings,
                name,
            }
        })
        .collect()
}

fn admin(config: &Config) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.kafka.brokers);
    config.kafka.apply(&mut cc, &Default::default());
    cc.create()
}

/// The planned topics the broker does not have.
pub fn missing(config: &Config, planned: &[Planned]) -> Result<Vec<Planned>, KafkaError> {
    let admin = admin(config)?;
    let md = admin.inner().fetch_metadata(None, TIMEOUT)?;
    let have: std::collections::HashSet<&str> = md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| t.name())
        .collect();
    Ok(planned
        .iter()
        .filter(|p| !have.contains(p.name.as_str()))
        .cloned()
        .collect())
}

/// What flagtally's principal must be allowed on each topic and group
/// (docs/operations.md, "ACLs").
pub fn needed_acls(
    config: &Config,
) -> (
    BTreeMap<String, BTreeSet<Operation>>,
    BTreeMap<String, BTreeSet<Operation>>,
) {
    let mut topics: BTreeMap<String, BTreeSet<Operation>> = BTreeMap::new();
    let mut need = |t: &str, ops: &[Operation]| {
        topics
            .entry(t.to_owned())
            .or_default()
            .extend(ops.iter().copied());
    };
    let write = [Operation::Write, Operation::DescribeConfigs];
    for t in config
        .kafka
        .input_topics
        .iter()
        .filter(|t| !t.starts_with('^'))
    {
        need(t, &[Operation::Read]);
    }
    for kind in crate::emit::OutputKind::ALL {
        if let Some(t) = config.output.topics.topic(kind) {
            need(t, &write);
        }
    }
    if let Some(t) = &config.output.dead_letter_topic {
        need(t, &write);
    }
    need(&config.processing.checkpoint_topic, &[Operation::Read]);
    need(&config.processing.checkpoint_topic, &write);
    let mut groups: BTreeMap<String, BTreeSet<Operation>> = BTreeMap::new();
    groups
        .entry(config.kafka.group_id.clone())
        .or_default()
        .insert(Operation::Read);
    for sink in &config.sinks {
        let sink = &sink.delivery;
        for t in &sink.topics {
            need(t, &[Operation::Read]);
        }
        if let Some(t) = &sink.dead_letter_topic {
            need(t, &[Operation::Write]);
        }
        groups
            .entry(sink.group())
            .or_default()
            .insert(Operation::Read);
    }
    (topics, groups)
}

/// What the brokers say flagtally's principal may not do of what it needs: one line
/// per topic or group (`topic flagtally.summaries: Write, DescribeConfigs`). Topics
/// the brokers do not know are left to [`missing`]; one the principal may not
/// describe is named as such (the brokers hide it: it looks missing).
pub fn lacking_acls(config: &Config) -> Result<Vec<String>, String> {
    let (topics, groups) = needed_acls(config);
    let admin = admin(config).map_err(|e| e.to_string())?;
    let names: Vec<&str> = topics.keys().map(String::as_str).collect();
    let topic_access = acl::topics(&admin, &names, TIMEOUT)?;
    let names: Vec<&str> = groups.keys().map(String::as_str).collect();
    let group_access = acl::groups(&admin, &names, TIMEOUT)?;
    let mut lines = Vec::new();
    for (what, needed, access) in topics
        .iter()
        .map(|(t, ops)| (format!("topic {t}"), ops, topic_access.get(t)))
        .chain(
            groups
                .iter()
                .map(|(g, ops)| (format!("group {g}"), ops, group_access.get(g))),
        )
    {
        let needed: Vec<Operation> = needed.iter().copied().collect();
        let lacking = match access {
            None => continue,
            Some(Access::Refused {
                unauthorized: false,
                ..
            }) => continue,
            Some(a) => a.lacking(&needed),
        };
        if !lacking.is_empty() {
            let names: Vec<&str> = lacking.iter().map(|o| o.name()).collect();
            let hidden =
                if what.starts_with("topic") && matches!(access, Some(Access::Refused { .. })) {
                    " (not even Describe: the brokers hide it)"
                } else {
                    ""
                };
            lines.push(format!("{what}: {}{hidden}", names.join(", ")));
        }
    }
    Ok(lines)
}

/// One line naming the missing topics and the command that creates them.
pub fn missing_line(missing: &[Planned], config_path: &std::path::Path) -> String {
    let names: Vec<String> = missing
        .iter()
        .map(|p| format!("{} ({})", p.name, p.role))
        .collect();
    format!(
        "missing topics: {}; create them with `flagtally topics create --config {}`",
        names.join(", "),
        config_path.display()
    )
}

/// What `create` did (or would do) with one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Exists,
    Created,
    WouldCreate,
}

/// Creates the planned topics that are missing; `dry_run` only says which.
pub fn create(
    config: &Config,
    planned: &[Planned],
    dry_run: bool,
) -> Result<Vec<(Planned, Outcome)>, KafkaError> {
    let absent = missing(config, planned)?;
    let mut out: Vec<(Planned, Outcome)> = planned
        .iter()
        .filter(|p| !absent.contains(p))
        .map(|p| (p.clone(), Outcome::Exists))
        .collect();
    if dry_run || absent.is_empty() {
        out.extend(absent.into_iter().map(|p| (p, Outcome::WouldCreate)));
        return Ok(out);
    }
    let admin = admin(config)?;
    let news: Vec<NewTopic<'_>> = absent
        .iter()
        .map(|p| {
            let replication = if p.replication > 0 {
                TopicReplication::Fixed(p.replication)
            } else {
                TopicReplication::Fixed(-1)
            };
            p.settings.iter().fold(
                NewTopic::new(&p.name, p.partitions, replication),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    for result in block_on(admin.create_topics(&news, &options))? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, e)) => {
                tracing::error!(topic, "creating the topic failed: {e}");
                return Err(KafkaError::AdminOp(e));
            }
        }
    }
    out.extend(absent.into_iter().map(|p| (p, Outcome::Created)));
    Ok(out)
}

/// One line per planned topic, as `topics create` prints it.
pub fn describe(p: &Planned) -> String {
    let settings: Vec<String> = p.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{} ({}): {} partition{}, replication {}{}",
        p.name,
        p.role,
        p.partitions,
        if p.partitions == 1 { "" } else { "s" },
        if p.replication > 0 {
            p.replication.to_string()
        } else {
            "broker default".to_owned()
        },
        if settings.is_empty() {
            String::new()
        } else {
            format!(", {}", settings.join(", "))
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_names_every_topic_once_with_its_roles() {
        let config = Config::parse(
            r#"
[kafka]
input_topics = ["in", "^pattern.*"]
[output]
dead_letter_topic = "dlq"
topics.summary = "out"
topics.feature = "events"
topics.index = "events"
[processing]
checkpoint_topic = "cp"
[[sinks]]
name = "files"
type = "file"
topics = ["out"]
path = "/tmp/flagtally-plan"
dead_letter_topic = "sink-dlq"
[[sinks]]
name = "more-files"
type = "file"
topics = ["events"]
path = "/tmp/flagtally-plan"
dead_letter_topic = "sink-dlq"
"#,
        )
        .unwrap();
        let plan = plan(&config, &Layout::default());
        let names: Vec<&str> = plan.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["cp", "dlq", "events", "in", "out", "sink-dlq"]);
        assert_eq!(plan[5].role, "sink dead-letter");
        assert_eq!(
            plan[5].settings,
            [("retention.ms".into(), "604800000".into())]
        );
        let cp = &plan[0];
        assert_eq!(cp.partitions, 1);
        assert_eq!(cp.settings, [("cleanup.policy".into(), "compact".into())]);
        assert_eq!(plan[2].role, "feature, index");
        assert!(
            plan[3].settings.is_empty(),
            "inputs keep the broker's retention"
        );
        assert_eq!(
            plan[4].settings,
            [("retention.ms".into(), "604800000".into())]
        );
    }
}
