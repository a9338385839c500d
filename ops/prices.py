"""Prices the cost estimate uses: one dated table, public list prices for us-east-1. Update both together."""

AS_OF = "2026-11"
REGION = "us-east-1"

FARGATE_VCPU_HOUR = {"x86_64": 0.04048, "arm64": 0.03238}
FARGATE_GB_HOUR = {"x86_64": 0.004445, "arm64": 0.00356}
FARGATE_SPOT_DISCOUNT = 0.70  # "up to 70% off"; the real Spot price moves, this is the usual level
PUBLIC_IPV4_HOUR = 0.005
SECRET_MONTH = 0.40
KMS_KEY_MONTH = 1.00
ALARM_MONTH = 0.10  # standard resolution, per alarm
CUSTOM_METRIC_MONTH = 0.30  # the success metric from the log metric filter
NAT_GATEWAY_HOUR = 0.045
GLUE_DPU_HOUR = 0.44
GLUE_PYTHON_SHELL_MIN_DPU = 0.0625
HOURS_PER_MONTH = 730
BIGQUERY_ON_DEMAND_TIB = 6.25  # on-demand query pricing, per TiB billed (the first 1 TiB a month is free)
