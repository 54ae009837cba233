"""``manage.py models list | pull NAME | verify [NAME...] | register NAME``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.ops.progress import StageBar
from apps.registry.models import ModelVersion
from apps.registry.selectors import model_spec_lookup
from apps.registry.services import RegistryError, model_version_promote, model_version_register, model_version_verify
from ml.pull import PullError, pull
from ml.sources import ChecksumMismatch, ModelNotInstalled, verify_checksum
from ml.specs import PACKS, InvalidSpec, ModelSpec, UnknownSpec, list_specs, load_spec


class Command(BaseCommand):
    help = "List, download, verify and register models (specs in ml/specs or registered model versions)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        list_parser = actions.add_parser("list", help="every packaged spec and registered version, with install state")
        list_parser.add_argument("--pack", choices=PACKS, help="only the specs of this pack")
        pull_parser = actions.add_parser("pull", help="download a model's weights and check their sha256")
        pull_parser.add_argument("name", help="a spec name, NAME@VERSION of a registered model, or use --spec")
        pull_parser.add_argument("--spec", type=Path, help="a spec JSON file instead of a name")
        pull_parser.add_argument("--force", action="store_true", help="download even when already installed")
        verify_parser = actions.add_parser("verify", help="recompute sha256 of installed weights (all by default)")
        verify_parser.add_argument("names", nargs="*")
        register_parser = actions.add_parser("register", help="create a ModelVersion from a spec")
        register_parser.add_argument("name", nargs="?", help="a spec name in ml/specs (or use --spec)")
        register_parser.add_argument("--spec", type=Path, help="a spec JSON file instead of a name")
        register_parser.add_argument("--promote", action="store_true", help="make it the champion of its name")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, f"_{options['action']}")(options)
        except (UnknownSpec, InvalidSpec, PullError, ChecksumMismatch, RegistryError) as error:
            raise CommandError(str(error)) from error

    def _spec(self, options: dict[str, Any]) -> ModelSpec:
        if options.get("spec"):
            try:
                return ModelSpec.from_dict(json.loads(Path(options["spec"]).read_text()))
            except (OSError, json.JSONDecodeError) as error:
                raise CommandError(f"cannot read spec {options['spec']}: {error}") from error
        if not options.get("name"):
            raise CommandError("name a model or pass --spec FILE")
        return model_spec_lookup(reference=options["name"])

    def _list(self, options: dict[str, Any]) -> None:
        registered = {(v.name, v.version): v for v in ModelVersion.objects.all()}
        specs = {(spec.name, spec.version): spec for spec in map(load_spec, list_specs(pack=options["pack"]))}
        if not options["pack"]:
            for key, version in registered.items():
                specs.setdefault(key, ModelSpec.from_dict(version.spec))
        self.stdout.write(f"{'model':44} {'family':22} {'pack':8} {'installed':10} {'registry':10} source")
        for key, spec in specs.items():
            listed = registered.get(key)
            self.stdout.write(
                f"{spec.name + '@' + spec.version:44} {spec.family:22} {spec.extra.get('pack', '-')!s:8} "
                f"{_install_state(spec):10} {listed.status if listed else '-':10} {spec.source}"
            )

    def _pull(self, options: dict[str, Any]) -> None:
        spec = self._spec(options)
        with StageBar() as bar:
            path = pull(
                spec, on_progress=lambda done, total: bar(f"{spec.name} bytes", done, total), force=options["force"]
            )
        verify_checksum(spec, path)
        self.stdout.write(f"{spec.name}@{spec.version} installed at {path} (sha256 verified)")

    def _verify(self, options: dict[str, Any]) -> None:
        names = options["names"] or [*list_specs(), *ModelVersion.objects.values_list("name", flat=True)]
        failures = 0
        for name in dict.fromkeys(names):
            spec = model_spec_lookup(reference=name)
            version = ModelVersion.objects.filter(name=spec.name, version=spec.version).first()
            if version is not None:
                version = model_version_verify(version=version, actor=None)
                ok = bool(version.verified_ok)
                detail = "sha256 matches" if ok else "FAILED (see the audit log)"
            else:
                try:
                    verify_checksum(spec)
                    ok, detail = True, "sha256 matches"
                except ModelNotInstalled:
                    ok, detail = True, "not installed"
                except ChecksumMismatch as error:
                    ok, detail = False, f"FAILED: {error}"
            failures += not ok
            self.stdout.write(f"{spec.name}@{spec.version}: {detail}")
        if failures:
            raise CommandError(f"{failures} model(s) failed verification")

    def _register(self, options: dict[str, Any]) -> None:
        spec = self._spec(options)
        version = model_version_register(spec=spec.to_dict(), actor=None, notes="manage.py models register")
        version = model_version_verify(version=version, actor=None)
        if options["promote"]:
            version = model_version_promote(version=version, actor=None, reason="manage.py models register --promote")
        self.stdout.write(
            f"registered {version.label} ({version.status}, checksum {'ok' if version.verified_ok else 'FAILED'})"
        )


def _install_state(spec: ModelSpec) -> str:
    try:
        verify_checksum(spec)
    except ModelNotInstalled:
        return "no"
    except ChecksumMismatch:
        return "MISMATCH"
    except ValueError:
        return "?"
    return "yes"
