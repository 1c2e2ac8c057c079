"""Objects (thesis 3.1 step 1): a procedural shape library and a mesh loader (ShapeNetCore.v2-style
folders of OBJ, and glTF/GLB, PLY, STL files).

Every object ends up as ONE plain mesh object (modifiers baked in, transforms applied) centred on
its bounding-box centre with bounding-box diagonal = ``size`` (ShapeNet's "diameter 1" convention,
then scaled by ``trajectory.object_size``). Baking keeps motion blur and vertex projection simple.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

FAMILIES = ("cube", "uv_sphere", "ico_sphere", "cylinder", "cone", "torus", "beveled_box", "boolean_cut",
            "star_prism", "capsule", "twisted_bar", "displaced_blob", "monkey")


class AssetError(RuntimeError):
    """An asset file exists but cannot be used (unreadable or empty); the sample is re-drawn."""


# ---------------------------------------------------------------- listing (pure python)


# Mesh files Blender imports, by suffix: its importer operator and arguments (one mesh object made of
# every part the file holds; the file's own materials are replaced by the render's textures)
MESH_IMPORTERS = {
    ".obj": ("wm", "obj_import", {"use_split_objects": False, "use_split_groups": False}),
    ".ply": ("wm", "ply_import", {}),
    ".stl": ("wm", "stl_import", {}),
    ".glb": ("import_scene", "gltf", {}),
    ".gltf": ("import_scene", "gltf", {}),
}


def list_mesh_files(root: str | Path) -> list[str]:
    """Sorted mesh paths relative to ``root`` (ShapeNet layout or any mesh file below it)."""
    root = Path(root)
    kinds = ", ".join(MESH_IMPORTERS)
    if not root.is_dir():
        raise FileNotFoundError(f"render.objects = {str(root)!r}: folder does not exist (want a "
                                f"ShapeNetCore.v2-style folder of mesh files ({kinds}), or 'procedural')")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix.lower() in MESH_IMPORTERS)
    if not files:
        raise FileNotFoundError(f"render.objects = {str(root)!r}: no mesh file ({kinds}) below this folder")
    return files


def obj_id(rel: str) -> str:
    """``<synset>/<model>/models/model_normalized.obj`` -> ``<synset>/<model>``; else the path stem."""
    p = Path(rel)
    if p.name == "model_normalized.obj" and p.parent.name == "models":
        return str(p.parent.parent)
    return str(p.with_suffix(""))


# ---------------------------------------------------------------- bpy helpers


def _bake(obj) -> None:
    """Replace ``obj``'s mesh by its evaluated mesh (modifiers applied) with the transform applied."""
    import bpy

    dg = bpy.context.evaluated_depsgraph_get()
    mesh = bpy.data.meshes.new_from_object(obj.evaluated_get(dg))
    mesh.transform(obj.matrix_basis)
    old = obj.data
    obj.modifiers.clear()
    obj.data = mesh
    obj.matrix_basis.identity()
    if old is not None and old.users == 0:
        bpy.data.meshes.remove(old)


def normalize(obj, size: float) -> np.ndarray:
    """Centre the mesh on its bbox centre, scale its bbox diagonal to ``size``; returns vertices [V,3]."""
    from mathutils import Matrix

    mesh = obj.data
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
    mesh.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    if len(co) == 0:
        raise AssetError("mesh has no vertices")
    lo, hi = co.min(0), co.max(0)
    diag = float(np.linalg.norm(hi - lo))
    if not math.isfinite(diag) or diag <= 0:
        raise AssetError(f"degenerate mesh (bounding-box diagonal {diag})")
    centre = (lo + hi) / 2
    s = size / diag
    mesh.transform(Matrix.Scale(s, 4) @ Matrix.Translation(-centre))
    mesh.update()
    return (co - centre) * s


def _active():
    import bpy

    return bpy.context.view_layer.objects.active


