"""A production-shaped Spot fleet on moto, built with boto3 straight against moto (not through the throttling proxy).

`groups` target groups in one VPC, half `instance` (NodePort-style ports 30000+) and half `ip` (pod port 8080);
`spot_count` Spot instances, each with a second ENI carrying a secondary address as the VPC CNI gives pods. Each Spot
instance sits in GROUPS_PER_INSTANCE groups (or `per_instance`) spread over the fleet (half by instance id, half by a
pod address; the odd one by instance id), and
one on-demand neighbour sits in every group, so no group is empty. Plus an SNS topic read through an SQS
subscription, and a quarantine security group.

Registrations are collected per group and sent as one RegisterTargets per group.
"""
import concurrent.futures
import json
import socket
import time
from dataclasses import dataclass, field

import boto3

REGION = "us-east-1"
GROUPS_PER_INSTANCE = 10
NODE_PORT_BASE = 30000
POD_PORT = 8080
# Calls in flight while building. Target groups are created one at a time: moto's duplicate-name check walks a dict
# that a concurrent create could change under it.
WORKERS = 8
# One of moto's default AMIs. Asked for by id: a DescribeImages of them all lists moto's thousands of "latest" AMIs
# too, and took 20 s of a 30 s fleet build on a loaded machine.
IMAGE = "ami-03cf127a"


@dataclass
class Node:
    id: str
    pod_ips: list


@dataclass
class Fleet:
    groups: int
    vpc_id: str
    spot: list
    neighbour: Node
    topic_arn: str
    queue_url: str
    quarantine_group: str
    app_group: str
    # target group ARN -> the ids registered in it (instance ids or addresses), and its port
    registered: dict = field(default_factory=dict)
    ports: dict = field(default_factory=dict)
    build_seconds: float = 0.0

    def registrations_of(self, node):
        """How many (group, target) registrations belong to `node`."""
        ids = {node.id, *node.pod_ips}
        return sum(len(ids & set(targets)) for targets in self.registered.values())


def clients(endpoint):
    """boto3 clients for moto at `endpoint`."""
    session = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name=REGION)
    return {name: session.client(name, endpoint_url=endpoint) for name in ("ec2", "elbv2", "sns", "sqs", "dynamodb")}


# The topologies a fleet can have: `spread` (each Spot instance in `per_instance` groups spread over the fleet) or
# `nodeport` (the seed system's: ALB to NodePort, one instance target group per service, every node in every one of
# them, a third of the groups IP groups that hold only the neighbour's pods).
TOPOLOGIES = ("spread", "nodeport")


def build(endpoint, groups, spot_count, per_instance=GROUPS_PER_INSTANCE, topology="spread"):
    """Create the whole fleet on a fresh moto and return what the benchmark needs to know about it: `groups` target
    groups, each Spot instance registered in `per_instance` of them (`spread`) or in every instance group
    (`nodeport`)."""
    assert topology in TOPOLOGIES, topology
    started = time.monotonic()
    aws = clients(endpoint)
    ec2, elb = aws["ec2"], aws["elbv2"]
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet_a = create_subnet(ec2, vpc_id, "10.0.0.0/20", "us-east-1a")
    subnet_b = create_subnet(ec2, vpc_id, "10.0.16.0/20", "us-east-1b")
    app_group = create_security_group(ec2, vpc_id, "app")
    quarantine_group = create_security_group(ec2, vpc_id, "quarantine")
    image = ec2.describe_images(ImageIds=[IMAGE])["Images"][0]["ImageId"]

    spot = launch(ec2, image, subnet_a, subnet_b, app_group, spot_count, spot=True, first=0)
    neighbour = launch(ec2, image, subnet_a, subnet_b, app_group, 1, spot=False, first=spot_count)[0]
    if topology == "nodeport":
        registered, ports = register_nodeport(elb, vpc_id, groups, spot, neighbour)
    else:
        registered, ports = register_fleet(elb, vpc_id, groups, spot, neighbour, per_instance)
    topic_arn, queue_url = summary_queue(aws["sns"], aws["sqs"])
    return Fleet(
        groups=groups,
        vpc_id=vpc_id,
        spot=spot,
        neighbour=neighbour,
        topic_arn=topic_arn,
        queue_url=queue_url,
        quarantine_group=quarantine_group,
        app_group=app_group,
        registered=registered,
        ports=ports,
        build_seconds=time.monotonic() - started,
    )


def create_subnet(ec2, vpc_id, cidr, zone):
    return ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"]["SubnetId"]


def create_security_group(ec2, vpc_id, name):
    return ec2.create_security_group(VpcId=vpc_id, GroupName=name, Description=name)["GroupId"]


