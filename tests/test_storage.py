"""One storage layer for local folders and object-store URIs, against a real S3-protocol server (moto
over HTTP on 127.0.0.1): atomic writes, listing, datasets read the same from both, and clear errors in
seconds for every way the storage can be wrong."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from cluster_fakes import KEYS, s3_server
from fmolab import storage
from fmolab.data import build_dataset, write_synthetic_dataset


@pytest.fixture(scope="module")
def s3_vars(tmp_path_factory):
    # moto records requests (on request: see requests_to) into a file of the test's own
    recording = tmp_path_factory.mktemp("moto") / "requests.jsonl"
    with s3_server(buckets=("fmo", "other"), env={"MOTO_RECORDER_FILEPATH": str(recording)}) as variables:
        yield variables


def requests_to(endpoint: str, run) -> list[tuple[str, str]]:
    """``(method, path)`` of every request the S3 server answered while ``run()`` ran (moto's recorder)."""
    import requests

    requests.post(endpoint + "/moto-api/recorder/reset-recording", timeout=10)
    requests.post(endpoint + "/moto-api/recorder/start-recording", timeout=10)
    try:
        run()
    finally:
        requests.post(endpoint + "/moto-api/recorder/stop-recording", timeout=10)
    lines = requests.get(endpoint + "/moto-api/recorder/download-recording", timeout=10).text.splitlines()
    return [(e["method"], e["url"].split(endpoint, 1)[-1].split("?")[0]) for e in map(json.loads, filter(None, lines))]


@pytest.fixture
def s3(s3_vars, monkeypatch, work):
    for k, v in s3_vars.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("FMOLAB_HOME", str(work))  # the node-local cache goes below the test's folder
    return s3_vars


def test_files_round_trip_and_hidden_temporaries_are_never_listed(s3, tmp_path):
    base = "s3://fmo/t1"
    storage.write_json(f"{base}/manifest.json", {"a": 1})
    storage.write_bytes(f"{base}/part-00000.parquet", b"x" * 10)
    storage.write_bytes(f"{base}/.part-00001.parquet.abc.tmp", b"half")  # what an unfinished upload leaves
    assert storage.read_json(f"{base}/manifest.json") == {"a": 1}
    assert storage.list_files(base, ".parquet") == [f"{base}/part-00000.parquet"]
    assert storage.exists(base) and storage.is_dir(base) and storage.is_file(f"{base}/manifest.json")
    assert storage.list_files("s3://fmo/nothing-here") == []
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(f"{base}/missing.json")
    cached = storage.local(f"{base}/part-00000.parquet")
    assert cached.read_bytes() == b"x" * 10 and str(cached).startswith(str(storage.cache_dir()))
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "a.txt").write_text("A")
    (tmp_path / "d" / "summary.json").write_text("{}")
    storage.upload_tree(tmp_path / "d", f"{base}/tree", last=("summary.json",))
    assert storage.read_bytes(f"{base}/tree/sub/a.txt") == b"A"
    storage.remove(f"{base}/tree")
    assert not storage.exists(f"{base}/tree/sub/a.txt")


