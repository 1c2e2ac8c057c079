"""Print one AWS SSM SecureString (the node's instance profile must be allowed to read it): how the ray-up
cluster's nodes get the MLflow password into their environment without writing it to a file.
    python scripts/ssm_secret.py /fmolab/mlflow-password
"""
import sys

import boto3

if len(sys.argv) != 2:
    sys.exit("usage: python scripts/ssm_secret.py PARAMETER_NAME")
try:
    value = boto3.client("ssm").get_parameter(Name=sys.argv[1], WithDecryption=True)["Parameter"]["Value"]
except Exception as exc:  # no profile, no parameter, no permission: say which, exit non-zero
    sys.exit(f"ssm_secret: cannot read {sys.argv[1]}: {exc}")
sys.stdout.write(value)