def _star_prism(points: int, inner: float, depth: float):
    """An extruded star polygon, built with bmesh (no primitive exists for it)."""
    import bmesh
    import bpy

    bm = bmesh.new()
    ring = []
    for k in range(2 * points):
        r = 1.0 if k % 2 == 0 else inner
        a = math.pi * k / points
        ring.append((r * math.cos(a), r * math.sin(a)))
    bottom = [bm.verts.new((x, y, -depth / 2)) for x, y in ring]
    top = [bm.verts.new((x, y, depth / 2)) for x, y in ring]
    bm.faces.new(list(reversed(bottom)))
    bm.faces.new(top)
    n = len(ring)
    for k in range(n):
        bm.faces.new((bottom[k], bottom[(k + 1) % n], top[(k + 1) % n], top[k]))
    mesh = bpy.data.meshes.new("star")
    bm.to_mesh(mesh)
    bm.free()
    obj = bpy.data.objects.new("star", mesh)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def make_procedural(rng: np.random.Generator, size: float, family: str | None = None):
    """Build a random member of a shape family; returns ``(object, object_id, params)``."""
    import bpy

    family = family or FAMILIES[int(rng.integers(len(FAMILIES)))]
    variant = int(rng.integers(100000))
    m = bpy.ops.mesh
    cutter = None
    if family == "cube":
        m.primitive_cube_add()
    elif family == "uv_sphere":
        m.primitive_uv_sphere_add(segments=int(rng.integers(8, 33)), ring_count=int(rng.integers(6, 17)))
    elif family == "ico_sphere":
        m.primitive_ico_sphere_add(subdivisions=int(rng.integers(1, 4)))
    elif family == "cylinder":
        m.primitive_cylinder_add(vertices=int(rng.integers(5, 33)), depth=float(rng.uniform(0.3, 3)))
    elif family == "cone":
        m.primitive_cone_add(vertices=int(rng.integers(3, 33)), radius2=float(rng.uniform(0, 0.6)))
    elif family == "torus":
        m.primitive_torus_add(major_segments=int(rng.integers(12, 41)), minor_segments=int(rng.integers(6, 17)),
                              minor_radius=float(rng.uniform(0.1, 0.5)))
    elif family == "beveled_box":
        m.primitive_cube_add()
        mod = _active().modifiers.new("bevel", "BEVEL")
        mod.width, mod.segments = float(rng.uniform(0.05, 0.5)), int(rng.integers(1, 5))
    elif family == "boolean_cut":
        m.primitive_cube_add() if rng.random() < 0.5 else m.primitive_uv_sphere_add(segments=24, ring_count=12)
        base = _active()
        m.primitive_cylinder_add(radius=float(rng.uniform(0.2, 0.6)), depth=4,
                                 rotation=tuple(rng.uniform(0, math.pi, 3)))
        cutter = _active()
        cutter.location = tuple(rng.uniform(-0.5, 0.5, 3))
        mod = base.modifiers.new("cut", "BOOLEAN")
        mod.operation, mod.object = "DIFFERENCE", cutter
        bpy.context.view_layer.objects.active = base
    elif family == "star_prism":
        obj = _star_prism(int(rng.integers(3, 9)), float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.2, 1.0)))
        bpy.context.view_layer.objects.active = obj
    elif family == "capsule":
        m.primitive_uv_sphere_add(segments=24, ring_count=12)
        mesh = _active().data
        co = np.empty(len(mesh.vertices) * 3)
        mesh.vertices.foreach_get("co", co)
        co = co.reshape(-1, 3)
        co[:, 2] += np.sign(co[:, 2]) * float(rng.uniform(0.3, 1.5))  # pull the hemispheres apart
        mesh.vertices.foreach_set("co", co.ravel())
    elif family == "twisted_bar":
        m.primitive_cube_add()
        obj = _active()
        obj.scale = (0.4, 0.4, 1.5)
        sub = obj.modifiers.new("sub", "SUBSURF")
        sub.subdivision_type, sub.levels, sub.render_levels = "SIMPLE", 3, 3
        tw = obj.modifiers.new("twist", "SIMPLE_DEFORM")
        tw.deform_method, tw.angle = "TWIST", math.radians(float(rng.uniform(45, 270)))
    elif family == "displaced_blob":
        m.primitive_ico_sphere_add(subdivisions=4)
        obj = _active()
        tex = bpy.data.textures.new("blob", "CLOUDS")
        tex.noise_scale = float(rng.uniform(0.3, 1.0))
        mod = obj.modifiers.new("disp", "DISPLACE")
        mod.texture, mod.strength = tex, float(rng.uniform(0.2, 0.8))
    elif family == "monkey":
        m.primitive_monkey_add()
    else:
        raise ValueError(f"unknown shape family {family!r}; known: {', '.join(FAMILIES)}")
    obj = _active()
    # Random anisotropic stretch: the "random deformation" shared by every family.
    stretch = rng.uniform(0.6, 1.4, 3)
    obj.scale = tuple(np.asarray(obj.scale) * stretch)
    _bake(obj)
    if cutter is not None:
        mesh = cutter.data
        bpy.data.objects.remove(cutter)
        bpy.data.meshes.remove(mesh)
    smooth = bool(rng.random() < 0.5)
    obj.data.polygons.foreach_set("use_smooth", [smooth] * len(obj.data.polygons))
    obj.name = "fmo"
    normalize(obj, size)
    return obj, f"procedural/{family}/{variant}", {"family": family, "variant": variant,
                                                     "stretch": stretch.round(4).tolist(), "smooth": smooth}


def load_mesh(path: str | Path, size: float):
    """Import a mesh file (:data:`MESH_IMPORTERS`) as one normalized mesh object; raises
    :class:`AssetError` if unusable. Must run in the thread that imported bpy (its operators' context)."""
    import bmesh
    import bpy

    from render_cluster.scene import quiet

    module, op, kwargs = MESH_IMPORTERS.get(Path(path).suffix.lower(), (None, None, None))
    if op is None:
        raise AssetError(f"{path}: not a mesh file Blender imports ({', '.join(MESH_IMPORTERS)})")
    before = set(bpy.data.objects)
    try:
        with quiet():  # "OBJ import of ... took 1.2 ms", per draw
            getattr(getattr(bpy.ops, module), op)(filepath=str(path), **kwargs)
    except Exception as exc:  # the importers report failures as RuntimeError
        raise AssetError(f"cannot import {path}: {exc}") from exc
    new = [o for o in bpy.data.objects if o not in before]
    meshes = [o for o in new if o.type == "MESH" and len(o.data.vertices)]
    if not meshes:
        for o in new:
            bpy.data.objects.remove(o)
        raise AssetError(f"{path}: no mesh data (empty or unreadable file)")
    # Merge every imported part into one mesh with its transform applied.
    bm = bmesh.new()
    for o in meshes:
        tmp = o.data.copy()
        tmp.transform(o.matrix_world)
        bm.from_mesh(tmp)
        bpy.data.meshes.remove(tmp)
    mesh = bpy.data.meshes.new("fmo")
    bm.to_mesh(mesh)
    bm.free()
    for o in new:
        data = o.data
        bpy.data.objects.remove(o)
        if data is not None and getattr(data, "users", 1) == 0:
            bpy.data.meshes.remove(data)
    obj = bpy.data.objects.new("fmo", mesh)
    bpy.context.scene.collection.objects.link(obj)
    normalize(obj, size)
    return obj
