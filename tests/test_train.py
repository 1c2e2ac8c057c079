"""Ray Train with 2 CPU workers on a tiny synthetic dataset: learning, checkpoints, resume, registry."""

import os

import numpy as np
import pytest
import torch

from conftest import checkpoint_registered
from fmo_fakes import TINY_MODEL
from fmolab.data.synthetic import write_synthetic_dataset

TRAIN = {**TINY_MODEL, "data.format": "double_blur", "data.val_fraction": 0.25,
         "loss.train": "[AlphaDice, 'RGBL1:mode=gt']", "loss.compare": "[DeFMOSupervised]",
         "train.workers": 2, "train.batch_size": 2, "train.steps": 30, "train.lr": 0.003,
         "train.val_every": 10, "train.ckpt_every": 10, "train.log_every": 5, "train.val_samples": 4,
         "train.preview_samples": 1}


@pytest.fixture(scope="module")
def toy(session_home):
    return write_synthetic_dataset(session_home / "toy-train", num_sequences=16, width=64, height=48,
                                   num_frames=8, num_objects=4, seed=1)


@pytest.fixture
def base(work, toy):
    """This module's config layer: tiny double-blur training of the toy data in the test's work folder."""
    return {**TRAIN, "runtime.work_dir": work, "data.train": toy}


def test_two_workers_learn_and_resume_with_best_metric(work, base, ray_local, make_config):
    import mlflow

    from fmolab.train import train

    cfg = make_config(base, {"train.run_name": "resume-me", "train.steps": 20})
    first = train(cfg, register=False)
    m = first["metrics"]
    assert m["step"] == 20
    client = mlflow.MlflowClient()
    run = client.get_run(first["run_id"])
    assert run.data.params["train.workers"] == "2" and run.data.tags["variant"] == "double_blur"
    losses = [x.value for x in client.get_metric_history(first["run_id"], "train/loss")]
    assert len(losses) >= 3 and losses[-1] < losses[0], f"loss did not fall: {losses}"
    artifacts = {a.path for a in client.list_artifacts(first["run_id"], "previews")}
    assert any(p.endswith(".webp") for p in artifacts)

    # The same run name resumes: step count and best metric continue, the MLflow run is the same.
    cfg2 = make_config(base, {"train.run_name": "resume-me", "train.steps": 30})
    second = train(cfg2, register=False)
    assert second["run_id"] == first["run_id"]
    assert second["metrics"]["step"] == 30
    # the best carried over: the resumed run's best is the first's or one the monitor ranks above it
    from fmolab.train.state import Monitor

    s2 = second["metrics"]
    assert s2["best_step"] >= m["best_step"]
    assert not Monitor().improved(m["best_metric"], s2["best_metric"], bool(m["best_animated"]), bool(s2["best_animated"]))
    if s2["best_step"] == m["best_step"]:
        assert s2["best_metric"] == pytest.approx(m["best_metric"])
    steps = [x.step for x in client.get_metric_history(first["run_id"], "train/loss")]
    assert max(steps) == 30 and min(steps) <= 5  # one history across both launches
    assert [m.value for m in client.get_metric_history(first["run_id"], "resumed_from_step")] == [20.0]


def test_registered_model_loads_by_alias_and_renders(work, base, ray_local, make_config):
    import mlflow

    from fmolab.data import build_dataset
    from fmolab.train import train

    cfg = make_config(base, {"train.steps": 4, "train.val_every": 4, "train.ckpt_every": 4,
                             "tracking.register_as": "test-model", "tracking.alias": "candidate"})
    out = train(cfg)
    assert out["registered"] == "models:/test-model@candidate"
    model = mlflow.pyfunc.load_model("models:/test-model@candidate")
    item = build_dataset(cfg, "val")[0]
    x = item["inputs"][None].numpy().astype(np.float32)
    renders = model.predict(x, params={"num_frames": 5})
    assert renders.shape == (1, 5, 4, 48, 64)
    assert np.isfinite(renders).all() and renders.min() >= 0 and renders.max() <= 1
    # any resolution and batch size (not a fixed-shape export)
    big = np.concatenate([x, x], 0)
    big = torch.nn.functional.interpolate(torch.from_numpy(big), size=(64, 96)).numpy()
    assert model.predict(big, params={"num_frames": 3}).shape == (2, 3, 4, 64, 96)


def test_nan_loss_stops_with_step_and_losses_named(work, base, ray_local, make_config):
    from fmolab.train import train

    # an infinite weight makes the total non-finite at the first step, deterministically
    cfg = make_config(base, {"train.steps": 3, "train.workers": 1, "train.max_failures": 0,
                             "loss.train": "['RGBL1:weight=.inf,mode=direct']"})
    with pytest.raises(Exception) as err:
        train(cfg, register=False)
    assert "non-finite loss at step" in str(err.value) and "RGBL1" in str(err.value)


