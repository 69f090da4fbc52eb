"""``SAE.from_pretrained(release, sae_id)``: SAELens's GPT-2 small releases through ``huggingface_hub``.

Offline rules are :func:`gpt2probe.load`'s: the Hugging Face cache is tried first (so a
machine that downloaded once works offline); only when the files are not cached is the hub
asked, and an unreachable hub is a :class:`~gpt2probe.errors.WeightsUnavailableError` that
says how to get the files. ``release`` may also be a local directory laid out as the hub
repository (one SAELens folder per SAE), or any hub repository id (``"owner/name"``) whose
folders are SAELens folders, with ``sae_id`` the folder.

The table :data:`RELEASES` lists the releases whose layout gpt2probe knows (taken from
SAELens 6.54.12's ``pretrained_saes.yaml``). SAELens's releases whose files use a run-time
normalisation (OpenAI's v5 SAEs: ``layer_norm``) or per-head ``hook_z`` are refused when
read, with the reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidArgumentError, InvalidTypeError, WeightsUnavailableError
from .config import SAEConfig

CENTERED = "center_writing_weights"


@dataclass(frozen=True)
class Release:
    """One SAELens release: its hub repository, its SAE ids (each a folder there) and how it was trained."""

    repo_id: str
    sae_ids: tuple[str, ...]
    trained_on_centered_stream: bool  # TransformerLens's center_writing_weights=True
    model: str = "gpt2"


RELEASES: dict[str, Release] = {
    "gpt2-small-res-jb": Release(
        "jbloom/GPT2-Small-SAEs-Reformatted",
        tuple(f"blocks.{layer}.hook_resid_pre" for layer in range(12)) + ("blocks.11.hook_resid_post",),
        trained_on_centered_stream=True,
    ),
    "gpt2-small-res-jb-feature-splitting": Release(
        "jbloom/GPT2-Small-Feature-Splitting-Experiment-Layer-8",
        tuple(f"blocks.8.hook_resid_pre_{width}" for width in (768, 1536, 3072, 6144, 12288, 24576, 49152, 98304)),
        trained_on_centered_stream=True,
    ),
}


def _local_folder(release: str, sae_id: str) -> Path | None:
    """``sae_id``'s folder when ``release`` is a local directory; ``None`` when it is not one."""
    root = Path(release).expanduser()
    return _folder_in(root, sae_id) if root.is_dir() else None


def _folder_in(root: Path, sae_id: str) -> Path:
    """``root / sae_id``, or an error listing the SAE folders ``root`` has."""
    folder = root / sae_id
    if not folder.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "cfg.json").is_file())
        raise WeightsUnavailableError(f"{str(root)!r} has no folder {sae_id!r}; its SAE folders: {', '.join(found) or 'none'}")
    return folder


def _hub_folder(repo_id: str, folder: str) -> Path:
    from huggingface_hub import snapshot_download

    from ..hub import hub_reachable

    patterns = [f"{folder}/cfg.json", f"{folder}/sae_weights.safetensors"]
    try:  # the cache first: works offline
        root = snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True)
        if (Path(root) / folder / "cfg.json").is_file():
            return Path(root) / folder
    except Exception:  # noqa: BLE001,S110 - huggingface_hub raises several kinds for "not cached"
        pass
    reachable, why = hub_reachable()
    if not reachable:
        raise WeightsUnavailableError(
            f"the SAE {folder!r} of {repo_id!r} is not in the Hugging Face cache and the hub cannot be reached "
            f"(offline: {why}). On a connected machine run `hf download {repo_id} --include '{folder}/*'` and copy "
            "the cache here (or set HF_HOME to it), or pass a local directory laid out as the repository"
        )
    try:
        root = snapshot_download(repo_id, allow_patterns=patterns)
    except Exception as error:  # noqa: BLE001 - network, authentication or missing repository
        raise WeightsUnavailableError(f"cannot download {folder!r} from {repo_id!r}: {type(error).__name__}: {error}") from None
    if not (Path(root) / folder / "cfg.json").is_file():
        raise WeightsUnavailableError(f"{repo_id!r} has no SAELens folder {folder!r} (no {folder}/cfg.json)")
    return Path(root) / folder


def locate(release: str, sae_id: str, directory: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """The folder holding ``sae_id`` of ``release`` (downloaded if need be), and whether it was trained on a centered stream.

    ``directory``: a local copy of the release's repository, used instead of the hub.
    """
    if not isinstance(release, str) or not isinstance(sae_id, str):
        raise InvalidTypeError(f"release and sae_id are strings, got {type(release).__name__} and {type(sae_id).__name__}")
    parts = Path(sae_id).parts
    if not parts or Path(sae_id).is_absolute() or ".." in parts:
        # root / "/elsewhere" is "/elsewhere": another folder would be read, with this release's settings
        raise InvalidArgumentError(f"sae_id names a folder inside the release (such as 'blocks.8.hook_resid_pre'), "
                                   f"got {sae_id!r}; to read a folder elsewhere use gpt2probe.SAE.load(path)")
    known = RELEASES.get(release)
    if directory is not None:
        root = Path(directory).expanduser()
        if not root.is_dir():
            raise WeightsUnavailableError(f"no such directory: {str(directory)!r}")
        return _folder_in(root, sae_id), bool(known and known.trained_on_centered_stream)
    local = _local_folder(release, sae_id)
    if local is not None:
        return local, False
    if known is not None:
        if sae_id not in known.sae_ids:
            raise InvalidArgumentError(f"{release!r} has no SAE {sae_id!r}; its ids: {', '.join(known.sae_ids)}")
        return _hub_folder(known.repo_id, sae_id), known.trained_on_centered_stream
    if release.count("/") == 1 and not os.path.isabs(release):
        try:
            return _hub_folder(release, sae_id), False
        except WeightsUnavailableError as error:  # "saes/gpt2" may be a mistyped local directory, not a repository id
            raise WeightsUnavailableError(f"{error} (read {release!r} as a hub repository id: there is no local "
                                          f"directory {str(Path(release).expanduser().resolve())!r})") from None
    raise InvalidArgumentError(f"unknown release {release!r}: give one of {', '.join(RELEASES)}, a hub repository id "
                               "('owner/name') whose folders are SAELens folders, or a local directory laid out that way")


def with_release_settings(cfg: SAEConfig, centered: bool) -> SAEConfig:
    """``cfg`` with what the release table knows and the files may not say (the centered stream)."""
    if centered and not cfg.is_transcoder and not cfg.center_input:
        return cfg.replace(center_input=True, metadata={**cfg.metadata, "model_from_pretrained_kwargs": {CENTERED: True}})
    return cfg
