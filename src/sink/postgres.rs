//! The PostgreSQL warehouse sink: exactly once into PostgreSQL.
//!
//! Each batch of output records is, in one transaction:
//! 1. copied (binary COPY) into a session-local staging table, raw: kind, id, the JSON
//!    event and the headers that matter;
//! 2. inserted into the target tables (`schemas/postgres.sql`) by SQL that unpacks the
//!    JSON — summaries into one row per counter — ignoring ids already present;
//! 3. recorded in `flagtally_sink_offsets`: the next offset per topic partition.
//!
//! The rows and the position commit together, so after a crash the sink resumes exactly
//! where the data ends; the id check also absorbs identical records the processor
//! re-emitted upstream.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use postgres::Client;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;

use super::destination::{Destination, SinkRecord};
use super::record::View;

/// The DDL, created in the sink's schema when `create_tables` is on.
pub const SCHEMA_SQL: &str = include_str!("../../schemas/postgres.sql");

const STAGING: &str = "CREATE TEMP TABLE IF NOT EXISTS flagtally_staging (
    kind text NOT NULL, id text NOT NULL, body text NOT NULL, context_key text,
    window_start bigint, window_end bigint, late boolean NOT NULL, source text,
    kafka_topic text NOT NULL, kafka_partition integer NOT NULL, kafka_offset bigint NOT NULL
) ON COMMIT DELETE ROWS";

const STAGING_TYPES: [Type; 11] = [
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::BOOL,
    Type::TEXT,
    Type::TEXT,
    Type::INT4,
    Type::INT8,
];

/// FeatBit's `events` table (as its ClickHouse insights table, in PostgreSQL), filled
/// from full-fidelity feature events when `featbit_env_id` is set.
pub const FEATBIT_SQL: &str = "CREATE TABLE IF NOT EXISTS events (
    uuid        uuid PRIMARY KEY,
    distinct_id text NOT NULL,
    env_id      text NOT NULL,
    event       text NOT NULL,
    properties  jsonb NOT NULL,
    timestamp   timestamp(6) without time zone NOT NULL
)";

/// The staged event (unwrapped from a Data Export envelope before staging:
/// [`super::record::View`]).
const EVENT: &str = "s.body::jsonb";

fn ms(expr: &str) -> String {
    format!("to_timestamp(({expr})::double precision / 1000.0)")
}

/// One FeatBit `FlagValue` row per feature event; `$1` is the environment id.
fn featbit_insert() -> String {
    let created = ms("e.e ->> 'creationDate'");
    format!(
        "INSERT INTO events (uuid, distinct_id, env_id, event, properties, timestamp)
         SELECT CASE WHEN s.id ~ '^[0-9a-fA-F-]{{36}}$' THEN s.id::uuid ELSE md5(s.id)::uuid END,
            $1 || '-' || (e.e ->> 'key'), $1, 'FlagValue',
            jsonb_build_object(
                'route', 'flagtally', 'flagId', $1 || '-' || (e.e ->> 'key'), 'envId', $1::text,
                'accountId', '', 'projectId', '', 'featureFlagKey', e.e ->> 'key',
                'sendToExperiment', false, 'userKeyId', u.key, 'userName', u.name,
                'variationId', v.id, 'tag_0', u.key, 'tag_1', v.id, 'tag_2', 'false',
                'tag_3', u.name),
            {created} AT TIME ZONE 'UTC'
         FROM flagtally_staging s
         CROSS JOIN LATERAL (SELECT {EVENT} AS e) e
         CROSS JOIN LATERAL (SELECT s.context_key AS key,
            e.e -> 'context' ->> 'name' AS name) u
         CROSS JOIN LATERAL (SELECT COALESCE(e.e ->> 'variationName', e.e ->> 'variation') AS id) v
         WHERE s.kind = 'feature'
         ON CONFLICT (uuid) DO NOTHING"
    )
}

