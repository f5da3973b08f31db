"""``preflight --aws``, the network: what the VPC given in the parameters lets the functions reach.

Read-only EC2 calls with the deployer's credentials: the subnets (VPC, Availability Zones), the
VPC's DNS attributes, the endpoints already in the VPC, the subnets' route tables and the functions'
security groups. Each finding says what to set.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from payment_outbox_dev.checks.template_proofs import ENDPOINT_PARAMETERS, EXISTING_ENDPOINT

#: The services reached through interface endpoints (private DNS), and through gateway endpoints.
INTERFACE_SERVICES = ("sns", "secretsmanager", "lambda")
GATEWAY_SERVICES = ("s3", "dynamodb")
HTTPS = 443
#: Endpoint states in which an endpoint exists (or is about to) and holds its private DNS name.
_LIVE_STATES = {"available", "pending", "pendingacceptance"}


@dataclass(frozen=True)
class Finding:
    """One thing the account says about the deploy: ``blocking`` ones would fail the deploy or the
    running system; the others are worth knowing."""

    check: str
    text: str
    blocking: bool = True


def listed(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def used_services(values: dict[str, str]) -> list[str]:
    """The services the VPC functions call with these values (Lambda only when the relay fans out)."""
    fans_out = values.get("MaxRelayConcurrency", "4") != "1"
    return [s for s in ENDPOINT_PARAMETERS if s != "lambda" or fans_out]


def network_findings(ec2: Any, values: dict[str, str], region: str) -> list[Finding]:
    vpc_id = values["VpcId"]
    subnet_ids = listed(values.get("SubnetIds"))
    modes = {service: values.get(parameter, "create") for service, parameter in ENDPOINT_PARAMETERS.items()}
    services = used_services(values)
    subnets = ec2.describe_subnets(SubnetIds=subnet_ids)["Subnets"]
    findings = _subnet_findings(subnets, vpc_id, values)
    if any(modes[s] != "none" for s in services if s in INTERFACE_SERVICES):
        findings += _dns_findings(ec2, vpc_id)
    tables = _route_tables_of(ec2, vpc_id, subnet_ids)
    endpoints = [
        e
        for e in ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["VpcEndpoints"]
        if str(e.get("State", "available")).lower() in _LIVE_STATES
    ]
    groups = ec2.describe_security_groups(GroupIds=listed(values.get("SecurityGroupIds")))["SecurityGroups"]
    cidrs = [s["CidrBlock"] for s in subnets if s.get("CidrBlock")]
    function_groups = {g["GroupId"] for g in groups}
    for service in services:
        name = f"com.amazonaws.{region}.{service}"
        found = [e for e in endpoints if e.get("ServiceName") == name]
        if service in INTERFACE_SERVICES:
            findings += _interface_findings(ec2, service, modes[service], found, function_groups, cidrs)
        else:
            findings += _gateway_findings(service, modes[service], found, tables)
    findings += _route_findings(tables, values, modes, services)
    findings += _egress_findings(groups, values)
    return findings


def _subnet_findings(subnets: list[dict[str, Any]], vpc_id: str, values: dict[str, str]) -> list[Finding]:
    findings = [
        Finding("subnets", f"{s['SubnetId']} is in {s.get('VpcId')}, not in {vpc_id}: use VpcId's subnets")
        for s in subnets
        if s.get("VpcId") != vpc_id
    ]
    zones = sorted({s["AvailabilityZone"] for s in subnets})
    modes = [
        values.get(ENDPOINT_PARAMETERS[s], "create") for s in used_services(values) if s in INTERFACE_SERVICES
    ]
    shared = sorted({z for z in zones if sum(s["AvailabilityZone"] == z for s in subnets) > 1})
    if "create" in modes and shared:
        findings.append(
            Finding(
                "subnets",
                f"SubnetIds has more than one subnet in {', '.join(shared)}: an interface endpoint takes one "
                "subnet per zone and the deploy fails; keep one subnet per zone, or use existing endpoints",
            )
        )
    if len(zones) < 2:
        creates = values.get("CreateDatabase") == "true"
        findings.append(
            Finding(
                "subnets",
                f"SubnetIds are all in {', '.join(zones) or 'no zone'}: "
                + (
                    "the created database's subnet group needs subnets in two Availability Zones; add a "
                    "private subnet of another zone to SubnetIds"
                    if creates
                    else "an outage of that zone stops every function; add a private subnet of another zone"
                ),
                blocking=creates,
            )
        )
    return findings


def _dns_findings(ec2: Any, vpc_id: str) -> list[Finding]:
    support = ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute="enableDnsSupport")["EnableDnsSupport"]
    hostnames = ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute="enableDnsHostnames")["EnableDnsHostnames"]
    missing = [
        (attribute, flag)
        for attribute, flag, on in (
            ("DNS support", "--enable-dns-support", support.get("Value")),
            ("DNS hostnames", "--enable-dns-hostnames", hostnames.get("Value")),
        )
        if not on
    ]
    return [
        Finding(
            "VPC DNS",
            f"{vpc_id} has {attribute} off: interface endpoints with private DNS (created or existing) need "
            f"it on, or the deploy fails: aws ec2 modify-vpc-attribute --vpc-id {vpc_id} {flag}",
        )
        for attribute, flag in missing
    ]


def _interface_findings(
    ec2: Any,
    service: str,
    mode: str,
    found: list[dict[str, Any]],
    function_groups: set[str],
    cidrs: list[str],
) -> list[Finding]:
    parameter = ENDPOINT_PARAMETERS[service]
    private = [e for e in found if e.get("VpcEndpointType") == "Interface" and e.get("PrivateDnsEnabled")]
    if mode == "create" and private:
        return [
            Finding(
                "endpoints",
                f"the VPC already has a {service} endpoint with private DNS ({private[0]['VpcEndpointId']}): "
                f"a second is refused and the deploy fails; set {parameter}={EXISTING_ENDPOINT}",
            )
        ]
    if mode != EXISTING_ENDPOINT:
        return []
    interfaces = [e for e in found if e.get("VpcEndpointType") == "Interface"]
    if not interfaces:
        return [
            Finding(
                "endpoints",
                f"{parameter}={EXISTING_ENDPOINT} but the VPC has no {service} endpoint: set "
                f"{parameter}=create (or none with SubnetsHaveNat=true)",
            )
        ]
    if not private:
        endpoint = interfaces[0]["VpcEndpointId"]
        return [
            Finding(
                "endpoints",
                f"{endpoint} ({service}) has private DNS off, so the functions would resolve the public name "
                f"and find no path: aws ec2 modify-vpc-endpoint --vpc-endpoint-id {endpoint} "
                f"--private-dns-enabled, or set {parameter}=create",
            )
        ]
    endpoint = private[0]
    group_ids = [g["GroupId"] for g in endpoint.get("Groups", [])]
    groups = ec2.describe_security_groups(GroupIds=group_ids)["SecurityGroups"] if group_ids else []
    if not any(_lets_in(g, HTTPS, function_groups, cidrs) for g in groups):
        return [
            Finding(
                "endpoints",
                f"{endpoint['VpcEndpointId']} ({service}) lets no HTTPS in from the functions: its security "
                f"groups ({', '.join(group_ids) or 'none'}) need an inbound rule for TCP 443 from "
                f"{', '.join(sorted(function_groups))} or the subnets' CIDRs",
            )
        ]
    return []


def _gateway_findings(
    service: str, mode: str, found: list[dict[str, Any]], tables: dict[str, dict[str, Any]]
) -> list[Finding]:
    parameter = ENDPOINT_PARAMETERS[service]
    gateways = [e for e in found if e.get("VpcEndpointType") == "Gateway"]
    served = {t for e in gateways for t in e.get("RouteTableIds", [])}
    ours = {table["RouteTableId"] for table in tables.values()}
    if mode == "create" and served & ours:
        return [
            Finding(
                "endpoints",
                f"route table {sorted(served & ours)[0]} already routes {service} through "
                f"{gateways[0]['VpcEndpointId']}: a second gateway endpoint in it fails the deploy; set "
                f"{parameter}={EXISTING_ENDPOINT}",
            )
        ]
    if mode != EXISTING_ENDPOINT:
        return []
    if not gateways:
        return [
            Finding(
                "endpoints",
                f"{parameter}={EXISTING_ENDPOINT} but the VPC has no {service} gateway endpoint: set "
                f"{parameter}=create with PrivateRouteTableIds (or none with SubnetsHaveNat=true)",
            )
        ]
    return [
        Finding(
            "endpoints",
            f"{subnet}'s route table {table['RouteTableId']} has no route to the {service} endpoint "
            f"{gateways[0]['VpcEndpointId']}: aws ec2 modify-vpc-endpoint --vpc-endpoint-id "
            f"{gateways[0]['VpcEndpointId']} --add-route-table-ids {table['RouteTableId']}",
        )
        for subnet, table in sorted(tables.items())
        if table["RouteTableId"] not in served
    ]


def _route_tables_of(ec2: Any, vpc_id: str, subnet_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each subnet's route table: its explicit association, else the VPC's main table."""
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]
    main = next(
        (t for t in tables for a in t.get("Associations", []) if a.get("Main")),
        None,
    )
    found: dict[str, dict[str, Any]] = {}
    for subnet_id in subnet_ids:
        explicit = next(
            (t for t in tables for a in t.get("Associations", []) if a.get("SubnetId") == subnet_id),
            None,
        )
        table = explicit or main
        if table is not None:
            found[subnet_id] = table
    return found


