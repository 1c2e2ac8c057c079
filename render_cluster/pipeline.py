"""Ray Data fan-out: shard blocks -> bpy render actors -> atomic Parquet shards + manifest.json.

Block ``b`` holds indices ``[b*shard_rows, (b+1)*shard_rows)`` and becomes ``part-{b:05d}.parquet``.
A block whose shard exists is skipped, so a rerun resumes without duplicates or gaps; a block is
claimed before it renders (:mod:`render_cluster.sharing`), so two renders of one dataset at once
share the blocks instead of rendering each twice. Each actor (:mod:`render_cluster.actor`)
also writes ``.render/part-XXXXX.json`` (its summary) after the shard, so the manifest written at the
end can account for shards of earlier, interrupted runs too. The dataset is a folder or an
object-store URI (:mod:`fmolab.storage`): actors on any node write their shards straight to it.
"""
from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import time
from collections import Counter

from fmolab import storage
from fmolab.config import Config, to_dict
from fmolab.shards import MANIFEST, write_json_atomic
from fmolab.storage.claims import Claims, owner_id
from render_cluster.actor import RenderActor
from render_cluster.manifest import block_indices, build_manifest, finished_blocks
from render_cluster.sharing import CLAIMS, check_settings



def preflight(cfg: Config):
    """Everything that can fail before Ray starts: asset folders, trajectory bounds, backgrounds."""
    from render_cluster.backgrounds import check_source
    from render_cluster.sequence import Assets
    from render_cluster.trajectory import check_bounds

    render_cfg = cfg.render
    check_bounds(render_cfg.trajectory, render_cfg.width, render_cfg.height)
    assets = Assets(render_cfg.objects, render_cfg.textures)
    check_source(render_cfg.backgrounds.source)
    if render_cfg.device == "gpu" or render_cfg.engine == "eevee":
        import ray  # GPU work without a GPU in the cluster would hang in the scheduler: say so now

        if ray.is_initialized() and not ray.cluster_resources().get("GPU"):
            raise RuntimeError(f"render.engine={render_cfg.engine} device={render_cfg.device} needs GPUs but the Ray "
                               "cluster has none; use render.engine=cycles render.device=cpu")
    return assets


class ShardWriteError(RuntimeError):
    """A shard could not be stored; the shards finished before it are kept."""


class BadAssetsError(RuntimeError):
    """More draws than render.max_bad_asset_fraction failed on asset files."""


def check_assets(render_cfg, rejections: dict, bad_assets: dict, rows: int, final: bool) -> None:
    """Raise :class:`BadAssetsError` when too many draws failed on asset files: at the end, or as soon
    as 8 draws say so (a render of a folder of unusable meshes stops early, not after every draw)."""
    failed = int(rejections.get("bad_asset", 0))
    drawn = rows + sum(int(v) for v in rejections.values())
    if not failed or (drawn < 8 and not final) or failed / drawn <= render_cfg.max_bad_asset_fraction:
        return
    first = "; ".join(" ".join(k.split()) for k in sorted(bad_assets, key=lambda k: -bad_assets[k])[:3])  # one line
    raise BadAssetsError(f"{failed} of {drawn} draws ({100 * failed / drawn:.0f}%) failed on asset files, more than "
                         f"render.max_bad_asset_fraction={render_cfg.max_bad_asset_fraction:g}; first: {first}. Fix "
                         "or remove those files (or raise render.max_bad_asset_fraction), then render a new dataset "
                         "(another render.name)")


