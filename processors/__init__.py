"""Deciders (pure task logic) and the effect interpreters around them (LLM gateway, tools)."""
