#!/usr/bin/env python3
"""CDK entry point: validate the stage's configuration once, then build its one stack."""

import sys

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from stacks import config as stage_config
from stacks.pipeline_stack import EtlPipelineStack


def main() -> None:
    # cdk.json's context (config and feature flags) also when run as `python app.py`; the CLI's
    # context, which includes -c values, overrides it.
    app = cdk.App(context=stage_config.read_cdk_json_context())
    try:
        config = stage_config.load(app.node.get_all_context())
    except stage_config.ConfigError as error:
        print(*error.lines(), sep="\n", file=sys.stderr)
        sys.exit(2)
    build(app, config)
    app.synth()


def build(app: cdk.App, config: stage_config.StageConfig) -> EtlPipelineStack:
    """The stage's stack, checked by cdk-nag's AWS Solutions rules on every synth."""
    stack = EtlPipelineStack(app, config=config)
    # An unacknowledged finding fails synthesis; acknowledgments sit next to their resources.
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    return stack


if __name__ == "__main__":
    main()
