"""The Spark engine: the only package that imports pyspark (lazily, when a session starts)."""

from pipelines.engines.spark.engine import SparkEngine, SparkRun
from pipelines.engines.spark.execution import DEFAULT_MASTER

ENGINE = SparkEngine  # what pipelines.engines.engine_for makes

__all__ = ["DEFAULT_MASTER", "ENGINE", "SparkEngine", "SparkRun"]
