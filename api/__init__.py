"""REST API (FastAPI) and the ``agentlog`` command line."""
