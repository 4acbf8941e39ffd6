"""agentlog's schema registry: Confluent's REST paths, schemas stored on a compacted Kafka topic."""
