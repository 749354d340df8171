"""What the engine examples share: listing images, the `lightcap caption --stream` command, and
the output table (one row per input: id, path, caption, score, concepts, timings, error).

`lightcap caption --stream` answers every input line with exactly one JSON line, in input order,
flushed as soon as it is made (docs/SCALE.md): an engine can zip outputs with inputs, and a
failed image is a row with `error` set, never a missing row.
"""

import base64
import json
import shlex
from pathlib import Path

#: The image files `lightcap caption` looks for in a folder.
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp"}

#: The output columns and their types: "string", "double", "concepts" (a list of
#: {name, score}) or "timings" (milliseconds per stage).
COLUMNS = [("id", "string"), ("path", "string"), ("caption", "string"), ("score", "double"),
           ("concepts", "concepts"), ("timings", "timings"), ("error", "string")]


def is_image(path):
    """Whether `lightcap caption FOLDER` would take the file at `path` (a path or URI)."""
    name = str(path).rsplit("/", 1)[-1]
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder):
    """The image files under `folder`, sorted (as `lightcap caption FOLDER` orders them)."""
    return sorted(str(p) for p in Path(folder).rglob("*") if is_image(p))


def base64_record(id, content):
    """An input line carrying the image itself, for images the mapper cannot open by path
    (on HDFS or S3): {"id", "image_base64"}."""
    return json.dumps({"id": id, "image_base64": base64.b64encode(content).decode("ascii")})


def command(lightcap, model=None, threads=1, extra=()):
    """The argument list of the mapper process: one `lightcap caption --stream` per task."""
    args = [str(lightcap), "caption", "--stream", "--threads", str(threads)]
    if model:
        args += ["--model", str(model)]
    return args + list(extra)


def command_line(*args, **kwargs):
    """`command(...)` as one shell-quoted string (Spark's RDD.pipe takes a string)."""
    return shlex.join(command(*args, **kwargs))


def row(line):
    """One output line of `lightcap caption --stream` as a row of COLUMNS."""
    record = json.loads(line)
    out = {name: record.get(name) for name, _ in COLUMNS}
    if out["id"] is not None:
        out["id"] = str(out["id"])  # integer ids become text: one column type
    return out


def spark_schema():
    """COLUMNS as a Spark StructType."""
    from pyspark.sql import types as T
    concept = T.StructType([T.StructField("name", T.StringType()), T.StructField("score", T.DoubleType())])
    kinds = {"string": T.StringType(), "double": T.DoubleType(), "concepts": T.ArrayType(concept),
             "timings": T.MapType(T.StringType(), T.DoubleType())}
    return T.StructType([T.StructField(name, kinds[kind]) for name, kind in COLUMNS])


def arrow_schema():
    """COLUMNS as a pyarrow schema."""
    import pyarrow as pa
    concept = pa.struct([("name", pa.string()), ("score", pa.float64())])
    kinds = {"string": pa.string(), "double": pa.float64(), "concepts": pa.list_(concept),
             "timings": pa.map_(pa.string(), pa.float64())}
    return pa.schema([(name, kinds[kind]) for name, kind in COLUMNS])
