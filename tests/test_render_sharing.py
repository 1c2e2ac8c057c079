"""Several renders of one dataset (issue 24): two `fmolab render` drivers started together render each
block once in total and leave one complete manifest; a render with other settings into it exits 2,
naming them, and changes nothing."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_render import TINY, needs_bpy

pytestmark = [pytest.mark.bpy, needs_bpy]


def _render(work: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    args = [sys.executable, "-m", "fmolab.cli", "render", "--work-dir", str(work), *TINY, "runtime.num_cpus=1",
            "render.num_sequences=6", "render.shard_rows=1", "render.name=shared", *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {}), "FMOLAB_HOME": str(work)})


def _result(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, dict, str]:
    out, err = proc.communicate(timeout=timeout)
    start = out.find("{")
    return proc.returncode, json.loads(out[start:]) if proc.returncode == 0 else {}, out + err


def _checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_renders_at_once_share_the_blocks_and_other_settings_are_refused(work):
    a, b = _render(work), _render(work)
    (rc_a, out_a, log_a), (rc_b, out_b, log_b) = _result(a), _result(b)
    assert rc_a == 0 and rc_b == 0, log_a[-2000:] + log_b[-2000:]
    rendered = out_a["timing"]["blocks_rendered_this_run"] + out_b["timing"]["blocks_rendered_this_run"]
    assert rendered == 6, (out_a["timing"], out_b["timing"])  # each block once, whichever driver
    dataset = work / "datasets" / "shared"
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_shards"] == 6 and manifest["num_rows"] + len(manifest["failed_indices"]) == 6
    assert {s["block"] for s in manifest["shards"]} == set(range(6))
    assert not list((dataset / ".render" / "claims").rglob("*.json"))  # every claim released with its shard

    before = _checksums(dataset)
    rc, _, log = _result(_render(work, "render.width=80", "render.height=64"), timeout=120)
    assert rc == 2, log[-2000:]
    line = next(x for x in log.splitlines() if "other settings" in x)
    assert "render.width: 64 there, 80 here" in line and "render.height: 48 there, 64 here" in line
    assert "render.name=NAME" in line
    assert _checksums(dataset) == before  # nothing changed, manifest included


@pytest.mark.slow  # ~50 s: CI keeps the local variant; `make test-all` runs this one
def test_two_renders_share_a_dataset_in_object_storage(work):
    """The same on an S3-protocol server (moto): the claims are objects there, the drivers share
    nothing but the bucket, and the dataset ends with each block once and one complete manifest."""
    from cluster_fakes import s3_server
    from fmolab import storage

    with s3_server() as variables:
        os.environ.update(variables)  # this process lists the bucket; the drivers get it too
        try:
            out = ["runtime.storage=s3://fmo/out"]
            a, b = _render(work / "a", *out, env=variables), _render(work / "b", *out, env=variables)
            (rc_a, out_a, log_a), (rc_b, out_b, log_b) = _result(a), _result(b)
            assert rc_a == 0 and rc_b == 0, log_a[-2000:] + log_b[-2000:]
            rendered = out_a["timing"]["blocks_rendered_this_run"] + out_b["timing"]["blocks_rendered_this_run"]
            assert rendered == 6, (out_a["timing"], out_b["timing"])
            dataset = "s3://fmo/out/datasets/shared"
            manifest = storage.read_json(storage.join(dataset, "manifest.json"))
            assert manifest["complete"] and manifest["num_shards"] == 6
            assert {s["block"] for s in manifest["shards"]} == set(range(6))
            assert len([f for f in storage.list_files(dataset) if f.endswith(".parquet")]) == 6
            import pyarrow.fs as pafs

            fs, path = storage.filesystem(storage.join(dataset, ".render", "claims"))
            left = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=True))
            assert not [i.path for i in left if i.path.endswith(".json")]  # every claim released with its shard
        finally:
            for key in variables:
                os.environ.pop(key, None)