def own_train_workers() -> list[int]:
    """Live Train worker processes of this process's Ray (another Ray on the machine, e.g. a CI run
    beside this one, has its own): Ray titles them "ray::RayTrainWorker..."; ours are children of our
    raylet, whose pid a zero-CPU task reads as its parent (the state API would need the dashboard)."""
    import subprocess

    import ray

    def parent_pid() -> int:  # nested: shipped by value (a worker cannot import this test module)
        import os

        return os.getppid()

    raylet = ray.get(ray.remote(num_cpus=0)(parent_pid).remote())
    mine = []
    for pid in subprocess.run(["pgrep", "-f", "ray::RayTrainWorker"], capture_output=True, text=True).stdout.split():
        try:
            parent = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
        if parent == raylet:
            mine.append(int(pid))
    return mine


# slow (84 s): CI keeps under 30 minutes; test_node_loss kills a whole node mid-training instead
@pytest.mark.slow
def test_killed_worker_is_recovered_from_last_checkpoint(work, base, ray_local, make_config):
    """FailureConfig: a Train worker killed mid-run is replaced and training continues from the last
    checkpoint to the end, in the same MLflow run."""
    import os
    import signal
    import threading
    import time

    import mlflow

    from fmolab.train import train

    cfg = make_config(base, {"train.run_name": "killed", "train.steps": 200, "train.val_every": 10,
                             "train.ckpt_every": 10, "train.max_failures": 2})
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(train(cfg, register=False)))
    runner.start()
    ckpts = work / "ray_results" / "killed"
    deadline = time.time() + 300
    # Ray Train's controller registers reported checkpoints some reports after the worker wrote them;
    # a kill before that restarts from scratch (correctly): wait until one is registered.
    while not checkpoint_registered(ckpts) and time.time() < deadline:
        time.sleep(0.5)
    assert checkpoint_registered(ckpts), "no checkpoint was registered"
    pids = own_train_workers()
    assert pids, "no live train worker to kill"
    os.kill(pids[-1], signal.SIGKILL)
    runner.join(timeout=600)
    assert not runner.is_alive()
    assert result["metrics"]["step"] == 200
    client = mlflow.MlflowClient()
    assert max(m.step for m in client.get_metric_history(result["run_id"], "train/loss")) == 200
    resumed = [m.value for m in client.get_metric_history(result["run_id"], "resumed_from_step")]
    assert resumed and 0 < resumed[-1] < 200 and resumed[-1] % 10 == 0, f"not restored from a checkpoint: {resumed}"


@pytest.mark.parametrize("prefetch_in", ["thread", "process", "loop"])
def test_validation_with_fewer_items_than_workers(work, base, ray_local, make_config, prefetch_in):
    """One rank has no validation item: metrics are still combined (no collective mismatch). The
    batches are made ahead (data.prefetch) on a thread, in a child process or in runs by the training
    thread of each worker, paths no other training test takes."""
    import mlflow

    from fmolab.train import train

    cfg = make_config(base, {"train.steps": 4, "train.val_every": 4, "train.ckpt_every": 4, "train.val_samples": 1,
                             "train.log_every": 2, "data.prefetch": 2, "data.prefetch_in": prefetch_in})
    out = train(cfg, register=False)
    assert out["metrics"]["step"] == 4
    losses = mlflow.MlflowClient().get_metric_history(out["run_id"], "train/loss")
    assert [m.step for m in losses] == [2, 4] and all(np.isfinite(m.value) for m in losses)
    metrics = mlflow.MlflowClient().get_run(out["run_id"]).data.metrics
    for key in ("val/loss", "val/psnr", "val/crop_psnr", "val/ssim", "val/tiou"):
        assert key in metrics, key
    assert 0 <= metrics["val/tiou"] <= 1 and 0 < metrics["val/ssim"] <= 1


@pytest.mark.slow  # ~46 s: CI keeps under 30 minutes (make test-all runs it)
def test_ray_data_pipeline_feeds_the_workers(work, base, ray_local, make_config):
    """data.pipeline=ray_data: Ray Data actors make the items, each worker reads its dataset shard."""
    import mlflow

    from fmolab.train import train

    cfg = make_config(base, {"data.pipeline": "ray_data", "train.steps": 12, "train.val_every": 6,
                             "train.ckpt_every": 6, "train.log_every": 3})
    out = train(cfg, register=False)
    assert out["metrics"]["step"] == 12
    client = mlflow.MlflowClient()
    losses = client.get_metric_history(out["run_id"], "train/loss")
    assert [m.step for m in losses] == [3, 6, 9, 12] and all(np.isfinite(m.value) for m in losses)
    waits = [m.value for m in client.get_metric_history(out["run_id"], "data_wait_frac")]
    assert waits and all(0 <= w <= 1 for w in waits)
    assert "val/psnr" in client.get_run(out["run_id"]).data.metrics