def _default_route(table: dict[str, Any]) -> dict[str, Any] | None:
    return next(
        (
            r
            for r in table.get("Routes", [])
            if r.get("DestinationCidrBlock") == "0.0.0.0/0" and r.get("State", "active") == "active"
        ),
        None,
    )


def _route_findings(
    tables: dict[str, dict[str, Any]], values: dict[str, str], modes: dict[str, str], services: list[str]
) -> list[Finding]:
    findings = []
    if values.get("SubnetsHaveNat") == "true":
        for subnet, table in sorted(tables.items()):
            route = _default_route(table)
            if route is None:
                findings.append(
                    Finding(
                        "routes",
                        f"SubnetsHaveNat=true but {subnet}'s route table {table['RouteTableId']} has no "
                        "default route: set SubnetsHaveNat=false and an endpoint for each service "
                        "(VpcEndpoint*)",
                    )
                )
            elif str(route.get("GatewayId", "")).startswith("igw-"):
                findings.append(
                    Finding(
                        "routes",
                        f"{subnet} routes to an internet gateway: a public subnet, where a function's "
                        "network interface gets no public address and reaches nothing outside the VPC; "
                        "give private subnets behind a NAT gateway",
                    )
                )
    wanted = {s for s in services if s in GATEWAY_SERVICES and modes[s] == "create"}
    given = set(listed(values.get("PrivateRouteTableIds")))
    if wanted and given:
        for subnet, table in sorted(tables.items()):
            if table["RouteTableId"] not in given:
                findings.append(
                    Finding(
                        "routes",
                        f"PrivateRouteTableIds lacks {table['RouteTableId']}, the route table of {subnet}: "
                        f"the {' and '.join(sorted(wanted))} endpoint(s) the stack creates would not serve "
                        "it; add it",
                    )
                )
    return findings


