"""Which model sources a deployment lets tenants load: one pure check shared by the API and the worker.

The API refuses a source when it is registered or a job is submitted (422 naming the rule); the
worker checks again right before loading (defence in depth: the policy may have tightened since
registration, and the database is not the only way a job row can be written). Standard library
only: the worker imports this module and must not pull in FastAPI.

A source is one of
- ``builtin:<name>``: always allowed (shipped with the package; the loader names unknown ones);
- a hub id ``name``, ``org/name`` or ``org/name@revision``: allowed when ``org`` is in
  ``allowed_hub_orgs`` (None: any org; a bare ``name`` only then). The revision is a branch, a
  tag or a commit; ``refs/pr/N`` (a community pull request, which anyone can open on the hub:
  with remote code allowed, code execution in the workers) and ``refs/convert/*`` (bot-made
  conversions) are refused unless ``allow_hub_pr_revisions`` is set;
- an absolute local directory or ``.gguf`` file: allowed only inside ``allowed_local_roots``
  (or the tenant's own artifact folder, where its fine-tunes write models), symlinks resolved.
Everything else (URLs and schemes, ``..``, relative or ``~`` paths, control characters) is refused.
``trust_remote_code`` is a deployment setting the worker passes to the loader (``worker/models.py``).
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

MAX_SOURCE_LENGTH = 1000
# Hugging Face's repo-name grammar: 1-96 of [A-Za-z0-9._-], no leading/trailing '.' or '-', no '--' or '..'.
_HUB_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_HUB_ID = re.compile(rf"^(?:(?P<org>{_HUB_PART})/)?(?P<name>{_HUB_PART})(?:@(?P<revision>[^@]*))?$")
# A branch, tag or commit: git ref characters only, no '..', no '//', no trailing '/' or '.lock'.
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
_BUILTIN = re.compile(r"^builtin:[a-z0-9][a-z0-9._-]{0,63}$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")

SourceKind = Literal["builtin", "hub", "local", "gguf", "finetune"]
_FINETUNE = re.compile(r"^finetune:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class SourceRefused(ValueError):
    """The policy refuses a model source; ``rule`` names the rule, the message says what to do.

    A ValueError, so the worker fails the job with this message at once instead of retrying.
    """

    def __init__(self, source: str, rule: str, reason: str):
        super().__init__(f"model source {_shown(source)} refused by the deployment's model policy ({rule}): {reason}")
        self.source, self.rule, self.reason = source, rule, reason


@dataclass(frozen=True)
class CheckedSource:
    """A source the policy accepted, and what kind it is."""

    source: str
    kind: SourceKind
    org: str | None = None
    revision: str | None = None


@dataclass(frozen=True)
class ModelPolicy:
    """The deployment's rules; build it with :meth:`from_settings`."""

    allowed_hub_orgs: frozenset[str] | None = None  # None: any org (set it in production)
    allowed_local_roots: tuple[str, ...] = field(default=())  # absolute, normalised
    allow_hub_pr_revisions: bool = False  # refs/pr/N and refs/convert/*: content the repo owner did not publish

    @classmethod
    def create(
        cls,
        *,
        allowed_hub_orgs: Iterable[str] | None,
        allowed_local_roots: Iterable[os.PathLike[str] | str],
        allow_hub_pr_revisions: bool = False,
    ) -> ModelPolicy:
        """A policy from plain values; roots must be absolute (a relative root would depend on the cwd)."""
        roots = []
        for root in allowed_local_roots:
            text = os.fspath(root)
            if not os.path.isabs(text):
                raise ValueError(f"allowed_local_roots entries must be absolute paths, got {text!r}")
            roots.append(os.path.normpath(text))
        orgs = (
            None if allowed_hub_orgs is None else frozenset(o.strip().casefold() for o in allowed_hub_orgs if o.strip())
        )
        return cls(
            allowed_hub_orgs=orgs, allowed_local_roots=tuple(roots), allow_hub_pr_revisions=allow_hub_pr_revisions
        )

    @classmethod
    def from_settings(cls, settings: Any) -> ModelPolicy:
        """The policy of ``settings`` (a ``service.settings.Settings``)."""
        return cls.create(
            allowed_hub_orgs=settings.allowed_hub_orgs,
            allowed_local_roots=settings.allowed_local_roots,
            allow_hub_pr_revisions=getattr(settings, "allow_hub_pr_revisions", False),
        )

    def check(self, source: str, *, extra_roots: Sequence[os.PathLike[str] | str] = ()) -> CheckedSource:
        """Return the accepted ``source`` classified; raise :class:`SourceRefused` naming the rule otherwise.

        ``extra_roots`` are allowed local roots for this call only (the tenant's artifact folder).
        """
        if not source:
            raise SourceRefused(source, "malformed_source", "the source is empty")
        if len(source) > MAX_SOURCE_LENGTH:
            raise SourceRefused(source, "malformed_source", f"longer than {MAX_SOURCE_LENGTH} characters")
        if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in source):
            raise SourceRefused(
                source,
                "no_control_characters",
                "control, format or line-separator characters (NUL, newline, ...) are not allowed",
            )
        if source.startswith("finetune:"):  # the tenant's own fine-tuned model; the worker finds its directory
            if not _FINETUNE.match(source):
                raise SourceRefused(source, "malformed_finetune", "expected finetune:<job id> (a lower-case UUID)")
            return CheckedSource(source, "finetune")
        if source.startswith("builtin:"):
            if not _BUILTIN.match(source):
                raise SourceRefused(
                    source, "malformed_builtin", "expected builtin:<name> in lower case, e.g. builtin:smollm2"
                )
            return CheckedSource(source, "builtin")
        if "\\" in source:
            raise SourceRefused(source, "no_backslashes", "use '/' in paths; backslashes are not allowed")
        if _SCHEME.match(source) or source.startswith("//"):
            raise SourceRefused(
                source,
                "no_urls",
                "URLs and schemes (http:, file:, s3:, hf:, ...) are not model sources; "
                "give a hub id (org/name), builtin:<name> or an absolute path under an allowed root",
            )
        if ".." in PurePosixPath(source).parts:
            raise SourceRefused(source, "no_parent_components", "'..' path components are not allowed")
        if source.startswith("~"):
            raise SourceRefused(source, "absolute_paths_only", "'~' paths are not allowed; give an absolute path")
        if source.startswith("/"):
            return self._check_local(source, extra_roots)
        if source.lower().endswith(".gguf") or source.startswith("."):
            raise SourceRefused(
                source,
                "absolute_paths_only",
                "relative paths depend on the worker's directory; give an absolute path under an allowed local root",
            )
        return self._check_hub(source)

    def _check_hub(self, source: str) -> CheckedSource:
        match = _HUB_ID.match(source)
        if match is None or "--" in source.split("@")[0] or ".." in source.split("@")[0]:
            raise SourceRefused(
                source,
                "malformed_hub_id",
                "a hub id is 'org/name' (optionally '@revision'): letters, digits, '.', '_' and '-', "
                "at most 96 characters each",
            )
        org, revision = match["org"], match["revision"]
        if revision is not None and not _valid_revision(revision):
            raise SourceRefused(
                source,
                "malformed_revision",
                "a revision is a branch, tag or commit: letters, digits, '.', '_', '-' and '/', "
                "at most 128 characters, no '..' or '//'",
            )
        if revision is not None and _unpublished_ref(revision) and not self.allow_hub_pr_revisions:
            raise SourceRefused(
                source,
                "hub_pr_revisions",
                f"revision {revision!r} is not one the repository's owners published (refs/pr/* are "
                "pull requests anyone can open, refs/convert/* bot conversions); pin a branch, a tag "
                "or a 40-hex commit, or have the deployment set SSAH_ALLOW_HUB_PR_REVISIONS",
            )
        if self.allowed_hub_orgs is not None:
            allowed = ", ".join(sorted(self.allowed_hub_orgs)) or "none"
            if org is None:
                raise SourceRefused(
                    source,
                    "allowed_hub_orgs",
                    f"hub ids must name their organisation (org/name); allowed organisations: {allowed}",
                )
            if org.casefold() not in self.allowed_hub_orgs:
                raise SourceRefused(
                    source, "allowed_hub_orgs", f"organisation {org!r} is not allowed; allowed organisations: {allowed}"
                )
        # The loader reads an existing relative path as a local directory: never let a hub id mean a file.
        if os.path.lexists(source.split("@")[0]):
            raise SourceRefused(
                source,
                "absolute_paths_only",
                "this hub id also names a relative path on this machine; give an absolute path "
                "under an allowed local root instead",
            )
        return CheckedSource(source, "hub", org=org, revision=revision)

    def _check_local(self, source: str, extra_roots: Sequence[os.PathLike[str] | str]) -> CheckedSource:
        kind: SourceKind = "gguf" if source.lower().endswith(".gguf") else "local"
        what = "GGUF files" if kind == "gguf" else "local model paths"
        roots = [*self.allowed_local_roots, *(os.path.normpath(os.fspath(r)) for r in extra_roots)]
        if not roots:
            raise SourceRefused(
                source, "allowed_local_roots", f"this deployment allows no {what} (SSAH_ALLOWED_LOCAL_ROOTS is empty)"
            )
        listed = ", ".join(self.allowed_local_roots) or "none besides your own fine-tuned models"
        normal = os.path.normpath(source)
        if not any(_inside(normal, root) for root in roots):
            raise SourceRefused(source, "allowed_local_roots", f"{what} must lie under an allowed root: {listed}")
        # Symlinks are followed on both sides: a link inside a root must not lead outside every root.
        real = os.path.realpath(normal)
        if not any(_inside(real, os.path.realpath(root)) for root in roots):
            raise SourceRefused(
                source,
                "symlink_escape",
                f"the path resolves (through a symlink) to {real!r}, outside every allowed root",
            )
        return CheckedSource(source, kind)


