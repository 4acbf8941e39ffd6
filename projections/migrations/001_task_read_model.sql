-- Task read model, the per-task event list, and projector offsets (stored with the rows).

CREATE TABLE task_executions (
    task_id           text PRIMARY KEY,
    org_id            text NOT NULL,
    user_id           text NOT NULL,
    session_id        text,
    status            text NOT NULL,
    status_sequence   bigint NOT NULL,
    query             text,
    priority          text,
    execution_mode    text,
    provider          text,
    model             text,
    offline           boolean,
    result            text,
    error             text,
    steps             integer NOT NULL DEFAULT 0,
    llm_calls         integer NOT NULL DEFAULT 0,
    tool_calls        integer NOT NULL DEFAULT 0,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    total_tokens      bigint NOT NULL DEFAULT 0,
    submitted_at      timestamptz,
    completed_at      timestamptz,
    duration_ms       bigint,
    last_sequence     bigint NOT NULL,
    event_count       integer NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX task_executions_org_submitted ON task_executions (org_id, submitted_at DESC);
CREATE INDEX task_executions_org_status ON task_executions (org_id, status);

-- One row per event; (task_id, sequence) is the dedupe key of at-least-once delivery.
CREATE TABLE task_events (
    task_id      text NOT NULL,
    sequence     bigint NOT NULL,
    event_id     uuid NOT NULL UNIQUE,
    event_type   text NOT NULL,
    org_id       text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    producer     text NOT NULL,
    prev_hash    text,
    digest       text NOT NULL,
    payload      jsonb NOT NULL,
    topic        text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    PRIMARY KEY (task_id, sequence)
);

-- Next offset to read per projector and partition, written in the same transaction as the rows.
CREATE TABLE projection_offsets (
    projector   text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projector, topic, partition)
);
