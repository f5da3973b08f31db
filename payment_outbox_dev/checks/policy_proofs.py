"""The proofs on who may do what: resource policies evaluated for every principal, whatever that
principal's own IAM policy allows — who may publish an envelope or send one to a queue, who may
decrypt the secrets' keys, which database user each function connects as, who may call each API
route and how the payment callback is fenced.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from payment_outbox_dev.checks.deployment import (
    Deployment,
    as_list,
    is_empty,
    referenced,
    referenced_once,
    same,
)
from payment_outbox_dev.checks.parameters import (
    parameter_value,
)

#: A principal of the account that the template names nowhere, with every IAM permission it might hold.
OUTSIDER = "arn:aws:iam::123456789012:role/a-role-the-template-does-not-name"
#: The topic delivering to a queue: SNS's service principal, acting for the topic.
SNS_SERVICE = "sns.amazonaws.com"


@dataclass(frozen=True)
class Caller:
    """Who makes a request, as a resource policy sees it: an IAM principal's ARN (a literal or the
    template's expression for it), or an AWS service acting for a resource of the stack."""

    principal_arn: Any = None
    service: str | None = None
    source_arn: Any = None

    def context(self) -> dict[str, list[Any]]:
        """The request context's keys (absent keys are missing, as in AWS)."""
        keys: dict[str, list[Any]] = {"aws:PrincipalIsAWSService": ["true" if self.service else "false"]}
        if self.principal_arn is not None:
            keys["aws:PrincipalArn"] = [self.principal_arn]
        if self.source_arn is not None:
            keys["aws:SourceArn"] = [self.source_arn]
        return keys


def policy_statements(deployment: Deployment, policy_type: str, list_key: str, target: Any) -> list[Any]:
    """The statements of every resource policy of ``policy_type`` that applies to ``target``."""
    statements: list[Any] = []
    for logical_id in deployment.of_type(policy_type):
        props = deployment.properties(logical_id)
        if any(same(target, t) for t in as_list(props.get(list_key, []))):
            statements += as_list(props.get("PolicyDocument", {}).get("Statement", []))
    return statements


def denies(
    deployment: Deployment, statements: list[Any], action: str, caller: Caller, resource: str | None = None
) -> bool:
    """An explicit Deny applies to the caller's request (which no identity policy can overrule);
    ``resource``, when given, is matched with the statements' (else each policy has one resource)."""
    return any(
        _applies(deployment, s, action, caller, resource) for s in statements if s.get("Effect") == "Deny"
    )


def allows(
    deployment: Deployment, statements: list[Any], action: str, caller: Caller, resource: str | None = None
) -> bool:
    return any(
        _applies(deployment, s, action, caller, resource) for s in statements if s.get("Effect") == "Allow"
    )


def _applies(
    deployment: Deployment, statement: dict[str, Any], action: str, caller: Caller, resource: str | None
) -> bool:
    actions = [str(a) for a in as_list(statement.get("Action", []))]
    if not any(fnmatch.fnmatchcase(action, a) for a in actions):
        return False
    if resource is not None and not any(
        isinstance(r, str) and fnmatch.fnmatchcase(resource, r) for r in as_list(statement.get("Resource"))
    ):
        return False
    principal = statement.get("Principal")
    if principal != "*":
        named = principal if isinstance(principal, dict) else {}
        if caller.service is not None:
            if caller.service not in as_list(named.get("Service", [])):
                return False
        elif not any(_matches(caller.principal_arn, p) for p in as_list(named.get("AWS", []))):
            return False
    context = caller.context()
    for operator, tests in statement.get("Condition", {}).items():
        for key, wanted in tests.items():
            if not _condition_holds(operator, context.get(key), values_of(deployment, wanted)):
                return False
    return True


def _condition_holds(operator: str, present: list[Any] | None, wanted: list[Any]) -> bool:
    """IAM's condition operators as far as the template uses them, with IAM's rule for a missing key:
    a positive test fails, a negated one holds, ``...IfExists`` holds."""
    if operator == "Null":
        return (present is None) == (str(wanted[0]).lower() == "true")
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    negated = "Not" in base
    if present is None:
        return if_exists or negated
    like = base.endswith("Like") or base.startswith("Arn")
    if base == "Bool":
        matched = any(str(v).lower() == str(w).lower() for v in present for w in wanted)
    else:
        matched = any(_matches(v, w, wildcards=like) for v in present for w in wanted)
    return not matched if negated else matched