def tenant_model_root(artifact_dir: os.PathLike[str] | str, tenant_id: object) -> str:
    """The tenant's job artifact folder, where its fine-tunes write models it may register and load."""
    return os.path.join(os.path.abspath(os.fspath(artifact_dir)), str(tenant_id), "jobs")


def finetune_model_dir(artifact_dir: os.PathLike[str] | str, tenant_id: object, source: str) -> str:
    """The directory a ``finetune:<job id>`` source names: where that fine-tune of the tenant wrote its model."""
    return os.path.join(
        tenant_model_root(artifact_dir, tenant_id), source.removeprefix("finetune:"), "finetune", "model"
    )


def check_for_tenant(settings: Any, tenant_id: object, source: str) -> CheckedSource:
    """The deployment's policy (``settings``) as it applies to one tenant: its own fine-tuned models allowed too.

    The one check behind both the API (registration, submit) and the worker (before loading).
    """
    return ModelPolicy.from_settings(settings).check(
        source, extra_roots=[tenant_model_root(settings.artifact_dir, tenant_id)]
    )


def check_judge(settings: Any, tenant_id: object, judge: dict[str, Any]) -> None:
    """An evaluation's judge (``JudgeSpec`` fields): an endpoint and key variable from the deployment's allow-lists,
    or a model source (and hub revision) the model policy allows. Raises ``SourceRefused``; API and worker both call it.
    """
    base_url = (judge.get("base_url") or "").rstrip("/")
    if base_url:
        allowed = {url.rstrip("/") for url in settings.judge_endpoints}
        if base_url not in allowed:
            raise SourceRefused(
                base_url, "judge_endpoint_not_allowed", "this deployment's judge_endpoints do not list this base URL"
            )
        key_env = judge.get("api_key_env") or ""
        if key_env and key_env not in settings.judge_key_envs:
            raise SourceRefused(
                key_env, "judge_key_env_not_allowed", "this deployment's judge_key_envs do not list this variable"
            )
        return
    checked = check_for_tenant(settings, tenant_id, judge.get("source") or "")
    if judge.get("revision") and checked.kind == "hub":
        check_for_tenant(settings, tenant_id, f"{judge['source']}@{judge['revision']}")


def _valid_revision(revision: str) -> bool:
    return (
        bool(_REVISION.match(revision))
        and ".." not in revision
        and "//" not in revision
        and not revision.endswith(("/", ".", ".lock"))
    )


def _unpublished_ref(revision: str) -> bool:
    """Whether ``revision`` names a ref outside the owners' branches and tags (``refs/pr/1``, ``refs/convert/parquet``).

    Any ``refs/`` namespace except ``refs/heads/`` and ``refs/tags/`` counts, in any letter case:
    the hub may learn new namespaces, and a refusal is cheaper than a guess.
    """
    lowered = revision.casefold()
    return lowered.startswith("refs/") and not lowered.startswith(("refs/heads/", "refs/tags/"))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _shown(source: str) -> str:
    """``source`` safe to echo in an error: control characters escaped, long values cut."""
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in source[:200])
    return f"'{text}{'...' if len(source) > 200 else ''}'"