def test_each_epoch_draws_new_backgrounds_and_augmentations(work, base, make_config):
    """The torch path's stream sets the dataset's epoch: a row's item changes from one pass to the next."""
    from fmolab.data import build_dataset
    from fmolab.train.streams import batch_stream

    ds = build_dataset(make_config(base), "train")
    stream = batch_stream(ds, 2, 0, 1, 0)
    seen: dict[int, dict[str, torch.Tensor]] = {0: {}, 1: {}}
    for epoch, batch in stream:
        if epoch > 1:
            break
        seen[epoch].update(zip(batch["seq_id"], batch["inputs"]))
    assert seen[0].keys() == seen[1].keys() and len(seen[0]) >= 6
    changed = sum(not torch.equal(seen[0][k], seen[1][k]) for k in seen[0])
    assert changed >= len(seen[0]) - 1, f"only {changed} of {len(seen[0])} items changed between epochs"


def test_adam_is_fused_unless_the_spec_chooses_and_updates_as_the_loop_does():
    from fmolab.train.optim import build_optimizer

    def trained(spec: str) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GroupNorm(2, 8), torch.nn.Linear(8, 2))
        opt = build_optimizer(spec, net.parameters(), 1e-2)
        for _ in range(5):
            opt.zero_grad()
            net(torch.randn(4, 6)).square().mean().backward()
            opt.step()
        return opt, [p.detach() for p in net.parameters()]

    fused, loop = trained("Adam"), trained("Adam:fused=false")
    assert fused[0].defaults["fused"] and trained("AdamW:weight_decay=0.01")[0].defaults["fused"]
    assert not loop[0].defaults["fused"] and not trained("Adam:foreach=true")[0].defaults["fused"]
    assert not trained("SGD:momentum=0.9")[0].defaults.get("fused")  # only where it was measured
    for a, b in zip(fused[1], loop[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(fused[1][0], trained("Adam:lr=0.1")[1][0])  # the comparison can tell steps apart


def test_cosine_with_warm_restarts_known_values():
    from fmolab.train.optim import build_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler("cosine_restarts:period=4,mult=2,min_factor=0.1", opt, 100)
    lrs = []
    for _ in range(13):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    c = lambda cur, length: 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * cur / length))  # eq. 4.9
    want = [c(i, 4) for i in range(4)] + [c(i, 8) for i in range(8)] + [c(0, 16)]
    np.testing.assert_allclose(lrs, want, rtol=1e-6)
    assert lrs[4] == 1.0 and lrs[12] == 1.0  # the restarts


FAULTS = """
import resource, sys
import numpy as np
from fmolab.train.heap import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def step():  # a step's big blocks, alive together, then all freed
    live = [np.ones(mb << 18, np.float32) for mb in (3, 9, 5, 12, 1, 7)]
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_is_kept_and_not_faulted_in_again():
    """train.keep_freed_memory: with glibc's defaults every step's freed blocks go back to the kernel
    and each next step faults them in again; kept, the same steps fault (almost) nothing."""
    import subprocess
    import sys

    def faults(mode: str) -> int:
        return int(subprocess.run([sys.executable, "-c", FAULTS, mode], check=True, capture_output=True,
                                  text=True).stdout.split()[-1])

    default, kept = faults("default"), faults("keep")
    assert default > 10_000 and kept < 100, (default, kept)


THREAD_FAULTS = """
import resource, threading
import torch
from fmolab.train.heap import keep_freed_memory, malloc_arenas
assert keep_freed_memory()
torch.set_num_threads(1)
net = torch.nn.Sequential(*[m for _ in range(4) for m in (torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU())])
x, opt = torch.rand(16, 32, 64, 64), torch.optim.Adam(net.parameters())
def step():
    opt.zero_grad()
    net(x).square().mean().backward()
    opt.step()
def pages():  # pages faulted in so far, pages held now
    with open("/proc/self/statm") as f:
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt, int(f.read().split()[1])
def train(out):  # where Ray Train runs the training function: a thread of the worker process
    for _ in range(3):
        step()
    faulted, held = pages()
    for _ in range(16):
        step()
    faulted_now, held_now = pages()
    out += [faulted_now - faulted, held_now - held, malloc_arenas()]
