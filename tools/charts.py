"""Render, lint and validate the OncoStruct Helm chart, offline.

The chart is rendered with the Helm SDK embedded in ``helm-python-sdk``
(import name ``helm_python``), linted with Helm's own linter, and every
rendered object is validated against the Kubernetes OpenAPI schemas shipped
in ``kubernetes-validate`` (strict: unknown fields are errors). Nothing
contacts a cluster or the network. The values files are checked too: every
key needs a ``## @param`` line (Bitnami's readme-generator convention).

Usage::

    python tools/charts.py                                  # defaults
    python tools/charts.py --values my.yaml --set ingress.tls=true
    python tools/charts.py --output build/manifests         # also write them

Exit status: 0 when every check passes, 1 when one fails (the problems are
printed on stderr), 2 for bad command-line input.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import helm_python
import kubernetes_validate
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHART = REPO_ROOT / "charts" / "oncostruct"
DEFAULT_RELEASE = "oncostruct"
DEFAULT_NAMESPACE = "oncostruct"
#: Oldest Kubernetes minor the chart supports (Chart.yaml kubeVersion is >=1.27;
#: kubernetes-validate ships schemas from 1.25 on).
DEFAULT_KUBE_VERSION = "1.30.0"

#: Helm lint severities (helm_python.lint): 1 info, 2 warning, 3 error.
_LINT_WARNING = 2

_DOC_LINE = re.compile(r"^\s*##\s*@(param|skip|extra)\s+(\S+)(?:\s+(.*))?$")


class ChartCheckError(Exception):
    """A check failed; ``problems`` lists every finding in readable form."""

    def __init__(self, stage: str, problems: Sequence[str]) -> None:
        self.stage = stage
        self.problems = list(problems)
        super().__init__(f"{stage}: " + "; ".join(self.problems))


@dataclass(frozen=True)
class Manifest:
    """One rendered Kubernetes object and the template it came from."""

    source: str
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        """The object's kind, e.g. ``Deployment``."""
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        """The object's ``metadata.name``."""
        metadata = self.obj.get("metadata") or {}
        return str(metadata.get("name", ""))

    @property
    def ident(self) -> str:
        """``Kind/name``, as used in messages."""
        return f"{self.kind}/{self.name}"


@dataclass
class CheckReport:
    """What a full check produced."""

    rendered: dict[str, str] = field(default_factory=dict)
    manifests: list[Manifest] = field(default_factory=list)
    lint_messages: list[str] = field(default_factory=list)


