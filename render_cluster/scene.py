"""The Blender scene (thesis 3.1): camera at the origin looking along -Z, environment light,
transparent film, and the render calls for sharp frames and motion-blurred spans.

One :class:`Scene` per process: bpy is a process-wide singleton and not thread-safe.

Time mapping. The exposure [0, 1] is keyframed LINEARLY from frame 1 (t=0) to frame 1+K with
``K = 200 * num_frames``, so every sharp time t_i = (i+0.5)/N and every span end with two decimals
lands on an integer frame (no sub-frame evaluation needed). A blur over [a, b] is rendered at frame
``1 + aK`` with shutter position START and shutter length ``(b-a)K`` frames, i.e. exactly that span.

Motion-blur steps. Cycles draws a random shutter time per path sample (stratified), so a blur's
smoothness is set by its sample count: blurs use ``max(samples, motion_blur_steps)`` samples, and
objects get ``motion_steps = 3`` (5 transform samples; the motion is linear so more is wasted).
EEVEE renders ``motion_blur_steps`` discrete time steps and splits its samples over them, so it
gets ``eevee.motion_blur_steps = motion_blur_steps`` and at least that many samples.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from render_cluster.trajectory import CAMERA_LENS_MM, CAMERA_SENSOR_MM, Trajectory

KEYS_PER_FRAME = 200  # K = KEYS_PER_FRAME * num_frames (see module doc)
GPU_BACKENDS = ("OPTIX", "CUDA", "HIP", "ONEAPI", "METAL")


@contextlib.contextmanager
def quiet():
    """Silence Blender's per-render chatter on fd 1 (Ray would forward every line to the driver)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


_TBB_LIMIT = None  # the tbb::global_control below; must live as long as the process


def limit_tbb_threads(threads: int) -> bool:
    """Cap oneTBB (Blender's and OIDN's task scheduler) at ``threads`` threads for this process.

    Why: Blender's oneTBB (2021.13) starts one worker per core, and an idle worker spins in
    ``sched_yield`` for as long as a render runs in its arena (the "delayed leave" of oneTBB
    2021.13). With one render thread per actor that spinning worker burned as much CPU as the
    render itself (measured: 57 -> 26 core-ms per 80x80 frame; benchmarks/render.py). Blender
    caps TBB only for its ``--threads`` command-line option, which the bpy module has no way to
    take, so this creates the same ``tbb::global_control(max_allowed_parallelism, threads)``
    through ctypes. It only fully works before bpy is imported (TBB starts its workers then);
    returns False (and changes nothing) when the library or symbol is not there.
    """
    global _TBB_LIMIT
    import ctypes
    import importlib.util

    if _TBB_LIMIT is not None:
        return True
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        return False
    lib_path = Path(list(spec.submodule_search_locations)[0]) / "lib" / "libtbb.so.12"
    try:
        lib = ctypes.CDLL(str(lib_path))
        create = lib["_ZN3tbb6detail2r16createERNS0_2d114global_controlE"]
    except (OSError, AttributeError):  # another platform or TBB build: leave TBB alone
        return False

    class GlobalControl(ctypes.Structure):  # tbb::detail::d1::global_control
        _fields_ = [("value", ctypes.c_size_t), ("reserved", ctypes.c_ssize_t), ("param", ctypes.c_int)]

    control = GlobalControl(max(1, threads), 0, 0)  # param 0 = max_allowed_parallelism
    create(ctypes.byref(control))
    _TBB_LIMIT = (lib, control)
    return True


class RenderError(RuntimeError):
    """The engine/device cannot render here (e.g. GPU asked for on a CPU-only machine)."""


def _nodes_on(idblock) -> None:
    with warnings.catch_warnings():  # use_nodes is deprecated in 5.0 (always on) but harmless
        warnings.simplefilter("ignore")
        idblock.use_nodes = True


