"""The wire contract: Avro schemas (``avro/*.avsc`` are the source of truth), event models, serde."""
