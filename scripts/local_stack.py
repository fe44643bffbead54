#!/usr/bin/env python3
"""The local AWS for layerforge's pipeline: what template.yaml creates, provisioned in moto's server.

Subcommands (all take --endpoint, moto's URL):
  provision --state FILE --env-file FILE   bucket (versioned) + S3->SQS notifications, IAM roles, VPC/subnet/SG,
                                           Fargate compute environment, arm64/x86_64 queues and job definitions;
                                           writes the functions' environment for `cargo lambda watch --env-file`
  job-command --job-id ID                  prints the job's containerOverrides.command (JSON) via DescribeJobs
  next-event --state FILE --key KEY --out F waits for the S3 event moto generated for KEY on the queue, writes it
  layer-info --arn ARN                     prints GetLayerVersion's CodeSha256/CodeSize as JSON
  save --state FILE --dir DIR              keeps the artifacts (zip, metadata, tags) for the next run
  seed --state FILE --dir DIR              puts saved artifacts back (moto keeps everything in memory)

moto's S3->Lambda notification needs Docker, so the bucket notifies an SQS queue instead and the events are
fed to publish-layer through the Lambda Runtime API, as the README explains.
"""
import argparse
import json
import os
import sys
import time
import urllib.request

import boto3
from botocore.config import Config

REGION = "us-east-1"
PREFIX = "layers"
BUCKET = "layerforge-artifacts"
QUEUE = "layerforge-artifact-events"


def client(service, endpoint):
    cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3})
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing",
                        aws_secret_access_key="testing", config=cfg)


def moto_config(endpoint):
    req = urllib.request.Request(f"{endpoint}/moto-api/config", data=json.dumps({"batch": {"use_docker": False}}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(req, timeout=10).read()


def provision(args):
    e = args.endpoint
    moto_config(e)
    s3, sqs, iam, ec2, batch = (client(s, e) for s in ("s3", "sqs", "iam", "ec2", "batch"))

    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    queue_url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration={"QueueConfigurations": [{
        "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": f"{PREFIX}/"}, {"Name": "suffix", "Value": ".zip"}]}},
    }]})

    def role(name, service):
        doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]}
        return iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(doc))["Role"]["Arn"]

    service_role = role("layerforge-batch-service", "batch.amazonaws.com")
    job_role = role("layerforge-builder-job", "ecs-tasks.amazonaws.com")
    execution_role = role("layerforge-builder-execution", "ecs-tasks.amazonaws.com")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="layerforge-builder", Description="layerforge builder", VpcId=vpc)["GroupId"]
    ce = batch.create_compute_environment(
        computeEnvironmentName="layerforge-fargate", type="MANAGED", state="ENABLED", serviceRole=service_role,
        computeResources={"type": "FARGATE", "maxvCpus": 16, "subnets": [subnet], "securityGroupIds": [group]},
    )["computeEnvironmentArn"]
    targets = {}
    for arch, cpu in (("arm64", "ARM64"), ("x86_64", "X86_64")):
        queue = batch.create_job_queue(jobQueueName=f"layerforge-{arch}", state="ENABLED", priority=1,
                                       computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}])["jobQueueArn"]
        definition = batch.register_job_definition(
            jobDefinitionName=f"layerforge-builder-{arch}", type="container", platformCapabilities=["FARGATE"],
            containerProperties={
                "image": f"123456789012.dkr.ecr.{REGION}.amazonaws.com/layerforge-builder:latest",
                "jobRoleArn": job_role, "executionRoleArn": execution_role,
                "resourceRequirements": [{"type": "VCPU", "value": "2"}, {"type": "MEMORY", "value": "4096"}],
                "runtimePlatform": {"cpuArchitecture": cpu, "operatingSystemFamily": "LINUX"},
                "networkConfiguration": {"assignPublicIp": "ENABLED"},
            },
        )["jobDefinitionArn"]
        targets[arch] = {"job_queue": queue, "job_definition": definition}

    state = {"endpoint": e, "bucket": BUCKET, "prefix": PREFIX, "queue_url": queue_url, "build_targets": targets}
    with open(args.state, "w") as f:
        json.dump(state, f, indent=2)
    env = {
        "AWS_ENDPOINT_URL": e, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "ARTIFACT_BUCKET": BUCKET, "ARTIFACT_PREFIX": PREFIX, "BUILD_TARGETS": json.dumps(targets, separators=(",", ":")),
        "DEFAULT_RUNTIME": "python3.12", "DEFAULT_ARCHITECTURE": "arm64", "ALLOWED_REQUIREMENTS_BUCKETS": "",
        "MAX_VCPU": "4", "MAX_MEMORY_MIB": "16384",
    }
    with open(args.env_file, "w") as f:
        for k, v in env.items():
            f.write(f"{k}='{v}'\n" if any(c in v for c in " ,\"{") else f"{k}={v}\n")
    print(json.dumps({"bucket": BUCKET, "queue_url": queue_url, "build_targets": targets}))