def _matches(value: Any, pattern: Any, *, wildcards: bool = True) -> bool:
    if isinstance(value, str) and isinstance(pattern, str):
        return fnmatch.fnmatchcase(value, pattern) if wildcards else value == pattern
    return same(value, pattern)


def values_of(deployment: Deployment, wanted: Any) -> list[Any]:
    """A condition's values, a list parameter's items spread out."""
    values: list[Any] = []
    for value in as_list(wanted):
        if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in deployment.parameters:
            values += as_list(parameter_value(deployment.source, deployment.parameters, value["Ref"]))
        else:
            values.append(value)
    return values


def _role_arn(deployment: Deployment, function_id: str) -> Any:
    return deployment.properties(function_id).get("Role")


def _list_parameter(deployment: Deployment, name: str) -> list[str]:
    return [v for v in deployment.parameters.get(name, "").split(",") if v]


def envelope_problems(deployment: Deployment) -> list[str]:
    """Envelopes cannot be forged: every topic a function publishes envelopes to (its
    ``ORDER_EVENTS_TOPIC_ARN``) denies sns:Publish to every principal but those functions' roles, and
    every queue denies sqs:SendMessage to every principal but the named operators, while the topic's
    deliveries to its subscribed queues stay allowed."""
    problems = []
    publishers: dict[str, list[str]] = {}
    for function_id in sorted(deployment.functions):
        topic = deployment.environment(function_id).get("ORDER_EVENTS_TOPIC_ARN")
        if topic is not None:
            publishers.setdefault(str(referenced_once(topic)), []).append(function_id)
    others = {f: _role_arn(deployment, f) for f in deployment.functions}
    for topic_id, writers in sorted(publishers.items()):
        statements = policy_statements(deployment, "AWS::SNS::TopicPolicy", "Topics", {"Ref": topic_id})
        for function_id, role in sorted(others.items()):
            denied = denies(deployment, statements, "sns:Publish", Caller(principal_arn=role))
            if function_id in writers and denied:
                problems.append(f"{topic_id}'s policy denies {function_id}, which publishes envelopes")
            if function_id not in writers and not denied:
                problems.append(f"{function_id}'s role could publish envelopes to {topic_id}")
        for outsider in [OUTSIDER, *_list_parameter(deployment, "OperatorPrincipalArns")]:
            if not denies(deployment, statements, "sns:Publish", Caller(principal_arn=outsider)):
                problems.append(f"{outsider} could publish envelopes to {topic_id} if its IAM policy allowed")
    subscribed = {
        referenced_once(deployment.properties(s).get("Endpoint")): referenced_once(
            deployment.properties(s).get("TopicArn")
        )
        for s in deployment.of_type("AWS::SNS::Subscription")
        if deployment.properties(s).get("Protocol") == "sqs"
    }
    operators = _list_parameter(deployment, "OperatorPrincipalArns")
    redrivers = _redrive_targets(deployment)
    for queue_id in sorted(deployment.of_type("AWS::SQS::Queue")):
        arn = {"Fn::GetAtt": [queue_id, "Arn"]}
        statements = policy_statements(deployment, "AWS::SQS::QueuePolicy", "Queues", {"Ref": queue_id})
        senders = [(OUTSIDER, OUTSIDER, False)] + [
            (f"{f}'s role", r, queue_id in redrivers.get(f, set())) for f, r in sorted(others.items())
        ]
        for name, principal, redrives in senders:
            denied = denies(deployment, statements, "sqs:SendMessage", Caller(principal_arn=principal))
            if redrives and denied:
                problems.append(f"{queue_id} denies {name}, which redrives its dead letters into it")
            if not redrives and not denied:
                problems.append(f"{name} could send forged envelopes to {queue_id}")
        for operator in operators:
            if denies(deployment, statements, "sqs:SendMessage", Caller(principal_arn=operator)):
                problems.append(f"{queue_id} denies the operator {operator}, who redrives its dead letters")
        source = subscribed.get(queue_id)
        if source is not None:
            delivery = Caller(service=SNS_SERVICE, source_arn={"Ref": source})
            if denies(deployment, statements, "sqs:SendMessage", delivery) or not allows(
                deployment, statements, "sqs:SendMessage", delivery
            ):
                problems.append(f"{source} cannot deliver to {queue_id}, which it is subscribed to")
        elif not statements:
            problems.append(f"{queue_id} ({arn}) has no policy: any principal of the account may send to it")
    return problems


