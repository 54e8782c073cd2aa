//! The Avro outputs' schema ids: each kind with a topic gets its schema's id under
//! its subject, registered at start (`auto_register`) or found as the subject's
//! latest version.

use std::collections::BTreeMap;

use apache_avro::rabin::Rabin;

use super::{Client, RegistryConfig, RegistryError};
use crate::emit::avro::{SchemaIds, record};
use crate::emit::{OutputKind, Topics};

/// The id of each output kind that has a topic. Kinds that share a subject and a
/// schema (feature and debug on one topic) ask once.
pub fn output_ids(
    client: &Client,
    config: &RegistryConfig,
    topics: &Topics,
) -> Result<SchemaIds, RegistryError> {
    let mut ids = SchemaIds::default();
    let mut asked: BTreeMap<(String, &str), u32> = BTreeMap::new();
    for kind in OutputKind::ALL {
        let Some(topic) = topics.topic(kind) else {
            continue;
        };
        let record = record(kind);
        let parsed = record
            .parsed()
            .map_err(|e| RegistryError::Refused(format!("{}: {e}", record.file())))?;
        let full_name = match &parsed.schema {
            apache_avro::Schema::Record(r) => r.name.fullname(None),
            _ => record.file().to_owned(),
        };
        let subject = config.subject_naming.subject(topic, &full_name);
        if let Some(id) = asked.get(&(subject.clone(), record.file())) {
            ids.set(kind, *id);
            continue;
        }
        let id = if config.auto_register {
            client
                .register(&subject, record.text())
                .map_err(|e| match e {
                    RegistryError::Refused(m) => RegistryError::Refused(format!(
                        "registering {} (the {} output's schema) under subject {subject}: {m}",
                        record.file(),
                        kind.name()
                    )),
                    other => other,
                })?
        } else {
            let (id, text) = client.latest(&subject).map_err(|e| match e {
                RegistryError::NotFound(m) => RegistryError::Refused(format!(
                    "subject {subject} (the {} output) has no version: register {} \
                     under it, or set output.schema_registry.auto_register = true ({m})",
                    kind.name(),
                    record.file()
                )),
                other => other,
            })?;
            let latest = apache_avro::Schema::parse_str(&text)
                .map(|s| s.fingerprint::<Rabin>().bytes)
                .map_err(|e| {
                    RegistryError::Refused(format!(
                        "subject {subject}: its latest schema (id {id}) does not parse: {e}"
                    ))
                })?;
            if latest != parsed.fingerprint() {
                return Err(RegistryError::Refused(format!(
                    "subject {subject}: its latest version (id {id}) is not {} (the {} \
                     output's schema): register it, or set \
                     output.schema_registry.auto_register = true",
                    record.file(),
                    kind.name()
                )));
            }
            id
        };
        asked.insert((subject, record.file()), id);
        ids.set(kind, id);
    }
    Ok(ids)
}
