"""``bioprop preflight``'s checks on the session's real local Ray cluster (one node): the
node passes, and a storage location that cannot be used is one line naming the node. The
multi-node report (DDP between nodes, a node without its DDP interface) is checked on
separate hosts in ``tests/cluster/test_multihost.py``."""

from __future__ import annotations

import pytest

from trainers.preflight import check_cluster

pytestmark = pytest.mark.slow


def test_node_passes_and_a_missing_bucket_is_one_line_naming_it(ray_cluster, s3) -> None:
    import ray

    (node,) = [n for n in ray.nodes() if n["Alive"]]
    ip = node["NodeManagerAddress"]
    ok, problems = check_cluster("s3://ckpt/runs")
    assert problems == [], problems
    assert ok[0].startswith(f"{ip} (") and ok[0].endswith("DDP interface)"), ok
    assert ok[1].startswith("DDP: not checked (1 node(s)"), ok

    # a bucket that does not exist, and a node expected that never joined (198.51.100.99 is
    # TEST-NET-2: no host has it)
    ok, problems = check_cluster("s3://no-such-bucket/runs", ddp=False, expect=["198.51.100.99"])
    absent, bucket = problems
    assert absent.startswith("198.51.100.99: not a node of this cluster"), absent
    assert bucket.startswith(f"{ip} (") and "bucket 'no-such-bucket' does not exist" in bucket
    assert all("\n" not in p for p in problems)
