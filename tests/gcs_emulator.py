"""A real Google Cloud Storage API server for the tests: ``gcp-storage-emulator`` in its own process.

The emulator speaks the GCS JSON API over HTTP (uploads, ranged downloads, listing, compose,
rewrite), so the clients dpr-jax relies on talk to it exactly as they talk to GCS: gcsfs (through
fsspec and etils ``epath``) and tensorstore (under orbax). Nothing here imitates those clients.

Two groups of environment variables point them at it:

- :data:`OFFLINE_ENV`, set once for the whole test session before any of those libraries is
  imported (``tests/conftest.py``): no credentials, no probe of a GCE metadata server or of Google's
  OAuth endpoints, and no 60 s gRPC probe of the bucket by recent gcsfs;
- :meth:`GcsEmulator.env`, set while the emulator runs: where the server is
  (``STORAGE_EMULATOR_HOST`` for gcsfs and google-cloud-storage, ``TENSORSTORE_GCS_HTTP_URL``
  for tensorstore).

Both live in ``os.environ``, so subprocesses started by tests (the CLI) inherit them.

One gap of the emulator (2026.7.19) is filled when it is started from here (:func:`_serve`): its
media downloads (``GET .../o/NAME?alt=media``) carry no ``x-goog-generation`` header, which GCS
sends with every object download. tensorstore takes an object's generation from that header
(``tensorstore/kvstore/gcs/object_metadata.cc``, ``SetObjectMetadataFromHeaders``), so it reads
generation 0, and orbax's OCDBT manifest updates, which are conditional on the generation last
read, then fail now and then with "Malformed StorageGeneration" (9 saves out of 9 under strace,
0 of 9 with the header added). The emulator also ignores generation preconditions
(``ifGenerationMatch``/``ifGenerationNotMatch``); that is left as it is, so these tests cannot
catch two writers racing on one object (dpr-jax has one writer per object).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from distributed_worker import free_port

# A closed local port: any client that still tries a GCE metadata server is refused at once
# instead of waiting for a DNS lookup or a timeout (and nothing leaves the machine).
_NOWHERE = "127.0.0.1:9"

OFFLINE_ENV = {
    # gcsfs >= 2025.x checks each bucket over gRPC for the "zonal/HNS" layout first; against an
    # HTTP-only emulator that waits 60 s per bucket before falling back (measured: 100 s for one
    # small script). "false" makes gcsfs use its plain JSON-API file system. Read at gcsfs import.
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    # fsspec's config for the "gcs"/"gs" protocol (read at fsspec import): anonymous, no token,
    # for every GCSFileSystem, including the one etils epath creates for orbax.
    "FSSPEC_GCS_TOKEN": "anon",
    # gcsfs: never try the GCE metadata server when looking for credentials.
    "NO_GCE_CHECK": "true",
    # google-auth (gcsfs with other token settings, google-cloud-storage): metadata server address.
    "GCE_METADATA_HOST": _NOWHERE,
    "GCE_METADATA_IP": _NOWHERE,
    # tensorstore: a fixed bearer token instead of its credential search (credential files, then
    # a GCE metadata probe); GCE_METADATA_ROOT as a second guard. The emulator ignores the token.
    "GOOGLE_AUTH_TOKEN_FOR_TESTING": "anonymous",
    "GCE_METADATA_ROOT": _NOWHERE,
    # etils epath: gs:// through fsspec/gcsfs even where TensorFlow is installed (tf.io.gfile
    # would be another GCS client with its own endpoint settings).
    "EPATH_USE_TF": "false",
}
# Credentials that must not leak into a test run (they would be sent to the emulator, or used
# against real GCS by a client that ignores the emulator settings).
REMOVED_ENV = ("GOOGLE_APPLICATION_CREDENTIALS",)


def apply_offline_env() -> None:
    """Set :data:`OFFLINE_ENV` (and drop real credentials) in ``os.environ`` for this session."""
    os.environ.update(OFFLINE_ENV)
    for key in REMOVED_ENV:
        os.environ.pop(key, None)
    # an empty gcloud configuration directory: no application-default credentials file is found
    os.environ["CLOUDSDK_CONFIG"] = tempfile.mkdtemp(prefix="dpr_jax_tests_gcloud_")
    atexit.register(shutil.rmtree, os.environ["CLOUDSDK_CONFIG"], ignore_errors=True)
    # the emulator is on 127.0.0.1: never through a proxy (curl under tensorstore honours http_proxy)
    for key in ("NO_PROXY", "no_proxy"):
        os.environ[key] = ",".join(filter(None, [os.environ.get(key), "127.0.0.1", "localhost"]))


class GcsEmulator:
    """``python -m gcp_storage_emulator start`` on a free local port, in memory, with one bucket."""

    def __init__(self, bucket: str = "dpr-jax-test", log_dir: str | os.PathLike | None = None):
        self.bucket = bucket
        self.log_path = Path(log_dir or tempfile.mkdtemp(prefix="dpr_jax_gcs_")) / "emulator.log"
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The variables that point gcsfs, google-cloud-storage and tensorstore at this server."""
        return {"STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url}

    def start(self, timeout: float = 30.0) -> "GcsEmulator":
        # The port is chosen free just before the server binds it; another process may take it in
        # between, in which case the server exits at once and a new port is tried.
        for _ in range(3):
            self.port = free_port()
            log = open(self.log_path, "ab")
            self._proc = subprocess.Popen(
                [sys.executable, __file__, "start", "--host", "127.0.0.1",
                 "--port", str(self.port), "--in-memory", "--default-bucket", self.bucket, "--quiet"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            log.close()
            if self._wait_ready(timeout):
                return self
        raise RuntimeError(f"the GCS emulator did not start; its log:\n{self.log_path.read_text()}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + "/", timeout=1) as r:  # its health check
                    if r.read() == b"OK":
                        return True
            except OSError:
                time.sleep(0.05)
        self.stop()
        return False

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> "GcsEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _serve(argv: list[str]) -> None:
    """``python -m gcp_storage_emulator ARGV``, with downloads that say their object's generation."""
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    stock_download = objects.download

    def download(request, response, storage, *args, **kwargs):
        try:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        except NotFound:
            obj = None
        if obj is not None:
            response["x-goog-generation"] = str(obj["generation"])
            response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
        return stock_download(request, response, storage, *args, **kwargs)

    objects.download = download  # before the server module binds its routes to it
    from gcp_storage_emulator.__main__ import main

    parent = os.getppid()

    def exit_with_parent():  # a test run killed with SIGKILL must not leave its server behind
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=exit_with_parent, daemon=True).start()
    main(argv)


if __name__ == "__main__" and sys.argv[1:2] == ["start"]:  # the server process GcsEmulator starts
    _serve(sys.argv[1:])
elif __name__ == "__main__":  # run one by hand: python tests/gcs_emulator.py, then export what it prints
    with GcsEmulator() as emu:
        for k, v in {**OFFLINE_ENV, **emu.env()}.items():
            print(f"export {k}={v}")
        print(f"# bucket: gs://{emu.bucket}  (Ctrl-C stops the server)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