def _egress_findings(groups: list[dict[str, Any]], values: dict[str, str]) -> list[Finding]:
    """The functions' security groups together (rules of all the groups of an interface add up) must let
    HTTPS out (every AWS service) and the database port."""
    findings = []
    database = int(values.get("DbPort", "3306"))
    for port, what in ((HTTPS, "HTTPS (every AWS service they call)"), (database, "MySQL")):
        if not any(_allows(rule, port) for g in groups for rule in g.get("IpPermissionsEgress", [])):
            findings.append(
                Finding(
                    "security groups",
                    f"SecurityGroupIds ({', '.join(g['GroupId'] for g in groups)}) let no {what} out on TCP "
                    f"{port}: add an outbound rule for TCP {port}",
                )
            )
    return findings


def _allows(rule: dict[str, Any], port: int) -> bool:
    protocol = str(rule.get("IpProtocol"))
    if protocol == "-1":
        return True
    return protocol in ("tcp", "6") and int(rule.get("FromPort", 0)) <= port <= int(rule.get("ToPort", 65535))


def _lets_in(group: dict[str, Any], port: int, sources: set[str], cidrs: Iterable[str]) -> bool:
    for rule in group.get("IpPermissions", []):
        if not _allows(rule, port):
            continue
        if any(pair.get("GroupId") in sources for pair in rule.get("UserIdGroupPairs", [])):
            return True
        for block in rule.get("IpRanges", []):
            network = ipaddress.ip_network(block["CidrIp"], strict=False)
            if all(ipaddress.ip_network(c).subnet_of(network) for c in cidrs):  # type: ignore[arg-type]
                return True
    return False
