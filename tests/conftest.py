"""Test-wide settings that must be in place before aws_cdk is imported."""

import os

# Node 20 still runs jsii fine; its end-of-life banner would drown the test output.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
