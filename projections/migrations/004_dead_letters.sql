-- Dead-lettered records (RecordDeadLettered on the dead-letter topic), one row per dead-letter
-- record. The Kafka position of the dead-letter record itself is the idempotency key: a record
-- delivered twice is one row, while the same source record parked twice (two consumers, or one
-- consumer before and after a crash) is two records and so two rows.
CREATE TABLE dead_letters (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- tie-break of the listing
    topic              text NOT NULL,      -- where the dead-letter record is
    kafka_partition    integer NOT NULL,
    kafka_offset       bigint NOT NULL,
    dead_letter_id     uuid NOT NULL,
    dead_lettered_at   timestamptz NOT NULL,
    source_topic       text NOT NULL,      -- where the record that could not be handled is
    source_partition   integer NOT NULL,
    source_offset      bigint NOT NULL,
    consumer           text NOT NULL,
    error_type         text NOT NULL,
    error              text NOT NULL,
    -- Only when the record's headers or body reveal them (a record that never decoded has no org).
    org_id             text,
    task_id            text,
    event_type         text,
    record_key         bytea,
    headers            jsonb NOT NULL,
    value              bytea,
    value_size         integer NOT NULL,
    value_sha256       text,
    UNIQUE (topic, kafka_partition, kafka_offset)
);
CREATE INDEX dead_letters_newest ON dead_letters (dead_lettered_at DESC, id DESC);
CREATE INDEX dead_letters_org_newest ON dead_letters (org_id, dead_lettered_at DESC, id DESC);
CREATE INDEX dead_letters_source ON dead_letters (source_topic, source_partition, source_offset);