def job_command(args):
    job = client("batch", args.endpoint).describe_jobs(jobs=[args.job_id])["jobs"][0]
    print(json.dumps({"status": job["status"], "jobQueue": job["jobQueue"], "jobDefinition": job["jobDefinition"],
                      "command": job["container"]["command"]}))


def next_event(args):
    state = json.load(open(args.state))
    sqs = client("sqs", args.endpoint)
    deadline = time.time() + args.timeout
    while time.time() < deadline:
        out = sqs.receive_message(QueueUrl=state["queue_url"], MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in out.get("Messages", []):
            body = json.loads(message["Body"])
            sqs.delete_message(QueueUrl=state["queue_url"], ReceiptHandle=message["ReceiptHandle"])
            records = body.get("Records", [])
            if any(r.get("s3", {}).get("object", {}).get("key") == args.key for r in records):
                with open(args.out, "w") as f:
                    json.dump(body, f, indent=2)
                print(args.out)
                return
            kind = body.get("Event") or ",".join(r.get("eventName", "?") for r in records)
            print(f"  (skipped a queue message: {kind})", file=sys.stderr)
    sys.exit(f"no S3 event for {args.key} arrived on the queue within {args.timeout} s")


def layer_info(args):
    name, version = args.arn.split(":")[6], int(args.arn.split(":")[7])
    out = client("lambda", args.endpoint).get_layer_version(LayerName=name, VersionNumber=version)
    print(json.dumps({"arn": out["LayerVersionArn"], "code_sha256": out["Content"]["CodeSha256"],
                      "code_size": out["Content"]["CodeSize"], "runtimes": out.get("CompatibleRuntimes", []),
                      "architectures": out.get("CompatibleArchitectures", [])}))


def save(args):
    state = json.load(open(args.state))
    s3 = client("s3", args.endpoint)
    os.makedirs(args.dir, exist_ok=True)
    saved = []
    for obj in s3.list_objects_v2(Bucket=state["bucket"], Prefix=state["prefix"] + "/").get("Contents", []):
        key = obj["Key"]
        head = s3.head_object(Bucket=state["bucket"], Key=key)
        tags = s3.get_object_tagging(Bucket=state["bucket"], Key=key)["TagSet"]
        path = os.path.join(args.dir, key.replace("/", "__"))
        s3.download_file(state["bucket"], key, path)
        with open(path + ".json", "w") as f:
            json.dump({"key": key, "metadata": head["Metadata"], "tags": tags}, f)
        saved.append(key)
    print(json.dumps(saved))


def seed(args):
    state = json.load(open(args.state))
    s3 = client("s3", args.endpoint)
    if not os.path.isdir(args.dir):
        return
    for name in sorted(os.listdir(args.dir)):
        if not name.endswith(".json"):
            continue
        meta = json.load(open(os.path.join(args.dir, name)))
        with open(os.path.join(args.dir, name[:-5]), "rb") as body:
            s3.put_object(Bucket=state["bucket"], Key=meta["key"], Body=body, Metadata=meta["metadata"])
        if meta["tags"]:
            s3.put_object_tagging(Bucket=state["bucket"], Key=meta["key"], Tagging={"TagSet": meta["tags"]})
        print(f"  restored s3://{state['bucket']}/{meta['key']} from the previous run", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", required=True)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("provision"); s.add_argument("--state", required=True); s.add_argument("--env-file", required=True)
    s = sub.add_parser("job-command"); s.add_argument("--job-id", required=True)
    s = sub.add_parser("next-event"); s.add_argument("--state", required=True); s.add_argument("--key", required=True)
    s.add_argument("--out", required=True); s.add_argument("--timeout", type=int, default=30)
    s = sub.add_parser("layer-info"); s.add_argument("--arn", required=True)
    for name in ("save", "seed"):
        s = sub.add_parser(name); s.add_argument("--state", required=True); s.add_argument("--dir", required=True)
    args = p.parse_args()
    {"provision": provision, "job-command": job_command, "next-event": next_event, "layer-info": layer_info,
     "save": save, "seed": seed}[args.cmd](args)


if __name__ == "__main__":
    main()
