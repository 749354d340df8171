"""Caption a folder (or a list of paths) with Spark: each partition's paths are piped through
one `lightcap caption --stream` process (RDD.pipe), and the records are written as Parquet.

    python examples/engines/spark_caption.py --images photos/ --out captions.parquet
    python examples/engines/spark_caption.py --paths paths.txt --out captions.parquet \
        --master local[8] --lightcap ./lightcap --model ./models/default
    python examples/engines/spark_caption.py --binary s3a://bucket/photos/ --out s3a://bucket/captions/

--images lists a local folder on the driver; --paths reads a text file of image paths (one a
line, itself possibly on HDFS or S3) as an RDD, so the driver never holds the list. Both pass
paths, so every executor must be able to open the images (a shared file system). --binary
reads the image files with Spark (binaryFile: HDFS, S3, ...) and passes their bytes as
{"id", "image_base64"} records instead; the id is the file's URI. Every executor must be able
to run --lightcap and read --model (docs/SCALE.md: shipping them with --archives, or a
container image with lightcap inside). Use one core per task (spark.task.cpus=1) and --threads
1: Spark's tasks are the parallelism.
"""

import argparse
import sys
import time
from pathlib import Path

import lightcap_stream as ls

ROOT = Path(__file__).resolve().parents[2]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="a folder of images (listed on the driver)")
    src.add_argument("--paths", help="a text file of image paths, one a line (read by Spark)")
    src.add_argument("--binary", help="a folder or URI whose image files Spark reads and sends as bytes")
    ap.add_argument("--out", required=True, help="the Parquet output (a folder; replaced)")
    ap.add_argument("--lightcap", default=str(ROOT / ".build/release/lightcap"), help="the lightcap executable")
    ap.add_argument("--model", default=None, help="model directory (default: lightcap's own default)")
    ap.add_argument("--master", default=None,
                    help="Spark master (local[2], yarn, k8s://...); default: spark-submit's, else local[*]")
    ap.add_argument("--partitions", type=int, default=None,
                    help="partitions of the path list (default: Spark's default parallelism)")
    args = ap.parse_args(argv)

    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("lightcap-caption").config("spark.ui.enabled", "false")
    spark = (builder.master(args.master) if args.master else builder).getOrCreate()
    sc = spark.sparkContext
    sc.setLogLevel("WARN")
    sc.addPyFile(ls.__file__)  # the executors' Python workers import lightcap_stream for ls.row
    try:
        start = time.monotonic()
        if args.images:
            inputs = sc.parallelize(ls.list_images(args.images), args.partitions or sc.defaultParallelism)
        elif args.paths:
            inputs = sc.textFile(args.paths, args.partitions)
        else:
            files = (spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(args.binary)
                     .select("path", "content").rdd)
            if args.partitions:
                files = files.repartition(args.partitions)
            inputs = files.filter(lambda f: ls.is_image(f.path)).map(lambda f: ls.base64_record(f.path, f.content))
        # One output line per input line, in order, failures as records: the exit status is
        # non-zero only if the process itself failed, so checkCode can fail the task then.
        lines = inputs.pipe(ls.command_line(args.lightcap, args.model), checkCode=True)
        frame = spark.createDataFrame(lines.map(ls.row), schema=ls.spark_schema())
        frame.write.mode("overwrite").parquet(args.out)
        written = spark.read.parquet(args.out)
        total, failed = written.count(), written.filter("error IS NOT NULL").count()
        seconds = time.monotonic() - start
        print(f"spark_caption: {total} images ({failed} failed) in {seconds:.1f} s "
              f"({total / seconds:.1f} img/s) -> {args.out}")
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
