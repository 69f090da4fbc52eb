"""Session fixtures: two tiny random GPT-2 checkpoints, their probes and TransformerLens bridges.

Nothing here may touch the network: offline mode is switched on before anything imports
transformers or huggingface_hub (both read it once, at import).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

import gpt2probe  # noqa: E402

from models import SMALL, VOCAB, Spec, save_gpt2  # noqa: E402
from reference import transformer_lens_bridge  # noqa: E402

# The models are tiny: one thread is fastest, and intra-op threads spin badly on a busy machine.
torch.set_num_threads(1)

SPECS: dict[str, Spec] = {"small": SMALL, "vocab": VOCAB}

# -- deprecations reached through gpt2probe are errors ---------------------------------
# pyproject's filterwarnings turns warnings *attributed to* gpt2probe's modules into errors,
# but a library's deprecation warning names the library's own frame (transformers' kwarg
# deprecations point into transformers.utils), so a module filter cannot see that our call
# caused it. This wrapper looks at the whole stack when the warning is raised instead.
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
_original_warn = warnings.warn


def gpt2probe_caller(frame) -> str | None:
    """``module:line`` of the innermost gpt2probe frame on the stack from ``frame`` out, if any."""
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module == "gpt2probe" or module.startswith("gpt2probe."):
            return f"{module}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def _warn(message, category=None, stacklevel=1, source=None, **kwargs):
    if category is None:
        category = type(message) if isinstance(message, Warning) else UserWarning
    if issubclass(category, DEPRECATIONS):
        caller = gpt2probe_caller(sys._getframe(1))
        if caller is not None:
            raise category(f"{message} (reached from {caller}: gpt2probe must not use deprecated APIs)")
    return _original_warn(message, category, stacklevel + 1, source, **kwargs)


def pytest_configure(config):
    warnings.warn = _warn


def pytest_unconfigure(config):
    warnings.warn = _original_warn


@pytest.fixture
def own_deprecations(monkeypatch):
    """For a test of gpt2probe's own deprecation warnings to its users (an old keyword kept for one release).

    The wrapper above raises every deprecation reached through gpt2probe; a warning gpt2probe
    gives about its caller's code is meant to be raised, so this test sees it as a warning
    (``pytest.warns``) pointing at the test's own line.
    """
    monkeypatch.setattr(warnings, "warn", _original_warn)


@pytest.fixture(scope="session")
def small_dir(tmp_path_factory) -> Path:
    return save_gpt2(SMALL, tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="session")
def vocab_dir(tmp_path_factory) -> Path:
    return save_gpt2(VOCAB, tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="session")
def checkpoint_dirs(small_dir, vocab_dir) -> dict[str, Path]:
    return {"small": small_dir, "vocab": vocab_dir}


@pytest.fixture(scope="session")
def small_probe(small_dir):
    return gpt2probe.load(small_dir, device="cpu")


@pytest.fixture(scope="session")
def vocab_probe(vocab_dir):
    return gpt2probe.load(vocab_dir, device="cpu")


@pytest.fixture(scope="session")
def small_probe_eager(small_dir):
    return gpt2probe.load(small_dir, device="cpu", attn_implementation="eager")


@pytest.fixture(scope="session")
def vocab_probe_eager(vocab_dir):
    return gpt2probe.load(vocab_dir, device="cpu", attn_implementation="eager")


@pytest.fixture(scope="session")
def small_bridge(small_dir):
    TransformerBridge = transformer_lens_bridge()

    return TransformerBridge.boot_transformers(str(small_dir), device="cpu")


@pytest.fixture(scope="session")
def vocab_bridge(vocab_dir):
    TransformerBridge = transformer_lens_bridge()

    return TransformerBridge.boot_transformers(str(vocab_dir), device="cpu")


@pytest.fixture(params=["small", "vocab"])
def which(request) -> str:
    """Parametrizes a test over both checkpoints."""
    return request.param


@pytest.fixture(params=["sdpa", "eager"])
def attn(request) -> str:
    """Parametrizes a test over Hugging Face's two CPU attention implementations."""
    return request.param


@pytest.fixture
def get_probe(request):
    """``get_probe(which, attn="sdpa")``: the session probe of checkpoint ``which`` with attention ``attn``."""

    def get(which: str, attn: str = "sdpa"):
        suffix = "_eager" if attn == "eager" else ""
        return request.getfixturevalue(f"{which}_probe{suffix}")

    return get


@pytest.fixture
def spec(which) -> Spec:
    return SPECS[which]


@pytest.fixture
def probe(which, attn, get_probe):
    """The probe of each checkpoint under each attention implementation (four runs)."""
    return get_probe(which, attn)


@pytest.fixture
def bridge(which, request):
    """The TransformerLens bridge on the same checkpoint as ``probe``."""
    return request.getfixturevalue(f"{which}_bridge")


@pytest.fixture(scope="session")
def toy():
    """The shipped toy model whose L0H0 is a previous-token head and L1H0 an induction head."""
    from gpt2probe.shipped import shipped_model

    return gpt2probe.load(shipped_model("toy-induction"), device="cpu")


@pytest.fixture(scope="session")
def tiny_english():
    """The shipped tiny-english (4 layers, trained on English; copies through induction heads), loaded once.

    Read only: a test that edits it does so inside ``with`` blocks (ablate, hooks) that restore it.
    """
    from gpt2probe.shipped import shipped_model

    return gpt2probe.load(shipped_model("tiny-english"), device="cpu")
