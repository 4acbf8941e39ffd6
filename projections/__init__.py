"""Read models: pure ``apply(view, event)`` functions plus the Postgres and Elasticsearch writers."""