@contextlib.contextmanager
def _quiet(name: str):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _release_freed_memory() -> None:
    """Give the heap a render pass freed back to the system: each pass's Ray Data threads leave freed
    blocks in glibc's per-thread arenas, which are not reused by the next pass's threads (the driver
    grew by 45 MB over the 7 passes after the first of 10^6 sequences)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


class ActorStartTimeout(RuntimeError):
    """Render actors did not start in ``render.start_timeout_s`` (a node lost while Blender loaded)."""


def alive_cpus() -> int:
    import ray

    return int(sum(n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")))


def render_dataset(cfg: Config, progress: bool = True) -> dict:
    """Render ``cfg.render.num_sequences`` sequences + background clips into ``cfg.dataset_dir``.

    Passes of a Ray Data actor pool (each over at most ``render.blocks_per_pass`` blocks: the driver's
    memory grows with a pass's blocks) until every block is done: a pass whose actors cannot start in
    ``render.start_timeout_s`` (a node lost) is followed by one sized to the nodes left; blocks another
    render holds are waited for until they are done or their claims expire."""
    from fmolab.runtime import init_ray

    render_cfg = cfg.render
    out = cfg.dataset_dir
    assets = preflight(cfg)  # clear errors before any Ray work
    storage.check_writable(out)  # a missing bucket or credentials: now, not after Blender started
    check_settings(cfg)  # another dataset's settings: refused before any work
    init_ray(cfg.runtime.address, cfg.runtime.num_cpus, cfg.work_dir)
    preflight(cfg)  # again, now that the cluster's GPUs are known
    n_blocks = math.ceil(render_cfg.num_sequences / render_cfg.shard_rows)
    t0 = time.time()
    try:
        fresh = _render_all(cfg, assets, out, n_blocks, progress)
    except BadAssetsError as exc:  # the dataset is not usable: its manifest says so, then the one line
        manifest = build_manifest(cfg, out, n_blocks, time.time() - t0, rendered=0)
        write_json_atomic({**manifest, "complete": False, "error": str(exc)}, storage.join(out, MANIFEST))
        raise
    seconds = time.time() - t0
    render_backgrounds(cfg, storage.join(out, "backgrounds"))
    manifest = build_manifest(cfg, out, n_blocks, seconds, rendered=len(fresh), fresh=frozenset(fresh))
    try:
        check_assets(render_cfg, manifest["rejections"], manifest["bad_assets"], manifest["num_rows"], final=True)
    except BadAssetsError as exc:
        manifest.update(complete=False, error=str(exc))
        write_json_atomic(manifest, storage.join(out, MANIFEST))
        raise
    write_json_atomic(manifest, storage.join(out, MANIFEST))
    return manifest


def _render_all(cfg: Config, assets, out: str, n_blocks: int, progress: bool) -> set[int]:
    """Render passes until every block is done (or held by another render that finishes it); returns
    the blocks this render rendered."""
    from fmolab.runtime import progress as progress_bar

    render_cfg = cfg.render
    claims = Claims(storage.join(out, CLAIMS), owner_id(), render_cfg.claim_lease_s)

    def rows_of(blocks):
        return sum(hi - lo for lo, hi in (block_indices(render_cfg, b) for b in blocks))

    def unfinished() -> list[int]:  # one listing of the dataset (a comprehension's condition listed per block)
        done = finished_blocks(out)
        return [b for b in range(n_blocks) if b not in done]

    todo = unfinished()  # listed again after each pass
    rendered: set[int] = set()
    cap, waited = 1 << 30, False
    with progress_bar(rows_of(todo), "seq", "render", show=progress and bool(todo)) as bar:
        while True:
            if todo is None:  # after a pass or a wait; the first listing is the one above
                todo = unfinished()
            if not todo:
                break
            held = {int(k[5:10]): v for k, v in claims.holders().items() if k[5:10].isdigit()}
            free = [b for b in todo if b not in held]
            if not free:
                if not waited:
                    who = sorted({f"{h.get('host')} pid {h.get('pid')}" for h in held.values()})
                    print(f"[render] {len(held)} block(s) are being rendered by another render ({', '.join(who)}); "
                          f"waiting until they are done or their claims expire (within {render_cfg.claim_lease_s:.0f} s)",
                          flush=True)
                    waited = True
                time.sleep(min(2.0, render_cfg.claim_lease_s / 10))
                todo = None
                continue
            free = free[:render_cfg.blocks_per_pass]  # bounds the driver's memory; the rest in the next pass
            workers = max(1, min(render_cfg.workers or alive_cpus(), alive_cpus(), cap, len(free)))
            todo = None
            try:
                rendered |= _render_pass(cfg, assets, out, free, workers, claims.owner, bar)
                _release_freed_memory()
            except ActorStartTimeout as exc:
                if workers == 1:  # not even one actor started: no node left can run one
                    raise ActorStartTimeout(f"{exc}; the cluster's {alive_cpus()} CPU(s) could not start one: check "
                                            "the nodes (`ray status`), or raise render.start_timeout_s; rerun the "
                                            "same command to resume") from None
                # a node lost is seen by Ray only after its heartbeats are missed: shrink by what is known
                cap = max(1, min(workers - 1, alive_cpus()))
                print(f"[render] {exc}; going on with {cap} render actor(s)", flush=True)
    return rendered


def _render_pass(cfg: Config, assets, out: str, blocks: list[int], workers: int, owner: str, bar) -> set[int]:
    """One Ray Data pass of ``workers`` render actors over ``blocks``; returns the blocks it rendered."""
    import ray

    render_cfg = cfg.render
    gpus = 1 if (render_cfg.device == "gpu" or render_cfg.engine == "eevee") else 0
    # Start rendering once every actor has loaded Blender (otherwise the first one ready takes the blocks
    # of a short render and the other nodes stay idle), but never wait longer than start_timeout_s.
    ray.data.DataContext.get_current().wait_for_min_actors_s = render_cfg.start_timeout_s
    ds = ray.data.from_items([{"block": b} for b in blocks], override_num_blocks=len(blocks))
    ds = ds.map_batches(
        RenderActor,
        fn_constructor_kwargs=dict(cfg=to_dict(cfg), assets=assets.to_dict(), out=out, owner=owner),
        compute=ray.data.ActorPoolStrategy(size=workers),
        batch_size=1, num_cpus=1, num_gpus=gpus,
    )
    rejected, bad, rows, failed_write, rendered, timed_out = Counter(), Counter(), 0, "", set(), False
    try:
        with _quiet("ray.data.exceptions"):  # Ray Data logs a whole traceback of what is raised here anyway
            for row in ds.iter_rows():
                s = json.loads(row["summary"])
                if s.get("error"):
                    failed_write = s["error"]
                    break  # ends the dataset: the other actors' writes would fail the same way
                if s.get("skipped") or s.get("held"):
                    continue
                rendered.add(int(s["block"]))
                rejected.update(s["rejections"])
                bad.update(s.get("bad_assets", {}))
                rows += s["rows"]
                check_assets(render_cfg, rejected, bad, rows, final=False)  # stops the pass: ends the dataset
                bar.update(s["end_index"] - s["first_index"])
                bar.set_postfix(rows=s["rows"], rejected=sum(rejected.values()), refresh=False)
    except Exception as exc:
        if "Timed out while starting actors" not in str(exc) and type(exc).__name__ != "GetTimeoutError":
            raise
        timed_out = True
    if timed_out:
        # The pool's actors that did start hold their CPUs until the pool is collected: free them for
        # the next pass (the traceback that referenced the pool is gone once outside the except block).
        ds = None
        gc.collect()
        deadline = time.time() + render_cfg.start_timeout_s
        while time.time() < deadline and ray.available_resources().get("CPU", 0) < 1:
            time.sleep(0.5)
        raise ActorStartTimeout(f"{workers} render actor(s) did not start within render.start_timeout_s="
                                f"{render_cfg.start_timeout_s:.0f} s")
    if failed_write:
        raise ShardWriteError(f"{failed_write}; the {len(finished_blocks(out))} finished shard(s) are kept: "
                              "free space (or fix the store) and rerun the same command to resume")
    return rendered


def render_backgrounds(cfg: Config, out_dir) -> dict:
    """Background clips (procedural or from a frame folder) as their own shards + manifest."""
    from render_cluster.backgrounds import write_backgrounds

    return write_backgrounds(cfg, out_dir)
