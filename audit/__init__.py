"""Audit and replay tooling over the log: time travel, re-execution, forks, tamper checks, export."""
