"""A run's data as an MLflow dataset input: the run page's "Datasets" and the dataset's digest, source,
schema and row count, so runs can be grouped and compared by the data they used.

The digest is the manifest's SHA-1 (its first 36 hex digits: MLflow stores at most 36), the same hash as
the run's ``dataset_manifest_sha1`` tag; a dataset without a manifest is digested by its shard names
and sizes. The row count and the schema come from the Parquet footers, not from the rows.
"""
from __future__ import annotations

import hashlib
import json

from fmolab import storage

DIGEST_CHARS = 36
# Arrow -> MLflow column types (mlflow.types.DataType names); lists become MLflow arrays.
_TYPES = {"string": "string", "large_string": "string", "int64": "long", "int32": "integer", "float": "float",
          "double": "double", "binary": "binary", "large_binary": "binary", "bool": "boolean"}


def _colspec(name: str | None, arrow_type) -> dict:
    import pyarrow as pa

    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        spec = {"type": "array", "items": _colspec(None, arrow_type.value_type)}
    else:
        spec = {"type": _TYPES.get(str(arrow_type), "string")}
    return {**spec, "name": name} if name else spec


def describe(uri: str) -> dict:
    """``name, digest, source, source_type, schema (JSON), profile (JSON)`` of the dataset at ``uri``
    (Parquet shards; another folder, e.g. a benchmark's sequences, by its file listing)."""
    from fmolab.shards import MANIFEST, open_parquet

    root = storage.normalize(uri)
    files = [root] if storage.is_file(root) else storage.list_files(root, ".parquet")
    if not files:
        return _folder(root)
    rows, schema = 0, None
    for f in files:
        meta = open_parquet(f).metadata
        rows += meta.num_rows
        schema = schema or meta.schema.to_arrow_schema()
    try:
        digest = hashlib.sha1(storage.read_bytes(storage.join(root, MANIFEST))).hexdigest()
    except FileNotFoundError:
        digest = hashlib.sha1(json.dumps(sorted(files)).encode()).hexdigest()
    columns = [_colspec(field.name, field.type) for field in schema] if schema is not None else []
    return {**_where(root), "digest": digest[:DIGEST_CHARS], "schema": json.dumps({"mlflow_colspec": columns}),
            "profile": json.dumps({"num_rows": rows, "num_shards": len(files)})}


def _where(root: str) -> dict:
    return {"name": root.rstrip("/").rsplit("/", 1)[-1] or root, "source": root,
            "source_type": root.split("://", 1)[0] if "://" in root else "local"}


def _folder(root: str) -> dict:
    """A dataset that is not Parquet shards: digested by its file and sub-folder names."""
    import pyarrow.fs as pafs

    fs, p = storage.filesystem(root)
    infos = fs.get_file_info(pafs.FileSelector(p, allow_not_found=False, recursive=False))
    names = sorted(f"{i.base_name}:{i.size if i.type == pafs.FileType.File else 'dir'}" for i in infos)
    return {**_where(root), "digest": hashlib.sha1("\n".join(names).encode()).hexdigest()[:DIGEST_CHARS],
            "schema": json.dumps({"mlflow_colspec": []}), "profile": json.dumps({"num_entries": len(names)})}


def log_dataset(run_id: str, uri: str, context: str) -> dict | None:
    """Log the dataset at ``uri`` as an input of ``run_id`` (``context``: training, validation,
    evaluation); returns its description, or None (with a line saying why) when it cannot be read."""
    import mlflow
    from mlflow.entities import Dataset, DatasetInput, InputTag

    try:
        d = describe(uri)
    except Exception as exc:  # the run goes on; the record says what is missing and why
        print(f"[tracking] dataset {uri} not logged as a run input: {exc}", flush=True)
        return None
    entity = Dataset(name=d["name"], digest=d["digest"], source_type=d["source_type"],
                     source=json.dumps({"uri": d["source"]}), schema=d["schema"], profile=d["profile"])
    inputs = [DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])]
    # Runs started at once (a search's trials) may both create the experiment's dataset entry: the
    # store's unique key refuses the second, whose retry then finds the entry. A record, never fatal.
    for attempt in (1, 2):
        try:
            mlflow.MlflowClient().log_inputs(run_id, inputs)
            return d
        except Exception as exc:
            if attempt == 2:
                print(f"[tracking] dataset {uri} not logged as a run input: {str(exc).splitlines()[0][:200]}", flush=True)
    return None