out = []
t = threading.Thread(target=train, args=(out,))
t.start()
t.join()
print(*out)
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc's malloc")
def test_a_training_thread_keeps_its_freed_memory_with_the_workers_environment():
    """In a thread, glibc's own arena unmaps its emptied heaps whatever the thresholds: the steps fault
    their pages in again. With heap.WORKER_ENV (what Ray Train workers start with) there is one arena,
    and every page a step faults in is one the process still holds after it."""
    import os
    import subprocess
    import sys

    from fmolab.train.heap import WORKER_ENV

    def refaults(extra: dict) -> tuple[int, int]:
        """Pages faulted in over 16 steps less the growth of what the process holds: pages faulted again."""
        env = {k: v for k, v in os.environ.items() if k not in WORKER_ENV}
        out = subprocess.run([sys.executable, "-c", THREAD_FAULTS], check=True, capture_output=True, text=True,
                             env={**env, **extra}).stdout
        faulted, grown, arenas = (int(x) for x in out.split()[-3:])
        return faulted - grown, arenas

    (default, arenas), (kept, one) = refaults({}), refaults(WORKER_ENV)
    # Default: 16,000-45,000 pages faulted again by machine (whole 16 MiB heaps unmapped, ~2,000 a step).
    # Kept: none; the faults there (0-16,384 from run to run) are the heap's top growing: pages still held.
    assert default > 8_000 and arenas >= 2, (default, arenas)
    assert kept < 256 and one == 1, (kept, one)


def test_training_workers_start_with_one_malloc_arena(work, base, ray_local, make_config):
    """What launch.torch_trainer gives Ray Train reaches the worker process as it starts (glibc took it:
    one arena in the training thread), merged into the job's environment (FMOLAB_HOME kept)."""
    import json
    import os

    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from fmolab.train.launch import torch_trainer

    given = ray.train.RunConfig(storage_path=str(work / "ray-train"))
    run_config = torch_trainer(make_config(base), {}, given).run_config  # with the workers' environment
    assert not given.worker_runtime_env, "the caller's RunConfig is left as it was"
    out = work / "probe.json"

    def probe(config):
        from fmolab.train.heap import malloc_arenas

        bytearray(1 << 20)  # this thread's first block
        with open(config["out"], "w") as f:
            json.dump({"arenas": malloc_arenas(), "home": os.environ.get("FMOLAB_HOME"),
                       "arena_max": os.environ.get("MALLOC_ARENA_MAX")}, f)

    TorchTrainer(probe, train_loop_config={"out": str(out)}, run_config=run_config,
                 scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.5})).fit()
    seen = json.loads(out.read_text())
    job_home = ray.get_runtime_context().runtime_env["env_vars"]["FMOLAB_HOME"]  # as Ray started (init_ray)
    assert seen == {"arenas": 1, "home": job_home, "arena_max": "1"}, seen


def test_tuned_model_compiles_in_place_and_keeps_its_checkpoint_keys(make_config):
    from fmolab.config import derive
    from fmolab.models import build_model
    from fmolab.train.loop import tuned

    cfg = make_config(TINY_MODEL)
    plain = build_model(cfg.model, 6)
    keys = list(plain.state_dict())
    model = tuned(build_model(cfg.model, 6), derive(cfg, {"train.compile": True, "train.channels_last": True}).train)
    assert model._compiled_call_impl is not None and list(model.state_dict()) == keys
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert tuned(plain, cfg.train)._compiled_call_impl is None


def test_the_loops_clock_starts_after_the_callbacks_set_up(make_config):
    """Set-up in on_start (MLflow's import and store: ~1-2 s) counts neither in samples/s nor in the
    time limit: the loop's clock starts once every callback is ready."""
    import time

    from fmolab.train.callbacks import Callback
    from fmolab.train.loop import Trainer

    class SlowStart(Callback):
        def on_start(self, trainer, resumed):
            time.sleep(0.2)
            self.ready = time.time()

    slow = SlowStart()
    cfg = make_config()
    trainer = Trainer(cfg, None, None, None, None, None, torch.device("cpu"), 0, 1, [slow])
    trainer.state.step = cfg.train.steps  # no step to take: on_start, then on_end
    trainer.fit(iter(()))
    assert trainer.started >= slow.ready


