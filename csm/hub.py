"""Talking to the Hugging Face Hub: one download whose errors a person can act on, and the offline switch.

Every file the package takes from the Hub (weights, config, tokenizer) goes through `download`,
which turns huggingface_hub's many error types into one, `HubFileError`, with a sentence that
says what went wrong. Callers add what to do about it in their own words.

Without a network, each Hub look-up waits through ~25 s of retries before it falls back to the
cache. `go_offline_if_unreachable` asks the Hub once, briefly, and if nothing answers puts this
process's huggingface_hub into offline mode, so every later look-up goes straight to the cache.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger("csm")

# Why a file could not be had (HubFileError.reason).
GATED, NO_REPO, NO_REVISION = "gated", "no-repo", "no-revision"
NOT_CACHED, NO_FILE, OTHER = "not-cached", "no-file", "other"

_switched_offline = False  # set by go_offline_if_unreachable, so errors can say why the Hub was not asked


class CheckpointError(RuntimeError):
    """A checkpoint cannot be found, read or mapped. The message says what to do."""


class HubFileError(Exception):
    """One file of a Hub repo that could not be had. `why` is a sentence a person can read."""

    def __init__(self, why: str, reason: str, hub_unreachable: bool = False):
        super().__init__(why)
        self.why = why
        self.reason = reason  # one of GATED, NO_REPO, NO_REVISION, NOT_CACHED, NO_FILE, OTHER
        # True when the Hub was tried and did not answer (not when offline mode kept us from asking).
        self.hub_unreachable = hub_unreachable


def looks_like_path(name: str) -> bool:
    """Whether `name` is meant as a local path rather than a Hub repo id ("owner/name")."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def download(repo_id: str, filename: str, revision: str | None = None, token: str | None = None,
             cache_only: bool = False) -> Path:  # fmt: skip
    """The local path of one file of a Hub repo, downloaded or from the cache; HubFileError if it cannot be had."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub import errors as hub

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, token=token, local_files_only=cache_only))
    except hub.GatedRepoError as e:  # before RepositoryNotFoundError: it is a subclass
        why = (
            f"{repo_id} is a gated repository: accept its terms at https://huggingface.co/{repo_id} with your "
            "account, then log in (set HF_TOKEN, run `hf auth login`, or pass token=...)"
        )
        raise HubFileError(why, GATED) from e
    except hub.RepositoryNotFoundError as e:
        why = f"{repo_id!r} is not a Hub repository you can see: check the spelling, or log in (HF_TOKEN) if private"
        raise HubFileError(why, NO_REPO) from e
    except hub.RevisionNotFoundError as e:
        raise HubFileError(f"revision {revision!r} does not exist in {repo_id}", NO_REVISION) from e
    except hub.LocalEntryNotFoundError as e:  # before EntryNotFoundError: it is a subclass
        offline = constants.is_offline_mode()
        raise HubFileError(
            f"{filename} of {repo_id} is not in the local Hugging Face cache and the Hub is unreachable "
            f"({_why_not_asked(offline, cache_only)})",
            NOT_CACHED,
            hub_unreachable=not (offline or cache_only),
        ) from e
    except hub.EntryNotFoundError as e:
        raise HubFileError(f"{repo_id} has no file {filename}", NO_FILE) from e
    except (hub.HFValidationError, hub.HfHubHTTPError, OSError) as e:
        raise HubFileError(f"cannot fetch {filename} of {repo_id}: {type(e).__name__}: {e}", OTHER) from e


def _why_not_asked(offline: bool, cache_only: bool) -> str:
    if _switched_offline:
        return "it did not answer when this program started, so HF_HUB_OFFLINE=1 was set: only the cache is used"
    if offline:
        return "HF_HUB_OFFLINE=1 is set"
    if cache_only:
        return "it did not answer an earlier request"
    return "it did not answer"


def go_offline_if_unreachable(timeout: float = 3.0) -> bool:
    """If the Hub does not answer within `timeout` s, switch huggingface_hub to offline mode; True if switched.

    Does nothing (False) when offline mode is already on. Asks the endpoint once (HF_ENDPOINT is
    honoured); any HTTP answer, even an error status, counts as reachable.
    """
    global _switched_offline
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return False
    if _answers(constants.ENDPOINT, timeout):
        return False
    os.environ["HF_HUB_OFFLINE"] = "1"  # for child processes and libraries that read the environment
    # huggingface_hub read the environment at import; is_offline_mode() reads this on every call, and
    # hf_hub_download then goes to the cache at once instead of retrying.
    constants.HF_HUB_OFFLINE = True
    _switched_offline = True
    log.warning("the Hugging Face Hub (%s) is unreachable: only the local cache is used", constants.ENDPOINT)
    return True


def _answers(url: str, timeout: float) -> bool:
    """Whether anything answers a HEAD request to `url` within `timeout` s (name resolution included)."""
    answered = []

    def ask() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
                answered.append(True)
        except urllib.error.HTTPError:
            answered.append(True)  # an error status is still an answer
        except urllib.error.URLError as e:
            # A TLS failure means a server answered; huggingface_hub's own client may still get through.
            answered.append(isinstance(e.reason, ssl.SSLError))
        except (OSError, ValueError):  # timeouts, resets, a malformed endpoint
            answered.append(False)

    # In a thread: urlopen's timeout does not cover name resolution, which can hang without a network.
    asker = threading.Thread(target=ask, name="csm-hub-probe", daemon=True)
    asker.start()
    asker.join(timeout)
    return bool(answered and answered[0])
