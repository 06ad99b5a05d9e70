"""A function's environment as template.yaml sets it, for the given parameter values (every other parameter at its
default): its Environment.Variables with the conditions and intrinsics resolved as CloudFormation would.

    python template_env.py TEMPLATE FUNCTION '{"Parameter": "value", ...}'

Prints one JSON object. A variable that resolves to AWS::NoValue is left out. A reference to one of the stack's own
resources is written `<LogicalId>` (`<LogicalId.Attribute>` for Fn::GetAtt): the caller puts its stand-in there.
Pseudo parameters are moto's account and region. An intrinsic this does not know fails loudly, naming it.
"""
import json
import re
import sys

from cfnlint.decode import decode

PSEUDO = {
    "AWS::AccountId": "123456789012",
    "AWS::Region": "us-east-1",
    "AWS::Partition": "aws",
    "AWS::StackName": "spot-cleanup",
    "AWS::URLSuffix": "amazonaws.com",
}
NO_VALUE = object()


def main():
    path, function, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    template, matches = decode(path)
    if matches or template is None:
        sys.exit(f"could not parse {path}: {matches}")
    parameters = {name: str(p.get("Default", "")) for name, p in template["Parameters"].items()}
    unknown = set(overrides) - set(parameters)
    if unknown:
        sys.exit(f"no such parameter in {path}: {sorted(unknown)}")
    parameters.update({k: str(v) for k, v in overrides.items()})
    conditions = template.get("Conditions", {})
    resources = template["Resources"]

    def condition(name):
        return truth(conditions[name])

    def truth(node):
        ((fn, args),) = node.items()
        if fn == "Fn::Equals":
            return value(args[0]) == value(args[1])
        if fn == "Fn::Not":
            return not truth(args[0])
        if fn == "Fn::And":
            return all(truth(a) for a in args)
        if fn == "Fn::Or":
            return any(truth(a) for a in args)
        if fn == "Condition":
            return condition(args)
        sys.exit(f"unsupported condition function {fn}")

    def ref(name):
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in PSEUDO:
            return PSEUDO[name]
        if name in parameters:
            return parameters[name]
        if name in resources:
            return f"<{name}>"
        sys.exit(f"Ref to unknown {name}")

    def sub(text, variables):
        def one(match):
            name = match.group(1)
            if name in variables:
                return str(value(variables[name]))
            if "." in name:
                return f"<{name}>"
            resolved = ref(name)
            if resolved is NO_VALUE:
                sys.exit(f"Fn::Sub of AWS::NoValue in {text!r}")
            return resolved

        return re.sub(r"\$\{([^}!]+)\}", one, text)

    def value(node):
        if isinstance(node, (str, int, float, bool)):
            return str(node).lower() if isinstance(node, bool) else str(node)
        if isinstance(node, dict) and len(node) == 1:
            ((fn, args),) = node.items()
            if fn == "Ref":
                return ref(args)
            if fn == "Fn::If":
                name, then, otherwise = args
                return value(then if condition(name) else otherwise)
            if fn == "Fn::Sub":
                return sub(args, {}) if isinstance(args, str) else sub(args[0], args[1])
            if fn == "Fn::GetAtt":
                logical, attribute = args if isinstance(args, list) else args.split(".", 1)
                return f"<{logical}.{attribute}>"
            if fn == "Fn::Join":
                parts = [value(p) for p in args[1]]
                return args[0].join(p for p in parts if p is not NO_VALUE)
        sys.exit(f"unsupported value {json.dumps(node)}")

    variables = resources[function]["Properties"]["Environment"]["Variables"]
    env = {}
    for name, node in variables.items():
        resolved = value(node)
        if resolved is not NO_VALUE:
            env[name] = resolved
    print(json.dumps(env, sort_keys=True))


if __name__ == "__main__":
    main()