def launch(ec2, image, subnet, pod_subnet, security_group, count, spot, first):
    """`count` instances in one RunInstances, each then given a second ENI with a secondary address. The pod ENIs of
    nodes `first`, `first + 1`, ... get addresses of their own (`pod_addresses`)."""
    request = dict(
        ImageId=image,
        InstanceType="m5.large",
        MinCount=count,
        MaxCount=count,
        SubnetId=subnet,
        SecurityGroupIds=[security_group],
    )
    if spot:
        request["InstanceMarketOptions"] = {"MarketType": "spot"}
    ids = [i["InstanceId"] for i in ec2.run_instances(**request)["Instances"]]
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        pod_ips = list(pool.map(
            lambda n_id: attach_pod_eni(ec2, n_id[1], pod_subnet, security_group, pod_addresses(first + n_id[0])),
            enumerate(ids),
        ))
    return [Node(id=i, pod_ips=ips) for i, ips in zip(ids, pod_ips)]


def pod_addresses(n):
    """Node `n`'s two pod addresses in 10.0.16.0/20. moto draws addresses at random without checking that they are
    free, and keys targets by id: with ~100 random pod IPs in a /20, two nodes would likely share one."""
    assert n < 2000, "the pod subnet holds 2,000 nodes"
    base = (10 << 24) + (16 << 8) + 10 + 2 * n
    return [socket.inet_ntoa((base + k).to_bytes(4, "big")) for k in (0, 1)]


def attach_pod_eni(ec2, instance_id, subnet, security_group, addresses):
    eni = ec2.create_network_interface(
        SubnetId=subnet,
        Groups=[security_group],
        PrivateIpAddresses=[{"PrivateIpAddress": ip, "Primary": k == 0} for k, ip in enumerate(addresses)],
    )["NetworkInterface"]
    ec2.attach_network_interface(
        NetworkInterfaceId=eni["NetworkInterfaceId"], InstanceId=instance_id, DeviceIndex=1
    )
    return [a["PrivateIpAddress"] for a in eni["PrivateIpAddresses"]]


def membership(groups, spot_count, per_instance=GROUPS_PER_INSTANCE):
    """For each Spot instance, the indices of its instance groups and of its ip groups (`per_instance` in all, the odd
    one an instance group): spread over the fleet, so a batch touches many groups and no group holds every
    interrupted instance."""
    half = groups // 2

    def picks(n, count):
        count = min(count, half)
        stride = max(half // count, 1) if count else 1
        return sorted({(n * 7 + j * stride) % half for j in range(count)})

    return [(picks(n, (per_instance + 1) // 2), picks(n, per_instance // 2)) for n in range(spot_count)]


def register_fleet(elb, vpc_id, groups, spot, neighbour, per_instance=GROUPS_PER_INSTANCE):
    """Create the target groups and register everyone, one RegisterTargets per group."""
    half = groups // 2
    instance_groups = [create_target_group(elb, f"nodeport-{i:04d}", vpc_id, "instance", NODE_PORT_BASE + i)
                       for i in range(half)]
    ip_groups = [create_target_group(elb, f"pods-{i:04d}", vpc_id, "ip", POD_PORT) for i in range(groups - half)]
    targets = {arn: [neighbour.id] for arn in instance_groups}
    targets.update({arn: [neighbour.pod_ips[0]] for arn in ip_groups})
    for node, (by_id, by_ip) in zip(spot, membership(groups, len(spot), per_instance)):
        for i in by_id:
            targets[instance_groups[i]].append(node.id)
        for i in by_ip:
            targets[ip_groups[i]].append(node.pod_ips[i % len(node.pod_ips)])
    ports = {arn: NODE_PORT_BASE + i for i, arn in enumerate(instance_groups)}
    ports.update({arn: POD_PORT for arn in ip_groups})
    register(elb, {arn: (ports[arn], ids) for arn, ids in targets.items()})
    return targets, ports


def register_nodeport(elb, vpc_id, groups, spot, neighbour):
    """The seed's topology: two thirds of the groups are NodePort instance groups holding every node (the Spot ones
    and the neighbour), the rest IP groups holding only the neighbour's first pod address."""
    instance_count = groups * 2 // 3
    instance_groups = [create_target_group(elb, f"nodeport-{i:04d}", vpc_id, "instance", NODE_PORT_BASE + i)
                       for i in range(instance_count)]
    ip_groups = [create_target_group(elb, f"pods-{i:04d}", vpc_id, "ip", POD_PORT)
                 for i in range(groups - instance_count)]
    targets = {arn: [neighbour.id, *(node.id for node in spot)] for arn in instance_groups}
    targets.update({arn: [neighbour.pod_ips[0]] for arn in ip_groups})
    ports = {arn: NODE_PORT_BASE + i for i, arn in enumerate(instance_groups)}
    ports.update({arn: POD_PORT for arn in ip_groups})
    register(elb, {arn: (ports[arn], ids) for arn, ids in targets.items()})
    return targets, ports


def register(elb, targets):
    """One RegisterTargets per group, several in flight: each call changes only its own group in moto."""
    def one(item):
        arn, (port, ids) = item
        elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": t, "Port": port} for t in ids])

    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(one, targets.items()))


def create_target_group(elb, name, vpc_id, kind, port):
    group = elb.create_target_group(Name=name, Protocol="HTTP", Port=port, VpcId=vpc_id, TargetType=kind)
    return group["TargetGroups"][0]["TargetGroupArn"]


def summary_queue(sns, sqs):
    """The summary topic and a queue subscribed to it, so the benchmark can read what the function published."""
    topic_arn = sns.create_topic(Name="spot-cleanup")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="summaries")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return topic_arn, queue_url


def published_summaries(endpoint, queue_url):
    """Every summary the function published so far (drains the queue): the SNS message JSON, parsed."""
    sqs = clients(endpoint)["sqs"]
    summaries = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return summaries
        for message in messages:
            summaries.append(json.loads(json.loads(message["Body"])["Message"]))
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)],
        )