def secret_key_problems(deployment: Deployment) -> list[str]:
    """Functions that read secrets may decrypt with exactly the secrets' customer managed keys
    (``SecretKmsKeyArns``), only through Secrets Manager; with none given, no function holds any
    KMS grant."""
    problems = []
    keys = {"Ref": "SecretKmsKeyArns"}
    given = bool(_list_parameter(deployment, "SecretKmsKeyArns"))
    for function_id in sorted(deployment.functions):
        reads_secrets = any(
            name.endswith("_SECRET_ARN") and not is_empty(deployment, value)
            for name, value in deployment.environment(function_id).items()
        )
        kms = [
            s
            for s in deployment.role_statements(function_id)
            if s.get("Effect") == "Allow" and any(str(a).startswith("kms:") for a in as_list(s.get("Action")))
        ]
        for statement in kms:
            via = statement.get("Condition", {}).get("StringEquals", {}).get("kms:ViaService")
            if as_list(statement.get("Action")) != ["kms:Decrypt"] or statement.get("Resource") != keys:
                problems.append(f"{function_id} may use KMS beyond decrypting with SecretKmsKeyArns")
            if not (isinstance(via, dict) and "secretsmanager." in str(via.get("Fn::Sub", ""))):
                problems.append(f"{function_id} may decrypt with the secrets' keys outside Secrets Manager")
        if given and reads_secrets and not kms:
            problems.append(f"{function_id} reads secrets but may not decrypt them with SecretKmsKeyArns")
        if kms and not (given and reads_secrets):
            problems.append(f"{function_id} holds a KMS grant it does not need")
    return problems


def database_user_problems(deployment: Deployment) -> list[str]:
    """Every function but the schema migrator connects as the application user: another secret than
    the migrator's, which its role may not read either."""
    migrators = [f for f in deployment.functions if deployment.custom_resources_of(f)]
    master = [deployment.environment(f).get("DB_SECRET_ARN") for f in migrators]
    problems = []
    for function_id in sorted(deployment.functions):
        if function_id in migrators or not deployment.uses_database(function_id):
            continue
        secret = deployment.environment(function_id).get("DB_SECRET_ARN")
        if any(same(secret, m) for m in master) or secret in (None, ""):
            problems.append(f"{function_id} connects with the schema migrator's credentials")
        readable = [
            s.get("Resource")
            for s in deployment.role_statements(function_id)
            if "secretsmanager:GetSecretValue" in as_list(s.get("Action", []))
        ]
        if any(same(r, m) for r in readable for m in master):
            problems.append(f"{function_id}'s role may read the schema migrator's credentials")
    return problems


#: Sample path parameters for the routes' resource ARNs.
_PATH_PARAMETER = re.compile(r"\{[^}]+\}")
ANONYMOUS = Caller()