# --- values ---------------------------------------------------------------


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base`` the way Helm merges values files.

    Mappings merge key by key; any other value (lists included) is replaced.
    A ``None`` in ``override`` is kept, so Helm can delete that default.
    """
    merged: dict[str, Any] = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def load_values_file(path: Path) -> dict[str, Any]:
    """Read a values file (``--values``); it must hold a YAML mapping.

    Raises
    ------
    ChartCheckError
        If the file is unreadable, not YAML, or not a mapping.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ChartCheckError("values", [f"{path}: cannot read: {exc.strerror}"]) from exc
    except yaml.YAMLError as exc:
        raise ChartCheckError("values", [f"{path}: not valid YAML: {exc}"]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ChartCheckError("values", [f"{path}: must hold a mapping, not {type(data).__name__}"])
    return data


def parse_set(expression: str) -> dict[str, Any]:
    """Parse one ``--set`` expression (``a.b=1,c={x,y}``) with Helm's own parser.

    Raises
    ------
    ChartCheckError
        If Helm rejects the expression or it sets nothing.
    """
    try:
        parsed = helm_python.parse_set_string(expression)
    except helm_python.HelmError as exc:
        raise ChartCheckError("values", [f"--set {expression!r}: {exc.detail}"]) from exc
    if not parsed:
        # Helm's parser quietly drops some malformed expressions (``a.b[=1``).
        raise ChartCheckError("values", [f"--set {expression!r} sets no value"])
    return parsed


def user_values(values_files: Iterable[Path] = (), set_expressions: Iterable[str] = ()) -> dict[str, Any]:
    """Combine ``--values`` files, then ``--set`` expressions, in order (later wins)."""
    values: dict[str, Any] = {}
    for path in values_files:
        values = deep_merge(values, load_values_file(path))
    for expression in set_expressions:
        values = deep_merge(values, parse_set(expression))
    return values


# --- rendering ------------------------------------------------------------


def render(
    chart_dir: Path = DEFAULT_CHART,
    values: Mapping[str, Any] | None = None,
    *,
    release: str = DEFAULT_RELEASE,
    namespace: str = DEFAULT_NAMESPACE,
) -> dict[str, str]:
    """Render the chart offline; returns template path -> rendered text.

    Values are validated against the charts' ``values.schema.json`` and the
    charts' ``validateValues`` helpers run, so bad values fail here.

    Raises
    ------
    ChartCheckError
        If the chart cannot be loaded, the values break a schema, or a
        template fails (including a ``fail`` from ``validateValues``).
    """
    try:
        helm_python.validate_release_name(release)
    except helm_python.HelmError as exc:
        raise ChartCheckError("render", [f"release name {release!r}: {exc.detail}"]) from exc
    try:
        # A fresh load per render: rendering drops disabled subcharts from the
        # loaded chart in place, so a reused Chart would forget them.
        with helm_python.Chart.load(chart_dir) as chart:
            merged = chart.merge_values(dict(values or {}))
            return chart.render(merged, name=release, namespace=namespace, is_install=True)
    except helm_python.HelmError as exc:
        raise ChartCheckError("render", [_clean_helm_message(exc.detail)]) from exc


def _clean_helm_message(detail: str) -> str:
    """Drop the blank lines and trailing spaces around ``validateValues`` messages."""
    lines = (line.rstrip() for line in detail.splitlines())
    return "\n".join(line for line in lines if line)


def parse_manifests(rendered: Mapping[str, str]) -> list[Manifest]:
    """Split rendered templates into objects; skips NOTES.txt and empty documents.

    Raises
    ------
    ChartCheckError
        If a template renders invalid YAML or a document that is not an object.
    """
    manifests: list[Manifest] = []
    problems: list[str] = []
    for source in sorted(rendered):
        if PurePosixPath(source).suffix not in {".yaml", ".yml"}:
            continue
        try:
            documents = list(yaml.safe_load_all(rendered[source]))
        except yaml.YAMLError as exc:
            problems.append(f"{source}: rendered YAML does not parse: {exc}")
            continue
        for document in documents:
            if document is None:
                continue
            if not isinstance(document, dict) or "kind" not in document or "apiVersion" not in document:
                problems.append(f"{source}: a rendered document is not a Kubernetes object")
                continue
            manifests.append(Manifest(source, document))
    if problems:
        raise ChartCheckError("render", problems)
    return manifests


def write_manifests(rendered: Mapping[str, str], output_dir: Path) -> list[Path]:
    """Write each rendered template under ``output_dir`` (like ``helm template --output-dir``).

    Templates that render to nothing are skipped; returns the written paths.
    """
    written: list[Path] = []
    root = output_dir.resolve()
    for source, text in sorted(rendered.items()):
        if not text.strip():
            continue
        target = (root / source).resolve()
        if not target.is_relative_to(root):
            raise ChartCheckError("output", [f"{source}: template path leaves {output_dir}"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        written.append(target)
    return written


# --- checks ---------------------------------------------------------------


def validate_manifests(manifests: Sequence[Manifest], kube_version: str = DEFAULT_KUBE_VERSION) -> list[str]:
    """Validate objects against Kubernetes' schemas (strict); returns the problems.

    Also reports objects rendered twice (same apiVersion, kind and name).
    """
    problems: list[str] = []
    seen: dict[tuple[str, str, str], str] = {}
    for manifest in manifests:
        key = (str(manifest.obj.get("apiVersion")), manifest.kind, manifest.name)
        if key in seen:
            problems.append(f"{manifest.source}: {manifest.ident} is also rendered by {seen[key]}")
        seen[key] = manifest.source
        try:
            kubernetes_validate.validate(manifest.obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(part) for part in exc.path) or "(object)"
            problems.append(f"{manifest.source}: {manifest.ident}: {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{manifest.source}: {manifest.ident}: {exc.message}")
    return problems


def lint(
    chart_dir: Path = DEFAULT_CHART,
    values: Mapping[str, Any] | None = None,
    *,
    kube_version: str = DEFAULT_KUBE_VERSION,
    namespace: str = DEFAULT_NAMESPACE,
) -> tuple[list[str], list[str]]:
    """Run Helm's linter (strict) on the chart with ``values`` and on each subchart alone.

    Returns
    -------
    tuple[list[str], list[str]]
        The problems (warnings and errors) and the informational messages.
    """
    problems: list[str] = []
    infos: list[str] = []
    targets: list[tuple[Path, dict[str, Any] | None]] = [(chart_dir, dict(values or {}))]
    subcharts = chart_dir / "charts"
    if subcharts.is_dir():
        targets += [(path, None) for path in sorted(subcharts.iterdir()) if (path / "Chart.yaml").is_file()]
    for path, chart_values in targets:
        label = path.relative_to(chart_dir.parent)
        report = helm_python.lint(
            path, chart_values, strict=True, namespace=namespace, kube_version=f"v{kube_version.lstrip('v')}"
        )
        for message in report.get("messages", []):
            text = f"{label}/{message.get('path', '')}: {str(message.get('error', '')).strip()}"
            (problems if int(message.get("severity", 0)) >= _LINT_WARNING else infos).append(text)
        for error in report.get("errors", []):
            text = f"{label}: {str(error).strip()}"
            if text not in problems and not any(str(error).strip() in known for known in problems):
                problems.append(text)
    return problems, infos


def _values_leaves(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Paths of the values a user sets: scalars, lists and empty mappings."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _values_leaves(value, (*prefix, str(key)))
    elif prefix:
        yield prefix


def _values_nodes(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Paths of every key, mappings included."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = (*prefix, str(key))
            yield path
            yield from _values_nodes(value, path)


def values_doc_problems(values_path: Path) -> list[str]:
    """Check one values.yaml against its ``## @param`` documentation.

    Every key must be documented by ``## @param <dotted.path> <description>``
    on itself or on a parent mapping (or skipped with ``## @skip <path>``);
    every ``@param`` must name a key that exists (``## @extra`` documents one
    that is deliberately absent) and carry a description.
    """
    text = values_path.read_text(encoding="utf-8")
    problems: list[str] = []
    documented: dict[str, int] = {}
    skipped: set[str] = set()
    extra: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        match = _DOC_LINE.match(line)
        if not match:
            continue
        tag, path, description = match.group(1), match.group(2), (match.group(3) or "").strip()
        if tag == "skip":
            skipped.add(path)
            continue
        if not description:
            problems.append(f"{values_path}:{number}: @{tag} {path} has no description")
        if path in documented:
            problems.append(
                f"{values_path}:{number}: @{tag} {path} is documented twice (first on line {documented[path]})"
            )
        documented[path] = number
        if tag == "extra":
            extra.add(path)
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        return [f"{values_path}: not valid YAML: {exc}"]
    covered = set(documented) | skipped
    for leaf in _values_leaves(values):
        if not any(".".join(leaf[:end]) in covered for end in range(1, len(leaf) + 1)):
            problems.append(f"{values_path}: {'.'.join(leaf)} has no '## @param {'.'.join(leaf)} <description>' line")
    existing = {".".join(path) for path in _values_nodes(values)}
    for path, number in documented.items():
        if path not in existing and path not in extra:
            problems.append(f"{values_path}:{number}: @param {path} names no key in the file (use @extra if intended)")
    return problems


def lint_values_docs(chart_dir: Path = DEFAULT_CHART) -> list[str]:
    """Run :func:`values_doc_problems` on the chart's and every subchart's values.yaml."""
    problems: list[str] = []
    for values_path in sorted(chart_dir.glob("**/values.yaml")):
        problems += values_doc_problems(values_path)
    return problems


def check_chart(
    chart_dir: Path = DEFAULT_CHART,
    values: Mapping[str, Any] | None = None,
    *,
    release: str = DEFAULT_RELEASE,
    namespace: str = DEFAULT_NAMESPACE,
    kube_version: str = DEFAULT_KUBE_VERSION,
    skip_lint: bool = False,
) -> CheckReport:
    """Run every check: values docs, render, Kubernetes schemas, Helm lint.

    Raises
    ------
    ChartCheckError
        At the first stage with problems, listing all of that stage's findings.
    """
    report = CheckReport()
    doc_problems = lint_values_docs(chart_dir)
    if doc_problems:
        raise ChartCheckError("values documentation", doc_problems)
    report.rendered = render(chart_dir, values, release=release, namespace=namespace)
    report.manifests = parse_manifests(report.rendered)
    schema_problems = validate_manifests(report.manifests, kube_version)
    if schema_problems:
        raise ChartCheckError(f"Kubernetes {kube_version} schema validation", schema_problems)
    if not skip_lint:
        lint_problems, report.lint_messages = lint(chart_dir, values, kube_version=kube_version, namespace=namespace)
        if lint_problems:
            raise ChartCheckError("helm lint", lint_problems)
    return report


# --- command line ---------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="charts.py",
        description="Render the OncoStruct umbrella chart offline, lint it with Helm, and validate "
        "every manifest against the Kubernetes schemas (strict).",
    )
    parser.add_argument("--chart", type=Path, default=DEFAULT_CHART, help="chart folder (default: %(default)s)")
    parser.add_argument(
        "-f",
        "--values",
        dest="values_files",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="values file; repeatable, later files win",
    )
    parser.add_argument(
        "--set",
        dest="set_expressions",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Helm --set expression; repeatable, applied after the files",
    )
    parser.add_argument("--output", type=Path, metavar="DIR", help="write the rendered manifests under DIR")
    parser.add_argument("--release", default=DEFAULT_RELEASE, help="release name (default: %(default)s)")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="namespace (default: %(default)s)")
    parser.add_argument(
        "--kube-version",
        default=DEFAULT_KUBE_VERSION,
        help="Kubernetes version to validate against (default: %(default)s)",
    )
    parser.add_argument("--skip-lint", action="store_true", help="skip helm lint")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    parser.add_argument("-v", "--verbose", action="store_true", help="also print helm lint's informational messages")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _build_parser().parse_args(argv)
    chart_dir: Path = args.chart
    if not (chart_dir / "Chart.yaml").is_file():
        print(f"error: {chart_dir} is not a chart folder (no Chart.yaml)", file=sys.stderr)
        return 2
    try:
        values = user_values(args.values_files, args.set_expressions)
        report = check_chart(
            chart_dir,
            values,
            release=args.release,
            namespace=args.namespace,
            kube_version=args.kube_version,
            skip_lint=args.skip_lint,
        )
        written = write_manifests(report.rendered, args.output) if args.output else []
    except ChartCheckError as exc:
        print(f"FAILED {exc.stage}:", file=sys.stderr)
        for problem in exc.problems:
            print("  - " + problem.replace("\n", "\n    "), file=sys.stderr)
        return 1
    if not args.quiet:
        kinds: dict[str, int] = {}
        for manifest in report.manifests:
            kinds[manifest.kind] = kinds.get(manifest.kind, 0) + 1
        summary = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
        print(f"OK {chart_dir}: {len(report.manifests)} objects ({summary})")
        print(f"   valid against Kubernetes {args.kube_version} (strict); values documented; ", end="")
        print("helm lint skipped" if args.skip_lint else "helm lint clean")
        for message in report.lint_messages if args.verbose else []:
            print(f"   lint info: {message}")
        if written:
            print(f"   wrote {len(written)} files under {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
