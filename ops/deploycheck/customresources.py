"""Custom resources (the ha overlay's RabbitmqCluster, CloudNativePG Cluster,
KEDA ScaledObject, ...) against the operators' own CRDs, offline.

kubernetes-validate knows only the built-in kinds. The CRDs that the
operators publish are vendored, verbatim, in k8s/crds/<project>-<version>/
(k8s/crds/README.md: source and checksum of each). An object is checked as
the API server would on create:

- its structural schema (openAPIV3Schema of the served version), made strict
  the way `kubectl apply` treats unknown fields (fieldValidation=Strict): an
  object with `properties` and no `additionalProperties` or
  `x-kubernetes-preserve-unknown-fields` admits no other field; `nullable`
  admits null;
- its CEL rules (`x-kubernetes-validations`), evaluated with cel-python;
  transition rules (those that read `oldSelf`) only run on update and are
  skipped.

Webhook validation (the operators' admission webhooks) cannot run offline.
"""

from collections.abc import Iterator
from functools import cache
from pathlib import Path

import yaml

from .platforms import Platform
from .runner import Failed, fail_if

CRDS = Path("k8s/crds")


@cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """The schema of every served version of the vendored CRDs, by (apiVersion, kind)."""
    schemas = {}
    for path in sorted(CRDS.glob("*/*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                if version.get("served"):
                    api_version = f"{spec['group']}/{version['name']}"
                    schema = version["schema"]["openAPIV3Schema"]
                    schemas[(api_version, spec["names"]["kind"])] = schema
    return schemas


def is_custom(obj: dict) -> bool:
    return (obj.get("apiVersion"), obj.get("kind")) in crd_schemas()


def strict(schema: dict) -> dict:
    """The schema as a JSON Schema that refuses unknown fields and admits `nullable` nulls."""
    schema = dict(schema)
    for key in ("properties", "patternProperties"):
        if key in schema:
            schema[key] = {name: strict(sub) for name, sub in schema[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            schema[key] = strict(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            schema[key] = [strict(sub) for sub in schema[key]]
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        schema["additionalProperties"] = False
    if schema.get("nullable") and isinstance(schema.get("type"), str):
        schema["type"] = [schema["type"], "null"]
    return schema


def schema_problems(obj: dict, schema: dict) -> list[str]:
    """What the (strict) structural schema refuses in obj, one line per error."""
    from jsonschema import Draft7Validator

    # CRDs leave metadata to the API server (ObjectMeta); so does this.
    schema = strict(
        {**schema, "properties": {**schema["properties"], "metadata": {"type": "object"}}}
    )
    errors = Draft7Validator(schema).iter_errors(obj)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(errors, key=lambda e: list(map(str, e.absolute_path)))
    ]


def cel_rules(schema: dict, value, path: str = "") -> Iterator[tuple[str, str, str, object]]:
    """(path, rule, message, value) for every CEL rule that applies to a value present in obj."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path or "<root>", rule["rule"], rule.get("message", rule["rule"]), value
    if isinstance(value, dict):
        for name, sub in value.items():
            sub_schema = schema.get("properties", {}).get(name)
            if sub_schema is None and isinstance(schema.get("additionalProperties"), dict):
                sub_schema = schema["additionalProperties"]
            if sub_schema is not None:
                yield from cel_rules(sub_schema, sub, f"{path}.{name}" if path else name)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from cel_rules(schema["items"], item, f"{path}[{index}]")


def cel_problems(obj: dict, schema: dict) -> list[str]:
    """The CEL rules (x-kubernetes-validations) that obj breaks, as on create."""
    import celpy

    environment = celpy.Environment()
    problems = []
    for path, rule, message, value in cel_rules(schema, obj):
        if "oldSelf" in rule:
            continue  # a transition rule: evaluated on update only
        program = environment.program(environment.compile(rule))
        result = program.evaluate({"self": celpy.json_to_cel(value)})
        if not isinstance(result, celpy.celtypes.BoolType) or not result:
            problems.append(f"{path}: {message} (rule: {rule}; got {result!r})")
    return problems


def custom_resources_valid(k8s: Platform) -> None:
    """Every custom resource is valid against its operator's CRD (schema and CEL rules)."""
    problems = []
    for obj in k8s.objects:
        schema = crd_schemas().get((obj.get("apiVersion"), obj.get("kind")))
        if schema is None:
            continue
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        problems += [f"{where}: {p}" for p in schema_problems(obj, schema)]
        problems += [f"{where}: {p}" for p in cel_problems(obj, schema)]
    if not any(is_custom(o) for o in k8s.objects):
        raise Failed("no custom resource in this overlay: validate it with kubernetes-validate")
    fail_if(problems)


def built_in_objects(k8s: Platform) -> str:
    """The rendered objects that kubernetes-validate knows (all but the custom ones), as YAML."""
    return yaml.safe_dump_all([o for o in k8s.objects if not is_custom(o)], sort_keys=False)
