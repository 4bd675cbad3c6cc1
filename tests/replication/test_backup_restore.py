"""A backup of one cluster bootstraps another with the same desired state; a cluster in use refuses it."""

from __future__ import annotations

import json

from devtools.cluster import Cluster, api
from devtools.waiting import wait_until


def test_it_restores_a_backup_into_a_fresh_cluster(tmp_path):
    with Cluster(tmp_path / "source", size=1, redis_url=None) as source:
        source.ensure_admin()
        token = source.issue_token()
        first = source.replicas[0]
        for index in range(5):
            assert api(first, token).post("/nodes/", json={"name": f"gpu-{index}", "address": "x"}).status_code == 201
        body = {"name": "pin", "kind": "pin", "spec": {"model": "resnet", "selector": {"gpu-type": "h100"}}}
        assert api(first, token).post("/policies/", json=body).status_code == 201
        backup = tmp_path / "backup.json"
        exported = first.manage("export_state", str(backup))
        assert exported.returncode == 0, exported.stderr
        assert backup.stat().st_mode & 0o077 == 0
        refused = first.manage("import_state", str(backup))
        assert refused.returncode != 0 and "fresh cluster" in refused.stderr

    with Cluster(tmp_path / "target", size=3, redis_url=None) as target:
        restored = target.replicas[1].manage("import_state", str(backup))
        assert restored.returncode == 0, restored.stderr
        assert "holds exactly the backup's items" in restored.stdout
        # The old token and admin work on the new cluster; every replica has the same state.
        for replica in target.replicas:
            assert wait_until(lambda r=replica: api(r, token).get("/nodes/").status_code == 200), replica.name
            assert api(replica, token).get("/nodes/").json()["count"] == 5
            assert api(replica, token).get("/policies/pin/").json()["spec"]["selector"] == {"gpu-type": "h100"}
        again = tmp_path / "again.json"
        assert target.replicas[2].manage("export_state", str(again)).returncode == 0
        items = json.loads(again.read_text())["items"]
        assert items == json.loads(backup.read_text())["items"]
