"""Whether the Hugging Face hub answers: one question that model, lens and SAE loading all ask."""

from __future__ import annotations

import os


def hub_reachable() -> tuple[bool, str]:
    """Whether the Hugging Face hub answers, asked the way ``huggingface_hub`` itself would.

    One HEAD request through ``huggingface_hub``'s own HTTP session, so that its proxy
    settings (``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``, read when the session is made),
    its endpoint (``HF_ENDPOINT``), its certificates and its timeout (``HF_HUB_ETAG_TIMEOUT``)
    apply; ``HF_HUB_OFFLINE`` answers no without a request. A raw socket to the endpoint would
    say "unreachable" behind an HTTPS proxy through which the download works. Returns
    ``(reachable, why not)``: any HTTP answer, even an error status, means reachable.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False, "HF_HUB_OFFLINE is set"
    try:
        get_session().head(constants.ENDPOINT, timeout=constants.HF_HUB_ETAG_TIMEOUT, follow_redirects=False)
    except Exception as error:  # noqa: BLE001 - DNS, refused, proxy, TLS or timeout: all mean no answer
        return False, f"no answer from {constants.ENDPOINT} ({type(error).__name__}: {error})"
    return True, ""