def test_the_node_cache_is_keyed_by_content_bounded_and_says_when_the_disk_is_full(s3, tmp_path, monkeypatch):
    base = "s3://fmo/cache"
    storage.write_bytes(f"{base}/a.parquet", b"A" * 1000)
    first = storage.local(f"{base}/a.parquet")
    assert first.read_bytes() == b"A" * 1000
    time.sleep(1.1)  # the store's modification time has a resolution of one second
    storage.write_bytes(f"{base}/a.parquet", b"B" * 1000)  # re-rendered: same name, same size
    assert storage.local(f"{base}/a.parquet").read_bytes() == b"B" * 1000  # fetched anew, not stale

    # a bound of 2.5 kB: the entries used least recently go first, the bound holds
    monkeypatch.setenv(storage.CACHE_VAR, str(2500 / 2**30))
    for name in "cdef":
        storage.write_bytes(f"{base}/{name}.parquet", name.encode() * 1000)
        storage.local(f"{base}/{name}.parquet")
        held = sum(f.stat().st_size for f in storage.cache_dir().rglob("*.parquet"))
        assert held <= 2500, held
    kept = sorted(f.read_bytes()[:1].decode() for f in storage.cache_dir().rglob("*.parquet"))
    assert kept == ["e", "f"]

    # a file larger than the bound: refused as a full cache, with the numbers and what to do
    storage.write_bytes(f"{base}/big.parquet", b"x" * 4000)
    with pytest.raises(storage.CacheFullError, match=r"node cache full: s3://fmo/cache/big.parquet needs .* MB .*"
                                                     r"raise the bound"):
        storage.local(f"{base}/big.parquet")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_under_the_cache_is_reported_as_a_full_disk_not_as_bad_rows(s3, tmp_path):
    """A real 8 MB disk (tmpfs in a private mount namespace) as the node's work folder, a dataset in
    the bucket: loading rows fails naming the full disk (the cache keeps 64 MB free for the rest)."""
    local = write_synthetic_dataset(tmp_path / "ds", num_sequences=8, seed=3)
    storage.upload_tree(local, "s3://fmo/fullds")
    small = tmp_path / "small"
    small.mkdir()
    script = (
        f"mount -t tmpfs -o size=8m tmpfs {small} && {sys.executable} -c '"
        "from fmolab.data.loader import FMOLoader;"
        "ld = FMOLoader(\"s3://fmo/fullds\");"
        "[ld.get(i) for i in range(len(ld))]'"
    )
    env = {**os.environ, "FMOLAB_HOME": str(small / "work")}
    env.pop(storage.CACHE_VAR, None)
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "CacheFullError" in out.stderr and "node cache full" in out.stderr, out.stderr[-2000:]
    assert "unreadable row" not in out.stderr


def test_an_upload_cut_off_mid_file_leaves_nothing_visible(s3, tmp_path, monkeypatch):
    import shutil as real_shutil

    from fmolab.shards import write_shard
    from fmolab.storage import files

    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 << 20))

    def cut(a, b, length=0):
        b.write(a.read(1 << 20))
        raise ConnectionResetError("connection lost mid-upload")

    monkeypatch.setattr(files.shutil, "copyfileobj", cut)
    with pytest.raises(storage.StorageError, match="s3://fmo/t2/part-00000.parquet"):
        storage.upload(src, "s3://fmo/t2/part-00000.parquet")
    with pytest.raises(storage.StorageError):
        write_shard([], "s3://fmo/t2/part-00001.parquet")
    monkeypatch.setattr(files.shutil, "copyfileobj", real_shutil.copyfileobj)
    import boto3

    listed = boto3.client("s3").list_objects_v2(Bucket="fmo", Prefix="t2/").get("Contents", [])
    objects = [o["Key"] for o in listed if not o["Key"].endswith("/")]  # pyarrow's directory markers aside
    assert objects == [], objects  # neither the shard nor a temporary object


def test_a_dataset_in_the_bucket_reads_like_the_local_one(s3, work, make_config):
    from render_cluster.inspect import inspect_dataset

    local = write_synthetic_dataset(work / "ds", num_sequences=8, width=64, height=48, seed=2)
    storage.upload_tree(local, "s3://fmo/ds")
    layer = {"data.frames_per_sample": 4, "data.val_fraction": 0.25, "data.flip": "false"}
    here = build_dataset(make_config(layer, {"data.train": local}), "train")
    there = build_dataset(make_config(layer, {"data.train": "s3://fmo/ds"}), "train")
    assert len(here) == len(there) > 0
    for i in range(len(here)):
        a, b = here[i], there[i]
        assert a["seq_id"] == b["seq_id"] and np.array_equal(a["inputs"].numpy(), b["inputs"].numpy())
    assert there.adder.root == "s3://fmo/ds/backgrounds"
    info = inspect_dataset("s3://fmo/ds", "s3://fmo/looks/ds", n=2)
    assert info["contact_sheet"] == "s3://fmo/looks/ds/contact_sheet.png" and storage.exists(info["contact_sheet"])


