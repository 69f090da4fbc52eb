"""Deprecation and future warnings that gpt2probe's calls cause are test errors, wherever raised."""

from __future__ import annotations

import pytest

# A library function that deprecates something, attributing the warning to its caller's caller,
# the way transformers' deprecate_kwarg does (the warning names a frame that is not ours).
LIBRARY = """
import warnings
def old_api():
    warnings.warn("old_api is deprecated", FutureWarning, stacklevel=2)
def wrapper():
    old_api()
"""


def _module(name: str, source: str, **names) -> dict:
    namespace = {"__name__": name, **names}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("category", [FutureWarning, DeprecationWarning, PendingDeprecationWarning])
def test_a_deprecation_reached_from_gpt2probe_is_an_error(category):
    library = _module("somelibrary", LIBRARY.replace("FutureWarning", category.__name__))
    ours = _module("gpt2probe.fake_module", "def call():\n    wrapper()\n", wrapper=library["wrapper"])
    with pytest.raises(category, match="gpt2probe.fake_module"):
        ours["call"]()


def test_a_deprecation_outside_gpt2probe_stays_a_warning():
    library = _module("somelibrary", LIBRARY)
    with pytest.warns(FutureWarning, match="old_api is deprecated"):
        library["wrapper"]()


def test_other_warnings_from_gpt2probe_are_not_errors():
    ours = _module("gpt2probe.fake_module", "import warnings\ndef call():\n    warnings.warn('just so', UserWarning)\n")
    with pytest.warns(UserWarning, match="just so"):
        ours["call"]()


def test_pyproject_filter_catches_a_warning_attributed_to_gpt2probe():
    """Without the stack check (C code warns through the module filter only), pyproject's filter decides."""
    ours = _module("gpt2probe.fake_module", "import warnings\ndef call():\n    warnings.warn_explicit("
                   "'gone', DeprecationWarning, 'fake.py', 1, module='gpt2probe.fake_module')\n")
    with pytest.raises(DeprecationWarning, match="gone"):
        ours["call"]()
