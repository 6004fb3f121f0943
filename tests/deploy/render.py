"""Render deploy/kuberay's kustomize overlays in Python, and validate resources against CRD schemas.

Why a renderer here: `kustomize` (or `kubectl kustomize`) is not guaranteed on a CI machine, and the
overlays only use two kustomize features — `resources` (files and directories with a kustomization.yaml)
and `patches` whose file is a JSON6902 operation list with a `target` (group/version/kind/name). Those are
rendered with the `jsonpatch` library; anything else in a kustomization is refused, so an overlay that grows
a feature this renderer lacks fails loudly instead of rendering wrong. Where kubectl exists the tests also
compare this output with `kubectl kustomize` (tests/deploy/test_kuberay.py).

Why a strictness walk beside jsonschema: CRD schemas leave `additionalProperties` unset (the API server
prunes unknown fields instead of refusing them), so plain jsonschema accepts a misspelt field such as
`shutdownAfterJobFinish`. `unknown_fields` reports every field the schema does not declare, as
`kubectl apply --validate=strict` would.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterator

import jsonpatch
import jsonschema
import yaml

Resource = dict[str, Any]
SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "patches"}


def load_yaml_documents(path: Path) -> list[Resource]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRD files are ~1 MB: the C loader is 10x faster
    return [doc for doc in yaml.load_all(path.read_text(), Loader=loader) if doc]


def render(directory: Path) -> list[Resource]:
    """The resources a kustomization directory produces, in kustomize's order (resources, then patches)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - SUPPORTED_KEYS
    if unsupported:
        raise ValueError(f"{directory}/kustomization.yaml: {sorted(unsupported)} not supported by tests/deploy/render.py")
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        resources += render(path) if path.is_dir() else load_yaml_documents(path)
    for patch in kustomization.get("patches", []):
        operations = yaml.safe_load((directory / patch["path"]).read_text())
        if not isinstance(operations, list):
            raise ValueError(f"{directory / patch['path']}: only JSON6902 patches (a list of operations) are supported")
        matched = [i for i, r in enumerate(resources) if _matches(r, patch["target"])]
        if not matched:
            raise ValueError(f"{directory}/kustomization.yaml: patch {patch['path']} matches no resource ({patch['target']})")
        for i in matched:
            resources[i] = jsonpatch.apply_patch(resources[i], operations)
    return copy.deepcopy(resources)


def _matches(resource: Resource, target: dict[str, str]) -> bool:
    group, _, version = resource["apiVersion"].rpartition("/")
    actual = {"group": group, "version": version, "kind": resource["kind"], "name": resource["metadata"]["name"]}
    return all(actual[key] == value for key, value in target.items())


def crd_schema(crd: Resource, version: str) -> dict[str, Any]:
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return served["schema"]["openAPIV3Schema"]


def schema_errors(resource: Resource, schema: dict[str, Any]) -> list[str]:
    """jsonschema's errors plus undeclared fields, each as 'path: message'."""
    validator = jsonschema.Draft7Validator(schema)  # OpenAPI v3's schema subset is draft-4/7 compatible
    errors = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(resource)]
    return errors + [f"{path}: unknown field (not in the CRD schema)" for path in unknown_fields(resource, schema)]


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> Iterator[str]:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, child in value.items():
            where = f"{path}.{key}" if path else key
            if properties is not None and key in properties:
                yield from unknown_fields(child, properties[key], where)
            elif isinstance(extra, dict):
                yield from unknown_fields(child, extra, where)
            elif properties is not None and not extra and path != "metadata":
                yield where
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, child in enumerate(value):
            yield from unknown_fields(child, schema["items"], f"{path}[{i}]")