def test_start_up_over_the_bucket_reads_each_shard_with_one_request(s3, work):
    """The listing's sizes open each shard without asking the store for them, and the footer's copy of
    the rows' objects spares the column read: one ranged GET a shard (it was three). A shard written
    before that copy existed still loads (its columns are read), and one rewritten after the listing
    opens again, asking for its size."""
    import pyarrow.parquet as pq

    from fmolab.data.loader import FMOLoader
    from fmolab.shards import ROW_INDEX, open_parquet, shard_sizes

    local = write_synthetic_dataset(work / "one", num_sequences=16, width=64, height=48, seed=3)
    storage.upload_tree(local, "s3://fmo/one")
    shards = [f for f in storage.list_files("s3://fmo/one", ".parquet")]
    assert len(shards) >= 2
    loaders = []
    seen = requests_to(s3["AWS_ENDPOINT_URL"], lambda: loaders.append(FMOLoader("s3://fmo/one")))
    on_shards = [(m, p) for m, p in seen if p.endswith(".parquet")]
    assert sorted(on_shards) == sorted(("GET", "/fmo/one/" + storage.basename(f)) for f in shards), seen
    here = FMOLoader(local)
    assert [loaders[0].get(i).seq_id for i in range(len(here))] == [here.get(i).seq_id for i in range(len(here))]
    # rows read through the sized opens: the reader's (preflight) and Ray Data's (by row group)
    from fmolab.data.ray_pipeline import read_row_groups
    from fmolab.shard_reader import ShardReader

    there, near = ShardReader("s3://fmo/one"), ShardReader(local)
    assert [there.row(i)["frames"] for i in (0, len(near) - 1)] == [near.row(i)["frames"] for i in (0, len(near) - 1)]
    units = {"path": np.array(shards), "size": np.array([loaders[0].sizes[f] for f in shards]),
             "row_group": np.zeros(len(shards), int), "epoch": np.zeros(len(shards), int)}
    got = read_row_groups(units, ["seq_id", "frames"], frozenset(), "all")
    assert got.column("seq_id").to_pylist() == [near.row(i)["seq_id"] for i in range(len(near))]
    # an older shard: no copy in its footer
    table = pq.read_table(local / storage.basename(shards[0]))
    assert ROW_INDEX in table.schema.metadata
    pq.write_table(table.replace_schema_metadata({}), work / "old.parquet")
    storage.upload(work / "old.parquet", shards[0])
    old = FMOLoader("s3://fmo/one")
    assert [old.get(i).seq_id for i in range(len(here))] == [here.get(i).seq_id for i in range(len(here))]
    # listed, then rewritten with another size: opened again by asking
    sizes = shard_sizes("s3://fmo/one")
    storage.upload(local / storage.basename(shards[0]), shards[0])
    assert sizes[shards[0]] != (local / storage.basename(shards[0])).stat().st_size
    assert open_parquet(shards[0], size=sizes[shards[0]]).metadata.num_rows == table.num_rows


def test_a_row_index_interrupted_while_written_leaves_the_last_one(tmp_path):
    """The index is written chunk by chunk as a render's summaries are read, but put in one write at the
    end: an error on the way leaves the previous index whole, and the file reads back batch by batch."""
    from fmolab.shard_reader import RowIndexWriter, read_row_index

    a = {"bytes": 10, "row_groups": 1, "objects": ["x/1", "", "y\0z"], "indices": [0, 1, 2]}
    with RowIndexWriter(tmp_path, chunk=1) as index:
        index.add("part-00000.parquet", a)
        index.add("part-00001.parquet", {**a, "objects": [], "indices": []})  # a shard without rows
    with pytest.raises(RuntimeError), RowIndexWriter(tmp_path, chunk=1) as index:
        index.add("part-00002.parquet", a)
        raise RuntimeError("the store went away")
    assert read_row_index(tmp_path) == {"part-00000.parquet": a,
                                        "part-00001.parquet": {**a, "objects": [], "indices": []}}


