"""The configurations `make audit` synthesizes and checks; the stack tests read the same ones.

Every branch of the stack that changes resources or permissions: both stages (prod with flow logs), then the
optional features (Spot, log and secret CMKs, an alarm e-mail, a break-glass role), bring-your-own VPC and
secret ARN, the keyless configuration (Workload Identity Federation: no secret at all) and the fan-out.
"""

CONFIGURATIONS: dict[str, dict[str, str]] = {
    "dev": {"stage": "dev"},
    "prod": {"stage": "prod"},
    "dev-spot-kms": {
        "stage": "dev",
        "capacity": "spot",
        "log_kms_key": "true",
        "secret_kms_key": "true",
        "alarm_email": "ops@example.com",
        "break_glass_role_arn": "arn:aws:iam::123456789012:role/security/break-glass",
    },
    "dev-existing-vpc": {
        "stage": "dev",
        "vpc_id": "vpc-0123456789abcdef0",
        "subnet_ids": "subnet-0123456789abcdef0,subnet-0fedcba9876543210",
        "assign_public_ip": "false",
        "google_credentials_secret": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/google-etl-key-AbCdEf",
    },
    "dev-wif": {
        "stage": "dev",
        "google_auth": "workload_identity",
        "workload_identity_provider": "//iam.googleapis.com/projects/123456789012/locations/global/"
                                      "workloadIdentityPools/etl-pool/providers/aws-etl",
        "google_service_account": "etl-job@my-gcp-project.iam.gserviceaccount.com",
    },
    "dev-shards": {"stage": "dev", "shards": "8"},
}
