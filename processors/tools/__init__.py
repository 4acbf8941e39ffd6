"""Tools the agent may call: a registry of JSON-schema-described tools and their implementations."""