def test_start_up_over_the_bucket_with_the_row_index_reads_no_shard(s3, work):
    """A rendered dataset's row index (rows.arrow, written with the manifest, which names it) stands for
    the footers: start-up lists, reads the manifest and the index, and opens no shard (10^4 footers were
    10^4 requests); a shard whose size no longer matches the index is read from its footer, alone. A
    manifest that does not name an index (synthetic data, background clips) is not asked for one."""
    import pyarrow.parquet as pq

    from fmolab.data.loader import FMOLoader
    from fmolab.shard_reader import ROWS, RowIndexWriter, ShardReader
    from fmolab.shards import row_index

    local = write_synthetic_dataset(work / "idx", num_sequences=24, width=64, height=48, seed=4)
    storage.upload_tree(local, "s3://fmo/idx")
    facts = {}
    for f in sorted(local.glob("*.parquet")):
        pf = pq.ParquetFile(f)
        objects, indices = row_index(pf)
        facts[f.name] = {"bytes": f.stat().st_size, "row_groups": pf.metadata.num_row_groups,
                         "objects": objects, "indices": indices}
    assert len(facts) >= 3
    with RowIndexWriter("s3://fmo/idx", chunk=2) as index:  # more than one batch
        for name, record in facts.items():
            index.add(name, record)
    seen = requests_to(s3["AWS_ENDPOINT_URL"], lambda: FMOLoader("s3://fmo/idx", split="val"))
    assert not [p for _, p in seen if ROWS in p] and len([p for _, p in seen if p.endswith(".parquet")]) == len(facts)
    storage.write_json("s3://fmo/idx/manifest.json", {**storage.read_json(local / "manifest.json"), "row_index": ROWS})
    loaders = []
    seen = requests_to(s3["AWS_ENDPOINT_URL"], lambda: loaders.append(FMOLoader("s3://fmo/idx", split="val")))
    assert not [p for _, p in seen if p.endswith(".parquet")], seen
    assert {p for m, p in seen if m == "GET" and "/fmo/idx/" in p} == {"/fmo/idx/manifest.json", f"/fmo/idx/{ROWS}"}
    footers = FMOLoader(local, split="val")
    assert loaders[0].refs == [("s3://fmo/idx/" + f.rsplit("/", 1)[-1], r) for f, r in footers.refs]
    assert [loaders[0].get(i).seq_id for i in range(len(footers))] == [footers.get(i).seq_id for i in range(len(footers))]
    # one shard rewritten (another size): its footer is read, the others' index entries still stand
    first = sorted(facts)[0]
    table = pq.read_table(local / first)
    pq.write_table(table, work / "rewritten.parquet", compression="zstd")
    storage.upload(work / "rewritten.parquet", f"s3://fmo/idx/{first}")
    seen = requests_to(s3["AWS_ENDPOINT_URL"], lambda: loaders.append(FMOLoader("s3://fmo/idx", split="val")))
    assert [p for _, p in seen if p.endswith(".parquet")] == [f"/fmo/idx/{first}"], seen
    assert loaders[-1].refs == loaders[0].refs and loaders[-1].object_ids == loaders[0].object_ids
    # background clips never have an index, and their manifest names none: not asked for
    seen = requests_to(s3["AWS_ENDPOINT_URL"], lambda: ShardReader("s3://fmo/idx/backgrounds"))
    assert ("GET", "/fmo/idx/backgrounds/manifest.json") in seen and not [p for _, p in seen if ROWS in p], seen


def _cli(args, env, timeout=60):
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "fmolab.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    return proc, time.time() - t0


