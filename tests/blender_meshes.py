"""Run with Blender's Python (bpy): write one mesh per format Blender exports into argv[1]."""
import os
import sys

import bpy

root = sys.argv[1]


def fresh():
    bpy.ops.wm.read_factory_settings(use_empty=True)


def out(rel):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


fresh()  # OBJ + MTL with UVs, in ShapeNet's layout
bpy.ops.mesh.primitive_monkey_add()
bpy.context.active_object.data.materials.append(bpy.data.materials.new("paint"))
bpy.ops.wm.obj_export(filepath=out("02691156/monkey/models/model_normalized.obj"), export_uv=True,
                      export_materials=True)
fresh()  # extruded letters as binary glTF
bpy.ops.object.text_add()
text = bpy.context.active_object
text.data.body, text.data.extrude = "FMO", 0.15
bpy.ops.object.convert(target="MESH")
bpy.ops.export_scene.gltf(filepath=out("letters/fmo.glb"))
fresh()  # PLY
bpy.ops.mesh.primitive_torus_add()
bpy.ops.wm.ply_export(filepath=out("shapes/ring.ply"))
print("written")
