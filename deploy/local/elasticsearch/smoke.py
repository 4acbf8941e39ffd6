#!/usr/bin/env python3
"""Smoke test for the local Elasticsearch node with the official Python client.

    python3 -m venv /tmp/esvenv && /tmp/esvenv/bin/pip install "elasticsearch==9.*"
    ES_URL=http://127.0.0.1:9200 /tmp/esvenv/bin/python deploy/local/elasticsearch/smoke.py
    ... restart the node ...
    /tmp/esvenv/bin/python deploy/local/elasticsearch/smoke.py --check-persisted

URL: $ES_URL, else http://127.0.0.1:$AGENTLOG_ES_PORT (default port 9200).
The full run (re)creates index ``agentlog-smoke`` (alias ``agentlog-smoke-alias``) and leaves it
in place so that --check-persisted can verify it survived a restart. Exit 0 iff all checks pass.
"""

import os
import sys

from elasticsearch import Elasticsearch
from elasticsearch import __versionstr__ as client_version

INDEX = "agentlog-smoke"
ALIAS = "agentlog-smoke-alias"
DOCS = [
    (
        "evt-1",
        {
            "task_id": "t-1",
            "kind": "created",
            "message": "task created by the planner",
            "ts": "2026-01-01T10:00:00Z",
        },
    ),
    (
        "evt-2",
        {
            "task_id": "t-1",
            "kind": "progress",
            "message": "planner split the task in two",
            "ts": "2026-01-01T10:01:00Z",
        },
    ),
    (
        "evt-3",
        {
            "task_id": "t-2",
            "kind": "created",
            "message": "task created by a human",
            "ts": "2026-01-01T10:02:00Z",
        },
    ),
    (
        "evt-4",
        {
            "task_id": "t-2",
            "kind": "done",
            "message": "worker finished the task",
            "ts": "2026-01-01T10:03:00Z",
        },
    ),
]


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        sys.exit(1)


def full(es):
    info = es.info()
    server = info["version"]["number"]
    print(f"server {server} ({info['cluster_name']}/{info['name']}), client {client_version}")
    check(server.split(".")[0] == client_version.split(".")[0], "info(): client and server majors match")

    es.indices.delete(index=INDEX, ignore_unavailable=True)
    es.indices.create(
        index=INDEX,
        settings={"number_of_shards": 1, "number_of_replicas": 0},
        mappings={
            "dynamic": "strict",
            "properties": {
                "task_id": {"type": "keyword"},
                "kind": {"type": "keyword"},
                "message": {"type": "text"},
                "ts": {"type": "date"},
            },
        },
    )
    mapping = es.indices.get_mapping(index=INDEX)[INDEX]["mappings"]["properties"]
    check(
        {k: v["type"] for k, v in mapping.items()}
        == {"task_id": "keyword", "kind": "keyword", "message": "text", "ts": "date"},
        "indices.create() with explicit keyword/text/date mapping",
    )

    ops = []
    for doc_id, doc in DOCS:
        ops += [{"index": {"_index": INDEX, "_id": doc_id}}, doc]
    resp = es.bulk(operations=ops)
    check(
        not resp["errors"] and len(resp["items"]) == len(DOCS),
        f"bulk() indexed {len(DOCS)} docs with explicit _id",
    )

    es.indices.refresh(index=INDEX)
    check(True, "indices.refresh()")

    resp = es.search(
        index=INDEX,
        query={
            "bool": {
                "must": [{"match": {"message": "task created"}}],
                "filter": [{"term": {"task_id": "t-1"}}],
            }
        },
    )
    ids = [h["_id"] for h in resp["hits"]["hits"]]
    check(resp["hits"]["total"]["value"] == 2 and ids[0] == "evt-1", f"search() match + term filter -> {ids}")

    es.indices.put_alias(index=INDEX, name=ALIAS)
    check(INDEX in es.indices.get_alias(name=ALIAS), f"alias {ALIAS} -> {INDEX}")

    n = es.count(index=ALIAS)["count"]
    check(n == len(DOCS), f"count() via alias = {n}")

    n = es.count(index=ALIAS, query={"term": {"kind": "created"}})["count"]
    check(n == 2, f"count() with term query = {n}")


def check_persisted(es):
    info = es.info()
    print(f"server {info['version']['number']}, client {client_version}")
    check(es.indices.exists(index=INDEX).body, f"index {INDEX} still exists")
    check(INDEX in es.indices.get_alias(name=ALIAS), f"alias {ALIAS} still exists")
    n = es.count(index=ALIAS)["count"]
    check(n == len(DOCS), f"count() via alias after restart = {n}")
    doc = es.get(index=INDEX, id="evt-4")["_source"]
    check(doc["kind"] == "done", "get() by _id after restart")


def main():
    url = os.environ.get("ES_URL") or f"http://127.0.0.1:{os.environ.get('AGENTLOG_ES_PORT', '9200')}"
    es = Elasticsearch(url, request_timeout=30)
    if "--check-persisted" in sys.argv[1:]:
        check_persisted(es)
    else:
        full(es)
    print("all checks passed")


if __name__ == "__main__":
    main()