def _preempted_per_s(cfg, competitor: bool) -> float:
    """``preempted_per_s`` as the loop logs it: 8 steps of ~20 ms of Python on one CPU (this thread
    pinned there), with or without a process spinning on the same CPU."""
    import subprocess
    import sys
    import time

    from torch import nn

    from fmolab.train.callbacks import Callback
    from fmolab.train.loop import Trainer

    class Spin(nn.Module):  # a step's work: the thread busy for 20 ms
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, inputs, times, contrast=None):
            until = time.perf_counter() + 0.02
            while time.perf_counter() < until:
                pass
            return {"out": inputs.sum() * self.w}

    logged = []

    class Logged(Callback):
        def on_log(self, trainer, means):
            logged.append(means)

    model = Spin()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    losses = lambda batch, out, step: (out["out"] ** 2, {"l2": out["out"].detach() ** 2})  # noqa: E731
    trainer = Trainer(cfg, model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0), losses,
                      None, torch.device("cpu"), 0, 1, [Logged()])
    trainer.validate, trainer.checkpoint = (lambda: {}), (lambda metrics: None)
    batch = {"inputs": torch.ones(2), "times": torch.zeros(2)}
    cpus = os.sched_getaffinity(0)
    cpu = min(cpus)
    spin = f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"
    spinner = subprocess.Popen([sys.executable, "-c", spin]) if competitor else None
    try:
        os.sched_setaffinity(0, {cpu})  # this thread only (Linux): it and the spinner share one core
        time.sleep(0.2 if competitor else 0)
        trainer.fit(iter([(0, batch)] * cfg.train.steps))
    finally:
        os.sched_setaffinity(0, cpus)
        if spinner:
            spinner.kill()
            spinner.wait()
    assert len(logged) == 1
    return logged[0]["preempted_per_s"]


def test_the_loop_logs_how_often_its_threads_lose_their_cores(make_config):
    """``preempted_per_s`` (involuntary context switches of the worker process per second of the log
    window) says when a loop's threads share their cores: a process spinning on the same CPU takes it
    from the step many times a second (~125 on an otherwise quiet machine). Without the spinner the
    figure is whatever else wakes on that CPU: 0-40 alone, ~750 beside the suite's idle Ray cluster
    (each Ray process wakes every 10 ms), so only its range is checked."""
    cfg = make_config({"train.steps": 8, "train.log_every": 8})
    assert _preempted_per_s(cfg, competitor=False) >= 0
    assert _preempted_per_s(cfg, competitor=True) > 50


def test_training_logs_are_gathered_and_written_together_each_with_its_step(work):
    """MLflowLogger writes training logs at most every send_every_s (a SQLite write costs ~15 ms of a
    step's CPU); a validation, the end or an error puts every gathered one on record, each at its step."""
    from types import SimpleNamespace

    import mlflow

    from fmolab.train.callbacks import MLflowLogger

    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("gathered")).info.run_id
    trainer = SimpleNamespace(rank=0, state=SimpleNamespace(step=0))
    logger = MLflowLogger(run_id, uri)
    logger.send_every_s = 3600
    logger.on_start(trainer, False)
    assert logger._client is not None  # MLflow's import and store are set up before the loop's clock

    def steps(key="train/loss"):
        return sorted(m.step for m in client.get_metric_history(run_id, key))

    for step in (10, 20, 30):
        trainer.state.step = step
        logger.on_log(trainer, {"train/loss": step / 100, "lr": 0.1})
    assert steps() == [] and len(logger.gathered) == 6  # gathered, not written
    trainer.state.step = 30
    logger.on_validation(trainer, {"val/loss": 0.5})
    assert steps() == [10, 20, 30] and steps("lr") == [10, 20, 30] and steps("val/loss") == [30]
    assert [m.value for m in sorted(client.get_metric_history(run_id, "train/loss"), key=lambda m: m.step)] == [0.1, 0.2, 0.3]
    trainer.state.step = 40
    logger.on_log(trainer, {"train/loss": 0.4})
    logger.on_error(trainer, RuntimeError("a failed step"))
    assert steps() == [10, 20, 30, 40]
    logger.send_every_s = 0  # sent as logged (to MLflow's logging thread)
    trainer.state.step = 50
    logger.on_log(trainer, {"train/loss": 0.5})
    assert not logger.gathered and len(logger.pending) == 1
    logger.on_end(trainer, False)
    assert steps() == [10, 20, 30, 40, 50]
    logger.send_every_s = 3600
    trainer.state.step = 60
    logger.on_log(trainer, {"train/loss": 0.6})
    logger.on_error(trainer, KeyboardInterrupt())  # Ctrl-C: handed to MLflow's thread, not waited for
    assert not logger.gathered and len(logger.pending) == 1
    logger.flush()
    assert steps() == [10, 20, 30, 40, 50, 60]