fn inserts() -> [String; 4] {
    let created = ms("e.e ->> 'creationDate'");
    [
        format!(
            "INSERT INTO flagtally_summary_counters (id, summary_id, flag_key, variation, version,
                unknown, value, \"default\", context_kinds, count, start_date, end_date,
                window_start, window_end, late, source, kafka_topic, kafka_partition, kafka_offset)
             SELECT s.id || '/' || f.key || '/' || (c.ord - 1), s.id, f.key,
                COALESCE(c.v -> 'variation', c.v -> 'variationName'), c.v -> 'version',
                COALESCE((c.v ->> 'unknown')::boolean, false), c.v -> 'value', f.value -> 'default',
                ARRAY(SELECT jsonb_array_elements_text(COALESCE(f.value -> 'contextKinds', '[]'::jsonb))),
                (c.v ->> 'count')::bigint, {start}, {end},
                {wstart}, {wend}, s.late, s.source, s.kafka_topic, s.kafka_partition, s.kafka_offset
             FROM flagtally_staging s
             CROSS JOIN LATERAL (SELECT {EVENT} AS e) e
             CROSS JOIN LATERAL jsonb_each(e.e -> 'features') f(key, value)
             CROSS JOIN LATERAL jsonb_array_elements(f.value -> 'counters') WITH ORDINALITY c(v, ord)
             WHERE s.kind = 'summary'
             ON CONFLICT (id) DO NOTHING",
            start = ms("e.e ->> 'startDate'"),
            end = ms("e.e ->> 'endDate'"),
            wstart = ms("s.window_start"),
            wend = ms("s.window_end"),
        ),
        format!(
            "INSERT INTO flagtally_feature_events (id, kind, creation_date, flag_key, version,
                variation, value, \"default\", reason, context, prereq_of, event,
                kafka_topic, kafka_partition, kafka_offset)
             SELECT s.id, e.e ->> 'kind', {created}, e.e ->> 'key', e.e -> 'version',
                COALESCE(e.e -> 'variation', e.e -> 'variationName'), e.e -> 'value',
                e.e -> 'default', e.e -> 'reason', COALESCE(e.e -> 'context', e.e -> 'contextKeys'),
                e.e ->> 'prereqOf', e.e, s.kafka_topic, s.kafka_partition, s.kafka_offset
             FROM flagtally_staging s CROSS JOIN LATERAL (SELECT {EVENT} AS e) e
             WHERE s.kind IN ('feature', 'debug')
             ON CONFLICT (id) DO NOTHING"
        ),
        format!(
            "INSERT INTO flagtally_context_events (id, kind, creation_date, context, event,
                kafka_topic, kafka_partition, kafka_offset)
             SELECT s.id, e.e ->> 'kind', {created}, e.e -> 'context', e.e,
                s.kafka_topic, s.kafka_partition, s.kafka_offset
             FROM flagtally_staging s CROSS JOIN LATERAL (SELECT {EVENT} AS e) e
             WHERE s.kind IN ('index', 'identify')
             ON CONFLICT (id) DO NOTHING"
        ),
        format!(
            "INSERT INTO flagtally_custom_events (id, creation_date, event_key, context, data,
                metric_value, event, kafka_topic, kafka_partition, kafka_offset)
             SELECT s.id, {created}, e.e ->> 'key', COALESCE(e.e -> 'context', e.e -> 'contextKeys'),
                e.e -> 'data', (e.e ->> 'metricValue')::double precision, e.e,
                s.kafka_topic, s.kafka_partition, s.kafka_offset
             FROM flagtally_staging s CROSS JOIN LATERAL (SELECT {EVENT} AS e) e
             WHERE s.kind = 'custom'
             ON CONFLICT (id) DO NOTHING"
        ),
    ]
}

/// The keys of a `type = "postgres"` sink.
#[derive(Clone, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// A libpq connection string or URL.
    #[serde(default)]
    pub url: Option<String>,
    /// The schema holding the tables.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Create the schema and tables when missing.
    #[serde(default = "yes")]
    pub create_tables: bool,
    /// Also fill FeatBit's `events` table (`FlagValue` rows from feature events), with
    /// this environment id.
    #[serde(default)]
    pub featbit_env_id: Option<String>,
    /// The connect timeout, and how long a connection may stay unanswered (keepalives,
    /// `TCP_USER_TIMEOUT`) before it is dropped and the write retried.
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::units::de::positive_duration"
    )]
    pub timeout: Duration,
}

