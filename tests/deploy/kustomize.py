"""A small kustomize for the tests: builds deploy/kubernetes kustomizations without the binary.

It understands exactly the features the kustomizations use, and refuses any other key, so a
kustomization cannot quietly grow beyond what the tests see:

- `resources` (files, each of one or more YAML documents, and directories holding a
  kustomization, built recursively);
- `configMapGenerator` and `secretGenerator` (`envs`, `literals`, `files`; `behavior` create,
  merge or replace; a Secret's `type`; `options` with `labels` and `disableNameSuffixHash`, the
  latter recorded in `unhashed` since no names are hashed here anyway);
- `patches` as strategic merges (a `path` or an inline `patch`, with an optional `target` by
  kind and name); lists of objects with a `name` merge by name, as Kubernetes' do for
  containers, env, volumes and ports;
- `images` (`newName`, `newTag`, `digest`) on containers and init containers;
- `namespace`, set on every namespaced object.

Unlike kustomize it adds no content hash to generated names (so references need no rewriting);
secret files that are absent (they are never committed) are recorded in `missing_files` and
stand in as an empty value.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
PRODUCTION = KUBERNETES / "overlays" / "production"
MIGRATE_JOB = "cmh-migrate"

SUPPORTED_KEYS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "configMapGenerator",
    "secretGenerator",
    "patches",
    "images",
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


class KustomizeError(Exception):
    pass


@dataclass
class Build:
    root: Path | None = None  # the kustomization directory built
    objects: list[dict[str, Any]] = field(default_factory=list)
    files_read: list[Path] = field(default_factory=list)
    missing_files: list[Path] = field(default_factory=list)
    unhashed: set[tuple[str, str]] = field(default_factory=set)  # (kind, name) with no name hash

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name]
        if len(found) != 1:
            raise KeyError(f"{kind}/{name}: {len(found)} found")
        return found[0]


def build(directory: Path) -> Build:
    result = Build(root=directory.resolve())
    _build(directory.resolve(), result)
    return result


def _load(path: Path, result: Build) -> Any:
    if not path.is_file():
        raise KustomizeError(f"{path} does not exist")
    result.files_read.append(path)
    return path.read_text()


def _build(directory: Path, result: Build) -> None:
    kustomization: dict[str, Any] = yaml.safe_load(_load(directory / "kustomization.yaml", result))
    unknown = set(kustomization) - SUPPORTED_KEYS
    if unknown:
        raise KustomizeError(f"{directory}: unsupported kustomization keys {sorted(unknown)}")
    if kustomization.get("kind") != "Kustomization":
        raise KustomizeError(f"{directory}: not a Kustomization")

    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            inner = Build()
            _build(path, inner)
            result.files_read += inner.files_read
            result.missing_files += inner.missing_files
            result.unhashed |= inner.unhashed
            objects += inner.objects
        else:
            objects += [doc for doc in yaml.safe_load_all(_load(path, result)) if doc is not None]

    for generator in kustomization.get("configMapGenerator", []):
        _generate(objects, "ConfigMap", generator, directory, result)
    for generator in kustomization.get("secretGenerator", []):
        _generate(objects, "Secret", generator, directory, result)
    for patch in kustomization.get("patches", []):
        _patch(objects, patch, directory, result)
    for image in kustomization.get("images", []):
        for obj in objects:
            _set_image(obj, image)
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
    result.objects = objects


def _key_values(lines: list[str], source: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise KustomizeError(f"{source}: {line!r} is not KEY=VALUE")
        key, value = line.split("=", 1)
        pairs[key.strip()] = value
    return pairs


def _generate(
    objects: list[dict[str, Any]], kind: str, generator: dict[str, Any], directory: Path, result: Build
) -> None:
    unknown = set(generator) - {"name", "behavior", "envs", "literals", "files", "type", "options"}
    if unknown or ("type" in generator and kind != "Secret"):
        raise KustomizeError(f"{kind} generator {generator.get('name')}: unsupported {sorted(unknown)}")
    options = generator.get("options", {})
    unknown = set(options) - {"labels", "disableNameSuffixHash"}
    if unknown:
        raise KustomizeError(
            f"{kind} generator {generator.get('name')}: unsupported options {sorted(unknown)}"
        )
    data: dict[str, str] = {}
    for env_file in generator.get("envs", []):
        data |= _key_values(_load(directory / env_file, result).splitlines(), env_file)
    data |= _key_values(generator.get("literals", []), "literals")
    for entry in generator.get("files", []):
        key, _, relative = entry.rpartition("=")
        path = directory / relative
        key = key or path.name
        if path.is_file():
            data[key] = _load(path, result)
        else:
            result.missing_files.append(path)
            data[key] = ""
    if kind == "Secret":
        data = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}

    name = generator["name"]
    behavior = generator.get("behavior", "create")
    existing = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    if behavior == "create":
        if existing:
            raise KustomizeError(f"{kind}/{name} is generated twice")
        generated: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": {"name": name},
            "data": data,
        }
        if options.get("labels"):
            generated["metadata"]["labels"] = dict(options["labels"])
        if kind == "Secret":
            generated["type"] = generator.get("type", "Opaque")
        if options.get("disableNameSuffixHash"):
            result.unhashed.add((kind, name))
        objects.append(generated)
    elif behavior in ("merge", "replace"):
        if len(existing) != 1:
            raise KustomizeError(f"{kind}/{name}: nothing to {behavior}")
        existing[0]["data"] = (existing[0].get("data", {}) | data) if behavior == "merge" else data
    else:
        raise KustomizeError(f"{kind}/{name}: unknown behavior {behavior!r}")


def strategic_merge(base: Any, patch: Any) -> Any:
    """A strategic merge patch, as far as these manifests need: maps merge key by key (`null`
    deletes), lists whose items all have a `name` merge item by item, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        merged_list = list(base)
        for item in patch:
            index = next((i for i, old in enumerate(merged_list) if old["name"] == item["name"]), None)
            if index is None:
                merged_list.append(copy.deepcopy(item))
            else:
                merged_list[index] = strategic_merge(merged_list[index], item)
        return merged_list
    return copy.deepcopy(patch)


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(item, dict) and "name" in item for item in items)


