"""A render of many sequences, simulated: what the orchestration costs the driver and the storage.

``render.engine=simulated`` makes rows without Blender (tiny valid images, the real schema), so the
real Ray Data pipeline, claims, shard writer, manifest and resume run at sizes no CPU could render.
Each size runs in a fresh driver process (its CPU time and peak memory are its own); reported:

* the driver's CPU per sequence (user + system, Ray's own processes excluded) and its peak RSS, by the
  end of the render and by the end of every phase below;
* the manifest's size and the time to build and write it again;
* the time a rerun takes to find that every block is there (resume);
* training start-up (``fmolab train``'s preflight) and evaluation start-up (the dataset ``fmolab
  evaluate`` and each training worker build) over the shards: seconds, and Parquet footers opened
  (with the render's row index, ``rows.arrow``, none but the row preflight reads); on moto also the
  requests the server answered (its recorder, in a second start-up of each).

Writes ``benchmarks/results/render_scale.json`` (``--out`` another file).

    python benchmarks/render_scale.py                       # 10^4 sequences, a local folder
    python benchmarks/render_scale.py --sizes 10000,100000 --storage s3   # on a moto S3 server too
    python benchmarks/render_scale.py --sizes 640000 --storage s3-copied  # resume over 10^4 shards on moto
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def copy_up(local_dir: str, remote_dir: str) -> float:
    """Every file of a dataset rendered locally to object storage (Arrow's threaded copy, each object
    put once: the benchmark's set-up, not a writer readers may watch); seconds taken."""
    import pyarrow.fs as pafs

    from fmolab import storage

    t0 = time.perf_counter()
    fs, p = storage.filesystem(remote_dir)
    pafs.copy_files(str(local_dir), p, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs,
                    use_threads=True)
    return time.perf_counter() - t0


def recorded(run) -> dict:
    """``run()``'s requests to the moto server at ``AWS_ENDPOINT_URL`` by method (moto's recorder)."""
    import requests

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    requests.post(endpoint + "/moto-api/recorder/reset-recording", timeout=60)
    requests.post(endpoint + "/moto-api/recorder/start-recording", timeout=60)
    run()
    requests.post(endpoint + "/moto-api/recorder/stop-recording", timeout=60)
    methods: dict[str, int] = {}
    for line in requests.get(endpoint + "/moto-api/recorder/download-recording", timeout=600).text.splitlines():
        if line:
            m = json.loads(line)["method"]
            methods[m] = methods.get(m, 0) + 1
    return methods


def child(n: int, work: str, storage_root: str, copied: bool = False) -> dict:
    """One size in this process. ``copied``: render to a local folder, copy the dataset to
    ``storage_root`` (object storage), and measure everything after the render there: 10^4 shards
    reach moto in a minute this way instead of the ~40 a render through moto's one server takes."""
    import pyarrow.parquet as pq

    from fmolab.config import derive, load_config
    from fmolab.runtime import quiet_third_party
    from fmolab.train.preflight import preflight
    from render_cluster.manifest import build_manifest
    from render_cluster.pipeline import render_dataset

    quiet_third_party()
    settings = [f"runtime.work_dir={work}", "render.engine=simulated", "render.width=16", "render.height=16",
                "render.num_frames=2", "render.shard_rows=64", f"render.num_sequences={n}", f"render.name=sim-{n}",
                "render.backgrounds.num_clips=4", "render.backgrounds.frames_per_clip=2",
                "data.frames_per_sample=2", "data.format=background_blur"]
    cfg = load_config([], [*settings, f"runtime.storage={storage_root}"])
    rendered_cfg = load_config([], [*settings, f"runtime.storage={work}/local"]) if copied else cfg
    c0, t0 = cpu_s(), time.perf_counter()
    manifest = render_dataset(rendered_cfg, progress=False)
    render_s, render_cpu = time.perf_counter() - t0, cpu_s() - c0
    render_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the phases below add theirs
    copy_s = copy_up(rendered_cfg.dataset_dir, cfg.dataset_dir) if copied else None
    out = cfg.dataset_dir
    n_blocks = manifest["num_shards"]
    t0 = time.perf_counter()
    again = build_manifest(cfg, out, n_blocks, 0.0, rendered=0)
    from fmolab import storage
    from fmolab.shards import write_json_atomic

    write_json_atomic(again, storage.join(out, "manifest-copy.json"))
    manifest_s = time.perf_counter() - t0
    manifest_bytes = len(storage.read_bytes(storage.join(out, "manifest.json")))
    c0, t0 = cpu_s(), time.perf_counter()
    resumed = render_dataset(cfg, progress=False)
    resume_s, resume_cpu = time.perf_counter() - t0, cpu_s() - c0
    opened: list[str] = []
    original = pq.ParquetFile.__init__

    def counting(self, source, *args, **kwargs):
        opened.append(str(source) if isinstance(source, (str, os.PathLike)) else "a remote stream")
        return original(self, source, *args, **kwargs)

    from fmolab.shards import RemoteParquet

    remote_original = RemoteParquet.__init__

    def counting_remote(self, *args, **kwargs):  # an object of a listed size: its footer, without asking its size
        opened.append("a remote stream")
        return remote_original(self, *args, **kwargs)

    pq.ParquetFile.__init__, RemoteParquet.__init__ = counting, counting_remote
    from fmolab.data import build_dataset

    remote = storage.is_remote(out)
    timed = {}

    def train_startup():
        c0, t0 = cpu_s(), time.perf_counter()
        preflight(derive(cfg, {"data.train": out}))
        timed["train"], timed["train_cpu"] = time.perf_counter() - t0, cpu_s() - c0

    def eval_startup():
        c0, t0 = cpu_s(), time.perf_counter()
        build_dataset(derive(cfg, {"data.train": out}), "all")  # what `fmolab evaluate` (and each worker) builds
        timed["eval"], timed["eval_cpu"] = time.perf_counter() - t0, cpu_s() - c0

    train_startup()
    train_opened = list(opened)
    opened.clear()
    eval_startup()
    first, eval_opened = dict(timed), list(opened)
    # each again on moto with its request recorder on (it slows the server: the times are the first's)
    train_requests, eval_requests = (recorded(train_startup), recorded(eval_startup)) if remote else (None, None)
    opened[:] = eval_opened
    pq.ParquetFile.__init__, RemoteParquet.__init__ = original, remote_original
    return {"sequences": n, "shards": n_blocks, "copied_up_s": copy_s and round(copy_s, 1), "rows": manifest["num_rows"], "complete": manifest["complete"],
            "render_wall_s": round(render_s, 2), "driver_cpu_s": round(render_cpu, 2),
            "driver_cpu_ms_per_sequence": round(1000 * render_cpu / n, 4),
            "driver_peak_rss_mb_render": round(render_peak, 1),
            "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "manifest_bytes": manifest_bytes, "manifest_build_write_s": round(manifest_s, 3),
            "resume_s": round(resume_s, 2), "resume_cpu_s": round(resume_cpu, 2),
            "resume_rendered_blocks": resumed["timing"]["blocks_rendered_this_run"],
            "train_startup_s": round(first["train"], 2), "train_startup_cpu_s": round(first["train_cpu"], 2),
            "train_startup_footer_opens": len(train_opened),
            "train_startup_local_footers_opened_twice": twice(train_opened),
            "eval_startup_s": round(first["eval"], 2), "eval_startup_cpu_s": round(first["eval_cpu"], 2),
            "eval_startup_footer_opens": len(opened),
            "eval_startup_local_footers_opened_twice": twice(opened),
            "train_startup_requests": train_requests, "eval_startup_requests": eval_requests}


def twice(opened: list[str]) -> int | None:
    """Local footers opened more than once (None: remote opens are streams, not named)."""
    return len(opened) - len(set(opened)) if "a remote stream" not in opened else None


def run(n: int, storage_root: str, env: dict, copied: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="fmrs-", dir="/tmp") as work:
        cmd = [sys.executable, __file__, "--child", str(n), work, storage_root or f"{work}/out", str(int(copied))]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env, "FMOLAB_HOME": work,
                                                                         "FMOLAB_PROGRESS": "0"})
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-4000:])
        return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000", help="numbers of sequences, comma-separated")
    ap.add_argument("--storage", default="local",
                    help="local, s3 (rendered through a moto server), s3-copied (rendered locally, then copied to "
                         "moto: resume and start-ups measured there), or several, comma-separated")
    ap.add_argument("--out", default=str(HERE / "results" / "render_scale.json"))
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        n, work, root, copied = args.child
        print(json.dumps(child(int(n), work, root, copied == "1")))
        return
    sys.path.insert(0, str(HERE.parent / "tests"))
    rows = []
    for where in args.storage.split(","):
        for n in (int(float(s)) for s in args.sizes.split(",")):
            if where in ("s3", "s3-copied"):
                from cluster_fakes import s3_server

                with tempfile.TemporaryDirectory(prefix="fmrs-moto-") as rec, \
                        s3_server(env={"MOTO_RECORDER_FILEPATH": f"{rec}/requests.jsonl"}) as variables:
                    row = run(n, f"s3://fmo/scale-{n}", variables, copied=where == "s3-copied")
            else:
                row = run(n, "", {})
            rows.append({"storage": where, **row})
            print(json.dumps(rows[-1]), flush=True)
    result = {"what": __doc__.split("\n\n")[0], "cpus": os.cpu_count(), "python": platform.python_version(),
              "runs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
