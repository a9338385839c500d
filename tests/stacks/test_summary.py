"""`make run` opens with a summary of what `cdk deploy` would create."""

from dev.summary import summarize
from tests.support import synth


def test_summary_names_the_task_schedule_tables_and_resources() -> None:
    text = summarize(synth(stage="prod").to_json())
    assert "etl-pipeline-prod: 1 vCPU, 2048 MiB, X86_64, user 10001:10001, read-only root" in text
    assert "schedule  cron(0 5 * * ? *) (enabled)" in text
    assert "my-gcp-project.etl_demo.names -> my-gcp-project.etl_demo.names_transformed" in text
    assert "GOOGLE_CREDENTIALS_JSON from Secrets Manager" in text
    assert "NAT gateways: 0" in text
    assert "  1  AWS::ECS::TaskDefinition" in text


def test_summary_of_a_keyless_stack_names_the_provider_and_no_secret() -> None:
    from dev.audit_configurations import CONFIGURATIONS

    text = summarize(synth(**CONFIGURATIONS["dev-wif"]).to_json())
    assert "workload identity federation from the task role, no secret" in text
    assert "workloadIdentityPools/etl-pool/providers/aws-etl" in text
    assert "Secrets Manager" not in text