def _patch(objects: list[dict[str, Any]], entry: dict[str, Any], directory: Path, result: Build) -> None:
    unknown = set(entry) - {"path", "patch", "target"}
    if unknown:
        raise KustomizeError(f"patch: unsupported {sorted(unknown)}")
    text = _load(directory / entry["path"], result) if "path" in entry else entry["patch"]
    patch = yaml.safe_load(text)
    if not isinstance(patch, dict) or "kind" not in patch:
        raise KustomizeError("only strategic merge patches (whole objects) are supported")
    target = entry.get("target")
    if target is not None:
        unknown = set(target) - {"kind", "name"}
        if unknown:
            raise KustomizeError(f"patch target: unsupported {sorted(unknown)}")
        kind, name = target.get("kind"), target.get("name")
        # The target chooses the objects; the patch's own name is only a placeholder.
        patch = {**patch, "metadata": {k: v for k, v in patch.get("metadata", {}).items() if k != "name"}}
    else:
        kind, name = patch["kind"], patch["metadata"]["name"]
    matched = [
        i
        for i, obj in enumerate(objects)
        if (kind is None or obj["kind"] == kind) and (name is None or obj["metadata"]["name"] == name)
    ]
    if not matched:
        raise KustomizeError(f"patch matches nothing: {kind}/{name}")
    for i in matched:
        objects[i] = strategic_merge(objects[i], patch)


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(obj)
    if spec is None:
        return []
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def split_image(image: str) -> tuple[str, str | None]:
    """(name, tag) of an image reference; a registry's port is not a tag."""
    name, _, _digest = image.partition("@")
    head, _, last = name.rpartition("/")
    if ":" in last:
        last, tag = last.split(":", 1)
        return (f"{head}/{last}" if head else last), tag
    return name, None


def _set_image(obj: dict[str, Any], image: dict[str, Any]) -> None:
    unknown = set(image) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise KustomizeError(f"images: unsupported {sorted(unknown)}")
    for container in containers(obj):
        name, tag = split_image(container["image"])
        if name != image["name"]:
            continue
        name = image.get("newName", name)
        tag = image.get("newTag", tag)
        reference = f"{name}:{tag}" if tag else name
        if "digest" in image:
            reference = f"{name}@{image['digest']}"
        container["image"] = reference
