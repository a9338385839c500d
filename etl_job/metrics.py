"""CloudWatch metric names the job emits and the stack alarms on; dependency-free so the stack can import it."""

import json
import time

NAMESPACE = "EtlPipeline"
DIMENSION_STAGE = "Stage"
# 1 per run that exited 0; alarm when missing. A field of the line, not an EMF metric: the stack's
# log metric filter is its one publisher (EMF extraction as well would count every run twice).
SUCCESSFUL_RUN = "SuccessfulRun"
# Fields of the overlap check's log line, turned into metrics by the stack's log metric filters:
# 1 when a run skips because an older one is still going (exit 5), and how many runs of the job were
# loading when a run checked (the older ones still running, plus itself if it goes ahead).
SKIPPED_RUN = "SkippedRun"
CONCURRENT_RUNS = "ConcurrentRuns"
ROWS_LOADED = "RowsLoaded"
ROWS_FAILED = "RowsFailed"
DURATION_SECONDS = "DurationSeconds"
BYTES_BILLED = "BytesBilled"  # what BigQuery billed the run's queries (on-demand pricing is per byte billed)
BYTES_PROCESSED = "BytesProcessed"


def success_emf_line(*, stage: str, rows_loaded: int, rows_failed: int, duration_seconds: float,
                     bytes_billed: int = 0, bytes_processed: int = 0) -> str:
    """One CloudWatch Embedded Metric Format line announcing a successful run."""
    return json.dumps(
        {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": NAMESPACE,
                        "Dimensions": [[DIMENSION_STAGE]],
                        "Metrics": [
                            {"Name": ROWS_LOADED, "Unit": "Count"},
                            {"Name": ROWS_FAILED, "Unit": "Count"},
                            {"Name": DURATION_SECONDS, "Unit": "Seconds"},
                            {"Name": BYTES_BILLED, "Unit": "Bytes"},
                            {"Name": BYTES_PROCESSED, "Unit": "Bytes"},
                        ],
                    }
                ],
            },
            DIMENSION_STAGE: stage,
            SUCCESSFUL_RUN: 1,
            ROWS_LOADED: rows_loaded,
            ROWS_FAILED: rows_failed,
            DURATION_SECONDS: round(duration_seconds, 3),
            BYTES_BILLED: bytes_billed,
            BYTES_PROCESSED: bytes_processed,
        }
    )