@pytest.mark.parametrize("case", ["missing_bucket", "unreachable", "no_credentials"])
def test_bad_storage_is_reported_in_seconds_before_any_cluster_work(s3_vars, work, case):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(s3_vars, FMOLAB_HOME=str(work), AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=str(work / "none"), AWS_SHARED_CREDENTIALS_FILE=str(work / "none"))
    uri, expect = "s3://fmo/out", ""
    if case == "missing_bucket":
        uri, expect = "s3://no-such-bucket/out", "the bucket does not exist"
    elif case == "unreachable":
        env["AWS_ENDPOINT_URL"], expect = "http://127.0.0.1:9", "cannot be reached; set AWS_ENDPOINT_URL"
    else:
        del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
        expect = "no credentials for s3://fmo/out/datasets/fmo: set AWS_ACCESS_KEY_ID"
    proc, seconds = _cli(["render", f"runtime.storage={uri}", "render.num_sequences=1"], env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert uri in proc.stderr and expect in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert seconds < 10 + 8, seconds  # + interpreter and import start-up
    assert not (work / "ray").exists() or not any((work / "ray").iterdir())  # Ray never started


def test_a_read_only_bucket_is_refused_before_work(work, tmp_path):
    """IAM enforced by the server: a user allowed to read, not to write."""
    import boto3

    with s3_server(buckets=(), env={"INITIAL_NO_AUTH_ACTION_COUNT": "5"}) as s3v:
        boto = dict(endpoint_url=s3v["AWS_ENDPOINT_URL"], region_name="us-east-1",
                    aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"], aws_secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"])
        boto3.client("s3", **boto).create_bucket(Bucket="readonly")  # the start-up probe and these 4 calls need no auth
        iam = boto3.client("iam", **boto)
        iam.create_user(UserName="reader")
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]}))
        env = {**os.environ, **s3v, "FMOLAB_HOME": str(work), "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        proc, seconds = _cli(["render", "runtime.storage=s3://readonly/out", "render.num_sequences=1"], env)
    assert proc.returncode == 2 and "cannot write to s3://readonly/out" in proc.stderr, proc.stderr[-2000:]
    assert "read-only for these credentials" in proc.stderr and seconds < 18


def test_asset_folders_in_the_bucket_are_read_from_a_node_local_copy(s3, work, make_config):
    """A background-clips folder at a URI: fetched once into this node's cache, then used as a folder."""
    from PIL import Image

    from fmolab.shard_reader import ShardReader
    from render_cluster.backgrounds import write_backgrounds

    rng = np.random.default_rng(0)
    frames = work / "vot" / "seq_a"
    frames.mkdir(parents=True)
    for k in range(4):
        Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(frames / f"{k:08d}.jpg")
    storage.upload_tree(work / "vot", "s3://fmo/assets/vot")
    local = storage.local_tree("s3://fmo/assets/vot")
    assert (local / "seq_a" / "00000003.jpg").read_bytes() == (frames / "00000003.jpg").read_bytes()
    assert storage.local_tree("s3://fmo/assets/vot") == local and (local / ".complete").exists()
    cfg = make_config({"runtime.work_dir": work, "render.width": 32, "render.height": 24,
                       "render.backgrounds.source": "s3://fmo/assets/vot", "render.backgrounds.num_clips": 2,
                       "render.backgrounds.frames_per_clip": 3})
    manifest = write_backgrounds(cfg, "s3://fmo/bg-out")
    assert manifest["num_rows"] == 2 and manifest["source"] == "s3://fmo/assets/vot"
    assert ShardReader("s3://fmo/bg-out").column("source") == ["seq_a", "seq_a"]
    with pytest.raises(FileNotFoundError, match="s3://fmo/assets/none"):
        storage.local_tree("s3://fmo/assets/none")


SEARCH = """
params:
  train.lr: {choice: [0.003]}
overrides: {train.steps: 4, train.val_every: 2, train.ckpt_every: 2}
points_to_evaluate: [{train.lr: 0.003}]
"""


# slow (51 s): CI keeps under 30 minutes; the bucket path of training is covered by test_cluster_storage
@pytest.mark.slow
def test_a_search_keeps_its_state_checkpoints_and_results_in_the_bucket(s3, work, tmp_path, make_config):
    """Ray Tune + Train with storage in the bucket: trial checkpoints, Tune's state, the search's
    files; the best model registered from the bucket's checkpoint; a resume reads it all back."""
    import ray

    from fmolab.tune import SearchOptions, run_search

    ray.shutdown()  # a Ray whose workers get this test's endpoint and credentials (init_ray passes them)
    local = write_synthetic_dataset(work / "toy", num_sequences=12, width=64, height=48, seed=3)
    storage.upload_tree(local, "s3://fmo/tune-data")
    space = tmp_path / "space.yaml"
    space.write_text(SEARCH)
    cfg = make_config({"runtime.work_dir": work, "runtime.storage": "s3://fmo/tune-out", "runtime.num_cpus": 2,
                       "data.train": "s3://fmo/tune-data", "data.frames_per_sample": 4, "data.val_fraction": 0.25,
                       "model.encoder": "tiny", "loss.compare": "[]", "train.workers": 1, "train.batch_size": 2,
                       "train.val_samples": 2, "train.preview_samples": 0, "tracking.experiment": "tune-s3",
                       "tracking.register_as": "tune-s3", "tracking.alias": "best"})
    try:
        out = run_search(cfg, space, SearchOptions(trials=1, max_concurrent=1), name="s3search", verbose=0)
        assert out["table"] == "s3://fmo/tune-out/searches/s3search/trials.csv" and storage.exists(out["table"])
        assert storage.exists("s3://fmo/tune-out/searches/s3search/search.json")
        assert storage.list_dirs("s3://fmo/tune-out/ray_results/s3search")  # Tune's state and trial checkpoints
        assert out["registered"] == "models:/tune-s3@best" and out["trials"][0]["checkpoint_path"]
        again = run_search(make_config({"runtime.work_dir": work, "runtime.storage": "s3://fmo/tune-out"}), None,
                           name="s3search", resume=True, verbose=0)
        assert again["best_trial"] == out["best_trial"]
    finally:
        ray.shutdown()
    assert not (work / "searches").exists() and not (work / "ray_results").exists()  # nothing local