class Scene:
    """The static scene plus render primitives; per sample call :meth:`clear` then add one object."""

    def __init__(self, rcfg, threads: int = 1, tmp_dir: str | None = None, cap_tbb: bool = True):
        # Before the first bpy import (see limit_tbb_threads); cap_tbb=False only for benchmarks.
        self.tbb_limited = limit_tbb_threads(threads) if cap_tbb else False
        import bpy

        self.bpy = bpy
        self.rcfg = rcfg
        self.width, self.height = rcfg.width, rcfg.height
        self.K = KEYS_PER_FRAME * rcfg.num_frames
        self.tmp = Path(tempfile.mkdtemp(prefix="render-", dir=tmp_dir))
        # Ray Data ends render actors without a call into them: remove the folder when the process exits.
        atexit.register(self.close)
        bpy.ops.wm.read_factory_settings(use_empty=True)
        prefs = bpy.context.preferences
        prefs.filepaths.temporary_directory = str(self.tmp)  # Blender's own temp files
        prefs.edit.keyframe_new_interpolation_type = "LINEAR"  # keyframes = linear trajectory
        scene = self.scene = bpy.context.scene
        r = scene.render
        r.resolution_x, r.resolution_y, r.resolution_percentage = self.width, self.height, 100
        r.film_transparent = True
        r.fps = 24
        r.threads_mode, r.threads = "FIXED", max(1, threads)
        r.use_persistent_data = True  # keeps the BVH/shaders of unchanged data between renders
        r.use_border, r.use_crop_to_border = True, True  # crop render to the object's screen box
        r.motion_blur_position = "START"
        s = r.image_settings
        s.file_format, s.color_mode, s.color_depth, s.compression = "PNG", "RGBA", "8", 0
        scene.view_settings.view_transform = "Standard"  # plain sRGB, no AgX tone curve
        scene.frame_start, scene.frame_end = 1, 1 + self.K
        self._camera()
        self._world()
        self._engine()

    # ------------------------------------------------------------ static setup

    def _camera(self) -> None:
        bpy = self.bpy
        cam = bpy.data.cameras.new("camera")
        cam.lens, cam.sensor_width, cam.sensor_fit = CAMERA_LENS_MM, CAMERA_SENSOR_MM, "HORIZONTAL"
        cam.clip_start, cam.clip_end = 0.05, 1000
        obj = bpy.data.objects.new("camera", cam)  # at the origin, no rotation: looks along -Z
        self.scene.collection.objects.link(obj)
        self.scene.camera = obj

    def _world(self) -> None:
        """Environment light brighter from above (+Y) than below, so shapes get shading."""
        bpy = self.bpy
        world = bpy.data.worlds.new("env")
        _nodes_on(world)
        self.scene.world = world
        nt = world.node_tree
        bg = next(n for n in nt.nodes if n.type == "BACKGROUND")
        coord = nt.nodes.new("ShaderNodeTexCoord")
        sep = nt.nodes.new("ShaderNodeSeparateXYZ")
        ramp = nt.nodes.new("ShaderNodeMapRange")
        ramp.inputs["From Min"].default_value, ramp.inputs["From Max"].default_value = -1.0, 1.0
        ramp.inputs["To Min"].default_value, ramp.inputs["To Max"].default_value = 0.25, 1.6
        nt.links.new(coord.outputs["Generated"], sep.inputs["Vector"])
        nt.links.new(sep.outputs["Y"], ramp.inputs["Value"])
        nt.links.new(ramp.outputs["Result"], bg.inputs["Strength"])
        bg.inputs["Color"].default_value = (1, 1, 1, 1)
        # The gradient is smooth: BSDF sampling alone is low-noise and an importance map would
        # cost more than the render (measured: 2.5x slower per sequence at 16 samples).
        world.cycles.sampling_method = "NONE"

    def _engine(self) -> None:
        render_cfg, scene = self.rcfg, self.scene
        if render_cfg.engine == "eevee":
            scene.render.engine = "BLENDER_EEVEE"
            scene.eevee.motion_blur_steps = render_cfg.motion_blur_steps
            if render_cfg.device != "gpu":
                # EEVEE is a GPU rasterizer; on a machine without an OpenGL/Vulkan GPU the render fails.
                pass
            self._probe("EEVEE needs a GPU with OpenGL/Vulkan; use render.engine=cycles on CPU-only machines")
            return
        scene.render.engine = "CYCLES"
        c = scene.cycles
        c.samples = render_cfg.samples
        c.use_adaptive_sampling = True
        c.adaptive_threshold = 0.02
        c.max_bounces = render_cfg.max_bounces
        c.diffuse_bounces = c.glossy_bounces = min(render_cfg.max_bounces, 2)
        c.transmission_bounces = c.volume_bounces = min(render_cfg.max_bounces, 2)
        c.caustics_reflective = c.caustics_refractive = False
        c.use_denoising = render_cfg.denoise
        if render_cfg.denoise:  # OIDN on the CPU: the cheapest settings are plenty at 320x240
            c.denoiser, c.denoising_quality, c.denoising_prefilter = "OPENIMAGEDENOISE", "FAST", "FAST"
        c.use_animated_seed = False
        if render_cfg.device == "gpu":
            self._enable_gpu()
        else:
            c.device = "CPU"
        if render_cfg.denoise:
            self._probe("denoising (OpenImageDenoise) is not available in this Blender build; set render.denoise=false")

    def _enable_gpu(self) -> None:
        prefs = self.bpy.context.preferences.addons["cycles"].preferences
        for backend in GPU_BACKENDS:
            try:
                prefs.compute_device_type = backend
            except TypeError:  # backend not compiled into this build
                continue
            prefs.get_devices()
            devices = [d for d in prefs.devices if d.type == backend]
            if devices:
                for d in prefs.devices:
                    d.use = d.type == backend
                self.scene.cycles.device = "GPU"
                self.gpu_backend = backend
                return
        raise RenderError(f"render.device=gpu but Cycles finds no GPU (tried {', '.join(GPU_BACKENDS)}); "
                          "use render.device=cpu on this machine")

    def _probe(self, hint: str) -> None:
        """A tiny render to turn engine/device problems into one clear error at start-up."""
        try:
            self.render(None, (0, 0, 4, 4))
        except Exception as exc:
            raise RenderError(f"{hint} ({exc})") from exc

    # ------------------------------------------------------------ per sample

    def clear(self) -> None:
        """Remove everything but camera and world (cheaper than a factory reset per sample)."""
        bpy = self.bpy
        for obj in list(bpy.data.objects):
            if obj.type != "CAMERA":
                bpy.data.objects.remove(obj)
        for coll in (bpy.data.meshes, bpy.data.materials, bpy.data.textures, bpy.data.actions):
            for block in list(coll):
                coll.remove(block)
        for img in list(bpy.data.images):
            if img.type == "IMAGE":
                bpy.data.images.remove(img)

    def frame_of(self, t: float) -> int:
        return 1 + int(round(t * self.K))

    def animate(self, obj, traj: Trajectory) -> None:
        """LINEAR keyframes: t=0 at frame 1, t=1 at frame 1+K."""
        for frame, loc, rot in ((1, traj.start, traj.rot_start), (1 + self.K, traj.end, traj.rot_end)):
            obj.location, obj.rotation_euler = loc, rot
            obj.keyframe_insert("location", frame=frame)
            obj.keyframe_insert("rotation_euler", frame=frame)
        if self.scene.render.engine == "CYCLES":
            obj.cycles.motion_steps = 3
            obj.cycles.use_deform_motion = False  # rigid motion only

    def render(self, t_or_span, box: tuple[int, int, int, int], seed: int = 0) -> np.ndarray:
        """Render at time ``t`` (float, sharp) or over span ``(a, b)`` (motion blur) inside pixel
        ``box = (x0, y0, x1, y1)`` (top-left origin, exclusive end); returns full-size RGBA uint8."""
        scene, render_cfg = self.scene, self.rcfg
        r = scene.render
        blur = isinstance(t_or_span, (tuple, list))
        samples = max(render_cfg.samples, render_cfg.motion_blur_steps) if blur else render_cfg.samples
        if blur:
            a, b = t_or_span
            r.use_motion_blur = True
            scene.frame_set(self.frame_of(a))
            r.motion_blur_shutter = float(self.frame_of(b) - self.frame_of(a))
        else:
            r.use_motion_blur = False
            scene.frame_set(self.frame_of(t_or_span or 0.0))
        if r.engine == "CYCLES":
            scene.cycles.samples = samples
            scene.cycles.seed = seed
        else:
            scene.eevee.taa_render_samples = samples
        W, H = self.width, self.height
        x0, y0, x1, y1 = box
        # Border fractions at pixel centres so Blender's rounding lands on exactly these pixels.
        r.border_min_x, r.border_max_x = (x0 + 0.5) / W, (x1 - 0.5) / W
        r.border_min_y, r.border_max_y = (H - y1 + 0.5) / H, (H - y0 - 0.5) / H
        path = self.tmp / "render.png"
        r.filepath = str(path)
        with quiet():
            self.bpy.ops.render.render(write_still=True)
        with Image.open(path) as im:
            crop = np.asarray(im.convert("RGBA"))
        out = np.zeros((H, W, 4), dtype=np.uint8)
        h, w = crop.shape[:2]
        if (h, w) == (H, W):  # border ignored (e.g. covers the whole frame)
            return crop
        out[y0:y0 + h, x0:x0 + w] = crop[: H - y0, : W - x0]
        return out

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)