def api_routes(deployment: Deployment, api_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(METHOD, path) -> the operation, of the API's definition in this deployment."""
    body = deployment.properties(api_id).get("Body", {})
    return {
        (method.upper(), path): operation
        for path, methods in body.get("paths", {}).items()
        for method, operation in methods.items()
        if isinstance(operation, dict)
    }


def route_security(deployment: Deployment, api_id: str, operation: dict[str, Any]) -> dict[str, Any] | None:
    """The security scheme a route demands (its definition), or None for an open route."""
    names = [name for entry in operation.get("security", []) for name in entry]
    if not names:
        return None
    schemes = deployment.properties(api_id).get("Body", {}).get("components", {}).get("securitySchemes", {})
    scheme: dict[str, Any] = schemes.get(names[0], {"missing": names[0]})
    return scheme


def reaches(deployment: Deployment, statements: list[Any], caller: Caller, arn: str) -> bool:
    """The API's resource policy lets the caller invoke the route ``arn`` (an explicit Allow, no Deny)."""
    return allows(deployment, statements, "execute-api:Invoke", caller, arn) and not denies(
        deployment, statements, "execute-api:Invoke", caller, arn
    )


def caller_problems(deployment: Deployment) -> list[str]:
    """Who may reach each route of each API: the route's authorizer, and the API's resource policy
    evaluated for the principals the parameters name, one they do not name, and an anonymous caller."""
    problems = []
    mode = deployment.parameters.get("CallerIdentity", "iam")
    callers = _list_parameter(deployment, "OrderCallerPrincipalArns")
    operators = _list_parameter(deployment, "OperatorPrincipalArns")
    pool = (
        {"Ref": "CognitoUserPoolArn"}
        if deployment.parameters.get("CognitoUserPoolArn")
        else {"Fn::GetAtt": ["OrderUserPool", "Arn"]}
    )
    for api_id in sorted(deployment.of_type("AWS::ApiGateway::RestApi")):
        policy = deployment.properties(api_id).get("Body", {}).get("x-amazon-apigateway-policy", {})
        statements = as_list(policy.get("Statement", []))
        if not statements:
            problems.append(f"{api_id} has no resource policy: any principal's IAM policy decides alone")
        for (method, path), operation in sorted(api_routes(deployment, api_id).items()):
            route = f"{method} {path}"
            stage = deployment.parameters.get("Stage", "dev")
            arn = f"execute-api:/{stage}/{method}{_PATH_PARAMETER.sub('1', path)}"
            scheme = route_security(deployment, api_id, operation)
            authtype = None if scheme is None else scheme.get("x-amazon-apigateway-authtype")

            if path.startswith("/admin/"):
                named, unnamed = operators, [OUTSIDER, *[c for c in callers if c not in operators]]
                wanted = "awsSigv4"
            elif path.startswith("/orders") and mode == "iam":
                named, unnamed = callers, [OUTSIDER, *[o for o in operators if o not in callers]]
                wanted = "awsSigv4"
            elif path.startswith("/orders"):
                named, unnamed, wanted = [OUTSIDER], [], "cognito_user_pools"
                providers = (scheme or {}).get("x-amazon-apigateway-authorizer", {}).get("providerARNs", [])
                if not any(same(p, pool) for p in providers):
                    problems.append(f"{route} accepts tokens of {providers}, not of the user pool {pool}")
            else:
                # The callback: open to the provider (its signature decides), IAM callers or none.
                if scheme is not None or not reaches(deployment, statements, ANONYMOUS, arn):
                    problems.append(f"{route} is no longer open to the payment provider")
                continue
            if authtype != wanted:
                problems.append(f"{route} is authorised by {authtype}, not {wanted} (CallerIdentity={mode})")
            if path.startswith("/orders"):
                problems += _function_knows_its_callers(deployment, route, operation)
            for principal in named:
                if not reaches(deployment, statements, Caller(principal_arn=principal), arn):
                    problems.append(f"{route} refuses {principal}, whom the parameters name")
            for principal in unnamed:
                if reaches(deployment, statements, Caller(principal_arn=principal), arn):
                    problems.append(f"{route} lets {principal} through, whom no parameter names")
    return problems


#: What the function behind an order route must be told, so it binds the caller as the authorizer did.
CALLER_SETTINGS = {"CALLER_IDENTITY": "CallerIdentity", "CALLER_USER_CLAIM": "CognitoUserIdClaim"}


def _function_knows_its_callers(deployment: Deployment, route: str, operation: dict[str, Any]) -> list[str]:
    """The function an order route invokes reads the same CallerIdentity (and user claim) the route's
    authorizer is chosen by: a cognito route whose function believed iam would let any user act for all."""
    target = next(iter(referenced(operation.get("x-amazon-apigateway-integration", {}).get("uri"))), None)
    if target is None or target not in deployment.functions:
        return [f"{route} invokes no function of the stack"]
    environment = deployment.environment(target)
    return [
        f"{route}: {target} is not told {variable} from {parameter}"
        for variable, parameter in CALLER_SETTINGS.items()
        if environment.get(variable) != {"Ref": parameter}
    ]


def callback_problems(deployment: Deployment) -> list[str]:
    """The open callback is fenced: a method throttle of its own on every stage, and with
    ``CallbackFirewall`` a web ACL on the stage that rate-limits callbacks by source address and, given
    ``CallbackProviderCidrs``, blocks callbacks from any other address."""
    problems = []
    for stage_id in sorted(deployment.of_type("AWS::ApiGateway::Stage")):
        settings = deployment.properties(stage_id).get("MethodSettings", [])
        own = [
            s
            for s in settings
            if (s.get("ResourcePath"), s.get("HttpMethod")) == ("/~1payments~1notify", "POST")
            and s.get("ThrottlingRateLimit") == {"Ref": "CallbackThrottlingRateLimit"}
            and s.get("ThrottlingBurstLimit") == {"Ref": "CallbackThrottlingBurstLimit"}
        ]
        if not own:
            problems.append(f"{stage_id}: POST /payments/notify has no throttle of its own")
    acls = deployment.of_type("AWS::WAFv2::WebACL")
    wanted = deployment.parameters.get("CallbackFirewall") == "true"
    if not wanted:
        if acls:
            problems.append(f"CallbackFirewall is off but the stack creates {sorted(acls)}")
        return problems
    associated = [
        deployment.properties(a)
        for a in deployment.of_type("AWS::WAFv2::WebACLAssociation")
        if referenced_once(deployment.properties(a).get("WebACLArn")) in acls
    ]
    stages = set(deployment.of_type("AWS::ApiGateway::Stage"))
    if not any(
        {"PaymentApi"} <= set(referenced(a.get("ResourceArn")))
        or stages & set(referenced(a.get("ResourceArn")))
        for a in associated
    ):
        problems.append("no web ACL is associated with the API's stage")
    logged = {
        referenced_once(deployment.properties(c).get("ResourceArn"))
        for c in deployment.of_type("AWS::WAFv2::LoggingConfiguration")
    }
    problems += [f"{acl}'s decisions are not logged" for acl in sorted(acls) if acl not in logged]
    rules = [r for acl in acls for r in deployment.properties(acl).get("Rules", [])]
    rate = [
        r
        for r in rules
        if "Block" in r.get("Action", {})
        and r.get("Statement", {}).get("RateBasedStatement", {}).get("Limit")
        == {"Ref": "CallbackFirewallRateLimit"}
        and _matches_callback(r["Statement"]["RateBasedStatement"].get("ScopeDownStatement", {}))
    ]
    if not rate:
        problems.append("the web ACL has no rate-based rule blocking a flood of callbacks")
    cidrs = _list_parameter(deployment, "CallbackProviderCidrs")
    sets = deployment.of_type("AWS::WAFv2::IPSet")
    fenced = [
        r
        for r in rules
        if "Block" in r.get("Action", {})
        and _matches_callback(r.get("Statement", {}))
        and any(
            referenced_once(n.get("Statement", {}).get("IPSetReferenceStatement", {}).get("Arn")) in sets
            and deployment.properties(
                str(referenced_once(n["Statement"]["IPSetReferenceStatement"]["Arn"]))
            ).get("Addresses")
            == {"Ref": "CallbackProviderCidrs"}
            for n in _statements_within(r.get("Statement", {}))
            if "Statement" in n
        )
    ]
    if cidrs and not fenced:
        problems.append("callbacks from addresses outside CallbackProviderCidrs are not blocked")
    if not cidrs and (fenced or sets):
        problems.append("with no CallbackProviderCidrs given, an address list still fences the callback")
    return problems


def _statements_within(statement: dict[str, Any]) -> list[dict[str, Any]]:
    """A WAF statement's direct parts (an AND's statements, a NOT's statement), itself included."""
    found = [statement]
    for nested in ("AndStatement", "OrStatement"):
        found += statement.get(nested, {}).get("Statements", [])
    return found + [s.get("NotStatement", {}) for s in list(found) if "NotStatement" in s]


def _matches_callback(statement: dict[str, Any]) -> bool:
    """The statement (or one of an AND's parts) matches requests to the callback's path."""
    for part in _statements_within(statement):
        match = part.get("ByteMatchStatement", {})
        if "UriPath" in match.get("FieldToMatch", {}) and str(match.get("SearchString", "")).endswith(
            "/payments/notify"
        ):
            return True
    return False


def _redrive_targets(deployment: Deployment) -> dict[str, set[str]]:
    """Per function, the queues its DLQ redrive sends to: the values of its ``DEAD_LETTER_SOURCES``
    (``{"${Dlq}": "${Queue}", …}``, DLQ URL to queue URL)."""
    targets: dict[str, set[str]] = {}
    for function_id in deployment.functions:
        value = deployment.environment(function_id).get("DEAD_LETTER_SOURCES")
        text = value.get("Fn::Sub") if isinstance(value, dict) else None
        if isinstance(text, str):
            targets[function_id] = set(re.findall(r':\s*"\$\{(\w+)\}"', text))
    return targets
