"""The two hubs behind ``ascend fetch``: list a revision's files (size, sha256) and download some.

ModelScope goes through the real ``modelscope`` client (``snapshot_download``; listing through
``modelscope_hub.api.HubApi.list_repo_files`` which keeps ``Sha256``, or the pre-1.38
``HubApi.get_model_files``). Hugging Face goes through ``huggingface_hub`` (the ``hf`` extra),
imported only when used.

Endpoints the ModelScope client calls (modelscope 1.40 / modelscope-hub 0.5.1; the test server in
``tests/fetch`` serves exactly these):
  GET {endpoint}/api/v1/models/{owner}/{name}/repo/files?Revision=R&Recursive=True[&Root=dir]
      -> {"Code": 200, "Data": {"Files": [{"Path", "Name", "Type": "blob"|"tree", "Size", "Sha256"}]}}
  GET {endpoint}/api/v1/models/{owner}/{name}/repo?Revision=R&FilePath=P   (Range: bytes=N- to resume)
  GET {endpoint}/api/v1/models/{owner}/{name}          (repo info; only when a listing says "not found")
  GET {endpoint}/api/v1/repos/internalAccelerationInfo (Aliyun intra-cloud probe; 404 is fine)
"""

from __future__ import annotations

import contextlib
import glob
from dataclasses import dataclass, field
from typing import Iterator

from ascend.errors import BackendUnavailable, FetchError
from ascend.fetch.completeness import RemoteFile

SOURCES = ("modelscope", "huggingface")


@dataclass
class Listing:
    """A revision's files as the hub lists them."""

    files: dict[str, RemoteFile]
    revision: str  # what was asked (branch, tag or commit)
    commit: str | None = None  # the commit it resolved to, when the hub says
    endpoint: str | None = None
    notes: list[str] = field(default_factory=list)


class DownloadFailed(Exception):
    """The hub client gave up on some files; what is on disk is checked afterwards."""


class ModelScopeHub:
    name = "modelscope"
    default_revision = "master"  # ModelScope's default branch (not "main")
    verifies_sha256 = True  # modelscope-hub hashes while streaming and rejects mismatches

    def __init__(self, endpoint: str | None = None, token: str | None = None):
        self.endpoint = endpoint
        self.token = token

    def _api(self):
        try:
            from modelscope_hub.api import HubApi  # modelscope >= 1.38 delegates here
        except ImportError:
            return None
        return HubApi(token=self.token, endpoint=self.endpoint)

    def resolve_endpoint(self, model_id: str) -> str | None:
        """The endpoint the download will use (.cn or .ai probe when none is configured)."""
        api = self._api()
        if api is None or self.endpoint:
            return self.endpoint
        try:
            self.endpoint = api.resolve_endpoint_for_read(model_id, repo_type="model")
        except Exception as err:  # noqa: BLE001 - hub errors and network errors alike
            raise _fetch_error(model_id, err) from None
        return self.endpoint

    def list_files(self, model_id: str, revision: str) -> Listing:
        self.resolve_endpoint(model_id)
        api = self._api()
        try:
            if api is not None:
                raw = [
                    {"Path": f.path, "Size": f.size, "Sha256": f.sha256, "Type": f.type}
                    for f in api.list_repo_files(model_id, "model", revision=revision, recursive=True)
                ]
            else:  # modelscope < 1.38
                from modelscope.hub.api import HubApi as LegacyHubApi

                raw = LegacyHubApi(endpoint=self.endpoint).get_model_files(model_id, revision=revision, recursive=True)
        except Exception as err:  # noqa: BLE001
            raise _fetch_error(model_id, err, revision) from None
        files = {}
        for item in raw:
            if (item.get("Type") or "blob") == "tree" or not item.get("Path"):
                continue
            size = item.get("Size")
            files[item["Path"]] = RemoteFile(item["Path"], int(size) if size is not None else None, item.get("Sha256") or None)
        return Listing(files=files, revision=revision, commit=_commit_like(revision), endpoint=self.endpoint)

    def download(self, model_id: str, listing: Listing, local_dir: str, paths: list[str], max_workers: int, progress: bool) -> None:
        from modelscope import snapshot_download

        with _modelscope_progress(progress):
            try:
                snapshot_download(
                    model_id=model_id,
                    revision=listing.revision,
                    local_dir=local_dir,
                    allow_patterns=[glob.escape(p) for p in paths],
                    max_workers=max_workers,
                    endpoint=listing.endpoint,
                    token=self.token,
                )
            except Exception as err:  # noqa: BLE001 - FileDownloadError, NetworkError, HTTPError ...
                raise DownloadFailed(_one_line(err)) from err


