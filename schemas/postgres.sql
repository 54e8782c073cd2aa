-- flagtally's warehouse schema for PostgreSQL (12 or later).
--
-- The postgres sink creates these tables in its configured schema when they are missing
-- (`create_tables = true`, the default) and fills them from the output topics. Every
-- row carries the Kafka position it came from; ids are flagtally's deterministic record
-- ids (`flagtally-id`), so a record written twice upstream is one row here.

-- One row per summary window × flag × variation × version (one LaunchDarkly counter).
CREATE TABLE IF NOT EXISTS flagtally_summary_counters (
    id              text PRIMARY KEY,       -- <summary id>/<flag key>/<counter index>
    summary_id      text NOT NULL,          -- the summary record's flagtally-id
    flag_key        text NOT NULL,
    variation       jsonb,                  -- index (LaunchDarkly) or name; NULL: the default was served
    version         jsonb,                  -- the flag version; NULL when unknown
    unknown         boolean NOT NULL,       -- the flag was unknown to the evaluator
    value           jsonb,                  -- the value served
    "default"       jsonb,                  -- the application's fallback value
    context_kinds   text[] NOT NULL,
    count           bigint NOT NULL,
    start_date      timestamptz NOT NULL,   -- the summary's startDate (its first event)
    end_date        timestamptz NOT NULL,   -- the summary's endDate (its last event)
    window_start    timestamptz,            -- the event-time window (flagtally-window-start)
    window_end      timestamptz,
    late            boolean NOT NULL,       -- a late correction for an emitted window
    source          text,                   -- input topic/partition (flagtally-source)
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    inserted_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS flagtally_summary_counters_flag_window
    ON flagtally_summary_counters (flag_key, window_start);

-- Full-fidelity feature events and debug events, one row each.
CREATE TABLE IF NOT EXISTS flagtally_feature_events (
    id              text PRIMARY KEY,
    kind            text NOT NULL,          -- feature | debug
    creation_date   timestamptz NOT NULL,
    flag_key        text NOT NULL,
    version         jsonb,
    variation       jsonb,                  -- index or name (variationName)
    value           jsonb,
    "default"       jsonb,
    reason          jsonb,
    context         jsonb,                  -- the context (or contextKeys when redacted)
    prereq_of       text,
    event           jsonb NOT NULL,         -- the whole event as written
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    inserted_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS flagtally_feature_events_flag_date
    ON flagtally_feature_events (flag_key, creation_date);

-- Index and identify events: the contexts seen.
CREATE TABLE IF NOT EXISTS flagtally_context_events (
    id              text PRIMARY KEY,
    kind            text NOT NULL,          -- index | identify
    creation_date   timestamptz NOT NULL,
    context         jsonb NOT NULL,
    event           jsonb NOT NULL,
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    inserted_at     timestamptz NOT NULL DEFAULT now()
);

-- Custom (track) events.
CREATE TABLE IF NOT EXISTS flagtally_custom_events (
    id              text PRIMARY KEY,
    creation_date   timestamptz NOT NULL,
    event_key       text NOT NULL,
    context         jsonb,
    data            jsonb,
    metric_value    double precision,
    event           jsonb NOT NULL,
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    inserted_at     timestamptz NOT NULL DEFAULT now()
);

-- Where each sink is in each topic partition: written in the same transaction as the
-- rows, so rows and position never disagree (exactly once into PostgreSQL).
CREATE TABLE IF NOT EXISTS flagtally_sink_offsets (
    sink            text NOT NULL,
    topic           text NOT NULL,
    partition       integer NOT NULL,
    next_offset     bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sink, topic, partition)
);
