"""The render actor: one Blender per Ray actor process, rendering whole shard blocks on any node.

A block is claimed before it renders (a lease renewed while it renders), its shard written all or
nothing straight to the dataset's storage, then its summary (``.render/part-XXXXX.json``)."""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from fmolab import storage
from fmolab.config import config_from_dict
from fmolab.shards import SEQUENCE_SCHEMA, write_json_atomic, write_shard
from fmolab.storage.claims import Claims, owner_id
from render_cluster.manifest import SUMMARY_DIR, shard_path
from render_cluster.sharing import CLAIMS


class RenderActor:
    """One bpy per actor process; renders whole blocks (Ray Data calls it with batches of 1).

    Every bpy call runs in the actor's one Blender thread: Blender's operators (the OBJ, glTF and PLY
    importers among them) find their context only in the thread that imported bpy, and Ray Data calls
    an actor's methods from a thread pool."""

    def __init__(self, cfg: dict, assets: dict, out: str, owner: str = "", threads: int = 1):
        from fmolab.runtime import use_work_dir
        from render_cluster.sequence import Assets

        if os.environ.get("FMOLAB_HOME"):
            use_work_dir(os.environ["FMOLAB_HOME"])  # TMPDIR below the work folder
        self.cfg = config_from_dict(cfg)
        self.assets = Assets(**assets)
        self.out = out
        self.claims = Claims(storage.join(out, CLAIMS), owner or owner_id(), self.cfg.render.claim_lease_s)
        self.bpy_thread = ThreadPoolExecutor(1, thread_name_prefix="blender")
        if self.cfg.render.engine == "simulated":  # rows without Blender (render_cluster/simulated.py)
            self.scene, self.blender = None, "simulated"
        else:
            self.scene, self.blender = self.bpy_thread.submit(self._start_blender, threads).result()
        import ray

        try:
            self.node = ray.get_runtime_context().get_node_id()
        except Exception:
            self.node = socket.gethostname()

    def _start_blender(self, threads: int):
        import bpy

        from render_cluster.scene import Scene

        scene = Scene(self.cfg.render, threads=threads)
        # Blender's own exit handler, run by the main thread when Ray ends the actor, crashes (SIGSEGV)
        # on a bpy started in another thread; nothing of it needs a clean exit: its files are written
        # and Scene's temporary folder goes here (exit handlers run last registered first).
        atexit.register(_exit_now, scene)
        return scene, bpy.app.version_string

    def __call__(self, batch: dict) -> dict:
        from render_cluster.sequence import render_block
        from render_cluster.simulated import simulate_block

        render_cfg = self.cfg.render
        summaries = []
        for block in batch["block"]:
            block = int(block)
            path = shard_path(self.out, block)
            if storage.exists(path):  # another attempt (actor restart) already finished it
                summaries.append({"block": block, "rows": -1, "skipped": True})
                continue
            name = storage.basename(path)
            holder = self.claims.claim(name, node=self.node, block=block)
            if holder is not None:  # another render (another user's driver) is rendering it
                summaries.append({"block": block, "held": holder})
                continue
            with renewing(self.claims, name):
                if self.scene is None:
                    rows, summary = simulate_block(render_cfg, block, render_cfg.num_sequences)
                else:
                    rows, summary = self.bpy_thread.submit(render_block, self.scene, render_cfg, self.assets, block,
                                                           render_cfg.num_sequences).result()
            summary.update(node=self.node, host=socket.gethostname(), blender=self.blender, file=name,
                           render=self.claims.owner)
            try:
                # all or nothing: a failed write leaves no file; what it wrote goes to the row index
                summary.update(write_shard(rows, path, SEQUENCE_SCHEMA))
            except OSError as exc:  # a full disk, a quota, a revoked bucket: the user's to fix, not a retry's.
                # Returned, not raised: Ray Data's wrapping of an actor's exception keeps only its text.
                summaries.append({"block": block, "error": f"cannot write {path}: {exc.strerror or exc}"})
                break
            write_json_atomic(summary, storage.join(self.out, SUMMARY_DIR, name.replace(".parquet", ".json")))
            storage.remove(storage.join(self.out, CLAIMS, name))  # done: the shard itself says so now
            summaries.append({k: v for k, v in summary.items() if k not in ("objects", "indices")})  # in the file
        return {"summary": [json.dumps(s) for s in summaries]}


def _exit_now(scene) -> None:
    scene.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@contextlib.contextmanager
def renewing(claims: Claims, name: str):
    """Renew ``name``'s claim every quarter lease while the block renders (a long block keeps it)."""
    stop = threading.Event()

    def renew():
        while not stop.wait(claims.lease_s / 4):
            try:
                claims.renew(name)
            except Exception:  # noqa: BLE001 - a missed renewal only shortens the lease
                pass

    thread = threading.Thread(target=renew, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