fn default_schema() -> String {
    "flagtally".to_owned()
}
fn yes() -> bool {
    true
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl PostgresConfig {
    pub fn settings(&self) -> PostgresSettings {
        PostgresSettings {
            url: self.url.clone().unwrap_or_default(),
            schema: self.schema.clone(),
            create_tables: self.create_tables,
            featbit_env_id: self.featbit_env_id.clone(),
            timeout: self.timeout,
        }
    }

    pub fn check(&self, at: &str, problems: &mut Vec<String>) {
        match self.url.as_deref() {
            None | Some("") => {
                problems.push(format!("{at}.url: a postgres sink needs a connection URL"));
            }
            Some(url) => match super::pg_tls::split(url) {
                Err(e) => problems.push(format!("{at}.url: {e}")),
                Ok((rest, tls)) => {
                    if let Err(e) = rest.parse::<postgres::Config>() {
                        problems.push(format!("{at}.url: {e}"));
                    }
                    if let Some(root) = &tls.root
                        && let Err(e) = std::fs::File::open(root)
                    {
                        problems.push(format!("{at}.url: sslrootcert {}: {e}", root.display()));
                    }
                }
            },
        }
    }
}

/// Settings of a postgres sink.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// A libpq connection string or URL.
    pub url: String,
    /// The schema holding the tables (created when missing).
    pub schema: String,
    pub create_tables: bool,
    /// Also fill FeatBit's `events` table, with this environment id.
    pub featbit_env_id: Option<String>,
    /// Connecting, and how long a connection may stay silent: the connect timeout
    /// (unless the URL sets one), TCP keepalives and `TCP_USER_TIMEOUT`, so a
    /// half-open connection fails the write (retried on a new one) instead of
    /// hanging the sink, its reload and shutdown.
    pub timeout: Duration,
}

/// A connection URL as it may be shown: redacted (a password in it, or in a libpq
/// key/value string, never appears).
fn shown(url: &str) -> String {
    if url.contains("://") {
        crate::sink::destination::redact_url(url)
    } else {
        "(a libpq connection string)".to_owned()
    }
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.url.as_deref().map(shown))
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &shown(&self.url))
            .field("schema", &self.schema)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The connection settings of `url` with the sink's timeouts.
/// How long one statement may run: a write is a few statements over a batch, so far
/// longer than the connection's silence limit, but never unbounded.
fn statement_timeout(timeout: Duration) -> Duration {
    (timeout * 6).max(Duration::from_secs(60))
}

/// The connection settings of `url` with the sink's timeouts, its name as the
/// `application_name` (unless the URL sets one: `pg_stat_activity` shows which sink a
/// connection is), and its TLS settings (`sslmode`, `sslrootcert`:
/// [`super::pg_tls`]). The URL's own `options` come after the statement timeout's,
/// so `options=-c statement_timeout=…` in it wins.
fn connection_config(
    url: &str,
    timeout: Duration,
    sink: &str,
) -> anyhow::Result<(postgres::Config, super::pg_tls::Tls)> {
    let (rest, tls) = super::pg_tls::split(url).map_err(anyhow::Error::msg)?;
    let mut config: postgres::Config = rest
        .parse()
        .context("the postgres sink's url is not a libpq connection string or URL")?;
    config.ssl_mode(super::pg_tls::negotiate(tls.mode));
    let options = format!(
        "-c statement_timeout={}",
        statement_timeout(timeout).as_millis()
    );
    match config.get_options() {
        Some(o) => {
            let joined = format!("{options} {o}");
            config.options(&joined)
        }
        None => config.options(&options),
    };
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name(&format!("flagtally sink {sink}"));
    }
    config
        .keepalives(true)
        .keepalives_idle(timeout)
        .keepalives_interval((timeout / 3).max(Duration::from_secs(1)))
        .keepalives_retries(3)
        .tcp_user_timeout(timeout);
    Ok((config, tls))
}