class HuggingFaceHub:
    name = "huggingface"
    default_revision = "main"
    verifies_sha256 = False  # huggingface_hub checks sizes; sha256 only with --checksum here

    def __init__(self, endpoint: str | None = None, token: str | None = None):
        self.endpoint = endpoint
        self.token = token

    @staticmethod
    def _hf():
        try:
            import huggingface_hub
        except ImportError:
            raise BackendUnavailable(
                "Hugging Face downloads need huggingface_hub",
                fix="pip install 'ascend-recipes[hf]' (or: pip install huggingface_hub), or use --source modelscope",
            ) from None
        return huggingface_hub

    def list_files(self, model_id: str, revision: str) -> Listing:
        hf = self._hf()
        try:
            info = hf.HfApi(endpoint=self.endpoint, token=self.token).model_info(
                model_id, revision=revision, files_metadata=True
            )
        except Exception as err:  # noqa: BLE001
            raise _fetch_error(model_id, err, revision) from None
        files = {}
        for s in info.siblings or []:
            lfs = getattr(s, "lfs", None)
            sha = getattr(lfs, "sha256", None) if lfs is not None else None
            files[s.rfilename] = RemoteFile(s.rfilename, s.size, sha)
        return Listing(files=files, revision=revision, commit=info.sha, endpoint=self.endpoint)

    def download(self, model_id: str, listing: Listing, local_dir: str, paths: list[str], max_workers: int, progress: bool) -> None:
        hf = self._hf()
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

        was_disabled = are_progress_bars_disabled()
        if not progress:
            disable_progress_bars()
        try:
            hf.snapshot_download(
                repo_id=model_id,
                revision=listing.commit or listing.revision,  # pinned commit: no moving branch mid-run
                local_dir=local_dir,
                allow_patterns=[glob.escape(p) for p in paths],
                max_workers=max_workers,
                endpoint=self.endpoint,
                token=self.token,
            )
        except Exception as err:  # noqa: BLE001
            raise DownloadFailed(_one_line(err)) from err
        finally:
            if not progress and not was_disabled:
                enable_progress_bars()


def make_hub(source: str, endpoint: str | None = None, token: str | None = None):
    if source == "modelscope":
        return ModelScopeHub(endpoint, token)
    if source == "huggingface":
        return HuggingFaceHub(endpoint, token)
    raise FetchError(f"unknown source {source!r}", fix=f"use one of: {', '.join(SOURCES)}")


def _commit_like(revision: str) -> str | None:
    rev = revision.lower()
    return revision if len(rev) == 40 and all(c in "0123456789abcdef" for c in rev) else None


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())[:500]


def _fetch_error(model_id: str, err: BaseException, revision: str | None = None) -> FetchError:
    text = _one_line(err)
    where = f"{model_id}@{revision}" if revision else model_id
    lowered = text.lower()
    if "notexist" in lowered or "not found" in lowered or "404" in lowered:
        fix = "check the model id and --revision (ModelScope ids look like ZhipuAI/GLM-5; its default branch is master)"
    elif "auth" in lowered or "permission" in lowered or "401" in lowered or "403" in lowered:
        fix = "log in or pass a token (MODELSCOPE_API_TOKEN / HF_TOKEN) with access to the repository"
    else:
        fix = "check the network or the hub endpoint (MODELSCOPE_ENDPOINT / HF_ENDPOINT, --endpoint); --offline checks what is on disk"
    return FetchError(f"cannot list {where}", why=text, fix=fix)


@contextlib.contextmanager
def _modelscope_progress(progress: bool) -> Iterator[None]:
    """Silence modelscope-hub's per-file tqdm bars when not on a terminal.

    modelscope-hub creates its bars without ``disable=``, so they would print into pipes and logs.
    Its module-level ``tqdm`` name is swapped for the duration of the call; if a future
    modelscope-hub moves it, bars simply stay on.
    """
    if progress:
        yield
        return
    try:
        import modelscope_hub._download as ms_download
    except ImportError:
        yield
        return
    original = getattr(ms_download, "tqdm", None)
    if original is None:
        yield
        return

    class _Quiet(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    ms_download.tqdm = _Quiet
    try:
        yield
    finally:
        ms_download.tqdm = original