def restore(endpoint, fleet, nodes):
    """Put `nodes` back as the build left them: re-register their targets (RegisterTargets is idempotent, so each
    affected group simply gets its original list again), move their ENIs back to the app group without the
    recorded-groups tags, clear the delivery marker (instance tags, or the claim item in the index table) so the next
    scenario's notice is acted on, and empty the summary queue."""
    aws = clients(endpoint)
    ids = {i for node in nodes for i in (node.id, *node.pod_ips)}
    affected = {arn: (fleet.ports[arn], targets) for arn, targets in fleet.registered.items() if ids & set(targets)}
    register(aws["elbv2"], affected)
    ec2 = aws["ec2"]
    for eni in node_enis(ec2, nodes):
        ec2.modify_network_interface_attribute(NetworkInterfaceId=eni["NetworkInterfaceId"], Groups=[fleet.app_group])
        recorded = [{"Key": t["Key"]} for t in eni.get("TagSet", []) if t["Key"].startswith("spot-cleanup:")]
        if recorded:
            ec2.delete_tags(Resources=[eni["NetworkInterfaceId"]], Tags=recorded)
    clear_markers(aws, [node.id for node in nodes])
    published_summaries(endpoint, fleet.queue_url)


def clear_markers(aws, instance_ids):
    """Remove the function's marker tags from the instances, and their claim items from the index table if any."""
    if not instance_ids:
        return
    ec2, dynamodb = aws["ec2"], aws["dynamodb"]
    pages = ec2.get_paginator("describe_tags").paginate(
        Filters=[{"Name": "resource-id", "Values": instance_ids}])
    for page in pages:
        for tag in page["Tags"]:
            if tag["Key"].startswith("spot-cleanup:"):
                ec2.delete_tags(Resources=[tag["ResourceId"]], Tags=[{"Key": tag["Key"]}])
    if INDEX_TABLE in dynamodb.list_tables()["TableNames"]:
        for instance_id in instance_ids:
            dynamodb.delete_item(TableName=INDEX_TABLE,
                                 Key={"pk": {"S": f"claim#{instance_id}"}, "sk": {"S": "claim"}})


def node_enis(ec2, nodes):
    filters = [{"Name": "attachment.instance-id", "Values": [n.id for n in nodes]}]
    return ec2.describe_network_interfaces(Filters=filters)["NetworkInterfaces"]


def check(endpoint, fleet, nodes):
    """What AWS looks like afterwards, read straight from moto: registrations of `nodes` still present, neighbour
    registrations lost from the groups the nodes were in, and ENIs of `nodes` not on the quarantine group."""
    aws = clients(endpoint)
    ids = {i for node in nodes for i in (node.id, *node.pod_ips)}
    neighbour = {fleet.neighbour.id, *fleet.neighbour.pod_ips}
    affected = [arn for arn, targets in fleet.registered.items() if ids & set(targets)]

    def registered_now(arn):
        health = aws["elbv2"].describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
        return {d["Target"]["Id"] for d in health}

    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        now = list(pool.map(registered_now, affected))
    left = sum(len(ids & targets) for targets in now)
    neighbour_lost = sum(1 for targets in now if not neighbour & targets)
    enis = node_enis(aws["ec2"], nodes)
    unquarantined = sum(1 for e in enis if fleet.quarantine_group not in {g["GroupId"] for g in e["Groups"]})
    return {"targets_left": left, "neighbour_lost": neighbour_lost, "enis_not_quarantined": unquarantined,
            "enis": len(enis)}


INDEX_TABLE = "spot-cleanup-index"


def create_index_table(endpoint, name=INDEX_TABLE):
    """The registration index's DynamoDB table (pk/sk strings, on demand), as template.yaml declares it."""
    dynamodb = clients(endpoint)["dynamodb"]
    dynamodb.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    )
    return name