/// A connection and the statements it needs.
pub struct Postgres {
    settings: PostgresSettings,
    sink: String,
    client: Option<Client>,
    inserts: [String; 4],
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("sink", &self.sink)
            .field("schema", &self.settings.schema)
            .field("connected", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl Postgres {
    pub fn new(sink: &str, settings: PostgresSettings) -> Self {
        Self {
            settings,
            sink: sink.to_owned(),
            client: None,
            inserts: inserts(),
        }
    }

    /// The connection, opened (schema, tables, staging table) when there is none.
    fn client(&mut self) -> anyhow::Result<&mut Client> {
        if self.client.is_none() {
            let (config, tls) =
                connection_config(&self.settings.url, self.settings.timeout, &self.sink)?;
            let connector = super::pg_tls::connector(&tls).map_err(anyhow::Error::msg)?;
            let mut client = config.connect(connector).with_context(|| {
                format!("connecting to PostgreSQL (sslmode={})", tls.mode.name())
            })?;
            let schema = quote_ident(&self.settings.schema);
            if self.settings.create_tables {
                client
                    .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                    .with_context(|| format!("creating schema {schema}"))?;
            }
            client
                .batch_execute(&format!("SET search_path TO {schema}"))
                .context("setting the search path")?;
            if self.settings.create_tables {
                client
                    .batch_execute(SCHEMA_SQL)
                    .context("creating the tables (schemas/postgres.sql)")?;
                if self.settings.featbit_env_id.is_some() {
                    client
                        .batch_execute(FEATBIT_SQL)
                        .context("creating FeatBit's events table")?;
                }
            }
            client
                .batch_execute(STAGING)
                .context("creating the staging table")?;
            self.client = Some(client);
        }
        self.client.as_mut().context("no PostgreSQL connection")
    }

    fn write_inner(
        &mut self,
        batch: &[SinkRecord],
        positions: &BTreeMap<(String, i32), i64>,
    ) -> anyhow::Result<()> {
        let sink = self.sink.clone();
        let inserts = self.inserts.clone();
        let featbit = self.settings.featbit_env_id.clone();
        let client = self.client()?;
        let mut tx = client.transaction()?;
        {
            let copy = tx.copy_in(
                "COPY flagtally_staging (kind, id, body, context_key, window_start, window_end, late, source,
                    kafka_topic, kafka_partition, kafka_offset) FROM STDIN (FORMAT binary)",
            )?;
            let mut w = BinaryCopyInWriter::new(copy, &STAGING_TYPES);
            for r in batch {
                let view = View::of(r)?;
                let context_key = view.context().map(|c| c.key);
                w.write(&[
                    &r.kind,
                    &r.id,
                    &view.text,
                    &context_key,
                    &r.window_start,
                    &r.window_end,
                    &r.late,
                    &r.source,
                    &r.topic,
                    &r.partition,
                    &r.offset,
                ])?;
            }
            w.finish()?;
        }
        for sql in &inserts {
            tx.execute(sql.as_str(), &[])?;
        }
        if let Some(env) = &featbit {
            tx.execute(featbit_insert().as_str(), &[env])?;
        }
        for ((topic, partition), next) in positions {
            tx.execute(
                "INSERT INTO flagtally_sink_offsets (sink, topic, partition, next_offset)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (sink, topic, partition)
                 DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
                &[&sink, topic, partition, next],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

impl Destination for Postgres {
    fn connect(&mut self) -> anyhow::Result<()> {
        self.client().map(|_| ())
    }

    fn stores_positions(&self) -> bool {
        true
    }

    fn stored_offsets(&mut self, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
        let sink = self.sink.clone();
        let rows = self
            .client()?
            .query(
                "SELECT partition, next_offset FROM flagtally_sink_offsets
                 WHERE sink = $1 AND topic = $2",
                &[&sink, &topic],
            )
            .inspect_err(|_| self.client = None)?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i32>(0), r.get::<_, i64>(1)))
            .collect())
    }

    fn write(
        &mut self,
        batch: &[SinkRecord],
        positions: &BTreeMap<(String, i32), i64>,
    ) -> anyhow::Result<()> {
        let result = self.write_inner(batch, positions);
        if result.is_err() {
            // A broken connection is reopened on the next try; a transaction that
            // failed was rolled back when it was dropped.
            if self.client.as_ref().is_some_and(Client::is_closed) {
                self.client = None;
            }
        }
        result
    }
}
